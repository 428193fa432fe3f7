// Token verification at the agent (SECURITY-POLICY.md P1: identity comes only from the verified token).
//
//   bearer token
//     │ 1. shape: compact JWS, three non-empty parts, bounded length (alg:none tokens and JWEs stop here)
//     │ 2. header: alg present and pinned per issuer; jku/x5u/jwk/x5c/crit refused outright
//     │ 3. unverified `iss` → exactly one configured issuer (unknown → ISSUER_UNKNOWN)
//     │ 4. that issuer's JWKS: jwks_uri from its discovery document (cached), keys by kid,
//     │    one refetch for an unknown kid, rate limited by the JWKS cooldown
//     │ 5. jose jwtVerify: signature, iss, aud, exp and iat (required), nbf, bounded skew, injected clock
//     │ 6. freshness: iat not in the future, not older than the issuer's maxTokenAgeSec, and a
//     │    lifetime (exp − iat) no longer than it either (corpus AU-010: long-lived stolen tokens)
//     │ 7. claims: sub required; groups must be a list of strings
//     │ 8. assurance: the issuer's `require` (amr any-of, acr minimum; identity/assurance.ts)
//     ▼
//   Identity
//
// Reading `iss` before the signature is checked is safe only because it does nothing but choose
// which configured issuer's keys to try; jwtVerify then requires that very `iss`.
import type { IncomingHttpHeaders } from 'node:http';
import {
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  errors as joseErrors,
  jwtVerify,
  type JWTPayload,
  type JWTVerifyGetKey,
  type ProtectedHeaderParameters,
} from 'jose';
import { AuthError, AuthErrorCode } from './errors.js';
import { assertSafeUrl, discoverJwksUri } from './discovery.js';
import { assuranceOf, assuranceShortfall, type AssuranceRequirement, type TokenAssurance } from './assurance.js';

export { AuthError, AuthErrorCode } from './errors.js';

export interface IssuerConfig {
  /** Compared byte for byte with the token's `iss` and the discovery document's `issuer`. */
  issuer: string;
  audience: string | string[];
  /** Asymmetric only. Default ['RS256', 'ES256', 'PS256', 'EdDSA']. */
  algorithms?: string[];
  /** Claim holding the caller's groups. Default 'groups'. */
  groupsClaim?: string;
  /** Skips discovery and uses this JWKS URL (still never one from a token). */
  jwksUri?: string;
  /**
   * Oldest token accepted, by its `iat`, in seconds; tokens minted with a longer lifetime (exp − iat)
   * are refused as well. Default 3,600 (1 h); at most 7 days. CI tokens live minutes (GitHub
   * Actions: about 10 min); people's access tokens are renewed in place (the CLI refreshes them over the
   * open tunnel), so nothing needs a longer one.
   */
  maxTokenAgeSec?: number;
  /** This issuer's acr values, weakest first. */
  acrValues?: string[];
  /** The assurance every token of this issuer must show. */
  require?: AssuranceRequirement;
}

export interface Identity {
  sub: string;
  issuer: string;
  email?: string;
  groups: string[];
  /** `client_id` (RFC 9068) or `azp`: the client the token was issued to. */
  clientId?: string;
  /** The verified payload. */
  claims: Record<string, unknown>;
  /** `exp`, in ms since the epoch. */
  expiresAt: number;
  /** The token's amr/acr, with its issuer's acr ordering. */
  assurance: TokenAssurance;
}

export interface TokenVerifierOptions {
  issuers: IssuerConfig[];
  /** ms since the epoch; the time tokens are judged at. Default Date.now. */
  clock?: () => number;
  /** Allowed skew for exp/nbf. Default 60 s. */
  clockToleranceSec?: number;
}

const DEFAULT_ALGORITHMS = ['RS256', 'ES256', 'PS256', 'EdDSA'];
/** Algorithms the agent may pin. Symmetric ones are absent: the agent shares no secret with an IdP. */
const ASYMMETRIC = new Set(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519']);
/**
 * Header parameters that point at, embed or qualify the verification key. Honouring any of them lets
 * the token pick its own key; `crit` demands extensions we do not implement. Refused before anything
 * else looks at the token.
 */
const FORBIDDEN_HEADER_PARAMS = ['jku', 'x5u', 'jwk', 'x5c', 'crit'] as const;
/** Large enough for tokens with many groups; small enough that a header cannot carry a payload. */
const MAX_TOKEN_CHARS = 16 * 1024;
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
/** After a failed discovery, callers get the cached failure for this long instead of a new fetch. */
const DISCOVERY_RETRY_MS = 5_000;
const DEFAULT_MAX_TOKEN_AGE_SEC = 3600;
/** A bigger setting is most likely milliseconds given as seconds; no agent token should live a week. */
const MAX_MAX_TOKEN_AGE_SEC = 7 * 24 * 3600;

interface IssuerState {
  config: Required<Pick<IssuerConfig, 'issuer' | 'algorithms' | 'groupsClaim' | 'maxTokenAgeSec'>> &
    Pick<IssuerConfig, 'acrValues' | 'require'> & { audience: string[] };
  jwksUri?: URL;
  keys?: JWTVerifyGetKey;
  pending?: Promise<JWTVerifyGetKey>;
  failedAt?: number;
  failure?: unknown;
}

export class TokenVerifier {
  readonly #issuers = new Map<string, IssuerState>();
  readonly #clock: () => number;
  readonly #toleranceSec: number;

  constructor(opts: TokenVerifierOptions) {
    this.#clock = opts.clock ?? Date.now;
    this.#toleranceSec = opts.clockToleranceSec ?? 60;
    if (!(this.#toleranceSec >= 0 && this.#toleranceSec <= 300)) {
      throw new TypeError('clockToleranceSec must be between 0 and 300');
    }
    if (!opts.issuers.length) throw new TypeError('at least one issuer must be configured');
    for (const c of opts.issuers) {
      if (this.#issuers.has(c.issuer)) throw new TypeError(`issuer configured twice: ${c.issuer}`);
      assertSafeUrl(c.issuer, 'issuer');
      const audience = Array.isArray(c.audience) ? c.audience : [c.audience];
      if (!audience.length || audience.some((a) => typeof a !== 'string' || !a)) {
        throw new TypeError(`issuer ${c.issuer}: audience must be a non-empty string or list`);
      }
      const algorithms = c.algorithms ?? DEFAULT_ALGORITHMS;
      const bad = algorithms.filter((a) => !ASYMMETRIC.has(a));
      if (!algorithms.length || bad.length) {
        throw new TypeError(`issuer ${c.issuer}: algorithms must be asymmetric JWS algorithms (got ${bad.join(', ') || 'none'})`);
      }
      const maxTokenAgeSec = c.maxTokenAgeSec ?? DEFAULT_MAX_TOKEN_AGE_SEC;
      if (!(Number.isInteger(maxTokenAgeSec) && maxTokenAgeSec > 0 && maxTokenAgeSec <= MAX_MAX_TOKEN_AGE_SEC)) {
        throw new TypeError(`issuer ${c.issuer}: maxTokenAgeSec must be a whole number of seconds between 1 and ${MAX_MAX_TOKEN_AGE_SEC}`);
      }
      this.#issuers.set(c.issuer, {
        config: { issuer: c.issuer, audience, algorithms, groupsClaim: c.groupsClaim ?? 'groups', maxTokenAgeSec, acrValues: c.acrValues, require: c.require },
        jwksUri: c.jwksUri === undefined ? undefined : assertSafeUrl(c.jwksUri, 'jwksUri'),
      });
    }
  }

  /** Verifies a bearer token and returns who it speaks for, or throws AuthError. */
  async verify(token: string): Promise<Identity> {
    const header = this.#checkShapeAndHeader(token);
    const state = this.#issuerFor(token);
    if (!state.config.algorithms.includes(header.alg as string)) {
      throw new AuthError(AuthErrorCode.TOKEN_INVALID, 'it is signed with an algorithm this issuer does not use');
    }
    const keys = await this.#keysFor(state);

    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keys, {
        issuer: state.config.issuer,
        audience: state.config.audience,
        algorithms: state.config.algorithms,
        clockTolerance: this.#toleranceSec,
        currentDate: new Date(this.#clock()),
        requiredClaims: ['iss', 'aud', 'exp', 'iat', 'sub'],
      }));
    } catch (err) {
      throw toAuthError(err);
    }
    checkFreshness(payload, this.#clock() / 1000, this.#toleranceSec, state.config.maxTokenAgeSec);
    const identity = toIdentity(payload, state.config);
    const short = state.config.require && assuranceShortfall(state.config.require, identity.assurance);
    if (short) throw new AuthError(AuthErrorCode.INSUFFICIENT_ASSURANCE, short);
    return identity;
  }

  #checkShapeAndHeader(token: string): ProtectedHeaderParameters {
    if (typeof token !== 'string' || token.length === 0) {
      throw new AuthError(AuthErrorCode.TOKEN_INVALID, 'it is empty');
    }
    if (token.length > MAX_TOKEN_CHARS) throw new AuthError(AuthErrorCode.TOKEN_INVALID, 'it is too long');
    if (!COMPACT_JWS.test(token)) {
      // Five parts is a JWE; an empty third part is an unsigned (alg "none") token.
      const parts = token.split('.');
      const reason = parts.length === 5 ? 'encrypted tokens are not accepted'
        : parts.length === 3 && parts[2] === '' ? 'it is not signed'
        : 'it is not a signed JWT';
      throw new AuthError(AuthErrorCode.TOKEN_INVALID, reason);
    }
    let header: ProtectedHeaderParameters;
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw new AuthError(AuthErrorCode.TOKEN_INVALID, 'its header is not valid');
    }
    for (const param of FORBIDDEN_HEADER_PARAMS) {
      if (param in header) {
        throw new AuthError(
          AuthErrorCode.TOKEN_INVALID,
          `its header carries "${param}", and the agent never takes keys or extensions from a token`,
        );
      }
    }
    if (typeof header.alg !== 'string' || header.alg.toLowerCase() === 'none') {
      throw new AuthError(AuthErrorCode.TOKEN_INVALID, 'it is not signed');
    }
    return header;
  }

  #issuerFor(token: string): IssuerState {
    let iss: unknown;
    try {
      iss = decodeJwt(token).iss;
    } catch {
      throw new AuthError(AuthErrorCode.TOKEN_INVALID, 'its claims are not valid JSON');
    }
    // JSON parsers keep the last of two equal names, other parsers the first: a token with `sub` twice
    // could mean one identity to the issuer's tooling and another here. Refuse the ambiguity.
    const dup = duplicateTopLevelKey(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
    if (dup) throw new AuthError(AuthErrorCode.TOKEN_INVALID, `its claims name "${dup.slice(0, 40)}" twice`);
    // Exact match only: no trailing-slash, case or scheme normalisation, as OIDC requires.
    const state = typeof iss === 'string' ? this.#issuers.get(iss) : undefined;
    if (!state) throw new AuthError(AuthErrorCode.ISSUER_UNKNOWN, 'issuer not configured');
    return state;
  }

  /** The issuer's key resolver, created once; concurrent first calls share one discovery fetch. */
  async #keysFor(state: IssuerState): Promise<JWTVerifyGetKey> {
    if (state.keys) return state.keys;
    if (state.failedAt !== undefined && performance.now() - state.failedAt < DISCOVERY_RETRY_MS) {
      throw new AuthError(AuthErrorCode.ISSUER_UNREACHABLE, 'issuer discovery failed recently', { cause: state.failure });
    }
    state.pending ??= (async () => {
      const url = state.jwksUri ?? (await discoverJwksUri(state.config.issuer));
      const remote = createRemoteJWKSet(url, { cooldownDuration: 30_000, cacheMaxAge: 10 * 60_000, timeoutDuration: 5_000 });
      return keyResolver(remote);
    })();
    try {
      state.keys = await state.pending;
      state.failedAt = state.failure = undefined;
      return state.keys;
    } catch (err) {
      state.failedAt = performance.now();
      state.failure = err;
      throw new AuthError(AuthErrorCode.ISSUER_UNREACHABLE, 'issuer discovery failed', { cause: err });
    } finally {
      state.pending = undefined;
    }
  }
}

/**
 * Wraps the remote JWKS so its failures are told apart: "no key with this kid" is the token's fault,
 * anything else (network, timeout, bad JWKS document) is the issuer's.
 */
function keyResolver(remote: JWTVerifyGetKey): JWTVerifyGetKey {
  return async (header, token) => {
    try {
      return await remote(header, token);
    } catch (err) {
      if (err instanceof joseErrors.JWKSNoMatchingKey || err instanceof joseErrors.JWKSMultipleMatchingKeys) throw err;
      throw new AuthError(AuthErrorCode.ISSUER_UNREACHABLE, 'issuer keys could not be fetched', { cause: err });
    }
  };
}

/**
 * `iat` bounds how long a stolen token stays useful, whatever `exp` it carries (corpus AU-010):
 * - issued in the future (beyond the clock tolerance): a clock-skewed or forged mint, refused;
 * - older than maxTokenAgeSec (plus tolerance): refused as expired, even if `exp` says otherwise;
 * - minted to live longer than maxTokenAgeSec (exp − iat): refused, so a misconfigured issuer shows up
 *   on the first use, not a day later.
 * `iat` is required (jwtVerify's requiredClaims): without it a token's age cannot be known.
 */
function checkFreshness(payload: JWTPayload, nowSec: number, toleranceSec: number, maxAgeSec: number): void {
  const iat = payload.iat;
  const exp = payload.exp;
  if (typeof iat !== 'number' || !Number.isFinite(iat)) throw new AuthError(AuthErrorCode.TOKEN_INVALID, CLAIM_REASONS.iat);
  if (iat > nowSec + toleranceSec) throw new AuthError(AuthErrorCode.TOKEN_INVALID, 'it says it was issued in the future');
  if (nowSec - iat > maxAgeSec + toleranceSec) throw new AuthError(AuthErrorCode.TOKEN_EXPIRED, 'it is older than the maximum token age');
  if (typeof exp === 'number' && exp - iat > maxAgeSec) {
    throw new AuthError(AuthErrorCode.TOKEN_INVALID, 'it was issued to stay valid longer than this agent accepts');
  }
}

const CLAIM_REASONS: Record<string, string> = {
  iat: 'it has no valid issue time',
  aud: 'it was not issued for this agent',
  iss: 'its issuer does not match',
  nbf: 'it is not valid yet',
  exp: 'it has no valid expiry time',
  sub: 'it names no subject',
};

/** Maps jose's errors to ours. jose errors are not kept as `cause`: they carry the token's claims. */
function toAuthError(err: unknown): AuthError {
  if (err instanceof AuthError) return err;
  if (err instanceof joseErrors.JWTExpired) return new AuthError(AuthErrorCode.TOKEN_EXPIRED, 'it has expired');
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    return new AuthError(AuthErrorCode.TOKEN_INVALID, CLAIM_REASONS[err.claim] ?? 'one of its claims is not valid');
  }
  if (err instanceof joseErrors.JWKSNoMatchingKey) {
    return new AuthError(AuthErrorCode.TOKEN_INVALID, 'it is signed with a key the issuer does not publish');
  }
  if (err instanceof joseErrors.JWKSMultipleMatchingKeys) {
    return new AuthError(AuthErrorCode.TOKEN_INVALID, 'it does not say which of the issuer\'s keys signed it');
  }
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) {
    return new AuthError(AuthErrorCode.TOKEN_INVALID, 'its signature does not verify');
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed) {
    return new AuthError(AuthErrorCode.TOKEN_INVALID, 'it is signed with an algorithm this issuer does not use');
  }
  if (err instanceof joseErrors.JOSEError) return new AuthError(AuthErrorCode.TOKEN_INVALID, 'it is not a valid JWT');
  // Anything else is a bug or an environment fault, not the caller's doing; keep it for the log.
  return new AuthError(AuthErrorCode.ISSUER_UNREACHABLE, 'verification failed unexpectedly', { cause: err });
}

function toIdentity(payload: JWTPayload, config: IssuerState['config']): Identity {
  if (typeof payload.sub !== 'string' || payload.sub === '') {
    throw new AuthError(AuthErrorCode.TOKEN_INVALID, 'it names no subject');
  }
  if (typeof payload.exp !== 'number') throw new AuthError(AuthErrorCode.TOKEN_INVALID, 'it has no expiry time');
  const rawGroups = payload[config.groupsClaim];
  // A malformed groups claim is refused rather than ignored, so a typo at the IdP shows up at once.
  if (rawGroups !== undefined && !(Array.isArray(rawGroups) && rawGroups.every((g) => typeof g === 'string'))) {
    throw new AuthError(AuthErrorCode.TOKEN_INVALID, `its "${config.groupsClaim}" claim is not a list of names`);
  }
  const clientId = typeof payload.client_id === 'string' ? payload.client_id
    : typeof payload.azp === 'string' ? payload.azp
    : undefined;
  return {
    sub: payload.sub,
    issuer: config.issuer,
    email: typeof payload.email === 'string' ? payload.email : undefined,
    groups: rawGroups === undefined ? [] : [...(rawGroups as string[])],
    clientId,
    claims: { ...payload },
    expiresAt: payload.exp * 1000,
    assurance: assuranceOf(payload, config.acrValues),
  };
}

/**
 * The bearer token from the Authorization header (RFC 6750 §2.1), scheme case-insensitive.
 * Tokens in the query string or a form body are never accepted: they end up in logs and histories.
 */
export function bearerFrom(headers: IncomingHttpHeaders): string | undefined {
  const value = headers.authorization;
  if (typeof value !== 'string') return undefined;
  const m = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(value);
  return m?.[1];
}

/** The first name that appears twice among a JSON object's own (top-level) members, if any. */
export function duplicateTopLevelKey(json: string): string | undefined {
  const seen = new Set<string>();
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < json.length; i++) {
    const ch = json[i];
    if (ch === '"') {
      let j = i + 1;
      while (j < json.length && json[j] !== '"') j += json[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        const key = JSON.parse(json.slice(i, j + 1)) as string;
        if (seen.has(key)) return key;
        seen.add(key);
        expectKey = false;
      }
      i = j;
    } else if (ch === '{' || ch === '[') {
      depth++;
      if (depth === 1 && ch === '{') expectKey = true;
    } else if (ch === '}' || ch === ']') depth--;
    else if (ch === ',' && depth === 1) expectKey = true;
  }
  return undefined;
}
