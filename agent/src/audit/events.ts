// Audit events: the record types, their constructors (one per thing that happened, Teleport-style) and
// the canonical form the hash chain is computed over.
//
// An event's `hash` is SHA-256 over the canonical JSON of the event without its `hash` field; the next
// event of the same chain carries it as `prev`. Canonical JSON (keys sorted at every level, no
// whitespace, `undefined` dropped) makes the hash independent of how a store or an exporter happens to
// order keys (PostgreSQL, SIEM pipelines and `jq` all reorder), so one verifier works on every copy.
import { createHash } from 'node:crypto';
import type { Principal } from '../identity/access.js';

export const GENESIS = '0'.repeat(64);

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
  | 'approval_expired';

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

/** Deterministic JSON: sorted keys, no whitespace, `undefined` members dropped, `toJSON` honoured. */
export function canonicalJson(v: unknown): string {
  // Fast path: copy with keys inserted in sorted order, then one native stringify (~4× faster than
  // stringifying leaf by leaf). Objects with array-index keys ("2", "10") cannot be ordered that way
  // (JavaScript iterates those numerically first), so they take the slow path.
  try {
    return JSON.stringify(sorted(v)) ?? 'null';
  } catch (err) {
    if (err !== INDEX_KEY) throw err;
    return slowCanonical(v);
  }
}

const INDEX_KEY = Symbol('index key');
const isIndex = (k: string) => k.length < 11 && /^(?:0|[1-9]\d*)$/.test(k);

function sorted(v: unknown): unknown {
  if (v === null || typeof v !== 'object') return typeof v === 'bigint' ? v.toString() : v;
  const o = v as { toJSON?: () => unknown };
  if (typeof o.toJSON === 'function') return sorted(o.toJSON());
  if (Array.isArray(v)) return v.map(sorted);
  const keys = Object.keys(v);
  if (keys.length && isIndex(keys[0])) throw INDEX_KEY;
  const out: Record<string, unknown> = {};
  for (const k of keys.sort()) out[k] = sorted((v as Record<string, unknown>)[k]);
  return out;
}

function slowCanonical(v: unknown): string {
  if (v === null || typeof v !== 'object') {
    if (typeof v === 'bigint') return JSON.stringify(v.toString());
    return JSON.stringify(v) ?? 'null';
  }
  const o = v as { toJSON?: () => unknown };
  if (typeof o.toJSON === 'function') return slowCanonical(o.toJSON());
  if (Array.isArray(v)) return '[' + v.map((x) => (x === undefined || typeof x === 'function' ? 'null' : slowCanonical(x))).join(',') + ']';
  let out = '';
  for (const k of Object.keys(v).sort()) {
    const x = (v as Record<string, unknown>)[k];
    if (x === undefined || typeof x === 'function') continue;
    out += (out ? ',' : '') + JSON.stringify(k) + ':' + slowCanonical(x);
  }
  return '{' + out + '}';
}

/** Canonical JSON of an event without its `hash` (the hashed content). */
export function hashedContent(e: Omit<AuditEvent, 'hash'> & { hash?: string }): string {
  const { hash: _ignored, ...rest } = e;
  return canonicalJson(rest);
}

export function sha256(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

export function hashEvent(e: Omit<AuditEvent, 'hash'> & { hash?: string }): string {
  return sha256(hashedContent(e));
}

/**
 * The stored form of a sealed event: the hashed content with `"hash"` spliced in first. Not canonical
 * itself (hash is not in key order) but it needs no second serialisation, and the verifier recomputes
 * the canonical form anyway. `hash` first also keeps `grep`/`cut` on the files easy.
 */
export function storedLine(content: string, hash: string): string {
  return content === '{}' ? `{"hash":"${hash}"}` : `{"hash":"${hash}",` + content.slice(1);
}

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
] as const;

export function identityOf(p: Principal): Identity {
  const claims: Record<string, unknown> = {};
  for (const k of ATTRIBUTION_CLAIMS) if (p.claims[k] !== undefined) claims[k] = p.claims[k];
  return {
    sub: p.sub,
    issuer: p.issuer,
    email: p.email,
    groups: p.groups.length ? [...p.groups] : undefined,
    claims: Object.keys(claims).length ? claims : undefined,
  };
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
  f: SessionFacts & { clientAddr?: string; cliVersion?: string; applicationName?: string },
): EventInput {
  // The token's id (jti) ties the session to one issued credential without storing the credential.
  const jti = isPrincipal(f.who) && typeof f.who.claims.jti === 'string' ? f.who.claims.jti : undefined;
  return {
    type: 'session_start',
    sessionId: f.sessionId,
    identity: ident(f.who),
    connection: f.connection,
    data: { clientAddr: f.clientAddr, cliVersion: f.cliVersion, applicationName: f.applicationName, jti },
  };
}

export function makeSessionEndEvent(f: SessionFacts & { reason?: string; statements?: number }): EventInput {
  return {
    type: 'session_end',
    sessionId: f.sessionId,
    identity: ident(f.who),
    connection: f.connection,
    data: { reason: f.reason, statements: f.statements },
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
