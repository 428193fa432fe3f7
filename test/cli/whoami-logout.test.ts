// whoami (claims, expiry, the agent's view of this identity) and logout (both stores, idempotent,
// refresh token revoked at the issuer), called as command functions with stdout captured.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { stat } from 'node:fs/promises';
import { useIssuer } from '../harness/oidc.js';
import { resolveToken, saveLogin, toStoredLogin } from '../../cli/src/services/credentials.js';
import { TokenStore } from '../../cli/src/services/token-store.js';
import { whoami, whoamiText, agentWhoamiUrl } from '../../cli/src/commands/whoami.js';
import { logout } from '../../cli/src/commands/logout.js';
import { Output } from '../../cli/src/output.js';
import { capture, scriptedServer, tempEnv } from './helpers.js';

const issuer = useIssuer();
let t: Awaited<ReturnType<typeof tempEnv>>;
beforeEach(async () => (t = await tempEnv()));
afterEach(() => t.cleanup());

async function loginAlice() {
  const tokens = await issuer.current.mintDeviceFlowToken('alice@clinic.example');
  const stored = toStoredLogin(tokens, { issuer: issuer.current.issuer, method: 'device', clientId: 'hoopctl' }, Date.now());
  await saveLogin(stored, { store: new TokenStore({ env: t.env }), env: t.env });
  return stored;
}

async function runJson<T>(fn: (out: Output) => Promise<T>): Promise<{ result: T; stdout: string; stderr: string }> {
  const io = capture();
  try {
    const result = await fn(new Output({ json: true }));
    return { result, stdout: io.stdout(), stderr: io.stderr() };
  } finally {
    io.restore();
  }
}

describe('whoami', () => {
  it('shows subject, email, groups, issuer and expiry, and the connections the agent allows (one JSON document)', async () => {
    const stored = await loginAlice();
    const agent = await scriptedServer((req) => {
      if (req.url !== '/api/whoami') return undefined;
      if (req.headers.authorization !== `Bearer ${stored.accessToken}`) return { status: 401, json: { error: { code: 'UNAUTHORIZED', message: 'bad token' } } };
      return {
        status: 200,
        json: {
          identity: { sub: 'u-alice', email: 'alice@clinic.example', groups: ['data-eng'], issuer: issuer.current.issuer },
          connections: [{ name: 'prod-db', allowed: true }, { name: 'billing', allowed: false, reason: 'requires group finance' }],
        },
      };
    });
    try {
      const now = stored.expiresAt! - 600_000;
      const { result, stdout } = await runJson((out) => whoami({ agent: agent.url.replace('http:', 'ws:') }, out, { env: t.env, now: () => now }));
      expect(stdout.trim().split('\n')).toHaveLength(1);
      expect(JSON.parse(stdout)).toEqual(result);
      expect(result.identity).toMatchObject({
        subject: 'u-alice',
        email: 'alice@clinic.example',
        groups: ['data-eng'],
        issuer: issuer.current.issuer,
        method: 'device',
        expiresAt: new Date(stored.expiresAt!).toISOString(),
        expiresInSec: 600,
      });
      expect(result.agent).toEqual({
        url: agent.url.replace('http:', 'ws:'),
        status: 'ok',
        connections: [{ name: 'prod-db', allowed: true }, { name: 'billing', allowed: false, reason: 'requires group finance' }],
      });
      const text = whoamiText(result);
      expect(text).toMatch(/^Subject: +u-alice$/m);
      expect(text).toMatch(/^Expires: +in 10m 0s \(/m);
      expect(text).toContain('  prod-db  allowed\n  billing  not allowed: requires group finance');
    } finally {
      await agent.close();
    }
  });

  it('an agent without /api/whoami (404) is reported as too old, not as an error', async () => {
    await loginAlice();
    const agent = await scriptedServer(() => undefined);
    try {
      const { result } = await runJson((out) => whoami({ agent: agent.url }, out, { env: t.env }));
      expect(result.agent).toMatchObject({ status: 'unsupported', message: expect.stringContaining('older than this hoopctl') });
      expect(whoamiText(result)).toContain('does not answer /api/whoami');
    } finally {
      await agent.close();
    }
  });

  it('an unreachable agent is reported in the result', async () => {
    await loginAlice();
    const { result } = await runJson((out) => whoami({ agent: 'ws://127.0.0.1:1' }, out, { env: t.env }));
    expect(result.agent).toMatchObject({ status: 'unreachable' });
  });

  it('never sends the token over plain http to another host', () => {
    expect(() => agentWhoamiUrl('ws://agent.example.com:8443')).toThrow(/in clear/);
    expect(agentWhoamiUrl('wss://agent.example.com:8443/base').href).toBe('https://agent.example.com:8443/base/api/whoami');
  });

  it('not logged in → NOT_AUTHENTICATED (exit 3)', async () => {
    const io = capture();
    try {
      await expect(whoami({}, new Output({ json: true }), { env: t.env })).rejects.toMatchObject({ code: 'NOT_AUTHENTICATED', exitCode: 3 });
    } finally {
      io.restore();
    }
  });
});

describe('logout', () => {
  it('removes the stored login and is idempotent', async () => {
    await loginAlice();
    const first = await runJson((out) => logout(out, { env: t.env }));
    // The local issuer does not enable oidc-provider's revocation feature, so there is nothing to call.
    expect(first.result).toMatchObject({ removed: [{ store: 'file', issuer: issuer.current.issuer }], revocation: 'not-offered' });
    expect(first.stdout.trim().split('\n')).toHaveLength(1);
    await expect(stat(new TokenStore({ env: t.env }).filePath)).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(resolveToken({ env: t.env })).rejects.toMatchObject({ code: 'NOT_AUTHENTICATED' });

    const second = await runJson((out) => logout(out, { env: t.env }));
    expect(second.result).toMatchObject({ removed: [], revocation: null });
  });

  it('revokes the refresh token at an issuer that offers revocation (RFC 7009)', async () => {
    const idp = await scriptedServer((req) => {
      if (req.url === '/.well-known/openid-configuration') return { status: 200, json: { issuer: idp.url, token_endpoint: `${idp.url}/token`, revocation_endpoint: `${idp.url}/revoke` } };
      if (req.url === '/revoke') return { status: 200 };
      return undefined;
    });
    try {
      const stored = toStoredLogin({ accessToken: 'at', refreshToken: 'rt-1', expiresIn: 300 }, { issuer: idp.url, method: 'device', clientId: 'hoopctl' }, Date.now());
      await saveLogin(stored, { store: new TokenStore({ env: t.env }), env: t.env });
      const { result, stdout } = await runJson((out) => logout(out, { env: t.env }));
      expect(result.revocation).toBe('revoked');
      expect(JSON.parse(stdout)).toEqual(result);
      const form = new URLSearchParams(idp.seen.find((r) => r.url === '/revoke')!.body);
      expect(Object.fromEntries(form)).toEqual({ token: 'rt-1', token_type_hint: 'refresh_token', client_id: 'hoopctl' });
    } finally {
      await idp.close();
    }
  });
});
