// What auditing costs: append throughput with 50 concurrent appenders (group commit, fsync per batch)
// for both stores, and the embedded store's index at 200k events (rebuild at start, list latency).
// Prints its measurements; the bounds asserted are loose (shared CI machines), the numbers go in reports.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshDatabase, type TestDatabase } from '../../harness/pg.js';
import { JsonlStore } from '../../../agent/src/audit/jsonl-store.js';
import { makeSessionStartEvent, makeStatementEvent } from '../../../agent/src/audit/events.js';
import type { StateStore } from '../../../agent/src/audit/store.js';
import { jsonlFixture, pgFixture, testClock, type StoreFixture } from './fixtures.js';

const who = { sub: 'repo:acme/etl:ref:refs/heads/main', issuer: 'https://token.actions.githubusercontent.com', claims: { repository: 'acme/etl' } };
const stmt = (sessionId: string, i: number) =>
  makeStatementEvent({ sessionId, who, connection: 'prod-db', sql: `SELECT id, name FROM patients WHERE clinic_id = $1 AND id > ${i}`, params: ['42'], decision: 'allow', rule: 'read-only', rows: 10, bytes: 812, durationMs: 1.2, sqlstate: '00000' });

async function throughput(store: StateStore, appenders: number, perAppender: number) {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const lat: number[] = [];
  await Promise.all(
    Array.from({ length: appenders }, async (_, w) => {
      for (let i = 0; i < perAppender; i++) {
        const a = performance.now();
        await store.append(stmt(`sess-${w}`, i));
        lat.push(performance.now() - a);
      }
    }),
  );
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const n = appenders * perAppender;
  lat.sort((x, y) => x - y);
  return { events: n, perSec: Math.round((n / ms) * 1000), cpuUsPerEvent: +((cpu.user + cpu.system) / n).toFixed(1), p50ms: +lat[n >> 1].toFixed(2), p99ms: +lat[Math.floor(n * 0.99)].toFixed(2) };
}

let db: TestDatabase;
const fxs: StoreFixture[] = [];
beforeAll(async () => {
  db = await freshDatabase('auditperf');
});
afterAll(async () => {
  for (const f of fxs) await f.cleanup();
});

describe('audit store cost', () => {
  it.each(['jsonl', 'pg'] as const)('%s: append throughput, 50 concurrent appenders', async (kind) => {
    const t = testClock();
    const fx = kind === 'jsonl' ? jsonlFixture(t.clock) : await pgFixture(db.pg, t.clock);
    fxs.push(fx);
    const store = await fx.open();
    await throughput(store, 50, 20); // warm-up
    const r = await throughput(store, 50, 200);
    console.log(`[audit perf] ${kind} append, 50 appenders:`, JSON.stringify(r));
    expect(await store.verify()).toMatchObject({ ok: true });
    await store.close();
    expect(r.perSec).toBeGreaterThan(500);
  }, 120_000);

  it('jsonl: 200k events: index rebuild and list latency', async () => {
    const t = testClock();
    const fx = jsonlFixture(t.clock);
    fxs.push(fx);
    let store = (await fx.open()) as JsonlStore;
    const sessions = 20_000;
    const t0 = performance.now();
    // 20k sessions of 10 events, 1000 in flight; every 500th session by a rare identity.
    for (let base = 0; base < sessions; base += 100) {
      await Promise.all(
        Array.from({ length: 100 }, async (_, k) => {
          const s = base + k;
          const rare = s % 500 === 0;
          await store.append(makeSessionStartEvent({ sessionId: `s${s}`, who: rare ? { sub: 'rare', issuer: 'x' } : who, connection: s % 2 ? 'prod-db' : 'staging' }));
          for (let i = 0; i < 9; i++) await store.append(i === 8 && s % 1000 === 1 ? { ...stmt(`s${s}`, i), data: { ...stmt(`s${s}`, i).data, decision: 'block' } } : stmt(`s${s}`, i));
        }),
      );
      t.advance(1000);
    }
    const seedMs = performance.now() - t0;
    await store.close();
    const r0 = performance.now();
    store = (await fx.open()) as JsonlStore;
    const rebuildMs = performance.now() - r0;
    const time = async <T>(fn: () => Promise<T>) => {
      const a = performance.now();
      const v = await fn();
      return { v, ms: +(performance.now() - a).toFixed(3) };
    };
    const first = await time(() => store.querySessions({ limit: 50 }));
    let cursor = first.v.nextCursor;
    for (let p = 0; p < 99; p++) cursor = (await store.querySessions({ limit: 50, cursor })).nextCursor;
    const deep = await time(() => store.querySessions({ limit: 50, cursor }));
    const rare = await time(() => store.querySessions({ limit: 50, sub: 'rare' }));
    const decision = await time(() => store.querySessions({ limit: 50, decision: 'block' }));
    const range = await time(() => store.querySessions({ limit: 50, connection: 'prod-db', since: '2025-03-01T09:01:00Z', until: '2025-03-01T09:02:00Z' }));
    const events = await time(() => store.sessionEvents('s777'));
    const verify = await time(() => store.verify());
    const report = {
      events: 200_000,
      seedMs: Math.round(seedMs),
      rebuildMs: Math.round(rebuildMs),
      listFirstPageMs: first.ms,
      listPage100Ms: deep.ms,
      listRareSubMs: rare.ms,
      listDecisionScanMs: decision.ms,
      listConnTimeRangeMs: range.ms,
      sessionEventsMs: events.ms,
      verifyMs: verify.ms,
      rssMB: Math.round(process.memoryUsage().rss / 2 ** 20),
    };
    console.log('[audit perf] jsonl 200k:', JSON.stringify(report));
    expect(first.v.sessions).toHaveLength(50);
    expect(rare.v.sessions).toHaveLength(40);
    expect(decision.v.sessions).toHaveLength(20);
    expect(events.v).toHaveLength(10);
    expect(verify.v).toEqual({ ok: true, events: 200_000 });
    expect(first.ms).toBeLessThan(50);
    await store.close();
  }, 300_000);
});
