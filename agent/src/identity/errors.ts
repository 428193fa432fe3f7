// Why a bearer token was refused. The HTTP layer answers 401 with `message`; the audit log records
// `code` and `reason`. Neither ever contains the token, nor any value copied from it: a token is a
// credential, and its claims are attacker-chosen until verified.

export const AuthErrorCode = {
  TOKEN_MISSING: 'TOKEN_MISSING',
  TOKEN_EXPIRED: 'TOKEN_EXPIRED',
  TOKEN_INVALID: 'TOKEN_INVALID',
  ISSUER_UNKNOWN: 'ISSUER_UNKNOWN',
  ISSUER_UNREACHABLE: 'ISSUER_UNREACHABLE',
} as const;
export type AuthErrorCode = (typeof AuthErrorCode)[keyof typeof AuthErrorCode];

const LOGIN = 'Run `hoopctl login` to get a new one.';

const MESSAGES: Record<AuthErrorCode, (reason: string) => string> = {
  TOKEN_MISSING: () => 'No access token was sent. Run `hoopctl login` first.',
  TOKEN_EXPIRED: () => `Your access token has expired. ${LOGIN}`,
  TOKEN_INVALID: (reason) => `Your access token was rejected: ${reason}. ${LOGIN}`,
  ISSUER_UNKNOWN: () =>
    'Your access token comes from an issuer this agent does not trust. Run `hoopctl login` against the issuer configured for this agent.',
  ISSUER_UNREACHABLE: () =>
    "The agent could not fetch its token issuer's signing keys, so it cannot check your token. Try again shortly; if it persists, run `hoopctl login` or tell the agent's operator.",
};

export class AuthError extends Error {
  override readonly name = 'AuthError';
  readonly status = 401 as const;
  readonly code: AuthErrorCode;
  /** Short, fixed phrase for the audit log (e.g. "audience mismatch"). */
  readonly reason: string;

  constructor(code: AuthErrorCode, reason: string, options?: { cause?: unknown }) {
    super(MESSAGES[code](reason), options);
    this.code = code;
    this.reason = reason;
  }
}
