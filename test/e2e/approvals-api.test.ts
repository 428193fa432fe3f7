// Deciding held statements (issue 8, SECURITY-POLICY.md P4) through the agent's /api/approvals and
// `hoopctl approvals`: requests are created in the state store exactly as a holding session creates
// them; approvers come from the demo connection's policy (approvers.groups = compliance).
//   u-dave        device flow, group compliance           an approver of demo-db (a person)
//   u-carol       device flow, group compliance           a second approver (minApprovals 2)
//   ci-nightly    client credentials, group data-eng      uses demo-db, approves nothing
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { request } from 'undici';
import React from 'react';
import { Command } from 'commander';
import { run, useStack } from '../harness/stack.js';
import type { Identity } from '../../agent/src/audit/events.js';
import type { ApprovalRequest } from '../../agent/src/audit/approvals.js';
import { Output, reportError } from '../../cli/src/output.js';
import { fetchApprovals, postDecision, registerApprovals } from '../../cli/src/commands/approvals.js';
import { ApprovalsScreen } from '../../cli/src/ui/approvals.js';

const s = useStack();
const CLI = ['--import', 'tsx', path.resolve('cli/src/main.ts')];

let approver: string; //  u-dave
let carol: string; //     u-carol
let ci: string; //        ci-nightly
let approverId: Identity;
let ciId: Identity;

beforeAll(async () => {
  const stack = s.get();
  approver = (await stack.issuer.mintDeviceFlowToken('dave@clinic.example')).accessToken;
  carol = (await stack.issuer.mintDeviceFlowToken('carol@clinic.example')).accessToken;
  ci = await stack.token();
  approverId = (await api('GET', '/api/whoami', approver)).body.identity;
  ciId = (await api('GET', '/api/whoami', ci)).body.identity;
  expect(approverId).toMatchObject({ sub: 'u-dave', groups: ['compliance'] });
  expect(ciId).toMatchObject({ sub: 'ci-nightly', groups: ['data-eng'] });
}, 60_000);

async function api(method: 'GET' | 'POST', pathname: string, token?: string, body?: unknown, headers: Record<string, string> = {}) {
  const url = s.get().agent.url.replace(/^ws/, 'http') + pathname;
  const res = await request(url, {
    method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...headers,
    },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.body.text();
  return { status: res.statusCode, body: (text ? JSON.parse(text) : undefined) as any };
}

/** What a session does when the policy holds a statement. */
function hold(requester: Identity, extra: Partial<ApprovalRequest> = {}) {
  return s.get().agent.store.approvals.create({
    sessionId: `s-approvals-${randomBytes(4).toString('hex')}`,
    connection: 'demo-db',
    requester,
    sql: 'UPDATE visits SET reason = $1 WHERE patient_id = $2',
    params: ['***', 7],
    fingerprint: `fp-${randomBytes(8).toString('hex')}`,
    timeoutMs: 10 * 60_000,
    minApprovals: 1,
    statementSeq: 41,
    ...extra,
  });
}

describe('/api/approvals', () => {
  it('an approver lists a pending request with its statement and approves it; the vote is audited', async () => {
    const a = await hold(ciId);
    const listed = await api('GET', '/api/approvals?status=pending&connection=demo-db', approver);
    expect(listed.status).toBe(200);
    const item = listed.body.approvals.find((x: any) => x.id === a.id);
    expect(item).toMatchObject({
      status: 'pending',
      connection: 'demo-db',
      requester: { sub: 'ci-nightly' },
      sql: 'UPDATE visits SET reason = $1 WHERE patient_id = $2',
      params: ['***', 7],
      minApprovals: 1,
      approvals: 0,
      canDecide: true,
    });
    expect(item).not.toHaveProperty('fingerprint');

    // The requester sees their own request, but may not decide it.
    const own = await api('GET', '/api/approvals', ci);
    expect(own.body.approvals.find((x: any) => x.id === a.id)).toMatchObject({ canDecide: false, why: expect.stringMatching(/not an approver/) });

    const ok = await api('POST', `/api/approvals/${a.id}/approve`, approver, { reason: 'ticket OPS-42' });
    expect(ok.status).toBe(200);
    expect(ok.body.approval).toMatchObject({ id: a.id, status: 'approved', approvals: 1, votes: [{ sub: 'u-dave', verdict: 'approve', reason: 'ticket OPS-42' }] });
    const stored = await s.get().agent.store.approvals.get(a.id);
    expect(stored).toMatchObject({ status: 'approved', votes: [{ sub: 'u-dave', issuer: approverId.issuer, verdict: 'approve' }] });

    const events = await s.get().agent.store.sessionEvents(a.sessionId);
    expect(events.map((e) => [e.type, e.identity?.sub, e.data.approvalId, e.data.verdict, e.data.status, e.data.statementSeq])).toEqual([
      ['approval_decided', 'u-dave', a.id, 'approve', 'approved', 41],
    ]);

    // Decided requests leave the pending list and are refused a second decision.
    expect((await api('GET', '/api/approvals', approver)).body.approvals.some((x: any) => x.id === a.id)).toBe(false);
    expect((await api('GET', '/api/approvals?status=approved', approver)).body.approvals.some((x: any) => x.id === a.id)).toBe(true);
    const again = await api('POST', `/api/approvals/${a.id}/deny`, approver, { reason: 'changed my mind' });
    expect(again).toMatchObject({ status: 409, body: { error: { code: 'NOT_PENDING' } } });
  });

  it('a machine identity in an approver group cannot approve (403 NOT_HUMAN); the request stays pending', async () => {
    const alice: Identity = { sub: 'u-alice', issuer: ciId.issuer, email: 'alice@clinic.example', groups: ['data-eng'] };
    const a = await hold(alice);
    const bot = await s.get().issuer.clientCredentialsToken('approver-bot', 'approver-bot-secret');
    const r = await api('POST', `/api/approvals/${a.id}/approve`, bot, { reason: 'automated' });
    expect(r).toMatchObject({ status: 403, body: { error: { code: 'NOT_HUMAN' } } });
    expect((await s.get().agent.store.approvals.get(a.id))?.status).toBe('pending');
  });

  it('shows approvers invisible and bidirectional characters and padding, spelled out', async () => {
    const alice: Identity = { sub: 'u-alice', issuer: ciId.issuer, email: 'alice@clinic.example', groups: ['data-eng'] };
    const a = await hold(alice, { sql: `DELETE FROM notes WHERE body = '\u202e 2 = di \u2066' OR true -- \u200b` });
    const v = (await api('GET', `/api/approvals/${a.id}`, approver)).body.approval;
    expect(v.display).toContain('⟦U+202E⟧');
    expect(v.display).toContain('⟦U+200B⟧');
    expect(v.warnings.join(' ')).toMatch(/invisible or bidirectional characters: U\+202E, U\+2066, U\+200B/);
    const padded = await hold(alice, { sql: `DELETE FROM notes WHERE id = 2${' '.repeat(300)}OR true` });
    const p = (await api('GET', `/api/approvals/${padded.id}`, approver)).body.approval;
    expect(p.display).toBe('DELETE FROM notes WHERE id = 2⟦300 blanks⟧OR true');
  });

  it('a non-approver gets 403 NOT_AN_APPROVER and does not see other requesters’ requests', async () => {
    const alice: Identity = { sub: 'u-alice', issuer: ciId.issuer, email: 'alice@clinic.example', groups: ['data-eng'] };
    const a = await hold(alice);
    for (const verdict of ['approve', 'deny']) {
      const r = await api('POST', `/api/approvals/${a.id}/${verdict}`, ci, { reason: 'looks fine' });
      expect(r.status).toBe(403);
      expect(r.body.error.code).toBe('NOT_AN_APPROVER');
      expect(r.body.error.message).toMatch(/ci-nightly is not an approver of connection demo-db/);
    }
    expect((await api('GET', `/api/approvals/${a.id}`, ci)).status).toBe(404);
    expect((await api('GET', '/api/approvals?status=all', ci)).body.approvals.some((x: any) => x.id === a.id)).toBe(false);
    expect((await s.get().agent.store.approvals.get(a.id))?.status).toBe('pending');
  });

  it('the requester cannot approve their own request, even as an approver', async () => {
    const a = await hold(approverId);
    const mine = await api('GET', `/api/approvals/${a.id}`, approver);
    expect(mine.body.approval).toMatchObject({ canDecide: false, why: 'you requested it' });
    const r = await api('POST', `/api/approvals/${a.id}/approve`, approver, {});
    expect(r.status).toBe(403);
    expect(r.body.error).toMatchObject({ code: 'SELF_APPROVAL', message: 'the requester cannot decide their own request' });
    expect((await s.get().agent.store.approvals.get(a.id))).toMatchObject({ status: 'pending', votes: [] });
    // Another approver may.
    expect((await api('POST', `/api/approvals/${a.id}/approve`, carol)).body.approval.status).toBe('approved');
  });

  it('a denial needs a reason (400); with one the request is denied', async () => {
    const a = await hold(ciId);
    for (const body of [undefined, {}, { reason: '' }, { reason: '   ' }]) {
      const r = await api('POST', `/api/approvals/${a.id}/deny`, approver, body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.error.message).toMatch(/reason/);
    }
    expect((await s.get().agent.store.approvals.get(a.id))?.status).toBe('pending');
    const r = await api('POST', `/api/approvals/${a.id}/deny`, approver, { reason: 'not in the change window' });
    expect(r.status).toBe(200);
    expect(r.body.approval).toMatchObject({ status: 'denied', votes: [{ verdict: 'deny', reason: 'not in the change window' }] });
  });

  it('the same approver cannot count twice; minApprovals needs different people', async () => {
    const a = await hold(ciId, { minApprovals: 2 });
    const first = await api('POST', `/api/approvals/${a.id}/approve`, approver);
    expect(first.body.approval).toMatchObject({ status: 'pending', approvals: 1, minApprovals: 2, canDecide: false, why: 'you have already decided it' });
    const twice = await api('POST', `/api/approvals/${a.id}/approve`, approver);
    expect(twice.status).toBe(409);
    expect(twice.body.error.code).toBe('ALREADY_VOTED');
    // A fresh token of the same identity is still the same person.
    const fresh = (await s.get().issuer.mintDeviceFlowToken('dave@clinic.example')).accessToken;
    expect((await api('POST', `/api/approvals/${a.id}/approve`, fresh)).body.error.code).toBe('ALREADY_VOTED');
    expect((await s.get().agent.store.approvals.get(a.id))?.status).toBe('pending');
    const second = await api('POST', `/api/approvals/${a.id}/approve`, carol, { reason: 'second pair of eyes' });
    expect(second.body.approval).toMatchObject({ status: 'approved', approvals: 2 });
  });

  it('refuses bad requests: no token, unknown id, bad bodies, wrong method, browser origins', async () => {
    const a = await hold(ciId);
    expect((await api('GET', '/api/approvals')).status).toBe(401);
    expect((await api('POST', `/api/approvals/${a.id}/approve`, 'not-a-token', {})).status).toBe(401);
    expect((await api('POST', '/api/approvals/ap_doesnotexist/approve', approver, {})).body.error.code).toBe('NO_SUCH_APPROVAL');
    expect((await api('GET', '/api/approvals/ap_doesnotexist', approver)).status).toBe(404);
    expect((await api('POST', `/api/approvals/${a.id}/approve`, approver, '{not json')).status).toBe(400);
    expect((await api('POST', `/api/approvals/${a.id}/approve`, approver, { reason: 'x', approvals: 99 })).status).toBe(400);
    expect((await api('POST', `/api/approvals/${a.id}/approve`, approver, { reason: 42 })).status).toBe(400);
    expect((await api('POST', `/api/approvals/${a.id}/approve`, approver, { reason: 'x'.repeat(17 * 1024) })).status).toBe(413);
    expect((await api('POST', `/api/approvals/${a.id}/approve`, approver, 'reason=x', { 'content-type': 'application/x-www-form-urlencoded' })).status).toBe(415);
    expect((await api('GET', `/api/approvals/${a.id}/approve`, approver)).status).toBe(405);
    expect((await api('POST', `/api/approvals/${a.id}/escalate`, approver, {})).status).toBe(404);
    expect((await api('GET', '/api/approvals?status=bogus', approver)).status).toBe(400);
    expect((await api('POST', `/api/approvals/${a.id}/approve`, approver, {}, { origin: 'https://evil.example' })).status).toBe(403);
    // None of that decided anything.
    expect((await s.get().agent.store.approvals.get(a.id))).toMatchObject({ status: 'pending', votes: [] });
  });

  it('expired requests cannot be decided', async () => {
    const a = await hold(ciId, { timeoutMs: 1 });
    await new Promise((r) => setTimeout(r, 20));
    const r = await api('POST', `/api/approvals/${a.id}/approve`, approver, {});
    expect(r).toMatchObject({ status: 409, body: { error: { code: 'NOT_PENDING', message: expect.stringMatching(/expired/) } } });
  });
});

describe('hoopctl approvals', () => {
  /** The command as main.ts wires it, in-process (the stack runs in this process). */
  async function hoopctl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const program = new Command('hoopctl').option('--json').exitOverride();
    let code = 0;
    registerApprovals(program, async (fn) => {
      const out = new Output({ json: Boolean(program.opts().json) });
      try {
        await fn(out);
      } catch (err) {
        code = reportError(err, out.json);
      }
    });
    let stdout = '';
    let stderr = '';
    const w1 = vi.spyOn(process.stdout, 'write').mockImplementation((c: any) => ((stdout += String(c)), true));
    const w2 = vi.spyOn(process.stderr, 'write').mockImplementation((c: any) => ((stderr += String(c)), true));
    try {
      await program.parseAsync(['node', 'hoopctl', ...args]);
    } catch (err) {
      code = (err as { exitCode?: number }).exitCode === 0 ? 0 : 2;
    } finally {
      w1.mockRestore();
      w2.mockRestore();
    }
    return { code, stdout, stderr };
  }
  afterEach(() => vi.restoreAllMocks());

  it('`approvals` lists what the caller may decide (table and --json), `approve ID` approves it', async () => {
    const stack = s.get();
    const a = await hold(ciId);
    const agent = ['--agent', stack.agent.url, '--token', approver];

    const table = await hoopctl(['approvals', ...agent]);
    expect(table.code).toBe(0);
    const line = table.stdout.split('\n').find((l) => l.startsWith(a.id))!;
    expect(line).toMatch(/demo-db\s+ci-nightly\s+0\/1\s+UPDATE visits SET reason = \$1 WHERE patient_id = \$2\s+\$1="\*\*\*" \$2=7/);

    const json = await hoopctl(['--json', 'approvals', ...agent]);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout).approvals.find((x: any) => x.id === a.id)).toMatchObject({ canDecide: true, params: ['***', 7] });
    // The requester has nothing to decide.
    expect(JSON.parse((await hoopctl(['--json', 'approvals', '--agent', stack.agent.url, '--token', ci])).stdout).approvals).toEqual([]);

    const shown = await hoopctl(['approvals', 'show', a.id, ...agent]);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toMatch(/requester\s+ci-nightly/);
    expect(shown.stdout).toMatch(/parameters \$1="\*\*\*" \$2=7/);

    const denied = await hoopctl(['approvals', 'approve', a.id, '--agent', stack.agent.url, '--token', ci]);
    expect(denied.code).toBe(4);
    expect(denied.stderr).toMatch(/not an approver/);
    expect((await hoopctl(['approvals', 'approve', a.id, '--agent', stack.agent.url, '--token', 'nope'])).code).toBe(3);
    expect((await hoopctl(['approvals', 'deny', a.id, ...agent])).code).toBe(2); // --reason is required

    const ok = await hoopctl(['approvals', 'approve', a.id, '--reason', 'ticket OPS-7', ...agent]);
    expect(ok).toMatchObject({ code: 0 });
    expect(ok.stdout).toMatch(new RegExp(`approved ${a.id}`));
    expect((await stack.agent.store.approvals.get(a.id))?.status).toBe('approved');
    const twice = await hoopctl(['--json', 'approvals', 'approve', a.id, ...agent]);
    expect(twice.code).toBe(1);
    expect(JSON.parse(twice.stdout).error.code).toBe('NOT_PENDING');
  });

  it('the real CLI: `hoopctl approvals --json`, `approvals deny ID --reason` (needs the main.ts registration)', async () => {
    const stack = s.get();
    const a = await hold(ciId);
    const env = { ...process.env, HOOPCTL_TOKEN: approver, HOOPCTL_AGENT: stack.agent.url, XDG_CONFIG_HOME: '/tmp/hoopctl-test-none' };
    const listed = await run('node', [...CLI, '--json', 'approvals'], { env });
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout).approvals.map((x: any) => x.id)).toContain(a.id);
    const denied = await run('node', [...CLI, 'approvals', 'deny', a.id, '--reason', 'not now'], { env });
    expect(denied.code, denied.stderr).toBe(0);
    expect(denied.stdout).toMatch(`denied ${a.id}`);
    expect((await stack.agent.store.approvals.get(a.id))?.status).toBe('denied');
    const forbidden = await run('node', [...CLI, 'approvals', 'approve', a.id], { env: { ...env, HOOPCTL_TOKEN: ci } });
    expect(forbidden.code).toBe(4);
  }, 60_000);

  it('the ink screen: arrows select, d asks for a reason and denies, a approves', async () => {
    const stack = s.get();
    const first = await hold(ciId, { sql: 'DELETE FROM visits WHERE id = $1', params: [1] });
    const second = await hold(ciId, { sql: 'INSERT INTO visits (patient_id) VALUES ($1)', params: [2] });
    const agentUrl = stack.agent.url;
    const load = async () => (await fetchApprovals(agentUrl, approver)).filter((x) => x.id === first.id || x.id === second.id);
    const decide = async (id: string, v: 'approve' | 'deny', reason?: string) => (await postDecision(agentUrl, approver, id, v, reason)).approval;

    const { render } = await import('ink');
    const stdin = Object.assign(new PassThrough(), { isTTY: true, setRawMode: () => {}, ref: () => {}, unref: () => {} });
    const stdout = Object.assign(new PassThrough(), { isTTY: true, columns: 160, rows: 50 });
    let screen = '';
    stdout.on('data', (d) => (screen = String(d)));
    const app = render(React.createElement(ApprovalsScreen, { initial: await load(), load, decide, refreshMs: 0 }), {
      stdin: stdin as any,
      stdout: stdout as any,
      debug: true,
      patchConsole: false,
      exitOnCtrlC: false,
    });
    const exited = app.waitUntilExit(); // ink resolves only waiters that were there when it exits
    const plain = () => screen.replace(/\x1b\[[0-9;?]*[ -/]*[@-~]/g, '');
    const until = async (re: RegExp) => {
      for (let i = 0; i < 200 && !re.test(plain()); i++) await new Promise((r) => setTimeout(r, 10));
      expect(plain()).toMatch(re);
    };
    const key = async (k: string) => {
      stdin.write(k);
      await new Promise((r) => setTimeout(r, 30));
    };
    try {
      await until(/Statements waiting for your approval \(2\)/);
      expect(plain()).toMatch(/statement[\s│]+DELETE FROM visits WHERE id = \$1/);
      await key('\x1b[B'); // ↓
      await until(/statement[\s│]+INSERT INTO visits/);
      await key('d');
      await until(/Reason \(required\)/);
      await key('\r'); // empty reason: refused locally
      await until(/a denial needs a reason/);
      for (const ch of 'dup row') await key(ch);
      await key('\r');
      await until(/denied /);
      expect((await stack.agent.store.approvals.get(second.id))?.votes).toMatchObject([{ verdict: 'deny', reason: 'dup row' }]);
      await until(/Statements waiting for your approval \(1\)/);
      await key('a');
      await until(/Reason \(optional\)/);
      await key('\r');
      await until(/approved .*runs once/);
      expect((await stack.agent.store.approvals.get(first.id))?.status).toBe('approved');
      await key('q');
      await exited;
    } finally {
      app.unmount();
    }
  });
});
