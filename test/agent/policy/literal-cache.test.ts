/**
 * Decisions and masking plans cached under a statement's literal-free skeleton must be the ones the
 * statement gets judged afresh (policy/constants.ts, policy/parse.ts).
 *
 * Differential: every SQL text of the attack corpus (corpus.json, scripts/attacks), every SQL-looking
 * string of the other test files and a list of literal-heavy texts, each with its literals mutated
 * (numbers, strings in every quoting, bit strings, signs, casts), is judged by a long-lived engine and
 * lineage (the cached path, warmed with the original text) and by fresh ones that cache nothing (the
 * uncached path). Decisions, statement facts and masking plans must be equal.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lineage } from '../../../agent/src/masking/lineage.js';
import { ConstantReadError } from '../../../agent/src/policy/constants.js';
import { PolicyEngine, type PolicyOptions } from '../../../agent/src/policy/engine.js';
import { parseStatements, scanSkeleton, skeletonOf, skeletonStats } from '../../../agent/src/policy/parse.js';
import { fixture, RULES, type Fixture } from '../masking/fixture.js';
import { rng } from '../../harness/rng.js';

const ROOT = process.cwd();

// ── the texts ──────────────────────────────────────────────────────────────────────────────────

interface CorpusCase {
  sql?: string | null; sql_template?: string; expand?: Record<string, { repeat: string; times: number }>;
  variants?: string[]; pre_sql?: string[]; post_sql?: string[]; emulate_sql?: string[]; setup?: unknown;
  protocol_steps?: { sql?: string }[];
}
const corpus = JSON.parse(readFileSync(path.resolve(ROOT, '../shared/attacks/corpus.json'), 'utf8')) as {
  meta: { fixture: { masked_columns: string[] } }; cases: CorpusCase[];
};

function corpusTexts(): string[] {
  const out: string[] = [];
  for (const c of corpus.cases) {
    let sql = c.sql ?? undefined;
    if (!sql && c.sql_template) {
      sql = c.sql_template;
      for (const [k, e] of Object.entries(c.expand ?? {})) sql = sql.split(`{${k}}`).join(e.repeat.repeat(e.times));
    }
    if (sql) out.push(sql);
    out.push(...(c.variants ?? []), ...(c.pre_sql ?? []), ...(c.post_sql ?? []), ...(c.emulate_sql ?? []));
    for (const s of c.protocol_steps ?? []) if (s.sql) out.push(s.sql);
  }
  return out.map((s) => s.replaceAll('{MARKER_DIR}', '/tmp/gw-marker').replaceAll('{DBLINK_CONNSTR}', 'dbname=gwtest user=gw_agent'));
}

const SQL_START = /^\s*(SELECT|WITH|INSERT|UPDATE|DELETE|MERGE|SET|RESET|SHOW|BEGIN|START|COMMIT|ROLLBACK|END|COPY|EXPLAIN|PREPARE|EXECUTE|DECLARE|FETCH|MOVE|CLOSE|CREATE|ALTER|DROP|VALUES|TABLE|CALL|DO|LOCK|TRUNCATE|GRANT|REVOKE|DISCARD|DEALLOCATE|LISTEN|NOTIFY|VACUUM|ANALYZE|SAVEPOINT|RELEASE)\b/i;

/** SQL-looking string literals of the repository's tests and attack scripts (no template interpolation). */
function sourceTexts(): string[] {
  const files: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const p = path.join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (/\.ts$/.test(name) && !p.endsWith('literal-cache.test.ts')) files.push(p);
    }
  };
  walk(path.join(ROOT, 'test'));
  walk(path.join(ROOT, 'scripts/attacks'));
  const out: string[] = [];
  const literal = /'((?:\\.|[^'\\\n])*)'|"((?:\\.|[^"\\\n])*)"|`((?:\\.|[^`\\$]|\$(?!\{))*)`/g;
  for (const f of files) {
    for (const m of readFileSync(f, 'utf8').matchAll(literal)) {
      const raw = m[1] ?? m[2] ?? m[3] ?? '';
      if (!SQL_START.test(raw)) continue;
      const text = raw.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c === 't' ? '\t' : c));
      if (!text.includes('\0')) out.push(text);
    }
  }
  return out;
}

/** Texts written for this test: every place a literal can end up. */
const GENERATED = [
  'SELECT abalance FROM pgbench_accounts WHERE aid = 1;',
  'SELECT -5, - 5, +5, -1.5, -\'5\', 5::text, \'5\'::int, int \'5\', CAST(\'1\' AS int), interval \'1 day\', 1::float(10), 1::float(30)',
  "SELECT B'101', X'ff', E'\\x41', $$a$$, $q$it's$q$, U&'d\\0061t' UESCAPE '!', 'a'\n'b', 'é' || 'ü'",
  'SELECT ssn, mrn FROM patients ORDER BY 1', 'SELECT full_name, ssn FROM patients ORDER BY 2 DESC LIMIT 1 OFFSET 2',
  'SELECT full_name, count(*) FROM patients GROUP BY 1', 'SELECT * FROM patients WHERE mrn = \'MRN-00042-A\'',
  "SELECT * FROM patients WHERE ssn LIKE '1%'", "SELECT * FROM patients WHERE mrn IN ('a', 'b', 'c')",
  "SELECT regexp_split_to_table(ssn, '') FROM patients", "SELECT string_to_table(ssn, '-') FROM patients",
  "SELECT jsonb_path_query(to_jsonb(p), '$.ssn') FROM patients p", "SELECT jsonb_path_query(to_jsonb(p), '$ ? (@.ssn starts with \"1\")') FROM patients p",
  "SELECT set_config('statement_timeout', '5s', false)", "SELECT set_config('search_path', 'public', false)",
  "SELECT set_config('role', 'phi_admin', false)", "SELECT set_config(name, 'v', false) FROM pg_settings WHERE name = 'statement_timeout'",
  'SET statement_timeout = 5000', "SET search_path TO 'public'", "SET application_name = 'x'", 'SET statement_timeout = -1',
  "SET search_path = 'pg_catalog, public'", "SET datestyle TO 'ISO', 'MDY'", 'SET extra_float_digits = 3',
  "EXPLAIN (ANALYZE 'off') SELECT 1", 'EXPLAIN (ANALYZE 0) SELECT 1', 'EXPLAIN (ANALYZE false) SELECT ssn FROM patients',
  "EXPLAIN (ANALYZE, FORMAT 'json') SELECT * FROM patients WHERE ssn > '1'", 'FETCH 5 c', 'MOVE 2 c',
  'BEGIN READ WRITE', 'BEGIN READ ONLY', 'SET TRANSACTION READ ONLY', 'START TRANSACTION ISOLATION LEVEL SERIALIZABLE',
  "COPY patients TO STDOUT WITH (DELIMITER ',')", "COPY (SELECT ssn FROM patients WHERE mrn = 'x') TO STDOUT (FORMAT csv)",
  "PREPARE p AS SELECT * FROM patients WHERE mrn = 'x'", "DECLARE c CURSOR FOR SELECT ssn FROM patients WHERE mrn = 'x'",
  "SELECT 'a'; SELECT ssn FROM patients WHERE mrn = 'b'; SELECT 3", "SELECT 'x' -- c 'y'\n, 2 /* 'z' */, 3",
  'SELECT generate_series(1, 10)', 'SELECT * FROM generate_series(1, 3) ORDER BY 1', 'SELECT ssn FROM patients LIMIT 1',
  "SELECT * FROM patients TABLESAMPLE bernoulli (10) REPEATABLE (5)", "SELECT lower('ABC'), to_char(now(), 'YYYY')",
  "SELECT CASE WHEN ssn = '1' THEN 1 ELSE 2 END FROM patients", "SELECT substr(ssn, 1, 3) FROM patients",
  "SELECT ssn FROM patients WHERE length(ssn) > 3", "SELECT ssn FROM patients ORDER BY substr(ssn, 2, 1)",
  "SELECT pg_sleep(0.1)", "SELECT pg_read_file('/etc/passwd')", "SELECT current_setting('search_path')",
  "INSERT INTO notes(body) VALUES ('a'), ('b')", "UPDATE notes SET body = 'x' WHERE id = 1", "DELETE FROM notes WHERE id = 2",
  "SELECT 1 FROM patients WHERE dob > '2000-01-01'::date", "SELECT ssn FROM patients WHERE mrn = $1 AND full_name = 'x'",
  "SELECT '{\"a\": 1}'::jsonb -> 'a'", "SELECT ARRAY[1, 2, 3][2]", "SELECT ssn FROM patients OFFSET 1 ROWS FETCH FIRST 2 ROWS ONLY",
  "VALUES (1, 'a'), (2, 'b') ORDER BY 2", "SELECT * FROM (VALUES (1, 'a')) v(x, y) ORDER BY 1", 'SELECT 0x1F, 1_000, 0o17, 0b101',
  'SELECT 2147483647, 2147483648, -2147483648', "SELECT xmlparse(document '<a/>')", "SELECT 'a' COLLATE \"C\"",
  "LOCK TABLE notes IN ACCESS SHARE MODE", "NOTIFY chan, 'payload'", "LISTEN chan", "SELECT 1 WHERE 'a' = 'b' OR 2 = 3",
];

/** Other literals of each token type (the scanner's type letter, parse.ts), written as SQL. */
const ALTERNATIVES: Record<string, string[]> = {
  I: ['0', '1', '2', '3', '7', '42', '2147483647', '0x1F'],
  F: ['0.0', '0.5', '1.5', '1e3', '99999999999'],
  S: ["''", "'x'", "'0'", "'1'", "'on'", "'off'", "'false'", "'public'", "'MRN-00042-A'", "'statement_timeout'", "'1%'", "'$.a'",
    "E'a\\nb'", "e'\\x41'", '$$dollar$$', "$q$it's$q$", "'it''s'", "'é'", "'1 day'"],
  B: ["B'0'", "B'1011'"],
  X: ["X'00'", "X'DEADBEEF'"],
  U: ["U&'x'", "U&'\\0041'"],
};

/** The text with literal i (or all when i < 0) replaced by the alternative chosen by `pick`. */
function mutate(sql: string, pick: (type: string) => string, only: number): string | undefined {
  const sk = skeletonOf(sql);
  if (!sk || sk.literals.length === 0) return undefined;
  const types = [...sk.key.matchAll(/\0L(.)\0/g)].map((m) => m[1]);
  const buf = Buffer.from(sql, 'utf8');
  const parts: Buffer[] = [];
  let at = 0;
  for (let i = 0; i < sk.literals.length; i += 2) {
    if (only >= 0 && i / 2 !== only) continue;
    parts.push(buf.subarray(at, sk.literals[i]), Buffer.from(pick(types[i / 2]), 'utf8'));
    at = sk.literals[i + 1];
  }
  parts.push(buf.subarray(at));
  return Buffer.concat(parts).toString('utf8');
}

/** The text with each integer literal of its scan replaced by `pick()`. */
function mutateIntegers(sql: string, pick: () => string): string {
  const sk = scanSkeleton(sql)!;
  const buf = Buffer.from(sql, 'utf8');
  const parts: Buffer[] = [];
  let at = 0;
  for (const t of sk.tokens) {
    if (t.tag !== 'LI') continue;
    parts.push(buf.subarray(at, t.start), Buffer.from(pick(), 'utf8'));
    at = t.end;
  }
  parts.push(buf.subarray(at));
  return Buffer.concat(parts).toString('utf8');
}

function variantsOf(sql: string, random: ReturnType<typeof rng>): string[] {
  const sk = skeletonOf(sql);
  if (!sk) return [];
  const n = sk.literals.length / 2;
  const out = new Set<string>();
  const choose = (list: string[]) => list[Math.floor(random.next() * list.length)];
  // each literal on its own (the first 6), through every alternative of its type, then all at once
  for (let i = 0; i < Math.min(n, 6); i++) {
    for (let k = 0; k < 3; k++) {
      const v = mutate(sql, (t) => choose(ALTERNATIVES[t] ?? ["'x'"]), i);
      if (v) out.add(v);
    }
  }
  for (let k = 0; k < 4; k++) {
    const v = mutate(sql, (t) => choose(ALTERNATIVES[t] ?? ["'x'"]), -1);
    if (v) out.add(v);
  }
  out.delete(sql);
  return [...out];
}

// ── the two paths ──────────────────────────────────────────────────────────────────────────────

let fx: Fixture;
const options = (): PolicyOptions => ({ maskedColumns: corpus.meta.fixture.masked_columns.map((c) => `public.${c}`), strictPredicates: true });

/** What the session would act on: the decision, and the plan of each statement it forwards. */
function judge(engine: PolicyEngine, lineage: Lineage, sql: string) {
  const decision = engine.classify(sql);
  const plans = decision.statements.map((f) => lineage.analyzeSql(f.text));
  return { decision, plans };
}

function uncached(sql: string) {
  const lineage = new Lineage(fx.catalog, RULES);
  const engine = new PolicyEngine({ ...options(), cacheSize: 0, predicates: () => lineage });
  const fresh = new Lineage(fx.catalog, RULES); // plans from a lineage that has seen nothing either
  const { decision } = judge(engine, lineage, sql);
  return { decision, plans: decision.statements.map((f) => fresh.analyzeSql(f.text)) };
}

beforeAll(async () => {
  fx = await fixture();
}, 120_000);
afterAll(async () => {
  await fx?.client.end();
});

describe('literal-free cache', () => {
  it('gives every text, literals mutated, the decision and plans it gets uncached', () => {
    const cachedLineage = new Lineage(fx.catalog, RULES);
    const cached = new PolicyEngine({ ...options(), predicates: () => cachedLineage });
    const random = rng(15);
    const bases = [...new Set([...corpusTexts(), ...sourceTexts(), ...GENERATED])].filter((s) => s.length <= 64 * 1024);
    let compared = 0;
    const mismatches: string[] = [];
    for (const base of bases) {
      judge(cached, cachedLineage, base); // warm: the base text's analysis is what a variant may find
      for (const sql of [base, ...variantsOf(base, random)]) {
        const a = judge(cached, cachedLineage, sql);
        const b = uncached(sql);
        compared++;
        try {
          expect(a).toEqual(b);
        } catch {
          mismatches.push(sql);
        }
        for (const p of [...a.plans, ...b.plans]) expect('reason' in p ? p.reason : '').not.toMatch(/without constantValue/);
        // A statement's skeleton cut from its text's scan is the one the scanner gives it alone.
        for (const f of a.decision.statements) expect(skeletonOf(f.text)).toEqual(scanSkeleton(f.text));
      }
    }
    expect(mismatches).toEqual([]);
    // The comparison is only worth something if the cached path served many of them from skeletons.
    expect(bases.length).toBeGreaterThan(300);
    expect(compared).toBeGreaterThan(3000);
    expect(cached.stats.shape).toBeGreaterThan(1000);
    expect(cachedLineage.stats.shape).toBeGreaterThan(1000);
  }, 600_000);

  it('serves pgbench -S with a new literal each time from the skeleton, texts cut from each one', () => {
    const engine = new PolicyEngine(options());
    for (let aid = 1; aid <= 50; aid++) {
      const d = engine.classify(`SELECT abalance FROM pgbench_accounts WHERE aid = ${aid * 7919};`);
      expect(d.action).toBe('allow');
      expect(d.statements[0].text).toBe(`SELECT abalance FROM pgbench_accounts WHERE aid = ${aid * 7919}`);
    }
    expect(engine.stats).toEqual({ exact: 0, shape: 49, made: 1 });
  });

  it('takes a skeleton from a template only when the scanner would give the same one', () => {
    // Integer literals replaced by other digit runs (int4 and beyond, leading zeros), by digits glued to
    // what follows, and by other kinds of number: every skeleton must be the scanner's.
    const random = rng(16);
    const DIGITS = ['0', '7', '00', '0007', '42', '2147483647', '2147483648', '99999999999', '12345678901234567890'];
    const GLUED = ['5e3', '5.', '5.5', '0x1F', '5_0', '5a', "5'x'", '5$', '1e', '5::int'];
    const bases = [...new Set([...corpusTexts(), ...sourceTexts(), ...GENERATED])].filter((s) => s.length <= 8 * 1024);
    const before = { ...skeletonStats };
    let compared = 0;
    const mismatches: string[] = [];
    for (const base of bases) {
      const sk = scanSkeleton(base);
      if (!sk || !sk.key.includes('\0LI\0')) continue;
      skeletonOf(base); // the template
      const variants = new Set<string>();
      for (let k = 0; k < 6; k++) variants.add(mutateIntegers(base, () => DIGITS[Math.floor(random.next() * DIGITS.length)]));
      variants.add(mutateIntegers(base, () => GLUED[Math.floor(random.next() * GLUED.length)]));
      for (const v of variants) {
        compared++;
        if (JSON.stringify(skeletonOf(v)) !== JSON.stringify(scanSkeleton(v))) mismatches.push(v);
      }
    }
    expect(mismatches).toEqual([]);
    expect(compared).toBeGreaterThan(500);
    expect(skeletonStats.template - before.template).toBeGreaterThan(300);
  });

  it('keeps decisions that read a literal under their exact text only', () => {
    const engine = new PolicyEngine(options());
    expect(engine.classify("SET search_path TO 'pg_catalog'").action).toBe('allow');
    expect(engine.classify("SET search_path TO 'public'").action).toBe('block');
    expect(engine.classify('SELECT ssn FROM patients ORDER BY 1').action).toBe('block');
    expect(engine.classify('SELECT full_name, ssn FROM patients ORDER BY 1').action).toBe('allow');
    expect(engine.stats.shape).toBe(0);
  });

  it('does not cache by skeleton a statement whose literal went anywhere but a constant', () => {
    for (const sql of ['FETCH 5 c', "COPY patients TO STDOUT WITH (DELIMITER ',')", "EXPLAIN (ANALYZE 'off') SELECT 1", 'SELECT 1::float(30)', "SELECT U&'x' UESCAPE '!'"]) {
      const p = parseStatements(sql, skeletonOf(sql));
      expect(p.ok && p.statements[0].bound, sql).toBe(false);
    }
    const p = parseStatements('SELECT -5, - 5.5, 3', skeletonOf('SELECT -5, - 5.5, 3'));
    expect(p.ok && p.statements[0].bound).toBe(true);
  });

  it('catches a rule that reads a constant directly: it throws, and the statement is refused and not cached', () => {
    const p = parseStatements('SELECT 5', skeletonOf('SELECT 5'));
    if (!p.ok) throw new Error(p.error);
    const target = (p.statements[0].body.targetList as { ResTarget: { val: { A_Const: Record<string, unknown> } } }[])[0].ResTarget.val.A_Const;
    expect(() => target.ival).toThrow(ConstantReadError);
    expect(Object.keys(target)).toEqual(['location']);
    expect(JSON.stringify(target)).not.toContain('5');

    // A rule plugged in where the engine lets one in (P7's oracle) that walks to the constant by hand.
    let calls = 0;
    const rogue = {
      predicateLeak(_kind: string, body: Record<string, unknown>) {
        calls++;
        const c = (body.whereClause as { A_Expr: { rexpr: { A_Const: { ival: { ival: number } } } } }).A_Expr.rexpr.A_Const;
        return c.ival.ival > 10 ? 'big' : undefined;
      },
    };
    const engine = new PolicyEngine({ ...options(), predicates: () => rogue });
    for (const aid of [1, 2]) {
      const d = engine.classify(`SELECT full_name FROM patients WHERE id = ${aid}`);
      expect(d.action).toBe('block');
      expect(d.rule).toBe('P3.internal');
    }
    expect(calls).toBe(2); // judged twice: the first analysis was not reused for the second literal
    expect(engine.stats.shape).toBe(0);
  });
});
