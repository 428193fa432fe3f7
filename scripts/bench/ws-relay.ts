// The benchmark's "architecture limit": the product's own tunnel with no session logic. The CLI half is
// the real `hoopctl connect` code (TunnelClient, the local listener with its peer check, the mux); the
// agent half is a WebSocket server set up as the agent's (same ws options) whose streams are the shared
// TunnelMux piped to a plain TCP connection to PostgreSQL: no startup handling, parsing, policy or audit.
// Whatever hoopctl costs above this arm is the price of the session, not of the two processes and the
// WebSocket between them.
//
//   node --import tsx scripts/bench/ws-relay.ts agent PG_HOST PG_PORT      prints "ws-relay agent PORT"
//   node --import tsx scripts/bench/ws-relay.ts cli AGENT_PORT LOCAL_PORT   prints "ws-relay cli PORT"
import http from 'node:http';
import net from 'node:net';
import { WebSocketServer } from 'ws';
import { MAX_FRAME_BYTES } from '../../shared/tunnel/frame.js';
import { TunnelMux } from '../../shared/tunnel/mux.js';
import { TunnelClient } from '../../cli/src/services/tunnel-client.js';
import { startLocalListener } from '../../cli/src/services/local-listener.js';

const [role, a, b] = process.argv.slice(2);

async function agent(pgHost: string, pgPort: number): Promise<void> {
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: MAX_FRAME_BYTES });
  const server = http.createServer((_req, res) => res.writeHead(404).end());
  server.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, (ws) => serve(ws)));
  const serve = (ws: import('ws').WebSocket) => {
    const mux: TunnelMux = new TunnelMux(ws, {
      maxStreams: 100_000,
      onOpen(streamId) {
        const up = net.connect({ host: pgHost, port: pgPort, noDelay: true });
        up.on('data', (d: Buffer) => mux.send(streamId, d));
        up.on('drain', () => mux.drained(streamId));
        up.on('error', () => up.destroy());
        up.on('close', () => mux.close(streamId));
        return { write: (d) => up.write(d), pause: () => up.pause(), resume: () => up.resume(), close: () => up.destroy() };
      },
    });
  };
  server.listen(0, '127.0.0.1', () => process.stdout.write(`ws-relay agent ${(server.address() as net.AddressInfo).port}\n`));
}

async function cli(agentPort: number, localPort: number): Promise<void> {
  const client = new TunnelClient({ agentUrl: `ws://127.0.0.1:${agentPort}`, connection: 'bench', getToken: () => 'none' });
  await client.start();
  client.keepAlive();
  const listener = await startLocalListener(client, localPort);
  process.stdout.write(`ws-relay cli ${listener.port}\n`);
}

if (role === 'agent') await agent(a, Number(b));
else if (role === 'cli') await cli(Number(a), Number(b ?? 0));
else {
  process.stderr.write('usage: ws-relay.ts agent PG_HOST PG_PORT | cli AGENT_PORT [LOCAL_PORT]\n');
  process.exit(2);
}
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
