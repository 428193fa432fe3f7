// Codes both sides agree on: SQLSTATEs the agent sends to Postgres clients, and the HTTP refusals the
// CLI turns into sentences.

/** SQLSTATEs we emit. Real codes only: clients and scripts branch on them. */
export const SqlState = {
  InvalidAuthorization: '28000',
  InvalidPassword: '28P01',
  InsufficientPrivilege: '42501', // blocked by policy, denied or expired approval
  FeatureNotSupported: '0A000',
  ProtocolViolation: '08P01',
  ConnectionFailure: '08006',
  CannotConnectNow: '57P03', //     agent cannot reach the database or the audit store
  QueryCanceled: '57014',
  AdminShutdown: '57P01', //        the agent is stopping (drain)
  CharacterNotInRepertoire: '22021', // invalid UTF-8
  InternalError: 'XX000',
} as const;
export type SqlState = (typeof SqlState)[keyof typeof SqlState];

/** A refusal that is safe to show a client verbatim. Anything else becomes "internal error (ref …)". */
export class PgError extends Error {
  override readonly name = 'PgError';
  constructor(
    readonly code: SqlState | string,
    message: string,
    readonly extra: { severity?: 'ERROR' | 'FATAL'; detail?: string; hint?: string } = {},
  ) {
    super(message);
  }
  get severity(): 'ERROR' | 'FATAL' {
    return this.extra.severity ?? 'ERROR';
  }
}

/** The JSON body of an HTTP refusal from the agent (401, 403, 404, 409…). */
export interface ApiErrorBody {
  error: { code: string; message: string; hint?: string };
}
