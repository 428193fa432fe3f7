// Refused upgrades, aggregated. Anyone can knock without a token, so one audit event per refusal would let
// an unauthenticated caller grow the tamper-evident trail (which is never pruned) at will. Per window and
// per (source address, refusal code), the first refusal is written whole at once; the rest are counted
// and written as one event with the count when the window closes. A window holds at most MAX_KEYS
// sources; past that, the others are counted under source "*" (an address-spraying flood stays bounded).
import { makeRefusedEvent, type EventInput } from './events.js';

export type RefusalFacts = Parameters<typeof makeRefusedEvent>[0];

const MAX_KEYS = 1024;

export class RefusalAggregator {
  private window = new Map<string, { facts: RefusalFacts; more: number }>();
  private windowStart: number;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly write: (e: EventInput) => void,
    private readonly windowMs: number,
    private readonly clock: () => number,
  ) {
    this.windowStart = clock();
    this.timer = setInterval(() => this.flush(), windowMs);
    this.timer.unref();
  }

  record(f: RefusalFacts): void {
    let key = `${f.clientAddr ?? ''}\u0000${f.code ?? ''}`;
    if (!this.window.has(key) && this.window.size >= MAX_KEYS) key = `*\u0000${f.code ?? ''}`;
    const seen = this.window.get(key);
    if (seen) {
      seen.more++;
      return;
    }
    const facts = key.startsWith('*\u0000') ? { ...f, clientAddr: '*' } : f;
    this.window.set(key, { facts, more: 0 });
    this.write(makeRefusedEvent(facts));
  }

  /** Writes one event per key that saw more than its first refusal, and opens a new window. */
  flush(): void {
    const since = new Date(this.windowStart).toISOString();
    for (const { facts, more } of this.window.values()) {
      if (more === 0) continue;
      this.write(
        makeRefusedEvent({
          ...facts,
          reason: `${more} more refused like the first since ${since} (${facts.reason.slice(0, 200)})`,
          count: more,
          since,
        }),
      );
    }
    this.window = new Map();
    this.windowStart = this.clock();
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}
