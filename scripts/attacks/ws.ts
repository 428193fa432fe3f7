// Talking to the agent's WebSocket directly: as a well-behaved tunnel peer (the frame format of
// shared/tunnel/frame.ts, per-stream credit), and as a raw HTTP/WebSocket client that can send what
// no library would (no Authorization, 2,000 headers, a 1 GiB frame header, unmasked frames…).
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { FrameType, HEADER_BYTES, INITIAL_WINDOW } from '../../shared/tunnel/frame.js';
import type { Transport } from './pgclient.js';

function frame(type: number, streamId: number, payload?: Buffer): Buffer {
  const b = Buffer.alloc(HEADER_BYTES + (payload?.length ?? 0));
  b[0] = type;
  b.writeUInt32BE(streamId >>> 0, 1);
  payload?.copy(b, HEADER_BYTES);
  return b;
}

export interface UpgradeResult {
  ok: boolean;
  status: number;
  body: string;
  ws?: WebSocket;
  error?: string;
  ms: number;
}

/** Opens the tunnel WebSocket like the CLI would (Bearer header); reports the HTTP status on refusal. */
export function openTunnelWs(url: string, token: string | undefined, extraHeaders: Record<string, string> = {}, timeoutMs = 10_000): Promise<UpgradeResult> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const headers: Record<string, string> = { ...extraHeaders };
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    let ws: WebSocket;
    try {
      ws = new WebSocket(url, { headers, perMessageDeflate: false, handshakeTimeout: timeoutMs, maxPayload: 64 * 1024 * 1024 });
    } catch (err) {
      return resolve({ ok: false, status: 0, body: '', error: (err as Error).message, ms: Date.now() - t0 });
    }
    let done = false;
    const finish = (r: UpgradeResult) => {
      if (done) return;
      done = true;
      resolve(r);
    };
    ws.once('open', () => finish({ ok: true, status: 101, body: '', ws, ms: Date.now() - t0 }));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body.length < 16384 ? (body += d) : undefined));
      res.on('end', () => finish({ ok: false, status: res.statusCode ?? 0, body, ms: Date.now() - t0 }));
      res.on('error', () => finish({ ok: false, status: res.statusCode ?? 0, body, ms: Date.now() - t0 }));
    });
    ws.once('error', (err) => finish({ ok: false, status: 0, body: '', error: err.message, ms: Date.now() - t0 }));
  });
}

/**
 * One stream of a tunnel WebSocket, as a byte Transport. `chunking` controls how written bytes become
 * DATA frames (the runner uses it for "1 byte per frame" and "coalesced" cases).
 */
export class TunnelStream implements Transport {
  private sendCredit = INITIAL_WINDOW;
  private unreported = 0;
  private dataCbs: Array<(c: Buffer) => void> = [];
  private closeCbs: Array<(why: string) => void> = [];
  closed = false;
  closeReason = '';
  events: unknown[] = [];
  private creditWaiters: Array<() => void> = [];

  constructor(
    readonly ws: WebSocket,
    readonly streamId: number,
  ) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary || data.length < HEADER_BYTES) return;
      const type = data[0];
      const id = data.readUInt32BE(1);
      const payload = data.subarray(HEADER_BYTES);
      if (id !== this.streamId && type !== FrameType.Event) return;
      if (type === FrameType.Data) {
        for (const cb of this.dataCbs) cb(Buffer.from(payload));
        this.unreported += payload.length;
        if (this.unreported >= INITIAL_WINDOW / 4 && ws.readyState === ws.OPEN) {
          const credit = Buffer.alloc(4);
          credit.writeUInt32BE(this.unreported);
          ws.send(frame(FrameType.Window, this.streamId, credit));
          this.unreported = 0;
        }
      } else if (type === FrameType.Window) {
        this.sendCredit += payload.readUInt32BE(0);
        for (const w of this.creditWaiters.splice(0)) w();
      } else if (type === FrameType.Close) {
        this.end(`stream closed by agent${payload.length ? `: ${payload.toString('utf8')}` : ''}`);
      } else if (type === FrameType.Event) {
        try {
          this.events.push(JSON.parse(payload.toString('utf8')));
        } catch {
          /* informational */
        }
      }
    });
    ws.on('close', (code, reason) => this.end(`websocket closed ${code} ${reason.toString()}`));
    ws.on('error', () => {});
  }

  open(payload: Record<string, unknown> = { clientAddr: '127.0.0.1:0', cliVersion: 'attack-runner' }): void {
    this.ws.send(frame(FrameType.Open, this.streamId, Buffer.from(JSON.stringify(payload))));
  }

  private end(why: string): void {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = why;
    for (const w of this.creditWaiters.splice(0)) w();
    for (const cb of this.closeCbs) cb(why);
  }

  /** Sends bytes as DATA frames of at most `chunk` bytes each (default: one frame per write, max 64 KiB). */
  writeChunked(data: Buffer, chunk = 64 * 1024): boolean {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return false;
    for (let i = 0; i < data.length; i += chunk) {
      const piece = data.subarray(i, Math.min(data.length, i + chunk));
      this.sendCredit -= piece.length;
      this.ws.send(frame(FrameType.Data, this.streamId, piece));
    }
    return this.sendCredit > 0 && this.ws.bufferedAmount < 8 * 1024 * 1024;
  }

  write(data: Buffer): boolean {
    return this.writeChunked(data);
  }

  async waitDrain(): Promise<void> {
    const deadline = Date.now() + 30_000;
    while (!this.closed && (this.sendCredit <= 0 || this.ws.bufferedAmount >= 8 * 1024 * 1024) && Date.now() < deadline) {
      await new Promise<void>((r) => {
        const t = setTimeout(r, 20);
        this.creditWaiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }
  onData(cb: (c: Buffer) => void): void {
    this.dataCbs.push(cb);
  }
  onClose(cb: (why: string) => void): void {
    this.closeCbs.push(cb);
  }
  close(): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(frame(FrameType.Close, this.streamId));
    this.end('closed by runner');
  }
  /** Raw frame, any type, any stream id (hijack attempts). */
  sendFrame(type: number, streamId: number, payload?: Buffer): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(frame(type, streamId, payload));
  }
}

// ── raw HTTP / WebSocket ────────────────────────────────────────────────────────────────────────

export interface RawHttpResult {
  status: number;
  head: string;
  body: Buffer;
  socket: net.Socket;
  /** Bytes after the response head (for 101: the start of the WebSocket stream). */
  rest: Buffer;
  ms: number;
  closed: boolean;
}

/** Sends a hand-written HTTP request and reads the response head (and, for non-101, the body). */
export function rawHttp(host: string, port: number, request: Buffer | string, timeoutMs = 10_000): Promise<RawHttpResult> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.on('error', () => {});
    let buf = Buffer.alloc(0);
    let done = false;
    let closed = false;
    const finish = () => {
      if (done) return;
      const end = buf.indexOf('\r\n\r\n');
      const head = end >= 0 ? buf.subarray(0, end).toString('latin1') : buf.toString('latin1');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
      const rest = end >= 0 ? buf.subarray(end + 4) : Buffer.alloc(0);
      done = true;
      clearTimeout(timer);
      resolve({ status, head, body: rest, socket, rest, ms: Date.now() - t0, closed });
    };
    const timer = setTimeout(finish, timeoutMs);
    socket.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      const end = buf.indexOf('\r\n\r\n');
      if (end >= 0 && /^HTTP\/1\.1 101/.test(buf.toString('latin1', 0, 12))) finish();
    });
    socket.on('close', () => {
      closed = true;
      finish();
    });
    socket.once('connect', () => socket.write(request));
  });
}

export function upgradeRequest(path: string, hostHeader: string, headers: Record<string, string> = {}, extraLines: string[] = []): string {
  const lines = [
    `GET ${path} HTTP/1.1`,
    `Host: ${hostHeader}`,
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
    'Sec-WebSocket-Version: 13',
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    ...extraLines,
  ];
  return `${lines.join('\r\n')}\r\n\r\n`;
}

/** A client WebSocket frame, with every bit under the caller's control. */
export function wsFrame(opcode: number, payload: Buffer, o: { fin?: boolean; mask?: boolean; rsv?: number; declaredLength?: number } = {}): Buffer {
  const fin = o.fin ?? true;
  const mask = o.mask ?? true;
  const len = o.declaredLength ?? payload.length;
  const head: number[] = [(fin ? 0x80 : 0) | ((o.rsv ?? 0) << 4) | (opcode & 0x0f)];
  let ext = Buffer.alloc(0);
  if (len < 126) head.push((mask ? 0x80 : 0) | len);
  else if (len < 65536) {
    head.push((mask ? 0x80 : 0) | 126);
    ext = Buffer.alloc(2);
    ext.writeUInt16BE(len);
  } else {
    head.push((mask ? 0x80 : 0) | 127);
    ext = Buffer.alloc(8);
    ext.writeBigUInt64BE(BigInt(len));
  }
  if (!mask) return Buffer.concat([Buffer.from(head), ext, payload]);
  const key = randomBytes(4);
  const masked = Buffer.from(payload);
  for (let i = 0; i < masked.length; i++) masked[i] ^= key[i & 3];
  return Buffer.concat([Buffer.from(head), ext, key, masked]);
}

/** Reads server frames from a raw upgraded socket until a Close frame, socket close or timeout. */
export function waitServerClose(socket: net.Socket, initial: Buffer, timeoutMs: number): Promise<{ code?: number; closedSocket: boolean; ms: number; pongs: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    let buf = Buffer.from(initial);
    let pongs = 0;
    let done = false;
    const finish = (r: { code?: number; closedSocket: boolean }) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.off('data', onData);
      resolve({ ...r, ms: Date.now() - t0, pongs });
    };
    const parse = () => {
      for (;;) {
        if (buf.length < 2) return;
        const op = buf[0] & 0x0f;
        let len = buf[1] & 0x7f;
        let at = 2;
        if (len === 126) {
          if (buf.length < 4) return;
          len = buf.readUInt16BE(2);
          at = 4;
        } else if (len === 127) {
          if (buf.length < 10) return;
          len = Number(buf.readBigUInt64BE(2));
          at = 10;
        }
        if (buf.length < at + len) return;
        const payload = buf.subarray(at, at + len);
        buf = buf.subarray(at + len);
        if (op === 0x8) return finish({ code: payload.length >= 2 ? payload.readUInt16BE(0) : 1005, closedSocket: false });
        if (op === 0xa) pongs++;
      }
    };
    const onData = (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      parse();
    };
    const timer = setTimeout(() => finish({ closedSocket: socket.destroyed }), timeoutMs);
    socket.on('data', onData);
    socket.once('close', () => finish({ closedSocket: true }));
    parse();
  });
}
