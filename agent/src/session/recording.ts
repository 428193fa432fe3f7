// The session's recording: its masked transcript (statements and their first result rows), for
// `hoopctl sessions replay ID` (DESIGN.md "Audit, recording, sessions").
//
//   pipeline (pipeline.ts), in the order the client receives them:
//     fields()    T  columns of the result now arriving
//     rows()      D  the masked DataRows as sent: the first N decoded, later ones only counted
//     copy()      H  COPY data is not recorded
//     result()    C / s / I / E  a result ended → one entry (the statement's SQL on its first)
//   entries       ── buffered; one write per flush (64 KiB, 128 entries, 200 ms or session end), in order, never
//                    awaited by the relay ──► store.appendRecording
//
// It sees only what leaves for the client, after masking, so a recording can hold nothing the client
// did not see; literals of statements that read masked columns are gone from the audited SQL.
// Recording is not the evidence (the audit events are, and they fail closed): a recording write that
// fails is logged and the session goes on, and entries may sit in memory for a moment before a flush.
import { isoPerMs, type RecordingEntry, type RecordingLimits, type StateStore } from '../audit/store.js';
import type { Logger } from '../log.js';
import type { RowField } from '../pgwire/backend.js';

/** Entries are stamped when they happen; many share a millisecond. */
const isoOf = isoPerMs();

export interface RecordingOptions extends RecordingLimits {
  store: Pick<StateStore, 'appendRecording'>;
}

/** The statement a result belongs to, as the pipeline knows it (statement-log.ts InFlight). */
export interface Recorded {
  seq?: number;
  /** The SQL as audited. */
  sql: string;
  /** Entries written for it so far (a Query may have several results). */
  recorded?: number;
}

export type ResultFacts = Pick<RecordingEntry, 'tag' | 'rowCount' | 'sqlstate' | 'note'>;

/** One value longer than this is cut: a transcript shows what ran, not whole documents. */
const MAX_VALUE_CHARS = 1000;
/** Entries buffered or being written; beyond this the store is too slow and entries are dropped. */
const MAX_PENDING = 1024;
/**
 * A flush is due once this much is buffered (bytes estimated from the SQL and the raw rows), or this
 * many entries, or this long after the first buffered entry.
 */
const FLUSH_BYTES = 64 << 10;
const FLUSH_ENTRIES = 128;
const FLUSH_MS = 200;

export class SessionRecording {
  private fieldList?: RowField[];
  private rowList: unknown[][] = [];
  private omitted = 0;
  private valuesCut = false;
  private copying = false;
  /** Raw DataRow bytes of the result now arriving (what its entry's size is estimated from). */
  private rowBytes = 0;
  /** The store said the session's budget is spent (it wrote its "cap reached" marker). */
  private full = false;
  private broken = false;
  private buffer: RecordingEntry[] = [];
  private bufferBytes = 0;
  private flushTimer?: NodeJS.Timeout;
  /** Entries handed to the store and not yet written. */
  private pending = 0;
  private dropped = 0;
  private writes: Promise<void> = Promise.resolve();
  private warned = false;

  constructor(
    private readonly sessionId: string,
    private readonly opts: RecordingOptions,
    private readonly log: Logger,
  ) {}

  /** The RowDescription of the result now arriving. */
  fields(fields: RowField[]): void {
    this.fieldList = fields;
  }

  /** COPY … TO STDOUT started: its data is not recorded. */
  copy(): void {
    this.copying = true;
  }

  /** DataRow messages exactly as the client was sent them (masked), whole messages. */
  rows(buf: Buffer): void {
    if (this.broken) return;
    // Nothing the recording does may break the session it records.
    try {
      this.walk(buf);
    } catch (err) {
      this.lost(`unreadable rows: ${(err as Error).message}`);
    }
  }

  /** A result of `stmt` ended (or `stmt` never ran, with a note saying why). */
  result(stmt: Recorded, extra: ResultFacts): void {
    stmt.recorded = (stmt.recorded ?? 0) + 1;
    const e: RecordingEntry = { seq: stmt.seq, sql: stmt.recorded === 1 ? stmt.sql : undefined, ...extra };
    if (this.copying && !e.note) e.note = 'COPY data is not recorded';
    const size = (e.sql?.length ?? 0) + this.rowBytes + 64;
    if (this.fieldList) {
      e.columns = this.fieldList.map((f) => f.name);
      e.types = this.fieldList.map((f) => f.typeOid);
      e.rows = this.rowList;
      e.rowCount ??= this.rowList.length + this.omitted;
    }
    if (this.omitted || this.valuesCut) e.truncated = { rowsOmitted: this.omitted || undefined, values: this.valuesCut || undefined };
    this.resetResult();
    if (!this.broken) this.write(e, size);
  }

  /** Something that happened outside any statement (a notification). */
  note(text: string): void {
    if (!this.broken) this.write({ note: text }, text.length + 64);
  }

  /** The session ended: what is buffered goes to the store now. */
  close(): Promise<void> {
    this.flush();
    return this.writes;
  }

  private walk(buf: Buffer): void {
    const n = buf.length;
    let off = 0;
    while (off + 5 <= n) {
      let end = off + 1 + ((buf[off + 1] << 24) | (buf[off + 2] << 16) | (buf[off + 3] << 8) | buf[off + 4]);
      if (end < off + 5 || end > n) return this.lost('a chunk of rows did not hold whole messages');
      if (this.rowList.length < this.opts.maxRowsPerStatement && !this.full) {
        this.rowList.push(this.decodeRow(buf, off + 5, end));
        this.rowBytes += end - off;
        off = end;
        continue;
      }
      // The hot path: past the cap, a run of rows is only counted (length words, nothing decoded).
      let count = 1;
      while (end + 5 <= n) {
        const next = end + 1 + ((buf[end + 1] << 24) | (buf[end + 2] << 16) | (buf[end + 3] << 8) | buf[end + 4]);
        if (next < end + 5 || next > n) break;
        end = next;
        count++;
      }
      this.omitted += count;
      off = end;
    }
  }

  private resetResult(): void {
    this.fieldList = undefined;
    this.rowList = [];
    this.omitted = 0;
    this.valuesCut = false;
    this.copying = false;
    this.rowBytes = 0;
  }

  private write(e: RecordingEntry, size: number): void {
    if (this.full) return;
    if (this.pending + this.buffer.length >= MAX_PENDING) {
      this.dropped++;
      return;
    }
    if (this.dropped) {
      e.note = [e.note, `${this.dropped} earlier entries were not recorded (recording store too slow)`].filter(Boolean).join('; ');
      this.dropped = 0;
    }
    // Its time is when it happened, not when its batch is written.
    e.ts = isoOf(Date.now());
    this.buffer.push(e);
    this.bufferBytes += size;
    if (this.bufferBytes >= FLUSH_BYTES || this.buffer.length >= FLUSH_ENTRIES) this.flush();
    else if (!this.flushTimer) {
      this.flushTimer = setTimeout(() => this.flush(), FLUSH_MS);
      this.flushTimer.unref();
    }
  }

  /** Hands the buffered entries to the store in one write, after the writes before it. */
  private flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (!this.buffer.length) return;
    const batch = this.buffer;
    this.buffer = [];
    this.bufferBytes = 0;
    this.pending += batch.length;
    this.writes = this.writes
      .then(async () => {
        // Past the session budget the store writes its one "cap reached" marker and says so.
        if (!(await this.opts.store.appendRecording(this.sessionId, ...batch))) this.full = true;
      })
      .catch((err) => {
        if (!this.warned) this.log.warn('recording not written (the audit events are unaffected)', { error: (err as Error).message });
        this.warned = true;
      })
      .finally(() => (this.pending -= batch.length));
  }

  /** The transcript cannot follow the stream any more: say so once and stop (the session goes on). */
  private lost(why: string): void {
    this.broken = true;
    this.log.warn('recording stopped', { reason: why });
    this.write({ note: `recording stopped: ${why}`, truncated: { session: true } }, why.length + 64);
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
      const f = this.fieldList?.[k];
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
