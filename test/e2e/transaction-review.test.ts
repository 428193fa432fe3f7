// Transactions reviewed before COMMIT (issue 18, approval.mode: transaction). A job's writes run inside
// its own transaction; the COMMIT waits for an approver who sees every statement and the rows it
// changed; anything but approval rolls back. Judged from the outside: the database (direct connection),
// what the client received, the approval records.
import { describe, expect, it } from 'vitest';
import pg from 'pg';
import path from 'node:path';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { decideNextApproval, directQuery, nextPendingApproval, psql, run, tunnelClient, useStack } from '../harness/stack.js';

const s = useStack({ patients: 200, approvalMode: 'transaction', transactionTimeout: '6s', approvalTimeout: '2m' });

const direct = <T extends pg.QueryResultRow>(sql: string, params: unknown[] = []) => directQuery<T>(s.get(), sql, params);
const notes = (id: number) => direct<{ notes: string | null }>('SELECT notes FROM visits WHERE id = $1', [id]).then((r) => r[0].notes);
/** A fingerprint of the data a denied transaction touched: unchanged means nothing of it became visible. */
const fingerprint = () => direct<{ h: string }>("SELECT md5(string_agg(v::text, ',' ORDER BY id)) AS h FROM visits v").then((r) => r[0].h);
const settle = <T>(p: Promise<T>) => p.then((v) => ({ ok: true as const, v }), (e: unknown) => ({ ok: false as const, e: e as pg.DatabaseError }));

/** Takes (and releases) the row's lock directly, failing at once (55P03) if someone holds it. */
async function lockNowait(id: number): Promise<void> {
  const w = new pg.Client({ connectionString: s.get().directUrl });
  await w.connect();
  try {
    await w.query('BEGIN');
    await w.query('SELECT 1 FROM visits WHERE id = $1 FOR UPDATE NOWAIT', [id]);
  } finally {
    await w.query('ROLLBACK').catch(() => {});
    await w.end();
  }
}

async function client(): Promise<{ c: pg.Client; notices: string[] }> {
  const c = await tunnelClient(s.get());
  const notices: string[] = [];
  c.on('notice', (n) => notices.push(n.message ?? ''));
  c.on('error', () => {});
  return { c, notices };
}

describe('approval.mode transaction (node-postgres)', () => {
  it('writes run in the block, the COMMIT waits; the approver sees every statement and its rows; approve commits exactly once', async () => {
    const { c, notices } = await client();
    try {
      const marker = `tx-approved-${Date.now()}`;
      await c.query('BEGIN');
      // Extended protocol (parameters) and simple Query: both run inside the block, not asked one by one.
      expect((await c.query('UPDATE visits SET notes = $1 WHERE id IN (11, 12)', [marker])).rowCount).toBe(2);
      expect((await c.query(`UPDATE visits SET notes = '${marker}-b' WHERE id = 13`)).rowCount).toBe(1);
      // Reads in the block still go through masking; the block sees its own writes.
      const read = await c.query('SELECT ssn, notes FROM patients p JOIN visits v ON v.patient_id = p.id WHERE v.id = 11');
      expect(read.rows[0].notes).toBe(marker);
      expect(read.rows[0].ssn).not.toMatch(/^\d{3}-\d{2}-\d{4}$/);

      const commit = settle(c.query('COMMIT'));
      const a = await nextPendingApproval(s.get());
      expect(a.transaction).toMatchObject({ rowsChanged: 3 });
      expect(a.transaction!.statements.map((x) => [x.writes, x.rows])).toEqual([[true, 2], [true, 1], [false, 1]]);
      expect(a.transaction!.statements[0]).toMatchObject({ sql: 'UPDATE visits SET notes = $1 WHERE id IN (11, 12)', params: [marker] });
      expect(a.sql).toContain('3 rows changed');

      // Nobody else sees the uncommitted rows while the COMMIT waits.
      expect(await notes(11)).not.toBe(marker);
      await decideNextApproval(s.get(), 'approve');
      const r = await commit;
      expect(r.ok).toBe(true);
      expect(notices.join('\n')).toContain(`transaction held for approval ${a.id}`);
      expect(await direct('SELECT id, notes FROM visits WHERE id IN (11, 12, 13) ORDER BY id')).toEqual([
        { id: 11, notes: marker },
        { id: 12, notes: marker },
        { id: 13, notes: `${marker}-b` },
      ]);
      expect((await s.get().agent.store.approvals.get(a.id))?.status).toBe('consumed');
      // After the block the session is read-only again, and a write alone is held on its own.
      expect((await c.query('SHOW transaction_read_only')).rows).toEqual([{ transaction_read_only: 'on' }]);
    } finally {
      await c.end();
    }
  });

  it('deny rolls back: the data is unchanged, the client gets an error and the session goes on', async () => {
    const { c } = await client();
    try {
      const before = await fingerprint();
      await c.query('BEGIN');
      await c.query('UPDATE visits SET notes = $1 WHERE id = $2', ['denied', 20]);
      await c.query("INSERT INTO visits (patient_id, visited_at, department, notes) SELECT patient_id, visited_at, department, 'denied-insert' FROM visits WHERE id = 20");
      const commit = settle(c.query('COMMIT'));
      await decideNextApproval(s.get(), 'deny', 'not this one');
      const r = await commit;
      expect(r.ok).toBe(false);
      expect(!r.ok && r.e).toMatchObject({ code: '42501', message: expect.stringContaining('rolled back') });
      expect(await fingerprint()).toBe(before);
      expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
      expect((await c.query('SHOW transaction_read_only')).rows).toEqual([{ transaction_read_only: 'on' }]);
    } finally {
      await c.end();
    }
  });

  it('a client killed while its COMMIT waits: rolled back, the request withdrawn, the locks released', async () => {
    const { c } = await client();
    const before = await notes(30);
    await c.query('BEGIN');
    await c.query('UPDATE visits SET notes = $1 WHERE id = $2', ['killed', 30]);
    void settle(c.query('COMMIT'));
    const a = await nextPendingApproval(s.get());
    await expect(lockNowait(30)).rejects.toMatchObject({ code: '55P03' });
    (c as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
    for (let i = 0; i < 200 && (await s.get().agent.store.approvals.get(a.id))?.status === 'pending'; i++) await new Promise((r) => setTimeout(r, 50));
    expect((await s.get().agent.store.approvals.get(a.id))?.status).toBe('withdrawn');
    // The row is not locked any more and never changed (the server rolls back as the agent closes its connection).
    for (let i = 0; i < 100; i++) {
      if (await lockNowait(30).then(() => true, () => false)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    await lockNowait(30);
    expect(await notes(30)).toBe(before);
  });

  it('locks are released at approval.transactionTimeout: the COMMIT fails and nothing is committed', async () => {
    const { c } = await client();
    try {
      const before = await notes(31);
      await c.query('BEGIN');
      await c.query('UPDATE visits SET notes = $1 WHERE id = $2', ['timed-out', 31]);
      const commit = settle(c.query('COMMIT')); // nobody decides: the 6 s bound ends it
      await nextPendingApproval(s.get());
      // While the COMMIT waits the block holds its row lock…
      await expect(lockNowait(31)).rejects.toMatchObject({ code: '55P03' });
      const r = await commit;
      expect(!r.ok && r.e).toMatchObject({ code: '42501', message: expect.stringContaining('rolled back') });
      // … and at the bound it is rolled back: the lock is free and nothing changed.
      await lockNowait(31);
      expect(await notes(31)).toBe(before);
      const [a] = (await s.get().agent.store.approvals.list()).filter((x) => x.transaction && x.status === 'expired');
      expect(a).toBeDefined();
      expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await c.end();
    }
  });

  it('a statement sent after the COMMIT cannot ride along: it waits, and is judged on its own after the block', async () => {
    const { c } = await client();
    try {
      await c.query('BEGIN');
      await c.query('UPDATE visits SET notes = $1 WHERE id = $2', ['first', 40]);
      const commit = settle(c.query('COMMIT'));
      const after = settle(c.query('UPDATE visits SET notes = $1 WHERE id = $2', ['rider', 41]));
      const a = await nextPendingApproval(s.get());
      expect(a.transaction!.statements).toHaveLength(1);
      await decideNextApproval(s.get(), 'approve');
      expect((await commit).ok).toBe(true);
      // The later UPDATE is a statement of its own outside any block: held for its own approval.
      const b = await nextPendingApproval(s.get());
      expect(b.id).not.toBe(a.id);
      expect(b.transaction).toBeUndefined();
      await decideNextApproval(s.get(), 'deny');
      expect((await after).ok).toBe(false);
      expect(await notes(40)).toBe('first');
      expect(await notes(41)).not.toBe('rider');
    } finally {
      await c.end();
    }
  });

  it('a block that wrote nothing commits without asking; a failed block rolls back without asking', async () => {
    const { c } = await client();
    try {
      await c.query('BEGIN');
      await c.query('SELECT count(*) FROM visits');
      await c.query('COMMIT');
      await c.query('BEGIN');
      await c.query('UPDATE visits SET notes = $1 WHERE id = $2', ['never', 50]);
      await expect(c.query('SELECT 1 / 0')).rejects.toMatchObject({ code: '22012' });
      const r = await c.query('COMMIT');
      expect(r.command).toBe('ROLLBACK');
      expect(await notes(50)).not.toBe('never');
      expect((await s.get().agent.store.approvals.list({ status: 'pending' })).length).toBe(0);
    } finally {
      await c.end();
    }
  });

  it('inside a reviewed block, what a rollback cannot take back is refused; COMMIT must come alone', async () => {
    const { c } = await client();
    try {
      await c.query('BEGIN');
      await expect(c.query("SELECT nextval('visits_id_seq')")).rejects.toMatchObject({ code: '42501', message: expect.stringContaining('P4.review.escapes-rollback') });
      await c.query('ROLLBACK');
      await c.query('BEGIN');
      await c.query('UPDATE visits SET notes = $1 WHERE id = $2', ['bundled', 51]);
      await expect(c.query('SELECT 1; COMMIT')).rejects.toMatchObject({ code: '42501', message: expect.stringContaining('P4.review.commit-alone') });
      await expect(c.query('COMMIT AND CHAIN')).rejects.toMatchObject({ code: '42501' });
      expect((await c.query('ROLLBACK')).command).toBe('ROLLBACK');
      expect(await notes(51)).not.toBe('bundled');
    } finally {
      await c.end();
    }
  });

  it('BEGIN READ ONLY stays read-only: a write in it is refused as in statement mode', async () => {
    const { c } = await client();
    try {
      await c.query('BEGIN READ ONLY');
      await expect(c.query('UPDATE visits SET notes = $1 WHERE id = $2', ['ro', 52])).rejects.toMatchObject({ code: '42501', message: expect.stringContaining('P4.in-transaction') });
      await c.query('ROLLBACK');
    } finally {
      await c.end();
    }
  });
});

describe('approval.mode transaction (psql)', () => {
  it('a script with BEGIN … COMMIT: held once, approved, every row changed exactly once', async () => {
    const before = await direct<{ n: number }>("SELECT count(*)::int AS n FROM visits WHERE notes = 'psql-tx'");
    const script = ['BEGIN;', "UPDATE visits SET notes = 'psql-tx' WHERE id BETWEEN 60 AND 64;", "UPDATE visits SET notes = 'psql-tx' WHERE id = 65;", 'COMMIT;'].join('\n');
    const run = psql(s.get(), ['-v', 'ON_ERROR_STOP=1'], { input: script, timeoutMs: 90_000 });
    const a = await nextPendingApproval(s.get());
    expect(a.transaction).toMatchObject({ rowsChanged: 6 });
    await decideNextApproval(s.get(), 'approve');
    const r = await run;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('COMMIT');
    expect(await direct<{ n: number }>("SELECT count(*)::int AS n FROM visits WHERE notes = 'psql-tx'")).toEqual([{ n: before[0].n + 6 }]);
  });

  it('COPY FROM STDIN inside the block: its rows are listed and committed on approval', async () => {
    const script = ['BEGIN;', 'COPY visits (patient_id, visited_at, department, notes) FROM STDIN;', '1\t2026-01-01\tcardiology\tcopied-in', '2\t2026-01-02\tcardiology\tcopied-in', '\\.', 'COMMIT;'].join('\n');
    const run = psql(s.get(), ['-v', 'ON_ERROR_STOP=1'], { input: script, timeoutMs: 90_000 });
    const a = await nextPendingApproval(s.get());
    expect(a.transaction).toMatchObject({ rowsChanged: 2 });
    await decideNextApproval(s.get(), 'approve');
    const r = await run;
    expect(r.code, r.stderr).toBe(0);
    expect(await direct<{ n: number }>("SELECT count(*)::int AS n FROM visits WHERE notes = 'copied-in'")).toEqual([{ n: 2 }]);
  });

  it('hoopctl exec -f --transaction: the script is one reviewed transaction; deny exits 6 and changes nothing', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'hoop-tx-'));
    const file = path.join(dir, 'fix.sql');
    await writeFile(file, "UPDATE visits SET notes = 'exec-tx' WHERE id = 70;\nUPDATE visits SET notes = 'exec-tx' WHERE id IN (71, 72);\n");
    const env = { ...process.env, CI: 'true', HOOPCTL_TOKEN: await s.get().token(), HOOPCTL_AGENT: s.get().agent.url };
    const cli = ['--import', 'tsx', path.resolve('cli/src/main.ts'), 'exec', 'demo-db', '-f', file, '--transaction'];

    const before = await fingerprint();
    const denied = run('node', cli, { env, timeoutMs: 90_000 });
    const d = await nextPendingApproval(s.get());
    expect(d.transaction).toMatchObject({ rowsChanged: 3 });
    await decideNextApproval(s.get(), 'deny', 'not tonight');
    const no = await denied;
    expect(no.code, no.stderr).toBe(6);
    expect(no.stderr).toMatch(/rolled back/);
    expect(await fingerprint()).toBe(before);

    const approved = run('node', cli, { env, timeoutMs: 90_000 });
    await decideNextApproval(s.get(), 'approve');
    const ok = await approved;
    expect(ok.code, ok.stderr).toBe(0);
    expect(await direct<{ n: number }>("SELECT count(*)::int AS n FROM visits WHERE notes = 'exec-tx'")).toEqual([{ n: 3 }]);
  }, 120_000);
});
