// Revocation at the agent: a token `hoopctl logout` revoked is refused everywhere a token is taken (the
// tunnel upgrade, the API, a renewal), on every agent sharing the state store, until it expires
// (audit/revocations.ts keeps the records). If the list cannot be read the token is refused (503):
// honouring a revoked token is the worse failure.
import { AuthError, AuthErrorCode } from './errors.js';
import type { Principal } from './access.js';
import { revocationKeys, type Revocations } from '../audit/revocations.js';

export interface Verifier {
  verify(token: string): Promise<Principal>;
}

/** `auth`, then the revocation list. */
export function checkingRevocation(auth: Verifier, revocations: Pick<Revocations, 'isRevoked'>): Verifier {
  return {
    async verify(token: string): Promise<Principal> {
      const who = await auth.verify(token);
      let revoked: boolean;
      try {
        revoked = await revocations.isRevoked(revocationKeys(who));
      } catch (err) {
        throw new AuthError(AuthErrorCode.REVOCATION_UNKNOWN, 'the revocation list is unavailable', { cause: err });
      }
      if (revoked) throw new AuthError(AuthErrorCode.TOKEN_REVOKED, 'it was revoked');
      return who;
    },
  };
}

/** What the revoke endpoint answers (POST /api/tokens/revoke, the caller's own token). */
export interface RevokeResult {
  revoked: true;
  /** Until when agents keep refusing it (the token's own expiry). */
  until: string;
  /** Whether all tokens of the login session were revoked (the token carried a `sid`), or this one. */
  scope: 'session' | 'token';
}

export async function revokeOwnToken(who: Principal, revocations: Pick<Revocations, 'revoke'>, now: number): Promise<RevokeResult> {
  const keys = revocationKeys(who);
  // A token without exp cannot be verified, so expiresAt is set; the fallback only bounds a bad clock.
  const expiresAt = who.expiresAt ?? now + 24 * 3600_000;
  await revocations.revoke({ keys, issuer: who.issuer, sub: who.sub, expiresAt });
  return { revoked: true, until: new Date(expiresAt).toISOString(), scope: keys.some((k) => k.startsWith('sid:')) ? 'session' : 'token' };
}
