// P11 scopes end to end: a real agent with a scoped CI job (group data-eng) and a treatment service
// (group compliance) that unmasks one column, real PostgreSQL, the real issuer, psql and node-postgres.
// Every bypass class tries to read outside the scope and gets 42501 P11.scope naming the relation, the
// session going on; reads inside the scope equal direct execution; refusals are audited as blocks.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { DEMO_CONNECTION } from '../../cli/src/demo/stack.js';
import { TunnelClient } from '../../cli/src/services/tunnel-client.js';
import { startLocalListener, type LocalListener } from '../../cli/src/services/local-listener.js';
import { directQuery, psql, startExtraAgent, useStack, type ExtraAgent } from '../harness/stack.js';
import { ETL_SCOPE, SCOPES_SQL } from '../agent/policy/fixtures/scopes.js';
import { whoami } from '../../cli/src/commands/whoami.js';
import { Output } from '../../cli/src/output.js';
import { capture, tempEnv } from '../cli/helpers.js';

const stack = useStack({ patients: 300 });
let scoped: ExtraAgent;
let treatment: { client: TunnelClient; listener: LocalListener };

const TREATMENT_SCOPE = { name: 'treatment-team', match: { groups: ['compliance'] }, read: ['public.patients', 'public.visits'], unmask: ['public.patients.ssn'] };

beforeAll(async () => {
  const s = stack.get();
  await directQuery(s, SCOPES_SQL);
  await directQuery(s, 'GRANT USAGE ON SCHEMA billing TO gw_agent; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public, billing TO gw_agent');
  scoped = await startExtraAgent(s, { agentId: 'scoped', connection: { scopes: [ETL_SCOPE, TREATMENT_SCOPE] } });
  const client = new TunnelClient({ agentUrl: scoped.agent.url, connection: DEMO_CONNECTION, getToken: () => s.issuer.clientCredentialsToken('approver-bot', 'approver-bot-secret') });
  await client.start();
  client.keepAlive();
  treatment = { client, listener: await startLocalListener(client, 0) };
}, 120_000);

afterAll(async () => {
  await treatment?.listener.close().catch(() => {});
  await treatment?.client.stop().catch(() => {});
  await scoped?.stop();
});

async function connect(listener: LocalListener = scoped.listener): Promise<pg.Client> {
  const c = new pg.Client({ host: listener.host, port: listener.port, user: 'noop', database: 'demo-db' });
  await c.connect();
  return c;
}

async function withClient<T>(fn: (c: pg.Client) => Promise<T>, listener?: LocalListener): Promise<T> {
  const c = await connect(listener);
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** The refusal the client got, and proof the session goes on. */
async function refused(c: pg.Client, q: string | pg.QueryConfig): Promise<pg.DatabaseError> {
  const err = await c.query(q).then(
    () => undefined,
    (e: pg.DatabaseError) => e,
  );
  expect(err, JSON.stringify(q)).toBeInstanceOf(Error);
  expect((await c.query('SELECT 1 AS ok')).rows).toEqual([{ ok: 1 }]);
  return err!;
}

const BYPASSES: { desc: string; sql: string; relation: string; simpleOnly?: true }[] = [
  { desc: 'a relation not granted', sql: 'SELECT ssn FROM patients', relation: 'public.patients' },
  { desc: 'a column not granted', sql: 'SELECT notes FROM visits', relation: 'public.visits.notes' },
  { desc: 'a star over a partly granted table', sql: 'SELECT * FROM visits', relation: 'public.visits.notes' },
  { desc: 'rows of a relation not granted', sql: 'SELECT count(*) FROM patients', relation: 'public.patients' },
  { desc: 'a view not granted', sql: 'SELECT * FROM patient_ssn', relation: 'public.patients' },
  { desc: 'a view filtering on a column not granted', sql: 'SELECT * FROM filtered_visits', relation: 'public.visits.notes' },
  { desc: 'a materialized view not granted', sql: 'SELECT * FROM patient_dx', relation: 'public.patients' },
  { desc: 'a CTE', sql: 'WITH x AS (SELECT ssn FROM patients) SELECT * FROM x', relation: 'public.patients' },
  { desc: 'a sub-query', sql: "SELECT id FROM visits WHERE patient_id IN (SELECT id FROM patients WHERE diagnosis = 'Asthma')", relation: 'public.patients' },
  { desc: 'a set operation', sql: 'SELECT department FROM visits UNION ALL SELECT diagnosis FROM patients', relation: 'public.patients' },
  { desc: 'TABLE x', sql: 'TABLE patients', relation: 'public.patients' },
  { desc: 'a whole-row reference', sql: 'SELECT row_to_json(v) FROM visits v', relation: 'public.visits.notes' },
  { desc: 'a partition', sql: 'SELECT patient_id FROM lab_results_2024', relation: 'public.lab_results_2024.patient_id' },
  { desc: 'ONLY the partitioned parent', sql: 'SELECT * FROM ONLY lab_results', relation: 'public.lab_results.patient_id' },
  { desc: 'an inheritance child', sql: 'SELECT secret FROM notes_private', relation: 'public.notes_private.secret' },
  { desc: 'a quoted name', sql: 'SELECT "Secret Col" FROM "Mixed Case"', relation: 'public.Mixed Case.Secret Col' },
  { desc: 'a schema-qualified name', sql: 'SELECT patient_id FROM billing.invoices', relation: 'billing.invoices.patient_id' },
  { desc: 'search_path resolution', sql: 'SELECT card_number FROM invoices', relation: 'public.invoices' },
  { desc: 'a function whose body is not analysed', sql: 'SELECT patient_count()', relation: 'public.patient_count' },
  { desc: 'a write outside the write scope', sql: 'DELETE FROM billing.invoices WHERE id = 1', relation: 'Writing billing.invoices', simpleOnly: true },
  { desc: 'a SQL cursor', sql: 'DECLARE leak_cur CURSOR WITH HOLD FOR SELECT ssn FROM patients', relation: 'public.patients', simpleOnly: true },
  { desc: 'a SQL prepared statement', sql: 'PREPARE leak_stmt AS SELECT ssn FROM patients', relation: 'public.patients', simpleOnly: true },
  { desc: 'EXPLAIN', sql: 'EXPLAIN SELECT ssn FROM patients', relation: 'public.patients', simpleOnly: true },
  { desc: 'COPY TO', sql: 'COPY (SELECT ssn FROM patients) TO STDOUT', relation: 'public.patients', simpleOnly: true },
];

describe('P11 scopes through node-postgres', () => {
  it.each(BYPASSES)('refuses $desc (simple query), naming the rule and the relation; the session goes on', async ({ sql, relation }) => {
    await withClient(async (c) => {
      const err = await refused(c, sql);
      expect(err.code).toBe('42501');
      expect(err.message).toContain('P11.scope');
      expect(err.message).toContain(relation);
    });
  });

  it.each(BYPASSES.filter((b) => !b.simpleOnly))('refuses $desc (extended protocol, parameters)', async ({ sql, relation }) => {
    await withClient(async (c) => {
      const err = await refused(c, { text: `${sql} LIMIT $1`, values: [5] });
      expect(err.code).toBe('42501');
      expect(err.message).toContain(relation);
    });
  });

  it('refuses a named prepared statement, a SQL PREPARE and a cursor over a relation not granted', async () => {
    await withClient(async (c) => {
      expect((await refused(c, { name: 'leak', text: 'SELECT ssn FROM patients WHERE id = $1', values: [1] })).message).toContain('P11.scope');
      expect((await refused(c, 'PREPARE leak2 AS SELECT ssn FROM patients')).message).toContain('public.patients');
      // never prepared: EXECUTE finds nothing to run
      expect((await refused(c, 'EXECUTE leak2')).code).not.toBe('00000');
      await c.query('BEGIN');
      const err = await c.query('DECLARE cur CURSOR FOR SELECT ssn FROM patients').catch((e: pg.DatabaseError) => e);
      expect((err as pg.DatabaseError).message).toContain('P11.scope');
      await c.query('ROLLBACK');
    });
  });

  it('allowed reads equal direct execution (columns granted, a named view, a matview, partitions, inheritance, another schema, quoted names)', async () => {
    const reads = [
      'SELECT id, patient_id, visited_at, department FROM visits ORDER BY id',
      'SELECT * FROM patient_names ORDER BY id',
      'SELECT * FROM dept_counts ORDER BY department',
      'SELECT count(*)::int AS n, max(result) AS r FROM lab_results',
      'SELECT id, result FROM lab_results_2025 ORDER BY id',
      'SELECT * FROM notes_base ORDER BY id',
      'SELECT body FROM notes_private',
      'SELECT amount FROM "billing"."invoices" ORDER BY id',
      'SELECT "Open Col" FROM "Mixed Case"',
      'WITH d AS (SELECT department FROM visits) SELECT department, count(*)::int AS n FROM d GROUP BY 1 ORDER BY 1',
    ];
    await withClient(async (c) => {
      for (const sql of reads) {
        const through = (await c.query(sql)).rows;
        expect(through.length, sql).toBeGreaterThan(0);
        expect(through, sql).toEqual(await directQuery(stack.get(), sql));
      }
      // a cursor and a prepared statement over granted columns
      const prepared = await c.query({ name: 'dept', text: 'SELECT department FROM visits WHERE id = $1', values: [7] });
      expect(prepared.rows).toEqual(await directQuery(stack.get(), 'SELECT department FROM visits WHERE id = 7'));
      await c.query('BEGIN');
      await c.query('DECLARE cur CURSOR FOR SELECT id FROM visits ORDER BY id');
      expect((await c.query('FETCH 3 FROM cur')).rows).toEqual([{ id: 1 }, { id: 2 }, { id: 3 }]);
      await c.query('COMMIT');
    });
  });

  it('audits each refusal as a block under rule P11.scope', async () => {
    await withClient((c) => refused(c, 'SELECT mrn FROM patients /* audited */'));
    const events: { type: string; data: { sql?: string; decision?: string; rule?: string; scope?: string } }[] = [];
    for await (const line of scoped.agent.store.chainLines()) events.push(JSON.parse(line));
    const e = events.find((x) => x.type === 'statement' && x.data.sql?.includes('audited'));
    expect(e?.data).toMatchObject({ decision: 'block', rule: 'P11.scope' });
    // allowed statements carry the scope they were judged by, and each session the scope it runs under
    expect(events.some((x) => x.type === 'statement' && x.data.decision === 'allow' && x.data.scope === 'nightly-etl')).toBe(true);
    expect(events.some((x) => x.type === 'session_start' && x.data.scope === 'nightly-etl')).toBe(true);
  });
});

describe('P11 scopes through psql', () => {
  it('refuses every bypass in one psql session, which goes on to run the allowed reads', async () => {
    const script = [...BYPASSES.map((b) => `${b.sql};`), 'SELECT count(*) AS visits_seen FROM visits;', '\\d visits'].join('\n');
    const r = await psql(scoped, ['-f', '-'], { input: script });
    const errors = r.stderr.split('\n').filter((l) => l.includes('ERROR:'));
    expect(errors).toHaveLength(BYPASSES.length);
    for (const [i, b] of BYPASSES.entries()) {
      expect(errors[i]).toContain('P11.scope');
      expect(errors[i]).toContain(b.relation);
    }
    const [{ n }] = await directQuery<{ n: string }>(stack.get(), 'SELECT count(*) AS n FROM visits');
    expect(r.stdout).toMatch(new RegExp(`visits_seen\\s*\\n-+\\n\\s*${n}\\n`));
    expect(r.stdout).toContain('department'); // \d reads the catalogs, which no scope restricts
  });
});

describe('P11 unmask: an explicit, audited exception', () => {
  it('the treatment service reads ssn in clear, other masked columns stay masked, and the audit says unmask applied', async () => {
    const [direct] = await directQuery<{ ssn: string; mrn: string }>(stack.get(), 'SELECT ssn, mrn FROM patients WHERE id = 5');
    const row = await withClient(async (c) => (await c.query('SELECT ssn, mrn FROM patients WHERE id = 5')).rows[0], treatment.listener);
    expect(row.ssn).toBe(direct.ssn);
    expect(row.mrn).not.toBe(direct.mrn);
    // the scoped CI job still gets 42501 for it; the unscoped stack agent masks it
    const events: { type: string; data: { sql?: string; unmasked?: string[]; scope?: string } }[] = [];
    for await (const line of scoped.agent.store.chainLines()) events.push(JSON.parse(line));
    const e = events.find((x) => x.type === 'statement' && x.data.scope === 'treatment-team' && x.data.sql?.includes('ssn'));
    expect(e?.data.unmasked).toEqual(['public.patients.ssn']);
  });
});

describe('hoopctl whoami shows the scope that applies', () => {
  it('as text and as JSON, for the scoped CI job', async () => {
    const { env, cleanup } = await tempEnv();
    const out = capture();
    try {
      const token = await stack.get().token();
      const r = await whoami({ agent: scoped.agent.url, token }, new Output({ json: false }), { env });
      expect(r.agent?.connections?.[0]).toMatchObject({ name: DEMO_CONNECTION, allowed: true, scope: { name: 'nightly-etl', read: ETL_SCOPE.read, write: ['public.visits'], unmask: [] } });
      expect(out.stdout()).toContain('scope nightly-etl');
      expect(out.stdout()).toContain('reads:  public.visits(id, patient_id, visited_at, department), public.patient_names');
      // the agent without scopes shows none
      const plain = await whoami({ agent: stack.get().agent.url, token }, new Output({ json: true }), { env });
      expect(plain.agent?.connections?.[0].scope).toBeUndefined();
    } finally {
      out.restore();
      await cleanup();
    }
  });
});

describe('no scopes configured', () => {
  it('the stack agent (no scopes) keeps today’s behaviour: patients read, masked', async () => {
    const c = new pg.Client({ host: stack.get().listener.host, port: stack.get().listener.port, user: 'noop', database: 'demo-db' });
    await c.connect();
    try {
      const { rows } = await c.query('SELECT full_name, ssn FROM patients WHERE id = 5');
      const [direct] = await directQuery<{ full_name: string; ssn: string }>(stack.get(), 'SELECT full_name, ssn FROM patients WHERE id = 5');
      expect(rows[0].full_name).toBe(direct.full_name);
      expect(rows[0].ssn).not.toBe(direct.ssn);
    } finally {
      await c.end();
    }
  });
});
