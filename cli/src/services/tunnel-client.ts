// The CLI end of the tunnel: one WebSocket per `hoopctl connect` process, kept open with reconnect and
// backoff, and a stream inside it for every local TCP connection. Services print nothing; they report
// state through callbacks and throw UserErrors the command turns into sentences.
//
// Renewal in place: before the token the tunnel runs on expires (a third of its life before, at most a
// minute), the client asks getToken() for a fresh one and sends it in a RENEW frame; the agent answers
// `token_renewed` with the new expiry, and the open streams (a long pg_dump, a psql session) go on. If no
// fresher token can be had the client retries until the deadline; after that the agent closes the tunnel
// and says why (an EVENT), and the reconnect loop takes over like after any drop.
import net from 'node:net';
import WebSocket from 'ws';
import { MAX_FRAME_BYTES, type TunnelEvent } from '../../../shared/tunnel/frame.js';
import { TunnelMux } from '../../../shared/tunnel/mux.js';
import type { ApiErrorBody } from '../../../shared/errors.js';
import { ExitCode, UserError } from '../errors.js';
import { CLI_VERSION } from '../version.js';
import { refuseLocalClient } from './local-refusal.js';
import { decodeClaims } from './oidc-client.js';

export type TunnelState =
  | { state: 'connecting'; attempt: number }
  | { state: 'connected' }
  | { state: 'disconnected'; error: UserError; retryInMs: number };

export interface TunnelClientOptions {
  agentUrl: string;
  connection: string;
  /** Called for every (re)connect and before the token expires, so a refreshed token is picked up. */
  getToken(): Promise<string> | string;
  /** The purpose of this tunnel (`--reason`), recorded in every session's audit and shown to approvers. */
  reason?: string;
  /** Wall clock, ms (tests). */
  now?: () => number;
  /** Allow ws:// to a host other than loopback (never needed in production). */
  allowInsecure?: boolean;
  /** CA certificate (PEM) to trust for the agent's TLS, in addition to the system store. */
  ca?: Buffer;
  onState?(s: TunnelState): void;
  onEvent?(e: TunnelEvent): void;
  /** How long a new local connection waits for the tunnel before it is refused. */
  waitForTunnelMs?: number;
}

const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 8000, 15000];
/** Renew this long before expiry at most (less for short-lived tokens: a third of their life). */
const RENEW_MARGIN_MS = 60_000;
/** After a failed attempt to get a fresher token, try again this soon (until the token expires). */
const RENEW_RETRY_MS = 2_000;
/** The header the stated purpose travels in (percent-encoded UTF-8), read by agent/src/identity/purpose.ts. */
export const REASON_HEADER = 'x-hoopctl-reason';

export class TunnelClient {
  private ws?: WebSocket;
  private mux?: TunnelMux;
  private nextStreamId = 1;
  private stopped = false;
  private attempt = 0;
  private retryTimer?: NodeJS.Timeout;
  private waiters: Array<() => void> = [];
  private readonly url: URL;
  private lastError?: UserError;
  private renewTimer?: NodeJS.Timeout;
  /** The expiry (ms) of the token the open tunnel runs on. */
  private tokenExpiresAt?: number;

  constructor(private readonly opts: TunnelClientOptions) {
    this.url = tunnelUrl(opts.agentUrl, opts.connection, opts.allowInsecure ?? false);
  }

  get endpoint(): string {
    return this.url.toString();
  }

  get connected(): boolean {
    return this.mux !== undefined;
  }

  /** Opens the tunnel. Rejects on errors a retry cannot fix (401, 403, 404, bad URL, TLS). */
  async start(): Promise<void> {
    try {
      await this.open();
    } catch (err) {
      this.lastError = err as UserError;
      throw err;
    }
  }

  /** Keeps the tunnel open: reconnects with backoff whenever it drops, until stop(). */
  keepAlive(): void {
    // If the first attempt already failed, its 'close' has fired: start retrying now.
    if (!this.ws || this.ws.readyState === WebSocket.CLOSED) return this.scheduleReconnect();
    this.ws.once('close', () => this.scheduleReconnect());
  }

  /** Attaches a local client socket as a new stream (or refuses it when the tunnel stays down). */
  async attach(socket: net.Socket): Promise<void> {
    socket.setNoDelay(true);
    socket.on('error', () => {});
    if (!this.mux) {
      this.reconnectNow();
      const up = await this.waitForTunnel(this.opts.waitForTunnelMs ?? 10_000);
      if (!up || socket.destroyed) {
        const why = this.lastError?.message ?? `the agent at ${this.endpoint} is not reachable`;
        return refuseLocalClient(socket, `hoopctl: ${why}; retrying in the background`);
      }
    }
    const mux = this.mux!;
    const id = this.nextStreamId++;
    mux.open(
      id,
      {
        write: (data) => writeCorked(socket, data),
        pause: () => socket.pause(),
        resume: () => socket.resume(),
        close: () => socket.end(),
      },
      { clientAddr: `${socket.remoteAddress}:${socket.remotePort}`, cliVersion: CLI_VERSION },
    );
    socket.on('data', (chunk: Buffer) => mux.send(id, chunk));
    socket.on('drain', () => mux.drained(id));
    socket.on('close', () => mux.close(id));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.renewTimer);
    const ws = this.ws;
    if (!ws || ws.readyState === ws.CLOSED) return;
    await new Promise<void>((resolve) => {
      ws.once('close', () => resolve());
      ws.close(1000, 'hoopctl connect stopping');
      setTimeout(() => {
        ws.terminate();
        resolve();
      }, 2000).unref();
    });
  }

  private async open(): Promise<void> {
    this.opts.onState?.({ state: 'connecting', attempt: this.attempt });
    const token = await this.opts.getToken();
    const headers: Record<string, string> = { authorization: `Bearer ${token}`, 'user-agent': `hoopctl/${CLI_VERSION}` };
    if (this.opts.reason) headers[REASON_HEADER] = encodeURIComponent(this.opts.reason);
    const ws = new WebSocket(this.url, {
      headers,
      perMessageDeflate: false,
      maxPayload: MAX_FRAME_BYTES,
      handshakeTimeout: 10_000,
      ca: this.opts.ca,
      // Certificates are always verified: there is no switch to turn that off (TLS downgrade defence).
      rejectUnauthorized: true,
    });
    this.ws = ws;
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d.length + body.length < 8192 ? d : ''));
        res.on('end', () => reject(refusalError(res.statusCode ?? 0, body, this.opts.connection)));
      });
      ws.once('error', (err) => reject(networkError(err, this.endpoint)));
    });
    ws.on('error', () => {}); // 'close' follows; reconnect handles it
    this.attempt = 0;
    this.lastError = undefined;
    this.mux = new TunnelMux(ws, {
      onEvent: (e) => {
        if (e.type === 'token_renewed') this.scheduleRenewal(Date.parse(String(e.data?.expiresAt)));
        this.opts.onEvent?.(e);
      },
    });
    ws.once('close', () => {
      this.mux = undefined;
      clearTimeout(this.renewTimer);
    });
    this.scheduleRenewal(expiryOf(token));
    this.opts.onState?.({ state: 'connected' });
    for (const w of this.waiters.splice(0)) w();
  }

  /** Arms the renewal of the tunnel's token, which expires at `expiresAt` (ms). */
  private scheduleRenewal(expiresAt: number | undefined): void {
    clearTimeout(this.renewTimer);
    if (expiresAt === undefined || !Number.isFinite(expiresAt)) return;
    this.tokenExpiresAt = expiresAt;
    const left = expiresAt - this.now();
    const inMs = Math.max(0, left - Math.min(RENEW_MARGIN_MS, left / 3));
    this.renewTimer = setTimeout(() => void this.renew(), Math.min(inMs, 2 ** 31 - 1));
    this.renewTimer.unref?.();
  }

  private async renew(): Promise<void> {
    const mux = this.mux;
    const current = this.tokenExpiresAt;
    if (!mux || this.stopped || current === undefined) return;
    let token: string | undefined;
    try {
      token = await this.opts.getToken();
    } catch {
      token = undefined; // the issuer is unreachable, or the login is gone: retry until the deadline
    }
    const next = token === undefined ? undefined : expiryOf(token);
    if (token !== undefined && next !== undefined && next > current) {
      if (this.mux === mux) mux.renew(token); // the agent answers token_renewed, which re-arms the timer
      return;
    }
    // No fresher token yet (still cached, or an explicit --token that cannot be renewed).
    if (this.now() + RENEW_RETRY_MS < current && this.mux === mux) {
      this.renewTimer = setTimeout(() => void this.renew(), RENEW_RETRY_MS);
      this.renewTimer.unref?.();
    }
  }

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  private scheduleReconnect(): void {
    if (this.stopped) return;
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)] * (0.8 + Math.random() * 0.4);
    this.attempt++;
    this.retryTimer = setTimeout(() => this.retry(delay), delay);
    this.retryTimer.unref?.();
  }

  private retry(delay: number): void {
    this.retryTimer = undefined;
    this.open().then(
      () => this.keepAlive(),
      (err: UserError) => {
        this.lastError = err;
        this.opts.onState?.({ state: 'disconnected', error: err, retryInMs: delay });
        this.scheduleReconnect();
      },
    );
  }

  /**
   * A local client is waiting while the tunnel is down between retries: try now instead of at the end
   * of the backoff (after an agent restart the next retry could be up to 15 s away). At most one
   * attempt runs at a time; a failed one resumes the backoff where it was.
   */
  private reconnectNow(): void {
    if (this.stopped || this.mux || this.retryTimer === undefined) return;
    clearTimeout(this.retryTimer);
    this.retry(0);
  }

  private waitForTunnel(ms: number): Promise<boolean> {
    if (this.mux) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        resolve(true);
      };
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve(false);
      }, ms);
      this.waiters.push(done);
    });
  }
}

/**
 * Writes a frame's bytes to the local client. One WebSocket read holds several frames of a stream (they
 * are 16 KiB): corked until the read is handled, they leave in one syscall instead of one each.
 */
function writeCorked(socket: net.Socket, data: Buffer): boolean {
  if (!socket.writableCorked) {
    socket.cork();
    process.nextTick(uncork, socket);
  }
  return socket.write(data);
}
const uncork = (socket: net.Socket) => socket.uncork();

/** `https://agent:8443` or `wss://agent:8443` + connection → `wss://agent:8443/tunnel/<connection>`. */
export function tunnelUrl(agentUrl: string, connection: string, allowInsecure: boolean): URL {
  let u: URL;
  try {
    u = new URL(agentUrl);
  } catch {
    throw new UserError('BAD_AGENT_URL', `not a URL: ${agentUrl}`, { hint: 'Use --agent wss://host:port', exitCode: ExitCode.Usage });
  }
  const scheme = { 'https:': 'wss:', 'wss:': 'wss:', 'http:': 'ws:', 'ws:': 'ws:' }[u.protocol];
  if (!scheme) throw new UserError('BAD_AGENT_URL', `unsupported scheme ${u.protocol} in ${agentUrl}`, { exitCode: ExitCode.Usage });
  const loopback = ['127.0.0.1', 'localhost', '[::1]', '::1'].includes(u.hostname);
  if (scheme === 'ws:' && !loopback && !allowInsecure) {
    throw new UserError('INSECURE_AGENT_URL', `refusing an unencrypted tunnel to ${u.host}: PHI would cross the network in clear`, {
      hint: 'Use wss:// (the agent serves TLS); ws:// is only for an agent on this machine.',
      exitCode: ExitCode.Usage,
    });
  }
  u.protocol = scheme;
  u.pathname = `${u.pathname.replace(/\/$/, '')}/tunnel/${encodeURIComponent(connection)}`;
  return u;
}

/** A JWT's `exp` in ms (unverified: only to know when to renew). */
function expiryOf(token: string): number | undefined {
  const exp = decodeClaims(token)?.exp;
  return typeof exp === 'number' ? exp * 1000 : undefined;
}

function refusalError(status: number, body: string, connection: string): UserError {
  let parsed: ApiErrorBody['error'] | undefined;
  try {
    parsed = (JSON.parse(body) as ApiErrorBody).error;
  } catch {
    /* not our agent, or a proxy page */
  }
  const message = parsed?.message ?? `the agent answered HTTP ${status}`;
  if (parsed?.code === 'REASON_REQUIRED' || parsed?.code === 'BAD_REASON') {
    return new UserError(parsed.code, message, {
      hint: parsed.code === 'REASON_REQUIRED' ? 'Pass --reason "why you need this data" (or set HOOPCTL_REASON), e.g. --reason "ticket OPS-123"' : parsed.hint,
      exitCode: ExitCode.Usage,
    });
  }
  if (parsed?.code === 'INSUFFICIENT_ASSURANCE') {
    return new UserError('INSUFFICIENT_ASSURANCE', message, {
      hint: 'Run `hoopctl login` again and complete multi-factor authentication.',
      exitCode: ExitCode.Forbidden,
    });
  }
  switch (status) {
    case 401:
      return new UserError('NOT_AUTHENTICATED', `the agent did not accept your token: ${message}`, {
        hint: 'Run `hoopctl login` (or set HOOPCTL_TOKEN in CI), then try again.',
        exitCode: ExitCode.NotAuthenticated,
      });
    case 403:
      return new UserError('FORBIDDEN', `not allowed to use ${connection}: ${message}`, {
        hint: parsed?.hint ?? 'Ask the connection owner to grant your identity access.',
        exitCode: ExitCode.Forbidden,
      });
    case 404:
      return new UserError('UNKNOWN_CONNECTION', message, {
        hint: 'Check the connection name; `hoopctl whoami` lists the ones you may use.',
        exitCode: ExitCode.Usage,
      });
    default:
      return new UserError('AGENT_REFUSED', `the agent refused the tunnel (HTTP ${status}): ${message}`, {
        hint: parsed?.hint,
        exitCode: ExitCode.Failure,
      });
  }
}

function networkError(err: Error & { code?: string }, endpoint: string): UserError {
  const tls = /certificate|self[- ]signed|SSL|TLS/i.test(err.message) || err.code?.startsWith('ERR_TLS') || err.code?.includes('CERT');
  if (tls) {
    return new UserError('TLS_FAILED', `could not verify the agent's TLS certificate at ${endpoint}: ${err.message}`, {
      hint: 'Pass the agent CA with --ca FILE if it uses a private CA. Verification is never turned off.',
      exitCode: ExitCode.Unreachable,
    });
  }
  return new UserError('AGENT_UNREACHABLE', `could not reach the agent at ${endpoint} (${err.code ?? err.message})`, {
    hint: 'Check --agent / HOOPCTL_AGENT and that hoop-agent is running.',
    exitCode: ExitCode.Unreachable,
  });
}
