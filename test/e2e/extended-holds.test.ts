// Writes sent with the extended protocol (node-postgres, JDBC: Parse/Bind/Execute/Sync with parameters)
// are held for approval at their Execute, like a simple Query (issue 8, SECURITY-POLICY.md P4, P8). The
// approval is bound to the statement and the exact parameters; the approved Execute runs once,
// read-write, and the session is read-only again afterwards. Judged from the outside: database state,
// the bytes the client received, the approval records.
import { describe, expect, it } from 'vitest';
import pg from 'pg';
import { decideNextApproval, directQuery, nextPendingApproval, psql, tunnelClient, useStack } from '../harness/stack.js';
import { RawClient, collect, type BackendMsg } from './wire.js';
import { msg } from '../../scripts/attacks/pgclient.js';

const s = useStack();

const direct = <T extends pg.QueryResultRow>(sql: string, params: unknown[] = []) => directQuery<T>(s.get(), sql, params);
const notes = (id: number) => direct<{ notes: string | null }>('SELECT notes FROM visits WHERE id = $1', [id]).then((r) => r[0].notes);

/** A client that collects the notices the agent sends (approval requested …). */
async function client(): Promise<{ c: pg.Client; notices: string[] }> {
  const c = await tunnelClient(s.get());
  const notices: string[] = [];
  c.on('notice', (n) => notices.push(n.message ?? ''));
  return { c, notices };
}

describe('extended-protocol holds (node-postgres)', () => {
  it('a parameterised UPDATE is held, approved, runs once; the session is read-only again after it', async () => {
    const { c, notices } = await client();
    try {
      const marker = `approved-${Date.now()}`;
      const pending = c.query('UPDATE visits SET notes = $1 WHERE id = $2', [marker, 5]);
      const id = await decideNextApproval(s.get(), 'approve');
      const r = await pending;
      expect(r.rowCount).toBe(1);
      expect(notices.join('\n')).toContain(`statement held for approval ${id}`);
      expect(await notes(5)).toBe(marker);

      // What the approver saw: the statement and its parameters; the approval is consumed (single use).
      const a = await s.get().agent.store.approvals.get(id);
      expect(a).toMatchObject({ status: 'consumed', sql: 'UPDATE visits SET notes = $1 WHERE id = $2', params: [marker, '5'] });

      // P8: the approved statement alone ran read-write.
      expect((await c.query('SHOW transaction_read_only')).rows).toEqual([{ transaction_read_only: 'on' }]);
      expect((await c.query('SELECT notes FROM visits WHERE id = $1', [5])).rows).toEqual([{ notes: marker }]);
    } finally {
      await c.end();
    }
  });

  it('the same statement again is held again; a denial leaves the row unchanged and the session usable', async () => {
    const { c } = await client();
    try {
      const before = await notes(6);
      const pending = c.query('UPDATE visits SET notes = $1 WHERE id = $2', ['denied-change', 6]);
      const settled = pending.then(
        () => undefined,
        (e: unknown) => e,
      );
      const id = await decideNextApproval(s.get(), 'deny', 'not during business hours');
      expect(await settled).toMatchObject({ code: '42501', message: expect.stringContaining(`approval ${id} denied`) });
      expect(await notes(6)).toBe(before);
      expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);

      // Approving a second, identical request does not make the first reusable: each is its own.
      const again = c.query('UPDATE visits SET notes = $1 WHERE id = $2', ['second-try', 6]);
      const id2 = await decideNextApproval(s.get(), 'approve');
      expect(id2).not.toBe(id);
      await again;
      expect(await notes(6)).toBe('second-try');
    } finally {
      await c.end();
    }
  });

  it('a named prepared statement: each Execute with new parameters needs its own approval', async () => {
    const { c } = await client();
    try {
      const q = { name: 'set_notes', text: 'UPDATE visits SET notes = $1 WHERE id = $2' };
      const first = c.query({ ...q, values: ['named-1', 7] });
      const a1 = await decideNextApproval(s.get(), 'approve');
      await first;
      const second = c.query({ ...q, values: ['named-2', 8] });
      const a2 = await decideNextApproval(s.get(), 'approve');
      await second;
      expect(a2).not.toBe(a1);
      expect(await notes(7)).toBe('named-1');
      expect(await notes(8)).toBe('named-2');
      const a = await s.get().agent.store.approvals.get(a2);
      expect(a?.params).toEqual(['named-2', '8']);
    } finally {
      await c.end();
    }
  });

  it('parameters of a statement on a table with masked columns are redacted for the approver', async () => {
    const { c } = await client();
    const [{ phone: original }] = await direct<{ phone: string }>('SELECT phone FROM patients WHERE id = 12');
    try {
      const pending = c.query('UPDATE patients SET phone = $1 WHERE id = $2', ['+1-000-555-0199', 12]);
      const settled = pending.then(
        () => undefined,
        (e: unknown) => e,
      );
      const held = await nextPendingApproval(s.get());
      expect(held.params).toEqual(['***', '***']);
      expect(JSON.stringify(held)).not.toContain('555-0199');
      await s.get().agent.store.approvals.decide(held.id, { sub: 'approver-bot', issuer: s.get().issuer.issuer }, 'deny', 'test');
      expect(await settled).toMatchObject({ code: '42501' });
      expect(await direct('SELECT phone FROM patients WHERE id = 12')).toEqual([{ phone: original }]);
    } finally {
      await c.end();
    }
  });

  it('inside BEGIN … a held write is refused at once (the block stays read-only); nothing is asked', async () => {
    const { c } = await client();
    const before = await notes(9);
    try {
      await c.query('BEGIN');
      await expect(c.query('UPDATE visits SET notes = $1 WHERE id = $2', ['in-block', 9])).rejects.toMatchObject({
        code: '42501',
        message: expect.stringContaining('P4.in-transaction'),
      });
      await c.query('ROLLBACK');
      expect(await s.get().agent.store.approvals.list({ status: 'pending' })).toEqual([]);
      expect(await notes(9)).toBe(before);
    } finally {
      await c.end();
    }
  });
});

describe('holds inside a transaction block', () => {
  it('psql: BEGIN, then a write that needs approval is refused at once with the reason; nothing is asked or changed', async () => {
    const before = await notes(3);
    const r = await psql(s.get(), ['-c', 'BEGIN', '-c', "UPDATE visits SET notes = 'in-block' WHERE id = 3", '-c', 'ROLLBACK']);
    expect(r.stderr).toMatch(/ERROR: +hoopctl: statement blocked by policy \(P4\.in-transaction\)/);
    expect(await s.get().agent.store.approvals.list({ status: 'pending' })).toEqual([]);
    expect(await notes(3)).toBe(before);
  });
});

describe('extended-protocol holds (raw pipeline)', () => {
  const { parse, bind, execute } = msg;
  const sync = msg.sync();

  async function raw(): Promise<RawClient> {
    const r = await RawClient.connect(s.get().listener.host, s.get().listener.port);
    await r.startup();
    return r;
  }

  it('after an earlier error in the same run, the held Execute is skipped as PostgreSQL would: nothing runs, only that error is seen', async () => {
    // The run is decided as a whole before any of it is sent (so it can run as one transaction); the
    // approver is asked, and whichever way they decide the server stops at the division by zero.
    for (const decision of ['approve', 'deny'] as const) {
      const r = await raw();
      const before = await notes(10);
      try {
        r.write(Buffer.concat([parse('', 'SELECT 1/0'), bind('', ''), execute(''), parse('', 'UPDATE visits SET notes = $1 WHERE id = 10'), bind('', '', ['skipped']), execute(''), sync]));
        await decideNextApproval(s.get(), decision);
        const msgs = await r.until('Z', 10_000);
        const errors = msgs.filter((m) => m.type === 'E');
        expect(errors).toHaveLength(1);
        expect(collect(msgs).error?.code).toBe('22012'); // division by zero, and only that
        expect(msgs.at(-1)!.body.toString()).toBe('I');
        expect(await notes(10)).toBe(before);
        // The session is in step with the server afterwards.
        expect((await r.simple('SHOW transaction_read_only')).rows).toEqual(['on']);
      } finally {
        r.destroy();
      }
    }
  });

  it('the client sees exactly its own replies around an approved Execute, in order', async () => {
    const r = await raw();
    try {
      r.write(Buffer.concat([parse('', 'SELECT 41 + 1'), bind('', ''), execute(''), parse('', 'UPDATE visits SET notes = $1 WHERE id = 11'), bind('', '', ['piped']), execute(''), sync]));
      await decideNextApproval(s.get(), 'approve');
      const msgs = await r.until('Z', 10_000);
      // N (the hold notice: the run is decided before it is sent), 1 2 D C (the SELECT), 1 2 (the
      // UPDATE's Parse/Bind), C (the UPDATE), Z: no reply of the agent's read-write switch or restore.
      expect(kinds(msgs)).toBe('N12DC12CZ');
      expect(msgs.find((m) => m.type === 'C' && m.body.toString().startsWith('UPDATE'))?.body.toString()).toBe('UPDATE 1\0');
      expect(await notes(11)).toBe('piped');
      expect((await r.simple('SHOW transaction_read_only')).rows).toEqual(['on']);
    } finally {
      r.destroy();
    }
  });
});

describe('pipelined runs in the audit trail', () => {
  it('each Execute result is recorded against its own statement, even when the next run was sent before this one was answered', async () => {
    const app = `pipeline-${Date.now()}`;
    const r = await RawClient.connect(s.get().listener.host, s.get().listener.port);
    try {
      await r.startup({ user: 'noop', database: 'demo-db', application_name: app });
      const { parse, bind, execute } = msg;
      // Three runs in one write: one row, a refused statement (its own run), three rows.
      r.write(
        Buffer.concat([
          parse('', 'SELECT 1'), bind('', ''), execute(''), msg.sync(),
          msg.query('DROP TABLE visits'),
          parse('', 'SELECT generate_series(1, 3)'), bind('', ''), execute(''), msg.sync(),
        ]),
      );
      for (let i = 0; i < 3; i++) await r.until('Z', 10_000);
    } finally {
      r.destroy();
    }
    const store = s.get().agent.store;
    let results: Array<Record<string, any>> = [];
    for (let i = 0; i < 100 && results.length < 2; i++) {
      const page = await store.querySessions({ limit: 200 });
      const session = page.sessions.find((x) => x.applicationName === app);
      const events = session ? await store.sessionEvents(session.sessionId) : [];
      const statements = new Map(events.filter((e) => e.type === 'statement').map((e) => [e.seq, e.data?.sql]));
      results = events.filter((e) => e.type === 'statement_result').map((e) => ({ sql: statements.get(e.data?.statementSeq as number), rows: e.data?.rows, note: e.data?.note }));
      if (results.length < 2) await new Promise((res) => setTimeout(res, 100));
    }
    expect(results).toEqual([
      { sql: 'SELECT 1', rows: 1, note: undefined },
      { sql: 'SELECT generate_series(1, 3)', rows: 3, note: undefined },
    ]);
  });
});

function kinds(msgs: BackendMsg[]): string {
  return msgs.map((m) => m.type).join('');
}
