// Approval notifications (issue 8): a webhook per connection (`approval.webhook`) hears when a statement
// is held for approval and when the request ends (approved, denied, expired, withdrawn).
//
//   session (agent A)        ApprovalBook (A)            this notifier (A)             receiver
//   approvals.create ──────► insert ── created(a) ─────► track a.id, queue "requested" ──► POST
//                            change feed (emit / LISTEN) ◄── decided through A or B
//                            changed(id) ──────────────► peek(id), status moved on? queue ──► POST
//
// Sent once per request however many agents share the store: the agent that created the request (the
// one holding the statement, which also expires or withdraws it) sends every notification about it;
// other agents only ever see a `changed(id)` for ids they do not track. Cost of that choice: if the
// holding agent stops, its pending requests are not notified again (its sessions, and their statements,
// are gone with it).
//
// Off the session path: listeners only queue (delivery.ts posts, retries, times out), reads of changed
// records happen on their own promise, and every failure ends in a log line, never in the agent.
import type { ResolvedConnection } from '../config.js';
import type { Logger } from '../log.js';
import type { Approval, ApprovalStatus, Approvals } from '../audit/approvals.js';
import { durationMs } from '../../../shared/config/schema.js';
import { WebhookDelivery, type DeliveryOptions } from './delivery.js';
import { notification, slackBody, type NotifiedStatus } from './bodies.js';

export interface ApprovalWebhooksOptions {
  approvals: Approvals;
  connections: ReadonlyMap<string, Pick<ResolvedConnection, 'approval'>>;
  /** http(s) base URL of this agent, for the link in notifications (a webhook's agentUrl wins). */
  agentUrl: string;
  log: Logger;
  delivery?: Omit<DeliveryOptions, 'log'>;
}

export interface ApprovalWebhooks {
  /** Documents queued or in delivery (for tests and metrics). */
  readonly pending: number;
  close(): Promise<void>;
}

/** How far a request has gone; a notification is sent only when this grows (reads may arrive late). */
const RANK: Record<ApprovalStatus, number> = { pending: 0, approved: 1, consumed: 2, denied: 2, expired: 2, withdrawn: 2 };
/** Most requests followed at once; beyond that new requests are not notified (logged). */
const MAX_TRACKED = 10_000;

export function startApprovalWebhooks(o: ApprovalWebhooksOptions): ApprovalWebhooks {
  const hookOf = (connection: string) => o.connections.get(connection)?.approval.webhook;
  if (![...o.connections.values()].some((c) => c.approval.webhook)) return { pending: 0, close: async () => {} };
  const log = o.log.child({ component: 'approval-webhook' });
  const delivery = new WebhookDelivery({ ...o.delivery, log });
  /** Requests this agent created, by the furthest status already notified. */
  const tracked = new Map<string, ApprovalStatus>();

  const notify = (a: Approval, status: NotifiedStatus) => {
    const hook = hookOf(a.connection);
    if (!hook) return;
    const n = notification(a, status, hook.agentUrl ?? o.agentUrl);
    delivery.send(
      { url: hook.url, timeoutMs: durationMs(hook.timeout), retries: hook.retries },
      hook.format === 'slack' ? slackBody(n) : n,
      { approvalId: a.id, event: n.event, connection: a.connection },
    );
  };

  const recheck = async (id: string) => {
    let a: Approval | undefined;
    try {
      a = await o.approvals.peek(id);
    } catch (err) {
      log.warn('cannot read a changed approval request; its notification may be late or missing', { approvalId: id, error: (err as Error).message });
      return;
    }
    const seen = tracked.get(id);
    if (seen === undefined) return;
    if (!a) return void tracked.delete(id);
    if (RANK[a.status] <= RANK[seen]) return;
    // Consumption follows approval at once on the holding agent; a late read may see only the former.
    const status: ApprovalStatus = a.status === 'consumed' ? 'approved' : a.status;
    if (RANK[status] > RANK[seen]) notify(a, status as NotifiedStatus);
    if (RANK[a.status] >= 2) tracked.delete(id);
    else tracked.set(id, a.status);
  };

  const unsubscribe = o.approvals.subscribe({
    created(a) {
      if (!hookOf(a.connection)) return;
      if (tracked.size >= MAX_TRACKED) return log.warn('too many open approval requests followed; this one is not notified', { approvalId: a.id });
      tracked.set(a.id, 'pending');
      notify(a, 'pending');
    },
    changed(id) {
      const ids = id === '*' ? [...tracked.keys()] : tracked.has(id) ? [id] : [];
      for (const x of ids) void recheck(x);
    },
  });

  return {
    get pending() {
      return delivery.pending;
    },
    async close() {
      unsubscribe();
      tracked.clear();
      await delivery.close();
    },
  };
}
