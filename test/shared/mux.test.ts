// The tunnel mux over a real WebSocket: bytes arrive whole and in order across streams, DATA frames stay
// small enough for the receiver to take them as views of its socket reads, and a sync point leaves at once.
import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import type net from 'node:net';
import { randomBytes } from 'node:crypto';
import WebSocket, { WebSocketServer } from 'ws';
import { TunnelMux, endsAtSyncPoint, type StreamEnd } from '../../shared/tunnel/mux.js';
import { FrameType, HEADER_BYTES, MAX_FRAME_BYTES } from '../../shared/tunnel/frame.js';

const closers: Array<() => void> = [];
afterEach(() => closers.splice(0).forEach((c) => c()));

/** A WebSocket pair on loopback: the server side's mux echoes nothing; streams collect what they get. */
async function pair(): Promise<{ client: TunnelMux; received: Map<number, Buffer[]>; frames: Buffer[] }> {
  const received = new Map<number, Buffer[]>();
  const frames: Buffer[] = [];
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: MAX_FRAME_BYTES });
  const server = http.createServer();
  server.on('upgrade', (req, sock, head) =>
    wss.handleUpgrade(req, sock, head, (ws) => {
      ws.on('message', (d: Buffer) => frames.push(Buffer.from(d)));
      new TunnelMux(ws, {
        onOpen(id): StreamEnd {
          received.set(id, []);
          return { write: (d) => (received.get(id)!.push(Buffer.from(d)), true), pause() {}, resume() {}, close() {} };
        },
      });
    }),
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const ws = new WebSocket(`ws://127.0.0.1:${(server.address() as net.AddressInfo).port}`, { perMessageDeflate: false });
  await new Promise((r) => ws.once('open', r));
  closers.push(() => (ws.terminate(), server.close()));
  return { client: new TunnelMux(ws), received, frames };
}

const idle: StreamEnd = { write: () => true, pause() {}, resume() {}, close() {} };
const until = async (cond: () => boolean) => {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
};

describe('TunnelMux', () => {
  it('delivers several streams written in one turn whole and in order, in DATA frames of at most 16 KiB', async () => {
    const { client, received, frames } = await pair();
    const sent = new Map<number, Buffer>();
    for (const id of [1, 2, 3]) {
      client.open(id, idle, {});
      sent.set(id, randomBytes(200_000 + id));
    }
    // Interleaved writes in one turn: each stream's pieces must come out in its own order.
    for (let at = 0; at < 200_003; at += 7_000) for (const [id, b] of sent) client.send(id, b.subarray(at, at + 7_000));
    await until(() => [...sent].every(([id, b]) => Buffer.concat(received.get(id) ?? []).length === b.length));
    for (const [id, b] of sent) expect(Buffer.concat(received.get(id)!).equals(b)).toBe(true);
    const data = frames.filter((f) => f[0] === FrameType.Data);
    expect(Math.max(...data.map((f) => f.length - HEADER_BYTES))).toBeLessThanOrEqual(16 * 1024);
  });

  it('recognises the protocol sync points it flushes at, and nothing else', () => {
    const rfq = Buffer.from([0x5a, 0, 0, 0, 5, 0x49]);
    const sync = Buffer.from([0x53, 0, 0, 0, 4]);
    const query = Buffer.concat([Buffer.from([0x51, 0, 0, 0, 13]), Buffer.from('SELECT 1\0')]);
    expect(endsAtSyncPoint(Buffer.concat([Buffer.from('rows…'), rfq]))).toBe(true);
    expect(endsAtSyncPoint(Buffer.concat([Buffer.from([0x50, 0, 0, 0, 4]), sync]))).toBe(true);
    expect(endsAtSyncPoint(query)).toBe(true);
    expect(endsAtSyncPoint(query.subarray(0, 10))).toBe(false); // half a Query: more is coming
    expect(endsAtSyncPoint(Buffer.from('DataRow bytes'))).toBe(false);
  });
});
