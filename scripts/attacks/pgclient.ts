// A raw PostgreSQL v3 frontend for the attack runner. It writes exactly the bytes a case asks for
// (well-formed or not), over any byte transport (a TCP socket to the CLI's local port, a tunnel stream
// spoken directly over the agent's WebSocket, or an authenticated socket straight to PostgreSQL), and
// records what comes back: every backend message in order, and a streaming scan of EVERY byte received
// for the sensitive values of the case (so even a 600 MB result is scanned without being kept).
// @see https://www.postgresql.org/docs/current/protocol-message-formats.html
import net from 'node:net';

// ── transports ──────────────────────────────────────────────────────────────────────────────────

export interface Transport {
  write(data: Buffer): boolean;
  /** Resolves when the transport can take more (after write returned false) or it closed. */
  waitDrain(): Promise<void>;
  onData(cb: (chunk: Buffer) => void): void;
  onClose(cb: (why: string) => void): void;
  close(): void;
}

export function tcpTransport(socket: net.Socket): Transport {
  socket.setNoDelay(true);
  socket.on('error', () => {});
  return {
    write: (d) => (socket.destroyed ? false : socket.write(d)),
    waitDrain: () =>
      new Promise((resolve) => {
        if (socket.destroyed || !socket.writableNeedDrain) return resolve();
        const done = () => {
          socket.off('drain', done);
          socket.off('close', done);
          resolve();
        };
        socket.once('drain', done);
        socket.once('close', done);
      }),
    onData: (cb) => socket.on('data', cb),
    onClose: (cb) => socket.once('close', () => cb('socket closed')),
    close: () => socket.destroy(),
  };
}

export function connectTcp(host: string, port: number, timeoutMs = 10_000): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect to ${host}:${port} timed out`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
}

// ── message builders ────────────────────────────────────────────────────────────────────────────

export function cstr(s: string | Buffer): Buffer {
  return Buffer.concat([typeof s === 'string' ? Buffer.from(s, 'utf8') : s, Buffer.from([0])]);
}
function i16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
}
function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n & 0xffff);
  return b;
}
function i32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
}

/** A typed frontend message with an honest length word. */
export function typed(type: string, body: Buffer | string = Buffer.alloc(0)): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  return Buffer.concat([Buffer.from([type.charCodeAt(0)]), i32(b.length + 4), b]);
}

export function startupMessage(params: Record<string, string>, major = 3, minor = 0): Buffer {
  const parts: Buffer[] = [u16(major), u16(minor)];
  for (const [k, v] of Object.entries(params)) parts.push(cstr(k), cstr(v));
  parts.push(Buffer.from([0]));
  const body = Buffer.concat(parts);
  return Buffer.concat([i32(body.length + 4), body]);
}
export const SSL_REQUEST = Buffer.concat([i32(8), i32(80877103)]);
export const GSSENC_REQUEST = Buffer.concat([i32(8), i32(80877104)]);
export function cancelRequest(pid: number, secret: number | Buffer): Buffer {
  const sec = typeof secret === 'number' ? i32(secret) : secret;
  return Buffer.concat([i32(12 + sec.length - 4), i32(80877102), i32(pid), sec]);
}

export const msg = {
  query: (sql: string | Buffer) => typed('Q', cstr(sql)),
  parse: (name: string, sql: string, paramTypes: number[] = []) =>
    typed('P', Buffer.concat([cstr(name), cstr(sql), i16(paramTypes.length), ...paramTypes.map(i32)])),
  /** params: string (text), Buffer (as is), null (SQL NULL). */
  bind: (portal: string, statement: string, params: Array<string | Buffer | null> = [], paramFormats: number[] = [], resultFormats: number[] = []) => {
    const parts: Buffer[] = [cstr(portal), cstr(statement), i16(paramFormats.length), ...paramFormats.map(i16), i16(params.length)];
    for (const p of params) {
      if (p === null) parts.push(i32(-1));
      else {
        const b = typeof p === 'string' ? Buffer.from(p, 'utf8') : p;
        parts.push(i32(b.length), b);
      }
    }
    parts.push(i16(resultFormats.length), ...resultFormats.map(i16));
    return typed('B', Buffer.concat(parts));
  },
  execute: (portal = '', maxRows = 0) => typed('E', Buffer.concat([cstr(portal), i32(maxRows)])),
  describe: (kind: 'S' | 'P', name: string) => typed('D', Buffer.concat([Buffer.from(kind), cstr(name)])),
  close: (kind: 'S' | 'P', name: string) => typed('C', Buffer.concat([Buffer.from(kind), cstr(name)])),
  sync: () => typed('S'),
  flush: () => typed('H'),
  terminate: () => typed('X'),
  copyData: (data: Buffer | string) => typed('d', data),
  copyDone: () => typed('c'),
  copyFail: (why: string) => typed('f', cstr(why)),
  functionCall: (oid: number, args: Array<Buffer | null>, argFormats: number[] = [], resultFormat = 0) => {
    const parts: Buffer[] = [i32(oid), i16(argFormats.length), ...argFormats.map(i16), i16(args.length)];
    for (const a of args) {
      if (a === null) parts.push(i32(-1));
      else parts.push(i32(a.length), a);
    }
    parts.push(i16(resultFormat));
    return typed('F', Buffer.concat(parts));
  },
};

// ── streaming needle scan ───────────────────────────────────────────────────────────────────────

/** Finds byte needles in a stream of chunks, across chunk boundaries, without keeping the stream. */
export class NeedleScanner {
  readonly found = new Map<string, number>();
  private tail: Buffer = Buffer.alloc(0);
  private readonly maxLen: number;
  private offset = 0;
  constructor(private readonly needles: Array<{ label: string; bytes: Buffer }>) {
    this.maxLen = Math.max(1, ...needles.map((n) => n.bytes.length));
  }
  push(chunk: Buffer): void {
    if (this.needles.length === 0 || chunk.length === 0) return;
    const hay = this.tail.length ? Buffer.concat([this.tail, chunk]) : chunk;
    for (const n of this.needles) {
      if (this.found.has(n.label) || n.bytes.length === 0) continue;
      const at = hay.indexOf(n.bytes);
      if (at >= 0) this.found.set(n.label, this.offset - this.tail.length + at);
    }
    this.offset += chunk.length;
    this.tail = hay.subarray(Math.max(0, hay.length - (this.maxLen - 1)));
    if (this.tail.length > 0 && this.tail.buffer === chunk.buffer) this.tail = Buffer.from(this.tail);
  }
}

// ── backend side ────────────────────────────────────────────────────────────────────────────────

export interface ErrorFields {
  severity?: string;
  code?: string;
  message?: string;
  detail?: string;
  hint?: string;
  [k: string]: string | undefined;
}

export interface BackendMessage {
  type: string;
  /** Kept for every message type except DataRow/CopyData beyond the keep limit. */
  body?: Buffer;
  /** Index of the step that was last sent when this arrived. */
  step: number;
}

export function parseErrorFields(body: Buffer): ErrorFields {
  const out: ErrorFields = {};
  const names: Record<string, string> = { S: 'severityLocal', V: 'severity', C: 'code', M: 'message', D: 'detail', H: 'hint', W: 'where', P: 'position' };
  let i = 0;
  while (i < body.length && body[i] !== 0) {
    const t = String.fromCharCode(body[i]);
    const end = body.indexOf(0, i + 1);
    if (end < 0) break;
    out[names[t] ?? `f_${t}`] = body.subarray(i + 1, end).toString('utf8');
    i = end + 1;
  }
  out.severity ??= out.severityLocal;
  return out;
}

/** Text/bytes of the fields of a DataRow (null for SQL NULL). */
export function parseDataRow(body: Buffer): Array<Buffer | null> {
  const n = body.readInt16BE(0);
  const out: Array<Buffer | null> = [];
  let at = 2;
  for (let i = 0; i < n && at + 4 <= body.length; i++) {
    const len = body.readInt32BE(at);
    at += 4;
    if (len < 0) out.push(null);
    else {
      out.push(body.subarray(at, at + len));
      at += len;
    }
  }
  return out;
}

export interface RowField {
  name: string;
  tableOid: number;
  column: number;
  typeOid: number;
  format: number;
}
export function parseRowDescription(body: Buffer): RowField[] {
  const n = body.readInt16BE(0);
  const out: RowField[] = [];
  let at = 2;
  for (let i = 0; i < n; i++) {
    const end = body.indexOf(0, at);
    const name = body.subarray(at, end).toString('utf8');
    at = end + 1;
    out.push({ name, tableOid: body.readUInt32BE(at), column: body.readInt16BE(at + 4), typeOid: body.readUInt32BE(at + 6), format: body.readInt16BE(at + 16) });
    at += 18;
  }
  return out;
}

export interface WireOptions {
  /** Needles to look for in every received byte. */
  needles?: Array<{ label: string; bytes: Buffer }>;
  /** DataRow / CopyData bodies kept (beyond that only counted). */
  keepRows?: number;
  /** Answers to SSLRequest / GSSENCRequest are one byte; the caller says when to expect one. */
}

/**
 * One client connection. Sends steps, records backend messages. Never throws on what the server
 * sends: hostile or broken answers are evidence, not errors.
 */
export class PgWire {
  readonly messages: BackendMessage[] = [];
  readonly scan: NeedleScanner;
  /** Streaming scan over the concatenation of all DataRow field values (catches values split across rows). */
  readonly valueScan: NeedleScanner;
  bytesReceived = 0;
  dataRows = 0;
  copyDatas = 0;
  closed = false;
  closeWhy = '';
  closedAt = 0;
  /** Single-byte answers (SSLRequest/GSSENCRequest), in order. */
  readonly singleBytes: string[] = [];
  step = -1;
  private buf: Buffer = Buffer.alloc(0);
  private expectSingle = 0;
  private waiters: Array<() => void> = [];
  private readonly keepRows: number;

  constructor(
    readonly transport: Transport,
    opts: WireOptions = {},
  ) {
    this.scan = new NeedleScanner(opts.needles ?? []);
    this.valueScan = new NeedleScanner(opts.needles ?? []);
    this.keepRows = opts.keepRows ?? 5000;
    transport.onData((c) => this.onData(c));
    transport.onClose((why) => {
      this.closed = true;
      this.closeWhy = why;
      this.closedAt = Date.now();
      this.wake();
    });
  }

  /** Feeds bytes that arrived before this object existed (e.g. read past the upstream startup). */
  feed(chunk: Buffer): void {
    this.onData(chunk);
  }

  send(data: Buffer): boolean {
    return this.transport.write(data);
  }

  /** Sends a large buffer in pieces with backpressure; stops early if the peer closes. */
  async sendStream(pieces: Iterable<Buffer>): Promise<number> {
    let sent = 0;
    for (const p of pieces) {
      if (this.closed) break;
      sent += p.length;
      if (!this.transport.write(p)) await Promise.race([this.transport.waitDrain(), this.until(() => this.closed, 60_000)]);
    }
    return sent;
  }

  expectSingleByte(): void {
    this.expectSingle++;
  }

  /** True once the runner itself closed the connection (not the server). */
  closedByUs = false;
  close(): void {
    if (!this.closed) this.closedByUs = true;
    this.transport.close();
  }

  private onData(chunk: Buffer): void {
    this.bytesReceived += chunk.length;
    this.scan.push(chunk);
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    for (;;) {
      if (this.expectSingle > 0) {
        if (this.buf.length < 1) break;
        const c = String.fromCharCode(this.buf[0]);
        if (c === 'E') {
          // An error instead of a one-byte answer: parse it as a message.
          this.expectSingle = 0;
          continue;
        }
        this.singleBytes.push(c);
        this.buf = this.buf.subarray(1);
        this.expectSingle--;
        continue;
      }
      if (this.buf.length < 5) break;
      const len = this.buf.readInt32BE(1);
      if (len < 4) {
        // Garbage from the other side: keep it as one pseudo message and stop parsing.
        this.messages.push({ type: '?garbage', body: Buffer.from(this.buf), step: this.step });
        this.buf = Buffer.alloc(0);
        break;
      }
      if (this.buf.length < 1 + len) break;
      const type = String.fromCharCode(this.buf[0]);
      const body = this.buf.subarray(5, 1 + len);
      this.buf = this.buf.subarray(1 + len);
      if (type === 'D') {
        this.dataRows++;
        for (const f of parseDataRow(body)) if (f) this.valueScan.push(f);
        this.messages.push({ type, body: this.dataRows <= this.keepRows ? Buffer.from(body) : undefined, step: this.step });
      } else if (type === 'd') {
        this.copyDatas++;
        this.messages.push({ type, body: this.copyDatas <= this.keepRows ? Buffer.from(body) : undefined, step: this.step });
      } else {
        this.messages.push({ type, body: Buffer.from(body), step: this.step });
      }
    }
    if (this.buf.length && this.buf.buffer === chunk.buffer) this.buf = Buffer.from(this.buf);
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Waits until pred() holds, the connection closes (pred re-checked), or the timeout; returns pred(). */
  async until(pred: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      if (this.closed) return pred();
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return true;
  }

  count(type: string, from = 0): number {
    let n = 0;
    for (let i = from; i < this.messages.length; i++) if (this.messages[i].type === type) n++;
    return n;
  }

  /** Waits for `n` more ReadyForQuery after message index `from`, or a FATAL / close / timeout. */
  async waitReady(from: number, n = 1, timeoutMs = 10_000): Promise<'ready' | 'closed' | 'timeout' | 'copy-in' | 'fatal'> {
    let res: 'ready' | 'closed' | 'timeout' | 'copy-in' | 'fatal' = 'timeout';
    const ok = await this.until(() => {
      if (this.count('Z', from) >= n) return (res = 'ready'), true;
      if (this.count('G', from) > 0) return (res = 'copy-in'), true;
      if (this.errors(from).some((e) => e.severity === 'FATAL' || e.severity === 'PANIC')) return (res = 'fatal'), true;
      return false;
    }, timeoutMs);
    if (!ok) return this.closed ? 'closed' : 'timeout';
    return res;
  }

  errors(from = 0): ErrorFields[] {
    const out: ErrorFields[] = [];
    for (let i = from; i < this.messages.length; i++) if (this.messages[i].type === 'E') out.push(parseErrorFields(this.messages[i].body!));
    return out;
  }
  notices(from = 0): ErrorFields[] {
    const out: ErrorFields[] = [];
    for (let i = from; i < this.messages.length; i++) if (this.messages[i].type === 'N') out.push(parseErrorFields(this.messages[i].body!));
    return out;
  }
  rows(from = 0): Array<Array<Buffer | null>> {
    const out: Array<Array<Buffer | null>> = [];
    for (let i = from; i < this.messages.length; i++) if (this.messages[i].type === 'D' && this.messages[i].body) out.push(parseDataRow(this.messages[i].body!));
    return out;
  }
  rowCount(from = 0): number {
    return this.count('D', from) + this.count('d', from);
  }

  /** Startup on a client port: StartupMessage, then wait for ReadyForQuery or a refusal. */
  async startup(params: Record<string, string>, timeoutMs = 10_000, version: [number, number] = [3, 0]) {
    const from = this.messages.length;
    this.send(startupMessage(params, version[0], version[1]));
    return this.waitReady(from, 1, timeoutMs);
  }

  backendKey(): { pid: number; secret: Buffer } | undefined {
    const m = this.messages.find((x) => x.type === 'K');
    if (!m?.body) return undefined;
    return { pid: m.body.readInt32BE(0), secret: Buffer.from(m.body.subarray(4)) };
  }

  /** Simple Query; with copyIn data, answers a CopyInResponse with CopyData + CopyDone. */
  async query(sql: string | Buffer, timeoutMs = 10_000, copyIn?: Buffer | string) {
    const from = this.messages.length;
    this.send(msg.query(sql));
    let r = await this.waitReady(from, 1, timeoutMs);
    if (r === 'copy-in') {
      if (copyIn !== undefined) this.send(Buffer.concat([msg.copyData(copyIn), msg.copyDone()]));
      else this.send(msg.copyFail('attack runner has no data'));
      r = await this.until(() => this.count('Z', from) >= 1, timeoutMs).then((ok) => (ok ? 'ready' : this.closed ? 'closed' : 'timeout'));
    }
    return { outcome: r, from, errors: this.errors(from), rows: this.rows(from), rowCount: this.rowCount(from) };
  }
}

/** Describes what the wire saw, short, for evidence. */
export function summarize(w: PgWire, from = 0): string {
  const counts = new Map<string, number>();
  for (let i = from; i < w.messages.length; i++) counts.set(w.messages[i].type, (counts.get(w.messages[i].type) ?? 0) + 1);
  return [...counts].map(([t, n]) => `${t}×${n}`).join(' ') + (w.closed ? ' [closed]' : '');
}
