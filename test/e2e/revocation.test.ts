// `hoopctl logout` revokes the token at the agent (issue 16, "Revocation and lifetime"; issue 17 #8), with
// two agents on one PostgreSQL state store: Alice's token has a tunnel open on each; logout (the real CLI)
// revokes it through agent A; both agents close her tunnels, refuse the saved token on replay (tunnel and
// API), and keep refusing it until it expires; a new login works.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { decodeJwt } from 'jose';
import pg from 'pg';
import { request } from 'undici';
import { run, startExtraAgent, useStack, type ExtraAgent } from '../harness/stack.js';
import { tempEnv } from '../cli/helpers.js';
import { saveLogin, toStoredLogin } from '../../cli/src/services/credentials.js';
import { TokenStore } from '../../cli/src/services/token-store.js';
import { TunnelClient } from '../../cli/src/services/tunnel-client.js';
import { startLocalListener, type LocalListener } from '../../cli/src/services/local-listener.js';
import type { TunnelEvent } from '../../shared/tunnel/frame.js';

const s = useStack({ patients: 20 });
const CLI = ['--import', 'tsx', path.resolve('cli/src/main.ts')];
let A: ExtraAgent;
let B: ExtraAgent;
let state: pg.Client;
let stateDb: string;
let home: Awaited<ReturnType<typeof tempEnv>>;

beforeAll(async () => {
  const stack = s.get();
  stateDb = `hoop_revoke_${randomBytes(4).toString('hex')}`;
  await stack.pg.exec(`CREATE DATABASE ${stateDb}`);
  const url = stack.pg.url(stateDb);
  [A, B] = await Promise.all([
    startExtraAgent(stack, { agentId: 'revoke-a', state: { url } }),
    startExtraAgent(stack, { agentId: 'revoke-b', state: { url } }),
  ]);
  state = new pg.Client({ connectionString: url });
  await state.connect();
  home = await tempEnv();
}, 120_000);

afterAll(async () => {
  await state?.end();
  await A?.stop();
  await B?.stop();
  await home?.cleanup();
});

interface Open {
  client: TunnelClient;
  listener: LocalListener;
  db: pg.Client;
  events: TunnelEvent[];
  /** Resolves with the error the database client ends with (its tunnel was closed). */
  ended: Promise<Error | undefined>;
}

/** A tunnel to `agent` as `token` with one psql-like session open on it. */
async function openSession(agent: ExtraAgent, token: string): Promise<Open> {
  const events: TunnelEvent[] = [];
  const client = new TunnelClient({ agentUrl: agent.agent.url, connection: 'demo-db', getToken: () => token, onEvent: (e) => void events.push(e) });
  await client.start();
  const listener = await startLocalListener(client, 0);
  const db = new pg.Client({ host: listener.host, port: listener.port, user: 'noop', database: 'demo-db' });
  const ended = new Promise<Error | undefined>((resolve) => {
    db.on('error', (err) => resolve(err));
    db.on('end', () => resolve(undefined));
  });
  await db.connect();
  expect((await db.query('SELECT count(*)::int AS n FROM patients')).rows).toEqual([{ n: 20 }]);
  return { client, listener, db, events, ended };
}

async function close(o: Open): Promise<void> {
  await o.db.end().catch(() => {});
  await o.listener.close();
  await o.client.stop();
}

async function whoami(agent: ExtraAgent, token: string) {
  const res = await request(agent.agent.url.replace(/^ws/, 'http') + '/api/whoami', { headers: { authorization: `Bearer ${token}` } });
  return { status: res.statusCode, body: JSON.parse(await res.body.text()) as any };
}

describe('hoopctl logout revokes the token at the agent', () => {
  it('closes its tunnels on both agents, says so, and the saved token is refused on replay by both', async () => {
    const { issuer } = s.get();
    const tokens = await issuer.mintDeviceFlowToken('alice@clinic.example');
    const saved = tokens.accessToken; // the copy an attacker (or a stale script) kept
    const stored = toStoredLogin(tokens, { issuer: issuer.issuer, method: 'device', clientId: 'hoopctl' }, Date.now());
    await saveLogin(stored, { store: new TokenStore({ env: home.env }), env: home.env });
    const onA = await openSession(A, saved);
    const onB = await openSession(B, saved);

    const out = await run('node', [...CLI, 'logout', '--agent', A.agent.url], { env: { ...home.env, NODE_OPTIONS: '' }, timeoutMs: 60_000 });
    expect(out.stderr).toBe('');
    expect(out.code).toBe(0);
    const claims = decodeJwt(saved);
    const until = new Date(claims.exp! * 1000).toISOString();
    expect(out.stdout).toContain(`The access token was revoked at the agent ${A.agent.url}: every agent sharing its state store refuses it and the other tokens of this login until it expires (${until}), and the tunnels it opened were closed.`);
    expect(out.stdout).toMatch(/Removed the login for .* from /);

    // Both tunnels were closed by their agents, each telling the CLI why; the sessions ended with them.
    for (const o of [onA, onB]) {
      await o.ended;
      await expect(o.db.query('SELECT 1')).rejects.toThrow();
      await expect.poll(() => o.events.find((e) => e.type === 'token_revoked')?.message).toMatch(/token was revoked \(`hoopctl logout`\).*hoopctl login/);
      await close(o);
    }

    // Replay: the saved copy opens nothing, on either agent, and the API refuses it too.
    for (const agent of [A, B]) {
      const replay = new TunnelClient({ agentUrl: agent.agent.url, connection: 'demo-db', getToken: () => saved });
      await expect(replay.start()).rejects.toMatchObject({ code: 'NOT_AUTHENTICATED', exitCode: 3, message: expect.stringMatching(/revoked/) });
      expect(await whoami(agent, saved)).toMatchObject({ status: 401, body: { error: { code: 'TOKEN_REVOKED' } } });
    }

    // The record: the token's id and its login session, kept until the token expires.
    const { rows } = await state.query<{ key: string; sub: string; expires_at: Date }>('SELECT key, sub, expires_at FROM token_revocations ORDER BY key');
    expect(rows.map((r) => r.key).sort()).toEqual([`jti:${issuer.issuer} ${claims.jti}`, `sid:${issuer.issuer} ${claims.sid}`].sort());
    expect(rows.every((r) => r.sub === 'u-alice' && r.expires_at.toISOString() === until)).toBe(true);
    const revokedEvents = (await A.agent.store.exportEvents({}, 'jsonl'));
    let chained = '';
    for await (const chunk of revokedEvents) chained += chunk;
    expect(chained).toContain('"type":"token_revoked"');

    // A new login is a new session: it works on both agents.
    const fresh = (await issuer.mintDeviceFlowToken('alice@clinic.example')).accessToken;
    for (const agent of [A, B]) expect((await whoami(agent, fresh)).status).toBe(200);
    const again = await openSession(B, fresh);
    await close(again);
  });

  it('logging out again is not an error; without a stored login nothing is revoked and it says so', async () => {
    const out = await run('node', [...CLI, 'logout', '--agent', A.agent.url, '--json'], { env: home.env, timeoutMs: 60_000 });
    expect(out.code).toBe(0);
    expect(JSON.parse(out.stdout)).toMatchObject({ removed: [], agent: { status: 'no-token' } });
  });

  it('an unreachable agent: the local copy is still removed, and the output says the token stays valid until it expires', async () => {
    const { issuer } = s.get();
    const tokens = await issuer.mintDeviceFlowToken('bob@clinic.example');
    await saveLogin(toStoredLogin(tokens, { issuer: issuer.issuer, method: 'device', clientId: 'hoopctl' }, Date.now()), { store: new TokenStore({ env: home.env }), env: home.env });
    const out = await run('node', [...CLI, 'logout', '--agent', 'ws://127.0.0.1:9'], { env: home.env, timeoutMs: 60_000 });
    expect(out.code).toBe(0);
    expect(out.stdout).toMatch(/could NOT be revoked at the agent ws:\/\/127\.0\.0\.1:9 \(could not reach the agent.*\): a copy of it stays valid until it expires/);
    expect(out.stdout).toMatch(/Removed the login for /);
    // Bob's token was not revoked: still accepted.
    expect((await whoami(A, tokens.accessToken)).status).toBe(200);
  });

  it('fails closed: while the store cannot be read, valid tokens are refused (503), and accepted again once it can', async () => {
    const { issuer, pg: server } = s.get();
    const token = (await issuer.mintDeviceFlowToken('bob@clinic.example')).accessToken;
    expect((await whoami(A, token)).status).toBe(200);
    await state.end();
    await server.exec(`ALTER DATABASE ${stateDb} WITH ALLOW_CONNECTIONS false`);
    await server.exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${stateDb}'`);
    try {
      expect(await whoami(A, token)).toMatchObject({ status: 503, body: { error: { code: 'REVOCATION_UNKNOWN', message: expect.stringMatching(/cannot check right now whether your token was revoked/) } } });
    } finally {
      await server.exec(`ALTER DATABASE ${stateDb} WITH ALLOW_CONNECTIONS true`);
      state = new pg.Client({ connectionString: server.url(stateDb) });
      await state.connect();
    }
    await expect.poll(async () => (await whoami(A, token)).status, { timeout: 15_000 }).toBe(200);
  });
});
