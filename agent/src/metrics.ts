// Prometheus metrics (GET /metrics, text format, prom-client). What the agent counts it learns from the
// places it already passes through: the audit store (every session, statement, approval and refusal is an
// event there), the upstream connect, the tunnel sockets and the store's health. No label carries SQL
// text, an identity, a client address or a value: labels are configured connection names, policy rule
// ids, decisions, outcomes and error classes, all from small fixed sets.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { StateStore } from './audit/store.js';
import type { EventInput } from './audit/events.js';

export interface AgentMetrics {
  readonly registry: Registry;
  /** Wraps the store so every append is counted and timed (the store itself is unchanged). */
  meterStore<S extends Pick<StateStore, 'append'>>(store: S): S;
  /** Times one upstream connect; failures are counted by cause class (ECONNREFUSED, 57P03, …). */
  upstreamConnect<T>(connection: string, connect: () => Promise<T>): Promise<T>;
  /** A refused tunnel upgrade or API call, by its refusal code (TOKEN_EXPIRED, NO_TOKEN, …). */
  refused(code: string): void;
  /** Frames and bytes of one tunnel, in each direction. */
  tunnelFrame(direction: 'in' | 'out', bytes: number): void;
  tunnelsOpen: Gauge;
}

export function createMetrics(o: { connections: readonly string[]; health: () => { writable: boolean } }): AgentMetrics {
  const registry = new Registry();
  // Event-loop lag, heap and resident memory, CPU, handles: prom-client's process and nodejs_ metrics.
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 20 });
  const known = new Set(o.connections);
  // A refused upgrade names whatever connection the caller typed: never a label unless it is configured.
  const conn = (name: string | undefined) => (name && known.has(name) ? name : 'unknown');
  const registers = [registry];

  const sessionsOpen = new Gauge({ name: 'hoop_sessions_open', help: 'Sessions open now', labelNames: ['connection'], registers });
  const sessionsTotal = new Counter({ name: 'hoop_sessions_total', help: 'Sessions started', labelNames: ['connection'], registers });
  const statements = new Counter({ name: 'hoop_statements_total', help: 'Statements by policy decision and rule', labelNames: ['connection', 'decision', 'rule'], registers });
  const holds = new Counter({ name: 'hoop_holds_total', help: 'Approval requests by outcome (requested, decided, consumed, …)', labelNames: ['connection', 'outcome'], registers });
  const approvalWait = new Histogram({
    name: 'hoop_approval_wait_seconds',
    help: 'From a statement held to its approval used',
    buckets: [1, 5, 15, 60, 300, 900, 3600],
    registers,
  });
  const appendLatency = new Histogram({
    name: 'hoop_audit_append_seconds',
    help: 'Audit append latency (durable: fsync or commit)',
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
    registers,
  });
  const appendQueue = new Gauge({ name: 'hoop_audit_append_queue', help: 'Audit appends waiting to be durable', registers });
  const appendErrors = new Counter({ name: 'hoop_audit_append_errors_total', help: 'Audit appends that failed (statements refused)', registers });
  new Gauge({
    name: 'hoop_audit_store_writable',
    help: '1 when the audit store accepts writes, 0 when it fails closed',
    registers,
    collect() {
      this.set(o.health().writable ? 1 : 0);
    },
  });
  const upstreamErrors = new Counter({ name: 'hoop_upstream_connect_errors_total', help: 'Failed upstream connects by cause class', labelNames: ['connection', 'cause'], registers });
  const upstreamLatency = new Histogram({
    name: 'hoop_upstream_connect_seconds',
    help: 'Upstream connect and authentication time',
    labelNames: ['connection'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
    registers,
  });
  const refusals = new Counter({ name: 'hoop_refused_total', help: 'Refused tunnel upgrades by reason (token verification failures among them)', labelNames: ['reason'], registers });
  const frames = new Counter({ name: 'hoop_tunnel_frames_total', help: 'Tunnel WebSocket frames', labelNames: ['direction'], registers });
  const bytes = new Counter({ name: 'hoop_tunnel_bytes_total', help: 'Tunnel WebSocket payload bytes', labelNames: ['direction'], registers });
  // Per frame: the labelled series looked up once, not a label hash per frame.
  const perDirection = { in: [frames.labels('in'), bytes.labels('in')], out: [frames.labels('out'), bytes.labels('out')] } as const;
  const tunnelsOpen = new Gauge({ name: 'hoop_tunnels_open', help: 'Tunnels (WebSockets) open now', registers });
  // Held requests by id: when they were requested, for the wait histogram (bounded by the approval timeout).
  const heldSince = new Map<string, number>();

  function observe(e: EventInput): void {
    const c = conn(e.connection);
    switch (e.type) {
      case 'session_start':
        sessionsTotal.inc({ connection: c });
        sessionsOpen.inc({ connection: c });
        break;
      case 'session_end':
        sessionsOpen.dec({ connection: c });
        break;
      case 'statement':
        statements.inc({ connection: c, decision: String(e.data.decision ?? 'unknown'), rule: ruleClass(e.data.rule) });
        break;
      case 'refused':
        break; // counted at the HTTP edge (refused()), where the reason is a code
      default: {
        // Only approval events are holds (statement_result, async_message, … are not counted here).
        if (!e.type.startsWith('approval_')) break;
        const outcome = e.type.slice('approval_'.length);
        holds.inc({ connection: c, outcome });
        const id = String(e.data.approvalId ?? '');
        if (outcome === 'requested') {
          heldSince.set(id, performance.now());
          if (heldSince.size > 10_000) heldSince.delete(heldSince.keys().next().value!);
        } else if (outcome !== 'decided') {
          const t = heldSince.get(id);
          if (t !== undefined && outcome === 'consumed') approvalWait.observe((performance.now() - t) / 1000);
          heldSince.delete(id);
        }
      }
    }
  }

  return {
    registry,
    tunnelsOpen,
    meterStore(store) {
      const append: StateStore['append'] = async (e) => {
        appendQueue.inc();
        const end = appendLatency.startTimer();
        try {
          const sealed = await store.append(e);
          observe(e);
          return sealed;
        } catch (err) {
          appendErrors.inc();
          throw err;
        } finally {
          end();
          appendQueue.dec();
        }
      };
      // Everything else goes to the store itself, with its own `this`.
      return new Proxy(store, {
        get(target, prop) {
          if (prop === 'append') return append;
          const v = Reflect.get(target, prop, target);
          return typeof v === 'function' ? v.bind(target) : v;
        },
      });
    },
    async upstreamConnect(connection, connect) {
      const end = upstreamLatency.startTimer({ connection: conn(connection) });
      try {
        const up = await connect();
        end();
        return up;
      } catch (err) {
        upstreamErrors.inc({ connection: conn(connection), cause: causeClass(err) });
        throw err;
      }
    },
    refused(code) {
      refusals.inc({ reason: /^[A-Z_]{1,40}$/.test(code) ? code : 'OTHER' });
    },
    tunnelFrame(direction, n) {
      const [f, b] = perDirection[direction];
      f.inc();
      b.inc(n);
    },
  };
}

/**
 * A rule id cut to its class (`P3.function.pg_sleep` → `P3.function`): some ids end in a name taken from
 * the statement (a function, a setting), which is neither a bounded label nor free of the query's text.
 */
function ruleClass(rule: unknown): string {
  return typeof rule === 'string' ? rule.split('.').slice(0, 2).join('.').slice(0, 40) : 'none';
}

/** The class of an upstream failure, never its message: an errno code, a SQLSTATE, or the error's name. */
export function causeClass(err: unknown): string {
  const e = err as { code?: unknown; name?: unknown };
  if (typeof e?.code === 'string' && /^[A-Z0-9_]{1,32}$/.test(e.code)) return e.code;
  if (typeof e?.name === 'string' && /^[A-Za-z]{1,40}$/.test(e.name)) return e.name;
  return 'Error';
}
