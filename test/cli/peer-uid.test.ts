// The local listener's owner check, against the kernel's own socket table.
import { describe, expect, it } from 'vitest';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { peerUid } from '../../cli/src/services/peer-uid.js';

function listen(onConn: (s: net.Socket) => void): Promise<net.Server> {
  return new Promise((resolve) => {
    const srv = net.createServer(onConn);
    srv.listen(0, '127.0.0.1', () => resolve(srv));
  });
}

describe('peerUid', () => {
  it('finds the uid of a loopback client of this process', async () => {
    let seen: Promise<number | undefined> | undefined;
    const srv = await listen((s) => {
      // Looked up while the connection is open, as the listener does.
      seen = peerUid(s.remoteAddress, s.remotePort, (srv.address() as net.AddressInfo).port).finally(() => s.end());
    });
    const port = (srv.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => net.connect(port, '127.0.0.1').on('close', () => resolve()).on('error', () => resolve()));
    expect(await seen).toBe(process.getuid!());
    srv.close();
  });

  it('reports another OS user when the client runs as one', async () => {
    if (process.getuid!() !== 0) return expect(process.getuid!()).not.toBe(0); // only root can switch users
    let seen: Promise<number | undefined> | undefined;
    const srv = await listen((s) => {
      // Looked up while the connection is open, as the listener does.
      seen = peerUid(s.remoteAddress, s.remotePort, (srv.address() as net.AddressInfo).port).finally(() => s.end());
    });
    const port = (srv.address() as net.AddressInfo).port;
    // `nobody` (65534) opens the connection with bash's /dev/tcp; no extra tools needed.
    await new Promise<void>((resolve) =>
      spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'bash', '-c', `exec 3<>/dev/tcp/127.0.0.1/${port}; cat <&3 >/dev/null`]).on('close', () => resolve()),
    );
    expect(await seen).toBe(65534);
    srv.close();
  });

  it('gives up (undefined) for addresses it cannot look up', async () => {
    expect(await peerUid('::1', 5555, 6666)).toBeUndefined();
    expect(await peerUid(undefined, undefined, 6666)).toBeUndefined();
  });
});
