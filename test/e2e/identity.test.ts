// Who may connect and approve, and why they connect (issue 16: "Purpose", "Assurance for people", "CI
// contexts"), against the real local issuer: device-flow logins with and without the one-time code, and
// GitHub-Actions-shaped workload tokens (push, pull_request, pull_request_target). One extra agent serves
// the demo database with:
//   access:     data-eng people only with MFA (amr any-of [mfa])
//               acme/etl on refs/heads/main (a branch rule: no pull-request run may pass it)
//               acme/etl pull_request runs (a rule that names the event)
//   approvers:  compliance, with MFA
//   requireReason: true
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { decodeJwt } from 'jose';
import pg from 'pg';
import { request } from 'undici';
import { run, startExtraAgent, useStack, type ExtraAgent } from '../harness/stack.js';
import { DEMO_ACR_VALUES } from '../../cli/src/demo/issuer.js';
import { TunnelClient } from '../../cli/src/services/tunnel-client.js';
import { startLocalListener } from '../../cli/src/services/local-listener.js';
import { UserError } from '../../cli/src/errors.js';
import { AuthError, TokenVerifier } from '../../agent/src/identity/verify.js';
import type { AuditEvent } from '../../agent/src/audit/events.js';

const s = useStack({ patients: 20 });
const CLI = ['--import', 'tsx', path.resolve('cli/src/main.ts')];
const REPO = 'acme/etl';
const SHA = '0123456789abcdef0123456789abcdef01234567';

let A: ExtraAgent;
let alicePwd: string; //  device flow, password only
let aliceMfa: string; //  device flow, password + one-time code
let davePwd: string; //   approver, password only
let daveMfa: string; //   approver, with MFA
let push: string; //      GitHub push to main
let prTarget: string; //  pull_request_target: ref is main, the code is the PR's
let pr: string; //        pull_request

beforeAll(async () => {
  const stack = s.get();
  const { issuer } = stack;
  [alicePwd, aliceMfa, davePwd, daveMfa] = await Promise.all([
    issuer.mintDeviceFlowToken('alice@clinic.example').then((t) => t.accessToken),
    issuer.mintDeviceFlowToken('alice@clinic.example', { mfa: true }).then((t) => t.accessToken),
    issuer.mintDeviceFlowToken('dave@clinic.example').then((t) => t.accessToken),
    issuer.mintDeviceFlowToken('dave@clinic.example', { mfa: true }).then((t) => t.accessToken),
  ]);
  const ctx = { repository: REPO, workflow: 'nightly', run_id: '4242', sha: SHA };
  push = await issuer.mintWorkloadToken({ ...ctx, ref: 'refs/heads/main', event_name: 'push' });
  prTarget = await issuer.mintWorkloadToken({ ...ctx, ref: 'refs/heads/main', event_name: 'pull_request_target' });
  pr = await issuer.mintWorkloadToken({ ...ctx, ref: 'refs/pull/7/merge', event_name: 'pull_request' });
  A = await startExtraAgent(stack, {
    agentId: 'identity-a',
    config: { identity: { issuers: [{ issuer: issuer.issuer, audience: issuer.audience, acrValues: [...DEMO_ACR_VALUES] }] } },
    connection: {
      requireReason: true,
      access: [
        { groups: ['data-eng'], require: { amr: ['mfa'] } },
        { claims: { repository: REPO, ref: 'refs/heads/main' } },
        { claims: { repository: REPO, event_name: 'pull_request' } },
      ],
    },
    approval: { approvers: { groups: ['compliance'], require: { amr: ['mfa'] } } },
    // The harness's own tunnel runs as the push job: its purpose comes from the job's claims.
    getToken: async () => push,
  });
}, 120_000);

afterAll(async () => {
  await A?.stop();
});

/** Opens a tunnel to A as `token`; the client (to stop) or the CLI's UserError. */
async function tunnel(token: string, reason?: string): Promise<TunnelClient> {
  const client = new TunnelClient({ agentUrl: A.agent.url, connection: 'demo-db', getToken: () => token, reason });
  await client.start();
  return client;
}

async function refusal(token: string, reason?: string): Promise<UserError> {
  const err = await tunnel(token, reason).then(
    async (c) => {
      await c.stop();
      throw new Error('the tunnel opened');
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(UserError);
  return err as UserError;
}

/** One query through a tunnel, then the session_start it was recorded under. */
async function sessionThrough(client: TunnelClient, sql = 'SELECT count(*)::int AS n FROM patients'): Promise<{ rows: unknown[]; start: AuditEvent }> {
  const listener = await startLocalListener(client, 0);
  const app = `identity-${randomBytes(4).toString('hex')}`;
  const c = new pg.Client({ host: listener.host, port: listener.port, user: 'noop', database: 'demo-db', application_name: app });
  try {
    await c.connect();
    const { rows } = await c.query(sql);
    const page = await A.agent.store.querySessions({ limit: 500 });
    const summary = page.sessions.find((x) => x.applicationName === app);
    expect(summary).toBeDefined();
    const start = (await A.agent.store.sessionEvents(summary!.sessionId)).find((e) => e.type === 'session_start')!;
    return { rows, start };
  } finally {
    await c.end().catch(() => {});
    await listener.close();
    await client.stop();
  }
}

async function api(method: 'GET' | 'POST', pathname: string, token: string, body?: unknown) {
  const res = await request(A.agent.url.replace(/^ws/, 'http') + pathname, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.statusCode, body: JSON.parse(await res.body.text()) as any };
}

describe('the demo issuer says how a person signed in', () => {
  it('a device flow with the one-time code says MFA; one without says password only; both carry the login session', () => {
    expect(decodeJwt(aliceMfa)).toMatchObject({ sub: 'u-alice', amr: ['pwd', 'otp', 'mfa'], acr: DEMO_ACR_VALUES[1], sid: expect.any(String) });
    expect(decodeJwt(alicePwd)).toMatchObject({ sub: 'u-alice', amr: ['pwd'], acr: DEMO_ACR_VALUES[0], sid: expect.any(String) });
    expect(decodeJwt(pr)).toMatchObject({ sub: `repo:${REPO}:pull_request`, event_name: 'pull_request', repository: REPO });
    expect(decodeJwt(push)).toMatchObject({ sub: `repo:${REPO}:ref:refs/heads/main`, event_name: 'push' });
  });
});

describe('assurance for people', () => {
  it('a password-only device-flow token cannot open a tunnel where MFA is required (403, exit 4, says to log in with MFA)', async () => {
    const err = await refusal(alicePwd, 'ticket OPS-1');
    expect(err.code).toBe('FORBIDDEN');
    expect(err.exitCode).toBe(4);
    expect(err.message).toMatch(/requires a stronger sign-in \(MFA\)/);
    expect(err.hint).toMatch(/hoopctl login.*multi-factor/);
  });

  it('the same person with MFA connects; session_start records the amr/acr presented and the stated purpose', async () => {
    const { rows, start } = await sessionThrough(await tunnel(aliceMfa, 'ticket OPS-1: check visit counts'));
    expect(rows).toEqual([{ n: 20 }]);
    expect(start.identity).toMatchObject({ sub: 'u-alice', claims: { amr: ['pwd', 'otp', 'mfa'], acr: DEMO_ACR_VALUES[1] } });
    expect(start.data.purpose).toBe('ticket OPS-1: check visit counts');
    const listed = await A.agent.store.querySessions({ sub: 'u-alice', limit: 10 });
    expect(listed.sessions.find((x) => x.sessionId === start.sessionId)?.purpose).toBe('ticket OPS-1: check visit counts');
  });

  it('the purpose and the sign-in are shown by `hoopctl sessions`, `sessions show` and `approvals show` (the real CLI)', async () => {
    const { start } = await sessionThrough(await tunnel(aliceMfa, 'ticket OPS-2: shown to reviewers'));
    const env = { ...process.env, HOOPCTL_AGENT: A.agent.url, HOOPCTL_TOKEN: aliceMfa };
    const list = await run('node', [...CLI, 'sessions', '--limit', '100'], { env, timeoutMs: 60_000 });
    expect(list.code).toBe(0);
    expect(list.stdout.split('\n')[0]).toMatch(/SESSION +PURPOSE$/);
    expect(list.stdout).toMatch(new RegExp(`${start.sessionId} +ticket OPS-2: shown to reviewers`));
    const show = await run('node', [...CLI, 'sessions', 'show', start.sessionId!], { env, timeoutMs: 60_000 });
    expect(show.code).toBe(0);
    expect(show.stdout).toMatch(/session_start alice@clinic\.example {2}signed in with pwd\+otp\+mfa {2}purpose: ticket OPS-2: shown to reviewers {2}\{/);

    const held = await A.agent.store.approvals.create({
      sessionId: start.sessionId!,
      connection: 'demo-db',
      requester: { sub: 'u-alice', issuer: s.get().issuer.issuer },
      sql: 'DELETE FROM visits WHERE id = $1',
      fingerprint: `fp-${randomBytes(6).toString('hex')}`,
      timeoutMs: 600_000,
      purpose: 'ticket OPS-2: shown to reviewers',
    });
    const approval = await run('node', [...CLI, 'approvals', 'show', held.id], { env: { ...env, HOOPCTL_TOKEN: daveMfa }, timeoutMs: 60_000 });
    expect(approval.code).toBe(0);
    expect(approval.stdout).toMatch(/^purpose +ticket OPS-2: shown to reviewers$/m);
  }, 120_000);

  it('an issuer that requires an acr minimum refuses weaker tokens everywhere (403 INSUFFICIENT_ASSURANCE), on the issuer\'s order', async () => {
    const { issuer } = s.get();
    const verifier = new TokenVerifier({
      issuers: [{ issuer: issuer.issuer, audience: issuer.audience, acrValues: [...DEMO_ACR_VALUES], require: { acr: DEMO_ACR_VALUES[1] } }],
    });
    const err = await verifier.verify(alicePwd).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(AuthError);
    expect(err).toMatchObject({ code: 'INSUFFICIENT_ASSURANCE', status: 403 });
    expect((err as AuthError).message).toMatch(/acr\) is urn:hoopctl:demo:pwd and at least urn:hoopctl:demo:mfa is required.*hoopctl login/);
    await expect(verifier.verify(aliceMfa)).resolves.toMatchObject({ sub: 'u-alice', assurance: { amr: ['pwd', 'otp', 'mfa'] } });
    // A machine token says nothing about how a person signed in: it meets no such requirement.
    await expect(verifier.verify(await s.get().token())).rejects.toMatchObject({ code: 'INSUFFICIENT_ASSURANCE' });
  });

  it('an approver without MFA can neither approve nor deny (403, the request stays pending); with MFA the vote records amr/acr', async () => {
    const requester = { sub: `repo:${REPO}:ref:refs/heads/main`, issuer: s.get().issuer.issuer };
    const held = await A.agent.store.approvals.create({
      sessionId: `s-identity-${randomBytes(4).toString('hex')}`,
      connection: 'demo-db',
      requester,
      sql: 'UPDATE visits SET reason = $1 WHERE id = $2',
      fingerprint: `fp-${randomBytes(6).toString('hex')}`,
      timeoutMs: 600_000,
      purpose: 'CI acme/etl workflow nightly run 4242',
    });
    const listed = await api('GET', `/api/approvals/${held.id}`, davePwd);
    expect(listed.body.approval).toMatchObject({ purpose: 'CI acme/etl workflow nightly run 4242', canDecide: false, why: expect.stringMatching(/not strong enough/) });
    for (const action of ['approve', 'deny']) {
      const weak = await api('POST', `/api/approvals/${held.id}/${action}`, davePwd, { reason: 'looks fine' });
      expect(weak.status).toBe(403);
      expect(weak.body.error).toMatchObject({ code: 'INSUFFICIENT_ASSURANCE', message: expect.stringMatching(/authentication methods \[pwd\].*\[mfa\]/) });
    }
    expect((await A.agent.store.approvals.get(held.id))?.status).toBe('pending');

    const strong = await api('POST', `/api/approvals/${held.id}/approve`, daveMfa, { reason: 'OPS-9' });
    expect(strong.status).toBe(200);
    expect(strong.body.approval).toMatchObject({ status: 'approved', votes: [{ sub: 'u-dave', verdict: 'approve', amr: ['pwd', 'otp', 'mfa'], acr: DEMO_ACR_VALUES[1] }] });
    const decided = (await A.agent.store.sessionEvents(held.sessionId)).filter((e) => e.type === 'approval_decided');
    expect(decided).toHaveLength(1);
    expect(decided[0].identity).toMatchObject({ sub: 'u-dave', claims: { amr: ['pwd', 'otp', 'mfa'], acr: DEMO_ACR_VALUES[1] } });
  });
});

describe('CI contexts', () => {
  it('a push to main passes the branch rule; its session purpose is built from the job\'s claims', async () => {
    const { start } = await sessionThrough(await tunnel(push));
    expect(start.identity?.claims).toMatchObject({ repository: REPO, event_name: 'push', run_id: '4242' });
    expect(start.data.purpose).toBe(`CI ${REPO} workflow nightly run 4242 at ${SHA.slice(0, 12)} (push)`);
  });

  it('a pull_request_target token (ref=refs/heads/main) does not pass the branch rule, nor the rule naming pull_request', async () => {
    const err = await refusal(prTarget);
    expect(err).toMatchObject({ code: 'FORBIDDEN', exitCode: 4 });
    expect(err.message).toMatch(/pull_request_target run, which only a rule naming event_name: pull_request_target admits/);
  });

  it('a pull_request token passes only the rule that names its event', async () => {
    const { start } = await sessionThrough(await tunnel(pr));
    expect(start.identity).toMatchObject({ sub: `repo:${REPO}:pull_request`, claims: { event_name: 'pull_request' } });
    // The stack's own agent has no rule naming pull requests: refused there although its token is valid.
    const other = new TunnelClient({ agentUrl: s.get().agent.url, connection: 'demo-db', getToken: () => pr });
    await expect(other.start()).rejects.toMatchObject({ code: 'FORBIDDEN' });
  });
});

describe('purpose', () => {
  it('requireReason refuses a person\'s tunnel without one: the CLI exits 2 and says to pass --reason', async () => {
    const err = await refusal(aliceMfa);
    expect(err).toMatchObject({ code: 'REASON_REQUIRED', exitCode: 2 });
    expect(err.message).toMatch(/connection demo-db requires every session to state its purpose/);
    expect(err.hint).toMatch(/--reason/);

    const env = { ...process.env, HOOPCTL_TOKEN: aliceMfa, HOOPCTL_AGENT: A.agent.url, HOOPCTL_REASON: '' };
    const refused = await run('node', [...CLI, 'exec', 'demo-db', '-c', 'SELECT 1'], { env, timeoutMs: 60_000 });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/requires every session to state its purpose/);
    expect(refused.stderr).toMatch(/--reason/);

    const ok = await run('node', [...CLI, 'exec', 'demo-db', '-c', 'SELECT count(*)::int AS n FROM patients', '--json'], {
      env: { ...env, HOOPCTL_REASON: 'audit sample for OPS-77' },
      timeoutMs: 60_000,
    });
    expect(ok.stderr).toBe('');
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout).results[0].rows).toEqual([{ n: 20 }]);
    const page = await A.agent.store.querySessions({ sub: 'u-alice', limit: 50 });
    expect(page.sessions.some((x) => x.purpose === 'audit sample for OPS-77' && x.applicationName === 'hoopctl exec')).toBe(true);
  });

  it('a reason with a line break is refused before it reaches the audit trail', async () => {
    const err = await refusal(aliceMfa, 'fine\r\nforged: line');
    expect(err.exitCode).toBe(2);
    expect(err.message).toMatch(/control characters or line breaks/);
  });
});
