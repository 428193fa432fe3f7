// The agent's HTTP surface: the tunnel upgrade (`GET /tunnel/<connection>`) and a health probe.
// Every refusal happens before the WebSocket upgrade, as a plain HTTP status with a JSON body the CLI
// turns into a sentence: 401 no or bad token, 403 identity not allowed here or a browser Origin,
// 404 unknown connection, 429 too many tunnels.
import http from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import { readFileSync } from 'node:fs';
import { WebSocketServer } from 'ws';
import { MAX_FRAME_BYTES } from '../../../shared/tunnel/frame.js';
import type { ApiErrorBody } from '../../../shared/errors.js';
import { WhoamiResponse } from '../../../shared/api/whoami.js';
import { scopeFor } from '../policy/scope.js';
import type { Logger } from '../log.js';
import type { ResolvedConfig } from '../config.js';
import { canUse, type Principal } from '../identity/access.js';
import { bearerFrom } from '../identity/verify.js';
import { ciPurpose, statedPurpose } from '../identity/purpose.js';

export interface Authenticator {
  verify(token: string): Promise<Principal>;
}

export interface HttpDeps {
  config: ResolvedConfig;
  auth: Authenticator;
  log: Logger;
  /** Called once a tunnel upgrade passed every check. */
  onTunnel(ws: import('ws').WebSocket, identity: Principal, connection: string, clientAddr: string, purpose?: string): void;
  maxTunnelsPerIdentity: number;
  /** The session history API (GET /api/sessions[/ID[/recording]]), already authenticated. */
  sessions?(who: Principal, query: URLSearchParams, id?: string, recording?: boolean): Promise<unknown>;
  /** The audit export (GET /api/audit/export), already authenticated; streamed as it is read. */
  auditExport?(who: Principal, query: URLSearchParams): Promise<ExportStream>;
  /** The approvals API (GET /api/approvals[/ID], POST /api/approvals/ID/approve|deny), already authenticated. */
  approvals?(who: Principal, req: http.IncomingMessage, id?: string, action?: string): Promise<unknown>;
  /** GET /api/audit/key (public), GET /api/audit/checkpoints and POST /api/audit/checkpoint (authenticated). */
  auditSigning?: {
    key(): unknown;
    call(who: Principal, method: string, what: 'checkpoint' | 'checkpoints'): Promise<unknown>;
    /** POST /api/evidence/sign|attest (authenticated). */
    evidence(who: Principal, req: http.IncomingMessage, what: 'sign' | 'attest'): Promise<unknown>;
  };
  /** GET /metrics on this listener, to reviewers' bearer tokens (absent when metrics.listen is set). */
  metrics?(): Promise<{ contentType: string; body: string }>;
  /** GET /readyz: 200 or 503; this listener answers only `{ready}` (the checks are on metrics.listen). */
  ready?(): Promise<{ ready: boolean }>;
  /** POST /api/tokens/revoke: revokes the caller's own (verified) token on every agent sharing the store. */
  revokeToken?(who: Principal): Promise<unknown>;
  /** True once the agent drains (SIGTERM): new tunnels are refused with 503 AGENT_DRAINING. */
  draining?(): boolean;
  /** Every refused upgrade, for the audit trail (never with the token). */
  onRefused?(r: HttpRefusal, clientAddr: string, connection?: string): void;
  /**
   * A worker process (config `workers`): every request but /healthz and the tunnel upgrade goes to the
   * agent primary, which serves the API over the one state store (cluster/forward.ts).
   */
  forward?(req: http.IncomingMessage, res: http.ServerResponse): void;
}

/** A streamed response body (the audit export). */
export interface ExportStream {
  contentType: string;
  body: AsyncIterable<string>;
}

export class HttpRefusal extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly hint?: string,
  ) {
    super(message);
  }
}

const DRAINING = new HttpRefusal(503, 'AGENT_DRAINING', 'the agent is shutting down and accepts no new tunnels', 'Retry shortly: another agent, or this one once restarted, will take it.');

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 429: 'Too Many Requests', 503: 'Service Unavailable',
};

export function createHttpServer(deps: HttpDeps): http.Server {
  const { config, log } = deps;
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: MAX_FRAME_BYTES });
  const tunnelsBySub = new Map<string, number>();

  const handler: http.RequestListener = (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, body: unknown) =>
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(body));
    if (req.method === 'GET' && path === '/healthz') return send(200, { ok: true });
    if (deps.forward) return deps.forward(req, res);
    if (req.method === 'GET' && path === '/readyz' && deps.ready) return void deps.ready().then((r) => send(r.ready ? 200 : 503, { ready: r.ready }));
    if (req.method === 'GET' && path === '/metrics' && deps.metrics) {
      const metrics = deps.metrics;
      authenticate(req)
        .then((who) => {
          if (!who.groups.some((g) => config.reviewers.groups.includes(g))) {
            throw new HttpRefusal(403, 'NOT_A_REVIEWER', 'metrics are for reviewers (config reviewers.groups)', 'Or serve them on their own address: metrics.listen.');
          }
          return metrics();
        })
        .then(
          (m) => res.writeHead(200, { 'content-type': m.contentType, 'cache-control': 'no-store' }).end(m.body),
          (err: unknown) =>
            err instanceof HttpRefusal
              ? send(err.status, { error: { code: err.code, message: err.message, hint: err.hint } } satisfies ApiErrorBody)
              : send(500, { error: { code: 'INTERNAL', message: 'metrics unavailable' } } satisfies ApiErrorBody),
        );
      return;
    }
    const m = /^\/api\/sessions(?:\/([A-Za-z0-9_.-]{1,128})(\/recording)?)?$/.exec(path);
    if (req.method === 'GET' && m && deps.sessions) {
      const api = deps.sessions;
      authenticate(req).then(
        (who) => api(who, new URL(req.url ?? '/', 'http://agent').searchParams, m[1], Boolean(m[2])).then(
          (body) => send(200, body),
          (err: unknown) =>
            err instanceof HttpRefusal
              ? send(err.status, { error: { code: err.code, message: err.message, hint: err.hint } } satisfies ApiErrorBody)
              : send(400, { error: { code: 'BAD_REQUEST', message: (err as Error).message } } satisfies ApiErrorBody),
        ),
        (err: HttpRefusal) => send(err.status, { error: { code: err.code, message: err.message, hint: err.hint } } satisfies ApiErrorBody),
      );
      return;
    }
    if (req.method === 'GET' && path === '/api/audit/export' && deps.auditExport) {
      const api = deps.auditExport;
      authenticate(req)
        .then((who) => api(who, new URL(req.url ?? '/', 'http://agent').searchParams))
        .then(
          (out) => streamBody(res, out, log),
          (err: unknown) =>
            err instanceof HttpRefusal
              ? send(err.status, { error: { code: err.code, message: err.message, hint: err.hint } } satisfies ApiErrorBody)
              : send(400, { error: { code: 'BAD_REQUEST', message: (err as Error).message } } satisfies ApiErrorBody),
        );
      return;
    }
    const cm = /^\/api\/audit\/(key|checkpoints?)$/.exec(path);
    if (cm && deps.auditSigning) {
      const api = deps.auditSigning;
      const refuse = (err: HttpRefusal) => send(err.status, { error: { code: err.code, message: err.message, hint: err.hint } } satisfies ApiErrorBody);
      if (cm[1] === 'key') return req.method === 'GET' ? send(200, api.key()) : refuse(new HttpRefusal(404, 'NOT_FOUND', `no such endpoint: ${req.method} ${path}`));
      authenticate(req).then((who) => api.call(who, req.method ?? 'GET', cm[1] as 'checkpoint' | 'checkpoints').then((body) => send(200, body), refuse), refuse);
      return;
    }
    const em = /^\/api\/evidence\/(sign|attest)$/.exec(path);
    if (em && req.method === 'POST' && deps.auditSigning) {
      const api = deps.auditSigning;
      const refuse = (err: HttpRefusal) => send(err.status, { error: { code: err.code, message: err.message, hint: err.hint } } satisfies ApiErrorBody);
      authenticate(req).then((who) => api.evidence(who, req, em[1] as 'sign' | 'attest').then((body) => send(200, body), refuse), refuse);
      return;
    }
    const am = /^\/api\/approvals(?:\/([A-Za-z0-9_-]{1,64})(?:\/([a-z]{1,16}))?)?$/.exec(path);
    if (am && deps.approvals) {
      const api = deps.approvals;
      const refuse = (err: HttpRefusal) => send(err.status, { error: { code: err.code, message: err.message, hint: err.hint } } satisfies ApiErrorBody);
      authenticate(req).then((who) => api(who, req, am[1], am[2]).then((body) => send(200, body), refuse), refuse);
      return;
    }
    if (path === '/api/tokens/revoke' && deps.revokeToken) {
      // The token revokes itself: only its holder can, and nothing else is needed (no body, no admin).
      const api = deps.revokeToken;
      const refuse = (err: HttpRefusal) => send(err.status, { error: { code: err.code, message: err.message, hint: err.hint } } satisfies ApiErrorBody);
      if (req.method !== 'POST') return refuse(new HttpRefusal(405, 'METHOD_NOT_ALLOWED', `${(req.method ?? '').slice(0, 10)} is not allowed here; use POST`));
      authenticate(req).then(
        (who) => api(who).then((body) => send(200, body), () => refuse(new HttpRefusal(503, 'REVOCATION_UNAVAILABLE', 'the revocation could not be stored', 'Try again shortly; until then the token stays valid until it expires.'))),
        refuse,
      );
      return;
    }
    if (req.method === 'GET' && path === '/api/whoami') {
      // Who the agent takes the caller for, and which connections that identity may use.
      authenticate(req).then(
        (who) =>
          send(200, WhoamiResponse.parse({
            identity: { sub: who.sub, email: who.email, groups: who.groups, issuer: who.issuer },
            connections: [...config.connections].map(([name, conn]) => {
              const a = canUse(conn, name, who);
              if (!a.allowed) return { name, allowed: false, reason: a.reason };
              const scope = scopeFor(conn, who);
              return { name, allowed: true, ...(scope ? { scope: { name: scope.name, ...scope.config } } : {}) };
            }),
          })),
        (err: HttpRefusal) => send(err.status, { error: { code: err.code, message: err.message, hint: err.hint } } satisfies ApiErrorBody),
      );
      return;
    }
    send(404, { error: { code: 'NOT_FOUND', message: `no such endpoint: ${req.method} ${path}` } } satisfies ApiErrorBody);
  };
  const server = config.tls
    ? https.createServer({ cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) }, handler)
    : http.createServer(handler);
  server.headersTimeout = 10_000;
  server.requestTimeout = 15_000;

  // Connections that have not sent a complete request yet, per client address, oldest first. A flood of
  // idle or dripping connections (slowloris) from one address evicts its own oldest ones instead of
  // starving everyone: a real client's request completes at once and leaves this set.
  const incomplete = new Map<string, Set<import('node:net').Socket>>();
  const MAX_INCOMPLETE_PER_ADDRESS = 128;
  server.on('connection', (sock: import('node:net').Socket) => {
    const addr = sock.remoteAddress ?? '';
    let set = incomplete.get(addr);
    if (!set) incomplete.set(addr, (set = new Set()));
    set.add(sock);
    if (set.size > MAX_INCOMPLETE_PER_ADDRESS) {
      const oldest = set.values().next().value!;
      set.delete(oldest);
      oldest.destroy();
    }
    sock.once('close', () => {
      set.delete(sock);
      if (set.size === 0 && incomplete.get(addr) === set) incomplete.delete(addr);
    });
  });
  const completed = (req: http.IncomingMessage) => incomplete.get(req.socket.remoteAddress ?? '')?.delete(req.socket as import('node:net').Socket);
  server.on('request', completed);

  // Upgrades still being checked (token verification may wait on the issuer): bounded, so a flood of
  // unauthenticated attempts cannot pile up work or memory.
  let checking = 0;
  const MAX_CHECKING = 256;
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    completed(req);
    socket.on('error', () => {});
    if (deps.draining?.()) return refuse(socket, DRAINING);
    if (checking >= MAX_CHECKING) return refuse(socket, new HttpRefusal(503, 'BUSY', 'too many connection attempts in progress; retry shortly'));
    checking++;
    authorizeUpgrade(req)
      .finally(() => checking--)
      .then(
      ({ identity, connection, purpose }) => {
        const owner = `${identity.issuer} ${identity.sub}`;
        const open = tunnelsBySub.get(owner) ?? 0;
        if (open >= deps.maxTunnelsPerIdentity) {
          return refuse(socket, new HttpRefusal(429, 'TOO_MANY_TUNNELS', `identity ${identity.sub} already has ${open} open tunnels`));
        }
        (req.socket as import('node:net').Socket).setNoDelay(true);
        wss.handleUpgrade(req, socket, head, (ws) => {
          tunnelsBySub.set(owner, (tunnelsBySub.get(owner) ?? 0) + 1);
          ws.on('close', () => {
            const n = (tunnelsBySub.get(owner) ?? 1) - 1;
            if (n <= 0) tunnelsBySub.delete(owner);
            else tunnelsBySub.set(owner, n);
          });
          deps.onTunnel(ws, identity, connection, req.socket.remoteAddress ?? '', purpose);
        });
      },
      (err) => {
        const refusal =
          err instanceof HttpRefusal ? err : new HttpRefusal(500, 'INTERNAL', 'internal error while checking the request');
        log.info('tunnel refused', { status: refusal.status, code: refusal.code, reason: refusal.message, addr: req.socket.remoteAddress });
        deps.onRefused?.(refusal, req.socket.remoteAddress ?? '', /^\/tunnel\/([^/?]+)/.exec(req.url ?? '')?.[1]);
        refuse(socket, refusal);
      },
    );
  });

  /** Checks, in order: path, Origin, token, connection, access, purpose. Never echoes the token. */
  async function authorizeUpgrade(req: http.IncomingMessage): Promise<{ identity: Principal; connection: string; purpose?: string }> {
    const url = new URL(req.url ?? '/', 'http://agent');
    const m = /^\/tunnel\/([a-z0-9][a-z0-9_-]{0,62})$/.exec(url.pathname);
    if (!m) throw new HttpRefusal(404, 'NOT_FOUND', `no tunnel endpoint at ${url.pathname}`);
    if (url.searchParams.has('token') || url.searchParams.has('access_token')) {
      // Tokens in URLs end up in logs and browser history; refuse rather than ignore so the caller learns.
      throw new HttpRefusal(400, 'TOKEN_IN_URL', 'tokens are accepted only in the Authorization header');
    }
    const origin = req.headers.origin;
    if (origin !== undefined && !config.allowedOrigins.includes(origin)) {
      // Browsers attach ambient credentials and an Origin; the CLI sends no Origin (CSWSH defence).
      throw new HttpRefusal(403, 'ORIGIN_NOT_ALLOWED', `requests from origin ${origin.slice(0, 100)} are not allowed`);
    }
    const identity = await authenticate(req);
    const connection = m[1];
    const conn = config.connections.get(connection);
    if (!conn) throw new HttpRefusal(404, 'UNKNOWN_CONNECTION', `the agent has no connection named ${connection}`);
    const access = canUse(conn, connection, identity);
    if (!access.allowed) throw new HttpRefusal(403, 'ACCESS_DENIED', access.reason, access.hint ?? 'Ask the connection owner to add you to its access rules.');
    let purpose: string | undefined;
    try {
      purpose = statedPurpose(req.headers) ?? ciPurpose(identity.claims);
    } catch (err) {
      throw new HttpRefusal(400, 'BAD_REASON', (err as Error).message, 'Pass a short one-line --reason.');
    }
    if (conn.requireReason && !purpose) {
      throw new HttpRefusal(400, 'REASON_REQUIRED', `connection ${connection} requires every session to state its purpose`, 'Pass --reason "why you need this data" (or set HOOPCTL_REASON), e.g. --reason "ticket OPS-123: fix visit dates".');
    }
    log.info('tunnel accepted', { sub: identity.sub, issuer: identity.issuer, connection });
    return { identity, connection, purpose };
  }

  /** The bearer token of a request, verified; a 401 HttpRefusal otherwise. Only the header counts. */
  async function authenticate(req: http.IncomingMessage): Promise<Principal> {
    const token = bearerFrom(req.headers);
    if (!token) throw new HttpRefusal(401, 'NO_TOKEN', 'no bearer token in the Authorization header', 'Run `hoopctl login` first.');
    try {
      return await deps.auth.verify(token);
    } catch (err) {
      const e = err as { status?: number; code?: string; message: string };
      throw new HttpRefusal(e.status ?? 401, e.code ?? 'TOKEN_INVALID', e.message, 'Run `hoopctl login` to get a fresh token.');
    }
  }

  return server;
}

/**
 * Streams a body in chunks of about 64 KiB, waiting for `drain` (a slow reader never makes the agent
 * buffer the whole trail). A failure after the headers aborts the response, so the client sees a
 * truncated transfer, never a short file that looks complete.
 */
async function streamBody(res: http.ServerResponse, out: ExportStream, log: Logger): Promise<void> {
  res.writeHead(200, { 'content-type': out.contentType, 'cache-control': 'no-store' });
  let chunk = '';
  try {
    for await (const part of out.body) {
      if (res.destroyed) return;
      chunk += part;
      if (chunk.length < 65_536) continue;
      const ok = res.write(chunk);
      chunk = '';
      if (!ok) await drained(res);
    }
    res.end(chunk);
  } catch (err) {
    log.error('audit export failed', { error: (err as Error).message });
    res.destroy(err as Error);
  }
}

function drained(res: http.ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done).off('close', done);
      resolve();
    };
    res.on('drain', done).on('close', done);
  });
}

function refuse(socket: Duplex, r: HttpRefusal): void {
  if (socket.destroyed) return;
  const body = JSON.stringify({ error: { code: r.code, message: r.message, hint: r.hint } } satisfies ApiErrorBody);
  const extra = r.status === 401 ? 'WWW-Authenticate: Bearer\r\n' : '';
  socket.end(
    `HTTP/1.1 ${r.status} ${STATUS_TEXT[r.status] ?? 'Error'}\r\nContent-Type: application/json\r\n${extra}` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
