// The whole product for a test file: real PostgreSQL, real OIDC issuer, real agent, real tunnel.
import { afterAll, beforeAll } from 'vitest';
import { spawn, type SpawnOptions } from 'node:child_process';
import pg from 'pg';
import type { Approval } from '../../agent/src/audit/approvals.js';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { DEMO_CONNECTION, DEMO_DATABASE, DEMO_MASKING, startDemoStack, type DemoStack, type DemoStackOptions } from '../../cli/src/demo/stack.js';
import { resolveConfig } from '../../agent/src/config.js';
import { startAgent, type RunningAgent } from '../../agent/src/agent.js';
import { silentLogger, type Logger } from '../../agent/src/log.js';
import { TunnelClient, type TunnelClientOptions } from '../../cli/src/services/tunnel-client.js';
import { startLocalListener, type LocalListener } from '../../cli/src/services/local-listener.js';

/** Starts one stack for the file; the returned object is filled in by beforeAll. */
export function useStack(opts: DemoStackOptions = {}): { get(): DemoStack } {
  let stack: DemoStack | undefined;
  beforeAll(async () => {
    stack = await startDemoStack({ patients: 2000, ...opts });
  }, 120_000);
  afterAll(async () => {
    await stack?.stop();
  }, 60_000);
  return {
    get() {
      if (!stack) throw new Error('stack not started');
      return stack;
    },
  };
}

/** One query straight to the database, past the gateway: what a test compares the gateway with. */
export async function directQuery<T extends pg.QueryResultRow>(stack: DemoStack, sql: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: stack.directUrl });
  await c.connect();
  try {
    return (await c.query<T>(sql, params)).rows;
  } finally {
    await c.end();
  }
}

/** A node-postgres client on the tunnel's local port (no password). */
export async function tunnelClient(stack: DemoStack, extra: pg.ClientConfig = {}): Promise<pg.Client> {
  const c = new pg.Client({ host: stack.listener.host, port: stack.listener.port, user: 'noop', database: 'demo-db', ...extra });
  await c.connect();
  return c;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a real program (psql, pg_dump, the CLI) to completion; `during` can act while it runs. */
export function run(cmd: string, args: string[], opts: SpawnOptions & { input?: string; during?: (p: ReturnType<typeof spawn>) => void; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
    let stdout = '';
    let stderr = '';
    p.stdout!.on('data', (d) => (stdout += d));
    p.stderr!.on('data', (d) => (stderr += d));
    p.on('error', reject);
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    if (opts.input !== undefined) p.stdin!.end(opts.input);
    else p.stdin!.end();
    opts.during?.(p);
  });
}

export interface ExtraAgent {
  agent: RunningAgent;
  client: TunnelClient;
  listener: LocalListener;
  stop(): Promise<void>;
}

/**
 * One more hoop-agent serving the stack's demo connection (same database, credential and issuer), with
 * its own tunnel (as ci-nightly) and local port: for several agents on one state store (`state`), or a
 * connection whose `approval` or `policy` section differs (a webhook, strictPredicates off). Stop it
 * before the stack.
 */
export async function startExtraAgent(
  stack: DemoStack,
  o: {
    agentId: string;
    state?: { url: string };
    approval?: Record<string, unknown>;
    policy?: Record<string, unknown>;
    audit?: Record<string, unknown>;
    log?: Logger;
    dataDir?: string;
    config?: Record<string, unknown>;
    /** Fields of the demo connection to replace (access rules, requireReason…). */
    connection?: Record<string, unknown>;
    /** The token its tunnel presents (default the stack's ci-nightly token). */
    getToken?: () => Promise<string>;
    /** The tunnel's stated purpose. */
    reason?: string;
    tunnel?: Partial<TunnelClientOptions>;
  },
): Promise<ExtraAgent> {
  // A dataDir the caller passes outlives the agent (restarts, tampering); the default one is removed at stop.
  const dataDir = o.dataDir ?? (await mkdtemp(path.join(os.tmpdir(), 'hoop-extra-agent-')));
  const config = await resolveConfig(
    {
      listen: '127.0.0.1:0',
      dataDir,
      identity: { issuers: [{ issuer: stack.issuer.issuer, audience: stack.issuer.audience }] },
      reviewers: { groups: ['compliance'] },
      ...(o.state ? { state: o.state } : {}),
      ...(o.audit ? { audit: o.audit } : {}),
      ...o.config,
      connections: {
        [DEMO_CONNECTION]: {
          postgres: { host: stack.pg.host, port: stack.pg.port, database: DEMO_DATABASE, user: 'gw_agent', passwordEnv: 'HOOP_DB_PASSWORD' },
          access: [{ groups: ['data-eng'] }, { groups: ['compliance'] }],
          masking: DEMO_MASKING,
          approval: { approvers: { groups: ['compliance'] }, ...o.approval },
          ...(o.policy ? { policy: o.policy } : {}),
          ...o.connection,
        },
      },
    },
    { HOOP_DB_PASSWORD: stack.agentDbPassword },
  );
  const agent = await startAgent({ config, agentId: o.agentId, log: o.log ?? silentLogger });
  const client = new TunnelClient({ agentUrl: agent.url, connection: DEMO_CONNECTION, getToken: o.getToken ?? stack.token, reason: o.reason, ...o.tunnel });
  await client.start();
  client.keepAlive();
  const listener = await startLocalListener(client, 0);
  return {
    agent,
    client,
    listener,
    async stop() {
      await listener.close().catch(() => {});
      await client.stop().catch(() => {});
      await agent.stop();
      if (!o.dataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** psql against the tunnel (the stack's, or an extra agent's), in a plain C locale, never prompting for a password. */
export function psql(stack: Pick<DemoStack, 'listener'>, args: string[], opts: Parameters<typeof run>[2] = {}): Promise<RunResult> {
  return run(
    'psql',
    [`host=${stack.listener.host} port=${stack.listener.port} user=noop dbname=demo-db`, '-X', '-v', 'ON_ERROR_STOP=0', ...args],
    { env: { ...process.env, PGPASSWORD: '', PGCONNECT_TIMEOUT: '10' }, ...opts },
  );
}

/** Waits for the next pending approval request (generous: the requester may be a CLI process still starting on a busy machine). */
export async function nextPendingApproval(stack: Pick<DemoStack, 'agent'>): Promise<Approval> {
  for (let i = 0; i < 1200; i++) {
    const [a] = await stack.agent.store.approvals.list({ status: 'pending' });
    if (a) return a;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('no approval request appeared');
}

/** Waits for the next pending approval request and decides it as the demo's approver (group compliance). */
export async function decideNextApproval(stack: DemoStack, verdict: 'approve' | 'deny', reason = 'decided by the test'): Promise<string> {
  const a = await nextPendingApproval(stack);
  await stack.agent.store.approvals.decide(a.id, { sub: 'approver-bot', issuer: stack.issuer.issuer, groups: ['compliance'] }, verdict, reason);
  return a.id;
}
