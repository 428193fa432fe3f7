// The state store contract: every implementation passes the same cases (DESIGN.md "Audit, recording,
// sessions"; issues 7 and 8). Storage-specific cases (crash, rotation, shared database) live in
// jsonl-store.test.ts and pg-store.test.ts.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { freshDatabase, type TestDatabase } from '../../harness/pg.js';
import {
  GENESIS,
  hashEvent,
  makeRefusedEvent,
  makeSessionEndEvent,
  makeSessionStartEvent,
  makeStatementEvent,
  storedLine,
  hashedContent,
  type AuditEvent,
  type Identity,
} from '../../../agent/src/audit/events.js';
import { verifyChain } from '../../../agent/src/audit/verify.js';
import type { StateStore } from '../../../agent/src/audit/store.js';
import { ApprovalError, type ApprovalRequest } from '../../../agent/src/audit/approvals.js';
import { jsonlFixture, requireUnwritableStorage, pgFixture, testClock, until, type StoreFixture } from './fixtures.js';

const alice: Identity = { sub: 'alice', issuer: 'https://idp.test', email: 'alice@example.test', groups: ['data-eng'] };
const ci: Identity = { sub: 'repo:acme/etl:ref:refs/heads/main', issuer: 'https://token.actions.githubusercontent.com', claims: { repository: 'acme/etl', workflow: 'nightly' } };
const carol: Identity = { sub: 'carol', issuer: 'https://idp.test', groups: ['compliance'] };
const dave: Identity = { sub: 'dave', issuer: 'https://idp.test', groups: ['compliance'] };

let db: TestDatabase;
beforeAll(async () => {
  db = await freshDatabase('audit');
});

type Kind = 'jsonl' | 'pg';
const kinds: Kind[] = ['jsonl', 'pg'];

describe.each(kinds)('StateStore contract: %s', (kind) => {
  let t: ReturnType<typeof testClock>;
  let fx: StoreFixture;
  let store: StateStore;
  const opened: StateStore[] = [];
  const open = async (o?: Parameters<StoreFixture['open']>[0]) => {
    const s = await fx.open(o);
    opened.push(s);
    return s;
  };
  const reopen = async () => {
    await store.close();
    store = await open();
  };

  beforeEach(async () => {
    t = testClock();
    fx = kind === 'jsonl' ? jsonlFixture(t.clock) : await pgFixture(db.pg, t.clock);
    store = await open();
  });
  afterEach(async () => {
    await fx.restoreStorage().catch(() => {});
    for (const s of opened.splice(0)) await s.close().catch(() => {});
    await fx.cleanup();
  });

  /** A session of `n` statements by `who` on `connection`. */
  async function session(id: string, who: Identity, connection: string, n: number, decision = 'allow') {
    await store.append(makeSessionStartEvent({ sessionId: id, who, connection, clientAddr: '127.0.0.1:5000', cliVersion: '0.1.0', applicationName: 'psql' }));
    for (let i = 1; i <= n; i++) {
      t.advance(10);
      await store.append(makeStatementEvent({ sessionId: id, who, connection, sql: `select ${i}`, params: [], decision, rule: 'r1', rows: 1, bytes: 10, durationMs: 1, sqlstate: '00000' }));
    }
    await store.append(makeSessionEndEvent({ sessionId: id, who, connection }));
  }

  describe('events', () => {
    it('assigns seq, ts, prev and hash, and resolves with the sealed event', async () => {
      const a = await store.append(makeSessionStartEvent({ sessionId: 's1', who: alice, connection: 'prod-db' }));
      t.advance(5);
      const b = await store.append(makeStatementEvent({ sessionId: 's1', who: alice, connection: 'prod-db', sql: 'select 1', decision: 'allow' }));
      expect(a).toMatchObject({ seq: 1, prev: GENESIS, agentId: 'agent-a', ts: '2025-03-01T09:00:00.000Z', type: 'session_start' });
      expect(b).toMatchObject({ seq: 2, prev: a.hash, ts: '2025-03-01T09:00:00.005Z' });
      expect(hashEvent(b)).toBe(b.hash);
    });

    it('keeps timestamps non-decreasing when the clock goes back', async () => {
      await store.append(makeRefusedEvent({ reason: 'bad token' }));
      t.advance(-60_000);
      const e = await store.append(makeRefusedEvent({ reason: 'bad token' }));
      expect(e.ts).toBe('2025-03-01T09:00:00.000Z');
    });

    it("returns a session's events in order with its identity, across a restart", async () => {
      await store.append(makeSessionStartEvent({ sessionId: 's1', who: alice, connection: 'prod-db' }));
      await store.append(makeSessionStartEvent({ sessionId: 's2', who: ci, connection: 'prod-db' }));
      await store.append(makeStatementEvent({ sessionId: 's1', who: alice, connection: 'prod-db', sql: 'select 1', decision: 'allow' }));
      await reopen();
      await store.append(makeStatementEvent({ sessionId: 's2', who: ci, connection: 'prod-db', sql: 'select 2', decision: 'allow' }));
      await store.append(makeSessionEndEvent({ sessionId: 's1', who: alice, connection: 'prod-db' }));
      const s1 = await store.sessionEvents('s1');
      expect(s1.map((e) => [e.seq, e.type])).toEqual([[1, 'session_start'], [3, 'statement'], [5, 'session_end']]);
      expect(s1.every((e) => e.identity?.sub === 'alice' && e.identity.email === 'alice@example.test')).toBe(true);
      const s2 = await store.sessionEvents('s2');
      expect(s2.map((e) => e.seq)).toEqual([2, 4]);
      expect(s2[0].identity?.claims).toEqual({ repository: 'acme/etl', workflow: 'nightly' });
      expect(await store.verify()).toEqual({ ok: true, events: 5 });
    });

    it('resolves concurrent appends in chain order, all durable', async () => {
      const got = await Promise.all(Array.from({ length: 200 }, (_, i) => store.append(makeRefusedEvent({ reason: `r${i}` }))));
      expect(got.map((e) => e.seq)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
      await reopen();
      expect(await store.verify()).toEqual({ ok: true, events: 200 });
      expect((await store.append(makeRefusedEvent({ reason: 'next' }))).seq).toBe(201);
    });

    it('never stores a bearer token in a refusal', async () => {
      const e = await store.append(makeRefusedEvent({ reason: 'token eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl rejected' }));
      expect(JSON.stringify(await store.sessionEvents('x'))).toBe('[]');
      expect(e.data.reason).toBe('token [token] rejected');
    });
  });

  describe('sessions', () => {
    beforeEach(async () => {
      await session('s1', alice, 'prod-db', 2);
      t.advance(60_000);
      await session('s2', ci, 'prod-db', 1, 'block');
      t.advance(60_000);
      await session('s3', alice, 'staging', 3);
      t.advance(60_000);
      await store.append(makeSessionStartEvent({ sessionId: 's4', who: carol, connection: 'prod-db' }));
    });

    it('summarises sessions, newest first', async () => {
      const { sessions, nextCursor } = await store.querySessions({ limit: 10 });
      expect(nextCursor).toBeUndefined();
      expect(sessions.map((s) => s.sessionId)).toEqual(['s4', 's3', 's2', 's1']);
      expect(sessions[1]).toMatchObject({ sub: 'alice', issuer: 'https://idp.test', connection: 'staging', statements: 3, decisions: ['allow'], clientAddr: '127.0.0.1:5000', applicationName: 'psql', cliVersion: '0.1.0' });
      expect(sessions[1].endedAt).toBeDefined();
      expect(sessions[0].endedAt).toBeUndefined();
    });

    it.each([
      { desc: 'by identity', filter: { sub: 'alice' }, want: ['s3', 's1'] },
      { desc: 'by connection', filter: { connection: 'prod-db' }, want: ['s4', 's2', 's1'] },
      { desc: 'by decision', filter: { decision: 'block' }, want: ['s2'] },
      { desc: 'by identity and connection', filter: { sub: 'alice', connection: 'prod-db' }, want: ['s1'] },
      { desc: 'since', filter: { since: '2025-03-01T09:01:00.000Z' }, want: ['s4', 's3', 's2'] },
      { desc: 'until', filter: { until: '2025-03-01T09:02:00.000Z' }, want: ['s2', 's1'] },
      { desc: 'time range, epoch ms', filter: { since: Date.parse('2025-03-01T09:01:00Z'), until: Date.parse('2025-03-01T09:02:30Z') }, want: ['s3', 's2'] },
      { desc: 'nobody', filter: { sub: 'mallory' }, want: [] },
    ])('filters $desc', async ({ filter, want }) => {
      const { sessions } = await store.querySessions({ limit: 10, ...filter });
      expect(sessions.map((s) => s.sessionId)).toEqual(want);
    });

    it('pages with a cursor, each session exactly once', async () => {
      for (let i = 5; i <= 12; i++) await store.append(makeSessionStartEvent({ sessionId: `s${i}`, who: ci, connection: 'prod-db' })); // same ts
      const seen: string[] = [];
      let cursor: string | undefined;
      let pages = 0;
      do {
        const page = await store.querySessions({ limit: 3, cursor });
        seen.push(...page.sessions.map((s) => s.sessionId));
        cursor = page.nextCursor;
        pages++;
      } while (cursor);
      expect(pages).toBe(4);
      expect(seen).toEqual(['s12', 's11', 's10', 's9', 's8', 's7', 's6', 's5', 's4', 's3', 's2', 's1']);
      const filtered = await store.querySessions({ limit: 1, sub: 'alice' });
      expect(filtered.sessions[0].sessionId).toBe('s3');
      expect((await store.querySessions({ limit: 1, sub: 'alice', cursor: filtered.nextCursor })).sessions[0].sessionId).toBe('s1');
    });

    it('rejects a forged cursor', async () => {
      await expect(store.querySessions({ limit: 1, cursor: 'not-a-cursor' })).rejects.toThrow(/invalid cursor/);
    });
  });

  describe('tamper detection', () => {
    beforeEach(async () => {
      await session('s1', alice, 'prod-db', 4); // seq 1..6: start, select 1..4, end
      expect(await store.verify()).toEqual({ ok: true, events: 6 });
      await store.close();
    });
    const forge = (lines: string[], seq: number): string => {
      const prev = JSON.parse(lines[seq - 2]) as AuditEvent;
      const { hash: _h, ...body } = { ...prev, seq, prev: prev.hash, type: 'statement' as const, data: { sql: 'select forged' } };
      return storedLine(hashedContent(body), hashEvent(body));
    };

    it.each([
      { desc: 'an edited field', fn: (l: string[]) => ((l[2] = l[2].replace('select 2', 'select 9')), l), brokenAt: 3, reason: /hash/ },
      { desc: 'an edited field with its hash recomputed', fn: (l: string[]) => {
          const e = JSON.parse(l[2]) as AuditEvent;
          e.data.sql = 'select 9';
          e.hash = hashEvent(e);
          l[2] = JSON.stringify(e);
          return l;
        }, brokenAt: 4, reason: /prev/ },
      { desc: 'a deleted event', fn: (l: string[]) => (l.splice(2, 1), l), brokenAt: 3, reason: /missing/ },
      { desc: 'two swapped events', fn: (l: string[]) => ([l[2], l[3]] = [l[3], l[2]]) && l, brokenAt: 3, reason: /expected seq 3/ },
      { desc: 'an inserted event', fn: (l: string[]) => (l.splice(2, 0, forge(l, 3)), l), brokenAt: 3, reason: /duplicated|expected seq 4/ },
      { desc: 'a deleted first event', fn: (l: string[]) => l.slice(1), brokenAt: 1, reason: /seq 1/ },
    ])('reports $desc at the first broken seq', async ({ fn, brokenAt, reason }) => {
      await fx.rewrite('agent-a', fn);
      store = await open();
      const r = await store.verify();
      expect(r).toMatchObject({ ok: false, brokenAt });
      expect(r.ok === false && r.reason).toMatch(reason);
    });

    it('verifies from a given seq', async () => {
      await fx.rewrite('agent-a', (l) => ((l[1] = l[1].replace('select 1', 'select 7')), l));
      store = await open();
      expect(await store.verify()).toMatchObject({ ok: false, brokenAt: 2 });
      expect(await store.verify({ from: 3 })).toEqual({ ok: true, events: 4 });
    });
  });

  describe('recordings and retention', () => {
    it('caps rows per statement and bytes per session, recording the truncation', async () => {
      await store.close();
      store = await open({ recording: { maxRowsPerStatement: 2, maxBytesPerSession: 400 } });
      await store.appendRecording('s1', { seq: 2, sql: 'select * from patients', columns: ['id', 'ssn'], rows: [[1, '***'], [2, '***'], [3, '***']] });
      for (let i = 0; i < 5; i++) await store.appendRecording('s1', { seq: 3 + i, sql: 'select 1', columns: ['x'], rows: [['a'.repeat(50)]] });
      const rec = await store.readRecording('s1');
      expect(rec[0]).toMatchObject({ rows: [[1, '***'], [2, '***']], rowCount: 3, truncated: { rowsOmitted: 1 }, ts: '2025-03-01T09:00:00.000Z' });
      expect(rec.at(-1)).toMatchObject({ truncated: { session: true } });
      expect(rec.length).toBeLessThan(6);
      expect(await store.readRecording('nobody')).toEqual([]);
      await expect(store.appendRecording('../../etc/passwd', { sql: 'x' })).rejects.toThrow(/invalid session id/);
    });

    it('writes a batch of entries in order, capped like single ones, and says when the budget is spent', async () => {
      await store.close();
      store = await open({ recording: { maxRowsPerStatement: 2, maxBytesPerSession: 400 } });
      const entry = (i: number) => ({ seq: i, sql: `select ${i}`, columns: ['x'], rows: [['a'.repeat(20)], ['b'], ['c']], ts: `2025-03-01T09:00:0${i}.000Z` });
      expect(await store.appendRecording('s2', entry(1), entry(2))).toBe(true);
      expect(await store.appendRecording('s2', entry(3), entry(4), entry(5), entry(6))).toBe(false);
      expect(await store.appendRecording('s2', entry(7))).toBe(false);
      const rec = await store.readRecording('s2');
      // Each entry keeps the time it was made (not the batch's), rows cut to 2; the marker ends it.
      expect(rec.slice(0, 2)).toMatchObject([
        { seq: 1, sql: 'select 1', ts: '2025-03-01T09:00:01.000Z', rows: [['a'.repeat(20)], ['b']], truncated: { rowsOmitted: 1 } },
        { seq: 2, sql: 'select 2', ts: '2025-03-01T09:00:02.000Z' },
      ]);
      // Entry 3 does not fit: the marker takes its place, and nothing after it is kept.
      expect(rec).toHaveLength(3);
      expect(rec[2]).toMatchObject({ seq: 3, note: expect.stringMatching(/cap reached/), truncated: { session: true } });
    });

    it('deletes old recordings and keeps the chain verifiable', async () => {
      await session('old', alice, 'prod-db', 2);
      await store.appendRecording('old', { seq: 2, sql: 'select 1', rows: [[1]] });
      t.advance(40 * 86_400_000);
      await session('new', alice, 'prod-db', 1);
      await store.appendRecording('new', { seq: 9, sql: 'select 1', rows: [[1]] });
      expect(await store.applyRetention(30 * 86_400_000)).toEqual({ removed: 1 });
      expect(await store.readRecording('old')).toEqual([]);
      expect(await store.readRecording('new')).toHaveLength(1);
      expect((await store.sessionEvents('old')).length).toBe(4);
      expect(await store.verify()).toEqual({ ok: true, events: 7 });
    });
  });

  describe('export', () => {
    const collect = async (it: AsyncIterable<string>) => {
      let s = '';
      for await (const x of it) s += x;
      return s;
    };
    beforeEach(async () => {
      await session('s1', alice, 'prod-db', 1);
      t.advance(3_600_000);
      await session('s2', ci, 'prod-db', 1);
      await store.append(makeStatementEvent({ sessionId: 's2', who: ci, connection: 'prod-db', sql: '=HYPERLINK("x"), "quoted"\nline', decision: 'allow' }));
    });

    it('exports JSON Lines that verify offline', async () => {
      const text = await collect(store.exportEvents({}, 'jsonl'));
      const lines = text.trimEnd().split('\n');
      expect(lines).toHaveLength(7);
      expect(await verifyChain(lines)).toEqual({ ok: true, events: 7 });
      const since = (await collect(store.exportEvents({ since: '2025-03-01T09:30:00Z' }, 'jsonl'))).trimEnd().split('\n');
      expect(since.map((l) => (JSON.parse(l) as AuditEvent).seq)).toEqual([4, 5, 6, 7]);
      expect(await verifyChain(since, { from: 0 })).toEqual({ ok: true, events: 4 });
      expect(await verifyChain(since)).toMatchObject({ ok: false, brokenAt: 1 });
    });

    it('exports CSV, one row per event, safe for spreadsheets', async () => {
      const text = await collect(store.exportEvents({ until: '2025-03-01T09:30:00Z' }, 'csv'));
      const rows = text.split('\r\n').filter(Boolean);
      expect(rows[0]).toBe('seq,ts,agent_id,type,session_id,sub,issuer,connection,decision,rule,sql,rows,sqlstate,prev,hash,data');
      expect(rows).toHaveLength(4);
      expect(rows[2]).toMatch(/^2,2025-03-01T09:00:00.010Z,agent-a,statement,s1,alice,https:\/\/idp.test,prod-db,allow,r1,select 1,1,00000,/);
      const all = await collect(store.exportEvents({}, 'csv'));
      expect(all).toContain(`"'=HYPERLINK(""x""), ""quoted""\nline"`);
    });
  });

  describe('approvals', () => {
    const request = (o: Partial<ApprovalRequest> = {}): ApprovalRequest => ({
      sessionId: 's1',
      connection: 'prod-db',
      requester: alice,
      sql: 'update patients set x = $1',
      params: ['[redacted]'],
      fingerprint: 'fp-1',
      timeoutMs: 15 * 60_000,
      ...o,
    });
    const code = (p: Promise<unknown>) => p.then(() => 'ok', (e: unknown) => (e instanceof ApprovalError ? e.code : String(e)));

    it('refuses self-approval and a second vote by the same identity; needs minApprovals', async () => {
      const a = await store.approvals.create(request({ minApprovals: 2 }));
      expect(a).toMatchObject({ status: 'pending', expiresAt: '2025-03-01T09:15:00.000Z', agentId: 'agent-a' });
      expect(await code(store.approvals.decide(a.id, { ...alice, groups: ['compliance'] }, 'approve'))).toBe('SELF_APPROVAL');
      expect((await store.approvals.decide(a.id, carol, 'approve', 'ok')).status).toBe('pending');
      expect(await code(store.approvals.decide(a.id, { ...carol, email: 'other@x' }, 'approve'))).toBe('ALREADY_VOTED');
      expect(await code(store.approvals.consume(a.id, 'fp-1'))).toBe('NOT_APPROVED');
      const done = await store.approvals.decide(a.id, dave, 'approve');
      expect(done.status).toBe('approved');
      expect(done.votes.map((v) => v.sub)).toEqual(['carol', 'dave']);
      expect(await code(store.approvals.decide(a.id, { sub: 'erin', issuer: 'https://idp.test' }, 'deny', 'late'))).toBe('NOT_PENDING');
    });

    it('consumes an approval once, only for its fingerprint, even when raced', async () => {
      const a = await store.approvals.create(request());
      await store.approvals.decide(a.id, carol, 'approve');
      expect(await code(store.approvals.consume(a.id, 'fp-other'))).toBe('FINGERPRINT_MISMATCH');
      const other = kind === 'pg' ? await open({ agentId: 'agent-b' }) : store;
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) => code((i % 2 ? other : store).approvals.consume(a.id, 'fp-1'))));
      expect(results.filter((r) => r === 'ok')).toHaveLength(1);
      expect((await store.approvals.get(a.id))?.status).toBe('consumed');
    });

    it('denies with a reason; lists by status and connection', async () => {
      const a = await store.approvals.create(request());
      const b = await store.approvals.create(request({ connection: 'staging' }));
      expect(await code(store.approvals.decide(a.id, carol, 'deny'))).toBe('REASON_REQUIRED');
      expect((await store.approvals.decide(a.id, carol, 'deny', 'not in change window')).status).toBe('denied');
      expect((await store.approvals.list({ status: 'pending' })).map((x) => x.id)).toEqual([b.id]);
      expect((await store.approvals.list({ connection: 'prod-db' })).map((x) => x.id)).toEqual([a.id]);
      expect(await store.approvals.get('ap_nope')).toBeUndefined();
      expect(await code(store.approvals.decide('ap_nope', carol, 'approve'))).toBe('NOT_FOUND');
    });

    it('expires by the injected clock', async () => {
      const a = await store.approvals.create(request({ timeoutMs: 60_000 }));
      t.advance(59_999);
      expect((await store.approvals.get(a.id))?.status).toBe('pending');
      t.advance(1);
      expect(await code(store.approvals.decide(a.id, carol, 'approve'))).toBe('NOT_PENDING');
      expect((await store.approvals.get(a.id))?.status).toBe('expired');
      const b = await store.approvals.create(request({ timeoutMs: 1000 }));
      t.advance(1000);
      expect(await store.approvals.sweep()).toBe(1);
      expect((await store.approvals.list({ status: 'expired' })).map((x) => x.id).sort()).toEqual([a.id, b.id].sort());
    });

    it('wakes the waiter when another agent decides; survives a restart', async () => {
      const a = await store.approvals.create(request());
      const other = await open({ agentId: kind === 'pg' ? 'agent-b' : 'agent-a' }).catch(() => store);
      const waiting = store.approvals.awaitDecision(a.id);
      await new Promise((r) => setTimeout(r, 50));
      await (kind === 'pg' ? other : store).approvals.decide(a.id, carol, 'approve', 'fine');
      const d = await waiting;
      expect(d.status).toBe('approved');
      expect(d.approval.votes[0]).toMatchObject({ sub: 'carol', reason: 'fine' });
      await reopen();
      expect((await store.approvals.get(a.id))?.status).toBe('approved');
      expect((await store.approvals.consume(a.id, 'fp-1')).status).toBe('consumed');
    });

    it('wakes the waiter on expiry, withdrawal, and rejects on abort', async () => {
      const a = await store.approvals.create(request({ timeoutMs: 30 }));
      const w = store.approvals.awaitDecision(a.id);
      t.advance(30); // the waiter's deadline timer re-reads with the injected clock
      expect((await w).status).toBe('expired');
      const b = await store.approvals.create(request());
      const wb = store.approvals.awaitDecision(b.id);
      await store.approvals.withdraw(b.id);
      expect((await wb).status).toBe('withdrawn');
      const c = await store.approvals.create(request());
      const ac = new AbortController();
      const wc = store.approvals.awaitDecision(c.id, ac.signal);
      ac.abort(new Error('client cancelled'));
      await expect(wc).rejects.toThrow('client cancelled');
    });
  });

  describe('fail closed', () => {
    it('refuses appends while the storage is unwritable and recovers by itself', async () => {
      if (kind === 'jsonl') requireUnwritableStorage();
      await session('s1', alice, 'prod-db', 1);
      await fx.breakStorage();
      await expect(store.append(makeStatementEvent({ sessionId: 's1', who: alice, connection: 'prod-db', sql: 'select 2', decision: 'allow' }))).rejects.toMatchObject({ code: 'AUDIT_STORE_UNAVAILABLE' });
      expect(store.health()).toMatchObject({ writable: false, lastError: expect.any(String) });
      await expect(store.append(makeRefusedEvent({ reason: 'x' }))).rejects.toThrow(/not writable/);
      await fx.restoreStorage();
      await until(() => store.health().writable); // the probe, with no traffic
      const e = await store.append(makeStatementEvent({ sessionId: 's1', who: alice, connection: 'prod-db', sql: 'select 3', decision: 'allow' }));
      expect(e.seq).toBe(4);
      expect(await store.verify()).toEqual({ ok: true, events: 4 });
      await reopen();
      expect(await store.verify()).toEqual({ ok: true, events: 4 });
    });
  });
});

afterAll(() => {});
