#!/usr/bin/env node
// hoopctl: commands parse flags, services return data, presenters render it; this file wires them and is
// the one place that decides the exit code.
import { Command, CommanderError } from 'commander';
import { ExitCode } from './errors.js';
import { Output, reportError } from './output.js';
import { CLI_VERSION } from './version.js';
import { registerConnect } from './commands/connect.js';
import { registerDemo } from './commands/demo.js';

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
  registerConnect(program, run);
  registerDemo(program, run);
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

main(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.exitCode = reportError(err, false);
  },
);
