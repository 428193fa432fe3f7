// The approvals API (issue 8, SECURITY-POLICY.md P4): how a human decides a statement the agent holds.
//
//   GET  /api/approvals?status=pending&connection=NAME   requests the caller may see: every request of a
//                                                        connection whose approvers include them, and
//                                                        their own requests (each says `canDecide`)
//   GET  /api/approvals/ID                               one of those
//   POST /api/approvals/ID/approve   {"reason"?: "…"}    one vote; approved once minApprovals differ
//   POST /api/approvals/ID/deny      {"reason": "…"}     denied at once; the reason is required
//
// Who may decide comes from this agent's config (`connections.NAME.approval.approvers.groups`); the rules
// that hold whatever the config says (never the requester, one vote per identity, only while pending)
// live in the ApprovalBook, once, and reach the caller as HTTP statuses with the book's own words.
// Every vote is an `approval_decided` audit event on this agent's chain, with the approver's identity
// and the held statement's session and event. A request is never shown to someone who is neither its
// requester nor an approver of its connection (404, as if it did not exist), and deciding needs an
// approver (403).
import { ApprovalDecision, ApprovalList, ApprovalOne, type ApprovalView } from '../../../shared/api/approvals.js';
import type http from 'node:http';
import { z } from 'zod';
import type { ResolvedConfig } from '../config.js';
import type { Logger } from '../log.js';
import type { Principal } from '../identity/access.js';
import type { StateStore } from '../audit/store.js';
import { ApprovalError, type Approval, type ApprovalErrorCode, type ApprovalStatus, type Verdict } from '../audit/approvals.js';
import { identityOf, makeApprovalEvent } from '../audit/events.js';
import { HttpRefusal } from './server.js';
import { assuranceShortfall } from '../identity/assurance.js';

/** Largest request body accepted on POST. */
export const MAX_APPROVAL_BODY_BYTES = 16 * 1024;
/** Longest reason kept (it goes into the audit chain and notifications). */
export const MAX_REASON_CHARS = 2000;

// The bodies this API returns are shared with the CLI and parsed before they leave (shared/api/approvals.ts).
export type { ApprovalView };
export type ApprovalDecisionResult = ApprovalDecision;

const Status = z.enum(['pending', 'approved', 'denied', 'expired', 'withdrawn', 'consumed', 'all']);
const ListQuery = z.strictObject({
  status: Status.default('pending'),
  connection: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'not a connection name').optional(),
  limit: z.coerce.number().int().min(1).max(500).default(200),
});
const Reason = z
  .string()
  .max(MAX_REASON_CHARS, `a reason is at most ${MAX_REASON_CHARS} characters`)
  .transform((s) => s.trim())
  .refine((s) => !/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(s), 'a reason cannot contain control characters');
const ApproveBody = z.strictObject({ reason: Reason.optional() });
const DenyBody = z.strictObject({ reason: Reason.refine((s) => s.length > 0, 'a denial needs a reason') });

/** ApprovalError code → HTTP status. Unknown codes fail as conflicts, never as success. */
const STATUS_OF: Record<ApprovalErrorCode, number> = {
  NOT_FOUND: 404,
  SELF_APPROVAL: 403,
  ALREADY_VOTED: 409,
  NOT_PENDING: 409,
  NOT_APPROVED: 409,
  FINGERPRINT_MISMATCH: 409,
  REASON_REQUIRED: 400,
};
const HINT_OF: Partial<Record<ApprovalErrorCode, string>> = {
  SELF_APPROVAL: 'Separation of duties: ask another approver of this connection.',
  ALREADY_VOTED: 'Each identity counts once; the request needs another approver.',
  NOT_PENDING: 'Only pending requests can be decided; `hoopctl approvals show ID` tells what happened.',
  REASON_REQUIRED: 'Pass --reason "…" (it is recorded in the audit trail and sent to the requester).',
};

export interface ApprovalsApiOptions {
  log?: Logger;
}

/**
 * The handler behind `/api/approvals…`, called with an authenticated caller. `id` and `action` come from
 * the path (`/api/approvals/ID/approve`). Every failure is an HttpRefusal with a status and a sentence.
 */
export function approvalsApi(store: StateStore, config: ResolvedConfig, opts: ApprovalsApiOptions = {}) {
  const approverGroupsOf = (connection: string): readonly string[] => config.connections.get(connection)?.approval.approvers?.groups ?? [];
  const isApprover = (who: Principal, connection: string) => who.groups.some((g) => approverGroupsOf(connection).includes(g));
  const isRequester = (who: Principal, a: Approval) => a.requester.sub === who.sub && a.requester.issuer === who.issuer;
  const visible = (who: Principal, a: Approval) => isApprover(who, a.connection) || isRequester(who, a);

  function decidable(who: Principal, a: Approval): { canDecide: boolean; why?: string } {
    if (a.status !== 'pending') return { canDecide: false, why: `the request is ${a.status}` };
    if (!config.connections.has(a.connection)) return { canDecide: false, why: `this agent does not serve connection ${a.connection}` };
    if (!isApprover(who, a.connection)) return { canDecide: false, why: `you are not an approver of connection ${a.connection}` };
    if (isRequester(who, a)) return { canDecide: false, why: 'you requested it' };
    if (a.votes.some((v) => v.sub === who.sub && v.issuer === who.issuer)) return { canDecide: false, why: 'you have already decided it' };
    const required = config.connections.get(a.connection)?.approval.approvers?.require;
    if (required && assuranceShortfall(required, who.assurance)) return { canDecide: false, why: 'your sign-in is not strong enough (log in again with MFA)' };
    return { canDecide: true };
  }

  function view(who: Principal, a: Approval): ApprovalView {
    return {
      id: a.id,
      status: a.status,
      connection: a.connection,
      sessionId: a.sessionId,
      agentId: a.agentId,
      requester: { sub: a.requester.sub, issuer: a.requester.issuer, email: a.requester.email },
      purpose: a.purpose,
      sql: a.sql,
      ...displayOf(a.sql),
      params: a.params,
      statementSeq: a.statementSeq,
      rule: a.rule,
      rowsSoFar: a.rowsSoFar,
      transaction: a.transaction,
      createdAt: a.createdAt,
      expiresAt: a.expiresAt,
      decidedAt: a.decidedAt,
      consumedAt: a.consumedAt,
      minApprovals: a.minApprovals,
      approvals: a.votes.filter((v) => v.verdict === 'approve').length,
      votes: a.votes.map((v) => ({ sub: v.sub, issuer: v.issuer, verdict: v.verdict, reason: v.reason, at: v.at, amr: v.amr, acr: v.acr })),
      ...decidable(who, a),
    };
  }

  async function visibleOne(who: Principal, id: string): Promise<Approval> {
    const a = await store.approvals.get(id);
    // Someone else's request on a connection you do not approve looks like no request at all.
    if (!a || !visible(who, a)) throw new HttpRefusal(404, 'NO_SUCH_APPROVAL', `no approval request ${id} visible to you`);
    return a;
  }

  async function list(who: Principal, q: URLSearchParams): Promise<{ approvals: ApprovalView[] }> {
    const query = parse(ListQuery, Object.fromEntries(q), 'query');
    const all = await store.approvals.list({
      status: query.status === 'all' ? undefined : query.status,
      connection: query.connection,
    });
    const approvals = all
      .filter((a) => visible(who, a))
      .sort((x, y) => x.createdAt.localeCompare(y.createdAt) || x.id.localeCompare(y.id))
      .slice(0, query.limit)
      .map((a) => view(who, a));
    return ApprovalList.parse({ approvals });
  }

  async function decide(who: Principal, id: string, verdict: Verdict, body: unknown): Promise<ApprovalDecisionResult> {
    const { reason } = verdict === 'deny' ? parse(DenyBody, body, 'body') : parse(ApproveBody, body, 'body');
    // Deciding needs an approver: anyone else learns only that they are not one (403), which tells them
    // nothing a 72-bit random id did not already.
    const a = await store.approvals.get(id);
    if (!a) throw new HttpRefusal(404, 'NO_SUCH_APPROVAL', `no approval request ${id}`);
    const conn = config.connections.get(a.connection);
    if (!conn) {
      throw new HttpRefusal(403, 'NOT_AN_APPROVER', `this agent does not serve connection ${a.connection}, so it cannot tell who approves it`, 'Decide it through an agent that serves that connection.');
    }
    const groups = conn.approval.approvers?.groups ?? [];
    if (!isApprover(who, a.connection)) {
      throw new HttpRefusal(
        403,
        'NOT_AN_APPROVER',
        groups.length
          ? `${who.sub} is not an approver of connection ${a.connection} (approvers: members of ${groups.join(', ')})`
          : `connection ${a.connection} has no approvers configured`,
        groups.length ? 'Ask a member of an approver group to decide it.' : 'Set approval.approvers.groups on the connection.',
      );
    }
    // Approving is a human act (SECURITY-POLICY P4): a service account or CI job in an approver group
    // could otherwise wave its own kind's writes through.
    if (verdict === 'approve' && isMachine(who)) {
      throw new HttpRefusal(403, 'NOT_HUMAN', `${who.sub} is a machine identity; only people approve statements`, 'Log in as yourself with `hoopctl login` (device flow) to approve.');
    }
    // A phished or password-only login must not be enough to let a write through (approval.approvers.require).
    const required = conn.approval.approvers?.require;
    const short = required && assuranceShortfall(required, who.assurance);
    if (short) {
      throw new HttpRefusal(403, 'INSUFFICIENT_ASSURANCE', `approving or denying on connection ${a.connection} needs a stronger sign-in: your token ${short}`, 'Run `hoopctl login` again and complete multi-factor authentication, then decide.');
    }
    // The record carries the minApprovals it was created with. If this agent's policy asks for more
    // (the config changed, or another agent is configured differently) an approval could be granted with
    // fewer people than the policy requires: refuse approving, allow denying.
    if (verdict === 'approve' && a.minApprovals < conn.approval.minApprovals) {
      throw new HttpRefusal(
        409,
        'POLICY_MISMATCH',
        `request ${id} was created needing ${a.minApprovals} approval(s) but connection ${a.connection} now requires ${conn.approval.minApprovals}`,
        'Deny it and let the statement be re-run under the current policy.',
      );
    }
    // P9: no decision without evidence. The vote itself is durable in the record; the chain event follows.
    if (!store.health().writable) {
      throw new HttpRefusal(503, 'AUDIT_STORE_UNAVAILABLE', 'the audit store is not writable; decisions are refused until it recovers');
    }
    const after = await store.approvals.decide(id, identityOf(who), verdict, reason);
    const event = makeApprovalEvent('approval_decided', {
      sessionId: after.sessionId,
      who,
      connection: after.connection,
      approvalId: after.id,
      statementSeq: after.statementSeq,
      verdict,
      reason,
    });
    event.data.status = after.status;
    event.data.approvals = after.votes.filter((v) => v.verdict === 'approve').length;
    event.data.minApprovals = after.minApprovals;
    try {
      await store.append(event);
    } catch (err) {
      opts.log?.error('audit store unavailable; approval vote not chained', { approvalId: id, error: (err as Error).message });
      return ApprovalDecision.parse({ approval: view(who, after), warning: 'the decision was recorded on the request but its audit event could not be written' });
    }
    opts.log?.info('approval decided', { approvalId: id, sub: who.sub, verdict, status: after.status });
    return ApprovalDecision.parse({ approval: view(who, after) });
  }

  /** `/api/approvals[/ID[/approve|deny]]` for an authenticated caller. */
  return async (who: Principal, req: http.IncomingMessage, id?: string, action?: string): Promise<unknown> => {
    try {
      const origin = req.headers.origin;
      if (origin !== undefined && !config.allowedOrigins.includes(origin)) {
        throw new HttpRefusal(403, 'ORIGIN_NOT_ALLOWED', `requests from origin ${origin.slice(0, 100)} are not allowed`);
      }
      const method = req.method ?? 'GET';
      if (!id) {
        if (method !== 'GET') throw methodNotAllowed(method, 'GET');
        return await list(who, new URL(req.url ?? '/', 'http://agent').searchParams);
      }
      if (!action) {
        if (method !== 'GET') throw methodNotAllowed(method, 'GET');
        return ApprovalOne.parse({ approval: view(who, await visibleOne(who, id)) });
      }
      if (method !== 'POST') throw methodNotAllowed(method, 'POST');
      if (action !== 'approve' && action !== 'deny') throw new HttpRefusal(404, 'NOT_FOUND', `no such action: ${action.slice(0, 20)}`);
      const body = await readJsonBody(req, MAX_APPROVAL_BODY_BYTES);
      return await decide(who, id, action, body);
    } catch (err) {
      throw toRefusal(err);
    }
  };
}

function methodNotAllowed(method: string, allowed: string): HttpRefusal {
  return new HttpRefusal(405, 'METHOD_NOT_ALLOWED', `${method.slice(0, 10)} is not allowed here; use ${allowed}`);
}

function parse<T extends z.ZodType>(schema: T, value: unknown, what: string): z.infer<T> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const problems = r.error.issues.map((i) => `${i.path.length ? i.path.join('.') + ': ' : ''}${i.message}`).join('; ');
  throw new HttpRefusal(400, 'BAD_REQUEST', `invalid ${what}: ${problems}`);
}

/** An ApprovalError becomes its status with the book's message; anything unexpected is a 500 without details. */
export function toRefusal(err: unknown): HttpRefusal {
  if (err instanceof HttpRefusal) return err;
  if (err instanceof ApprovalError) {
    if (err.code === 'NOT_FOUND') return new HttpRefusal(404, 'NO_SUCH_APPROVAL', err.message);
    return new HttpRefusal(STATUS_OF[err.code] ?? 409, err.code, err.message, HINT_OF[err.code]);
  }
  if ((err as { code?: string })?.code === 'AUDIT_STORE_UNAVAILABLE') {
    return new HttpRefusal(503, 'AUDIT_STORE_UNAVAILABLE', 'the state store is unavailable; try again shortly');
  }
  return new HttpRefusal(500, 'INTERNAL', 'internal error while handling the approval request');
}

/**
 * The request's JSON body, at most `limit` bytes: an empty body is `{}`. Refuses other content types
 * (415), larger bodies (413) and bodies that are not JSON (400).
 */
export async function readJsonBody(req: http.IncomingMessage, limit: number): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (Number.isFinite(declared) && declared > limit) {
    throw new HttpRefusal(413, 'BODY_TOO_LARGE', `the request body is ${declared} bytes; at most ${limit} are accepted`);
  }
  // Events rather than `for await`: leaving an async iterator early destroys the socket, and the
  // refusal could not be sent. An oversized body is drained and dropped.
  const chunks: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      if (size > limit) return;
      size += chunk.length;
      if (size > limit) {
        chunks.length = 0;
        reject(new HttpRefusal(413, 'BODY_TOO_LARGE', `the request body is larger than ${limit} bytes`));
      } else chunks.push(chunk);
    });
    req.on('end', () => resolve());
    req.on('error', reject);
  });
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return {};
  const type = String(req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/json') {
    throw new HttpRefusal(415, 'UNSUPPORTED_MEDIA_TYPE', 'the request body must be application/json');
  }
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new HttpRefusal(400, 'BAD_JSON', 'the request body is not valid JSON');
  }
}

/**
 * Machine identities: client-credentials tokens (the client is its own subject) and CI workload tokens
 * (they name a repository or pipeline). People log in through a client on their behalf.
 */
export function isMachine(who: Principal): boolean {
  const c = who.claims;
  if (typeof c.client_id === 'string' && c.client_id === who.sub) return true;
  if (c.gty === 'client_credentials') return true;
  return ['repository', 'project_path', 'pipeline_id', 'job_workflow_ref'].some((k) => c[k] !== undefined);
}

// Characters that make the text an approver reads differ from the text that runs: bidi controls,
// zero-width and other invisible or format characters (Trojan Source), and long runs of blanks that
// push the rest of a statement off screen.
const INVISIBLE = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb]/gu;
const LONG_BLANKS = /[ \t]{40,}/g;

/** What approvers should read: the SQL with invisible characters spelled out, and why it was changed. */
export function displayOf(sql: string): { display: string; warnings: string[] } {
  const warnings: string[] = [];
  const found = [...new Set(sql.match(INVISIBLE) ?? [])];
  if (found.length) warnings.push(`invisible or bidirectional characters: ${found.map(codePoint).join(', ')}`);
  const padding = sql.match(LONG_BLANKS);
  if (padding) warnings.push(`long runs of blanks (longest ${Math.max(...padding.map((p) => p.length))} characters) hide the rest of the line`);
  if (/--|\/\*/.test(sql)) warnings.push('contains comments; read the whole statement');
  const display = sql.replace(INVISIBLE, (ch) => `⟦${codePoint(ch)}⟧`).replace(LONG_BLANKS, (b) => `⟦${b.length} blanks⟧`);
  return { display, warnings };
}

function codePoint(ch: string): string {
  return `U+${ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
}
