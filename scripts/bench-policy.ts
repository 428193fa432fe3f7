/**
 * Micro-benchmark of the agent's per-statement decision: pgbench -S's statement with a new literal each
 * time, judged as the session judges a Query (the policy engine asked three times, as the session's
 * checks do, and the masking lineage once for the statement), on a catalog holding pgbench_accounts and
 * a masked patients table.
 *
 *   npx tsx scripts/bench-policy.ts [--root DIR] [--n 20000]
 *
 * `--root` runs the code of another checkout (e.g. /work/main) for a before/after comparison.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const args = process.argv.slice(2);
const opt = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1] : dflt;
};
const root = path.resolve(opt('root', path.join(import.meta.dirname, '..')));
const n = Number(opt('n', '20000'));

const policy = (await import(pathToFileURL(path.join(root, 'agent/src/policy/index.ts')).href)) as typeof import('../agent/src/policy/index.js');
const lineageMod = (await import(pathToFileURL(path.join(root, 'agent/src/masking/lineage.ts')).href)) as typeof import('../agent/src/masking/lineage.js');
const strategies = (await import(pathToFileURL(path.join(root, 'agent/src/masking/strategies.ts')).href)) as typeof import('../agent/src/masking/strategies.js');
type Catalog = import('../agent/src/masking/catalog.js').Catalog;
type CatalogRelation = import('../agent/src/masking/catalog.js').CatalogRelation;

const table = (oid: number, name: string, cols: [string, number][]): CatalogRelation => ({
  oid, schema: 'public', name, kind: 'r', rowTypeOid: oid + 1, parents: [],
  columns: cols.map(([c, typeOid], i) => ({ name: c, attnum: i + 1, typeOid })),
});
const relations = [
  table(16400, 'pgbench_accounts', [['aid', 23], ['bid', 23], ['abalance', 23], ['filler', 1042]]),
  table(16410, 'patients', [['id', 23], ['full_name', 25], ['ssn', 25], ['mrn', 25]]),
];
const catalog: Catalog = {
  relations: new Map(relations.map((r) => [`public.${r.name}`, r])),
  byOid: new Map(relations.map((r) => [r.oid, r])),
  functions: new Map(),
  searchPath: ['public'],
  textTypeOids: new Set(),
};
const rules = new Map([['public.patients.ssn', strategies.parseStrategy('redact')], ['public.patients.mrn', strategies.parseStrategy({ partial: 4 })]]);
const lineage = new lineageMod.Lineage(catalog, rules);
const engine = await policy.loadPolicyEngine({ maskedColumns: ['public.patients.ssn', 'public.patients.mrn'], predicates: () => lineage });
const session = engine.session();

const statement = (aid: number) => `SELECT abalance FROM pgbench_accounts WHERE aid = ${aid};`;
const judge = (sql: string): void => {
  engine.analyze(sql); // dependsOnUnconfirmed
  engine.analyze(sql); // unknownRelations
  const d = session.query(sql); // judgeQuery
  if (d.action !== 'allow') throw new Error(`unexpected ${d.action}: ${d.reason}`);
  for (const f of d.statements) lineage.analyzeSql(f.text); // planOf
};

// A literal never seen before each time (as pgbench's random aid over 100,000 × scale rows): distinct for i < 10^6.
let i = 0;
const next = (): string => statement(1 + ((i++ * 7919) % 1_000_000));
for (let k = 0; k < 2000; k++) judge(next());
const cpu0 = process.cpuUsage();
const t0 = process.hrtime.bigint();
for (let k = 0; k < n; k++) judge(next());
const wall = Number(process.hrtime.bigint() - t0) / 1000 / n;
const cpu = process.cpuUsage(cpu0);
const result = { root, statements: n, usPerStatement: Number(wall.toFixed(2)), cpuUsPerStatement: Number(((cpu.user + cpu.system) / n).toFixed(2)) };
console.log(JSON.stringify(result));
