// Hash-chain verification, shared by both stores and by `hoopctl audit verify FILE` on an export.
//
// Input is a stream of events (or stored JSON lines) in chain order per agent; agents may interleave
// (an export ordered by time), because each agent keeps its own chain. For each event we check, in
// order: it parses; its `seq` is the next expected one; its `prev` is the previous event's `hash`; its
// `hash` matches its content. The first failure is reported by sequence number:
//   edit       → the edited event's seq (its hash no longer matches its content)
//   deletion   → the missing seq (the next event arrives early)
//   reordering → the first seq out of place
//   insertion  → the seq where the extra event sits (duplicate seq, or a prev that does not link)
import { GENESIS, hashEvent, type ChainRecord as AuditEvent } from './chain.js';

export type VerifyResult = { ok: true; events: number } | { ok: false; brokenAt: number; reason: string };

export interface VerifyOptions {
  /**
   * Undefined: every chain must start at seq 1 with the genesis prev. A number: the first event seen
   * per agent may be any seq ≥ from and its prev is taken on trust (a partial export, `verify --from`).
   */
  from?: number;
  /** The head the caller knows was written for one agent: a shorter chain means a truncated tail. */
  expectLast?: { agentId: string; seq: number };
}

export async function verifyChain(
  src: Iterable<AuditEvent | string> | AsyncIterable<AuditEvent | string>,
  opts: VerifyOptions = {},
): Promise<VerifyResult> {
  const heads = new Map<string, { seq: number; hash: string }>();
  let n = 0;
  let lastAgent: string | undefined;
  for await (const item of src) {
    let e: AuditEvent;
    try {
      e = typeof item === 'string' ? (JSON.parse(item) as AuditEvent) : item;
    } catch {
      const h = lastAgent === undefined ? undefined : heads.get(lastAgent);
      return { ok: false, brokenAt: (h?.seq ?? 0) + 1, reason: 'unparsable record' };
    }
    const agent = String(e.agentId);
    lastAgent = agent;
    const head = heads.get(agent);
    const where = heads.size > 1 || head === undefined ? ` (agent ${agent})` : '';
    if (!Number.isSafeInteger(e.seq)) return { ok: false, brokenAt: (head?.seq ?? 0) + 1, reason: `record without a sequence number${where}` };
    if (head === undefined) {
      if (opts.from === undefined && (e.seq !== 1 || e.prev !== GENESIS)) {
        return { ok: false, brokenAt: Math.min(e.seq, 1), reason: `chain does not start at seq 1 with the genesis hash${where}` };
      }
      if (opts.from !== undefined && e.seq < opts.from) return { ok: false, brokenAt: e.seq, reason: `seq below ${opts.from}${where}` };
    } else {
      const want = head.seq + 1;
      if (e.seq !== want) {
        const what = e.seq > want ? 'missing' : e.seq === head.seq ? 'duplicated' : 'out of order';
        return { ok: false, brokenAt: Math.min(want, e.seq), reason: `expected seq ${want}, found ${e.seq}: record ${what}${where}` };
      }
      if (e.prev !== head.hash) return { ok: false, brokenAt: e.seq, reason: `prev does not match the hash of seq ${head.seq}${where}` };
    }
    if (hashEvent(e) !== e.hash) return { ok: false, brokenAt: e.seq, reason: `content does not match its hash${where}` };
    heads.set(agent, { seq: e.seq, hash: e.hash });
    n++;
  }
  if (opts.expectLast) {
    const last = heads.get(opts.expectLast.agentId)?.seq ?? (opts.from ?? 1) - 1;
    if (last < opts.expectLast.seq) return { ok: false, brokenAt: last + 1, reason: `chain ends at seq ${last}, ${opts.expectLast.seq} were written` };
  }
  return { ok: true, events: n };
}
