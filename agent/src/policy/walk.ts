/**
 * Generic walk over a statement's JSON parse tree. It does not know which statements exist; it visits
 * every object and array, so a function call in a CTE, a LATERAL item, a DEFAULT, a sub-select in
 * HAVING or a VALUES row is seen exactly like one in the target list. The rules judge what it collects.
 *
 * libpg-query wraps nodes that sit in generic positions (`{ FuncCall: {...} }`) but leaves typed fields
 * bare (`DeleteStmt.relation` is a RangeVar, `CallStmt.funccall` a FuncCall, without the wrapper), so
 * RangeVars and FuncCalls are recognised by shape.
 */

export interface FunctionRef {
  schema?: string;
  name: string;
  nargs: number;
  /** the argument nodes: a rule reads a constant among them through constants.ts (set_config('x', '5s', …)) */
  args: readonly unknown[];
  /** the first argument when it is a bare one-part column reference (`set_config(name, …) FROM pg_settings`) */
  firstArgColumn?: string;
  /** the second argument is a `$n` parameter */
  secondArgIsParam?: boolean;
}
export interface RelationRef {
  schema?: string;
  name: string;
  /** unqualified and a CTE of that name is in scope: not a table */
  cte: boolean;
}
export interface NestedStatement {
  kind: string;
  body: Record<string, unknown>;
}
export interface TreeFacts {
  functions: FunctionRef[];
  relations: RelationRef[];
  /** statements found below the root (CTE bodies, sub-selects, CREATE SCHEMA elements, rule actions…) */
  statements: NestedStatement[];
  /** operators written with an explicit schema: `OPERATOR(myschema.+)` */
  qualifiedOperators: string[];
  tablesampleMethods: string[];
  locksRows: boolean;
  hasParams: boolean;
  /** the tree was nested deeper than we are willing to follow */
  tooDeep: boolean;
}

const MAX_DEPTH = 1500;

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `[{String:{sval:'pg_catalog'}},{String:{sval:'lower'}}]` → ['pg_catalog', 'lower'] */
export function names(list: unknown): string[] {
  if (!Array.isArray(list)) return [];
  return list.map((n) => (isObj(n) && isObj(n.String) ? String(n.String.sval ?? '') : ''));
}

/**
 * Collect the facts of `body` (a statement's body). `skip` names fields of the root to leave out,
 * used for wrapper statements whose inner query the rules judge on their own (EXPLAIN, PREPARE, DECLARE).
 */
export function walkTree(body: Obj, skip: readonly string[] = []): TreeFacts {
  const facts: TreeFacts = {
    functions: [], relations: [], statements: [], qualifiedOperators: [], tablesampleMethods: [],
    locksRows: false, hasParams: false, tooDeep: false,
  };
  const ctes: string[] = [];

  const visitNode = (type: string, node: Obj, depth: number): void => {
    switch (type) {
      case 'A_Expr': {
        const parts = names(node.name);
        if (parts.length > 1) facts.qualifiedOperators.push(parts.join('.'));
        break;
      }
      case 'RangeTableSample':
        facts.tablesampleMethods.push(names(node.method).join('.'));
        break;
      case 'LockingClause':
        facts.locksRows = true;
        break;
      case 'ParamRef':
        facts.hasParams = true;
        break;
      default:
        if (type.endsWith('Stmt') && depth > 0) facts.statements.push({ kind: type, body: node });
    }
    visit(node, depth + 1);
  };

  const visit = (value: unknown, depth: number, skipFields: readonly string[] = []): void => {
    if (depth > MAX_DEPTH) {
      facts.tooDeep = true;
      return;
    }
    if (Array.isArray(value)) {
      for (const v of value) visit(v, depth + 1);
      return;
    }
    if (!isObj(value)) return;
    const keys = Object.keys(value);
    // A wrapped node: exactly one key, a type name, whose value is the body.
    if (keys.length === 1 && /^[A-Z]/.test(keys[0]) && isObj(value[keys[0]])) {
      visitNode(keys[0], value[keys[0]] as Obj, depth);
      return;
    }
    // FuncCall bodies are recognised by shape too: CallStmt.funccall is a bare FuncCall.
    if (Array.isArray(value.funcname) && 'funcformat' in value) {
      const parts = names(value.funcname);
      const nargs = Array.isArray(value.args) ? value.args.length : 0;
      const args = Array.isArray(value.args) ? value.args : [];
      const ref: FunctionRef = { schema: parts.length > 1 ? parts[parts.length - 2] : undefined, name: parts[parts.length - 1] ?? '', nargs, args };
      const column = isObj(args[0]) && isObj(args[0].ColumnRef) ? names(args[0].ColumnRef.fields) : [];
      if (column.length === 1 && column[0] !== '') ref.firstArgColumn = column[0];
      if (isObj(args[1]) && isObj(args[1].ParamRef)) ref.secondArgIsParam = true;
      facts.functions.push(ref);
    }
    if (typeof value.relname === 'string') {
      const schema = typeof value.schemaname === 'string' ? value.schemaname : undefined;
      facts.relations.push({ schema, name: value.relname, cte: !schema && ctes.includes(value.relname) });
    }
    // CTE names shadow tables in the statement that carries the WITH. A CTE body sees only the CTEs
    // before it (all of them under WITH RECURSIVE): in `WITH pg_stats AS (SELECT * FROM pg_stats)` the
    // inner name is the real catalog.
    const withClause = isObj(value.withClause) ? value.withClause : undefined;
    const all = cteNames(withClause);
    if (withClause && !skipFields.includes('withClause')) {
      const list = Array.isArray(withClause.ctes) ? withClause.ctes : [];
      list.forEach((cte, i) => {
        const visible = withClause.recursive ? all : all.slice(0, i);
        ctes.push(...visible);
        visit(cte, depth + 2);
        ctes.length -= visible.length;
      });
    }
    ctes.push(...all);
    for (const k of keys) if (!skipFields.includes(k) && k !== 'withClause') visit(value[k], depth + 1);
    ctes.length -= all.length;
  };

  visit(body, 0, skip);
  return facts;
}

function cteNames(withClause: unknown): string[] {
  if (!isObj(withClause) || !Array.isArray(withClause.ctes)) return [];
  return withClause.ctes.flatMap((c) => (isObj(c) && isObj(c.CommonTableExpr) ? [String(c.CommonTableExpr.ctename)] : []));
}
