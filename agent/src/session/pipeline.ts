// The one ordered pipeline of requests in flight, and the one walk of the server's bytes.
//
// Every request the agent forwards (the client's, judged; its sentinels; its own hidden statements) is
// queued here in wire order, with everything the agent knows about it: the namespace changes it makes,
// the lineage plan of each result, its audit record. PostgreSQL answers requests in order, so each
// backend message belongs to the request at the head:
//
//   request          answered by                                              then
//   Parse            ParseComplete                                            confirm its changes
//   Bind             BindComplete                                             confirm its changes
//   Describe         [ParameterDescription] RowDescription | NoData           fields kept on the portal
//   Execute          DataRow* / Copy* then CommandComplete | PortalSuspended   confirm (SQL PREPARE …)
//                    | EmptyQueryResponse
//   Close            CloseComplete                                            confirm its changes
//   Sync             ReadyForQuery                                            transaction status
//   Query            per statement: [RowDescription] DataRow* / Copy*         confirm per statement
//                    CommandComplete | EmptyQueryResponse; then ReadyForQuery
//   hidden           everything up to its ReadyForQuery (the agent's own)     swallowed
//
// ErrorResponse to an extended-protocol request: PostgreSQL skips every message up to Sync, a simple
// Query among them too. Those requests are dropped here with their changes: nothing they would have
// changed changes. Any reply that does not fit the head request means the agent's picture is wrong:
// the session ends (fail closed) rather than guess.
//
// Masking, the statement log and the recording react to this walk; none keeps a queue of its own.
import { Backend, TxStatus } from '../pgwire/codes.js';
import { errorResponse, parseCommandComplete, parseErrorFields, parseRowDescription, type PgErrorFields, type RowField } from '../pgwire/backend.js';
import { ProtocolError } from '../pgwire/errors.js';
import type { LineagePlan } from '../masking/lineage.js';
import { maskCopyData, maskDataRows, type CopyMasker, type RowMasker } from '../masking/rewrite.js';
import { maskErrorMessage, maskNotification } from '../masking/messages.js';
import type { Namespace, Portal, RowCounter, Staged } from './namespace.js';
import type { ResultMasker } from './result-masking.js';
import { UNKNOWN_PLAN } from './result-masking.js';
import type { InFlight, StatementLog } from './statement-log.js';
import type { SessionRecording } from './recording.js';

export type RequestKind = 'parse' | 'bind' | 'describe' | 'execute' | 'close' | 'sync' | 'query' | 'hidden';

/** One statement of a simple Query, as it will run. */
export interface QueryStatement {
  plan: LineagePlan;
  changes: Staged[];
  /** COMMIT / ROLLBACK / END: portals without HOLD end with it. */
  endsTransaction: boolean;
  /** Its errors and notices lose their text fields (it reads masked values, or runs deferred work). */
  redact: boolean;
  /** FETCH: the cursor's row counter (the threshold counts a cursor's rows over all its FETCHes). */
  counter?: RowCounter;
}

export interface Request {
  readonly kind: RequestKind;
  /** Extended protocol: namespace changes confirmed by this request's own reply. */
  changes?: Staged[];
  /** Query: its statements in order (empty for an empty query). */
  statements?: QueryStatement[];
  /** Execute: the plan of the result; Describe/Execute: the portal. */
  plan?: LineagePlan;
  portal?: Portal;
  /** The agent refused it: its sentinel's ErrorResponse is replaced by this. */
  refusal?: PgErrorFields;
  /** The sentinel's word, which the server's syntax error quotes. */
  sentinel?: string;
  /** The audit record of the statement it runs (or refuses). */
  log?: InFlight;
  /** Errors and notices of this request lose their text fields (SQLSTATE, severity, position kept). */
  redact: boolean;
  /** Called at this request's ReadyForQuery (Sync, Query, hidden). */
  done?: (status: number, errored: boolean) => void;
  /** Hidden: the agent reads its own statement's rows (DataRow bodies). */
  onRow?: (body: Buffer) => void;
  // ── state while it is answered ──
  errored?: boolean;
  /** Query: index of the statement whose results arrive now. */
  at?: number;
  fields?: RowField[];
  rows?: RowMasker;
  copy?: CopyMasker;
  // ── P11 row threshold ──
  /** A result of this request pauses after this many rows (DataRows, or CopyData of a COPY … TO) until approved. */
  rowLimit?: number;
  /** Execute: the portal's row counter (over all Executes of the portal); else made per result. */
  counter?: RowCounter;
  /** The statement was approved as it is (an export held before it ran): no threshold. */
  rowsApproved?: boolean;
  /** Rows of the current result passed to the client (the counter may span a cursor's results). */
  resultRows?: number;
  /** The rest of the result was refused: its rows are dropped, and its end (cancel error or completion) becomes this error. */
  stopped?: PgErrorFields;
}

/** A result that reached its row limit: where it stopped, and the framed bytes after that row (not yet processed). */
export interface RowPause {
  request: Request;
  counter: RowCounter;
  /** Rows the counter passed (a cursor's: over all its FETCHes): the threshold's count. */
  rows: number;
  /** Rows of this result passed to the client. */
  resultRows: number;
  rest: Buffer;
}

export interface PipelineDeps {
  ns: Namespace;
  /** Absent on a connection that masks nothing. */
  masker?: ResultMasker;
  log: StatementLog;
  recording?: SessionRecording;
  /**
   * A message that answers no request: a NotificationResponse (payload masked for the client), or a
   * NoticeResponse / ParameterStatus while nothing is in flight. For the audit trail and the recording.
   */
  onAsync(kind: 'notification' | 'notice' | 'parameter', data: Record<string, unknown>): void;
  /** A ReadyForQuery said no transaction is open any more. */
  onIdle?(): void;
}

const EMPTY = Buffer.alloc(0);
const EXTENDED = new Set<RequestKind>(['parse', 'bind', 'describe', 'execute', 'close']);

export class Pipeline {
  private readonly queue: Request[] = [];
  private head = 0;
  /** The last ReadyForQuery's transaction status. */
  status: number = TxStatus.Idle;
  /** An error since the last idle ReadyForQuery: the transaction, implicit or not, did not commit. */
  private failedSinceIdle = false;
  private idleWaiters: (() => void)[] = [];
  /** Server is streaming COPY data from the client (CopyInResponse seen, not yet finished). */
  copyIn = false;

  constructor(private readonly deps: PipelineDeps) {}

  /** The connection masks columns: results are masked from now on (set before the session is Ready). */
  useMasker(m: ResultMasker): void {
    this.deps.masker = m;
  }

  /**
   * The server is skipping to Sync (an extended-protocol request failed and no Sync was sent after it
   * yet): what is sent now is skipped too, up to the next Sync.
   */
  skipping = false;
  /** The error of a failed Parse/Bind/Describe, for the Execute its run was to run (then skipped). */
  private blame?: { code?: string; note: string };
  /** Set by process() when a result reached its row limit; the caller takes it, pauses reading and decides. */
  paused?: RowPause;

  push(r: Request): Request {
    if (this.skipping) {
      if (r.kind === 'sync' || r.kind === 'hidden') {
        // A Sync ends the skipping; the agent's own statement before its Sync is skipped all the same.
        this.skipping = false;
        if (r.kind === 'hidden') r.errored = true;
      } else {
        this.skip(r);
        return r;
      }
    }
    this.queue.push(r);
    return r;
  }

  get length(): number {
    return this.queue.length - this.head;
  }

  /** Resolves when every request forwarded so far has been answered (the status is then current). */
  idle(): Promise<void> {
    if (this.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private current(): Request | undefined {
    return this.queue[this.head];
  }

  private shift(): void {
    this.head++;
    if (this.head > 64 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    if (this.length === 0 && this.idleWaiters.length) {
      const w = this.idleWaiters;
      this.idleWaiters = [];
      for (const f of w) f();
    }
  }

  // ── the one walk of the server's bytes ─────────────────────────────────────────────────────────

  /**
   * One framed upstream read → the bytes for the client: `buf[offsets[0], offsets[count])` itself when
   * nothing was rewritten. Throws ProtocolError when a reply does not fit the request it answers, and
   * MaskingError when a result cannot be masked: the session ends either way.
   */
  process(buf: Buffer, types: Uint8Array, offsets: Uint32Array, count: number): Buffer {
    let parts: Buffer[] | undefined;
    let run = offsets[0];
    const replace = (from: number, to: number, bytes: Buffer) => {
      (parts ??= []).push(buf.subarray(run, offsets[from]), bytes);
      run = offsets[to];
    };
    const body = (i: number) => buf.subarray(offsets[i] + 5, offsets[i + 1]);
    const d = this.deps;
    /** Where a row limit stopped the walk: messages from here on wait for the approver (this.paused). */
    let end = count;

    for (let i = 0; i < count; i++) {
      const t = types[i];
      const r = this.current();

      // Messages that may come at any time, to no request in particular.
      if (t === Backend.NotificationResponse) {
        // A payload cannot be traced to a statement (triggers, other sessions): never passed in clear.
        const masked = maskNotification(buf, offsets[i], offsets[i + 1]);
        replace(i, i + 1, masked);
        d.onAsync('notification', { channel: notificationChannel(masked), pid: masked.readInt32BE(5) });
        continue;
      }
      if (r?.kind === 'hidden') {
        // The agent's own statement: its replies (and the ParameterStatus its SET reports) never reach the client.
        replace(i, i + 1, EMPTY);
        if (t === Backend.ErrorResponse) r.errored = true;
        else if (t === Backend.DataRow) r.onRow?.(body(i));
        else if (t === Backend.ReadyForQuery) this.ready(r, buf[offsets[i] + 5]);
        continue;
      }
      if (t === Backend.ParameterStatus) {
        if (!r) d.onAsync('parameter', { name: body(i).toString('utf8', 0, Math.max(0, body(i).indexOf(0))) });
        continue;
      }
      if (t === Backend.NoticeResponse) {
        if (!r) {
          const f = parseErrorFields(body(i));
          d.onAsync('notice', { severity: f.severity, code: f.code });
          if (idleErrorRedacts(f, d.masker !== undefined)) replace(i, i + 1, maskErrorMessage(buf, offsets[i], offsets[i + 1], true));
        } else if (this.redacts(r)) replace(i, i + 1, maskErrorMessage(buf, offsets[i], offsets[i + 1], true));
        continue;
      }
      if (t === Backend.ErrorResponse) {
        replace(i, i + 1, this.onError(r, buf, offsets[i], offsets[i + 1], body(i)));
        continue;
      }
      if (!r) throw new ProtocolError(`the database sent message '${String.fromCharCode(t)}' when no request was waiting for it`);

      switch (t) {
        case Backend.ParseComplete:
          this.expect(r, 'parse', t);
          this.complete(r);
          break;
        case Backend.BindComplete:
          this.expect(r, 'bind', t);
          this.complete(r);
          break;
        case Backend.CloseComplete:
          this.expect(r, 'close', t);
          this.complete(r);
          break;
        case Backend.ParameterDescription:
          this.expect(r, 'describe', t);
          break;
        case Backend.NoData:
          this.expect(r, 'describe', t);
          this.shift();
          break;
        case Backend.RowDescription: {
          const fields = parseRowDescription(body(i));
          if (r.kind === 'describe') {
            if (r.portal) r.portal.fields = fields;
            this.shift();
          } else {
            this.expectResult(r, t);
            r.fields = fields;
            r.rows = undefined;
            d.recording?.fields(fields);
          }
          break;
        }
        case Backend.DataRow: {
          this.expectResult(r, t);
          // An Execute's columns come from the Describe of its portal (the recording shows them too).
          if (!r.fields && r.portal?.fields && d.recording) d.recording.fields((r.fields = r.portal.fields));
          let j = i + 1;
          while (j < count && types[j] === Backend.DataRow) j++;
          if (r.stopped) {
            replace(i, j, EMPTY); // refused rows of a cancelled result: dropped until its end arrives
            i = j - 1;
            break;
          }
          const limited = this.rowBudget(r, i, j);
          if (limited < j) end = j = limited;
          if (j === i) break;
          const masker = this.rowMasker(r, (buf[offsets[i] + 5] << 8) | buf[offsets[i] + 6]);
          const out = masker?.active ? maskDataRows(buf, types, offsets, i, j, masker) : undefined;
          if (out) replace(i, j, out);
          d.recording?.rows(out ?? buf.subarray(offsets[i], offsets[j]));
          i = j - 1;
          break;
        }
        case Backend.CopyOutResponse:
          this.expectResult(r, t);
          if (d.masker) r.copy = d.masker.copy(this.planOf(r), buf[offsets[i] + 5]);
          d.recording?.copy();
          break;
        case Backend.CopyData: {
          // Only a COPY … TO STDOUT sends CopyData; without a masker nothing needs rewriting.
          this.expectResult(r, t);
          let j = i + 1;
          while (j < count && types[j] === Backend.CopyData) j++;
          if (r.stopped) {
            replace(i, j, EMPTY);
            i = j - 1;
            break;
          }
          const limited = this.rowBudget(r, i, j);
          if (limited < j) end = j = limited;
          if (j > i && r.copy) replace(i, j, maskCopyData(buf, types, offsets, i, j, r.copy));
          i = j - 1;
          break;
        }
        case Backend.CopyDone:
          this.expectResult(r, t);
          r.copy?.end();
          r.copy = undefined;
          break;
        case Backend.CopyInResponse:
          this.expectResult(r, t);
          this.copyIn = true;
          break;
        case Backend.CommandComplete:
          this.expectResult(r, t);
          // A refused result that completed before the cancel reached the server ends with the refusal all the same.
          if (r.stopped) {
            replace(i, i + 1, this.stoppedEnd(r));
            r.errored = true;
            this.commandComplete(r, body(i), false);
          } else this.commandComplete(r, body(i));
          break;
        case Backend.EmptyQueryResponse:
          this.expectResult(r, t);
          if (r.kind === 'execute') this.finishExecute(r, {});
          else this.nextStatement(r);
          break;
        case Backend.PortalSuspended:
          this.expect(r, 'execute', t);
          this.finishExecute(r, { note: 'portal suspended: the client fetches the rest with later Executes' });
          break;
        case Backend.ReadyForQuery:
          if (r.kind !== 'sync' && r.kind !== 'query') throw lost(r, t);
          this.ready(r, buf[offsets[i] + 5]);
          break;
        case Backend.CopyBothResponse:
          // Only replication uses CopyBoth, and replication is refused at startup.
          throw new ProtocolError('unexpected CopyBothResponse from the database');
        case Backend.FunctionCallResponse:
          // FunctionCall is never forwarded (P3), so this answers nothing the agent sent.
          throw lost(r, t);
        default:
          throw new ProtocolError(`unexpected message '${String.fromCharCode(t)}' from the database`);
      }
      if (end < count) {
        // The row limit: the rest waits, unread, for the approver (bounded: one read's worth of bytes).
        const counter = this.counterOf(r!);
        this.paused = { request: r!, counter, rows: counter.delivered, resultRows: r!.resultRows ?? 0, rest: buf.subarray(offsets[end], offsets[count]) };
        break;
      }
    }
    if (!parts) return buf.subarray(offsets[0], offsets[end]);
    parts.push(buf.subarray(run, offsets[end]));
    const filled = parts.filter((p) => p.length > 0);
    return filled.length === 1 ? filled[0] : Buffer.concat(filled);
  }

  // ── per message ────────────────────────────────────────────────────────────────────────────────

  /**
   * P11 row threshold: of the rows [i, j) of `r`'s current result, where the client's share ends (j when
   * all of them may pass). Counts what passes.
   */
  private rowBudget(r: Request, i: number, j: number): number {
    const c = this.counterOf(r);
    let stop = j;
    if (r.rowLimit !== undefined && !r.rowsApproved && !c.approved) stop = Math.min(j, i + Math.max(0, r.rowLimit - c.delivered));
    c.delivered += stop - i;
    r.resultRows = (r.resultRows ?? 0) + (stop - i);
    return stop;
  }

  /** What counts the rows now arriving: the cursor's (FETCH), the portal's (Execute), or the statement's own. */
  private counterOf(r: Request): RowCounter {
    if (r.kind === 'query') {
      const s = r.statements?.[r.at ?? 0];
      if (s) return (s.counter ??= { delivered: 0 });
    }
    return (r.counter ??= { delivered: 0 });
  }

  /** The error a refused result ends with (its rows so far delivered, the rest refused); later ones say nothing more. */
  private stoppedEnd(r: Request): Buffer {
    const e = r.stopped!;
    r.stopped = undefined;
    return errorResponse(e);
  }

  private expect(r: Request, kind: RequestKind, t: number): void {
    if (r.kind !== kind) throw lost(r, t);
  }

  private expectResult(r: Request, t: number): void {
    if (r.kind !== 'execute' && r.kind !== 'query') throw lost(r, t);
  }

  /** ParseComplete / BindComplete / CloseComplete: the server did what the request asked. */
  private complete(r: Request): void {
    this.deps.ns.confirm(r.changes);
    this.shift();
  }

  /** `counts`: false when the client did not get the rows (a refused result): the log keeps the rows it got. */
  private commandComplete(r: Request, body: Buffer, counts = true): void {
    const { tag, rows } = parseCommandComplete(body);
    r.copy?.end();
    r.copy = undefined;
    this.copyIn = false;
    if (r.log && counts) r.log.rows += rows ?? 0;
    if (r.kind === 'execute') {
      this.deps.ns.confirm(r.changes);
      this.transactionTag(tag);
      this.finishExecute(r, { tag, rowCount: rows ?? undefined });
      return;
    }
    const s = r.statements?.[r.at ?? 0];
    if (s) this.deps.ns.confirm(s.changes);
    if (s?.endsTransaction) this.transactionTag(tag);
    if (r.log) this.deps.recording?.result(r.log, { tag, rowCount: rows ?? undefined });
    this.nextStatement(r);
  }

  /** COMMIT / ROLLBACK (explicit, inside a Query or an Execute): portals without HOLD are gone. */
  private transactionTag(tag: string): void {
    if (tag === 'COMMIT') this.deps.ns.transactionEnded(true);
    else if (tag === 'ROLLBACK') this.deps.ns.transactionEnded(false);
  }

  private nextStatement(r: Request): void {
    r.at = (r.at ?? 0) + 1;
    r.fields = undefined;
    r.rows = undefined;
    r.resultRows = 0;
  }

  private finishExecute(r: Request, facts: { tag?: string; rowCount?: number; note?: string }): void {
    if (r.log) {
      this.deps.recording?.result(r.log, facts);
      this.deps.log.finish(r.log);
    }
    this.shift();
  }

  /** The plan of the result now arriving: the Execute's, or the current statement's of a Query. */
  private planOf(r: Request): LineagePlan {
    if (r.kind === 'execute') return r.plan ?? UNKNOWN_PLAN;
    return r.statements?.[r.at ?? 0]?.plan ?? UNKNOWN_PLAN;
  }

  private rowMasker(r: Request, nf: number): RowMasker | undefined {
    const m = this.deps.masker;
    if (!m) return undefined;
    if (r.rows) return r.rows;
    const fields = r.fields ?? r.portal?.fields;
    return (r.rows = m.rows(this.planOf(r), nf, fields, r.portal?.formats));
  }

  /** Whether errors and notices arriving now lose their text fields. */
  private redacts(r: Request | undefined): boolean {
    if (!this.deps.masker) return false;
    if (!r) return false;
    if (r.kind === 'query') return r.statements?.[r.at ?? 0]?.redact ?? true;
    return r.redact;
  }

  /**
   * ErrorResponse: the agent's own refusal is explained; others are redacted when the statement may
   * have put a masked value in them. Then the protocol's error handling: an extended-protocol request's
   * error makes the server skip to Sync (and discard a Query sent before it).
   */
  private onError(r: Request | undefined, buf: Buffer, start: number, end: number, body: Buffer): Buffer {
    const fields = parseErrorFields(body);
    // The agent's own refusal: the server's syntax error quotes the sentinel's word.
    const own = r?.refusal && (fields.message ?? '').includes(r.sentinel ?? '\0') ? r.refusal : r?.stopped;
    if (r?.stopped) r.stopped = undefined; // the cancel's error (or any error) ends a refused result: say why instead
    let out: Buffer;
    if (own) out = errorResponse(own);
    else {
      if (!r) out = idleErrorRedacts(fields, this.deps.masker !== undefined) ? maskErrorMessage(buf, start, end, true) : buf.subarray(start, end);
      else out = this.redacts(r) ? maskErrorMessage(buf, start, end, true) : buf.subarray(start, end);
    }
    if (!r) return out;
    this.failedSinceIdle = true;
    r.errored = true;
    if (r.log) {
      const code = own ? own.code : fields.code;
      r.log.sqlstate = code;
      this.deps.recording?.result(r.log, { sqlstate: code, note: `${own?.severity ?? fields.severity}:  ${own ? own.message : redactedNote(out, fields, body)}` });
    }
    if (r.kind === 'query' || r.kind === 'sync') return out; // its ReadyForQuery follows
    if (!EXTENDED.has(r.kind)) throw lost(r, Backend.ErrorResponse);
    this.deps.ns.drop(r.changes);
    if (r.log) this.deps.log.finish(r.log);
    // A Parse, Bind or Describe that failed is the failure of the statement its run was to execute.
    this.blame = r.kind !== 'execute' && !own ? { code: fields.code, note: `${fields.severity}:  ${redactedNote(out, fields, body)}` } : undefined;
    this.shift();
    this.skipToSync();
    return out;
  }

  /**
   * The server skips everything up to the next Sync: those requests never run and change nothing. When
   * no Sync was sent yet, what is sent until one is skipped too (push()).
   */
  private skipToSync(): void {
    for (let r = this.current(); ; r = this.current()) {
      if (!r) {
        this.skipping = true;
        return;
      }
      if (r.kind === 'sync') return;
      if (r.kind === 'hidden') {
        // The agent's own statement ends with its own Sync: its statement was skipped, its Sync was not.
        r.errored = true;
        return;
      }
      this.skip(r);
      this.shift();
    }
  }

  /** A request the server skipped: its changes never happen; the audit and the recording say it did not run. */
  private skip(r: Request): void {
    this.deps.ns.drop(r.changes);
    for (const s of r.statements ?? []) this.deps.ns.drop(s.changes);
    const blame = r.kind === 'execute' ? this.blame : undefined;
    if (blame && r.log && !r.refusal) {
      this.blame = undefined;
      r.log.sqlstate = blame.code;
      this.deps.recording?.result(r.log, { sqlstate: blame.code, note: blame.note });
      this.deps.log.finish(r.log);
    } else if (r.log && !r.refusal) {
      const note = r.kind === 'query' ? 'not run: the server discarded it while skipping to Sync after an earlier error' : 'not run: an earlier message of the pipeline failed';
      this.deps.recording?.result(r.log, { note });
      this.deps.log.finish(r.log, note);
    } else if (r.log) this.deps.log.finish(r.log);
    r.done?.(this.status, true);
  }

  /** ReadyForQuery: the Query or Sync (or hidden statement) at the head is answered. */
  private ready(r: Request, status: number): void {
    this.status = status;
    this.blame = undefined;
    this.copyIn = false;
    if (r.kind === 'query') {
      this.deps.ns.confirm(r.changes); // the unnamed statement and portal are gone
      for (const s of (r.statements ?? []).slice(r.at ?? 0)) this.deps.ns.drop(s.changes); // not reached: an error ended it
      if (r.log) {
        if (!r.log.recorded && !r.errored) this.deps.recording?.result(r.log, {});
        this.deps.log.finish(r.log);
      }
    }
    if (r.kind === 'sync') this.deps.ns.confirm(r.changes);
    if (status === TxStatus.Idle) {
      this.deps.ns.transactionEnded(!this.failedSinceIdle);
      this.failedSinceIdle = false;
      this.deps.onIdle?.();
    }
    this.shift();
    r.done?.(status, r.errored === true);
  }

  /** The session is ending: what is still in flight is recorded as far as it got. */
  abandon(note: string): void {
    for (let r = this.current(); r; r = this.current()) {
      if (r.log && !r.log.finished) {
        if (!r.refusal) this.deps.recording?.result(r.log, { note });
        this.deps.log.finish(r.log, note);
      }
      r.done?.(this.status, true);
      this.shift();
    }
  }
}

function lost(r: Request, t: number): ProtocolError {
  return new ProtocolError(`the agent lost track of the session: '${String.fromCharCode(t)}' does not answer a ${r.kind}`);
}

/** The channel name of a NotificationResponse (as masked: channel and pid kept). */
function notificationChannel(msg: Buffer): string {
  const z = msg.indexOf(0, 9);
  return z > 9 ? msg.toString('utf8', 9, z) : '';
}

/**
 * An error outside any request (the server shutting down, an idle timeout) carries the server's own
 * meaning and no statement's values: passed on as is for the classes that say why a session ends.
 */
function idleErrorRedacts(fields: PgErrorFields, masking: boolean): boolean {
  if (!masking) return false;
  const c = fields.code ?? '';
  return !(c.startsWith('57') || c.startsWith('08') || c === '25P03' || c === '25P04');
}

/** What the recording notes of an error: the text the client was sent. */
function redactedNote(sent: Buffer, original: PgErrorFields, body: Buffer): string {
  if (sent.length === body.length + 5) return original.message ?? '';
  try {
    return parseErrorFields(sent.subarray(5)).message ?? '';
  } catch {
    return '';
  }
}
