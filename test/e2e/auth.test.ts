// Tokens at the agent's door, over a real WebSocket upgrade: every bad token is refused with an HTTP
// status before the upgrade (never a 101), and the CLI turns a refusal into a sentence and an exit code.
import { describe, expect, it } from 'vitest';
import path from 'node:path';
import WebSocket from 'ws';
import { exportJWK, generateKeyPair } from 'jose';
import { createPublicKey, type JsonWebKey } from 'node:crypto';
import { run, useStack } from '../harness/stack.js';
import { baseClaims, rawToken, signHs256, signRs256 } from '../harness/oidc.js';

const s = useStack();
const ROOT = path.resolve(import.meta.dirname, '../..');
const TSX = path.join(ROOT, 'node_modules/.bin/tsx');
/** The CLI runs from source through tsx: a cold start takes seconds, far more on a loaded machine. */
const CLI_TIMEOUT_MS = 50_000;

interface Upgrade {
  status: number;
  body: string;
}

/** Tries the tunnel upgrade; resolves with the HTTP status (101 when it opened) and the body. */
function upgrade(url: string, headers: Record<string, string> = {}): Promise<Upgrade> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, perMessageDeflate: false, handshakeTimeout: 5000 });
    ws.once('open', () => {
      ws.close();
      resolve({ status: 101, body: '' });
    });
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    ws.once('error', (err) => reject(err));
  });
}

const tunnel = (name = 'demo-db') => `${s.get().agent.url}/tunnel/${name}`;
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
const now = () => Math.floor(Date.now() / 1000);
const rsHeader = () => ({ alg: 'RS256', typ: 'at+jwt', kid: s.get().issuer.privateJwk.kid });

describe('the tunnel upgrade', () => {
  it('opens (101) with a token the issuer minted', async () => {
    const token = await s.get().token();
    expect(await upgrade(tunnel(), bearer(token))).toEqual({ status: 101, body: '' });
  });

  it('opens (101) with a token forged by the test with the issuer key (control for the cases below)', async () => {
    const { issuer } = s.get();
    const token = signRs256(rsHeader(), { ...baseClaims(issuer) }, issuer.privateJwk);
    expect((await upgrade(tunnel(), bearer(token))).status).toBe(101);
  });

  it.each<{ desc: string; headers: () => Promise<Record<string, string>> | Record<string, string> }>([
    { desc: 'no Authorization header', headers: () => ({}) },
    { desc: 'a garbage token', headers: () => bearer('garbage') },
    { desc: 'a garbage three-part token', headers: () => bearer('aaa.bbb.ccc') },
    { desc: 'Basic instead of Bearer', headers: async () => ({ authorization: `Basic ${Buffer.from('ci-nightly:ci-nightly-secret').toString('base64')}` }) },
    {
      desc: 'an expired token',
      headers: () => {
        const { issuer } = s.get();
        return bearer(signRs256(rsHeader(), { ...baseClaims(issuer, now() - 3600), exp: now() - 600 }, issuer.privateJwk));
      },
    },
    {
      desc: 'a token not valid yet (nbf in an hour)',
      headers: () => {
        const { issuer } = s.get();
        return bearer(signRs256(rsHeader(), { ...baseClaims(issuer), nbf: now() + 3600 }, issuer.privateJwk));
      },
    },
    {
      desc: 'a token with no exp',
      headers: () => {
        const { issuer } = s.get();
        const { exp: _exp, ...claims } = baseClaims(issuer);
        return bearer(signRs256(rsHeader(), claims, issuer.privateJwk));
      },
    },
    {
      desc: 'a token signed by another key under the same kid',
      headers: async () => {
        const { issuer } = s.get();
        const { privateKey } = await generateKeyPair('RS256', { extractable: true });
        const other = await exportJWK(privateKey);
        return bearer(signRs256(rsHeader(), baseClaims(issuer), { ...other, kid: issuer.privateJwk.kid }));
      },
    },
    {
      desc: 'alg none',
      headers: () => bearer(rawToken({ alg: 'none', typ: 'JWT' }, baseClaims(s.get().issuer))),
    },
    {
      desc: 'alg none with a dummy signature',
      headers: () => bearer(rawToken({ alg: 'none', typ: 'JWT' }, baseClaims(s.get().issuer), 'AAAA')),
    },
    {
      desc: 'HS256 signed with the issuer public key',
      headers: () => {
        const { issuer } = s.get();
        const pem = createPublicKey({ key: issuer.publicJwk as JsonWebKey, format: 'jwk' }).export({ type: 'spki', format: 'pem' });
        return bearer(signHs256({ alg: 'HS256', typ: 'JWT', kid: issuer.publicJwk.kid }, baseClaims(issuer), pem));
      },
    },
    {
      desc: 'HS256 signed with the issuer public JWK as JSON',
      headers: () => {
        const { issuer } = s.get();
        return bearer(signHs256({ alg: 'HS256', typ: 'JWT', kid: issuer.publicJwk.kid }, baseClaims(issuer), JSON.stringify(issuer.publicJwk)));
      },
    },
    {
      desc: 'a wrong audience',
      headers: () => {
        const { issuer } = s.get();
        return bearer(signRs256(rsHeader(), { ...baseClaims(issuer), aud: 'some-other-api' }, issuer.privateJwk));
      },
    },
    {
      desc: 'an unknown issuer',
      headers: () => {
        const { issuer } = s.get();
        return bearer(signRs256(rsHeader(), { ...baseClaims(issuer), iss: 'https://evil.example' }, issuer.privateJwk));
      },
    },
    {
      desc: 'the issuer with a trailing slash',
      headers: () => {
        const { issuer } = s.get();
        return bearer(signRs256(rsHeader(), { ...baseClaims(issuer), iss: `${issuer.issuer}/` }, issuer.privateJwk));
      },
    },
    {
      desc: 'a jku header pointing at another key set',
      headers: () => {
        const { issuer } = s.get();
        return bearer(signRs256({ ...rsHeader(), jku: 'https://evil.example/jwks' }, baseClaims(issuer), issuer.privateJwk));
      },
    },
    {
      desc: 'a tampered payload (groups changed after signing)',
      headers: () => {
        const { issuer } = s.get();
        const [h, , sig] = signRs256(rsHeader(), { ...baseClaims(issuer), groups: ['nobody'] }, issuer.privateJwk).split('.');
        const p = Buffer.from(JSON.stringify({ ...baseClaims(issuer), groups: ['data-eng'] })).toString('base64url');
        return bearer(`${h}.${p}.${sig}`);
      },
    },
  ])('$desc → 401', async ({ headers }) => {
    const r = await upgrade(tunnel(), await headers());
    expect(r.status).toBe(401);
    const body = JSON.parse(r.body) as { error: { code: string; message: string; hint?: string } };
    expect(body.error.code).toMatch(/^(NO_TOKEN|TOKEN_INVALID|TOKEN_EXPIRED|ISSUER_UNKNOWN)$/);
    expect(body.error.hint).toContain('hoopctl login');
  });

  it.each([
    { desc: 'access_token in the query string (no header)', query: 'access_token', withHeader: false },
    { desc: 'token in the query string (no header)', query: 'token', withHeader: false },
    { desc: 'access_token in the query string (and a valid header)', query: 'access_token', withHeader: true },
  ])('$desc → 400/401, never 101', async ({ query, withHeader }) => {
    const token = await s.get().token();
    const r = await upgrade(`${tunnel()}?${query}=${token}`, withHeader ? bearer(token) : {});
    expect([400, 401]).toContain(r.status);
    expect(r.body).not.toContain(token);
  });

  it('a browser Origin with a valid token → 403', async () => {
    const token = await s.get().token();
    const r = await upgrade(tunnel(), { ...bearer(token), origin: 'https://evil.example' });
    expect(r.status).toBe(403);
    expect(JSON.parse(r.body)).toMatchObject({ error: { code: 'ORIGIN_NOT_ALLOWED' } });
  });

  it('a connection that does not exist → 404', async () => {
    const token = await s.get().token();
    const r = await upgrade(tunnel('prod-db'), bearer(token));
    expect(r.status).toBe(404);
    expect(JSON.parse(r.body)).toMatchObject({ error: { code: 'UNKNOWN_CONNECTION' } });
    expect(r.body).toContain('prod-db');
  });

  it('an identity that matches no access rule → 403 naming the connection', async () => {
    const { issuer } = s.get();
    const token = signRs256(rsHeader(), { ...baseClaims(issuer), sub: 'u-mallory', groups: ['nobody'] }, issuer.privateJwk);
    const r = await upgrade(tunnel(), bearer(token));
    expect(r.status).toBe(403);
    const body = JSON.parse(r.body) as { error: { code: string; message: string; hint?: string } };
    expect(body.error.code).toBe('ACCESS_DENIED');
    expect(body.error.message).toContain('demo-db');
    expect(body.error.message).toContain('u-mallory');
  });

  it('an identity with no groups at all → 403', async () => {
    const { issuer } = s.get();
    const { groups: _g, ...claims } = baseClaims(issuer);
    const r = await upgrade(tunnel(), bearer(signRs256(rsHeader(), { ...claims, sub: 'u-nogroups' }, issuer.privateJwk)));
    expect(r.status).toBe(403);
    expect(r.body).toContain('demo-db');
  });
});

describe('hoopctl connect with a token the agent refuses', () => {
  const connect = (args: string[]) =>
    run(TSX, [path.join(ROOT, 'cli/src/main.ts'), 'connect', 'demo-db', '--agent', s.get().agent.url, '--token', 'BAD', ...args], {
      cwd: ROOT,
      env: { ...process.env, HOOPCTL_TOKEN: '', HOOPCTL_AGENT: '', CI: 'true' },
      timeoutMs: CLI_TIMEOUT_MS,
    });

  it('exits 3 and tells to run hoopctl login', async () => {
    const r = await connect([]);
    expect(r.code).toBe(3);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^error: the agent did not accept your token: /m);
    expect(r.stderr).toContain('hoopctl login');
  }, 60_000);

  it('with --json, stdout is exactly one JSON error document', async () => {
    const r = await connect(['--json']);
    expect(r.code).toBe(3);
    const lines = r.stdout.split('\n').filter((l) => l !== '');
    expect(lines).toHaveLength(1);
    const doc = JSON.parse(lines[0]) as Record<string, unknown>;
    expect(Object.keys(doc)).toEqual(['error']);
    // What to do is said once: in the message when it already names the command, else in the hint.
    const err = doc.error as { code: string; message: string; hint?: string };
    expect(err.code).toBe('NOT_AUTHENTICATED');
    expect(err.message).toContain('the agent did not accept your token');
    expect(`${err.message} ${err.hint ?? ''}`.match(/hoopctl login/g)).toHaveLength(1);
  }, 60_000);

  it('with a valid token but a forbidden identity, exits 4', async () => {
    const { issuer, agent } = s.get();
    const token = signRs256(rsHeader(), { ...baseClaims(issuer), sub: 'u-mallory', groups: ['nobody'] }, issuer.privateJwk);
    const r = await run(TSX, [path.join(ROOT, 'cli/src/main.ts'), '--json', 'connect', 'demo-db', '--agent', agent.url, '--token', token], {
      cwd: ROOT,
      env: { ...process.env, CI: 'true' },
      timeoutMs: CLI_TIMEOUT_MS,
    });
    expect(r.code).toBe(4);
    const doc = JSON.parse(r.stdout) as { error: { code: string; message: string } };
    expect(doc.error.code).toBe('FORBIDDEN');
    expect(doc.error.message).toContain('demo-db');
  }, 60_000);
});
