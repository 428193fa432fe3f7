/** P7 strict profile: only equality with constants (and IS NULL) on masked columns in predicates. */
import { beforeAll, describe, expect, it } from 'vitest';
import { loadPolicyEngine, type Action, type PolicyEngine } from '../../../agent/src/policy/index.js';

const MASKED = ['ssn', 'mrn', 'email', 'phone', 'dob'].map((c) => `public.patients.${c}`);

const ROWS: { desc: string; sql: string; want: Action }[] = [
  { desc: 'LIKE prefix oracle', sql: "SELECT id FROM patients WHERE ssn LIKE '123%'", want: 'block' },
  { desc: 'range', sql: "SELECT id FROM patients WHERE dob BETWEEN DATE '1961-01-01' AND DATE '1961-06-30'", want: 'block' },
  { desc: 'inequality', sql: "SELECT id FROM patients WHERE ssn > '5'", want: 'block' },
  { desc: '<>', sql: "SELECT id FROM patients WHERE ssn <> 'x'", want: 'block' },
  { desc: 'NOT IN', sql: "SELECT id FROM patients WHERE ssn NOT IN ('x')", want: 'block' },
  { desc: 'function of the value compared for equality', sql: "SELECT id FROM patients WHERE lower(email) = 'a@b'", want: 'block' },
  { desc: 'cast of the value', sql: 'SELECT 1 FROM patients WHERE id = 1 AND ssn::date IS NULL', want: 'block' },
  { desc: 'ORDER BY masked column', sql: 'SELECT id FROM patients ORDER BY ssn', want: 'block' },
  { desc: 'ORDER BY position of a masked output', sql: 'SELECT ssn, id FROM patients ORDER BY 1', want: 'block' },
  { desc: 'ORDER BY alias of a masked output', sql: 'SELECT ssn AS x, id FROM patients ORDER BY x', want: 'block' },
  { desc: 'GROUP BY masked column', sql: 'SELECT count(*) FROM patients GROUP BY dob', want: 'block' },
  { desc: 'aggregate FILTER', sql: "SELECT count(*) FILTER (WHERE email LIKE 'a%') AS n FROM patients", want: 'block' },
  { desc: 'CASE condition', sql: "SELECT CASE WHEN ssn LIKE '1%' THEN 1 END FROM patients", want: 'block' },
  { desc: 'simple CASE on the value', sql: "SELECT CASE ssn WHEN '1' THEN 1 END FROM patients", want: 'block' },
  { desc: 'JOIN condition', sql: 'SELECT p.id FROM patients p JOIN guesses g ON p.ssn > g.v', want: 'block' },
  { desc: 'qualified through an alias', sql: "SELECT p.id FROM public.patients AS p WHERE p.mrn LIKE 'M%'", want: 'block' },
  { desc: 'renamed through a sub-select', sql: "SELECT x FROM (SELECT ssn AS x FROM patients) s WHERE s.x LIKE '1%'", want: 'block' },
  { desc: 'renamed through a CTE', sql: "WITH c AS (SELECT ssn AS a FROM patients) SELECT 1 FROM c WHERE a LIKE '1%'", want: 'block' },
  { desc: 'renamed through a CTE inside a sub-select', sql: "SELECT * FROM (WITH c AS (SELECT ssn AS a FROM patients) SELECT a FROM c) s WHERE s.a LIKE '1%'", want: 'block' },
  { desc: 'renamed through two CTEs', sql: "WITH c AS (SELECT ssn AS a FROM patients), d AS (SELECT a AS b FROM c) SELECT 1 FROM d WHERE b > '1'", want: 'block' },
  { desc: 'star through a sub-select', sql: "SELECT id FROM (SELECT * FROM patients) s WHERE ssn LIKE '1%'", want: 'block' },
  { desc: 'whole-row reference', sql: "SELECT id FROM patients p WHERE p::text LIKE '%123%'", want: 'block' },
  { desc: 'sub-select in WHERE reads the value', sql: "SELECT 1 WHERE (SELECT ssn FROM patients WHERE id = 1) LIKE '1%'", want: 'block' },
  { desc: 'EXISTS with a LIKE inside', sql: "SELECT 1 WHERE EXISTS (SELECT 1 FROM patients WHERE ssn LIKE '1%')", want: 'block' },
  { desc: 'window ORDER BY', sql: 'SELECT row_number() OVER (ORDER BY ssn), id FROM patients', want: 'block' },
  { desc: 'hypothetical-set aggregate', sql: "SELECT rank('123') WITHIN GROUP (ORDER BY ssn) FROM patients", want: 'block' },
  { desc: 'aggregate ordered by a masked column', sql: "SELECT string_agg(full_name, ',' ORDER BY ssn) FROM patients", want: 'block' },
  { desc: 'set operation ordered by a masked output', sql: 'SELECT ssn FROM patients UNION SELECT mrn FROM patients ORDER BY 1', want: 'block' },
  { desc: 'function returning patients rows', sql: "SELECT id FROM get_patient(1) WHERE ssn LIKE '1%'", want: 'block' },
  { desc: 'DELETE with LIKE', sql: "DELETE FROM patients WHERE ssn LIKE '1%'", want: 'block' },
  { desc: 'UPDATE … FROM join on a range', sql: 'UPDATE notes n SET body = 1 FROM patients p WHERE p.dob > n.d', want: 'block' },
  { desc: 'JOIN USING a masked column', sql: 'SELECT 1 FROM patients JOIN other USING (ssn)', want: 'block' },
  // allowed
  { desc: 'equality lookup', sql: "SELECT id, full_name, mrn FROM patients WHERE mrn = 'MRN-00042-A'", want: 'allow' },
  { desc: 'equality, constant first', sql: "SELECT id FROM patients WHERE 'MRN-1' = mrn", want: 'allow' },
  { desc: 'IN list', sql: "SELECT id FROM patients WHERE mrn IN ('a', 'b')", want: 'allow' },
  { desc: 'equality with a parameter', sql: 'SELECT id FROM patients WHERE mrn = $1', want: 'allow' },
  { desc: 'equality with a typed constant', sql: "SELECT id FROM patients p WHERE p.dob = DATE '1961-03-14'", want: 'allow' },
  { desc: 'IS NULL', sql: 'SELECT count(*) FROM patients WHERE email IS NULL', want: 'allow' },
  { desc: 'predicates on unmasked columns', sql: "SELECT ssn FROM patients WHERE full_name LIKE 'A%' AND id > 1 ORDER BY id", want: 'allow' },
  { desc: 'masked columns in the output only', sql: "SELECT upper(email), ssn || '', CASE WHEN true THEN phone END FROM patients WHERE id = 1", want: 'allow' },
  { desc: 'value aggregates', sql: 'SELECT mode() WITHIN GROUP (ORDER BY phone), percentile_disc(0.5) WITHIN GROUP (ORDER BY dob), string_agg(ssn, \',\' ORDER BY ssn) FROM patients', want: 'allow' },
  { desc: 'same column name on an unmasked table', sql: "SELECT * FROM notes WHERE ssn LIKE 'x'", want: 'allow' },
  { desc: 'clean sub-select column', sql: "SELECT * FROM (SELECT id, full_name, ssn FROM patients) s WHERE s.full_name LIKE 'A%'", want: 'allow' },
  { desc: 'clean CTE column', sql: "WITH c AS (SELECT full_name AS a FROM patients) SELECT 1 FROM c WHERE a > '1'", want: 'allow' },
  { desc: 'built-in set-returning function', sql: 'SELECT g FROM generate_series(1, 10) g WHERE g > 3 ORDER BY g', want: 'allow' },
];

describe('P7 strict predicates', () => {
  let strict: PolicyEngine;
  let lax: PolicyEngine; // no strictPredicates given: the default
  beforeAll(async () => {
    strict = await loadPolicyEngine({ strictPredicates: true, maskedColumns: MASKED, allowedFunctions: ['get_patient', 'other'] });
    lax = await loadPolicyEngine({ maskedColumns: MASKED, allowedFunctions: ['get_patient'] });
  });

  it.each(ROWS)('$want: $desc', ({ sql, want }) => {
    const d = strict.classify(sql);
    const action = d.action === 'block' && d.rule !== 'P7.predicate' ? 'other-block' : d.action === 'hold' ? 'allow' : d.action;
    expect({ action, rule: d.rule }).toMatchObject({ action: want });
  });

  it('is on by default; strictPredicates: false turns it off', async () => {
    expect(lax.classify("SELECT id FROM patients WHERE ssn LIKE '1%'").rule).toBe('P7.predicate');
    const off = await loadPolicyEngine({ maskedColumns: MASKED, strictPredicates: false });
    expect(off.classify("SELECT id FROM patients WHERE ssn LIKE '1%'").action).toBe('allow');
  });
});
