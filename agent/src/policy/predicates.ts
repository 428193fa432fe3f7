/**
 * P7 by column names: what the engine falls back on while the connection's catalog is not loaded (and
 * for engines built without one). With a catalog, P7 is judged on lineage instead (masking/lineage.ts,
 * `PredicateOracle`): views, materialized views, row counts and every clause resolved.
 *
 * P7, strict profile: a masked column may be compared for equality with a constant (`mrn = 'MRN-1'`,
 * `mrn IN ('a','b')`, `mrn = $1`) or tested with IS NULL, and nothing else in a position that decides
 * which rows come back or in what order (WHERE, JOIN, HAVING, GROUP BY, ORDER BY, DISTINCT ON, LIMIT,
 * FILTER, window PARTITION/ORDER, CASE conditions). Anything more (LIKE, ranges, functions of the value,
 * ordering) turns the row set into an oracle that leaks the value one bit at a time, which no output
 * masking can stop.
 *
 * Without the catalog, column references are resolved against the FROM items in scope, best effort
 * and failing closed: an unqualified name counts as masked when any source in scope could supply a
 * masked column of that name; sub-selects, CTEs and functions in FROM are tainted by what they read.
 */
import { constantType, intConstant } from './constants.js';
import { SAFE_FUNCTIONS } from './functions.js';
import { names } from './walk.js';

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
/** unwrap `{ Type: body }` */
const unwrap = (v: unknown): [string, Obj] | undefined => {
  if (!isObj(v)) return undefined;
  const keys = Object.keys(v);
  return keys.length === 1 && isObj(v[keys[0]]) ? [keys[0], v[keys[0]] as Obj] : undefined;
};

/** What a FROM item can hand out: masked column names, or every column ('all'). */
type Taint = Set<string> | 'all';
interface Source {
  alias: string;
  taint: Taint;
}
type Scopes = Source[][];

export interface MaskedColumns {
  /** table name (bare) → masked column names; schema is ignored, failing closed */
  byTable: Map<string, Set<string>>;
  /** every masked column name */
  names: Set<string>;
}

/** Build the lookup from config entries `schema.table.column` (or `table.column`). */
export function maskedColumns(list: readonly string[]): MaskedColumns {
  const byTable = new Map<string, Set<string>>();
  const all = new Set<string>();
  for (const entry of list) {
    const parts = entry.split('.');
    if (parts.length < 2) continue;
    const column = parts[parts.length - 1];
    const table = parts[parts.length - 2];
    if (!byTable.has(table)) byTable.set(table, new Set());
    byTable.get(table)!.add(column);
    all.add(column);
  }
  return { byTable, names: all };
}

const VALUE_AGGREGATES = new Set(['mode', 'percentile_cont', 'percentile_disc']);

/**
 * Returns a description of the first forbidden use of a masked column in a predicate position,
 * or undefined when the statement is clean.
 */
export function findPredicateLeak(kind: string, body: Obj, masked: MaskedColumns): string | undefined {
  let leak: string | undefined;
  const ctes: Map<string, Taint>[] = [];

  const report = (what: string): void => {
    leak ??= what;
  };

  const isEmpty = (t: Taint): boolean => t !== 'all' && t.size === 0;
  const has = (t: Taint, col: string): boolean => t === 'all' || t.has(col);

  /** Does a ColumnRef (fields) resolve to a masked value (a masked column or a whole row holding one)? */
  const refIsMasked = (fields: unknown[], scopes: Scopes): boolean => {
    const parts = fields.map((f) => (isObj(f) && isObj(f.String) ? String(f.String.sval) : '*'));
    const visible = scopes.flat();
    if (parts.length === 1) {
      const [name] = parts;
      if (name === '*') return visible.some((s) => !isEmpty(s.taint));
      // a whole-row reference `p` of a source holding masked columns
      if (visible.some((s) => s.alias === name && !isEmpty(s.taint))) return true;
      if (visible.length === 0) return masked.names.has(name);
      return visible.some((s) => has(s.taint, name));
    }
    const col = parts[parts.length - 1];
    const qual = parts[parts.length - 2];
    for (const scope of [...scopes].reverse()) {
      const src = scope.find((s) => s.alias === qual);
      if (src) return col === '*' ? !isEmpty(src.taint) : has(src.taint, col);
    }
    // `(p).email`-style composite columns and unknown qualifiers: judge by the name alone.
    return col === '*' || masked.names.has(col) || masked.byTable.has(qual);
  };

  /** Coarse: does an expression mention anything masked (used for taint, not for verdicts)? */
  const mentionsMasked = (node: unknown, scopes: Scopes): boolean => {
    let found = false;
    const visit = (v: unknown): void => {
      if (found) return;
      if (Array.isArray(v)) return v.forEach(visit);
      const u = unwrap(v);
      if (u && u[0] === 'ColumnRef') {
        if (refIsMasked(arr(u[1].fields), scopes)) found = true;
        return;
      }
      if (u && u[0] === 'SelectStmt') {
        if (!isEmpty(selectTaint(u[1], scopes))) found = true;
        return;
      }
      if (isObj(v)) Object.values(v).forEach(visit);
    };
    visit(node);
    return found;
  };

  /** Which output columns of a sub-select carry masked values. */
  const selectTaint = (sel: Obj, outer: Scopes): Taint => withCtes(sel, outer, false, () => selectTaintIn(sel, outer));
  const selectTaintIn = (sel: Obj, outer: Scopes): Taint => {
    if (sel.op && sel.op !== 'SETOP_NONE') {
      const l = selectTaint((unwrap(sel.larg)?.[1] ?? sel.larg) as Obj, outer);
      const r = selectTaint((unwrap(sel.rarg)?.[1] ?? sel.rarg) as Obj, outer);
      return isEmpty(l) && isEmpty(r) ? new Set() : 'all';
    }
    const scopes = [...outer, fromSources(sel, outer, false)];
    const out = new Set<string>();
    for (const t of arr(sel.targetList)) {
      const rt = unwrap(t)?.[1];
      if (!rt) continue;
      const val = unwrap(rt.val);
      if (val?.[0] === 'ColumnRef') {
        const fields = arr(val[1].fields);
        const last = fields[fields.length - 1];
        if (isObj(last) && 'A_Star' in last) {
          // `*` / `p.*` keep the column names of what they expand
          const qual = fields.length > 1 ? names(fields.slice(0, -1)).pop() : undefined;
          for (const s of scopes[scopes.length - 1]) {
            if (qual && s.alias !== qual) continue;
            if (s.taint === 'all') return 'all';
            s.taint.forEach((c) => out.add(c));
          }
          continue;
        }
      }
      if (mentionsMasked(rt.val, scopes)) {
        const name = typeof rt.name === 'string' ? rt.name : val?.[0] === 'ColumnRef' ? names(val[1].fields).pop() : undefined;
        if (!name) return 'all';
        out.add(name);
      }
    }
    return out;
  };

  /** The sources a FROM list brings into scope; processes sub-selects and JOIN conditions on the way. */
  const fromSources = (sel: Obj, outer: Scopes, check: boolean, items: unknown[] = arr(sel.fromClause)): Source[] => {
    const sources: Source[] = [];
    const add = (item: unknown): void => {
      const u = unwrap(item);
      if (!u) return;
      const [type, n] = u;
      const alias = isObj(n.alias) ? String(n.alias.aliasname) : undefined;
      const renames = isObj(n.alias) && arr(n.alias.colnames).length > 0;
      if (type === 'RangeVar') {
        const rel = String(n.relname);
        const cte = n.schemaname ? undefined : ctes.findLast((m) => m.has(rel))?.get(rel);
        const taint: Taint = cte ?? masked.byTable.get(rel) ?? new Set();
        sources.push({ alias: alias ?? rel, taint: renames && !isEmpty(taint) ? 'all' : taint });
      } else if (type === 'RangeSubselect') {
        const sub = unwrap(n.subquery);
        const scopesForSub = n.lateral ? [...outer, sources] : outer;
        if (!sub) return;
        if (check) visitStatement(sub[0], sub[1], scopesForSub, false);
        const taint = sub[0] === 'SelectStmt' ? selectTaint(sub[1], scopesForSub) : 'all';
        sources.push({ alias: alias ?? '', taint: renames && !isEmpty(taint) ? 'all' : taint });
      } else if (type === 'RangeFunction') {
        // A function's columns are unknown (get_patient() returns patients rows): assume it can
        // return every masked column name, and everything if its arguments read masked values.
        const visible = [...outer, sources];
        if (check) visitExpr(n.functions, visible, false);
        const builtin = calledFunctions(n.functions).every((f) => SAFE_FUNCTIONS.has(f));
        const taint: Taint = mentionsMasked(n.functions, visible) ? 'all' : builtin ? new Set() : new Set(masked.names);
        sources.push({ alias: alias ?? '', taint });
      } else if (type === 'JoinExpr') {
        add(n.larg);
        add(n.rarg);
        if (check) {
          visitExpr(n.quals, [...outer, sources], true);
          for (const col of names(n.usingClause)) if (masked.names.has(col)) report(`JOIN USING (${col})`);
        }
      } else {
        // RangeTableSample, RangeTableFunc (XMLTABLE/JSON_TABLE)…: unknown shape, fail closed
        if (isObj(n.relation)) return add(n.relation);
        sources.push({ alias: alias ?? '', taint: 'all' });
      }
    };
    items.forEach(add);
    return sources;
  };

  /** Allowed shapes: `col = const`, `const = col`, `col IN (consts)`, `col IS [NOT] NULL`. */
  const isConst = (v: unknown): boolean => {
    const u = unwrap(v);
    if (!u) return false;
    if (u[0] === 'A_Const' || u[0] === 'ParamRef') return true;
    return u[0] === 'TypeCast' && isConst(u[1].arg);
  };
  const isColumn = (v: unknown): boolean => unwrap(v)?.[0] === 'ColumnRef';
  const isEquality = (e: Obj): boolean => {
    const op = names(e.name);
    if (op[op.length - 1] !== '=' || (op.length > 1 && op[0] !== 'pg_catalog')) return false;
    if (e.kind === 'AEXPR_OP') return (isColumn(e.lexpr) && isConst(e.rexpr)) || (isConst(e.lexpr) && isColumn(e.rexpr));
    if (e.kind === 'AEXPR_IN') return isColumn(e.lexpr) && arr(unwrap(e.rexpr)?.[1].items).every(isConst);
    return false;
  };

  const visitExpr = (node: unknown, scopes: Scopes, pred: boolean): void => {
    if (leak) return;
    if (Array.isArray(node)) return node.forEach((n) => visitExpr(n, scopes, pred));
    const u = unwrap(node);
    if (!u) {
      if (isObj(node)) Object.values(node).forEach((v) => visitExpr(v, scopes, pred));
      return;
    }
    const [type, n] = u;
    switch (type) {
      case 'ColumnRef':
        if (pred && refIsMasked(arr(n.fields), scopes)) report(`use of ${names(n.fields).join('.') || '*'}`);
        return;
      case 'A_Expr':
        if (pred && isEquality(n)) return;
        visitExpr(n.lexpr, scopes, pred);
        visitExpr(n.rexpr, scopes, pred);
        return;
      case 'NullTest':
        if (isColumn(n.arg)) return; // value-free (P6)
        break;
      case 'FuncCall': {
        visitExpr(n.args, scopes, pred);
        visitExpr(n.agg_filter, scopes, true);
        if (isObj(n.over)) visitExpr([n.over.partitionClause, n.over.orderClause], scopes, true);
        const fname = names(n.funcname).pop() ?? '';
        // The ordering inside mode()/percentile_*() is the aggregated value itself (output, masked by
        // lineage); rank('x') WITHIN GROUP (ORDER BY ssn) or string_agg(name, ORDER BY ssn) leak order.
        const valueOrder = n.agg_within_group ? VALUE_AGGREGATES.has(fname) : mentionsMasked(n.args, scopes);
        visitExpr(n.agg_order, scopes, pred || !valueOrder);
        return;
      }
      case 'CaseExpr':
        visitExpr(n.arg, scopes, true);
        for (const w of arr(n.args)) {
          const cw = unwrap(w)?.[1];
          if (!cw) continue;
          visitExpr(cw.expr, scopes, true);
          visitExpr(cw.result, scopes, pred);
        }
        visitExpr(n.defresult, scopes, pred);
        return;
      case 'SubLink':
        visitExpr(n.testexpr, scopes, pred);
        visitExpr(n.subselect, scopes, pred);
        return;
      case 'SelectStmt':
        visitSelect(n, scopes, pred);
        return;
    }
    if (type.endsWith('Stmt')) return visitStatement(type, n, scopes, pred);
    visitExpr(n, scopes, pred);
  };

  /** ORDER BY / GROUP BY may name an output column by position or alias: judge the expression behind it. */
  const visitSortItems = (items: unknown[], targets: unknown[], scopes: Scopes): void => {
    for (const item of items) {
      const u = unwrap(item);
      const expr = u?.[0] === 'SortBy' ? u[1].node : item;
      visitExpr(expr, scopes, true);
      const e = unwrap(expr);
      let target: Obj | undefined;
      if (e?.[0] === 'A_Const' && constantType(e[1]) === 'int') target = unwrap(targets[(intConstant(e[1]) ?? 0) - 1])?.[1];
      if (e?.[0] === 'ColumnRef' && e[1].fields && arr(e[1].fields).length === 1) {
        const name = names(e[1].fields)[0];
        target = targets.map((t) => unwrap(t)?.[1]).find((t) => t?.name === name);
      }
      if (target) visitExpr(target.val, scopes, true);
    }
  };

  /** Bring a statement's CTEs into scope (checking their bodies when `check`), run `body`, drop them. */
  function withCtes<T>(sel: Obj, outer: Scopes, check: boolean, body: () => T): T {
    const map = new Map<string, Taint>();
    ctes.push(map);
    try {
      for (const c of arr(isObj(sel.withClause) ? sel.withClause.ctes : [])) {
        const cte = unwrap(c)?.[1];
        const q = unwrap(cte?.ctequery);
        if (!cte || !q) continue;
        if (check) visitStatement(q[0], q[1], outer, false);
        // RETURNING of a data-modifying CTE and anything unusual: every column counts as masked.
        const taint = q[0] === 'SelectStmt' ? selectTaint(q[1], outer) : 'all';
        map.set(String(cte.ctename), arr(cte.aliascolnames).length && !isEmpty(taint) ? 'all' : taint);
      }
      return body();
    } finally {
      ctes.pop();
    }
  }

  const visitSelect = (sel: Obj, outer: Scopes, pred: boolean): void => {
    withCtes(sel, outer, true, () => {
      if (sel.op && sel.op !== 'SETOP_NONE') {
        visitExpr(sel.larg, outer, pred);
        visitExpr(sel.rarg, outer, pred);
        const out = selectTaint(sel, outer);
        const ordinal = arr(sel.sortClause).some((i) => unwrap(unwrap(i)?.[1].node)?.[0] === 'A_Const');
        if (ordinal && !isEmpty(out)) report('ORDER BY position of a masked output');
        visitSortItems(arr(sel.sortClause), [], [...outer, [{ alias: '', taint: out }]]);
        return;
      }
      const scopes = [...outer, fromSources(sel, outer, true)];
      const targets = arr(sel.targetList);
      visitExpr(targets, scopes, pred);
      visitExpr(sel.valuesLists, scopes, pred);
      visitExpr([sel.whereClause, sel.havingClause, sel.limitCount, sel.limitOffset], scopes, true);
      visitExpr(arr(sel.distinctClause).filter((d) => isObj(d) && Object.keys(d).length > 0), scopes, true);
      visitSortItems([...arr(sel.sortClause), ...arr(sel.groupClause)], targets, scopes);
      for (const w of arr(sel.windowClause)) {
        const wd = unwrap(w)?.[1];
        if (wd) visitExpr([wd.partitionClause, wd.orderClause], scopes, true);
      }
    });
  };

  /** Writes: their WHERE / JOIN conditions are predicates over the target table and USING/FROM items. */
  const visitStatement = (type: string, n: Obj, outer: Scopes, pred: boolean): void => {
    if (type === 'SelectStmt') return visitSelect(n, outer, pred);
    if (type === 'UpdateStmt' || type === 'DeleteStmt' || type === 'MergeStmt' || type === 'InsertStmt') {
      withCtes(n, outer, true, () => {
        const extra = [...arr(n.fromClause), ...arr(n.usingClause), ...(n.sourceRelation ? [n.sourceRelation] : [])];
        const scopes = [...outer, fromSources(n, outer, true, [{ RangeVar: n.relation }, ...extra])];
        visitExpr([n.whereClause, n.joinCondition], scopes, true);
        for (const w of arr(n.mergeWhenClauses)) visitExpr(unwrap(w)?.[1].condition, scopes, true);
        visitExpr([n.targetList, n.returningClause, n.selectStmt, n.onConflictClause], scopes, pred);
      });
      return;
    }
    // EXPLAIN, PREPARE, DECLARE, COPY (query), CREATE TABLE AS, views…: find the queries inside.
    visitExpr(n, outer, pred);
  };

  visitStatement(kind, body, [], false);
  return leak;
}

/** Names of the functions called at the top of a RangeFunction list, '?' for a qualified non-catalog one. */
function calledFunctions(functions: unknown): string[] {
  const out: string[] = [];
  const visit = (v: unknown): void => {
    if (Array.isArray(v)) return v.forEach(visit);
    const u = unwrap(v);
    if (u?.[0] === 'FuncCall') {
      const parts = names(u[1].funcname);
      out.push(parts.length > 1 && parts[0] !== 'pg_catalog' ? '?' : parts[parts.length - 1]);
    } else if (u?.[0] === 'List') visit(u[1].items);
  };
  visit(functions);
  return out;
}
