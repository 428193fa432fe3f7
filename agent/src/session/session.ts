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
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { SqlState } from '../../../shared/errors.js';
import type { Logger } from '../log.js';
import type { ResolvedConnection } from '../config.js';
import type { Principal } from '../identity/access.js';
import type { CancelRegistry } from './cancel.js';
import type { Decision, PolicySession } from '../policy/index.js';
import type { AuditSink } from '../audit/sink.js';
import { Backend, TxStatus } from '../pgwire/codes.js';
import { ProtocolError } from '../pgwire/errors.js';
import {
  FrontendFramer,
  parseStartup,
  parseFrontend,
  serializeFrontend,
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
  parameterStatus,
  parseErrorFields,
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
}

/** The upstream connection plus a way to cancel its running query (used by the cancel registry). */
export type UpstreamSession = UpstreamConnection & { cancel(): Promise<void> };

export interface SessionDeps {
  connection: ResolvedConnection;
  identity: Principal;
  /** This session's policy state: the one decision point every statement passes (policy/). */
  policy: PolicySession;
  audit: AuditSink;
  cancels: CancelRegistry;
  connectUpstream(params: Record<string, string>): Promise<UpstreamSession>;
  log: Logger;
  maxMessageBytes: number;
  /** A session that has not completed startup by then is closed (idle upgrade, slowloris). */
  startupTimeoutMs: number;
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
  /** Refusals awaiting their sentinel's ErrorResponse, by sentinel word. */
  private readonly sentinels = new Map<string, PgErrorFields>();
  private readonly nonce = randomBytes(6).toString('hex');
  private sentinelSeq = 0;
  private inCopyIn = false;
  /**
   * One entry per forwarded Query or Sync, in order: each is answered by exactly one ReadyForQuery.
   * A Query's entry carries its decision and counts its CommandCompletes.
   */
  private readonly readyQueue: Array<{ decision?: Decision; completed: number }> = [];
  private applicationName = '';
  private readonly log: Logger;

  constructor(
    private readonly deps: SessionDeps,
    private readonly out: SessionOutlet,
    readonly meta: SessionMeta,
  ) {
    this.framer = new FrontendFramer({ maxMessageBytes: deps.maxMessageBytes });
    this.log = deps.log.child({ session: meta.sessionId, stream: meta.streamId });
    this.startupTimer = setTimeout(() => this.fatal(new ProtocolError('startup not completed in time', SqlState.ProtocolViolation)), deps.startupTimeoutMs);
    this.startupTimer.unref();
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
    return this.step !== 'Connecting' && !this.upstreamFull;
  }

  pause(): void {
    this.paused = true;
    this.upstream?.pause();
  }

  resume(): void {
    this.paused = false;
    this.upstream?.resume();
  }

  /** The client went away (or the tunnel did): end the upstream session too. */
  close(reason?: string): void {
    if (this.step === 'Closed') return;
    this.log.debug('client closed', { reason });
    this.teardown();
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
    this.teardown();
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
    this.deps.connectUpstream(clean.upstreamParams).then(
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
    sock.on('data', (chunk: Buffer) => this.guard(() => this.onUpstreamBytes(chunk)));
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

    const key = this.deps.cancels.issue(this.deps.identity, up.cancel);
    this.cancelPid = key.pid;

    const parts: Buffer[] = [AUTH_OK];
    for (const [name, value] of up.parameters) parts.push(parameterStatus(name, value));
    parts.push(backendKeyData(key.pid, key.secret), readyForQuery('I'));
    this.out.send(Buffer.concat(parts));
    this.step = 'Ready';
    this.log.info('session ready', { applicationName: this.applicationName });
    void this.deps.audit.sessionStart?.(this.meta, this.deps.identity, this.deps.connection.name, this.applicationName);

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

  private forward(raws: FrontendRaw[]): void {
    if (raws.length === 0) return;
    const out: Buffer[] = [];
    let terminate = false;
    for (const raw of raws) {
      const msg = parseFrontend(raw.type, raw.body);
      const forwarded = this.judge(msg);
      if (forwarded === 'terminate') {
        terminate = true;
        break;
      }
      if (forwarded) out.push(forwarded);
    }
    const sock = this.upstream!;
    if (out.length && !sock.write(out.length === 1 ? out[0] : Buffer.concat(out))) this.upstreamFull = true;
    if (terminate) this.teardown();
  }

  /**
   * Decides one frontend message: the bytes to forward, null for nothing, or 'terminate'.
   * Statements are judged where they would run: a Query by its text, a Parse by its statement, a Bind
   * by the statement it binds, an Execute by what its portal really runs (policy/session.ts).
   */
  private judge(msg: FrontendMessage): Buffer | null | 'terminate' {
    const policy = this.deps.policy;
    switch (msg.type) {
      case 'Terminate':
        return 'terminate';
      case 'FunctionCall':
        // The fast-path interface calls any function by OID, past every SQL-level check.
        this.readyQueue.push({ completed: 0 });
        return this.refuse('Query', {
          action: 'block',
          rule: 'P3.protocol.function-call',
          reason: 'the FunctionCall protocol message is not allowed through hoopctl',
        });
      case 'CopyData':
      case 'CopyDone':
      case 'CopyFail':
        // Outside COPY FROM STDIN the server would reject these; we never forward them there.
        if (!this.inCopyIn) return null;
        if (msg.type !== 'CopyData') this.inCopyIn = false;
        return serializeFrontend(msg);
      case 'Query': {
        const d = policy.query(msg.sql);
        this.recordDecision(msg.sql, d);
        this.readyQueue.push({ decision: d.action === 'allow' ? d : undefined, completed: 0 });
        return d.action === 'allow' ? serializeFrontend(msg) : this.refuse('Query', d);
      }
      case 'Parse':
        return this.decided(policy.parse(msg.name, msg.sql), msg, msg.sql);
      case 'Bind':
        return this.decided(policy.bind(msg.portal, msg.statement), msg);
      case 'Execute': {
        const d = policy.execute(msg.portal);
        return this.decided(d, msg, d.statements[0]?.text ?? '');
      }
      case 'Close':
        policy.close(msg.target, msg.name);
        return serializeFrontend(msg);
      case 'Sync':
        this.readyQueue.push({ completed: 0 });
        return serializeFrontend(msg);
      default:
        return serializeFrontend(msg);
    }
  }

  /** An extended-protocol message: forwarded and its effects recorded, or replaced by a sentinel. */
  private decided(d: Decision, msg: FrontendMessage, sql?: string): Buffer {
    if (sql !== undefined) this.recordDecision(sql, d);
    if (d.action !== 'allow') return this.refuse('Parse', d);
    this.deps.policy.apply(d);
    return serializeFrontend(msg);
  }

  private recordDecision(sql: string, d: Decision): void {
    this.log.info('statement', { decision: d.action, rule: d.rule, sql });
  }

  /**
   * Replaces a refused message by a sentinel PostgreSQL rejects while parsing (see the header). In the
   * extended protocol the sentinel is a Parse of a fresh name, so no statement of the client's changes.
   */
  private refuse(as: 'Query' | 'Parse', d: Pick<Decision, 'action' | 'rule' | 'reason'>): Buffer {
    const word = `hoop_refused_${this.nonce}_${++this.sentinelSeq}`;
    const held = d.action === 'hold';
    this.sentinels.set(word, {
      severity: 'ERROR',
      code: SqlState.InsufficientPrivilege,
      message: held
        ? `hoopctl: statement needs approval and was not run (${d.rule}): ${d.reason}`
        : `hoopctl: statement blocked by policy (${d.rule}): ${d.reason}`,
      hint: held
        ? 'Writes and bulk exports wait for an approver; this agent does not hold statements for approval yet.'
        : 'Ask the connection owner to change the policy if this statement is needed.',
    });
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
    let rewrites: Array<{ at: number; end: number; bytes: Buffer }> | undefined;
    for (let i = 0; i < count; i++) {
      switch (types[i]) {
        case Backend.ErrorResponse: {
          if (this.sentinels.size === 0) break;
          const text = parseErrorFields(fr.body(i)).message ?? '';
          for (const [word, refusal] of this.sentinels) {
            if (!text.includes(word)) continue;
            this.sentinels.delete(word);
            (rewrites ??= []).push({ at: offsets[i], end: offsets[i + 1], bytes: errorResponse(refusal) });
            break;
          }
          break;
        }
        case Backend.CommandComplete: {
          const q = this.readyQueue[0];
          if (q) q.completed++;
          break;
        }
        case Backend.ReadyForQuery: {
          // A sentinel skipped by the server (after an earlier error in the same pipeline) never answers.
          this.sentinels.clear();
          this.inCopyIn = false;
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
    const complete = fr.complete;
    if (!rewrites) return this.out.send(complete);
    const parts: Buffer[] = [];
    let at = 0;
    for (const r of rewrites) {
      parts.push(complete.subarray(at, r.at), r.bytes);
      at = r.end;
    }
    parts.push(complete.subarray(at));
    this.out.send(Buffer.concat(parts));
  }

  /**
   * ReadyForQuery ends a simple Query or a Sync. Record what the Query's statements did (only those
   * that completed), and forget portals and cursors when no transaction is open any more.
   */
  private onReadyForQuery(status: number): void {
    const q = this.readyQueue.shift();
    if (q?.decision) this.deps.policy.apply(q.decision, q.completed);
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
    this.teardown();
  }

  private teardown(): void {
    if (this.step === 'Closed') return;
    this.step = 'Closed';
    clearTimeout(this.startupTimer);
    if (this.cancelPid !== undefined) this.deps.cancels.release(this.cancelPid);
    const sock = this.upstream;
    if (sock && !sock.destroyed) {
      // Say goodbye properly so the server ends the backend at once instead of on a broken pipe.
      sock.end(TERMINATE);
      setTimeout(() => sock.destroy(), 2000).unref();
    }
    this.out.close();
    void this.deps.audit.sessionEnd?.(this.meta);
  }
}
