// The primary↔worker channel's own rules (the real IPC is exercised by test/e2e/agent-workers.test.ts):
// the calls of one turn leave as one message, errors come back as the classes callers test for, and a
// closed channel fails every call in flight instead of leaving it waiting.
import { describe, expect, it } from 'vitest';
import { EventEmitter } from 'node:events';
import { Channel, type IpcPort } from '../../../agent/src/cluster/channel.js';
import { ApprovalError } from '../../../agent/src/audit/approvals.js';
import { StoreUnavailableError } from '../../../agent/src/audit/store.js';

/** Two ends of an in-process pipe that clones like the IPC channel does (structured clone). */
function pair(): { a: IpcPort; b: IpcPort; sent: { a: number; b: number } } {
  const ea = new EventEmitter();
  const eb = new EventEmitter();
  const sent = { a: 0, b: 0 };
  const port = (self: 'a' | 'b', mine: EventEmitter, other: EventEmitter): IpcPort => ({
    send(m) {
      sent[self]++;
      setImmediate(() => other.emit('message', structuredClone(m)));
      return true;
    },
    on: (e, fn) => mine.on(e, fn),
    off: (e, fn) => mine.off(e, fn),
  });
  return { a: port('a', ea, eb), b: port('b', eb, ea), sent };
}

describe('cluster channel', () => {
  it('sends the calls of one turn in one message, and their answers in one', async () => {
    const { a, b, sent } = pair();
    const worker = new Channel(a);
    new Channel(b).handle('double', (n: number) => n * 2);
    const answers = await Promise.all([1, 2, 3, 4, 5].map((n) => worker.call<number>('double', n)));
    expect(answers).toEqual([2, 4, 6, 8, 10]);
    expect(sent).toEqual({ a: 1, b: 1 });
  });

  it('lets a lazy call ride with the next call, or go alone after a short wait', async () => {
    const { a, b, sent } = pair();
    const worker = new Channel(a);
    const seen: string[] = [];
    new Channel(b).handle('append', (what: string) => void seen.push(what));
    const lazy = worker.callLazily('append', 'result of 1');
    await new Promise((r) => setImmediate(r));
    expect(sent.a).toBe(0); // waiting for company
    await worker.call('append', 'statement 2');
    await lazy;
    expect(seen).toEqual(['result of 1', 'statement 2']); // in order, in one message
    expect(sent.a).toBe(1);
    await worker.callLazily('append', 'result of 2'); // alone: it still goes
    expect(sent.a).toBe(2);
    expect(seen).toEqual(['result of 1', 'statement 2', 'result of 2']);
  });

  it('brings errors back as the classes callers test for', async () => {
    const { a, b } = pair();
    const worker = new Channel(a);
    new Channel(b)
      .handle('vote', () => {
        throw new ApprovalError('SELF_APPROVAL', 'the requester cannot decide their own request');
      })
      .handle('append', async () => {
        throw new StoreUnavailableError('disk full');
      });
    const vote = await worker.call('vote').catch((e: unknown) => e);
    expect(vote).toBeInstanceOf(ApprovalError);
    expect((vote as ApprovalError).code).toBe('SELF_APPROVAL');
    expect(await worker.call('append').catch((e: unknown) => e)).toBeInstanceOf(StoreUnavailableError);
    expect(((await worker.call('nothing').catch((e: unknown) => e)) as Error).message).toContain('no handler for nothing');
  });

  it('delivers notices to listeners, and ignores messages that are not its own', async () => {
    const { a, b } = pair();
    const worker = new Channel(a);
    const primary = new Channel(b);
    const got: string[] = [];
    worker.on('approval-change', (id: string) => got.push(id));
    b.send({ type: 'prom-client:getMetricsReq', requestId: 1 });
    primary.notify('approval-change', 'ap_1');
    primary.notify('approval-change', 'ap_2');
    await new Promise((r) => setTimeout(r, 20));
    expect(got).toEqual(['ap_1', 'ap_2']);
  });

  it('fails calls in flight when closed, and every call after', async () => {
    const { a, b } = pair();
    const worker = new Channel(a);
    new Channel(b).handle('slow', () => new Promise(() => {}));
    const inFlight = worker.call('slow');
    await new Promise((r) => setTimeout(r, 10));
    worker.close(new StoreUnavailableError('the agent primary is gone'));
    await expect(inFlight).rejects.toBeInstanceOf(StoreUnavailableError);
    await expect(worker.call('slow')).rejects.toBeInstanceOf(StoreUnavailableError);
  });
});
