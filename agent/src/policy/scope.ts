/**
 * P11 (SECURITY-POLICY.md): minimum necessary, per identity. A connection's `scopes` say what each kind
 * of identity may read (relations, or some of their columns) and write; the first scope whose `match`
 * fits the session's identity applies for the whole session.
 *
 *   statement text ──reads mode lineage (masking/lineage.ts, cached by text, identity-free)──▶ reads, writes
 *                  ──checkScope(reads, the session's scope, catalog)──▶ undefined | the first read outside it
 *
 * Judged on lineage, never on names: a read is a base relation's rows or column reached through any
 * alias, CTE, sub-query, set operation, whole-row reference, cursor or prepared statement, and through
 * views and materialized views. A view named in the scope is in scope as a relation of its own (like a
 * GRANT on a view: the operator vouches for its definition); a view not named is in scope only if
 * everything its definition reads is. A grant on a parent table covers its partitions and inheritance
 * children (their rows are the parent's rows), for the parent's columns. Anything the analysis cannot see
 * into (a user function not in `policy.allowedFunctions`, a relation the catalog does not know, a
 * statement kind lineage does not model) is outside every scope (fail closed).
 *
 * Kept apart from the policy engine's cached analysis: the engine's verdicts do not depend on who asks;
 * this check runs after it, on every statement, with the session's scope.
 */
import { parseReadGrant, type ConnectionConfig } from '../../../shared/config/schema.js';
import { ruleMatches, type Principal } from '../identity/access.js';
import type { Catalog, CatalogRelation } from '../masking/catalog.js';
import { splitRead, VIA, type Lineage, type StatementReads } from '../masking/lineage.js';
import type { StatementFacts } from './engine.js';
import { block, type Verdict } from './rules.js';

type ScopeConfig = NonNullable<ConnectionConfig['scopes']>[number];

/** The scope applying to one session, compiled for lookups. */
export interface AppliedScope {
  /** The scope's name, or `scopes[i]`; `(none)` when the connection has scopes and none matches. */
  readonly name: string;
  /** relation key → the columns granted, or 'all' */
  readonly read: ReadonlyMap<string, ReadonlySet<string> | 'all'>;
  readonly write: ReadonlySet<string>;
  readonly maxRows?: number;
  /** `schema.table.column` read in clear by this identity */
  readonly unmask: readonly string[];
  /** As configured, for `hoopctl whoami` and the audit trail. */
  readonly config: { read: string[]; write: string[]; maxRows?: number; unmask: string[] };
}

/** Builtin functions whose opaque result holds no table data: a scoped identity may call them. */
const HARMLESS_UNKNOWNS = new Set(['?function:current_setting', '?recursive-cte', '?explain-analyze']);

/** The scope for `who` on a connection; undefined when the connection has no scopes (P11 does not apply). */
export function scopeFor(conn: Pick<ConnectionConfig, 'scopes'>, who: Principal): AppliedScope | undefined {
  if (!conn.scopes) return undefined;
  const i = conn.scopes.findIndex((s) => ruleMatches(s.match, who));
  if (i < 0) return compile({ name: '(none)', match: {}, read: [], write: [], unmask: [] }, '(none)');
  return compile(conn.scopes[i], conn.scopes[i].name ?? `scopes[${i}]`);
}

function compile(s: ScopeConfig, name: string): AppliedScope {
  const read = new Map<string, Set<string> | 'all'>();
  for (const text of s.read) {
    const g = parseReadGrant(text)!; // validated with the config
    const prev = read.get(g.relation);
    if (prev === 'all') continue;
    if (!g.columns) read.set(g.relation, 'all');
    else read.set(g.relation, new Set([...(prev ?? []), ...g.columns]));
  }
  return {
    name,
    read,
    write: new Set(s.write.map((w) => parseReadGrant(w)!.relation)),
    maxRows: s.maxRows,
    unmask: s.unmask,
    config: { read: s.read, write: s.write, ...(s.maxRows !== undefined ? { maxRows: s.maxRows } : {}), unmask: s.unmask },
  };
}

/**
 * The first read or write of `r` outside `scope` as a P11.scope block, or undefined when all are in it.
 * `catalog` tells views from tables and parents from children.
 */
export function checkScope(r: StatementReads, scope: AppliedScope, catalog: Pick<Catalog, 'relations'>): Verdict | undefined {
  const refuse = (what: string) => block('P11.scope', `${what} is outside the scope "${scope.name}" of this identity.`);
  if (!r.ok) return refuse(`This statement cannot be checked against the scope (${r.reason}), so it`);
  for (const w of r.writes) {
    if (!granted(w, undefined, scope, catalog, 'write')) return refuse(`Writing ${w}`);
  }
  for (const read of r.reads) {
    const outside = outsideScope(read, scope, catalog);
    if (outside) return refuse(outside);
  }
  return undefined;
}

/** What `read` reads outside the scope (a sentence subject), or undefined. */
function outsideScope(read: string, scope: AppliedScope, catalog: Pick<Catalog, 'relations'>): string | undefined {
  const path = read.split(VIA);
  const leaf = path[path.length - 1];
  // A view the scope names vouches for everything read through it.
  for (let i = 0; i < path.length - 1; i++) if (granted(path[i], undefined, scope, catalog, 'read')) return undefined;
  const through = path.length > 1 ? ` (through ${path.slice(0, -1).join(', ')})` : '';
  if (leaf.startsWith('?')) {
    if (HARMLESS_UNKNOWNS.has(leaf)) return undefined;
    const fn = /^\?function:(.+)$/.exec(leaf);
    if (fn) {
      return fn[1].includes('.')
        ? `Calling ${fn[1]}${through}, a function whose body the gateway cannot analyse (list it in policy.allowedFunctions to vouch for it),`
        : `Calling ${fn[1]}${through}, whose result the gateway cannot trace to a relation,`;
    }
    return `Reading what the gateway cannot trace to a relation (${leaf.slice(1)})${through}`;
  }
  const { relation, column } = splitRead(leaf);
  if (granted(relation, column, scope, catalog, 'read')) return undefined;
  const rel = catalog.relations.get(relation);
  // A view not named in the scope: its own columns are what its definition reads, checked beside this.
  // A view named with some columns: only those.
  if (rel && (rel.kind === 'v' || rel.kind === 'm') && !scope.read.has(relation)) return undefined;
  return column === undefined ? `Reading ${relation}${through}` : `Reading ${relation}.${column}${through}`;
}

/** Whether `relation` (or `column` of it) is granted, by name or through a parent table (partitions, inheritance). */
function granted(relation: string, column: string | undefined, scope: AppliedScope, catalog: Pick<Catalog, 'relations'>, kind: 'read' | 'write', seen = new Set<string>()): boolean {
  if (seen.has(relation)) return false;
  seen.add(relation);
  if (kind === 'write' ? scope.write.has(relation) : grants(scope.read.get(relation), column)) return true;
  const rel: CatalogRelation | undefined = catalog.relations.get(relation);
  return !!rel?.parents.some((p) => {
    // a parent's grant covers a child's column only if the parent has that column too
    const parent = catalog.relations.get(p);
    if (column !== undefined && parent && !parent.columns.some((c) => c.name === column)) return false;
    return granted(p, column, scope, catalog, kind, seen);
  });
}

function grants(g: ReadonlySet<string> | 'all' | undefined, column: string | undefined): boolean {
  if (g === undefined) return false;
  return g === 'all' || column === undefined || g.has(column);
}

/** `schema.table.column` entries of `unmask` that `r` reads (for the audit record of the exception). */
export function unmaskedReads(r: StatementReads, scope: AppliedScope): string[] {
  if (!r.ok || scope.unmask.length === 0) return [];
  const hit = new Set<string>();
  for (const read of r.reads) {
    const { relation, column } = splitRead(read.split(VIA).pop()!);
    if (column !== undefined && scope.unmask.includes(`${relation}.${column}`)) hit.add(`${relation}.${column}`);
  }
  return [...hit];
}

/** Where a session's scope check gets its reads-mode lineage (masking/connection.ts). */
export interface ReadsSource {
  currentReads(): Promise<Lineage>;
  invalidate(): void;
}

/**
 * One session's scope: the scope itself and the reads-mode lineage over the connection's catalog,
 * loaded before the session's first statement (no statement is judged without it: fail closed).
 */
export class SessionScope {
  #lineage?: Lineage;

  constructor(
    readonly applied: AppliedScope,
    private readonly source: ReadsSource,
  ) {}

  /** Loads (or, after `invalidate`, reloads) the catalog. Rejects when it cannot be read. */
  async ready(): Promise<void> {
    this.#lineage = await this.source.currentReads();
  }

  /** After DDL: the next `ready()` reads the catalog again. */
  async reload(): Promise<void> {
    this.source.invalidate();
    await this.ready();
  }

  get catalog(): Catalog | undefined {
    return this.#lineage?.catalog;
  }

  /**
   * The P11 verdict for what these statements run (EXECUTE and FETCH through `inner`, the statement
   * they run), or undefined when everything they read and write is in scope.
   */
  judge(statements: readonly StatementFacts[]): Verdict | undefined {
    const lineage = this.#lineage;
    if (!lineage) return block('P11.scope', 'The scope of this identity cannot be checked before the catalog is loaded.');
    for (const text of texts(statements)) {
      const v = checkScope(lineage.readsSql(text), this.applied, lineage.catalog);
      if (v) return v;
    }
    return undefined;
  }

  /** Columns of `unmask` these statements read (the audit records that the exception applied). */
  unmasked(statements: readonly StatementFacts[]): string[] {
    const lineage = this.#lineage;
    if (!lineage || this.applied.unmask.length === 0) return [];
    const out = new Set<string>();
    for (const text of texts(statements)) for (const c of unmaskedReads(lineage.readsSql(text), this.applied)) out.add(c);
    return [...out];
  }
}

/** The texts of statements and of what they run (a PREPARE's query, an EXECUTE's prepared statement, a FETCH's cursor). */
function texts(statements: readonly StatementFacts[]): string[] {
  const out: string[] = [];
  const visit = (f: StatementFacts | undefined): void => {
    if (!f) return;
    if (f.text) out.push(f.text);
    visit(f.inner);
  };
  for (const f of statements) visit(f);
  return out;
}
