// The attack runner: load a corpus, start the product once, run every case with a fresh fixture and a
// per-case time limit, print a table by category prefix and tier, and end with `N passed, N failed`.
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { startAttackStack, type AttackStack } from './stack.js';
import { expandCases, runApprovalCase, runAuthCase, runProtocolCase, runSqlCase, runTunnelCase, type RunContext } from './cases.js';
import { prefixOf, type Case, type Corpus, type Verdict } from './judge.js';

export interface RunOptions {
  corpus: string;
  only?: string[];
  json?: string;
  mode: 'deny' | 'auto-approve';
  /** The connection's approval.mode (statement by default). */
  approvalMode?: 'statement' | 'transaction';
  gate: string[];
  caseTimeoutMs: number;
  profile: 'hostile-db' | 'least-privilege';
  /** Output lines (stdout by default). */
  out?: (line: string) => void;
  /** Progress lines (stderr by default). */
  progress?: (line: string) => void;
  /** Extra startAgent options (seam for tests); none by default. */
  agentOverrides?: Record<string, unknown>;
}

export interface RunSummary {
  verdicts: Verdict[];
  passed: number;
  failed: number;
  exitCode: number;
}

const LONG_CASES: Record<string, number> = { 'AU-022': 60_000, 'TU-006': 40_000, 'TU-004': 60_000, 'PR-032': 120_000, 'PR-017': 60_000, 'PR-026': 60_000 };

export function caseBudget(c: Case, base: number): number {
  return Math.max(base, LONG_CASES[c.id.split('/')[0]] ?? 0);
}

export async function runAttacks(opts: RunOptions): Promise<RunSummary> {
  const out = opts.out ?? ((l: string) => process.stdout.write(`${l}\n`));
  const progress = opts.progress ?? ((l: string) => process.stderr.write(`${l}\n`));
  const corpus = JSON.parse(await readFile(opts.corpus, 'utf8')) as Corpus;
  let cases = expandCases(corpus.cases);
  if (opts.only?.length) cases = cases.filter((c) => opts.only!.some((p) => c.id === p || c.id.startsWith(p.endsWith('-') || p.includes('-') ? p : `${p}-`) || prefixOf(c.id) === p));
  const verdicts: Verdict[] = [];
  const onRejection = (err: unknown) => progress(`(unhandled rejection during a case: ${String((err as Error)?.message ?? err).slice(0, 200)})`);
  process.on('unhandledRejection', onRejection);
  const schemaFile = path.join(path.dirname(opts.corpus), 'schema.sql');
  let stack: AttackStack | undefined;
  const t0 = Date.now();
  try {
    stack = await startAttackStack({
      schemaFile,
      maskedColumns: corpus.meta.fixture?.masked_columns ?? [],
      profile: opts.profile,
      agentOverrides: opts.agentOverrides,
      progress,
      mode: opts.mode,
      approvalMode: opts.approvalMode,
    });
    progress(`product up in ${Date.now() - t0} ms (fixture reset ${stack.fixture.lastResetMs} ms); ${cases.length} cases`);
    const core = corpus.meta.sensitive_values?.core ?? [];
    for (const c of cases) {
      const started = Date.now();
      let aborted = false;
      const ctx: RunContext = {
        stack,
        core,
        maskedColumns: corpus.meta.fixture?.masked_columns ?? [],
        mode: opts.mode,
        stepTimeoutMs: 10_000,
        aborted: () => aborted,
      };
      const budget = caseBudget(c, opts.caseTimeoutMs);
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          aborted = true;
          reject(new Error(`case timed out after ${budget} ms`));
        }, budget);
      });
      let v: Verdict;
      try {
        const run =
          c.kind === 'sql' ? runSqlCase(c, ctx)
          : c.kind === 'protocol' ? runProtocolCase(c, ctx)
          : c.kind === 'auth' ? runAuthCase(c, ctx)
          : c.kind === 'tunnel' ? runTunnelCase(c, ctx)
          : c.kind === 'approval' ? runApprovalCase(c, ctx)
          : Promise.resolve({ pass: false, observed: 'not-run', reason: `unknown case kind ${c.kind}`, gap: 'runner' as const, evidence: [] });
        run.catch(() => {});
        const p = await Promise.race([run, timeout]);
        v = { id: c.id, prefix: prefixOf(c.id), tier: c.tier, kind: c.kind, expect: c.expect, ...p, ms: Date.now() - started };
      } catch (err) {
        const msg = (err as Error).message ?? String(err);
        v = {
          id: c.id, prefix: prefixOf(c.id), tier: c.tier, kind: c.kind, expect: c.expect, pass: false,
          observed: /timed out/.test(msg) ? 'timeout' : 'runner-error', reason: msg.slice(0, 300),
          gap: /timed out/.test(msg) ? 'product' : 'runner', evidence: [String((err as Error).stack ?? msg).split('\n').slice(0, 4).join(' ')], ms: Date.now() - started,
        };
      } finally {
        clearTimeout(timer);
      }
      verdicts.push(v);
      out(`${v.pass ? 'PASS' : 'FAIL'} ${v.id.padEnd(11)} ${v.tier.padEnd(7)} ${v.kind.padEnd(9)} expect=${v.expect.padEnd(15)} observed=${v.observed.padEnd(12)} ${String(v.ms).padStart(6)}ms  ${v.reason}`);
      if (!v.pass) for (const e of v.evidence.slice(0, 8)) out(`       ${e.slice(0, 300)}`);
    }
  } catch (err) {
    progress(`runner crashed: ${(err as Error).stack ?? err}`);
    process.off('unhandledRejection', onRejection);
    await stack?.stop().catch(() => {});
    return { verdicts, passed: verdicts.filter((v) => v.pass).length, failed: verdicts.filter((v) => !v.pass).length, exitCode: 2 };
  }
  await stack.stop().catch(() => {});
  process.off('unhandledRejection', onRejection);

  // table by category prefix and tier
  const groups = new Map<string, { pass: number; fail: number }>();
  for (const v of verdicts) {
    const k = `${v.prefix}\t${v.tier}`;
    const g = groups.get(k) ?? { pass: 0, fail: 0 };
    if (v.pass) g.pass++;
    else g.fail++;
    groups.set(k, g);
  }
  out('');
  out('prefix  tier     passed  failed');
  for (const [k, g] of [...groups].sort()) {
    const [p, t] = k.split('\t');
    out(`${p.padEnd(7)} ${t.padEnd(8)} ${String(g.pass).padStart(6)}  ${String(g.fail).padStart(6)}`);
  }
  const passed = verdicts.filter((v) => v.pass).length;
  const failed = verdicts.length - passed;
  if (opts.json) await writeFile(opts.json, JSON.stringify({ corpus: opts.corpus, mode: opts.mode, profile: opts.profile, ms: Date.now() - t0, passed, failed, verdicts }, null, 2));
  const gated = verdicts.filter((v) => !v.pass && (v.tier === 'must' || v.tier === 'should') && opts.gate.includes(v.prefix));
  if (gated.length) progress(`gate ${opts.gate.join(',')}: ${gated.length} must/should failures (${gated.map((v) => v.id).join(' ')})`);
  out(`${passed} passed, ${failed} failed`);
  return { verdicts, passed, failed, exitCode: gated.length ? 1 : 0 };
}
