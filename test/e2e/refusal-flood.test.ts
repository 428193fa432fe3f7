// A flood of refused upgrades stays bounded in the audit trail (issue 17): per source and reason per
// window, the first refusal is written whole and the rest become one event with a count.
import { describe, expect, it } from 'vitest';
import { useStack } from '../harness/stack.js';
import { rawUpgrade } from './wire.js';
import type { AuditEvent } from '../../agent/src/audit/events.js';

const WINDOW_MS = 1_500;
const s = useStack({ patients: 10, agent: { refusalWindowMs: WINDOW_MS } });

async function refusedEvents(): Promise<AuditEvent[]> {
  const out: AuditEvent[] = [];
  for await (const chunk of s.get().agent.store.exportEvents({}, 'jsonl')) {
    for (const l of chunk.split('\n')) if (l) out.push(JSON.parse(l));
  }
  return out.filter((e) => e.type === 'refused');
}

describe('refusal floods', () => {
  it('1,000 bad-token upgrades write a bounded number of events: the first whole, the rest as one count', async () => {
    const stack = s.get();
    const before = (await refusedEvents()).length;
    const statuses: string[] = [];
    const t0 = performance.now();
    for (let i = 0; i < 1000; i += 50) {
      statuses.push(...(await Promise.all(Array.from({ length: 50 }, () => rawUpgrade(stack.agent.url, 'Authorization: Bearer not.a.token\r\n').then((t) => t.split('\r\n')[0])))));
    }
    const windows = Math.ceil((performance.now() - t0) / WINDOW_MS) + 1;
    expect(statuses.every((l) => l.startsWith('HTTP/1.1 401'))).toBe(true);
    // The window closes, and the count is written.
    await new Promise((r) => setTimeout(r, WINDOW_MS * 2.5));
    const events = (await refusedEvents()).slice(before);
    // Bounded: the run may straddle a window boundary, so at most the first and one count per window.
    expect(events.length).toBeGreaterThanOrEqual(2);
    expect(events.length).toBeLessThanOrEqual(2 * windows);
    const [first] = events;
    expect(first.data).toMatchObject({ clientAddr: '127.0.0.1', code: expect.stringMatching(/^HTTP 401 /) });
    expect(first.data.count).toBeUndefined();
    expect(String(first.data.reason)).not.toContain('more refused');
    // Every refusal is accounted for: the whole ones plus the counts make 1,000.
    const total = events.reduce((n, e) => n + (typeof e.data.count === 'number' ? e.data.count : 1), 0);
    expect(total).toBe(1000);
    const agg = events.find((e) => typeof e.data.count === 'number')!;
    expect(agg.data.reason).toMatch(/^\d+ more refused like the first since \d{4}-/);
    expect(JSON.stringify(events)).not.toContain('not.a.token');
  }, 120_000);
});
