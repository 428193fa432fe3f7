// What a worker process uses in place of the state store and the revocation list: the primary's own,
// reached over the cluster channel (channel.ts). There is still one audit chain and one approval book:
// a worker's append resolves only once the primary has written it (the statement is forwarded after
// that, exactly as in one process), and approval changes and revocations are pushed to every worker.
import { EventEmitter } from 'node:events';
import type { AuditEvent, EventInput } from '../audit/events.js';
import type { Health, RecordingEntry, StateStore } from '../audit/store.js';
import { AFTER_THE_FACT, StoreUnavailableError } from '../audit/store.js';
import { ApprovalBook, type Approval, type ApprovalRequest, type ApprovalStatus, type Verdict } from '../audit/approvals.js';
import type { Identity } from '../audit/events.js';
import type { Revocation, Revocations } from '../audit/revocations.js';
import type { Channel } from './channel.js';

/** The part of the state store a worker's sessions, tunnels and refusals use; the rest is the primary's. */
export type SessionStore = Pick<StateStore, 'agentId' | 'append' | 'appendRecording' | 'approvals' | 'health' | 'close'>;

/** Notices the primary sends every worker. */
export const NOTICE = { approvalChange: 'approval-change', revoked: 'revoked', health: 'health' } as const;

export class RemoteStore implements SessionStore {
  readonly approvals: RemoteApprovals;
  private state: Health;

  constructor(
    private readonly ch: Channel,
    readonly agentId: string,
    health: Health,
  ) {
    this.state = health;
    this.approvals = new RemoteApprovals(ch);
    ch.on(NOTICE.health, (h: Health) => (this.state = h));
  }

  async append(e: EventInput): Promise<AuditEvent> {
    try {
      // What nothing waits on rides with the next statement's event: one message each way per statement.
      return await (AFTER_THE_FACT.has(e.type) ? this.ch.callLazily<AuditEvent>('append', e) : this.ch.call<AuditEvent>('append', e));
    } catch (err) {
      // Refused appends mean the primary's store (or the primary) is down: readiness says so at once.
      if (err instanceof StoreUnavailableError) this.state = { writable: false, lastError: err.message };
      throw err;
    }
  }

  appendRecording(sessionId: string, ...entries: RecordingEntry[]): Promise<boolean> {
    return this.ch.callLazily<boolean>('appendRecording', sessionId, ...entries);
  }

  health(): Health {
    return this.state;
  }

  async close(): Promise<void> {}
}

/**
 * The primary's approval book. Decisions are made there (the API is served there); `awaitDecision` and
 * `subscribe` run here on the change notices the primary pushes, with the rules of ApprovalBook.
 */
export class RemoteApprovals extends ApprovalBook {
  constructor(private readonly ch: Channel) {
    const changes = new EventEmitter();
    changes.setMaxListeners(0);
    ch.on(NOTICE.approvalChange, (id: string) => changes.emit('change', id));
    const primaryOnly = () => Promise.reject(new Error('approval records are changed by the agent primary'));
    super(
      {
        insert: primaryOnly,
        load: (id) => ch.call<Approval | undefined>('approvals.peek', id),
        list: (f) => ch.call<Approval[]>('approvals.list', f),
        mutate: primaryOnly,
        changes,
      },
      '',
      Date.now,
    );
  }

  override create(req: ApprovalRequest): Promise<Approval> {
    return this.ch.call('approvals.create', req);
  }
  override get(id: string): Promise<Approval | undefined> {
    return this.ch.call('approvals.get', id);
  }
  override list(filter: { status?: ApprovalStatus; connection?: string } = {}): Promise<Approval[]> {
    return this.ch.call('approvals.list', filter);
  }
  override decide(id: string, approver: Identity, verdict: Verdict, reason?: string): Promise<Approval> {
    return this.ch.call('approvals.decide', id, approver, verdict, reason);
  }
  override consume(id: string, fingerprint: string): Promise<Approval> {
    return this.ch.call('approvals.consume', id, fingerprint);
  }
  override withdraw(id: string): Promise<Approval> {
    return this.ch.call('approvals.withdraw', id);
  }
  override sweep(): Promise<number> {
    return this.ch.call('approvals.sweep');
  }
}

/** The primary's revocation list: checked there on every upgrade and renewal, pushed here when it changes. */
export class RemoteRevocations implements Revocations {
  constructor(private readonly ch: Channel) {}

  revoke(r: Revocation): Promise<void> {
    return this.ch.call('revocations.revoke', r);
  }

  isRevoked(keys: readonly string[]): Promise<boolean> {
    return this.ch.call('revocations.isRevoked', keys);
  }

  subscribe(fn: (keys: readonly string[] | '*') => void): () => void {
    return this.ch.on(NOTICE.revoked, fn);
  }

  async close(): Promise<void> {}
}
