/**
 * Column lineage over the libpg-query parse tree: for each output column of ONE statement, does its
 * value derive from a masked column, and with which strategy?
 *
 * The analysis is a taint propagation. Every expression gets a taint: `null` (clean) or the set of
 * masked source columns it derives from, plus whether it is a *plain* reference (the value itself,
 * through any number of aliases, sub-queries, CTEs and views). It is fail closed: any node type,
 * relation, column or function the analysis does not understand yields the unknown source `?…`,
 * which is masked ("tainted unless proven clean").
 *
 *   statement ──► query (WITH, set operations, VALUES, SELECT)
 *                   ├─ FROM items → scope entries (tables, views → their definitions, CTEs,
 *                   │  sub-selects, LATERAL, functions, JOIN … USING/NATURAL with merged columns)
 *                   └─ target list → taint per output column (stars expanded in PostgreSQL's order)
 *
 * Rules (SECURITY-POLICY.md P6):
 * - Operators, casts, COLLATE, functions, aggregates, window functions, CASE (conditions included),
 *   COALESCE, GREATEST, ROW, ARRAY, JSON/XML builders, scalar sub-selects: the union of their inputs.
 * - Value-free results stay clear: `count(*)`, `count(x)` (cardinality only; a FILTER clause's taint
 *   still counts), `x IS [NOT] NULL`, `EXISTS (…)`, constants, parameters.
 * - A whole-row reference (`p`, `p.*` inside an expression, `row_to_json(p)`) carries every column.
 * - WHERE / HAVING / JOIN ON / ORDER BY are filters, not values: they don't taint outputs (predicates
 *   on masked columns are policy's business, P7) but they do set `readsMasked`, which decides whether
 *   error and notice texts of the statement are redacted.
 * - Functions that read data named by a string (`table_to_xml('patients', …)`, `query_to_xml`,
 *   `dblink`, `lo_get`, `current_setting`, …) and user-defined functions (bodies are not analysed) are
 *   opaque: their results are tainted. Catalogs that hold column values (`pg_stats`, `pg_statistic`,
 *   `pg_stat_activity`, …) are tainted whole.
 *
 * Strategy of an output column: a plain reference to one masked column → that column's strategy.
 * Anything derived (an expression, a merge of several columns, a UNION of branches from different
 * columns, an unknown construct) → `redact`, or `null` when any source is configured `null` (the
 * strongest wins). `hash` and `partial` are only applied to the value they were configured for: a
 * hash of `upper(email)` would still allow joins, but a `partial` of a derived string could reveal
 * more than the configured tail.
 */
import { constantType, intConstant, stringConstant } from '../policy/constants.js';
import { Lru, parseStatements, skeletonOf, type ParsedStatement } from '../policy/parse.js';
import type { Catalog, CatalogFunction, CatalogRelation } from './catalog.js';
import { NULLIFY, REDACT, type Strategy } from './strategies.js';

/** Masking rules: `schema.table.column` → strategy. */
export type MaskRules = ReadonlyMap<string, Strategy>;

export type ColumnMask = { masked: false } | { masked: true; strategy: Strategy; sources: string[] };

export const CLEAR: ColumnMask = Object.freeze({ masked: false }) as ColumnMask;

export interface PlanColumn {
  name: string;
  mask: ColumnMask;
  /** a plain reference to this table column: RowDescription should carry its table OID / attnum */
  origin?: { relation: string; attnum: number };
  /** the column's type when the analysis knows it (plain references); COPY uses it */
  typeOid?: number;
  /** width unknown: stands for zero or more columns, all with this mask; `crossCheck` resolves it */
  spread?: true;
}

export interface CopyOptions {
  format: 'text' | 'csv' | 'binary';
  delimiter: string;
  quote: string;
  escape: string;
  null: string;
  header: boolean;
}

/**
 * What a plan says besides its columns; the session layer reads these.
 * - `readsMasked`: the statement evaluates a masked-derived expression in some clause, or runs deferred
 *   work (FETCH, MOVE, CLOSE, COMMIT with WITH HOLD cursors): redact the text of its errors and notices.
 * - `rowsTainted`: which and how many rows come back was decided by a masked-derived value (a filter,
 *   a set-returning function fed by one, LIMIT…); row counts (CommandComplete, the number of DataRows)
 *   then carry it. Strict predicates (P7) refuse such statements; in the lax profile it is informational.
 * - `predicateLeak`: the first use of a masked-derived value that P7 refuses (undefined: none). The
 *   policy engine blocks on it when `strictPredicates` is on.
 */
export interface PlanFacts {
  readsMasked: boolean;
  rowsTainted?: boolean;
  predicateLeak?: string;
}

export type LineagePlan =
  | ({ kind: 'rows'; columns: PlanColumn[]; cursor?: string; copy?: CopyOptions } & PlanFacts)
  /** the statement returns no rows (writes without RETURNING, SET, DDL…) */
  | ({ kind: 'none' } & PlanFacts)
  /** FETCH: use the plan recorded for the cursor's DECLARE */
  | ({ kind: 'fetch'; cursor: string } & PlanFacts)
  /** PREPARE: `plan` is the prepared query's plan, for later EXECUTEs */
  | ({ kind: 'prepare'; name: string; plan: LineagePlan } & PlanFacts)
  /** EXECUTE: use the plan recorded for the prepared statement */
  | ({ kind: 'execute'; name: string } & PlanFacts)
  /** not understood: mask every column of whatever comes back, redact errors (fail closed) */
  | { kind: 'unknown'; reason: string; readsMasked: true; predicateLeak?: string };

export interface LineageOptions {
  /**
   * User functions (`schema.name`) whose results may be treated like their inputs: a function returning
   * a table's row type then yields that table's per-column masks, a scalar one the union of its
   * arguments. Every other user function is opaque (all outputs masked).
   */
  trustedFunctions?: ReadonlySet<string>;
  /** P7: how many constants or parameters one statement may compare masked values with by equality (default 100) */
  maxEqualityValues?: number;
  /**
   * Reads mode (P11 scopes, policy/scope.ts): every column of every user relation is a source, and
   * `reads()` reports what a statement reads and writes. The plans of such a Lineage are not for masking.
   */
  reads?: boolean;
}

/**
 * What one statement reads and writes (reads mode), by catalog key (`schema.name`). Each read is a
 * relation's rows (`public.visits`), one of its columns (readColumn), or something the analysis cannot
 * see into (`?function:public.f`, `?relation:x`). A read through a view or materialized view carries the
 * view before it (`public.v` VIA …): the view's own columns are reads too, so a scope may grant the view
 * itself or everything it reads.
 */
export type StatementReads = { ok: true; reads: string[]; writes: string[] } | { ok: false; reason: string };

/** Separates a view from what it reads, in a read's path. */
export const VIA = '\u0001';
const COLUMN_SEP = '\u0000';

/** The read of one column of a relation (catalog key `schema.name`). */
export function readColumn(relation: string, column: string): string {
  return `${relation}${COLUMN_SEP}${column}`;
}

/** A read's last step: a relation with or without a column, or an unknown (`?…`). */
export function splitRead(step: string): { relation: string; column?: string } {
  const i = step.indexOf(COLUMN_SEP);
  return i < 0 ? { relation: step } : { relation: step.slice(0, i), column: step.slice(i + 1) };
}

// ---------------------------------------------------------------------------------------------
// Taint

interface Taint {
  sources: Set<string>;
  plain: boolean;
  /**
   * plain for masking, but other values mixed in (`SELECT ssn … UNION ALL SELECT 'guess'`, a FULL JOIN
   * USING column): the strategy still applies, but P7 does not take it for masked values only
   */
  mixed?: true;
}
type T = Taint | null;

interface Col {
  name: string;
  taint: T;
  origin?: { relation: string; attnum: number };
  typeOid?: number;
  spread?: boolean;
}

interface Entry {
  refname: string;
  schema?: string;
  relname?: string;
  cols: Col[];
}

interface Item {
  entries: Entry[];
  cols: Col[];
  /** which and how many rows the item produces: decided by a masked value when tainted */
  rows: T;
}

interface CteDef {
  cols: Col[];
  rows: T;
}

interface Scope {
  items: Item[];
  entries: Entry[];
  parent?: Scope;
  ctes: CteEnv;
  /** the rows this query level's aggregates and window functions see (FROM, WHERE, GROUP BY, HAVING) */
  rows?: T;
  /** WINDOW w AS (…): the taint each named window adds to the functions over it */
  windows?: Map<string, T>;
}

interface CteEnv {
  map: Map<string, CteDef>;
  parent?: CteEnv;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

/** `{ Type: body }` → [Type, body]; undefined when `v` is not a wrapped node */
function unwrap(v: unknown): [string, Obj] | undefined {
  if (!isObj(v)) return undefined;
  const keys = Object.keys(v);
  if (keys.length !== 1) return undefined;
  const k = keys[0];
  if (!/^[A-Z]/.test(k)) return undefined;
  const body = v[k];
  return [k, isObj(body) ? body : {}];
}

function str(v: unknown): string | undefined {
  const u = unwrap(v);
  if (u && u[0] === 'String') return String(u[1].sval ?? '');
  return undefined;
}

function names(list: unknown): string[] {
  return arr(list).map((n) => str(n) ?? '');
}

const unknownTaint = (why: string): Taint => ({ sources: new Set([`?${why}`]), plain: false });

function union(...ts: T[]): T {
  let out: Taint | null = null;
  for (const t of ts) {
    if (!t) continue;
    if (!out) out = { sources: new Set(t.sources), plain: false };
    else for (const s of t.sources) out.sources.add(s);
  }
  return out;
}

const derive = (t: T): T => (t ? { sources: t.sources, plain: false } : null);

// ---------------------------------------------------------------------------------------------
// Fixed knowledge about PostgreSQL's own objects

/** Catalog relations whose columns hold copies of column values or other sessions' statements. */
const SENSITIVE_CATALOGS = new Set([
  'pg_statistic', 'pg_stats', 'pg_stats_ext', 'pg_stats_ext_exprs', 'pg_statistic_ext_data', 'pg_largeobject',
  'pg_stat_activity', 'pg_stat_statements', 'pg_stat_statements_info', 'pg_prepared_xacts',
]);

/** Builtin functions whose result carries data not referenced syntactically (names, SQL text, files). */
const OPAQUE_PREFIXES = [
  'query_to_xml', 'table_to_xml', 'cursor_to_xml', 'schema_to_xml', 'database_to_xml', 'dblink', 'lo_', 'pg_read_',
  'pg_stat_get_', 'pg_logical_slot', 'pg_ls_', 'pg_file', 'heap_page', 'bt_page', 'brin_page', 'gin_', 'gist_page',
  'hash_page', 'get_raw_page', 'page_header', 'pg_get_wal', 'pgstat', 'pg_stat_statements',
];
const OPAQUE_EXACT = new Set(['ts_stat', 'ts_rewrite', 'loread', 'current_setting', 'pg_stat_file', 'pg_current_logfile', 'pg_get_backend_memory_contexts', 'pg_cursor', 'pg_prepared_statement']);

function isOpaqueBuiltin(name: string): boolean {
  return OPAQUE_EXACT.has(name) || OPAQUE_PREFIXES.some((p) => name.startsWith(p));
}

/** Builtin set-returning functions with a known number of output columns (for `SELECT *`). */
const SRF_WIDTH: Record<string, number | string[]> = {
  generate_series: 1, generate_subscripts: 1, regexp_split_to_table: 1, regexp_matches: 1, string_to_table: 1,
  json_array_elements: 1, json_array_elements_text: 1, jsonb_array_elements: 1, jsonb_array_elements_text: 1,
  json_object_keys: 1, jsonb_object_keys: 1, jsonb_path_query: 1, jsonb_path_query_tz: 1,
  json_each: ['key', 'value'], json_each_text: ['key', 'value'], jsonb_each: ['key', 'value'], jsonb_each_text: ['key', 'value'],
};

/** TransactionStmt kinds that run the queries of open WITH HOLD cursors. */
const DEFERRING_TRANSACTION_KINDS = new Set(['TRANS_STMT_COMMIT', 'TRANS_STMT_PREPARE', 'TRANS_STMT_COMMIT_PREPARED']);

const SYSTEM_COLUMNS = new Set(['ctid', 'xmin', 'xmax', 'cmin', 'cmax', 'tableoid']);

/** Builtin set-returning functions: in a target list they multiply the rows by what their arguments say. */
const SET_RETURNING = new Set([...Object.keys(SRF_WIDTH), 'unnest', 'json_populate_recordset', 'jsonb_populate_recordset', 'json_to_recordset', 'jsonb_to_recordset', 'regexp_matches', 'ts_debug', 'ts_parse', 'ts_token_type']);

/**
 * Set-returning functions whose number of rows, fed a masked value, is no more than its length or its
 * shape: splitting into characters (MK-011), and a JSON path without a filter (MK-017). Every other
 * set-returning function fed a masked value returns as many rows as the value decides (generate_series
 * to ascii(ssn), regexp_matches(ssn, '^1'), a path filter `? (@ starts with "1")`): P7 refuses it.
 */
function structuralSrf(name: string, args: unknown[]): boolean {
  const text = (v: unknown): string | null | undefined => {
    const c = unwrap(v);
    if (c?.[0] === 'TypeCast') return text(c[1].arg);
    if (c?.[0] !== 'A_Const') return undefined;
    return c[1].isnull === true ? null : stringConstant(c[1]);
  };
  if (name === 'regexp_split_to_table' || name === 'string_to_table') return args.length === 2 && (text(args[1]) === '' || text(args[1]) === null);
  if (name === 'jsonb_path_query' || name === 'jsonb_path_query_tz') {
    const path = text(args[1]);
    return args.length === 2 && typeof path === 'string' && !/[?@$]/.test(path.replace(/^\s*(strict|lax)?\s*\$/, ''));
  }
  return false;
}

/** Operators and functions that fail on a zero divisor: with a masked divisor, the error is an oracle. */
const DIVISIONS = new Set(['/', '%', 'pg_catalog./', 'pg_catalog.%']);
const DIVIDING_FUNCTIONS = new Set(['div', 'mod']);

/** Builtin aggregates (those also recognisable by their syntax, `agg(*)`, DISTINCT, FILTER, WITHIN GROUP, OVER, need not be listed). */
const AGGREGATES = new Set([
  'count', 'sum', 'avg', 'min', 'max', 'array_agg', 'string_agg', 'bool_and', 'bool_or', 'every', 'bit_and', 'bit_or', 'bit_xor',
  'json_agg', 'jsonb_agg', 'json_agg_strict', 'jsonb_agg_strict', 'json_object_agg', 'jsonb_object_agg', 'json_object_agg_strict',
  'jsonb_object_agg_strict', 'json_object_agg_unique', 'jsonb_object_agg_unique', 'json_object_agg_unique_strict',
  'jsonb_object_agg_unique_strict', 'xmlagg', 'stddev', 'stddev_pop', 'stddev_samp', 'variance', 'var_pop', 'var_samp', 'corr',
  'covar_pop', 'covar_samp', 'regr_avgx', 'regr_avgy', 'regr_count', 'regr_intercept', 'regr_r2', 'regr_slope', 'regr_sxx',
  'regr_sxy', 'regr_syy', 'range_agg', 'range_intersect_agg', 'any_value', 'mode', 'percentile_cont', 'percentile_disc',
]);

/** Ordered-set aggregates whose ORDER BY is the aggregated value itself. */
const VALUE_AGGREGATES = new Set(['mode', 'percentile_cont', 'percentile_disc']);

/** Expression node types whose value is the union of their children (walked generically). */
export const CONTAINERS: ReadonlySet<string> = new Set([
  'A_Expr', 'BoolExpr', 'BooleanTest', 'TypeCast', 'CollateClause', 'CoalesceExpr', 'MinMaxExpr', 'A_ArrayExpr', 'RowExpr',
  'XmlExpr', 'XmlSerialize', 'A_Indices', 'SortBy', 'WindowDef', 'ResTarget', 'List', 'GroupingSet', 'MultiAssignRef',
  'JsonObjectConstructor', 'JsonArrayConstructor', 'JsonArrayQueryConstructor', 'JsonKeyValue', 'JsonValueExpr',
  'JsonAggConstructor', 'JsonFuncExpr', 'JsonParseExpr', 'JsonScalarExpr', 'JsonSerializeExpr', 'JsonIsPredicate',
  'JsonArgument', 'JsonBehavior', 'JsonOutput', 'JsonReturning', 'JsonTablePathSpec', 'NamedArgExpr',
].filter((k) => k !== 'A_Expr'));
/** Node types that carry no column value. */
export const CLEAN_NODES: ReadonlySet<string> = new Set([
  'A_Const', 'ParamRef', 'SQLValueFunction', 'String', 'Integer', 'Float', 'Boolean', 'BitString', 'TypeName',
  'SetToDefault', 'GroupingFunc', 'JsonFormat', 'A_Star', 'CurrentOfExpr',
]);
/** Expression node types with their own rule in `expr` (everything else taints the whole statement). */
export const EXPRESSION_RULES: ReadonlySet<string> = new Set([
  'ColumnRef', 'A_Indirection', 'FuncCall', 'SubLink', 'SelectStmt', 'NullTest', 'A_Expr', 'CaseExpr', 'CaseWhen', 'JsonArrayAgg', 'JsonObjectAgg',
]);
/** FROM items with their own rule in `fromItem`. */
export const FROM_RULES: ReadonlySet<string> = new Set(['RangeVar', 'RangeSubselect', 'RangeFunction', 'JoinExpr', 'RangeTableSample', 'RangeTableFunc', 'RangeTableFuncCol', 'JsonTable', 'JsonTableColumn']);

const MAX_DEPTH = 400;
/** a 2 MB comment-padded statement must not pin 2 MB × 5,000 cache entries */
const MAX_CACHED_TEXT = 64 * 1024;

// ---------------------------------------------------------------------------------------------

/** A query's result: its columns, and the taint of *which and how many* rows it returns. */
interface Rel {
  cols: Col[];
  rows: T;
}

/** Keys of a SelectStmt the walker reads; any other key makes the statement not understood. */
const SELECT_KEYS = new Set([
  'targetList', 'fromClause', 'whereClause', 'groupClause', 'groupDistinct', 'havingClause', 'windowClause', 'sortClause',
  'distinctClause', 'limitCount', 'limitOffset', 'limitOption', 'valuesLists', 'withClause', 'op', 'all', 'larg', 'rarg',
  'lockingClause', 'intoClause',
]);

/**
 * The P7 clause names: a masked-derived value there decides which rows come back, their order, their
 * grouping or whether an error happens.
 */
type Clause =
  | 'WHERE' | 'JOIN' | 'JOIN USING' | 'HAVING' | 'GROUP BY' | 'ORDER BY' | 'DISTINCT' | 'DISTINCT ON' | 'LIMIT' | 'OFFSET'
  | 'FILTER' | 'window' | 'window frame' | 'TABLESAMPLE' | 'FROM function argument' | 'table function document' | 'CASE'
  | 'NULLIF' | 'aggregate ORDER BY' | 'MERGE ON' | 'set-returning function argument' | 'divisor' | 'set operation';

class Analysis {
  readsMasked = false;
  depth = 0;
  /** a construct the walker does not know: the whole statement is tainted (fail closed) */
  poison?: string;
  /** P7: the uses of masked-derived values that decide rows, order, grouping or errors */
  readonly leaks: string[] = [];
  /** P7: constants and parameters masked values were compared with by equality */
  equalityValues = 0;
  /** rows a set-returning function in a target list adds, per query level */
  private readonly srfRows: T[] = [];

  constructor(readonly lin: Lineage) {}

  /** some expression read a configured masked column (not only an unknown source) */
  readsRealMasked = false;
  /** reads mode: every source an evaluated expression used, and every relation whose rows were read */
  readonly reads = new Set<string>();
  /** reads mode: relations written (DML targets, COPY FROM, SELECT INTO / CREATE TABLE AS) */
  readonly writes = new Set<string>();

  touch(t: T): T {
    if (t) {
      if (this.lin.options.reads) for (const src of t.sources) this.reads.add(src);
      this.readsMasked = true;
      if (!this.readsRealMasked) for (const s of t.sources) if (!s.startsWith('?')) this.readsRealMasked = true;
    }
    return t;
  }

  /** Fail closed: the statement holds something the walker does not model. */
  unknown(why: string): Taint {
    this.poison ??= why;
    return this.touch(unknownTaint(why))!;
  }

  /**
   * P7: a masked-derived value decides rows, order, grouping or errors here. Sources that only stand for
   * a builtin's opaque result (`current_setting`) are not masked data; unknown relations, value catalogs,
   * views not understood and user functions are (fail closed).
   */
  leak(clause: Clause, t: T): T {
    if (t && [...t.sources].some((s) => !s.startsWith('?function:') || s.includes('.'))) this.leaks.push(`${clause} uses a masked value (${[...t.sources].join(', ')})`);
    return t;
  }

  // ---- queries -------------------------------------------------------------------------------

  /** A query node (wrapped or bare SelectStmt / DML with RETURNING). */
  query(node: unknown, outer: Scope | undefined, ctes: CteEnv): Rel {
    const u = unwrap(node);
    if (!u) return this.select(isObj(node) ? node : {}, outer, ctes);
    const [kind, body] = u;
    if (kind === 'SelectStmt') return this.select(body, outer, ctes);
    if (kind === 'InsertStmt' || kind === 'UpdateStmt' || kind === 'DeleteStmt' || kind === 'MergeStmt') {
      return this.dml(kind, body, outer, ctes) ?? { cols: [], rows: null };
    }
    return { cols: [{ name: '?column?', taint: this.unknown(`query:${kind}`), spread: true }], rows: unknownTaint(`query:${kind}`) };
  }

  select(s: Obj, outer: Scope | undefined, parentCtes: CteEnv): Rel {
    if (++this.depth > MAX_DEPTH) throw new Error('statement nested too deeply');
    try {
      for (const k of Object.keys(s)) if (!SELECT_KEYS.has(k)) this.unknown(`select:${k}`);
      const ctes = this.withClause(s.withClause, outer, parentCtes);
      const op = String(s.op ?? 'SETOP_NONE');
      if (op !== 'SETOP_NONE' || Array.isArray(s.valuesLists)) {
        let rel: Rel;
        if (op !== 'SETOP_NONE') {
          const l = this.select(isObj(s.larg) ? s.larg : {}, outer, ctes);
          const r = this.select(isObj(s.rarg) ? s.rarg : {}, outer, ctes);
          const cols = setOp(l.cols, r.cols);
          // UNION / INTERSECT / EXCEPT (but UNION ALL) compare the values: how many rows remain depends on them
          const compares = op !== 'SETOP_UNION' || s.all !== true;
          if (compares) this.setComparison(s, l.cols, r.cols);
          rel = { cols, rows: union(l.rows, r.rows, compares ? derive(union(...cols.map((c) => c.taint))) : null) };
        } else rel = { cols: this.values(arr(s.valuesLists), outer, ctes), rows: null };
        const scope: Scope = { items: [], entries: [], parent: outer, ctes };
        for (const sb of arr(s.sortClause)) this.ordering('ORDER BY', sb, scope, rel.cols);
        return { cols: rel.cols, rows: union(rel.rows, this.limit(s, scope, rel.cols)) };
      }
      const scope = this.from(arr(s.fromClause), outer, ctes);
      const targets = arr(s.targetList);
      // the row set an aggregate or window function sees: FROM, WHERE, GROUP BY, HAVING
      scope.rows = union(scope.rows ?? null, this.predicate('WHERE', s.whereClause, scope));
      for (const g of arr(s.groupClause)) scope.rows = union(scope.rows ?? null, this.leak('GROUP BY', this.expr(groupTarget(g, targets, scope), scope)));
      scope.rows = union(scope.rows ?? null, this.predicate('HAVING', s.havingClause, scope));
      scope.windows = new Map();
      for (const w of arr(s.windowClause)) {
        const wd = unwrap(w)?.[1] ?? {};
        scope.windows.set(String(wd.name ?? ''), this.window(wd, scope));
      }
      this.srfRows.push(null);
      const out: Col[] = [];
      try {
        for (const rt of targets) out.push(...this.target(rt, scope));
      } finally {
        scope.rows = union(scope.rows ?? null, this.srfRows.pop() ?? null);
      }
      let rows = scope.rows ?? null;
      const distinct = arr(s.distinctClause);
      if (distinct.length === 1 && !unwrap(distinct[0])) {
        // plain DISTINCT: which rows remain depends on the output values
        rows = union(rows, this.leak('DISTINCT', derive(union(...out.map((c) => c.taint)))));
      } else for (const d of distinct) rows = union(rows, this.ordering('DISTINCT ON', d, scope, out));
      for (const sb of arr(s.sortClause)) this.ordering('ORDER BY', sb, scope, out);
      return { cols: out, rows: union(rows, this.limit(s, scope, out)) };
    } finally {
      this.depth--;
    }
  }

  /**
   * P7 for INTERSECT / EXCEPT / UNION: they compare every column of one side with the other's. Allowed
   * like an equality lookup: masked values against masked values, or against constant rows (counted
   * against maxEqualityValues); against anything else (a generated list of guesses) it is refused.
   */
  setComparison(s: Obj, l: Col[], r: Col[]): void {
    const pure = (c: Col | undefined) => !!c?.taint?.plain && !c.taint.mixed;
    const width = Math.max(l.length, r.length);
    for (let i = 0; i < width; i++) {
      const a = l[i];
      const b = r[i];
      if (!a?.taint && !b?.taint && !a?.spread && !b?.spread) continue;
      if (pure(a) && pure(b)) continue;
      const other = pure(a) ? s.rarg : pure(b) ? s.larg : undefined;
      const n = other === undefined ? undefined : constantRows(other);
      if (n === undefined) this.leak('set operation', union(a?.taint ?? null, b?.taint ?? null));
      else this.compared(n);
      return; // one verdict per comparison of rows
    }
  }

  /** VALUES rows: each column is the union of its rows (derived: several values). */
  values(lists: unknown[], outer: Scope | undefined, ctes: CteEnv): Col[] {
    const out: Col[] = [];
    for (const row of lists) {
      const items = arr(unwrap(row)?.[1].items);
      const scope: Scope = { items: [], entries: [], parent: outer, ctes };
      items.forEach((e, i) => {
        const t = derive(this.expr(e, scope));
        if (out[i]) out[i].taint = union(out[i].taint, t);
        else out[i] = { name: `column${i + 1}`, taint: t };
      });
    }
    return out;
  }

  /** LIMIT / OFFSET / FETCH FIRST: a masked-derived count decides how many rows come back. */
  limit(s: Obj, scope: Scope, outputs: Col[]): T {
    return union(this.leak('LIMIT', this.expr(s.limitCount, scope, outputs)), this.leak('OFFSET', this.expr(s.limitOffset, scope, outputs)));
  }

  /** ORDER BY / DISTINCT ON / GROUP BY item: may name an output column by position or alias. */
  ordering(clause: Clause, item: unknown, scope: Scope, outputs: Col[]): T {
    const u = unwrap(item);
    const node = u?.[0] === 'SortBy' ? u[1].node : item;
    const pos = ordinal(node);
    const t = pos !== undefined ? this.touch(outputs[pos - 1]?.taint ?? null) : this.expr(node, scope, outputs);
    return this.leak(clause, t);
  }

  /** A window definition: PARTITION BY, ORDER BY and frame offsets decide the window function's value. */
  window(wd: Obj, scope: Scope): T {
    let t: T = null;
    if (typeof wd.refname === 'string' && wd.refname) t = lookupWindow(scope, wd.refname) ?? this.unknown(`window:${wd.refname}`);
    for (const p of [...arr(wd.partitionClause), ...arr(wd.orderClause)]) t = union(t, this.leak('window', this.expr(unwrap(p)?.[0] === 'SortBy' ? unwrap(p)?.[1].node : p, scope)));
    t = union(t, this.leak('window frame', union(this.expr(wd.startOffset, scope), this.expr(wd.endOffset, scope))));
    return t;
  }

  withClause(w: unknown, outer: Scope | undefined, parent: CteEnv): CteEnv {
    if (!isObj(w)) return parent;
    const env: CteEnv = { map: new Map(), parent };
    const recursive = w.recursive === true;
    for (const c of arr(w.ctes)) {
      const cte = unwrap(c)?.[1];
      if (!cte) continue;
      const name = String(cte.ctename);
      // SEARCH / CYCLE add columns computed from the CTE's own columns: not modelled, fail closed
      if (cte.search_clause || cte.cycle_clause) this.unknown('cte:search-cycle');
      const colnames = names(cte.aliascolnames);
      const rename = (cols: Col[]): Col[] =>
        cols.map((col, i) => (colnames[i] !== undefined && !col.spread ? { ...col, name: colnames[i] } : col));
      if (recursive) {
        // Fixpoint: start from the non-recursive branch, re-analyse until taints stop growing.
        const q = unwrap(cte.ctequery);
        const body = q?.[1] ?? {};
        const seed = q?.[0] === 'SelectStmt' && body.op !== 'SETOP_NONE' && isObj(body.larg) ? this.select(body.larg, outer, env) : null;
        let cols: Col[] = seed ? rename(seed.cols) : [{ name: '?column?', taint: unknownTaint('recursive-cte'), spread: true }];
        let rows: T = seed ? seed.rows : unknownTaint('recursive-cte');
        let stable = false;
        for (let i = 0; i < 8 && !stable; i++) {
          env.map.set(name, { cols, rows });
          const next = this.query(cte.ctequery, outer, env);
          const nextCols = rename(next.cols);
          stable = nextCols.length === cols.length && nextCols.every((n, j) => sameTaint(n.taint, cols[j].taint)) && sameTaint(union(rows, next.rows), rows);
          rows = union(rows, next.rows);
          cols = nextCols.map((n, j) => ({ ...n, taint: union(n.taint, cols[j]?.taint ?? null) ?? null, origin: undefined }));
          // keep plainness only when neither side changed it
          cols.forEach((col, j) => {
            if (nextCols[j].taint?.plain && sameTaint(nextCols[j].taint, col.taint)) col.taint = nextCols[j].taint;
          });
        }
        if (!stable) {
          cols = cols.map((col) => ({ ...col, taint: union(col.taint, unknownTaint('recursive-cte')) }));
          rows = union(rows, unknownTaint('recursive-cte'));
        }
        env.map.set(name, { cols, rows });
      } else {
        const q = this.query(cte.ctequery, outer, env);
        env.map.set(name, { cols: rename(q.cols), rows: q.rows });
      }
    }
    return env;
  }

  /** RETURNING of INSERT / UPDATE / DELETE / MERGE; undefined when there is none. */
  dml(kind: string, s: Obj, outer: Scope | undefined, parentCtes: CteEnv): Rel | undefined {
    const ctes = this.withClause(s.withClause, outer, parentCtes);
    const returning = isObj(s.returningClause) ? arr(s.returningClause.exprs) : arr(s.returningList);
    const rv = isObj(s.relation) ? s.relation : {};
    const target = this.rangeVar(rv, ctes, true);
    const cols = target.cols.map((c) => ({ ...c }));
    const scope: Scope = { items: [], entries: [], parent: outer, ctes };
    let rows: T = null;
    if (kind === 'InsertStmt') {
      const src = s.selectStmt ? this.query(s.selectStmt, outer, ctes) : { cols: [], rows: null };
      rows = src.rows;
      const list = arr(s.cols).map((c) => String(unwrap(c)?.[1].name ?? ''));
      const targets = list.length ? list.map((n) => cols.findIndex((c) => c.name === n)) : cols.map((_, i) => i);
      if (src.cols.some((c) => c.spread)) for (const c of cols) c.taint = union(c.taint, ...src.cols.map((x) => x.taint));
      else src.cols.forEach((c, i) => {
        const at = targets[i];
        if (at === undefined || at < 0) return;
        cols[at].taint = union(cols[at].taint, c.taint);
      });
    }
    const item: Item = { entries: [], cols, rows: null };
    const alias = isObj(rv.alias) ? String(rv.alias.aliasname) : undefined;
    item.entries.push({ refname: alias ?? String(rv.relname ?? ''), schema: alias ? undefined : (rv.schemaname as string | undefined), relname: alias ? undefined : String(rv.relname ?? ''), cols });
    const extra = this.from([...arr(s.fromClause), ...arr(s.usingClause), ...(s.sourceRelation ? [s.sourceRelation] : [])], outer, ctes);
    scope.items = [item, ...extra.items];
    scope.entries = [...item.entries, ...extra.entries];
    rows = union(rows, extra.rows ?? null);
    // UPDATE … SET col = expr and ON CONFLICT DO UPDATE: the new value flows into the column
    const conflict = isObj(s.onConflictClause) ? s.onConflictClause : {};
    const sets = [...arr(s.targetList), ...arr(conflict.targetList)];
    for (const rt of sets) {
      const r = unwrap(rt)?.[1];
      if (!r) continue;
      const t = this.expr(r.val, scope);
      const at = cols.findIndex((c) => c.name === String(r.name));
      if (at >= 0) cols[at].taint = union(cols[at].taint, t);
      else if (t) for (const c of cols) c.taint = union(c.taint, t); // multi-assignment etc.: conservative
    }
    rows = union(rows, this.predicate('WHERE', conflict.whereClause, scope), this.generic(conflict.infer, scope));
    if (kind === 'MergeStmt') {
      rows = union(rows, this.predicate('MERGE ON', s.joinCondition, scope));
      let t: T = unknownTaint('merge');
      for (const w of arr(s.mergeWhenClauses)) {
        const m = unwrap(w)?.[1] ?? {};
        t = union(t, this.predicate('WHERE', m.condition, scope), this.generic(m.targetList, scope), this.generic(m.values, scope));
      }
      for (const c of cols) c.taint = union(c.taint, t);
    }
    rows = union(rows, this.predicate('WHERE', s.whereClause, scope));
    // old / new (PostgreSQL 18) see the same columns
    scope.entries.push({ refname: 'old', cols }, { refname: 'new', cols });
    scope.rows = rows;
    if (!returning.length) return undefined;
    const out: Col[] = [];
    for (const rt of returning) out.push(...this.target(rt, scope));
    return { cols: out, rows };
  }

  // ---- predicates (P7) -----------------------------------------------------------------------

  /**
   * A condition (WHERE, JOIN ON, HAVING, FILTER): AND / OR / NOT of atoms. An atom that compares a
   * plain masked-derived value by equality with constants or parameters (or another plain masked
   * value: joins on `hash` columns), or tests it IS [NOT] NULL, is the lookup P7 allows. Any other
   * atom reading a masked-derived value is a P7 leak. Returns the taint of which rows pass.
   */
  predicate(clause: Clause, node: unknown, scope: Scope): T {
    if (node === undefined || node === null) return null;
    const u = unwrap(node);
    if (u?.[0] === 'BoolExpr') return union(...arr(u[1].args).map((a) => this.predicate(clause, a, scope)));
    if (u?.[0] === 'NullTest' && this.plain(u[1].arg, scope)) return null;
    if (u?.[0] === 'A_Expr' && this.equalityLookup(u[1], scope)) return null;
    return this.leak(clause, this.expr(node, scope));
  }

  /** `x = const`, `const = x`, `x = y` (both plain masked), `x IN (consts)`, `x = ANY (ARRAY[consts])`. */
  equalityLookup(e: Obj, scope: Scope): boolean {
    const op = names(e.name);
    if (op[op.length - 1] !== '=' || (op.length > 1 && op[0] !== 'pg_catalog')) return false;
    const l = this.plain(e.lexpr, scope);
    if (e.kind === 'AEXPR_OP') {
      const r = this.plain(e.rexpr, scope);
      if (l && r) return true;
      if (l && isConst(e.rexpr)) return this.compared(1);
      return !!r && isConst(e.lexpr) && this.compared(1);
    }
    const list = e.kind === 'AEXPR_IN' ? unwrap(e.rexpr)?.[1].items : e.kind === 'AEXPR_OP_ANY' && unwrap(e.rexpr)?.[0] === 'A_ArrayExpr' ? unwrap(e.rexpr)?.[1].elements : undefined;
    return !!l && Array.isArray(list) && list.every(isConst) && this.compared(list.length);
  }

  compared(n: number): true {
    this.equalityValues += n;
    return true;
  }

  /** Is the node a plain masked-derived value (the column itself, through any renaming)? */
  plain(node: unknown, scope: Scope): boolean {
    const v = unwrap(node);
    if (!v || (v[0] !== 'ColumnRef' && v[0] !== 'A_Indirection')) return false;
    const t = v[0] === 'ColumnRef' ? this.columnRef(v[1], scope, true)?.taint : this.expr(node, scope);
    return !!t?.plain && !t.mixed;
  }

  // ---- FROM ----------------------------------------------------------------------------------

  from(list: unknown[], outer: Scope | undefined, ctes: CteEnv): Scope {
    const scope: Scope = { items: [], entries: [], parent: outer, ctes, rows: null };
    for (const n of list) {
      const item = this.fromItem(n, scope, outer, ctes);
      scope.items.push(item);
      scope.entries.push(...item.entries);
      scope.rows = union(scope.rows ?? null, item.rows);
    }
    return scope;
  }

  fromItem(node: unknown, siblings: Scope, outer: Scope | undefined, ctes: CteEnv): Item {
    const u = unwrap(node);
    const [kind, b] = u ?? ['?', {}];
    const lateralScope = (): Scope => ({ items: siblings.items, entries: siblings.entries, parent: outer, ctes });
    switch (kind) {
      case 'RangeVar':
        return this.rangeVar(b, ctes);
      case 'RangeSubselect': {
        const q = this.query(b.subquery, b.lateral === true ? lateralScope() : outer, ctes);
        return aliased(b.alias, q.cols, '?subquery', q.rows);
      }
      case 'RangeFunction':
        return this.rangeFunction(b, lateralScope());
      case 'JoinExpr':
        return this.join(b, siblings, outer, ctes);
      case 'RangeTableSample': {
        const inner = this.fromItem(b.relation, siblings, outer, ctes);
        const sc = lateralScope();
        const t = this.leak('TABLESAMPLE', union(...arr(b.args).map((a) => this.expr(a, sc)), this.expr(b.repeatable, sc)));
        return { ...inner, rows: union(inner.rows, t) };
      }
      case 'RangeTableFunc':
        return this.xmlTable(b, lateralScope());
      case 'JsonTable':
        return this.jsonTable(b, lateralScope());
      default: {
        const t = this.unknown(`from:${kind}`);
        const alias = isObj(b.alias) ? String(b.alias.aliasname) : '?';
        const cols: Col[] = [{ name: '?column?', taint: t, spread: true }];
        return { entries: [{ refname: alias, cols }], cols, rows: t };
      }
    }
  }

  /** XMLTABLE: the document decides the rows; each column is derived from it and its own expressions. */
  xmlTable(b: Obj, sc: Scope): Item {
    const doc = this.leak('table function document', union(this.expr(b.docexpr, sc), this.expr(b.rowexpr, sc), this.generic(b.namespaces, sc)));
    const cols = arr(b.columns).map((c) => {
      const col = unwrap(c)?.[1] ?? {};
      const own = union(this.expr(col.colexpr, sc), this.expr(col.coldefexpr, sc));
      return { name: String(col.colname ?? '?column?'), taint: col.for_ordinality === true ? doc : derive(union(doc, own)) };
    });
    return aliased(b.alias, cols, 'xmltable', doc);
  }

  /** JSON_TABLE: like XMLTABLE, NESTED PATH columns flattened in order. */
  jsonTable(b: Obj, sc: Scope): Item {
    const ctx = isObj(b.context_item) ? b.context_item.raw_expr : undefined;
    const passing = arr(b.passing).map((p) => this.expr(unwrap(p)?.[1].val && isObj(unwrap(p)?.[1].val) ? (unwrap(p)![1].val as Obj).raw_expr : undefined, sc));
    const doc = this.leak('table function document', union(this.expr(ctx, sc), ...passing, this.generic(b.pathspec, sc)));
    const cols: Col[] = [];
    const columns = (list: unknown[]): void => {
      for (const c of list) {
        const col = unwrap(c)?.[1] ?? {};
        if (col.coltype === 'JTC_NESTED') {
          this.generic(col.pathspec, sc);
          columns(arr(col.columns));
          continue;
        }
        const own = union(this.generic(col.pathspec, sc), this.generic(col.on_empty, sc), this.generic(col.on_error, sc));
        cols.push({ name: String(col.name ?? '?column?'), taint: col.coltype === 'JTC_FOR_ORDINALITY' ? doc : derive(union(doc, own)) });
      }
    };
    columns(arr(b.columns));
    this.generic(b.on_error, sc);
    return aliased(b.alias, cols, 'json_table', doc);
  }

  /** A relation named in FROM (or the `target` of a write): a CTE, a catalog relation, or unknown. */
  rangeVar(b: Obj, ctes: CteEnv, target = false): Item {
    const relname = String(b.relname ?? '');
    const schema = b.schemaname === undefined ? undefined : String(b.schemaname);
    const alias = isObj(b.alias) ? b.alias : undefined;
    let cols: Col[] | undefined;
    let rows: T = null;
    if (!schema) {
      for (let e: CteEnv | undefined = ctes; e && !cols; e = e.parent) {
        const d = e.map.get(relname);
        if (d) {
          cols = d.cols.map((c) => ({ ...c }));
          rows = d.rows;
        }
      }
    }
    if (!cols) {
      const rel = this.lin.resolveRelation(schema, relname);
      if (rel) {
        cols = this.lin.relationCols(rel);
        rows = this.lin.relationRows(rel);
        if (this.lin.options.reads) this.readRelation(rel, target);
      } else {
        rows = unknownTaint(`relation:${schema ? `${schema}.` : ''}${relname}`);
        cols = [{ name: '?column?', taint: rows, spread: true }];
        if (this.lin.options.reads) this.touch(rows);
      }
    }
    const renamed = renameCols(cols, alias ? names(alias.colnames) : []);
    const refname = alias ? String(alias.aliasname) : relname;
    return { entries: [{ refname, schema: alias ? undefined : schema, relname: alias ? undefined : relname, cols: renamed }], cols: renamed, rows };
  }

  /** Reads mode: a relation's rows are read (a view's: what its definition reads), or it is written. */
  readRelation(rel: CatalogRelation, target: boolean): void {
    if (rel.schema === 'pg_catalog' || rel.schema === 'information_schema') return;
    const key = `${rel.schema}.${rel.name}`;
    if (target) {
      this.writes.add(key);
      return;
    }
    this.reads.add(key);
    if (rel.kind === 'v' || rel.kind === 'm') for (const r of this.lin.viewReads(rel)) this.reads.add(r);
  }

  rangeFunction(b: Obj, scope: Scope): Item {
    let cols: Col[] = [];
    let rows: T = null;
    const fns = arr(b.functions);
    for (const f of fns) {
      const items = arr(unwrap(f)?.[1].items);
      const fc = this.functionCols(items[0], arr(items[1]), scope, fns.length === 1 && !b.ordinality ? b.alias : undefined);
      cols.push(...fc.cols);
      rows = union(rows, fc.rows);
    }
    // a set-returning function fed by a masked value returns as many rows as the value says
    this.leak('FROM function argument', rows && [...rows.sources].some((s) => !s.startsWith('?function:')) ? rows : null);
    if (b.ordinality === true) cols.push({ name: 'ordinality', taint: derive(rows) });
    if (isObj(b.coldeflist) || Array.isArray(b.coldeflist)) {
      const defs = arr(b.coldeflist);
      const t = union(...cols.map((c) => c.taint));
      cols = defs.map((d) => ({ name: String(unwrap(d)?.[1].colname ?? '?column?'), taint: derive(t) }));
    }
    return aliased(b.alias, cols, '?function', rows);
  }

  /** Columns a function in FROM produces, and the taint of how many rows it returns. */
  functionCols(call: unknown, coldef: unknown[], scope: Scope, alias: unknown): Rel {
    const u = unwrap(call);
    if (!u || u[0] !== 'FuncCall') {
      const t = derive(this.expr(call, scope));
      return { cols: [{ name: '?column?', taint: t }], rows: t };
    }
    const fc = u[1];
    const fname = names(fc.funcname);
    const name = fname[fname.length - 1];
    const argT = derive(union(...arr(fc.args).map((a) => this.expr(a, scope))));
    const user = this.lin.resolveFunction(fname);
    const aliasName = isObj(alias) ? String(alias.aliasname) : name;
    const defs = (t: T): Col[] => coldef.map((d) => ({ name: String(unwrap(d)?.[1].colname ?? '?column?'), taint: t }));
    if (user) {
      const trusted = this.lin.isTrusted(user);
      // an untrusted body may filter on anything it reads: its row count is tainted too
      const opaque = trusted ? null : unknownTaint(`function:${user.schema}.${user.name}`);
      const rows = this.touch(union(argT, opaque));
      if (user.returnsRelation) {
        const rel = this.lin.relations.get(user.returnsRelation);
        if (rel) return { cols: this.lin.relationCols(rel).map((c) => ({ name: c.name, taint: this.touch(union(derive(c.taint), argT, opaque)), typeOid: c.typeOid })), rows };
      }
      if (user.outColumns.length) return { cols: user.outColumns.map((n) => ({ name: n, taint: rows })), rows };
      if (coldef.length) return { cols: defs(rows), rows };
      return { cols: [{ name: aliasName, taint: rows }], rows };
    }
    const opaque = isOpaqueBuiltin(name) ? this.touch(unknownTaint(`function:${name}`)) : null;
    const t = union(argT, opaque);
    if (coldef.length) return { cols: defs(t), rows: t };
    const width = SRF_WIDTH[name];
    if (Array.isArray(width)) return { cols: width.map((n) => ({ name: n, taint: t })), rows: t };
    if (width === 1) return { cols: [{ name: aliasName, taint: t }], rows: t };
    if (name === 'unnest') return { cols: arr(fc.args).map((a, i) => ({ name: i === 0 ? aliasName : `unnest`, taint: derive(this.expr(a, scope)) })), rows: t };
    // unknown builtin: one column if scalar, several if it returns a record; crossCheck settles the width
    return { cols: [{ name: aliasName, taint: t, spread: true }], rows: t };
  }

  join(b: Obj, siblings: Scope, outer: Scope | undefined, ctes: CteEnv): Item {
    const l = this.fromItem(b.larg, siblings, outer, ctes);
    const r = this.fromItem(b.rarg, { ...siblings, items: [...siblings.items, l], entries: [...siblings.entries, ...l.entries] }, outer, ctes);
    let using = names(b.usingClause);
    if (b.isNatural === true) {
      const rn = new Set(r.cols.map((c) => c.name));
      using = l.cols.filter((c) => !c.spread && rn.has(c.name)).map((c) => c.name);
    }
    let cols: Col[];
    let rows = union(l.rows, r.rows);
    if (using.length) {
      const merged: Col[] = using.map((n) => {
        const a = l.cols.find((c) => c.name === n && !c.spread);
        const c2 = r.cols.find((c) => c.name === n && !c.spread);
        const spreadT = union(...l.cols.filter((c) => c.spread).map((c) => c.taint), ...r.cols.filter((c) => c.spread).map((c) => c.taint));
        let taint: T;
        // FULL JOIN: the merged column is COALESCE(left, right), values of the clear side mixed in
        const full = b.jointype === 'JOIN_FULL';
        if (a?.taint && !c2?.taint && !spreadT) taint = full && a.taint.plain ? { ...a.taint, mixed: true } : a.taint;
        else if (c2?.taint && !a?.taint && !spreadT) taint = full && c2.taint.plain ? { ...c2.taint, mixed: true } : c2.taint;
        else taint = union(a?.taint ?? null, c2?.taint ?? null, spreadT, !a && !c2 ? unknownTaint(`using:${n}`) : null);
        // USING is an equality between the two sides: P7 allows it only between two plain masked values
        const lookup = !!a?.taint?.plain && !a.taint.mixed && !!c2?.taint?.plain && !c2.taint.mixed && !spreadT;
        if (taint && !lookup) rows = union(rows, this.leak('JOIN USING', this.touch(taint)));
        this.touch(taint);
        const inner = b.jointype === 'JOIN_INNER' || b.jointype === 'JOIN_LEFT';
        return { name: n, taint, origin: inner ? a?.origin : b.jointype === 'JOIN_RIGHT' ? c2?.origin : undefined, typeOid: a?.typeOid };
      });
      const set = new Set(using);
      cols = [...merged, ...l.cols.filter((c) => c.spread || !set.has(c.name)), ...r.cols.filter((c) => c.spread || !set.has(c.name))];
    } else cols = [...l.cols, ...r.cols];
    const scope: Scope = { items: [l, r], entries: [...l.entries, ...r.entries], parent: outer, ctes };
    rows = union(rows, this.predicate('JOIN', b.quals, scope));
    if (isObj(b.alias)) {
      const renamed = renameCols(cols, names(b.alias.colnames));
      return { entries: [{ refname: String(b.alias.aliasname), cols: renamed }], cols: renamed, rows };
    }
    const entries = [...l.entries, ...r.entries];
    if (isObj(b.join_using_alias)) {
      entries.push({ refname: String(b.join_using_alias.aliasname), cols: cols.slice(0, using.length) });
    }
    return { entries, cols, rows };
  }

  // ---- target list ---------------------------------------------------------------------------

  target(rt: unknown, scope: Scope): Col[] {
    const r = unwrap(rt)?.[1] ?? {};
    const val = r.val;
    const v = unwrap(val);
    const alias = r.name === undefined ? undefined : String(r.name);
    // stars: `*`, `t.*`, `(composite).*`
    if (v && v[0] === 'ColumnRef') {
      const fields = arr(v[1].fields);
      if (unwrap(fields[fields.length - 1])?.[0] === 'A_Star') return this.star(fields.slice(0, -1), scope).map((c) => ({ ...c }));
    }
    if (v && v[0] === 'A_Indirection') {
      const ind = arr(v[1].indirection);
      if (unwrap(ind[ind.length - 1])?.[0] === 'A_Star') {
        return this.compositeCols(v[1].arg, ind.slice(0, -1), scope);
      }
    }
    const single = this.column(val, scope);
    return [{ ...single, name: alias ?? figureColname(val) }];
  }

  /** One output column: its taint, and origin when it is a plain column reference. */
  column(val: unknown, scope: Scope): Col {
    const v = unwrap(val);
    if (v && v[0] === 'ColumnRef') {
      const c = this.columnRef(v[1], scope);
      if (c) return { name: c.name, taint: c.taint, origin: c.origin, typeOid: c.typeOid };
    }
    return { name: '?column?', taint: this.expr(val, scope) };
  }

  star(qualifier: unknown[], scope: Scope): Col[] {
    if (qualifier.length === 0) {
      const cols: Col[] = [];
      for (const it of scope.items) cols.push(...it.cols);
      if (!scope.items.length) return [{ name: '?column?', taint: this.touch(unknownTaint('star-without-from')), spread: true }];
      for (const c of cols) this.touch(c.taint);
      return cols;
    }
    const e = this.findEntry(names(qualifier), scope);
    if (!e) return [{ name: '?column?', taint: this.touch(unknownTaint(`star:${names(qualifier).join('.')}`)), spread: true }];
    for (const c of e.cols) this.touch(c.taint);
    return e.cols;
  }

  /** `(expr).*` and `(expr).field` on a composite value. */
  compositeCols(arg: unknown, path: unknown[], scope: Scope): Col[] {
    const a = unwrap(arg);
    let cols: Col[] | undefined;
    if (a && a[0] === 'ColumnRef') {
      const fields = arr(a[1].fields);
      const last = unwrap(fields[fields.length - 1]);
      const e = last?.[0] === 'A_Star' ? this.findEntry(names(fields.slice(0, -1)), scope) : this.findEntry(names(fields), scope);
      if (e && !this.columnRef(a[1], scope, true)) cols = e.cols;
    } else if (a && a[0] === 'FuncCall') {
      cols = this.functionCols(arg, [], scope, undefined).cols;
    }
    if (cols && path.length === 0) {
      for (const c of cols) this.touch(c.taint);
      return cols.map((c) => ({ ...c, taint: derive(c.taint), origin: undefined }));
    }
    const t = this.expr(arg, scope);
    return [{ name: '?column?', taint: derive(t), spread: true }];
  }

  // ---- column references ---------------------------------------------------------------------

  findEntry(qual: string[], scope: Scope): Entry | undefined {
    for (let s: Scope | undefined = scope; s; s = s.parent) {
      const found = s.entries.filter((e) =>
        qual.length === 1 ? e.refname === qual[0] : qual.length >= 2 && e.relname === qual[qual.length - 1] && e.schema === qual[qual.length - 2],
      );
      if (found.length === 1) return found[0];
      if (found.length > 1) return { refname: qual.join('.'), cols: mergeEntries(found) };
    }
    return undefined;
  }

  /**
   * Resolves a ColumnRef (not a star) to a column; whole-row references (`p`, `patients`) resolve to a
   * derived union of the entry's columns. `noWholeRow` asks only for a column.
   */
  columnRef(ref: Obj, scope: Scope, noWholeRow = false): Col | undefined {
    const parts = names(ref.fields);
    if (parts.some((p) => p === '')) return undefined;
    const col = parts[parts.length - 1];
    // A bare name not found beside a spread (a function's or unknown relation's columns) may be the
    // spread's, or an outer query's: both, so an outer masked column is never hidden by the spread.
    let spreadOnly: T | undefined;
    const found = (c: Col): Col => (spreadOnly === undefined ? c : { name: c.name, taint: this.touch(union(spreadOnly, c.taint)) });
    for (let s: Scope | undefined = scope; s; s = s.parent) {
      if (parts.length === 1) {
        const hits: Col[] = [];
        let spread: T = null;
        let hasSpread = false;
        for (const it of s.items) {
          for (const c of it.cols) {
            if (c.spread) {
              hasSpread = true;
              spread = union(spread, c.taint);
            } else if (c.name === col) hits.push(c);
          }
        }
        // columns of join-aliased / lateral entries not in items (dml scope lists entries only)
        if (!s.items.length) for (const e of s.entries) for (const c of e.cols) if (!c.spread && c.name === col) hits.push(c);
        if (hits.length === 1 && !hasSpread) return found({ ...hits[0], taint: this.touch(hits[0].taint) });
        if (hits.length) return found({ name: col, taint: this.touch(union(...hits.map((h) => h.taint), spread)) });
        if (hasSpread) {
          spreadOnly = union(spreadOnly ?? null, spread);
          continue;
        }
        if (!noWholeRow) {
          const e = s.entries.filter((x) => x.refname === col);
          if (e.length) return found({ name: col, taint: this.touch(union(...e.flatMap((x) => x.cols.map((c) => c.taint)))) });
        }
      } else {
        const e = this.findEntryIn(parts.slice(0, -1), s);
        if (e) {
          const hit = e.cols.filter((c) => !c.spread && c.name === col);
          if (hit.length === 1) return { ...hit[0], taint: this.touch(hit[0].taint) };
          const spread = e.cols.filter((c) => c.spread);
          if (hit.length || spread.length) return { name: col, taint: this.touch(union(...hit.map((h) => h.taint), ...spread.map((c) => c.taint))) };
          if (SYSTEM_COLUMNS.has(col)) return { name: col, taint: null };
          return { name: col, taint: this.touch(unknownTaint(`column:${parts.join('.')}`)) };
        }
        // `rel.col` where `rel` is a composite column of an entry: (rel).col spelled without parens isn't valid SQL
      }
    }
    if (spreadOnly !== undefined) return { name: col, taint: this.touch(spreadOnly) };
    if (parts.length === 1 && SYSTEM_COLUMNS.has(col)) return { name: col, taint: null };
    if (noWholeRow) return undefined;
    return { name: col, taint: this.touch(unknownTaint(`column:${parts.join('.')}`)) };
  }

  findEntryIn(qual: string[], s: Scope): Entry | undefined {
    const found = s.entries.filter((e) =>
      qual.length === 1 ? e.refname === qual[0] : e.relname === qual[qual.length - 1] && e.schema === qual[qual.length - 2],
    );
    if (found.length === 1) return found[0];
    if (found.length > 1) return { refname: qual.join('.'), cols: mergeEntries(found) };
    return undefined;
  }

  // ---- expressions ---------------------------------------------------------------------------

  /** Taint of an expression. `outputs` lets ORDER BY / GROUP BY name output columns. */
  expr(node: unknown, scope: Scope, outputs?: Col[]): T {
    if (node === undefined || node === null) return null;
    if (Array.isArray(node)) return union(...node.map((n) => this.expr(n, scope, outputs)));
    const u = unwrap(node);
    if (!u) return isObj(node) ? this.generic(node, scope) : null;
    const [kind, b] = u;
    if (++this.depth > MAX_DEPTH) throw new Error('expression nested too deeply');
    try {
      if (CLEAN_NODES.has(kind)) {
        if (kind === 'GroupingFunc') this.expr(b.args, scope); // value-free, but the statement reads them
        return null;
      }
      if (CONTAINERS.has(kind)) return derive(this.generic(b, scope));
      switch (kind) {
        case 'ColumnRef': {
          const fields = arr(b.fields);
          if (unwrap(fields[fields.length - 1])?.[0] === 'A_Star') {
            return this.touch(union(...this.star(fields.slice(0, -1), scope).map((c) => c.taint)));
          }
          if (outputs && fields.length === 1) {
            const n = str(fields[0]);
            const o = outputs.find((c) => c.name === n);
            if (o && !scope.items.some((it) => it.cols.some((c) => c.name === n))) return this.touch(o.taint);
          }
          return this.columnRef(b, scope)?.taint ?? null;
        }
        case 'A_Indirection':
          return this.indirection(b, scope);
        case 'FuncCall':
          return this.funcCall(b, scope);
        case 'SubLink': {
          const q = this.query(b.subselect, scope, scope.ctes);
          // EXISTS reveals whether any row came back: the taint of which rows the sub-select returns
          if (String(b.subLinkType) === 'EXISTS_SUBLINK') return derive(q.rows);
          return derive(union(...q.cols.map((c) => c.taint), q.rows, this.expr(b.testexpr, scope)));
        }
        case 'SelectStmt': {
          const q = this.select(b, scope, scope.ctes);
          return derive(union(...q.cols.map((c) => c.taint), q.rows));
        }
        case 'NullTest':
          // `x IS NULL` of the value itself is value-free (P6); of anything computed from it, it is not
          // (`NULLIF(ssn LIKE '1%', true) IS NULL` is the LIKE)
          if (this.plain(b.arg, scope)) return null;
          return derive(this.expr(b.arg, scope));
        case 'A_Expr': {
          const r = this.expr(b.rexpr, scope);
          const t = derive(union(this.expr(b.lexpr, scope), r));
          // x / masked, x % masked: whether `division by zero` happens is the value
          if (b.kind === 'AEXPR_OP' && DIVISIONS.has(names(b.name).join('.'))) this.leak('divisor', r);
          // NULLIF(a, b) is `a = b` deciding between NULL and a: only the equality lookup P7 allows
          if (b.kind === 'AEXPR_NULLIF' && !this.equalityLookup({ ...b, kind: 'AEXPR_OP', name: [{ String: { sval: '=' } }] }, scope)) this.leak('NULLIF', t);
          return t;
        }
        case 'CaseExpr': {
          // conditions decide which branch (and which error) is evaluated: P7 allows no masked value there
          const arg = this.expr(b.arg, scope);
          let t = union(arg, this.expr(b.defresult, scope));
          for (const w of arr(b.args)) {
            const cw = unwrap(w)?.[1] ?? {};
            t = union(t, this.leak('CASE', union(arg, this.expr(cw.expr, scope))), this.expr(cw.result, scope));
          }
          return derive(t);
        }
        case 'JsonArrayAgg':
        case 'JsonObjectAgg':
          // aggregates: their value depends on the rows they see
          return derive(union(this.generic(b, scope), scope.rows ?? null));
        default: {
          // fail closed: a node type the walker does not know taints the whole statement
          const t = this.unknown(`node:${kind}`);
          this.generic(b, scope);
          return t;
        }
      }
    } finally {
      this.depth--;
    }
  }

  /** `(p).email`, `(f(x)).col`, `arr[i]`: a field of a whole-row or function value, or a subscript. */
  indirection(b: Obj, scope: Scope): T {
    const ind = arr(b.indirection);
    const first = str(ind[0]);
    if (first !== undefined) {
      const a = unwrap(b.arg);
      if (a && a[0] === 'ColumnRef' && !this.columnRef(a[1], scope, true)) {
        const e = this.findEntry(names(a[1].fields), scope);
        const c = e?.cols.find((x) => x.name === first && !x.spread);
        if (c) return this.touch(ind.length === 1 ? c.taint : derive(union(c.taint, ...ind.slice(1).map((i) => this.generic(i, scope)))));
      }
      if (a && a[0] === 'FuncCall') {
        const c = this.functionCols(b.arg, [], scope, undefined).cols.find((x) => x.name === first && !x.spread);
        if (c) return this.touch(derive(c.taint));
      }
    }
    return derive(union(this.expr(b.arg, scope), ...ind.map((i) => (unwrap(i)?.[0] === 'String' ? null : this.generic(i, scope)))));
  }

  /** Union of the taints of every child of a bare struct / container body. */
  generic(body: unknown, scope: Scope): T {
    if (Array.isArray(body)) return union(...body.map((x) => this.generic(x, scope)));
    if (!isObj(body)) return null;
    if (unwrap(body)) return this.expr(body, scope);
    let t: T = null;
    for (const [k, v] of Object.entries(body)) {
      if (k === 'location' || typeof v !== 'object' || v === null) continue;
      if (k === 'typeName' || k === 'name' && Array.isArray(v)) continue; // type and operator names
      t = union(t, Array.isArray(v) ? union(...v.map((x) => (unwrap(x) ? this.expr(x, scope) : this.generic(x, scope)))) : unwrap(v) ? this.expr(v, scope) : this.generic(v, scope));
    }
    return t;
  }

  funcCall(b: Obj, scope: Scope): T {
    const fname = names(b.funcname);
    const name = fname[fname.length - 1];
    const builtin = fname.length === 1 || fname[0] === 'pg_catalog';
    const filter = this.predicate('FILTER', b.agg_filter, scope);
    let over: T = null;
    if (isObj(b.over)) {
      const ref = typeof b.over.name === 'string' && b.over.name ? b.over.name : undefined;
      over = ref ? (lookupWindow(scope, ref) ?? this.unknown(`window:${ref}`)) : this.window(b.over, scope);
    }
    const args = arr(b.args).map((a) => this.expr(a, scope));
    const argT = union(...args);
    const order = union(...arr(b.agg_order).map((a) => this.expr(unwrap(a)?.[0] === 'SortBy' ? unwrap(a)?.[1].node : a, scope)));
    // the ordering inside mode() / percentile_*() is the aggregated value (an output, masked); in
    // rank('x') WITHIN GROUP (ORDER BY ssn) or string_agg(name, ',' ORDER BY ssn) it ranks clear values
    if (order && !(b.agg_within_group ? VALUE_AGGREGATES.has(name) : argT)) this.leak('aggregate ORDER BY', order);
    // aggregates and window functions: their value depends on how many rows, and which, they see
    const rows = isObj(b.over) || b.agg_star === true || b.agg_distinct === true || b.agg_within_group === true || b.agg_filter !== undefined || AGGREGATES.has(name) ? (scope.rows ?? null) : null;
    const user = this.lin.resolveFunction(fname);
    if (user) {
      const trusted = this.lin.isTrusted(user);
      let t = union(argT, order, filter, over, rows, trusted ? null : unknownTaint(`function:${user.schema}.${user.name}`));
      if (user.returnsRelation) {
        const rel = this.lin.relations.get(user.returnsRelation);
        t = union(t, rel ? union(...this.lin.relationCols(rel).map((c) => c.taint)) : unknownTaint(`type:${user.returnsRelation}`));
      }
      // it may return a set: the rows of this query level then depend on it too
      this.addSrfRows(t);
      if (user.returnsSet) this.leak('set-returning function argument', argT);
      return this.touch(derive(t));
    }
    if (builtin && name === 'count') {
      // count(*) and count(value) reveal how many rows; count(f(value)) also which f(value) are NULL
      const nulls = arr(b.args).map((a, i) => (args[i]?.plain || this.plain(a, scope) ? null : args[i]));
      return derive(union(...nulls, filter, over, rows));
    }
    if (isOpaqueBuiltin(name)) return this.touch(unknownTaint(`function:${name}`));
    if (SET_RETURNING.has(name)) {
      this.addSrfRows(argT);
      // generate_series(1, ascii(ssn)) in a target list returns as many rows as the value says
      if (!structuralSrf(name, arr(b.args))) this.leak('set-returning function argument', argT);
    }
    if (builtin && DIVIDING_FUNCTIONS.has(name)) this.leak('divisor', args[1] ?? null);
    return derive(union(argT, order, filter, over, rows));
  }

  /** A set-returning function in the target list: the number of rows of this query level depends on its arguments. */
  addSrfRows(t: T): void {
    const i = this.srfRows.length - 1;
    if (i >= 0 && t) this.srfRows[i] = union(this.srfRows[i], t);
  }
}

/** A window by name, in this query level or an enclosing one. */
function lookupWindow(scope: Scope, name: string): T | undefined {
  for (let s: Scope | undefined = scope; s; s = s.parent) if (s.windows?.has(name)) return s.windows.get(name) ?? null;
  return undefined;
}

/** `ORDER BY 2`: the output position, when the item is an integer constant. */
function ordinal(node: unknown): number | undefined {
  const c = unwrap(node);
  if (c?.[0] !== 'A_Const' || constantType(c[1]) !== 'int') return undefined;
  return intConstant(c[1]);
}

/** A GROUP BY item naming an output by position (or an alias that is no input column): the expression behind it. */
function groupTarget(g: unknown, targets: unknown[], scope: Scope): unknown {
  const pos = ordinal(g);
  if (pos !== undefined) return unwrap(targets[pos - 1])?.[1].val;
  const c = unwrap(g);
  if (c?.[0] === 'ColumnRef' && arr(c[1].fields).length === 1) {
    const n = str(arr(c[1].fields)[0]);
    const input = scope.items.some((it) => it.cols.some((x) => x.name === n || x.spread));
    const t = targets.map((x) => unwrap(x)?.[1]).find((r) => r?.name === n);
    if (t && !input) return t.val;
  }
  return g;
}

/** Rows of constants (`SELECT 'x'`, `VALUES ('a'), ('b')`) a set operation compares with: how many; undefined otherwise. */
function constantRows(node: unknown): number | undefined {
  const b = unwrap(node)?.[1] ?? (isObj(node) ? node : {});
  const clauses = ['fromClause', 'whereClause', 'groupClause', 'havingClause', 'withClause', 'limitCount', 'limitOffset', 'larg', 'rarg'];
  if (clauses.some((k) => b[k] !== undefined && !(Array.isArray(b[k]) && (b[k] as unknown[]).length === 0))) return undefined;
  if (Array.isArray(b.valuesLists)) return b.valuesLists.every((row) => arr(unwrap(row)?.[1].items).every(isConst)) ? b.valuesLists.length : undefined;
  return arr(b.targetList).every((t) => isConst(unwrap(t)?.[1].val)) ? 1 : undefined;
}

/** A constant, parameter or CURRENT_DATE-like value (possibly cast): one value per statement, what an equality lookup may compare a masked value with. */
function isConst(v: unknown): boolean {
  const u = unwrap(v);
  if (!u) return false;
  if (u[0] === 'A_Const' || u[0] === 'ParamRef' || u[0] === 'SQLValueFunction') return true;
  return u[0] === 'TypeCast' && isConst(u[1].arg);
}

function sameTaint(a: T, b: T): boolean {
  if (!a || !b) return a === b;
  if (a.sources.size !== b.sources.size) return false;
  for (const s of a.sources) if (!b.sources.has(s)) return false;
  return true;
}

function renameCols(cols: Col[], colnames: string[]): Col[] {
  if (!colnames.length) return cols;
  let i = 0;
  return cols.map((c) => (c.spread || i >= colnames.length ? c : { ...c, name: colnames[i++] }));
}

function aliased(alias: unknown, cols: Col[], fallback: string, rows: T): Item {
  const a = isObj(alias) ? alias : undefined;
  const renamed = renameCols(cols, a ? names(a.colnames) : []);
  return { entries: [{ refname: a ? String(a.aliasname) : fallback, cols: renamed }], cols: renamed, rows };
}

function mergeEntries(es: Entry[]): Col[] {
  return es[0].cols.map((c) => ({ ...c, taint: union(...es.map((e) => e.cols.find((x) => x.name === c.name)?.taint ?? unknownTaint('ambiguous'))) }));
}

/** Column i of a set operation: named after the left branch, masked if either branch is. */
function setOp(l: Col[], r: Col[]): Col[] {
  if (l.some((c) => c.spread) || r.some((c) => c.spread) || l.length !== r.length) {
    const t = union(...l.map((c) => c.taint), ...r.map((c) => c.taint));
    return [{ name: l[0]?.name ?? '?column?', taint: t, spread: true }];
  }
  return l.map((c, i) => {
    const a = c.taint;
    const b = r[i].taint;
    // the same single plain source on both sides stays a plain reference (same value, same strategy)
    const plain = !!a && !!b && a.plain && b.plain && a.sources.size === 1 && sameTaint(a, b);
    const bothPlainOne = (a?.plain && !b) || (b?.plain && !a);
    const one: T = bothPlainOne ? { sources: new Set((a ?? b)!.sources), plain: true, mixed: true } : null;
    return { name: c.name, taint: plain ? (a!.mixed || b!.mixed ? { ...a!, mixed: true } : a) : one ?? union(a, b), typeOid: c.typeOid === r[i].typeOid ? c.typeOid : undefined };
  });
}

/** PostgreSQL's FigureColname, roughly: only names for diagnostics; crossCheck matches by position. */
function figureColname(node: unknown): string {
  const u = unwrap(node);
  if (!u) return '?column?';
  const [k, b] = u;
  switch (k) {
    case 'ColumnRef': {
      const n = names(b.fields);
      return n[n.length - 1] || '?column?';
    }
    case 'A_Indirection': {
      const ind = arr(b.indirection);
      for (let i = ind.length - 1; i >= 0; i--) {
        const s = str(ind[i]);
        if (s !== undefined) return s;
      }
      return figureColname(b.arg);
    }
    case 'FuncCall': {
      const n = names(b.funcname);
      return n[n.length - 1];
    }
    case 'TypeCast': {
      const inner = figureColname(b.arg);
      if (inner !== '?column?') return inner;
      const n = names(isObj(b.typeName) ? b.typeName.names : []);
      return n[n.length - 1] ?? '?column?';
    }
    case 'CaseExpr':
      return 'case';
    case 'CoalesceExpr':
      return 'coalesce';
    case 'A_ArrayExpr':
      return 'array';
    case 'RowExpr':
      return 'row';
    case 'MinMaxExpr':
      return b.op === 'IS_GREATEST' ? 'greatest' : 'least';
    case 'SubLink':
      if (b.subLinkType === 'EXISTS_SUBLINK') return 'exists';
      if (b.subLinkType === 'ARRAY_SUBLINK') return 'array';
      return figureColname(unwrap(b.subselect)?.[1].targetList ? arr(unwrap(b.subselect)?.[1].targetList)[0] && unwrap(arr(unwrap(b.subselect)?.[1].targetList)[0])?.[1].val : undefined);
    default:
      return '?column?';
  }
}

// ---------------------------------------------------------------------------------------------

/**
 * Lineage for one connection: catalog + masking rules. Views' column masks are computed once (on
 * first use) and memoised; build a new Lineage when the catalog is refreshed.
 */
export class Lineage {
  readonly relations: Map<string, CatalogRelation>;
  private readonly viewRel = new Map<number, Rel>();
  private readonly inProgress = new Set<number>();

  constructor(
    readonly catalog: Catalog,
    readonly rules: MaskRules,
    readonly options: LineageOptions = {},
  ) {
    this.relations = catalog.relations;
  }

  /** The plan of one parsed statement. Never throws: on internal errors the plan is 'unknown'. */
  analyze(stmt: Pick<ParsedStatement, 'kind' | 'body'>): LineagePlan {
    try {
      return this.analyzeUnsafe(stmt.kind, stmt.body);
    } catch (err) {
      return { kind: 'unknown', reason: `lineage failed: ${err instanceof Error ? err.message : String(err)}`, readsMasked: true };
    }
  }

  /** P7 on lineage (the policy engine's PredicateOracle): the first use of a masked-derived value P7 refuses. */
  predicateLeak(kind: string, body: Record<string, unknown>): string | undefined {
    return this.analyze({ kind, body }).predicateLeak;
  }

  /**
   * Parses `sql` (one statement) and analyses it. The session asks for every statement it forwards;
   * plans depend on the text and this catalog only, and on no literal when the analysis read no
   * constant's value (policy/constants.ts): those are kept under the text's skeleton.
   */
  analyzeSql(sql: string): LineagePlan {
    if (this.last?.sql === sql) return (this.stats.exact++, this.last.plan);
    const plan = this.lookup(sql);
    if (sql.length <= MAX_CACHED_TEXT) this.last = { sql, plan };
    return plan;
  }

  private last?: { sql: string; plan: LineagePlan };

  private lookup(sql: string): LineagePlan {
    const hit = this.plans.get(sql);
    if (hit) return (this.stats.exact++, hit);
    const skeleton = sql.length <= MAX_CACHED_TEXT ? skeletonOf(sql) : undefined;
    const shape = skeleton && this.shapes.get(skeleton.key);
    if (shape) return (this.stats.shape++, shape);
    this.stats.made++;
    const p = parseStatements(sql, skeleton);
    if (!p.ok || p.statements.length !== 1) {
      const plan: LineagePlan = { kind: 'unknown', reason: p.ok ? 'expected one statement' : p.error, readsMasked: true };
      if (sql.length <= MAX_CACHED_TEXT) this.plans.set(sql, plan);
      return plan;
    }
    const [stmt] = p.statements;
    const before = stmt.reads.count;
    const plan = this.analyze(stmt);
    if (skeleton && stmt.bound && stmt.reads.count === before) this.shapes.set(skeleton.key, plan);
    else if (sql.length <= MAX_CACHED_TEXT) this.plans.set(sql, plan);
    return plan;
  }

  /** Plans by statement text, and literal-free plans by skeleton (read-only once made: callers never mutate them). */
  private readonly plans = new Lru<LineagePlan>(5000);
  private readonly shapes = new Lru<LineagePlan>(5000);
  /** how plans were found: by exact text, by skeleton, or made */
  readonly stats = { exact: 0, shape: 0, made: 0 };

  private analyzeUnsafe(kind: string, body: Obj): LineagePlan {
    const a = new Analysis(this);
    const plan = this.planOf(a, kind, body);
    const max = this.options.maxEqualityValues ?? 100;
    if (a.equalityValues > max) a.leaks.push(`${a.equalityValues} values compared with masked columns by equality (at most ${max})`);
    // fail closed: a construct the walker does not know masks everything and may hide a predicate
    if (a.poison && plan.kind !== 'unknown') {
      const leak = a.leaks[0] ?? (a.readsRealMasked ? `a construct the masking analysis does not know (${a.poison})` : undefined);
      return { kind: 'unknown', reason: `not understood: ${a.poison}`, readsMasked: true, ...(leak ? { predicateLeak: leak } : {}) };
    }
    return a.leaks.length ? { ...plan, predicateLeak: a.leaks[0] } : plan;
  }

  private planOf(a: Analysis, kind: string, body: Obj): LineagePlan {
    const top: CteEnv = { map: new Map() };
    const rows = (rel: Rel, extra: Partial<{ cursor: string; copy: CopyOptions }> = {}): LineagePlan => ({
      kind: 'rows',
      columns: rel.cols.map((c) => this.planColumn(c)),
      readsMasked: a.readsMasked || rel.cols.some((c) => c.taint) || !!rel.rows,
      ...(rel.rows ? { rowsTainted: true } : {}),
      ...extra,
    });
    switch (kind) {
      case 'SelectStmt': {
        const rel = a.select(body, undefined, top);
        if (body.intoClause) {
          this.created(a, body.intoClause);
          return { kind: 'none', readsMasked: a.readsMasked || rel.cols.some((c) => c.taint) };
        }
        return rows(rel);
      }
      case 'InsertStmt':
      case 'UpdateStmt':
      case 'DeleteStmt':
      case 'MergeStmt': {
        const rel = a.dml(kind, body, undefined, top);
        return rel ? rows(rel) : { kind: 'none', readsMasked: a.readsMasked };
      }
      case 'DeclareCursorStmt':
        return rows(a.query(body.query, undefined, top), { cursor: String(body.portalname) });
      case 'FetchStmt':
        // deferred execution: the cursor's query runs now (MOVE too); its errors are the cursor's
        if (body.ismove === true) return { kind: 'none', readsMasked: true };
        return { kind: 'fetch', cursor: String(body.portalname), readsMasked: true };
      case 'CopyStmt': {
        if (body.is_from === true) {
          if (this.options.reads && isObj(body.relation)) a.rangeVar(body.relation, top, true);
          return { kind: 'none', readsMasked: false };
        }
        if (body.filename !== undefined || body.is_program === true) return { kind: 'unknown', reason: 'COPY to a file or program', readsMasked: true };
        const copy = copyOptions(arr(body.options));
        if (!copy) return { kind: 'unknown', reason: 'COPY options not understood', readsMasked: true };
        let rel: Rel;
        if (body.query) rel = a.query(body.query, undefined, top);
        else {
          const item = a.rangeVar(isObj(body.relation) ? body.relation : {}, top);
          const list = names(body.attlist);
          rel = {
            cols: list.length ? list.map((n) => item.cols.find((c) => c.name === n && !c.spread) ?? { name: n, taint: a.touch(unknownTaint(`column:${n}`)) }) : item.cols,
            rows: item.rows,
          };
        }
        if (this.options.reads) for (const c of rel.cols) a.touch(c.taint);
        return rows(rel, { copy });
      }
      case 'ExplainStmt': {
        // the plan's text holds no column values, but EXPLAIN ANALYZE's row counts are the rows' counts
        const inner = unwrap(body.query);
        const innerPlan = inner ? this.planOf(a, inner[0], inner[1]) : undefined;
        const analyze = arr(body.options).some((o) => {
          const arg = unwrap(unwrap(o)?.[1].arg);
          return unwrap(o)?.[1].defname === 'analyze' && !(arg?.[0] === 'Boolean' && arg[1].boolval === false) && str(unwrap(o)?.[1].arg) !== 'false';
        });
        const counts = analyze && (!innerPlan || innerPlan.kind === 'unknown' || ('rowsTainted' in innerPlan && innerPlan.rowsTainted === true));
        return { kind: 'rows', columns: [{ name: 'QUERY PLAN', mask: counts ? this.maskOf(unknownTaint('explain-analyze')) : CLEAR }], readsMasked: innerPlan?.readsMasked ?? true };
      }
      case 'PrepareStmt': {
        const inner = unwrap(body.query);
        // reads mode: what the prepared statement reads is read by this analysis (it is refused now, not at EXECUTE)
        const plan: LineagePlan = !inner ? { kind: 'unknown', reason: 'PREPARE without query', readsMasked: true }
          : this.options.reads ? this.planOf(a, inner[0], inner[1]) : this.analyze({ kind: inner[0], body: inner[1] });
        return { kind: 'prepare', name: String(body.name), plan, readsMasked: plan.readsMasked };
      }
      case 'ExecuteStmt': {
        const scope: Scope = { items: [], entries: [], ctes: top };
        for (const p of arr(body.params)) a.expr(p, scope);
        return { kind: 'execute', name: String(body.name), readsMasked: a.readsMasked };
      }
      case 'CreateTableAsStmt': {
        a.query(body.query, undefined, top);
        this.created(a, body.into);
        return { kind: 'none', readsMasked: true };
      }
      case 'VariableShowStmt':
        return { kind: 'rows', columns: [{ name: String(body.name ?? 'setting'), mask: CLEAR }], readsMasked: false };
      case 'TransactionStmt':
        // COMMIT / END / PREPARE TRANSACTION run the queries of open WITH HOLD cursors (deferred execution)
        return { kind: 'none', readsMasked: DEFERRING_TRANSACTION_KINDS.has(String(body.kind)) };
      case 'ClosePortalStmt':
        return { kind: 'none', readsMasked: true };
      case 'VariableSetStmt':
      case 'ListenStmt':
      case 'UnlistenStmt':
      case 'DiscardStmt':
      case 'DeallocateStmt':
      case 'CheckPointStmt':
        return { kind: 'none', readsMasked: false };
      default:
        return { kind: 'unknown', reason: `statement ${kind}`, readsMasked: true };
    }
  }

  /** Reads mode: SELECT INTO / CREATE TABLE AS write a new relation (unqualified: the first schema of the path). */
  private created(a: Analysis, into: unknown): void {
    if (!this.options.reads || !isObj(into) || !isObj(into.rel)) return;
    const rv = into.rel;
    const temp = rv.relpersistence === 't';
    const schema = rv.schemaname !== undefined ? String(rv.schemaname) : temp ? 'pg_temp' : (this.catalog.searchPath[0] ?? 'public');
    a.writes.add(`${schema}.${String(rv.relname ?? '')}`);
  }

  /**
   * Reads mode: what a statement reads and writes. Anything the analysis does not model (a node type, a
   * statement kind, a construct it cannot follow) makes the answer not ok: the caller refuses (fail closed).
   */
  reads(stmt: Pick<ParsedStatement, 'kind' | 'body'>): StatementReads {
    try {
      const a = new Analysis(this);
      const plan = this.planOf(a, stmt.kind, stmt.body);
      if (plan.kind === 'unknown') return { ok: false, reason: plan.reason };
      if (a.poison) return { ok: false, reason: `not understood: ${a.poison}` };
      return { ok: true, reads: [...a.reads], writes: [...a.writes] };
    } catch (err) {
      return { ok: false, reason: `analysis failed: ${err instanceof Error ? err.message : String(err)}` };
    }
  }

  /** Parses `sql` (one statement) and reports what it reads; cached by text. */
  readsSql(sql: string): StatementReads {
    const hit = this.readCache.get(sql);
    if (hit) return hit;
    const p = parseStatements(sql);
    const out: StatementReads = !p.ok ? { ok: false, reason: p.error } : p.statements.length !== 1 ? { ok: false, reason: 'expected one statement' } : this.reads(p.statements[0]);
    if (sql.length <= 64 * 1024) this.readCache.set(sql, out);
    return out;
  }

  private readonly readCache = new Lru<StatementReads>(5000);

  /**
   * Reads mode: what a view's (or materialized view's) definition reads, each behind the view
   * (`view` VIA read), memoised. A definition that cannot be analysed reads an unknown.
   */
  viewReads(rel: CatalogRelation): string[] {
    const memo = this.viewReadMemo.get(rel.oid);
    if (memo) return memo;
    const key = `${rel.schema}.${rel.name}`;
    let inner: string[];
    if (this.inProgress.has(rel.oid)) return [`${key}${VIA}?view:${rel.name}:recursive`];
    const p = rel.definition ? parseStatements(rel.definition) : undefined;
    if (!p?.ok || p.statements.length !== 1 || p.statements[0].kind !== 'SelectStmt') inner = [`?view:${rel.name}:unparsable`];
    else {
      this.inProgress.add(rel.oid);
      try {
        const a = new Analysis(this);
        a.select(p.statements[0].body, undefined, { map: new Map() });
        inner = [...a.reads];
        if (a.poison) inner.push(`?view:${rel.name}:${a.poison}`);
      } catch (err) {
        inner = [`?view:${rel.name}:${err instanceof Error ? err.message : 'error'}`];
      } finally {
        this.inProgress.delete(rel.oid);
      }
    }
    const out = inner.map((r) => `${key}${VIA}${r}`);
    this.viewReadMemo.set(rel.oid, out);
    return out;
  }

  private readonly viewReadMemo = new Map<number, string[]>();

  planColumn(c: Col): PlanColumn {
    const out: PlanColumn = { name: c.name, mask: this.maskOf(c.taint) };
    if (c.origin) out.origin = c.origin;
    if (c.typeOid !== undefined) out.typeOid = c.typeOid;
    if (c.spread) out.spread = true;
    return out;
  }

  /** Taint → mask (the strategy rule in this file's header). */
  maskOf(t: T): ColumnMask {
    if (!t || t.sources.size === 0) return CLEAR;
    const sources = [...t.sources];
    if (t.plain && sources.length === 1) {
      const s = this.rules.get(sources[0]);
      if (s) return { masked: true, strategy: s, sources };
    }
    const anyNull = sources.some((s) => this.rules.get(s)?.kind === 'null');
    return { masked: true, strategy: anyNull ? NULLIFY : REDACT, sources };
  }

  // ---- catalog lookups -----------------------------------------------------------------------

  resolveRelation(schema: string | undefined, name: string): CatalogRelation | undefined {
    if (schema) return this.relations.get(`${schema}.${name}`);
    for (const s of ['pg_catalog', ...this.catalog.searchPath]) {
      const r = this.relations.get(`${s}.${name}`);
      if (r) return r;
    }
    return undefined;
  }

  /** A user function the name may call (undefined: a builtin). Overloads across schemas → the first on the path. */
  resolveFunction(fname: string[]): CatalogFunction | undefined {
    const name = fname[fname.length - 1];
    const schema = fname.length > 1 ? fname[fname.length - 2] : undefined;
    if (schema === 'pg_catalog') return undefined;
    const list = this.catalog.functions.get(name);
    if (!list) return undefined;
    if (schema) return list.find((f) => f.schema === schema) ?? { ...list[0], schema, returnsRelation: undefined, outColumns: [] };
    return list.find((f) => this.catalog.searchPath.includes(f.schema)) ?? list[0];
  }

  isTrusted(f: CatalogFunction): boolean {
    return this.options.trustedFunctions?.has(`${f.schema}.${f.name}`) ?? false;
  }

  /** The masked-column rule for a table column, following inheritance to parents. */
  ruleSource(rel: CatalogRelation, col: string, seen = new Set<string>()): string | undefined {
    const key = `${rel.schema}.${rel.name}`;
    if (seen.has(key)) return undefined;
    seen.add(key);
    const k = `${key}.${col}`;
    if (this.rules.has(k)) return k;
    for (const p of rel.parents) {
      const pr = this.relations.get(p);
      const hit = pr && this.ruleSource(pr, col, seen);
      if (hit) return hit;
    }
    return undefined;
  }

  /** The columns of a relation with their taints (views and matviews: from their definitions). */
  relationCols(rel: CatalogRelation): Col[] {
    const system = rel.schema === 'pg_catalog' || rel.schema === 'information_schema';
    if (system && SENSITIVE_CATALOGS.has(rel.name)) {
      return rel.columns.map((c) => ({ name: c.name, taint: unknownTaint(`catalog:${rel.name}`), typeOid: c.typeOid }));
    }
    if (!system && (rel.kind === 'v' || rel.kind === 'm')) return this.options.reads ? this.viewReadColumns(rel) : this.viewColumns(rel);
    return rel.columns.map((c) => {
      const src = system ? undefined : this.options.reads ? readColumn(`${rel.schema}.${rel.name}`, c.name) : this.ruleSource(rel, c.name);
      return {
        name: c.name,
        taint: src ? { sources: new Set([src]), plain: true } : null,
        origin: { relation: `${rel.schema}.${rel.name}`, attnum: c.attnum },
        typeOid: c.typeOid,
      };
    });
  }

  /** Which and how many rows a relation holds is decided by masked values: views filtering on them, value catalogs. */
  relationRows(rel: CatalogRelation): T {
    const system = rel.schema === 'pg_catalog' || rel.schema === 'information_schema';
    if (system) return SENSITIVE_CATALOGS.has(rel.name) ? unknownTaint(`catalog:${rel.name}`) : null;
    if (rel.kind !== 'v' && rel.kind !== 'm') return null;
    if (this.options.reads) return null; // reads mode: viewReads says what the view reads
    this.viewColumns(rel);
    const view = this.viewRel.get(rel.oid);
    return view ? view.rows : unknownTaint(`view:${rel.name}`);
  }

  /** Reads mode: a view's column is itself, and everything the view's definition reads. */
  private viewReadColumns(rel: CatalogRelation): Col[] {
    const memo = this.viewRel.get(rel.oid);
    if (memo) return memo.cols;
    const key = `${rel.schema}.${rel.name}`;
    const via = this.viewReads(rel);
    const cols = rel.columns.map((c) => ({
      name: c.name,
      taint: { sources: new Set([readColumn(key, c.name), ...via]), plain: true },
      origin: { relation: key, attnum: c.attnum },
      typeOid: c.typeOid,
    }));
    this.viewRel.set(rel.oid, { cols, rows: null });
    return cols;
  }

  private viewColumns(rel: CatalogRelation): Col[] {
    const memo = this.viewRel.get(rel.oid);
    if (memo) return memo.cols;
    const failRel = (why: string): Rel => {
      const t = unknownTaint(`view:${rel.name}:${why}`);
      return { cols: rel.columns.map((c) => ({ name: c.name, taint: t, typeOid: c.typeOid })), rows: t };
    };
    if (this.inProgress.has(rel.oid)) return failRel('recursive').cols;
    let view: Rel;
    const own = (c: { name: string; attnum: number }) => this.ruleSource(rel, c.name);
    if (!rel.definition) view = failRel('no definition');
    else {
      const p = parseStatements(rel.definition);
      if (!p.ok || p.statements.length !== 1 || p.statements[0].kind !== 'SelectStmt') view = failRel('unparsable');
      else {
        this.inProgress.add(rel.oid);
        try {
          // the definition is the operator's: its predicates are not P7's business, its taints are
          const a = new Analysis(this);
          const q = a.select(p.statements[0].body, undefined, { map: new Map() });
          if (a.poison) view = failRel(a.poison);
          else if (q.cols.some((c) => c.spread) || q.cols.length !== rel.columns.length) {
            const t = union(...q.cols.map((c) => c.taint));
            view = { cols: rel.columns.map((c) => ({ name: c.name, taint: t, typeOid: c.typeOid })), rows: q.rows };
          } else {
            view = { cols: rel.columns.map((c, i) => ({ name: c.name, taint: q.cols[i].taint, typeOid: c.typeOid })), rows: q.rows };
          }
        } catch (err) {
          view = failRel(err instanceof Error ? err.message : 'error');
        } finally {
          this.inProgress.delete(rel.oid);
        }
      }
    }
    // a rule written for the view's own column also applies (matviews are relations of their own)
    let cols = view.cols.map((c, i) => {
      const src = own(rel.columns[i]);
      return src ? { ...c, taint: c.taint ? union(c.taint, { sources: new Set([src]), plain: true }) : { sources: new Set([src]), plain: true } } : c;
    });
    // view columns carry the view as origin only for diagnostics; RowDescription names the view
    cols = cols.map((c, i) => ({ ...c, origin: { relation: `${rel.schema}.${rel.name}`, attnum: rel.columns[i].attnum } }));
    this.viewRel.set(rel.oid, { cols, rows: view.rows });
    return cols;
  }

  /** The mask RowDescription's (tableOid, attnum) implies; 'unknown' when the catalog doesn't know it. */
  maskOfAttribute(tableOid: number, attnum: number): ColumnMask | 'unknown' {
    const rel = this.catalog.byOid.get(tableOid);
    if (!rel) return 'unknown';
    const idx = rel.columns.findIndex((c) => c.attnum === attnum);
    if (idx < 0) return attnum < 0 ? CLEAR : 'unknown'; // system columns are value-free
    return this.maskOf(this.relationCols(rel)[idx].taint);
  }
}

function copyOptions(opts: unknown[]): CopyOptions | undefined {
  const o: CopyOptions = { format: 'text', delimiter: '\t', quote: '"', escape: '"', null: '\\N', header: false };
  let delimSet = false;
  let nullSet = false;
  let escapeSet = false;
  for (const d of opts) {
    const e = unwrap(d)?.[1];
    if (!e) return undefined;
    const name = String(e.defname);
    const v = e.arg === undefined ? undefined : str(e.arg) ?? (unwrap(e.arg)?.[0] === 'Boolean' ? String(unwrap(e.arg)?.[1].boolval === true) : unwrap(e.arg)?.[0] === 'Integer' ? String(unwrap(e.arg)?.[1].ival ?? 0) : undefined);
    switch (name) {
      case 'format':
        if (v !== 'text' && v !== 'csv' && v !== 'binary') return undefined;
        o.format = v;
        break;
      case 'delimiter':
        if (!v || v.length !== 1) return undefined;
        o.delimiter = v;
        delimSet = true;
        break;
      case 'null':
        if (v === undefined) return undefined;
        o.null = v;
        nullSet = true;
        break;
      case 'quote':
        if (!v || v.length !== 1) return undefined;
        o.quote = v;
        break;
      case 'escape':
        if (!v || v.length !== 1) return undefined;
        o.escape = v;
        escapeSet = true;
        break;
      case 'header':
        o.header = v === undefined || v === 'true' || v === 'on' || v === '1' || v === 'match';
        break;
      case 'force_quote':
      case 'encoding':
      case 'freeze':
        break;
      default:
        return undefined; // not understood: fail closed
    }
  }
  if (o.format === 'csv') {
    if (!delimSet) o.delimiter = ',';
    if (!nullSet) o.null = '';
    if (!escapeSet) o.escape = o.quote;
  }
  return o;
}

/**
 * Reconciles a plan with the RowDescription PostgreSQL sent. Returns one mask per field, or
 * 'mismatch' when they cannot be matched (the caller then masks every column: fail closed).
 * - counts must match, except that one `spread` entry absorbs the difference;
 * - a field carrying a table OID / attnum of a masked column is masked even if the plan said clear
 *   (the catalog knows better than a mis-resolved name); a table OID the catalog does not know →
 *   'mismatch' (stale catalog).
 */
export function crossCheck(plan: LineagePlan, fields: readonly { tableOid: number; columnAttr: number }[], lineage: Lineage): ColumnMask[] | 'mismatch' {
  if (plan.kind !== 'rows') return 'mismatch';
  const cols = plan.columns;
  let masks: ColumnMask[];
  const spreads = cols.filter((c) => c.spread).length;
  if (spreads === 0) {
    if (cols.length !== fields.length) return 'mismatch';
    masks = cols.map((c) => c.mask);
  } else if (spreads === 1) {
    const fixed = cols.length - 1;
    if (fields.length < fixed) return 'mismatch';
    masks = [];
    for (const c of cols) {
      if (c.spread) for (let i = 0; i < fields.length - fixed; i++) masks.push(c.mask);
      else masks.push(c.mask);
    }
  } else return 'mismatch';
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i];
    if (!f.tableOid) continue;
    const m = lineage.maskOfAttribute(f.tableOid, f.columnAttr);
    if (m === 'unknown') return 'mismatch';
    if (m.masked && !masks[i].masked) masks[i] = m;
  }
  return masks;
}

/** Masks every column: what the caller applies on 'mismatch' or an 'unknown' plan. */
export function maskAll(n: number, sources = ['?unknown']): ColumnMask[] {
  const m: ColumnMask = { masked: true, strategy: REDACT, sources };
  return Array.from({ length: n }, () => m);
}
