// Lineage per construct, table-driven: sql → expected mask of each output column, using the real
// parser and a Catalog loaded from the corpus fixture on a real PostgreSQL. Each runnable case is also
// run on PostgreSQL, and `crossCheck` against its RowDescription must give the same masks (same
// count and order as the server's columns).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crossCheck, Lineage, type ColumnMask, type LineagePlan } from '../../../agent/src/masking/lineage.js';
import { fixture, RULES, type Fixture } from './fixture.js';

let fx: Fixture;
beforeAll(async () => {
  fx = await fixture();
});
afterAll(async () => {
  await fx?.client.end();
});

/** '-' clear, R redact, H hash, P partial, N null */
function code(m: ColumnMask): string {
  if (!m.masked) return '-';
  return { redact: 'R', hash: 'H', partial: 'P', null: 'N' }[m.strategy.kind];
}
function codes(plan: LineagePlan): string {
  if (plan.kind !== 'rows') return plan.kind;
  return plan.columns.map((c) => (c.spread ? `*${code(c.mask)}` : code(c.mask))).join('');
}

interface Case {
  desc: string;
  sql: string;
  want: string;
  /** run on PostgreSQL and cross-check against its RowDescription (default true) */
  run?: boolean;
  /** expected after crossCheck when it differs from the plan (spreads resolved) */
  checked?: string;
}

// patients: id full_name ssn mrn email phone dob diagnosis
const cases: Case[] = [
  { desc: 'plain columns, each its own strategy', sql: 'SELECT id, full_name, ssn, mrn, email, phone, dob, diagnosis FROM patients', want: '--RPHRN-' },
  { desc: 'star in column order', sql: 'SELECT * FROM patients', want: '--RPHRN-' },
  { desc: 'TABLE', sql: 'TABLE patients', want: '--RPHRN-' },
  { desc: 'aliases, qualified, quoted, case folding (MK-002)', sql: 'SELECT ssn AS x, p.mrn AS "Harmless", (p).email, "phone", DoB FROM public.patients AS p WHERE id = 1', want: 'RPHRN' },
  { desc: 'unicode-escaped identifiers (MK-003)', sql: `SELECT U&"\\0073sn" AS a, U&"!0065mail" UESCAPE '!' AS b FROM U&"\\0070atients" WHERE id = 1`, want: 'RH' },
  { desc: 'UNION smuggles under a clear name (MK-005)', sql: 'SELECT full_name FROM patients WHERE false UNION ALL SELECT ssn FROM patients', want: 'R' },
  { desc: 'INTERSECT / EXCEPT (MK-006)', sql: `SELECT ssn FROM patients INTERSECT SELECT ssn FROM patients EXCEPT SELECT 'x'`, want: 'R' },
  { desc: 'UNION of the same plain column keeps its strategy', sql: 'SELECT email FROM patients UNION SELECT email FROM patients', want: 'H' },
  { desc: 'concatenation, casts, COLLATE, CASE (MK-008)', sql: `SELECT ssn || '', CAST(mrn AS varchar(50)), email COLLATE "C", CASE WHEN true THEN phone END, dob::text FROM patients WHERE id = 1`, want: 'RRRRN' },
  { desc: 'string functions (MK-009)', sql: `SELECT upper(email), lower(mrn), concat(ssn), format('%s', phone), substr(ssn, 1, 11), left(email, 100), overlay(phone placing '' from 1 for 0) FROM patients WHERE id = 1`, want: 'RRRRRRR' },
  { desc: 'set-returning split (MK-011)', sql: `SELECT regexp_split_to_table(ssn, '') FROM patients WHERE id = 1`, want: 'R' },
  { desc: 'date arithmetic: null strategy wins (MK-012)', sql: `SELECT dob - DATE '2000-01-01' AS d, extract(epoch FROM dob) AS e, to_char(dob, 'DD/MM/YYYY') AS f, age(DATE '2000-01-01', dob) AS g FROM patients WHERE id = 1`, want: 'NNNN' },
  { desc: 'whole-row reference (MK-014)', sql: 'SELECT p FROM patients p WHERE id = 1 UNION ALL SELECT patients FROM patients WHERE id = 2', want: 'N' },
  { desc: 'ROW() and record casts (MK-015)', sql: 'SELECT ROW(p.*)::text, (p.*)::text FROM patients p WHERE id = 1', want: 'NN' },
  { desc: 'json builders, window agg, jsonpath (MK-017)', sql: `SELECT jsonb_build_object('k', ssn), json_object_agg(id, mrn) OVER (), jsonb_path_query(to_jsonb(p), '$.email') FROM patients p WHERE id = 1`, want: 'RRN' },
  { desc: 'aggregates return real values (MK-018)', sql: `SELECT string_agg(ssn, ','), array_agg(mrn), max(email), min(dob), mode() WITHIN GROUP (ORDER BY phone), percentile_disc(0.5) WITHIN GROUP (ORDER BY dob) FROM patients`, want: 'RRRNRN' },
  { desc: 'XML constructors; table_to_xml is opaque (MK-020)', sql: `SELECT xmlelement(name a, ssn), xmlforest(mrn, email), ssn::xml, table_to_xml('patients', true, false, '') FROM patients WHERE id = 1`, want: 'RRRR', run: false },
  { desc: 'tsvector (MK-021)', sql: `SELECT to_tsvector('simple', ssn || ' ' || email) FROM patients WHERE id = 1`, want: 'R' },
  { desc: 'view over masked columns', sql: 'SELECT * FROM patient_contacts', want: '--HR' },
  { desc: 'matview follows its definition (MK-023)', sql: 'SELECT national_id, record_no FROM mv_patient_ids ORDER BY id', want: 'RP' },
  { desc: 'SETOF patients function: opaque by default (MK-024)', sql: 'SELECT * FROM get_patient(1) UNION ALL SELECT (get_patient(2)).*', want: 'RRRRRRNR' },
  { desc: 'value-free results stay clear', sql: 'SELECT count(*), count(ssn), count(DISTINCT email), ssn IS NULL, EXISTS (SELECT 1 FROM patients) FROM patients GROUP BY id', want: '-----' },
  { desc: 'counts per group of a masked value are masked', sql: 'SELECT count(*), count(ssn), ssn IS NULL FROM patients GROUP BY ssn', want: 'RR-' },
  { desc: 'count with a FILTER on a masked column is masked', sql: `SELECT count(*) FILTER (WHERE email LIKE 'a%') AS n FROM patients`, want: 'R' },
  { desc: 'equality lookup: only the masked output column (MK-042)', sql: `SELECT id, full_name, diagnosis, mrn FROM patients WHERE mrn = 'MRN-00042-A'`, want: '---P' },
  { desc: 'scalar sub-select in the target list', sql: 'SELECT id, (SELECT ssn FROM patients q WHERE q.id = p.id) FROM patients p', want: '-R' },
  { desc: 'sub-select in FROM keeps plain references', sql: 'SELECT x, y FROM (SELECT ssn AS x, full_name AS y FROM patients) s', want: 'R-' },
  { desc: 'CTE', sql: 'WITH c AS (SELECT mrn AS m, id FROM patients) SELECT * FROM c', want: 'P-' },
  { desc: 'recursive CTE', sql: 'WITH RECURSIVE t(n, s) AS (SELECT 1, ssn FROM patients WHERE id = 1 UNION ALL SELECT n + 1, s FROM t WHERE n < 3) SELECT n, s FROM t', want: '-R' },
  { desc: 'recursive CTE: taint entering in the recursive branch', sql: `WITH RECURSIVE t(n, s) AS (SELECT 1, 'x'::text UNION ALL SELECT n + 1, (SELECT email FROM patients WHERE id = 1) FROM t WHERE n < 3) SELECT s FROM t`, want: 'R' },
  { desc: 'LATERAL', sql: 'SELECT l.v FROM patients p, LATERAL (SELECT p.email AS v) l', want: 'H' },
  { desc: 'JOIN … USING: merged column first, star order', sql: 'SELECT * FROM notes n JOIN patients p ON p.id = n.patient_id', want: '-----RPHRN-' },
  { desc: 'JOIN USING merged column', sql: 'SELECT * FROM patients JOIN (SELECT id, ssn AS other FROM patients) x USING (id)', want: '--RPHRN-R' },
  { desc: 'NATURAL JOIN', sql: 'SELECT * FROM patients NATURAL JOIN (SELECT id, ssn FROM patients) x', want: '-R-PHRN-' },
  { desc: 'COALESCE, GREATEST, NULLIF, ARRAY', sql: `SELECT coalesce(ssn, 'x'), greatest(mrn, 'a'), nullif(full_name, email), ARRAY[ssn], ARRAY(SELECT mrn FROM patients) FROM patients`, want: 'RRRRR' },
  { desc: 'row_to_json / to_jsonb / json_agg of whole rows', sql: 'SELECT row_to_json(p), to_jsonb(p), json_agg(p) OVER () FROM patients p', want: 'NNN' },
  { desc: 'VALUES with a sub-select', sql: `VALUES (1, (SELECT ssn FROM patients LIMIT 1)), (2, 'x')`, want: '-R' },
  { desc: 'clear table', sql: 'SELECT * FROM notes', want: '---' },
  { desc: 'system columns are value-free', sql: 'SELECT ctid, xmin, id FROM patients', want: '---' },
  { desc: 'pg_stats is tainted whole (MK-039)', sql: `SELECT attname, most_common_vals, histogram_bounds FROM pg_stats WHERE tablename = 'patients'`, want: 'RRR' },
  { desc: 'current_setting is opaque', sql: `SELECT current_setting('application_name')`, want: 'R' },
  { desc: 'unknown relation: masked', sql: 'SELECT * FROM no_such_table', want: '*R', run: false },
  { desc: 'generate_series star has a known width', sql: 'SELECT * FROM generate_series(1, 3) g', want: '-' },
  { desc: 'json_each over a masked column', sql: 'SELECT * FROM patients p, jsonb_each(to_jsonb(p)) e WHERE id = 1', want: '--RPHRN-NN' },
  { desc: 'DECLARE cursor plan', sql: 'DECLARE c CURSOR FOR SELECT ssn AS s, email FROM patients', want: 'RH', run: false },
  { desc: 'COPY table with a column list', sql: 'COPY patients (ssn, dob) TO STDOUT WITH (FORMAT csv, HEADER, FORCE_QUOTE *)', want: 'RN', run: false },
  { desc: 'COPY table', sql: 'COPY patients TO STDOUT WITH (FORMAT binary)', want: '--RPHRN-', run: false },
  { desc: 'COPY (query)', sql: 'COPY (SELECT full_name, upper(email) FROM patients) TO STDOUT', want: '-R', run: false },
  { desc: 'UPDATE … RETURNING * (MK-038)', sql: 'UPDATE patients SET diagnosis = diagnosis WHERE id = 1 RETURNING *', want: '--RPHRN-' },
  { desc: 'UPDATE SET launders into a clear column', sql: 'UPDATE patients SET diagnosis = ssn WHERE id = 1 RETURNING diagnosis', want: 'R' },
  { desc: 'INSERT … SELECT launders into a clear column', sql: 'INSERT INTO notes (patient_id, body) SELECT id, ssn FROM patients RETURNING body, id', want: 'R-' },
  { desc: 'data-modifying CTE', sql: 'WITH d AS (DELETE FROM notes RETURNING *) SELECT * FROM d', want: '---' },
  { desc: 'EXPLAIN has no data', sql: 'EXPLAIN SELECT ssn FROM patients', want: '-' },
  { desc: 'SHOW', sql: 'SHOW search_path', want: '-' },
];

describe('lineage', () => {
  it.each(cases)('$desc', async ({ sql, want, run, checked }) => {
    const plan = fx.lineage.analyzeSql(sql);
    expect(codes(plan), JSON.stringify(plan)).toBe(want);
    expect(plan.readsMasked).toBe(want.replace(/[-*]/g, '').length > 0 || plan.readsMasked);
    if (run === false) return;
    await fx.client.query('BEGIN');
    try {
      const res = await fx.client.query(sql);
      const fields = res.fields.map((f) => ({ tableOid: f.tableID, columnAttr: f.columnID }));
      const masks = crossCheck(plan, fields, fx.lineage);
      expect(masks).not.toBe('mismatch');
      expect((masks as ColumnMask[]).map(code).join('')).toBe(checked ?? want.replace(/\*/g, ''));
    } finally {
      await fx.client.query('ROLLBACK');
    }
  });

  it('trusted SETOF function yields the table per-column masks', () => {
    const lin = new Lineage(fx.catalog, RULES, { trustedFunctions: new Set(['public.get_patient']) });
    expect(codes(lin.analyzeSql('SELECT * FROM get_patient(1)'))).toBe('--RRRRN-');
  });

  it('filters mark the statement as reading masked columns without masking outputs', () => {
    const plan = fx.lineage.analyzeSql('SELECT 1 FROM patients WHERE id = 1 AND ssn::date IS NULL');
    expect(codes(plan)).toBe('-');
    expect(plan.readsMasked).toBe(true);
    expect(fx.lineage.analyzeSql('SELECT full_name FROM patients WHERE id = 1').readsMasked).toBe(false);
  });

  it('FETCH / PREPARE / EXECUTE / unknown statements', () => {
    expect(fx.lineage.analyzeSql('FETCH ALL FROM c')).toMatchObject({ kind: 'fetch', cursor: 'c' });
    const p = fx.lineage.analyzeSql('PREPARE q(int) AS SELECT ssn FROM patients WHERE id = $1');
    expect(p.kind).toBe('prepare');
    if (p.kind === 'prepare') expect(codes(p.plan)).toBe('R');
    expect(fx.lineage.analyzeSql('EXECUTE q(1)')).toMatchObject({ kind: 'execute', name: 'q' });
    expect(fx.lineage.analyzeSql('CALL purge_patient(1)').kind).toBe('unknown');
  });

  it('crossCheck: mismatched width → mismatch; RowDescription naming a masked column corrects a clear plan', () => {
    const plan = fx.lineage.analyzeSql('SELECT id FROM patients');
    expect(crossCheck(plan, [{ tableOid: 0, columnAttr: 0 }, { tableOid: 0, columnAttr: 0 }], fx.lineage)).toBe('mismatch');
    const rel = fx.catalog.relations.get('public.patients')!;
    const ssn = rel.columns.find((c) => c.name === 'ssn')!;
    const masks = crossCheck(plan, [{ tableOid: rel.oid, columnAttr: ssn.attnum }], fx.lineage);
    expect(masks).not.toBe('mismatch');
    expect((masks as ColumnMask[])[0].masked).toBe(true);
    expect(crossCheck(plan, [{ tableOid: 999999, columnAttr: 1 }], fx.lineage)).toBe('mismatch');
  });
});
