// After an agent restart, a new local connection makes `hoopctl connect` retry at once instead of
// waiting out its backoff (issue 17: up to 10.7 s more of refused sessions).
import { afterAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { startExtraAgent, useStack, type ExtraAgent } from '../harness/stack.js';
import { freePort } from '../../shared/net.js';
import { DEMO_CONNECTION } from '../../cli/src/demo/stack.js';
import { TunnelClient } from '../../cli/src/services/tunnel-client.js';
import { startLocalListener, type LocalListener } from '../../cli/src/services/local-listener.js';

const s = useStack({ patients: 10 });

describe('reconnect on demand', () => {
  let agent: ExtraAgent | undefined;
  let client: TunnelClient | undefined;
  let listener: LocalListener | undefined;
  afterAll(async () => {
    await listener?.close();
    await client?.stop();
    await agent?.stop();
  });

  it('a local connection while the tunnel waits out a long backoff connects within a second of the agent being up', async () => {
    const stack = s.get();
    const port = await freePort();
    let failures = 0;
    client = new TunnelClient({
      agentUrl: `ws://127.0.0.1:${port}`,
      connection: DEMO_CONNECTION,
      getToken: stack.token,
      onState: (st) => void (st.state === 'disconnected' && failures++),
    });
    await client.start().catch(() => {});
    client.keepAlive();
    listener = await startLocalListener(client, 0);
    // Four failed retries (0.25 + 0.5 + 1 + 2 s): the next one is 4 s (±20%) away.
    while (failures < 4) await new Promise((r) => setTimeout(r, 50));
    agent = await startExtraAgent(stack, { agentId: 'reconnect-now', config: { listen: `127.0.0.1:${port}` } });
    const up = performance.now();
    const c = new pg.Client({ host: listener.host, port: listener.port, user: 'noop', database: DEMO_CONNECTION });
    await c.connect();
    try {
      expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    } finally {
      await c.end();
    }
    // Well before the scheduled retry (≥ 3.2 s after the fourth failure).
    expect(performance.now() - up).toBeLessThan(1_500);
  }, 60_000);
});
