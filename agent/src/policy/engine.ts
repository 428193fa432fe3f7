/**
 * The policy engine: SQL text → per-statement facts and verdicts → one Decision. Pure: no I/O, no clock.
 *
 *   text ──parse (libpg-query)──▶ statements ──judge each──▶ StatementFacts ──strictest──▶ Decision
 *                                   │ parse error → block P3.parse-error
 *   judge = verdict of the statement node itself (rules.ts)
 *         ⊕ verdicts of every nested statement, function call, relation, operator found by the walk
 *         ⊕ P7 predicate check (strict by default: on lineage via the PredicateOracle once the catalog
 *           is loaded, by column names before) ; holds listed in approvalFreeFingerprints → allow
 *
 * The analysis of a text is cached (LRU): under its literal-free skeleton (parse.ts) when no rule read a
 * constant's value (constants.ts) and every literal is a constant, else under its exact text. Statements that refer to session state (EXECUTE, FETCH,
 * MOVE) are resolved by a PolicySession (session.ts); `classify` resolves them against an empty state.
 */
import {
  cutText, fingerprintOf, loadParser, Lru, offsetMap, parseStatements, rememberStatementSkeleton, skeletonOf, statementFromJson, textAfterKeyword,
  unparsable, type ParsedStatement, type Skeleton,
} from './parse.js';
import type { ConstantReads } from './constants.js';
import { parseOffThread } from './parse-off-thread.js';
import { constantType, stringConstant } from './constants.js';
import { findPredicateLeak, maskedColumns, type MaskedColumns } from './predicates.js';
import {
  allow, asVerdict, block, explainAnalyzes, functionVerdict, operatorVerdict, relationVerdict, statementVerdict, stricter,
  tablesampleVerdict, type Action, type FunctionLists, type Verdict,
} from './rules.js';
import { PolicySession, type NameTable } from './session.js';
import { walkTree } from './walk.js';

export interface PolicyOptions {
  /** more function names (or `prefix*`) to block */
  extraBlockedFunctions?: string[];
  /** functions an operator vouches for: `get_patient` or `public.get_patient` */
  allowedFunctions?: string[];
  /** libpg-query fingerprints of statements that may run without approval (never overrides a block) */
  approvalFreeFingerprints?: string[];
  /** P7 strict profile (default on): only equality / IN / IS NULL on masked columns in predicates */
  strictPredicates?: boolean;
  /**
   * P7 on lineage: the connection's masking analysis once its catalog is loaded (views, matviews, CTEs,
   * VALUES, aliases resolved). Until then, and without it, P7 judges by column names (predicates.ts).
   */
  predicates?: () => PredicateOracle | undefined;
  /** `schema.table.column`, used by P7 */
  maskedColumns?: string[];
  /** decision cache size (entries); default 5,000 */
  cacheSize?: number;
}

/** Judges P7 on a statement's lineage: the first use of a masked-derived value P7 refuses, if any. */
export interface PredicateOracle {
  predicateLeak(kind: string, body: Record<string, unknown>): string | undefined;
}

export interface StatementFacts {
  /** node type, e.g. `SelectStmt` */
  readonly kind: string;
  /** this statement's own SQL text */
  readonly text: string;
  readonly action: Action;
  readonly rule: string;
  readonly reason: string;
  /** can run inside a READ ONLY transaction (P8); false for writes, DDL and row locks */
  readonly readOnly: boolean;
  /** SELECT … FOR UPDATE/SHARE: allowed, but PostgreSQL refuses it in a READ ONLY transaction */
  readonly locksRows: boolean;
  /** contains `$n` parameters */
  readonly hasParams: boolean;
  /** relations as written, schema-qualified when they were (`public.patients`, `patients`); CTEs left out */
  readonly relations: readonly string[];
  /** functions called, as written (`pg_catalog.lower`, `get_patient`) */
  readonly functions: readonly string[];
  /** PREPARE name AS … */
  readonly preparedName?: string;
  /** DECLARE name CURSOR FOR … */
  readonly cursorName?: string;
  /** DECLARE … WITH HOLD: the cursor outlives its transaction */
  readonly holdable?: boolean;
  /** EXECUTE name */
  readonly executesPrepared?: string;
  /** FETCH / MOVE name */
  readonly fetchesCursor?: string;
  /** DEALLOCATE name ('*' for ALL) */
  readonly deallocates?: string;
  /** CLOSE name ('*' for ALL) */
  readonly closesCursor?: string;
  /** DISCARD ALL: every prepared statement and cursor is gone */
  readonly discardsAll?: boolean;
  /** COMMIT / ROLLBACK / ABORT / END: non-holdable cursors are gone */
  readonly endsTransaction?: boolean;
  /** Transaction control (P8): `begin` opens a block, `end` ends it (COMMIT, ROLLBACK, PREPARE TRANSACTION),
   * `chain` ends it and opens the next (… AND CHAIN), `inside` acts within one (SAVEPOINT, RELEASE, ROLLBACK TO). */
  readonly controlsTransaction?: 'begin' | 'end' | 'chain' | 'inside';
  /** COMMIT / END (and PREPARE TRANSACTION): the block's work becomes visible, so a reviewed block waits here. */
  readonly commits?: boolean;
  /** BEGIN / START TRANSACTION naming its access mode (policy lets only READ ONLY through). */
  readonly setsAccessMode?: boolean;
  /** Calls something whose effects may escape a transaction's rollback: a sequence change, an unknown
   * function or procedure. A reviewed transaction cannot take it back, so it is refused there. */
  readonly escapesRollback?: boolean;
  /** EXPLAIN ANALYZE: the inner statement runs */
  readonly analyzes?: boolean;
  /** the statement inside PREPARE / DECLARE / EXPLAIN, judged on its own; for EXECUTE/FETCH, what runs */
  readonly inner?: StatementFacts;
}

export interface Decision {
  action: Action;
  rule: string;
  reason: string;
  statements: StatementFacts[];
  /** state changes to record once the statements ran (PolicySession.apply) */
  effects?: Effect[];
}

export type Effect =
  | { index: number; op: 'prepare'; name: string; facts: StatementFacts }
  | { index: number; op: 'deallocate'; name: string }
  | { index: number; op: 'declare'; name: string; facts: StatementFacts; holdable: boolean }
  | { index: number; op: 'close'; name: string }
  | { index: number; op: 'discard' }
  | { index: number; op: 'endTransaction' };

/** What the cache keeps for a text. */
export type Analysis = { ok: true; statements: StatementFacts[] } | { ok: false; decision: Decision };

/** A literal-free analysis, kept under its skeleton: texts are cut again from each text that has it. */
interface ShapeEntry {
  statements: StatementFacts[];
  /** the literal offsets of the text it was made from, and its statements' byte spans there */
  literals: readonly number[];
  spans: readonly (readonly [number, number])[];
}

const MAX_CACHED_TEXT = 64 * 1024; // a 2 MB comment-padded statement must not pin 2 MB × 5,000 entries
/** texts longer than this are parsed on a worker thread and judged in slices (prepare) */
const LARGE_TEXT = 64 * 1024;
/** how long judging a large text may hold the event loop before it lets other sessions in (ms) */
const SLICE_MS = 5;
const WRAPPERS = new Set(['ExplainStmt', 'PrepareStmt', 'DeclareCursorStmt']);
const CURSOR_OPT_HOLD = 0x20;

type Body = Record<string, unknown>;

function transactionControl(kind: string, chain: boolean): StatementFacts['controlsTransaction'] {
  if (/^TRANS_STMT_(BEGIN|START)$/.test(kind)) return 'begin';
  if (/^TRANS_STMT_(COMMIT|ROLLBACK)$/.test(kind)) return chain ? 'chain' : 'end';
  if (kind === 'TRANS_STMT_PREPARE') return 'end';
  return 'inside';
}

export class PolicyEngine {
  /** analyses that read a literal (or could not be parsed), by exact text */
  readonly #cache: Lru<Analysis>;
  /** analyses that read none, by skeleton */
  readonly #shapes: Lru<ShapeEntry>;
  /** the last text analysed: the session asks up to three times per message */
  #last?: { sql: string; analysis: Analysis };
  /** large texts prepared off the event loop, until the session asks for them */
  readonly #large = new Lru<Analysis>(2);
  /** large texts being prepared now */
  preparing = 0;
  /** how analyses were found: by exact text, by skeleton, or made (tests and the bench read it) */
  readonly stats = { exact: 0, shape: 0, made: 0 };
  readonly #lists: FunctionLists;
  readonly #approvalFree: ReadonlySet<string>;
  readonly #masked?: MaskedColumns;
  readonly #oracle?: () => PredicateOracle | undefined;
  /** the oracle the cached analyses were judged with: another one (a reloaded catalog) empties the cache */
  #judgedWith?: PredicateOracle;

  constructor(opts: PolicyOptions = {}) {
    this.#cache = new Lru(opts.cacheSize ?? 5000);
    this.#shapes = new Lru(opts.cacheSize ?? 5000);
    this.#lists = { extraBlocked: opts.extraBlockedFunctions ?? [], allowed: opts.allowedFunctions ?? [] };
    this.#approvalFree = new Set(opts.approvalFreeFingerprints ?? []);
    if ((opts.strictPredicates ?? true) && opts.maskedColumns?.length) {
      this.#masked = maskedColumns(opts.maskedColumns);
      this.#oracle = opts.predicates;
    }
  }

  /** Stateless: EXECUTE/FETCH of names not prepared/declared in the same text are blocked. */
  classify(sql: string): Decision {
    return new PolicySession(this).query(sql);
  }

  /**
   * A per-connection judge of statements that name prepared statements, cursors and portals. Given
   * `names`, it reads them from the caller (the agent's session namespace, changed on the server's word).
   */
  session(names?: NameTable): PolicySession {
    return new PolicySession(this, names);
  }

  /** Parse and judge every statement of `sql`; cached by skeleton when literal-free, else by exact text. */
  analyze(sql: string): Analysis {
    const oracle = this.#oracle?.();
    if (oracle !== this.#judgedWith) {
      this.#cache.clear();
      this.#shapes.clear();
      this.#large.clear();
      this.#last = undefined;
      this.#judgedWith = oracle;
    }
    if (this.#last?.sql === sql) return (this.stats.exact++, this.#last.analysis);
    const large = sql.length > LARGE_TEXT ? this.#large.get(sql) : undefined;
    if (large) return large;
    const analysis = this.#lookup(sql);
    if (sql.length <= MAX_CACHED_TEXT) this.#last = { sql, analysis };
    return analysis;
  }

  /** Whether analyze(sql) answers without holding the event loop long (else: await prepare(sql) first). */
  ready(sql: string): boolean {
    return sql.length <= LARGE_TEXT || this.#large.get(sql) !== undefined;
  }

  /**
   * Analyse a large text without holding the event loop: parsed on a worker, its statements judged in
   * slices of a few milliseconds. The analysis is kept for the analyze() calls that follow. If the
   * worker fails, the text is parsed here (slow, never wrong).
   */
  async prepare(sql: string): Promise<void> {
    if (this.ready(sql)) return;
    this.preparing++;
    try {
      const oracle = this.#oracle?.();
      let analysis = await this.#analyzeLarge(sql).catch(() => undefined);
      // A catalog reloaded meanwhile: judge again with it (inline; rare).
      if (!analysis || this.#oracle?.() !== oracle) analysis = this.analyzeUncached(sql);
      this.#large.set(sql, analysis);
    } finally {
      this.preparing--;
    }
  }

  async #analyzeLarge(sql: string): Promise<Analysis> {
    const why = unparsable(sql);
    const raw = why ? { ok: false as const, error: why } : await parseOffThread(sql);
    if (!raw.ok) return parseError(raw.error);
    const bytes = Buffer.from(sql, 'utf8');
    const reads: ConstantReads = { count: 0 };
    const statements: StatementFacts[] = [];
    let slice = performance.now();
    for (const r of raw.statements) {
      const s: ParsedStatement = statementFromJson(bytes, r, reads);
      statements.push(this.#judgeSafely(s.kind, s.body, s.text));
      if (performance.now() - slice > SLICE_MS) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        slice = performance.now();
      }
    }
    return { ok: true, statements };
  }

  #lookup(sql: string): Analysis {
    const hit = this.#cache.get(sql);
    if (hit) return (this.stats.exact++, hit);
    const skeleton = sql.length <= MAX_CACHED_TEXT ? skeletonOf(sql) : undefined;
    const shape = skeleton && this.#shapes.get(skeleton.key);
    if (shape && skeleton) return (this.stats.shape++, retext(shape, skeleton, sql));
    this.stats.made++;
    return this.analyzeUncached(sql, skeleton);
  }

  /** Parse and judge with no cache lookup (the differential test compares it with `analyze`). */
  analyzeUncached(sql: string, skeleton?: Skeleton): Analysis {
    const parsed = parseStatements(sql, skeleton);
    if (!parsed.ok) {
      const analysis = parseError(parsed.error);
      if (sql.length <= MAX_CACHED_TEXT) this.#cache.set(sql, analysis);
      return analysis;
    }
    const reads = parsed.statements[0]?.reads;
    const before = reads?.count ?? 0;
    const statements = parsed.statements.map((s) => this.#judgeSafely(s.kind, s.body, s.text));
    const analysis: Analysis = { ok: true, statements };
    if (skeleton) for (const s of parsed.statements) rememberStatementSkeleton(sql, skeleton, s.start, s.end);
    if (skeleton && parsed.statements.every((s) => s.bound) && (reads?.count ?? 0) === before) {
      this.#shapes.set(skeleton.key, { statements, literals: skeleton.literals, spans: parsed.statements.map((s) => [s.start, s.end] as const) });
    } else if (sql.length <= MAX_CACHED_TEXT) this.#cache.set(sql, analysis);
    return analysis;
  }

  /** A bug or a stack overflow in the rules must refuse the statement, never let it through. */
  #judgeSafely(kind: string, body: Body, text: string): StatementFacts {
    try {
      return this.#judge(kind, body, text, text);
    } catch {
      return { kind, text, ...block('P3.internal', 'The gateway could not check this statement, so it is blocked.'), readOnly: false, locksRows: false, hasParams: false, relations: [], functions: [] };
    }
  }

  /** Judge one statement node: its own verdict, what it contains, P7, and approval-free fingerprints. */
  #judge(kind: string, body: Body, text: string, fingerprintText: string): StatementFacts {
    let verdict = statementVerdict(kind, body);
    const extra: { -readonly [K in keyof StatementFacts]?: StatementFacts[K] } = {};

    const innerNode = WRAPPERS.has(kind) ? Object.entries((body.query ?? {}) as Body)[0] : undefined;
    const inner = innerNode ? this.#judge(innerNode[0], innerNode[1] as Body, innerTextOf(kind, text), fingerprintText) : undefined;
    if (WRAPPERS.has(kind) && !inner) verdict = block('P3.unknown-statement', `${kind} without a statement is not understood.`);
    if (inner) extra.inner = inner;
    if (kind === 'ExplainStmt' && inner) {
      // EXPLAIN ANALYZE runs the statement; plain EXPLAIN only plans it, so only blocks carry over.
      extra.analyzes = explainAnalyzes(body);
      verdict = extra.analyzes ? asVerdict(inner) : inner.action === 'block' ? asVerdict(inner)
        : allow('P5.explain', 'Plain EXPLAIN plans the statement without running it.');
    } else if (kind === 'PrepareStmt' && inner) {
      // Preparing runs nothing; EXECUTE is judged by the prepared statement. A blocked one is refused now.
      extra.preparedName = String(body.name ?? '');
      verdict = inner.action === 'block' ? asVerdict(inner) : allow('P5.prepare', 'PREPARE stores the statement; EXECUTE is judged by it.');
    } else if (kind === 'DeclareCursorStmt' && inner) {
      extra.cursorName = String(body.portalname ?? '');
      extra.holdable = ((Number(body.options) || 0) & CURSOR_OPT_HOLD) !== 0;
      verdict = inner.action === 'allow' ? allow('P5.cursor', 'Cursor over a read.') : asVerdict(inner);
    } else if (kind === 'ExecuteStmt') {
      extra.executesPrepared = String(body.name ?? '');
    } else if (kind === 'FetchStmt') {
      extra.fetchesCursor = String(body.portalname ?? '');
    } else if (kind === 'ClosePortalStmt') {
      extra.closesCursor = typeof body.portalname === 'string' ? body.portalname : '*';
    } else if (kind === 'DeallocateStmt') {
      extra.deallocates = body.isall || typeof body.name !== 'string' ? '*' : body.name;
    } else if (kind === 'DiscardStmt') {
      extra.discardsAll = body.target === 'DISCARD_ALL';
    } else if (kind === 'TransactionStmt') {
      extra.endsTransaction = /^TRANS_STMT_(COMMIT|ROLLBACK|PREPARE)$/.test(String(body.kind));
      extra.controlsTransaction = transactionControl(String(body.kind), body.chain === true);
      extra.commits = /^TRANS_STMT_(COMMIT|PREPARE)$/.test(String(body.kind));
      if (extra.controlsTransaction === 'begin') extra.setsAccessMode = optionNames(body.options).includes('transaction_read_only');
    }

    const tree = walkTree(body, WRAPPERS.has(kind) ? ['query'] : []);
    for (const s of tree.statements) verdict = stricter(verdict, statementVerdict(s.kind, s.body));
    const pinned = kind === 'SelectStmt' ? pinnedSettingName(body) : undefined;
    // `SELECT set_config(name, 'v', false) FROM pg_settings WHERE name = 'x'` (pg_dump) is set_config('x', 'v', false).
    for (const f of tree.functions) {
      const v = functionVerdict(f, this.#lists, pinned);
      if (v.action === 'hold' && ESCAPES_ROLLBACK.has(v.rule)) extra.escapesRollback = true;
      verdict = stricter(verdict, v);
    }
    if (kind === 'CallStmt' || tree.statements.some((s) => s.kind === 'CallStmt')) extra.escapesRollback = true;
    for (const r of tree.relations) verdict = stricter(verdict, relationVerdict(r));
    for (const o of tree.qualifiedOperators) verdict = stricter(verdict, operatorVerdict(o));
    for (const m of tree.tablesampleMethods) verdict = stricter(verdict, tablesampleVerdict(m));
    if (tree.tooDeep) verdict = stricter(verdict, block('P3.too-deep', 'The statement is nested too deeply to be checked.'));

    if (this.#masked && !WRAPPERS.has(kind) && !tree.tooDeep) {
      const leak = this.#judgedWith ? this.#judgedWith.predicateLeak(kind, body) : findPredicateLeak(kind, body, this.#masked);
      if (leak) verdict = stricter(verdict, block('P7.predicate', `Masked columns may only be compared by equality (=, IN) with constants or parameters; nothing else about them may decide which rows come back, their order, grouping or errors (${leak}).`));
    }
    if (verdict.action === 'hold' && this.#approvalFree.size > 0) {
      const fp = fingerprintOf(fingerprintText);
      if (fp && this.#approvalFree.has(fp)) verdict = allow('P4.approval-free', 'This statement shape is approved in advance for this connection.');
    }

    // What runs now: DECLARE's query (at FETCH) and EXPLAIN ANALYZE's statement do; PREPARE's and
    // plain EXPLAIN's do not (PostgreSQL accepts both in a READ ONLY transaction).
    const runsInner = kind === 'DeclareCursorStmt' || (kind === 'ExplainStmt' && extra.analyzes === true);
    const locksRows = tree.locksRows || (runsInner && (inner?.locksRows ?? false));
    return {
      kind, text, ...verdict,
      readOnly: verdict.action === 'allow' && !locksRows && (!runsInner || (inner?.readOnly ?? true)),
      locksRows,
      hasParams: tree.hasParams || (inner?.hasParams ?? false),
      relations: unique([...tree.relations.filter((r) => !r.cte).map((r) => (r.schema ? `${r.schema}.${r.name}` : r.name)), ...(inner?.relations ?? [])]),
      functions: unique([...tree.functions.map((f) => (f.schema ? `${f.schema}.${f.name}` : f.name)), ...(inner?.functions ?? [])]),
      ...extra,
      escapesRollback: extra.escapesRollback === true || inner?.escapesRollback === true,
    };
  }
}

/** Held calls whose effects outlive a rollback (sequences), or cannot be known (functions, procedures). */
const ESCAPES_ROLLBACK = new Set(['P4.function.sequence', 'P4.function.unknown']);

/** The option names of a transaction-mode list (`BEGIN ISOLATION LEVEL …, READ ONLY`): names only, never values. */
function optionNames(options: unknown): string[] {
  if (!Array.isArray(options)) return [];
  return options.map((o) => String(((o as Body).DefElem as Body | undefined)?.defname ?? ''));
}

const unique = (xs: string[]): string[] => [...new Set(xs)];

const parseError = (error: string): Analysis => ({
  ok: false,
  decision: { ...block('P3.parse-error', `The gateway could not parse this statement (${error}), so it is blocked.`), statements: [] },
});

/** The text of a wrapper's inner statement: PREPARE's after AS, DECLARE's after FOR, EXPLAIN's its own. */
function innerTextOf(kind: string, text: string): string {
  const after = kind === 'PrepareStmt' ? textAfterKeyword(text, 'AS') : kind === 'DeclareCursorStmt' ? textAfterKeyword(text, 'FOR') : undefined;
  return after ?? text;
}

/** A cached literal-free analysis for `sql`, which has the same skeleton: only the texts change. */
function retext(entry: ShapeEntry, skeleton: Skeleton, sql: string): Analysis {
  const map = offsetMap(entry.literals, skeleton.literals);
  const withText = (f: StatementFacts, text: string): StatementFacts =>
    f.inner ? { ...f, text, inner: withText(f.inner, innerTextOf(f.kind, text)) } : { ...f, text };
  return {
    ok: true,
    statements: entry.statements.map((f, i) => {
      const [start, end] = [map(entry.spans[i][0]), map(entry.spans[i][1])];
      rememberStatementSkeleton(sql, skeleton, start, end);
      return withText(f, cutText(sql, start, end));
    }),
  };
}

const SELECT_DEFAULTS = new Set(['limitOption', 'op']);

/**
 * The setting name of exactly `SELECT [pg_catalog.]set_config(name, '<text>', <bool>) FROM [pg_catalog.]pg_settings
 * WHERE name = '<x>'` and nothing else (no second call, sub-select, CTE, join, alias, other clause): every
 * row that reaches set_config has name = x, so the call is set_config('x', …). Any other shape: undefined.
 */
function pinnedSettingName(body: Body): string | undefined {
  const isObj = (v: unknown): v is Body => typeof v === 'object' && v !== null && !Array.isArray(v);
  const keys = Object.keys(body).filter((k) => !SELECT_DEFAULTS.has(k));
  if (keys.sort().join() !== 'fromClause,targetList,whereClause') return undefined;
  if (body.limitOption !== 'LIMIT_OPTION_DEFAULT' || body.op !== 'SETOP_NONE') return undefined;
  const bareName = (v: unknown) => isObj(v) && isObj(v.ColumnRef) && Object.keys(v.ColumnRef).every((k) => k === 'fields' || k === 'location')
    && JSON.stringify(v.ColumnRef.fields) === '[{"String":{"sval":"name"}}]';
  const bool = (v: unknown) => constantType(v) === 'bool';

  const from = body.fromClause as unknown[];
  const rv = Array.isArray(from) && from.length === 1 && isObj(from[0]) ? from[0].RangeVar : undefined;
  if (!isObj(rv) || rv.relname !== 'pg_settings' || rv.alias || (rv.schemaname !== undefined && rv.schemaname !== 'pg_catalog')) return undefined;

  const targets = body.targetList as unknown[];
  const rt = Array.isArray(targets) && targets.length === 1 && isObj(targets[0]) ? targets[0].ResTarget : undefined;
  const call = isObj(rt) && !rt.name && isObj(rt.val) ? rt.val.FuncCall : undefined;
  if (!isObj(call) || Object.keys(call).some((k) => !['funcname', 'args', 'funcformat', 'location'].includes(k))) return undefined;
  const fname = JSON.stringify(call.funcname);
  if (fname !== '[{"String":{"sval":"set_config"}}]' && fname !== '[{"String":{"sval":"pg_catalog"}},{"String":{"sval":"set_config"}}]') return undefined;
  const args = call.args as unknown[];
  if (!Array.isArray(args) || args.length !== 3 || !bareName(args[0]) || constantType(args[1]) !== 'string' || !bool(args[2])) return undefined;

  const where = isObj(body.whereClause) ? body.whereClause.A_Expr : undefined;
  if (!isObj(where) || where.kind !== 'AEXPR_OP' || JSON.stringify(where.name) !== '[{"String":{"sval":"="}}]') return undefined;
  return bareName(where.lexpr) ? stringConstant(where.rexpr) : undefined;
}

/** Load the parser (WASM) once and build an engine. */
export async function loadPolicyEngine(opts?: PolicyOptions): Promise<PolicyEngine> {
  await loadParser();
  return new PolicyEngine(opts);
}
