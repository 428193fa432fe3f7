// What a client may say in its StartupMessage (SECURITY-POLICY.md P1, P2). `user` and `database` are
// at most selectors: the agent connects with the connection's own role and database. `options`,
// `replication` and everything else that could change who we are or how bytes are lexed are refused.
import { SqlState } from '../../../shared/errors.js';
import type { ResolvedConnection } from '../config.js';

export class StartupRefusal extends Error {
  override readonly name = 'StartupRefusal';
  hint?: string;
  constructor(
    readonly code: string,
    message: string,
    hint?: string,
  ) {
    super(message);
    this.hint = hint;
  }
}

/** Session settings a client may choose at startup; the same list SET may change (P3). */
const PASSTHROUGH = new Map(
  [
    'DateStyle',
    'IntervalStyle',
    'TimeZone',
    'extra_float_digits',
    'statement_timeout',
    'lock_timeout',
    'idle_in_transaction_session_timeout',
    'client_min_messages',
  ].map((n) => [n.toLowerCase(), n]),
);
/** Values of passed-through settings: plain words, numbers, zone names. No quotes, no commas of options. */
const SAFE_VALUE = /^[A-Za-z0-9 _.:/+,-]{1,64}$/;

export interface CleanStartup {
  upstreamParams: Record<string, string>;
  /** The client asked for protocol 3.x, x > 0, or sent `_pq_.` options: answer NegotiateProtocolVersion. */
  negotiate: boolean;
  unsupportedOptions: string[];
}

export function sanitizeStartup(
  major: number,
  minor: number,
  params: Map<string, string>,
  conn: ResolvedConnection,
): CleanStartup {
  if (major !== 3) {
    throw new StartupRefusal(SqlState.FeatureNotSupported, `unsupported frontend protocol ${major}.${minor}: hoopctl speaks 3.0`);
  }
  const upstreamParams: Record<string, string> = {};
  const unsupportedOptions: string[] = [];
  for (const [name, value] of params) {
    const lower = name.toLowerCase();
    if (name.startsWith('_pq_.')) {
      unsupportedOptions.push(name);
      continue;
    }
    switch (lower) {
      case 'user':
        continue; // a selector only; the agent's own role is used upstream
      case 'database':
        if (value !== conn.name && value !== conn.postgres.database) {
          throw new StartupRefusal(
            SqlState.InvalidAuthorization,
            `database "${value}" is not reachable through this tunnel`,
            `This tunnel serves connection "${conn.name}": use dbname=${conn.name}.`,
          );
        }
        continue;
      case 'client_encoding':
        // Pinned to UTF8 upstream and reported as such (P2); libpq follows the server's report.
        continue;
      case 'application_name':
        upstreamParams.application_name = sanitizeApplicationName(value);
        continue;
    }
    const canonical = PASSTHROUGH.get(lower);
    if (canonical && SAFE_VALUE.test(value)) {
      upstreamParams[canonical] = value;
      continue;
    }
    throw new StartupRefusal(
      SqlState.ProtocolViolation,
      `startup parameter "${name.slice(0, 64)}" is not allowed through hoopctl`,
      canonical ? 'Its value has characters the agent does not pass on.' : 'Only application_name and a few session settings (DateStyle, TimeZone, …) may be set at startup.',
    );
  }
  return { upstreamParams, negotiate: minor > 0 || unsupportedOptions.length > 0, unsupportedOptions };
}

/** Printable ASCII, at most 63 bytes (NAMEDATALEN - 1), so audit records and pg_stat_activity stay clean. */
export function sanitizeApplicationName(v: string): string {
  return v.replace(/[^\x20-\x7e]/g, '?').slice(0, 63);
}
