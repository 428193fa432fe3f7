// P11 row threshold on a 100,000-row result, with hoop-agent in its own process as it runs in production:
// the result pauses at approval.exportRowLimit (10,000) rows; while it waits PostgreSQL is left blocked
// writing to the agent (backpressure, wait_event ClientWrite) and the agent's RSS does not grow; approved,
// the rest flows; denied, the query is cancelled. psql reads through a cursor (FETCH_COUNT), so the
// client's memory stays bounded too. Memory is judged from /proc (VmRSS), against the result's size.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { directQuery, useStack } from '../harness/stack.js';
import { DEMO_CLIENT, DEMO_CONNECTION, DEMO_DATABASE } from '../../cli/src/demo/stack.js';
import { TunnelClient } from '../../cli/src/services/tunnel-client.js';
import { startLocalListener, type LocalListener } from '../../cli/src/services/local-listener.js';
import { freePort } from '../../shared/net.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const ROWS = 100_000;
const LIMIT = 10_000; // approval.exportRowLimit's default
const PAD = 640; // bytes of text per row (20 md5 digests): the result is ~65 MB

const stack = useStack({ patients: 20 });
let agent: ChildProcess;
let httpUrl: string;
let tmp: string;
let tunnel: TunnelClient;
let listener: LocalListener;
let resultBytes: number;

beforeAll(async () => {
  const s = stack.get();
  await directQuery(s, `CREATE TABLE big AS SELECT g, repeat(md5(g::text), ${PAD / 32}) AS pad FROM generate_series(1, ${ROWS}) g; GRANT SELECT ON big TO gw_agent`);
  resultBytes = Number((await directQuery<{ n: string }>(s, 'SELECT sum(length(pad) + length(g::text))::bigint AS n FROM big'))[0].n);
  tmp = await mkdtemp(path.join(os.tmpdir(), 'hoop-rows-'));
  const port = await freePort();
  httpUrl = `http://127.0.0.1:${port}`;
  const config = {
    listen: `127.0.0.1:${port}`,
    dataDir: path.join(tmp, 'data'),
    identity: { issuers: [{ issuer: s.issuer.issuer, audience: s.issuer.audience }] },
    reviewers: { groups: ['compliance'] },
    connections: {
      [DEMO_CONNECTION]: {
        postgres: { host: s.pg.host, port: s.pg.port, database: DEMO_DATABASE, user: 'gw_agent', passwordEnv: 'HOOP_DB_PASSWORD' },
        access: [{ groups: ['data-eng'] }, { groups: ['compliance'] }],
        approval: { approvers: { groups: ['compliance'] } }, // exportRowLimit: the default
      },
    },
  };
  const file = path.join(tmp, 'hoop-agent.yaml');
  await writeFile(file, JSON.stringify(config));
  agent = spawn(process.execPath, ['--import', 'tsx', 'agent/src/main.ts', '--config', file], {
    cwd: ROOT,
    env: { ...process.env, HOOP_DB_PASSWORD: s.agentDbPassword, HOOP_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  agent.stderr!.on('data', (d) => (err += d));
  for (let ready = false; !ready; ) {
    if (agent.exitCode !== null) throw new Error(`agent exited at start: ${err}`);
    ready = await fetch(`${httpUrl}/healthz`).then((r) => r.ok, () => false);
    if (!ready) await sleep(100);
  }
  tunnel = new TunnelClient({ agentUrl: `ws://127.0.0.1:${port}`, connection: DEMO_CONNECTION, getToken: () => s.issuer.clientCredentialsToken(DEMO_CLIENT.id, DEMO_CLIENT.secret) });
  await tunnel.start();
  tunnel.keepAlive();
  listener = await startLocalListener(tunnel, 0);
}, 180_000);

afterAll(async () => {
  await listener?.close().catch(() => {});
  await tunnel?.stop().catch(() => {});
  if (agent && agent.exitCode === null) {
    agent.kill('SIGTERM');
    await new Promise((r) => agent.once('exit', r));
  }
  if (tmp) await rm(tmp, { recursive: true, force: true });
}, 60_000);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** VmRSS of a process, bytes. */
async function rss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

/** Samples a process's RSS until stopped; the peak. */
function sampler(pid: number): { stop(): Promise<number> } {
  let peak = 0;
  let on = true;
  const loop = (async () => {
    while (on) {
      peak = Math.max(peak, await rss(pid).catch(() => 0));
      await sleep(20);
    }
  })();
  return {
    async stop() {
      on = false;
      await loop;
      return peak;
    },
  };
}

/** psql through the tunnel, reading with a cursor; stdout is counted as it streams (never kept whole). */
function psqlStream(sql: string, extra: string[] = []) {
  const p = spawn('psql', [`host=${listener.host} port=${listener.port} user=noop dbname=demo-db`, '-X', '-At', ...extra, '-c', sql], {
    env: { ...process.env, PGPASSWORD: '' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let lines = 0;
  let first = '';
  let stderr = '';
  p.stdout!.on('data', (d: Buffer) => {
    if (!first.includes('\n') && first.length < 4096) first += d.toString('utf8', 0, Math.min(d.length, 4096));
    for (let i = d.indexOf(10); i >= 0; i = d.indexOf(10, i + 1)) lines++;
  });
  p.stderr!.on('data', (d) => (stderr += d));
  const done = new Promise<{ code: number | null; lines: number; first: string; stderr: string }>((resolve) =>
    p.on('close', (code) => resolve({ code, lines, first: first.split('\n')[0], stderr })),
  );
  return { pid: p.pid!, done };
}

/** Dave (compliance) through the device flow: only people approve. */
async function approverToken(): Promise<string> {
  return (await stack.get().issuer.mintDeviceFlowToken('dave@clinic.example')).accessToken;
}

/** The pending approval of the statement marked `marker` (what approvers see: its SQL). */
async function nextPending(marker: string): Promise<{ id: string; rule?: string; rowsSoFar?: number; sql: string }> {
  const token = await approverToken();
  for (let i = 0; i < 1200; i++) {
    const res = await fetch(`${httpUrl}/api/approvals?status=pending`, { headers: { authorization: `Bearer ${token}` } });
    const body = (await res.json()) as { approvals: { id: string; rule?: string; rowsSoFar?: number; sql: string }[] };
    const mine = body.approvals.find((a) => a.sql.includes(marker));
    if (mine) return mine;
    await sleep(50);
  }
  throw new Error('no approval request appeared');
}

async function decide(id: string, verdict: 'approve' | 'deny'): Promise<void> {
  const res = await fetch(`${httpUrl}/api/approvals/${id}/${verdict}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${await approverToken()}`, 'content-type': 'application/json' },
    body: JSON.stringify({ reason: `${verdict} by the test` }),
  });
  expect(res.status).toBe(200);
}

/** The backend running `marker`'s query, as PostgreSQL reports it. */
async function backend(marker: string): Promise<{ state: string; wait_event: string | null } | undefined> {
  const rows = await directQuery<{ state: string; wait_event: string | null }>(
    stack.get(),
    'SELECT state, wait_event FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()',
    [`%${marker}%`],
  );
  return rows[0];
}

/** Audit events of the agent's embedded store (JSON Lines segments in its data directory). */
async function auditEvents(): Promise<{ type: string; seq: number; data: Record<string, any> }[]> {
  const dir = path.join(tmp, 'data');
  const out: { type: string; seq: number; data: Record<string, any> }[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.name.endsWith('.jsonl')) for (const l of (await readFile(p, 'utf8')).split('\n')) if (l.startsWith('{')) out.push(JSON.parse(l));
    }
  };
  await walk(dir);
  return out.filter((e) => typeof e.type === 'string');
}

describe('a 100,000-row result paused at 10,000 rows', { timeout: 240_000 }, () => {
  it('while it waits, PostgreSQL is blocked writing and the agent stays flat; approved, all rows arrive; client and agent memory stay far below the result', async () => {
    const pid = agent.pid!;
    // warm the agent up on the same path (a paused and approved cursor) before taking its baseline
    const warm = psqlStream('SELECT g, pad FROM big /* warm */ WHERE g <= 20000', ['-v', 'FETCH_COUNT=1000', '-o', '/dev/null']);
    await decide((await nextPending('warm')).id, 'approve');
    expect((await warm.done).code).toBe(0);
    const base = await rss(pid);

    const agentPeak = sampler(pid);
    const run = psqlStream('SELECT g, pad FROM big /* big-approve */ ORDER BY g', ['-v', 'FETCH_COUNT=1000']);
    const clientPeak = sampler(run.pid);
    const pending = await nextPending('big-approve'); // approvers see the cursor's query, not psql's FETCH
    expect(pending).toMatchObject({ rule: 'P11.rows', rowsSoFar: LIMIT });
    await sleep(500); // paused: nothing should move
    const duringPause = await rss(pid);
    await decide(pending.id, 'approve');
    const r = await run.done;
    const peak = await agentPeak.stop();
    const clientMax = await clientPeak.stop();

    expect(r.code, r.stderr).toBe(0);
    expect(r.lines).toBe(ROWS);
    expect(r.first).toBe(`1|${(await directQuery<{ pad: string }>(stack.get(), 'SELECT pad FROM big WHERE g = 1'))[0].pad}`);
    expect(r.stderr).toContain(`result paused after ${LIMIT} rows for approval ${pending.id}`);
    // bounded: growth while paused ~nothing, and well under the result's size while it streams
    expect(duringPause - base).toBeLessThan(resultBytes / 20);
    expect(peak - base).toBeLessThan(resultBytes / 3);
    expect(clientMax).toBeLessThan(resultBytes / 2);
    console.log(`result ${(resultBytes / 1e6).toFixed(1)} MB; agent RSS base ${(base / 1e6).toFixed(1)} MB, +${((duringPause - base) / 1e6).toFixed(1)} MB paused, +${((peak - base) / 1e6).toFixed(1)} MB peak; psql peak ${(clientMax / 1e6).toFixed(1)} MB`);
  });

  it('denied: PostgreSQL was left blocked on a plain SELECT, the query is cancelled, psql gets the error, the audit keeps 10,000 rows delivered', async () => {
    const pid = agent.pid!;
    const base = await rss(pid);
    const run = psqlStream('SELECT g, pad FROM big /* big-deny */', ['-o', '/dev/null']);
    const pending = await nextPending('big-deny');
    expect(pending.rowsSoFar).toBe(LIMIT);
    // backpressure, judged by the server: its backend is blocked writing the rest to the agent
    let b = await backend('big-deny');
    for (let i = 0; i < 100 && b?.wait_event !== 'ClientWrite'; i++) (await sleep(50), (b = await backend('big-deny')));
    expect(b).toMatchObject({ state: 'active', wait_event: 'ClientWrite' });
    const paused = await rss(pid);
    await decide(pending.id, 'deny');
    const r = await run.done;
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('P11.rows');
    expect(r.stderr).toContain(`stopped after ${LIMIT} rows`);
    expect(paused - base).toBeLessThan(resultBytes / 20);
    // cancelled at the server
    for (let i = 0; i < 100 && (await backend('big-deny'))?.state === 'active'; i++) await sleep(50);
    expect((await backend('big-deny'))?.state).not.toBe('active');
    // the audit: the rows the client got, and why the rest did not come
    let res: Record<string, any> | undefined;
    for (let i = 0; i < 100 && !res; i++) {
      const events = await auditEvents();
      const st = events.find((e) => e.type === 'statement' && String(e.data.sql).includes('big-deny'));
      res = st && events.find((e) => e.type === 'statement_result' && e.data.statementSeq === st.seq)?.data;
      if (!res) await sleep(100);
    }
    expect(res).toMatchObject({ rows: LIMIT });
    expect(res!.note).toContain(`stopped after ${LIMIT} rows`);
    expect(res!.note).toContain('denied');
  });
});
