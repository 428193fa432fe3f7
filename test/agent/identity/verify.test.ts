// TokenVerifier against a real local issuer (SECURITY-POLICY.md P1). Every rejection case is a
// token that is correctly formed except for the one rule under test.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createPublicKey, generateKeyPairSync, type JsonWebKey } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import type { JWK } from 'jose';
import { AuthError, TokenVerifier, bearerFrom, type AuthErrorCode } from '../../../agent/src/identity/verify.js';
import { baseClaims, rawToken, signHs256, signRs256, useIssuer } from '../../harness/oidc.js';

const idp = useIssuer();
let verifier: TokenVerifier;
beforeAll(() => {
  verifier = new TokenVerifier({ issuers: [{ issuer: idp.current.issuer, audience: 'hoop-agent' }] });
});

/** Expects `token` to be refused with `code`, and checks the message is fit to show a user. */
async function expectRejected(token: string, code: AuthErrorCode, reason?: RegExp, v = verifier): Promise<AuthError> {
  const err = await v.verify(token).then(
    () => { throw new Error('token was accepted'); },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AuthError);
  const authErr = err as AuthError;
  expect(authErr.code).toBe(code);
  expect(authErr.status).toBe(401);
  if (reason) expect(authErr.reason).toMatch(reason);
  expect(authErr.message).toContain('hoopctl login');
  expect(authErr.message).not.toContain('\n');
  if (token.length > 8) expect(authErr.message).not.toContain(token);
  return authErr;
}

const header = (extra: Record<string, unknown> = {}) => ({ alg: 'RS256', typ: 'at+jwt', kid: idp.current.privateJwk.kid, ...extra });
const attackerJwk = (): JWK => {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return privateKey.export({ format: 'jwk' }) as JWK;
};

describe('tokens the issuer minted', () => {
  it('accepts a client-credentials token and reads groups from client metadata', async () => {
    const token = await idp.current.clientCredentialsToken('ci-nightly', 'ci-nightly-secret');
    const id = await verifier.verify(token);
    expect(id).toMatchObject({ sub: 'ci-nightly', issuer: idp.current.issuer, groups: ['data-eng'], clientId: 'ci-nightly' });
    expect(id.email).toBeUndefined();
    expect(id.claims.scope).toBe('db:connect');
    expect(id.expiresAt).toBe((id.claims.exp as number) * 1000);
    expect(id.expiresAt).toBeGreaterThan(Date.now());
  });

  it('gives each service account its own groups', async () => {
    const token = await idp.current.clientCredentialsToken('approver-bot', 'approver-bot-secret');
    expect((await verifier.verify(token)).groups).toEqual(['compliance']);
  });

  it('accepts a device-flow token for a person, with email and groups', async () => {
    const { accessToken, idToken } = await idp.current.mintDeviceFlowToken('carol@clinic.example');
    const id = await verifier.verify(accessToken);
    expect(id).toMatchObject({ sub: 'u-carol', email: 'carol@clinic.example', groups: ['compliance'], clientId: 'hoopctl' });
    // The ID token is for the CLI (aud hoopctl), not a credential for the agent.
    await expectRejected(idToken!, 'TOKEN_INVALID', /not issued for this agent/);
  });

  it('accepts one audience out of several configured', async () => {
    const v = new TokenVerifier({ issuers: [{ issuer: idp.current.issuer, audience: ['other', 'hoop-agent'] }] });
    const token = await idp.current.clientCredentialsToken('ci-nightly', 'ci-nightly-secret');
    expect((await v.verify(token)).sub).toBe('ci-nightly');
  });
});

describe('audience and issuer', () => {
  it('rejects a token for another audience', async () => {
    const v = new TokenVerifier({ issuers: [{ issuer: idp.current.issuer, audience: 'billing-agent' }] });
    const token = await idp.current.clientCredentialsToken('ci-nightly', 'ci-nightly-secret');
    await expectRejected(token, 'TOKEN_INVALID', /not issued for this agent/, v);
    await expectRejected(signRs256(header(), { ...baseClaims(idp.current), aud: 'billing-agent' }, idp.current.privateJwk), 'TOKEN_INVALID', /not issued for this agent/);
  });

  it.each([
    { desc: 'a foreign issuer', iss: 'https://evil.example' },
    { desc: 'a trailing slash', iss: 'TRAILING' },
    { desc: 'another scheme', iss: 'HTTPS' },
    { desc: 'no iss at all', iss: undefined },
  ])('rejects iss with $desc, even signed by the right key', async ({ iss }) => {
    const real = idp.current.issuer;
    const value = iss === 'TRAILING' ? `${real}/` : iss === 'HTTPS' ? real.replace('http:', 'https:') : iss;
    const token = signRs256(header(), { ...baseClaims(idp.current), iss: value }, idp.current.privateJwk);
    await expectRejected(token, 'ISSUER_UNKNOWN');
  });

  it('rejects tokens from a real issuer the agent was not configured with', async () => {
    const { startLocalIssuer } = await import('../../../cli/src/demo/issuer.js');
    const other = await startLocalIssuer();
    try {
      const token = await other.clientCredentialsToken('ci-nightly', 'ci-nightly-secret');
      await expectRejected(token, 'ISSUER_UNKNOWN');
      // ... and a token claiming our issuer but signed by the other one's key (same kid scheme).
      const forged = signRs256(header({ kid: other.privateJwk.kid }), baseClaims(idp.current), other.privateJwk);
      await expectRejected(forged, 'TOKEN_INVALID', /key the issuer does not publish/);
    } finally {
      await other.stop();
    }
  });
});

describe('time', () => {
  const at = (offsetMs: number) => new TokenVerifier({
    issuers: [{ issuer: idp.current.issuer, audience: 'hoop-agent' }],
    clock: () => Date.now() + offsetMs,
  });

  it('rejects an expired token by the injected clock, after the 60 s tolerance', async () => {
    const token = await idp.current.clientCredentialsToken('ci-nightly', 'ci-nightly-secret');
    const exp = (await verifier.verify(token)).expiresAt;
    await expect(at(exp - Date.now() + 30_000).verify(token)).resolves.toMatchObject({ sub: 'ci-nightly' });
    const err = await expectRejected(token, 'TOKEN_EXPIRED', /expired/, at(exp - Date.now() + 61_000));
    expect(err.message).toMatch(/expired.*hoopctl login/);
  });

  it('rejects a token that is not valid yet', async () => {
    const now = Math.floor(Date.now() / 1000);
    const token = signRs256(header(), { ...baseClaims(idp.current), nbf: now + 600, exp: now + 3600 }, idp.current.privateJwk);
    await expectRejected(token, 'TOKEN_INVALID', /not valid yet/);
    await expect(at(601_000).verify(token)).resolves.toMatchObject({ sub: 'u-alice' });
  });

  it('rejects a token without exp', async () => {
    const { exp: _exp, ...claims } = baseClaims(idp.current);
    await expectRejected(signRs256(header(), claims, idp.current.privateJwk), 'TOKEN_INVALID', /expiry/);
  });
});

describe('token age (corpus AU-010)', () => {
  const now = () => Math.floor(Date.now() / 1000);
  const sign = (claims: Record<string, unknown>) => signRs256(header(), { ...baseClaims(idp.current), ...claims }, idp.current.privateJwk);
  const withMaxAge = (maxTokenAgeSec: number, offsetMs = 0) => new TokenVerifier({
    issuers: [{ issuer: idp.current.issuer, audience: 'hoop-agent', maxTokenAgeSec }],
    clock: () => Date.now() + offsetMs,
  });

  it('rejects a token issued 30 days ago that has not expired', async () => {
    const t = now();
    await expectRejected(sign({ iat: t - 86_400 * 30, exp: t + 3600 }), 'TOKEN_EXPIRED', /maximum token age/);
  });

  it('rejects a token issued in the future beyond the clock tolerance, accepts one within it', async () => {
    const t = now();
    await expectRejected(sign({ iat: t + 86_400 * 30, exp: t + 86_400 * 30 + 300 }), 'TOKEN_INVALID', /issued in the future/);
    await expectRejected(sign({ iat: t + 600, exp: t + 900 }), 'TOKEN_INVALID', /issued in the future/);
    await expect(verifier.verify(sign({ iat: t + 30, exp: t + 330 }))).resolves.toMatchObject({ sub: 'u-alice' });
  });

  it('rejects a token without iat, or with an iat that is not a number', async () => {
    const { iat: _iat, ...claims } = baseClaims(idp.current);
    await expectRejected(signRs256(header(), claims, idp.current.privateJwk), 'TOKEN_INVALID', /issue time/);
    await expectRejected(sign({ iat: String(now()) }), 'TOKEN_INVALID', /issue time/);
  });

  it('rejects a token minted to live longer than the maximum age (default 1 h), even when fresh', async () => {
    const t = now();
    await expectRejected(sign({ iat: t, exp: t + 3600 + 1 }), 'TOKEN_INVALID', /longer than this agent accepts/);
    await expectRejected(sign({ iat: t, exp: t + 86_400 }), 'TOKEN_INVALID', /longer than this agent accepts/);
    await expect(verifier.verify(sign({ iat: t, exp: t + 3600 }))).resolves.toMatchObject({ sub: 'u-alice' });
  });

  it('uses maxTokenAgeSec per issuer, by the injected clock, with the clock tolerance', async () => {
    const t = now();
    const token = sign({ iat: t - 500, exp: t + 100 });
    await expect(withMaxAge(600).verify(token)).resolves.toMatchObject({ sub: 'u-alice' });
    await expectRejected(token, 'TOKEN_EXPIRED', /maximum token age/, withMaxAge(400));
    // by the injected clock: fine now, refused 61 s past maxTokenAgeSec + 60 s tolerance (and past exp)
    await expectRejected(token, 'TOKEN_EXPIRED', undefined, withMaxAge(600, 161_000));
    // 500 s old is within 450 s + 60 s of tolerance, but a 600 s lifetime is longer than 450 s
    await expectRejected(token, 'TOKEN_INVALID', /longer than this agent accepts/, withMaxAge(450));
    // a lifetime of 600 s is too long for an issuer limited to 300 s
    await expectRejected(sign({ iat: t, exp: t + 600 }), 'TOKEN_INVALID', /longer than this agent accepts/, withMaxAge(300));
  });

  it('keeps accepting GitHub Actions OIDC tokens (iat, nbf before iat, about 10 minutes of life)', async () => {
    const t = now();
    const gh = {
      iss: idp.current.issuer, aud: 'hoop-agent', sub: 'repo:clinic/reports:ref:refs/heads/main',
      repository: 'clinic/reports', repository_owner: 'clinic', ref: 'refs/heads/main', job_workflow_ref: 'clinic/reports/.github/workflows/nightly.yml@refs/heads/main',
      run_id: '123', actor: 'dependabot[bot]', event_name: 'schedule', jti: 'e1c4b7a0-1',
      nbf: t - 60 - 900, iat: t - 60, exp: t - 60 + 600,
    };
    const token = signRs256(header({ typ: 'JWT' }), gh, idp.current.privateJwk);
    await expect(verifier.verify(token)).resolves.toMatchObject({ sub: gh.sub });
    await expect(withMaxAge(900).verify(token)).resolves.toMatchObject({ sub: gh.sub });
  });

  it('keeps accepting tokens the issuer mints', async () => {
    const token = await idp.current.clientCredentialsToken('ci-nightly', 'ci-nightly-secret');
    await expect(withMaxAge(900).verify(token)).resolves.toMatchObject({ sub: 'ci-nightly' });
  });
});

describe('signature and algorithm attacks', () => {
  it.each(['none', 'None', 'NONE'])('rejects alg %s, with or without a signature part', async (alg) => {
    const claims = baseClaims(idp.current);
    await expectRejected(rawToken({ alg, typ: 'JWT' }, claims), 'TOKEN_INVALID', /not signed/);
    await expectRejected(rawToken({ alg, typ: 'JWT' }, claims, 'c2ln'), 'TOKEN_INVALID', /not signed/);
  });

  it('rejects HS256 keyed with the public RSA key, in every encoding an attacker would try', async () => {
    const pub = createPublicKey({ key: idp.current.publicJwk as JsonWebKey, format: 'jwk' });
    const secrets = [
      pub.export({ format: 'pem', type: 'spki' }),
      pub.export({ format: 'pem', type: 'pkcs1' }),
      pub.export({ format: 'der', type: 'spki' }),
      JSON.stringify(idp.current.publicJwk),
      Buffer.from(idp.current.publicJwk.n!, 'base64url'),
    ];
    for (const secret of secrets) {
      const token = signHs256(header({ alg: 'HS256' }), baseClaims(idp.current), secret);
      await expectRejected(token, 'TOKEN_INVALID', /algorithm this issuer does not use/);
    }
  });

  it('rejects a token signed by a different RSA key that reuses the real kid', async () => {
    const token = signRs256(header(), baseClaims(idp.current), attackerJwk());
    await expectRejected(token, 'TOKEN_INVALID', /signature does not verify/);
  });

  it('rejects a correctly signed token whose payload was then edited', async () => {
    const token = signRs256(header(), baseClaims(idp.current), idp.current.privateJwk);
    const [h, , s] = token.split('.');
    const edited = `${h}.${Buffer.from(JSON.stringify({ ...baseClaims(idp.current), groups: ['compliance'] })).toString('base64url')}.${s}`;
    await expectRejected(edited, 'TOKEN_INVALID', /signature does not verify/);
  });

  it('rejects an allowed algorithm the issuer does not sign with, when pinned tighter', async () => {
    const v = new TokenVerifier({ issuers: [{ issuer: idp.current.issuer, audience: 'hoop-agent', algorithms: ['ES256'] }] });
    const token = await idp.current.clientCredentialsToken('ci-nightly', 'ci-nightly-secret');
    await expectRejected(token, 'TOKEN_INVALID', /algorithm/, v);
  });

  it.each([
    { param: 'jku', value: 'https://evil.example/jwks.json' },
    { param: 'x5u', value: 'https://evil.example/cert.pem' },
    { param: 'jwk', value: 'ATTACKER_JWK' },
    { param: 'x5c', value: ['MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA'] },
    { param: 'crit', value: ['exp'] },
  ])('rejects a header carrying $param, even when the signature is the issuer\'s own', async ({ param, value }) => {
    const attacker = attackerJwk();
    const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...attackerPublic } = attacker;
    const h = header({ [param]: value === 'ATTACKER_JWK' ? attackerPublic : value });
    await expectRejected(signRs256(h, baseClaims(idp.current), idp.current.privateJwk), 'TOKEN_INVALID', new RegExp(`"${param}"`));
    await expectRejected(signRs256(h, baseClaims(idp.current), attacker), 'TOKEN_INVALID', new RegExp(`"${param}"`));
  });

  it('rejects a kid the issuer does not publish, refetching its JWKS at most once per cooldown', async () => {
    let fetches = 0;
    const jwksServer = http.createServer((_req, res) => {
      fetches++;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ keys: [idp.current.publicJwk] }));
    });
    await new Promise<void>((r) => jwksServer.listen(0, '127.0.0.1', r));
    try {
      const jwksUri = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks`;
      const v = new TokenVerifier({ issuers: [{ issuer: idp.current.issuer, audience: 'hoop-agent', jwksUri }] });
      await v.verify(await idp.current.clientCredentialsToken('ci-nightly', 'ci-nightly-secret'));
      expect(fetches).toBe(1);
      const attacker = attackerJwk();
      for (let i = 0; i < 5; i++) {
        await expectRejected(signRs256(header({ kid: `rotated-${i}` }), baseClaims(idp.current), attacker), 'TOKEN_INVALID', /does not publish/, v);
      }
      expect(fetches).toBeLessThanOrEqual(2);
    } finally {
      jwksServer.closeAllConnections();
      await new Promise((r) => jwksServer.close(r));
    }
  });
});

describe('claims', () => {
  it.each([
    { desc: 'no sub', patch: { sub: undefined } },
    { desc: 'an empty sub', patch: { sub: '' } },
    { desc: 'a numeric sub', patch: { sub: 42 } },
  ])('rejects $desc', async ({ patch }) => {
    const token = signRs256(header(), { ...baseClaims(idp.current), ...patch }, idp.current.privateJwk);
    await expectRejected(token, 'TOKEN_INVALID', /subject|sub/);
  });

  it.each([
    { desc: 'a string', groups: 'data-eng' },
    { desc: 'a list with a number', groups: ['data-eng', 7] },
    { desc: 'an object', groups: { admin: true } },
  ])('rejects groups given as $desc', async ({ groups }) => {
    const token = signRs256(header(), { ...baseClaims(idp.current), groups }, idp.current.privateJwk);
    await expectRejected(token, 'TOKEN_INVALID', /groups/);
  });

  it('reads groups from a configured claim and no other', async () => {
    const v = new TokenVerifier({ issuers: [{ issuer: idp.current.issuer, audience: 'hoop-agent', groupsClaim: 'https://clinic.example/roles' }] });
    const token = signRs256(header(), { ...baseClaims(idp.current), 'https://clinic.example/roles': ['compliance'] }, idp.current.privateJwk);
    expect((await v.verify(token)).groups).toEqual(['compliance']);
    const plain = signRs256(header(), baseClaims(idp.current), idp.current.privateJwk);
    expect((await v.verify(plain)).groups).toEqual([]);
  });
});

describe('garbage', () => {
  it.each([
    { desc: 'empty', token: '' },
    { desc: 'one word', token: 'hello' },
    { desc: 'dots only', token: '..' },
    { desc: 'three words', token: 'a.b.c' },
    { desc: 'a JWE shape', token: 'a.b.c.d.e' },
    { desc: 'the scheme included', token: 'Bearer abc.def.ghi' },
    { desc: 'non-JSON header', token: `${Buffer.from('not json').toString('base64url')}.e30.c2ln` },
    { desc: 'an empty header', token: 'e30.e30.c2ln' },
    { desc: 'a JSON array payload', token: `${Buffer.from('{"alg":"RS256"}').toString('base64url')}.${Buffer.from('[1]').toString('base64url')}.c2ln` },
    { desc: 'a huge token', token: `${'a'.repeat(20_000)}.b.c` },
    { desc: 'whitespace', token: ' eyJ.eyJ.c2ln ' },
  ])('rejects $desc', async ({ token }) => {
    await expectRejected(token, 'TOKEN_INVALID');
  });
});

describe('issuer discovery', () => {
  async function fakeIssuer(doc: (origin: string) => unknown) {
    const server = http.createServer((req, res) => {
      const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(req.url === '/.well-known/openid-configuration' ? doc(origin) : {}));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return {
      origin,
      close: () => new Promise((r) => { server.closeAllConnections(); server.close(r); }),
    };
  }

  it('refuses a discovery document that names another issuer', async () => {
    // The document points at the real issuer's keys, so only the issuer check stands in the way.
    const fake = await fakeIssuer(() => ({ issuer: idp.current.issuer, jwks_uri: `${idp.current.issuer}/jwks` }));
    try {
      const v = new TokenVerifier({ issuers: [{ issuer: fake.origin, audience: 'hoop-agent' }] });
      const token = signRs256(header(), { ...baseClaims(idp.current), iss: fake.origin }, idp.current.privateJwk);
      await expectRejected(token, 'ISSUER_UNREACHABLE', undefined, v);
    } finally {
      await fake.close();
    }
  });

  it('refuses a jwks_uri over plain http to a non-loopback host', async () => {
    const fake = await fakeIssuer((origin) => ({ issuer: origin, jwks_uri: 'http://keys.example/jwks' }));
    try {
      const v = new TokenVerifier({ issuers: [{ issuer: fake.origin, audience: 'hoop-agent' }] });
      await expectRejected(signRs256(header(), { ...baseClaims(idp.current), iss: fake.origin }, idp.current.privateJwk), 'ISSUER_UNREACHABLE', undefined, v);
    } finally {
      await fake.close();
    }
  });

  it('reports an unreachable issuer as such, and does not hammer it', async () => {
    const fake = await fakeIssuer(() => ({}));
    await fake.close(); // the port is now closed
    const v = new TokenVerifier({ issuers: [{ issuer: fake.origin, audience: 'hoop-agent' }] });
    const token = signRs256(header(), { ...baseClaims(idp.current), iss: fake.origin }, idp.current.privateJwk);
    const first = await expectRejected(token, 'ISSUER_UNREACHABLE', /discovery failed/, v);
    expect(first.message).toMatch(/could not fetch/);
    await expectRejected(token, 'ISSUER_UNREACHABLE', /failed recently/, v);
  });

  it('reports unreachable keys as the issuer\'s fault, not the token\'s', async () => {
    const fake = await fakeIssuer(() => ({}));
    await fake.close();
    const v = new TokenVerifier({ issuers: [{ issuer: idp.current.issuer, audience: 'hoop-agent', jwksUri: `${fake.origin}/jwks` }] });
    const token = await idp.current.clientCredentialsToken('ci-nightly', 'ci-nightly-secret');
    await expectRejected(token, 'ISSUER_UNREACHABLE', /keys could not be fetched/, v);
  });

  it('shares one discovery fetch among concurrent first verifications, then caches it', async () => {
    let docs = 0;
    // An issuer whose discovery document points at the local issuer's real JWKS.
    const fake = await fakeIssuer((origin) => {
      docs++;
      return { issuer: origin, jwks_uri: `${idp.current.issuer}/jwks` };
    });
    try {
      const v = new TokenVerifier({ issuers: [{ issuer: fake.origin, audience: 'hoop-agent' }] });
      const token = signRs256(header(), { ...baseClaims(idp.current), iss: fake.origin }, idp.current.privateJwk);
      const ids = await Promise.all(Array.from({ length: 10 }, () => v.verify(token)));
      expect(ids.every((i) => i.sub === 'u-alice' && i.issuer === fake.origin)).toBe(true);
      await v.verify(token);
      expect(docs).toBe(1);
    } finally {
      await fake.close();
    }
  });
});

describe('configuration', () => {
  it.each([
    { desc: 'a symmetric algorithm', cfg: { algorithms: ['HS256'] } },
    { desc: 'alg none', cfg: { algorithms: ['none'] } },
    { desc: 'no algorithms', cfg: { algorithms: [] } },
    { desc: 'an http issuer off loopback', cfg: { issuer: 'http://login.example.com' } },
    { desc: 'an empty audience', cfg: { audience: '' } },
    { desc: 'an http jwksUri off loopback', cfg: { jwksUri: 'http://keys.example/jwks' } },
    { desc: 'a zero maxTokenAgeSec', cfg: { maxTokenAgeSec: 0 } },
    { desc: 'a fractional maxTokenAgeSec', cfg: { maxTokenAgeSec: 1.5 } },
    { desc: 'a maxTokenAgeSec in milliseconds', cfg: { maxTokenAgeSec: 86_400_000 } },
    { desc: 'a NaN maxTokenAgeSec', cfg: { maxTokenAgeSec: Number.NaN } },
  ])('refuses $desc', ({ cfg }) => {
    expect(() => new TokenVerifier({ issuers: [{ issuer: 'https://login.example.com', audience: 'hoop-agent', ...cfg }] })).toThrow(TypeError);
  });

  it('refuses the same issuer twice', () => {
    const c = { issuer: 'https://login.example.com', audience: 'hoop-agent' };
    expect(() => new TokenVerifier({ issuers: [c, c] })).toThrow(/twice/);
  });
});

describe('bearerFrom', () => {
  it.each([
    { desc: 'Bearer', headers: { authorization: 'Bearer abc.def.ghi' }, want: 'abc.def.ghi' },
    { desc: 'lower-case scheme', headers: { authorization: 'bearer abc.def.ghi' }, want: 'abc.def.ghi' },
    { desc: 'upper-case scheme', headers: { authorization: 'BEARER abc' }, want: 'abc' },
    { desc: 'b64token padding', headers: { authorization: 'Bearer YWJj==' }, want: 'YWJj==' },
    { desc: 'Basic', headers: { authorization: 'Basic YWJjOmRlZg==' }, want: undefined },
    { desc: 'no token', headers: { authorization: 'Bearer ' }, want: undefined },
    { desc: 'two tokens', headers: { authorization: 'Bearer a b' }, want: undefined },
    { desc: 'no header', headers: {}, want: undefined },
    { desc: 'another header', headers: { 'x-access-token': 'abc' }, want: undefined },
    { desc: 'a cookie', headers: { cookie: 'access_token=abc' }, want: undefined },
  ])('$desc → $want', ({ headers, want }) => {
    expect(bearerFrom(headers)).toBe(want);
  });
});

describe('ambiguous claims (corpus AU-025)', () => {
  it('rejects a correctly signed token that names sub twice', async () => {
    const { CompactSign, importJWK } = await import('jose');
    const claims = JSON.stringify(baseClaims(idp.current));
    // The same claims with a second "sub" appended: valid JSON, but two parsers may read two identities.
    const payload = claims.slice(0, -1) + ',"sub":"nhi:admin-bot"}';
    const key = await importJWK(idp.current.privateJwk, 'RS256');
    const token = await new CompactSign(new TextEncoder().encode(payload)).setProtectedHeader(header()).sign(key);
    await expectRejected(token, 'TOKEN_INVALID', /"sub" twice/);
  });

  it.each([
    { desc: 'no duplicates', json: '{"sub":"a","x":{"sub":1},"y":["sub"]}', want: undefined },
    { desc: 'top-level duplicate', json: '{"sub":"a","x":1,"sub":"b"}', want: 'sub' },
    { desc: 'escaped quotes inside names and values', json: '{"a\\"b":1,"c":"x,\\"a\\\\\\"b\\":2","a\\"b":3}', want: 'a"b' },
  ])('finds duplicate top-level names: $desc', async ({ json, want }) => {
    const { duplicateTopLevelKey } = await import('../../../agent/src/identity/verify.js');
    expect(duplicateTopLevelKey(json)).toBe(want);
  });
});
