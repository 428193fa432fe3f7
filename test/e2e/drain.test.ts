// Stopping the agent (issue 17): the binary exits on SIGTERM even after a masked session (its catalog
// connection used to keep it alive), a second SIGTERM exits at once, and the drain on a shared
// PostgreSQL state store lets running statements finish, cancels what outlives shutdown.drainTimeout,
// withdraws held approvals with a message the client sees, and loses no audit event.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startExtraAgent, useStack, type ExtraAgent } from '../harness/stack.js';
import type { Child } from '../harness/child.js';
import { readAuditEvents, startAgentBinary } from '../harness/agent-binary.js';
import { rawUpgrade } from './wire.js';
import { DEMO_CONNECTION, type DemoStack } from '../../cli/src/demo/stack.js';
import { TunnelClient } from '../../cli/src/services/tunnel-client.js';
import { startLocalListener } from '../../cli/src/services/local-listener.js';
import type { AuditEvent } from '../../agent/src/audit/events.js';

const s = useStack({ patients: 50 });

/** A pg client on an extra agent's local port. */
async function clientOf(a: Pick<ExtraAgent, 'listener'>): Promise<pg.Client> {
  const c = new pg.Client({ host: a.listener.host, port: a.listener.port, user: 'noop', database: DEMO_CONNECTION });
  c.on('error', () => {}); // the drain ends sessions with FATAL 57P01; the test reads that from the queries
  await c.connect();
  return c;
}

/** Minutes of counting (150⁵ rows with this stack's visits), allowed by policy (pg_sleep is not, P3). */
const FOREVER = 'SELECT count(*) FROM visits a CROSS JOIN visits b CROSS JOIN visits c CROSS JOIN visits d CROSS JOIN visits e';

/** Locks the patients table from a direct connection until the returned function is called. */
async function lockPatients(stack: DemoStack): Promise<() => Promise<void>> {
  const d = new pg.Client({ connectionString: stack.directUrl });
  await d.connect();
  await d.query('BEGIN');
  await d.query('LOCK TABLE patients IN ACCESS EXCLUSIVE MODE');
  return async () => {
    await d.query('COMMIT').catch(() => {});
    await d.end().catch(() => {});
  };
}

/** The first pending approval request in an agent's store. */
async function pendingOn(a: ExtraAgent) {
  for (let i = 0; i < 200; i++) {
    const [p] = await a.agent.store.approvals.list({ status: 'pending' });
    if (p) return p;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('no approval request appeared');
}

/** Outcome of one query: its rows, or the SQLSTATE and message it failed with. */
function settle(p: Promise<pg.QueryResult>): Promise<{ rows?: unknown[]; code?: string; message?: string }> {
  return p.then(
    (r) => ({ rows: r.rows }),
    (e: Error & { code?: string }) => ({ code: e.code, message: e.message }),
  );
}

describe('the hoop-agent binary on SIGTERM', () => {
  let dir: string;
  const children: Child[] = [];
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'hoop-drain-'));
  });
  afterAll(async () => {
    for (const c of children) await c.stop();
    await rm(dir, { recursive: true, force: true });
  });

  async function startBinary(stack: DemoStack, drainTimeout: string): Promise<{ child: Child; url: string; dataDir: string }> {
    const agent = await startAgentBinary(stack, dir, { top: `shutdown:\n  drainTimeout: ${drainTimeout}` });
    children.push(agent.child);
    return agent;
  }

  async function tunnelTo(stack: DemoStack, url: string) {
    const client = new TunnelClient({ agentUrl: url, connection: DEMO_CONNECTION, getToken: stack.token });
    await client.start();
    const listener = await startLocalListener(client, 0);
    return { listener, async close() { await listener.close().catch(() => {}); await client.stop().catch(() => {}); } };
  }

  it('exits 0 within the drain after a session read masked columns (the catalog connection is closed)', async () => {
    const stack = s.get();
    const { child, url, dataDir } = await startBinary(stack, '5s');
    const t = await tunnelTo(stack, url);
    const c = await clientOf(t);
    const r = await c.query('SELECT ssn, mrn FROM patients ORDER BY id LIMIT 1');
    expect(r.rows[0].ssn).not.toMatch(/^\d{3}-\d{2}-\d{4}$/); // masked: the catalog connection is open
    await c.end();
    await t.close();
    child.signal('SIGTERM');
    const exit = await Promise.race([child.terminated, new Promise((r) => setTimeout(() => r('still running'), 20_000))]);
    expect(exit).toEqual({ code: 0, signal: null });
    await child.exited;
    // It stopped by itself: the drain was quick, and no handle outlived it (main.ts would say so).
    const drained = child.stderr.split('\n').find((l) => l.includes('agent drained'));
    expect(JSON.parse(drained!).ms).toBeLessThan(2_000);
    expect(child.stderr).not.toContain('a handle outlived the stop');
    // Its audit trail closes the session it served.
    const events = await readAuditEvents<{ type: string }>(dataDir);
    expect(events.filter((e) => e.type === 'session_start')).toHaveLength(1);
    expect(events.filter((e) => e.type === 'session_end')).toHaveLength(1);
  }, 90_000);

  it('a second SIGTERM exits at once (143) while a statement still runs', async () => {
    const stack = s.get();
    const { child, url } = await startBinary(stack, '60s');
    const t = await tunnelTo(stack, url);
    const c = await clientOf(t);
    const long = settle(c.query(FOREVER));
    await new Promise((r) => setTimeout(r, 300));
    child.signal('SIGTERM');
    await child.waitFor(() => child.stderr.includes('agent draining'), 'agent draining', 10_000);
    const t0 = performance.now();
    child.signal('SIGTERM');
    const exit = await Promise.race([child.terminated, new Promise((r) => setTimeout(() => r('still running'), 20_000))]);
    expect(exit).toEqual({ code: 143, signal: null });
    // Not the 60 s drain (a busy machine takes a few seconds to end a node process under tsx).
    expect(performance.now() - t0).toBeLessThan(10_000);
    expect(child.stderr).toContain('second signal: exiting without waiting for the drain');
    expect((await long).rows).toBeUndefined(); // the statement did not complete
    await t.close();
  }, 90_000);
});

describe('drain of one of two agents on a shared PostgreSQL store', () => {
  let A: ExtraAgent;
  let B: ExtraAgent;
  let stateUrl: string;
  beforeAll(async () => {
    const stack = s.get();
    const stateDb = `hoop_state_${randomBytes(4).toString('hex')}`;
    await stack.pg.exec(`CREATE DATABASE ${stateDb}`);
    stateUrl = stack.pg.url(stateDb);
    [A, B] = await Promise.all([
      startExtraAgent(stack, { agentId: 'drain-a', state: { url: stateUrl } }),
      startExtraAgent(stack, { agentId: 'drain-b', state: { url: stateUrl } }),
    ]);
  }, 120_000);
  afterAll(async () => {
    await A?.stop().catch(() => {});
    await B?.stop();
  }, 60_000);

  it('running statements finish, a held write is withdrawn with a message, new tunnels are refused, nothing is lost', async () => {
    const stack = s.get();
    // Load on A: a statement that outlasts the SIGTERM but not the drain, a stream of short reads, and a
    // write held for approval.
    const running = await clientOf(A);
    const loop = await clientOf(A);
    const holder = await clientOf(A);
    const notices: string[] = [];
    holder.on('notice', (n) => notices.push(`${(n as { code?: string }).code} ${n.message}`));
    const onB = await clientOf(B);

    // pg_sleep is blocked by policy (P3); a lock held past the SIGTERM makes a statement that runs on.
    const unlock = await lockPatients(stack);
    const slow = settle(running.query('SELECT count(*)::int AS n FROM patients'));
    let loopOk = 0;
    let loopEnd: { code?: string; message?: string } | undefined;
    const loopErrors: Array<{ code?: string; message?: string }> = [];
    loop.on('error', (e) => loopErrors.push(e));
    const reads = (async () => {
      for (;;) {
        const r = await settle(loop.query('SELECT count(*)::int AS n FROM visits'));
        if (!r.rows) return (loopEnd = r);
        loopOk++;
      }
    })();
    const held = settle(holder.query("UPDATE patients SET full_name = full_name WHERE id = 1"));
    const approval = await pendingOn(A);
    await new Promise((r) => setTimeout(r, 200));

    const draining = A.agent.drain(10_000);
    setTimeout(() => void unlock(), 1_500);
    // A refuses new tunnels as soon as it drains…
    await new Promise((r) => setTimeout(r, 100));
    expect(await rawUpgrade(A.agent.url)).toMatch(/^HTTP\/1.1 503 [^]*AGENT_DRAINING/);
    // …while B keeps serving.
    expect((await onB.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);

    const report = await draining;
    // The statement running at SIGTERM finished with its result; nothing needed cancelling.
    expect(await slow).toMatchObject({ rows: [{ n: 50 }] });
    expect(report).toMatchObject({ sessions: 3, cancelled: 0, forced: 0 });
    expect(report.ms).toBeGreaterThanOrEqual(1_000);
    expect(report.ms).toBeLessThan(8_000);
    // The read loop ended on the agent's FATAL, not on a cut connection.
    await reads;
    expect(loopOk).toBeGreaterThan(0);
    // (between two reads the FATAL reaches the client as an 'error' event, during one as the query's error)
    expect([loopEnd, ...loopErrors].some((e) => e?.code === '57P01' && e.message?.includes('the agent is shutting down'))).toBe(true);
    // The held write was not run, and its client was told why.
    const h = await held;
    expect(h.code).toBe('42501');
    expect(h.message).toContain(`approval ${approval.id} withdrawn: the agent is shutting down; the statement was not run`);
    expect(notices.some((n) => n.startsWith('57P01 hoopctl: the agent is shutting down; the approval request was withdrawn'))).toBe(true);
    expect((await B.agent.store.approvals.get(approval.id))?.status).toBe('withdrawn');

    // Nothing lost: every session A started has its session_end (naming the drain), and the
    // shared store's chains verify.
    const events: AuditEvent[] = [];
    for await (const line of B.agent.store.exportEvents({}, 'jsonl')) for (const l of line.split('\n')) if (l) events.push(JSON.parse(l));
    const ofA = events.filter((e) => e.agentId === 'drain-a');
    const started = ofA.filter((e) => e.type === 'session_start').map((e) => e.sessionId).sort();
    const ended = ofA.filter((e) => e.type === 'session_end').map((e) => e.sessionId).sort();
    expect(started).toHaveLength(3);
    // The withdrawal is on the chain, with its reason, in the held session.
    const withdrawn = ofA.filter((e) => e.type === 'approval_withdrawn');
    expect(withdrawn).toHaveLength(1);
    expect(withdrawn[0]).toMatchObject({ sessionId: approval.sessionId, data: { approvalId: approval.id, reason: 'the agent is shutting down' } });
    expect(ended).toEqual(started);
    expect(ofA.filter((e) => e.type === 'session_end').every((e) => String(e.data.reason).includes('the agent is shutting down'))).toBe(true);
    expect((await B.agent.store.verify()).ok).toBe(true);
    await onB.end();
    for (const c of [running, loop, holder]) await c.end().catch(() => {});
  }, 60_000);
});

describe('drain deadline', () => {
  it('cancels (57014) what outlives shutdown.drainTimeout, then stops', async () => {
    const stack = s.get();
    const C = await startExtraAgent(stack, { agentId: 'drain-c' });
    try {
      const c = await clientOf(C);
      const unlock = await lockPatients(stack);
      const long = settle(c.query('SELECT count(*) FROM patients'));
      await new Promise((r) => setTimeout(r, 300));
      const report = await C.agent.drain(500).finally(unlock);
      expect(await long).toMatchObject({ code: '57014' });
      expect(report.cancelled).toBeGreaterThanOrEqual(1);
      expect(report.forced).toBe(0);
      expect(report.ms).toBeLessThan(3_000);
      await c.end().catch(() => {});
    } finally {
      await C.stop();
    }
  }, 60_000);
});
