// Beyond throughput: how many idle sessions one `hoopctl connect` and one agent hold and what each costs
// in memory, and (optionally) whether the agent's memory stays flat under load over a long run.
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { rssBytes, type Service } from './procs.js';
import { openIdle, pgbench, type Target } from './workloads.js';

export interface IdleResult {
  path: string;
  sessions: number;
  opened: number;
  failed: number;
  firstError?: string;
  secondsToOpen: number;
  connectP50Ms: number;
  /** RSS added per open session, in bytes, for each measured process (agent, cli). */
  rssPerSession: Record<string, number>;
  rssBeforeMB: Record<string, number>;
  rssAfterMB: Record<string, number>;
}

const MB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Opens `n` sessions at once through `target`, holds them idle for a moment, reads RSS, closes them. */
export async function measureIdle(name: string, target: Target, procs: Record<string, Service>, n: number): Promise<IdleResult> {
  const rss = () => Object.fromEntries(Object.entries(procs).map(([k, s]) => [k, rssBytes(s.pid)]));
  const before = rss();
  const idle = await openIdle(target, n);
  await sleep(2000); // let buffers of the startup burst be released and the sessions settle
  const after = rss();
  idle.close();
  await sleep(1000);
  const per = Object.fromEntries(Object.keys(procs).map((k) => [k, idle.opened ? (after[k] - before[k]) / idle.opened : 0]));
  const mb = (r: Record<string, number>) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, Math.round(v / MB)]));
  return {
    path: name,
    sessions: n,
    opened: idle.opened,
    failed: idle.failed,
    firstError: idle.firstError,
    secondsToOpen: idle.seconds,
    connectP50Ms: idle.connectP50Ms,
    rssPerSession: per,
    rssBeforeMB: mb(before),
    rssAfterMB: mb(after),
  };
}

export function renderIdle(rs: IdleResult[]): string {
  const rows = [['path', 'open / asked', 'time to open all', 'connect p50', 'RSS per session', 'RSS before → with sessions']];
  for (const r of rs) {
    const per = Object.entries(r.rssPerSession).map(([k, v]) => `${k} ${(v / 1024).toFixed(0)} KiB`).join(', ');
    const rss = Object.keys(r.rssBeforeMB).map((k) => `${k} ${r.rssBeforeMB[k]} → ${r.rssAfterMB[k]} MB`).join(', ');
    rows.push([r.path, `${r.opened} / ${r.sessions}${r.failed ? ` (${r.failed} failed: ${r.firstError?.slice(0, 80)})` : ''}`, `${r.secondsToOpen.toFixed(2)} s`, `${r.connectP50Ms.toFixed(0)} ms`, per, rss]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  return [`${rs[0]?.sessions ?? 0} concurrent idle sessions through one tunnel (opened at once, held 2 s)`, ...rows.map((row) => '  ' + row.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd())].join('\n');
}

export interface SoakResult {
  seconds: number;
  statements: number;
  tps: number;
  /** Least-squares slope of the agent's RSS after its first minute of load, MB per minute. */
  rssSlopeMBPerMin: number;
  rssSlopeWholeRunMBPerMin: number;
  rssStartMB: number;
  rssEndMB: number;
  /** The agent's JS heap in use (its /metrics, nodejs_heap_size_used_bytes): what a leak in the code would grow. */
  heapSlopeMBPerMin?: number;
  heapStartMB?: number;
  heapEndMB?: number;
  auditBytesPerStatement: number;
}

/** The agent's JS heap in use, in MB, from its /metrics (undefined when it cannot be read). */
export async function agentHeapMB(agentUrl: string, token: string): Promise<number | undefined> {
  try {
    const res = await fetch(`${agentUrl}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    const m = /^nodejs_heap_size_used_bytes (\S+)$/m.exec(await res.text());
    return m ? Number(m[1]) / MB : undefined;
  } catch {
    return undefined;
  }
}

async function auditBytes(dataDir: string): Promise<number> {
  const dir = path.join(dataDir, 'audit');
  let total = 0;
  for (const f of await readdir(dir).catch(() => [] as string[])) total += (await stat(path.join(dir, f)).catch(() => ({ size: 0 }))).size;
  return total;
}

/** Least-squares slope of [minute, MB] samples. */
function slopeOf(xs: Array<[number, number]>): number {
  if (xs.length < 2) return 0;
  const mx = xs.reduce((a, s) => a + s[0], 0) / xs.length;
  const my = xs.reduce((a, s) => a + s[1], 0) / xs.length;
  return xs.reduce((a, s) => a + (s[0] - mx) * (s[1] - my), 0) / (xs.reduce((a, s) => a + (s[0] - mx) ** 2, 0) || 1);
}

/** pgbench -S, 4 clients, for `seconds` through hoopctl, sampling the agent's RSS every 5 s. */
export async function soak(target: Target, agent: Service, dataDir: string, seconds: number, heapMB?: () => Promise<number | undefined>): Promise<SoakResult> {
  const samples: Array<[number, number]> = [];
  const heap: Array<[number, number]> = [];
  const t0 = Date.now();
  const sample = () => {
    const at = (Date.now() - t0) / 60_000;
    samples.push([at, rssBytes(agent.pid) / MB]);
    void heapMB?.().then((mb) => mb !== undefined && heap.push([at, mb]));
  };
  sample();
  const timer = setInterval(sample, 5000);
  const bytes0 = await auditBytes(dataDir);
  try {
    const m = await pgbench(target, { clients: 4, threads: 2, mode: 'simple', seconds });
    sample();
    const bytes1 = await auditBytes(dataDir);
    const n = samples.length;
    // A cold agent grows its heap and JIT code in its first minute: the slope is taken after that
    // (after the first half of a shorter run), the growth a long run would keep adding.
    const warm = Math.min(1, seconds / 120);
    return {
      seconds,
      statements: m.units,
      tps: m.tps,
      rssSlopeMBPerMin: slopeOf(samples.filter((x) => x[0] >= warm)),
      rssSlopeWholeRunMBPerMin: slopeOf(samples),
      rssStartMB: samples[0][1],
      rssEndMB: samples[n - 1][1],
      ...(heap.length > 1 ? { heapSlopeMBPerMin: slopeOf(heap.filter((x) => x[0] >= warm)), heapStartMB: heap[0][1], heapEndMB: heap[heap.length - 1][1] } : {}),
      auditBytesPerStatement: (bytes1 - bytes0) / m.units,
    };
  } finally {
    clearInterval(timer);
  }
}

export function renderSoak(r: SoakResult): string {
  return [
    `soak: pgbench -S, 4 clients, -M simple, ${r.seconds} s through hoopctl`,
    `  ${Math.round(r.tps).toLocaleString('en')} tps, ${r.statements.toLocaleString('en')} statements; agent RSS ${r.rssStartMB.toFixed(0)} → ${r.rssEndMB.toFixed(0)} MB, ` +
      `slope ${r.rssSlopeMBPerMin.toFixed(2)} MB/min after the first minute (target ≤ 0.5; ${r.rssSlopeWholeRunMBPerMin.toFixed(2)} over the whole run); audit ${r.auditBytesPerStatement.toFixed(0)} bytes per statement`,
    ...(r.heapSlopeMBPerMin !== undefined
      ? [`  JS heap in use ${r.heapStartMB!.toFixed(1)} → ${r.heapEndMB!.toFixed(1)} MB, slope ${r.heapSlopeMBPerMin.toFixed(2)} MB/min after the first minute`]
      : []),
  ].join('\n');
}
