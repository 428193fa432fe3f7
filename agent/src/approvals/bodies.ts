// What an approval notification says, as hoopctl's own JSON document or as a Slack incoming-webhook
// body ({text, blocks}). Fields are picked one by one from the record, never spread: parameters (which
// may hold PHI, even redacted ones say which were masked), the fingerprint and the session's identity
// claims never leave the agent. The statement is the one recorded for approvers, which the session has
// already stripped of literals when it touches masked columns.
import type { Approval, ApprovalStatus } from '../audit/approvals.js';
import { displayOf } from '../http/approvals-api.js';

export type NotifiedStatus = Extract<ApprovalStatus, 'pending' | 'approved' | 'denied' | 'expired' | 'withdrawn'>;
export const NOTIFIED: readonly NotifiedStatus[] = ['pending', 'approved', 'denied', 'expired', 'withdrawn'];

const EVENT: Record<NotifiedStatus, string> = {
  pending: 'approval.requested',
  approved: 'approval.approved',
  denied: 'approval.denied',
  expired: 'approval.expired',
  withdrawn: 'approval.withdrawn',
};

/** Longest statement sent; a receiver needs enough to decide, `hoopctl approvals show` has the rest. */
export const MAX_STATEMENT_CHARS = 8000;

export interface ApprovalNotification {
  event: string;
  id: string;
  status: NotifiedStatus;
  connection: string;
  agentId: string;
  requester: { sub: string; issuer: string; email?: string };
  statement: string;
  statementTruncated?: true;
  /** Why the statement may read differently from how it looks (invisible characters, comments…). */
  warnings: string[];
  rule?: string;
  /** The requesting session's stated purpose (`--reason`, or built from CI claims). */
  purpose?: string;
  createdAt: string;
  expiresAt: string;
  decidedAt?: string;
  approvals: number;
  minApprovals: number;
  /** The identity whose vote (or whose time) ended the request. */
  decidedBy?: string;
  reason?: string;
  approveCommand: string;
  denyCommand: string;
  /** The request on the agent's API (GET shows it; POST …/approve and …/deny decide it). */
  url: string;
}

export function notification(a: Approval, status: NotifiedStatus, agentUrl: string): ApprovalNotification {
  const last = status === 'pending' ? undefined : a.votes.at(-1);
  const long = a.sql.length > MAX_STATEMENT_CHARS;
  return {
    event: EVENT[status],
    id: a.id,
    status,
    connection: a.connection,
    agentId: a.agentId,
    requester: { sub: a.requester.sub, issuer: a.requester.issuer, ...(a.requester.email ? { email: a.requester.email } : {}) },
    statement: long ? a.sql.slice(0, MAX_STATEMENT_CHARS) : a.sql,
    ...(long ? { statementTruncated: true as const } : {}),
    warnings: displayOf(a.sql).warnings,
    rule: a.rule,
    purpose: a.purpose,
    createdAt: a.createdAt,
    expiresAt: a.expiresAt,
    decidedAt: a.decidedAt,
    approvals: a.votes.filter((v) => v.verdict === 'approve').length,
    minApprovals: a.minApprovals,
    // An expiry or a withdrawal has no voter; the last vote would name the wrong person.
    decidedBy: status === 'approved' || status === 'denied' ? last?.sub : undefined,
    reason: status === 'approved' || status === 'denied' ? last?.reason : undefined,
    approveCommand: `hoopctl approvals approve ${a.id}`,
    denyCommand: `hoopctl approvals deny ${a.id} --reason "…"`,
    url: `${agentUrl.replace(/\/+$/, '')}/api/approvals/${a.id}`,
  };
}

/** Slack's limit for a section's text is 3000 characters; the code fence and escapes need room. */
const SLACK_SQL_CHARS = 2500;

/** A Slack incoming-webhook body: `text` for notifications and clients without blocks, `blocks` to read. */
export function slackBody(n: ApprovalNotification): { text: string; blocks: unknown[] } {
  const who = esc(n.requester.email ?? n.requester.sub);
  const by = n.decidedBy ? ` by ${esc(n.decidedBy)}` : '';
  const why = n.reason ? `: ${esc(n.reason)}` : '';
  const head: Record<NotifiedStatus, string> = {
    pending: `:hourglass: Statement held for approval \`${n.id}\` on *${esc(n.connection)}* (requested by ${who}${n.rule ? `, rule ${esc(n.rule)}` : ''})`,
    approved: `:white_check_mark: Approval \`${n.id}\` on *${esc(n.connection)}* approved${by}${why}`,
    denied: `:no_entry: Approval \`${n.id}\` on *${esc(n.connection)}* denied${by}${why}`,
    expired: `:alarm_clock: Approval \`${n.id}\` on *${esc(n.connection)}* expired undecided; the statement was not run`,
    withdrawn: `:leftwards_arrow_with_hook: Approval \`${n.id}\` on *${esc(n.connection)}* withdrawn by the requester's client; the statement was not run`,
  };
  const text = head[n.status];
  const display = displayOf(n.statement).display;
  const sql = display.length > SLACK_SQL_CHARS ? display.slice(0, SLACK_SQL_CHARS) + ' …' : display;
  const blocks: unknown[] = [
    { type: 'section', text: { type: 'mrkdwn', text } },
    // A backtick in the SQL would close the code fence and turn the rest into markup: shown as ˋ.
    { type: 'section', text: { type: 'mrkdwn', text: '```' + esc(sql).replace(/`/g, 'ˋ') + '```' } },
  ];
  if (n.purpose) blocks.push({ type: 'context', elements: [{ type: 'mrkdwn', text: `Purpose: ${esc(n.purpose)}` }] });
  if (n.warnings.length) blocks.push({ type: 'context', elements: [{ type: 'mrkdwn', text: `:warning: ${esc(n.warnings.join('; '))}` }] });
  const context =
    n.status === 'pending'
      ? `Approve: \`${n.approveCommand}\` · Deny: \`${n.denyCommand}\` · expires ${n.expiresAt}`
      : `${n.approvals}/${n.minApprovals} approval(s) · ${n.url}`;
  blocks.push({ type: 'context', elements: [{ type: 'mrkdwn', text: esc(context) }] });
  return { text, blocks };
}

/** Slack's three control characters in mrkdwn; `<…>` would otherwise become a link or a mention. */
function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
