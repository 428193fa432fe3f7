// Benchmark only: the "audit off" arm of `npm run bench`'s cost-of-audit comparison. No config field
// can select it; only the environment variable HOOP_AGENT_BENCH_NO_AUDIT=1, which main.ts accepts on a
// loopback listener alone and announces with a warning at start. Everything but `append` (sessions,
// approvals, recordings, health) is the real store, so the two arms differ by the audit write only.
import type { AuditEvent, EventInput } from './events.js';
import { GENESIS } from './events.js';
import type { StateStore } from './store.js';

export const BENCH_NO_AUDIT_ENV = 'HOOP_AGENT_BENCH_NO_AUDIT';

/** The store with appends dropped: each resolves at once with an unsealed, unstored event (seq 0). */
export function withoutAudit(inner: StateStore): StateStore {
  const append = async (e: EventInput): Promise<AuditEvent> => ({ ...e, seq: 0, ts: new Date().toISOString(), prev: GENESIS, hash: GENESIS, agentId: inner.agentId });
  return new Proxy(inner, {
    get(target, key) {
      if (key === 'append') return append;
      const v = Reflect.get(target, key, target) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}
