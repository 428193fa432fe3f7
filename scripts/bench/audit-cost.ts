// The cost of auditing (issue 7): pgbench -S, 1 client, simple protocol, through two agents of the same
// build in the same run, one auditing as shipped and one started with HOOP_AGENT_BENCH_NO_AUDIT=1 (every
// append dropped, see agent/src/audit/bench-no-audit.ts). On a shared machine the load shifts within
// seconds, so the arms alternate in short slices (SLICE_SECONDS, the order flipped every pair) and the
// ratio is taken per pair of adjacent slices (audit on / audit off), then the median over all pairs.
import { pgbench, type Target } from './workloads.js';
import type { Service } from './procs.js';

export const AUDIT_COST_KEY = 'audit_cost';
/** Audit on must keep at least this share of audit-off throughput. */
export const AUDIT_COST_TARGET = 0.85;
const SLICE_SECONDS = 2;

export interface AuditArm {
  target: Target;
  agent: Service;
  cli: Service;
}

interface ArmSample {
  pair: number;
  tps: number;
  statements: number;
  agentCpuMs: number;
  cliCpuMs: number;
}

export interface AuditCostResult {
  key: string;
  title: string;
  target: number;
  ratio: number;
  ratios: number[];
  targetMet: boolean;
  arms: Record<'on' | 'off', { tps: number[]; median: number; agentCpuUsPerStmt: number; cliCpuUsPerStmt: number }>;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

export async function measureAuditCost(
  arms: Record<'on' | 'off', AuditArm>,
  o: { rounds: number; seconds: number; log: (s: string) => void },
): Promise<AuditCostResult> {
  const opts = { clients: 1, threads: 1, mode: 'simple' as const, seconds: SLICE_SECONDS };
  const samples: Record<'on' | 'off', ArmSample[]> = { on: [], off: [] };
  // Warm-up: JIT and the first tunnel stream of each agent; not recorded.
  for (const arm of ['on', 'off'] as const) await pgbench(arms[arm].target, { ...opts, seconds: 1 });
  // As much time per arm as one workload of the main table gets in all its rounds.
  const pairs = Math.max(1, Math.round((o.rounds * o.seconds) / SLICE_SECONDS));
  for (let pair = 0; pair < pairs; pair++) {
    const line: string[] = [];
    for (const arm of pair % 2 ? (['off', 'on'] as const) : (['on', 'off'] as const)) {
      const a = arms[arm];
      const before = [a.agent.cpuMs(), a.cli.cpuMs()];
      const m = await pgbench(a.target, opts);
      samples[arm].push({ pair, tps: m.tps, statements: m.units, agentCpuMs: a.agent.cpuMs() - before[0], cliCpuMs: a.cli.cpuMs() - before[1] });
      line.push(`audit ${arm} ${Math.round(m.tps)} tps`);
    }
    o.log(`pair ${pair + 1}/${pairs} ${AUDIT_COST_KEY.padEnd(20)} ${line.join(', ')}`);
  }
  const ratios = samples.on.map((s) => s.tps / samples.off.find((x) => x.pair === s.pair)!.tps);
  const ratio = median(ratios);
  const summary = (xs: ArmSample[]) => {
    const n = xs.reduce((t, s) => t + s.statements, 0);
    return {
      tps: xs.map((s) => s.tps),
      median: median(xs.map((s) => s.tps)),
      agentCpuUsPerStmt: (xs.reduce((t, s) => t + s.agentCpuMs, 0) * 1000) / n,
      cliCpuUsPerStmt: (xs.reduce((t, s) => t + s.cliCpuMs, 0) * 1000) / n,
    };
  };
  return {
    key: AUDIT_COST_KEY,
    title: `cost of audit: pgbench -S, 1 client, -M simple, through hoopctl, audit on vs audit off (${ratios.length} pairs of ${SLICE_SECONDS} s slices)`,
    target: AUDIT_COST_TARGET,
    ratio,
    ratios,
    targetMet: ratio >= AUDIT_COST_TARGET,
    arms: { on: summary(samples.on), off: summary(samples.off) },
  };
}

export function renderAuditCost(r: AuditCostResult): string {
  const f = (x: number) => Math.round(x).toLocaleString('en');
  const q = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))];
  const rows = [['audit', 'tps median [min–max]', 'on / off median [quartiles]', 'target', 'agent CPU', 'CLI CPU']];
  for (const arm of ['on', 'off'] as const) {
    const x = r.arms[arm];
    rows.push([
      arm,
      `${f(x.median)} [${f(Math.min(...x.tps))}–${f(Math.max(...x.tps))}]`,
      arm === 'on' ? `${r.ratio.toFixed(2)} [${q(r.ratios, 0.25).toFixed(2)} ${q(r.ratios, 0.75).toFixed(2)}]` : '',
      arm === 'on' ? `≥ ${r.target} ${r.targetMet ? 'met' : 'MISSED'}` : '',
      `${x.agentCpuUsPerStmt.toFixed(0)} µs/stmt`,
      `${x.cliCpuUsPerStmt.toFixed(0)} µs/stmt`,
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  return [r.title, ...rows.map((row) => '  ' + row.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd())].join('\n');
}
