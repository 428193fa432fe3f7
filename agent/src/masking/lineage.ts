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
import { Lru, parseStatements, type ParsedStatement } from '../policy/parse.js';
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

export type LineagePlan =
  | { kind: 'rows'; columns: PlanColumn[]; readsMasked: boolean; cursor?: string; copy?: CopyOptions }
  /** the statement returns no rows (writes without RETURNING, SET, DDL…) */
  | { kind: 'none'; readsMasked: boolean }
  /** FETCH: use the plan recorded for the cursor's DECLARE */
  | { kind: 'fetch'; cursor: string; readsMasked: boolean }
  /** PREPARE: `plan` is the prepared query's plan, for later EXECUTEs */
  | { kind: 'prepare'; name: string; plan: LineagePlan; readsMasked: boolean }
  /** EXECUTE: use the plan recorded for the prepared statement */
  | { kind: 'execute'; name: string; readsMasked: boolean }
  /** not understood: mask every column of whatever comes back, redact errors (fail closed) */
  | { kind: 'unknown'; reason: string; readsMasked: true };

export interface LineageOptions {
  /**
   * User functions (`schema.name`) whose results may be treated like their inputs: a function returning
   * a table's row type then yields that table's per-column masks, a scalar one the union of its
   * arguments. Every other user function is opaque (all outputs masked).
   */
  trustedFunctions?: ReadonlySet<string>;
}

// ---------------------------------------------------------------------------------------------
// Taint

interface Taint {
  sources: Set<string>;
  plain: boolean;
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
}

interface CteDef {
  cols: Col[];
}

interface Scope {
  items: Item[];
  entries: Entry[];
  parent?: Scope;
  ctes: CteEnv;
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

const SYSTEM_COLUMNS = new Set(['ctid', 'xmin', 'xmax', 'cmin', 'cmax', 'tableoid']);

/** Expression node types whose value is the union of their children (walked generically). */
const CONTAINERS = new Set([
  'A_Expr', 'BoolExpr', 'BooleanTest', 'TypeCast', 'CollateClause', 'CaseExpr', 'CaseWhen', 'CoalesceExpr', 'MinMaxExpr',
  'A_ArrayExpr', 'RowExpr', 'XmlExpr', 'XmlSerialize', 'A_Indices', 'SortBy', 'WindowDef', 'ResTarget', 'List',
  'JsonObjectConstructor', 'JsonArrayConstructor', 'JsonArrayAgg', 'JsonObjectAgg', 'JsonKeyValue', 'JsonValueExpr',
  'JsonAggConstructor', 'JsonFuncExpr', 'JsonParseExpr', 'JsonScalarExpr', 'JsonSerializeExpr', 'JsonIsPredicate',
  'JsonArgument', 'JsonBehavior', 'JsonOutput', 'JsonReturning', 'NamedArgExpr', 'A_Indirection',
]);
/** Node types that carry no column value. */
const CLEAN_NODES = new Set([
  'A_Const', 'ParamRef', 'SQLValueFunction', 'String', 'Integer', 'Float', 'Boolean', 'BitString', 'TypeName',
  'NullTest', 'SetToDefault', 'GroupingFunc', 'JsonFormat', 'A_Star', 'CurrentOfExpr',
]);

const MAX_DEPTH = 400;

// ---------------------------------------------------------------------------------------------

class Analysis {
  readsMasked = false;
  depth = 0;
  constructor(readonly lin: Lineage) {}

  touch(t: T): T {
    if (t) this.readsMasked = true;
    return t;
  }

  // ---- queries -------------------------------------------------------------------------------

  /** Output columns of a query node (wrapped or bare SelectStmt / DML with RETURNING). */
  query(node: unknown, outer: Scope | undefined, ctes: CteEnv): Col[] {
    const u = unwrap(node);
    if (!u) return this.select(isObj(node) ? node : {}, outer, ctes);
    const [kind, body] = u;
    if (kind === 'SelectStmt') return this.select(body, outer, ctes);
    if (kind === 'InsertStmt' || kind === 'UpdateStmt' || kind === 'DeleteStmt' || kind === 'MergeStmt') {
      return this.dml(kind, body, outer, ctes) ?? [];
    }
    return [{ name: '?column?', taint: this.touch(unknownTaint(`query:${kind}`)), spread: true }];
  }

  select(s: Obj, outer: Scope | undefined, parentCtes: CteEnv): Col[] {
    if (++this.depth > MAX_DEPTH) throw new Error('statement nested too deeply');
    try {
      const ctes = this.withClause(s.withClause, outer, parentCtes);
      let out: Col[];
      const op = String(s.op ?? 'SETOP_NONE');
      if (op !== 'SETOP_NONE') {
        const l = this.select(isObj(s.larg) ? s.larg : {}, outer, ctes);
        const r = this.select(isObj(s.rarg) ? s.rarg : {}, outer, ctes);
        out = setOp(l, r);
        const scope: Scope = { items: [], entries: [], parent: outer, ctes };
        for (const sb of arr(s.sortClause)) this.expr(sb, scope, out);
      } else if (Array.isArray(s.valuesLists)) {
        out = [];
        for (const row of s.valuesLists) {
          const items = arr(unwrap(row)?.[1].items);
          const scope: Scope = { items: [], entries: [], parent: outer, ctes };
          items.forEach((e, i) => {
            const t = derive(this.expr(e, scope));
            if (out[i]) out[i].taint = union(out[i].taint, t);
            else out[i] = { name: `column${i + 1}`, taint: t };
          });
        }
      } else {
        const scope = this.from(arr(s.fromClause), outer, ctes);
        out = [];
        for (const rt of arr(s.targetList)) out.push(...this.target(rt, scope));
        // filters: they don't taint the outputs but do mark the statement as reading masked columns
        this.expr(s.whereClause, scope);
        this.expr(s.havingClause, scope);
        for (const g of arr(s.groupClause)) this.expr(g, scope, out);
        for (const d of arr(s.distinctClause)) if (d && Object.keys(d as Obj).length) this.expr(d, scope, out);
        for (const sb of arr(s.sortClause)) this.expr(sb, scope, out);
        for (const w of arr(s.windowClause)) this.expr(w, scope, out);
      }
      return out;
    } finally {
      this.depth--;
    }
  }

  withClause(w: unknown, outer: Scope | undefined, parent: CteEnv): CteEnv {
    if (!isObj(w)) return parent;
    const env: CteEnv = { map: new Map(), parent };
    const recursive = w.recursive === true;
    for (const c of arr(w.ctes)) {
      const cte = unwrap(c)?.[1];
      if (!cte) continue;
      const name = String(cte.ctename);
      const colnames = names(cte.aliascolnames);
      const rename = (cols: Col[]): Col[] =>
        cols.map((col, i) => (colnames[i] !== undefined && !col.spread ? { ...col, name: colnames[i] } : col));
      if (recursive) {
        // Fixpoint: start from the non-recursive branch, re-analyse until taints stop growing.
        const q = unwrap(cte.ctequery);
        const body = q?.[1] ?? {};
        const seed = q?.[0] === 'SelectStmt' && body.op !== 'SETOP_NONE' && isObj(body.larg) ? this.select(body.larg, outer, env) : null;
        let cols: Col[] = seed ? rename(seed) : [{ name: '?column?', taint: unknownTaint('recursive-cte'), spread: true }];
        let stable = false;
        for (let i = 0; i < 8 && !stable; i++) {
          env.map.set(name, { cols });
          const next = rename(this.query(cte.ctequery, outer, env));
          stable = next.length === cols.length && next.every((n, j) => sameTaint(n.taint, cols[j].taint));
          cols = next.map((n, j) => ({ ...n, taint: union(n.taint, cols[j]?.taint ?? null) ?? null, origin: undefined }));
          // keep plainness only when neither side changed it
          cols.forEach((col, j) => {
            if (next[j].taint?.plain && sameTaint(next[j].taint, col.taint)) col.taint = next[j].taint;
          });
        }
        if (!stable) cols = cols.map((col) => ({ ...col, taint: union(col.taint, unknownTaint('recursive-cte')) }));
        env.map.set(name, { cols });
      } else {
        env.map.set(name, { cols: rename(this.query(cte.ctequery, outer, env)) });
      }
    }
    return env;
  }

  /** RETURNING of INSERT / UPDATE / DELETE / MERGE; undefined when there is none. */
  dml(kind: string, s: Obj, outer: Scope | undefined, parentCtes: CteEnv): Col[] | undefined {
    const ctes = this.withClause(s.withClause, outer, parentCtes);
    const returning = isObj(s.returningClause) ? arr(s.returningClause.exprs) : arr(s.returningList);
    const rv = isObj(s.relation) ? s.relation : {};
    const target = this.rangeVar(rv, ctes, undefined, outer);
    const cols = target.cols.map((c) => ({ ...c }));
    const scope: Scope = { items: [], entries: [], parent: outer, ctes };
    if (kind === 'InsertStmt') {
      const src = s.selectStmt ? this.query(s.selectStmt, outer, ctes) : [];
      const list = arr(s.cols).map((c) => String(unwrap(c)?.[1].name ?? ''));
      const targets = list.length ? list.map((n) => cols.findIndex((c) => c.name === n)) : cols.map((_, i) => i);
      if (src.some((c) => c.spread)) for (const c of cols) c.taint = union(c.taint, ...src.map((x) => x.taint));
      else src.forEach((c, i) => {
        const at = targets[i];
        if (at === undefined || at < 0) return;
        cols[at].taint = union(cols[at].taint, c.taint);
      });
    }
    const item: Item = { entries: [], cols };
    const alias = isObj(rv.alias) ? String(rv.alias.aliasname) : undefined;
    item.entries.push({ refname: alias ?? String(rv.relname ?? ''), schema: alias ? undefined : (rv.schemaname as string | undefined), relname: alias ? undefined : String(rv.relname ?? ''), cols });
    const extra = this.from([...arr(s.fromClause), ...arr(s.usingClause), ...(s.sourceRelation ? [s.sourceRelation] : [])], outer, ctes);
    scope.items = [item, ...extra.items];
    scope.entries = [...item.entries, ...extra.entries];
    // UPDATE … SET col = expr and ON CONFLICT DO UPDATE: the new value flows into the column
    const sets = [...arr(s.targetList), ...arr(isObj(s.onConflictClause) ? s.onConflictClause.targetList : [])];
    for (const rt of sets) {
      const r = unwrap(rt)?.[1];
      if (!r) continue;
      const t = this.expr(r.val, scope);
      const at = cols.findIndex((c) => c.name === String(r.name));
      if (at >= 0) cols[at].taint = union(cols[at].taint, t);
      else if (t) for (const c of cols) c.taint = union(c.taint, t); // multi-assignment etc.: conservative
    }
    if (kind === 'MergeStmt') {
      const t = union(...arr(s.mergeWhenClauses).map((w) => this.generic(w, scope)), unknownTaint('merge'));
      for (const c of cols) c.taint = union(c.taint, t);
      this.expr(s.joinCondition, scope);
    }
    this.expr(s.whereClause, scope);
    // old / new (PostgreSQL 18) see the same columns
    scope.entries.push({ refname: 'old', cols }, { refname: 'new', cols });
    if (!returning.length) return undefined;
    const out: Col[] = [];
    for (const rt of returning) out.push(...this.target(rt, scope));
    return out;
  }

  // ---- FROM ----------------------------------------------------------------------------------

  from(list: unknown[], outer: Scope | undefined, ctes: CteEnv): Scope {
    const scope: Scope = { items: [], entries: [], parent: outer, ctes };
    for (const n of list) {
      const item = this.fromItem(n, scope, outer, ctes);
      scope.items.push(item);
      scope.entries.push(...item.entries);
    }
    return scope;
  }

  fromItem(node: unknown, siblings: Scope, outer: Scope | undefined, ctes: CteEnv): Item {
    const u = unwrap(node);
    const [kind, b] = u ?? ['?', {}];
    const lateralScope = (): Scope => ({ items: siblings.items, entries: siblings.entries, parent: outer, ctes });
    switch (kind) {
      case 'RangeVar':
        return this.rangeVar(b, ctes, siblings, outer);
      case 'RangeSubselect': {
        const cols = this.query(b.subquery, b.lateral === true ? lateralScope() : outer, ctes);
        return aliased(b.alias, cols, '?subquery');
      }
      case 'RangeFunction':
        return this.rangeFunction(b, lateralScope());
      case 'JoinExpr':
        return this.join(b, siblings, outer, ctes);
      case 'RangeTableSample': {
        const inner = this.fromItem(b.relation, siblings, outer, ctes);
        for (const a of arr(b.args)) this.expr(a, lateralScope());
        return inner;
      }
      case 'RangeTableFunc': {
        const sc = lateralScope();
        const t = derive(union(this.expr(b.docexpr, sc), this.expr(b.rowexpr, sc), ...arr(b.columns).map((c) => this.generic(c, sc))));
        const cols = arr(b.columns).map((c) => {
          const col = unwrap(c)?.[1] ?? {};
          return { name: String(col.colname ?? '?column?'), taint: col.for_ordinality === true ? null : t };
        });
        return aliased(b.alias, cols, 'xmltable');
      }
      default: {
        const t = this.touch(unknownTaint(`from:${kind}`));
        const alias = isObj(b.alias) ? String(b.alias.aliasname) : '?';
        const cols: Col[] = [{ name: '?column?', taint: t, spread: true }];
        return { entries: [{ refname: alias, cols }], cols };
      }
    }
  }

  rangeVar(b: Obj, ctes: CteEnv, _siblings: Scope | undefined, _outer: Scope | undefined): Item {
    const relname = String(b.relname ?? '');
    const schema = b.schemaname === undefined ? undefined : String(b.schemaname);
    const alias = isObj(b.alias) ? b.alias : undefined;
    let cols: Col[] | undefined;
    if (!schema) {
      for (let e: CteEnv | undefined = ctes; e && !cols; e = e.parent) {
        const d = e.map.get(relname);
        if (d) cols = d.cols.map((c) => ({ ...c }));
      }
    }
    if (!cols) {
      const rel = this.lin.resolveRelation(schema, relname);
      cols = rel ? this.lin.relationCols(rel) : [{ name: '?column?', taint: unknownTaint(`relation:${schema ? `${schema}.` : ''}${relname}`), spread: true }];
    }
    const renamed = renameCols(cols, alias ? names(alias.colnames) : []);
    const refname = alias ? String(alias.aliasname) : relname;
    return { entries: [{ refname, schema: alias ? undefined : schema, relname: alias ? undefined : relname, cols: renamed }], cols: renamed };
  }

  rangeFunction(b: Obj, scope: Scope): Item {
    let cols: Col[] = [];
    const fns = arr(b.functions);
    for (const f of fns) {
      const items = arr(unwrap(f)?.[1].items);
      const call = items[0];
      const coldef = arr(items[1]);
      cols.push(...this.functionCols(call, coldef, scope, fns.length === 1 && !b.ordinality ? b.alias : undefined));
    }
    if (b.ordinality === true) cols.push({ name: 'ordinality', taint: null });
    if (isObj(b.coldeflist) || Array.isArray(b.coldeflist)) {
      const defs = arr(b.coldeflist);
      const t = union(...cols.map((c) => c.taint));
      cols = defs.map((d) => ({ name: String(unwrap(d)?.[1].colname ?? '?column?'), taint: derive(t) }));
    }
    return aliased(b.alias, cols, '?function');
  }

  /** Columns a function in FROM produces. */
  functionCols(call: unknown, coldef: unknown[], scope: Scope, alias: unknown): Col[] {
    const u = unwrap(call);
    if (!u || u[0] !== 'FuncCall') {
      const t = this.expr(call, scope);
      return [{ name: '?column?', taint: derive(t) }];
    }
    const fc = u[1];
    const fname = names(fc.funcname);
    const name = fname[fname.length - 1];
    const argT = derive(union(...arr(fc.args).map((a) => this.expr(a, scope))));
    const user = this.lin.resolveFunction(fname);
    const aliasName = isObj(alias) ? String(alias.aliasname) : name;
    if (user) {
      const trusted = this.lin.isTrusted(user);
      const opaque = trusted ? null : unknownTaint(`function:${user.schema}.${user.name}`);
      if (user.returnsRelation) {
        const rel = this.lin.relations.get(user.returnsRelation);
        if (rel) {
          return this.lin.relationCols(rel).map((c) => ({ name: c.name, taint: this.touch(union(derive(c.taint), argT, opaque)), typeOid: c.typeOid }));
        }
      }
      if (user.outColumns.length) return user.outColumns.map((n) => ({ name: n, taint: this.touch(union(argT, opaque)) }));
      if (coldef.length) return coldef.map((d) => ({ name: String(unwrap(d)?.[1].colname ?? '?column?'), taint: this.touch(union(argT, opaque)) }));
      return [{ name: aliasName, taint: this.touch(union(argT, opaque)) }];
    }
    const opaque = isOpaqueBuiltin(name) ? this.touch(unknownTaint(`function:${name}`)) : null;
    const t = union(argT, opaque);
    if (coldef.length) return coldef.map((d) => ({ name: String(unwrap(d)?.[1].colname ?? '?column?'), taint: t }));
    const width = SRF_WIDTH[name];
    if (Array.isArray(width)) return width.map((n) => ({ name: n, taint: t }));
    if (width === 1) return [{ name: aliasName, taint: t }];
    if (name === 'unnest') return arr(fc.args).map((a, i) => ({ name: i === 0 ? aliasName : `unnest`, taint: derive(this.expr(a, scope)) }));
    // unknown builtin: one column if scalar, several if it returns a record; crossCheck settles the width
    return [{ name: aliasName, taint: t, spread: true }];
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
    if (using.length) {
      const merged: Col[] = using.map((n) => {
        const a = l.cols.find((c) => c.name === n && !c.spread);
        const c2 = r.cols.find((c) => c.name === n && !c.spread);
        const spreadT = union(...l.cols.filter((c) => c.spread).map((c) => c.taint), ...r.cols.filter((c) => c.spread).map((c) => c.taint));
        let taint: T;
        if (a?.taint && !c2?.taint && !spreadT) taint = a.taint;
        else if (c2?.taint && !a?.taint && !spreadT) taint = c2.taint;
        else taint = union(a?.taint ?? null, c2?.taint ?? null, spreadT, !a && !c2 ? unknownTaint(`using:${n}`) : null);
        const inner = b.jointype === 'JOIN_INNER' || b.jointype === 'JOIN_LEFT';
        return { name: n, taint, origin: inner ? a?.origin : b.jointype === 'JOIN_RIGHT' ? c2?.origin : undefined, typeOid: a?.typeOid };
      });
      const set = new Set(using);
      cols = [...merged, ...l.cols.filter((c) => c.spread || !set.has(c.name)), ...r.cols.filter((c) => c.spread || !set.has(c.name))];
    } else cols = [...l.cols, ...r.cols];
    const scope: Scope = { items: [l, r], entries: [...l.entries, ...r.entries], parent: outer, ctes };
    this.expr(b.quals, scope);
    if (isObj(b.alias)) {
      const renamed = renameCols(cols, names(b.alias.colnames));
      return { entries: [{ refname: String(b.alias.aliasname), cols: renamed }], cols: renamed };
    }
    const entries = [...l.entries, ...r.entries];
    if (isObj(b.join_using_alias)) {
      entries.push({ refname: String(b.join_using_alias.aliasname), cols: cols.slice(0, using.length) });
    }
    return { entries, cols };
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
      cols = this.functionCols(arg, [], scope, undefined);
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
        if (hits.length === 1 && !hasSpread) return { ...hits[0], taint: this.touch(hits[0].taint) };
        if (hits.length || hasSpread) {
          return { name: col, taint: this.touch(union(...hits.map((h) => h.taint), spread, hasSpread && !hits.length ? unknownTaint(`column:${col}`) : null)) };
        }
        if (!noWholeRow) {
          const e = s.entries.filter((x) => x.refname === col);
          if (e.length) return { name: col, taint: this.touch(union(...e.flatMap((x) => x.cols.map((c) => c.taint)))) };
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
        if (kind === 'NullTest') this.expr(b.arg, scope); // value-free, but the statement reads the column
        return null;
      }
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
        case 'A_Indirection': {
          const ind = arr(b.indirection);
          const first = str(ind[0]);
          if (first !== undefined) {
            const a = unwrap(b.arg);
            // (p).email: a field of a whole-row reference
            if (a && a[0] === 'ColumnRef' && !this.columnRef(a[1], scope, true)) {
              const e = this.findEntry(names(a[1].fields), scope);
              const c = e?.cols.find((x) => x.name === first && !x.spread);
              if (c) return this.touch(ind.length === 1 ? c.taint : derive(union(c.taint, ...ind.slice(1).map((i) => this.generic(i, scope)))));
            }
            if (a && a[0] === 'FuncCall') {
              const cols = this.functionCols(b.arg, [], scope, undefined);
              const c = cols.find((x) => x.name === first && !x.spread);
              if (c) return this.touch(derive(c.taint));
            }
          }
          return derive(union(this.expr(b.arg, scope), ...ind.map((i) => (unwrap(i)?.[0] === 'String' ? null : this.generic(i, scope)))));
        }
        case 'FuncCall':
          return this.funcCall(b, scope);
        case 'SubLink': {
          const t = String(b.subLinkType);
          const q = this.query(b.subselect, scope, scope.ctes);
          const inner = union(...q.map((c) => c.taint));
          if (t === 'EXISTS_SUBLINK') return null;
          return derive(union(inner, this.expr(b.testexpr, scope)));
        }
        case 'A_Expr': {
          const t = union(this.expr(b.lexpr, scope), this.expr(b.rexpr, scope));
          return derive(t);
        }
        default:
          if (CONTAINERS.has(kind)) return derive(this.generic(b, scope));
          return this.touch(unknownTaint(`node:${kind}`));
      }
    } finally {
      this.depth--;
    }
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
    const filter = this.expr(b.agg_filter, scope);
    const over = isObj(b.over) ? this.generic({ p: b.over.partitionClause, o: b.over.orderClause }, scope) : null;
    const args = arr(b.args).map((a) => this.expr(a, scope));
    const order = arr(b.agg_order).map((a) => this.expr(a, scope));
    const user = this.lin.resolveFunction(fname);
    if (user) {
      const trusted = this.lin.isTrusted(user);
      let t = union(...args, ...order, filter, over, trusted ? null : unknownTaint(`function:${user.schema}.${user.name}`));
      if (user.returnsRelation) {
        const rel = this.lin.relations.get(user.returnsRelation);
        t = union(t, rel ? union(...this.lin.relationCols(rel).map((c) => c.taint)) : unknownTaint(`type:${user.returnsRelation}`));
      }
      return this.touch(derive(t));
    }
    // value-free aggregate: count(*) and count(x) reveal cardinality only; FILTER and OVER still count
    if (name === 'count' && (fname.length === 1 || fname[0] === 'pg_catalog')) return derive(union(filter, over));
    if (isOpaqueBuiltin(name)) return this.touch(unknownTaint(`function:${name}`));
    return derive(union(...args, ...order, filter, over));
  }
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

function aliased(alias: unknown, cols: Col[], fallback: string): Item {
  const a = isObj(alias) ? alias : undefined;
  const renamed = renameCols(cols, a ? names(a.colnames) : []);
  return { entries: [{ refname: a ? String(a.aliasname) : fallback, cols: renamed }], cols: renamed };
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
    return { name: c.name, taint: plain ? a : bothPlainOne ? { sources: new Set((a ?? b)!.sources), plain: true } : union(a, b), typeOid: c.typeOid === r[i].typeOid ? c.typeOid : undefined };
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
  private readonly viewCols = new Map<number, Col[]>();
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

  /** Parses `sql` (one statement) and analyses it. */
  analyzeSql(sql: string): LineagePlan {
    // The session asks for every statement it forwards; plans only depend on the text and this catalog.
    const hit = this.plans.get(sql);
    if (hit) return hit;
    const p = parseStatements(sql);
    const plan: LineagePlan =
      !p.ok || p.statements.length !== 1 ? { kind: 'unknown', reason: p.ok ? 'expected one statement' : p.error, readsMasked: true } : this.analyze(p.statements[0]);
    if (sql.length <= 64 * 1024) this.plans.set(sql, plan);
    return plan;
  }

  /** Plans by statement text (read-only once made: callers never mutate them). */
  private readonly plans = new Lru<LineagePlan>(5000);

  private analyzeUnsafe(kind: string, body: Obj): LineagePlan {
    const a = new Analysis(this);
    const top: CteEnv = { map: new Map() };
    const rows = (cols: Col[], extra: Partial<{ cursor: string; copy: CopyOptions }> = {}): LineagePlan => ({
      kind: 'rows',
      columns: cols.map((c) => this.planColumn(c)),
      readsMasked: a.readsMasked || cols.some((c) => c.taint),
      ...extra,
    });
    switch (kind) {
      case 'SelectStmt': {
        const cols = a.select(body, undefined, top);
        if (body.intoClause) return { kind: 'none', readsMasked: a.readsMasked || cols.some((c) => c.taint) };
        return rows(cols);
      }
      case 'InsertStmt':
      case 'UpdateStmt':
      case 'DeleteStmt':
      case 'MergeStmt': {
        const cols = a.dml(kind, body, undefined, top);
        return cols ? rows(cols) : { kind: 'none', readsMasked: a.readsMasked };
      }
      case 'DeclareCursorStmt': {
        const cols = a.query(body.query, undefined, top);
        return rows(cols, { cursor: String(body.portalname) });
      }
      case 'FetchStmt':
        if (body.ismove === true) return { kind: 'none', readsMasked: false };
        return { kind: 'fetch', cursor: String(body.portalname), readsMasked: false };
      case 'CopyStmt': {
        if (body.is_from === true) return { kind: 'none', readsMasked: false };
        if (body.filename !== undefined || body.is_program === true) return { kind: 'unknown', reason: 'COPY to a file or program', readsMasked: true };
        const copy = copyOptions(arr(body.options));
        if (!copy) return { kind: 'unknown', reason: 'COPY options not understood', readsMasked: true };
        let cols: Col[];
        if (body.query) cols = a.query(body.query, undefined, top);
        else {
          const item = a.rangeVar(isObj(body.relation) ? body.relation : {}, top, undefined, undefined);
          const list = names(body.attlist);
          cols = list.length
            ? list.map((n) => item.cols.find((c) => c.name === n && !c.spread) ?? { name: n, taint: a.touch(unknownTaint(`column:${n}`)) })
            : item.cols;
        }
        return rows(cols, { copy });
      }
      case 'ExplainStmt': {
        // the plan's text holds no column values; the inner statement still decides error redaction
        const inner = unwrap(body.query);
        const innerPlan = inner ? this.analyzeUnsafe(inner[0], inner[1]) : undefined;
        return { kind: 'rows', columns: [{ name: 'QUERY PLAN', mask: CLEAR }], readsMasked: innerPlan?.readsMasked ?? true };
      }
      case 'PrepareStmt': {
        const inner = unwrap(body.query);
        const plan: LineagePlan = inner ? this.analyze({ kind: inner[0], body: inner[1] }) : { kind: 'unknown', reason: 'PREPARE without query', readsMasked: true };
        return { kind: 'prepare', name: String(body.name), plan, readsMasked: plan.readsMasked };
      }
      case 'ExecuteStmt': {
        const scope: Scope = { items: [], entries: [], ctes: top };
        for (const p of arr(body.params)) a.expr(p, scope);
        return { kind: 'execute', name: String(body.name), readsMasked: a.readsMasked };
      }
      case 'CreateTableAsStmt': {
        a.query(body.query, undefined, top);
        return { kind: 'none', readsMasked: true };
      }
      case 'VariableShowStmt':
        return { kind: 'rows', columns: [{ name: String(body.name ?? 'setting'), mask: CLEAR }], readsMasked: false };
      case 'TransactionStmt':
      case 'VariableSetStmt':
      case 'ListenStmt':
      case 'UnlistenStmt':
      case 'DiscardStmt':
      case 'DeallocateStmt':
      case 'ClosePortalStmt':
      case 'CheckPointStmt':
        return { kind: 'none', readsMasked: false };
      default:
        return { kind: 'unknown', reason: `statement ${kind}`, readsMasked: true };
    }
  }

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
    if (!system && (rel.kind === 'v' || rel.kind === 'm')) return this.viewColumns(rel);
    return rel.columns.map((c) => {
      const src = system ? undefined : this.ruleSource(rel, c.name);
      return {
        name: c.name,
        taint: src ? { sources: new Set([src]), plain: true } : null,
        origin: { relation: `${rel.schema}.${rel.name}`, attnum: c.attnum },
        typeOid: c.typeOid,
      };
    });
  }

  private viewColumns(rel: CatalogRelation): Col[] {
    const memo = this.viewCols.get(rel.oid);
    if (memo) return memo;
    const fail = (why: string): Col[] => rel.columns.map((c) => ({ name: c.name, taint: unknownTaint(`view:${rel.name}:${why}`), typeOid: c.typeOid }));
    if (this.inProgress.has(rel.oid)) return fail('recursive');
    let cols: Col[];
    const own = (c: { name: string; attnum: number }) => this.ruleSource(rel, c.name);
    if (!rel.definition) cols = fail('no definition');
    else {
      const p = parseStatements(rel.definition);
      if (!p.ok || p.statements.length !== 1 || p.statements[0].kind !== 'SelectStmt') cols = fail('unparsable');
      else {
        this.inProgress.add(rel.oid);
        try {
          const a = new Analysis(this);
          const q = a.select(p.statements[0].body, undefined, { map: new Map() });
          if (q.some((c) => c.spread) || q.length !== rel.columns.length) {
            const t = union(...q.map((c) => c.taint));
            cols = rel.columns.map((c) => ({ name: c.name, taint: t, typeOid: c.typeOid }));
          } else {
            cols = rel.columns.map((c, i) => ({ name: c.name, taint: q[i].taint, typeOid: c.typeOid }));
          }
        } catch (err) {
          cols = fail(err instanceof Error ? err.message : 'error');
        } finally {
          this.inProgress.delete(rel.oid);
        }
      }
    }
    // a rule written for the view's own column also applies (matviews are relations of their own)
    cols = cols.map((c, i) => {
      const src = own(rel.columns[i]);
      return src ? { ...c, taint: c.taint ? union(c.taint, { sources: new Set([src]), plain: true }) : { sources: new Set([src]), plain: true } } : c;
    });
    // view columns carry the view as origin only for diagnostics; RowDescription names the view
    cols = cols.map((c, i) => ({ ...c, origin: { relation: `${rel.schema}.${rel.name}`, attnum: rel.columns[i].attnum } }));
    this.viewCols.set(rel.oid, cols);
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
