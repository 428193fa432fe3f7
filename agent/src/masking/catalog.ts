/**
 * The catalog lineage needs: relations with their columns in order (and types), view and
 * materialized-view definitions, table inheritance, functions outside pg_catalog (which ones return a
 * table's row type), the search path, and the type OIDs that are text-like. Fetched in one round
 * (three queries sent together) when a connection starts, and again after DDL.
 *
 * Pure data: no SQL is parsed here (lineage.ts parses view definitions lazily).
 */

export interface CatalogColumn {
  name: string;
  attnum: number;
  typeOid: number;
}

export interface CatalogRelation {
  oid: number;
  schema: string;
  name: string;
  /** pg_class.relkind: r table, p partitioned, v view, m matview, f foreign */
  kind: string;
  /** the composite type of the row (pg_class.reltype) */
  rowTypeOid: number;
  columns: CatalogColumn[];
  /** `pg_get_viewdef` text of views and matviews outside the system schemas */
  definition?: string;
  /** direct parents (inheritance / partitioning), as `schema.name` */
  parents: string[];
}

export interface CatalogFunction {
  oid: number;
  schema: string;
  name: string;
  /** f function, p procedure, a aggregate, w window */
  kind: string;
  returnsSet: boolean;
  /** `schema.name` of the relation whose row type it returns, if any */
  returnsRelation?: string;
  returnTypeOid: number;
  /** names of OUT / INOUT / TABLE columns, in order (RETURNS TABLE, OUT parameters) */
  outColumns: string[];
}

export interface Catalog {
  /** by `schema.name` */
  relations: Map<string, CatalogRelation>;
  byOid: Map<number, CatalogRelation>;
  /** user functions (not pg_catalog / information_schema), by bare name */
  functions: Map<string, CatalogFunction[]>;
  /** schemas searched for unqualified names after pg_catalog, e.g. ['public'] */
  searchPath: string[];
  /** type OIDs of category 'S' (string), e.g. citext, domains over text */
  textTypeOids: Set<number>;
}

export type CatalogRow = Record<string, unknown>;
export type CatalogQuery = (sql: string) => Promise<CatalogRow[]>;

const SYSTEM_SCHEMAS = `('pg_catalog', 'information_schema')`;

export const RELATIONS_SQL = `
SELECT c.oid::int8 AS oid, n.nspname AS schema, c.relname AS name, c.relkind::text AS kind, c.reltype::int8 AS rowtype,
  CASE WHEN c.relkind IN ('v', 'm') AND n.nspname NOT IN ${SYSTEM_SCHEMAS} THEN pg_get_viewdef(c.oid) END AS definition,
  coalesce((SELECT json_agg(json_build_array(a.attname, a.attnum, a.atttypid::int8) ORDER BY a.attnum)
              FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '[]'::json)::text AS columns,
  coalesce((SELECT json_agg(pn.nspname || '.' || pc.relname)
              FROM pg_inherits i JOIN pg_class pc ON pc.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = pc.relnamespace
             WHERE i.inhrelid = c.oid), '[]'::json)::text AS parents
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'`;

export const FUNCTIONS_SQL = `
SELECT p.oid::int8 AS oid, n.nspname AS schema, p.proname AS name, p.prokind::text AS kind, p.proretset AS retset,
  p.prorettype::int8 AS rettype,
  CASE WHEN t.typrelid <> 0 THEN (SELECT rn.nspname || '.' || rc.relname FROM pg_class rc JOIN pg_namespace rn ON rn.oid = rc.relnamespace WHERE rc.oid = t.typrelid) END AS retrel,
  coalesce(array_to_json(p.proargnames), '[]'::json)::text AS argnames,
  coalesce(array_to_json(p.proargmodes::text[]), '[]'::json)::text AS argmodes
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_type t ON t.oid = p.prorettype
WHERE n.nspname NOT IN ${SYSTEM_SCHEMAS}`;

export const SETTINGS_SQL = `
SELECT array_to_json(current_schemas(false))::text AS path,
  (SELECT coalesce(json_agg(t.oid::int8), '[]'::json)::text FROM pg_type t WHERE t.typcategory = 'S') AS text_types`;

function json<T>(v: unknown, fallback: T): T {
  if (v === null || v === undefined) return fallback;
  if (typeof v === 'string') return JSON.parse(v) as T;
  return v as T;
}

/** Builds a Catalog from the rows of the three queries (exported for tests and fixtures). */
export function buildCatalog(relRows: CatalogRow[], fnRows: CatalogRow[], settings: CatalogRow | undefined): Catalog {
  const relations = new Map<string, CatalogRelation>();
  const byOid = new Map<number, CatalogRelation>();
  for (const r of relRows) {
    const cols = json<[string, number, number][]>(r.columns, []);
    const rel: CatalogRelation = {
      oid: Number(r.oid),
      schema: String(r.schema),
      name: String(r.name),
      kind: String(r.kind),
      rowTypeOid: Number(r.rowtype),
      columns: cols.map(([name, attnum, typeOid]) => ({ name, attnum: Number(attnum), typeOid: Number(typeOid) })),
      definition: r.definition == null ? undefined : String(r.definition),
      parents: json<string[]>(r.parents, []),
    };
    relations.set(`${rel.schema}.${rel.name}`, rel);
    byOid.set(rel.oid, rel);
  }
  const functions = new Map<string, CatalogFunction[]>();
  for (const f of fnRows) {
    const names = json<(string | null)[]>(f.argnames, []);
    const modes = json<string[]>(f.argmodes, []);
    const outColumns: string[] = [];
    modes.forEach((m, i) => {
      if (m === 'o' || m === 'b' || m === 't') outColumns.push(names[i] ?? `column${outColumns.length + 1}`);
    });
    const fn: CatalogFunction = {
      oid: Number(f.oid),
      schema: String(f.schema),
      name: String(f.name),
      kind: String(f.kind),
      returnsSet: f.retset === true || f.retset === 't',
      returnsRelation: f.retrel == null ? undefined : String(f.retrel),
      returnTypeOid: Number(f.rettype),
      outColumns,
    };
    const list = functions.get(fn.name) ?? [];
    list.push(fn);
    functions.set(fn.name, list);
  }
  const searchPath = json<string[]>(settings?.path, ['public']);
  const textTypeOids = new Set(json<number[]>(settings?.text_types, []).map(Number));
  return { relations, byOid, functions, searchPath, textTypeOids };
}

/**
 * One round of catalog queries through `query` (the agent's own upstream connection), → Catalog.
 * Rejects if any query fails: the caller then refuses statements that need masking (fail closed).
 */
export async function loadCatalog(query: CatalogQuery): Promise<Catalog> {
  const [rels, fns, settings] = await Promise.all([query(RELATIONS_SQL), query(FUNCTIONS_SQL), query(SETTINGS_SQL)]);
  return buildCatalog(rels, fns, settings[0]);
}

/**
 * The start-up lint: text columns of tables that have masked columns, not masked themselves and not
 * listed in the connection's `unmasked` (reviewed, left in clear on purpose). Free text next to masked
 * identifiers (a visit's notes) tends to repeat them; the operator decides, the agent only says so.
 * Columns as `schema.table.column`, in catalog order.
 */
export function unmaskedTextColumns(catalog: Catalog, masked: Iterable<string>, leftInClear: Iterable<string>): string[] {
  const maskedSet = new Set(masked);
  const clear = new Set(leftInClear);
  const tables = new Set([...maskedSet].map((c) => c.slice(0, c.lastIndexOf('.'))));
  const found: string[] = [];
  for (const key of tables) {
    const rel = catalog.relations.get(key);
    if (!rel || (rel.kind !== 'r' && rel.kind !== 'p')) continue;
    for (const col of rel.columns) {
      const name = `${key}.${col.name}`;
      if (catalog.textTypeOids.has(col.typeOid) && !maskedSet.has(name) && !clear.has(name)) found.push(name);
    }
  }
  return found;
}
