// `hoopctl audit verify PATH`: check the hash chain of an agent's audit trail (its data directory, its
// audit/ folder, or an exported JSONL file). Exit 0 intact, 1 broken, with the first broken seq.
// `hoopctl audit export`: stream the agent's audit events (reviewers only) as JSON Lines, which verify
// offline like the agent's own files, or CSV, for a SIEM or long-term retention.
import { createWriteStream } from 'node:fs';
import { readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { once } from 'node:events';
import path from 'node:path';
import type { Writable } from 'node:stream';
import type { Command } from 'commander';
import { verifyChain } from '../../../shared/audit/verify.js';
import { ExitCode, UserError } from '../errors.js';
import type { Output } from '../output.js';
import { getStream } from '../services/agent-api.js';
import { agentAndToken } from './sessions.js';

interface ExportOptions {
  agent?: string;
  token?: string;
  since?: string;
  until?: string;
  format: string;
  output?: string;
}

export function registerAudit(program: Command, run: (fn: (out: Output) => Promise<void>) => Promise<void>): void {
  const audit = program.command('audit').description('check and export the tamper-evident audit trail');
  audit
    .command('verify')
    .argument('<path>', "an agent's dataDir, its audit/ folder, or a JSONL export")
    .description('verify the hash chain: any edited, deleted, inserted or reordered event is reported')
    .option('--partial', 'the file is an export that starts mid-chain (--since): check every link from its first event on')
    .addHelpText('after', '\nExamples:\n  $ hoopctl audit verify /var/lib/hoop-agent\n  $ hoopctl audit verify export-2026-11.jsonl --json')
    .action((p: string, opts: { partial?: boolean }) => run((out) => verify(p, Boolean(opts.partial), out)));
  audit
    .command('export')
    .description('export audit events for a SIEM or long-term retention (reviewers only)')
    .option('--since <time>', 'events at or after: ISO date/time (2026-11-01, 2026-11-01T08:00:00Z) or a duration back from now (24h, 7d)')
    .option('--until <time>', 'events before: same forms as --since')
    .option('--format <format>', 'jsonl (verifiable with `hoopctl audit verify`) | csv', 'jsonl')
    .option('-o, --output <file>', 'write to this file instead of stdout')
    .option('--agent <url>', 'agent URL (env HOOPCTL_AGENT; default: the one `hoopctl login` remembered)')
    .option('--token <token>', 'access token (env HOOPCTL_TOKEN; default: the stored login)')
    .addHelpText('after', '\nExamples:\n  $ hoopctl audit export --since 2026-11-01 --format jsonl -o audit-2026-11.jsonl\n  $ hoopctl audit export --since 24h --format csv > last-day.csv')
    .action((opts: ExportOptions) => run((out) => exportEvents(opts, out)));
}

async function verify(p: string, partial: boolean, out: Output): Promise<void> {
  const files = await chainFiles(p);
  const lines: string[] = [];
  for (const f of files) for (const l of (await readFile(f, 'utf8')).split('\n')) if (l) lines.push(l);
  // A partial export's first event links to one that is not in the file: its prev is taken on trust.
  const r = await verifyChain(lines, partial ? { from: 0 } : {});
  const first = partial && lines.length ? ` (partial: from seq ${seqOf(lines[0])})` : '';
  // With --json a broken chain is the one error document (the exit code and message carry the seq).
  if (r.ok || !out.json) {
    out.result({ ...r, files }, () =>
      r.ok ? `audit trail intact: ${r.events} events in ${files.length} file(s)${first}` : `audit trail BROKEN at seq ${r.brokenAt}: ${r.reason}`,
    );
  }
  if (!r.ok) {
    const hint = !partial && lines.length && seqOf(lines[0]) !== 1 ? 'If this is an export made with --since, verify it with --partial.' : undefined;
    throw new UserError('CHAIN_BROKEN', `the audit chain is broken at seq ${r.brokenAt}: ${r.reason}`, { exitCode: ExitCode.Failure, hint });
  }
}

function seqOf(line: string): unknown {
  try {
    return (JSON.parse(line) as { seq?: unknown }).seq;
  } catch {
    return undefined;
  }
}

/** The segment files in chain order: a file as given, or every `*.jsonl` segment of an audit folder. */
async function chainFiles(p: string): Promise<string[]> {
  let st;
  try {
    st = await stat(p);
  } catch {
    throw new UserError('NOT_FOUND', `no such file or directory: ${p}`, { exitCode: ExitCode.Usage });
  }
  if (st.isFile()) return [p];
  const dir = (await readdir(p)).includes('audit') ? path.join(p, 'audit') : p;
  const segs = (await readdir(dir)).filter((f) => /\.\d{12}\.jsonl$/.test(f)).sort();
  if (segs.length === 0) throw new UserError('NOT_FOUND', `no audit segments in ${dir}`, { exitCode: ExitCode.Usage });
  return segs.map((f) => path.join(dir, f));
}

async function exportEvents(opts: ExportOptions, out: Output): Promise<void> {
  if (opts.format !== 'jsonl' && opts.format !== 'csv') throw new UserError('BAD_FORMAT', `--format: expected jsonl or csv, got ${opts.format}`, { exitCode: ExitCode.Usage });
  const now = Date.now();
  const since = opts.since === undefined ? undefined : exportTime('--since', opts.since, now);
  const until = opts.until === undefined ? undefined : exportTime('--until', opts.until, now);
  const { agent, token } = await agentAndToken(opts);
  const body = await getStream(agent, '/api/audit/export', token, { since, until, format: opts.format });
  if (!opts.output) {
    await copy(body, process.stdout).catch(failed);
    return;
  }
  // Written beside the target and renamed at the end: an interrupted export never looks complete.
  const tmp = `${opts.output}.partial-${process.pid}`;
  const file = createWriteStream(tmp, { mode: 0o600 });
  try {
    const { bytes, lines, first } = await copy(body, file);
    file.end();
    await once(file, 'close');
    await rename(tmp, opts.output);
    const events = opts.format === 'jsonl' ? lines : undefined;
    out.result({ file: opts.output, format: opts.format, bytes, events, since, until }, () =>
      `wrote ${events !== undefined ? `${events} events` : `${bytes} bytes`} to ${opts.output}${opts.format === 'jsonl' ? ` (check it with: hoopctl audit verify ${opts.output}${first && seqOf(first) !== 1 ? ' --partial' : ''})` : ''}`,
    );
  } catch (err) {
    file.destroy();
    await rm(tmp, { force: true });
    failed(err);
  }
}

function failed(err: unknown): never {
  if (err instanceof UserError) throw err;
  throw new UserError('EXPORT_FAILED', `the export did not complete: ${(err as Error).message}`, { hint: 'The output is incomplete; run it again.' });
}

/** Copies with backpressure; counts bytes and lines and keeps the first line (a JSON Lines export's first event). */
async function copy(body: AsyncIterable<Buffer>, to: Writable): Promise<{ bytes: number; lines: number; first?: string }> {
  let bytes = 0;
  let lines = 0;
  let head = '';
  for await (const chunk of body) {
    if (lines === 0 && head.length < 1 << 20) head += chunk.toString('utf8');
    bytes += chunk.length;
    for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) lines++;
    if (!to.write(chunk)) await once(to, 'drain');
  }
  return { bytes, lines, first: head.split('\n')[0] || undefined };
}

const UNIT_MS: Record<string, number> = { m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** An ISO date/time, or a duration back from now (30m, 24h, 7d, 2w), as an ISO time for the agent. */
export function exportTime(flag: string, v: string, now: number): string {
  const rel = /^(\d+)([mhdw])$/.exec(v);
  if (rel) return new Date(now - Number(rel[1]) * UNIT_MS[rel[2]]).toISOString();
  const t = /^\d{4}-\d{2}-\d{2}([T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/.test(v) ? Date.parse(v) : NaN;
  if (Number.isNaN(t)) throw new UserError('BAD_TIME', `${flag}: not a time: ${v}`, { hint: 'Use an ISO date or time (2026-11-01, 2026-11-01T08:00:00Z) or a duration such as 24h or 7d.', exitCode: ExitCode.Usage });
  return new Date(t).toISOString();
}
