// The embedded state store (default): append-only, hash-chained JSON Lines files in dataDir/audit.
//
//   dataDir/audit/
//     <agentId>.lock                        pid of the process that owns this agent's chain
//     <agentId>.<firstSeq:12>.jsonl         event segments, rotated at `segmentBytes`
//     <agentId>.<firstSeq:12>.idx           a sealed segment's index: its size, last event, sparse
//                                           seq→offset points (written at rotation)
//     <agentId>.sessions                    every session's summary as of the last sealed segment
//     <agentId>.checkpoints                 signed checkpoints, one JSON line each (not *.jsonl: tools
//                                           that glob the segments must not take it for one)
//     approvals.jsonl                       approval records, a full record per change (last one wins)
//     recordings/<sessionId>.jsonl          masked transcripts, one file per session
//
// One chain per agent: a chain needs a single writer that knows the head, and files give no cross-
// process lock that survives SIGKILL cleanly; the lock file (stale when its pid is dead) keeps a second
// process off the chain, and agents that share a directory would each write their own chain.
//
// Durability: a batch is one positional write at the durable end of the segment, then fdatasync (group
// commit, see store.ts); a statement's result event, which nothing waits for, rides along with the next
// batch (`resultDelayMs`), so a session costs one write per statement. A failed write marks the file
// dirty: the handle is dropped, and the next batch or the health probe reopens the file and truncates it
// back to the durable size before writing again.
//
// Memory and start-up do not grow with the trail's length: what stays in memory is one summary per
// session (for listing), never a position per event. At start, sealed segments whose .idx matches them
// (same size, the recorded last line is the file's last line) are not read, and the summaries come from
// the .sessions snapshot; segments after the snapshot (normally only the last one) are scanned. Without
// a usable snapshot (a trail written by an older agent, a crash right after a rotation, files changed
// since) every segment is scanned once and the indexes are written. The last segment is always scanned:
// anything after its last newline is a torn write from a crash (no append that resolved can be in it)
// and is truncated, so complete events keep chaining. A session's events are read on demand from the
// segments its seq range spans, narrowed by the sparse points.
//
// Recordings live in their own files, so retention deletes them without touching a chain segment.
import { closeSync, open as openFd, writeSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { AuditEvent, EventInput } from './events.js';
import { GENESIS, canonicalJson } from './events.js';
import { verifyChain, type VerifyResult } from './verify.js';
import {
  assertSessionId,
  DEFAULT_RECORDING_LIMITS,
  filterBounds,
  foldInto,
  foldSummary,
  encodeCursor,
  formatExport,
  GroupCommit,
  HealthLoop,
  inRange,
  isoTime,
  RecordingCaps,
  type ChainHead,
  type Clock,
  type ExportFormat,
  type RecordingEntry,
  type RecordingLimits,
  type SealedEvent,
  type SessionFilter,
  type SessionPage,
  type SessionSummary,
  type StateStore,
} from './store.js';
import { ApprovalBook, notFound, type Approval, type ApprovalBackend, type ApprovalStatus } from './approvals.js';

export interface JsonlStoreOptions {
  dataDir: string;
  agentId: string;
  clock: Clock;
  /** Rotate the segment when a batch would take it past this size (default 16 MiB: the start-up scan). */
  segmentBytes?: number;
  recording?: RecordingLimits;
  /**
   * When an append counts as written. 'os' (default): once the kernel has the bytes, which survives the
   * agent being killed (SIGKILL, OOM), with fdatasync batched in the background every `syncIntervalMs`;
   * a per-statement fsync would cost the relay a disk flush on every query. 'disk': after fdatasync, for
   * those who must survive power loss at that price.
   */
  durability?: 'os' | 'disk';
  syncIntervalMs?: number;
  /**
   * How long a statement's result event (nothing waits for it: the statement already ran) may wait to
   * share the write of the session's next statement event: one write per statement instead of two.
   * Reads flush it first. 0 writes it at once.
   */
  resultDelayMs?: number;
}

interface Segment {
  firstSeq: number;
  file: string;
  /** Durable size: everything before it was fsync'd. */
  size: number;
}

/** A segment's last event and where its line starts. */
interface LastLine {
  seq: number;
  hash: string;
  ts: string;
  offset: number;
}

/** A sealed segment's .idx file: enough to start without reading the segment. */
interface SegmentIndex {
  v: 1;
  size: number;
  last: LastLine;
  /** Sparse offsets: pairs (seq, byte offset of its line), ascending, about one per SPARSE_EVERY events. */
  sparse: number[];
}

/** The .sessions file: every session's summary as of the end of one sealed segment. */
interface SessionsSnapshot {
  v: 1;
  /** That segment's first seq, size and last seq. */
  segment: number;
  size: number;
  lastSeq: number;
  /** In first-event order. */
  sessions: SessionSummary[];
}

/** Events between two sparse offsets: a session's events are read from its seq range, not the whole segment. */
const SPARSE_EVERY = 256;
const MAX_OPEN_RECORDINGS = 128;
const AGENT_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export class JsonlStore implements StateStore {
  readonly agentId: string;
  readonly approvals: ApprovalBook;
  private readonly dir: string;
  private readonly clock: Clock;
  private readonly segmentBytes: number;
  private readonly durability: 'os' | 'disk';
  private readonly syncIntervalMs: number;
  private readonly resultDelayMs: number;
  private readonly segments: Segment[] = [];
  private fh?: FileHandle;
  private dirty = false;
  private commit!: GroupCommit;
  private readonly healthLoop: HealthLoop;
  private readonly caps: RecordingCaps;
  // Session index, in first-event order (= start time order: chain timestamps never go backwards).
  private readonly entries: SessionSummary[] = [];
  private readonly byId = new Map<string, number>();
  private readonly bySub = new Map<string, number[]>();
  private readonly byConn = new Map<string, number[]>();
  /** The last event written (or found at start), for the .idx of the segment being sealed. */
  private lastLine?: LastLine;
  /** Sparse offsets of the segment being written (see SegmentIndex). */
  private sparse: number[] = [];
  private readonly approvalsById = new Map<string, Approval>();
  private approvalsFh?: FileHandle;
  private approvalsLock: Promise<unknown> = Promise.resolve();
  private readonly approvalChanges = new EventEmitter();

  private constructor(opts: JsonlStoreOptions) {
    if (!AGENT_ID.test(opts.agentId)) throw new RangeError(`invalid agent id: ${opts.agentId}`);
    this.agentId = opts.agentId;
    this.dir = path.join(opts.dataDir, 'audit');
    this.clock = opts.clock;
    this.segmentBytes = opts.segmentBytes ?? 16 << 20;
    this.durability = opts.durability ?? 'os';
    this.syncIntervalMs = opts.syncIntervalMs ?? 100;
    this.resultDelayMs = opts.resultDelayMs ?? 10;
    this.caps = new RecordingCaps(opts.recording ?? DEFAULT_RECORDING_LIMITS);
    this.healthLoop = new HealthLoop(() => this.commit.exclusive(() => this.reopen()));
    this.approvalChanges.setMaxListeners(0);
    const backend: ApprovalBackend = {
      insert: (a) => this.withApprovals(async () => this.saveApproval(a)),
      load: async (id) => this.approvalsById.get(id),
      list: async (f) => [...this.approvalsById.values()].filter((a) => (!f.status || a.status === f.status) && (!f.connection || a.connection === f.connection)),
      mutate: (id, fn) =>
        this.withApprovals(async () => {
          const cur = this.approvalsById.get(id);
          if (!cur) throw notFound(id);
          const next = fn(cur);
          if (next !== cur) await this.saveApproval(next);
          return next;
        }),
      changes: this.approvalChanges,
    };
    this.approvals = new ApprovalBook(backend, this.agentId, this.clock);
  }

  static async open(opts: JsonlStoreOptions): Promise<JsonlStore> {
    const s = new JsonlStore(opts);
    try {
      await s.start();
    } catch (err) {
      if (s.locked) JsonlStore.held.delete(path.join(s.dir, `${s.agentId}.lock`));
      throw err;
    }
    return s;
  }

  private async start(): Promise<void> {
    await mkdir(path.join(this.dir, 'recordings'), { recursive: true });
    await this.lock();
    const prefix = this.agentId + '.';
    const names = (await readdir(this.dir)).filter((n) => n.startsWith(prefix) && /^\d{12}\.jsonl$/.test(n.slice(prefix.length))).sort();
    for (const name of names) this.segments.push({ firstSeq: Number(name.slice(prefix.length, -6)), file: path.join(this.dir, name), size: 0 });
    const sealed = this.segments.slice(0, -1);
    const ixs: (SegmentIndex | undefined)[] = [];
    for (const seg of sealed) ixs.push(await this.readSegmentIndex(seg));
    // Summaries from the snapshot when it matches an indexed sealed segment; else every segment is read.
    const from = await this.loadSnapshot(ixs);
    for (const [k, seg] of sealed.entries()) if (k < from && !ixs[k]) seg.size = (await stat(seg.file)).size;
    if (from > 0) this.lastLine = ixs[from - 1]!.last;
    for (let k = from; k < this.segments.length; k++) {
      const seg = this.segments[k];
      this.sparse = [];
      const last = k === this.segments.length - 1;
      await this.scanSegment(seg, last);
      if (last) break;
      if (!ixs[k]) await this.writeSegmentIndex(seg); // the next start does not read it
      if (k === sealed.length - 1) await this.writeSnapshot(seg); // nor any segment before it
    }
    const last = this.lastLine;
    const head: ChainHead = last ? { seq: last.seq, hash: last.hash, ts: last.ts } : { seq: 0, hash: GENESIS, ts: '' };
    await this.loadApprovals();
    this.commit = new GroupCommit(this.agentId, head, this.clock, (b) => this.writeBatch(b), this.healthLoop, this.resultDelayMs);
  }

  /** Reads a segment whole, indexing its sessions; on the last one a torn tail is cut first. */
  private async scanSegment(seg: Segment, last: boolean): Promise<void> {
    const buf = await readFile(seg.file);
    seg.size = buf.length;
    const complete = buf.lastIndexOf(0x0a) + 1;
    if (complete < buf.length && last) {
      // A torn write from a crash: never acknowledged (its batch was not fsync'd), safe to cut.
      const fh = await open(seg.file, 'r+');
      await fh.truncate(complete);
      await fh.datasync();
      await fh.close();
      seg.size = complete;
    }
    for (let off = 0; off < seg.size; ) {
      const end = buf.indexOf(0x0a, off);
      if (end < 0) break;
      let e: AuditEvent | undefined;
      try {
        e = JSON.parse(buf.toString('utf8', off, end)) as AuditEvent;
      } catch {
        // A damaged record: left in place for `verify` to report; the index skips it.
      }
      if (e && Number.isSafeInteger(e.seq)) {
        this.index(e);
        this.lastLine = { seq: e.seq, hash: e.hash, ts: e.ts, offset: off };
        this.sparsePoint(e.seq, off);
      }
      off = end + 1;
    }
  }

  /** Notes where the line of event `seq` starts, if the last point is far enough behind. */
  private sparsePoint(seq: number, offset: number): void {
    const n = this.sparse.length;
    if (n === 0 || seq - this.sparse[n - 2] >= SPARSE_EVERY) this.sparse.push(seq, offset);
  }

  private indexFile(seg: Segment): string {
    return seg.file.slice(0, -'.jsonl'.length) + '.idx';
  }

  /** A sealed segment's .idx, if it still describes the segment (size and last line unchanged). */
  private async readSegmentIndex(seg: Segment): Promise<SegmentIndex | undefined> {
    let ix: SegmentIndex;
    try {
      ix = JSON.parse(await readFile(this.indexFile(seg), 'utf8')) as SegmentIndex;
    } catch {
      return undefined; // none yet, or torn: the segment is scanned instead
    }
    if (ix.v !== 1 || !ix.last || !Array.isArray(ix.sparse)) return undefined;
    const fh = await open(seg.file, 'r');
    try {
      if ((await fh.stat()).size !== ix.size) return undefined;
      const len = ix.size - ix.last.offset;
      if (!(len > 1 && len < 1 << 24)) return undefined;
      const buf = Buffer.alloc(len);
      await fh.read(buf, 0, len, ix.last.offset);
      if (buf[len - 1] !== 0x0a) return undefined;
      const e = JSON.parse(buf.toString('utf8', 0, len - 1)) as AuditEvent;
      if (e.seq !== ix.last.seq || e.hash !== ix.last.hash) return undefined;
    } catch {
      return undefined;
    } finally {
      await fh.close();
    }
    seg.size = ix.size;
    return ix;
  }

  /**
   * Writes the .idx of the segment being sealed (its last event and sparse points are the current ones).
   * Best effort, like the snapshot: without them the next start reads segments, as before indexes
   * existed. At rotation neither is awaited (their fsync must not hold up the batch); `close` waits.
   */
  private writeSegmentIndex(seg: Segment): Promise<void> {
    const last = this.lastLine;
    if (!last || last.seq < seg.firstSeq) return Promise.resolve(); // no readable event in it
    const ix: SegmentIndex = { v: 1, size: seg.size, last, sparse: this.sparse };
    return this.saveIndexFile(this.indexFile(seg), JSON.stringify(ix));
  }

  /** Writes every session's summary as of the end of `seg`, the segment just sealed. */
  private writeSnapshot(seg: Segment): Promise<void> {
    const last = this.lastLine;
    if (!last || last.seq < seg.firstSeq) return Promise.resolve();
    // Serialised now: summaries change in place as later events are folded in. Only the newest
    // snapshot matters: one still waiting to be written is replaced, not queued behind.
    const snap: SessionsSnapshot = { v: 1, segment: seg.firstSeq, size: seg.size, lastSeq: last.seq, sessions: this.entries };
    const queued = this.nextSnapshot !== undefined;
    this.nextSnapshot = JSON.stringify(snap);
    if (queued) return this.indexWrites;
    return this.saveIndexFile(path.join(this.dir, `${this.agentId}.sessions`), () => {
      const text = this.nextSnapshot!;
      this.nextSnapshot = undefined;
      return text;
    });
  }

  private nextSnapshot?: string;

  /** Loads the snapshot's summaries if it matches an indexed sealed segment: the index of the segment after it, else 0. */
  private async loadSnapshot(ixs: (SegmentIndex | undefined)[]): Promise<number> {
    let snap: SessionsSnapshot;
    try {
      snap = JSON.parse(await readFile(path.join(this.dir, `${this.agentId}.sessions`), 'utf8')) as SessionsSnapshot;
    } catch {
      return 0;
    }
    const k = this.segments.findIndex((seg) => seg.firstSeq === snap.segment);
    const ix = ixs[k];
    if (snap.v !== 1 || !Array.isArray(snap.sessions) || !ix || ix.size !== snap.size || ix.last.seq !== snap.lastSeq) return 0;
    for (const s of snap.sessions) this.put(s);
    return k + 1;
  }

  private indexWrites: Promise<void> = Promise.resolve();

  /**
   * Replaces an index file atomically (write, flush, rename), one at a time (two rotations in a row
   * must not share a .tmp); failures are ignored (see writeSegmentIndex).
   */
  private saveIndexFile(file: string, text: string | (() => string)): Promise<void> {
    this.indexWrites = this.indexWrites.then(async () => {
      try {
        await writeFile(file + '.tmp', typeof text === 'string' ? text : text(), { flush: true });
        await rename(file + '.tmp', file);
      } catch {
        await rm(file + '.tmp', { force: true }).catch(() => {});
      }
    });
    return this.indexWrites;
  }

  /** One process per agent chain: a live pid in the lock file refuses the second one. */
  private async lock(): Promise<void> {
    const file = path.join(this.dir, `${this.agentId}.lock`);
    if (JsonlStore.held.has(file)) throw new Error(`audit store ${this.dir} is already open in this process (agent ${this.agentId})`);
    try {
      const pid = Number((await readFile(file, 'utf8')).trim());
      if (pid && pid !== process.pid && isAlive(pid)) throw new Error(`audit store ${this.dir} is in use by pid ${pid} (agent ${this.agentId})`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    await writeFile(file, String(process.pid));
    JsonlStore.held.add(file);
    this.locked = true;
  }

  /** Chains locked by this process (the pid check cannot tell two stores of one process apart). */
  private static readonly held = new Set<string>();
  private locked = false;

  // ─── events ──────────────────────────────────────────────────────────────────────────────────────

  append(e: EventInput): Promise<AuditEvent> {
    return this.commit.append(e);
  }

  private async writeBatch(batch: SealedEvent[]): Promise<void> {
    const lines = batch.map((s) => s.line + '\n');
    const buf = Buffer.from(lines.join(''));
    let seg = this.segments.at(-1);
    if (!seg || (seg.size > 0 && seg.size + buf.length > this.segmentBytes)) seg = await this.rotate(batch[0].event.seq);
    const fh = await this.handle();
    const base = seg.size;
    try {
      if (this.durability === 'disk') {
        for (let off = 0; off < buf.length; ) off += (await fh.write(buf, off, buf.length - off, base + off)).bytesWritten;
        await fh.datasync();
      } else {
        // Into the page cache directly: a few µs, no thread-pool round trip on the statement's path.
        for (let off = 0; off < buf.length; ) off += writeSync(fh.fd, buf, off, buf.length - off, base + off);
        this.scheduleSync(fh);
      }
    } catch (err) {
      // Bytes of this batch may be on disk past the durable size, and after a failed fsync the kernel
      // may have dropped dirty pages: drop the handle, truncate on reopen, and write the batch afresh.
      this.dirty = true;
      this.fh = undefined;
      await fh.close().catch(() => {});
      throw err;
    }
    seg.size += buf.length;
    for (const { event } of batch) this.index(event);
    this.sparsePoint(batch[0].event.seq, base); // a batch starts at a line
    const last = batch[batch.length - 1];
    this.lastLine = { seq: last.event.seq, hash: last.event.hash, ts: last.event.ts, offset: seg.size - Buffer.byteLength(lines[lines.length - 1]) };
  }

  private syncTimer?: NodeJS.Timeout;

  /** Background fdatasync of what was written ('os' durability); a failure marks the store unhealthy. */
  private scheduleSync(fh: FileHandle): void {
    if (this.syncTimer) return;
    this.syncTimer = setTimeout(() => {
      this.syncTimer = undefined;
      fh.datasync().catch((err) => this.healthLoop.failed(err));
    }, this.syncIntervalMs);
    this.syncTimer.unref();
  }

  private async rotate(firstSeq: number): Promise<Segment> {
    const sealed = this.segments.at(-1);
    if (sealed) {
      void this.writeSegmentIndex(sealed);
      void this.writeSnapshot(sealed);
    }
    if (this.fh) await this.fh.close().catch(() => {});
    this.fh = undefined;
    const file = path.join(this.dir, `${this.agentId}.${String(firstSeq).padStart(12, '0')}.jsonl`);
    const fh = await open(file, 'a+');
    await fh.datasync();
    await fh.close();
    await fsyncDir(this.dir); // the new name must survive a crash too
    const seg = { firstSeq, file, size: 0 };
    this.segments.push(seg);
    this.sparse = [];
    return seg;
  }

  private async handle(): Promise<FileHandle> {
    if (!this.fh || this.dirty) await this.reopen();
    return this.fh!;
  }

  /** Reopens the current segment and cuts it back to the durable size. Also the health probe. */
  private async reopen(): Promise<void> {
    const seg = this.segments.at(-1);
    if (!seg) return;
    if (this.fh) await this.fh.close().catch(() => {});
    this.fh = undefined;
    const fh = await open(seg.file, 'r+');
    try {
      if (this.dirty) {
        await fh.truncate(seg.size);
        await fh.datasync();
      }
    } catch (err) {
      await fh.close().catch(() => {});
      throw err;
    }
    this.fh = fh;
    this.dirty = false;
  }

  private index(e: AuditEvent): void {
    if (!e.sessionId) return;
    const i = this.byId.get(e.sessionId);
    if (i === undefined) return this.put(foldSummary(undefined, e));
    // In place: a summary object per event would be most of what indexing costs.
    const s = this.entries[i];
    const { sub, connection } = s;
    foldInto(s, e);
    // Secondary indexes get the session once, when its identity/connection first appears (usually event 1).
    if (s.sub !== undefined && sub === undefined) addSorted(this.bySub, s.sub, i);
    if (s.connection !== undefined && connection === undefined) addSorted(this.byConn, s.connection, i);
  }

  /** A session seen for the first time (its first event, or the snapshot). */
  private put(s: SessionSummary): void {
    const i = this.entries.push(s) - 1;
    this.byId.set(s.sessionId, i);
    if (s.sub !== undefined) addSorted(this.bySub, s.sub, i);
    if (s.connection !== undefined) addSorted(this.byConn, s.connection, i);
  }

  async querySessions(f: SessionFilter): Promise<SessionPage> {
    await this.commit.flush(); // reads see every append made before them
    const { since, until, limit, cursor } = filterBounds(f);
    const cand = f.sub !== undefined ? (this.bySub.get(f.sub) ?? []) : f.connection !== undefined ? (this.byConn.get(f.connection) ?? []) : undefined;
    const n = cand ? cand.length : this.entries.length;
    const at = (k: number) => this.entries[cand ? cand[k] : k];
    let hi = n;
    if (cursor && cursor.agentId === this.agentId) hi = lowerBound(n, (k) => at(k).firstSeq >= cursor.firstSeq);
    if (until !== undefined) hi = Math.min(hi, lowerBound(n, (k) => at(k).startedAt >= until));
    const out: SessionSummary[] = [];
    for (let k = hi - 1; k >= 0 && out.length <= limit; k--) {
      const s = at(k);
      if (since !== undefined && s.startedAt < since) break;
      if (f.sub !== undefined && s.sub !== f.sub) continue;
      if (f.connection !== undefined && s.connection !== f.connection) continue;
      if (f.decision !== undefined && !s.decisions.includes(f.decision)) continue;
      out.push({ ...s }); // a copy: the stored one changes as the session goes on
    }
    if (out.length <= limit) return { sessions: out };
    out.length = limit;
    return { sessions: out, nextCursor: encodeCursor(out[limit - 1]) };
  }

  async sessionEvents(sessionId: string): Promise<AuditEvent[]> {
    await this.commit.flush();
    const i = this.byId.get(sessionId);
    if (i === undefined) return [];
    // Found by their bytes in the segments its seq range spans, narrowed by the sparse points (the key
    // may be inside data too: each candidate is parsed and checked).
    const s = this.entries[i];
    const needle = Buffer.from(`"sessionId":${JSON.stringify(sessionId)}`);
    const out: AuditEvent[] = [];
    for (let k = this.segmentOf(s.firstSeq); k < this.segments.length && this.segments[k].firstSeq <= s.lastSeq; k++) {
      const seg = this.segments[k];
      const sparse = k === this.segments.length - 1 ? this.sparse : ((await this.readSegmentIndex(seg))?.sparse ?? []);
      const buf = await this.readSegment(seg, sparseRange(sparse, s.firstSeq, s.lastSeq, seg.size));
      for (let at = buf.indexOf(needle); at >= 0; ) {
        const start = buf.lastIndexOf(0x0a, at) + 1;
        let end = buf.indexOf(0x0a, at);
        if (end < 0) end = buf.length;
        try {
          const e = JSON.parse(buf.toString('utf8', start, end)) as AuditEvent;
          if (e.sessionId === sessionId) out.push(e);
        } catch {
          /* a damaged record: verify reports it */
        }
        at = buf.indexOf(needle, end);
      }
    }
    return out;
  }

  /** The index of the segment holding `seq`. */
  private segmentOf(seq: number): number {
    return Math.max(0, lowerBound(this.segments.length, (k) => this.segments[k].firstSeq > seq) - 1);
  }

  /** A segment's bytes up to its durable size, or the range [from, to) of them. */
  private async readSegment(seg: Segment, [from, to] = [0, seg.size]): Promise<Buffer> {
    const size = to - from;
    const fh = await open(seg.file, 'r');
    const buf = Buffer.allocUnsafe(size);
    try {
      for (let off = 0; off < size; ) {
        const { bytesRead } = await fh.read(buf, off, size - off, from + off);
        if (!bytesRead) throw new Error(`segment ${seg.file} is shorter than its durable size`);
        off += bytesRead;
      }
    } finally {
      await fh.close();
    }
    return buf;
  }

  /** Stored lines of the chain in order, up to each segment's durable size, from the segment holding `from`. */
  private async *lines(from = 1): AsyncIterable<string> {
    let first = 0;
    while (first + 1 < this.segments.length && this.segments[first + 1].firstSeq <= from) first++;
    for (const seg of this.segments.slice(first)) {
      const size = seg.size;
      const buf = await this.readSegment(seg);
      for (let off = 0; off < size; ) {
        let end = buf.indexOf(0x0a, off);
        if (end < 0) end = size;
        yield buf.toString('utf8', off, end);
        off = end + 1;
      }
    }
  }

  async verify(opts: { from?: number } = {}): Promise<VerifyResult> {
    await this.commit.flush();
    const from = opts.from ?? 1;
    return verifyChain(this.chainLines(from), { from: from > 1 ? from : undefined, expectLast: { agentId: this.agentId, seq: this.commit.last.seq } });
  }

  async *chainLines(from = 1): AsyncIterable<string> {
    await this.commit.flush();
    for await (const l of this.lines(from)) {
      // The segment holding `from` starts earlier: skip its first lines (an unparsable one is handed on to verify).
      if (from > 1 && seqOfLine(l) < from) continue;
      yield l;
    }
  }

  private get checkpointFile(): string {
    return path.join(this.dir, `${this.agentId}.checkpoints`);
  }

  async appendCheckpoint(cp: { size: number; note: string }): Promise<void> {
    // The events a checkpoint covers must be on disk before the checkpoint is ('os' durability syncs late).
    await this.commit.exclusive(async () => {
      if (this.fh) await this.fh.datasync();
    });
    if ((await this.listCheckpoints()).some((c) => c.size === cp.size)) return;
    const fh = await open(this.checkpointFile, 'a', 0o600);
    try {
      await fh.write(canonicalJson(cp) + '\n');
      await fh.datasync();
    } finally {
      await fh.close();
    }
  }

  async listCheckpoints(): Promise<{ size: number; note: string }[]> {
    const text = await readFile(this.checkpointFile, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return '';
      throw err;
    });
    const out: { size: number; note: string }[] = [];
    for (const l of text.split('\n')) {
      try {
        const c = JSON.parse(l) as { size: number; note: string };
        if (Number.isSafeInteger(c.size) && typeof c.note === 'string') out.push(c);
      } catch {
        /* a line torn by a crash: the checkpoint was never acknowledged */
      }
    }
    return out.sort((a, b) => a.size - b.size);
  }

  exportEvents(filter: { since?: string | number; until?: string | number }, format: ExportFormat): AsyncIterable<string> {
    const since = filter.since === undefined ? undefined : isoTime(filter.since);
    const until = filter.until === undefined ? undefined : isoTime(filter.until);
    const self = this;
    return formatExport(
      (async function* () {
        await self.commit.flush();
        for await (const l of self.lines()) {
          const ts = (JSON.parse(l) as AuditEvent).ts;
          if (inRange(ts, since, until)) yield l;
          else if (until !== undefined && ts >= until) return; // chain time never goes backwards
        }
      })(),
      format,
    );
  }

  // ─── recordings ──────────────────────────────────────────────────────────────────────────────────

  private recordingFile(sessionId: string): string {
    assertSessionId(sessionId);
    return path.join(this.dir, 'recordings', `${sessionId}.jsonl`);
  }

  async appendRecording(sessionId: string, ...entries: RecordingEntry[]): Promise<boolean> {
    const file = this.recordingFile(sessionId);
    const now = new Date(this.clock()).toISOString();
    const { lines, room } = await this.caps.capAll(sessionId, entries, now, () => stat(file).then((s) => s.size, () => 0));
    if (!lines.length) return room;
    // Into the page cache through a file kept open, a session's buffered entries in one write
    // (recording.ts). Recordings are not the evidence (the audit events are, with their own
    // durability), so no fsync either.
    const fd = await this.recordingFd(sessionId, file);
    const buf = Buffer.from(lines.map((l) => l.line + '\n').join(''));
    try {
      for (let off = 0; off < buf.length; ) off += writeSync(fd, buf, off, buf.length - off);
    } catch (err) {
      this.closeRecording(sessionId);
      throw err;
    }
    return room;
  }

  /** Open recording files (O_APPEND), least recently used first; bounded, the oldest closed first. */
  private readonly recordingFds = new Map<string, number>();
  /** Recording files being opened (created) off the event loop, so a new session does not wait on the disk. */
  private readonly openingRecordings = new Map<string, Promise<number>>();

  private async recordingFd(sessionId: string, file: string): Promise<number> {
    let fd = this.recordingFds.get(sessionId);
    if (fd === undefined) {
      let opening = this.openingRecordings.get(sessionId);
      if (!opening) {
        opening = new Promise<number>((resolve, reject) => openFd(file, 'a', (err, d) => (err ? reject(err) : resolve(d))));
        this.openingRecordings.set(sessionId, opening);
        void opening.then(
          () => this.openingRecordings.delete(sessionId),
          () => this.openingRecordings.delete(sessionId),
        );
      }
      const opened = await opening;
      // Another append of the session may have registered it while this one waited.
      fd = this.recordingFds.get(sessionId) ?? opened;
    }
    this.recordingFds.delete(sessionId);
    this.recordingFds.set(sessionId, fd);
    if (this.recordingFds.size > MAX_OPEN_RECORDINGS) this.closeRecording(this.recordingFds.keys().next().value!);
    return fd;
  }

  private closeRecording(sessionId: string): void {
    const fd = this.recordingFds.get(sessionId);
    if (fd === undefined) return;
    this.recordingFds.delete(sessionId);
    try {
      closeSync(fd);
    } catch {
      /* already unusable: nothing to release */
    }
  }

  async readRecording(sessionId: string): Promise<RecordingEntry[]> {
    const text = await readFile(this.recordingFile(sessionId), 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return '';
      throw err;
    });
    // A line torn by a crash mid-write is reported in place, not allowed to hide the rest.
    return text.split('\n').filter((l) => l).map((l) => {
      try {
        return JSON.parse(l) as RecordingEntry;
      } catch {
        return { note: 'a damaged recording line was skipped' };
      }
    });
  }

  async applyRetention(recordingsOlderThanMs: number): Promise<{ removed: number }> {
    const cutoff = new Date(this.clock() - recordingsOlderThanMs).toISOString();
    const dir = path.join(this.dir, 'recordings');
    let removed = 0;
    for (const name of await readdir(dir)) {
      if (!name.endsWith('.jsonl')) continue;
      const file = path.join(dir, name);
      const text = await readFile(file, 'utf8').catch(() => undefined);
      if (text === undefined) continue; // removed meanwhile
      const last = lastEntryTs(text.trimEnd().split('\n')) ?? (await stat(file)).mtime.toISOString();
      if (last >= cutoff) continue;
      this.closeRecording(name.slice(0, -6)); // later entries go to a new file, not an unlinked one
      await rm(file, { force: true });
      this.caps.forget(name.slice(0, -6));
      removed++;
    }
    return { removed };
  }

  // ─── approvals ───────────────────────────────────────────────────────────────────────────────────

  private async loadApprovals(): Promise<void> {
    const file = path.join(this.dir, 'approvals.jsonl');
    const buf = await readFile(file).catch(() => Buffer.alloc(0));
    const complete = buf.lastIndexOf(0x0a) + 1;
    for (const l of buf.toString('utf8', 0, complete).split('\n')) {
      try {
        if (l) this.approvalsById.set((JSON.parse(l) as Approval).id, JSON.parse(l) as Approval);
      } catch {
        // A line torn by an earlier failed write; the record's previous state stands.
      }
    }
    this.approvalsFh = await open(file, 'a');
    if (complete < buf.length) {
      await this.approvalsFh.truncate(complete);
      await this.approvalsFh.datasync();
    }
  }

  /** Serialises approval read-modify-writes: this is what makes consume() single-use. */
  private withApprovals<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.approvalsLock.then(fn, fn);
    this.approvalsLock = run.catch(() => {});
    return run;
  }

  private async saveApproval(a: Approval): Promise<void> {
    await this.approvalsFh!.write(canonicalJson(a) + '\n');
    await this.approvalsFh!.datasync();
    this.approvalsById.set(a.id, a);
    this.approvalChanges.emit('change', a.id);
  }

  // ─── lifecycle ───────────────────────────────────────────────────────────────────────────────────

  health() {
    return this.healthLoop.get();
  }

  async close(): Promise<void> {
    await this.commit.drain();
    await this.indexWrites;
    this.healthLoop.stop();
    await this.approvalsLock;
    await this.fh?.close().catch(() => {});
    await this.approvalsFh?.close().catch(() => {});
    for (const id of [...this.recordingFds.keys()]) this.closeRecording(id);
    const lock = path.join(this.dir, `${this.agentId}.lock`);
    JsonlStore.held.delete(lock);
    await rm(lock, { force: true });
  }
}

export type { ApprovalStatus };

/** The seq of a stored line (stored lines start `{"hash":"<64 hex>","agentId":…`, so parse them whole). */
function seqOfLine(l: string): number {
  try {
    const seq = (JSON.parse(l) as AuditEvent).seq;
    return typeof seq === 'number' ? seq : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** The byte range holding events first..last of a segment of `size` bytes, by its sparse offsets. */
function sparseRange(sparse: number[], first: number, last: number, size: number): [number, number] {
  let from = 0;
  let to = size;
  for (let k = 0; k < sparse.length; k += 2) {
    if (sparse[k] <= first) from = sparse[k + 1];
    if (sparse[k] > last) {
      to = sparse[k + 1];
      break;
    }
  }
  return [from, to];
}

/** The time of a recording's last entry; a line torn by a crash is skipped rather than failing retention. */
function lastEntryTs(lines: string[]): string | undefined {
  for (let i = lines.length - 1; i >= 0; i--) {
    try {
      const ts = (JSON.parse(lines[i]) as RecordingEntry).ts;
      if (typeof ts === 'string') return ts;
    } catch {
      /* torn or damaged: try the line before */
    }
  }
  return undefined;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** First index k in [0, n) with pred(k) true, pred monotone (false…true); n if none. */
function lowerBound(n: number, pred: (k: number) => boolean): number {
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (pred(mid)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** Adds i to the ascending list under key unless present (sessions are indexed once per key). */
function addSorted(m: Map<string, number[]>, key: string, i: number): void {
  let list = m.get(key);
  if (!list) m.set(key, (list = []));
  if (list.at(-1) === i) return;
  if (list.length === 0 || list.at(-1)! < i) {
    list.push(i);
    return;
  }
  const k = lowerBound(list.length, (j) => list[j] >= i);
  if (list[k] !== i) list.splice(k, 0, i);
}

