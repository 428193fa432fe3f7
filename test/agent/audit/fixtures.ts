// Both state store implementations behind one fixture shape, so the contract suite runs unchanged on
// each. A fixture owns one backing storage (a temp directory / a fresh database) per test; stores
// opened from it share that storage, as two agents (or a restarted agent) would.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { JsonlStore } from '../../../agent/src/audit/jsonl-store.js';
import { PgStore } from '../../../agent/src/audit/pg-store.js';
import type { Clock, RecordingLimits, StateStore } from '../../../agent/src/audit/store.js';
import type { LocalPostgres } from '../../../cli/src/demo/postgres.js';
import { GENESIS, hashedContent, sha256, storedLine } from '../../../shared/audit/chain.js';

export interface StoreFixture {
  open(opts?: { agentId?: string; recording?: RecordingLimits }): Promise<StateStore>;
  /** Rewrites one agent's stored chain (stores closed): the list is the stored lines in storage order. */
  rewrite(agentId: string, fn: (lines: string[]) => string[]): Promise<void>;
  /** Makes the storage unwritable (and unreachable) / restores it. */
  breakStorage(): Promise<void>;
  restoreStorage(): Promise<void>;
  cleanup(): Promise<void>;
}

export const isRoot = process.getuid?.() === 0;

export function tempDir(prefix = 'hoop-audit-'): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** `chattr` immutability: the only way to make a file unwritable for root, even through an open fd. */
export function canChattr(): boolean {
  if (!isRoot) return false;
  const d = tempDir('hoop-chattr-');
  try {
    writeFileSync(path.join(d, 'f'), 'x');
    execFileSync('chattr', ['+i', path.join(d, 'f')], { stdio: 'ignore' });
    execFileSync('chattr', ['-i', path.join(d, 'f')], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
}

/**
 * Making storage unwritable for a root process needs chattr on the temp filesystem (root ignores
 * permissions). Fails loudly where that is impossible rather than skipping the fail-closed tests.
 */
export function requireUnwritableStorage(): void {
  if (isRoot && !canChattr()) throw new Error('as root these tests need chattr +i to work on the temp filesystem (ext4/xfs), or run them as a normal user');
}

export function setWritable(dir: string, writable: boolean): void {
  const files = readdirSync(dir).map((n) => path.join(dir, n)).filter((f) => !f.endsWith('recordings'));
  if (isRoot) execFileSync('chattr', [writable ? '-i' : '+i', dir, ...files]);
  else for (const f of [dir, ...files]) chmodSync(f, writable ? 0o755 : 0o500);
}

export function jsonlFixture(clock: Clock, extra: { segmentBytes?: number } = {}): StoreFixture & { dataDir: string } {
  const dataDir = tempDir();
  const auditDir = path.join(dataDir, 'audit');
  return {
    dataDir,
    open: (o = {}) => JsonlStore.open({ dataDir, agentId: o.agentId ?? 'agent-a', clock, recording: o.recording, ...extra }),
    async rewrite(agentId, fn) {
      const segs = readdirSync(auditDir).filter((n) => n.startsWith(agentId + '.') && n.endsWith('.jsonl')).sort();
      const lines = segs.flatMap((n) => readFileSync(path.join(auditDir, n), 'utf8').split('\n').filter(Boolean));
      for (const n of segs.slice(1)) rmSync(path.join(auditDir, n));
      writeFileSync(path.join(auditDir, segs[0]), fn(lines).map((l) => l + '\n').join(''));
    },
    async breakStorage() {
      setWritable(auditDir, false);
    },
    async restoreStorage() {
      setWritable(auditDir, true);
    },
    async cleanup() {
      if (isRoot) execFileSync('chattr', ['-R', '-i', dataDir], { stdio: 'ignore' });
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export async function pgFixture(server: LocalPostgres, clock: Clock): Promise<StoreFixture> {
  const name = `audit_${randomBytes(4).toString('hex')}`;
  await server.exec(`CREATE DATABASE ${name}`);
  const url = server.url(name);
  const sql = async (text: string, args: unknown[] = []) => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      return (await c.query(text, args)).rows;
    } finally {
      await c.end();
    }
  };
  return {
    open: (o = {}) => PgStore.open({ url, agentId: o.agentId ?? 'agent-a', clock, recording: o.recording }),
    // Rows are re-keyed by position, so the seq column says "storage order" and the body is the record.
    async rewrite(agentId, fn) {
      const rows = (await sql('SELECT body FROM audit_events WHERE agent_id = $1 ORDER BY seq', [agentId])) as { body: string }[];
      const lines = fn(rows.map((r) => r.body));
      await sql('DELETE FROM audit_events WHERE agent_id = $1', [agentId]);
      for (const [i, body] of lines.entries()) {
        const e = JSON.parse(body) as { ts: string; type: string; sessionId?: string; prev: string; hash: string };
        await sql('INSERT INTO audit_events (agent_id, seq, ts, type, session_id, prev, hash, body) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)', [
          agentId, i + 1, e.ts, e.type, e.sessionId ?? null, e.prev, e.hash, body,
        ]);
      }
    },
    // The store's database goes away: no new connections, existing ones terminated.
    async breakStorage() {
      await server.exec(`ALTER DATABASE ${name} WITH ALLOW_CONNECTIONS false`);
      await server.exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${name}'`);
    },
    async restoreStorage() {
      await server.exec(`ALTER DATABASE ${name} WITH ALLOW_CONNECTIONS true`);
    },
    async cleanup() {
      await server.exec(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    },
  };
}

/** A settable test clock. */
export function testClock(start = Date.parse('2025-03-01T09:00:00.000Z')) {
  let now = start;
  const clock = () => now;
  return { clock, advance: (ms: number) => (now += ms), set: (t: number) => (now = t) };
}

export async function until(cond: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = performance.now() + timeoutMs;
  while (!(await cond())) {
    if (performance.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * The attack a bare hash chain cannot show: edit events (`edit` mutates a parsed event), then recompute
 * every hash and prev after it, so the chain links again. Takes and returns stored lines.
 */
export function rewriteAndRehash(lines: string[], edit: (e: Record<string, unknown> & { seq: number; data: Record<string, unknown> }) => void): string[] {
  let prev = GENESIS;
  return lines.map((l) => {
    const e = JSON.parse(l) as Record<string, unknown> & { seq: number; data: Record<string, unknown> };
    edit(e);
    e.prev = prev;
    delete e.hash;
    const content = hashedContent(e);
    prev = sha256(content);
    return storedLine(content, prev);
  });
}
