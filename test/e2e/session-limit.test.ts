// One `hoopctl connect` holds at most `maxSessionsPerTunnel` sessions. The next client is refused in its
// own protocol (FATAL 53300 saying what to do), the agent logs it, the CLI is told; the sessions inside
// the limit keep working, and a closed one frees its slot.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { createLogger } from '../../agent/src/log.js';
import type { TunnelEvent } from '../../shared/tunnel/frame.js';
import { psql, startExtraAgent, useStack, type ExtraAgent } from '../harness/stack.js';

const LIMIT = 12;
const OVER = 4;
const s = useStack({ patients: 10 });
const agentLog: string[] = [];
const cliEvents: TunnelEvent[] = [];
let extra: ExtraAgent;

beforeAll(async () => {
  extra = await startExtraAgent(s.get(), {
    agentId: 'session-limit',
    config: { maxSessionsPerTunnel: LIMIT },
    log: createLogger({ level: 'warn', write: (line) => agentLog.push(line) }),
    tunnel: { onEvent: (e) => cliEvents.push(e) },
  });
}, 60_000);
afterAll(async () => extra?.stop(), 30_000);

const client = () => new pg.Client({ host: extra.listener.host, port: extra.listener.port, user: 'noop', database: 'demo-db' });

describe('the session limit of one tunnel', () => {
  it(`accepts ${LIMIT} sessions, refuses the next ${OVER} with 53300, and frees a slot when a session ends`, async () => {
    const clients = Array.from({ length: LIMIT + OVER }, client);
    const opened = await Promise.allSettled(clients.map((c) => c.connect()));
    const accepted = clients.filter((_, i) => opened[i].status === 'fulfilled');
    const refused = opened.filter((o): o is PromiseRejectedResult => o.status === 'rejected').map((o) => o.reason as pg.DatabaseError);
    expect(accepted).toHaveLength(LIMIT);
    expect(refused).toHaveLength(OVER);
    for (const err of refused) {
      expect(err.code).toBe('53300');
      expect(err.message).toContain(`already holds ${LIMIT} sessions`);
      expect(err.message).toContain('maxSessionsPerTunnel');
    }
    // Every session inside the limit is a working session.
    const answers = await Promise.all(accepted.map((c, i) => c.query('SELECT $1::int AS n', [i])));
    expect(answers.map((r) => r.rows[0].n)).toEqual(accepted.map((_, i) => i));

    // psql (SSLRequest first, then the startup packet) prints the refusal verbatim.
    const p = await psql(extra, ['-c', 'SELECT 1']);
    expect(p.code).toBe(2);
    expect(p.stderr).toContain('maxSessionsPerTunnel');

    // Both sides said so: a warning per refusal on the agent, an event per refusal for the CLI's user.
    const warnings = agentLog.map((l) => JSON.parse(l) as { msg: string; limit?: number }).filter((l) => l.msg === 'session refused: tunnel session limit reached');
    expect(warnings).toHaveLength(OVER + 1);
    expect(warnings.every((w) => w.limit === LIMIT)).toBe(true);
    const refusals = cliEvents.filter((e) => e.type === 'session-refused');
    expect(refusals).toHaveLength(OVER + 1);
    expect(refusals[0].message).toContain('maxSessionsPerTunnel');

    // A session that ends gives its slot back (the agent learns of the close asynchronously: retry).
    await accepted.pop()!.end();
    let again: pg.Client | undefined;
    for (let attempt = 0; attempt < 50 && !again; attempt++) {
      const c = client();
      try {
        await c.connect();
        again = c;
      } catch (err) {
        expect((err as pg.DatabaseError).code).toBe('53300');
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    expect(again).toBeDefined();
    expect((await again!.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    await Promise.all([...accepted, again!].map((c) => c.end()));
  }, 60_000);
});
