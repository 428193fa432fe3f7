// Where output goes. stdout holds only the result (text, or exactly one JSON document with --json);
// progress and logs go to stderr. The exit code is the truth.
import { BugError, Cancelled, ExitCode, UserError } from './errors.js';

export interface OutputOptions {
  json: boolean;
}

export class Output {
  constructor(readonly opts: OutputOptions) {}

  get json(): boolean {
    return this.opts.json;
  }

  /** Interactive screens only when a person is watching and did not ask for JSON. */
  get interactive(): boolean {
    return !this.opts.json && Boolean(process.stdout.isTTY) && !process.env.CI;
  }

  /** The command's result: one JSON document, or human text. */
  result(data: unknown, text: () => string): void {
    process.stdout.write(this.json ? JSON.stringify(data) + '\n' : text() + '\n');
  }

  /** A progress line for people and logs (stderr), never part of the result. */
  info(line: string): void {
    process.stderr.write(line + '\n');
  }

  /** A machine-readable event on stdout (JSON Lines) for long-running commands such as connect. */
  event(ev: Record<string, unknown>): void {
    if (this.json) process.stdout.write(JSON.stringify(ev) + '\n');
  }
}

/** Renders any error and returns the exit code. The only place that decides exit codes. */
export function reportError(err: unknown, json: boolean): ExitCode {
  if (err instanceof Cancelled) return ExitCode.Interrupted;
  let code: string;
  let message: string;
  let hint: string | undefined;
  let exit: ExitCode;
  if (err instanceof UserError) {
    ({ code, message, hint } = err);
    exit = err.exitCode;
  } else {
    code = 'BUG';
    message = err instanceof BugError ? err.message : `unexpected error: ${(err as Error)?.message ?? String(err)}`;
    hint = 'This is a bug in hoopctl; please report it with the command you ran. Set HOOPCTL_DEBUG=1 for details.';
    exit = ExitCode.Failure;
    if (process.env.HOOPCTL_DEBUG) process.stderr.write(String((err as Error)?.stack ?? err) + '\n');
  }
  if (hint && saysAlready(message, hint)) hint = undefined;
  if (json) process.stdout.write(JSON.stringify({ error: { code, message, hint } }) + '\n');
  else process.stderr.write(`error: ${message}\n${hint ? `  ${hint}\n` : ''}`);
  return exit;
}

/**
 * A hint that only repeats a command the message already names (the agent's "… Run `hoopctl login` to get
 * a new one." under our own "Run `hoopctl login`.") would tell the user the same thing twice.
 */
function saysAlready(message: string, hint: string): boolean {
  const commands = hint.match(/`[^`]+`/g);
  return commands !== null && commands.every((c) => message.includes(c));
}
