// Two hoop-agents sharing one PostgreSQL state store (issues 7 and 8). One embedded PostgreSQL holds the
// demo database and, in a database of its own, the state store; agents A and B serve the same connection
// with the same `state.url`, each with its own tunnel and local port.
//   - psql through A runs an UPDATE that A holds; an approver decides it through B (`hoopctl approvals
//     approve` pointed at B, or B's HTTP API); A wakes through LISTEN/NOTIFY and runs it, once.
//   - both agents write audit events at once; the store verifies, and the chains are per agent (see the
//     comment at the top of agent/src/audit/pg-store.ts for why not one global chain).
//   - both agents have the same webhook; each request is announced once, by the agent holding it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import pg from 'pg';
import { request } from 'undici';
import { psql, run, startExtraAgent, useStack, type ExtraAgent } from '../harness/stack.js';
import { receiver, type Receiver } from '../harness/webhook-receiver.js';
import type { ApprovalView } from '../../agent/src/http/approvals-api.js';

const s = useStack({ patients: 50 });
const CLI = ['--import', 'tsx', path.resolve('cli/src/main.ts')];
let stateDb: string;
let stateUrl: string;
let A: ExtraAgent;
let B: ExtraAgent;
let rx: Receiver;
let db: pg.Client; //    the demo database, directly
let state: pg.Client; // the state store, directly
let dave: string; //     an approver (person, group compliance)
/** Ids A's approvals change feed reported: with two PgStores, only NOTIFY carries B's changes to A. */
const seenByA: string[] = [];
/** What the test itself heard on the store's channel. */
const notified: string[] = [];

beforeAll(async () => {
  const stack = s.get();
  stateDb = `hoop_state_${randomBytes(4).toString('hex')}`;
  await stack.pg.exec(`CREATE DATABASE ${stateDb}`);
  stateUrl = stack.pg.url(stateDb);
  rx = await receiver();
  const approval = { webhook: { url: rx.url } };
  // Started together: the schema migration must be applied once (advisory lock in pg-store.ts).
  [A, B] = await Promise.all([
    startExtraAgent(stack, { agentId: 'agent-a', state: { url: stateUrl }, approval }),
    startExtraAgent(stack, { agentId: 'agent-b', state: { url: stateUrl }, approval }),
  ]);
  A.agent.store.approvals.subscribe({ changed: (id) => void seenByA.push(id) });
  db = new pg.Client({ connectionString: stack.directUrl });
  await db.connect();
  state = new pg.Client({ connectionString: stateUrl });
  await state.connect();
  state.on('notification', (n) => n.channel === 'hoop_approvals' && notified.push(n.payload ?? ''));
  await state.query('LISTEN hoop_approvals');
  dave = (await stack.issuer.mintDeviceFlowToken('dave@clinic.example')).accessToken;
}, 120_000);

afterAll(async () => {
  await db?.end();
  await state?.end();
  await A?.stop();
  await B?.stop();
  await rx?.close();
}, 60_000);

const httpUrl = (a: ExtraAgent) => a.agent.url.replace(/^ws/, 'http');

async function api(a: ExtraAgent, method: 'GET' | 'POST', pathname: string, body?: unknown) {
  const res = await request(httpUrl(a) + pathname, {
    method,
    headers: { authorization: `Bearer ${dave}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.statusCode, body: (await res.body.json()) as any };
}

/** The next pending request as B lists it (created by A: B sees it only through the shared store). */
async function pendingThroughB(): Promise<ApprovalView> {
  for (let i = 0; i < 400; i++) {
    const { body } = await api(B, 'GET', '/api/approvals?status=pending');
    if (body.approvals?.length) return body.approvals[0];
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('no pending request appeared on agent B');
}

const phoneOf = async (id: number) => (await db.query<{ phone: string }>('SELECT phone FROM patients WHERE id = $1', [id])).rows[0].phone;

describe('two agents, one PostgreSQL state store', () => {
  it('an UPDATE held on A is approved through B (hoopctl approvals approve --agent B), A wakes by NOTIFY and runs it once', async () => {
    const before = await phoneOf(10);
    const held = psql(A, ['-c', `UPDATE patients SET phone = phone || '-a' WHERE id = 10`]);
    const view = await pendingThroughB();
    expect(view).toMatchObject({ agentId: 'agent-a', status: 'pending', connection: 'demo-db', requester: { sub: 'ci-nightly' }, canDecide: true });
    expect(view.sql).toMatch(/^UPDATE patients SET phone/);
    expect(await phoneOf(10)).toBe(before); // held: nothing ran yet
    // The request lives 15 minutes (the default): A's only timer for it is at its expiry, so a release
    // now can only come from a change event, and B's decision reaches A's store only through NOTIFY.
    expect(Date.parse(view.expiresAt) - Date.now()).toBeGreaterThan(10 * 60_000);

    const env = { ...process.env, HOOPCTL_TOKEN: dave, XDG_CONFIG_HOME: '/tmp/hoopctl-test-none' };
    const ok = await run('node', [...CLI, 'approvals', 'approve', view.id, '--reason', 'ticket OPS-9', '--agent', B.agent.url], { env });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain(`approved ${view.id}`);

    const out = await held;
    expect(out.stdout).toContain('UPDATE 1');
    expect(await phoneOf(10)).toBe(before + '-a'); // once, not twice
    expect((await A.agent.store.approvals.get(view.id))?.status).toBe('consumed');
    // The notification path: the store's channel carried the id, and A's change feed (fed only by its
    // LISTEN connection for changes made by B) reported it.
    expect(notified).toContain(view.id);
    expect(seenByA).toContain(view.id);
    const { rows } = await state.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND query = 'LISTEN hoop_approvals' AND pid <> pg_backend_pid()`,
      [stateDb],
    );
    expect(rows[0].n).toBe(2); // one listener per agent

    // Both agents have the webhook; the request and its approval are each announced once, by A.
    await rx.waitFor(2);
    await new Promise((r) => setTimeout(r, 300));
    expect(rx.posts.filter((p) => p.body.id === view.id).map((p) => [p.body.event, p.body.agentId])).toEqual([
      ['approval.requested', 'agent-a'],
      ['approval.approved', 'agent-a'],
    ]);
    // The vote is on B's chain (B decided), the request and its use on A's.
    const events = await B.agent.store.sessionEvents(view.sessionId);
    expect(events.filter((e) => e.data.approvalId === view.id).map((e) => [e.type, e.agentId])).toEqual(
      expect.arrayContaining([
        ['approval_requested', 'agent-a'],
        ['approval_decided', 'agent-b'],
        ['approval_consumed', 'agent-a'],
      ]),
    );
  });

  it('a denial through B (HTTP API) fails the statement on A and leaves the table unchanged', async () => {
    const before = await phoneOf(11);
    const held = psql(A, ['-c', `UPDATE patients SET phone = phone || '-d' WHERE id = 11`]);
    const view = await pendingThroughB();
    const r = await api(B, 'POST', `/api/approvals/${view.id}/deny`, { reason: 'not in the change window' });
    expect(r.status).toBe(200);
    expect(r.body.approval).toMatchObject({ id: view.id, status: 'denied' });
    const out = await held;
    expect(out.stderr).toMatch(new RegExp(`approval ${view.id} denied by u-dave`));
    expect(out.stdout).not.toContain('UPDATE 1');
    expect(await phoneOf(11)).toBe(before);
    expect((await A.agent.store.approvals.get(view.id))?.status).toBe('denied');
  });

  it('both agents write events at once: one chain per agent, and the store (and its export) verifies', async () => {
    const reads = (a: ExtraAgent, tag: string) =>
      psql(a, Array.from({ length: 15 }, (_, i) => ['-c', `SELECT ${i} AS "${tag}", count(*) FROM visits`]).flat());
    const outs = await Promise.all([reads(A, 'a1'), reads(B, 'b1'), reads(A, 'a2'), reads(B, 'b2')]);
    for (const o of outs) expect(o.code, o.stderr).toBe(0);
    // Sessions record their end as psql disconnects, just after it exits: count once every one has.
    for (let i = 0; ; i++) {
      const { rows } = await state.query<{ open: number }>(
        `SELECT (count(*) FILTER (WHERE type = 'session_start') - count(*) FILTER (WHERE type = 'session_end'))::int AS open FROM audit_events`,
      );
      if (rows[0].open === 0) break;
      if (i > 400) throw new Error(`${rows[0].open} sessions never recorded their end`);
      await new Promise((r) => setTimeout(r, 50));
    }

    // Per agent, not global: each agent's chain is numbered from 1 without gaps, and both chains exist
    // side by side (the same seq numbers on both), so no event of one agent links to the other's.
    const { rows } = await state.query<{ agent_id: string; n: number; lo: number; hi: number }>(
      'SELECT agent_id, count(*)::int AS n, min(seq)::int AS lo, max(seq)::int AS hi FROM audit_events GROUP BY agent_id ORDER BY agent_id',
    );
    expect(rows.map((r) => r.agent_id)).toEqual(['agent-a', 'agent-b']);
    for (const r of rows) expect([r.lo, r.hi]).toEqual([1, r.n]);
    expect(rows.every((r) => r.n > 30)).toBe(true);
    const { rows: cross } = await state.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM audit_events e JOIN audit_events p ON p.hash = e.prev WHERE p.agent_id <> e.agent_id`,
    );
    expect(cross[0].n).toBe(0);

    const total = rows.reduce((n, r) => n + r.n, 0);
    expect(await A.agent.store.verify()).toEqual({ ok: true, events: total });
    expect(await B.agent.store.verify()).toEqual({ ok: true, events: total });

    // `hoopctl audit verify` on the store's export (time order, the two chains interleaved).
    const dir = await mkdtemp(path.join(os.tmpdir(), 'hoop-two-agents-'));
    try {
      const file = path.join(dir, 'export.jsonl');
      let text = '';
      for await (const line of A.agent.store.exportEvents({}, 'jsonl')) text += line.endsWith('\n') ? line : line + '\n';
      await writeFile(file, text);
      const v = await run('node', [...CLI, '--json', 'audit', 'verify', file], { env: { ...process.env, XDG_CONFIG_HOME: '/tmp/hoopctl-test-none' } });
      expect(v.code, v.stderr).toBe(0);
      expect(JSON.parse(v.stdout)).toMatchObject({ ok: true, events: total });
      // The export really interleaves the agents: a global order of two chains, verified per chain.
      const agents = text.trim().split('\n').map((l) => JSON.parse(l).agentId as string);
      expect(agents.some((x, i) => i > 0 && x !== agents[i - 1] && agents.slice(i + 1).includes(agents[i - 1]))).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
