// P11 scopes on lineage, against a real PostgreSQL catalog: what each statement reads (reads-mode
// lineage) checked against a scope. Each bypass class tries to read outside the scope and is refused;
// the reads the scope grants pass. (End to end through psql and node-postgres: test/e2e/scopes.test.ts.)
import { beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { freshDatabase } from '../../harness/pg.js';
import { loadCatalog } from '../../../agent/src/masking/catalog.js';
import { Lineage } from '../../../agent/src/masking/lineage.js';
import { loadParser } from '../../../agent/src/policy/parse.js';
import { checkScope, scopeFor, unmaskedReads, type AppliedScope } from '../../../agent/src/policy/scope.js';
import type { Principal } from '../../../agent/src/identity/access.js';
import { ETL_SCOPE, SCOPES_SQL } from './fixtures/scopes.js';
import { ConfigError, resolveConfig } from '../../../agent/src/config.js';
import { parseReadGrant } from '../../../shared/config/schema.js';

/** The demo's two tables, as cli/src/demo/seed.ts creates them (without rows: only the catalog matters here). */
const CORE_SQL = `
CREATE TABLE patients (id int PRIMARY KEY, full_name text, ssn text, mrn text, email text, phone text, date_of_birth date, diagnosis text, created_at timestamptz);
CREATE TABLE visits (id int PRIMARY KEY, patient_id int, visited_at timestamptz, department text, notes text);`;

const who = (groups: string[]): Principal => ({ sub: 'ci-nightly', issuer: 'https://issuer.test', groups, claims: {} });

let lineage: Lineage;
let scope: AppliedScope;

beforeAll(async () => {
  await loadParser();
  const db = await freshDatabase('scopes');
  await db.pg.exec(CORE_SQL + SCOPES_SQL, db.name);
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  try {
    const catalog = await loadCatalog(async (q) => (await client.query(q)).rows);
    lineage = new Lineage(catalog, new Map(), { reads: true });
  } finally {
    await client.end();
  }
  scope = scopeFor({ scopes: [{ ...ETL_SCOPE, read: [...ETL_SCOPE.read] }] }, who(['data-eng']))!;
}, 60_000);

const verdict = (sql: string) => checkScope(lineage.readsSql(sql), scope, lineage.catalog);

describe('P11 scope: reads outside the scope are refused, on lineage', () => {
  it.each([
    { desc: 'a column not granted', sql: 'SELECT notes FROM visits', want: 'public.visits.notes' },
    { desc: 'a star over a partly granted table', sql: 'SELECT * FROM visits', want: 'public.visits.notes' },
    { desc: 'a relation not granted', sql: 'SELECT ssn FROM patients', want: 'public.patients' },
    { desc: 'rows of a relation not granted (count)', sql: 'SELECT count(*) FROM patients', want: 'public.patients' },
    { desc: 'a filter on a column not granted', sql: "SELECT id FROM visits WHERE notes LIKE '%x%'", want: 'public.visits.notes' },
    { desc: 'ORDER BY a column not granted', sql: 'SELECT id FROM visits ORDER BY notes', want: 'public.visits.notes' },
    { desc: 'a view not granted over a relation not granted', sql: 'SELECT * FROM patient_ssn', want: 'public.patients' },
    { desc: 'a view not granted over a column not granted', sql: 'SELECT id FROM filtered_visits', want: 'public.visits.notes' },
    { desc: 'a view joining a relation not granted', sql: 'SELECT department FROM visit_people', want: 'public.patients' },
    { desc: 'a view over a view', sql: 'SELECT full_name FROM names_via_view', want: 'public.patients' },
    { desc: 'count(*) over a view not granted', sql: 'SELECT count(*) FROM patient_ssn', want: 'public.patients' },
    { desc: 'a materialized view not granted', sql: 'SELECT * FROM patient_dx', want: 'public.patients' },
    { desc: 'a CTE', sql: 'WITH x AS (SELECT ssn FROM patients) SELECT count(*) FROM x', want: 'public.patients' },
    { desc: 'a recursive CTE', sql: 'WITH RECURSIVE r(n, s) AS (SELECT 1, ssn FROM patients UNION ALL SELECT n + 1, s FROM r WHERE n < 2) SELECT n FROM r', want: 'public.patients' },
    { desc: 'a scalar sub-query', sql: 'SELECT (SELECT ssn FROM patients LIMIT 1)', want: 'public.patients' },
    { desc: 'a sub-query in WHERE', sql: "SELECT id FROM visits WHERE patient_id IN (SELECT id FROM patients WHERE ssn = '1')", want: 'public.patients' },
    { desc: 'EXISTS', sql: 'SELECT EXISTS (SELECT 1 FROM patients)', want: 'public.patients' },
    { desc: 'a LATERAL sub-query', sql: 'SELECT v.id, p.x FROM visits v, LATERAL (SELECT ssn AS x FROM patients WHERE id = v.patient_id) p', want: 'public.patients' },
    { desc: 'a set operation', sql: 'SELECT department FROM visits UNION SELECT ssn FROM patients', want: 'public.patients' },
    { desc: 'EXCEPT', sql: 'SELECT department FROM visits EXCEPT SELECT diagnosis FROM patients', want: 'public.patients' },
    { desc: 'TABLE x', sql: 'TABLE patients', want: 'public.patients' },
    { desc: 'TABLE x over a partly granted table', sql: 'TABLE visits', want: 'public.visits.notes' },
    { desc: 'a whole-row reference', sql: 'SELECT v FROM visits v', want: 'public.visits.notes' },
    { desc: 'row_to_json of a row', sql: 'SELECT row_to_json(v) FROM visits v', want: 'public.visits.notes' },
    { desc: 'a row field of a whole row', sql: 'SELECT (v).notes FROM visits v', want: 'public.visits.notes' },
    { desc: 'a join', sql: 'SELECT v.id, p.ssn FROM visits v JOIN patients p ON p.id = v.patient_id', want: 'public.patients' },
    { desc: 'a cursor', sql: 'DECLARE c CURSOR FOR SELECT ssn FROM patients', want: 'public.patients' },
    { desc: 'a prepared statement', sql: 'PREPARE p AS SELECT ssn FROM patients', want: 'public.patients' },
    { desc: 'a prepared statement with parameters', sql: 'PREPARE q(int) AS SELECT notes FROM visits WHERE id = $1', want: 'public.visits.notes' },
    { desc: 'EXPLAIN', sql: 'EXPLAIN SELECT ssn FROM patients', want: 'public.patients' },
    { desc: 'a partition, column not granted on the parent', sql: 'SELECT patient_id FROM lab_results_2024', want: 'public.lab_results_2024.patient_id' },
    { desc: 'the parent, column not granted', sql: 'SELECT patient_id FROM lab_results', want: 'public.lab_results.patient_id' },
    { desc: 'ONLY the parent, column not granted', sql: 'SELECT * FROM ONLY lab_results', want: 'public.lab_results.patient_id' },
    { desc: "an inheritance child's own column", sql: 'SELECT secret FROM notes_private', want: 'public.notes_private.secret' },
    { desc: 'a star over an inheritance child', sql: 'SELECT * FROM notes_private', want: 'public.notes_private.secret' },
    { desc: 'a quoted name, column not granted', sql: 'SELECT "Secret Col" FROM "Mixed Case"', want: 'public.Mixed Case.Secret Col' },
    { desc: 'a schema-qualified name, column not granted', sql: 'SELECT patient_id FROM billing.invoices', want: 'billing.invoices.patient_id' },
    { desc: 'a quoted schema-qualified relation not granted', sql: 'SELECT 1 FROM "public"."patients"', want: 'public.patients' },
    { desc: 'an unqualified name resolved by search_path', sql: 'SELECT id FROM invoices', want: 'public.invoices' },
    { desc: 'a relation the catalog does not know', sql: 'SELECT * FROM nowhere', want: 'relation:nowhere' },
    { desc: 'a user function', sql: 'SELECT patient_count()', want: 'public.patient_count' },
    { desc: 'a user function over a granted column', sql: 'SELECT visit_dept(id) FROM visits', want: 'public.visit_dept' },
    { desc: 'a set-returning user function in FROM', sql: 'SELECT * FROM all_ssns()', want: 'public.all_ssns' },
    { desc: 'a builtin reading data by name', sql: "SELECT lo_get(1)", want: 'lo_get' },
    { desc: 'COPY of a relation', sql: 'COPY visits TO STDOUT', want: 'public.visits.notes' },
    { desc: 'COPY of a query', sql: 'COPY (SELECT ssn FROM patients) TO STDOUT', want: 'public.patients' },
    { desc: 'a write to a relation not granted for writes', sql: 'DELETE FROM billing.invoices WHERE id = 1', want: 'Writing billing.invoices' },
    { desc: 'INSERT … SELECT from a relation not granted', sql: 'INSERT INTO visits (id) SELECT id FROM patients', want: 'public.patients' },
    { desc: 'UPDATE reading a column not granted', sql: "UPDATE visits SET department = notes WHERE id = 1", want: 'public.visits.notes' },
    { desc: 'CREATE TABLE AS', sql: 'CREATE TABLE copy_of AS SELECT id FROM visits', want: 'Writing public.copy_of' },
    { desc: 'DDL the analysis does not model', sql: 'CREATE INDEX ON visits (notes)', want: 'cannot be checked' },
    { desc: 'a star inside a function argument', sql: 'SELECT to_jsonb(v.*) FROM visits v', want: 'public.visits.notes' },
    { desc: 'a whole row by table name', sql: 'SELECT visits FROM visits', want: 'public.visits.notes' },
    { desc: 'count of a column not granted', sql: 'SELECT count(notes) FROM visits', want: 'public.visits.notes' },
    { desc: 'a FILTER on a column not granted', sql: 'SELECT count(*) FILTER (WHERE notes IS NULL) FROM visits', want: 'public.visits.notes' },
    { desc: 'an equality lookup on a column not granted', sql: "SELECT id FROM visits WHERE notes = 'x'", want: 'public.visits.notes' },
    { desc: 'GROUP BY a column not granted', sql: 'SELECT count(*) FROM visits GROUP BY notes', want: 'public.visits.notes' },
    { desc: 'a window over a column not granted', sql: 'SELECT id, row_number() OVER (ORDER BY notes) FROM visits', want: 'public.visits.notes' },
    { desc: 'an ARRAY sub-query', sql: 'SELECT ARRAY(SELECT ssn FROM patients)', want: 'public.patients' },
    { desc: 'a NATURAL JOIN', sql: 'SELECT id FROM visits NATURAL JOIN patients', want: 'public.patients' },
    { desc: 'a system column of a relation not granted', sql: 'SELECT xmin FROM patients', want: 'public.patients' },
    { desc: 'JSON_TABLE over a column not granted', sql: "SELECT j.* FROM visits v, JSON_TABLE(to_jsonb(v.notes), '$' COLUMNS (x text PATH '$')) j", want: 'public.visits.notes' },
    { desc: 'a LIMIT computed from a relation not granted', sql: 'SELECT id FROM visits LIMIT (SELECT count(*) FROM patients)', want: 'public.patients' },
    { desc: 'MERGE from a relation not granted', sql: 'MERGE INTO visits v USING patients p ON v.id = p.id WHEN MATCHED THEN UPDATE SET department = p.ssn', want: 'public.patients' },
    { desc: 'COPY FROM into a relation not granted for writes', sql: 'COPY billing.invoices FROM STDIN', want: 'Writing billing.invoices' },
    { desc: 'SELECT INTO a new relation', sql: 'SELECT id INTO TEMP t FROM visits', want: 'Writing pg_temp.t' },
  ])('$desc', ({ sql, want }) => {
    const v = verdict(sql);
    expect(v, sql).toBeDefined();
    expect(v!.rule).toBe('P11.scope');
    expect(v!.action).toBe('block');
    expect(v!.reason).toContain(want);
  });
});

describe('P11 scope: reads inside the scope pass', () => {
  it.each([
    'SELECT id, department FROM visits',
    'SELECT count(*) FROM visits',
    "SELECT id FROM visits WHERE department = 'Cardiology' ORDER BY visited_at",
    'SELECT * FROM patient_names',
    'SELECT count(*) FROM patient_names',
    'SELECT * FROM visit_depts',
    'SELECT * FROM dept_counts',
    'WITH x AS (SELECT department FROM visits) SELECT count(*) FROM x',
    'SELECT department FROM visits UNION SELECT full_name FROM patient_names',
    'SELECT (SELECT max(id) FROM visits)',
    'SELECT result FROM lab_results',
    'SELECT id, result FROM lab_results_2024',
    'SELECT id, taken_on FROM ONLY lab_results',
    'SELECT * FROM notes_base',
    'SELECT * FROM ONLY notes_base',
    'SELECT body FROM notes_private',
    'SELECT "Open Col" FROM "Mixed Case"',
    'SELECT amount FROM billing.invoices',
    'SELECT amount FROM "billing"."invoices"',
    "SELECT upper(department), current_setting('TimeZone') FROM visits",
    'SELECT 1',
    'SHOW TimeZone',
    'SELECT relname FROM pg_class LIMIT 1',
    'BEGIN',
    'COMMIT',
    'DECLARE c CURSOR FOR SELECT id FROM visits',
    'FETCH 10 FROM c',
    'PREPARE p(int) AS SELECT department FROM visits WHERE id = $1',
    'EXECUTE p(1)',
    'COPY (SELECT id, department FROM visits) TO STDOUT',
    "UPDATE visits SET department = 'x' WHERE id = 1",
    'EXPLAIN SELECT id FROM visits',
    "SELECT id FROM visits WHERE department = 'x' AND patient_id IN (1, 2)",
    'SELECT department, count(*) FROM visits GROUP BY department HAVING count(*) > 1 ORDER BY 2 DESC',
    'SELECT v.id, i.amount FROM visits v JOIN billing.invoices i ON i.id = v.id',
    "INSERT INTO visits (id, patient_id, visited_at, department) VALUES (1, 1, now(), 'x') RETURNING id",
  ])('%s', (sql) => {
    expect(verdict(sql)).toBeUndefined();
  });
});

describe('P11 scope: which scope applies', () => {
  it('an identity no scope matches reads nothing but the catalogs', () => {
    const none = scopeFor({ scopes: [{ ...ETL_SCOPE }] }, who(['compliance']))!;
    expect(none.name).toBe('(none)');
    expect(checkScope(lineage.readsSql('SELECT id FROM visits'), none, lineage.catalog)?.rule).toBe('P11.scope');
    expect(checkScope(lineage.readsSql('SELECT 1'), none, lineage.catalog)).toBeUndefined();
  });

  it('a view named with some columns grants only those (and vouches for what they read)', () => {
    const s = scopeFor({ scopes: [{ name: 'names-only', match: { groups: ['data-eng'] }, read: ['public.patient_ssn(id)'], write: [], unmask: [] }] }, who(['data-eng']))!;
    expect(checkScope(lineage.readsSql('SELECT id FROM patient_ssn'), s, lineage.catalog)).toBeUndefined();
    expect(checkScope(lineage.readsSql('SELECT ssn FROM patient_ssn'), s, lineage.catalog)?.reason).toContain('public.patient_ssn.ssn');
    expect(checkScope(lineage.readsSql('SELECT * FROM patient_ssn'), s, lineage.catalog)?.reason).toContain('public.patient_ssn.ssn');
    expect(checkScope(lineage.readsSql('SELECT id FROM patients'), s, lineage.catalog)?.reason).toContain('public.patients');
  });

  it('no scopes configured: P11 does not apply', () => {
    expect(scopeFor({}, who(['data-eng']))).toBeUndefined();
  });

  it('the first matching scope applies, and its unmask exception is reported when read', () => {
    const s = scopeFor(
      {
        scopes: [
          { name: 'treatment', match: { sub: 'ci-nightly' }, read: ['public.patients'], write: [], unmask: ['public.patients.ssn'] },
          { ...ETL_SCOPE },
        ],
      },
      who(['data-eng']),
    )!;
    expect(s.name).toBe('treatment');
    expect(unmaskedReads(lineage.readsSql('SELECT ssn FROM patients'), s)).toEqual(['public.patients.ssn']);
    expect(unmaskedReads(lineage.readsSql('SELECT full_name FROM patients'), s)).toEqual([]);
  });
});

describe('P11 scope configuration', () => {
  const config = (scopes: unknown) => ({
    identity: { issuers: [{ issuer: 'https://issuer.test', audience: 'hoop' }] },
    connections: { db: { postgres: { host: 'h', database: 'd', user: 'u', passwordEnv: 'PW' }, access: [{ groups: ['x'] }], scopes } },
  });

  it('reads grants as written, double quotes for other spellings', () => {
    expect(parseReadGrant('public.visits')).toEqual({ relation: 'public.visits' });
    expect(parseReadGrant('public.visits(id, department)')).toEqual({ relation: 'public.visits', columns: ['id', 'department'] });
    expect(parseReadGrant('public."Mixed Case"("Open Col", id)')).toEqual({ relation: 'public.Mixed Case', columns: ['Open Col', 'id'] });
    expect(parseReadGrant('visits')).toBeUndefined();
    expect(parseReadGrant('public.visits(')).toBeUndefined();
  });

  it.each([
    { desc: 'a grant without a schema', scopes: [{ match: { groups: ['x'] }, read: ['visits'] }], want: 'connections.db.scopes.0.read.0: expected schema.table' },
    { desc: 'a write with columns', scopes: [{ match: { groups: ['x'] }, write: ['public.visits(id)'] }], want: 'connections.db.scopes.0.write.0: expected schema.table' },
    { desc: 'an empty matcher', scopes: [{ match: {}, read: ['public.visits'] }], want: 'connections.db.scopes.0.match: an access rule must name at least one field' },
    { desc: 'an unknown key', scopes: [{ match: { groups: ['x'] }, reads: ['public.visits'] }], want: 'connections.db.scopes.0' },
    { desc: 'unmask of a table', scopes: [{ match: { groups: ['x'] }, unmask: ['public.patients'] }], want: 'connections.db.scopes.0.unmask.0: expected schema.table.column' },
  ])('refuses $desc, naming the field', async ({ scopes, want }) => {
    const err = await resolveConfig(config(scopes), { PW: 'x' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems.join('\n')).toContain(want);
  });
});
