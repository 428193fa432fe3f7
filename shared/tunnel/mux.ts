// Streams over one WebSocket, with per-stream credit and whole-socket backpressure. Both ends use it:
// the CLI attaches a local TCP socket to each stream, the agent a Postgres session.
//
//   local source ──send()──► credit left? ──► ws.send(DATA) ──► peer ──► end.write() ──► drained ──► WINDOW
//                              no: end.pause() until WINDOW arrives
//   ws.bufferedAmount above HIGH_WATER: pause every source until that message is flushed.
//
// DATA is coalesced: what a stream's end sends during one turn of the event loop (several socket reads
// taken in one wakeup) is framed in the loop's check phase (setImmediate), every stream of the turn in
// one corked write (one syscall), or as soon as FRAME_DATA_BYTES are pending. A stream whose bytes end
// at a protocol sync point (a ReadyForQuery answer, a client's Sync or single Query) while no other
// stream is waiting and no other stream's answer is awaited (its peer's last bytes ended with a Sync or
// Query: only the agent's streams ever are) is framed at once: the peer is idle until it gets them,
// nothing is gained by waiting. With many busy streams the answers of one turn share one write.
import type WebSocket from 'ws';
import {
  FrameType,
  HEADER_BYTES,
  INITIAL_WINDOW,
  FrameError,
  decodeFrame,
  encodeClose,
  encodeDataParts,
  encodeJson,
  encodeWindow,
  readWindowCredit,
  decodeJson,
  RenewPayload,
  type TunnelEvent,
} from './frame.js';

const HIGH_WATER = 8 * 1024 * 1024;
/**
 * Largest DATA payload we put in one frame. The receiver reads its socket 64 KiB at a time; ws hands
 * back a view of that read when a frame lies inside it and copies (allocates) when a frame spans reads.
 * 16 KiB frames span a read boundary about a quarter of the time, 256 KiB ones always did (measured:
 * ~20% of the CLI's CPU in ws's frame assembly on bulk reads). Corking keeps the syscall count as it was.
 */
const FRAME_DATA_BYTES = 16 * 1024 - HEADER_BYTES - 14;
/** Return credit in batches: one WINDOW frame per quarter window consumed, not per read. */
const CREDIT_BATCH = INITIAL_WINDOW / 4;

/** The local side of a stream: a TCP socket (CLI) or a Postgres session (agent). */
export interface StreamEnd {
  /** Bytes from the peer; always taken. Return false when they are still queued; call mux.drained() later. */
  write(data: Buffer): boolean;
  /** Stop / restart producing bytes for send(). */
  pause(): void;
  resume(): void;
  /** The peer closed the stream, or the tunnel went away. Release everything. */
  close(reason?: string): void;
}

interface StreamState {
  end: StreamEnd;
  sendCredit: number;
  /** Bytes received and consumed but not yet granted back to the peer. */
  unreported: number;
  /** Bytes received but not yet consumed (the local end said "full"). */
  pending: number;
  pausedForCredit: boolean;
  /** DATA sent by the end but not yet framed (coalesced until the loop's check phase). */
  out: Buffer[];
  outBytes: number;
  /** The peer's last DATA ended with a request (Sync, Query) not answered yet: our answer may come any moment. */
  awaited: boolean;
}

export interface MuxHooks {
  /** Agent side: a stream was opened by the peer. Return its end, or throw to refuse it. */
  onOpen?(streamId: number, payload: Buffer): StreamEnd;
  /** CLI side: an event from the agent. */
  onEvent?(event: TunnelEvent, raw: Buffer): void;
  /** Agent side: the CLI presents a renewed token for this tunnel (validated RenewPayload). */
  onRenew?(renew: RenewPayload): void;
  /** The peer broke the frame protocol; the mux has closed the socket. */
  onProtocolError?(err: Error): void;
  /** Max concurrently open streams (agent side). */
  maxStreams?: number;
}

const READY_FOR_QUERY = 0x5a; // 'Z' len=5 status
const SYNC = 0x53; // 'S' len=4
const QUERY = 0x51; // 'Q'

/**
 * True when the bytes end where the other side must answer before more comes: a ReadyForQuery (agent →
 * CLI), a Sync, or exactly one simple Query (CLI → agent). Only a hint for flushing early; a false match
 * inside a row or COPY data costs one earlier frame, nothing else.
 */
export function endsAtSyncPoint(b: Buffer): boolean {
  const n = b.length;
  if (n >= 6 && b[n - 6] === READY_FOR_QUERY && b[n - 5] === 0 && b[n - 4] === 0 && b[n - 3] === 0 && b[n - 2] === 5) return true;
  return endsWithRequest(b);
}

/** True when the bytes end with a client's request for an answer: a Sync, or exactly one simple Query. */
function endsWithRequest(b: Buffer): boolean {
  const n = b.length;
  if (n >= 5 && b[n - 5] === SYNC && b[n - 4] === 0 && b[n - 3] === 0 && b[n - 2] === 0 && b[n - 1] === 4) return true;
  return n >= 5 && b[0] === QUERY && b.readUInt32BE(1) + 1 === n;
}

export class TunnelMux {
  private readonly streams = new Map<number, StreamState>();
  private wsPaused = false;
  private closed = false;
  /** Streams whose peer waits for our answer (StreamState.awaited). */
  private awaitedCount = 0;
  /** Streams with pending DATA, flushed by one setImmediate. */
  private readonly dirty = new Set<number>();
  private flushScheduled = false;
  /** The WebSocket's TCP socket, corked while a turn's frames are written (ws exposes it, undocumented). */
  private readonly socket?: { cork(): void; uncork(): void };

  constructor(
    private readonly ws: WebSocket,
    private readonly hooks: MuxHooks = {},
  ) {
    this.socket = (ws as unknown as { _socket?: { cork(): void; uncork(): void } })._socket;
    ws.on('message', (data, isBinary) => this.onMessage(data as Buffer, isBinary));
    ws.on('close', () => this.shutdown('tunnel closed'));
    ws.on('error', () => this.shutdown('tunnel error'));
  }

  get size(): number {
    return this.streams.size;
  }

  /** Registers a locally created stream (CLI) and announces it to the peer with `openPayload`. */
  open(streamId: number, end: StreamEnd, openPayload: unknown): void {
    this.register(streamId, end);
    this.ws.send(encodeJson(FrameType.Open, streamId, openPayload));
  }

  /** Sends bytes produced by the local end. Pauses it when its credit or the socket runs out. */
  send(streamId: number, data: Buffer): void {
    const s = this.streams.get(streamId);
    if (!s || this.closed) return;
    s.sendCredit -= data.length;
    for (let at = 0; at < data.length; ) {
      const take = Math.min(FRAME_DATA_BYTES - s.outBytes, data.length - at);
      s.out.push(take === data.length ? data : data.subarray(at, at + take));
      s.outBytes += take;
      at += take;
      if (s.outBytes >= FRAME_DATA_BYTES) {
        this.dirty.add(streamId);
        this.scheduleFlush();
        this.frame(streamId, s);
      }
    }
    const answers = endsAtSyncPoint(data);
    if (answers && s.awaited) {
      s.awaited = false;
      this.awaitedCount--;
    }
    // Framed at once only when no other stream's answer may come in this turn too (those share one write).
    if (s.outBytes > 0 && this.dirty.size === 0 && answers && this.awaitedCount === 0) this.flush(streamId, s);
    else if (s.outBytes > 0) {
      this.dirty.add(streamId);
      this.scheduleFlush();
    }
    if (s.sendCredit <= 0 && !s.pausedForCredit) {
      s.pausedForCredit = true;
      s.end.pause();
    }
  }

  /** The local end consumed what it refused earlier: grant the peer its credit back. */
  drained(streamId: number): void {
    const s = this.streams.get(streamId);
    if (!s) return;
    s.unreported += s.pending;
    s.pending = 0;
    this.grant(streamId, s);
  }

  event(streamId: number, event: TunnelEvent): void {
    if (this.closed) return;
    const s = this.streams.get(streamId);
    if (s) this.flush(streamId, s); // after the bytes sent before it
    this.sendRaw(encodeJson(FrameType.Event, streamId, event));
  }

  /** CLI side: presents a renewed access token for the whole tunnel (stream 0). */
  renew(token: string): void {
    if (!this.closed) this.sendRaw(encodeJson(FrameType.Renew, 0, { token } satisfies RenewPayload));
  }

  /** Closes one stream from the local side; the peer's end is told. */
  close(streamId: number, reason?: string): void {
    const s = this.streams.get(streamId);
    if (!s) return;
    this.flush(streamId, s); // the stream's last bytes go before its CLOSE
    this.forget(streamId, s);
    if (!this.closed && this.ws.readyState === this.ws.OPEN) this.sendRaw(encodeClose(streamId, reason));
  }

  /** Ends every stream (the socket went away or is being shut down). */
  shutdown(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    for (const [, s] of this.streams) s.end.close(reason);
    this.streams.clear();
    this.awaitedCount = 0;
  }

  private register(streamId: number, end: StreamEnd): StreamState {
    const s: StreamState = { end, sendCredit: INITIAL_WINDOW, unreported: 0, pending: 0, pausedForCredit: false, out: [], outBytes: 0, awaited: false };
    this.streams.set(streamId, s);
    if (this.wsPaused) end.pause();
    return s;
  }

  private forget(streamId: number, s: StreamState): void {
    this.streams.delete(streamId);
    if (s.awaited) this.awaitedCount--;
  }

  /** Frames a stream's pending DATA (one copy into the frame, as before coalescing). */
  private flush(streamId: number, s: StreamState): void {
    this.dirty.delete(streamId);
    this.frame(streamId, s);
  }

  /** Frames pending DATA; while the turn's flush is due the socket stays corked and writes nothing yet. */
  private frame(streamId: number, s: StreamState): void {
    if (s.outBytes === 0) return;
    const parts = s.out;
    s.out = [];
    s.outBytes = 0;
    if (!this.closed) this.sendRaw(encodeDataParts(streamId, parts));
  }

  /** At the end of the turn: one corked write for every frame framed early and every stream still pending. */
  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    this.socket?.cork();
    setImmediate(this.flushAll);
  }

  private readonly flushAll = (): void => {
    this.flushScheduled = false;
    for (const id of this.dirty) {
      const s = this.streams.get(id);
      if (s) this.frame(id, s);
    }
    this.dirty.clear();
    this.socket?.uncork();
  };

  private sendRaw(frame: Buffer): void {
    if (this.ws.readyState !== this.ws.OPEN) return;
    if (this.ws.bufferedAmount + frame.length > HIGH_WATER && !this.wsPaused) {
      // The socket is backed up: stop every source until this frame (and all before it) is flushed.
      this.wsPaused = true;
      for (const [, s] of this.streams) s.end.pause();
      this.ws.send(frame, () => this.resumeAll());
      return;
    }
    this.ws.send(frame);
  }

  private resumeAll(): void {
    this.wsPaused = false;
    for (const [, s] of this.streams) if (!s.pausedForCredit) s.end.resume();
  }

  private grant(streamId: number, s: StreamState): void {
    if (s.unreported >= CREDIT_BATCH) {
      this.sendRaw(encodeWindow(streamId, s.unreported));
      s.unreported = 0;
    }
  }

  private fail(err: Error): void {
    this.hooks.onProtocolError?.(err);
    this.ws.close(1002, err.message.slice(0, 120));
    this.shutdown('tunnel protocol error');
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (this.closed) return;
    if (!isBinary) return this.fail(new FrameError('text messages are not part of the tunnel protocol'));
    let frame;
    try {
      frame = decodeFrame(data);
    } catch (err) {
      return this.fail(err as Error);
    }
    const { type, streamId, payload } = frame;
    const s = this.streams.get(streamId);
    switch (type) {
      case FrameType.Data: {
        if (!s) return; // raced with a close; the bytes have nowhere to go
        if (!s.awaited && endsWithRequest(payload)) {
          s.awaited = true;
          this.awaitedCount++;
        }
        // write() always takes the bytes; false only means "slow down", like net.Socket#write.
        const consumed = s.end.write(payload);
        if (!consumed || s.pending > 0) s.pending += payload.length;
        else {
          s.unreported += payload.length;
          this.grant(streamId, s);
        }
        // A peer that ignores our window is broken: cap what it can make us hold.
        if (s.pending > INITIAL_WINDOW * 2) this.fail(new FrameError(`stream ${streamId} exceeded its window`));
        return;
      }
      case FrameType.Window: {
        if (!s) return;
        s.sendCredit += readWindowCredit(payload);
        if (s.pausedForCredit && s.sendCredit > 0) {
          s.pausedForCredit = false;
          if (!this.wsPaused) s.end.resume();
        }
        return;
      }
      case FrameType.Close: {
        if (!s) return;
        this.forget(streamId, s);
        s.end.close(payload.length ? payload.toString('utf8') : undefined);
        return;
      }
      case FrameType.Open: {
        if (!this.hooks.onOpen) return this.fail(new FrameError('OPEN is only sent by the CLI'));
        if (s) return this.fail(new FrameError(`stream ${streamId} is already open`));
        if (this.streams.size >= (this.hooks.maxStreams ?? 1024))
          return void this.sendRaw(encodeClose(streamId, 'too many streams on this tunnel'));
        let end: StreamEnd;
        try {
          end = this.hooks.onOpen(streamId, payload);
        } catch (err) {
          return void this.sendRaw(encodeClose(streamId, (err as Error).message));
        }
        this.register(streamId, end);
        return;
      }
      case FrameType.Event: {
        if (!this.hooks.onEvent) return this.fail(new FrameError('EVENT is only sent by the agent'));
        try {
          this.hooks.onEvent(JSON.parse(payload.toString('utf8')) as TunnelEvent, payload);
        } catch {
          /* an event we cannot read is informational only */
        }
        return;
      }
      case FrameType.Renew: {
        if (!this.hooks.onRenew) return this.fail(new FrameError('RENEW is only sent by the CLI'));
        let renew: RenewPayload;
        try {
          renew = decodeJson(RenewPayload, payload);
        } catch (err) {
          return this.fail(err as Error);
        }
        this.hooks.onRenew(renew);
        return;
      }
    }
  }
}
