// hoop-agent assembled: config → token verifier → HTTP server → tunnels → sessions. `startAgent` is what
// the binary, the demo, the tests and the benchmark all run, so they exercise the same path.
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { hostname } from 'node:os';
import type { ResolvedConfig, ResolvedConnection } from './config.js';
import { createLogger, type Logger } from './log.js';
import { createHttpServer, type Authenticator, type HttpDeps } from './http/server.js';
import { auditExportApi, sessionsApi } from './http/sessions-api.js';
import { approvalsApi } from './http/approvals-api.js';
import { TokenVerifier } from './identity/verify.js';
import { canUse } from './identity/access.js';
import { checkingRevocation, revokeOwnToken } from './identity/revocation.js';
import { openRevocations, type Revocations } from './audit/revocations.js';
import { TunnelRevocationWatch } from './tunnel/revocation-watch.js';
import { makeTokenRevokedEvent } from './audit/events.js';
import { CancelRegistry } from './session/cancel.js';
import { loadPolicyEngine, type PolicyEngine } from './policy/index.js';
import { ConnectionMasking } from './masking/connection.js';
import { unmaskedTextColumns } from './masking/catalog.js';
import type { StateStore } from './audit/store.js';
import { JsonlStore } from './audit/jsonl-store.js';
import { PgStore } from './audit/pg-store.js';
import { RefusalAggregator } from './audit/refusals.js';
import { startRetention } from './audit/retention.js';
import { Checkpointer, loadSigningKey } from './audit/checkpoints.js';
import { makePolicyLoadedEvent } from './audit/policy-event.js';
import { auditSigningApi } from './http/audit-api.js';
import { durationMs } from '../../shared/config/schema.js';
import { connectUpstream, sendCancelRequest, SHARED_SCRAM_KEYS } from './upstream/connect.js';
import { serveTunnel } from './tunnel/tunnel.js';
import type { PgSession } from './session/session.js';
import { causeClass, createMetrics, type AgentMetrics } from './metrics.js';
import { listenMetrics } from './http/metrics-server.js';
import { connect as netConnect } from 'node:net';
import { startApprovalWebhooks } from './approvals/webhook.js';
import type { TunnelMux } from '../../shared/tunnel/mux.js';
import type { SessionStore } from './cluster/remote.js';
import { forwardTo } from './cluster/forward.js';
import { AggregatorRegistry } from 'prom-client';

export interface AgentOptions {
  config: ResolvedConfig;
  log?: Logger;
  /** Token verification; defaults to the configured issuers. Tests inject their own clock through it. */
  auth?: Authenticator;
  /** Revoked tokens; defaults to config.state: dataDir/revocations.jsonl, or PostgreSQL. */
  revocations?: Revocations;
  /** The state store (audit, recordings, approvals). Defaults to config.state: JSONL in dataDir, or PostgreSQL. */
  store?: StateStore;
  /** Wraps the store the agent opened itself (the benchmark's audit-off arm, see audit/bench-no-audit.ts). */
  wrapStore?: (store: StateStore) => StateStore;
  /** Milliseconds since the epoch; injected so tests control time. */
  clock?: () => number;
  startupTimeoutMs?: number;
  maxTunnelsPerIdentity?: number;
  /** Overrides the config's maxSessionsPerTunnel (tests). */
  maxStreamsPerTunnel?: number;
  /** How often recording retention runs after the pass at start (default hourly). */
  retentionEveryMs?: number;
  /** Refused upgrades are aggregated per source and reason over this window (default 60 s). */
  refusalWindowMs?: number;
  /** This agent's audit chain id; default from host name and listen port (set it when several agents share a host and state store). */
  agentId?: string;
  /** Test hook: called with each Postgres session as it is created. */
  onSession?: (s: PgSession) => void;
  /** Listen on this Unix socket instead of config.listen (the cluster primary: its workers forward the API there). */
  listenPath?: string;
  /** /metrics body instead of this process's registry (the cluster primary: every worker's, summed). */
  metricsBody?: () => Promise<{ contentType: string; body: string }>;
  /** Asked when a CancelRequest names a key no session here issued (the cluster primary asks every worker). */
  cancelElsewhere?: (pid: number, secret: Buffer, owner: string) => Promise<boolean>;
}

/** A worker process of a clustered agent (config `workers`): the primary's store, revocations and API. */
export interface WorkerOptions extends Omit<AgentOptions, 'store' | 'revocations' | 'wrapStore' | 'listenPath' | 'metricsBody'> {
  store: SessionStore;
  revocations: Revocations;
  /** The primary's private socket, where every API request is forwarded. */
  apiSocket: string;
}

export type RunningWorker = Omit<RunningAgent, 'store' | 'checkpointer'>;

export interface RunningAgent {
  /** ws:// or wss:// base URL of the agent. */
  url: string;
  port: number;
  /** Open tunnels (for tests and /metrics). */
  tunnels: Set<TunnelMux>;
  store: StateStore;
  checkpointer: Checkpointer;
  /** http:// URL of the separate metrics listener (config metrics.listen), if any. */
  metricsUrl?: string;
  /** This process's cancel keys (the cluster primary asks a worker's with `cancelHere`). */
  cancels: CancelRegistry;
  /** Stops at once: tunnels closed, sessions ended (each writes its session_end), store closed. */
  stop(): Promise<void>;
  /**
   * Graceful stop (SIGTERM): refuses new tunnels, lets running statements and open transactions finish
   * for up to `timeoutMs` (default shutdown.drainTimeout), then cancels what remains upstream, ends every
   * session with FATAL 57P01 and a session_end, and stops. Held approvals are withdrawn at once.
   */
  drain(timeoutMs?: number): Promise<DrainReport>;
}

export interface DrainReport {
  /** Sessions open when the drain began. */
  sessions: number;
  /** Upstream statements cancelled at the deadline. */
  cancelled: number;
  /** Sessions closed mid-statement after the cancel grace. */
  forced: number;
  ms: number;
}

export async function startAgent(opts: AgentOptions): Promise<RunningAgent> {
  const { config } = opts;
  const log = opts.log ?? createLogger();
  const clock = opts.clock ?? Date.now;
  const agentId = opts.agentId ?? agentIdFor(config.listen);
  const opened =
    opts.store ??
    (config.state.url
      ? await PgStore.open({ url: config.state.url, agentId, clock, recording: config.recording })
      : await JsonlStore.open({ dataDir: config.dataDir, agentId, clock, recording: config.recording }));
  let revocations: Revocations;
  try {
    revocations = opts.revocations ?? (await openRevocations(config.state, config.dataDir, clock));
  } catch (err) {
    if (!opts.store) await opened.close().catch(() => {});
    throw err;
  }
  const ownsRevocations = !opts.revocations;
  const metrics = createMetrics({ connections: [...config.connections.keys()], health: () => opened.health() });
  const store = metrics.meterStore(!opts.store && opts.wrapStore ? opts.wrapStore(opened) : opened);
  const ownsStore = !opts.store;
  // Signed checkpoints (audit/checkpoints.ts): the key first, then the chain replayed against what it signed.
  let checkpointer: Checkpointer;
  try {
    const { signer, keys } = await loadSigningKey(config.audit.signingKeyFile ?? path.join(config.dataDir, 'audit-signing.key'), `hoopctl/${agentId}`, new Date(clock()).toISOString());
    log.info('audit signing key', { fingerprint: signer.fingerprint, vkey: signer.vkey });
    checkpointer = await Checkpointer.start({ store, signer, keys, clock, witnesses: config.audit.witness, log });
    await store.append(makePolicyLoadedEvent(config));
  } catch (err) {
    if (ownsStore) await store.close().catch(() => {});
    if (ownsRevocations) await revocations.close().catch(() => {});
    throw err;
  }
  let webhooks: { close(): Promise<void> } | undefined;
  let retention: { stop(): void } | undefined;
  let checkpoints: NodeJS.Timeout | undefined;
  const core = await serve(opts, {
    role: opts.listenPath ? 'primary' : 'agent',
    listenPath: opts.listenPath,
    metricsBody: opts.metricsBody,
    log,
    clock,
    metrics,
    store,
    revocations,
    api: () => ({
      sessions: sessionsApi(store, config.reviewers.groups),
      auditExport: auditExportApi(store, config.reviewers.groups),
      auditSigning: auditSigningApi(checkpointer, store, config.reviewers.groups),
      approvals: approvalsApi(store, config, { log }),
      async revokeToken(who) {
        const result = await revokeOwnToken(who, revocations, clock());
        await store.append(makeTokenRevokedEvent(who, result)).catch((err) => log.error('audit store unavailable; revocation not chained', { error: (err as Error).message }));
        log.info('token revoked', { sub: who.sub, scope: result.scope });
        return result;
      },
    }),
    listening(url) {
      retention = config.retention.recordings === undefined ? undefined : startRetention(store, durationMs(config.retention.recordings), opts.retentionEveryMs ?? 3_600_000, log);
      checkpoints = setInterval(() => {
        checkpointer.checkpoint().catch((err) => log.error('audit checkpoint not written', { error: (err as Error).message }));
      }, durationMs(config.audit.checkpointInterval));
      checkpoints.unref();
      // Approval notifications ride the approvals change feed, off the session path (approvals/webhook.ts).
      webhooks = startApprovalWebhooks({ approvals: store.approvals, connections: config.connections, agentUrl: url.replace(/^ws/, 'http'), log });
    },
    async stopping() {
      retention?.stop();
      clearInterval(checkpoints);
    },
    async stopped() {
      await webhooks?.close();
      // The last checkpoint covers the session ends just written: a tail cut after shutdown shows.
      await checkpointer.checkpoint().catch((err) => log.error('audit checkpoint at shutdown not written', { error: (err as Error).message }));
      if (ownsRevocations) await revocations.close();
      if (ownsStore) await store.close();
    },
  });
  return { ...core, store, checkpointer };
}

/** One worker process of a clustered agent (cluster/worker.ts): tunnels and sessions, nothing else. */
export async function startAgentWorker(opts: WorkerOptions): Promise<RunningWorker> {
  const log = opts.log ?? createLogger();
  const metrics = createMetrics({ connections: [...opts.config.connections.keys()], health: () => opts.store.health() });
  // The primary's /metrics asks every worker for this registry (prom-client's cluster support, which
  // answers those requests once an AggregatorRegistry exists in the process).
  AggregatorRegistry.setRegistries([metrics.registry]);
  new AggregatorRegistry();
  return serve(opts, {
    role: 'worker',
    log,
    clock: opts.clock ?? Date.now,
    metrics,
    store: metrics.meterStore(opts.store),
    revocations: opts.revocations,
    api: () => ({ forward: forwardTo(opts.apiSocket, log) }),
    listening() {},
    async stopping() {},
    async stopped() {},
  });
}

/** What differs between one agent process, the cluster primary and a worker (see `serve`). */
interface ServeParts {
  /** agent: everything in one process; primary: the API on `listenPath`, no tunnels; worker: tunnels only. */
  role: 'agent' | 'primary' | 'worker';
  log: Logger;
  clock: () => number;
  metrics: AgentMetrics;
  /** Already metered. */
  store: SessionStore;
  revocations: Revocations;
  /** The API this listener serves, or forwards to the primary. */
  api(): Partial<HttpDeps>;
  /** The primary's private socket, listened on instead of config.listen. */
  listenPath?: string;
  /** /metrics body instead of this process's registry. */
  metricsBody?: () => Promise<{ contentType: string; body: string }>;
  listening(url: string): void;
  /** At stop, before tunnels close. */
  stopping(): Promise<void>;
  /** At stop, after every session ended. */
  stopped(): Promise<void>;
}

/** Policy and masking per connection, the HTTP listener, tunnels and sessions, drain and stop. */
async function serve(opts: AgentOptions | WorkerOptions, parts: ServeParts): Promise<RunningWorker> {
  const { config } = opts;
  const { log, clock, metrics, store, revocations } = parts;
  const verifier = opts.auth ?? new TokenVerifier({ issuers: config.identity.issuers });
  // Every token, wherever it is presented, is checked against the revocation list after its signature.
  const auth = checkingRevocation(verifier, revocations);
  const revocationWatch = new TunnelRevocationWatch(revocations, log);
  const cancels = new CancelRegistry(opts.cancelElsewhere);
  const tunnels = new Set<TunnelMux>();
  // One policy engine per connection (its overrides and masked columns), loaded before we listen.
  const engines = new Map<string, PolicyEngine>();
  const maskers = new Map<string, ConnectionMasking>();
  for (const [name, conn] of config.connections) {
    const masking = new ConnectionMasking(conn);
    maskers.set(name, masking);
    engines.set(
      name,
      await loadPolicyEngine({
        extraBlockedFunctions: conn.policy.extraBlockedFunctions,
        allowedFunctions: conn.policy.allowedFunctions,
        approvalFreeFingerprints: conn.policy.approvalFree,
        strictPredicates: conn.policy.strictPredicates,
        maskedColumns: Object.keys(conn.masking),
        // P7 on lineage once the catalog is loaded (every session waits for it before its first statement)
        predicates: () => masking.loaded(),
      }),
    );
  }
  const sockets = new Set<import('ws').WebSocket>();
  // Refused upgrades: the first per source and reason whole, the rest counted per window (audit/refusals.ts).
  const refusals = new RefusalAggregator(
    (event) => void store.append(event).catch((err) => log.error('audit store unavailable; refusal not recorded', { error: (err as Error).message })),
    opts.refusalWindowMs ?? 60_000,
    clock,
  );
  const sessions = new Set<PgSession>();
  // Upstream connections still open, for the drain's cancel at its deadline.
  const upstreams = new Set<{ socket: import('node:net').Socket; cancel(): Promise<void> }>();
  let draining = false;
  const ownMetrics = parts.metricsBody ?? metricsBody;

  const server = createHttpServer({
    config,
    auth,
    log,
    maxTunnelsPerIdentity: opts.maxTunnelsPerIdentity ?? 64,
    ...parts.api(),
    draining: () => draining,
    metrics: config.metrics.listen ? undefined : ownMetrics,
    ready: readiness,
    onRefused(r, clientAddr, connection) {
      metrics.refused(r.code);
      refusals.record({ reason: r.message, code: `HTTP ${r.status} ${r.code}`, clientAddr, connection: connection?.slice(0, 64) });
    },
    onTunnel(ws, identity, name, clientAddr, purpose) {
      const connection = config.connections.get(name)!;
      const target = {
        host: connection.postgres.host,
        port: connection.postgres.port,
        database: connection.postgres.database,
        user: connection.postgres.user,
        password: connection.password,
        scramKeys: SHARED_SCRAM_KEYS,
        sslmode: connection.postgres.sslmode,
        sslrootcert: connection.postgres.sslrootcert,
      };
      const mux = serveTunnel(ws, {
        identity,
        connection,
        clientAddr,
        purpose,
        log,
        maxStreams: opts.maxStreamsPerTunnel ?? config.maxSessionsPerTunnel,
        onSession: opts.onSession,
        sessions,
        policy: engines.get(name)!,
        masking: maskers.get(name)!,
        onIdentity: (who) => revocationWatch.identify(ws, who),
        async renew(token) {
          const who = await auth.verify(token);
          const access = canUse(connection, name, who);
          if (!access.allowed) throw new Error(access.reason);
          return who;
        },
        sessionDeps: {
          audit: store,
          clock,
          cancels,
          maxMessageBytes: config.maxMessageBytes,
          startupTimeoutMs: opts.startupTimeoutMs ?? 15_000,
          recording: config.recording.enabled
            ? { store, maxRowsPerStatement: config.recording.maxRowsPerStatement, maxBytesPerSession: config.recording.maxBytesPerSession }
            : undefined,
          async connectUpstream(params) {
            // P2/P8: the lexer-relevant settings and the read-only safety net are pinned at startup, where
            // neither SET nor DISCARD ALL (which runs RESET ALL) can undo them.
            const up = await metrics.upstreamConnect(name, () => connectUpstream({ ...target, params: { ...params, ...UPSTREAM_PINS } }));
            const cancel = () => sendCancelRequest({ ...target }, up.backendKey.pid, up.backendKey.secret);
            const tracked = { socket: up.socket, cancel };
            upstreams.add(tracked);
            up.socket.once('close', () => upstreams.delete(tracked));
            return { ...up, cancel };
          },
        },
      });
      revocationWatch.attach(ws, mux);
      tunnels.add(mux);
      sockets.add(ws);
      meterSocket(ws, metrics);
      ws.on('close', () => {
        tunnels.delete(mux);
        sockets.delete(ws);
      });
    },
  });

  async function metricsBody(): Promise<{ contentType: string; body: string }> {
    return { contentType: metrics.registry.contentType, body: await metrics.registry.metrics() };
  }

  /** GET /readyz: the store writes, every connection's database answers, every masking catalog loads. */
  async function readiness(): Promise<{ ready: boolean; checks: Record<string, string> }> {
    const checks: Record<string, string> = { store: store.health().writable ? 'ok' : 'the audit store is not writable' };
    if (draining) checks.agent = 'draining';
    await Promise.all(
      [...config.connections].map(async ([name, c]) => {
        checks[`${name}.upstream`] = await reachable(c.postgres.host, c.postgres.port);
        const m = maskers.get(name)!;
        if (m.enabled || c.scopes) checks[`${name}.catalog`] = await withTimeout(m.current(), READY_TIMEOUT_MS).then(() => 'ok', (err) => `not loaded (${causeClass(err)})`);
      }),
    );
    return { ready: Object.values(checks).every((v) => v === 'ok'), checks };
  }

  // A worker's metrics are served by the primary's listener (summed over workers).
  const metricsServer = config.metrics.listen && parts.role !== 'worker' ? await listenMetrics(config.metrics.listen, { metrics: ownMetrics, ready: readiness }) : undefined;
  const [host, portText] = splitHostPort(config.listen);
  const { listenPath } = parts;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      server.off('error', reject);
      resolve();
    };
    if (listenPath) server.listen(listenPath, done);
    else server.listen(Number(portText), host, done);
  });
  const port = listenPath ? Number(portText) : (server.address() as AddressInfo).port;
  const scheme = config.tls ? 'wss' : 'ws';
  const url = `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`;
  if (parts.role === 'worker') log.info('worker listening', { url, pid: process.pid });
  else if (listenPath) log.info('agent primary ready', { api: listenPath });
  else log.info('agent listening', { url, connections: [...config.connections.keys()] });
  // Said once per agent: by the primary, not again by every worker.
  if (parts.role !== 'worker') for (const [name, m] of maskers) if (m.enabled) void lintMasking(name, m, config.connections.get(name)!, log);
  parts.listening(url);

  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      draining = true;
      await parts.stopping();
      for (const ws of sockets) ws.close(1001, 'agent shutting down');
      for (const mux of tunnels) mux.shutdown('agent shutting down');
      server.closeAllConnections?.();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      // Sessions append their session_end as they close; give those a moment to land.
      await new Promise((r) => setTimeout(r, 50));
      refusals.close();
      for (const m of maskers.values()) m.close();
      await metricsServer?.close();
      revocationWatch.close();
      await parts.stopped();
    })());
  async function drain(timeoutMs = durationMs(config.shutdown.drainTimeout)): Promise<DrainReport> {
    const t0 = performance.now();
    draining = true;
    const report: DrainReport = { sessions: sessions.size, cancelled: 0, forced: 0, ms: 0 };
    log.info('agent draining', { sessions: sessions.size, timeoutMs });
    const deadline = t0 + timeoutMs;
    let cancelledAt: number | undefined;
    for (;;) {
      const now = performance.now();
      if (cancelledAt === undefined && now >= deadline) {
        // What is still running is cancelled the way psql's Ctrl-C would: the server answers 57014.
        cancelledAt = now;
        for (const u of upstreams) {
          report.cancelled++;
          u.cancel().catch(() => {});
        }
      }
      // A cancelled statement normally ends within milliseconds; one that does not is cut off.
      const force = cancelledAt !== undefined && now - cancelledAt >= CANCEL_GRACE_MS;
      if (force) report.forced += sessions.size;
      for (const s of [...sessions]) s.drain(DRAIN_MESSAGE, force);
      if (sessions.size === 0) break;
      await new Promise((r) => setTimeout(r, DRAIN_POLL_MS));
    }
    await stop();
    report.ms = Math.round(performance.now() - t0);
    log.info('agent drained', { ...report });
    return report;
  }

  return { url, port, tunnels, cancels, stop, drain, metricsUrl: metricsServer?.url };
}

const READY_TIMEOUT_MS = 3_000;

/**
 * At start, once the catalog loads: one warning per text column left in clear beside masked columns
 * (masking/catalog.ts). A database that cannot be reached now is not this lint's to report (readyz does).
 */
async function lintMasking(name: string, masking: ConnectionMasking, conn: ResolvedConnection, log: Logger): Promise<void> {
  let lineage;
  try {
    lineage = await masking.current();
  } catch {
    return;
  }
  for (const column of unmaskedTextColumns(lineage.catalog, Object.keys(conn.masking), conn.unmasked)) {
    log.warn('text column not masked beside masked columns', {
      connection: name,
      column,
      hint: `free text often repeats the identifiers masked beside it: mask it, or list it under connections.${name}.unmasked to silence this`,
    });
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** 'ok' when a TCP connection to the database opens, else the cause class (never the address). */
function reachable(host: string, port: number): Promise<string> {
  return withTimeout(
    new Promise<string>((resolve, reject) => {
      const sock = netConnect(port, host, () => {
        sock.destroy();
        resolve('ok');
      });
      sock.on('error', reject);
    }),
    READY_TIMEOUT_MS,
  ).catch((err) => `unreachable (${causeClass(err)})`);
}

/** Counts a tunnel's frames and bytes both ways (the mux sends through ws.send). */
function meterSocket(ws: import('ws').WebSocket, metrics: AgentMetrics): void {
  metrics.tunnelsOpen.inc();
  ws.once('close', () => metrics.tunnelsOpen.dec());
  ws.on('message', (data: Buffer) => metrics.tunnelFrame('in', data.length));
  const send = ws.send.bind(ws) as (data: Buffer, cb?: (err?: Error) => void) => void;
  (ws as unknown as { send: typeof send }).send = (data, cb) => {
    metrics.tunnelFrame('out', data.length);
    send(data, cb);
  };
}

const DRAIN_MESSAGE = 'the agent is shutting down';
const DRAIN_POLL_MS = 20;
const CANCEL_GRACE_MS = 2_000;

// client_connection_check_interval: PostgreSQL itself stops a query whose client (this agent) is gone,
// even if the agent died before it could send a CancelRequest.
const UPSTREAM_PINS = { standard_conforming_strings: 'on', default_transaction_read_only: 'on', client_connection_check_interval: '2s' };

/** A stable id for this agent's audit chain: one chain per agent (see audit/store.ts). */
function agentIdFor(listen: string): string {
  return `agent-${hostname()}-${listen.split(':').pop()}`.replace(/[^A-Za-z0-9_.-]/g, '-').slice(0, 64);
}

function splitHostPort(listen: string): [string, string] {
  const i = listen.lastIndexOf(':');
  return [listen.slice(0, i).replace(/^\[|\]$/g, ''), listen.slice(i + 1)];
}
