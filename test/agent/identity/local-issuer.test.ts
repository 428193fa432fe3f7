// The local issuer behaves like a production IdP: what the demo and `hoopctl login` tests rely on.
import { describe, expect, it } from 'vitest';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { DEMO_PASSWORD } from '../../../cli/src/demo/issuer.js';
import { useIssuer } from '../../harness/oidc.js';

const idp = useIssuer();

async function post(path: string, form: Record<string, string>, auth?: string) {
  const res = await fetch(`${idp.current.issuer}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...(auth ? { authorization: auth } : {}) },
    body: new URLSearchParams(form),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const startDevice = () => post('/device/auth', { client_id: 'hoopctl', scope: 'openid email groups offline_access db:connect' });
const pollDevice = (deviceCode: string) =>
  post('/token', { grant_type: 'urn:ietf:params:oauth:grant-type:device_code', device_code: deviceCode, client_id: 'hoopctl' });

describe('discovery', () => {
  it('advertises the device flow and client credentials, with its own issuer string', async () => {
    const doc = (await (await fetch(`${idp.current.issuer}/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
    expect(doc.issuer).toBe(idp.current.issuer);
    expect(doc.issuer).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(doc.device_authorization_endpoint).toBe(`${idp.current.issuer}/device/auth`);
    expect(doc.grant_types_supported).toEqual(expect.arrayContaining(['client_credentials', 'urn:ietf:params:oauth:grant-type:device_code', 'refresh_token']));
    const jwks = (await (await fetch(String(doc.jwks_uri))).json()) as { keys: Record<string, unknown>[] };
    expect(jwks.keys).toEqual([expect.objectContaining({ kid: idp.current.privateJwk.kid, kty: 'RSA', alg: 'RS256' })]);
    expect(jwks.keys[0]).not.toHaveProperty('d');
  });
});

describe('client credentials', () => {
  it('issues an at+jwt for the agent with the client groups', async () => {
    const token = await idp.current.clientCredentialsToken('ci-nightly', 'ci-nightly-secret');
    expect(decodeProtectedHeader(token)).toMatchObject({ alg: 'RS256', typ: 'at+jwt', kid: idp.current.privateJwk.kid });
    expect(decodeJwt(token)).toMatchObject({ sub: 'ci-nightly', aud: 'hoop-agent', scope: 'db:connect', groups: ['data-eng'] });
  });

  it('refuses a wrong secret and the public CLI client', async () => {
    await expect(idp.current.clientCredentialsToken('ci-nightly', 'nope')).rejects.toThrow(/invalid_client/);
    const res = await post('/token', { grant_type: 'client_credentials', client_id: 'hoopctl', scope: 'db:connect' });
    expect(res.status).toBe(400);
    expect(res.body.error_description).toMatch(/grant type is not allowed/);
  });

  it('refuses a resource other than the agent', async () => {
    const auth = `Basic ${Buffer.from('ci-nightly:ci-nightly-secret').toString('base64')}`;
    const res = await post('/token', { grant_type: 'client_credentials', scope: 'db:connect', resource: 'urn:other' }, auth);
    expect(res.body.error).toBe('invalid_target');
  });
});

describe('device flow', () => {
  it('goes pending, is approved in the browser, then yields access, id and refresh tokens', async () => {
    const started = await startDevice();
    expect(started.body.user_code).toMatch(/^[A-Z]{4}-[A-Z]{4}$/);
    expect((await pollDevice(String(started.body.device_code))).body.error).toBe('authorization_pending');

    await idp.current.approveDeviceCode(String(started.body.user_code), 'alice@clinic.example');
    const done = await pollDevice(String(started.body.device_code));
    expect(done.status).toBe(200);
    expect(decodeJwt(String(done.body.access_token))).toMatchObject({ sub: 'u-alice', aud: 'hoop-agent', email: 'alice@clinic.example', groups: ['data-eng'] });
    expect(decodeJwt(String(done.body.id_token))).toMatchObject({ sub: 'u-alice', aud: 'hoopctl', email: 'alice@clinic.example', groups: ['data-eng'] });
    expect(done.body.refresh_token).toEqual(expect.any(String));

    const refresh = (token: unknown) => post('/token', { grant_type: 'refresh_token', refresh_token: String(token), client_id: 'hoopctl' });
    const refreshed = await refresh(done.body.refresh_token);
    expect(refreshed.status).toBe(200);
    expect(decodeJwt(String(refreshed.body.access_token))).toMatchObject({ sub: 'u-alice', aud: 'hoop-agent', groups: ['data-eng'] });
    expect(refreshed.body.refresh_token).not.toBe(done.body.refresh_token); // rotated for a public client

    // A device code is single use, and replaying it revokes the whole grant, refresh tokens included.
    expect((await pollDevice(String(started.body.device_code))).body.error).toBe('invalid_grant');
    expect((await refresh(refreshed.body.refresh_token)).body.error).toBe('invalid_grant');
  });

  it('refuses a wrong password on the login page', async () => {
    const started = await startDevice();
    await expect(idp.current.approveDeviceCode(String(started.body.user_code), 'alice@clinic.example', { password: `${DEMO_PASSWORD}x` }))
      .rejects.toThrow(/login refused: Wrong email or password/);
    expect((await pollDevice(String(started.body.device_code))).body.error).toBe('authorization_pending');
  });

  it('reports access_denied to the CLI when the user denies consent', async () => {
    const started = await startDevice();
    await idp.current.approveDeviceCode(String(started.body.user_code), 'carol@clinic.example', { deny: true });
    expect((await pollDevice(String(started.body.device_code))).body.error).toBe('access_denied');
  });

  it('refuses an unknown user code and a code that was already used', async () => {
    await expect(idp.current.approveDeviceCode('BCDF-GHJK', 'alice@clinic.example')).rejects.toThrow(/not valid/);
    const started = await startDevice();
    await idp.current.approveDeviceCode(String(started.body.user_code), 'alice@clinic.example');
    await expect(idp.current.approveDeviceCode(String(started.body.user_code), 'carol@clinic.example')).rejects.toThrow(/not valid/);
  });

  it('mints a token for each demo user', async () => {
    const carol = await idp.current.mintDeviceFlowToken('carol@clinic.example');
    expect(decodeJwt(carol.accessToken)).toMatchObject({ sub: 'u-carol', groups: ['compliance'] });
    expect(carol.expiresIn).toBe(900);
  });
});
