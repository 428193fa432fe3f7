// The agent's own connection to PostgreSQL, opened with the connection's stored credential.
//
//   agent                                   PostgreSQL
//     │── TCP connect (noDelay) ─────────────────▶│
//     │── SSLRequest ────────────────────────────▶│   unless sslmode=disable
//     │◀─────────────────────────────── 'S' | 'N' │   'N' with require/verify-full → refuse
//     │══ TLS handshake (verify-full: CA + name) ═│
//     │── StartupMessage 3.0 ────────────────────▶│   user, database, client_encoding=UTF8, params
//     │◀──── Authentication (SASL | MD5 | clear) ─│
//     │── SASLInitialResponse / PasswordMessage ─▶│   SCRAM-SHA-256: server signature verified
//     │◀──────────── AuthenticationOk, ParameterStatus*, BackendKeyData, ReadyForQuery
//
// The socket is handed over paused at the first ReadyForQuery, with any bytes read past it in
// `leftover`. The caller attaches its 'data' listener, then calls `socket.resume()`.
// @see https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-START-UP
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import tls from 'node:tls';
import {
  BackendFramer,
  parseAuthentication,
  parseBackendKeyData,
  parseErrorFields,
  parseParameterStatus,
} from '../pgwire/backend.js';
import { Backend } from '../pgwire/codes.js';
import {
  passwordMessage,
  saslInitialResponse,
  saslResponse,
  serializeCancel,
  serializeStartup,
  SSL_REQUEST,
} from '../pgwire/frontend.js';
import { fromPgError, toUpstreamError, UpstreamError } from './errors.js';
import { SCRAM_SHA_256, ScramClient, ScramKeyCache } from './scram.js';

export type SslMode = 'disable' | 'require' | 'verify-full';

/** Where and how to reach the server (shared by connect and cancel). */
export interface UpstreamTarget {
  host: string;
  port: number;
  /** require: encrypt, do not verify. verify-full: CA chain and host name verified. */
  sslmode: SslMode;
  /** PEM file with the CA(s) to trust instead of the system store. */
  sslrootcert?: string;
  /** Whole-connection deadline (TCP, TLS, authentication). Default 10 s. */
  connectTimeoutMs?: number;
}

export interface UpstreamOptions extends UpstreamTarget {
  database: string;
  user: string;
  password: string;
  /** Extra startup parameters (e.g. application_name, default_transaction_read_only). */
  params?: Record<string, string>;
  /** SCRAM keys derived once per role secret and reused (the agent's); absent: derived per connection, as libpq does. */
  scramKeys?: ScramKeyCache;
}

export interface UpstreamConnection {
  /** Paused; attach a 'data' listener, then `resume()`. */
  socket: net.Socket | tls.TLSSocket;
  tls: boolean;
  parameters: Map<string, string>;
  backendKey: { pid: number; secret: Buffer };
  serverVersion: string;
  /** Bytes read after the first ReadyForQuery; normally empty. */
  leftover: Buffer;
}

const DEFAULT_TIMEOUT_MS = 10_000;

/** The agent's SCRAM keys, shared by every connection it opens (a session no longer pays PBKDF2). */
export const SHARED_SCRAM_KEYS = new ScramKeyCache();

/** Opens, authenticates and returns a ready upstream connection, or rejects with UpstreamError. */
export function connectUpstream(opts: UpstreamOptions): Promise<UpstreamConnection> {
  return withTransport(opts, (socket, secure) => startup(socket, secure, opts));
}

/**
 * Sends a CancelRequest on a fresh connection and waits for the server to close it. PostgreSQL
 * never answers a cancel, so success only means "delivered".
 * @see https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-CANCELING-REQUESTS
 */
export function sendCancelRequest(target: UpstreamTarget, pid: number, secret: Buffer): Promise<void> {
  return withTransport(target, (socket) => {
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.resume(); // drain (nothing is expected) so 'end' and 'close' fire
    socket.end(serializeCancel(pid, secret));
    return closed;
  });
}

/**
 * TCP connect, then TLS per sslmode, then `run`; one deadline covers all of it. On failure every
 * socket is destroyed and the error mapped to UpstreamError.
 */
async function withTransport<T>(t: UpstreamTarget, run: (s: net.Socket, secure: boolean) => Promise<T>): Promise<T> {
  const where = `${t.host}:${t.port}`;
  const ms = t.connectTimeoutMs ?? DEFAULT_TIMEOUT_MS;
  let ca: Buffer | undefined;
  if (t.sslrootcert) {
    try {
      ca = await readFile(t.sslrootcert);
    } catch (e) {
      throw new UpstreamError('08001', `cannot read sslrootcert ${t.sslrootcert}`, 'check the path and file permissions', undefined, { cause: e });
    }
  }
  const tcp = net.connect({ host: t.host, port: t.port, noDelay: true });
  let sock: net.Socket = tcp;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    sock.destroy();
    tcp.destroy();
  }, ms);
  try {
    await new Promise<void>((resolve, reject) => {
      tcp.once('connect', resolve).once('error', reject).once('close', () => reject(new Error('socket closed')));
    });
    tcp.removeAllListeners('error').removeAllListeners('close');
    if (t.sslmode !== 'disable') sock = await startTls(tcp, t, where, ca);
    return await run(sock, t.sslmode !== 'disable');
  } catch (e) {
    sock.destroy();
    tcp.destroy();
    if (timedOut) {
      throw new UpstreamError('08001', `timed out after ${ms} ms connecting to ${where}`, 'check that the host is reachable and PostgreSQL accepts connections (firewall, listen_addresses)');
    }
    throw toUpstreamError(e, where);
  } finally {
    clearTimeout(timer);
  }
}

/** SSLRequest, then the TLS handshake on the same socket. */
async function startTls(tcp: net.Socket, t: UpstreamTarget, where: string, ca: Buffer | undefined): Promise<tls.TLSSocket> {
  tcp.write(SSL_REQUEST);
  const answer = await new Promise<Buffer>((resolve, reject) => {
    tcp.once('data', (chunk: Buffer) => {
      tcp.pause();
      resolve(chunk);
    });
    tcp.once('error', reject).once('close', () => reject(new Error('closed during SSL negotiation')));
  });
  tcp.removeAllListeners('data').removeAllListeners('error').removeAllListeners('close');
  // From here the TLS socket reports failures; the raw socket's own 'error' must not crash us.
  tcp.on('error', () => {});
  if (answer[0] === 0x4e /* N */) {
    throw new UpstreamError('08001', `${where} does not support SSL (sslmode=${t.sslmode})`, 'enable ssl on the server, or set sslmode: disable only on a trusted network');
  }
  // Bytes after 'S' were sent before encryption began: a man in the middle could have injected
  // them (CVE-2021-23222), so they are refused rather than read as TLS data.
  if (answer[0] !== 0x53 /* S */ || answer.length !== 1) {
    throw new UpstreamError('08P01', `unexpected answer to SSLRequest from ${where}`, 'is this a PostgreSQL server?');
  }
  const verify = t.sslmode === 'verify-full';
  const secure = tls.connect({
    socket: tcp,
    host: t.host,
    // RFC 6066 forbids IP addresses in SNI; the certificate is still checked against the IP.
    servername: net.isIP(t.host) ? undefined : t.host,
    ca,
    rejectUnauthorized: verify,
  });
  await new Promise<void>((resolve, reject) => {
    secure.once('secureConnect', resolve).once('error', reject).once('close', () => reject(new Error('closed during TLS handshake')));
  });
  secure.removeAllListeners('error').removeAllListeners('close');
  return secure;
}

/** Yields backend messages from a socket in order, for the async startup exchange. */
class MessageStream {
  private readonly framer = new BackendFramer({ maxMessageBytes: 1 << 20 });
  private readonly queue: Buffer[] = [];
  private head = 0;
  private failure: Error | null = null;
  private wake: (() => void) | null = null;

  constructor(private readonly socket: net.Socket) {
    socket.on('data', this.onData).on('error', this.onError).on('close', this.onClose);
  }

  private readonly onData = (chunk: Buffer): void => {
    try {
      const n = this.framer.push(chunk);
      for (let i = 0; i < n; i++) this.queue.push(this.framer.message(i));
    } catch (e) {
      this.failure = e as Error;
    }
    this.wake?.();
  };

  private readonly onError = (e: Error): void => {
    this.failure ??= e;
    this.wake?.();
  };

  private readonly onClose = (): void => {
    this.failure ??= new UpstreamError('08006', 'server closed the connection during startup', 'check the server log');
    this.wake?.();
  };

  /** Next whole message (header included). */
  async next(): Promise<Buffer> {
    while (this.head === this.queue.length) {
      if (this.failure) throw this.failure;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = null;
    }
    return this.queue[this.head++];
  }

  /** Stops reading (socket paused) and returns the bytes not consumed yet. */
  detach(): Buffer {
    this.socket.pause();
    this.socket.off('data', this.onData).off('error', this.onError).off('close', this.onClose);
    const rest = this.queue.slice(this.head);
    rest.push(this.framer.remainder(this.framer.count));
    return Buffer.concat(rest);
  }
}

const md5 = (s: string | Buffer): string => createHash('md5').update(s).digest('hex');

/** StartupMessage, authentication, then ParameterStatus/BackendKeyData up to ReadyForQuery. */
async function startup(socket: net.Socket, secure: boolean, opts: UpstreamOptions): Promise<UpstreamConnection> {
  // Pinned values last, so `params` cannot override who we are or the encoding the parser assumes.
  socket.write(serializeStartup({ ...opts.params, user: opts.user, database: opts.database, client_encoding: 'UTF8' }));
  const messages = new MessageStream(socket);
  const parameters = new Map<string, string>();
  let backendKey: { pid: number; secret: Buffer } | undefined;
  let scram: ScramClient | undefined;
  let authenticated = false;
  try {
    for (;;) {
      const msg = await messages.next();
      const body = msg.subarray(5);
      switch (msg[0]) {
        case Backend.Authentication: {
          if (authenticated) throw new UpstreamError('08P01', 'server sent Authentication twice');
          const a = parseAuthentication(body);
          switch (a.kind) {
            case 'Ok':
              // A server that skips SCRAM's last step has not proven it knows the password.
              if (scram && !scram.verified) throw new UpstreamError('28000', 'server ended SCRAM without proving its identity', 'is this the expected server?');
              authenticated = true;
              break;
            case 'SASL':
              if (scram || !a.mechanisms.includes(SCRAM_SHA_256)) {
                throw new UpstreamError('28000', `unsupported SASL mechanisms: ${a.mechanisms.join(', ')}`, 'configure scram-sha-256 for this user in pg_hba.conf');
              }
              scram = new ScramClient(opts.password, opts.scramKeys);
              socket.write(saslInitialResponse(SCRAM_SHA_256, scram.first()));
              break;
            case 'SASLContinue':
              if (!scram) throw new UpstreamError('08P01', 'SASLContinue without SASL');
              socket.write(saslResponse(await scram.final(a.data)));
              break;
            case 'SASLFinal':
              if (!scram) throw new UpstreamError('08P01', 'SASLFinal without SASL');
              scram.verify(a.data);
              break;
            case 'MD5Password': {
              // md5(md5(password + user) + salt), as hex, prefixed "md5".
              const inner = md5(opts.password + opts.user);
              socket.write(passwordMessage('md5' + md5(Buffer.concat([Buffer.from(inner), a.salt]))));
              break;
            }
            case 'CleartextPassword':
              // Never send the stored password in clear over an unencrypted connection.
              if (!secure) {
                throw new UpstreamError('28000', 'server asked for a cleartext password on an unencrypted connection; refused', 'use sslmode verify-full, or scram-sha-256 in pg_hba.conf');
              }
              socket.write(passwordMessage(opts.password));
              break;
            default:
              throw new UpstreamError('28000', `unsupported authentication method (code ${a.code})`, 'configure scram-sha-256 or md5 for this user in pg_hba.conf');
          }
          break;
        }
        case Backend.ErrorResponse:
          if (!authenticated) scram?.refused();
          throw fromPgError(parseErrorFields(body));
        case Backend.ParameterStatus: {
          const p = parseParameterStatus(body);
          parameters.set(p.name, p.value);
          break;
        }
        case Backend.BackendKeyData:
          backendKey = parseBackendKeyData(body);
          break;
        case Backend.NoticeResponse:
        case Backend.NegotiateProtocolVersion:
          break; // informational during startup
        case Backend.ReadyForQuery:
          if (!authenticated) throw new UpstreamError('08P01', 'ReadyForQuery before AuthenticationOk');
          if (!backendKey) throw new UpstreamError('08P01', 'server sent no BackendKeyData', 'cancellation needs it; is this a pooler in an unsupported mode?');
          return {
            socket,
            tls: secure,
            parameters,
            backendKey,
            serverVersion: parameters.get('server_version') ?? '',
            leftover: messages.detach(),
          };
        default:
          throw new UpstreamError('08P01', `unexpected message '${String.fromCharCode(msg[0])}' during startup`);
      }
    }
  } catch (e) {
    messages.detach();
    throw e;
  }
}
