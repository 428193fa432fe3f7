// Renewal in place (issue 16): the CLI presents a fresh token over the open WebSocket before the old one
// expires, and the agent extends the tunnel without touching its streams. The issuer here mints 20-second
// tokens (its accessTokenTtlSec setting) instead of the demo's 15 minutes, so one psql session spans
// several token lifetimes in under a minute; the mechanism does not depend on the lifetime (the CLI
// renews a third of the way before expiry, at most a minute before).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { decodeJwt } from 'jose';
import pg from 'pg';
import { startExtraAgent, useStack, type ExtraAgent } from '../harness/stack.js';
import { baseClaims, signRs256, useIssuer } from '../harness/oidc.js';
import { TunnelClient, type TunnelState } from '../../cli/src/services/tunnel-client.js';
import { startLocalListener, type LocalListener } from '../../cli/src/services/local-listener.js';
import type { TunnelEvent } from '../../shared/tunnel/frame.js';
import path from 'node:path';
import { Child } from '../harness/child.js';
import { tempEnv } from '../cli/helpers.js';
import { saveLogin, toStoredLogin } from '../../cli/src/services/credentials.js';
import { TokenStore } from '../../cli/src/services/token-store.js';

const TSX = path.resolve('node_modules/.bin/tsx');

const TTL_SEC = 20;
const s = useStack({ patients: 20 });
const short = useIssuer({ accessTokenTtlSec: TTL_SEC });
let A: ExtraAgent;

const ciToken = () => short.current.clientCredentialsToken('ci-nightly', 'ci-nightly-secret');
const botToken = () => short.current.clientCredentialsToken('approver-bot', 'approver-bot-secret');

beforeAll(async () => {
  A = await startExtraAgent(s.get(), {
    agentId: 'renewal-a',
    config: { identity: { issuers: [{ issuer: short.current.issuer, audience: short.current.audience }] } },
    getToken: ciToken,
  });
}, 120_000);

afterAll(async () => {
  await A?.stop();
});

interface Tunnel {
  client: TunnelClient;
  listener: LocalListener;
  events: TunnelEvent[];
  states: TunnelState['state'][];
  tokens: string[];
}

async function openTunnel(getToken: () => Promise<string>, now?: () => number): Promise<Tunnel> {
  const events: TunnelEvent[] = [];
  const states: TunnelState['state'][] = [];
  const tokens: string[] = [];
  const client = new TunnelClient({
    agentUrl: A.agent.url,
    connection: 'demo-db',
    getToken: async () => {
      const t = await getToken();
      tokens.push(t);
      return t;
    },
    now,
    onEvent: (e) => void events.push(e),
    onState: (st) => void states.push(st.state),
  });
  await client.start();
  return { client, listener: await startLocalListener(client, 0), events, states, tokens };
}

async function closeTunnel(t: Tunnel): Promise<void> {
  await t.listener.close();
  await t.client.stop();
}

/** A node-postgres session on the tunnel; `ended` resolves when the tunnel takes it down. */
async function session(t: Tunnel): Promise<{ db: pg.Client; ended: Promise<unknown> }> {
  const db = new pg.Client({ host: t.listener.host, port: t.listener.port, user: 'noop', database: 'demo-db' });
  const ended = new Promise((resolve) => {
    db.on('error', resolve);
    db.on('end', () => resolve(undefined));
  });
  await db.connect();
  return { db, ended };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('renewal in place', () => {
  it(`keeps one psql session alive across several ${TTL_SEC}-second token lifetimes: same tunnel, same session, every statement answered`, async () => {
    const t = await openTunnel(ciToken);
    const first = decodeJwt(t.tokens[0]);
    const psql = spawn('psql', [`host=${t.listener.host} port=${t.listener.port} user=noop dbname=demo-db`, '-X', '-At', '-v', 'ON_ERROR_STOP=1'], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, PGPASSWORD: '', PGCONNECT_TIMEOUT: '10' },
    });
    let stdout = '';
    let stderr = '';
    psql.stdout.on('data', (d) => (stdout += d));
    psql.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => psql.on('close', resolve));
    // One statement every 9 s for 54 s: the session spans close to three token lifetimes.
    const STATEMENTS = 7;
    for (let i = 0; i < STATEMENTS; i++) {
      psql.stdin.write(`SELECT 'tick-${i}', count(*) FROM patients;\n`);
      if (i < STATEMENTS - 1) await sleep(9_000);
    }
    // Wait for the last answer before quitting, so the check below sees it.
    await expect.poll(() => stdout, { timeout: 20_000 }).toContain(`tick-${STATEMENTS - 1}|20`);
    // By now the first token and the one that replaced it have both expired.
    expect(Date.now()).toBeGreaterThan((first.exp! + TTL_SEC) * 1000);
    psql.stdin.end('\\q\n');
    expect(await exited).toBe(0);
    expect(stderr).toBe('');
    expect(stdout.trim().split('\n')).toEqual(Array.from({ length: STATEMENTS }, (_, i) => `tick-${i}|20`));

    // Renewed in place: several renewals, each answered with a later expiry, and never a reconnect.
    const renewed = t.events.filter((e) => e.type === 'token_renewed');
    expect(renewed.length).toBeGreaterThanOrEqual(2);
    const expiries = renewed.map((e) => Date.parse(String(e.data?.expiresAt)));
    expect(expiries).toEqual([...expiries].sort((a, b) => a - b));
    expect(expiries[0]).toBeGreaterThan(first.exp! * 1000);
    expect(t.states.filter((x) => x === 'connected')).toHaveLength(1);
    expect(t.events.filter((e) => /token_(expired|renewal_failed|revoked)/.test(e.type))).toEqual([]);

    // One session on the agent, whose statements all ran.
    await closeTunnel(t);
    const page = await A.agent.store.querySessions({ sub: 'ci-nightly', limit: 50 });
    const mine = page.sessions.filter((x) => x.applicationName === 'psql');
    expect(mine).toHaveLength(1);
    expect(mine[0].statements).toBe(STATEMENTS);
  }, 120_000);

  it('a renewal for another identity is refused: the tunnel closes and the CLI is told why', async () => {
    let calls = 0;
    // The client's clock runs 14 s ahead, so it renews about 4 s from now rather than 13 s.
    const t = await openTunnel(() => (calls++ === 0 ? ciToken() : botToken()), () => Date.now() + 14_000);
    const { db, ended } = await session(t);
    expect((await db.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    await ended;
    await expect.poll(() => t.events.find((e) => e.type === 'token_renewal_failed')?.message, { timeout: 15_000 }).toMatch(
      /token could not be renewed: the new token is for approver-bot \(issuer .*\), not ci-nightly \(issuer .*\)\. The tunnel is closed\./,
    );
    await expect(db.query('SELECT 1')).rejects.toThrow();
    await db.end().catch(() => {});
    await closeTunnel(t);
  }, 60_000);

  it('a token that is not renewed (an explicit --token) closes the tunnel when it expires, with a message saying so', async () => {
    const now = Math.floor(Date.now() / 1000);
    const token = signRs256(
      { alg: 'RS256', typ: 'at+jwt', kid: short.current.privateJwk.kid },
      { ...baseClaims(short.current, now), exp: now + 4, jti: 'explicit-short' },
      short.current.privateJwk,
    );
    const t = await openTunnel(async () => token);
    const { db, ended } = await session(t);
    expect((await db.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    await ended;
    await expect.poll(() => t.events.find((e) => e.type === 'token_expired')?.message, { timeout: 15_000 }).toMatch(/expired at .* without being renewed; the tunnel is closed\. Run `hoopctl login`/);
    await db.end().catch(() => {});
    await closeTunnel(t);
  }, 60_000);

  it('the real `hoopctl connect`, logged in with the device flow, refreshes its token and renews the open tunnel', async () => {
    const home = await tempEnv();
    const tokens = await short.current.mintDeviceFlowToken('alice@clinic.example');
    const first = decodeJwt(tokens.accessToken);
    await saveLogin(toStoredLogin(tokens, { issuer: short.current.issuer, method: 'device', clientId: 'hoopctl' }, Date.now()), { store: new TokenStore({ env: home.env }), env: home.env });
    const cli = new Child(TSX, ['cli/src/main.ts', 'connect', 'demo-db', '--agent', A.agent.url, '--json', '--reason', 'renewal test'], home.env);
    try {
      await cli.waitFor(() => cli.stdout.includes('"type":"listening"'), 'listening', 45_000);
      const events = () => cli.stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string; port?: number; data?: { expiresAt?: string } });
      const port = events().find((e) => e.type === 'listening')!.port!;
      const conn = new pg.Client({ host: '127.0.0.1', port, user: 'noop', database: 'demo-db' });
      await conn.connect();
      expect((await conn.query('SELECT count(*)::int AS n FROM patients')).rows).toEqual([{ n: 20 }]);
      // Past the first token's expiry, on the same connection: the tunnel was renewed, not reopened.
      await cli.waitFor(() => events().some((e) => e.type === 'token_renewed'), 'token_renewed', 30_000);
      await sleep(Math.max(0, first.exp! * 1000 + 2_000 - Date.now()));
      expect((await conn.query('SELECT count(*)::int AS n FROM patients')).rows).toEqual([{ n: 20 }]);
      await conn.end();
      const renewed = events().filter((e) => e.type === 'token_renewed');
      expect(Date.parse(renewed[0].data!.expiresAt!)).toBeGreaterThan(first.exp! * 1000);
      expect(events().filter((e) => e.type === 'tunnel' && (e as { state?: string }).state === 'connected')).toHaveLength(1);
      // The refreshed login was saved: the next command starts from it.
      const stored = await new TokenStore({ env: home.env }).load(short.current.issuer);
      expect(stored?.login.accessToken).not.toBe(tokens.accessToken);
    } finally {
      await cli.stop();
      await home.cleanup();
    }
  }, 90_000);
});
