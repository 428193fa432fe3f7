// `hoopctl evidence build|verify|attest`: one bundle per period that an auditor verifies offline.
//   build   reviewers; from the agent (default), --data-dir (an offline copy) or --store-url (PostgreSQL)
//   verify  the CLI's own copy of verify.mjs on a bundle (not the bundle's, which it also holds to the
//           manifest): exit 0 only when every check holds, 1 with one line per failure
//   attest  a reviewer's statement, appended by the agent to the chain, bound to the manifest's hash
import { createHash } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Command } from 'commander';
import { Attestation } from '../../../shared/api/audit.js';
import { VERIFY_MJS } from '../../../shared/evidence/verify-script.js';
import { ExitCode, UserError } from '../errors.js';
import type { Output } from '../output.js';
import { parseBody, postJson } from '../services/agent-api.js';
import { agentSource, dataDirSource, storeUrlSource } from '../services/evidence-source.js';
import { buildBundle } from '../services/evidence-build.js';
import { CLI_VERSION } from '../version.js';
import { timeFlag } from '../flags.js';
import { agentAndToken } from './sessions.js';

interface BuildOptions {
  from: string;
  to: string;
  connection?: string;
  output: string;
  dataDir?: string;
  storeUrl?: string;
  key?: string;
  signingKey?: string;
  previous?: string;
  agent?: string;
  token?: string;
}

interface VerifyOptions {
  key?: string;
  fingerprint?: string;
  previous?: string;
}

export function registerEvidence(program: Command, run: (fn: (out: Output) => Promise<void>) => Promise<void>): void {
  const ev = program.command('evidence').description('audit evidence bundles an auditor verifies offline');
  ev.command('build')
    .description('build the evidence bundle of a period (reviewers only)')
    .requiredOption('--from <time>', 'start of the period (inclusive): ISO date/time or a duration back (30d)', timeFlag('--from'))
    .requiredOption('--to <time>', 'end of the period (exclusive): same forms, or now', timeFlag('--to'))
    .option('--connection <name>', 'scope the report to one connection (events.jsonl keeps the whole chain of the period)')
    .requiredOption('-o, --output <dir>', 'the bundle directory (new or empty)')
    .option('--data-dir <dir>', "build from an agent's data directory instead of the agent")
    .option('--store-url <url>', 'build from a PostgreSQL state store instead of the agent (needs --key and --signing-key)')
    .option('--key <file>', "the agent's key history (GET /api/audit/key), for --store-url")
    .option('--signing-key <file>', "the agent's signing key file, to sign the manifest offline")
    .option('--previous <dir>', "the previous period's bundle, linked and proven consistent")
    .option('--agent <url>', 'agent URL (env HOOPCTL_AGENT)')
    .option('--token <token>', 'access token (env HOOPCTL_TOKEN)')
    .addHelpText('after', '\nExamples:\n  $ hoopctl evidence build --from 2026-11-01 --to 2026-12-01 -o evidence-2026-11\n  $ hoopctl evidence build --from 2026-11-01 --to 2026-12-01 --data-dir /backup/hoop-agent -o evidence-2026-11')
    .action((opts: BuildOptions) => run((out) => build(opts, out)));
  ev.command('verify')
    .argument('<dir>', 'the bundle')
    .description('verify a bundle: signature, file hashes, chain, checkpoints, figures (exit 0 only when all hold)')
    .option('--key <file>', "the agent's keys (its /api/audit/key document, or verifier key lines)")
    .option('--fingerprint <fp>', 'accept only the signing key with this fingerprint')
    .option('--previous <dir>', "the previous period's bundle")
    .action((dir: string, opts: VerifyOptions) => run((out) => verify(dir, opts, out)));
  ev.command('attest')
    .argument('<dir>', 'the bundle reviewed')
    .requiredOption('--statement <text>', 'what was reviewed and concluded')
    .option('--agent <url>', 'agent URL (env HOOPCTL_AGENT)')
    .option('--token <token>', 'access token (env HOOPCTL_TOKEN)')
    .description("record a reviewer's attestation on the audit chain, bound to the bundle's manifest (reviewers only)")
    .action((dir: string, opts: { statement: string; agent?: string; token?: string }) => run((out) => attest(dir, opts, out)));
}

async function build(o: BuildOptions, out: Output): Promise<void> {
  const { from, to } = o;
  if (from >= to) throw new UserError('BAD_PERIOD', `--from (${from}) must be before --to (${to})`, { exitCode: ExitCode.Usage });
  if (o.dataDir && o.storeUrl) throw new UserError('USAGE', 'pass --data-dir or --store-url, not both', { exitCode: ExitCode.Usage });
  const source = o.dataDir
    ? await dataDirSource(o.dataDir, o.signingKey)
    : o.storeUrl
      ? await storeUrlSource(o.storeUrl, o.key, o.signingKey)
      : await agentAndToken(o).then(({ agent, token }) => agentSource(agent, token));
  const started = performance.now();
  try {
    const r = await buildBundle({ from, to, connection: o.connection, out: o.output, previous: o.previous, source, versions: { cli: CLI_VERSION }, now: Date.now });
    const ms = Math.round(performance.now() - started);
    out.result({ dir: r.dir, manifestSha256: r.manifestSha256, events: r.events, ms }, () =>
      [`wrote ${r.dir}: ${r.events} events, manifest sha256 ${r.manifestSha256}`, `check it with: hoopctl evidence verify ${r.dir}   (or: cd ${r.dir} && node verify.mjs)`].join('\n'),
    );
  } finally {
    await source.close();
  }
}

interface BundleResult {
  ok: boolean;
  problems: string[];
  notes: string[];
  figures?: Record<string, unknown>;
}

/** The CLI's own verifier (the same text it writes into bundles), loaded once from a temp file. */
async function verifier(): Promise<{ verifyBundle(dir: string, o: VerifyOptions): BundleResult }> {
  const file = path.join(os.tmpdir(), `hoopctl-verify-${createHash('sha256').update(VERIFY_MJS).digest('hex').slice(0, 16)}.mjs`);
  // Written aside and renamed: another hoopctl importing the same file never reads half of it.
  const part = `${file}.${process.pid}`;
  await writeFile(part, VERIFY_MJS, { mode: 0o644 });
  await rename(part, file);
  return import(pathToFileURL(file).href) as Promise<{ verifyBundle(dir: string, o: VerifyOptions): BundleResult }>;
}

async function verify(dir: string, o: VerifyOptions, out: Output): Promise<void> {
  const manifest = await readFile(path.join(dir, 'MANIFEST.json')).catch(() => undefined);
  if (!manifest) throw new UserError('NOT_FOUND', `${dir} is not an evidence bundle (no MANIFEST.json)`, { exitCode: ExitCode.Usage });
  const r = (await verifier()).verifyBundle(dir, o);
  const own = await readFile(path.join(dir, 'verify.mjs'), 'utf8').catch(() => '');
  if (own !== VERIFY_MJS) r.notes.push("the bundle's verify.mjs differs from this hoopctl's (another version built it)");
  if (r.ok || !out.json) {
    out.result(r, () => [...r.notes.map((n) => `note: ${n}`), ...r.problems.map((p) => `FAIL ${p}`), r.ok ? `bundle verified: ${String(r.figures?.events)} events, every check holds` : `bundle NOT verified: ${r.problems.length} problem(s)`].join('\n'));
  }
  if (!r.ok) throw new UserError('BUNDLE_NOT_VERIFIED', r.problems.join('; '), { exitCode: ExitCode.Failure });
}

async function attest(dir: string, o: { statement: string; agent?: string; token?: string }, out: Output): Promise<void> {
  const manifest = await readFile(path.join(dir, 'MANIFEST.json')).catch(() => undefined);
  if (!manifest) throw new UserError('NOT_FOUND', `${dir} is not an evidence bundle (no MANIFEST.json)`, { exitCode: ExitCode.Usage });
  if (!o.statement.trim()) throw new UserError('USAGE', '--statement must say what was reviewed', { exitCode: ExitCode.Usage });
  const r = (await verifier()).verifyBundle(dir, {});
  if (!r.ok) throw new UserError('BUNDLE_NOT_VERIFIED', `not attesting a bundle that does not verify: ${r.problems.join('; ')}`);
  const manifestSha256 = createHash('sha256').update(manifest).digest('hex');
  const { agent, token } = await agentAndToken(o);
  const res = parseBody(Attestation, await postJson(agent, '/api/evidence/attest', token, { manifestSha256, statement: o.statement }), '/api/evidence/attest');
  out.result(res, () => `attestation recorded at seq ${res.seq}, bound to manifest ${manifestSha256}; the next bundle lists it in section I`);
}
