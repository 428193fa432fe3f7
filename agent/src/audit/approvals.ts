// Approval records for single statements (issue 8), kept in the state store so any agent sharing it can
// decide a request another agent holds. The rules live here once, as pure functions over a record; each
// store only supplies an atomic read-modify-write (`mutate`: a mutex in the embedded store, SELECT … FOR
// UPDATE in PostgreSQL) and a change feed (an EventEmitter; fed by LISTEN/NOTIFY in PostgreSQL).
//
//   agent A (holding)            store                          approver (via agent A or B)
//   create(request) ─────────►  pending, expiresAt = now+timeout
//   awaitDecision(id) ───────►  subscribe to changes, then read   decide(id, who, approve) ──► rules,
//        ◄── change(id) ───────  (NOTIFY / emit)  ◄───────────────  approved once minApprovals reached
//   consume(id, fingerprint) ─►  approved → consumed, once; the held statement runs
import { randomBytes } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import type { Identity } from './events.js';
import type { Clock } from './store.js';
import type { TransactionDetail } from '../../../shared/api/approvals.js';

export type ApprovalStatus = 'pending' | 'approved' | 'denied' | 'expired' | 'withdrawn' | 'consumed';
export type Verdict = 'approve' | 'deny';

export interface ApprovalRequest {
  sessionId: string;
  connection: string;
  requester: Identity;
  sql: string;
  /** Parameters with masked values redacted. */
  params?: unknown[];
  /** Fingerprint of statement, parameters and session state: what the approval is bound to. */
  fingerprint: string;
  timeoutMs: number;
  minApprovals?: number;
  /** The held statement's audit event. */
  statementSeq?: number;
  /** The policy rule that held the statement (shown to approvers and in notifications). */
  rule?: string;
  /** P11 row threshold: the statement already ran and its result paused after this many rows; approving lets the rest flow. */
  rowsSoFar?: number;
  /** The session's stated purpose (`--reason`, or built from CI claims). */
  purpose?: string;
  /** approval.mode transaction: the COMMIT of this transaction, its statements and rows changed. */
  transaction?: TransactionDetail;
}

export interface ApprovalVote {
  sub: string;
  issuer: string;
  verdict: Verdict;
  reason?: string;
  at: string;
  /** The sign-in methods and level the approver's token showed (issue 16: MFA where people act). */
  amr?: string[];
  acr?: string;
}

export interface Approval extends ApprovalRequest {
  id: string;
  agentId: string;
  status: ApprovalStatus;
  minApprovals: number;
  createdAt: string;
  expiresAt: string;
  votes: ApprovalVote[];
  decidedAt?: string;
  consumedAt?: string;
}

export interface Decision {
  status: Exclude<ApprovalStatus, 'pending'>;
  approval: Approval;
}

export type ApprovalErrorCode = 'NOT_FOUND' | 'SELF_APPROVAL' | 'ALREADY_VOTED' | 'NOT_PENDING' | 'NOT_APPROVED' | 'FINGERPRINT_MISMATCH' | 'REASON_REQUIRED';

export class ApprovalError extends Error {
  override readonly name = 'ApprovalError';
  constructor(
    readonly code: ApprovalErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export interface Approvals {
  create(req: ApprovalRequest): Promise<Approval>;
  /** The record, expired first if its time has passed. */
  get(id: string): Promise<Approval | undefined>;
  list(filter?: { status?: ApprovalStatus; connection?: string }): Promise<Approval[]>;
  decide(id: string, approver: Identity, verdict: Verdict, reason?: string): Promise<Approval>;
  /** Single use: approved → consumed, for exactly the approved fingerprint. Throws otherwise. */
  consume(id: string, fingerprint: string): Promise<Approval>;
  /** The client cancelled the held statement. */
  withdraw(id: string): Promise<Approval>;
  /** Resolves when the request leaves `pending` (decided, expired, withdrawn); rejects on abort. */
  awaitDecision(id: string, signal?: AbortSignal): Promise<Decision>;
  /** Expires every pending request whose time has passed (by the injected clock). */
  sweep(): Promise<number>;
  /** The stored record as it is (never expires it on the way): for observers such as notifiers. */
  peek(id: string): Promise<Approval | undefined>;
  /**
   * Observes the book without taking part: `created` with every request created through THIS book
   * (so by this agent), `changed` with the id of any record changed by any agent sharing the store
   * ('*' when changes may have been missed). Listeners run synchronously and must not throw or wait.
   * Returns the unsubscribe function.
   */
  subscribe(l: ApprovalObserver): () => void;
}

export interface ApprovalObserver {
  created?(a: Approval): void;
  changed?(id: string): void;
}

/** What a store provides for approvals. `mutate` must be atomic per id against every writer. */
export interface ApprovalBackend {
  insert(a: Approval): Promise<void>;
  load(id: string): Promise<Approval | undefined>;
  list(filter: { status?: ApprovalStatus; connection?: string }): Promise<Approval[]>;
  /** Reads the current record, applies `fn`, writes the result if it changed, announces the change. */
  mutate(id: string, fn: (a: Approval) => Approval): Promise<Approval>;
  /**
   * Emits 'change' with the id after any committed mutation (local or, for PostgreSQL, any agent), or
   * with '*' when changes may have been missed (the LISTEN connection was re-established).
   */
  readonly changes: EventEmitter;
}

// ─── rules (pure) ────────────────────────────────────────────────────────────────────────────────────

const sameIdentity = (a: { sub: string; issuer: string }, b: { sub: string; issuer: string }) => a.sub === b.sub && a.issuer === b.issuer;

export function expireIfDue(a: Approval, now: number): Approval {
  if (a.status !== 'pending' || now < Date.parse(a.expiresAt)) return a;
  return { ...a, status: 'expired', decidedAt: new Date(now).toISOString() };
}

export function applyVote(a0: Approval, who: Identity, verdict: Verdict, reason: string | undefined, now: number): Approval {
  const a = expireIfDue(a0, now);
  if (a.status !== 'pending') throw new ApprovalError('NOT_PENDING', `approval ${a.id} is ${a.status}`);
  // Separation of duties: whoever asked cannot approve, whatever groups they are in.
  if (sameIdentity(a.requester, who)) throw new ApprovalError('SELF_APPROVAL', 'the requester cannot decide their own request');
  // One identity counts once, so minApprovals means that many different people.
  if (a.votes.some((v) => sameIdentity(v, who))) throw new ApprovalError('ALREADY_VOTED', `${who.sub} has already decided this request`);
  if (verdict === 'deny' && !reason?.trim()) throw new ApprovalError('REASON_REQUIRED', 'a denial needs a reason');
  const at = new Date(now).toISOString();
  const amr = Array.isArray(who.claims?.amr) ? (who.claims.amr as string[]) : undefined;
  const acr = typeof who.claims?.acr === 'string' ? who.claims.acr : undefined;
  const votes = [...a.votes, { sub: who.sub, issuer: who.issuer, verdict, reason, at, ...(amr ? { amr } : {}), ...(acr ? { acr } : {}) }];
  const approvals = votes.filter((v) => v.verdict === 'approve').length;
  const status: ApprovalStatus = verdict === 'deny' ? 'denied' : approvals >= a.minApprovals ? 'approved' : 'pending';
  return { ...a, votes, status, decidedAt: status === 'pending' ? undefined : at };
}

export function applyConsume(a0: Approval, fingerprint: string, now: number): Approval {
  const a = a0.status === 'pending' ? expireIfDue(a0, now) : a0;
  if (a.status !== 'approved') throw new ApprovalError(a.status === 'consumed' ? 'NOT_PENDING' : 'NOT_APPROVED', `approval ${a.id} is ${a.status}`);
  // Bound to exactly what was approved: another statement, other parameters or another session state
  // produce another fingerprint.
  if (a.fingerprint !== fingerprint) throw new ApprovalError('FINGERPRINT_MISMATCH', `approval ${a.id} was granted for a different statement`);
  return { ...a, status: 'consumed', consumedAt: new Date(now).toISOString() };
}

export function applyWithdraw(a0: Approval, now: number): Approval {
  const a = expireIfDue(a0, now);
  if (a.status !== 'pending' && a.status !== 'approved') throw new ApprovalError('NOT_PENDING', `approval ${a.id} is ${a.status}`);
  return { ...a, status: 'withdrawn', decidedAt: new Date(now).toISOString() };
}

export function newApprovalId(): string {
  return 'ap_' + randomBytes(9).toString('base64url');
}

// ─── the shared Approvals implementation ─────────────────────────────────────────────────────────────

export class ApprovalBook implements Approvals {
  private readonly observers = new Set<ApprovalObserver>();

  constructor(
    private readonly b: ApprovalBackend,
    private readonly agentId: string,
    private readonly clock: Clock,
  ) {}

  async create(req: ApprovalRequest): Promise<Approval> {
    const now = this.clock();
    const a: Approval = {
      ...req,
      minApprovals: Math.max(1, req.minApprovals ?? 1),
      id: newApprovalId(),
      agentId: this.agentId,
      status: 'pending',
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(now + req.timeoutMs).toISOString(),
      votes: [],
    };
    await this.b.insert(a);
    // An observer's fault is its own: the held statement's request is already stored.
    for (const o of this.observers) {
      try {
        o.created?.(a);
      } catch {}
    }
    return a;
  }

  peek(id: string): Promise<Approval | undefined> {
    return this.b.load(id);
  }

  subscribe(l: ApprovalObserver): () => void {
    const onChange = (id: string) => {
      try {
        l.changed?.(id);
      } catch {}
    };
    this.observers.add(l);
    this.b.changes.on('change', onChange);
    return () => {
      this.observers.delete(l);
      this.b.changes.off('change', onChange);
    };
  }

  async get(id: string): Promise<Approval | undefined> {
    const a = await this.b.load(id);
    if (!a || expireIfDue(a, this.clock()) === a) return a;
    return this.b.mutate(id, (x) => expireIfDue(x, this.clock()));
  }

  async list(filter: { status?: ApprovalStatus; connection?: string } = {}): Promise<Approval[]> {
    await this.sweep();
    return this.b.list(filter);
  }

  decide(id: string, approver: Identity, verdict: Verdict, reason?: string): Promise<Approval> {
    return this.b.mutate(id, (a) => applyVote(a, approver, verdict, reason, this.clock()));
  }

  consume(id: string, fingerprint: string): Promise<Approval> {
    return this.b.mutate(id, (a) => applyConsume(a, fingerprint, this.clock()));
  }

  withdraw(id: string): Promise<Approval> {
    return this.b.mutate(id, (a) => applyWithdraw(a, this.clock()));
  }

  async sweep(): Promise<number> {
    const now = this.clock();
    const due = (await this.b.list({ status: 'pending' })).filter((a) => expireIfDue(a, now) !== a);
    for (const a of due) await this.b.mutate(a.id, (x) => expireIfDue(x, this.clock()));
    return due.length;
  }

  awaitDecision(id: string, signal?: AbortSignal): Promise<Decision> {
    return new Promise<Decision>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      let settled = false;
      const finish = (f: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.b.changes.off('change', onChange);
        signal?.removeEventListener('abort', onAbort);
        f();
      };
      // Re-read on every change of this id and once at the deadline: no polling loop.
      const check = () => {
        this.get(id).then((a) => {
          if (settled) return;
          if (!a) return finish(() => reject(new ApprovalError('NOT_FOUND', `no approval ${id}`)));
          if (a.status !== 'pending') return finish(() => resolve({ status: a.status as Decision['status'], approval: a }));
          clearTimeout(timer);
          timer = setTimeout(check, Math.max(1, Date.parse(a.expiresAt) - this.clock()));
        }, (err) => finish(() => reject(err)));
      };
      const onChange = (changed: string) => (changed === id || changed === '*') && check();
      const onAbort = () => finish(() => reject(signal!.reason ?? new Error('aborted')));
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort);
      // Subscribe before the first read, so a decision between the two is not missed.
      this.b.changes.on('change', onChange);
      check();
    });
  }
}

export function notFound(id: string): ApprovalError {
  return new ApprovalError('NOT_FOUND', `no approval ${id}`);
}
