// A session's recording is buffered and written in few writes: by size, by count, after a short delay
// and at session end, in order, each entry keeping the time it was made. Through the real JSONL store.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SessionRecording } from '../../../agent/src/session/recording.js';
import { JsonlStore } from '../../../agent/src/audit/jsonl-store.js';
import { DEFAULT_RECORDING_LIMITS } from '../../../agent/src/audit/store.js';
import { createLogger } from '../../../agent/src/log.js';
import { jsonlFixture, until, type StoreFixture } from '../audit/fixtures.js';

const log = createLogger({ level: 'error' });
const fixtures: StoreFixture[] = [];
const stores: JsonlStore[] = [];
afterEach(async () => {
  for (const s of stores.splice(0)) await s.close();
  for (const f of fixtures.splice(0)) await f.cleanup();
});

async function setup() {
  const fx = jsonlFixture(Date.now);
  fixtures.push(fx);
  const store = (await fx.open()) as JsonlStore;
  stores.push(store);
  // Count the store's writes by wrapping its one method the recording calls.
  const writes: number[] = [];
  const counted = { appendRecording: (id: string, ...e: Parameters<JsonlStore['appendRecording']>[1][]) => (writes.push(e.length), store.appendRecording(id, ...e)) };
  const rec = new SessionRecording('sess-1', { store: counted, ...DEFAULT_RECORDING_LIMITS }, log);
  const file = path.join(fx.dataDir, 'audit', 'recordings', 'sess-1.jsonl');
  const stored = () => { try { return readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { seq?: number; ts: string }); } catch { return []; } };
  return { rec, writes, stored };
}

/** A one-row result of `seq`: RowDescription facts, one DataRow, CommandComplete. */
function result(rec: SessionRecording, seq: number, value = 'x') {
  rec.fields([{ name: 'v', tableOid: 0, columnAttr: 0, typeOid: 25, typeLen: -1, typmod: -1, format: 0 }]);
  const v = Buffer.from(value);
  const row = Buffer.alloc(11 + v.length);
  row.write('D', 0);
  row.writeInt32BE(10 + v.length, 1);
  row.writeInt16BE(1, 5);
  row.writeInt32BE(v.length, 7);
  v.copy(row, 11);
  rec.rows(row);
  rec.result({ seq, sql: `SELECT ${seq}` }, { tag: 'SELECT 1', rowCount: 1 });
}

describe('SessionRecording buffering', () => {
  it('writes nothing per statement; the session end writes the buffered entries at once, in order', async () => {
    const { rec, writes, stored } = await setup();
    for (let i = 1; i <= 5; i++) result(rec, i);
    await new Promise((r) => setImmediate(r));
    expect(stored()).toEqual([]);
    await rec.close();
    expect(writes).toEqual([5]);
    expect(stored().map((e) => e.seq)).toEqual([1, 2, 3, 4, 5]);
  });

  it('flushes on its own a moment after the first entry', async () => {
    const { rec, writes, stored } = await setup();
    const before = new Date().toISOString();
    result(rec, 1);
    await until(() => stored().length === 1, 5000);
    expect(writes).toEqual([1]);
    expect(stored()[0].ts >= before).toBe(true);
  });

  it('flushes by size and by count without waiting', async () => {
    const { rec, writes, stored } = await setup();
    result(rec, 1, 'y'.repeat(1000));
    for (let i = 2; i <= 200; i++) result(rec, i);
    await until(() => stored().length >= 128, 5000);
    expect(writes[0]).toBe(128);
    await rec.close();
    expect(stored().map((e) => e.seq)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
    // 70 rows of ~1 KB: past 64 KiB of rows the buffer goes out before 128 entries.
    const big = await setup();
    for (let i = 1; i <= 70; i++) result(big.rec, i, 'z'.repeat(1000));
    await until(() => big.writes.length > 0, 5000);
    expect(big.writes[0]).toBeLessThan(70);
    await big.rec.close();
    expect(big.stored()).toHaveLength(70);
  });
});
