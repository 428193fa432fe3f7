// The approvals endpoints' bodies, parsed on both sides (agent/src/http/approvals-api.ts builds them,
// cli/src/commands/approvals.ts reads them):
//   GET  /api/approvals[?status=&connection=]      ApprovalList
//   GET  /api/approvals/ID                         ApprovalOne
//   POST /api/approvals/ID/approve | deny          ApprovalDecision
import { z } from 'zod';

export const ApprovalStatus = z.enum(['pending', 'approved', 'denied', 'expired', 'withdrawn', 'consumed']);
export const Verdict = z.enum(['approve', 'deny']);
export type Verdict = z.infer<typeof Verdict>;

/** A reviewed transaction (approval.mode transaction): what its COMMIT would make visible. */
export const TransactionDetail = z.object({
  /** When the block began: its locks are held since then. */
  startedAt: z.string(),
  statements: z.array(z.object({ sql: z.string(), params: z.array(z.unknown()).optional(), writes: z.boolean(), rows: z.number().int(), sqlstate: z.string().optional() })),
  rowsChanged: z.number().int(),
});
export type TransactionDetail = z.infer<typeof TransactionDetail>;

/** One request: everything an approver needs to decide, nothing to replay it. */
export const ApprovalView = z.object({
  id: z.string(),
  /** The SQL with invisible characters and padding spelled out: what an approver should read. */
  display: z.string(),
  warnings: z.array(z.string()),
  status: ApprovalStatus,
  connection: z.string(),
  sessionId: z.string(),
  agentId: z.string(),
  requester: z.object({ sub: z.string(), issuer: z.string(), email: z.string().optional() }),
  /** The requesting session's stated purpose (`--reason`, or built from CI claims). */
  purpose: z.string().optional(),
  sql: z.string(),
  /** Parameters as stored: masked values already redacted by the session. */
  params: z.array(z.unknown()).optional(),
  statementSeq: z.number().int().optional(),
  /** The policy rule that asked for approval (P4.write, P4.export, P11.rows…). */
  rule: z.string().optional(),
  /** P11 row threshold: the result is paused after this many rows (replay them: hoopctl sessions replay SESSION). */
  rowsSoFar: z.number().int().optional(),
  transaction: TransactionDetail.optional(),
  createdAt: z.string(),
  expiresAt: z.string(),
  decidedAt: z.string().optional(),
  consumedAt: z.string().optional(),
  minApprovals: z.number().int(),
  approvals: z.number().int(),
  votes: z.array(
    z.object({
      sub: z.string(),
      issuer: z.string(),
      verdict: Verdict,
      reason: z.string().optional(),
      at: z.string(),
      /** How the approver signed in (the token's amr/acr), when it said. */
      amr: z.array(z.string()).optional(),
      acr: z.string().optional(),
    }),
  ),
  /** Whether the caller could decide it right now, and if not, why. */
  canDecide: z.boolean(),
  why: z.string().optional(),
});
export type ApprovalView = z.infer<typeof ApprovalView>;

export const ApprovalList = z.object({ approvals: z.array(ApprovalView) });
export const ApprovalOne = z.object({ approval: ApprovalView });
export const ApprovalDecision = z.object({
  approval: ApprovalView,
  /** Set when the vote was recorded on the request but its audit event could not be written. */
  warning: z.string().optional(),
});
export type ApprovalDecision = z.infer<typeof ApprovalDecision>;
