// The stated purpose of a tunnel (issue 16, "Purpose"): why this identity reads PHI now. People give it
// with `hoopctl connect|exec --reason "…"` (env HOOPCTL_REASON); the CLI sends it in the upgrade's
// `X-Hoopctl-Reason` header, percent-encoded UTF-8. A CI job that states none gets one built from its
// verified workload token (repository, workflow, run, commit): what an auditor asks for, from claims the
// job cannot choose. A connection with `requireReason: true` refuses a tunnel that has neither.
import type { IncomingHttpHeaders } from 'node:http';

export const REASON_HEADER = 'x-hoopctl-reason';
/** Longest purpose kept: a sentence or a ticket reference, not a document. */
export const MAX_PURPOSE_CHARS = 500;

export class PurposeError extends Error {
  override readonly name = 'PurposeError';
}

/** The purpose the client stated, or undefined; PurposeError when the header is malformed. */
export function statedPurpose(headers: IncomingHttpHeaders): string | undefined {
  const raw = headers[REASON_HEADER];
  if (raw === undefined) return undefined;
  if (Array.isArray(raw)) throw new PurposeError('the reason header was sent more than once');
  let text: string;
  try {
    text = decodeURIComponent(raw);
  } catch {
    throw new PurposeError('the reason header is not percent-encoded UTF-8');
  }
  text = text.trim();
  if (!text) return undefined;
  if (text.length > MAX_PURPOSE_CHARS) throw new PurposeError(`a reason is at most ${MAX_PURPOSE_CHARS} characters`);
  // It is shown to approvers and written to the audit trail: no line breaks, no terminal control codes.
  if (/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(text)) throw new PurposeError('a reason cannot contain control characters or line breaks');
  return text;
}

/** "CI acme/etl workflow nightly run 1234 at 0123456789ab": from GitHub Actions or GitLab CI claims. */
export function ciPurpose(claims: Record<string, unknown>): string | undefined {
  const str = (k: string) => (typeof claims[k] === 'string' || typeof claims[k] === 'number' ? String(claims[k]).slice(0, 120) : undefined);
  const sha = str('sha')?.slice(0, 12);
  const repo = str('repository') ?? str('project_path');
  const run = str('run_id') ?? str('pipeline_id');
  const workflow = str('workflow') ?? str('ci_config_ref_uri');
  if (!run && !workflow) return undefined;
  const parts = ['CI', repo, workflow && `workflow ${workflow}`, run && `run ${run}`, sha && `at ${sha}`, str('event_name') && `(${str('event_name')})`];
  return parts.filter(Boolean).join(' ');
}
