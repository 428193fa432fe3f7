// One authenticated WebSocket from one `hoopctl connect` process. Every stream it opens becomes a Postgres
// session bound to the identity and connection that were checked at the upgrade: a stream id means
// nothing outside its own socket, so no other tunnel can attach to it.
import { randomUUID } from 'node:crypto';
import type WebSocket from 'ws';
import { OpenPayload, decodeJson } from '../../../shared/tunnel/frame.js';
import { TunnelMux } from '../../../shared/tunnel/mux.js';
import type { Logger } from '../log.js';
import type { ResolvedConnection } from '../config.js';
import type { Principal } from '../identity/access.js';
import { PgSession, type SessionDeps } from '../session/session.js';
import type { PolicyEngine } from '../policy/index.js';
import type { ConnectionMasking } from '../masking/connection.js';
import { scopeFor, SessionScope } from '../policy/scope.js';

export interface TunnelContext {
  identity: Principal;
  connection: ResolvedConnection;
  clientAddr: string;
  log: Logger;
  /** Everything a session needs except the identity and connection, which come from the upgrade. */
  sessionDeps: Omit<SessionDeps, 'identity' | 'connection' | 'log' | 'policy' | 'masking' | 'scope'>;
  /** The connection's masking (rules, catalog); each session gets its own result tracking. */
  masking: ConnectionMasking;
  /** The connection's policy; each session gets its own state (prepared statements, portals). */
  policy: PolicyEngine;
  maxStreams: number;
  /** Test hook: each session as it is created (the model-based test compares its namespace with the server's). */
  onSession?(s: PgSession): void;
  /** Every open session of the agent (the drain on SIGTERM walks it); each leaves it as it closes. */
  sessions?: Set<PgSession>;
}

const PING_EVERY_MS = 20_000;

export function serveTunnel(ws: WebSocket, ctx: TunnelContext): TunnelMux {
  const log = ctx.log.child({ tunnel: randomUUID().slice(0, 8), sub: ctx.identity.sub, connection: ctx.connection.name });
  log.info('tunnel open', { clientAddr: ctx.clientAddr });
  // P11: the identity is fixed for the tunnel, so is its scope; each session checks statements against it.
  const scope = scopeFor(ctx.connection, ctx.identity);
  const mux: TunnelMux = new TunnelMux(ws, {
    maxStreams: ctx.maxStreams,
    onOpen(streamId, payload) {
      const open = decodeJson(OpenPayload, payload);
      const session: PgSession = new PgSession(
        {
          ...ctx.sessionDeps,
          policy: ctx.policy,
          masking: ctx.masking.enabled ? ctx.masking : undefined,
          scope: scope && new SessionScope(scope, ctx.masking),
          identity: ctx.identity,
          connection: ctx.connection,
          log,
        },
        {
          send: (data) => mux.send(streamId, data),
          close: (reason) => {
            ctx.sessions?.delete(session);
            mux.close(streamId, reason);
          },
          drained: () => mux.drained(streamId),
          event: (ev) => mux.event(streamId, ev),
        },
        { sessionId: randomUUID(), streamId, clientAddr: open.clientAddr ?? ctx.clientAddr, cliVersion: open.cliVersion },
      );
      ctx.onSession?.(session);
      ctx.sessions?.add(session);
      return session;
    },
    onProtocolError(err) {
      log.warn('tunnel protocol error', { error: err.message });
    },
  });

  // Liveness: a peer that stops answering pings is gone; its sessions are ended upstream.
  let alive = true;
  ws.on('pong', () => (alive = true));
  const timer = setInterval(() => {
    if (!alive) return ws.terminate();
    alive = false;
    ws.ping();
  }, PING_EVERY_MS);
  timer.unref();
  // Access lasts as long as the token: when it expires the tunnel closes (sessions end upstream) and the
  // CLI reconnects with a fresh token, which is verified again like the first one.
  const left = ctx.identity.expiresAt !== undefined ? ctx.identity.expiresAt - ctx.sessionDeps.clock() : undefined;
  const expiry = left !== undefined ? setTimeout(() => ws.close(4401, 'token expired'), Math.max(0, Math.min(left, 2 ** 31 - 1))) : undefined;
  expiry?.unref();
  ws.on('close', (code) => {
    clearInterval(timer);
    clearTimeout(expiry);
    log.info('tunnel closed', { code });
  });
  return mux;
}
