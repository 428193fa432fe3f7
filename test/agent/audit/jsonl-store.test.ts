// Embedded store specifics: crash safety (SIGKILL mid-write, torn tail), segment rotation, the
// single-writer lock, and a read-only directory (fail closed, recovery).
import { spawn } from 'node:child_process';
import { appendFileSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { JsonlStore } from '../../../agent/src/audit/jsonl-store.js';
import { makeRefusedEvent, makeStatementEvent, type AuditEvent } from '../../../agent/src/audit/events.js';
import { jsonlFixture, requireUnwritableStorage, setWritable, testClock, until, type StoreFixture } from './fixtures.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const who = { sub: 'alice', issuer: 'https://idp.test' };
const fixtures: StoreFixture[] = [];
const stores: JsonlStore[] = [];
afterEach(async () => {
  for (const s of stores.splice(0)) await s.close().catch(() => {});
  for (const f of fixtures.splice(0)) await f.cleanup();
});
function fixture(segmentBytes?: number) {
  const t = testClock();
  const fx = jsonlFixture(t.clock, { segmentBytes });
  fixtures.push(fx);
  return { t, fx, open: async () => { const s = (await fx.open()) as JsonlStore; stores.push(s); return s; } };
}
const auditDirOf = (s: JsonlStore) => (s as unknown as { dir: string }).dir;

describe('JsonlStore', () => {
  it('loses no resolved append when the process is SIGKILLed mid-load', async () => {
    const { dataDir } = fixture().fx;
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(here, 'crash-child.ts'), dataDir], { stdio: ['ignore', 'pipe', 'inherit'] });
    const acked: number[] = [];
    let buf = '';
    child.stdout.on('data', (c: Buffer) => {
      buf += c.toString();
      const lines = buf.split('\n');
      buf = lines.pop()!;
      for (const l of lines) acked.push(Number(l));
    });
    await until(() => acked.length >= 5000, 60_000);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const auditDir = path.join(dataDir, 'audit');
    const segs = readdirSync(auditDir).filter((n) => n.startsWith('crashy.'));
    expect(segs.length).toBeGreaterThan(1); // rotated under load
    // A torn tail on top, as a crash in the middle of a write leaves it.
    appendFileSync(path.join(auditDir, segs.sort().at(-1)!), '{"hash":"00ff","seq":');
    const s = await JsonlStore.open({ dataDir, agentId: 'crashy', clock: () => 0 });
    stores.push(s);
    const r = await s.verify();
    expect(r.ok).toBe(true);
    const present = new Set<number>();
    for await (const l of s.exportEvents({}, 'jsonl')) present.add((JSON.parse(l) as AuditEvent).seq);
    expect(acked.filter((q) => !present.has(q))).toEqual([]);
    expect(r.ok && r.events).toBeGreaterThanOrEqual(Math.max(...acked));
    const next = await s.append(makeRefusedEvent({ reason: 'after crash' }));
    expect(next.seq).toBe(present.size + 1);
    expect(await s.verify()).toMatchObject({ ok: true });
  }, 120_000);

  it('truncates a torn last line at start and keeps chaining', async () => {
    const { open } = fixture();
    let s = await open();
    for (let i = 0; i < 3; i++) await s.append(makeRefusedEvent({ reason: `r${i}` }));
    const dir = auditDirOf(s);
    await s.close();
    stores.pop();
    const seg = path.join(dir, readdirSync(dir).find((n) => n.endsWith('.jsonl') && n.startsWith('agent-a.'))!);
    const size = statSync(seg).size;
    appendFileSync(seg, '{"hash":"ab12","agentId":"agent-a","data":{"rea');
    s = await open();
    expect(statSync(seg).size).toBe(size);
    expect((await s.append(makeRefusedEvent({ reason: 'r3' }))).seq).toBe(4);
    expect(await s.verify()).toEqual({ ok: true, events: 4 });
  });

  it('rotates segments and reads sessions across them', async () => {
    const { open } = fixture(2048);
    const s = await open();
    for (let i = 0; i < 60; i++) await s.append(makeStatementEvent({ sessionId: `s${i % 3}`, who, connection: 'c', sql: `select ${i}`, decision: 'allow' }));
    expect(readdirSync(auditDirOf(s)).filter((n) => n.startsWith('agent-a.') && n.endsWith('.jsonl')).length).toBeGreaterThan(5);
    expect((await s.sessionEvents('s1')).map((e) => e.seq)).toEqual(Array.from({ length: 20 }, (_, i) => 3 * i + 2));
    expect(await s.verify()).toEqual({ ok: true, events: 60 });
    expect(await s.verify({ from: 41 })).toEqual({ ok: true, events: 20 });
  });

  it('keeps a second writer off the chain', async () => {
    const { fx, open } = fixture();
    await open();
    await expect(fx.open()).rejects.toThrow(/already open/);
    const other = (await fx.open({ agentId: 'agent-b' })) as JsonlStore;
    stores.push(other);
    expect(other.agentId).toBe('agent-b');
  });

  it('fails closed on a read-only directory when a new segment is needed, then recovers', async () => {
    requireUnwritableStorage();
    const { open } = fixture(1); // every batch opens a new segment
    const s = await open();
    await s.append(makeRefusedEvent({ reason: 'a' }));
    setWritable(auditDirOf(s), false);
    try {
      await expect(s.append(makeRefusedEvent({ reason: 'b' }))).rejects.toThrow(/not writable/);
      expect(s.health().writable).toBe(false);
    } finally {
      setWritable(auditDirOf(s), true);
    }
    await until(async () => !!(await s.append(makeRefusedEvent({ reason: 'c' })).catch(() => undefined)));
    expect(s.health().writable).toBe(true);
    expect(await s.verify()).toMatchObject({ ok: true });
  });

  it('keeps a result event the store could not take while down and writes it, in order, once the store is back', async () => {
    requireUnwritableStorage();
    const { open } = fixture(1);
    const s = await open();
    const ran = await s.append(makeStatementEvent({ sessionId: 's-park', who, connection: 'db', sql: 'SELECT 1', decision: 'allow', rule: 'P5' }));
    setWritable(auditDirOf(s), false);
    let result: Promise<unknown>;
    try {
      // The statement already ran: its result is evidence even though the store is down right now.
      result = s.append({ type: 'statement_result', sessionId: 's-park', connection: 'db', data: { statementSeq: ran.seq, rows: 1, sqlstate: '00000' } });
      await expect(s.append(makeStatementEvent({ sessionId: 's-park', who, connection: 'db', sql: 'SELECT 2', decision: 'allow', rule: 'P5' }))).rejects.toThrow(/not writable/);
    } finally {
      setWritable(auditDirOf(s), true);
    }
    await until(async () => !!(await s.append(makeStatementEvent({ sessionId: 's-park', who, connection: 'db', sql: 'SELECT 3', decision: 'allow', rule: 'P5' })).catch(() => undefined)));
    await expect(result).resolves.toMatchObject({ type: 'statement_result' });
    const events = await s.sessionEvents('s-park');
    expect(events.map((e) => (e.type === 'statement' ? e.data.sql : e.type))).toEqual(['SELECT 1', 'statement_result', 'SELECT 3']);
    expect(await s.verify()).toMatchObject({ ok: true });
  });

  it('reads a segment file as plain JSON Lines (greppable, one event per line)', async () => {
    const { open } = fixture();
    const s = await open();
    await s.append(makeRefusedEvent({ reason: 'no access rule' }));
    const dir = auditDirOf(s);
    const text = readFileSync(path.join(dir, readdirSync(dir).find((n) => n.startsWith('agent-a.') && n.endsWith('.jsonl'))!), 'utf8');
    expect(text).toMatch(/^\{"hash":"[0-9a-f]{64}","agentId":"agent-a","data":\{"reason":"no access rule"\},"prev":"0{64}","seq":1,"ts":"[^"]+","type":"refused"\}\n$/);
  });
});
