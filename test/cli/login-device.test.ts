// The device authorization grant (RFC 8628) end to end against the real local issuer, driven the way a
// person would (the issuer's own pages, via approveDeviceCode), plus the polling rules against a
// scripted token endpoint: interval, slow_down (+5 s), expired_token, access_denied.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { useIssuer } from '../harness/oidc.js';
import { deviceLogin } from '../../cli/src/services/credentials.js';
import { login } from '../../cli/src/commands/login.js';
import { Output } from '../../cli/src/output.js';
import { UserError } from '../../cli/src/errors.js';
import type { DeviceStatus } from '../../cli/src/services/oidc-client.js';
import { capture, fakeClock, scriptedServer, tempEnv } from './helpers.js';

const issuer = useIssuer();

describe('device flow against the local issuer', () => {
  it('shows a code, waits while pending, and gets tokens once alice approves in the browser', async () => {
    const clock = fakeClock(Date.now(), 40);
    const statuses: DeviceStatus['state'][] = [];
    let approving: Promise<void> | undefined;
    let shown: { userCode: string; verificationUri: string; interval: number } | undefined;
    const got = await deviceLogin({
      issuer: issuer.current.issuer,
      clientId: issuer.current.cliClientId,
      clock,
      onCode: (auth) => {
        shown = auth;
        approving = issuer.current.approveDeviceCode(auth.userCode, 'alice@clinic.example');
      },
      onStatus: (s) => statuses.push(s.state),
    });
    await approving;
    expect(shown?.verificationUri).toBe(`${issuer.current.issuer}/device`);
    expect(shown?.userCode).toMatch(/^[A-Z]{4}-[A-Z]{4}$/);
    expect(statuses[0]).toBe('waiting');
    expect(statuses.at(-1)).toBe('approved');
    // Every poll waited the issuer's interval first; nothing was sent faster.
    expect(new Set(clock.sleeps)).toEqual(new Set([shown!.interval * 1000]));

    expect(got.method).toBe('device');
    expect(got.issuer).toBe(issuer.current.issuer);
    expect(got.refreshToken).toEqual(expect.any(String));
    expect(decodeJwt(got.accessToken)).toMatchObject({ sub: 'u-alice', aud: 'hoop-agent', groups: ['data-eng'], scope: expect.stringContaining('db:connect') });
    expect(got.idClaims).toMatchObject({ sub: 'u-alice', email: 'alice@clinic.example', groups: ['data-eng'] });
    expect(got.expiresAt).toBe(clock.now() + 900_000);
  });

  it('stops with a sentence when the person presses Deny', async () => {
    const clock = fakeClock(Date.now(), 40);
    let denying: Promise<void> | undefined;
    const statuses: string[] = [];
    const err = await deviceLogin({
      issuer: issuer.current.issuer,
      clientId: 'hoopctl',
      clock,
      onCode: (auth) => (denying = issuer.current.approveDeviceCode(auth.userCode, 'carol@clinic.example', { deny: true })),
      onStatus: (s) => statuses.push(s.state),
    }).catch((e: unknown) => e);
    await denying;
    expect(err).toBeInstanceOf(UserError);
    expect(err).toMatchObject({ code: 'LOGIN_DENIED', exitCode: 3, message: 'the sign-in was denied in the browser, so nothing was stored' });
    expect(statuses.at(-1)).toBe('denied');
  });

  it('gives up when the code expires unapproved (ten minutes of fake time)', async () => {
    const clock = fakeClock(Date.now(), 0);
    const statuses: string[] = [];
    let code = '';
    const t0 = clock.now();
    const err = await deviceLogin({
      issuer: issuer.current.issuer,
      clientId: 'hoopctl',
      clock,
      onCode: (a) => (code = a.userCode),
      onStatus: (s) => statuses.push(s.state),
    }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'LOGIN_EXPIRED', exitCode: 3, message: `the code ${code} expired before it was approved, so nothing was stored` });
    expect(statuses.at(-1)).toBe('expired');
    expect(clock.now() - t0).toBeGreaterThanOrEqual(600_000);
    expect(clock.now() - t0).toBeLessThan(610_000);
  });

  describe('`hoopctl login` without a TTY (--device): plain lines on stderr, one JSON document on stdout', () => {
    let t: Awaited<ReturnType<typeof tempEnv>>;
    beforeEach(async () => (t = await tempEnv()));
    afterEach(() => t.cleanup());

    it('logs in, stores the tokens in a 0600 file, and prints exactly one document', async () => {
      const clock = fakeClock(Date.now(), 40);
      const io = capture();
      let approving: Promise<void> | undefined;
      const poller = setInterval(() => {
        const m = /enter the code ([A-Z]{4}-[A-Z]{4})/.exec(io.stderr());
        if (m && !approving) approving = issuer.current.approveDeviceCode(m[1], 'alice@clinic.example');
      }, 10);
      let result;
      try {
        result = await login({ issuer: issuer.current.issuer, device: true, agent: 'wss://agent.example:8443' }, new Output({ json: true }), {
          env: t.env,
          clock,
          personPresent: false,
        });
      } finally {
        clearInterval(poller);
        io.restore();
      }
      await approving;
      const docs = io.stdout().trim().split('\n');
      expect(docs).toHaveLength(1);
      expect(JSON.parse(docs[0])).toEqual(result);
      expect(result).toMatchObject({
        issuer: issuer.current.issuer,
        method: 'device',
        store: 'file',
        agent: 'wss://agent.example:8443',
        identity: { subject: 'u-alice', email: 'alice@clinic.example', groups: ['data-eng'] },
      });
      expect(io.stderr()).toContain(`open ${issuer.current.issuer}/device and enter the code`);
      expect(io.stderr()).toContain('hoopctl: approved');
      const file = join(t.env.XDG_CONFIG_HOME!, 'hoopctl', 'credentials.json');
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      expect((await stat(join(t.env.XDG_CONFIG_HOME!, 'hoopctl'))).mode & 0o777).toBe(0o700);
    });
  });
});

describe('polling rules (scripted token endpoint)', () => {
  const cases: { desc: string; replies: { status: number; json: unknown }[]; wantSleeps: number[]; wantErr?: { code: string; message: RegExp } }[] = [
    {
      desc: 'waits `interval` before each poll, adds 5 s for good on every slow_down',
      replies: [pending(), slowDown(), pending(), slowDown(), ok()],
      wantSleeps: [3000, 3000, 8000, 8000, 13000],
    },
    {
      desc: 'expired_token from the issuer ends the login with a sentence',
      replies: [pending(), { status: 400, json: { error: 'expired_token' } }],
      wantSleeps: [3000, 3000],
      wantErr: { code: 'LOGIN_EXPIRED', message: /^the code ABCD-EFGH expired before it was approved/ },
    },
    {
      desc: 'access_denied from the issuer ends the login with a sentence',
      replies: [{ status: 400, json: { error: 'access_denied' } }],
      wantSleeps: [3000],
      wantErr: { code: 'LOGIN_DENIED', message: /denied in the browser/ },
    },
    {
      desc: 'any other error is reported, not retried',
      replies: [{ status: 400, json: { error: 'invalid_grant', error_description: 'grant request is invalid' } }],
      wantSleeps: [3000],
      wantErr: { code: 'LOGIN_FAILED', message: /invalid_grant: grant request is invalid/ },
    },
  ];

  it.each(cases)('$desc', async ({ replies, wantSleeps, wantErr }) => {
    const queue = [...replies];
    const srv = await scriptedServer((req) => {
      if (req.url === '/.well-known/openid-configuration') {
        return { status: 200, json: { issuer: srv.url, token_endpoint: `${srv.url}/token`, device_authorization_endpoint: `${srv.url}/device/auth` } };
      }
      if (req.url === '/device/auth') {
        return { status: 200, json: { device_code: 'dc', user_code: 'ABCD-EFGH', verification_uri: `${srv.url}/device`, expires_in: 600, interval: 3 } };
      }
      if (req.url === '/token') return queue.shift();
      return undefined;
    });
    try {
      const clock = fakeClock(Date.now(), 0);
      const run = deviceLogin({ issuer: srv.url, clientId: 'hoopctl', clock });
      if (wantErr) {
        const err = await run.catch((e: unknown) => e);
        expect(err).toMatchObject({ code: wantErr.code, exitCode: 3 });
        expect((err as Error).message).toMatch(wantErr.message);
      } else {
        expect((await run).accessToken).toBe('at');
      }
      expect(clock.sleeps).toEqual(wantSleeps);
      const polls = srv.seen.filter((r) => r.url === '/token');
      expect(new URLSearchParams(polls[0].body).get('grant_type')).toBe('urn:ietf:params:oauth:grant-type:device_code');
      const start = new URLSearchParams(srv.seen.find((r) => r.url === '/device/auth')!.body);
      expect(start.get('scope')).toBe('openid email profile groups offline_access db:connect');
    } finally {
      await srv.close();
    }
  });

  it('refuses an issuer whose discovery document names another issuer', async () => {
    const srv = await scriptedServer(() => ({ status: 200, json: { issuer: 'https://evil.example', token_endpoint: 'https://evil.example/token' } }));
    try {
      await expect(deviceLogin({ issuer: srv.url, clientId: 'hoopctl' })).rejects.toMatchObject({ code: 'ISSUER_MISMATCH' });
    } finally {
      await srv.close();
    }
  });

  it('refuses a plain-http issuer that is not on loopback', async () => {
    await expect(deviceLogin({ issuer: 'http://login.example.com', clientId: 'hoopctl' })).rejects.toMatchObject({ code: 'INSECURE_ISSUER_URL', exitCode: 2 });
  });
});

function pending() {
  return { status: 400, json: { error: 'authorization_pending' } };
}
function slowDown() {
  return { status: 400, json: { error: 'slow_down' } };
}
function ok() {
  return { status: 200, json: { access_token: 'at', token_type: 'Bearer', expires_in: 300 } };
}
