// What the embedded audit store costs per statement, through the real JsonlStore (not a test):
//   npx tsx --expose-gc scripts/bench-audit.ts [events=1000000] [sessions=16]
// Appends `events` synthetic statement events (each followed by its statement_result, as a session
// writes them) from `sessions` concurrent sessions, then reopens the store on the trail it wrote.
// Prints statements/s, CPU and audit bytes per statement, RSS and JS heap (after a GC) before and after
// the appends and after the restart, and the restart time.
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { JsonlStore } from '../agent/src/audit/jsonl-store.js';
import { makeSessionStartEvent, makeStatementEvent, type Identity } from '../agent/src/audit/events.js';

const total = Number(process.argv[2] ?? 1_000_000);
const sessions = Number(process.argv[3] ?? 16);
const who: Identity = { sub: 'repo:acme/etl:ref:refs/heads/main', issuer: 'https://token.actions.githubusercontent.com', claims: { repository: 'acme/etl', workflow: 'nightly' } };
const gc = (globalThis as { gc?: () => void }).gc;
const mem = () => {
  gc?.();
  const m = process.memoryUsage();
  return { rss: +(m.rss / 2 ** 20).toFixed(1), heap: +(m.heapUsed / 2 ** 20).toFixed(1) };
};

const dataDir = mkdtempSync(path.join(os.tmpdir(), 'hoop-bench-audit-'));
try {
  let store = await JsonlStore.open({ dataDir, agentId: 'bench', clock: Date.now });
  const before = mem();
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const perSession = Math.ceil(total / sessions);
  await Promise.all(
    Array.from({ length: sessions }, async (_, k) => {
      const sessionId = `bench-${k}`;
      await store.append(makeSessionStartEvent({ sessionId, who, connection: 'prod-db', clientAddr: '127.0.0.1:5000', applicationName: 'pgbench' }));
      for (let i = 0; i < perSession; i++) {
        const ev = makeStatementEvent({ sessionId, who, connection: 'prod-db', sql: `SELECT abalance FROM pgbench_accounts WHERE aid = ${(i * 7919) % 100000};`, decision: 'allow', rule: 'read-only' });
        const sealed = await store.append(ev);
        // The result rides along with the next statement's write (nothing waits for it).
        void store.append({ type: 'statement_result', sessionId, connection: 'prod-db', data: { statementSeq: sealed.seq, rows: 1, sqlstate: '00000', durationMs: 0.21 } });
      }
    }),
  );
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const after = mem();
  await store.close();
  const auditDir = path.join(dataDir, 'audit');
  const bytes = readdirSync(auditDir).filter((n) => n.endsWith('.jsonl')).reduce((a, n) => a + statSync(path.join(auditDir, n)).size, 0);
  const statements = perSession * sessions;
  const r0 = performance.now();
  store = await JsonlStore.open({ dataDir, agentId: 'bench', clock: Date.now });
  const restartMs = performance.now() - r0;
  const reopened = mem();
  await store.close();
  console.log(
    JSON.stringify({
      statements,
      sessions,
      statementsPerSec: Math.round((statements / ms) * 1000),
      cpuUsPerStatement: +((cpu.user + cpu.system) / statements).toFixed(1),
      auditBytesPerStatement: Math.round(bytes / statements),
      trailMB: +(bytes / 2 ** 20).toFixed(1),
      rssBeforeMB: before.rss,
      rssAfterMB: after.rss,
      heapBeforeMB: before.heap,
      heapAfterMB: after.heap,
      restartMs: Math.round(restartMs),
      rssAfterRestartMB: reopened.rss,
      heapAfterRestartMB: reopened.heap,
    }),
  );
} finally {
  rmSync(dataDir, { recursive: true, force: true });
}
