// Calls and notices between the agent's primary process and its workers, over the IPC channel that
// node:cluster opens (structured clone: `serialization: 'advanced'`). Every message of one event-loop
// turn goes out as one IPC write, so the audit appends of all sessions judged in a turn cost one write
// each way, as they do in one process (see audit/store.ts's group commit).
//
//   worker                                    primary
//   call('append', e) ── [{c: id, op, args}] ──► handler(op)(...args)
//        ◄────────────── [{r: id, ok, v | err}] ─┘
//   on('approval-change') ◄── [{n: op, v}] ─── notify(op, v)   (one-way)
import { ApprovalError, type ApprovalErrorCode } from '../audit/approvals.js';
import { StoreUnavailableError } from '../audit/store.js';

/** The process side of an IPC channel: `process` in a worker, a cluster Worker in the primary. */
export interface IpcPort {
  send(message: unknown): boolean;
  on(event: 'message', fn: (message: unknown) => void): unknown;
  off(event: 'message', fn: (message: unknown) => void): unknown;
}

type Wire =
  | { c: number; op: string; args: unknown[] }
  | { r: number; ok: true; v: unknown }
  | { r: number; ok: false; err: WireError }
  | { n: string; v: unknown };

interface WireError {
  name: string;
  message: string;
  code?: string;
}

/** How long a lazy call may wait for company (the embedded store's own wait for a result event is 10 ms). */
const LAZY_MS = 10;

/** Tags our batches, so other users of the channel (prom-client's cluster metrics) are left alone. */
const TAG = 'hoop-agent/1';

export type Handler = (...args: any[]) => unknown;

export class Channel {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: unknown): void }>();
  private readonly handlers = new Map<string, Handler>();
  private readonly listeners = new Map<string, Set<(v: any) => void>>();
  private outbox: Wire[] = [];
  private flushAt?: NodeJS.Immediate;
  private lazyAt?: NodeJS.Timeout;
  private closedWith?: Error;
  private readonly onMessage = (m: unknown) => this.receive(m);

  constructor(private readonly port: IpcPort) {
    port.on('message', this.onMessage);
  }

  /** Calls `op` on the other side; rejects with the other side's error, or when the channel closes. */
  call<T = unknown>(op: string, ...args: unknown[]): Promise<T> {
    return this.request(op, args, false);
  }

  /**
   * A call nothing waits on right away (an event recorded after the fact, a recording): it leaves with
   * the next message of the channel, or after `LAZY_MS`, so a statement costs one message each way.
   */
  callLazily<T = unknown>(op: string, ...args: unknown[]): Promise<T> {
    return this.request(op, args, true);
  }

  private request<T>(op: string, args: unknown[], lazy: boolean): Promise<T> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.queue({ c: id, op, args }, lazy);
    });
  }

  /** A one-way notice (approval changes, revocations, health). */
  notify(op: string, v: unknown): void {
    if (!this.closedWith) this.queue({ n: op, v });
  }

  handle(op: string, fn: Handler): this {
    this.handlers.set(op, fn);
    return this;
  }

  on(op: string, fn: (v: any) => void): () => void {
    let set = this.listeners.get(op);
    if (!set) this.listeners.set(op, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  /** The other side is gone: every call in flight fails (callers refuse, as with an unwritable store). */
  close(reason: Error): void {
    if (this.closedWith) return;
    this.closedWith = reason;
    this.port.off('message', this.onMessage);
    if (this.flushAt) clearImmediate(this.flushAt);
    if (this.lazyAt) clearTimeout(this.lazyAt);
    this.outbox = [];
    for (const p of this.pending.values()) p.reject(reason);
    this.pending.clear();
  }

  private queue(w: Wire, lazy = false): void {
    this.outbox.push(w);
    if (!lazy) this.flushAt ??= setImmediate(() => this.flush());
    else if (!this.flushAt) this.lazyAt ??= setTimeout(() => this.flush(), LAZY_MS);
  }

  private flush(): void {
    this.flushAt = undefined;
    if (this.lazyAt) clearTimeout(this.lazyAt);
    this.lazyAt = undefined;
    const batch = this.outbox;
    this.outbox = [];
    if (!batch.length || this.closedWith) return;
    try {
      this.port.send({ [TAG]: batch });
    } catch (err) {
      this.close(new StoreUnavailableError(`agent primary unreachable: ${(err as Error).message}`));
    }
  }

  private receive(m: unknown): void {
    const batch = (m as Record<string, unknown> | null)?.[TAG];
    if (!Array.isArray(batch)) return;
    for (const w of batch as Wire[]) {
      if ('c' in w) this.serve(w);
      else if ('r' in w) {
        const p = this.pending.get(w.r);
        if (!p) continue;
        this.pending.delete(w.r);
        if (w.ok) p.resolve(w.v);
        else p.reject(revive(w.err));
      } else for (const fn of this.listeners.get(w.n) ?? []) fn(w.v);
    }
  }

  private serve(w: { c: number; op: string; args: unknown[] }): void {
    const fn = this.handlers.get(w.op);
    let result: Promise<unknown>;
    try {
      if (!fn) throw new Error(`no handler for ${w.op}`);
      result = Promise.resolve(fn(...w.args));
    } catch (err) {
      result = Promise.reject(err);
    }
    result.then(
      (v) => this.queue({ r: w.c, ok: true, v }),
      (err: Error & { code?: string }) => this.queue({ r: w.c, ok: false, err: { name: err?.name ?? 'Error', message: err?.message ?? String(err), code: err?.code } }),
    );
  }
}

/** The error the other side threw, as the class callers test for (approval rules, an unwritable store). */
function revive(e: WireError): Error {
  if (e.name === 'ApprovalError') return new ApprovalError(e.code as ApprovalErrorCode, e.message);
  if (e.name === 'StoreUnavailableError') return new StoreUnavailableError(e.message);
  return Object.assign(new Error(e.message), { name: e.name, code: e.code });
}
