// The one place where upstream failures become UpstreamError, each with a short hint for the
// operator (STYLE.md: "Upstream errors are mapped in one module, with a hint"). Messages never
// contain the password; PostgreSQL's own texts never do either.
import type { PgErrorFields } from '../pgwire/backend.js';
import { ProtocolError } from '../pgwire/errors.js';

export class UpstreamError extends Error {
  override readonly name = 'UpstreamError';
  constructor(
    /** SQLSTATE: PostgreSQL's own, or 08001 (cannot connect), 08006 (lost), 08P01, 28000. */
    readonly code: string,
    message: string,
    /** What the operator should check. */
    readonly hint?: string,
    /** The upstream ErrorResponse fields, when PostgreSQL itself refused. */
    readonly pg?: PgErrorFields,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

const HINTS: Record<string, string> = {
  '28P01': "check the connection's stored password (passwordEnv/passwordFile) and user",
  '28000': 'check pg_hba.conf: it must allow this user, database, client address and SSL mode',
  '3D000': 'check the database name in the connection config',
  '53300': 'the server is out of connection slots (max_connections); retry later or raise the limit',
  '57P03': 'the server is starting up or shutting down; retry shortly',
  '0A000': 'the server refused a startup parameter or feature; check the connection params',
  '42704': 'check the startup parameters (an unknown setting was given)',
};

/** An ErrorResponse PostgreSQL sent during startup. */
export function fromPgError(f: PgErrorFields): UpstreamError {
  return new UpstreamError(f.code, `upstream: ${f.message}`, f.hint ?? HINTS[f.code], f);
}

const TLS_CODES = /^(ERR_TLS_|ERR_SSL_|CERT_|DEPTH_ZERO|SELF_SIGNED|UNABLE_TO_|HOSTNAME_)/;

/** Anything thrown while connecting → UpstreamError. `where` is "host:port". */
export function toUpstreamError(e: unknown, where: string): UpstreamError {
  if (e instanceof UpstreamError) return e;
  if (e instanceof ProtocolError) {
    return new UpstreamError('08P01', `upstream ${where} broke the protocol: ${e.message}`, 'is this a PostgreSQL server?', undefined, { cause: e });
  }
  const code = (e as NodeJS.ErrnoException | undefined)?.code ?? '';
  const msg = e instanceof Error ? e.message : String(e);
  if (code === 'ECONNREFUSED') {
    return new UpstreamError('08001', `connection refused by ${where}`, 'is PostgreSQL running and listening on this host and port?', undefined, { cause: e });
  }
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return new UpstreamError('08001', `cannot resolve ${where}`, 'check the host name in the connection config', undefined, { cause: e });
  }
  if (TLS_CODES.test(code)) {
    return new UpstreamError('08001', `TLS with ${where} failed: ${msg}`, 'check sslrootcert and that the server certificate names this host', undefined, { cause: e });
  }
  return new UpstreamError('08006', `connection to ${where} failed: ${msg}`, 'check network reachability of the database', undefined, { cause: e });
}
