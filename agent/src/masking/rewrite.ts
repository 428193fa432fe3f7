/**
 * The hot path: rewriting DataRows and CopyData of a result whose plan masks some columns.
 *
 *   upstream read ─► BackendFramer (types/offsets) ─► maskDataRows(chunk) ─► ONE output buffer
 *                                                     │ no masked column → the chunk itself
 *                                                     │ other messages   → copied by range
 *                                                     └ DataRow          → walked by length words,
 *                                                                          masked fields replaced,
 *                                                                          length back-patched
 *
 * No field is decoded unless it is masked and its strategy needs the value (partial, hash).
 * The output is allocated once per chunk from an upper bound (each masked field can grow by at
 * most its strategy's `maxBytes`), so the loop has no growth checks. Short ranges are copied with
 * word and byte loops (cheaper than Buffer#copy below a few dozen bytes; DESIGN.md performance notes);
 * masked values (redact, partial, hash of text) are written straight into the output.
 *
 * Never fails open: a malformed row (field count or lengths that don't add up) throws
 * `MaskingError`; the caller refuses the result (ErrorResponse) instead of forwarding bytes.
 *
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-DATAROW
 * @see https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9 (file formats)
 */
import type { ColumnMask } from './lineage.js';
import { maskerFor, type FieldMasker, type FieldMaskerInfo, type MaskerOptions } from './strategies.js';

export class MaskingError extends Error {
  readonly code = 'MASKING_FAILED';
}

const DATA_ROW = 0x44; // 'D'
const COPY_DATA = 0x64; // 'd'
const SHORT = 48;
/** ColumnMaskers.op: how writeRow replaces a masked field. */
const OP_CONST = 1; // constant bytes (consts[c])
const OP_NULL = 2; // SQL NULL
const OP_PARTIAL = 3; // partial(keep), written in place
const OP_CALL = 4; // fns[c] (hash of json, uuid, bytea)
const OP_WRITE = 5; // writers[c]: written in place (hash of text)

/** Copies src[s, e) to dst at d; returns the new d. */
function copyRange(src: Buffer, s: number, e: number, dst: Buffer, d: number): number {
  const n = e - s;
  if (n < SHORT) {
    for (let i = 0; i < n; i++) dst[d + i] = src[s + i];
    return d + n;
  }
  src.copy(dst, d, s, e);
  return d + n;
}

/**
 * Bytes the DataRow writer may write past the end of what it returns: it moves whole 4-byte words, so
 * a copy or a run of stars can spill up to 3 bytes that the next write covers (or that lie past the
 * returned range). Output buffers have this much room beyond their bound.
 */
const WORD_SLACK = 4;
/** Longer ranges go to Buffer#copy (its per-call cost is paid back only past a few hundred bytes). */
const LONG = 256;

/**
 * copyRange in 4-byte moves through DataViews of src and dst (TurboFan inlines DataView access). The
 * last word may read up to 3 bytes past `e` (inside src) and write them past the range's end in dst
 * (WORD_SLACK): writes go forward only, so the next write, or the end of the returned range, covers them.
 * Past `wordEnd` (src.length - 3, hoisted by the caller), the tail is copied byte by byte instead.
 */
function copyRangeDV(src: Buffer, sv: DataView, s: number, e: number, dst: Buffer, dv: DataView, d: number, wordEnd: number): number {
  const n = e - s;
  if (n >= LONG) {
    src.copy(dst, d, s, e);
    return d + n;
  }
  if (e <= wordEnd) {
    for (let k = 0; k < n; k += 4) dv.setUint32(d + k, sv.getUint32(s + k));
    return d + n;
  }
  let m = n;
  for (; m >= 4; m -= 4, s += 4, d += 4) dv.setUint32(d, sv.getUint32(s));
  for (; m > 0; m--) dst[d++] = src[s++];
  return d;
}

const STARS4 = 0x2a2a2a2a;

/** `n` stars ('*') at `out[pos]`, four at a time (up to 3 more spill into WORD_SLACK); returns the new position. */
function writeStars(dout: DataView, pos: number, n: number): number {
  for (let k = 0; k < n; k += 4) dout.setUint32(pos + k, STARS4);
  return pos + n;
}

/**
 * partialText (strategies.ts) written straight into `out`: stars, then the last `keep` characters.
 * ASCII values (the common case) are recognised four bytes at a time and then need no character
 * count: characters are bytes. Anything else takes the per-byte UTF-8 walk.
 */
function writePartial(buf: Buffer, din: DataView, s: number, e: number, keep: number, out: Buffer, dout: DataView, pos: number, wordEnd: number): number {
  let k = s;
  let high = 0;
  for (; k + 4 <= e; k += 4) high |= din.getUint32(k);
  for (; k < e; k++) high |= buf[k];
  if ((high & 0x80808080) === 0) {
    const n = e - s;
    if (n <= keep) return writeStars(dout, pos, n);
    pos = writeStars(dout, pos, n - keep);
    return copyRangeDV(buf, din, e - keep, e, out, dout, pos, wordEnd);
  }
  let chars = 0;
  for (let i = s; i < e; i++) if ((buf[i] & 0xc0) !== 0x80) chars++;
  if (chars <= keep) return writeStars(dout, pos, chars);
  let cut = e;
  let seen = 0;
  while (seen < keep && cut > s) {
    cut--;
    if ((buf[cut] & 0xc0) !== 0x80) seen++;
  }
  pos = writeStars(dout, pos, chars - keep);
  for (let i = cut; i < e; i++) out[pos++] = buf[i];
  return pos;
}

/** A DataView over exactly the bytes of `b` (offsets in it are the Buffer's own). */
function viewOf(b: Buffer): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function putI32(b: Buffer, at: number, v: number): void {
  b[at] = v >>> 24;
  b[at + 1] = v >>> 16;
  b[at + 2] = v >>> 8;
  b[at + 3] = v;
}

/** Per-column maskers of one result: shared by DataRow and binary COPY rewriting. */
class ColumnMaskers {
  readonly n: number;
  readonly masked: Uint8Array;
  readonly consts: (Buffer | null | undefined)[];
  readonly fns: (FieldMasker | undefined)[];
  readonly writers: (FieldMaskerInfo['write'] | undefined)[];
  /** ≥ 0: partial(keep) on a text-like column, written in place without allocating */
  readonly partialKeep: Int32Array;
  /** What writeRow does with a non-NULL field of column c: OP_* (0 = pass it through). */
  readonly op: Uint8Array;
  /**
   * OP_CONST fields precomputed whole (length word + value), back to back in one buffer: column c's
   * are `constFields[constAt[c], constAt[c + 1])`, copied as they are.
   */
  readonly constFields: Buffer;
  readonly constAt: Int32Array;
  readonly constView: DataView;
  /** upper bound of the bytes a row can grow by */
  readonly growth: number;
  readonly active: boolean;

  constructor(plan: readonly ColumnMask[], formats: readonly (0 | 1)[], typeOids: readonly number[], opts: MaskerOptions) {
    this.n = plan.length;
    this.masked = new Uint8Array(this.n);
    this.consts = new Array(this.n);
    this.fns = new Array(this.n);
    this.writers = new Array(this.n);
    this.partialKeep = new Int32Array(this.n).fill(-1);
    this.op = new Uint8Array(this.n);
    let growth = 0;
    for (let c = 0; c < this.n; c++) {
      const m = plan[c];
      if (!m.masked) continue;
      const format = (formats.length === 1 ? formats[0] : formats[c]) === 1 ? 1 : 0;
      const info = maskerFor(m.strategy, typeOids[c] ?? 0, format, opts);
      this.masked[c] = 1;
      this.consts[c] = info.constant;
      this.fns[c] = info.constant === undefined ? info.mask : undefined;
      if (info.kind === 'partial' && info.constant === undefined && m.strategy.kind === 'partial') this.partialKeep[c] = m.strategy.keep;
      if (info.constant === undefined && info.write) this.writers[c] = info.write;
      this.op[c] = this.partialKeep[c] >= 0 ? OP_PARTIAL : info.constant === null ? OP_NULL : info.constant ? OP_CONST : info.write ? OP_WRITE : OP_CALL;
      growth += Math.max(info.maxBytes, 0);
    }
    this.growth = growth;
    this.active = this.masked.some((x) => x === 1);
    this.constAt = new Int32Array(this.n + 1);
    const fields: Buffer[] = [];
    for (let c = 0; c < this.n; c++) {
      const k = this.op[c] === OP_CONST ? this.consts[c]! : undefined;
      if (k) {
        const f = Buffer.allocUnsafe(4 + k.length);
        f.writeInt32BE(k.length, 0);
        k.copy(f, 4);
        fields.push(f);
      }
      this.constAt[c + 1] = this.constAt[c] + (k ? 4 + k.length : 0);
    }
    this.constFields = Buffer.concat([...fields, Buffer.alloc(WORD_SLACK)]); // word reads stay inside
    this.constView = viewOf(this.constFields);
  }

  /** The replacement of field c (bytes buf[s, e)); null → SQL NULL. */
  replace(c: number, buf: Buffer, s: number, e: number): Buffer | null {
    const k = this.consts[c];
    if (k !== undefined) return k;
    try {
      return this.fns[c]!(buf, s, e);
    } catch {
      return null;
    }
  }
}

/** Rewrites the DataRows of one result (one RowDescription's worth of columns). */
export class RowMasker {
  private readonly cols: ColumnMaskers;

  /**
   * @param plan one mask per column (after `crossCheck`)
   * @param formats format code per column (RowDescription), or one code for all
   * @param typeOids type OID per column (RowDescription)
   */
  constructor(plan: readonly ColumnMask[], formats: readonly (0 | 1)[], typeOids: readonly number[], opts: MaskerOptions = {}) {
    this.cols = new ColumnMaskers(plan, formats, typeOids, opts);
  }

  /** Whether any column is masked (false: forward DataRows untouched). */
  get active(): boolean {
    return this.cols.active;
  }

  /** Upper bound of how many bytes one row can grow. */
  get maxGrowth(): number {
    return this.cols.growth;
  }

  private slab: Buffer = Buffer.alloc(0);
  private slabAt = 0;

  /**
   * Room for `n` bytes in the output slab. Outputs are carved from 1 MiB slabs that are never
   * reused (a returned buffer stays valid after the next call), which amortises allocation.
   */
  take(n: number): { buf: Buffer; at: number } {
    if (this.slab.length - this.slabAt < n) {
      this.slab = Buffer.allocUnsafe(Math.max(n, 1 << 20));
      this.slabAt = 0;
    }
    return { buf: this.slab, at: this.slabAt };
  }

  /** Marks the slab as used up to `pos` (after `take`). */
  used(pos: number): void {
    this.slabAt = pos;
  }

  /** One DataRow message `buf[start, end)` (type byte included) → the masked message. */
  rewrite(buf: Buffer, start: number, end: number): Buffer {
    const out = Buffer.allocUnsafe(end - start + this.cols.growth + WORD_SLACK);
    const n = this.writeRow(buf, start, end, out, 0);
    return out.subarray(0, n);
  }

  /**
   * Writes the masked form of DataRow `buf[start, end)` into `out` at `pos` (room for
   * `end - start + maxGrowth + WORD_SLACK` bytes is the caller's); returns the new position. `din`/`dout` are
   * DataViews of `buf`/`out`, made once per chunk by the caller (length words and short runs move as
   * 32-bit words through them).
   */
  writeRow(buf: Buffer, start: number, end: number, out: Buffer, pos: number, din = viewOf(buf), dout = viewOf(out)): number {
    const cols = this.cols;
    if (end - start < 7 || buf[start] !== DATA_ROW) throw new MaskingError('not a DataRow');
    out[pos] = DATA_ROW;
    const lenAt = pos + 1;
    pos += 5;
    let i = start + 5;
    const nf = (buf[i] << 8) | buf[i + 1];
    const wordEnd = buf.length - 3; // copyRangeDV moves whole words up to here
    if (nf !== cols.n) throw new MaskingError(`DataRow has ${nf} fields, the plan ${cols.n}`);
    out[pos++] = buf[i++];
    out[pos++] = buf[i++];
    let run = i; // start of the pending range of untouched bytes
    const op = cols.op;
    for (let c = 0; c < nf; c++) {
      if (i + 4 > end) throw new MaskingError('DataRow truncated');
      const len = din.getInt32(i);
      const fieldEnd = len < 0 ? i + 4 : i + 4 + len;
      if (len < -1 || fieldEnd > end) throw new MaskingError('DataRow field length out of bounds');
      const o = op[c];
      if (o === 0 || len < 0) {
        i = fieldEnd;
        continue;
      }
      pos = copyRangeDV(buf, din, run, i, out, dout, pos, wordEnd);
      if (o === OP_PARTIAL) {
        const at = pos;
        pos = writePartial(buf, din, i + 4, fieldEnd, cols.partialKeep[c], out, dout, pos + 4, wordEnd);
        dout.setInt32(at, pos - at - 4);
      } else if (o === OP_WRITE) {
        let n: number;
        try {
          n = cols.writers[c]!(buf, i + 4, fieldEnd, out, pos + 4);
        } catch {
          n = -1; // never fail open: NULL
        }
        putI32(out, pos, n);
        pos += n < 0 ? 4 : 4 + n;
      } else if (o === OP_NULL) {
        out[pos] = 0xff;
        out[pos + 1] = 0xff;
        out[pos + 2] = 0xff;
        out[pos + 3] = 0xff;
        pos += 4;
      } else if (o === OP_CONST) {
        pos = copyRangeDV(cols.constFields, cols.constView, cols.constAt[c], cols.constAt[c + 1], out, dout, pos, cols.constFields.length - 3);
      } else {
        const rep = cols.replace(c, buf, i + 4, fieldEnd);
        if (rep === null) {
          putI32(out, pos, -1);
          pos += 4;
        } else {
          const rl = rep.length;
          putI32(out, pos, rl);
          pos += 4;
          for (let k = 0; k < rl; k++) out[pos + k] = rep[k];
          pos += rl;
        }
      }
      i = fieldEnd;
      run = i;
    }
    if (i !== end) throw new MaskingError('DataRow has trailing bytes');
    pos = copyRangeDV(buf, din, run, end, out, dout, pos, wordEnd);
    dout.setInt32(lenAt, pos - lenAt);
    return pos;
  }
}

/**
 * Masks the DataRows among messages `from … to-1` of a framed chunk (BackendFramer's `buffer`,
 * `types`, `offsets`) and returns ONE buffer with all of them: the chunk's own bytes when nothing
 * needs rewriting, else a new buffer where untouched messages are copied by range.
 */
export function maskDataRows(buf: Buffer, types: Uint8Array, offsets: Uint32Array, from: number, to: number, masker: RowMasker): Buffer {
  const start = offsets[from];
  const stop = offsets[to];
  if (!masker.active) return buf.subarray(start, stop);
  let rows = 0;
  for (let m = from; m < to; m++) if (types[m] === DATA_ROW) rows++;
  if (rows === 0) return buf.subarray(start, stop);
  const need = stop - start + rows * masker.maxGrowth + WORD_SLACK;
  const slab = masker.take(need);
  const out = slab.buf;
  let pos = slab.at;
  const first = pos;
  let run = start;
  const din = viewOf(buf);
  const dout = viewOf(out);
  for (let m = from; m < to; m++) {
    if (types[m] !== DATA_ROW) continue;
    const s = offsets[m];
    if (s > run) pos = copyRange(buf, run, s, out, pos);
    pos = masker.writeRow(buf, s, offsets[m + 1], out, pos, din, dout);
    run = offsets[m + 1];
  }
  if (stop > run) pos = copyRange(buf, run, stop, out, pos);
  masker.used(pos);
  return out.subarray(first, pos);
}

// ---------------------------------------------------------------------------------------------
// COPY … TO STDOUT

export interface CopyFormat {
  format: 'text' | 'csv' | 'binary';
  delimiter?: string;
  quote?: string;
  escape?: string;
  null?: string;
  header?: boolean;
}

/**
 * Rewrites the CopyData payloads of one COPY OUT. Rows may be split across CopyData messages; the
 * masker emits only complete rows and keeps the rest for the next payload. `end()` throws when an
 * incomplete row is left (the caller refuses instead of forwarding it).
 */
export interface CopyMasker {
  /** One CopyData payload (after the 5-byte header) → masked payload (possibly empty). */
  push(payload: Buffer): Buffer;
  end(): void;
}

/** A CopyMasker for the format of a COPY: `typeOids` per column (0 = unknown → NULL when masked). */
export function copyMasker(plan: readonly ColumnMask[], typeOids: readonly number[], fmt: CopyFormat, opts: MaskerOptions = {}): CopyMasker {
  if (fmt.format === 'binary') return new BinaryCopyMasker(plan, typeOids, opts);
  return new TextCopyMasker(plan, typeOids, fmt, opts);
}

class TextCopyMasker implements CopyMasker {
  private pending: Buffer | undefined;
  private headerLeft: boolean;
  private readonly cols: ColumnMaskers;
  private readonly csv: boolean;
  private readonly delim: number;
  private readonly quote: number;
  private readonly escape: number;
  private readonly nullStr: Buffer;

  constructor(plan: readonly ColumnMask[], typeOids: readonly number[], fmt: CopyFormat, opts: MaskerOptions) {
    this.cols = new ColumnMaskers(plan, [0], typeOids, opts);
    this.csv = fmt.format === 'csv';
    this.delim = (fmt.delimiter ?? (this.csv ? ',' : '\t')).charCodeAt(0);
    this.quote = (fmt.quote ?? '"').charCodeAt(0);
    this.escape = (fmt.escape ?? fmt.quote ?? '"').charCodeAt(0);
    this.nullStr = Buffer.from(fmt.null ?? (this.csv ? '' : '\\N'));
    this.headerLeft = fmt.header === true;
  }

  push(payload: Buffer): Buffer {
    const buf = this.pending ? Buffer.concat([this.pending, payload]) : payload;
    this.pending = undefined;
    // Nothing to rewrite: the rows pass as they are, but each must still have the plan's width (a plan
    // that disagrees with the server's output is not trusted to say what is clear).
    if (!this.cols.active && !this.headerLeft) return this.checkWidths(buf);
    const out = new CopyOut(buf.length + 256);
    let i = 0;
    while (i < buf.length) {
      const eol = this.rowEnd(buf, i);
      if (eol < 0) break;
      if (this.headerLeft) {
        this.headerLeft = false;
        out.bytes(buf, i, eol + 1);
      } else if (this.csv) this.csvRow(buf, i, eol, out);
      else this.textRow(buf, i, eol, out);
      i = eol + 1;
    }
    if (i < buf.length) this.pending = Buffer.from(buf.subarray(i));
    return out.result();
  }

  end(): void {
    if (this.pending?.length) throw new MaskingError('COPY data ended inside a row');
  }

  /** Passes whole rows through after counting their fields; a partial row waits for its end. */
  private checkWidths(buf: Buffer): Buffer {
    let i = 0;
    while (i < buf.length) {
      const eol = this.rowEnd(buf, i);
      if (eol < 0) break;
      const n = this.csv ? this.csvFields(buf, i, eol) : this.textFields(buf, i, eol);
      if (n !== this.cols.n) throw new MaskingError(`COPY row has ${n} fields, the plan ${this.cols.n}`);
      i = eol + 1;
    }
    if (i < buf.length) this.pending = Buffer.from(buf.subarray(i));
    return i === buf.length ? buf : buf.subarray(0, i);
  }

  private textFields(buf: Buffer, from: number, eol: number): number {
    let n = 1;
    for (let k = from; k < eol; k++) {
      const b = buf[k];
      if (b === 0x5c) k++;
      else if (b === this.delim) n++;
    }
    return n;
  }

  private csvFields(buf: Buffer, from: number, eol: number): number {
    let n = 1;
    let inQuote = false;
    for (let k = from; k < eol; k++) {
      const b = buf[k];
      if (inQuote) {
        if (b === this.escape && this.escape !== this.quote && k + 1 < eol && (buf[k + 1] === this.quote || buf[k + 1] === this.escape)) k++;
        else if (b === this.quote) inQuote = false;
      } else if (b === this.quote) inQuote = true;
      else if (b === this.delim) n++;
    }
    return n;
  }

  /** Index of the newline ending the row that starts at i, or -1. */
  private rowEnd(buf: Buffer, i: number): number {
    if (!this.csv) return buf.indexOf(0x0a, i);
    let inQuote = false;
    for (let k = i; k < buf.length; k++) {
      const b = buf[k];
      if (inQuote) {
        if (b === this.escape && this.escape !== this.quote && k + 1 < buf.length && (buf[k + 1] === this.quote || buf[k + 1] === this.escape)) k++;
        else if (b === this.quote) inQuote = false;
      } else if (b === this.quote) inQuote = true;
      else if (b === 0x0a) return k;
    }
    return -1;
  }

  /**
   * text format: fields split on the delimiter, backslash escapes, `\N` for NULL. The row `buf[start, eol]`
   * (eol: its newline) goes to `out` with clear bytes copied by range and each masked field replaced
   * by its escaped mask: only masked fields allocate (their unescaped value, when it has escapes).
   */
  private textRow(buf: Buffer, start: number, eol: number, out: CopyOut): void {
    const cols = this.cols;
    let c = 0;
    let fs = start;
    let run = start; // clear bytes not yet copied
    for (let k = start; k <= eol; k++) {
      const b = buf[k];
      if (b === 0x5c && k < eol) {
        k++;
        continue;
      }
      if (b === this.delim || k === eol) {
        if (c >= cols.n) throw new MaskingError('COPY row has more fields than the plan');
        if (cols.masked[c] && !this.isNull(buf, fs, k)) {
          out.bytes(buf, run, fs);
          const raw = unescapeText(buf.subarray(fs, k));
          const rep = cols.replace(c, raw, 0, raw.length);
          if (rep === null) out.bytes(this.nullStr, 0, this.nullStr.length);
          else out.escaped(rep, this.delim);
          run = k; // the delimiter or newline after it goes with the next clear run
        }
        c++;
        fs = k + 1;
      }
    }
    if (c !== cols.n) throw new MaskingError(`COPY row has ${c} fields, the plan ${cols.n}`);
    out.bytes(buf, run, eol + 1);
  }

  /** Whether `buf[s, e)` is the NULL string. */
  private isNull(buf: Buffer, s: number, e: number): boolean {
    const n = this.nullStr;
    if (e - s !== n.length) return false;
    for (let k = 0; k < n.length; k++) if (buf[s + k] !== n[k]) return false;
    return true;
  }

  /**
   * csv format: quoted fields (doubled quotes or ESCAPE), unquoted NULL string. Like textRow: clear bytes
   * copied by range, only masked fields decoded and written quoted.
   */
  private csvRow(buf: Buffer, start: number, eol: number, out: CopyOut): void {
    const cols = this.cols;
    let c = 0;
    let k = start;
    let run = start;
    while (k <= eol) {
      const fs = k;
      const masked = cols.masked[c] === 1;
      const value: number[] | undefined = masked ? [] : undefined;
      k = this.csvField(buf, k, eol, value);
      if (c >= cols.n) throw new MaskingError('COPY row has more fields than the plan');
      if (masked && !(!this.quotedField && this.isNull(buf, fs, k))) {
        out.bytes(buf, run, fs);
        const raw = Buffer.from(value!);
        const rep = cols.replace(c, raw, 0, raw.length);
        if (rep === null) out.bytes(this.nullStr, 0, this.nullStr.length);
        else out.quoted(rep, this.quote, this.escape);
        run = k; // the delimiter or newline after it goes with the next clear run
      }
      c++;
      k++;
    }
    if (c !== cols.n) throw new MaskingError(`COPY row has ${c} fields, the plan ${cols.n}`);
    out.bytes(buf, run, eol + 1);
  }

  /** Set by csvField: the field it just read was quoted (a quoted NULL string is a value, not NULL). */
  private quotedField = false;

  /** Reads the csv field at `k` (up to the delimiter or `eol`); returns its end. Its decoded bytes go to `value` when given. */
  private csvField(buf: Buffer, k: number, eol: number, value: number[] | undefined): number {
    const q = this.quote;
    const esc = this.escape;
    this.quotedField = false;
    while (k < eol && buf[k] !== this.delim) {
      if (buf[k] !== q) {
        value?.push(buf[k]);
        k++;
        continue;
      }
      this.quotedField = true;
      k++;
      while (k < eol) {
        if (buf[k] === esc && k + 1 < eol && (buf[k + 1] === q || buf[k + 1] === esc) && (esc !== q || buf[k + 1] === q)) {
          value?.push(buf[k + 1]);
          k += 2;
        } else if (buf[k] === q) {
          k++;
          break;
        } else {
          value?.push(buf[k]);
          k++;
        }
      }
    }
    return k;
  }
}

const ESC: Record<number, number> = { 0x6e: 0x0a, 0x72: 0x0d, 0x74: 0x09, 0x62: 0x08, 0x66: 0x0c, 0x76: 0x0b };

/** COPY text escapes → raw bytes (\n \r \t \b \f \v \ooo \xhh \<any>). */
export function unescapeText(f: Buffer): Buffer {
  if (!f.includes(0x5c)) return f;
  const out: number[] = [];
  for (let k = 0; k < f.length; k++) {
    const b = f[k];
    if (b !== 0x5c || k + 1 >= f.length) {
      out.push(b);
      continue;
    }
    const n = f[++k];
    if (ESC[n] !== undefined) out.push(ESC[n]);
    else if (n >= 0x30 && n <= 0x37) {
      let v = n - 0x30;
      for (let j = 0; j < 2 && k + 1 < f.length && f[k + 1] >= 0x30 && f[k + 1] <= 0x37; j++) v = v * 8 + (f[++k] - 0x30);
      out.push(v & 0xff);
    } else if (n === 0x78 && k + 1 < f.length && /[0-9a-fA-F]/.test(String.fromCharCode(f[k + 1]))) {
      let h = String.fromCharCode(f[++k]);
      if (k + 1 < f.length && /[0-9a-fA-F]/.test(String.fromCharCode(f[k + 1]))) h += String.fromCharCode(f[++k]);
      out.push(parseInt(h, 16));
    } else out.push(n);
  }
  return Buffer.from(out);
}

/** One output buffer per COPY payload, grown when rows do not fit (masked values are usually shorter). */
class CopyOut {
  private buf: Buffer;
  private pos = 0;

  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const b = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(b, 0, 0, this.pos);
    this.buf = b;
  }

  bytes(src: Buffer, s: number, e: number): void {
    this.room(e - s);
    this.pos = copyRange(src, s, e, this.buf, this.pos);
  }

  int32(v: number): void {
    this.room(4);
    putI32(this.buf, this.pos, v);
    this.pos += 4;
  }

  /** `v` in COPY text escapes: backslash, newline, carriage return, tab and the delimiter. */
  escaped(v: Buffer, delim: number): void {
    this.room(2 * v.length);
    const out = this.buf;
    let p = this.pos;
    for (let k = 0; k < v.length; k++) {
      const b = v[k];
      if (b === 0x5c) (out[p++] = 0x5c), (out[p++] = 0x5c);
      else if (b === 0x0a) (out[p++] = 0x5c), (out[p++] = 0x6e);
      else if (b === 0x0d) (out[p++] = 0x5c), (out[p++] = 0x72);
      else if (b === 0x09) (out[p++] = 0x5c), (out[p++] = 0x74);
      else if (b === delim) (out[p++] = 0x5c), (out[p++] = b);
      else out[p++] = b;
    }
    this.pos = p;
  }

  /** `v` as a quoted csv field: the quote and the escape character each escaped. */
  quoted(v: Buffer, q: number, esc: number): void {
    this.room(2 * v.length + 2);
    const out = this.buf;
    let p = this.pos;
    out[p++] = q;
    for (let k = 0; k < v.length; k++) {
      const b = v[k];
      if (b === q || b === esc) out[p++] = esc;
      out[p++] = b;
    }
    out[p++] = q;
    this.pos = p;
  }

  result(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

const PGCOPY = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');

class BinaryCopyMasker implements CopyMasker {
  private pending: Buffer | undefined;
  private headerDone = false;
  private trailerSeen = false;
  private readonly cols: ColumnMaskers;

  constructor(plan: readonly ColumnMask[], typeOids: readonly number[], opts: MaskerOptions) {
    this.cols = new ColumnMaskers(plan, [1], typeOids, opts);
  }

  push(payload: Buffer): Buffer {
    const buf = this.pending ? Buffer.concat([this.pending, payload]) : payload;
    this.pending = undefined;
    const out = new CopyOut(buf.length + 64);
    let i = 0;
    if (!this.headerDone) {
      if (buf.length < 19) {
        this.pending = Buffer.from(buf);
        return Buffer.alloc(0);
      }
      if (!buf.subarray(0, 11).equals(PGCOPY)) throw new MaskingError('not a binary COPY stream');
      const ext = buf.readUInt32BE(15);
      if (buf.length < 19 + ext) {
        this.pending = Buffer.from(buf);
        return Buffer.alloc(0);
      }
      out.bytes(buf, 0, 19 + ext);
      i = 19 + ext;
      this.headerDone = true;
    }
    const cols = this.cols;
    for (;;) {
      if (this.trailerSeen) {
        if (i < buf.length) throw new MaskingError('data after the binary COPY trailer');
        break;
      }
      if (buf.length - i < 2) break;
      const nf = buf.readInt16BE(i);
      if (nf === -1) {
        out.bytes(buf, i, i + 2);
        i += 2;
        this.trailerSeen = true;
        continue;
      }
      if (nf !== cols.n) throw new MaskingError(`binary COPY tuple has ${nf} fields, the plan ${cols.n}`);
      // is the whole tuple here?
      let k = i + 2;
      let complete = true;
      for (let c = 0; c < nf; c++) {
        if (buf.length - k < 4) {
          complete = false;
          break;
        }
        const len = buf.readInt32BE(k);
        if (len < -1) throw new MaskingError('bad field length in binary COPY');
        k += 4 + Math.max(len, 0);
        if (k > buf.length) {
          complete = false;
          break;
        }
      }
      if (!complete) break;
      // Clear fields are copied by range; a masked one becomes its length word and replacement.
      let run = i;
      let f = i + 2;
      for (let c = 0; c < nf; c++) {
        const len = buf.readInt32BE(f);
        const fe = f + 4 + Math.max(len, 0);
        if (cols.masked[c] && len >= 0) {
          out.bytes(buf, run, f);
          const rep = cols.replace(c, buf, f + 4, fe);
          out.int32(rep === null ? -1 : rep.length);
          if (rep !== null) out.bytes(rep, 0, rep.length);
          run = fe;
        }
        f = fe;
      }
      out.bytes(buf, run, k);
      i = k;
    }
    if (i < buf.length) this.pending = Buffer.from(buf.subarray(i));
    return out.result();
  }

  end(): void {
    if (this.pending?.length) throw new MaskingError('binary COPY ended inside a tuple');
  }
}

/**
 * Masks the CopyData messages among messages `from … to-1` of a framed chunk and returns one
 * buffer (other messages copied; a CopyData whose masked payload is empty is dropped).
 */
export function maskCopyData(buf: Buffer, types: Uint8Array, offsets: Uint32Array, from: number, to: number, masker: CopyMasker): Buffer {
  const parts: Buffer[] = [];
  let run = offsets[from];
  for (let m = from; m < to; m++) {
    if (types[m] !== COPY_DATA) continue;
    const s = offsets[m];
    if (s > run) parts.push(buf.subarray(run, s));
    const payload = masker.push(buf.subarray(s + 5, offsets[m + 1]));
    if (payload.length) {
      const head = Buffer.allocUnsafe(5);
      head[0] = COPY_DATA;
      putI32(head, 1, payload.length + 4);
      parts.push(head, payload);
    }
    run = offsets[m + 1];
  }
  if (offsets[to] > run) parts.push(buf.subarray(run, offsets[to]));
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}
