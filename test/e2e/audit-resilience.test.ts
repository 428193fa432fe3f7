// The audit trail under failure (issue 7, SECURITY-POLICY P9): a statement is forwarded only after its
// audit event is written, so
//   - a state store that goes away mid-session turns the next statements into refusals (57P03) that
//     never reach the database, and the same session works again once the store is back, without an
//     agent restart (PostgreSQL store and embedded JSONL store);
//   - an agent killed with SIGKILL mid-load has an event for every statement the database received.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { run, tunnelClient } from '../harness/stack.js';
import { useIssuer } from '../harness/oidc.js';
import { workerPostgres } from '../harness/pg.js';
import { isRoot, requireUnwritableStorage } from '../agent/audit/fixtures.js';
import { startDemoStack, DEMO_CLIENT, type DemoStack } from '../../cli/src/demo/stack.js';
import { startPostgres, type LocalPostgres } from '../../cli/src/demo/postgres.js';
import { TunnelClient } from '../../cli/src/services/tunnel-client.js';
import { startLocalListener, type LocalListener } from '../../cli/src/services/local-listener.js';
import { PgStore } from '../../agent/src/audit/pg-store.js';
import { JsonlStore } from '../../agent/src/audit/jsonl-store.js';
import type { StateStore } from '../../agent/src/audit/store.js';
import type { AuditEvent } from '../../agent/src/audit/events.js';
import { verifyChain } from '../../agent/src/audit/verify.js';
import { freePort } from '../../shared/net.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `hoopctl audit verify PATH --json`, the command an auditor runs, as its own process. */
async function auditVerify(p: string) {
  const r = await run(process.execPath, ['--import', 'tsx', 'cli/src/main.ts', '--json', 'audit', 'verify', p], { cwd: ROOT, timeoutMs: 120_000 });
  return { code: r.code, result: r.stdout.trim() ? (JSON.parse(r.stdout) as { ok: boolean; events: number }) : undefined, stderr: r.stderr };
}

/** Statements of every session of the store that carry `tag` in their SQL, and the results recorded for them. */
async function taggedStatements(store: StateStore, tag: string): Promise<{ statements: AuditEvent[]; resultOf: Map<number, AuditEvent> }> {
  const { sessions } = await store.querySessions({ limit: 1000 });
  const events = (await Promise.all(sessions.map((s) => store.sessionEvents(s.sessionId)))).flat();
  const statements = events.filter((e) => e.type === 'statement' && String(e.data.sql).includes(tag)).sort((a, b) => a.seq - b.seq);
  const resultOf = new Map(events.filter((e) => e.type === 'statement_result').map((e) => [e.data.statementSeq as number, e]));
  return { statements, resultOf };
}

/** The SQL text of the agent's upstream backends (pg_stat_activity.query: each one's latest statement). */
async function upstreamQueries(stack: DemoStack): Promise<string[]> {
  const [r] = await stack.pg.exec(`SELECT query FROM pg_stat_activity WHERE usename = 'gw_agent' AND backend_type = 'client backend'`, 'clinic');
  return r.rows.map((x: { query: string }) => x.query);
}

/**
 * One open session across a store outage: a statement before it runs; during it the next statements
 * are refused with 57P03 and do not reach PostgreSQL; after it the same session runs statements again.
 */
async function refuseWhileDownThenRecover(stack: DemoStack, outage: { down(): Promise<void>; up(): Promise<void> }) {
  const tag = `mark_${randomBytes(4).toString('hex')}`;
  const stmt = (phase: string) => `SELECT '${tag}_${phase}' AS m`;
  const c = await tunnelClient(stack, { application_name: 'audit-resilience' });
  c.on('error', () => {});
  let down = false;
  try {
    expect((await c.query(stmt('before'))).rows).toEqual([{ m: `${tag}_before` }]);

    await outage.down();
    down = true;
    for (const phase of ['during1', 'during2']) {
      const err = (await c.query(stmt(phase)).then(
        () => undefined,
        (e: unknown) => e,
      )) as (Error & { code?: string; hint?: string }) | undefined;
      expect(err, `${phase} must be refused while the audit store is down`).toBeDefined();
      expect(err).toMatchObject({ code: '57P03', message: expect.stringMatching(/audit store.*not run.*P9\.audit-unavailable/) });
      expect(err!.hint).toMatch(/recovers by itself/);
      // Refused means never forwarded: in its place the session's backend got the agent's sentinel (an
      // identifier that fails to parse and keeps the replies in order), not the statement.
      const upstream = await upstreamQueries(stack);
      expect(upstream.filter((q) => q.includes(`${tag}_during`))).toEqual([]);
      expect(upstream.some((q) => /^hoop_refused_\w+$/.test(q))).toBe(true);
    }
    expect(stack.agent.store.health().writable).toBe(false);

    await outage.up();
    down = false;
    // Same session, same agent process: retried until the agent has found its store again by itself.
    let after: pg.QueryResult | undefined;
    const deadline = performance.now() + 60_000;
    while (!after) {
      after = await c.query(stmt('after')).catch((e: { code?: string }) => {
        if (e.code !== '57P03' || performance.now() > deadline) throw e;
        return sleep(100).then(() => undefined);
      });
    }
    expect(after.rows).toEqual([{ m: `${tag}_after` }]);
    expect((await upstreamQueries(stack)).some((q) => q.includes(`${tag}_after`))).toBe(true);
    expect(stack.agent.store.health().writable).toBe(true);
  } finally {
    if (down) await outage.up();
    await c.end().catch(() => {});
  }

  // The events before and after the outage are in the chain; the refused statements were never allowed.
  const { statements } = await taggedStatements(stack.agent.store, tag);
  const allowed = statements.filter((e) => e.data.decision === 'allow');
  expect(allowed.map((e) => String(e.data.sql))).toEqual([stmt('before'), stmt('after')]);
  // Each has its result event too (written after the fact, off the statement's path: waited for here).
  for (let tries = 0; ; tries++) {
    const { resultOf } = await taggedStatements(stack.agent.store, tag);
    const results = allowed.map((e) => resultOf.get(e.seq)?.data);
    if (results.every(Boolean) || tries === 100) {
      expect(results).toEqual([expect.objectContaining({ rows: 1, sqlstate: '00000' }), expect.objectContaining({ rows: 1, sqlstate: '00000' })]);
      break;
    }
    await sleep(100);
  }
  expect(await stack.agent.store.verify()).toMatchObject({ ok: true });
}

describe('PostgreSQL state store (state.url) going away mid-session', () => {
  let statePg: LocalPostgres;
  let stateDb: string;
  let store: PgStore;
  let stack: DemoStack;

  beforeAll(async () => {
    // The state store lives on the worker's PostgreSQL; the demo stack's data database on its own.
    statePg = await workerPostgres();
    stateDb = `state_${randomBytes(4).toString('hex')}`;
    await statePg.exec(`CREATE DATABASE ${stateDb}`);
    store = await PgStore.open({ url: statePg.url(stateDb), agentId: 'resilience-pg', clock: Date.now });
    stack = await startDemoStack({ patients: 50, agent: { store } });
  }, 180_000);
  afterAll(async () => {
    await stack?.stop();
    await store?.close();
    await statePg?.exec(`DROP DATABASE IF EXISTS ${stateDb} WITH (FORCE)`);
  }, 60_000);

  it('refuses statements with 57P03 while the state database is unreachable and serves the same session when it is back', async () => {
    await refuseWhileDownThenRecover(stack, {
      // The store's database goes away: its connections are terminated and new ones refused.
      async down() {
        await statePg.exec(`ALTER DATABASE ${stateDb} WITH ALLOW_CONNECTIONS false`);
        await statePg.exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${stateDb}'`);
      },
      async up() {
        await statePg.exec(`ALTER DATABASE ${stateDb} WITH ALLOW_CONNECTIONS true`);
      },
    });
  }, 180_000);
});

describe('embedded JSONL store going away mid-session', () => {
  let dataDir: string;
  let store: JsonlStore;
  let stack: DemoStack;
  const auditDir = () => path.join(dataDir, 'audit');

  /** Root ignores permissions: chattr +i makes the files unwritable even through the open descriptor. */
  async function setWritable(writable: boolean): Promise<void> {
    const files = (await readdir(auditDir())).filter((n) => n !== 'recordings').map((n) => path.join(auditDir(), n));
    const r = isRoot ? await run('chattr', [writable ? '-i' : '+i', auditDir(), ...files]) : await run('chmod', [writable ? '755' : '500', auditDir(), ...files]);
    if (r.code !== 0) throw new Error(`could not change the audit directory: ${r.stderr}`);
  }

  beforeAll(async () => {
    requireUnwritableStorage();
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'hoop-resilience-'));
    store = await JsonlStore.open({ dataDir, agentId: 'resilience-jsonl', clock: Date.now });
    stack = await startDemoStack({ patients: 50, agent: { store } });
  }, 180_000);
  afterAll(async () => {
    if (isRoot) await run('chattr', ['-R', '-i', dataDir]);
    await stack?.stop();
    await store?.close();
    await rm(dataDir, { recursive: true, force: true });
  }, 60_000);

  it('refuses statements with 57P03 while the audit files are unwritable and serves the same session when they are writable again', async () => {
    await refuseWhileDownThenRecover(stack, { down: () => setWritable(false), up: () => setWritable(true) });
    // What an auditor checks, on the files themselves.
    const v = await auditVerify(dataDir);
    expect(v).toMatchObject({ code: 0, result: { ok: true } });
  }, 180_000);
});

describe('agent killed with SIGKILL mid-load', () => {
  const issuer = useIssuer();
  let db: LocalPostgres;
  // Every statement the server received (log_statement = all), in the server's own log.
  let serverLog = '';
  let tmp: string;
  let agent: ChildProcess | undefined;
  let tunnel: TunnelClient | undefined;
  let listener: LocalListener | undefined;

  beforeAll(async () => {
    db = await startPostgres({ settings: { log_statement: 'all' }, log: (l) => (serverLog += l) });
    await db.exec(`CREATE ROLE gw_agent LOGIN PASSWORD 'load-pw'`);
    await db.exec('CREATE DATABASE loaddb');
    tmp = await mkdtemp(path.join(os.tmpdir(), 'hoop-sigkill-'));
  }, 120_000);
  afterAll(async () => {
    await listener?.close().catch(() => {});
    await tunnel?.stop().catch(() => {});
    agent?.kill('SIGKILL');
    await db?.stop();
    await rm(tmp, { recursive: true, force: true });
  }, 60_000);

  it('loses no event of a statement that reached the database, and the chain verifies', async () => {
    const port = await freePort();
    const dataDir = path.join(tmp, 'agent-data');
    const config = {
      listen: `127.0.0.1:${port}`,
      dataDir,
      identity: { issuers: [{ issuer: issuer.current.issuer, audience: issuer.current.audience }] },
      connections: { 'load-db': { postgres: { host: db.host, port: db.port, database: 'loaddb', user: 'gw_agent', passwordEnv: 'LOAD_DB_PASSWORD' }, access: [{ groups: ['data-eng'] }] } },
    };
    const configFile = path.join(tmp, 'hoop-agent.yaml');
    await writeFile(configFile, JSON.stringify(config)); // JSON is YAML
    // The agent as its own process, as it runs in production.
    const proc = spawn(process.execPath, ['--import', 'tsx', 'agent/src/main.ts', '--config', configFile], {
      cwd: ROOT,
      env: { ...process.env, LOAD_DB_PASSWORD: 'load-pw', HOOP_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    agent = proc;
    let agentErr = '';
    proc.stderr!.on('data', (d) => (agentErr += d));
    const exited = new Promise<NodeJS.Signals | null>((resolve) => proc.once('exit', (_code, sig) => resolve(sig)));
    for (let ready = false; !ready; ) {
      if (proc.exitCode !== null) throw new Error(`agent exited at start: ${agentErr}`);
      ready = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false);
      if (!ready) await sleep(100);
    }

    tunnel = new TunnelClient({
      agentUrl: `ws://127.0.0.1:${port}`,
      connection: 'load-db',
      getToken: () => issuer.current.clientCredentialsToken(DEMO_CLIENT.id, DEMO_CLIENT.secret),
    });
    await tunnel.start();
    listener = await startLocalListener(tunnel);
    const lst = listener;

    // Eight sessions, each sending numbered statements back to back; SIGKILL once 600 have completed.
    const CLIENTS = 8;
    const KILL_AFTER = 600;
    let completed = 0;
    const loops = Array.from({ length: CLIENTS }, async (_, k) => {
      const c = new pg.Client({ host: lst.host, port: lst.port, user: 'noop', database: 'load-db' });
      c.on('error', () => {});
      await c.connect();
      try {
        for (let i = 0; ; i++) {
          await c.query(`SELECT 'load_${k}_${i}' AS m`);
          if (++completed === KILL_AFTER) proc.kill('SIGKILL');
        }
      } catch {
        // The agent is gone: this session ends here.
      } finally {
        await c.end().catch(() => {});
      }
    });
    await Promise.all(loops);
    expect(await exited).toBe('SIGKILL');
    expect(completed).toBeGreaterThanOrEqual(KILL_AFTER);

    // The server's log up to this point: a statement sent directly afterwards marks its end.
    const sentinel = `sentinel_${randomBytes(4).toString('hex')}`;
    await db.exec(`SELECT '${sentinel}'`, 'loaddb');
    for (const end = performance.now() + 30_000; !serverLog.includes(sentinel); ) {
      if (performance.now() > end) throw new Error('the sentinel statement never reached the server log');
      await sleep(50);
    }
    const received = new Set([...serverLog.matchAll(/statement: SELECT '(load_\d+_\d+)' AS m/g)].map((m) => m[1]));
    expect(received.size).toBeGreaterThanOrEqual(KILL_AFTER);

    // The chain as the killed agent left it: every complete line, in segment order.
    const auditDir = path.join(dataDir, 'audit');
    const segs = (await readdir(auditDir)).filter((n) => /\.\d{12}\.jsonl$/.test(n)).sort();
    expect(segs.length).toBeGreaterThan(0);
    const lines: string[] = [];
    for (const s of segs) {
      const text = await readFile(path.join(auditDir, s), 'utf8');
      lines.push(...text.slice(0, text.lastIndexOf('\n') + 1).split('\n').filter(Boolean));
    }
    const audited = new Set(
      lines
        .map((l) => JSON.parse(l) as AuditEvent)
        .filter((e) => e.type === 'statement' && e.data.decision === 'allow')
        .map((e) => /SELECT '(load_\d+_\d+)' AS m/.exec(String(e.data.sql))?.[1])
        .filter((m): m is string => m !== undefined),
    );
    expect([...received].filter((m) => !audited.has(m))).toEqual([]);
    expect(await verifyChain(lines)).toMatchObject({ ok: true, events: lines.length });

    // A restarted agent takes the chain over (stale lock, torn tail cut) and the auditor's check passes.
    const agentId = segs[0].replace(/\.\d{12}\.jsonl$/, '');
    const reopened = await JsonlStore.open({ dataDir, agentId, clock: Date.now });
    try {
      expect(await reopened.verify()).toMatchObject({ ok: true });
    } finally {
      await reopened.close();
    }
    const v = await auditVerify(dataDir);
    expect(v).toMatchObject({ code: 0, result: { ok: true } });
  }, 240_000);
});
