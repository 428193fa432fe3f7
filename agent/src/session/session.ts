// One Postgres session at the agent: the client's protocol is terminated here, and the agent speaks to
// the database on its own connection with its own credential.
//
//   client (via tunnel stream)            agent session                         PostgreSQL
//   SSLRequest / GSSENCRequest  ──►  'N' (the tunnel is the encrypted leg)
//   StartupMessage              ──►  sanitise parameters ──── connectUpstream ──►  Startup + SCRAM
//                               ◄──  AuthenticationOk, ParameterStatus*, agent-issued BackendKeyData,
//                                    ReadyForQuery
//   Query / Parse / Bind / …    ──►  frame → judge (policy, namespace) → audit → ──►  (allowed bytes only)
//                               ◄──  pipeline.ts: each reply matched to its request, masked, recorded
//   CancelRequest (new stream)  ──►  CancelRegistry: same identity + issued key ──►  real CancelRequest
//
// What the agent believes about the server's session (prepared statements, portals, cursors, transaction
// status) lives in one Namespace and changes only on the server's word (namespace.ts, pipeline.ts).
// Client messages are judged one at a time, in order, by what the server will really run; a message
// whose meaning depends on something the server has not confirmed yet waits for it.
//
// A refusal of a single statement never desynchronises the protocol: the refused message is replaced by
// a sentinel PostgreSQL rejects at parse time (refusals.ts), so the error arrives where the server would
// have put it and the session stays usable.
import { createHash, randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { SqlState } from '../../../shared/errors.js';
import type { Logger } from '../log.js';
import type { ResolvedConnection } from '../config.js';
import type { Principal } from '../identity/access.js';
import type { CancelRegistry } from './cancel.js';
import type { Decision, Effect, PolicyEngine, PolicySession, StatementFacts } from '../policy/index.js';
import type { StateStore } from '../audit/store.js';
import { identityOf, makeApprovalEvent, makeSessionEndEvent, makeSessionStartEvent, type EventInput } from '../audit/events.js';
import { durationMs } from '../../../shared/config/schema.js';
import type { TunnelEvent } from '../../../shared/tunnel/frame.js';
import type { LineagePlan } from '../masking/lineage.js';
import { StatementLog, auditParams, type InFlight } from './statement-log.js';
import { NO_PLAN, ResultMasker, UNKNOWN_PLAN } from './result-masking.js';
import { SessionRecording, type RecordingOptions } from './recording.js';
import { Namespace, stepPortal, stepStatement, type Op, type Portal, type RowCounter, type Statement } from './namespace.js';
import { Pipeline, type QueryStatement, type Request, type RowPause } from './pipeline.js';
import {
  AUDIT_DOWN, FUNCTION_CALL, IN_PIPELINE, IN_TRANSACTION, READ_WRITE_ALONE, REVIEW_COMMIT_ALONE, REVIEW_ESCAPES, refusalFields, sentinel, type Refusal,
} from './refusals.js';
import { TransactionReview, type ReviewEntry, type TransactionDetail } from './review.js';
import { normalizeSync } from 'libpg-query';
import type { ConnectionMasking } from '../masking/connection.js';
import type { SessionScope } from '../policy/scope.js';
import { Frontend, TxStatus } from '../pgwire/codes.js';
import { ProtocolError } from '../pgwire/errors.js';
import {
  FrontendFramer,
  parseStartup,
  parseFrontend,
  serializeFrontend,
  FLUSH,
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
  parseDataRow,
  readyForQuery,
  negotiateProtocolVersion,
  type PgErrorFields,
} from '../pgwire/backend.js';
import type { UpstreamConnection } from '../upstream/connect.js';
import { sanitizeStartup, StartupRefusal } from './startup.js';
import { causeClass } from '../metrics.js';

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
  /** The connection's policy engine: every statement is judged by it (policy/). */
  policy: PolicyEngine;
  /** The audit trail: events are appended before what they describe reaches the database. */
  audit: Pick<StateStore, 'append' | 'approvals'>;
  /** The connection's masking; absent when it masks no column. */
  masking?: ConnectionMasking;
  /** P11: the scope of this session's identity; absent when the connection has no scopes. */
  scope?: SessionScope;
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
  /** Why the tunnel was opened (`--reason`, or built from CI claims). */
  purpose?: string;
}

/** What arrived from the client and waits to be judged: a message, or the error that ended the stream. */
type Inbound = FrontendRaw | { error: unknown };

export class PgSession {
  step: Step = 'AwaitingStartup';
  private readonly framer: FrontendFramer;
  private readonly backend = new BackendFramer();
  private up?: UpstreamSession;
  private upstream?: Socket;
  private cancelPid?: number;
  private startupTimer?: NodeJS.Timeout;
  /** Client bytes that arrived while the upstream connection was being opened. */
  private queued: Buffer[] = [];
  private upstreamFull = false;
  private paused = false;
  /** Reading upstream is paused for a moment so that a streaming result arrives in bigger reads (pace()). */
  private pacing = false;
  private burst = 0;
  private burstCounting = false;

  /** The server's session as the agent knows it, and the requests it has not answered yet. */
  private readonly ns = new Namespace();
  private readonly pipeline: Pipeline;
  private readonly policy: PolicySession;
  private masker?: ResultMasker;
  /** Client messages waiting to be judged, in order; one pump judges them. */
  private readonly inbox: Inbound[] = [];
  private pumping = false;
  /** Judged and not yet sent: everything from the last send on (a held run collects up to its Sync). */
  private batch: Outbound[] = [];
  /** The batch holds an extended-protocol Execute that waits for approval: it is sent at the run's Sync. */
  private heldRun = false;
  /** Bytes for the database, written in one go at the next flush. */
  private out_: Buffer[] = [];
  /** Extended-protocol messages were sent since the last Sync: an implicit transaction may be open. */
  private runOpen = false;

  private readonly nonce = randomBytes(6).toString('hex');
  private sentinelSeq = 0;
  /** Aborts the approval wait when the client cancels (CancelRequest). */
  private pendingHold?: AbortController;
  /**
   * P11 row threshold: a result paused at its row limit. Reading from PostgreSQL stops (the server blocks
   * on its socket: memory stays bounded); `rest` is what was framed past the limit, `later` any reads after.
   */
  private rowPause?: { rest: Buffer; later: Buffer[] };
  /** The agent's own statements: named hidden statements, so a client's unnamed statement survives them. */
  private readonly switches: { readWrite: Buffer; readOnly: Buffer; blockReadWrite: Buffer; wroteCheck: Buffer; rollback: Buffer };
  /** approval.mode transaction: the block the client opened with a plain BEGIN, until a ReadyForQuery says it ended. */
  private review?: TransactionReview;
  /** The session_start event is durable (so a session_end belongs in the trail too). */
  private recorded = false;
  private applicationName = '';
  private readonly maskedTables: Set<string>;
  /** Relation names the masking catalog was reloaded for (so a name it never holds costs one reload). */
  private readonly reloadedFor = new Set<string>();
  private readonly stmtLog: StatementLog;
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
      blockReadWrite: hiddenStatement(`hoop_txrw_${this.nonce}`, 'SET TRANSACTION READ WRITE'),
      // The server's own word on whether the block changed anything (an xid is assigned at the first write).
      wroteCheck: hiddenStatement(`hoop_wrote_${this.nonce}`, 'SELECT pg_catalog.pg_current_xact_id_if_assigned() IS NOT NULL'),
      rollback: hiddenStatement(`hoop_rb_${this.nonce}`, 'ROLLBACK'),
    };
    this.log = deps.log.child({ session: meta.sessionId, stream: meta.streamId });
    this.maskedTables = new Set(Object.keys(deps.connection.masking).map((c) => c.split('.')[1]));
    this.policy = deps.policy.session(this.ns.names);
    this.stmtLog = new StatementLog({
      sessionId: meta.sessionId,
      who: deps.identity,
      connection: deps.connection.name,
      clock: deps.clock,
      appendResult: (e) => void deps.audit.append(e).catch(() => {}),
    });
    if (deps.recording) this.recording = new SessionRecording(meta.sessionId, deps.recording, this.log);
    this.pipeline = new Pipeline({
      ns: this.ns,
      log: this.stmtLog,
      recording: this.recording,
      onAsync: (kind, data) => this.onAsync(kind, data),
      onIdle: () => (this.review = undefined),
    });
    this.startupTimer = setTimeout(() => this.fatal(new ProtocolError('startup not completed in time', SqlState.ProtocolViolation)), deps.startupTimeoutMs);
    this.startupTimer.unref();
  }

  private get closed(): boolean {
    return this.step === 'Closed';
  }

  // ── StreamEnd: the tunnel drives these ─────────────────────────────────────────────────────────

  /** Client bytes. Returns false while they cannot be passed on yet (connecting, judging, upstream full). */
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
          this.receive(data);
          break;
        case 'Closed':
          return true;
      }
    } catch (err) {
      this.fatal(err);
    }
    return this.step !== 'Connecting' && !this.upstreamFull && !this.pumping;
  }

  pause(): void {
    this.paused = true;
    this.upstream?.pause();
  }

  resume(): void {
    this.paused = false;
    if (!this.rowPause) this.upstream?.resume();
  }

  /**
   * A large result arriving in small reads (the database writes 8 KiB at a time and we keep up) costs a
   * wakeup, a tunnel frame and a client write per 8 KiB. When one wakeup brought little and a result is
   * still streaming, stop reading for a moment: the next wakeup takes the rows in 64 KiB reads.
   */
  private pace(bytes: number): void {
    this.burst += bytes;
    if (this.burstCounting) return;
    if (!this.backend.midResult) {
      this.burst = 0; // no result streaming: no timer at all
      return;
    }
    this.burstCounting = true;
    setImmediate(() => {
      const burst = this.burst;
      this.burst = 0;
      this.burstCounting = false;
      if (burst >= PACE_BELOW_BYTES || this.pacing || this.paused || this.rowPause || !this.backend.midResult || !this.upstream || this.closed) return;
      this.pacing = true;
      this.upstream.pause();
      setTimeout(() => {
        this.pacing = false;
        if (!this.paused && !this.rowPause && this.step !== 'Closed') this.upstream?.resume();
      }, PACE_MS);
    });
  }

  /** The client went away (or the tunnel did): end the upstream session too. */
  close(reason?: string): void {
    if (this.closed) return;
    this.log.debug('client closed', { reason });
    this.teardown(reason ?? 'client closed the connection');
  }

  /** Agent drain, polled until false: withdraws a held statement (saying why), ends the session with FATAL 57P01 once idle outside a transaction, or at once when `force`d. */
  drain(message: string, force = false): boolean {
    if (this.pendingHold && !this.pendingHold.signal.aborted) this.out.send(noticeResponse({ severity: 'WARNING', code: SqlState.AdminShutdown, message: `hoopctl: ${message}; the approval request was withdrawn and the statement was not run` }));
    this.pendingHold?.abort(message); // the reason goes to the client and the approval_withdrawn event
    if (force) this.close(message);
    else if (this.pipeline.length === 0 && this.pipeline.status === TxStatus.Idle && !this.pumping && this.inbox.length === 0) this.fatal(new StartupRefusal(SqlState.AdminShutdown, `hoopctl: ${message}`, 'Reconnect and retry: hoopctl connect reconnects by itself.'));
    return !this.closed;
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
        purpose: this.meta.purpose,
        scope: this.deps.scope?.applied.name,
      }),
    );
    started.then(
      () => {
        this.recorded = true;
        this.prepareMasking().then(
          () => this.connect(clean.upstreamParams),
          (err) => {
            this.log.error('masking catalog unavailable; refusing session', { error: (err as Error).message });
            this.fatal(new StartupRefusal(SqlState.CannotConnectNow, `hoopctl: the agent cannot read the masking catalog of this database right now (${causeClass(err)}), so the session is refused`, 'Retry shortly; the agent log has the details.'));
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
    // P11 too: no statement is judged against a scope before the catalog it needs is loaded.
    await this.deps.scope?.ready();
    const m = this.deps.masking;
    if (!m) return;
    this.masker = new ResultMasker(await m.currentFor(this.unmask), m.hashKey, () => m.invalidate());
    this.pipeline.useMasker(this.masker);
  }

  private connect(params: Record<string, string>): void {
    if (this.closed) return;
    const conn = this.deps.connection;
    this.deps.connectUpstream(params).then(
      (up) => this.guard(() => this.onUpstreamReady(up)),
      (err) => {
        this.log.warn('upstream connection failed', { error: (err as Error).message });
        this.fatal(
          Object.assign(new StartupRefusal(SqlState.CannotConnectNow, `the agent could not connect to database "${conn.name}" (${causeClass(err)})`), {
            hint: 'The database may be down or the agent misconfigured; the agent log has the cause.',
          }),
        );
      },
    );
  }

  private onUpstreamReady(up: UpstreamSession): void {
    if (this.closed) {
      up.socket.destroy();
      return;
    }
    clearTimeout(this.startupTimer);
    const sock = up.socket;
    this.up = up;
    this.upstream = sock;
    sock.setNoDelay(true);
    sock.on('data', (chunk: Buffer) => this.guard(() => (this.onUpstreamBytes(chunk), this.pace(chunk.length))));
    sock.on('drain', () => {
      this.upstreamFull = false;
      if (!this.pumping) this.out.drained();
    });
    sock.on('error', (err) => this.log.warn('upstream socket error', { error: err.message }));
    sock.on('close', () => {
      if (this.step !== 'Closed') this.fatal(new StartupRefusal(SqlState.ConnectionFailure, 'the database closed the connection'));
    });
    // connectUpstream hands the socket over paused; start reading unless the tunnel asked us to wait.
    if (!this.paused) sock.resume();

    // Ctrl-C while a statement waits for approval withdraws the request; otherwise it cancels upstream.
    const key = this.deps.cancels.issue(this.deps.identity, async () => (this.pendingHold ? this.pendingHold.abort('the client cancelled it') : up.cancel()));
    this.cancelPid = key.pid;

    const parts: Buffer[] = [AUTH_OK];
    for (const [name, value] of up.parameters) parts.push(parameterStatus(name, value));
    parts.push(backendKeyData(key.pid, key.secret), readyForQuery('I'));
    this.out.send(Buffer.concat(parts));
    this.step = 'Ready';
    this.log.info('session ready', { applicationName: this.applicationName });

    if (up.leftover.length) this.onUpstreamBytes(up.leftover);
    // Bytes pipelined behind the StartupMessage go through the same path as any later bytes: first
    // those the framer held, then later arrivals.
    this.take(() => this.framer.startupDone());
    const queued = this.queued;
    this.queued = [];
    for (const chunk of queued) this.receive(chunk);
    if (!this.upstreamFull && !this.pumping) this.out.drained();
  }

  // ── Client → database ──────────────────────────────────────────────────────────────────────────

  private receive(data: Buffer): void {
    this.take(() => this.framer.push(data));
  }

  /**
   * Frames client bytes into the inbox. Messages framed before a framing error are judged and answered
   * first; the error then ends the session where PostgreSQL would end it.
   */
  private take(frame: () => FrontendRaw[]): void {
    let raws: FrontendRaw[] = [];
    let error: unknown;
    try {
      raws = frame();
    } catch (err) {
      error = err;
    }
    error ??= this.framer.failure;
    if (this.closed) return;
    // COPY FROM STDIN data of an approved statement flows past the pump, which waits for that statement.
    let i = 0;
    if (this.inbox.length === 0 && this.pipeline.copyIn) {
      while (i < raws.length && isCopyData(raws[i].type)) {
        this.writeUpstream(serializeFrontend(parseFrontend(raws[i].type, raws[i].body)));
        if (raws[i].type !== Frontend.CopyData) this.pipeline.copyIn = false;
        i++;
      }
    }
    for (; i < raws.length; i++) this.inbox.push(raws[i]);
    if (error) this.inbox.push({ error });
    if (this.inbox.length) void this.pump();
  }

  /**
   * Judges the inbox one message at a time, in order, and sends what was judged. It waits (and the
   * tunnel stops reading) while a message depends on what the server has not confirmed, while audit
   * events are written, and while a held statement waits for its approver.
   */
  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.step === 'Ready') {
        const item = this.inbox[0];
        if (!item) {
          if (!this.heldRun) await this.dispatch();
          if (this.inbox.length === 0) break;
          continue;
        }
        if ('error' in item) {
          // PostgreSQL answers what came before a malformed message, then ends the session.
          await this.dispatch();
          await this.answered();
          throw item.error;
        }
        let msg: FrontendMessage;
        try {
          msg = parseFrontend(item.type, item.body);
        } catch (err) {
          this.inbox[0] = { error: err };
          continue;
        }
        if ((msg.type === 'Query' || msg.type === 'Parse') && !this.deps.policy.ready(msg.sql)) {
          // A large text is parsed on a worker and judged in slices: the other sessions are served meanwhile.
          this.log.debug('large statement: parsing off the event loop', { chars: msg.sql.length });
          await this.deps.policy.prepare(msg.sql);
          continue;
        }
        if (this.dependsOnUnconfirmed(msg)) {
          // Its meaning depends on a change the server has not confirmed (or skipped): wait for the server.
          if (this.heldRun) this.refuseHeldRun();
          await this.dispatch();
          await this.ns.settled();
          continue;
        }
        const unknown = (this.masker || this.deps.scope) && (msg.type === 'Query' || msg.type === 'Parse') ? this.unknownRelations(msg.sql) : [];
        if (unknown.length) {
          // It names a relation the masking catalog does not know (created since it was loaded): reload
          // it before judging, so the statement is planned on what the database really holds.
          if (this.heldRun) this.refuseHeldRun();
          await this.dispatch();
          await this.reloadCatalog(unknown);
          continue;
        }
        this.inbox.shift();
        if (this.pipeline.copyIn) {
          this.duringCopyIn(msg);
          continue;
        }
        if (msg.type === 'Terminate') {
          if (this.heldRun) this.refuseHeldRun();
          await this.dispatch();
          return this.teardown('client terminated the session');
        }
        if (this.heldRun && (msg.type === 'Flush' || msg.type === 'Query' || msg.type === 'FunctionCall')) this.refuseHeldRun();
        const o = this.judge(msg);
        if (!o) continue;
        this.batch.push(o);
        if (o.hold?.ext) this.heldRun = true;
        if (this.heldRun) {
          if (o.sync) await this.dispatch(); // the held run is whole: decide it
        } else if (o.hold || o.waitAfter) await this.dispatch();
      }
    } catch (err) {
      this.fatal(err);
    } finally {
      this.pumping = false;
      if (this.step === 'Ready' && !this.upstreamFull) this.out.drained();
    }
  }

  /**
   * Whether judging this message reads a name whose state the server has not confirmed yet, and could
   * still skip without skipping this message (see namespace.ts). A Query may name anything in its text.
   */
  private dependsOnUnconfirmed(msg: FrontendMessage): boolean {
    const ns = this.ns;
    switch (msg.type) {
      case 'Query': {
        const a = this.deps.policy.analyze(msg.sql);
        return a.ok && this.readsUnconfirmed(a.statements); // (unparsable: refused unread)
      }
      case 'Parse':
        return msg.name !== '' && ns.unsettledName('statement', msg.name);
      case 'Bind':
        return ns.unsettledName('statement', msg.statement) || (msg.portal !== '' && ns.unsettledName('portal', msg.portal));
      case 'Describe':
        return ns.unsettledName(msg.target === 'S' ? 'statement' : 'portal', msg.name);
      case 'Execute': {
        if (ns.unsettledName('portal', msg.portal)) return true;
        // What the portal runs may name statements and cursors too (EXECUTE s, FETCH c, PREPARE, DECLARE…).
        const f = ns.portal(msg.portal)?.facts;
        return f !== undefined && this.readsUnconfirmed([f]);
      }
      default:
        return false;
    }
  }

  /** Whether statements name (to run, create, drop or check) a statement or cursor with an unconfirmed change. */
  private readsUnconfirmed(statements: readonly StatementFacts[]): boolean {
    const ns = this.ns;
    let all = false;
    const names: ['statement' | 'portal', string][] = [];
    const visit = (f: StatementFacts | undefined): void => {
      if (!f) return;
      for (const n of [f.executesPrepared, f.preparedName, f.deallocates]) if (n !== undefined) names.push(['statement', n]);
      for (const n of [f.fetchesCursor, f.cursorName, f.closesCursor]) if (n !== undefined) names.push(['portal', n]);
      if (f.discardsAll || f.deallocates === '*' || f.closesCursor === '*') all = true;
      visit(f.inner);
    };
    for (const f of statements) visit(f);
    return all ? ns.unsettled() : names.some(([kind, n]) => ns.unsettledName(kind, n));
  }

  /** Relations `sql` names that the masking catalog does not know, not yet reloaded for in this session. */
  private unknownRelations(sql: string): string[] {
    const catalog = this.masker?.lineage.catalog ?? this.deps.scope?.catalog;
    if (!catalog) return [];
    const a = this.deps.policy.analyze(sql);
    if (!a.ok) return [];
    const out: string[] = [];
    const visit = (f: StatementFacts | undefined) => {
      if (!f) return;
      for (const r of f.relations) {
        if (this.reloadedFor.has(r)) continue;
        const known = r.includes('.') ? catalog.relations.has(r) : ['pg_catalog', ...catalog.searchPath].some((schema) => catalog.relations.has(`${schema}.${r}`));
        if (!known) out.push(r);
      }
      visit(f.inner);
    };
    for (const f of a.statements) visit(f);
    return out;
  }

  /** Reloads the masking catalog (once per session for each unknown name: temporary tables never appear in it). */
  private async reloadCatalog(names: string[]): Promise<void> {
    for (const n of names) this.reloadedFor.add(n);
    const m = this.deps.masking;
    if (!m || !this.masker) {
      await this.deps.scope?.reload().catch((err) => this.log.warn('catalog could not be reloaded', { error: (err as Error).message }));
      return;
    }
    m.invalidate();
    try {
      this.masker.useLineage(await m.currentFor(this.unmask));
      await this.deps.scope?.ready();
      this.log.debug('masking catalog reloaded', { relations: names.length });
    } catch (err) {
      // The old catalog stays: statements on what it does not know are planned as unknown (masked whole).
      this.log.warn('masking catalog could not be reloaded', { error: (err as Error).message });
    }
  }

  /** A message while the server reads COPY data: PostgreSQL ignores Flush and Sync, and fails the COPY on anything else. */
  private duringCopyIn(msg: FrontendMessage): void {
    switch (msg.type) {
      case 'CopyData':
      case 'CopyDone':
      case 'CopyFail':
        if (msg.type !== 'CopyData') this.pipeline.copyIn = false;
        this.writeUpstream(serializeFrontend(msg));
        return;
      case 'Sync':
      case 'Flush':
        return;
      default:
        this.pipeline.copyIn = false;
        this.writeUpstream(serializeFrontend({ type: 'CopyFail', message: `unexpected ${msg.type} message during COPY from stdin` }));
    }
  }

  /** Resolves when everything sent so far is answered (a Flush first, so an unsynced run's replies come). */
  private async answered(): Promise<void> {
    if (this.pipeline.length === 0 || !this.upstream) return;
    if (this.runOpen) this.writeUpstream(FLUSH);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.pipeline.idle(), new Promise<void>((r) => (timer = setTimeout(r, ANSWER_WAIT_MS)))]);
    clearTimeout(timer);
  }

  /**
   * Sends the batch: its audit events first (durable before anything they describe is forwarded; a store
   * that cannot write turns the statements into refusals), then holds decided, then the bytes in order.
   */
  private async dispatch(): Promise<void> {
    const batch = this.batch;
    if (batch.length === 0) return;
    this.batch = [];
    const heldRun = this.heldRun;
    this.heldRun = false;
    await this.appendEvents(batch);
    if (this.closed) return;
    if (heldRun) await this.decideRun(batch);
    for (const o of batch) {
      if (this.closed) return;
      if (o.hold?.query) await this.decideQuery(o, o.hold.query);
      this.send(o);
      if (o.waitAfter) {
        this.flushUpstream();
        await o.waitAfter();
      }
    }
    this.flushUpstream();
  }

  /** Appends the batch's statement events; on failure every statement of the batch is refused instead. */
  private async appendEvents(batch: Outbound[]): Promise<void> {
    const withEvents = batch.filter((o) => o.event);
    if (withEvents.length === 0) return;
    try {
      const written = await Promise.all(withEvents.map((o) => this.deps.audit.append(o.event!)));
      withEvents.forEach((o, i) => o.log && (o.log.seq = written[i]?.seq));
    } catch (err) {
      this.log.error('audit store unavailable; refusing statements', { error: (err as Error).message });
      for (const o of withEvents) if (!o.refused) this.refuseOutbound(o, AUDIT_DOWN);
    }
  }

  private send(o: Outbound): void {
    if (this.closed) return;
    for (const r of o.requests) this.pipeline.push(r);
    if (this.review && o.reviewed && o.log && !o.refused) this.review.add({ ...o.reviewed, log: o.log });
    if (o.bytes.length) this.out_.push(o.bytes);
    if (o.sync) this.runOpen = false;
    else if (o.extended) this.runOpen = true;
  }

  private writeUpstream(bytes: Buffer): void {
    this.out_.push(bytes);
    this.flushUpstream();
  }

  private flushUpstream(): void {
    if (this.out_.length === 0 || !this.upstream || this.closed) return;
    const bytes = this.out_.length === 1 ? this.out_[0] : Buffer.concat(this.out_);
    this.out_ = [];
    if (!this.upstream.write(bytes)) this.upstreamFull = true;
  }

  // ── Judging: one client message → what to forward ─────────────────────────────────────────────

  /**
   * Decides one frontend message: what to forward (with the requests the server will answer), or
   * nothing. Statements are judged where they run: a Query by its text, a Parse by its statement, a
   * Bind by the statement it binds, an Execute by what its portal really runs.
   */
  private judge(msg: FrontendMessage): Outbound | null {
    switch (msg.type) {
      case 'FunctionCall': {
        // The fast-path interface calls any function by OID, past every SQL-level check.
        const sql = `<FunctionCall oid ${msg.fnOid}>`;
        return this.refused('Query', FUNCTION_CALL, sql);
      }
      case 'CopyData':
      case 'CopyDone':
      case 'CopyFail':
        // Outside COPY FROM STDIN the server would reject these; we never forward them there.
        return null;
      case 'Query':
        return this.judgeQuery(msg.sql);
      case 'Parse': {
        const d = this.policy.parse(msg.name, msg.sql);
        const facts = d.statements[0];
        if (d.action !== 'allow' || !facts) return this.refused('Parse', d, msg.sql);
        const outside = this.deps.scope?.judge(d.statements);
        if (outside) return this.refused('Parse', outside, msg.sql);
        const entry: Statement = { facts, plan: this.planOf(facts.text) };
        const changes = this.ns.stage([{ op: 'prepare', name: msg.name, entry }], true);
        return { bytes: serializeFrontend(msg), requests: [{ kind: 'parse', changes, redact: false }], extended: true };
      }
      case 'Bind': {
        const d = this.policy.bind(msg.portal, msg.statement);
        const stmt = this.ns.statement(msg.statement);
        if (d.action !== 'allow' || !stmt) return this.refused('Parse', d, stmt?.facts.text ?? '');
        const entry: Portal = { facts: stmt.facts, plan: stmt.plan, holdable: false, formats: msg.resultFormats, bind: msg };
        const changes = this.ns.stage([{ op: 'declare', name: msg.portal, entry }], true);
        return { bytes: serializeFrontend(msg), requests: [{ kind: 'bind', changes, redact: false }], extended: true };
      }
      case 'Describe': {
        const portal = msg.target === 'P' ? this.ns.portal(msg.name) : undefined;
        return { bytes: serializeFrontend(msg), requests: [{ kind: 'describe', portal, redact: false }], extended: true };
      }
      case 'Execute':
        return this.judgeExecute(msg);
      case 'Close': {
        const op: Op = msg.target === 'S' ? { op: 'deallocate', name: msg.name } : { op: 'close', name: msg.name };
        return { bytes: serializeFrontend(msg), requests: [{ kind: 'close', changes: this.ns.stage([op], true), redact: false }], extended: true };
      }
      case 'Sync': {
        this.ns.sync();
        // Outside a block the Sync ends the implicit transaction and its portals: known at its ReadyForQuery.
        const changes = this.ns.stage([{ op: 'endTransaction' }], false);
        // An implicit COMMIT runs deferred work (constraints, WITH HOLD cursors): its errors may quote values.
        return { bytes: SYNC, requests: [{ kind: 'sync', changes, redact: this.masker !== undefined }], sync: true };
      }
      case 'Flush':
        return { bytes: FLUSH, requests: [] };
      default:
        throw new ProtocolError(`unexpected ${msg.type} message`);
    }
  }

  private judgeQuery(sql: string): Outbound {
    const d = this.policy.query(sql);
    const review = this.reviewStep(d);
    if (typeof review === 'object') return this.refused('Query', review, sql);
    const holdable = d.action === 'hold' && this.deps.connection.approval.approvers !== undefined;
    if (d.action !== 'allow' && !holdable) return this.refused('Query', d, sql);
    // P11 after the policy: what the statements read and write must be in this identity's scope.
    const outside = this.deps.scope?.judge(d.statements);
    if (outside) return this.refused('Query', outside, sql);
    const statements = this.queryStatements(d);
    // Literals are kept out of the trail when they may be compared with masked values; a COMMIT or FETCH
    // that runs a cursor's query has none of its own.
    const sensitive = statements.some((s, i) => s.plan.readsMasked && !defers(d.statements[i])) || d.statements.some((f) => this.touchesMasked(f.relations));
    const audited = this.auditSql(sql, sensitive);
    this.logDecision(d);
    const log = this.stmtLog.started('query', audited);
    // PostgreSQL drops the unnamed statement and portal when it runs a simple Query, and outside a block
    // the Query ends the transaction (and its portals) too.
    // (The unnamed portal only when a statement runs: an empty Query creates none.)
    const unnamed = this.ns.stage([{ op: 'deallocate', name: '' }, ...(d.statements.length ? [{ op: 'close', name: '' } as const] : []), { op: 'endTransaction' }], false);
    const o: Outbound = {
      bytes: serializeFrontend({ type: 'Query', sql }),
      requests: [{ kind: 'query', statements, changes: unnamed, log, redact: this.masker !== undefined, rowLimit: this.rowLimit }],
      event: this.stmtLog.statementEvent(audited, d.action, d.rule, undefined, this.scopeFacts(d.statements)),
      log,
      reviewed: { sql: audited, writes: needsReadWrite(d) },
    };
    const locksRows = d.statements.some((f) => f.locksRows);
    if (review) {
      o.hold = { query: { decision: d, sql: audited, fingerprint: '', approve: false, locksRows: false, review } };
    } else if (holdable || locksRows || needsReadWrite(d)) {
      o.hold = { query: { decision: d, sql: audited, fingerprint: holdable ? this.fingerprint(sql) : '', approve: holdable, locksRows } };
    }
    return o;
  }

  private judgeExecute(msg: Extract<FrontendMessage, { type: 'Execute' }>): Outbound {
    const d = this.policy.execute(msg.portal);
    const portal = this.ns.portal(msg.portal);
    const facts = d.statements[0];
    const sql = facts?.text ?? '';
    const bind = portal?.bind;
    const holdable = d.action === 'hold' && bind !== undefined && this.deps.connection.approval.approvers !== undefined;
    if ((d.action !== 'allow' && !holdable) || !portal || !facts) return this.refused('Parse', d, sql, bind);
    if (this.review && (facts.commits || facts.controlsTransaction === 'chain')) return this.refused('Parse', REVIEW_COMMIT_ALONE, sql, bind);
    const outside = this.deps.scope?.judge(d.statements);
    if (outside) return this.refused('Parse', outside, sql, bind);
    // What the portal runs may itself name statements and cursors (EXECUTE s, FETCH c, PREPARE, DECLARE).
    const run = this.runPlan(portal.plan, facts, d.effects ?? [], 0, new Overlay(this.ns), msg.portal);
    const sensitive = run.plan.readsMasked || this.touchesMasked(facts.relations);
    const audited = this.auditSql(sql, sensitive);
    const params = bind && auditParams(bind.params, bind.paramFormats, sensitive);
    this.logDecision(d);
    const log = this.stmtLog.started('execute', audited);
    const request: Request = {
      kind: 'execute',
      plan: run.plan,
      portal,
      changes: this.ns.stage(run.ops, true),
      log,
      redact: this.masker !== undefined && (run.plan.readsMasked || defers(facts)),
      rowLimit: this.rowLimit,
      counter: (portal.counter ??= { delivered: 0 }),
    };
    const o: Outbound = {
      bytes: serializeFrontend(msg),
      requests: [request],
      event: this.stmtLog.statementEvent(audited, d.action, d.rule, params, this.scopeFacts(d.statements)),
      log,
      extended: true,
      runs: facts,
      reviewed: { sql: audited, params, writes: needsReadWrite(d) },
    };
    if (holdable || needsReadWrite(d)) {
      // P4 in the extended protocol: held at its Execute, with the parameters it was bound to (an
      // approval-free write is asked nothing, but runs read-write like an approved one).
      o.hold = { ext: { decision: d, sql: audited, params, fingerprint: this.fingerprint(sql, bind), copies: facts.kind === 'CopyStmt', approve: holdable } };
    }
    return o;
  }

  /** The statements of an allowed (or held) Query, their plans and the changes they stage, in order. */
  private queryStatements(d: Decision): QueryStatement[] {
    const overlay = new Overlay(this.ns);
    return d.statements.map((f, i) => {
      const run = this.runPlan(this.planOf(f.text), f, d.effects ?? [], i, overlay);
      return {
        plan: run.plan,
        changes: this.ns.stage(run.ops, false),
        endsTransaction: f.endsTransaction === true,
        redact: this.masker !== undefined && (run.plan.readsMasked || defers(f)),
        counter: this.cursorCounter(f, overlay),
      };
    });
  }

  /**
   * One statement as it runs: the plan of its result (EXECUTE and FETCH take the plan of what they run;
   * PREPARE and DECLARE return nothing) and the namespace changes it makes (a cursor's plan travels with
   * the cursor). `overlay` lets later statements of one text see the changes of earlier ones.
   */
  private runPlan(raw: LineagePlan, facts: StatementFacts, effects: readonly Effect[], index: number, overlay: Overlay, runningPortal = ''): { plan: LineagePlan; ops: Op[] } {
    const ops: Op[] = [];
    for (const e of effects) {
      if (e.index !== index) continue;
      switch (e.op) {
        case 'prepare':
          ops.push({ op: 'prepare', name: e.name, entry: { facts: e.facts, plan: raw.kind === 'prepare' ? raw.plan : this.unknownPlan() } });
          break;
        case 'declare':
          ops.push({ op: 'declare', name: e.name, entry: { facts: e.facts, plan: raw.kind === 'rows' && raw.cursor ? { ...raw, cursor: undefined } : this.unknownPlan(), holdable: e.holdable } });
          break;
        case 'deallocate':
          ops.push({ op: 'deallocate', name: e.name });
          break;
        case 'close':
          ops.push({ op: 'close', name: e.name, except: runningPortal });
          break;
        case 'discard':
          ops.push({ op: 'discard', except: runningPortal });
          break;
        case 'endTransaction':
          ops.push({ op: 'endTransaction' });
          break;
      }
    }
    const plan = this.resolvePlan(raw, overlay, facts);
    for (const op of ops) overlay.apply(op);
    return { plan, ops };
  }

  private resolvePlan(raw: LineagePlan, names: Overlay, facts?: StatementFacts): LineagePlan {
    switch (raw.kind) {
      case 'prepare':
        return { kind: 'none', readsMasked: raw.readsMasked };
      case 'execute': {
        const s = names.statement(raw.name);
        return s ? this.resolvePlan(s.plan, names) : this.unknownPlan();
      }
      case 'fetch': {
        const p = names.portal(raw.cursor);
        return p ? this.resolvePlan(p.plan, names) : this.unknownPlan();
      }
      case 'rows':
        return raw.cursor ? { kind: 'none', readsMasked: raw.readsMasked } : raw;
      case 'none':
        // MOVE runs the cursor's query too: what it reads decides whether its errors may quote values.
        if (facts?.fetchesCursor !== undefined) {
          const p = names.portal(facts.fetchesCursor);
          return { kind: 'none', readsMasked: p ? this.resolvePlan(p.plan, names).readsMasked : this.masker !== undefined };
        }
        return raw;
      default:
        return raw;
    }
  }

  private planOf(sql: string): LineagePlan {
    return this.masker ? this.masker.plan(sql) : NO_PLAN;
  }

  private unknownPlan(): LineagePlan {
    return this.masker ? UNKNOWN_PLAN : NO_PLAN;
  }

  /** A refused message: its sentinel, the audit event of the refusal, and the request its error answers. */
  private refused(as: 'Query' | 'Parse', d: Refusal, sql: string, bind?: Extract<FrontendMessage, { type: 'Bind' }>): Outbound {
    this.logDecision(d);
    const sensitive = (this.masker?.plan(sql).readsMasked ?? false) || (d as Decision).statements?.some((f) => this.touchesMasked(f.relations)) === true;
    const audited = this.auditSql(sql, sensitive);
    const params = bind && auditParams(bind.params, bind.paramFormats, true);
    const log = this.stmtLog.refused(as === 'Query' ? 'query' : 'execute', audited);
    const o: Outbound = { bytes: EMPTY, requests: [], event: this.stmtLog.statementEvent(audited, d.action, d.rule, params), log, refused: true, extended: as === 'Parse' };
    this.refuseOutbound(o, d);
    return o;
  }

  /** Turns an outbound into a refusal: its staged changes are dropped, its bytes become a sentinel. */
  private refuseOutbound(o: Outbound, d: Refusal): void {
    for (const r of o.requests) {
      this.ns.drop(r.changes);
      for (const s of r.statements ?? []) this.ns.drop(s.changes);
    }
    const as = o.requests[0]?.kind === 'query' || (!o.extended && o.requests.length === 0) ? 'Query' : 'Parse';
    const word = `hoop_refused_${this.nonce}_${++this.sentinelSeq}`;
    o.bytes = sentinel(as, word);
    // A sentinel Query is still a simple Query at the server: it drops the unnamed statement, and its
    // error ends the implicit transaction (and its portals).
    const changes = as === 'Query' ? this.ns.stage([{ op: 'deallocate', name: '' }, { op: 'endTransaction' }], false) : undefined;
    o.requests = [{ kind: as === 'Query' ? 'query' : 'parse', refusal: refusalFields(d), sentinel: word, log: o.log, changes, redact: false }];
    o.hold = undefined;
    o.waitAfter = undefined;
    o.refused = true;
  }

  // ── Holds: approvals and the read-write switch (P4, P8) ───────────────────────────────────────

  /**
   * A simple Query that is held (P4) or locks rows (FOR UPDATE, which READ ONLY refuses). Once all
   * before it is answered the transaction status is known. Inside a block (read-only, P8) a write
   * cannot run, so it is refused at once; an export (COPY … TO STDOUT in pg_dump's block) is a read and
   * is asked for as anywhere.
   */
  private async decideQuery(o: Outbound, h: QueryHold): Promise<void> {
    const write = needsReadWrite(h.decision) || h.locksRows;
    this.flushUpstream();
    if (this.runOpen) {
      // An extended-protocol run is open upstream: its implicit transaction is already read-only.
      if (h.approve) this.refuseOutbound(o, IN_PIPELINE);
      else if (h.review === 'commit') this.refuseOutbound(o, REVIEW_COMMIT_ALONE);
      return;
    }
    await this.pipeline.idle();
    if (this.closed) return;
    if (h.review === 'begin') return this.openReview(o);
    if (h.review === 'commit') return this.decideCommit(o);
    if ((write || h.approve) && this.inReviewedBlock()) return this.runInReview(o, h);
    if (write && this.pipeline.status !== TxStatus.Idle) {
      if (h.approve && needsReadWrite(h.decision)) this.refuseOutbound(o, IN_TRANSACTION);
      return; // a row lock inside a block runs as it is (the block decides)
    }
    if (write && leavesTransactionOpen(h.decision.statements)) return this.refuseOutbound(o, READ_WRITE_ALONE);
    if (h.approve) {
      const verdict = await this.awaitApproval(o, h);
      if (this.closed) return;
      if (verdict !== true) return this.refuseOutbound(o, verdict);
      for (const r of o.requests) r.rowsApproved = true; // approved as it is, export included
    }
    if (write) this.runAlone(o, h.decision.statements.some((f) => f.kind === 'CopyStmt'));
  }

  /**
   * P8: this Query, and only it, runs outside the read-only default. The agent's read-write switch goes
   * before it and the read-only restore right behind it, in the same write. Nothing else of the client's
   * is sent before the Query's ReadyForQuery, which must say the transaction is closed (else the session
   * ends: the server rolls the block back); the restore must succeed. A COPY waits for its ReadyForQuery
   * before the restore is sent: its FROM STDIN data flows meanwhile, and a message behind it would end
   * the copy.
   */
  private runAlone(o: Outbound, copies: boolean): void {
    const q = o.requests[0];
    let finished!: () => void;
    const done = new Promise<void>((resolve) => (finished = resolve));
    q.done = (status) => {
      if (status !== TxStatus.Idle) this.fatal(new ProtocolError('a statement that ran read-write left a transaction open; the session is ended', SqlState.InsufficientPrivilege));
      finished();
    };
    if (!copies) {
      o.bytes = Buffer.concat([this.switches.readWrite, o.bytes, this.switches.readOnly]);
      o.requests = [this.hidden('read-write switch'), q, this.hidden('read-only restore', true)];
      // Nothing else of the client's goes out before the server has said this statement closed its
      // transaction: a block left open would keep running read-write whatever the restore says.
      o.waitAfter = () => done;
      return;
    }
    o.bytes = Buffer.concat([this.switches.readWrite, o.bytes]);
    o.requests = [this.hidden('read-write switch'), q];
    o.waitAfter = async () => {
      await done;
      if (this.closed) return;
      this.restoreReadOnly();
    };
  }

  /** Sends the agent's read-only restore; if it fails the session cannot be trusted to be read-only. */
  private restoreReadOnly(): void {
    this.pipeline.push(this.hidden('read-only restore', true));
    this.out_.push(this.switches.readOnly);
  }

  private hidden(what: string, mustSucceed = false): Request {
    return {
      kind: 'hidden',
      redact: false,
      done: (_status, errored) => {
        if (errored && mustSucceed) this.fatal(new ProtocolError(`the agent's ${what} failed; the session is ended`, SqlState.InternalError));
      },
    };
  }

  /**
   * An extended-protocol run (up to its Sync) holding Executes that need approval. Nothing of it has been
   * sent, so it can run as PostgreSQL runs it, in one implicit transaction: every hold is asked in
   * order; if one is denied the rest are not asked, and that Execute becomes a refusal (the run fails
   * there and rolls back, as a failing statement would). If any approved hold writes, the whole run goes
   * read-write between the agent's switch and its restore, which follows the run's Sync.
   */
  private async decideRun(batch: Outbound[]): Promise<void> {
    const held = batch.filter((o) => o.hold?.ext);
    if (held.length === 0) return;
    this.flushUpstream();
    const sync = batch.at(-1)?.sync ? batch.at(-1) : undefined;
    const refuseFirst = (d: Refusal) => this.refuseOutbound(held[0], d);
    if (!sync || this.runOpen || held.some((o) => o.hold!.ext!.copies && needsReadWrite(o.hold!.ext!.decision))) return refuseFirst(IN_PIPELINE);
    await this.pipeline.idle();
    if (this.closed) return;
    if (this.inReviewedBlock()) return this.runHeldInReview(held);
    const writes = held.some((o) => needsReadWrite(o.hold!.ext!.decision));
    if (writes && this.pipeline.status !== TxStatus.Idle) {
      // A block stays read-only: the first write is refused (exports before it may still be asked).
      const first = held.find((o) => needsReadWrite(o.hold!.ext!.decision))!;
      held.splice(held.indexOf(first));
      this.refuseOutbound(first, IN_TRANSACTION);
    } else if (writes && leavesTransactionOpen(batch.flatMap((o) => (o.runs ? [o.runs] : [])))) {
      return refuseFirst(READ_WRITE_ALONE);
    }
    let readWrite = false;
    for (const o of held) {
      const h = o.hold!.ext!;
      const verdict = h.approve ? await this.awaitApproval(o, h) : true;
      if (this.closed) return;
      if (verdict !== true) {
        this.refuseOutbound(o, verdict);
        break;
      }
      o.hold = undefined;
      if (h.approve) for (const r of o.requests) r.rowsApproved = true; // approved as it is, export included
      readWrite ||= needsReadWrite(h.decision);
    }
    for (const o of held) o.hold = undefined;
    if (!readWrite) return;
    batch[0] = { ...batch[0], bytes: Buffer.concat([this.switches.readWrite, batch[0].bytes]), requests: [this.hidden('read-write switch'), ...batch[0].requests] };
    const s = sync.requests[0];
    s.done = (status) => {
      if (status !== TxStatus.Idle) this.fatal(new ProtocolError('a run that ran read-write left a transaction open; the session is ended', SqlState.InsufficientPrivilege));
    };
    sync.bytes = Buffer.concat([sync.bytes, this.switches.readOnly]);
    sync.requests = [s, this.hidden('read-only restore', true)];
  }

  // ── Transaction review (approval.mode: transaction; review.ts) ────────────────────────────────

  /** What a Query means for transaction review: a BEGIN that may open one, the COMMIT of one, or a refusal. */
  private reviewStep(d: Decision): 'begin' | 'commit' | Refusal | undefined {
    if (this.deps.connection.approval.mode !== 'transaction' || d.action === 'block') return undefined;
    const f = d.statements;
    if (this.review && f.some((s) => s.commits || s.controlsTransaction === 'chain')) {
      // Its COMMIT waits for an approver; nothing may ride along with it.
      return f.length === 1 && f[0].commits && f[0].controlsTransaction === 'end' ? 'commit' : REVIEW_COMMIT_ALONE;
    }
    // A BEGIN alone, not naming its access mode (policy lets only READ ONLY through): the agent's switch
    // can follow it before the block's first query.
    if (f.length === 1 && f[0].controlsTransaction === 'begin' && !f[0].setsAccessMode) return 'begin';
    return undefined;
  }

  /** The server confirmed the reviewed block is open and read-write (and not failed). */
  private inReviewedBlock(): boolean {
    return this.review?.confirmed === true && this.pipeline.status === TxStatus.InTransaction;
  }

  /** BEGIN outside a block: the agent's SET TRANSACTION READ WRITE follows it; confirmed at its ReadyForQuery. */
  private openReview(o: Outbound): void {
    if (this.pipeline.status !== TxStatus.Idle) return; // already in a block: PostgreSQL only warns
    const review = new TransactionReview(this.deps.clock());
    this.review = review;
    o.reviewed = undefined; // the list starts after the BEGIN
    o.bytes = Buffer.concat([o.bytes, this.switches.blockReadWrite]);
    o.requests = [...o.requests, {
      kind: 'hidden',
      redact: false,
      done: (status, errored) => {
        // Errored or outside a block: the block stays read-only and its writes are refused as in statement mode.
        if (!errored && status === TxStatus.InTransaction && this.review === review) review.confirmed = true;
      },
    }];
    this.log.debug('transaction review opened');
  }

  /** A held Query inside a reviewed block: runs in it (its COMMIT is reviewed), unless a rollback could not take it back. */
  private async runInReview(o: Outbound, h: QueryHold): Promise<void> {
    if (escapesRollback(h.decision)) return this.refuseOutbound(o, REVIEW_ESCAPES);
    if (!h.approve || needsReadWrite(h.decision)) return;
    // A bulk export is a read: asked for as anywhere.
    const verdict = await this.awaitApproval(o, h);
    if (!this.closed && verdict !== true) this.refuseOutbound(o, verdict);
  }

  /** A held extended-protocol run inside a reviewed block: its writes run there; exports are asked for; the first refusal fails the run. */
  private async runHeldInReview(held: Outbound[]): Promise<void> {
    for (const o of held) {
      const h = o.hold!.ext!;
      if (escapesRollback(h.decision)) {
        this.refuseOutbound(o, REVIEW_ESCAPES);
        break;
      }
      if (needsReadWrite(h.decision)) continue;
      const verdict = await this.awaitApproval(o, h);
      if (this.closed) return;
      if (verdict !== true) {
        this.refuseOutbound(o, verdict);
        break;
      }
    }
    for (const o of held) o.hold = undefined;
  }

  /**
   * The COMMIT of a reviewed block. A failed block's COMMIT only rolls back, and a block that wrote
   * nothing (the server assigned it no transaction id) has nothing to review: both go as they are.
   * Otherwise an approver sees every statement and its rows; anything but approval rolls back.
   */
  private async decideCommit(o: Outbound): Promise<void> {
    const review = this.review;
    if (!review?.confirmed || this.pipeline.status !== TxStatus.InTransaction) return;
    const wrote = await this.transactionWrote();
    if (this.closed || wrote !== true) return;
    const approval = this.deps.connection.approval;
    const detail = review.detail();
    const left = durationMs(approval.transactionTimeout) - (this.deps.clock() - review.startedMs);
    const decision = { rule: 'P4.transaction', reason: `the transaction changed ${detail.rowsChanged} row(s) in ${detail.statements.length} statement(s); its COMMIT needs approval` };
    const verdict = left <= 0
      ? { action: 'denied' as const, rule: 'P4.transaction', reason: 'the transaction was open longer than approval.transactionTimeout; the transaction was rolled back' }
      : await this.awaitApproval(o, { decision, sql: review.render(detail), fingerprint: review.fingerprint(this.meta.sessionId, detail), transaction: detail, timeoutMs: Math.min(durationMs(approval.timeout), left) });
    if (this.closed || verdict === true) return;
    // The agent's ROLLBACK ends the block (locks released), then the client's COMMIT is answered with the refusal.
    this.refuseOutbound(o, verdict);
    o.bytes = Buffer.concat([this.switches.rollback, o.bytes]);
    o.requests = [this.hidden('rollback', true), ...o.requests];
  }

  /** Asks the server whether the open transaction wrote anything; 'failed' when the question itself failed. */
  private transactionWrote(): Promise<boolean | 'failed'> {
    return new Promise((resolve) => {
      let value: string | null = null;
      this.pipeline.push({
        kind: 'hidden',
        redact: false,
        onRow: (body) => (value = parseDataRow(body)[0]?.toString('utf8') ?? null),
        // No clear "no": treated as written, so it is reviewed (fail closed).
        done: (status, errored) => resolve(errored || status !== TxStatus.InTransaction ? 'failed' : value !== 'f'),
      });
      this.writeUpstream(this.switches.wroteCheck);
    });
  }

  /** A held run cannot be decided as a whole (a Flush, Query or wait came before its Sync): its holds are refused. */
  private refuseHeldRun(): void {
    for (const o of this.batch) if (o.hold?.ext) this.refuseOutbound(o, IN_PIPELINE);
    this.heldRun = false;
  }

  /** Asks the approvers; true when approved (and consumed), else the refusal to send instead. */
  private async awaitApproval(o: Pick<Outbound, 'log'>, h: ApprovalAsk): Promise<true | Refusal> {
    const what = h.transaction ? 'transaction' : 'statement';
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
      timeoutMs: h.timeoutMs ?? durationMs(conn.approval.timeout),
      minApprovals: conn.approval.minApprovals,
      statementSeq: o.log?.seq,
      rule: h.decision.rule,
      purpose: this.meta.purpose,
      transaction: h.transaction,
      rowsSoFar: h.rowsSoFar,
    });
    await this.deps.audit.append(makeApprovalEvent('approval_requested', { ...who, approvalId: a.id, statementSeq: o.log?.seq, fingerprint }));
    const paused = h.rowsSoFar !== undefined;
    const text = `hoopctl: ${paused ? `result paused after ${h.rowsSoFar} rows` : `${what} held`} for approval ${a.id} (${h.decision.rule}): ${h.decision.reason}`;
    this.out.send(noticeResponse({ severity: 'NOTICE', code: '01000', message: text, hint: `An approver runs: hoopctl approvals approve ${a.id}   (expires ${a.expiresAt})` }));
    this.out.event({ type: 'approval_requested', streamId: this.meta.streamId, message: text, data: { id: a.id, connection: conn.name, sql: h.sql, expiresAt: a.expiresAt } });
    this.log.info(`${what} held`, { approvalId: a.id, rule: h.decision.rule });

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
      // The client cancelled (Ctrl-C) or left, or the agent drains: withdraw the request, nothing runs.
      const why = typeof abort.signal.reason === 'string' ? abort.signal.reason : 'the request was abandoned';
      await approvals.withdraw(a.id).catch(() => {});
      await this.deps.audit.append(makeApprovalEvent('approval_withdrawn', { ...who, approvalId: a.id, statementSeq: o.log?.seq, reason: why }));
      status = 'withdrawn';
      by = `: ${why}`;
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
      await this.deps.audit.append(makeApprovalEvent('approval_consumed', { ...who, approvalId: a.id, statementSeq: o.log?.seq }));
      this.out.event({ type: 'approved', streamId: this.meta.streamId, message: `hoopctl: approval ${a.id} granted${by}; ${paused ? 'sending the rest of the result' : h.transaction ? 'committing the transaction' : 'running the statement'}`, data: { id: a.id } });
      return true;
    }
    this.out.event({ type: status === 'denied' ? 'denied' : status, streamId: this.meta.streamId, message: `hoopctl: approval ${a.id} ${status}${by}`, data: { id: a.id, status } });
    const outcome = paused ? `the rest of the result was not sent (stopped after ${h.rowsSoFar} rows)` : h.transaction ? 'the transaction was rolled back' : 'the statement was not run';
    return { action: 'denied', rule: h.decision.rule, reason: `approval ${a.id} ${status}${by}; ${outcome}` };
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

  /** Masked columns this identity's scope reads in clear (P11 `unmask`). */
  private get unmask(): readonly string[] {
    return this.deps.scope?.applied.unmask ?? [];
  }

  /** For the statement's audit event: the scope it was judged by, and the unmask exception when it applied. */
  private scopeFacts(statements: readonly StatementFacts[]): { scope: string; unmasked?: string[] } | undefined {
    const scope = this.deps.scope;
    if (!scope) return undefined;
    const unmasked = scope.unmasked(statements);
    return { scope: scope.applied.name, ...(unmasked.length ? { unmasked } : {}) };
  }

  private touchesMasked(relations: readonly string[] | undefined): boolean {
    if (!relations || this.maskedTables.size === 0) return false;
    return relations.some((r) => this.maskedTables.has(r.split('.').pop()!));
  }

  /** Per statement at debug level, and never with its text: SQL literals may hold PHI. */
  private logDecision(d: { action: string; rule: string; statements?: readonly unknown[] }): void {
    this.log.debug('statement', { decision: d.action, rule: d.rule, statements: d.statements?.length ?? 0 });
  }

  // ── Database → client ──────────────────────────────────────────────────────────────────────────

  /** Backend bytes: framed once, walked once by the pipeline (which masks), one tunnel frame per read. */
  private onUpstreamBytes(chunk: Buffer): void {
    if (this.rowPause) {
      this.rowPause.later.push(chunk); // read before the pause took effect: after the paused rest, in order
      return;
    }
    const fr = this.backend;
    const count = fr.push(chunk);
    if (count === 0) return;
    this.relay(fr, count);
  }

  private relay(fr: BackendFramer, count: number): void {
    const bytes = this.pipeline.process(fr.buffer, fr.types, fr.offsets, count);
    if (bytes.length) this.out.send(bytes);
    this.flushUpstream(); // what a pipeline callback queued (a read-only restore)
    const p = this.pipeline.paused;
    if (p) {
      this.pipeline.paused = undefined;
      this.rowPause = { rest: p.rest, later: [] };
      this.upstream?.pause();
      void this.decideRows(p).catch((err) => this.fatal(err));
    }
  }

  /** FETCH c: the cursor's row counter, so a cursor read in many small FETCHes still meets the threshold. */
  private cursorCounter(f: StatementFacts, names: Overlay): RowCounter | undefined {
    const p = f.fetchesCursor !== undefined ? names.portal(f.fetchesCursor) : undefined;
    if (!p) return undefined;
    return (p.counter ??= { delivered: 0, sql: this.auditSql(p.facts.text, p.plan.readsMasked || this.touchesMasked(p.facts.relations)) });
  }

  /** The rows over a connection's (or scope's) threshold before a result pauses for approval (P11). */
  private get rowLimit(): number {
    return this.deps.scope?.applied.maxRows ?? this.deps.connection.approval.exportRowLimit;
  }

  /**
   * P11 row threshold: a result passed its row limit and reading stopped. An approver lets the rest flow;
   * a denial, an expiry or the client leaving cancels the query at the server, and the client gets an error
   * where the rest would have been. The audit keeps the rows delivered and why the result stopped.
   */
  private async decideRows(p: RowPause): Promise<void> {
    const r = p.request;
    const sql = p.counter.sql ?? r.log?.sql ?? '';
    // What the audit keeps if the result ends here: the rows the client got, and why the rest did not come.
    const before = r.log?.rows ?? 0;
    if (r.log) {
      r.log.rows = before + p.resultRows;
      r.log.note = `paused after ${p.rows} rows for approval; the session ended before it was decided`;
    }
    const source = this.deps.scope?.applied.maxRows !== undefined ? `maxRows of scope ${this.deps.scope.applied.name}` : 'approval.exportRowLimit';
    const reason = `the result passed ${r.rowLimit} rows (${source}); the rest waits for an approver`;
    const verdict: true | Refusal = this.deps.connection.approval.approvers
      ? await this.awaitApproval({ log: r.log }, { decision: { rule: 'P11.rows', reason }, sql, fingerprint: this.fingerprint(`${sql}\0rows after ${p.rows}`), rowsSoFar: p.rows })
      : { action: 'block', rule: 'P11.rows', reason: `the result passed ${r.rowLimit} rows (${source}) and this connection has no approvers (approval.approvers); stopped after ${p.rows} rows` };
    if (this.closed) return;
    if (verdict === true) {
      p.counter.approved = true; // the rest of this result, cursor or portal flows
      if (r.log) {
        r.log.rows = before; // CommandComplete counts the whole result
        r.log.note = undefined;
      }
    } else {
      r.stopped = refusalFields(verdict);
      if (r.log) r.log.note = `stopped after ${p.rows} rows: ${verdict.reason}`;
      this.log.info('result stopped at its row limit', { rows: p.rows, rule: verdict.rule });
      // The server is blocked writing the rest: cancel, then read on (dropping rows) until the result ends.
      await this.up?.cancel().catch((err) => this.log.warn('cancel of a refused result failed', { error: (err as Error).message }));
      if (this.closed) return;
    }
    this.resumeRows();
  }

  /** Reads on after a row pause: the paused rest first (it may pause again), then later reads, then the socket. */
  private resumeRows(): void {
    const p = this.rowPause;
    if (!p) return;
    this.rowPause = undefined;
    const fr = new BackendFramer();
    const n = fr.push(p.rest); // whole messages only: the main framer keeps any partial tail, which follows them
    if (n) this.relay(fr, n);
    for (let k = 0; k < p.later.length; k++) {
      if (this.rowPause) {
        (this.rowPause as { later: Buffer[] }).later.push(...p.later.slice(k));
        return;
      }
      this.onUpstreamBytes(p.later[k]);
    }
    if (!this.rowPause && !this.paused && !this.pacing) this.upstream?.resume();
  }

  /** A message outside any statement (a notification, an idle notice, a parameter report): audited and recorded, never with values. */
  private onAsync(kind: 'notification' | 'notice' | 'parameter', data: Record<string, unknown>): void {
    this.deps.audit
      .append({ type: 'async_message', sessionId: this.meta.sessionId, connection: this.deps.connection.name, identity: identityOf(this.deps.identity), data: { kind, ...data } })
      .catch((err) => this.log.warn('asynchronous message not recorded', { error: (err as Error).message }));
    if (kind === 'notification') this.recording?.note(`notification on channel "${String(data.channel)}" (payload masked)`);
    else if (kind === 'notice') this.recording?.note(`${String(data.severity)} ${String(data.code)} outside any statement`);
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
    if (this.closed) return;
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
    if (this.closed) return;
    this.step = 'Closed';
    clearTimeout(this.startupTimer);
    this.pendingHold?.abort('the client left'); // a held statement of a client that left is withdrawn, never run
    if (this.cancelPid !== undefined) this.deps.cancels.release(this.cancelPid);
    const sock = this.upstream;
    // A statement still running is cancelled at the server, not left to finish for nobody.
    const running = this.pipeline.length > 0 && sock !== undefined && !sock.destroyed;
    if (running) {
      this.up?.cancel().catch((err) => this.log.warn('cancel of the running statement failed', { error: (err as Error).message }));
    }
    if (sock && !sock.destroyed) {
      if (!running && this.pipeline.status === TxStatus.Idle) {
        // Idle: say goodbye properly so the server ends the backend at once.
        sock.end(TERMINATE);
        setTimeout(() => sock.destroy(), 2000).unref();
      } else {
        // Mid-statement the server is not reading (it may be blocked sending rows): drop the connection;
        // the CancelRequest (and client_connection_check_interval) stop the query at once.
        sock.destroy();
      }
    }
    this.pipeline.abandon('session ended before the statement completed');
    this.out.close();
    void this.recording?.close(); // its buffered entries
    if (!this.recorded) return; // a cancel request or a refused startup: no session to close
    const end = makeSessionEndEvent({
      sessionId: this.meta.sessionId, who: this.deps.identity, connection: this.deps.connection.name, reason, statements: this.stmtLog.count,
      cancelled: running || undefined,
    });
    this.deps.audit.append(end).catch((err) => this.log.error('audit store unavailable; session end not recorded', { error: (err as Error).message }));
  }

  /** For tests: the namespace as the agent believes the server holds it. */
  namespaceSnapshot(): ReturnType<Namespace['snapshot']> & { status: number; inFlight: number } {
    return { ...this.ns.snapshot(), status: this.pipeline.status, inFlight: this.pipeline.length };
  }
}

/** One frontend message's outcome: the bytes to forward, the requests they make, the audit event. */
interface Outbound {
  bytes: Buffer;
  /** What the server will answer for these bytes, in order (pushed on the pipeline when sent). */
  requests: Request[];
  event?: EventInput;
  log?: InFlight;
  /** Held: decided (approval, transaction status) when the batch is sent. */
  hold?: { query?: QueryHold; ext?: ExtHold };
  /** Sent, then wait for this before anything after it (a read-write Query's end). */
  waitAfter?: () => Promise<void>;
  /** An extended-protocol message (opens the implicit transaction of a run). */
  extended?: boolean;
  /** The client's Sync. */
  sync?: boolean;
  /** Already a refusal. */
  refused?: boolean;
  /** The statement an Execute runs. */
  runs?: StatementFacts;
  /** How a reviewed transaction lists it, if it runs inside one. */
  reviewed?: Omit<ReviewEntry, 'log'>;
}

interface QueryHold {
  decision: Decision;
  /** The SQL as recorded and shown to approvers (literals removed when it reads masked columns). */
  sql: string;
  fingerprint: string;
  /** Needs an approver (P4); otherwise it only locks rows and runs read-write on its own. */
  approve: boolean;
  locksRows: boolean;
  /** approval.mode transaction: a plain BEGIN (may open a reviewed block) or the COMMIT of one. */
  review?: 'begin' | 'commit';
}

/** What an approver is asked about: a statement, or a reviewed transaction's COMMIT. */
interface ApprovalAsk {
  decision: Pick<Decision, 'rule' | 'reason'>;
  sql: string;
  params?: unknown[];
  fingerprint: string;
  transaction?: TransactionDetail;
  timeoutMs?: number;
  /** P11 row threshold: the result already ran and paused after this many rows. */
  rowsSoFar?: number;
}

interface ExtHold {
  decision: Decision;
  sql: string;
  /** Parameters as recorded (masked values redacted), shown to approvers. */
  params?: unknown[];
  fingerprint: string;
  /** A COPY (FROM STDIN would stop the run mid-way). */
  copies: boolean;
  /** Needs an approver; false for a write approved in advance (P4.approval-free). */
  approve: boolean;
}

/** Names as one text sees them while it is judged: the namespace plus the text's own earlier changes. */
class Overlay {
  private readonly ops: Op[] = [];
  constructor(private readonly ns: Namespace) {}
  statement(name: string): Statement | undefined {
    let v = this.ns.statement(name);
    for (const op of this.ops) v = stepStatement(op, name, v);
    return v;
  }
  portal(name: string): Portal | undefined {
    let v = this.ns.portal(name);
    for (const op of this.ops) v = stepPortal(op, name, v);
    return v;
  }
  apply(op: Op): void {
    this.ops.push(op);
  }
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


function isCopyData(type: number): boolean {
  return type === Frontend.CopyData || type === Frontend.CopyDone || type === Frontend.CopyFail;
}

/**
 * Statements whose work is deferred or runs another statement's query: their errors may quote values of
 * a query judged elsewhere (a cursor's, a prepared statement's, a WITH HOLD cursor's at COMMIT).
 */
function defers(f: StatementFacts): boolean {
  return f.executesPrepared !== undefined || f.fetchesCursor !== undefined || f.closesCursor !== undefined || f.endsTransaction === true || (f.kind === 'ExplainStmt' && f.analyzes === true);
}

/**
 * P8: whether statements that run read-write, in this order and starting outside a block, could leave a
 * transaction block open (BEGIN without its COMMIT; savepoints outside a block). Checked again at the
 * batch's ReadyForQuery: a block left open (an error inside it) ends the session.
 */
function leavesTransactionOpen(statements: readonly StatementFacts[]): boolean {
  let open = false;
  for (const f of statements) {
    switch (f.controlsTransaction) {
      case 'begin':
      case 'chain':
        open = true;
        break;
      case 'end':
        open = false;
        break;
      case 'inside':
        if (!open) return true;
        break;
    }
  }
  return open;
}

/** Whether a statement calls what a rollback cannot take back (refused inside a reviewed transaction). */
function escapesRollback(d: Decision): boolean {
  return d.statements.some((f) => f.escapesRollback);
}

/**
 * Whether a decision writes, so it must run read-write: anything held other than a bulk export, and a
 * write the connection approves in advance (P4.approval-free), which runs as an approved one does.
 */
function needsReadWrite(d: Decision): boolean {
  return d.statements.some((f) => (f.action === 'hold' && f.rule !== 'P4.export') || f.rule === 'P4.approval-free');
}

const EMPTY = Buffer.alloc(0);
/** pace(): a wakeup that read less than this, mid-result, pauses reading for PACE_MS (~100 KB of rows at full speed). */
const PACE_BELOW_BYTES = 32 * 1024;
const PACE_MS = 1;
/** How long the session waits for answers to what came before a malformed message. */
const ANSWER_WAIT_MS = 5_000;
