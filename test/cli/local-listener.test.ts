// The local listener admits only its own OS user's programs (peer-uid.test.ts reads the real socket
// table). Here the lookup's answer is set, to judge the listener on the case a live connection cannot
// produce on demand: a client the kernel's table does not list. It is refused, with a message the
// client sees, and never reaches the tunnel.
import { afterEach, describe, expect, it, vi } from 'vitest';
import net from 'node:net';

const lookup = vi.hoisted(() => ({ uid: undefined as number | undefined }));
vi.mock('../../cli/src/services/peer-uid.js', () => ({ peerUid: async () => lookup.uid }));

const { startLocalListener } = await import('../../cli/src/services/local-listener.js');

/** A StartupMessage (protocol 3.0, user noop), as psql sends it. */
function startup(): Buffer {
  const body = Buffer.from('user\0noop\0\0', 'latin1');
  const m = Buffer.alloc(8 + body.length);
  m.writeInt32BE(m.length, 0);
  m.writeInt32BE(196608, 4);
  body.copy(m, 8);
  return m;
}

/** Connects, sends a StartupMessage, and returns every byte the listener sent back. */
function exchange(port: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const s = net.connect(port, '127.0.0.1', () => s.write(startup()));
    s.on('data', (d) => chunks.push(d));
    s.on('close', () => resolve(Buffer.concat(chunks)));
    s.on('error', () => {});
  });
}

describe('local listener admission', () => {
  const attached: net.Socket[] = [];
  const client = { attach: (s: net.Socket) => void attached.push(s) } as unknown as Parameters<typeof startLocalListener>[0];
  afterEach(() => {
    for (const s of attached.splice(0)) s.destroy();
  });

  it.runIf(process.platform === 'linux')('refuses a client the socket table does not list (fails closed)', async () => {
    lookup.uid = undefined;
    const l = await startLocalListener(client, 0);
    const reply = await exchange(l.port);
    expect(reply.toString('latin1')).toContain('could not tell which OS user opened this connection');
    expect(attached).toHaveLength(0);
    await l.close();
  });

  it("refuses another user's client and admits the own user's", async () => {
    lookup.uid = process.getuid!() + 1;
    const l = await startLocalListener(client, 0);
    expect((await exchange(l.port)).toString('latin1')).toContain('this tunnel belongs to another OS user');
    expect(attached).toHaveLength(0);
    lookup.uid = process.getuid!();
    const own = net.connect(l.port, '127.0.0.1');
    await vi.waitFor(() => expect(attached).toHaveLength(1));
    own.destroy();
    await l.close();
  });
});
