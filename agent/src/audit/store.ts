// The state store: where the agent keeps its evidence (audit events, recordings) and its approval
// records. One small interface, two implementations that pass the same contract tests:
//   jsonl-store.ts  embedded default, append-only JSON Lines files in dataDir/audit (no server)
//   pg-store.ts     PostgreSQL (state.url), shared by several agents
// This module holds the interface and everything both implementations share, so each of them is only
// its storage: the chain sealing and group commit, the fail-closed health loop, the session summary
// fold, the list cursor, recording caps, export formats (approval rules live in approvals.ts).
//
//   session                     StateStore (GroupCommit)                       disk / PostgreSQL
//   append(statement) ─────►  queue ── end of the event-loop turn ── seal: seq, ts, prev, hash ──► one write / COMMIT
//        (waits)                 every session's appends of this turn share the batch; appends arriving
//                                while a batch is in flight queue for the next one
//   ◄──── resolves ──────────  after ITS batch is written; only then is the statement forwarded
//   ◄──── rejects  ──────────  write failed: chain head not advanced, health().writable = false,
//                              a probe retries with backoff until the store is writable again
import type { AuditEvent, EventInput, Identity } from './events.js';
import { canonicalJson, sha256, storedLine } from './events.js';
import { eventContent } from './event-json.js';
import type { VerifyResult } from './verify.js';
import type { Approvals } from './approvals.js';
import { csvRow } from '../../../shared/audit/csv.js';
import type { RecordingEntry, SessionPage, SessionSummary } from '../../../shared/api/sessions.js';

// The session bodies the API serves are shared with the CLI (shared/api/sessions.ts).
export type { RecordingEntry, SessionPage, SessionSummary };

export type Clock = () => number;

export interface SessionFilter {
  sub?: string;
  connection?: string;
  /** ISO time or epoch ms; sessions that started at or after. */
  since?: string | number;
  /** ISO time or epoch ms; sessions that started before. */
  until?: string | number;
  decision?: string;
  limit: number;
  cursor?: string;
}

export interface RecordingLimits {
  maxRowsPerStatement: number;
  maxBytesPerSession: number;
}
export const DEFAULT_RECORDING_LIMITS: RecordingLimits = { maxRowsPerStatement: 100, maxBytesPerSession: 1 << 20 };

export interface Health {
  writable: boolean;
  lastError?: string;
}

export type ExportFormat = 'jsonl' | 'csv';

export interface StateStore {
  readonly agentId: string;
  /** Seals and durably writes one event. Resolves only once it is fsync'd / committed. */
  append(e: EventInput): Promise<AuditEvent>;
  /** Newest first (start time, then chain position); `nextCursor` when more match. */
  querySessions(filter: SessionFilter): Promise<SessionPage>;
  sessionEvents(sessionId: string): Promise<AuditEvent[]>;
  /**
   * Appends recording entries in one write (capped, see RecordingCaps); resolves whether the session's
   * recording budget has room left (false once the "cap reached" marker is written).
   */
  appendRecording(sessionId: string, ...entries: RecordingEntry[]): Promise<boolean>;
  readRecording(sessionId: string): Promise<RecordingEntry[]>;
  verify(opts?: { from?: number }): Promise<VerifyResult>;
  exportEvents(filter: { since?: string | number; until?: string | number }, format: ExportFormat): AsyncIterable<string>;
  /** This agent's chain as stored lines, in seq order, from `from` (default 1); what checkpoints are made over. */
  chainLines(from?: number): AsyncIterable<string>;
  /** Stores a signed checkpoint of this agent's chain (durable before it resolves; a repeated size is kept once). */
  appendCheckpoint(cp: { size: number; note: string }): Promise<void>;
  /** This agent's stored checkpoints, smallest tree first. */
  listCheckpoints(): Promise<{ size: number; note: string }[]>;
  /** Deletes recordings whose last entry is older than this; the event chain is untouched. */
  applyRetention(recordingsOlderThanMs: number): Promise<{ removed: number }>;
  readonly approvals: Approvals;
  health(): Health;
  close(): Promise<void>;
}

export class StoreUnavailableError extends Error {
  override readonly name = 'StoreUnavailableError';
  readonly code = 'AUDIT_STORE_UNAVAILABLE';
}

export function isoTime(v: string | number): string {
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) throw new RangeError(`not a time: ${String(v)}`);
  return d.toISOString();
}

/**
 * `toISOString` of a millisecond time, remembering the last one: busy sessions stamp many events in the
 * same millisecond, and formatting is a measurable part of an event's cost.
 */
export function isoPerMs(): (ms: number) => string {
  let lastMs = Number.NaN;
  let lastIso = '';
  return (ms) => {
    if (ms !== lastMs) {
      lastMs = ms;
      lastIso = new Date(ms).toISOString();
    }
    return lastIso;
  };
}

// Session ids become file names in the embedded store: refuse anything that could leave the directory.
const SESSION_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
export function assertSessionId(id: string): void {
  if (!SESSION_ID.test(id) || id.includes('..')) throw new RangeError(`invalid session id: ${JSON.stringify(id).slice(0, 80)}`);
}

// ─── chain + group commit ────────────────────────────────────────────────────────────────────────────

export interface ChainHead {
  seq: number;
  hash: string;
  ts: string;
}

export interface SealedEvent {
  event: AuditEvent;
  /** Stored JSON line, without the newline. */
  line: string;
}

interface Pending {
  input: EventInput;
  at: number;
  resolve(e: AuditEvent): void;
  reject(err: unknown): void;
}

/**
 * Events recorded after the fact: nothing waits for them (the statement already ran), so a store may let
 * them ride along with the next batch something does wait for (see `GroupCommit`'s `lazyMs`).
 */
export const AFTER_THE_FACT: ReadonlySet<string> = new Set(['statement_result', 'session_end']);

/**
 * After-the-fact events a failed batch could not write wait for the store to come back (they describe
 * what already happened, so refusing them loses evidence); beyond this many the oldest are given up.
 */
const MAX_PARKED = 50_000;

/**
 * Seals events onto one agent's chain and writes them in batches. Sealing happens when a batch is
 * formed, not when `append` is called, so a failed batch never leaves later appends chained onto events
 * that were not written: the head advances only after `write` succeeded.
 *
 * A batch starts at the end of the event-loop turn (setImmediate: after every socket read of this
 * poll phase has been handled), so all statements judged in one turn, across sessions, share one write.
 *
 * With `lazyMs`, an AFTER_THE_FACT event does not start a batch: it waits up to `lazyMs` for the next
 * append (usually the session's next statement) and goes in the same write, one write per statement
 * instead of two. Order is unchanged (one queue); `flush` writes what waits before a read.
 */
export class GroupCommit {
  private queue: Pending[] = [];
  /** After-the-fact events of failed batches, oldest first: written ahead of the next batch. */
  private parked: Pending[] = [];
  private busy = false;
  private running: Promise<void> = Promise.resolve();
  private closed = false;
  private lazyTimer?: NodeJS.Timeout;
  private turnEnd?: NodeJS.Immediate;
  /** Many events share a millisecond: its ISO form is made once. */
  private readonly iso = isoPerMs();

  constructor(
    private readonly agentId: string,
    private head: ChainHead,
    private readonly clock: Clock,
    private readonly write: (batch: SealedEvent[]) => Promise<void>,
    private readonly health: HealthLoop,
    private readonly lazyMs = 0,
  ) {}

  get last(): ChainHead {
    return this.head;
  }

  append(input: EventInput): Promise<AuditEvent> {
    if (this.closed) return Promise.reject(new StoreUnavailableError('audit store is closed'));
    // The event's time is when it was appended, not when its batch was written.
    const at = this.clock();
    return new Promise((resolve, reject) => {
      this.queue.push({ input, at, resolve, reject });
      if (this.lazyMs > 0 && AFTER_THE_FACT.has(input.type)) {
        this.lazyTimer ??= setTimeout(this.lazyKick, this.lazyMs);
      } else this.turnEnd ??= setImmediate(() => this.kick());
    });
  }

  private readonly lazyKick = (): void => {
    this.lazyTimer = undefined;
    this.kick();
  };

  /** Writes whatever is queued (after-the-fact events included) and resolves once nothing is in flight. */
  async flush(): Promise<void> {
    this.kick();
    while (this.busy) await this.running;
  }

  /** Runs `fn` with no batch in flight (the health probe reopens files / connections this way). */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    while (this.busy) await this.running;
    this.busy = true;
    const p = fn();
    this.running = p.then(
      () => {},
      () => {},
    );
    try {
      return await p;
    } finally {
      this.busy = false;
      this.kick();
    }
  }

  /** Refuses new appends and resolves when everything queued so far has been written or refused. */
  async drain(): Promise<void> {
    this.closed = true;
    await this.flush();
  }

  private kick(): void {
    clearImmediate(this.turnEnd);
    this.turnEnd = undefined;
    if (this.busy || (!this.queue.length && !this.parked.length)) return;
    // The lazy timer is left to run out (then finds nothing, or events queued since, which it writes
    // no later than lazyMs after they came): one timer per lazyMs, not one per statement.
    this.running = this.run();
  }

  private async run(): Promise<void> {
    this.busy = true;
    // Parked events go out with the next batch (or the next kick: a health probe's, once it succeeds).
    for (let first = true; this.queue.length || (first && this.parked.length); first = false) {
      const batch = this.parked.length ? this.parked.concat(this.queue) : this.queue;
      this.parked = [];
      this.queue = [];
      const sealed = this.seal(batch);
      try {
        await this.write(sealed);
        const last = sealed[sealed.length - 1].event;
        this.head = { seq: last.seq, hash: last.hash, ts: last.ts };
        this.health.succeeded();
        for (let i = 0; i < batch.length; i++) batch[i].resolve(sealed[i].event);
      } catch (err) {
        this.health.failed(err);
        const why = new StoreUnavailableError(`audit store not writable: ${errMessage(err)}`, { cause: err });
        for (const p of batch) {
          if (AFTER_THE_FACT.has(p.input.type) && !this.closed) this.parked.push(p);
          else p.reject(why);
        }
        for (const p of this.parked.splice(0, Math.max(0, this.parked.length - MAX_PARKED))) p.reject(why);
      }
    }
    this.busy = false;
  }

  private seal(batch: Pending[]): SealedEvent[] {
    let { seq, hash: prev, ts: lastTs } = this.head;
    return batch.map(({ input, at }) => {
      // Timestamps never go backwards within a chain (wall clocks do): listing by time relies on it.
      let ts = this.iso(at);
      if (ts < lastTs) ts = lastTs;
      lastTs = ts;
      // One object: the hash is added once the content is known (eventContent reads no `hash`).
      const event = {
        seq: ++seq,
        ts,
        prev,
        type: input.type,
        sessionId: input.sessionId,
        agentId: this.agentId,
        identity: input.identity,
        connection: input.connection,
        data: input.data ?? {},
      } as AuditEvent;
      const content = eventContent(event);
      const hash = sha256(content);
      event.hash = hash;
      prev = hash;
      return { event, line: storedLine(content, hash) };
    });
  }
}

export function errMessage(err: unknown): string {
  return err instanceof Error ? ((err as NodeJS.ErrnoException).code ? `${(err as NodeJS.ErrnoException).code}: ${err.message}` : err.message) : String(err);
}

/**
 * Fail-closed health: a failed write marks the store unwritable and starts a probe with backoff that
 * keeps trying (reopen, truncate to the last durable size, or reconnect) until the store works again.
 * Appends are still attempted meanwhile, each batch being a probe of its own.
 */
export class HealthLoop {
  private state: Health = { writable: true };
  private timer?: NodeJS.Timeout;
  private delay = 0;

  constructor(
    private readonly probe: () => Promise<void>,
    private readonly minDelayMs = 50,
    private readonly maxDelayMs = 2000,
  ) {}

  get(): Health {
    return { ...this.state };
  }

  succeeded(): void {
    this.state = { writable: true };
    this.delay = 0;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  failed(err: unknown): void {
    this.state = { writable: false, lastError: errMessage(err) };
    if (!this.timer) this.schedule();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.delay = -1;
  }

  private schedule(): void {
    if (this.delay < 0) return;
    this.delay = Math.min(this.maxDelayMs, Math.max(this.minDelayMs, this.delay * 2));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.probe().then(
        () => this.succeeded(),
        (err) => this.failed(err),
      );
    }, this.delay);
    this.timer.unref();
  }
}

// ─── sessions ────────────────────────────────────────────────────────────────────────────────────────

/** Folds one event into its session's summary (a new object; the input is not modified). */
export function foldSummary(s: SessionSummary | undefined, e: AuditEvent): SessionSummary {
  const out: SessionSummary = s
    ? { ...s, decisions: s.decisions }
    : { sessionId: e.sessionId!, agentId: e.agentId, startedAt: e.ts, lastTs: e.ts, firstSeq: e.seq, lastSeq: e.seq, events: 0, statements: 0, refused: 0, decisions: [] };
  foldInto(out, e);
  return out;
}

/** Folds one event into a summary in place (its `decisions` array is replaced when it grows, never modified). */
export function foldInto(out: SessionSummary, e: AuditEvent): void {
  out.events++;
  out.lastTs = e.ts;
  out.lastSeq = e.seq;
  if (e.identity && out.sub === undefined) {
    out.sub = e.identity.sub;
    out.issuer = e.identity.issuer;
    out.email = e.identity.email;
  }
  if (e.connection && out.connection === undefined) out.connection = e.connection;
  const d = e.data ?? {};
  switch (e.type) {
    case 'session_start':
      out.clientAddr = d.clientAddr as string | undefined;
      out.applicationName = d.applicationName as string | undefined;
      out.cliVersion = d.cliVersion as string | undefined;
      out.purpose = d.purpose as string | undefined;
      break;
    case 'session_end':
      out.endedAt = e.ts;
      break;
    case 'statement':
      out.statements++;
      if (typeof d.decision === 'string' && !out.decisions.includes(d.decision)) out.decisions = [...out.decisions, d.decision];
      break;
    case 'refused':
      out.refused++;
      break;
  }
}

/** The list order key: newest start first, then the later chain position. Opaque to clients. */
export interface CursorKey {
  startedAt: string;
  agentId: string;
  firstSeq: number;
}
export function encodeCursor(s: SessionSummary): string {
  return Buffer.from(JSON.stringify([s.startedAt, s.agentId, s.firstSeq])).toString('base64url');
}
export function decodeCursor(c: string): CursorKey {
  try {
    const [startedAt, agentId, firstSeq] = JSON.parse(Buffer.from(c, 'base64url').toString('utf8')) as [string, string, number];
    if (typeof startedAt === 'string' && typeof agentId === 'string' && Number.isSafeInteger(firstSeq)) return { startedAt, agentId, firstSeq };
  } catch {
    /* fall through */
  }
  throw new RangeError('invalid cursor');
}

/** Normalised filter bounds, shared by both stores' query paths. */
export function filterBounds(f: SessionFilter): { since?: string; until?: string; limit: number; cursor?: CursorKey } {
  return {
    since: f.since === undefined ? undefined : isoTime(f.since),
    until: f.until === undefined ? undefined : isoTime(f.until),
    limit: Math.max(1, Math.min(1000, Math.floor(f.limit))),
    cursor: f.cursor ? decodeCursor(f.cursor) : undefined,
  };
}

// ─── recordings ──────────────────────────────────────────────────────────────────────────────────────

/**
 * Per-session recording budget. `cap` returns the line to store (rows cut to the per-statement cap with
 * the cut recorded; once the session budget is spent, one marker line and then nothing).
 */
const MAX_TRACKED_SESSIONS = 10_000;

/** A recording entry as stored (canonical JSON, no newline) and its time. */
export interface CappedLine {
  line: string;
  ts: string;
}

export class RecordingCaps {
  private used = new Map<string, number>();
  constructor(private readonly limits: RecordingLimits) {}

  async cap(sessionId: string, entry: RecordingEntry, now: string, load: () => Promise<number>): Promise<CappedLine | undefined> {
    let used = this.used.get(sessionId);
    if (used === undefined) {
      used = await load();
      // Bounded: sessions end and are never told to the store; a forgotten one is re-read from storage.
      if (this.used.size >= MAX_TRACKED_SESSIONS) this.used.delete(this.used.keys().next().value!);
    }
    if (used >= this.limits.maxBytesPerSession) return undefined;
    const e: RecordingEntry = { ...entry, ts: entry.ts ?? now };
    if (e.rows && e.rows.length > this.limits.maxRowsPerStatement) {
      e.truncated = { ...e.truncated, rowsOmitted: e.rows.length - this.limits.maxRowsPerStatement };
      e.rowCount ??= e.rows.length;
      e.rows = e.rows.slice(0, this.limits.maxRowsPerStatement);
    }
    let line = canonicalJson(e);
    if (used + line.length + 1 > this.limits.maxBytesPerSession) {
      line = canonicalJson({ ts: e.ts, seq: e.seq, note: 'recording cap reached; later statements not recorded', truncated: { session: true } });
      this.used.set(sessionId, Number.POSITIVE_INFINITY);
    } else this.used.set(sessionId, used + line.length + 1);
    return { line, ts: e.ts! };
  }

  /** The lines to store for a batch of entries (see `cap`), and whether the session has budget left. */
  async capAll(sessionId: string, entries: RecordingEntry[], now: string, load: () => Promise<number>): Promise<{ lines: CappedLine[]; room: boolean }> {
    const lines: CappedLine[] = [];
    for (const entry of entries) {
      const l = await this.cap(sessionId, entry, now, load);
      if (l) lines.push(l);
    }
    return { lines, room: (this.used.get(sessionId) ?? 0) < this.limits.maxBytesPerSession };
  }

  forget(sessionId: string): void {
    this.used.delete(sessionId);
  }
}

// ─── export ──────────────────────────────────────────────────────────────────────────────────────────

const CSV_COLUMNS = ['seq', 'ts', 'agent_id', 'type', 'session_id', 'sub', 'issuer', 'connection', 'decision', 'rule', 'sql', 'rows', 'sqlstate', 'prev', 'hash', 'data'];

/** Turns stored lines into export records: JSON Lines as stored (verifiable offline), or CSV. */
export async function* formatExport(lines: AsyncIterable<string>, format: ExportFormat): AsyncIterable<string> {
  if (format === 'jsonl') {
    for await (const l of lines) yield l + '\n';
    return;
  }
  yield csvRow(CSV_COLUMNS);
  for await (const l of lines) {
    const e = JSON.parse(l) as AuditEvent;
    const d = e.data ?? {};
    const row = [e.seq, e.ts, e.agentId, e.type, e.sessionId, e.identity?.sub, e.identity?.issuer, e.connection, d.decision, d.rule, d.sql, d.rows, d.sqlstate, e.prev, e.hash, d];
    yield csvRow(row);
  }
}

/** Whether an event's time is within an export filter (ISO strings compare in time order). */
export function inRange(ts: string, since?: string, until?: string): boolean {
  return (since === undefined || ts >= since) && (until === undefined || ts < until);
}

export type { Identity };
