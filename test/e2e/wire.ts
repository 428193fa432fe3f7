// A deliberately dumb Postgres frontend for the end-to-end tests: it writes whatever bytes a test
// builds (well-formed or not) to the tunnel's local port and reads the backend messages that come
// back, so a test can assert exactly what the agent answered and when it hung up.
// @see https://www.postgresql.org/docs/current/protocol-message-formats.html
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import pg from 'pg';

export interface BackendMsg {
  type: string;
  body: Buffer;
}

export interface PgErrorFields {
  severity?: string;
  code?: string;
  message?: string;
  hint?: string;
  detail?: string;
}

/** A typed frontend message with an honest length word. */
export function typed(type: string, body: Buffer | string = Buffer.alloc(0)): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  const head = Buffer.alloc(5);
  head[0] = type.charCodeAt(0);
  head.writeInt32BE(b.length + 4, 1);
  return Buffer.concat([head, b]);
}

/** A typed message header announcing `len` (which may lie), with no body. */
export function header(type: string, len: number): Buffer {
  const head = Buffer.alloc(5);
  head[0] = type.charCodeAt(0);
  head.writeUInt32BE(len >>> 0, 1);
  return head;
}

export function cstr(s: string | Buffer): Buffer {
  return Buffer.concat([typeof s === 'string' ? Buffer.from(s, 'utf8') : s, Buffer.from([0])]);
}

/** StartupMessage 3.0 with the given parameters. */
export function startupMessage(params: Record<string, string>): Buffer {
  const parts: Buffer[] = [Buffer.from([0, 3, 0, 0])];
  for (const [k, v] of Object.entries(params)) parts.push(cstr(k), cstr(v));
  parts.push(Buffer.from([0]));
  const body = Buffer.concat(parts);
  const len = Buffer.alloc(4);
  len.writeInt32BE(body.length + 4);
  return Buffer.concat([len, body]);
}

/** CancelRequest (untyped, sent on a fresh connection). */
export function cancelRequest(pid: number, secret: Buffer): Buffer {
  const b = Buffer.alloc(12 + secret.length);
  b.writeInt32BE(b.length, 0);
  b.writeInt32BE(80877102, 4);
  b.writeInt32BE(pid, 8);
  secret.copy(b, 12);
  return b;
}

export function query(sql: string): Buffer {
  return typed('Q', cstr(sql));
}

export function parseErrorFields(body: Buffer): PgErrorFields {
  const out: PgErrorFields = {};
  let i = 0;
  while (i < body.length && body[i] !== 0) {
    const t = String.fromCharCode(body[i]);
    const end = body.indexOf(0, i + 1);
    const v = body.subarray(i + 1, end).toString('utf8');
    if (t === 'V') out.severity = v;
    else if (t === 'S') out.severity ??= v;
    else if (t === 'C') out.code = v;
    else if (t === 'M') out.message = v;
    else if (t === 'H') out.hint = v;
    else if (t === 'D') out.detail = v;
    i = end + 1;
  }
  return out;
}

export class RawClient {
  private buf: Buffer = Buffer.alloc(0);
  private waiter?: () => void;
  /** Resolves with the time (ms) the server side ended the connection. */
  readonly ended: Promise<number>;
  isEnded = false;

  /** Wraps a connected socket; `leftover` is what was already read from it (an upstream connection's tail). */
  constructor(readonly socket: net.Socket, leftover: Buffer = Buffer.alloc(0)) {
    this.buf = leftover;
    socket.resume();
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.waiter?.();
    });
    socket.on('error', () => {});
    this.ended = new Promise((resolve) =>
      socket.on('close', () => {
        this.isEnded = true;
        this.waiter?.();
        resolve(performance.now());
      }),
    );
  }

  static connect(host: string, port: number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host, port, noDelay: true }, () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  write(b: Buffer): void {
    this.socket.write(b);
  }

  /** The next backend message, or undefined when the connection ended first or `timeoutMs` passed. */
  async next(timeoutMs = 5000): Promise<BackendMsg | undefined> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      if (this.buf.length >= 5) {
        const len = this.buf.readInt32BE(1);
        if (this.buf.length >= len + 1) {
          const msg = { type: String.fromCharCode(this.buf[0]), body: this.buf.subarray(5, len + 1) };
          this.buf = this.buf.subarray(len + 1);
          return msg;
        }
      }
      if (this.isEnded) return undefined;
      const left = deadline - performance.now();
      if (left <= 0) return undefined;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.waiter = undefined;
    }
  }

  /** Reads messages until one of type `type` (returned with everything read before it). */
  async until(type: string, timeoutMs = 5000): Promise<BackendMsg[]> {
    const seen: BackendMsg[] = [];
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const m = await this.next(Math.max(0, deadline - performance.now()));
      if (!m) throw new Error(`no ${type} message; got ${seen.map((s) => s.type).join('') || 'nothing'}${this.isEnded ? ' and the connection ended' : ''}`);
      seen.push(m);
      if (m.type === type) return seen;
    }
  }

  /** The BackendKeyData the agent issued at startup. */
  key?: { pid: number; secret: Buffer };

  /** Sends a StartupMessage for the demo connection and reads up to the first ReadyForQuery. */
  async startup(params: Record<string, string> = { user: 'noop', database: 'demo-db' }): Promise<void> {
    this.write(startupMessage(params));
    const msgs = await this.until('Z', 10_000);
    const err = msgs.find((m) => m.type === 'E');
    if (err) throw new Error(`startup refused: ${JSON.stringify(parseErrorFields(err.body))}`);
    const k = msgs.find((m) => m.type === 'K');
    if (k) this.key = { pid: k.body.readInt32BE(0), secret: Buffer.from(k.body.subarray(4)) };
  }

  /** Simple query; returns the first column of each row (text) and any error. */
  async simple(sql: string): Promise<{ rows: (string | null)[]; error?: PgErrorFields }> {
    this.write(query(sql));
    const msgs = await this.until('Z');
    return collect(msgs);
  }

  /** The first ErrorResponse before the connection ends or a ReadyForQuery arrives. */
  async nextError(timeoutMs = 5000): Promise<PgErrorFields | undefined> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const m = await this.next(Math.max(0, deadline - performance.now()));
      if (!m) return undefined;
      if (m.type === 'E') return parseErrorFields(m.body);
      if (m.type === 'Z') return undefined;
    }
  }

  destroy(): void {
    this.socket.destroy();
  }
}

export function collect(msgs: BackendMsg[]): { rows: (string | null)[]; error?: PgErrorFields } {
  const rows: (string | null)[] = [];
  let error: PgErrorFields | undefined;
  for (const m of msgs) {
    if (m.type === 'D') {
      const n = m.body.readInt16BE(0);
      if (n > 0) {
        const len = m.body.readInt32BE(2);
        rows.push(len < 0 ? null : m.body.subarray(6, 6 + len).toString('utf8'));
      }
    } else if (m.type === 'E') error ??= parseErrorFields(m.body);
  }
  return { rows, error };
}

/** Number of upstream backends the agent's role holds right now (superuser view of pg_stat_activity). */
export async function agentBackends(directUrl: string, role = 'gw_agent'): Promise<number> {
  const c = new pg.Client({ connectionString: directUrl });
  await c.connect();
  try {
    const r = await c.query<{ n: string }>(`SELECT count(*) AS n FROM pg_stat_activity WHERE usename = $1 AND backend_type = 'client backend' AND application_name <> 'hoop-agent catalog'`, [role]);
    return Number(r.rows[0].n);
  } finally {
    await c.end();
  }
}

/** Polls until the agent's upstream backends are back to `want`; returns the last count seen. */
export async function waitForBackends(directUrl: string, want: number, timeoutMs = 5000): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  let n = await agentBackends(directUrl);
  while (n !== want && performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    n = await agentBackends(directUrl);
  }
  return n;
}

/** One raw tunnel upgrade (`extraHeaders` e.g. a bad Authorization line); resolves with the whole HTTP answer. */
export function rawUpgrade(agentUrl: string, extraHeaders = ''): Promise<string> {
  const u = new URL(agentUrl);
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(u.port), u.hostname, () =>
      sock.write(
        `GET /tunnel/demo-db HTTP/1.1\r\nHost: agent\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n` +
          `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\n${extraHeaders}\r\n`,
      ),
    );
    let text = '';
    sock.on('data', (d) => (text += d));
    sock.on('close', () => resolve(text));
    sock.on('error', reject);
    sock.setTimeout(10_000, () => sock.destroy(new Error(`no answer; so far: ${text}`)));
  });
}
