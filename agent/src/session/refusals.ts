// Refusals: what the client is told when the agent does not run a statement, and the sentinel that
// carries it. A refused message is replaced by a sentinel PostgreSQL rejects while parsing (nothing
// runs), so the error arrives exactly where the server would have put it and the extended protocol's
// skip-to-Sync and the transaction's state stay the server's own; the pipeline swaps that one
// ErrorResponse for the explanation below.
import { SqlState } from '../../../shared/errors.js';
import type { Decision } from '../policy/index.js';
import type { PgErrorFields } from '../pgwire/backend.js';
import { serializeFrontend } from '../pgwire/frontend.js';

export type Refusal = Pick<Decision, 'action' | 'rule' | 'reason'> | { action: 'unavailable' | 'denied'; rule: string; reason: string };

export const IN_TRANSACTION: Refusal = {
  action: 'block',
  rule: 'P4.in-transaction',
  reason: 'a statement that needs approval cannot run inside a transaction block (BEGIN … COMMIT), which stays read-only; send it on its own',
};

export const REVIEW_ESCAPES: Refusal = {
  action: 'block',
  rule: 'P4.review.escapes-rollback',
  reason: 'inside a reviewed transaction a statement may not call what a rollback cannot take back (sequence changes, functions or procedures the agent cannot analyse); send it outside the transaction, where it is approved on its own',
};

export const REVIEW_COMMIT_ALONE: Refusal = {
  action: 'block',
  rule: 'P4.review.commit-alone',
  reason: 'in a reviewed transaction COMMIT waits for an approver, so it must be sent as a query of its own (not with other statements, not through the extended protocol, not AND CHAIN)',
};

export const IN_PIPELINE: Refusal = {
  action: 'block',
  rule: 'P4.pipeline',
  reason: 'a statement that needs approval must start its pipeline run and be followed by Sync (the run so far was already sent read-only); send it in a run of its own',
};

export const READ_WRITE_ALONE: Refusal = {
  action: 'block',
  rule: 'P8.read-write-alone',
  reason: 'a statement that runs read-write may not leave a transaction block open (BEGIN without its COMMIT or ROLLBACK in the same batch); send the block whole, or the statement on its own',
};

export const AUDIT_DOWN: Refusal = {
  action: 'unavailable',
  rule: 'P9.audit-unavailable',
  reason: 'the audit store cannot record it right now, so it was not run',
};

export const FUNCTION_CALL: Refusal = {
  action: 'block',
  rule: 'P3.protocol.function-call',
  reason: 'the FunctionCall protocol message is not allowed through hoopctl',
};

/** A sentinel: a Query or a Parse of a fresh name (no statement of the client's changes) that cannot parse. */
export function sentinel(as: 'Query' | 'Parse', word: string): Buffer {
  return as === 'Query' ? serializeFrontend({ type: 'Query', sql: word }) : serializeFrontend({ type: 'Parse', name: word, sql: word, paramTypes: [] });
}

export function refusalFields(d: Refusal): PgErrorFields {
  switch (d.action) {
    case 'hold':
      return {
        severity: 'ERROR',
        code: SqlState.InsufficientPrivilege,
        message: `hoopctl: statement needs approval and was not run (${d.rule}): ${d.reason}`,
        hint: 'Writes and bulk exports wait for an approver, but this connection has no approvers configured (approval.approvers). Ask its owner to add them.',
      };
    case 'denied':
      return {
        severity: 'ERROR',
        code: SqlState.InsufficientPrivilege,
        message: `hoopctl: ${d.reason} (${d.rule})`,
        hint: 'Nothing was changed. Ask an approver, or send the statement again to request a new approval.',
      };
    case 'unavailable':
      return {
        severity: 'ERROR',
        code: SqlState.CannotConnectNow,
        message: `hoopctl: ${d.reason} (${d.rule})`,
        hint: 'Retry shortly; the agent recovers by itself when its audit store is writable again.',
      };
    default:
      return {
        severity: 'ERROR',
        code: SqlState.InsufficientPrivilege,
        message: `hoopctl: statement blocked by policy (${d.rule}): ${d.reason}`,
        hint: 'Ask the connection owner to change the policy if this statement is needed.',
      };
  }
}
