// When the tunnel is down (or the peer is another OS user), a local client still deserves a readable
// error instead of a reset: a FATAL ErrorResponse (08006) psql prints verbatim.
import type net from 'node:net';
import { StartupRefusal, fatalErrorResponse } from '../../../shared/pgwire/startup-refusal.js';

export function refuseLocalClient(socket: net.Socket, message: string): void {
  const timer = setTimeout(() => socket.destroy(), 5000);
  const onData = (chunk: Buffer) => refusal.feed(chunk);
  const refusal = new StartupRefusal(
    fatalErrorResponse('08006', message),
    (b) => socket.write(b),
    (error) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.end(error);
    },
  );
  socket.on('data', onData);
}
