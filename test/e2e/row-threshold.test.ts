// P11 row threshold, in process: a result passing approval.exportRowLimit (or a scope's maxRows) pauses at
// that row for an approver. Approve → the rest flows and equals direct execution; deny → the client gets an
// error where the rest would have been, the session goes on, the audit keeps the rows delivered and why.
// (A 100,000-row result with the agent in its own process, its RSS measured: row-threshold-memory.test.ts.)
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import pg from 'pg';
import { directQuery, nextPendingApproval, run, startExtraAgent, useStack, type ExtraAgent } from '../harness/stack.js';

const LIMIT = 50;
const stack = useStack({ patients: 100 });
let gate: ExtraAgent;
let scoped: ExtraAgent;
let unapproved: ExtraAgent;

beforeAll(async () => {
  const s = stack.get();
  gate = await startExtraAgent(s, { agentId: 'rows', approval: { exportRowLimit: LIMIT } });
  scoped = await startExtraAgent(s, {
    agentId: 'rows-scoped',
    approval: { exportRowLimit: LIMIT },
    connection: { scopes: [{ name: 'small-reads', match: { groups: ['data-eng'] }, read: ['public.visits(id, department)'], maxRows: 20 }] },
  });
  unapproved = await startExtraAgent(s, { agentId: 'rows-no-approvers', approval: { exportRowLimit: LIMIT, approvers: undefined } });
}, 120_000);

afterAll(async () => {
  for (const a of [gate, scoped, unapproved]) await a?.stop();
});

async function client(a: ExtraAgent): Promise<pg.Client> {
  const c = new pg.Client({ host: a.listener.host, port: a.listener.port, user: 'noop', database: 'demo-db' });
  await c.connect();
  return c;
}

/** Decides the next pending approval of agent `a` as the demo's approver; returns it as it was requested. */
async function decide(a: ExtraAgent, verdict: 'approve' | 'deny') {
  const pending = await nextPendingApproval({ agent: a.agent } as never);
  await a.agent.store.approvals.decide(pending.id, { sub: 'approver-bot', issuer: stack.get().issuer.issuer, groups: ['compliance'] }, verdict, 'decided by the test');
  return pending;
}

async function events(a: ExtraAgent): Promise<{ type: string; seq: number; data: Record<string, any> }[]> {
  const out: { type: string; seq: number; data: Record<string, any> }[] = [];
  for await (const line of a.agent.store.chainLines()) out.push(JSON.parse(line));
  return out;
}

/** The statement_result event of the statement whose SQL contains `marker`. */
async function resultOf(a: ExtraAgent, marker: string) {
  for (let i = 0; i < 100; i++) {
    const all = await events(a);
    const st = all.find((e) => e.type === 'statement' && String(e.data.sql).includes(marker));
    const res = st && all.find((e) => e.type === 'statement_result' && e.data.statementSeq === st.seq);
    if (res) return res.data;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no statement_result for ${marker}`);
}

describe('row threshold (approval.exportRowLimit)', () => {
  it('a result under the limit flows without approval', async () => {
    const c = await client(gate);
    try {
      expect((await c.query(`SELECT g FROM generate_series(1, ${LIMIT}) g`)).rowCount).toBe(LIMIT);
      expect(await gate.agent.store.approvals.list({ status: 'pending' })).toEqual([]);
    } finally {
      await c.end();
    }
  });

  it('pauses at the limit; approved, the rest flows and equals direct execution', async () => {
    const c = await client(gate);
    const notices: string[] = [];
    c.on('notice', (n) => notices.push(n.message ?? ''));
    try {
      const q = c.query('SELECT id, department, visited_at FROM visits /* approve-me */ ORDER BY id');
      const pending = await decide(gate, 'approve');
      expect(pending).toMatchObject({ rule: 'P11.rows', rowsSoFar: LIMIT });
      expect(pending.sql).toContain('approve-me');
      const { rows } = await q;
      expect(rows).toEqual(await directQuery(stack.get(), 'SELECT id, department, visited_at FROM visits ORDER BY id'));
      expect(notices.join('\n')).toContain(`result paused after ${LIMIT} rows for approval ${pending.id} (P11.rows)`);
      expect(await resultOf(gate, 'approve-me')).toMatchObject({ rows: rows.length, sqlstate: '00000' });
    } finally {
      await c.end();
    }
  });

  it('denied: the client gets an error where the rest would be, the query is cancelled, the session goes on, the audit says why', async () => {
    const c = await client(gate);
    try {
      const q = c.query('SELECT id, department FROM visits /* deny-me */ ORDER BY id').then(
        () => undefined,
        (e: pg.DatabaseError) => e,
      );
      await decide(gate, 'deny');
      const err = await q;
      expect(err?.code).toBe('42501');
      expect(err?.message).toContain('P11.rows');
      expect(err?.message).toContain(`stopped after ${LIMIT} rows`);
      expect((await c.query('SELECT 1 AS ok')).rows).toEqual([{ ok: 1 }]);
      const res = await resultOf(gate, 'deny-me');
      expect(res.rows).toBe(LIMIT);
      expect(res.note).toContain(`stopped after ${LIMIT} rows`);
      expect(res.note).toContain('denied');
    } finally {
      await c.end();
    }
  });

  it('counts a cursor over all its FETCHes (many small FETCHes do not slip past)', async () => {
    const c = await client(gate);
    try {
      await c.query('BEGIN');
      await c.query('DECLARE cur CURSOR FOR SELECT id FROM visits ORDER BY id');
      expect((await c.query('FETCH 30 FROM cur')).rowCount).toBe(30);
      const second = c.query('FETCH 30 FROM cur');
      const pending = await decide(gate, 'approve');
      expect(pending.rowsSoFar).toBe(LIMIT);
      expect((await second).rows.map((r) => r.id)).toEqual(Array.from({ length: 30 }, (_, i) => 31 + i));
      // approved for the cursor: the rest of it flows
      expect((await c.query('FETCH 100 FROM cur')).rowCount).toBe(100);
      await c.query('COMMIT');
    } finally {
      await c.end();
    }
  });

  it('pauses an extended-protocol result too (node-postgres Parse/Bind/Execute); denied, the session goes on', async () => {
    const c = await client(gate);
    try {
      const q = c.query({ text: 'SELECT id FROM visits WHERE id > $1 ORDER BY id', values: [0] });
      await decide(gate, 'deny');
      const err = await q.then(() => undefined, (e: pg.DatabaseError) => e);
      expect(err?.message).toContain('P11.rows');
      expect((await c.query({ text: 'SELECT $1::int AS ok', values: [1] })).rows).toEqual([{ ok: 1 }]);
    } finally {
      await c.end();
    }
  });

  it('a client that leaves while paused withdraws the request and cancels the query', async () => {
    const c = await client(gate);
    c.on('error', () => {});
    const q = c.query('SELECT g FROM generate_series(1, 10000000) g /* leave-me */').catch(() => undefined);
    const pending = await nextPendingApproval({ agent: gate.agent } as never);
    await c.end().catch(() => {});
    await q;
    for (let i = 0; i < 100 && (await gate.agent.store.approvals.get(pending.id))?.status === 'pending'; i++) await new Promise((r) => setTimeout(r, 50));
    expect((await gate.agent.store.approvals.get(pending.id))?.status).toBe('withdrawn');
    const res = await resultOf(gate, 'leave-me');
    expect(res.rows).toBe(LIMIT);
    expect(res.note).toContain(`paused after ${LIMIT} rows`);
    // nothing of it still runs at the server
    for (let i = 0; i < 100; i++) {
      const running = await directQuery(stack.get(), "SELECT 1 FROM pg_stat_activity WHERE query LIKE '%leave-me%' AND state = 'active' AND pid <> pg_backend_pid()");
      if (running.length === 0) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error('the paused query still runs at the server');
  });
});

describe('hoopctl exec reports the pause like any hold', () => {
  const CLI = ['--import', 'tsx', path.resolve('cli/src/main.ts')];

  it('--json: the approval_requested and approved events on stderr, all rows on stdout; denied: exit 6', async () => {
    const env = { ...process.env, HOOPCTL_TOKEN: await stack.get().token(), HOOPCTL_AGENT: gate.agent.url };
    const approved = run('node', [...CLI, 'exec', 'demo-db', '-c', 'SELECT id FROM visits ORDER BY id', '--json'], { env });
    await decide(gate, 'approve');
    const ok = await approved;
    expect(ok.code, ok.stderr).toBe(0);
    const events = ok.stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { type: string; message?: string });
    expect(events.find((e) => e.type === 'approval_requested')?.message).toContain(`result paused after ${LIMIT} rows`);
    expect(events.some((e) => e.type === 'approved')).toBe(true);
    expect(JSON.parse(ok.stdout).results[0].rowCount).toBe((await directQuery(stack.get(), 'SELECT id FROM visits')).length);

    const denied = run('node', [...CLI, 'exec', 'demo-db', '-c', 'SELECT id FROM visits'], { env });
    await decide(gate, 'deny');
    const no = await denied;
    expect(no.code).toBe(6);
    expect(no.stderr).toMatch(/result paused after 50 rows for approval ap_/);
    expect(no.stderr).toMatch(/denied by approver-bot: decided by the test; the rest of the result was not sent/);
  }, 120_000);
});

describe("a scope's maxRows, and a connection without approvers", () => {
  it("the scope's maxRows replaces exportRowLimit for its identities", async () => {
    const c = await client(scoped);
    try {
      const q = c.query('SELECT id, department FROM visits ORDER BY id');
      const pending = await decide(scoped, 'approve');
      expect(pending.rowsSoFar).toBe(20);
      expect((await q).rowCount).toBe((await directQuery(stack.get(), 'SELECT id FROM visits')).length);
    } finally {
      await c.end();
    }
  });

  it('without approvers, a result stops at the limit with an error saying so', async () => {
    const c = await client(unapproved);
    try {
      const err = await c.query('SELECT id FROM visits').then(() => undefined, (e: pg.DatabaseError) => e);
      expect(err?.code).toBe('42501');
      expect(err?.message).toContain('P11.rows');
      expect(err?.message).toContain('no approvers');
      expect((await c.query('SELECT 1 AS ok')).rows).toEqual([{ ok: 1 }]);
    } finally {
      await c.end();
    }
  });
});
