// The session's recording: its masked transcript (statements and their first result rows), for
// `hoopctl sessions replay ID` (DESIGN.md "Audit, recording, sessions").
//
//   session.send(batch)    ── forwarded(): statements (the SQL as audited) and Syncs, in wire order ──► queue
//   outlet.send(bytes)     ── backend(): the bytes the CLIENT was sent, i.e. after masking
//                              T  columns · D  the first N rows decoded, later ones only counted
//                              C / E / s / I  close a result → entry · Z  ends a Query or a Sync
//   entries                ── one write at a time, in order, never awaited by the relay ──► store.appendRecording
//
// It reads only what already left for the client, after masking, so a recording can hold nothing the
// client did not see; literals of statements that read masked columns are gone from the audited SQL.
// Recording is not the evidence (the audit events are, and they fail closed): a recording write that
// fails is logged and the session goes on.
import type { EventInput } from '../audit/events.js';
import type { RecordingEntry, RecordingLimits, StateStore } from '../audit/store.js';
import type { Logger } from '../log.js';
import { parseCommandComplete, parseErrorFields, parseRowDescription, type RowField } from '../pgwire/backend.js';
import { Backend, Frontend } from '../pgwire/codes.js';

export interface RecordingOptions extends RecordingLimits {
  store: Pick<StateStore, 'appendRecording'>;
}

/** What the session forwards (its Outbound), as far as the recording needs it. */
export interface Forwarded {
  bytes: Buffer;
  /** Present for statements: the audit event, whose `data.sql` is the SQL as audited. */
  event?: EventInput;
  /** Present for statements that run (allowed or held); absent for refusals. */
  inFlight?: { kind: 'query' | 'execute'; seq?: number };
  /** The client's Sync (its bytes may carry the agent's own hidden statements too). */
  sync?: boolean;
}

/** A statement on the wire: a simple Query ends at its ReadyForQuery, an Execute at its own result. */
interface Item {
  kind: 'query' | 'execute' | 'sync';
  seq?: number;
  sql: string;
  /** Refused by the agent: its sentinel's error is the whole story; if the server skips it, nothing. */
  refused: boolean;
  /** Results recorded so far (a Query may have several). */
  results: number;
}

/** One value longer than this is cut: a transcript shows what ran, not whole documents. */
const MAX_VALUE_CHARS = 1000;
/** Entries waiting for the store; beyond this the store is too slow and entries are dropped. */
const MAX_PENDING = 256;

export class SessionRecording {
  private readonly queue: Item[] = [];
  private head = 0;
  private fields?: RowField[];
  private rows: unknown[][] = [];
  private omitted = 0;
  private valuesCut = false;
  private copy = false;
  /** Bytes handed to the store so far (its own count is a little larger: it adds a timestamp). */
  private used = 0;
  private full = false;
  private broken = false;
  private pending = 0;
  private dropped = 0;
  private writes: Promise<void> = Promise.resolve();
  private warned = false;

  constructor(
    private readonly sessionId: string,
    private readonly opts: RecordingOptions,
    private readonly log: Logger,
  ) {}

  // ── frontend side: call in wire order ──────────────────────────────────────────────────────────

  /** A batch about to be written upstream. */
  forwarded(batch: readonly Forwarded[]): void {
    for (const o of batch) {
      if (o.event) {
        const kind = o.inFlight?.kind ?? (o.bytes[0] === Frontend.Query ? 'query' : 'execute');
        this.queue.push({ kind, seq: o.inFlight?.seq, sql: String(o.event.data?.sql ?? ''), refused: !o.inFlight, results: 0 });
      } else if (o.sync) {
        // Its ReadyForQuery must not end a Query sent after it (pipelining).
        this.queue.push({ kind: 'sync', sql: '', refused: false, results: 0 });
      }
    }
  }

  // ── backend side: the masked bytes sent to the client, whole messages ──────────────────────────

  backend(buf: Buffer): void {
    if (this.broken) return;
    // Nothing the recording does may break the session it records.
    try {
      this.walk(buf);
    } catch (err) {
      this.lost(`unreadable backend message: ${(err as Error).message}`);
    }
  }

  private walk(buf: Buffer): void {
    const n = buf.length;
    let off = 0;
    while (off + 5 <= n) {
      const t = buf[off];
      let end = off + 1 + ((buf[off + 1] << 24) | (buf[off + 2] << 16) | (buf[off + 3] << 8) | buf[off + 4]);
      if (end < off + 5 || end > n) return this.lost('a backend chunk did not hold whole messages');
      if (t === Backend.DataRow) {
        if (this.rows.length < this.opts.maxRowsPerStatement && !this.full && this.current()) {
          this.rows.push(this.decodeRow(buf, off + 5, end));
          off = end;
          continue;
        }
        // The hot path: past the cap, a run of rows is only counted (length words, nothing decoded).
        let count = 1;
        while (end + 5 <= n && buf[end] === Backend.DataRow) {
          const next = end + 1 + ((buf[end + 1] << 24) | (buf[end + 2] << 16) | (buf[end + 3] << 8) | buf[end + 4]);
          if (next < end + 5 || next > n) break;
          end = next;
          count++;
        }
        this.omitted += count;
      } else this.message(t, buf.subarray(off + 5, end));
      off = end;
    }
  }

  /** The session ended: what was in flight is recorded as far as it got. */
  end(): void {
    for (let it = this.current(); it; it = this.current()) {
      if (it.kind !== 'sync' && (this.rows.length || this.omitted || it.results === 0) && !it.refused) this.result(it, { note: 'session ended before the statement completed' });
      this.resetResult();
      this.head++;
    }
  }

  private message(t: number, body: Buffer): void {
    const it = this.current();
    switch (t) {
      case Backend.RowDescription:
        this.fields = parseRowDescription(body);
        break;
      case Backend.CopyOutResponse:
        this.copy = true;
        break;
      case Backend.CommandComplete:
        if (it && it.kind !== 'sync') {
          const { tag, rows } = parseCommandComplete(body);
          this.result(it, { tag, rowCount: rows ?? undefined, note: this.copy ? 'COPY data is not recorded' : undefined });
          if (it.kind === 'execute') this.head++;
        }
        this.resetResult();
        break;
      case Backend.PortalSuspended:
        if (it?.kind === 'execute') {
          this.result(it, { note: 'portal suspended: the client fetches the rest with later Executes' });
          this.head++;
        }
        this.resetResult();
        break;
      case Backend.EmptyQueryResponse:
        if (it?.kind === 'execute') this.head++;
        else if (it) it.results++;
        break;
      case Backend.ErrorResponse: {
        const f = parseErrorFields(body);
        if (it && it.kind !== 'sync') {
          this.result(it, { sqlstate: f.code, note: `${f.severity}:  ${f.message}` });
          if (it.kind === 'execute') this.head++;
        }
        this.resetResult();
        break;
      }
      case Backend.ReadyForQuery:
        this.ready();
        break;
    }
  }

  /** ReadyForQuery answers the first Query or Sync queued; Executes before it that never answered were skipped. */
  private ready(): void {
    for (let it = this.current(); it; it = this.current()) {
      this.head++;
      if (it.kind === 'sync') break;
      if (it.kind === 'query') {
        if (it.results === 0) this.result(it, {});
        break;
      }
      if (!it.refused) this.result(it, { note: 'not run: an earlier message of the pipeline failed' });
    }
    if (this.head > 64 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    this.resetResult();
  }

  private current(): Item | undefined {
    return this.queue[this.head];
  }

  private resetResult(): void {
    this.fields = undefined;
    this.rows = [];
    this.omitted = 0;
    this.valuesCut = false;
    this.copy = false;
  }

  private result(it: Item, extra: Pick<RecordingEntry, 'tag' | 'rowCount' | 'sqlstate' | 'note'>): void {
    it.results++;
    const e: RecordingEntry = { seq: it.seq, sql: it.results === 1 ? it.sql : undefined, ...extra };
    if (this.fields) {
      e.columns = this.fields.map((f) => f.name);
      e.types = this.fields.map((f) => f.typeOid);
      e.rows = this.rows;
      e.rowCount ??= this.rows.length + this.omitted;
    }
    if (this.omitted || this.valuesCut) e.truncated = { rowsOmitted: this.omitted || undefined, values: this.valuesCut || undefined };
    this.write(e);
  }

  private write(e: RecordingEntry): void {
    if (this.full) return;
    if (this.dropped) {
      e.note = [e.note, `${this.dropped} earlier entries were not recorded (recording store too slow)`].filter(Boolean).join('; ');
    }
    const size = JSON.stringify(e).length + 1;
    // Past the session budget the store writes its one "cap reached" marker; nothing after it is kept.
    this.used += size;
    if (this.used > this.opts.maxBytesPerSession) this.full = true;
    if (this.pending >= MAX_PENDING) {
      this.dropped++;
      return;
    }
    this.dropped = 0;
    this.pending++;
    this.writes = this.writes
      .then(() => this.opts.store.appendRecording(this.sessionId, e))
      .catch((err) => {
        if (!this.warned) this.log.warn('recording not written (the audit events are unaffected)', { error: (err as Error).message });
        this.warned = true;
      })
      .finally(() => this.pending--);
  }

  /** The transcript cannot follow the stream any more: say so once and stop (the session goes on). */
  private lost(why: string): void {
    this.broken = true;
    this.log.warn('recording stopped', { reason: why });
    this.write({ note: `recording stopped: ${why}`, truncated: { session: true } });
  }

  /** A DataRow's values as the client got them: text as text, binary decoded for simple types. */
  private decodeRow(buf: Buffer, start: number, end: number): unknown[] {
    const nf = (buf[start] << 8) | buf[start + 1];
    const out = new Array<unknown>(nf);
    let i = start + 2;
    for (let k = 0; k < nf; k++) {
      if (i + 4 > end) return out;
      const len = buf.readInt32BE(i);
      i += 4;
      if (len < 0) {
        out[k] = null;
        continue;
      }
      const f = this.fields?.[k];
      out[k] = f?.format === 1 ? decodeBinary(buf, i, len, f.typeOid) : this.text(buf, i, len);
      i += len;
    }
    return out;
  }

  private text(buf: Buffer, at: number, len: number): string {
    if (len <= MAX_VALUE_CHARS) return buf.toString('utf8', at, at + len);
    const s = buf.toString('utf8', at, at + Math.min(len, MAX_VALUE_CHARS * 4));
    if (s.length <= MAX_VALUE_CHARS) return s;
    this.valuesCut = true;
    return s.slice(0, MAX_VALUE_CHARS) + '…';
  }
}

// Type OIDs decoded in binary format; anything else is recorded as a marker with its size.
const TEXT_OIDS = new Set([18, 19, 25, 114, 142, 1042, 1043]);

function decodeBinary(buf: Buffer, at: number, len: number, typeOid: number): unknown {
  switch (typeOid) {
    case 16:
      return len === 1 ? buf[at] !== 0 : marker(len);
    case 21:
      return len === 2 ? buf.readInt16BE(at) : marker(len);
    case 23:
      return len === 4 ? buf.readInt32BE(at) : marker(len);
    case 20:
      return len === 8 ? buf.readBigInt64BE(at).toString() : marker(len);
    case 700:
      return len === 4 ? buf.readFloatBE(at) : marker(len);
    case 701:
      return len === 8 ? buf.readDoubleBE(at) : marker(len);
    case 2950:
      return len === 16 ? buf.toString('hex', at, at + 16).replace(/^(.{8})(.{4})(.{4})(.{4})/, '$1-$2-$3-$4-') : marker(len);
    default:
      if (TEXT_OIDS.has(typeOid)) return buf.toString('utf8', at, at + Math.min(len, MAX_VALUE_CHARS));
      return marker(len);
  }
}

function marker(len: number): string {
  return `<binary ${len} bytes>`;
}
