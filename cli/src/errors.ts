// The CLI's error contract (modelled on Shopify's cli-kit): a UserError is something the user can fix and
// is shown as one line plus what to do next; a BugError is ours; Cancelled is a quiet Ctrl-C. One handler
// in main.ts turns them into text or one JSON document and the exit code scripts rely on.

/** Exit codes. Stable: scripts and CI branch on them. */
export const ExitCode = {
  Ok: 0,
  Failure: 1,
  Usage: 2, //        bad flags or config
  NotAuthenticated: 3, // no token, expired or rejected (401): run `hoopctl login`
  Forbidden: 4, //    identity not allowed on this connection (403)
  Unreachable: 5, //  the agent or issuer could not be reached
  Denied: 6, //       a held statement was denied or timed out
  Interrupted: 130,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

export class UserError extends Error {
  override readonly name = 'UserError';
  readonly code: string;
  readonly hint?: string;
  readonly exitCode: ExitCode;
  constructor(code: string, message: string, opts: { hint?: string; exitCode?: ExitCode } = {}) {
    super(message);
    this.code = code;
    this.hint = opts.hint;
    this.exitCode = opts.exitCode ?? ExitCode.Failure;
  }
}

export class BugError extends Error {
  override readonly name = 'BugError';
}

export class Cancelled extends Error {
  override readonly name = 'Cancelled';
}
