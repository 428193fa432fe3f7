// The product, assembled once per attack run: a real embedded PostgreSQL, the real local OIDC issuer,
// hoop-agent in-process (startAgent, the product's own defaults for everything the runner does not
// need to observe), and the CLI's tunnel (TunnelClient + local listener), as cli/src/demo/stack.ts
// assembles them. Plus the fixture of the corpus (schema.sql, roles, fingerprint, marker directory).
//
// Seams (all optional, all default to the product's own behaviour):
//   - `agentOverrides`: extra startAgent options (e.g. a `gateFor` or policy hook if a test wants one).
//     The runner passes none, so when the agent gets its policy the runner picks it up unchanged.
//   - the audit sink is a capturing proxy: every method the agent calls on it is recorded, whatever
//     the sink interface grows into, and it can be switched to "unavailable" (AD-006).
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, chmod, chown } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { loadModule, parseSync } from 'libpg-query';
import { exportJWK, generateKeyPair, calculateJwkThumbprint, type JWK } from 'jose';
import { startPostgres, type LocalPostgres } from '../../cli/src/demo/postgres.js';
import { startLocalIssuer, type LocalIssuer } from '../../cli/src/demo/issuer.js';
import { resolveConfig } from '../../agent/src/config.js';
import { startAgent, type RunningAgent } from '../../agent/src/agent.js';
import { silentLogger } from '../../agent/src/log.js';
import { JsonlStore } from '../../agent/src/audit/jsonl-store.js';
import type { StateStore } from '../../agent/src/audit/store.js';
import type { EventInput } from '../../agent/src/audit/events.js';
import { TokenVerifier } from '../../agent/src/identity/verify.js';
import { connectUpstream } from '../../agent/src/upstream/connect.js';
import { TunnelClient } from '../../cli/src/services/tunnel-client.js';
import { startLocalListener, type LocalListener } from '../../cli/src/services/local-listener.js';
import { PgWire, connectTcp, tcpTransport, type WireOptions } from './pgclient.js';
import { openTunnelWs, TunnelStream } from './ws.js';
import { Teardown } from '../../shared/teardown.js';

export const CONNECTION = 'gwtest';
export const DATABASE = 'gwtest';
export const AGENT_DB_PASSWORD = 'gw_agent_test_only';
export const GH_ISSUER = 'https://token.actions.githubusercontent.com';

// ── audit capture ───────────────────────────────────────────────────────────────────────────────

export interface AuditRecord {
  method: string;
  at: number;
  args: unknown[];
}

/**
 * The agent's real state store, watched: every appended event is recorded (method = event type) so the
 * judge can scan the audit trail, and `failing` makes appends reject as a broken store would (AD-006).
 */
export class CapturingAudit {
  readonly records: AuditRecord[] = [];
  failing = false;
  failures = 0;
  readonly sink: StateStore;
  constructor(readonly store: StateStore) {
    this.sink = new Proxy(store, {
      get: (target, prop, receiver) => {
        if (prop !== 'append') return Reflect.get(target, prop, receiver);
        return (e: EventInput) => {
          if (this.failing) {
            this.failures++;
            return Promise.reject(new Error('audit store unavailable (attack runner AD-006)'));
          }
          return target.append(e).then((ev) => {
            this.records.push({ method: ev.type, at: Date.now(), args: safeClone([ev]) });
            return ev;
          });
        };
      },
    });
  }
  since(i: number): AuditRecord[] {
    return this.records.slice(i);
  }
}

function safeClone(v: unknown): unknown[] {
  try {
    return JSON.parse(JSON.stringify(v, (_k, x) => (Buffer.isBuffer(x) ? x.toString('utf8') : typeof x === 'bigint' ? String(x) : x))) as unknown[];
  } catch {
    return [String(v)];
  }
}

// ── fixture ─────────────────────────────────────────────────────────────────────────────────────

export interface Fingerprint {
  [k: string]: string | null;
}

export class Fixture {
  private admin!: pg.Client;
  private baselineRoles = new Set<string>();
  /** schema.sql split into statements, run one by one as psql -f does (ALTER SYSTEM refuses a transaction). */
  private schemaStatements: string[] = [];
  private postgresUid?: number;
  private postgresGid?: number;
  markerDir = '';
  lastResetMs = 0;

  constructor(
    readonly pgs: LocalPostgres,
    readonly schemaFile: string,
    readonly profile: 'hostile-db' | 'least-privilege',
  ) {}

  async init(): Promise<void> {
    let sql = await readFile(this.schemaFile, 'utf8');
    if (this.profile === 'least-privilege') sql = sql.replace(/^ALTER ROLE gw_agent SUPERUSER;/m, '-- (least-privilege) ALTER ROLE gw_agent SUPERUSER;');
    this.schemaStatements = await splitStatements(sql);
    this.admin = new pg.Client({ connectionString: this.pgs.url('postgres') });
    this.admin.on('error', () => {});
    await this.admin.connect();
    const r = await this.admin.query(`SELECT rolname FROM pg_roles WHERE rolname NOT IN ('gw_agent', 'phi_admin')`);
    for (const row of r.rows) this.baselineRoles.add(row.rolname as string);
    if (process.getuid?.() === 0) {
      try {
        this.postgresUid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
        this.postgresGid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
      } catch {
        /* no postgres user: the server runs as us */
      }
    }
  }

  /**
   * Recreates database gwtest and the roles gw_agent / phi_admin, runs schema.sql directly as the
   * superuser, and makes a fresh, empty marker directory. Returns F0.
   */
  async reset(): Promise<Fingerprint> {
    const t0 = Date.now();
    const a = this.admin;
    await a.query(`DROP DATABASE IF EXISTS ${DATABASE} WITH (FORCE)`);
    // Every role an attack may have created or changed: dropped (owned objects in this database first).
    const roles = await a.query(`SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_'`);
    for (const row of roles.rows) {
      const name = row.rolname as string;
      if (this.baselineRoles.has(name)) continue;
      const q = `"${name.replace(/"/g, '""')}"`;
      await a.query(`DROP OWNED BY ${q} CASCADE`).catch(() => {});
      await a.query(`DROP ROLE IF EXISTS ${q}`).catch(async () => {
        // Still referenced somewhere: at least take its powers away.
        await a.query(`ALTER ROLE ${q} NOSUPERUSER NOLOGIN`).catch(() => {});
      });
    }
    await a.query(`ALTER SYSTEM RESET ALL`);
    await a.query(`SELECT pg_reload_conf()`);
    await a.query(`CREATE DATABASE ${DATABASE}`);
    const c = new pg.Client({ connectionString: this.pgs.url(DATABASE) });
    c.on('error', () => {});
    await c.connect();
    try {
      for (const stmt of this.schemaStatements) await c.query(stmt);
    } finally {
      await c.end().catch(() => {});
    }
    if (this.markerDir) await rm(this.markerDir, { recursive: true, force: true }).catch(() => {});
    this.markerDir = await mkdtemp(path.join(os.tmpdir(), 'gw-marker-'));
    if (this.postgresUid !== undefined) await chown(this.markerDir, this.postgresUid, this.postgresGid ?? this.postgresUid);
    await chmod(this.markerDir, 0o700);
    const f0 = await this.fingerprint();
    this.lastResetMs = Date.now() - t0;
    return f0;
  }

  /** F = SELECT row_to_json(f) FROM gw_fixture_fingerprint() f, read directly. */
  async fingerprint(): Promise<Fingerprint> {
    const c = new pg.Client({ connectionString: this.pgs.url(DATABASE) });
    c.on('error', () => {});
    await c.connect();
    try {
      const r = await c.query(`SELECT row_to_json(f) AS f FROM public.gw_fixture_fingerprint() f`);
      return r.rows[0].f as Fingerprint;
    } catch (err) {
      return { error: `fingerprint failed: ${(err as Error).message}` };
    } finally {
      await c.end().catch(() => {});
    }
  }

  async markerFiles(): Promise<string[]> {
    if (!this.markerDir) return [];
    return readdir(this.markerDir).catch(() => ['(marker directory unreadable or gone)']);
  }

  /** Rows of pg_stat_activity for the agent's role (backend sessions the gateway holds open). */
  async agentBackends(): Promise<number> {
    // Sessions, not the agent's own catalog connection (masking keeps one open to notice schema changes).
    const r = await this.admin.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = 'gw_agent' AND application_name <> 'hoop-agent catalog'`);
    return r.rows[0].n as number;
  }

  async backendPids(): Promise<Set<number>> {
    const r = await this.admin.query(`SELECT pid FROM pg_stat_activity`);
    return new Set(r.rows.map((x) => x.pid as number));
  }

  async adminQuery(sql: string, params: unknown[] = []): Promise<pg.QueryResult> {
    return this.admin.query(sql, params);
  }

  placeholders(): Record<string, string> {
    return {
      '{MARKER_DIR}': this.markerDir,
      '{DBLINK_CONNSTR}': `dbname=${DATABASE} user=gw_agent password=${AGENT_DB_PASSWORD} host=${this.pgs.host} port=${this.pgs.port}`,
    };
  }

  async close(): Promise<void> {
    if (this.markerDir) await rm(this.markerDir, { recursive: true, force: true }).catch(() => {});
    await this.admin?.end().catch(() => {});
  }
}

/** Splits a SQL script into statements with the PostgreSQL grammar (libpg-query byte offsets). */
export async function splitStatements(sql: string): Promise<string[]> {
  await loadModule();
  const tree = parseSync(sql) as { stmts?: Array<{ stmt_location?: number; stmt_len?: number }> };
  const bytes = Buffer.from(sql, 'utf8');
  const out: string[] = [];
  for (const s of tree.stmts ?? []) {
    const start = s.stmt_location ?? 0;
    const end = s.stmt_len ? start + s.stmt_len : bytes.length;
    const text = bytes.subarray(start, end).toString('utf8').trim();
    if (text) out.push(text);
  }
  return out;
}

// ── the stack ───────────────────────────────────────────────────────────────────────────────────

export interface StackOptions {
  schemaFile: string;
  maskedColumns: string[];
  profile?: 'hostile-db' | 'least-privilege';
  /** Extra startAgent options; none by default, so the product's defaults apply. */
  agentOverrides?: Record<string, unknown>;
  progress?: (line: string) => void;
  /**
   * meta.run_modes.approvals: `deny` lets every request expire quickly (nobody approves); `auto-approve`
   * has a second human (carol, group compliance) approve every request as it appears.
   */
  mode?: 'deny' | 'auto-approve';
  approvalMode?: 'statement' | 'transaction';
}

/** A request the runner's second human approved (auto-approve mode), with the SQL the agent showed. */
export interface GrantedApproval {
  id: string;
  sql: string;
  sessionId: string;
}

export interface ApprovalLoop {
  paused: boolean;
  /** Every request the loop approved, in order (the judge's source for what was allowed to run). */
  granted: GrantedApproval[];
}

export interface AttackStack {
  pg: LocalPostgres;
  issuer: LocalIssuer;
  agent: RunningAgent;
  client: TunnelClient;
  listener: LocalListener;
  fixture: Fixture;
  audit: CapturingAudit;
  /** The agent's JSONL audit directory (segments under audit/). */
  auditDir: string;
  tunnelUrl: string;
  /** sub of ci-nightly's client-credentials tokens ("nhi:ci-reporting" of the corpus). */
  ciSub: string;
  /**
   * The auto-approve loop (auto-approve mode only): `paused` stops it deciding, for cases that decide
   * requests themselves through the approvals API (AW-*). Always present; a no-op in deny mode.
   */
  approvalLoop: ApprovalLoop;
  /** Test double for the GitHub Actions issuer (AU-017): its signing key and its JWKS server. */
  gh: { privateJwk: JWK & { kid: string; alg: string }; close(): Promise<void> };
  ciToken(): Promise<string>;
  userToken(email: string): Promise<string>;
  /** Raw client on the CLI's local port (not started up). */
  localWire(opts?: WireOptions): Promise<PgWire>;
  /** Raw client on the CLI's local port, started up (user noop, dbname gwtest). */
  session(opts?: WireOptions, params?: Record<string, string>): Promise<PgWire>;
  /** Authenticated connection straight to PostgreSQL as gw_agent on gwtest (the "direct execution"). */
  direct(opts?: WireOptions): Promise<PgWire>;
  /** A tunnel stream spoken over the agent's WebSocket directly. */
  wsStream(token: string, streamId?: number): Promise<TunnelStream>;
  stop(): Promise<void>;
}

export async function startAttackStack(opts: StackOptions): Promise<AttackStack> {
  const progress = opts.progress ?? (() => {});
  const stops = new Teardown();
  const stop = stops.run;
  try {
    progress('starting PostgreSQL (embedded)');
    const pgs = await startPostgres();
    stops.push(() => pgs.stop());
    const fixture = new Fixture(pgs, opts.schemaFile, opts.profile ?? 'hostile-db');
    await fixture.init();
    stops.push(() => fixture.close());
    await fixture.reset();

    progress('starting the local OIDC issuer');
    const issuer = await startLocalIssuer();
    stops.push(() => issuer.stop());
    const ciToken = () => issuer.clientCredentialsToken('ci-nightly', 'ci-nightly-secret');
    const first = await ciToken();
    const ciSub = String(JSON.parse(Buffer.from(first.split('.')[1], 'base64url').toString('utf8')).sub);
    const approverTok = await issuer.clientCredentialsToken('approver-bot', 'approver-bot-secret');
    const approverSub = String(JSON.parse(Buffer.from(approverTok.split('.')[1], 'base64url').toString('utf8')).sub);

    // GitHub Actions issuer test double (AU-017): a JWKS on loopback under the GitHub issuer name.
    const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
    const ghPriv = await exportJWK(privateKey);
    const ghPub = await exportJWK(publicKey);
    const ghKid = await calculateJwkThumbprint(ghPub);
    const ghServer = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [{ ...ghPub, kid: ghKid, alg: 'RS256', use: 'sig' }] }));
    });
    await new Promise<void>((r) => ghServer.listen(0, '127.0.0.1', () => r()));
    const ghJwks = `http://127.0.0.1:${(ghServer.address() as AddressInfo).port}/jwks`;
    const gh = {
      privateJwk: { ...ghPriv, kid: ghKid, alg: 'RS256' } as JWK & { kid: string; alg: string },
      close: () => new Promise<void>((r) => ghServer.close(() => r())),
    };
    stops.push(() => gh.close());

    progress('starting hoop-agent');
    const masking: Record<string, string> = {};
    for (const c of opts.maskedColumns) masking[c.split('.').length === 2 ? `public.${c}` : c] = 'redact';
    const config = await resolveConfig(
      {
        listen: '127.0.0.1:0',
        dataDir: path.join(os.tmpdir(), 'hoop-attacks-agent'),
        identity: { issuers: [{ issuer: issuer.issuer, audience: issuer.audience }] },
        connections: {
          [CONNECTION]: {
            postgres: { host: pgs.host, port: pgs.port, database: DATABASE, user: 'gw_agent', passwordEnv: 'HOOP_ATTACKS_DB_PASSWORD' },
            // Identity mapping by subject, as the corpus states it ("sub=nhi:ci-reporting -> target gwtest").
            access: [
              { issuer: issuer.issuer, sub: ciSub },
              { issuer: issuer.issuer, sub: 'u-alice' },
              { issuer: issuer.issuer, sub: 'u-carol' },
              { issuer: issuer.issuer, sub: approverSub },
              { issuer: GH_ISSUER, claims: { repository: 'org/app', ref: 'refs/heads/main' } },
            ],
            // exportRowLimit: above the corpus's largest result (PR-032, 600k rows, is judged on masking while
            // streaming); the row threshold itself is tested end to end in test/e2e/row-threshold*.test.ts.
            approval: { approvers: { groups: ['compliance'] }, timeout: opts.mode === 'auto-approve' ? '60s' : '2s', mode: opts.approvalMode ?? 'statement', exportRowLimit: 1_000_000 },
            masking,
            // The corpus judges masked columns in the strict profile (SECURITY-POLICY P7). get_patient() is
            // a STABLE SQL function a job calls: allowlisted as an operator would (P4 holds user-defined
            // functions "that are not allowlisted"), so MK-024 judges what it is about, the masking of
            // rows a function returns (its columns carry no table OID, only the composite return type).
            policy: { strictPredicates: true, allowedFunctions: ['public.get_patient'] },
          },
        },
      },
      { HOOP_ATTACKS_DB_PASSWORD: AGENT_DB_PASSWORD },
    );
    const auditDir = await mkdtemp(path.join(os.tmpdir(), 'hoop-attacks-audit-'));
    stops.push(() => rm(auditDir, { recursive: true, force: true }));
    const realStore = await JsonlStore.open({ dataDir: auditDir, agentId: 'attacks-agent', clock: Date.now });
    stops.push(() => realStore.close());
    const audit = new CapturingAudit(realStore);
    // The product's own verifier, configured with the local issuer plus the GitHub test double (whose
    // JWKS location cannot come from discovery here; the config schema has no jwksUri field).
    const auth = new TokenVerifier({
      issuers: [
        ...config.identity.issuers.map((i) => ({ ...i })),
        { issuer: GH_ISSUER, audience: 'pg-gateway', jwksUri: ghJwks },
      ],
    });
    const agentOpts = { config, log: silentLogger, store: audit.sink, auth, ...(opts.agentOverrides ?? {}) };
    const agent = await startAgent(agentOpts as unknown as Parameters<typeof startAgent>[0]);
    stops.push(() => agent.stop());
    const approvalLoop: ApprovalLoop = { paused: false, granted: [] };
    if (opts.mode === 'auto-approve') {
      // The second human: approves every pending request through the product's own approval book.
      const carol = { sub: 'u-carol', issuer: issuer.issuer, email: 'carol@clinic.example', groups: ['compliance'] };
      let on = true;
      const loop = (async () => {
        while (on) {
          for (const a of approvalLoop.paused ? [] : await agent.store.approvals.list({ status: 'pending' }).catch(() => [])) {
            if (approvalLoop.paused) break;
            await agent.store.approvals.decide(a.id, carol, 'approve', 'auto-approve run mode').then(
              () => approvalLoop.granted.push({ id: a.id, sql: a.sql, sessionId: a.sessionId }),
              () => {},
            );
          }
          await new Promise((r) => setTimeout(r, 50));
        }
      })();
      stops.push(async () => {
        on = false;
        await loop;
      });
    }

    progress('opening the tunnel (hoopctl connect)');
    const client = new TunnelClient({ agentUrl: agent.url, connection: CONNECTION, getToken: ciToken });
    await client.start();
    client.keepAlive();
    stops.push(() => client.stop());
    const listener = await startLocalListener(client, 0);
    stops.push(() => listener.close());

    const localWire = async (o: WireOptions = {}) => new PgWire(tcpTransport(await connectTcp(listener.host, listener.port)), o);
    return {
      pg: pgs,
      issuer,
      agent,
      client,
      listener,
      fixture,
      audit,
      auditDir,
      tunnelUrl: `${agent.url}/tunnel/${CONNECTION}`,
      approvalLoop,
      ciSub,
      gh,
      ciToken,
      async userToken(email) {
        return (await issuer.mintDeviceFlowToken(email)).accessToken;
      },
      localWire,
      async session(o = {}, params = {}) {
        const w = await localWire(o);
        const r = await w.startup({ user: 'noop', database: CONNECTION, ...params });
        if (r !== 'ready') {
          const e = w.errors()[0];
          w.close();
          throw new Error(`startup through the tunnel failed (${r}${e ? `: ${e.code} ${e.message}` : ''})`);
        }
        return w;
      },
      async direct(o = {}) {
        const up = await connectUpstream({ host: pgs.host, port: pgs.port, database: DATABASE, user: 'gw_agent', password: AGENT_DB_PASSWORD, sslmode: 'disable' });
        const w = new PgWire(tcpTransport(up.socket), o);
        if (up.leftover?.length) w.feed(up.leftover);
        up.socket.resume();
        return w;
      },
      async wsStream(token, streamId = 1) {
        const r = await openTunnelWs(`${agent.url}/tunnel/${CONNECTION}`, token);
        if (!r.ok || !r.ws) throw new Error(`tunnel upgrade refused: HTTP ${r.status} ${r.body || r.error || ''}`);
        const s = new TunnelStream(r.ws, streamId);
        s.open();
        return s;
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
