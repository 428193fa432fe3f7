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

  it.each([
    ['an IPv6 loopback client (/proc/net/tcp6)', '::1', '::1'],
    ['an IPv4 client of a dual-stack listener (seen as ::ffff:127.0.0.1)', '::', '127.0.0.1'],
  ])('finds the uid of %s', async (_desc, listenHost, connectHost) => {
    let seen: Promise<number | undefined> | undefined;
    const srv = await new Promise<net.Server>((resolve) => {
      const s = net.createServer((sock) => {
        seen = peerUid(sock.remoteAddress, sock.remotePort, (s.address() as net.AddressInfo).port).finally(() => sock.end());
      });
      s.listen(0, listenHost, () => resolve(s));
    });
    const port = (srv.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => net.connect(port, connectHost).on('close', () => resolve()).on('error', () => resolve()));
    expect(await seen).toBe(process.getuid!());
    srv.close();
  });

  it('finds each of many concurrent clients, the table scanned in chunks', async () => {
    const seen: Array<Promise<number | undefined>> = [];
    const srv = await listen((s) => {
      seen.push(peerUid(s.remoteAddress, s.remotePort, (srv.address() as net.AddressInfo).port));
    });
    const port = (srv.address() as net.AddressInfo).port;
    // 300 open sockets (600 lines with the accepted ends) make the table far larger than one 16 KiB chunk.
    const clients = await Promise.all(
      Array.from({ length: 300 }, () => new Promise<net.Socket>((resolve) => { const c = net.connect(port, '127.0.0.1', () => resolve(c)); })),
    );
    while (seen.length < clients.length) await new Promise((r) => setTimeout(r, 10));
    expect(new Set(await Promise.all(seen))).toEqual(new Set([process.getuid!()]));
    for (const c of clients) c.destroy();
    srv.close();
  });

  it('gives up (undefined) for addresses it cannot look up', async () => {
    expect(await peerUid('::1', 5555, 6666)).toBeUndefined();
    expect(await peerUid(undefined, undefined, 6666)).toBeUndefined();
  });
});
