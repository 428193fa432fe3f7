// `hoopctl audit verify PATH`: check the hash chain of an agent's audit trail (its data directory, its
// audit/ folder, or an exported JSONL file), then hold it against the signed checkpoints found (the
// store's, a witness directory's, --checkpoint files): a tail cut off or a history re-hashed shows there,
// and the events after the last checkpoint are counted (only the chain protects those). Exit 0 intact,
// 1 broken (first broken seq, or the checkpoint that disagrees), 2 usage.
// `hoopctl audit export`: stream the agent's audit events (reviewers only) as JSON Lines, which verify
// offline like the agent's own files, or CSV, for a SIEM or long-term retention.
import { createWriteStream } from 'node:fs';
import { readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { once } from 'node:events';
import path from 'node:path';
import type { Writable } from 'node:stream';
import type { Command } from 'commander';
import { verifyChain } from '../../../shared/audit/verify.js';
import { checkAgainstCheckpoints, type AgainstCheckpoints } from '../../../shared/audit/against-checkpoints.js';
import { findCheckpoints, loadKeys } from '../services/audit-keys.js';
import { ExitCode, UserError } from '../errors.js';
import type { Output } from '../output.js';
import { getStream } from '../services/agent-api.js';
import { agentAndToken } from './sessions.js';
import { enumFlag, timeFlag } from '../flags.js';

const FORMATS = ['jsonl', 'csv'] as const;

interface VerifyOptions {
  partial?: boolean;
  checkpoint?: string[];
  witness?: string;
  key?: string;
  fingerprint?: string;
}

interface ExportOptions {
  agent?: string;
  token?: string;
  since?: string;
  until?: string;
  format: (typeof FORMATS)[number];
  output?: string;
}

export function registerAudit(program: Command, run: (fn: (out: Output) => Promise<void>) => Promise<void>): void {
  const audit = program.command('audit').description('check and export the tamper-evident audit trail');
  audit
    .command('verify')
    .argument('<path>', "an agent's dataDir, its audit/ folder, or a JSONL export")
    .description('verify the hash chain: any edited, deleted, inserted or reordered event is reported')
    .option('--partial', 'the file is an export that starts mid-chain (--since): check every link from its first event on')
    .option('--checkpoint <file...>', 'a signed checkpoint to hold the chain against (besides those in the store)')
    .option('--witness <dir>', "a witness directory of the agent's checkpoints")
    .option('--key <file>', "the agent's signing keys: its /api/audit/key document, key history, or verifier key lines")
    .option('--fingerprint <fp>', 'accept only the signing key with this fingerprint (sha256:…)')
    .addHelpText(
      'after',
      '\nExamples:\n  $ hoopctl audit verify /var/lib/hoop-agent\n  $ hoopctl audit verify /var/lib/hoop-agent --witness /mnt/worm/hoop --fingerprint sha256:3f…\n  $ hoopctl audit verify export-2026-11.jsonl --checkpoint cp.note --key agent-key.json --json',
    )
    .action((p: string, opts: VerifyOptions) => run((out) => verify(p, opts, out)));
  audit
    .command('export')
    .description('export audit events for a SIEM or long-term retention (reviewers only)')
    .option('--since <time>', 'events at or after: ISO date/time (2026-11-01, 2026-11-01T08:00:00Z) or a duration back from now (24h, 7d)', timeFlag('--since'))
    .option('--until <time>', 'events before: same forms as --since', timeFlag('--until'))
    .option('--format <format>', 'jsonl (verifiable with `hoopctl audit verify`) | csv', enumFlag('--format', FORMATS), 'jsonl' as const)
    .option('-o, --output <file>', 'write to this file instead of stdout')
    .option('--agent <url>', 'agent URL (env HOOPCTL_AGENT; default: the one `hoopctl login` remembered)')
    .option('--token <token>', 'access token (env HOOPCTL_TOKEN; default: the stored login)')
    .addHelpText('after', '\nExamples:\n  $ hoopctl audit export --since 2026-11-01 --format jsonl -o audit-2026-11.jsonl\n  $ hoopctl audit export --since 24h --format csv > last-day.csv')
    .action((opts: ExportOptions) => run((out) => exportEvents(opts, out)));
}

async function verify(p: string, opts: VerifyOptions, out: Output): Promise<void> {
  const partial = Boolean(opts.partial);
  const files = await chainFiles(p);
  const lines: string[] = [];
  for (const f of files) for (const l of (await readFile(f, 'utf8')).split('\n')) if (l) lines.push(l);
  // A partial export's first event links to one that is not in the file: its prev is taken on trust.
  const r = await verifyChain(lines, partial ? { from: 0 } : {});
  const first = partial && lines.length ? ` (partial: from seq ${seqOf(lines[0])})` : '';
  const cps = r.ok && !partial ? await againstCheckpoints(p, files, lines, opts) : undefined;
  // A broken chain is said once, as the error (stderr, or the one --json document) with its exit code;
  // stdout then holds no result.
  if (r.ok && !cps?.problems.length) {
    out.result({ ...r, files, ...(cps && { checkpoints: { verified: cps.checked, chains: cps.chains, problems: cps.problems } }) }, () =>
      [`audit trail intact: ${r.events} events in ${files.length} file(s)${first}`, ...checkpointLines(cps, partial)].join('\n'),
    );
  }
  if (!r.ok) {
    const hint = !partial && lines.length && seqOf(lines[0]) !== 1 ? 'If this is an export made with --since, verify it with --partial.' : undefined;
    throw new UserError('CHAIN_BROKEN', `the audit chain is broken at seq ${r.brokenAt}: ${r.reason}`, { exitCode: ExitCode.Failure, hint });
  }
  if (cps?.problems.length) {
    const truncated = cps.problems.some((l) => l.startsWith('truncated'));
    throw new UserError(truncated ? 'CHAIN_TRUNCATED' : 'CHECKPOINT_MISMATCH', cps.problems.join('; '), { exitCode: ExitCode.Failure });
  }
}

/** The chain against every signed checkpoint found; undefined when there is none and no key either. */
async function againstCheckpoints(p: string, files: string[], lines: string[], opts: VerifyOptions): Promise<AgainstCheckpoints | undefined> {
  const isFile = files.length === 1 && files[0] === p;
  const auditDir = isFile ? undefined : path.dirname(files[0]);
  const dataDir = auditDir && path.basename(auditDir) === 'audit' ? path.dirname(auditDir) : auditDir;
  const notes = await findCheckpoints({ auditDir, witness: opts.witness, files: opts.checkpoint });
  const keys = await loadKeys({ key: opts.key, fingerprint: opts.fingerprint, dataDir });
  if (!notes.length) {
    if (opts.witness || opts.checkpoint?.length) throw new UserError('NO_CHECKPOINT', 'no signed checkpoint found where you pointed', { exitCode: ExitCode.Usage });
    return undefined;
  }
  if (!keys) {
    throw new UserError('NO_KEY', `found ${notes.length} signed checkpoint(s) but no key to check them with`, {
      exitCode: ExitCode.Usage,
      hint: "Pass --key (the agent's GET /api/audit/key document) or verify the agent's data directory, which holds its key history.",
    });
  }
  return checkAgainstCheckpoints(lines, notes, keys.keys);
}

function checkpointLines(cps: AgainstCheckpoints | undefined, partial: boolean): string[] {
  if (partial) return ['signed checkpoints not checked: a partial export does not start at seq 1'];
  if (!cps) return ['no signed checkpoint found: events cut from the tail would not show (pass --witness or --checkpoint)'];
  const out = [`${cps.checked.length} signed checkpoint(s) verified`];
  for (const c of cps.chains) {
    out.push(
      c.signed
        ? `agent ${c.agentId}: the first ${c.signed} events match a signed checkpoint; ${c.unsigned} event(s) after it are only chain-protected`
        : `agent ${c.agentId}: no verified checkpoint covers its ${c.events} events; they are only chain-protected`,
    );
  }
  return out;
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
  const { since, until } = opts;
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
