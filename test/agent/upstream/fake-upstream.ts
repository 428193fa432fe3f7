// A scripted PostgreSQL stand-in for states a real server won't give on demand (MD5, cleartext,
// a lying SCRAM server, TLS with a test CA). Port 0; `await using` closes it.
import net from 'node:net';
import tls from 'node:tls';
import { FrontendFramer, parseStartup, type FrontendRaw } from '../../../agent/src/pgwire/frontend.js';

export interface FakeConn {
  socket: net.Socket;
  startup: Map<string, string>;
  /** Next typed message from the client. */
  next(): Promise<FrontendRaw>;
  /** Every byte received after the StartupMessage. */
  received(): Buffer;
}

export interface FakeUpstream extends AsyncDisposable {
  port: number;
  /** Settles when the script of the first connection finished (rejects if it threw). */
  done: Promise<void>;
}

class Inbox {
  private readonly items: FrontendRaw[] = [];
  private wake: (() => void) | null = null;
  readonly framer = new FrontendFramer();
  readonly all: Buffer[] = [];
  closed = false;
  constructor(readonly socket: net.Socket) {
    socket.on('data', (c: Buffer) => {
      this.all.push(Buffer.from(c));
      this.enqueue(this.framer.push(c));
      this.wake?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
    socket.on('error', () => {});
  }
  enqueue(ms: FrontendRaw[]): void {
    for (const m of ms) this.items.push({ type: m.type, body: Buffer.from(m.body) });
  }
  async next(): Promise<FrontendRaw> {
    while (this.items.length === 0) {
      if (this.closed) throw new Error('client closed');
      await new Promise<void>((r) => (this.wake = r));
    }
    return this.items.shift()!;
  }
}

export async function fakeUpstream(
  script: (c: FakeConn) => Promise<void>,
  opts: { tls?: { key: Buffer; cert: Buffer } } = {},
): Promise<FakeUpstream> {
  let settle!: { resolve: () => void; reject: (e: unknown) => void };
  const done = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
  done.catch(() => {});
  const sockets = new Set<net.Socket>();
  const server = net.createServer(async (raw) => {
    sockets.add(raw);
    try {
      let inbox = new Inbox(raw);
      let req = parseStartup((await inbox.next()).body);
      if (req.kind === 'SSLRequest') {
        if (opts.tls) {
          raw.removeAllListeners('data');
          raw.write('S');
          const secure = new tls.TLSSocket(raw, { isServer: true, key: opts.tls.key, cert: opts.tls.cert });
          secure.on('error', () => {});
          inbox = new Inbox(secure);
        } else {
          raw.write('N');
          inbox.enqueue(inbox.framer.nextStartup());
        }
        req = parseStartup((await inbox.next()).body);
      }
      if (req.kind !== 'Startup') throw new Error(`unexpected ${req.kind}`);
      inbox.enqueue(inbox.framer.startupDone());
      const start = inbox.all.length;
      await script({
        socket: inbox.socket,
        startup: req.params,
        next: () => inbox.next(),
        received: () => Buffer.concat(inbox.all.slice(start)),
      });
      settle.resolve();
    } catch (e) {
      settle.reject(e);
      raw.destroy();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    done,
    async [Symbol.asyncDispose]() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
