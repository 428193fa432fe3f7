// Why a bearer token was refused. The HTTP layer answers 401 with `message`; the audit log records
// `code` and `reason`. Neither ever contains the token, nor any value copied from it: a token is a
// credential, and its claims are attacker-chosen until verified.

export const AuthErrorCode = {
  TOKEN_MISSING: 'TOKEN_MISSING',
  TOKEN_EXPIRED: 'TOKEN_EXPIRED',
  TOKEN_INVALID: 'TOKEN_INVALID',
  ISSUER_UNKNOWN: 'ISSUER_UNKNOWN',
  ISSUER_UNREACHABLE: 'ISSUER_UNREACHABLE',
  /** Valid, but the issuer's `require` (MFA, acr) is not met: 403, log in again more strongly. */
  INSUFFICIENT_ASSURANCE: 'INSUFFICIENT_ASSURANCE',
  /** Valid, but revoked (`hoopctl logout`); kept in the state store until it expires. */
  TOKEN_REVOKED: 'TOKEN_REVOKED',
  /** The revocation list could not be read: refused rather than risk honouring a revoked token (503). */
  REVOCATION_UNKNOWN: 'REVOCATION_UNKNOWN',
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
  INSUFFICIENT_ASSURANCE: (reason) =>
    `Your access token does not show the sign-in strength this agent requires: ${reason}. Run \`hoopctl login\` again and complete multi-factor authentication.`,
  TOKEN_REVOKED: () => `Your access token was revoked (\`hoopctl logout\`). ${LOGIN}`,
  REVOCATION_UNKNOWN: () =>
    "The agent cannot check right now whether your token was revoked, so it refuses it. Try again shortly; if it persists, tell the agent's operator.",
};

const STATUS: Partial<Record<AuthErrorCode, 401 | 403 | 503>> = { INSUFFICIENT_ASSURANCE: 403, REVOCATION_UNKNOWN: 503 };

export class AuthError extends Error {
  override readonly name = 'AuthError';
  /** 401 (log in again), 403 (log in more strongly) or 503 (try again). */
  readonly status: 401 | 403 | 503;
  readonly code: AuthErrorCode;
  /** Short, fixed phrase for the audit log (e.g. "audience mismatch"). */
  readonly reason: string;

  constructor(code: AuthErrorCode, reason: string, options?: { cause?: unknown }) {
    super(MESSAGES[code](reason), options);
    this.status = STATUS[code] ?? 401;
    this.code = code;
    this.reason = reason;
  }
}
