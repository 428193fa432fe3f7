// Frontend (client → agent) side of the wire: framing, strict parsing and exact re-serialisation.
// The agent never forwards raw client bytes: the session parses every message with
// `parseFrontend`, decides, and sends `serializeFrontend(msg)` upstream (DESIGN.md). So the parser
// is strict: a message that parses has exactly one serialisation, and that is what PostgreSQL sees.
// @see https://www.postgresql.org/docs/current/protocol-message-formats.html
// @see https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-START-UP
import { isUtf8 } from 'node:buffer';
import {
  CANCEL_REQUEST_CODE,
  DEFAULT_MAX_MESSAGE_BYTES,
  Frontend,
  GSSENC_REQUEST_CODE,
  MAX_CANCEL_SECRET_BYTES,
  MAX_STARTUP_BYTES,
  PROTOCOL_3_0,
  SSL_REQUEST_CODE,
} from './codes.js';
import { ProtocolError } from './errors.js';
import { Reader, readI32 } from './reader.js';
import { Writer } from './writer.js';

const EMPTY = Buffer.alloc(0);

/** One framed frontend message. `type` is 0 for the untyped startup-phase messages. */
export interface FrontendRaw {
  type: number;
  /** The body after the length word (for startup messages: starting with the int32 code). */
  body: Buffer;
}

export interface FrontendFramerOptions {
  /** Largest typed message accepted (length word included), CopyData too. Default 1 MiB. */
  maxMessageBytes?: number;
}

/**
 * Splits the client's byte stream into messages.
 *
 * Starts in startup mode (int32 length + int32 code, at most 10000 bytes). After each startup
 * message the framer holds everything that follows, because its framing depends on the session's
 * answer: after an SSLRequest comes another startup message (`nextStartup()`), after a
 * StartupMessage come typed messages (`startupDone()`). Both return the messages already complete
 * in the held bytes. `buffered` tells whether bytes are held, e.g. to refuse data a client
 * pipelined behind its SSLRequest.
 *
 * Messages are zero-copy `subarray` views of the pushed chunks; a message split across chunks is
 * joined once, when its last byte arrives.
 */
export class FrontendFramer {
  private readonly max: number;
  private startup = true;
  /** Set after a startup message until the session says how to frame what follows. */
  private hold = false;
  /** Unconsumed tail: chunks held until `need` bytes are available. */
  private parts: Buffer[] = [];
  private have = 0;
  private need = 0;

  constructor(opts: FrontendFramerOptions = {}) {
    this.max = opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  }

  /**
   * A framing error met after complete messages in the same push: those were returned first (PostgreSQL
   * too answers what came before a malformed message); the error is kept here and thrown by the next push.
   */
  failure?: ProtocolError;

  /** Bytes received but not yet returned as messages. */
  get buffered(): number {
    return this.have;
  }

  get inStartup(): boolean {
    return this.startup;
  }

  /** Switches to typed messages; returns those already complete in the held bytes. */
  startupDone(): FrontendRaw[] {
    this.startup = false;
    return this.release();
  }

  /** Expects another startup message (after answering SSLRequest/GSSENCRequest). */
  nextStartup(): FrontendRaw[] {
    return this.release();
  }

  private release(): FrontendRaw[] {
    this.hold = false;
    this.need = 0;
    return this.push(EMPTY);
  }

  /** Complete messages in arrival order; throws ProtocolError (08P01) on a bad length word. */
  push(chunk: Buffer): FrontendRaw[] {
    if (this.failure) throw this.failure;
    const out: FrontendRaw[] = [];
    let buf = chunk;
    if (this.have > 0 || this.hold) {
      if (chunk.length > 0) this.parts.push(chunk);
      this.have += chunk.length;
      // While the session decides, bytes cannot be framed; bound them all the same.
      if (this.hold && this.have > this.max) throw new ProtocolError('too much data before startup completed');
      if (this.hold || this.have < this.need) return out;
      buf = this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.have);
      this.parts = [];
      this.have = 0;
    }
    const n = buf.length;
    let i = 0;
    for (;;) {
      const h = this.startup ? 4 : 5;
      if (n - i < h) {
        this.need = h;
        break;
      }
      // The length word is checked before anything is buffered: a client cannot make us hold
      // more than `max` bytes for one message by announcing a large length.
      const len = readI32(buf, i + h - 4);
      if (this.startup ? len < 8 || len > MAX_STARTUP_BYTES : len < 4 || len > this.max) {
        const err = new ProtocolError(this.startup ? `invalid startup packet length ${len}` : `invalid message length ${len}`);
        if (out.length === 0) throw err;
        this.failure = err;
        return out;
      }
      const total = h - 4 + len;
      if (n - i < total) {
        this.need = total;
        break;
      }
      out.push({ type: this.startup ? 0 : buf[i], body: buf.subarray(i + h, i + total) });
      i += total;
      if (this.startup) {
        this.hold = true;
        break;
      }
    }
    if (i < n) {
      this.parts.push(i === 0 ? buf : buf.subarray(i));
      this.have = n - i;
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Startup phase

export type StartupRequest =
  | { kind: 'SSLRequest' }
  | { kind: 'GSSENCRequest' }
  | { kind: 'CancelRequest'; pid: number; secret: Buffer }
  | { kind: 'Startup'; major: number; minor: number; params: Map<string, string> };

const r: Reader = new Reader();
const w = new Writer(256);

/**
 * Parses an untyped startup-phase message body (after the length word).
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-STARTUPMESSAGE
 */
export function parseStartup(body: Buffer): StartupRequest {
  r.reset(body, 'startup');
  const code = r.i32();
  if (code === SSL_REQUEST_CODE || code === GSSENC_REQUEST_CODE) {
    r.done();
    return { kind: code === SSL_REQUEST_CODE ? 'SSLRequest' : 'GSSENCRequest' };
  }
  if (code === CANCEL_REQUEST_CODE) {
    const pid = r.i32();
    // 3.0 keys are 4 bytes; PG 18 (protocol 3.2) allows up to 256.
    const secret = Buffer.from(r.rest());
    if (secret.length < 4 || secret.length > MAX_CANCEL_SECRET_BYTES) r.fail('bad cancel key length');
    return { kind: 'CancelRequest', pid, secret };
  }
  const major = code >>> 16;
  const minor = code & 0xffff;
  if (major !== 3) throw new ProtocolError(`unsupported frontend protocol ${major}.${minor}`, '0A000');
  const params = new Map<string, string>();
  for (;;) {
    const key = r.cstring();
    if (key === '') break;
    if (params.has(key)) r.fail(`duplicate parameter "${key}"`);
    params.set(key, r.cstring());
  }
  r.done();
  return { kind: 'Startup', major, minor, params };
}

/** StartupMessage for protocol 3.0. Pairs in iteration order. */
export function serializeStartup(params: Record<string, string> | Map<string, string>): Buffer {
  w.begin().i32(PROTOCOL_3_0);
  const entries = params instanceof Map ? params.entries() : Object.entries(params);
  for (const [k, v] of entries) w.cstring(k).cstring(v);
  return w.i8(0).end().take();
}

/** CancelRequest, sent on a fresh connection. */
export function serializeCancel(pid: number, secret: Uint8Array): Buffer {
  return w.begin().i32(CANCEL_REQUEST_CODE).i32(pid).bytes(secret).end().take();
}

/**
 * PasswordMessage (cleartext or "md5…" hash). Only the agent's upstream leg sends it.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-PASSWORDMESSAGE
 */
export function passwordMessage(password: string): Buffer {
  return w.begin(Frontend.PasswordMessage).cstring(password).end().take();
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-SASLINITIALRESPONSE */
export function saslInitialResponse(mechanism: string, data: Uint8Array): Buffer {
  return w.begin(Frontend.PasswordMessage).cstring(mechanism).i32(data.length).bytes(data).end().take();
}

/** @see https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-SASLRESPONSE */
export function saslResponse(data: Uint8Array): Buffer {
  return w.begin(Frontend.PasswordMessage).bytes(data).end().take();
}

function untyped(code: number): Buffer {
  return w.begin().i32(code).end().take();
}
export const SSL_REQUEST = untyped(SSL_REQUEST_CODE);
export const GSSENC_REQUEST = untyped(GSSENC_REQUEST_CODE);

// ---------------------------------------------------------------------------------------------
// Typed messages

export type Target = 'S' | 'P';

export type FrontendMessage =
  | { type: 'Query'; sql: string }
  | { type: 'Parse'; name: string; sql: string; paramTypes: number[] }
  | {
      type: 'Bind';
      portal: string;
      statement: string;
      paramFormats: number[];
      /** Views into the received message; `null` is SQL NULL. */
      params: (Buffer | null)[];
      resultFormats: number[];
    }
  | { type: 'Execute'; portal: string; maxRows: number }
  | { type: 'Describe'; target: Target; name: string }
  | { type: 'Close'; target: Target; name: string }
  | { type: 'Sync' }
  | { type: 'Flush' }
  | { type: 'Terminate' }
  | { type: 'CopyData'; data: Buffer }
  | { type: 'CopyDone' }
  | { type: 'CopyFail'; message: string }
  | {
      type: 'FunctionCall';
      fnOid: number;
      argFormats: number[];
      args: (Buffer | null)[];
      resultFormat: number;
    };

export type FrontendMessageType = FrontendMessage['type'];

/** Format codes: 0 text, 1 binary; anything else is refused here rather than upstream. */
function formats(n: number): number[] {
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const f = r.i16();
    if (f !== 0 && f !== 1) r.fail(`bad format code ${f}`);
    out[i] = f;
  }
  return out;
}

function values(n: number): (Buffer | null)[] {
  const out = new Array<Buffer | null>(n);
  for (let i = 0; i < n; i++) out[i] = r.value();
  return out;
}

/** Text-format values must be valid UTF-8 without NUL, as PostgreSQL itself requires (22021). */
function checkTextValues(fmts: number[], vals: (Buffer | null)[]): void {
  if (fmts.length > 1 && fmts.length !== vals.length) r.fail('format count does not match value count');
  for (let i = 0; i < vals.length; i++) {
    const v = vals[i];
    const f = fmts.length === 0 ? 0 : fmts.length === 1 ? fmts[0] : fmts[i];
    if (v !== null && f === 0 && (!isUtf8(v) || v.indexOf(0) >= 0)) {
      throw new ProtocolError('invalid byte sequence for encoding "UTF8"', '22021');
    }
  }
}

function target(): Target {
  const t = r.u8();
  if (t !== 0x53 && t !== 0x50) r.fail('target must be S or P');
  return t === 0x53 ? 'S' : 'P';
}

/**
 * Parses one typed frontend message body. Throws ProtocolError: 08P01 for malformed messages and
 * unknown types, 22021 for text that is not valid UTF-8.
 * @see https://www.postgresql.org/docs/current/protocol-message-formats.html
 */
export function parseFrontend(type: number, body: Buffer): FrontendMessage {
  let m: FrontendMessage;
  switch (type) {
    case Frontend.Query:
      r.reset(body, 'Query');
      m = { type: 'Query', sql: r.cstring() };
      break;
    case Frontend.Parse: {
      r.reset(body, 'Parse');
      const name = r.cstring();
      const sql = r.cstring();
      const n = r.count();
      const paramTypes = new Array<number>(n);
      for (let i = 0; i < n; i++) paramTypes[i] = r.u32();
      m = { type: 'Parse', name, sql, paramTypes };
      break;
    }
    case Frontend.Bind: {
      r.reset(body, 'Bind');
      const portal = r.cstring();
      const statement = r.cstring();
      const paramFormats = formats(r.count());
      const params = values(r.count());
      const resultFormats = formats(r.count());
      checkTextValues(paramFormats, params);
      m = { type: 'Bind', portal, statement, paramFormats, params, resultFormats };
      break;
    }
    case Frontend.Execute:
      r.reset(body, 'Execute');
      m = { type: 'Execute', portal: r.cstring(), maxRows: r.i32() };
      break;
    case Frontend.Describe:
    case Frontend.Close:
      r.reset(body, type === Frontend.Describe ? 'Describe' : 'Close');
      m = { type: type === Frontend.Describe ? 'Describe' : 'Close', target: target(), name: r.cstring() };
      break;
    case Frontend.Sync:
      r.reset(body, 'Sync');
      m = { type: 'Sync' };
      break;
    case Frontend.Flush:
      r.reset(body, 'Flush');
      m = { type: 'Flush' };
      break;
    case Frontend.Terminate:
      r.reset(body, 'Terminate');
      m = { type: 'Terminate' };
      break;
    case Frontend.CopyData:
      r.reset(body, 'CopyData');
      m = { type: 'CopyData', data: r.rest() };
      break;
    case Frontend.CopyDone:
      r.reset(body, 'CopyDone');
      m = { type: 'CopyDone' };
      break;
    case Frontend.CopyFail:
      r.reset(body, 'CopyFail');
      m = { type: 'CopyFail', message: r.cstring() };
      break;
    case Frontend.FunctionCall: {
      // Parsed only so the session can refuse it with a precise message.
      r.reset(body, 'FunctionCall');
      const fnOid = r.u32();
      const argFormats = formats(r.count());
      const args = values(r.count());
      const resultFormat = r.i16();
      if (resultFormat !== 0 && resultFormat !== 1) r.fail(`bad format code ${resultFormat}`);
      checkTextValues(argFormats, args);
      m = { type: 'FunctionCall', fnOid, argFormats, args, resultFormat };
      break;
    }
    default:
      throw new ProtocolError(`invalid frontend message type ${type}`);
  }
  r.done();
  return m;
}

function writeFormats(out: Writer, f: number[]): void {
  out.i16(f.length);
  for (let i = 0; i < f.length; i++) out.i16(f[i]);
}

function writeValues(out: Writer, vals: (Buffer | null)[]): void {
  out.i16(vals.length);
  for (let i = 0; i < vals.length; i++) {
    const v = vals[i];
    if (v === null) out.i32(-1);
    else out.i32(v.length).bytes(v);
  }
}

/** Appends the wire form of `msg` to `out` (the connection's writer, to batch a pipeline). */
export function writeFrontend(out: Writer, msg: FrontendMessage): Writer {
  switch (msg.type) {
    case 'Query':
      return out.begin(Frontend.Query).cstring(msg.sql).end();
    case 'Parse': {
      out.begin(Frontend.Parse).cstring(msg.name).cstring(msg.sql).i16(msg.paramTypes.length);
      for (let i = 0; i < msg.paramTypes.length; i++) out.i32(msg.paramTypes[i]);
      return out.end();
    }
    case 'Bind':
      out.begin(Frontend.Bind).cstring(msg.portal).cstring(msg.statement);
      writeFormats(out, msg.paramFormats);
      writeValues(out, msg.params);
      writeFormats(out, msg.resultFormats);
      return out.end();
    case 'Execute':
      return out.begin(Frontend.Execute).cstring(msg.portal).i32(msg.maxRows).end();
    case 'Describe':
    case 'Close':
      return out
        .begin(msg.type === 'Describe' ? Frontend.Describe : Frontend.Close)
        .i8(msg.target === 'S' ? 0x53 : 0x50)
        .cstring(msg.name)
        .end();
    case 'Sync':
      return out.bytes(SYNC);
    case 'Flush':
      return out.bytes(FLUSH);
    case 'Terminate':
      return out.bytes(TERMINATE);
    case 'CopyData':
      return out.begin(Frontend.CopyData).bytes(msg.data).end();
    case 'CopyDone':
      return out.bytes(COPY_DONE);
    case 'CopyFail':
      return out.begin(Frontend.CopyFail).cstring(msg.message).end();
    case 'FunctionCall':
      out.begin(Frontend.FunctionCall).i32(msg.fnOid);
      writeFormats(out, msg.argFormats);
      writeValues(out, msg.args);
      return out.i16(msg.resultFormat).end();
  }
}

/** The wire form of `msg` as a new Buffer. */
export function serializeFrontend(msg: FrontendMessage): Buffer {
  return writeFrontend(w, msg).take();
}

function empty(type: number): Buffer {
  return w.begin(type).end().take();
}
// Body-less messages, built once at load.
export const SYNC = empty(Frontend.Sync);
export const FLUSH = empty(Frontend.Flush);
export const TERMINATE = empty(Frontend.Terminate);
export const COPY_DONE = empty(Frontend.CopyDone);
