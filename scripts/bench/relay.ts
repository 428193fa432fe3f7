// The benchmark's baseline for "one extra process on the path": a plain TCP relay, one process, no
// parsing, Node's stream piping with noDelay on both legs. Whatever hoopctl costs above this is the
// price of the WebSocket hops, the framing and the protocol work, not of having a hop at all.
//
//   node --import tsx scripts/bench/relay.ts LISTEN_PORT TARGET_HOST TARGET_PORT
// Prints "relay listening PORT" on stdout when ready; exits on SIGTERM/SIGINT.
import net from 'node:net';

const [listenPort, host, port] = [Number(process.argv[2] ?? 0), process.argv[3] ?? '127.0.0.1', Number(process.argv[4])];
if (!port) {
  process.stderr.write('usage: relay.ts LISTEN_PORT TARGET_HOST TARGET_PORT\n');
  process.exit(2);
}

const server = net.createServer({ noDelay: true }, (client) => {
  const upstream = net.connect({ host, port, noDelay: true });
  const done = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on('error', done).on('close', done);
  upstream.on('error', done).on('close', done);
  client.pipe(upstream);
  upstream.pipe(client);
});

server.listen(listenPort, '127.0.0.1', () => {
  process.stdout.write(`relay listening ${(server.address() as net.AddressInfo).port}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
