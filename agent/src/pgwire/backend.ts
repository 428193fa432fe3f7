// Backend (PostgreSQL → agent → client) side of the wire: constant messages, builders for what the
// agent says itself, a framer for the upstream byte stream, and parsers for the few messages the
// session must read. DataRows are never decoded here: the relay walks 5-byte headers and forwards
// untouched bytes (DESIGN.md "Performance notes").
// @see https://www.postgresql.org/docs/current/protocol-message-formats.html
import { Auth, Backend, ErrorField, MAX_CANCEL_SECRET_BYTES, TxStatus, type TxStatusName } from './codes.js';
import { ProtocolError } from './errors.js';
import { Reader } from './reader.js';
import { Writer } from './writer.js';

const EMPTY = Buffer.alloc(0);
const r: Reader = new Reader();
const w = new Writer(256);

// ---------------------------------------------------------------------------------------------
// Constant messages, built once at load

function empty(type: number): Buffer {
  return w.begin(type).end().take();
}

/** Answer to SSLRequest and GSSENCRequest on the loopback leg: "not supported, go on in clear". */
export const SSL_NO = Buffer.from('N');
/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-AUTHENTICATIONOK */
export const AUTH_OK = w.begin(Backend.Authentication).i32(Auth.Ok).end().take();
/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-READYFORQUERY */
export const READY_IDLE = w.begin(Backend.ReadyForQuery).i8(TxStatus.Idle).end().take();
export const READY_INTRANS = w.begin(Backend.ReadyForQuery).i8(TxStatus.InTransaction).end().take();
export const READY_FAILED = w.begin(Backend.ReadyForQuery).i8(TxStatus.Failed).end().take();
export const NO_DATA = empty(Backend.NoData);
export const EMPTY_QUERY_RESPONSE = empty(Backend.EmptyQueryResponse);
export const PARSE_COMPLETE = empty(Backend.ParseComplete);
export const BIND_COMPLETE = empty(Backend.BindComplete);
export const CLOSE_COMPLETE = empty(Backend.CloseComplete);
export const PORTAL_SUSPENDED = empty(Backend.PortalSuspended);

// ---------------------------------------------------------------------------------------------
// Builders

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-READYFORQUERY */
export function readyForQuery(status: TxStatusName): Buffer {
  return status === 'I' ? READY_IDLE : status === 'T' ? READY_INTRANS : READY_FAILED;
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-PARAMETERSTATUS */
export function parameterStatus(name: string, value: string): Buffer {
  return w.begin(Backend.ParameterStatus).cstring(name).cstring(value).end().take();
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-BACKENDKEYDATA */
export function backendKeyData(pid: number, secret: Uint8Array): Buffer {
  return w.begin(Backend.BackendKeyData).i32(pid).bytes(secret).end().take();
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-COMMANDCOMPLETE */
export function commandComplete(tag: string): Buffer {
  return w.begin(Backend.CommandComplete).cstring(tag).end().take();
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-NEGOTIATEPROTOCOLVERSION */
export function negotiateProtocolVersion(newestMinor: number, unrecognized: string[]): Buffer {
  w.begin(Backend.NegotiateProtocolVersion).i32((3 << 16) | newestMinor).i32(unrecognized.length);
  for (const o of unrecognized) w.cstring(o);
  return w.end().take();
}

export type Severity = 'ERROR' | 'FATAL' | 'PANIC' | 'WARNING' | 'NOTICE' | 'DEBUG' | 'INFO' | 'LOG';

/** Fields of ErrorResponse / NoticeResponse; numbers (position, line) stay decimal strings as sent. */
export interface PgErrorFields {
  severity: Severity;
  code: string;
  message: string;
  detail?: string;
  hint?: string;
  position?: string;
  internalPosition?: string;
  internalQuery?: string;
  where?: string;
  schema?: string;
  table?: string;
  column?: string;
  dataType?: string;
  constraint?: string;
  file?: string;
  line?: string;
  routine?: string;
}

type OptionalField = Exclude<keyof PgErrorFields, 'severity' | 'code' | 'message'>;

/** Field byte ↔ property, in the order PostgreSQL sends them (after S, V, C, M). */
const OPTIONAL_FIELDS: readonly (readonly [number, OptionalField])[] = [
  [ErrorField.Detail, 'detail'],
  [ErrorField.Hint, 'hint'],
  [ErrorField.Position, 'position'],
  [ErrorField.InternalPosition, 'internalPosition'],
  [ErrorField.InternalQuery, 'internalQuery'],
  [ErrorField.Where, 'where'],
  [ErrorField.Schema, 'schema'],
  [ErrorField.Table, 'table'],
  [ErrorField.Column, 'column'],
  [ErrorField.DataType, 'dataType'],
  [ErrorField.Constraint, 'constraint'],
  [ErrorField.File, 'file'],
  [ErrorField.Line, 'line'],
  [ErrorField.Routine, 'routine'],
];
const FIELD_BY_BYTE = new Map<number, OptionalField>(OPTIONAL_FIELDS);

function fieldsMessage(type: number, f: PgErrorFields): Buffer {
  w.begin(type)
    .i8(ErrorField.Severity).cstring(f.severity)
    .i8(ErrorField.SeverityV).cstring(f.severity)
    .i8(ErrorField.Code).cstring(f.code)
    .i8(ErrorField.Message).cstring(f.message);
  for (const [byte, key] of OPTIONAL_FIELDS) {
    const v = f[key];
    if (v !== undefined) w.i8(byte).cstring(v);
  }
  return w.i8(0).end().take();
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-ERRORRESPONSE */
export function errorResponse(err: PgErrorFields): Buffer {
  return fieldsMessage(Backend.ErrorResponse, err);
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-NOTICERESPONSE */
export function noticeResponse(fields: PgErrorFields): Buffer {
  return fieldsMessage(Backend.NoticeResponse, fields);
}

export interface RowField {
  name: string;
  tableOid: number;
  columnAttr: number;
  typeOid: number;
  typeLen: number;
  typmod: number;
  format: number;
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-ROWDESCRIPTION */
export function rowDescription(fields: readonly RowField[]): Buffer {
  w.begin(Backend.RowDescription).i16(fields.length);
  for (const f of fields) {
    w.cstring(f.name).i32(f.tableOid).i16(f.columnAttr).i32(f.typeOid).i16(f.typeLen).i32(f.typmod).i16(f.format);
  }
  return w.end().take();
}

/** Strings are written as UTF-8 text; `null` is SQL NULL. @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-DATAROW */
export function dataRow(values: readonly (Buffer | string | null)[]): Buffer {
  w.begin(Backend.DataRow).i16(values.length);
  for (const v of values) {
    if (v === null) w.i32(-1);
    else if (typeof v === 'string') {
      const at = w.pos;
      w.i32(0).str(v).i32At(at, w.pos - at - 4);
    } else w.i32(v.length).bytes(v);
  }
  return w.end().take();
}

// ---------------------------------------------------------------------------------------------
// Framing of the upstream stream

export interface BackendFramerOptions {
  /** Largest message accepted, length word included. Default 1 GiB (PostgreSQL's own ceiling). */
  maxMessageBytes?: number;
}

/**
 * Walks 5-byte headers over upstream chunks. Allocation-free per message: after `push(chunk)`
 * returns `count`, message `i` has type `types[i]` and spans `buffer[offsets[i], offsets[i+1])`
 * (type byte and length word included); `complete` is every complete message as ONE buffer, so
 * the relay can forward a whole socket read with one write when it touches nothing. The
 * incomplete tail is kept and joined once with the chunks that complete it.
 *
 * The result of a push is valid until the next push (arrays are reused; buffers are not).
 */
export class BackendFramer {
  /** The buffer the offsets of the last push refer to. */
  buffer: Buffer = EMPTY;
  count = 0;
  types: Uint8Array = new Uint8Array(1024);
  /** count + 1 entries: offsets[count] is the end of the last complete message. */
  offsets: Uint32Array = new Uint32Array(1025);
  private readonly max: number;
  private parts: Buffer[] = [];
  private have = 0;
  private need = 0;

  constructor(opts: BackendFramerOptions = {}) {
    this.max = opts.maxMessageBytes ?? 1 << 30;
  }

  /** Frames `chunk`; returns the number of complete messages now available. */
  push(chunk: Buffer): number {
    let buf = chunk;
    if (this.have > 0) {
      this.parts.push(chunk);
      this.have += chunk.length;
      if (this.have < this.need) {
        this.buffer = EMPTY;
        this.offsets[0] = 0;
        return (this.count = 0);
      }
      buf = Buffer.concat(this.parts, this.have);
      this.parts = [];
      this.have = 0;
    }
    const n = buf.length;
    const max = this.max;
    let types = this.types;
    let offsets = this.offsets;
    let c = 0;
    let i = 0;
    this.need = 5;
    while (n - i >= 5) {
      const len = (buf[i + 1] << 24) | (buf[i + 2] << 16) | (buf[i + 3] << 8) | buf[i + 4];
      // Checked before buffering: a lying length word must not make us hold unbounded data.
      if (len < 4 || len > max) throw new ProtocolError(`invalid backend message length ${len}`);
      const next = i + 1 + len;
      if (next > n) {
        this.need = next - i;
        break;
      }
      if (c + 1 >= types.length) {
        types = this.grow(c);
        offsets = this.offsets;
      }
      types[c] = buf[i];
      offsets[c++] = i;
      i = next;
    }
    offsets[c] = i;
    if (i < n) {
      this.parts.push(buf.subarray(i));
      this.have = n - i;
    }
    this.buffer = buf;
    return (this.count = c);
  }

  private grow(c: number): Uint8Array {
    const t = new Uint8Array(this.types.length * 2);
    t.set(this.types.subarray(0, c));
    const o = new Uint32Array(t.length + 1);
    o.set(this.offsets.subarray(0, c));
    this.types = t;
    this.offsets = o;
    return t;
  }

  /** All complete messages of the last push, as one zero-copy view. */
  get complete(): Buffer {
    return this.buffer.subarray(0, this.offsets[this.count]);
  }

  /** Message `i` with its header, zero-copy. */
  message(i: number): Buffer {
    return this.buffer.subarray(this.offsets[i], this.offsets[i + 1]);
  }

  /** Body of message `i` (after the length word), zero-copy. */
  body(i: number): Buffer {
    return this.buffer.subarray(this.offsets[i] + 5, this.offsets[i + 1]);
  }

  /** Bytes received but not yet framed (an incomplete message). */
  get buffered(): number {
    return this.have;
  }

  /**
   * Whether the last push ended inside a stream of rows (DataRow or CopyData last or still incomplete):
   * more of the same result is on its way, so the reader may wait a little to read it in bigger pieces.
   */
  get midResult(): boolean {
    const t = this.have > 0 ? this.parts[0][0] : this.count > 0 ? this.types[this.count - 1] : 0;
    return t === Backend.DataRow || t === Backend.CopyData;
  }

  /**
   * Everything from message `from` onwards, the incomplete tail included, and resets the framer:
   * used to hand a connection over to another reader without losing bytes.
   */
  remainder(from: number): Buffer {
    const head = this.buffer.subarray(this.offsets[Math.min(from, this.count)], this.offsets[this.count]);
    const out = this.have > 0 ? Buffer.concat([head, ...this.parts]) : head;
    this.parts = [];
    this.have = 0;
    this.need = 0;
    this.count = 0;
    this.buffer = EMPTY;
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Parsers (bodies after the length word)

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-ERRORRESPONSE */
export function parseErrorFields(body: Buffer): PgErrorFields {
  r.reset(body, 'ErrorResponse');
  let severity: string | undefined;
  let localized: string | undefined;
  let code: string | undefined;
  let message: string | undefined;
  const rest: Partial<Record<OptionalField, string>> = {};
  for (;;) {
    const t = r.u8();
    if (t === 0) break;
    const v = r.cstring();
    if (t === ErrorField.SeverityV) severity = v;
    else if (t === ErrorField.Severity) localized = v;
    else if (t === ErrorField.Code) code = v;
    else if (t === ErrorField.Message) message = v;
    else {
      // Unknown field types are ignored, as the protocol asks of frontends.
      const key = FIELD_BY_BYTE.get(t);
      if (key) rest[key] = v;
    }
  }
  r.done();
  severity ??= localized;
  if (severity === undefined || code === undefined || message === undefined) r.fail('missing S, C or M field');
  return { severity: severity as Severity, code, message, ...rest };
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-READYFORQUERY */
export function parseReadyForQuery(body: Buffer): TxStatusName {
  r.reset(body, 'ReadyForQuery');
  const s = r.u8();
  r.done();
  if (s !== TxStatus.Idle && s !== TxStatus.InTransaction && s !== TxStatus.Failed) r.fail('bad status');
  return String.fromCharCode(s) as TxStatusName;
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-ROWDESCRIPTION */
export function parseRowDescription(body: Buffer): RowField[] {
  r.reset(body, 'RowDescription');
  const n = r.count();
  const out = new Array<RowField>(n);
  for (let i = 0; i < n; i++) {
    out[i] = {
      name: r.cstring(),
      tableOid: r.u32(),
      columnAttr: r.i16(),
      typeOid: r.u32(),
      typeLen: r.i16(),
      typmod: r.i32(),
      format: r.i16(),
    };
  }
  r.done();
  return out;
}

/** For tests, tools and the agent's own one-row questions; the relay never decodes DataRows wholesale. */
export function parseDataRow(body: Buffer): (Buffer | null)[] {
  r.reset(body, 'DataRow');
  const n = r.count();
  const out = new Array<Buffer | null>(n);
  for (let i = 0; i < n; i++) out[i] = r.value();
  r.done();
  return out;
}

export interface CommandCompleteTag {
  tag: string;
  /** First word(s), e.g. "INSERT", "SELECT", "CREATE TABLE". */
  command: string;
  /** Row count for the commands that report one, else null. */
  rows: number | null;
}

const COUNTED = new Set(['INSERT', 'SELECT', 'UPDATE', 'DELETE', 'MERGE', 'MOVE', 'FETCH', 'COPY']);

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-COMMANDCOMPLETE */
export function parseCommandComplete(body: Buffer): CommandCompleteTag {
  r.reset(body, 'CommandComplete');
  const tag = r.cstring();
  r.done();
  const sp = tag.indexOf(' ');
  const first = sp < 0 ? tag : tag.slice(0, sp);
  if (COUNTED.has(first)) {
    const n = tag.slice(tag.lastIndexOf(' ') + 1);
    if (sp > 0 && /^\d+$/.test(n)) return { tag, command: first, rows: Number(n) };
  }
  return { tag, command: tag, rows: null };
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-PARAMETERSTATUS */
export function parseParameterStatus(body: Buffer): { name: string; value: string } {
  r.reset(body, 'ParameterStatus');
  const name = r.cstring();
  const value = r.cstring();
  r.done();
  return { name, value };
}

/**
 * The secret is 4 bytes in protocol 3.0; 3.2 (PG 18) allows up to 256. Copied, never a view.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-BACKENDKEYDATA
 */
export function parseBackendKeyData(body: Buffer): { pid: number; secret: Buffer } {
  r.reset(body, 'BackendKeyData');
  const pid = r.i32();
  const secret = Buffer.from(r.rest());
  if (secret.length < 4 || secret.length > MAX_CANCEL_SECRET_BYTES) r.fail('bad secret length');
  return { pid, secret };
}

export type AuthRequest =
  | { kind: 'Ok' }
  | { kind: 'CleartextPassword' }
  | { kind: 'MD5Password'; salt: Buffer }
  | { kind: 'SASL'; mechanisms: string[] }
  | { kind: 'SASLContinue'; data: Buffer }
  | { kind: 'SASLFinal'; data: Buffer }
  | { kind: 'Unsupported'; code: number };

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-AUTHENTICATIONOK */
export function parseAuthentication(body: Buffer): AuthRequest {
  r.reset(body, 'Authentication');
  const code = r.i32();
  let m: AuthRequest;
  switch (code) {
    case Auth.Ok:
      m = { kind: 'Ok' };
      break;
    case Auth.CleartextPassword:
      m = { kind: 'CleartextPassword' };
      break;
    case Auth.MD5Password:
      m = { kind: 'MD5Password', salt: Buffer.from(r.bytes(4)) };
      break;
    case Auth.SASL: {
      const mechanisms: string[] = [];
      for (let s = r.cstring(); s !== ''; s = r.cstring()) mechanisms.push(s);
      m = { kind: 'SASL', mechanisms };
      break;
    }
    case Auth.SASLContinue:
    case Auth.SASLFinal:
      m = { kind: code === Auth.SASLFinal ? 'SASLFinal' : 'SASLContinue', data: Buffer.from(r.rest()) };
      break;
    default:
      return { kind: 'Unsupported', code };
  }
  r.done();
  return m;
}
