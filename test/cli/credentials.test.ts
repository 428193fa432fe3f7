// resolveToken and the machine logins: silent refresh for people (and NOT_AUTHENTICATED when the refresh
// token is revoked or garbage), client credentials from the environment, GitHub Actions ID tokens from
// a local stand-in for the Actions token service, --id-token-file, and explicit tokens.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { useIssuer } from '../harness/oidc.js';
import { machineLogin, resolveToken, saveLogin, toStoredLogin, currentLogin } from '../../cli/src/services/credentials.js';
import { TokenStore, type StoredLogin } from '../../cli/src/services/token-store.js';
import { login } from '../../cli/src/commands/login.js';
import { Output } from '../../cli/src/output.js';
import { capture, jwt, scriptedServer, tempEnv } from './helpers.js';

const issuer = useIssuer();
let t: Awaited<ReturnType<typeof tempEnv>>;
beforeEach(async () => (t = await tempEnv()));
afterEach(() => t.cleanup());

async function storeAliceLogin(now: number): Promise<StoredLogin> {
  const tokens = await issuer.current.mintDeviceFlowToken('alice@clinic.example');
  const stored = toStoredLogin(tokens, { issuer: issuer.current.issuer, method: 'device', clientId: 'hoopctl' }, now);
  await saveLogin(stored, { store: new TokenStore({ env: t.env }), env: t.env });
  return stored;
}

describe('people: silent refresh', () => {
  it('returns the stored token while it has more than 60 s left, without asking the issuer', async () => {
    const now = Date.now();
    const stored = await storeAliceLogin(now);
    expect(await resolveToken({ env: t.env, now: stored.expiresAt! - 61_000 })).toBe(stored.accessToken);
  });

  it('refreshes a token that expires within 60 s, stores the rotated refresh token, keeps the ID claims', async () => {
    const stored = await storeAliceLogin(Date.now());
    const token = await resolveToken({ env: t.env, now: stored.expiresAt! - 30_000 });
    expect(token).not.toBe(stored.accessToken);
    expect(decodeJwt(token)).toMatchObject({ sub: 'u-alice', aud: 'hoop-agent', groups: ['data-eng'] });
    const after = (await currentLogin({ env: t.env }))!.login;
    expect(after.accessToken).toBe(token);
    expect(after.refreshToken).not.toBe(stored.refreshToken);
    expect(after.idClaims).toMatchObject({ email: 'alice@clinic.example' });
  });

  it('two processes refreshing at once do not burn the rotated refresh token (renewal lock)', async () => {
    const stored = await storeAliceLogin(Date.now());
    const now = stored.expiresAt! - 30_000;
    const [a, b] = await Promise.all([resolveToken({ env: t.env, now }), resolveToken({ env: t.env, now })]);
    expect(a).toBe(b);
    // The grant is still alive: one more refresh works.
    const again = await resolveToken({ env: t.env, now: (await currentLogin({ env: t.env }))!.login.expiresAt! - 1000 });
    expect(again).not.toBe(a);
  });

  it.each([
    { desc: 'garbage', spoil: () => 'not-a-refresh-token' },
    { desc: 'revoked (an already rotated one: reuse revokes the grant)', spoil: (old: string) => old },
  ])('a $desc refresh token → NOT_AUTHENTICATED "your session expired; run `hoopctl login`"', async ({ spoil }) => {
    const stored = await storeAliceLogin(Date.now());
    if (spoil.length) {
      // Rotate once so the stored refresh token is the old one again.
      await resolveToken({ env: t.env, now: stored.expiresAt! - 30_000 });
    }
    const current = (await currentLogin({ env: t.env }))!.login;
    await new TokenStore({ env: t.env }).save({ ...current, refreshToken: spoil(stored.refreshToken!), expiresAt: Date.now() + 10_000 });
    await expect(resolveToken({ env: t.env })).rejects.toMatchObject({
      code: 'NOT_AUTHENTICATED',
      exitCode: 3,
      message: 'your session expired; run `hoopctl login`',
    });
  });

  it('with no login at all → NOT_AUTHENTICATED, exit 3', async () => {
    await expect(resolveToken({ env: t.env })).rejects.toMatchObject({ code: 'NOT_AUTHENTICATED', exitCode: 3, message: 'not logged in' });
  });

  it('--token / HOOPCTL_TOKEN win over the stored login', async () => {
    await storeAliceLogin(Date.now());
    expect(await resolveToken({ env: { ...t.env, HOOPCTL_TOKEN: 'from-env' } })).toBe('from-env');
    expect(await resolveToken({ flagToken: 'from-flag', env: { ...t.env, HOOPCTL_TOKEN: 'from-env' } })).toBe('from-flag');
  });
});

describe('machines', () => {
  it('client credentials from HOOPCTL_CLIENT_ID/SECRET; renewal re-runs the grant (no refresh token)', async () => {
    const env = { ...t.env, HOOPCTL_CLIENT_ID: 'ci-nightly', HOOPCTL_CLIENT_SECRET: 'ci-nightly-secret', HOOPCTL_ISSUER: issuer.current.issuer, CI: 'true' };
    const io = capture();
    let result;
    try {
      result = await login({ ci: true }, new Output({ json: true }), { env });
    } finally {
      io.restore();
    }
    expect(result).toMatchObject({ method: 'client_credentials', store: 'file', identity: { clientId: 'ci-nightly', groups: ['data-eng'] } });
    const stored = (await currentLogin({ env }))!.login;
    expect(stored.refreshToken).toBeUndefined();
    expect(JSON.stringify(stored)).not.toContain('ci-nightly-secret');
    expect(decodeJwt(stored.accessToken)).toMatchObject({ client_id: 'ci-nightly', aud: 'hoop-agent' });

    const renewed = await resolveToken({ env, now: stored.expiresAt! - 10_000 });
    expect(renewed).not.toBe(stored.accessToken);
    expect(decodeJwt(renewed)).toMatchObject({ client_id: 'ci-nightly' });
    // Without the secret in the environment, renewal cannot happen: say so.
    const latest = (await currentLogin({ env }))!.login;
    await expect(resolveToken({ env: t.env, now: latest.expiresAt! + 1 })).rejects.toMatchObject({ code: 'NOT_AUTHENTICATED', exitCode: 3 });
  });

  it('a wrong client secret → NOT_AUTHENTICATED, exit 3', async () => {
    const env = { ...t.env, HOOPCTL_CLIENT_ID: 'ci-nightly', HOOPCTL_CLIENT_SECRET: 'wrong' };
    await expect(machineLogin({ env, issuer: issuer.current.issuer, audience: 'hoop-agent' })).rejects.toMatchObject({
      code: 'NOT_AUTHENTICATED',
      exitCode: 3,
      message: expect.stringContaining('invalid_client'),
    });
  });

  it('GitHub Actions: asks the Actions token service for the audience, stores and presents the token as is', async () => {
    const nowSec = Math.floor(Date.now() / 1000);
    const claims = { iss: 'https://token.actions.githubusercontent.com', aud: 'hoop-agent', sub: 'repo:acme/etl:ref:refs/heads/main', repository: 'acme/etl', ref: 'refs/heads/main', workflow: 'nightly' };
    const first = jwt({ ...claims, exp: nowSec + 300, jti: '1' });
    const second = jwt({ ...claims, exp: nowSec + 600, jti: '2' });
    const issued = [first, second];
    const actions = await scriptedServer((req) => {
      if (!req.url.startsWith('/_apis/idtoken')) return undefined;
      if (req.headers.authorization !== 'bearer request-token') return { status: 401, json: { message: 'bad token' } };
      return { status: 200, json: { count: 1, value: issued.shift() } };
    });
    try {
      const env = {
        ...t.env,
        CI: 'true',
        GITHUB_ACTIONS: 'true',
        ACTIONS_ID_TOKEN_REQUEST_URL: `${actions.url}/_apis/idtoken?api-version=2.0`,
        ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'request-token',
        // Lower in the order: must not be used while a workload identity is available.
        HOOPCTL_CLIENT_ID: 'ci-nightly',
        HOOPCTL_CLIENT_SECRET: 'ci-nightly-secret',
      };
      const io = capture();
      let result;
      try {
        result = await login({ ci: true }, new Output({ json: true }), { env });
      } finally {
        io.restore();
      }
      const u = new URL(actions.seen[0].url, actions.url);
      expect(u.searchParams.get('api-version')).toBe('2.0');
      expect(u.searchParams.get('audience')).toBe('hoop-agent');
      expect(result).toMatchObject({
        method: 'workload_identity',
        issuer: 'https://token.actions.githubusercontent.com',
        identity: { subject: 'repo:acme/etl:ref:refs/heads/main', ci: { repository: 'acme/etl', ref: 'refs/heads/main', workflow: 'nightly' } },
      });
      expect(await resolveToken({ env })).toBe(first);
      // Near expiry it asks the Actions service again rather than refreshing.
      expect(await resolveToken({ env, now: (nowSec + 300) * 1000 - 5_000 })).toBe(second);
      expect(actions.seen).toHaveLength(2);
    } finally {
      await actions.close();
    }
  });

  it('--audience is what the Actions service is asked for', async () => {
    const actions = await scriptedServer(() => ({ status: 200, json: { value: jwt({ iss: 'https://token.actions.githubusercontent.com', sub: 'x', exp: Math.floor(Date.now() / 1000) + 300 }) } }));
    try {
      const env = { ...t.env, ACTIONS_ID_TOKEN_REQUEST_URL: `${actions.url}/x?api-version=2.0`, ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'r' };
      await machineLogin({ env, audience: 'https://hoop.example.com' });
      expect(new URL(actions.seen[0].url, actions.url).searchParams.get('audience')).toBe('https://hoop.example.com');
      expect(actions.seen[0].headers.authorization).toBe('bearer r');
    } finally {
      await actions.close();
    }
  });

  it('--id-token-file: the file\'s JWT is stored as is, and read again when it expires', async () => {
    const file = join(t.dir, 'token.jwt');
    const nowSec = Math.floor(Date.now() / 1000);
    const tok = jwt({ iss: 'https://gitlab.example.com', sub: 'project_path:acme/etl:ref_type:branch:ref:main', exp: nowSec + 120 });
    await writeFile(file, tok + '\n');
    const stored = await machineLogin({ env: t.env, idTokenFile: file, audience: 'hoop-agent' });
    expect(stored).toMatchObject({ method: 'workload_identity', accessToken: tok, issuer: 'https://gitlab.example.com', workload: { kind: 'file', path: file } });
    await saveLogin(stored, { store: new TokenStore({ env: t.env }), env: t.env });
    const fresh = jwt({ iss: 'https://gitlab.example.com', sub: 'p', exp: nowSec + 600 });
    await writeFile(file, fresh);
    expect(await resolveToken({ env: t.env, now: (nowSec + 100) * 1000 })).toBe(fresh);
  });

  it('an explicit token is validated (not expired) and stored as is', async () => {
    const nowSec = Math.floor(Date.now() / 1000);
    const tok = jwt({ iss: issuer.current.issuer, sub: 'u-bob', exp: nowSec + 300 });
    expect(await machineLogin({ env: t.env, flagToken: tok, audience: 'hoop-agent' })).toMatchObject({ method: 'token', accessToken: tok, issuer: issuer.current.issuer });
    await expect(machineLogin({ env: t.env, flagToken: jwt({ sub: 'x', exp: nowSec - 10 }), audience: 'hoop-agent' })).rejects.toMatchObject({ code: 'NOT_AUTHENTICATED' });
  });

  it('nothing usable → one line naming every option, exit 3', async () => {
    const err = await machineLogin({ env: t.env, audience: 'hoop-agent' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'NOT_AUTHENTICATED', exitCode: 3, hint: undefined });
    const msg = (err as Error).message;
    expect(msg).not.toContain('\n');
    for (const opt of ['--token', 'HOOPCTL_TOKEN', '--id-token-file', 'GitHub Actions', 'HOOPCTL_CLIENT_ID', 'HOOPCTL_CLIENT_SECRET']) expect(msg).toContain(opt);
  });
});
