// One local OIDC issuer per test file, plus helpers to craft tokens the issuer would never mint.
import { afterAll, beforeAll } from 'vitest';
import { createHmac, createPrivateKey, createSign, type JsonWebKey } from 'node:crypto';
import type { JWK, JWTPayload } from 'jose';
import { startLocalIssuer, type LocalIssuer, type LocalIssuerOptions } from '../../cli/src/demo/issuer.js';

export interface IssuerHandle {
  /** The running issuer; only inside tests and hooks that run after beforeAll. */
  readonly current: LocalIssuer;
}

/** Starts an issuer in beforeAll and stops it in afterAll. */
export function useIssuer(opts: LocalIssuerOptions = {}): IssuerHandle {
  let running: LocalIssuer | undefined;
  beforeAll(async () => {
    running = await startLocalIssuer(opts);
  });
  afterAll(async () => {
    await running?.stop();
    running = undefined;
  });
  return {
    get current(): LocalIssuer {
      if (!running) throw new Error('useIssuer(): the issuer is only available inside tests');
      return running;
    },
  };
}

/** Claims a valid access token from `issuer` would carry, for tests to start from and spoil. */
export function baseClaims(issuer: LocalIssuer, nowSec = Math.floor(Date.now() / 1000)): JWTPayload {
  return {
    iss: issuer.issuer,
    aud: issuer.audience,
    sub: 'u-alice',
    email: 'alice@clinic.example',
    groups: ['data-eng'],
    client_id: 'hoopctl',
    scope: 'db:connect',
    iat: nowSec,
    exp: nowSec + 300,
  };
}

/**
 * Signs header and claims exactly as given with RS256 and a private JWK (by default pass the issuer's
 * own key): a correctly signed token that breaks one rule at a time. Done by hand rather than with
 * jose, which refuses to produce some of the headers the tests need (e.g. `crit`).
 */
export function signRs256(header: Record<string, unknown>, claims: Record<string, unknown>, privateJwk: JWK): string {
  const input = `${enc(header)}.${enc(claims)}`;
  const key = createPrivateKey({ key: privateJwk as JsonWebKey, format: 'jwk' });
  return `${input}.${createSign('RSA-SHA256').update(input).sign(key).toString('base64url')}`;
}

/** HS256 over header and claims with an arbitrary secret (the "public key as HMAC secret" attack). */
export function signHs256(header: Record<string, unknown>, claims: Record<string, unknown>, secret: Buffer | string): string {
  const input = `${enc(header)}.${enc(claims)}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

/** Assembles a compact token from raw parts with no signing at all (alg none, garbage). */
export function rawToken(header: Record<string, unknown>, claims: Record<string, unknown>, signature = ''): string {
  return `${enc(header)}.${enc(claims)}.${signature}`;
}

function enc(v: unknown): string {
  return Buffer.from(JSON.stringify(v)).toString('base64url');
}
