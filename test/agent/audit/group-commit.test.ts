// Group commit (store.ts): every append of one event-loop turn, whichever callback made it, goes out in
// one write, and no caller hears back before that write has completed.
import { describe, expect, it } from 'vitest';
import { GroupCommit, HealthLoop, type SealedEvent } from '../../../agent/src/audit/store.js';
import { GENESIS, makeRefusedEvent, type AuditEvent } from '../../../agent/src/audit/events.js';
import { verifyChain } from '../../../agent/src/audit/verify.js';

function commitWith(write: (batch: SealedEvent[]) => Promise<void>) {
  const health = new HealthLoop(async () => {});
  return { commit: new GroupCommit('agent-a', { seq: 0, hash: GENESIS, ts: '' }, Date.now, write, health), health };
}

describe('GroupCommit', () => {
  it('writes the appends of one event-loop turn, made from different callbacks, in one batch', async () => {
    const batches: string[][] = [];
    const { commit, health } = commitWith(async (b) => {
      batches.push(b.map((s) => s.line));
    });
    // Three timers due together run in one timers phase: one turn, three "sessions".
    const appended = await Promise.all(
      [0, 1, 2].map((i) => new Promise<Promise<AuditEvent>>((res) => setTimeout(() => res(commit.append(makeRefusedEvent({ reason: `t${i}` }))), 0))),
    );
    await Promise.all(appended);
    expect(batches.map((b) => b.length)).toEqual([3]);
    // A later turn is a batch of its own.
    await commit.append(makeRefusedEvent({ reason: 'later' }));
    expect(batches.map((b) => b.length)).toEqual([3, 1]);
    expect(await verifyChain(batches.flat())).toEqual({ ok: true, events: 4 });
    health.stop();
  });

  it('resolves no append before its batch is written, and rejects them all when it fails', async () => {
    let finish!: (ok: boolean) => void;
    const { commit, health } = commitWith(() => new Promise<void>((res, rej) => (finish = (ok) => (ok ? res() : rej(new Error('disk full'))))));
    const settled: string[] = [];
    const a = commit.append(makeRefusedEvent({ reason: 'a' })).then(() => settled.push('a'));
    const b = commit.append(makeRefusedEvent({ reason: 'b' })).then(() => settled.push('b'));
    await new Promise((r) => setTimeout(r, 20));
    expect(settled).toEqual([]); // the write has not completed
    finish(true);
    await Promise.all([a, b]);
    expect(settled).toEqual(['a', 'b']);
    const c = commit.append(makeRefusedEvent({ reason: 'c' }));
    await new Promise((r) => setTimeout(r, 20));
    finish(false);
    await expect(c).rejects.toThrow(/not writable: disk full/);
    expect(commit.last.seq).toBe(2); // the failed batch did not advance the chain
    health.stop();
  });
});
