// A 1 MiB multi-statement Query is parsed on a worker thread and judged in slices (policy/parse-off-thread.ts,
// PolicyEngine.prepare): while the agent works on it, another session's statements are still answered.
// Judged from outside: the order in which the two clients receive their replies.
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../agent/src/log.js';
import { useStack } from '../harness/stack.js';
import { RawClient, collect } from './wire.js';
import { msg } from '../../scripts/attacks/pgclient.js';

let largeStarted: (() => void) | undefined;
const events: string[] = [];
// The agent logs each judged message at debug level (its decision, rule and number of statements, no SQL).
const agentLog = createLogger({
  level: 'debug',
  write: (line) => {
    if (line.includes('large statement')) largeStarted?.();
    if (/"statements":\s*\d{3,}/.test(line)) events.push('large: judged');
  },
});
const s = useStack({ agentLog });

const open: RawClient[] = [];
afterEach(() => {
  for (const r of open.splice(0)) r.destroy();
});

async function raw(): Promise<RawClient> {
  const r = await RawClient.connect(s.get().listener.host, s.get().listener.port);
  open.push(r);
  await r.startup({ user: 'noop', database: 'demo-db' });
  return r;
}

describe('a large statement does not stall the other sessions', () => {
  it("answers another session's SELECT 1 while a 1 MiB multi-statement Query is still being judged", async () => {
    const big = await raw();
    const small = await raw();
    big.socket.once('data', () => events.push('large: first reply byte'));
    const count = Math.ceil((1024 * 1024) / 'SELECT 1;'.length);
    const started = new Promise<void>((resolve) => (largeStarted = resolve));
    big.write(msg.query('SELECT 1;'.repeat(count)));
    await started; // the agent has the whole message and starts on it

    small.write(msg.query('SELECT 1'));
    const answer = collect(await small.until('Z', 60_000));
    events.push('small: answered');
    expect(answer.error).toBeUndefined();
    expect(answer.rows).toEqual(['1']);

    const reply = await big.until('Z', 300_000);
    // The small one was answered while the large one was still being judged; then all of it ran, in order.
    expect(events).toEqual(['small: answered', 'large: judged', 'large: first reply byte']);
    expect(reply.filter((m) => m.type === 'C')).toHaveLength(count);
    expect(collect(reply).error).toBeUndefined();
  }, 400_000);
});
