// PostgreSQL store specifics: migrations, two agents appending at once (one chain each).
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { freshDatabase, type TestDatabase } from '../../harness/pg.js';
import { MIGRATIONS, PgStore } from '../../../agent/src/audit/pg-store.js';
import { makeStatementEvent } from '../../../agent/src/audit/events.js';
import { pgFixture, testClock, type StoreFixture } from './fixtures.js';

let db: TestDatabase;
beforeAll(async () => {
  db = await freshDatabase('auditpg');
});
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
async function setup(): Promise<StoreFixture> {
  const fx = await pgFixture(db.pg, testClock().clock);
  cleanups.push(() => fx.cleanup());
  return fx;
}

describe('PgStore', () => {
  it('applies numbered migrations once, also when agents start together', async () => {
    const fx = await setup();
    const stores = await Promise.all(['a1', 'a2', 'a3'].map((agentId) => fx.open({ agentId })));
    cleanups.push(async () => void (await Promise.all(stores.map((s) => s.close()))));
    const url = (stores[0] as unknown as { opts: { url: string } }).opts.url;
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    const { rows } = await c.query('SELECT version FROM schema_migrations ORDER BY version');
    await c.end();
    expect(rows.map((r) => r.version)).toEqual(MIGRATIONS.map((_, i) => i + 1));
  });

  it('keeps one consistent chain per agent when two agents append concurrently', async () => {
    const fx = await setup();
    const [a, b] = await Promise.all([fx.open({ agentId: 'agent-a' }), fx.open({ agentId: 'agent-b' })]);
    cleanups.push(async () => void (await Promise.all([a.close(), b.close()])));
    const who = { sub: 'ci', issuer: 'https://idp.test' };
    const run = (s: PgStore | typeof a, tag: string) =>
      Promise.all(Array.from({ length: 300 }, (_, i) => s.append(makeStatementEvent({ sessionId: `${tag}-${i % 10}`, who, connection: 'c', sql: `select ${i}`, decision: 'allow' }))));
    const [ea, eb] = await Promise.all([run(a, 'a'), run(b, 'b')]);
    expect(ea.map((e) => e.seq)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    expect(eb.map((e) => e.seq)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    expect(await a.verify()).toEqual({ ok: true, events: 600 }); // both chains, from either agent
    expect((await b.querySessions({ limit: 100 })).sessions).toHaveLength(20); // sessions of both agents
    // A second process claiming agent-a's chain cannot fork it: its append collides on (agent_id, seq).
    const imposter = await PgStore.open({ url: (a as unknown as { opts: { url: string } }).opts.url, agentId: 'agent-a', clock: () => 0 });
    await a.append(makeStatementEvent({ sessionId: 'a-0', who, connection: 'c', sql: 'select 1', decision: 'allow' }));
    await expect(imposter.append(makeStatementEvent({ sessionId: 'x', who, connection: 'c', sql: 'select 2', decision: 'allow' }))).rejects.toThrow(/not writable/);
    await imposter.close();
    expect(await a.verify()).toEqual({ ok: true, events: 601 });
  });
});
