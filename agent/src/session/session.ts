// One Postgres session at the agent: the client's protocol is terminated here, and the agent speaks to
// the database on its own connection with its own credential.
//
//   client (via tunnel stream)            agent session                         PostgreSQL
//   SSLRequest / GSSENCRequest  ──►  'N' (the tunnel is the encrypted leg)
//   StartupMessage              ──►  sanitise parameters ──── connectUpstream ──►  Startup + SCRAM
//                               ◄──  AuthenticationOk, ParameterStatus*, agent-issued BackendKeyData,
//                                    ReadyForQuery
//   Query / Parse / Bind / …    ──►  frame → parse → gate.judge → re-serialise ──►  (allowed bytes only)
//                               ◄──  backend messages, walked by header, rewritten only where needed
//   CancelRequest (new stream)  ──►  CancelRegistry: same identity + issued key ──►  real CancelRequest
//
// A refusal of a single statement never desynchronises the protocol: the refused message is replaced by
// a sentinel that PostgreSQL rejects at parse time (nothing runs), so the error arrives exactly where the
// server would have put it, the extended-protocol skip-to-Sync and transaction semantics stay the
// server's own, and the agent rewrites that one ErrorResponse into its 42501 explanation.
import { createHash, randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { SqlState } from '../../../shared/errors.js';
import type { Logger } from '../log.js';
import type { ResolvedConnection } from '../config.js';
import type { Principal } from '../identity/access.js';
import type { CancelRegistry } from './cancel.js';
import type { Decision, PolicySession } from '../policy/index.js';
import type { StateStore } from '../audit/store.js';
import { identityOf, makeApprovalEvent, makeSessionEndEvent, makeSessionStartEvent, type EventInput } from '../audit/events.js';
import { durationMs } from '../../../shared/config/schema.js';
import type { TunnelEvent } from '../../../shared/tunnel/frame.js';
import { StatementLog, auditParams, type InFlight } from './statement-log.js';
import { ResultMasking } from './result-masking.js';
import { SessionRecording, type RecordingOptions } from './recording.js';
import { normalizeSync } from 'libpg-query';
import type { ConnectionMasking } from '../masking/connection.js';
import { Backend, TxStatus } from '../pgwire/codes.js';
import { ProtocolError } from '../pgwire/errors.js';
import {
  FrontendFramer,
  parseStartup,
  parseFrontend,
  serializeFrontend,
  SYNC,
  TERMINATE,
  type FrontendMessage,
  type FrontendRaw,
} from '../pgwire/frontend.js';
import {
  AUTH_OK,
  SSL_NO,
  BackendFramer,
  backendKeyData,
  errorResponse,
  noticeResponse,
  parameterStatus,
  parseErrorFields,
  parseCommandComplete,
  readyForQuery,
  negotiateProtocolVersion,
  type PgErrorFields,
} from '../pgwire/backend.js';
import type { UpstreamConnection } from '../upstream/connect.js';
import { sanitizeStartup, StartupRefusal } from './startup.js';

export type Step = 'AwaitingStartup' | 'Connecting' | 'Ready' | 'Closed';

/** Where the session's output goes: a tunnel stream. */
export interface SessionOutlet {
  send(data: Buffer): void;
  close(reason?: string): void;
  /** The session consumed bytes it had refused earlier (flow-control credit). */
  drained(): void;
  /** Something for the person or job running `hoopctl connect` (approval requested, granted, denied). */
  event(ev: TunnelEvent): void;
}

/** The upstream connection plus a way to cancel its running query (used by the cancel registry). */
export type UpstreamSession = UpstreamConnection & { cancel(): Promise<void> };

export interface SessionDeps {
  connection: ResolvedConnection;
  identity: Principal;
  /** This session's policy state: the one decision point every statement passes (policy/). */
  policy: PolicySession;
  /** The audit trail: events are appended before what they describe reaches the database. */
  audit: Pick<StateStore, 'append' | 'approvals'>;
  /** The connection's masking; absent when it masks no column. */
  masking?: ConnectionMasking;
  /** Milliseconds, monotonic enough for durations (injected: tests and replays control time). */
  clock: () => number;
  cancels: CancelRegistry;
  connectUpstream(params: Record<string, string>): Promise<UpstreamSession>;
  log: Logger;
  maxMessageBytes: number;
  /** A session that has not completed startup by then is closed (idle upgrade, slowloris). */
  startupTimeoutMs: number;
  /** The masked transcript (recording.ts); absent when recording is off. */
  recording?: RecordingOptions;
}

export interface SessionMeta {
  sessionId: string;
  streamId: number;
  clientAddr?: string;
  cliVersion?: string;
}

export class PgSession {
  step: Step = 'AwaitingStartup';
  private readonly framer: FrontendFramer;
  private readonly backend = new BackendFramer();
  private upstream?: Socket;
  private cancelPid?: number;
  private startupTimer?: NodeJS.Timeout;
  /** Client bytes that arrived while the upstream connection was being opened. */
  private queued: Buffer[] = [];
  private upstreamFull = false;
  private paused = false;
  /** Reading upstream is paused for a moment so that a streaming result arrives in bigger reads (pace()). */
  private pacing = false;
  /** Bytes read upstream in the current turn of the event loop, and whether pace() will look at them. */
  private burst = 0;
  private burstCounting = false;
  /** Refusals awaiting their sentinel's ErrorResponse, by sentinel word. */
  private readonly sentinels = new Map<string, PgErrorFields>();
  private readonly nonce = randomBytes(6).toString('hex');
  private sentinelSeq = 0;
  private inCopyIn = false;
  /**
   * One entry per forwarded Query or Sync, in order: each is answered by exactly one ReadyForQuery.
   * A Query's entry carries its decision and counts its CommandCompletes.
   */
  private readonly readyQueue: ReadyEntry[] = [];
  /** Batches waiting for their audit events to be durable, and the chain that keeps them in order. */
  private auditing = 0;
  private auditChain: Promise<void> = Promise.resolve();
  /** The Bind of each open portal, for the parameters in the audit record. */
  private readonly portalParams = new Map<string, Extract<FrontendMessage, { type: 'Bind' }>>();
  private readonly maskedTables: Set<string>;
  private readonly log_: StatementLog;
  /** Lineage masking of this session's results (per-session statement, portal and cursor plans). */
  private masking?: ResultMasking;
  /** The last ReadyForQuery's transaction status (I, T or E). */
  private txStatus: number = TxStatus.Idle;
  /** An approved statement is running and was the last of its batch (its COPY data may pass). */
  private approvedRunning = false;
  /** Aborts the approval wait when the client cancels (CancelRequest). */
  private pendingHold?: AbortController;
  /**
   * An extended-protocol Execute was held since the last Sync: the read-only default is restored after
   * that Sync (and before any simple Query), whether or not it was approved.
   */
  private extHoldInRun = false;
  /** Replies to the agent's own messages inside a client's run, by type, in the order they come. */
  private readonly swallow: number[] = [];
  /**
   * The agent's own read-write switches, for both protocols: named hidden statements (names only this
   * session knows), so a client's unnamed statement survives them.
   */
  private readonly switches: { readWrite: Buffer; readOnly: Buffer; skip: Buffer };
  /** The session_start event is durable (so a session_end belongs in the trail too). */
  private recorded = false;
  private applicationName = '';
  private readonly log: Logger;
  private readonly recording?: SessionRecording;

  constructor(
    private readonly deps: SessionDeps,
    private readonly out: SessionOutlet,
    readonly meta: SessionMeta,
  ) {
    this.framer = new FrontendFramer({ maxMessageBytes: deps.maxMessageBytes });
    this.switches = {
      readWrite: hiddenStatement(`hoop_rw_${this.nonce}`, 'SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE'),
      readOnly: hiddenStatement(`hoop_ro_${this.nonce}`, 'SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY'),
      skip: serializeFrontend({ type: 'Parse', name: `hoop_skip_${this.nonce}`, sql: `hoop_skip_${this.nonce}`, paramTypes: [] }),
    };
    this.log = deps.log.child({ session: meta.sessionId, stream: meta.streamId });
    this.maskedTables = new Set(Object.keys(deps.connection.masking).map((c) => c.split('.')[1]));
    this.log_ = new StatementLog({
      sessionId: meta.sessionId,
      who: deps.identity,
      connection: deps.connection.name,
      clock: deps.clock,
      appendResult: (e) => void deps.audit.append(e).catch(() => {}),
    });
    this.startupTimer = setTimeout(() => this.fatal(new ProtocolError('startup not completed in time', SqlState.ProtocolViolation)), deps.startupTimeoutMs);
    this.startupTimer.unref();
    if (deps.recording) {
      // The recording reads what the client is sent (already masked), once the session is Ready.
      const rec = (this.recording = new SessionRecording(meta.sessionId, deps.recording, this.log));
      const send = (b: Buffer) => {
        out.send(b);
        if (this.step === 'Ready') rec.backend(b);
      };
      this.out = { send, close: (r) => out.close(r), drained: () => out.drained(), event: (e) => out.event(e) };
    }
  }

  // ── StreamEnd: the tunnel drives these ─────────────────────────────────────────────────────────

  /** Client bytes. Returns false while they cannot be passed on yet (connecting, upstream full). */
  write(data: Buffer): boolean {
    try {
      switch (this.step) {
        case 'AwaitingStartup':
          this.onStartupBytes(data);
          break;
        case 'Connecting':
          this.queued.push(data);
          return false;
        case 'Ready':
          this.onClientBytes(data);
          break;
        case 'Closed':
          return true;
      }
    } catch (err) {
      this.fatal(err);
    }
    return this.step !== 'Connecting' && !this.upstreamFull && this.auditing === 0;
  }

  pause(): void {
    this.paused = true;
    this.upstream?.pause();
  }

  resume(): void {
    this.paused = false;
    this.upstream?.resume();
  }

  /**
   * A large result arriving in small reads (the database writes 8 KiB at a time and we keep up) costs a
   * wakeup, a tunnel frame and a client write per 8 KiB. When one wakeup brought little (all its reads
   * together: TLS hands over 16 KiB records one by one) and a result is still streaming, stop reading for
   * a moment: the rows wait in the socket buffer and the next wakeup takes them in 64 KiB reads.
   */
  private pace(bytes: number): void {
    this.burst += bytes;
    if (this.burstCounting) return;
    this.burstCounting = true;
    setImmediate(() => {
      const burst = this.burst;
      this.burst = 0;
      this.burstCounting = false;
      if (burst >= PACE_BELOW_BYTES || this.pacing || this.paused || !this.backend.midResult || !this.upstream || this.step === 'Closed') return;
      this.pacing = true;
      this.upstream.pause();
      setTimeout(() => {
        this.pacing = false;
        if (!this.paused && this.step !== 'Closed') this.upstream?.resume();
      }, PACE_MS);
    });
  }

  /** The client went away (or the tunnel did): end the upstream session too. */
  close(reason?: string): void {
    if (this.step === 'Closed') return;
    this.log.debug('client closed', { reason });
    this.teardown(reason ?? 'client closed the connection');
  }

  /** Agent drain, polled until false: withdraws a held statement (saying why), ends the session with FATAL 57P01 once idle outside a transaction, or at once when `force`d. */
  drain(message: string, force = false): boolean {
    if (this.pendingHold && !this.pendingHold.signal.aborted) this.out.send(noticeResponse({ severity: 'WARNING', code: SqlState.AdminShutdown, message: `hoopctl: ${message}; the approval request was withdrawn and the statement was not run` }));
    this.pendingHold?.abort();
    if (force) this.close(message);
    else if (this.readyQueue.length === 0 && this.txStatus === TxStatus.Idle) this.fatal(new StartupRefusal(SqlState.AdminShutdown, `hoopctl: ${message}`, 'Reconnect and retry: hoopctl connect reconnects by itself.'));
    return this.step !== 'Closed';
  }

  // ── Startup ────────────────────────────────────────────────────────────────────────────────────

  private onStartupBytes(data: Buffer): void {
    // The framer yields one startup message at a time: what follows depends on our answer.
    for (let raws = this.framer.push(data); raws.length > 0; raws = this.framer.nextStartup()) {
      const msg = parseStartup(raws[0].body);
      switch (msg.kind) {
        case 'SSLRequest':
        case 'GSSENCRequest':
          // The loopback leg stays plain; the tunnel (wss) is the encrypted leg.
          this.out.send(SSL_NO);
          continue;
        case 'CancelRequest':
          return this.onCancelRequest(msg.pid, msg.secret);
        case 'Startup':
          return this.onStartup(msg.major, msg.minor, msg.params);
      }
    }
  }

  private onCancelRequest(pid: number, secret: Buffer): void {
    // Whatever the outcome, the requester learns nothing: the stream just closes, as with PostgreSQL.
    void this.deps.cancels.cancel(pid, secret, this.deps.identity).then(
      (ok) => this.log.info('cancel request', { forwarded: ok }),
      (err) => this.log.warn('cancel request failed', { error: String(err) }),
    );
    this.teardown('cancel request');
  }

  private onStartup(major: number, minor: number, params: Map<string, string>): void {
    const conn = this.deps.connection;
    let clean;
    try {
      clean = sanitizeStartup(major, minor, params, conn);
    } catch (err) {
      if (err instanceof StartupRefusal) return this.fatal(err);
      throw err;
    }
    if (clean.negotiate) this.out.send(negotiateProtocolVersion(0, clean.unsupportedOptions));
    this.applicationName = clean.upstreamParams.application_name ?? '';
    this.step = 'Connecting';
    // The session start is evidence first: if the audit store cannot take it, no database session opens.
    const started = this.deps.audit.append(
      makeSessionStartEvent({
        sessionId: this.meta.sessionId,
        who: this.deps.identity,
        connection: conn.name,
        clientAddr: this.meta.clientAddr,
        cliVersion: this.meta.cliVersion,
        applicationName: this.applicationName,
      }),
    );
    started.then(
      () => {
        this.recorded = true;
        this.prepareMasking().then(
          () => this.connect(clean.upstreamParams),
          (err) => {
            this.log.error('masking catalog unavailable; refusing session', { error: (err as Error).message });
            this.fatal(new StartupRefusal(SqlState.CannotConnectNow, 'hoopctl: the agent cannot prepare masking for this database right now, so the session is refused', 'Retry shortly; the agent log has the cause.'));
          },
        );
      },
      (err) => {
        this.log.error('audit store unavailable; refusing session', { error: (err as Error).message });
        this.fatal(new StartupRefusal(SqlState.CannotConnectNow, 'hoopctl: the agent cannot record this session right now, so it is refused', 'Retry shortly; the agent recovers by itself when its audit store is writable again.'));
      },
    );
  }

  /** Masking needs the catalog before the first result: no session runs unmasked (fail closed). */
  private async prepareMasking(): Promise<void> {
    const m = this.deps.masking;
    if (!m) return;
    this.masking = new ResultMasking(await m.current(), m.hashKey, () => m.invalidate());
  }

  private connect(params: Record<string, string>): void {
    if (this.step === 'Closed') return;
    const conn = this.deps.connection;
    this.deps.connectUpstream(params).then(
      (up) => this.onUpstreamReady(up),
      (err) => {
        this.log.warn('upstream connection failed', { error: (err as Error).message });
        this.fatal(
          Object.assign(new StartupRefusal(SqlState.CannotConnectNow, `the agent could not connect to database "${conn.name}"`), {
            hint: 'The database may be down or the agent misconfigured; the agent log has the cause.',
          }),
        );
      },
    );
  }

  private onUpstreamReady(up: UpstreamSession): void {
    if (this.step === 'Closed') {
      up.socket.destroy();
      return;
    }
    clearTimeout(this.startupTimer);
    const sock = up.socket;
    this.upstream = sock;
    sock.setNoDelay(true);
    sock.on('data', (chunk: Buffer) => this.guard(() => (this.onUpstreamBytes(chunk), this.pace(chunk.length))));
    sock.on('drain', () => {
      this.upstreamFull = false;
      this.out.drained();
    });
    sock.on('error', (err) => this.log.warn('upstream socket error', { error: err.message }));
    sock.on('close', () => {
      if (this.step !== 'Closed') this.fatal(new StartupRefusal(SqlState.ConnectionFailure, 'the database closed the connection'));
    });
    // connectUpstream hands the socket over paused; start reading unless the tunnel asked us to wait.
    if (!this.paused) sock.resume();

    // Ctrl-C while a statement waits for approval withdraws the request; otherwise it cancels upstream.
    const key = this.deps.cancels.issue(this.deps.identity, async () => (this.pendingHold ? this.pendingHold.abort() : up.cancel()));
    this.cancelPid = key.pid;

    const parts: Buffer[] = [AUTH_OK];
    for (const [name, value] of up.parameters) parts.push(parameterStatus(name, value));
    parts.push(backendKeyData(key.pid, key.secret), readyForQuery('I'));
    this.out.send(Buffer.concat(parts));
    this.step = 'Ready';
    this.log.info('session ready', { applicationName: this.applicationName });

    if (up.leftover.length) this.onUpstreamBytes(up.leftover);
    // Bytes pipelined behind the StartupMessage: first those the framer held, then later arrivals.
    this.forward(this.framer.startupDone());
    const queued = this.queued;
    this.queued = [];
    for (const chunk of queued) this.forward(this.framer.push(chunk));
    if (!this.upstreamFull) this.out.drained();
  }

  // ── Client → database ──────────────────────────────────────────────────────────────────────────

  private onClientBytes(data: Buffer): void {
    this.forward(this.framer.push(data));
  }

  /**
   * Judges every message of a client read, then forwards the result in one write. When statements are
   * among them, their audit events are appended first and the bytes leave only once the store has them;
   * a store that cannot write turns those statements into refusals (fail closed). Later reads queue
   * behind, so the order on the wire never changes.
   */
  private forward(raws: FrontendRaw[]): void {
    if (raws.length === 0) return;
    const batch: Outbound[] = [];
    let terminate = false;
    for (const raw of raws) {
      const msg = parseFrontend(raw.type, raw.body);
      if (msg.type === 'Query' && this.extHoldInRun) batch.push(this.restoreBeforeQuery());
      const o = this.judge(msg);
      if (o === 'terminate') {
        terminate = true;
        break;
      }
      if (o) batch.push(o);
    }
    // Nothing to record and nothing ahead of it: straight out. While an approved COPY FROM STDIN runs,
    // its data must flow past the wait for that statement's end (nothing else is queued then).
    const quiet = !batch.some((o) => o.event);
    if (quiet && (this.auditing === 0 || (this.auditing === 1 && this.approvedRunning))) return this.send(batch, terminate);
    this.auditing++;
    this.auditChain = this.auditChain
      .then(() => this.appendEvents(batch))
      .then(() => this.sendBatch(batch, terminate))
      .catch((err) => this.fatal(err))
      .finally(() => {
        if (--this.auditing === 0 && !this.upstreamFull) this.out.drained();
      });
  }

  /** Appends the batch's statement events; on failure every statement of the batch is refused instead. */
  private async appendEvents(batch: Outbound[]): Promise<void> {
    const withEvents = batch.filter((o) => o.event);
    if (withEvents.length === 0) return;
    try {
      const written = await Promise.all(withEvents.map((o) => this.deps.audit.append(o.event!)));
      withEvents.forEach((o, i) => o.inFlight && (o.inFlight.seq = written[i]?.seq));
    } catch (err) {
      this.log.error('audit store unavailable; refusing statements', { error: (err as Error).message });
      for (const o of withEvents) o.onAuditFailure?.(o);
    }
  }

  /**
   * Sends a batch whose events are recorded. A held statement waits for its approval; an approved one
   * runs read-write, and nothing after it leaves until it finished and the read-only default is back.
   */
  private async sendBatch(batch: Outbound[], terminate: boolean): Promise<void> {
    let from = 0;
    for (let i = 0; i < batch.length; i++) {
      const o = batch[i];
      const h = o.hold;
      if (!h) continue;
      this.send(batch.slice(from, i), false);
      if (h.ext) {
        await this.runExtendedHold(o, h, h.ext);
        if (this.step === 'Closed') return;
        this.send([o], false);
        from = i + 1;
        continue;
      }
      const approved = h.rowLocks ? this.runReadWrite(o, h) : await this.holdQuery(o, h);
      if (this.step === 'Closed') return;
      const done = approved ? new Promise<void>((resolve) => (h.ready!.done = resolve)) : undefined;
      this.approvedRunning = approved && i === batch.length - 1;
      this.send([batch[i]], false);
      if (done) {
        await done;
        this.approvedRunning = false;
        // Back to read-only before anything else of the client runs (P8); its replies are swallowed. The
        // client's later statements already have entries (judged on arrival) but are sent after this one,
        // so its entry goes first. An export never left read-only.
        if (runsReadWrite(h)) {
          this.readyQueue.unshift({ completed: 0, hidden: true });
          this.upstream?.write(this.switches.readOnly);
        }
      }
      from = i + 1;
    }
    this.send(batch.slice(from), terminate);
  }

  /**
   * P8: this statement, and only it, runs outside the read-only default (restored when its
   * ReadyForQuery arrives: see sendBatch).
   */
  private runReadWrite(o: Outbound, h: Held): true {
    if (!runsReadWrite(h)) {
      o.bytes = serializeFrontend(h.msg!); // an export reads: it runs as it is, still read-only
      return true;
    }
    o.bytes = Buffer.concat([this.switches.readWrite, serializeFrontend(h.msg!)]);
    this.readyQueue.splice(this.readyQueue.indexOf(h.ready!), 0, { completed: 0, hidden: true });
    return true;
  }

  /**
   * An Execute held in the extended protocol. Its Parse and Bind are already at the server, inside the
   * client's implicit transaction, which is read-only (P8) and may already be failed:
   *
   *   agent ──► Sync (its ReadyForQuery swallowed)   ends that transaction; tells us whether the server
   *                                                   was skipping to Sync (an earlier error) and whether
   *                                                   a transaction block is open
   *   skipping     ──► a Parse that fails (its error swallowed): the server skips the rest of the run
   *                    again, as it would have; nothing is asked, nothing runs
   *   in a block   ──► refused (42501): the block is read-only and must stay so
   *   otherwise    ──► approval request; denied → refused; approved →
   *                    read-write switch (hidden), the client's Bind again (its BindComplete swallowed:
   *                    the portal ended with the transaction), the client's Execute. The read-only
   *                    default comes back after the client's Sync (judge: Sync).
   */
  private async runExtendedHold(o: Outbound, h: Held, ext: ExtendedHold): Promise<void> {
    const { status, errored } = await this.boundary(ext.prev);
    if (this.step === 'Closed') return;
    if (errored) {
      this.swallow.push(Backend.ErrorResponse);
      o.bytes = this.switches.skip;
      return;
    }
    const write = needsReadWrite(h.decision);
    if (status === TxStatus.Failed) {
      // A failed block: the server refuses whatever comes (25P02), so there is nothing to approve.
      o.bytes = serializeFrontend(ext.execute);
      return;
    }
    if (status !== TxStatus.Idle && write) {
      if (o.inFlight) o.inFlight.sqlstate = SqlState.InsufficientPrivilege;
      o.bytes = this.refuse('Parse', IN_TRANSACTION);
      return;
    }
    if (!(await this.awaitApproval(o, h))) return;
    this.deps.policy.apply(h.decision);
    if (status !== TxStatus.Idle) {
      // An export inside a block (pg_dump): the block keeps the portal, and a read needs no switch.
      o.bytes = serializeFrontend(ext.execute);
      return;
    }
    // The implicit transaction ended with the boundary, and the portal with it: bind it again.
    if (write) {
      const at = ext.prev ? this.readyQueue.indexOf(ext.prev) + 1 : 0;
      this.readyQueue.splice(at, 0, { completed: 0, hidden: true, thenSwallow: Backend.BindComplete });
    } else this.swallow.push(Backend.BindComplete);
    o.bytes = Buffer.concat([write ? this.switches.readWrite : EMPTY, serializeFrontend(ext.bind), serializeFrontend(ext.execute)]);
  }

  /** Sends a Sync of the agent's own right after everything forwarded so far; resolves at its ReadyForQuery. */
  private boundary(prev: ReadyEntry | undefined): Promise<{ status: number; errored: boolean }> {
    return new Promise((resolve) => {
      const entry: ReadyEntry = { completed: 0, boundary: resolve, errored: false };
      this.readyQueue.splice(prev ? this.readyQueue.indexOf(prev) + 1 : 0, 0, entry);
      if (!this.upstream!.write(SYNC)) this.upstreamFull = true;
    });
  }

  /**
   * A simple Query's hold. Once everything before it is answered the transaction status is known: in a
   * transaction block (read-only, P8) an approved write could not run, so it is refused at once. An
   * export (COPY … TO STDOUT in pg_dump's read-only block) is a read and is asked for as anywhere.
   */
  private async holdQuery(o: Outbound, h: Held): Promise<boolean> {
    await this.untilAnswered(h.ready!);
    if (this.step === 'Closed') return false;
    if (this.txStatus !== TxStatus.Idle && needsReadWrite(h.decision)) {
      h.ready!.decision = undefined;
      o.bytes = this.refuse('Query', IN_TRANSACTION);
      return false;
    }
    return this.awaitApproval(o, h);
  }

  private async awaitApproval(o: Outbound, h: Held): Promise<boolean> {
    const approvals = this.deps.audit.approvals;
    const conn = this.deps.connection;
    const who = { sessionId: this.meta.sessionId, who: this.deps.identity, connection: conn.name };
    const fingerprint = h.fingerprint;
    const a = await approvals.create({
      sessionId: this.meta.sessionId,
      connection: conn.name,
      requester: identityOf(this.deps.identity),
      sql: h.sql,
      params: h.params,
      fingerprint,
      timeoutMs: durationMs(conn.approval.timeout),
      minApprovals: conn.approval.minApprovals,
      statementSeq: o.inFlight?.seq,
      rule: h.decision.rule,
    });
    await this.deps.audit.append(makeApprovalEvent('approval_requested', { ...who, approvalId: a.id, statementSeq: o.inFlight?.seq, fingerprint }));
    const text = `hoopctl: statement held for approval ${a.id} (${h.decision.rule}): ${h.decision.reason}`;
    this.out.send(noticeResponse({ severity: 'NOTICE', code: '01000', message: text, hint: `An approver runs: hoopctl approvals approve ${a.id}   (expires ${a.expiresAt})` }));
    this.out.event({ type: 'approval_requested', streamId: this.meta.streamId, message: text, data: { id: a.id, connection: conn.name, sql: h.sql, expiresAt: a.expiresAt } });
    this.log.info('statement held', { approvalId: a.id, rule: h.decision.rule });

    const abort = new AbortController();
    this.pendingHold = abort;
    let status: string;
    let by = '';
    try {
      const d = await approvals.awaitDecision(a.id, abort.signal);
      status = d.status;
      const last = d.approval.votes.at(-1);
      if (last) by = ` by ${last.sub}${last.reason ? `: ${last.reason}` : ''}`;
    } catch {
      // The client cancelled (Ctrl-C): withdraw the request, nothing runs.
      await approvals.withdraw(a.id).catch(() => {});
      status = 'withdrawn';
    } finally {
      this.pendingHold = undefined;
    }
    if (status === 'approved') {
      try {
        await approvals.consume(a.id, fingerprint); // single use, bound to this statement
      } catch (err) {
        status = `not usable (${(err as Error).message})`;
      }
    }
    if (status === 'approved') {
      await this.deps.audit.append(makeApprovalEvent('approval_consumed', { ...who, approvalId: a.id, statementSeq: o.inFlight?.seq }));
      if (!h.ext) this.runReadWrite(o, h);
      this.out.event({ type: 'approved', streamId: this.meta.streamId, message: `hoopctl: approval ${a.id} granted${by}; running the statement`, data: { id: a.id } });
      return true;
    }
    if (h.ready) h.ready.decision = undefined;
    if (o.inFlight) o.inFlight.sqlstate = SqlState.InsufficientPrivilege;
    o.bytes = this.refuse(h.ext ? 'Parse' : 'Query', { action: 'denied', rule: h.decision.rule, reason: `approval ${a.id} ${status}${by}; the statement was not run` });
    this.out.event({ type: status === 'denied' ? 'denied' : status, streamId: this.meta.streamId, message: `hoopctl: approval ${a.id} ${status}${by}`, data: { id: a.id, status } });
    return false;
  }

  private send(batch: Outbound[], terminate: boolean): void {
    if (this.step === 'Closed') return;
    this.recording?.forwarded(batch);
    if (batch.length) {
      const bytes = batch.length === 1 ? batch[0].bytes : Buffer.concat(batch.map((o) => o.bytes));
      if (!this.upstream!.write(bytes)) this.upstreamFull = true;
    }
    if (terminate) this.teardown('client terminated the session');
  }

  /**
   * Decides one frontend message: what to forward, nothing, or 'terminate'. Statements are judged where
   * they would run: a Query by its text, a Parse by its statement, a Bind by the statement it binds, an
   * Execute by what its portal really runs (policy/session.ts).
   */
  private judge(msg: FrontendMessage): Outbound | null | 'terminate' {
    const policy = this.deps.policy;
    switch (msg.type) {
      case 'Terminate':
        return 'terminate';
      case 'FunctionCall': {
        // The fast-path interface calls any function by OID, past every SQL-level check.
        this.readyQueue.push({ completed: 0 });
        const d = { action: 'block', rule: 'P3.protocol.function-call', reason: 'the FunctionCall protocol message is not allowed through hoopctl' } as const;
        this.masking?.barrier();
        this.log_.ready();
        return { bytes: this.refuse('Query', d), event: this.log_.statementEvent(`<FunctionCall oid ${msg.fnOid}>`, d.action, d.rule) };
      }
      case 'CopyData':
      case 'CopyDone':
      case 'CopyFail':
        // Outside COPY FROM STDIN the server would reject these; we never forward them there.
        if (!this.inCopyIn) return null;
        if (msg.type !== 'CopyData') this.inCopyIn = false;
        return { bytes: serializeFrontend(msg) };
      case 'Query': {
        const d = policy.query(msg.sql);
        this.logDecision(msg.sql, d);
        const holdable = d.action === 'hold' && this.deps.connection.approval.approvers !== undefined;
        const ready: ReadyEntry = { decision: d.action === 'allow' || holdable ? d : undefined, completed: 0 };
        this.readyQueue.push(ready);
        if (holdable) {
          // P4: held until a human approves exactly this statement; the session waits with it.
          const reads = this.masking?.query(d.statements.map((f) => f.text)) ?? false;
          const sql = this.auditSql(msg.sql, reads);
          return {
            bytes: EMPTY,
            event: this.log_.statementEvent(sql, d.action, d.rule),
            inFlight: this.log_.started('query', msg.sql),
            hold: { msg, decision: d, ready, sql, fingerprint: this.fingerprint(msg.sql) },
            onAuditFailure: (o) => {
              ready.decision = undefined;
              o.hold = undefined;
              o.bytes = this.refuse('Query', AUDIT_DOWN);
            },
          };
        }
        if (d.action !== 'allow') {
          this.masking?.barrier();
          this.log_.ready();
          const event = this.log_.statementEvent(this.auditSql(msg.sql, this.masking?.sensitive(msg.sql) ?? false), d.action, d.rule);
          return { bytes: this.refuse('Query', d), event };
        }
        const reads = this.masking?.query(d.statements.map((f) => f.text)) ?? false;
        const event = this.log_.statementEvent(this.auditSql(msg.sql, reads), d.action, d.rule);
        // Row locks are not writes (allowed), but a READ ONLY transaction refuses them: run it read-write
        // on its own, outside a client transaction only (inside one, PostgreSQL keeps the block read-only).
        const rowLocks = this.txStatus === TxStatus.Idle && d.statements.some((f) => f.locksRows);
        return {
          hold: rowLocks ? { msg, decision: d, ready, sql: msg.sql, rowLocks, fingerprint: '' } : undefined,
          bytes: serializeFrontend(msg),
          event,
          inFlight: this.log_.started('query', msg.sql),
          onAuditFailure: (o) => {
            ready.decision = undefined;
            o.hold = undefined;
            o.bytes = this.refuse('Query', AUDIT_DOWN);
          },
        };
      }
      case 'Parse': {
        const d = policy.parse(msg.name, msg.sql);
        if (d.action === 'allow') this.masking?.parse(msg.name, msg.sql);
        return this.decided(d, msg, msg.sql);
      }
      case 'Bind': {
        const d = policy.bind(msg.portal, msg.statement);
        if (d.action === 'allow') this.masking?.bind(msg.portal, msg.statement, msg.resultFormats);
        this.portalParams.set(msg.portal, msg);
        return this.decided(d, msg);
      }
      case 'Describe':
        this.masking?.describe(msg.target, msg.name);
        return { bytes: serializeFrontend(msg) };
      case 'Execute': {
        const d = policy.execute(msg.portal);
        const facts = d.statements[0];
        const sql = facts?.text ?? '';
        const bind = this.portalParams.get(msg.portal);
        this.logDecision(sql, d);
        const holdable = d.action === 'hold' && bind !== undefined && this.deps.connection.approval.approvers !== undefined;
        const runs = d.action === 'allow' || holdable;
        const reads = runs ? (this.masking?.execute(msg.portal) ?? false) : (this.masking?.sensitive(sql) ?? false);
        const sensitive = reads || this.touchesMasked(facts?.relations);
        const params = bind && auditParams(bind.params, bind.paramFormats, sensitive);
        const event = this.log_.statementEvent(this.auditSql(sql, sensitive), d.action, d.rule, params);
        if (holdable) {
          // P4 in the extended protocol: held at its Execute, with the parameters it was bound to.
          this.extHoldInRun = true;
          return {
            bytes: EMPTY,
            event,
            inFlight: this.log_.started('execute', sql),
            hold: {
              decision: d,
              sql: this.auditSql(sql, sensitive),
              params,
              fingerprint: this.fingerprint(sql, bind),
              ext: { bind, execute: msg, prev: this.readyQueue.at(-1) },
            },
            onAuditFailure: (o) => {
              o.hold = undefined;
              o.bytes = this.refuse('Parse', AUDIT_DOWN);
            },
          };
        }
        if (d.action !== 'allow') return { bytes: this.refuse('Parse', d), event };
        this.deps.policy.apply(d);
        return {
          bytes: serializeFrontend(msg),
          event,
          inFlight: this.log_.started('execute', sql),
          onAuditFailure: (o) => (o.bytes = this.refuse('Parse', AUDIT_DOWN)),
        };
      }
      case 'Close':
        policy.close(msg.target, msg.name);
        this.masking?.close(msg.target, msg.name);
        if (msg.target === 'P') this.portalParams.delete(msg.name);
        return { bytes: serializeFrontend(msg) };
      case 'Sync':
        this.readyQueue.push({ completed: 0 });
        this.masking?.barrier();
        this.log_.ready();
        if (this.extHoldInRun) return { bytes: Buffer.concat([SYNC, this.restoreReadOnly()]), sync: true };
        return { bytes: SYNC, sync: true };
      default:
        return { bytes: serializeFrontend(msg) };
    }
  }

  /** Parse and Bind run nothing: forwarded with their effects recorded, or refused (and audited). */
  private decided(d: Decision, msg: FrontendMessage, sql?: string): Outbound {
    if (d.action !== 'allow') {
      this.logDecision(sql ?? '', d);
      const text = sql ?? '';
      return { bytes: this.refuse('Parse', d), event: this.log_.statementEvent(this.auditSql(text, this.masking?.sensitive(text) ?? false), d.action, d.rule) };
    }
    this.deps.policy.apply(d);
    return { bytes: serializeFrontend(msg) };
  }

  /**
   * What an approval is bound to: this session, the statement's text and, in the extended protocol, the
   * exact parameter values and formats it was bound with.
   */
  private fingerprint(sql: string, bind?: Extract<FrontendMessage, { type: 'Bind' }>): string {
    const h = createHash('sha256').update(`${this.meta.sessionId}\0${sql}`);
    if (bind) {
      h.update(`\0${bind.statement}\0${bind.paramFormats.join(',')}\0${bind.resultFormats.join(',')}`);
      for (const p of bind.params) h.update(p === null ? '\0N' : `\0${p.length}:`).update(p ?? EMPTY);
    }
    return h.digest('hex');
  }

  /**
   * The read-only default again (P8) after a run that held an Execute, as the agent's own hidden
   * statement right behind the client's Sync. Its replies are swallowed.
   */
  private restoreReadOnly(): Buffer {
    this.extHoldInRun = false;
    this.readyQueue.push({ completed: 0, hidden: true });
    return this.switches.readOnly;
  }

  /**
   * A simple Query inside a run that held an Execute (no Sync yet): end that run first with a Sync of
   * the agent's own (so the switch cannot be skipped after an error), then restore the read-only default.
   */
  private restoreBeforeQuery(): Outbound {
    this.readyQueue.push({ completed: 0, hidden: true });
    return { bytes: Buffer.concat([SYNC, this.restoreReadOnly()]) };
  }

  /**
   * The SQL as the audit trail keeps it. A statement that may read masked columns keeps its shape but
   * not its literals (`mrn = 'MRN-…'` → `mrn = $1`): the trail must never hold what masking hides.
   */
  private auditSql(sql: string, sensitive: boolean): string {
    if (!sensitive || !this.deps.masking) return sql;
    try {
      return normalizeSync(sql);
    } catch {
      return '<statement not recorded: it could not be normalised>';
    }
  }

  private touchesMasked(relations: readonly string[] | undefined): boolean {
    if (!relations || this.maskedTables.size === 0) return false;
    return relations.some((r) => this.maskedTables.has(r.split('.').pop()!));
  }

  private logDecision(sql: string, d: Pick<Decision, 'action' | 'rule'>): void {
    this.log.info('statement', { decision: d.action, rule: d.rule, sql });
  }

  /**
   * Replaces a refused message by a sentinel PostgreSQL rejects while parsing (see the header). In the
   * extended protocol the sentinel is a Parse of a fresh name, so no statement of the client's changes.
   */
  private refuse(as: 'Query' | 'Parse', d: Refusal): Buffer {
    const word = `hoop_refused_${this.nonce}_${++this.sentinelSeq}`;
    this.sentinels.set(word, refusalFields(d));
    // A sentinel the server skipped (after an earlier error in its pipeline) never answers; statements
    // pipelined behind a ReadyForQuery still will, so old entries are dropped by count, not by RFQ.
    if (this.sentinels.size > 256) this.sentinels.delete(this.sentinels.keys().next().value!);
    return as === 'Query'
      ? serializeFrontend({ type: 'Query', sql: word })
      : serializeFrontend({ type: 'Parse', name: word, sql: word, paramTypes: [] });
  }

  // ── Database → client ──────────────────────────────────────────────────────────────────────────

  /**
   * Backend bytes: walk the headers, act on the few message types that carry state, and pass the rest
   * on as they arrived: one tunnel frame per upstream read.
   */
  private onUpstreamBytes(chunk: Buffer): void {
    const fr = this.backend;
    const count = fr.push(chunk);
    if (count === 0) return;
    const { types, offsets } = fr;
    let rewrites: Map<number, Buffer> | undefined;
    for (let i = 0; i < count; i++) {
      if (this.swallow.length > 0) {
        // The agent's own message inside a client's run (a Bind again, a skip): its reply is dropped.
        if (this.swallow[0] === types[i]) {
          this.swallow.shift();
          (rewrites ??= new Map()).set(i, EMPTY);
          continue;
        }
        this.swallow.length = 0; // not the reply we expected (an error): the client sees it
      }
      const head = this.readyQueue[0];
      if (head?.hidden) {
        // Replies to the agent's own statements are dropped; they change no state the client sees.
        (rewrites ??= new Map()).set(i, EMPTY);
        if (types[i] === Backend.ReadyForQuery) {
          this.shiftReady();
          if (head.thenSwallow !== undefined) this.swallow.push(head.thenSwallow);
        }
        continue;
      }
      if (head?.boundary && types[i] === Backend.ReadyForQuery) {
        // The agent's own Sync before a held Execute: the client's run is not over, so no ReadyForQuery.
        (rewrites ??= new Map()).set(i, EMPTY);
        this.shiftReady();
        this.txStatus = fr.buffer[offsets[i] + 5];
        head.boundary({ status: this.txStatus, errored: head.errored === true });
        continue;
      }
      switch (types[i]) {
        case Backend.ErrorResponse: {
          if (head?.boundary) head.errored = true;
          const fields = parseErrorFields(fr.body(i));
          const refusal = this.sentinelFor(fields.message ?? '');
          if (refusal) (rewrites ??= new Map()).set(i, errorResponse(refusal));
          else this.log_.onError(fields.code);
          break;
        }
        case Backend.CommandComplete: {
          const q = this.readyQueue[0];
          if (q) q.completed++;
          this.log_.onCommandComplete(parseCommandComplete(fr.body(i)).rows ?? 0);
          break;
        }
        case Backend.PortalSuspended:
        case Backend.EmptyQueryResponse:
          this.log_.onExecuteEnd();
          break;
        case Backend.ReadyForQuery: {
          this.inCopyIn = false;
          this.log_.onReady();
          this.onReadyForQuery(fr.buffer[offsets[i] + 5]);
          break;
        }
        case Backend.CopyInResponse:
          this.inCopyIn = true;
          break;
        case Backend.CopyBothResponse:
          // Only replication uses CopyBoth, and replication is refused at startup.
          throw new ProtocolError('unexpected CopyBothResponse from the database');
      }
    }
    // Masking sees every chunk (it tracks which statement owns which rows) and applies our rewrites too.
    if (this.masking) return this.out.send(this.masking.process(fr.buffer, types, offsets, count, rewrites));
    const complete = fr.complete;
    if (!rewrites) return this.out.send(complete);
    const parts: Buffer[] = [];
    let at = 0;
    for (const [i, bytes] of rewrites) {
      parts.push(complete.subarray(at, offsets[i]), bytes);
      at = offsets[i + 1];
    }
    parts.push(complete.subarray(at));
    this.out.send(Buffer.concat(parts));
  }

  /** Removes the answered entry; the next one may be waited on (untilAnswered). */
  private shiftReady(): ReadyEntry | undefined {
    const q = this.readyQueue.shift();
    const next = this.readyQueue[0];
    if (next?.atHead) {
      const go = next.atHead;
      next.atHead = undefined;
      go();
    }
    return q;
  }

  /** Resolves once everything sent before this entry has been answered (so txStatus is current). */
  private untilAnswered(e: ReadyEntry): Promise<void> {
    if (this.readyQueue[0] === e) return Promise.resolve();
    return new Promise((resolve) => (e.atHead = resolve));
  }

  /** The refusal a sentinel's syntax error stands for, if this error is one of ours. */
  private sentinelFor(message: string): PgErrorFields | undefined {
    if (this.sentinels.size === 0 || !message.includes(this.nonce)) return undefined;
    for (const [word, refusal] of this.sentinels) {
      if (!message.includes(word)) continue;
      this.sentinels.delete(word);
      return refusal;
    }
    return undefined;
  }

  /**
   * ReadyForQuery ends a simple Query or a Sync. Record what the Query's statements did (only those
   * that completed), and forget portals and cursors when no transaction is open any more.
   */
  private onReadyForQuery(status: number): void {
    const q = this.shiftReady();
    if (q?.decision) this.deps.policy.apply(q.decision, q.completed);
    q?.done?.();
    this.txStatus = status;
    if (status === TxStatus.Idle) this.deps.policy.endTransaction();
  }

  // ── Errors and teardown ────────────────────────────────────────────────────────────────────────

  private guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.fatal(err);
    }
  }

  /**
   * Ends the session with a FATAL ErrorResponse. Only refusals we wrote ourselves reach the client
   * verbatim; anything else becomes "internal error (ref …)" and the details go to the log.
   */
  private fatal(err: unknown): void {
    if (this.step === 'Closed') return;
    let fields: PgErrorFields;
    if (err instanceof ProtocolError || err instanceof StartupRefusal) {
      fields = { severity: 'FATAL', code: err.code, message: err.message, hint: (err as { hint?: string }).hint };
      this.log.info('session refused', { code: err.code, reason: err.message });
    } else {
      const ref = randomBytes(4).toString('hex');
      fields = { severity: 'FATAL', code: SqlState.InternalError, message: `internal error (ref ${ref})` };
      this.log.error('session failed', { ref, error: (err as Error)?.stack ?? String(err) });
    }
    this.out.send(errorResponse(fields));
    this.teardown(`${fields.code}: ${fields.message}`);
  }

  private teardown(reason: string): void {
    if (this.step === 'Closed') return;
    this.step = 'Closed';
    clearTimeout(this.startupTimer);
    this.pendingHold?.abort(); // a held statement of a client that left is withdrawn, never run
    if (this.cancelPid !== undefined) this.deps.cancels.release(this.cancelPid);
    const sock = this.upstream;
    if (sock && !sock.destroyed) {
      if (this.txStatus === TxStatus.Idle && this.readyQueue.length === 0) {
        // Idle: say goodbye properly so the server ends the backend at once.
        sock.end(TERMINATE);
        setTimeout(() => sock.destroy(), 2000).unref();
      } else {
        // Mid-statement the server is not reading (it may be blocked sending rows): drop the connection
        // so the backend stops at once instead of finishing a result nobody reads.
        sock.destroy();
      }
    }
    this.out.close();
    this.recording?.end();
    if (!this.recorded) return; // a cancel request or a refused startup: no session to close
    const end = makeSessionEndEvent({ sessionId: this.meta.sessionId, who: this.deps.identity, connection: this.deps.connection.name, reason, statements: this.log_.count });
    this.deps.audit.append(end).catch((err) => this.log.error('audit store unavailable; session end not recorded', { error: (err as Error).message }));
  }
}

/** One frontend message's outcome: the bytes to forward and, for statements, the audit event. */
interface Outbound {
  bytes: Buffer;
  event?: EventInput;
  inFlight?: InFlight;
  /** The audit store could not take the event: swap the bytes for a refusal. */
  onAuditFailure?(o: Outbound): void;
  /** Held for approval: `bytes` is decided once an approver has. */
  hold?: Held;
  /** The client's Sync (answered by one ReadyForQuery the client sees). */
  sync?: true;
}

interface Held {
  /** A simple Query's hold (answered by its own ReadyForQuery entry)… */
  msg?: Extract<FrontendMessage, { type: 'Query' }>;
  ready?: ReadyEntry;
  /** …or an extended-protocol Execute's. */
  ext?: ExtendedHold;
  decision: Decision;
  /** Parameters as recorded (masked values redacted), shown to approvers. */
  params?: unknown[];
  /** What the approval is bound to (see PgSession.fingerprint). */
  fingerprint: string;
  /** The SQL as recorded and shown to approvers (literals removed when it reads masked columns). */
  sql: string;
  /** Not a write: a read with FOR UPDATE/SHARE, which PostgreSQL refuses in READ ONLY; no approval. */
  rowLocks?: boolean;
}

interface ExtendedHold {
  bind: Extract<FrontendMessage, { type: 'Bind' }>;
  execute: Extract<FrontendMessage, { type: 'Execute' }>;
  /** The last ReadyForQuery entry before this run's: the agent's own entries go right after it. */
  prev: ReadyEntry | undefined;
}

/** Parse, Bind, Execute, Close and Sync of one statement of the agent's, named so the client's unnamed statement survives. */
function hiddenStatement(name: string, sql: string): Buffer {
  return Buffer.concat([
    serializeFrontend({ type: 'Parse', name, sql, paramTypes: [] }),
    serializeFrontend({ type: 'Bind', portal: name, statement: name, paramFormats: [], params: [], resultFormats: [] }),
    serializeFrontend({ type: 'Execute', portal: name, maxRows: 0 }),
    serializeFrontend({ type: 'Close', target: 'S', name }),
    SYNC,
  ]);
}

const EMPTY = Buffer.alloc(0);
/** pace(): a wakeup that read less than this, mid-result, pauses reading for PACE_MS (~100 KB of rows at full speed). */
const PACE_BELOW_BYTES = 32 * 1024;
const PACE_MS = 1;

interface ReadyEntry {
  decision?: Decision;
  completed: number;
  /** The agent's own statement (read-write switch around an approved write): swallow its replies. */
  hidden?: boolean;
  /** After this hidden entry's ReadyForQuery, the next reply of this type is the agent's too. */
  thenSwallow?: number;
  /** The agent's own Sync inside a client's run: only its ReadyForQuery is swallowed (runExtendedHold). */
  boundary?: (r: { status: number; errored: boolean }) => void;
  /** An ErrorResponse came before this boundary: the server was skipping to Sync. */
  errored?: boolean;
  /** Called when this entry's ReadyForQuery arrived. */
  done?: () => void;
  /** Called when every entry before this one has been answered. */
  atHead?: () => void;
}

type Refusal = Pick<Decision, 'action' | 'rule' | 'reason'> | { action: 'unavailable' | 'denied'; rule: string; reason: string };

/** Whether a held decision writes (anything held other than a bulk export), so it must run read-write. */
function needsReadWrite(d: Decision): boolean {
  return d.statements.some((f) => f.action === 'hold' && f.rule !== 'P4.export');
}

/** A held simple Query runs read-write when it writes, or locks rows (which READ ONLY refuses). */
function runsReadWrite(h: Held): boolean {
  return h.rowLocks === true || needsReadWrite(h.decision);
}

const IN_TRANSACTION: Refusal = {
  action: 'block',
  rule: 'P4.in-transaction',
  reason: 'a statement that needs approval cannot run inside a transaction block (BEGIN … COMMIT), which stays read-only; send it on its own',
};

const AUDIT_DOWN: Refusal = {
  action: 'unavailable',
  rule: 'P9.audit-unavailable',
  reason: 'the audit store cannot record it right now, so it was not run',
};

function refusalFields(d: Refusal): PgErrorFields {
  switch (d.action) {
    case 'hold':
      return {
        severity: 'ERROR',
        code: SqlState.InsufficientPrivilege,
        message: `hoopctl: statement needs approval and was not run (${d.rule}): ${d.reason}`,
        hint: 'Writes and bulk exports wait for an approver, but this connection has no approvers configured (approval.approvers). Ask its owner to add them.',
      };
    case 'denied':
      return {
        severity: 'ERROR',
        code: SqlState.InsufficientPrivilege,
        message: `hoopctl: ${d.reason} (${d.rule})`,
        hint: 'Nothing was changed. Ask an approver, or send the statement again to request a new approval.',
      };
    case 'unavailable':
      return {
        severity: 'ERROR',
        code: SqlState.CannotConnectNow,
        message: `hoopctl: ${d.reason} (${d.rule})`,
        hint: 'Retry shortly; the agent recovers by itself when its audit store is writable again.',
      };
    default:
      return {
        severity: 'ERROR',
        code: SqlState.InsufficientPrivilege,
        message: `hoopctl: statement blocked by policy (${d.rule}): ${d.reason}`,
        hint: 'Ask the connection owner to change the policy if this statement is needed.',
      };
  }
}
