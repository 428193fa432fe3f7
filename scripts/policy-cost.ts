// Cost of a policy decision, cached and uncached (DESIGN.md: libpg-query costs 50–100 µs per statement).
// A measurement, not a test: `npx tsx scripts/policy-cost.ts`.
import { loadPolicyEngine } from '../agent/src/policy/index.js';

const SQL = [
  "SELECT id, full_name, diagnosis FROM patients WHERE mrn = 'MRN-00042-A'",
  'SELECT p.id, count(n.*) FROM patients p LEFT JOIN notes n ON n.patient_id = p.id WHERE p.id > 10 GROUP BY p.id ORDER BY 2 DESC LIMIT 20',
  'WITH d AS (DELETE FROM notes WHERE id = 1 RETURNING *) SELECT count(*) FROM d',
  "UPDATE notes SET body = 'x' WHERE id = 7",
];

const engine = await loadPolicyEngine({ strictPredicates: true, maskedColumns: ['public.patients.ssn', 'public.patients.mrn'] });
const N = 5000;
let t = performance.now();
for (let i = 0; i < N; i++) engine.classify(`${SQL[i % SQL.length]} /* ${i} */`); // distinct texts: all misses
const uncached = ((performance.now() - t) * 1000) / N;
for (const q of SQL) engine.classify(q);
t = performance.now();
for (let i = 0; i < N * 20; i++) engine.classify(SQL[i % SQL.length]);
const cached = ((performance.now() - t) * 1000) / (N * 20);
console.log(`policy classify: uncached ${uncached.toFixed(1)} µs, cached ${cached.toFixed(2)} µs per call`);
