// Embedded store specifics: crash safety (SIGKILL mid-write, torn tail), segment rotation, the
// single-writer lock, a read-only directory (fail closed, recovery), and start-up from segment indexes.
import { spawn } from 'node:child_process';
import { appendFileSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
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

  describe('start-up from segment indexes', () => {
    /** Four sessions over many 2 KiB segments, two of them spanning most of the trail. */
    async function trail() {
      const f = fixture(2048);
      const s = await f.open();
      for (let i = 0; i < 80; i++) {
        const sessionId = i < 40 ? `s${i % 2}` : `s${2 + (i % 2)}`;
        await s.append(makeStatementEvent({ sessionId, who: i % 2 ? who : { sub: 'bob', issuer: 'https://idp.test' }, connection: i % 4 ? 'c' : 'd', sql: `select ${i}`, decision: i % 5 ? 'allow' : 'block' }));
        if (i % 7 === 0) await s.append(makeRefusedEvent({ reason: `no access ${i}` }));
        f.t.advance(1000);
      }
      const dir = auditDirOf(s);
      const before = { page: await s.querySessions({ limit: 100 }), s1: await s.sessionEvents('s1'), s3: await s.sessionEvents('s3') };
      await s.close();
      stores.pop();
      const segs = readdirSync(dir).filter((n) => n.startsWith('agent-a.') && n.endsWith('.jsonl')).sort();
      return { ...f, dir, before, segs };
    }
    const idxOf = (seg: string) => seg.replace(/\.jsonl$/, '.idx');

    it('indexes every sealed segment and restarts to the same sessions and events', async () => {
      const { open, dir, before, segs } = await trail();
      expect(segs.length).toBeGreaterThan(5);
      // Every segment but the one still being written has its index.
      expect(readdirSync(dir).filter((n) => n.endsWith('.idx')).sort()).toEqual(segs.slice(0, -1).map(idxOf));
      const s = await open();
      expect(await s.querySessions({ limit: 100 })).toEqual(before.page);
      expect(await s.sessionEvents('s1')).toEqual(before.s1);
      expect((await s.sessionEvents('s3')).map((e) => e.data.sql)).toEqual(Array.from({ length: 20 }, (_, k) => `select ${41 + 2 * k}`));
      expect(await s.querySessions({ limit: 10, sub: 'bob' })).toMatchObject({ sessions: [{ sessionId: 's2' }, { sessionId: 's0' }] });
      // The chain goes on from the head the indexes and the last segment gave.
      const next = await s.append(makeRefusedEvent({ reason: 'after restart' }));
      expect(await s.verify()).toEqual({ ok: true, events: next.seq });
      expect(await s.verify()).toMatchObject({ ok: true });
    });

    it("finds a session's events within its seq range, in the segment being written and in sealed ones", async () => {
      const f = fixture(300_000); // about 700 events a segment: several sparse offsets in each
      let s = await f.open();
      const sessionOf = (i: number) => (i === 5 || i === 2990 ? 'span' : i < 20 ? 'early' : i >= 1500 && i < 1510 ? 'mid' : `bulk-${i % 50}`);
      for (let base = 0; base < 3000; base += 100) {
        await Promise.all(Array.from({ length: 100 }, (_, k) => s.append(makeStatementEvent({ sessionId: sessionOf(base + k), who, connection: 'c', sql: `select ${base + k}`, decision: 'allow' }))));
      }
      const expected = async (id: string) => {
        const all: AuditEvent[] = [];
        for await (const l of s.exportEvents({}, 'jsonl')) all.push(JSON.parse(l) as AuditEvent);
        return all.filter((e) => e.sessionId === id);
      };
      const check = async () => {
        for (const id of ['span', 'early', 'mid', 'bulk-7']) {
          const want = await expected(id);
          expect(want.length).toBeGreaterThan(1);
          expect(await s.sessionEvents(id)).toEqual(want);
        }
      };
      // Indexes of sealed segments are written in the background (close() waits for them): wait until they are there.
      const indexes = () => readdirSync(auditDirOf(s)).filter((n) => n.endsWith('.idx')).length;
      for (let i = 0; i < 200 && indexes() <= 2; i++) await new Promise((r) => setTimeout(r, 25));
      expect(indexes()).toBeGreaterThan(2);
      await check();
      await s.close();
      stores.pop();
      s = await f.open();
      await check();
    });

    it('opens a trail written without indexes (an older agent) and indexes it', async () => {
      const { open, dir, before, segs } = await trail();
      for (const n of readdirSync(dir).filter((x) => x.endsWith('.idx') || x.endsWith('.sessions'))) rmSync(path.join(dir, n));
      const s = await open();
      expect(await s.querySessions({ limit: 100 })).toEqual(before.page);
      expect(await s.sessionEvents('s1')).toEqual(before.s1);
      expect(readdirSync(dir).filter((n) => n.endsWith('.idx')).sort()).toEqual(segs.slice(0, -1).map(idxOf));
      expect(readdirSync(dir)).toContain('agent-a.sessions');
    });

    it('rebuilds the summaries when the sessions snapshot is stale or damaged', async () => {
      const f = fixture(2048);
      let s = await f.open();
      const dir = auditDirOf(s);
      const add = async (from: number, to: number) => {
        for (let i = from; i < to; i++) await s.append(makeStatementEvent({ sessionId: `s${i % 3}`, who, connection: 'c', sql: `select ${i}`, decision: i % 4 ? 'allow' : 'block' }));
      };
      await add(0, 30);
      await s.close();
      stores.pop();
      const stale = readFileSync(path.join(dir, 'agent-a.sessions'));
      s = await f.open();
      await add(30, 60);
      const want = await s.querySessions({ limit: 10 });
      expect(want.sessions.map((x) => x.statements)).toEqual([20, 20, 20]);
      await s.close();
      stores.pop();
      // A snapshot from before the last rotations (as a crash right after one leaves it).
      writeFileSync(path.join(dir, 'agent-a.sessions'), stale);
      s = await f.open();
      expect(await s.querySessions({ limit: 10 })).toEqual(want);
      await s.close();
      stores.pop();
      writeFileSync(path.join(dir, 'agent-a.sessions'), stale.subarray(0, 40));
      s = await f.open();
      expect(await s.querySessions({ limit: 10 })).toEqual(want);
      expect(await s.verify()).toEqual({ ok: true, events: 60 });
    });

    it('reads a sealed segment again when it no longer matches its index, and verify reports the change', async () => {
      const { open, dir, segs } = await trail();
      // The last event of a sealed segment cut off: the index still lists it, the file does not.
      const victim = path.join(dir, segs[2]);
      const text = readFileSync(victim, 'utf8');
      const cut = text.slice(0, text.lastIndexOf('\n', text.length - 2) + 1);
      const gone = JSON.parse(text.slice(cut.length)) as AuditEvent;
      writeFileSync(victim, cut);
      const s = await open();
      const all = [...(await s.sessionEvents('s0')), ...(await s.sessionEvents('s1'))];
      expect(all.some((e) => e.seq === gone.seq)).toBe(false);
      expect(await s.verify()).toMatchObject({ ok: false, brokenAt: gone.seq });
    });

    it('shows an in-place edit of a sealed segment as stored (events are read from the segment, not the index), and verify reports it', async () => {
      const { open, dir, segs } = await trail();
      // A sealed segment ending with a statement; its SQL edited: same size, different content.
      const lastOf = (text: string) => text.slice(text.lastIndexOf('\n', text.length - 2) + 1);
      const victim = segs.slice(0, -1).map((n) => path.join(dir, n)).find((f) => lastOf(readFileSync(f, 'utf8')).includes('"type":"statement"'))!;
      const text = readFileSync(victim, 'utf8');
      const at = text.lastIndexOf('select ');
      writeFileSync(victim, text.slice(0, at) + 'SELECT ' + text.slice(at + 7));
      const edited = JSON.parse(lastOf(text)) as AuditEvent;
      const s = await open();
      const events = await s.sessionEvents(edited.sessionId!);
      expect(events.find((e) => e.seq === edited.seq)?.data.sql).toMatch(/^SELECT /);
      expect(await s.verify()).toMatchObject({ ok: false, brokenAt: edited.seq });
    });
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
