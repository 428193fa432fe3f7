// The purpose a session states (`--reason`, else HOOPCTL_REASON). The agent records it in every
// session_start and shows it to approvers; a connection with `requireReason: true` refuses a tunnel
// without one (in CI the agent builds a default from the job's token: workflow, run, commit).
import { ExitCode, UserError } from '../errors.js';
import type { Env } from './settings.js';

/** Same bound as the agent's (agent/src/identity/purpose.ts). */
const MAX_REASON_CHARS = 500;

export function statedReason(flag: string | undefined, env: Env): string | undefined {
  const text = (flag ?? env.HOOPCTL_REASON)?.trim();
  if (!text) return undefined;
  if (text.length > MAX_REASON_CHARS) {
    throw new UserError('BAD_REASON', `a reason is at most ${MAX_REASON_CHARS} characters (got ${text.length})`, { hint: 'State it in one line; put details in the ticket it names.', exitCode: ExitCode.Usage });
  }
  if (/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(text)) {
    throw new UserError('BAD_REASON', 'a reason is one line without control characters', { exitCode: ExitCode.Usage });
  }
  return text;
}
