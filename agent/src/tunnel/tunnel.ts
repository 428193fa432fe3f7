// One authenticated WebSocket from one `hoopctl connect` process. Every stream it opens becomes a Postgres
// session bound to the identity and connection that were checked at the upgrade: a stream id means
// nothing outside its own socket, so no other tunnel can attach to it.
//
// Access lasts as long as the token, and the token can be renewed in place: before it expires the CLI
// sends a RENEW frame with a fresh one, which is verified like the first (signature, issuer, lifetime,
// revocation, access rules) and must name the same issuer and subject; the tunnel's deadline then moves
// to the new token's expiry and its streams never notice. A renewal that fails, a token that expires,
// or a revoked one closes the tunnel (4401) after an EVENT that says why.
import { randomUUID } from 'node:crypto';
import type WebSocket from 'ws';
import { OpenPayload, decodeJson } from '../../../shared/tunnel/frame.js';
import { TunnelMux, type StreamEnd } from '../../../shared/tunnel/mux.js';
import { StartupRefusal, fatalErrorResponse } from '../../../shared/pgwire/startup-refusal.js';
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
  /** The purpose stated at the upgrade (or built from CI claims); recorded in every session_start. */
  purpose?: string;
  log: Logger;
  /** Everything a session needs except the identity and connection, which come from the upgrade. */
  sessionDeps: Omit<SessionDeps, 'identity' | 'connection' | 'log' | 'policy' | 'masking' | 'scope'>;
  /** The connection's masking (rules, catalog); each session gets its own result tracking. */
  masking: ConnectionMasking;
  /** The connection's policy; each session gets its own state (prepared statements, portals). */
  policy: PolicyEngine;
  /** Concurrent sessions one tunnel may hold (config `maxSessionsPerTunnel`); more are refused with 53300. */
  maxStreams: number;
  /** Test hook: each session as it is created (the model-based test compares its namespace with the server's). */
  onSession?(s: PgSession): void;
  /** Every open session of the agent (the drain on SIGTERM walks it); each leaves it as it closes. */
  sessions?: Set<PgSession>;
  /** Verifies a renewed token for this connection (token, revocation, access rules); throws with the reason. */
  renew?(token: string): Promise<Principal>;
  /** The identity the tunnel now runs as: at open and after each renewal (revocation matches on it). */
  onIdentity?(who: Principal): void;
}

/** WebSocket close code for "your token no longer holds" (expired, revoked, renewal refused). */
export const CLOSE_TOKEN = 4401;

const PING_EVERY_MS = 20_000;
/** Refused streams still answering their client (a few ms each) that may be open beside the sessions. */
const REFUSALS_IN_FLIGHT = 256;
/** A refused client that never sends its startup packet is dropped after this long. */
const REFUSAL_TIMEOUT_MS = 5000;

export function serveTunnel(ws: WebSocket, ctx: TunnelContext): TunnelMux {
  const log = ctx.log.child({ tunnel: randomUUID().slice(0, 8), sub: ctx.identity.sub, connection: ctx.connection.name });
  log.info('tunnel open', { clientAddr: ctx.clientAddr });
  let identity = ctx.identity;
  ctx.onIdentity?.(identity);
  const sessionScope = (who: Principal): SessionScope | undefined => {
    const scope = scopeFor(ctx.connection, who);
    return scope && new SessionScope(scope, ctx.masking);
  };
  // One renewal at a time; RENEWs arriving meanwhile keep only the latest token (bounded, whatever the peer sends).
  let renewing = false;
  let nextToken: string | undefined;
  let refusing = 0;
  const mux: TunnelMux = new TunnelMux(ws, {
    // Beyond this the mux closes streams bare: only a CLI opening refused streams in a loop gets there.
    maxStreams: ctx.maxStreams + REFUSALS_IN_FLIGHT,
    onRenew({ token }) {
      nextToken = token;
      if (renewing) return;
      renewing = true;
      const take = (): string | undefined => {
        const t = nextToken;
        nextToken = undefined;
        return t;
      };
      void (async () => {
        for (let t = take(); t !== undefined; t = take()) await renew(t);
        renewing = false;
      })();
    },
    onOpen(streamId, payload) {
      const open = decodeJson(OpenPayload, payload);
      if (mux.size - refusing >= ctx.maxStreams) {
        refusing++;
        return refuseSession(mux, streamId, ctx.maxStreams, log, open.clientAddr ?? ctx.clientAddr, () => refusing--);
      }
      const session: PgSession = new PgSession(
        {
          ...ctx.sessionDeps,
          policy: ctx.policy,
          masking: ctx.masking.enabled ? ctx.masking : undefined,
          // P11: the scope of the identity as it is when the session opens (a renewal may bring new claims)
          scope: sessionScope(identity),
          identity,
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
        { sessionId: randomUUID(), streamId, clientAddr: open.clientAddr ?? ctx.clientAddr, cliVersion: open.cliVersion, purpose: ctx.purpose },
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
  // Access lasts as long as the token: when it expires unrenewed the tunnel closes (sessions end upstream)
  // and the CLI reconnects with a fresh token, which is verified again like the first one.
  let expiry: NodeJS.Timeout | undefined;
  const arm = (expiresAt: number | undefined) => {
    clearTimeout(expiry);
    if (expiresAt === undefined) return;
    const left = expiresAt - ctx.sessionDeps.clock();
    expiry = setTimeout(
      () => endTunnel('token_expired', 'token expired', `hoopctl: the tunnel's token expired at ${new Date(expiresAt).toISOString()} without being renewed; the tunnel is closed. Run \`hoopctl login\`, then reconnect.`),
      Math.max(0, Math.min(left, 2 ** 31 - 1)),
    );
    expiry.unref();
  };
  const endTunnel = (type: string, closeReason: string, message: string) => {
    log.info('tunnel closed by the agent', { why: closeReason });
    mux.event(0, { type, message });
    ws.close(CLOSE_TOKEN, closeReason);
  };
  async function renew(token: string): Promise<void> {
    if (ws.readyState !== ws.OPEN) return;
    try {
      if (!ctx.renew) throw new Error('this agent does not renew tunnels');
      const next = await ctx.renew(token);
      // The same person or job, from the same issuer: a renewal never changes who the tunnel speaks for.
      if (next.issuer !== identity.issuer || next.sub !== identity.sub) {
        throw new Error(`the new token is for ${next.sub} (issuer ${next.issuer}), not ${identity.sub} (issuer ${identity.issuer})`);
      }
      if (ws.readyState !== ws.OPEN) return;
      identity = next;
      arm(next.expiresAt);
      ctx.onIdentity?.(next);
      log.info('tunnel token renewed', { expiresAt: next.expiresAt });
      mux.event(0, { type: 'token_renewed', data: { expiresAt: next.expiresAt === undefined ? undefined : new Date(next.expiresAt).toISOString() } });
    } catch (err) {
      const why = (err as Error).message.replace(/\s+/g, ' ').trim().slice(0, 600);
      endTunnel('token_renewal_failed', 'token renewal failed', `hoopctl: the tunnel's token could not be renewed: ${/[.!?]$/.test(why) ? why : `${why}.`} The tunnel is closed.`);
    }
  }
  arm(identity.expiresAt);
  ws.on('close', (code) => {
    clearInterval(timer);
    clearTimeout(expiry);
    log.info('tunnel closed', { code });
  });
  return mux;
}

/**
 * The tunnel holds its limit of sessions: this stream gets no session and no upstream connection, only
 * a FATAL 53300 its client prints, and the person running `hoopctl connect` is told why.
 */
function refuseSession(mux: TunnelMux, streamId: number, limit: number, log: Logger, clientAddr: string, done: () => void): StreamEnd {
  const message =
    `hoopctl: this tunnel already holds ${limit} sessions, its limit (maxSessionsPerTunnel in the agent's config); ` +
    'close idle connections, or run another `hoopctl connect`, or ask the agent operator to raise the limit';
  log.warn('session refused: tunnel session limit reached', { streamId, limit, clientAddr });
  mux.event(streamId, { type: 'session-refused', streamId, message, data: { limit, sqlstate: '53300' } });
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    clearTimeout(timer);
    done();
  };
  const refusal = new StartupRefusal(
    fatalErrorResponse('53300', message),
    (b) => mux.send(streamId, b),
    (error) => {
      mux.send(streamId, error);
      mux.close(streamId, 'session limit reached');
      end();
    },
  );
  const timer = setTimeout(() => refusal.end(), REFUSAL_TIMEOUT_MS);
  timer.unref();
  return {
    write: (data) => (refusal.feed(data), true),
    pause() {},
    resume() {},
    close: end,
  };
}
