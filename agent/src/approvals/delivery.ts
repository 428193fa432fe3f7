// Webhook delivery: POSTs JSON documents to receivers, off the session path. `send` only queues and
// returns at once; one worker per receiver URL posts its queue in order (a request's notification
// before its decision), each try bounded by a timeout, retried with exponential backoff on network
// errors, timeouts, 408, 429 and 5xx. A receiver that is slow or dead delays only its own queue; the
// queue is bounded across receivers, and what does not fit is dropped with a log line. Nothing here
// throws into the caller, and the receiver URL (a Slack webhook URL is a secret) is logged only by origin.
import { Agent, request } from 'undici';
import type { Logger } from '../log.js';

export interface DeliveryTarget {
  url: string;
  timeoutMs: number;
  /** Tries after the first. */
  retries: number;
}

export interface DeliveryOptions {
  log: Logger;
  /** Most documents waiting across every receiver (default 1000). */
  maxQueued?: number;
  /** First backoff, doubled per retry up to maxBackoffMs (defaults 500 ms, 30 s). */
  backoffMs?: number;
  maxBackoffMs?: number;
}

interface Item {
  target: DeliveryTarget;
  body: string;
  /** What the log lines say about the document (ids, never contents). */
  label: Record<string, unknown>;
}

type TryResult = { ok: true } | { ok: false; retryable: boolean; reason: string };

export class WebhookDelivery {
  private readonly lanes = new Map<string, Item[]>();
  private queued = 0;
  private closed = false;
  private readonly inFlight = new Set<AbortController>();
  private readonly wakers = new Set<() => void>();
  private readonly workers = new Set<Promise<void>>();
  // Its own connection pool, closed with the delivery: nothing lingers after the agent stops. No
  // keep-alive (pipelining 0): notifications are rare, and a POST on a stale pooled socket is not retried.
  private readonly dispatcher = new Agent({ connections: 4, pipelining: 0 });
  private readonly maxQueued: number;
  private readonly backoffMs: number;
  private readonly maxBackoffMs: number;

  constructor(private readonly opts: DeliveryOptions) {
    this.maxQueued = opts.maxQueued ?? 1000;
    this.backoffMs = opts.backoffMs ?? 500;
    this.maxBackoffMs = opts.maxBackoffMs ?? 30_000;
  }

  /** Queues one document; false when it was dropped (queue full or closed). Never throws, never waits. */
  send(target: DeliveryTarget, doc: unknown, label: Record<string, unknown> = {}): boolean {
    const log = { ...label, target: originOf(target.url) };
    if (this.closed) return false;
    if (this.queued >= this.maxQueued) {
      this.opts.log.warn('webhook queue full; notification dropped', log);
      return false;
    }
    let body: string;
    try {
      body = JSON.stringify(doc);
    } catch (err) {
      this.opts.log.error('webhook document not serialisable; dropped', { ...log, error: (err as Error).message });
      return false;
    }
    this.queued++;
    const lane = this.lanes.get(target.url);
    if (lane) lane.push({ target, body, label });
    else {
      const fresh = [{ target, body, label }];
      this.lanes.set(target.url, fresh);
      const w = this.drain(target.url, fresh).finally(() => this.workers.delete(w));
      this.workers.add(w);
    }
    return true;
  }

  /** Documents queued or being delivered. */
  get pending(): number {
    return this.queued;
  }

  /** Stops: aborts tries in flight, drops what is queued (logged), closes connections. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const ac of this.inFlight) ac.abort();
    for (const wake of this.wakers) wake();
    await Promise.allSettled([...this.workers]);
    if (this.queued > 0) this.opts.log.warn('agent stopping; undelivered approval notifications dropped', { count: this.queued });
    await this.dispatcher.destroy().catch(() => {});
  }

  private async drain(url: string, lane: Item[]): Promise<void> {
    try {
      while (lane.length && !this.closed) {
        await this.deliver(lane[0]);
        lane.shift();
        this.queued--;
      }
    } catch (err) {
      // deliver() catches everything; this is the last line so that nothing escapes into the agent.
      this.opts.log.error('webhook worker failed', { target: originOf(url), error: (err as Error).message });
    } finally {
      // Between the loop's last check and here nothing awaits, so no document can slip in unseen.
      if (this.lanes.get(url) === lane) this.lanes.delete(url);
    }
  }

  private async deliver(item: Item): Promise<void> {
    const log = { ...item.label, target: originOf(item.target.url) };
    for (let attempt = 0; ; attempt++) {
      const r = await this.tryOnce(item);
      if (r.ok) {
        this.opts.log.debug('approval notification delivered', { ...log, tries: attempt + 1 });
        return;
      }
      if (!r.retryable || attempt >= item.target.retries || this.closed) {
        this.opts.log.warn('approval notification not delivered', { ...log, tries: attempt + 1, error: r.reason });
        return;
      }
      await this.sleep(Math.min(this.maxBackoffMs, this.backoffMs * 2 ** attempt));
      if (this.closed) return;
    }
  }

  private async tryOnce(item: Item): Promise<TryResult> {
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), item.target.timeoutMs);
    this.inFlight.add(ac);
    try {
      const res = await request(item.target.url, {
        method: 'POST',
        dispatcher: this.dispatcher,
        headers: { 'content-type': 'application/json', 'user-agent': 'hoop-agent' },
        body: item.body,
        signal: ac.signal,
      });
      await res.body.dump().catch(() => {});
      const s = res.statusCode;
      if (s >= 200 && s < 300) return { ok: true };
      // Redirects are not followed: the document goes where the operator said, or nowhere.
      return { ok: false, retryable: s === 408 || s === 429 || s >= 500, reason: `HTTP ${s}` };
    } catch (err) {
      if (ac.signal.aborted) return { ok: false, retryable: true, reason: this.closed ? 'agent stopping' : `no answer within ${item.target.timeoutMs} ms` };
      const e = err as { code?: string; cause?: { code?: string }; message?: string };
      return { ok: false, retryable: true, reason: e.cause?.code ?? e.code ?? e.message ?? 'request failed' };
    } finally {
      clearTimeout(timer);
      this.inFlight.delete(ac);
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(t);
        this.wakers.delete(wake);
        resolve();
      };
      const t = setTimeout(wake, ms);
      t.unref();
      this.wakers.add(wake);
    });
  }
}

/** scheme://host:port of a URL: enough to tell receivers apart in logs, without path or query secrets. */
export function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return '(invalid url)';
  }
}
