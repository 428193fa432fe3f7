// Real clients through the whole data path (psql, pg_dump, node-postgres → tunnel → agent → PostgreSQL
// 18): what they see must be what they would see talking to the database directly.
import { describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import pg from 'pg';
import { decideNextApproval, directQuery, psql, run, tunnelClient, useStack } from '../harness/stack.js';

const s = useStack();

const direct = <T extends pg.QueryResultRow>(sql: string, params: unknown[] = []) => directQuery<T>(s.get(), sql, params);

describe('psql', () => {
  it('runs simple queries', async () => {
    const r = await psql(s.get(), ['-At', '-c', 'SELECT count(*) FROM patients', '-c', "SELECT current_database(), 1 + 1"]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual(['2000', 'clinic|2']);
  });

  it.each([
    { cmd: '\\d patients', want: ['Table "public.patients"', '"patients_pkey" PRIMARY KEY, btree (id)', 'TABLE "visits" CONSTRAINT'] },
    { cmd: '\\d+ patients', want: ['Table "public.patients"', 'Access method: heap'] },
    { cmd: '\\dt', want: ['public | patients      | table', 'public | visits        | table'] },
    { cmd: '\\di', want: ['patients_pkey', 'visits_patient_id_idx'] },
    { cmd: '\\ds', want: ['patients_id_seq'] },
    { cmd: '\\dn', want: ['public'] },
    { cmd: '\\du', want: ['gw_agent'] },
    { cmd: '\\dp patients', want: ['gw_agent=arwd/'] },
    { cmd: '\\d visits_pkey', want: ['Index "public.visits_pkey"'] },
  ])('psql $cmd', async ({ cmd, want }) => {
    const r = await psql(s.get(), ['-c', cmd]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    for (const w of want) expect(r.stdout).toContain(w);
  });

  // SECURITY-POLICY P4: COPY … TO STDOUT is a bulk export and COPY FROM STDIN a write; both wait for an
  // approver, and this agent does not hold statements yet, so both are refused with nothing run.
  it('\\copy out to a file is held as a bulk export: nothing reaches the file, the session goes on', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'hoop-e2e-copy-'));
    try {
      const file = path.join(dir, 'patients.csv');
      const run = psql(s.get(), ['-At', '-c', `\\copy (SELECT id, full_name, ssn FROM patients ORDER BY id) TO '${file}' WITH (FORMAT csv)`, '-c', 'SELECT 1']);
      const id = await decideNextApproval(s.get(), 'deny', 'no exports today');
      const r = await run;
      expect(r.stderr).toContain(`statement held for approval ${id} (P4.`);
      expect(r.stderr).toMatch(new RegExp(`ERROR: +hoopctl: approval ${id} denied by approver-bot: no exports today; the statement was not run \\(P4\\.[a-z.-]+\\)`));
      expect(r.stdout.trim()).toBe('1');
      const written = await readFile(file, 'utf8').catch(() => '');
      expect(written).toBe('');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('\\copy from a file is held as a write: no row is added, the session goes on', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'hoop-e2e-copy-'));
    try {
      const file = path.join(dir, 'in.csv');
      await writeFile(file, '990001,Test Person,999-99-9999,MRN-99001,t@example.org,+1-202-555-0100,1970-01-01,none,2024-01-01\n');
      const copy = `\\copy patients (id, full_name, ssn, mrn, email, phone, date_of_birth, diagnosis, created_at) FROM '${file}' WITH (FORMAT csv)`;
      const denied = psql(s.get(), ['-At', '-c', copy, '-c', 'SELECT count(*) FROM patients']);
      const id = await decideNextApproval(s.get(), 'deny');
      const r = await denied;
      expect(r.stderr).toMatch(new RegExp(`ERROR: +hoopctl: approval ${id} denied`));
      expect(r.stdout.trim()).toBe('2000');
      expect(await direct('SELECT count(*)::int AS n FROM patients WHERE id = 990001')).toEqual([{ n: 0 }]);
      // Approved: the same \copy runs once, read-write, and the session is read-only again afterwards.
      const approved = psql(s.get(), ['-At', '-c', copy, '-c', 'SHOW transaction_read_only']);
      await decideNextApproval(s.get(), 'approve');
      const ok = await approved;
      expect(ok.stderr).not.toMatch(/ERROR/);
      expect(ok.stdout.trim().split('\n')).toEqual(['COPY 1', 'on']);
      expect(await direct('SELECT count(*)::int AS n FROM patients WHERE id = 990001')).toEqual([{ n: 1 }]);
      await direct('DELETE FROM patients WHERE id = 990001');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('recovers from an error in the same session', async () => {
    const r = await psql(s.get(), ['-At'], {
      input: 'SELECT 1;\nSELECT * FROM no_such_table;\nSELECT 1/0;\nSELECT count(*) FROM visits;\n',
    });
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual(['1', '6000']);
    // The error keeps its shape; the quoted part is redacted because an unknown relation cannot be
    // proven free of masked columns (fail closed).
    expect(r.stderr).toMatch(/relation "[^"]*" does not exist/);
    expect(r.stderr).toContain('division by zero');
  });

  // pg_sleep is blocked by policy (P3.function.sleep), so the long query is a triple cross join
  // (6000³ rows to count: hours of CPU), which is allowed.
  it('Ctrl+C cancels a long-running query', async () => {
    const started = performance.now();
    const r = await psql(s.get(), ['-c', 'SELECT count(*) FROM visits a CROSS JOIN visits b CROSS JOIN visits c'], {
      during: (p) => setTimeout(() => p.kill('SIGINT'), 1000),
      timeoutMs: 20_000,
    });
    const took = performance.now() - started;
    expect(r.stderr).toContain('canceling statement due to user request');
    expect(r.code).toBe(1);
    expect(took).toBeLessThan(10_000);
    // The backend is free again, not still counting.
    const busy = await direct<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = 'gw_agent' AND state = 'active'");
    expect(busy).toEqual([{ n: 0 }]);
  });
});

describe('node-postgres (extended protocol)', () => {
  it('binds parameters of several types, NULL included', async () => {
    const c = await tunnelClient(s.get());
    try {
      const r = await c.query('SELECT $1::int + 1 AS n, $2::text AS t, $3::text IS NULL AS isnull, $4::jsonb ->> \'k\' AS j, $5::date AS d', [
        41,
        "O'Brien — ünïcödé",
        null,
        JSON.stringify({ k: 'v' }),
        '2024-02-29',
      ]);
      expect(r.rows[0]).toMatchObject({ n: 42, t: "O'Brien — ünïcödé", isnull: true, j: 'v' });
      const p = await c.query<{ full_name: string }>('SELECT full_name FROM patients WHERE id = $1', [7]);
      const want = await direct<{ full_name: string }>('SELECT full_name FROM patients WHERE id = 7');
      expect(p.rows).toEqual(want);
    } finally {
      await c.end();
    }
  });

  it('sends a Buffer as a binary bytea parameter and gets the same bytes back', async () => {
    const c = await tunnelClient(s.get());
    try {
      const bytes = Buffer.from([0, 1, 2, 0xff, 0xfe, 0x00, 0x80, 0x7f, 0xc3, 0x28]); // NULs and invalid UTF-8 on purpose
      const r = await c.query<{ b: Buffer; len: number; hex: string }>('SELECT $1::bytea AS b, length($1::bytea) AS len, encode($1::bytea, \'hex\') AS hex', [bytes]);
      expect(r.rows[0].len).toBe(bytes.length);
      expect(r.rows[0].hex).toBe(bytes.toString('hex'));
      expect(Buffer.compare(r.rows[0].b, bytes)).toBe(0);
    } finally {
      await c.end();
    }
  });

  it('a 4 MiB bytea parameter and a 2 MiB SQL text cross the tunnel intact', async () => {
    const c = await tunnelClient(s.get());
    try {
      const big = Buffer.alloc(4 * 1024 * 1024, 0);
      for (let i = 0; i < big.length; i += 997) big[i] = i % 251;
      const r = await c.query<{ len: number; md5: string }>('SELECT length($1::bytea) AS len, md5($1::bytea) AS md5', [big]);
      expect(r.rows[0]).toEqual({ len: big.length, md5: createHash('md5').update(big).digest('hex') });
      const literal = 'x'.repeat(2 * 1024 * 1024);
      const t = await c.query<{ len: number }>(`SELECT length('${literal}') AS len`);
      expect(t.rows[0].len).toBe(literal.length);
    } finally {
      await c.end();
    }
  });

  it('runs a named prepared statement twice', async () => {
    const c = await tunnelClient(s.get());
    try {
      // mrn is masked `partial: 4` in the demo: the last four characters stay.
      const q = { name: 'patient_by_id', text: 'SELECT id, mrn, full_name FROM patients WHERE id = $1' };
      const a = await c.query({ ...q, values: [3] });
      const b = await c.query({ ...q, values: [1999] });
      const [w3, w1999] = await direct<{ full_name: string }>('SELECT full_name FROM patients WHERE id IN (3, 1999) ORDER BY id');
      expect(a.rows).toEqual([{ id: 3, mrn: '*****0003', full_name: w3.full_name }]);
      expect(b.rows).toEqual([{ id: 1999, mrn: '*****1999', full_name: w1999.full_name }]);
      const stmts = await c.query("SELECT name, statement FROM pg_prepared_statements WHERE name = 'patient_by_id'");
      expect(stmts.rows).toEqual([{ name: 'patient_by_id', statement: q.text }]);
    } finally {
      await c.end();
    }
  });

  it('reports errors with their SQLSTATE and keeps the session usable', async () => {
    const c = await tunnelClient(s.get());
    try {
      await expect(c.query('SELECT * FROM no_such_table')).rejects.toMatchObject({ code: '42P01' });
      await expect(c.query('SELECT $1::int', ['not a number'])).rejects.toMatchObject({ code: '22P02' });
      // SECURITY-POLICY P3: what the parser cannot parse is blocked (fail closed), as 42501.
      await expect(c.query({ name: 'bad', text: 'SELEC 1' })).rejects.toMatchObject({ code: '42501', message: expect.stringContaining('(P3.parse-error)') });
      await expect(c.query('SELECT pg_sleep(1)')).rejects.toMatchObject({ code: '42501', message: expect.stringMatching(/blocked by policy \(P3\.function\.[a-z_]+\): pg_sleep\(\)/) });
      expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await c.end();
    }
  });

  it('a write refused inside BEGIN aborts the transaction; ROLLBACK recovers and nothing changed', async () => {
    const c = await tunnelClient(s.get());
    const [{ phone: original }] = await direct<{ phone: string }>('SELECT phone FROM patients WHERE id = 11');
    try {
      await c.query('BEGIN');
      // phone is masked (redact) in the demo.
      expect((await c.query('SELECT phone FROM patients WHERE id = 11')).rows).toEqual([{ phone: '***' }]);
      await expect(c.query('UPDATE patients SET phone = $1 WHERE id = 11', ['+1-000-555-0100'])).rejects.toMatchObject({ code: '42501' });
      await expect(c.query('SELECT 1')).rejects.toMatchObject({ code: '25P02' });
      await c.query('ROLLBACK');
      expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
      expect(await direct('SELECT phone FROM patients WHERE id = 11')).toEqual([{ phone: original }]);
    } finally {
      await c.end();
    }
  });

  it('a read transaction with a cursor runs and COMMITs', async () => {
    const c = await tunnelClient(s.get());
    try {
      await c.query('BEGIN');
      await c.query('DECLARE cur CURSOR FOR SELECT id FROM patients ORDER BY id');
      const a = await c.query('FETCH 3 FROM cur');
      const b = await c.query('FETCH 2 FROM cur');
      await c.query('CLOSE cur');
      const done = await c.query('COMMIT');
      expect(a.rows.map((r) => r.id)).toEqual([1, 2, 3]);
      expect(b.rows.map((r) => r.id)).toEqual([4, 5]);
      expect(done.command).toBe('COMMIT');
    } finally {
      await c.end();
    }
  });

  it('the backend runs read-only (P8) and a client cannot switch that off', async () => {
    const c = await tunnelClient(s.get());
    try {
      expect((await c.query('SHOW transaction_read_only')).rows).toEqual([{ transaction_read_only: 'on' }]);
      await expect(c.query('BEGIN READ WRITE')).rejects.toMatchObject({ code: '42501' });
      await expect(c.query('SET default_transaction_read_only = off')).rejects.toMatchObject({ code: '42501' });
      expect((await c.query('SHOW default_transaction_read_only')).rows).toEqual([{ default_transaction_read_only: 'on' }]);
    } finally {
      await c.end();
    }
  });

  it('20 concurrent connections each get their own correct results', async () => {
    // mrn is masked `partial: 4` in the demo: compare with the same masking applied to the direct value.
    const want = (
      await direct<{ id: number; mrn: string; visits: string }>(
        'SELECT p.id, p.mrn, (SELECT count(*) FROM visits v WHERE v.patient_id = p.id) AS visits FROM patients p WHERE p.id <= 20 ORDER BY p.id',
      )
    ).map((r) => ({ ...r, mrn: '*'.repeat(r.mrn.length - 4) + r.mrn.slice(-4) }));
    const results = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const c = await tunnelClient(s.get());
        try {
          const out: unknown[] = [];
          for (let k = 0; k < 5; k++) {
            const r = await c.query('SELECT p.id, p.mrn, (SELECT count(*) FROM visits v WHERE v.patient_id = p.id) AS visits, pg_backend_pid() AS pid FROM patients p WHERE p.id = $1', [i + 1]);
            out.push(r.rows[0]);
          }
          return out as Array<{ id: number; mrn: string; visits: string; pid: number }>;
        } finally {
          await c.end();
        }
      }),
    );
    const pids = new Set<number>();
    results.forEach((rows, i) => {
      for (const r of rows) expect({ id: r.id, mrn: r.mrn, visits: r.visits }).toEqual(want[i]);
      pids.add(rows[0].pid);
    });
    expect(pids.size).toBe(20);
  });

  it('a 100,000-row result arrives whole and equal to direct execution (approved at the row threshold)', async () => {
    const sql = 'SELECT g, md5(g::text) AS h FROM generate_series(1, 100000) g';
    const checksum = (rows: Array<{ g: number; h: string }>) => {
      const h = createHash('sha256');
      for (const r of rows) h.update(`${r.g},${r.h}\n`);
      return h.digest('hex');
    };
    const c = await tunnelClient(s.get());
    let viaTunnel: Array<{ g: number; h: string }>;
    try {
      // past approval.exportRowLimit (10,000) the result pauses for an approver (P11); approved, the rest flows
      const q = c.query<{ g: number; h: string }>(sql);
      await decideNextApproval(s.get(), 'approve');
      viaTunnel = (await q).rows;
    } finally {
      await c.end();
    }
    const viaDirect = await direct<{ g: number; h: string }>(sql);
    expect(viaTunnel.length).toBe(100_000);
    expect(viaTunnel[99_999]).toEqual({ g: 100_000, h: createHash('md5').update('100000').digest('hex') });
    expect(checksum(viaTunnel)).toBe(checksum(viaDirect));
  });
});
