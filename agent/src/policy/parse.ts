/**
 * The libpg-query wrapper: the real PostgreSQL 18 grammar (WASM), split into statements with the exact
 * text of each; the literal-free skeleton of a text (the real scanner's tokens, literals abstracted) under
 * which analyses that read no constant are cached; and a small LRU.
 *
 * Why a skeleton is a safe key: two texts with the same skeleton have the same tokens but for the values
 * of their literal tokens, so the grammar builds the same tree but for what those values went into. A
 * parse is marked `bound` only when every literal token went into an A_Const (whose value the rules see
 * only through constants.ts, counted); a literal that went anywhere else (FETCH 5, a COPY option,
 * float(30), UESCAPE '!') leaves the statement unbound, and it is cached by exact text only.
 */
import { fingerprintSync, loadModule, parseSync, scanSync } from 'libpg-query';
import { hideConstant, type ConstantReads } from './constants.js';
import type { RawStatement } from './parse-off-thread.js';

/** A node as libpg-query's JSON has it: `{ SelectStmt: {...} }` (type name → body). */
export type AstNode = Record<string, unknown>;

export interface ParsedStatement {
  /** node type, e.g. `SelectStmt` */
  kind: string;
  /** the tree, A_Const values hidden behind constants.ts */
  body: Record<string, unknown>;
  /** the statement's own text, cut from the input by the parser's byte offsets */
  text: string;
  /** byte span of the text in the input, before trimming */
  start: number;
  end: number;
  /** every literal token of the statement went into an A_Const (see the module comment) */
  bound: boolean;
  /** constant values read from this parse's tree so far (shared by the statements of one parse) */
  reads: ConstantReads;
}

export type ParseOutcome = { ok: true; statements: ParsedStatement[] } | { ok: false; error: string };

let loaded: Promise<void> | undefined;

/** Load the WASM module once; the sync API is unusable before this resolves. */
export function loadParser(): Promise<void> {
  loaded ??= loadModule().then(checkTokenTypes);
  return loaded;
}

// ── Skeletons ───────────────────────────────────────────────────────────────────────────────────

/** Literal token types of libpg-query 18's scanner (checked at load: a different build disables skeletons). */
const LITERAL_TOKENS = new Map<number, string>([[260, 'F'], [261, 'S'], [262, 'U'], [263, 'B'], [264, 'X'], [266, 'I']]);
let skeletonsUsable = false;

function checkTokenTypes(): void {
  try {
    const types = scanSync("SELECT 1.5, 'a', U&'b', B'1', X'f', 2").tokens.filter((t) => t.text !== ',').slice(1).map((t) => t.tokenType);
    skeletonsUsable = JSON.stringify(types) === '[260,261,262,263,264,266]';
  } catch {
    skeletonsUsable = false;
  }
}

/**
 * A text's literal-free skeleton: its exact bytes with each literal token (numbers, strings of every
 * quoting, bit strings) replaced by its token type, token boundaries marked. Two texts share a key
 * only if the real scanner reads the same tokens from both, literal values aside.
 */
export interface Skeleton {
  key: string;
  /** byte offsets of the literal tokens: start0, end0, start1, end1, … */
  literals: number[];
  /** per literal, the offset of a `-` or `+` token right before it (-1: none) */
  signs: number[];
  /** every token: byte offsets and its part of the key (`T<text>`, or `L<type>` for a literal) */
  tokens: readonly ScannedToken[];
}

interface ScannedToken {
  start: number;
  end: number;
  tag: string;
}

export function skeletonOf(sql: string): Skeleton | undefined {
  const known = knownSkeletons?.get(sql);
  if (known) return known;
  if (sql.length > MAX_TEMPLATE_TEXT) return scanSkeleton(sql);
  const hint = templateHint(sql);
  const template = templates?.get(hint);
  const fast = template && fromTemplate(template, sql);
  if (fast) return (skeletonStats.template++, fast);
  skeletonStats.scanned++;
  const scanned = scanSkeleton(sql);
  if (scanned) {
    const t = makeTemplate(sql, scanned);
    if (t) (templates ??= new Lru(64)).set(hint, t);
  }
  return scanned;
}

// ── Templates: the skeleton of a text that differs from a scanned one only in integer literals ────
//
// pgbench, ORMs and jobs send one text over and over with other numbers in it; scanning each costs more
// than the rest of the decision. A template is a scanned ASCII text whose integer literals (ICONST,
// decimal digits only) stand between characters that no token can extend across: such a literal is
// read by the scanner as exactly its run of digits, whatever the digits, and the tokens before and after
// it are read the same. A text equal to the template outside those runs, each run 1–10 digits within
// int4 (beyond, the scanner reads a FCONST), therefore has the template's tokens at shifted offsets: the
// same key, the same token types. Anything else (another byte, a non-ASCII text, a run out of range)
// falls back to the scanner. literal-cache.test.ts compares this with the scanner on mutated texts.

/** How skeletons were made (tests and the bench read it). */
export const skeletonStats = { template: 0, scanned: 0 };

/** Texts longer than this are scanned (a template pays off on the short texts sent repeatedly). */
const MAX_TEMPLATE_TEXT = 8 * 1024;
/** Bytes that end any token before a digit and that no digit run extends into (ASCII; no `.`, `$`, `_`, letters, quotes). */
const BOUNDARY = new Uint8Array(128);
for (const c of ' \t\n\r(),;=<>+-*/[]') BOUNDARY[c.charCodeAt(0)] = 1;

interface Template {
  /** fixed text before each variable literal, and after the last */
  fixed: string[];
  /** the template's own skeleton */
  skeleton: Skeleton;
  /** byte offsets of the variable literals in the template: start0, end0, … */
  spans: number[];
}

/** The lookup key of a text's template: its digit runs blanked. Only a hint: fromTemplate checks every byte. */
function templateHint(sql: string): string {
  return sql.replace(/[0-9]+/g, '0');
}

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 127) return false;
  return true;
}

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

function makeTemplate(sql: string, sk: Skeleton): Template | undefined {
  if (!isAscii(sql)) return undefined;
  const spans: number[] = [];
  const fixed: string[] = [];
  let at = 0;
  for (const t of sk.tokens) {
    if (t.tag !== 'LI') continue;
    const before = t.start === 0 ? 1 : BOUNDARY[sql.charCodeAt(t.start - 1)];
    const after = t.end === sql.length ? 1 : BOUNDARY[sql.charCodeAt(t.end)];
    let digits = t.end > t.start && t.end - t.start <= 10;
    for (let i = t.start; digits && i < t.end; i++) digits = isDigit(sql.charCodeAt(i));
    // The template's own literal must be an ICONST too (int4), as every text matched to it is.
    if (!before || !after || !digits || Number(sql.slice(t.start, t.end)) > INT4_MAX) continue;
    fixed.push(sql.slice(at, t.start));
    spans.push(t.start, t.end);
    at = t.end;
  }
  if (spans.length === 0) return undefined;
  fixed.push(sql.slice(at));
  return { fixed, skeleton: sk, spans };
}

const INT4_MAX = 2147483647;

/** The skeleton of `sql` from a template, or undefined unless `sql` matches it as described above. */
function fromTemplate(t: Template, sql: string): Skeleton | undefined {
  const { fixed, spans } = t;
  // shift[k]: how far offsets from the end of variable literal k on move (from the template to `sql`)
  const shift: number[] = [];
  let si = 0;
  for (let k = 0; k < spans.length / 2; k++) {
    const f = fixed[k];
    if (!sql.startsWith(f, si)) return undefined;
    si += f.length;
    const from = si;
    let value = 0;
    while (si < sql.length && isDigit(sql.charCodeAt(si))) {
      value = value * 10 + sql.charCodeAt(si) - 48;
      if (value > INT4_MAX) return undefined;
      si++;
    }
    if (si === from) return undefined;
    shift.push(si - spans[2 * k + 1]);
  }
  const last = fixed[fixed.length - 1];
  if (sql.length - si !== last.length || !sql.endsWith(last)) return undefined;
  const map = (offset: number): number => {
    let k = 0;
    while (k < shift.length && spans[2 * k + 1] <= offset) k++;
    return k === 0 ? offset : offset + shift[k - 1];
  };
  const sk = t.skeleton;
  return {
    key: sk.key,
    literals: sk.literals.map(map),
    signs: sk.signs.map((o) => (o < 0 ? o : map(o))),
    tokens: sk.tokens.map((tok) => ({ start: map(tok.start), end: map(tok.end), tag: tok.tag })),
  };
}

/** The skeleton by the scanner, never from a remembered statement (the tests compare both). */
export function scanSkeleton(sql: string): Skeleton | undefined {
  if (!skeletonsUsable || sql.includes('\0')) return undefined;
  let scanned: { start: number; end: number; tokenType: number }[];
  try {
    scanned = scanSync(sql).tokens;
  } catch {
    return undefined;
  }
  const cut = cutter(sql);
  const tokens = scanned.map((t) => {
    const literal = LITERAL_TOKENS.get(t.tokenType);
    return { start: t.start, end: t.end, tag: literal ? `L${literal}` : `T${cut(t.start, t.end)}` };
  });
  return skeletonFrom(cut, tokens, 0, Buffer.byteLength(sql, 'utf8'));
}

/** Cuts a text by byte offsets (string slices when it is ASCII). */
function cutter(sql: string): (a: number, b: number) => string {
  if (Buffer.byteLength(sql, 'utf8') === sql.length) return (a, b) => sql.slice(a, b);
  const buf = Buffer.from(sql, 'utf8');
  return (a, b) => buf.toString('utf8', a, b);
}

/** The skeleton of the bytes [from, to) of a text, given its tokens there (offsets rebased on `from`). */
function skeletonFrom(cut: (a: number, b: number) => string, tokens: readonly ScannedToken[], from: number, to: number): Skeleton {
  const literals: number[] = [];
  const signs: number[] = [];
  const own: ScannedToken[] = [];
  let key = '';
  let at = from;
  let prev: ScannedToken | undefined;
  for (const t of tokens) {
    key += `${cut(at, t.start)}\0${t.tag}\0`;
    if (t.tag[0] === 'L') {
      literals.push(t.start - from, t.end - from);
      signs.push(prev && (prev.tag === 'T-' || prev.tag === 'T+') ? prev.start - from : -1);
    }
    own.push(from === 0 ? t : { start: t.start - from, end: t.end - from, tag: t.tag });
    prev = t;
    at = t.end;
  }
  key += cut(at, to);
  return { key, literals, signs, tokens: own };
}

/**
 * Skeletons of statement texts cut from a text already scanned, so that the lineage, asked for a
 * statement the policy just judged, does not scan it again (the tokens of a range that starts and ends
 * on token boundaries are the tokens the scanner reads from that range alone).
 */
let knownSkeletons: Lru<Skeleton> | undefined;
/** Templates of texts scanned lately, by templateHint (a hint: fromTemplate checks every byte). */
let templates: Lru<Template> | undefined;

/** The statement text [start, end) of `sql` (trimmed as parseStatements trims), remembered with its skeleton. */
export function rememberStatementSkeleton(sql: string, skeleton: Skeleton, start: number, end: number): void {
  const raw = cutter(sql)(start, end);
  const text = raw.trim();
  if (text.length === 0 || text === sql) return;
  const from = start + Buffer.byteLength(raw.slice(0, raw.length - raw.trimStart().length), 'utf8');
  const to = from + Buffer.byteLength(text, 'utf8');
  const inside: ScannedToken[] = [];
  for (const t of skeleton.tokens) {
    if (t.end <= from || t.start >= to) continue;
    if (t.start < from || t.end > to) return; // trimming cut into a token: let the scanner judge it
    inside.push(t);
  }
  knownSkeletons ??= new Lru(64);
  knownSkeletons.set(text, skeletonFrom(cutter(sql), inside, from, to));
}

/**
 * Maps byte offsets of the text a skeleton was taken from to those of another text with the same
 * skeleton: everything but literal tokens is the same bytes in the same order.
 */
export function offsetMap(from: readonly number[], to: readonly number[]): (offset: number) => number {
  // shifts[k]: how far an offset after the first k literals moves
  const shifts = [0];
  for (let i = 0; i < from.length; i += 2) shifts.push(shifts[shifts.length - 1] + to[i + 1] - to[i] - (from[i + 1] - from[i]));
  return (offset) => offset + shifts[countBefore(from, offset, 1)];
}

/** How many literals of `lits` (start, end pairs) have their `field` (0 start, 1 end) at or before `offset`. */
function countBefore(lits: readonly number[], offset: number, field: 0 | 1): number {
  let lo = 0;
  let hi = lits.length / 2;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (lits[2 * mid + field] <= offset) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Text of `sql` between two byte offsets, trimmed (as parseStatements cuts statements). */
export function cutText(sql: string, start: number, end: number): string {
  if (Buffer.byteLength(sql, 'utf8') === sql.length) return sql.slice(start, end).trim();
  return Buffer.from(sql, 'utf8').subarray(start, end).toString('utf8').trim();
}

// ── Parsing ─────────────────────────────────────────────────────────────────────────────────────

// A lone surrogate cannot be encoded as UTF-8; the bytes sent upstream would differ from the text parsed.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Parse `sql` into statements. `skeleton` (of the same text) lets each statement say whether it is bound;
 * without it none is. The parse of a text is kept briefly so that the masking lineage, asking for a
 * statement of a text the policy just parsed, does not parse it again.
 */
export function parseStatements(sql: string, skeleton?: Skeleton): ParseOutcome {
  recentStatements ??= new Lru(64);
  const recent = recentStatements.get(sql);
  if (recent && (!skeleton || recent.skeleton)) return { ok: true, statements: [recent.statement] };
  const parsed = parseUncached(sql, skeleton);
  if (parsed.ok && sql.length <= MAX_RECENT_TEXT) {
    for (const s of parsed.statements) {
      // A statement alone: the same tree, but for locations (the rules never read them).
      recentStatements.set(s.text, { statement: { ...s, start: 0, end: Buffer.byteLength(s.text, 'utf8') }, skeleton: skeleton !== undefined });
    }
  }
  return parsed;
}

const MAX_RECENT_TEXT = 64 * 1024;
let recentStatements: Lru<{ statement: ParsedStatement; skeleton: boolean }> | undefined;

/** Why a text cannot be parsed faithfully, if it cannot. */
export function unparsable(sql: string): string | undefined {
  // The C parser stops at NUL, PostgreSQL's message framing does too: anything after it would be
  // judged by nobody. The session refuses such messages; refuse here as well (fail closed).
  if (sql.includes('\0')) return 'the statement contains a NUL character';
  if (LONE_SURROGATE.test(sql)) return 'the statement is not valid UTF-8';
  return undefined;
}

/**
 * One statement of a text parsed on the worker (parse-off-thread.ts). Never bound: large texts are
 * not cached by skeleton.
 */
export function statementFromJson(bytes: Buffer, raw: RawStatement, reads: ConstantReads): ParsedStatement {
  const node = JSON.parse(raw.json) as AstNode;
  hideConstants(node, reads);
  const [kind] = Object.keys(node);
  const end = raw.len ? raw.start + raw.len : bytes.length;
  return { kind, body: node[kind] as Record<string, unknown>, text: bytes.subarray(raw.start, end).toString('utf8').trim(), start: raw.start, end, bound: false, reads };
}

function parseUncached(sql: string, skeleton?: Skeleton): ParseOutcome {
  const why = unparsable(sql);
  if (why) return { ok: false, error: why };
  if (sql.length === 0) return { ok: true, statements: [] }; // libpg-query refuses '', PostgreSQL answers EmptyQueryResponse
  let tree: { stmts?: { stmt?: AstNode; stmt_location?: number; stmt_len?: number }[] };
  try {
    tree = parseSync(sql) as typeof tree;
  } catch (err) {
    return { ok: false, error: err instanceof Error ? err.message : String(err) };
  }
  const bytes = Buffer.from(sql, 'utf8');
  const reads: ConstantReads = { count: 0 };
  const constants = hideConstants(tree, reads);
  const unbound = skeleton ? unboundLiterals(skeleton, constants) : [];
  const statements: ParsedStatement[] = [];
  for (const raw of tree.stmts ?? []) {
    const node = raw.stmt;
    if (!node) continue; // an empty statement between semicolons
    const [kind] = Object.keys(node);
    const start = raw.stmt_location ?? 0; // byte offsets, not UTF-16 indexes
    const end = raw.stmt_len ? start + raw.stmt_len : bytes.length;
    const bound = skeleton !== undefined && countBefore(unbound, end - 1, 0) === countBefore(unbound, start - 1, 0);
    statements.push({ kind, body: node[kind] as Record<string, unknown>, text: bytes.subarray(start, end).toString('utf8').trim(), start, end, bound, reads });
  }
  return { ok: true, statements };
}

/** Hide the value of every A_Const of the tree (constants.ts); returns the constants' locations. */
function hideConstants(tree: unknown, reads: ConstantReads): Set<number> {
  const locations = new Set<number>();
  const stack: unknown[] = [tree];
  while (stack.length > 0) {
    const v = stack.pop();
    if (Array.isArray(v)) {
      for (const x of v) if (typeof x === 'object' && x !== null) stack.push(x);
    } else if (typeof v === 'object' && v !== null) {
      const o = v as Record<string, unknown>;
      for (const k of Object.keys(o)) {
        const x = o[k];
        if (typeof x !== 'object' || x === null) continue;
        if (k === 'A_Const' && !Array.isArray(x)) {
          const body = x as Record<string, unknown>;
          locations.add(typeof body.location === 'number' ? body.location : 0);
          o[k] = hideConstant(body, reads);
        } else stack.push(x);
      }
    }
  }
  return locations;
}

/**
 * Starts of the literal tokens that are not where an A_Const is: at the token, or at a sign just
 * before it (`-5` folds into one constant placed at the `-`).
 */
function unboundLiterals(skeleton: Skeleton, constants: ReadonlySet<number>): number[] {
  const out: number[] = [];
  const lits = skeleton.literals;
  for (let i = 0; i < lits.length; i += 2) {
    if (constants.has(lits[i])) continue;
    const sign = skeleton.signs[i / 2];
    if (sign < 0 || !constants.has(sign)) out.push(lits[i], lits[i + 1]);
  }
  return out;
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
