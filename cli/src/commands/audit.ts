// `hoopctl audit verify PATH`: check the hash chain of an agent's audit trail (its data directory, its
// audit/ folder, or an exported JSONL file). Exit 0 intact, 1 broken, with the first broken seq.
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import { verifyChain } from '../../../agent/src/audit/verify.js';
import { ExitCode, UserError } from '../errors.js';
import type { Output } from '../output.js';

export function registerAudit(program: Command, run: (fn: (out: Output) => Promise<void>) => Promise<void>): void {
  const audit = program.command('audit').description('check and export the tamper-evident audit trail');
  audit
    .command('verify')
    .argument('<path>', "an agent's dataDir, its audit/ folder, or a JSONL export")
    .description('verify the hash chain: any edited, deleted, inserted or reordered event is reported')
    .addHelpText('after', '\nExamples:\n  $ hoopctl audit verify /var/lib/hoop-agent\n  $ hoopctl audit verify export-2026-11.jsonl --json')
    .action((p: string) => run((out) => verify(p, out)));
}

async function verify(p: string, out: Output): Promise<void> {
  const files = await chainFiles(p);
  const lines: string[] = [];
  for (const f of files) for (const l of (await readFile(f, 'utf8')).split('\n')) if (l) lines.push(l);
  const r = await verifyChain(lines);
  out.result({ ...r, files }, () =>
    r.ok ? `audit trail intact: ${r.events} events in ${files.length} file(s)` : `audit trail BROKEN at seq ${r.brokenAt}: ${r.reason}`,
  );
  if (!r.ok) throw new UserError('CHAIN_BROKEN', `the audit chain is broken at seq ${r.brokenAt}: ${r.reason}`, { exitCode: ExitCode.Failure });
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
