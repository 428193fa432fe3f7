// Audit events: the record types and their constructors (one per thing that happened, Teleport-style).
// The canonical form the hash chain is computed over lives in shared/audit/chain.ts (the CLI and an
// evidence bundle check it too) and is re-exported here.
import type { Principal } from '../identity/access.js';
import { GENESIS, canonicalJson, hashEvent, hashedContent, sha256, storedLine } from '../../../shared/audit/chain.js';

export { GENESIS, canonicalJson, hashEvent, hashedContent, sha256, storedLine };

export type EventType =
  | 'session_start'
  | 'session_end'
  | 'statement'
  | 'statement_result'
  | 'refused'
  | 'approval_requested'
  | 'approval_decided'
  | 'approval_consumed'
  | 'approval_withdrawn'
  | 'approval_expired'
  /** A message outside any statement: a notification (channel only), an idle notice, a parameter report. */
  | 'async_message'
  /** At start: the config's hash with the access, masking and approval rules in force (evidence section C, G). */
  | 'policy_loaded'
  /** A reviewer's attestation of a review, bound to an evidence bundle's manifest hash. */
  | 'attestation'
  /** `hoopctl logout` revoked its token at the agent (identity/revocation.ts). */
  | 'token_revoked';

/** Who, as the verified token said. Only attribution claims are kept (see `identityOf`). */
export interface Identity {
  sub: string;
  issuer: string;
  email?: string;
  groups?: string[];
  claims?: Record<string, unknown>;
}

export interface AuditEvent {
  seq: number;
  ts: string;
  prev: string;
  hash: string;
  type: EventType;
  sessionId?: string;
  agentId: string;
  identity?: Identity;
  connection?: string;
  data: Record<string, unknown>;
}

/** What a caller hands to `StateStore.append`; the store assigns the chain fields. */
export type EventInput = Omit<AuditEvent, 'seq' | 'prev' | 'hash' | 'ts' | 'agentId'>;

// CI claims worth keeping for attribution. Tokens may carry more (names, emails of actors in other
// claims); the audit keeps only what identifies the job, so the audit store gains no new personal data.
const ATTRIBUTION_CLAIMS = [
  'repository',
  'repository_owner',
  'ref',
  'sha',
  'workflow',
  'job_workflow_ref',
  'run_id',
  'run_attempt',
  'actor',
  'environment',
  'event_name',
  'project_path',
  'pipeline_id',
  'job_id',
  // How the person signed in (issue 16): approval and session events show the assurance presented.
  'amr',
  'acr',
] as const;

/**
 * A principal's identity, one frozen object per Principal: a session's events all carry the same one,
 * so the store serialises it once per session (event-json.ts). Principals are never modified.
 */
const identities = new WeakMap<Principal, Identity>();

export function identityOf(p: Principal): Identity {
  let id = identities.get(p);
  if (id) return id;
  const claims: Record<string, unknown> = {};
  for (const k of ATTRIBUTION_CLAIMS) if (p.claims[k] !== undefined) claims[k] = p.claims[k];
  id = Object.freeze({
    sub: p.sub,
    issuer: p.issuer,
    email: p.email,
    groups: p.groups.length ? Object.freeze([...p.groups]) as string[] : undefined,
    claims: Object.keys(claims).length ? Object.freeze(claims) : undefined,
  });
  identities.set(p, id);
  return id;
}

// A refusal reason is free text built by other modules; a bearer token pasted into it by mistake must
// not become permanent in a tamper-evident log that cannot be edited afterwards.
const JWT_LIKE = /eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*/g;
function withoutTokens(s: string): string {
  return s.replace(JWT_LIKE, '[token]');
}

interface SessionFacts {
  sessionId: string;
  who: Principal | Identity;
  connection: string;
}
// A Principal (straight from token verification) is narrowed to attribution claims; an Identity is kept.
const ident = (w: Principal | Identity): Identity => (isPrincipal(w) ? identityOf(w) : w);
function isPrincipal(w: Principal | Identity): w is Principal {
  return Array.isArray(w.groups) && typeof w.claims === 'object' && w.claims !== null;
}

export function makeSessionStartEvent(
  f: SessionFacts & { clientAddr?: string; cliVersion?: string; applicationName?: string; purpose?: string; scope?: string },
): EventInput {
  // The token's id (jti) ties the session to one issued credential without storing the credential.
  const jti = isPrincipal(f.who) && typeof f.who.claims.jti === 'string' ? f.who.claims.jti : undefined;
  return {
    type: 'session_start',
    sessionId: f.sessionId,
    identity: ident(f.who),
    connection: f.connection,
    // scope: the P11 scope that applies to the whole session (its grants are in the policy_loaded event)
    data: { clientAddr: f.clientAddr, cliVersion: f.cliVersion, applicationName: f.applicationName, jti, purpose: f.purpose, scope: f.scope },
  };
}

/** A token revoked by its holder: who, which token (jti/sid, never the token), until when it is refused. */
export function makeTokenRevokedEvent(who: Principal, r: { until: string; scope: 'session' | 'token' }): EventInput {
  const c = who.claims;
  return {
    type: 'token_revoked',
    identity: identityOf(who),
    data: { jti: typeof c.jti === 'string' ? c.jti : undefined, sid: typeof c.sid === 'string' ? c.sid : undefined, scope: r.scope, until: r.until },
  };
}

export function makeSessionEndEvent(f: SessionFacts & { reason?: string; statements?: number; cancelled?: boolean }): EventInput {
  return {
    type: 'session_end',
    sessionId: f.sessionId,
    identity: ident(f.who),
    connection: f.connection,
    // cancelled: a statement was still running; the agent sent PostgreSQL a CancelRequest for it.
    data: { reason: f.reason, statements: f.statements, cancelled: f.cancelled },
  };
}

export interface StatementFacts extends SessionFacts {
  /** The statement as the policy saw it. */
  sql: string;
  /** Bind parameters with masked values already redacted by the caller. */
  params?: unknown[];
  decision: 'allow' | 'block' | 'hold' | string;
  rule?: string;
  approvalId?: string;
  rows?: number;
  bytes?: number;
  durationMs?: number;
  sqlstate?: string;
  /** P11: the name of the scope the statement was judged by. */
  scope?: string;
  /** P11: masked columns it read in clear under the scope's `unmask` exception. */
  unmasked?: string[];
}

export function makeStatementEvent(f: StatementFacts): EventInput {
  const { sessionId, who, connection, ...data } = f;
  return { type: 'statement', sessionId, identity: ident(who), connection, data: { ...data } };
}

/** A refused attempt (bad token, no access rule, bad startup). Never carries the token itself. */
export function makeRefusedEvent(f: {
  sessionId?: string;
  who?: Principal | Identity;
  connection?: string;
  reason: string;
  clientAddr?: string;
  code?: string;
  /** An aggregate (audit/refusals.ts): how many more refusals like the first one, since when. */
  count?: number;
  since?: string;
}): EventInput {
  return {
    type: 'refused',
    sessionId: f.sessionId,
    identity: f.who && ident(f.who),
    connection: f.connection,
    data: { reason: withoutTokens(f.reason), clientAddr: f.clientAddr, code: f.code, count: f.count, since: f.since },
  };
}

export function makeApprovalEvent(
  type: Extract<EventType, `approval_${string}`>,
  f: SessionFacts & { approvalId: string; statementSeq?: number; verdict?: string; reason?: string; fingerprint?: string },
): EventInput {
  const { sessionId, who, connection, ...data } = f;
  return { type, sessionId, identity: ident(who), connection, data: { ...data, reason: data.reason && withoutTokens(data.reason) } };
}
