/**
 * The libpg-query wrapper: the real PostgreSQL 18 grammar (WASM), split into statements with the exact
 * text of each, plus a small LRU used to cache decisions by statement text.
 */
import { fingerprintSync, loadModule, parseSync, scanSync } from 'libpg-query';

/** A node as libpg-query's JSON has it: `{ SelectStmt: {...} }` (type name → body). */
export type AstNode = Record<string, unknown>;

export interface ParsedStatement {
  /** node type, e.g. `SelectStmt` */
  kind: string;
  body: Record<string, unknown>;
  /** the statement's own text, cut from the input by the parser's byte offsets */
  text: string;
}

export type ParseOutcome = { ok: true; statements: ParsedStatement[] } | { ok: false; error: string };

let loaded: Promise<void> | undefined;

/** Load the WASM module once; the sync API is unusable before this resolves. */
export function loadParser(): Promise<void> {
  loaded ??= loadModule();
  return loaded;
}

// A lone surrogate cannot be encoded as UTF-8; the bytes sent upstream would differ from the text parsed.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

export function parseStatements(sql: string): ParseOutcome {
  // The C parser stops at NUL, PostgreSQL's message framing does too: anything after it would be
  // judged by nobody. The session refuses such messages; refuse here as well (fail closed).
  if (sql.includes('\0')) return { ok: false, error: 'the statement contains a NUL character' };
  if (LONE_SURROGATE.test(sql)) return { ok: false, error: 'the statement is not valid UTF-8' };
  if (sql.length === 0) return { ok: true, statements: [] }; // libpg-query refuses '', PostgreSQL answers EmptyQueryResponse
  let tree: { stmts?: { stmt?: AstNode; stmt_location?: number; stmt_len?: number }[] };
  try {
    tree = parseSync(sql) as typeof tree;
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message : String(err) };
  }
  const bytes = Buffer.from(sql, 'utf8');
  const statements: ParsedStatement[] = [];
  for (const raw of tree.stmts ?? []) {
    const node = raw.stmt;
    if (!node) continue; // an empty statement between semicolons
    const [kind] = Object.keys(node);
    const start = raw.stmt_location ?? 0; // byte offsets, not UTF-16 indexes
    const end = raw.stmt_len ? start + raw.stmt_len : bytes.length;
    statements.push({ kind, body: node[kind] as Record<string, unknown>, text: bytes.subarray(start, end).toString('utf8').trim() });
  }
  return { ok: true, statements };
}

/** libpg-query's fingerprint (constants and comments ignored); undefined when it cannot be computed. */
export function fingerprintOf(text: string): string | undefined {
  try {
    return fingerprintSync(text);
  } catch {
    return undefined;
  }
}

/**
 * The text after the first top-level `keyword` token: the query of `PREPARE p(int) AS …` ('AS') or of
 * `DECLARE c CURSOR FOR …` ('FOR'), so approvers and the audit see the statement that will run.
 */
export function textAfterKeyword(text: string, keyword: string): string | undefined {
  try {
    let depth = 0;
    for (const t of scanSync(text).tokens) {
      if (t.text === '(') depth++;
      else if (t.text === ')') depth--;
      else if (depth === 0 && t.keywordKind > 0 && t.text.toUpperCase() === keyword)
        return Buffer.from(text, 'utf8').subarray(t.end).toString('utf8').trim();
    }
  } catch {
    // fall through: the caller keeps the whole text
  }
  return undefined;
}

/** A Map-based LRU: get() refreshes, set() evicts the oldest entry beyond `max`. */
export class Lru<V> {
  readonly #map = new Map<string, V>();
  constructor(readonly max: number) {}
  get(key: string): V | undefined {
    const v = this.#map.get(key);
    if (v !== undefined) {
      this.#map.delete(key);
      this.#map.set(key, v);
    }
    return v;
  }
  set(key: string, value: V): void {
    this.#map.delete(key);
    this.#map.set(key, value);
    if (this.#map.size > this.max) this.#map.delete(this.#map.keys().next().value as string);
  }
  get size(): number {
    return this.#map.size;
  }
  clear(): void {
    this.#map.clear();
  }
}
