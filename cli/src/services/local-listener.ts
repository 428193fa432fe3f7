// The local port psql connects to. Bound to loopback only: other hosts never reach it.
import net from 'node:net';
import { ExitCode, UserError } from '../errors.js';
import type { TunnelClient } from './tunnel-client.js';
import { peerUid } from './peer-uid.js';
import { refuseLocalClient } from './local-refusal.js';

export interface LocalListener {
  host: string;
  port: number;
  close(): Promise<void>;
}

export async function startLocalListener(client: TunnelClient, port = 0, host = '127.0.0.1'): Promise<LocalListener> {
  const sockets = new Set<net.Socket>();
  const me = process.getuid?.();
  const server = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    void admit(socket).then((ok) => (ok ? client.attach(socket) : undefined));
  });
  /**
   * Only this OS user's programs may use the tunnel: the identity behind it is this user's. On Linux the
   * kernel's socket table names the client's owner; a client it does not list (gone already, or an
   * address it does not know) is refused, not trusted. Elsewhere there is no such table to read, and
   * the loopback-only listener is the boundary.
   */
  async function admit(socket: net.Socket): Promise<boolean> {
    if (me === undefined) return true;
    const uid = await peerUid(socket.remoteAddress, socket.remotePort, (server.address() as net.AddressInfo).port);
    if (uid === me || (uid === undefined && process.platform !== 'linux')) return true;
    refuseLocalClient(
      socket,
      uid === undefined
        ? `hoopctl: could not tell which OS user opened this connection (not in the kernel's socket table); refused, as this tunnel belongs to uid ${me}`
        : `hoopctl: this tunnel belongs to another OS user (uid ${me}); connection from uid ${uid} refused`,
    );
    return false;
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        err.code === 'EADDRINUSE'
          ? new UserError('PORT_IN_USE', `port ${port} on ${host} is already in use`, {
              hint: 'Pick another with --port, or omit --port to get a free one.',
              exitCode: ExitCode.Usage,
            })
          : err,
      ),
    );
    server.listen(port, host, () => resolve());
  });
  return {
    host,
    port: (server.address() as net.AddressInfo).port,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

export function psqlLine(l: Pick<LocalListener, 'host' | 'port'>, connection: string): string {
  return `psql "host=${l.host} port=${l.port} user=noop dbname=${connection}"`;
}
