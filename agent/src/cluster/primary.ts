// The agent on more than one core (config `workers`). The primary forks N workers that share the
// listening socket (node:cluster hands each accepted connection to one of them in turn); a tunnel and
// every session on it stay in the worker that accepted it. The primary keeps what must exist once: the
// state store (one audit chain, sealed in one place), the approval book, the revocation list, signed
// checkpoints, webhooks, and the API, which workers forward to it over a private Unix socket.
//
//   hoopctl ──ws──► worker k: tunnel → session → policy → masking ──append (IPC)──► primary: chain, disk
//                          ▲                                          ◄── sealed ──┘ (then forwarded)
//                          └── approval changes, revocations, store health (pushed to every worker)
//   hoopctl approvals / sessions / audit ──► worker j ──► Unix socket ──► primary's API
import cluster, { type Worker } from 'node:cluster';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { AggregatorRegistry } from 'prom-client';
import type { ResolvedConfig } from '../config.js';
import type { Logger } from '../log.js';
import { startAgent, type DrainReport, type RunningAgent } from '../agent.js';
import type { StateStore } from '../audit/store.js';
import { makeSessionEndEvent, type EventInput } from '../audit/events.js';
import type { Approvals } from '../audit/approvals.js';
import { openRevocations } from '../audit/revocations.js';
import { durationMs } from '../../../shared/config/schema.js';
import { Channel, type IpcPort } from './channel.js';
import { NOTICE } from './remote.js';

export const WORKER_ENV = { api: 'HOOP_AGENT_API_SOCKET', index: 'HOOP_AGENT_WORKER' } as const;

/** Workers that die this often (a crash loop) stop the agent instead of being restarted again. */
const RESTARTS_PER_MINUTE = 5;
const HEALTH_PUSH_MS = 500;

/** What a caller holding an approval book may do through the channel; the rest stays in the primary. */
const APPROVAL_CALLS = ['create', 'get', 'list', 'decide', 'consume', 'withdraw', 'sweep', 'peek'] as const satisfies readonly (keyof Approvals)[];

export interface ClusterOptions {
  config: ResolvedConfig;
  log: Logger;
  workers: number;
  wrapStore?: (s: StateStore) => StateStore;
}

export interface RunningCluster {
  drain(timeoutMs?: number): Promise<DrainReport>;
}

export async function startCluster(o: ClusterOptions): Promise<RunningCluster> {
  const { config, log } = o;
  // The API socket lives in a fresh 0700 directory: only this user's processes can reach it.
  const apiDir = await mkdtemp(path.join(os.tmpdir(), 'hoop-agent-'));
  const apiSocket = path.join(apiDir, 'api.sock');
  const revocations = await openRevocations(config.state, config.dataDir, Date.now);
  const channels = new Map<Worker, Channel>();
  const aggregator = new AggregatorRegistry();
  let agent: RunningAgent;
  try {
    agent = await startAgent({
      config,
      log,
      revocations,
      wrapStore: o.wrapStore,
      listenPath: apiSocket,
      // Sessions, statements and tunnels are counted where they run: /metrics sums every worker's.
      metricsBody: async () => ({ contentType: aggregator.contentType, body: await aggregator.clusterMetrics() }),
    });
  } catch (err) {
    await revocations.close().catch(() => {});
    await rm(apiDir, { recursive: true, force: true });
    throw err;
  }
  const store = agent.store;
  const broadcast = (op: string, v: unknown) => {
    for (const ch of channels.values()) ch.notify(op, v);
  };
  const unsubscribeApprovals = store.approvals.subscribe({ changed: (id) => broadcast(NOTICE.approvalChange, id) });
  const unsubscribeRevocations = revocations.subscribe((keys) => broadcast(NOTICE.revoked, keys));
  let lastHealth = JSON.stringify(store.health());
  const healthPush = setInterval(() => {
    const h = JSON.stringify(store.health());
    if (h !== lastHealth) broadcast(NOTICE.health, JSON.parse((lastHealth = h)));
  }, HEALTH_PUSH_MS);
  healthPush.unref();

  // Sessions open in each worker, from their session_start and session_end as they pass: a worker that
  // dies cannot write its sessions' ends, so the primary does, and withdraws their held approvals.
  const openSessions = new Map<Worker, Map<string, EventInput>>();
  const closings = new Set<Promise<void>>();

  function serveWorker(w: Worker): Channel {
    const ch = new Channel(w as unknown as IpcPort);
    const open = new Map<string, EventInput>();
    openSessions.set(w, open);
    ch.handle('hello', () => ({ agentId: store.agentId, health: store.health() }))
      .handle('append', (e: EventInput) => {
        if (e.type === 'session_start' && e.sessionId) open.set(e.sessionId, e);
        else if (e.type === 'session_end' && e.sessionId) open.delete(e.sessionId);
        return store.append(e);
      })
      .handle('appendRecording', (id, ...entries) => store.appendRecording(id, ...entries))
      .handle('revocations.isRevoked', (keys) => revocations.isRevoked(keys))
      .handle('revocations.revoke', (r) => revocations.revoke(r))
      // A CancelRequest for a session another worker holds: each of the others is asked; none says which.
      .handle('cancel', async (pid, secret, owner) => {
        const others = [...channels].filter(([other]) => other !== w).map(([, c]) => c.call<boolean>('cancelHere', pid, secret, owner).catch(() => false));
        return (await Promise.all(others)).some(Boolean);
      });
    for (const m of APPROVAL_CALLS) ch.handle(`approvals.${m}`, (...args) => (store.approvals[m] as (...a: unknown[]) => unknown)(...args));
    return ch;
  }

  cluster.setupPrimary({ serialization: 'advanced' });
  let draining = false;
  const exits: number[] = [];
  let crashLoop: ((err: Error) => void) | undefined;

  const fork = (index: number): Promise<void> =>
    new Promise((resolve, reject) => {
      const w = cluster.fork({ [WORKER_ENV.api]: apiSocket, [WORKER_ENV.index]: String(index) });
      const ch = serveWorker(w);
      channels.set(w, ch);
      ch.on('ready', () => resolve());
      w.once('exit', (code, signal) => {
        channels.delete(w);
        ch.close(new Error('agent worker exited'));
        const closing = closeSessionsOf(w, `agent worker exited (code ${code}, signal ${signal})`);
        closings.add(closing);
        void closing.finally(() => closings.delete(closing));
        reject(new Error(`agent worker ${index} exited during start (code ${code}, signal ${signal})`));
        if (draining) return;
        // A worker that dies takes its tunnels with it (clients reconnect); the others serve on.
        log.error('agent worker exited; starting another', { worker: index, pid: w.process.pid, code, signal });
        const now = Date.now();
        exits.push(now);
        while (exits.length && exits[0] < now - 60_000) exits.shift();
        if (exits.length > RESTARTS_PER_MINUTE) return crashLoop?.(new Error(`agent workers exited ${exits.length} times in a minute`));
        setTimeout(() => void fork(index).catch((err) => log.error('agent worker not restarted', { worker: index, error: (err as Error).message })), 1000).unref();
      });
    });

  async function closeSessionsOf(w: Worker, reason: string): Promise<void> {
    const open = openSessions.get(w);
    openSessions.delete(w);
    if (!open?.size) return;
    log.warn('closing the audit of sessions a worker left open', { sessions: open.size, reason });
    const held = (await store.approvals.list({ status: 'pending' }).catch(() => [])).filter((a) => open.has(a.sessionId));
    for (const a of held) await store.approvals.withdraw(a.id).catch(() => {});
    for (const start of open.values()) {
      const end = makeSessionEndEvent({ sessionId: start.sessionId!, who: start.identity!, connection: start.connection!, reason });
      await store.append(end).catch((err) => log.error('audit store unavailable; session end not recorded', { error: (err as Error).message }));
    }
  }

  async function drain(timeoutMs = durationMs(config.shutdown.drainTimeout)): Promise<DrainReport> {
    draining = true;
    const t0 = performance.now();
    log.info('agent draining', { workers: channels.size, timeoutMs });
    // Each worker drains its own sessions (agent.drain) and exits; the store closes after the last one.
    const gone = [...channels.keys()].map((w) => new Promise<void>((r) => (w.isDead() ? r() : w.once('exit', () => r()))));
    broadcast('drain', timeoutMs);
    const late = setTimeout(() => {
      for (const w of channels.keys()) w.process.kill('SIGKILL');
    }, timeoutMs + 15_000);
    await Promise.all(gone);
    clearTimeout(late);
    // Every worker's exit started closing what it left open (closeSessionsOf); let those finish.
    await Promise.all(closings);
    clearInterval(healthPush);
    unsubscribeApprovals();
    unsubscribeRevocations();
    const report = await agent.drain(0);
    await revocations.close().catch(() => {});
    await rm(apiDir, { recursive: true, force: true });
    return { ...report, ms: Math.round(performance.now() - t0) };
  }

  try {
    await Promise.all(Array.from({ length: o.workers }, (_, i) => fork(i)));
  } catch (err) {
    await drain(0).catch(() => {});
    throw err;
  }
  crashLoop = (err) => {
    log.error('agent stopping: its workers keep exiting', { error: err.message });
    void drain(0).then(() => process.exit(1));
  };
  log.info('agent listening', { url: agent.url, connections: [...config.connections.keys()], workers: o.workers });
  return { drain };
}
