// The whole product on one machine, on its embedded defaults: a real PostgreSQL with a sample clinic
// holding fake PHI, a local OIDC issuer, hoop-agent holding the database credential, and the CLI's
// tunnel with its local port. `hoopctl demo`, the end-to-end tests and the benchmark all start this.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startPostgres, type LocalPostgres } from './postgres.js';
import { startLocalIssuer, type LocalIssuer } from './issuer.js';
import { seedDemo } from './seed.js';
import { resolveConfig } from '../../../agent/src/config.js';
import { startAgent, type AgentOptions, type RunningAgent } from '../../../agent/src/agent.js';
import { silentLogger, type Logger } from '../../../agent/src/log.js';
import { TunnelClient, type TunnelClientOptions } from '../services/tunnel-client.js';
import { startLocalListener, type LocalListener } from '../services/local-listener.js';
import { Teardown } from '../../../shared/teardown.js';

export const DEMO_CONNECTION = 'demo-db';
export const DEMO_DATABASE = 'clinic';
/** What the demo masks: every direct identifier of a patient except the name. */
export const DEMO_MASKING = {
  'public.patients.ssn': 'redact',
  'public.patients.mrn': { partial: 4 },
  'public.patients.email': 'hash',
  'public.patients.phone': 'redact',
  'public.patients.date_of_birth': 'null',
} as const;
/**
 * What `hoopctl demo` masks: the above, and the visits' free-text notes, which repeat names, MRNs and
 * dates of birth as real clinical notes do. (The tests' stacks keep the notes in clear: they use them as
 * markers a write changes.)
 */
export const DEMO_POLICY_MASKING = { ...DEMO_MASKING, 'public.visits.notes': 'redact' } as const;
/** Text columns the demo leaves in clear on purpose (silences the agent's start-up lint for them). */
export const DEMO_UNMASKED = ['public.patients.full_name', 'public.patients.diagnosis', 'public.visits.department'];

/** The CI identity the demo connects as (client credentials, group data-eng). */
export const DEMO_CLIENT = { id: 'ci-nightly', secret: 'ci-nightly-secret' };

export interface DemoStackOptions {
  /** Local port for psql; 0 = a free one. */
  port?: number;
  /** PostgreSQL major version (default 18). */
  pgVersion?: 15 | 18;
  /** Number of sample patients. */
  patients?: number;
  /** Masked columns (default DEMO_MASKING). */
  masking?: Record<string, string | { partial: number }>;
  /** How long a held statement waits for an approver (default 15m). */
  approvalTimeout?: string;
  /** approval.mode of the demo connection (default statement), and its transactionTimeout. */
  approvalMode?: 'statement' | 'transaction';
  transactionTimeout?: string;
  agentLog?: Logger;
  /** Overrides for the agent (gate, audit…), for tests. */
  agent?: Partial<Omit<AgentOptions, 'config'>>;
  tunnel?: Partial<TunnelClientOptions>;
  /** Progress lines while starting (stderr in the CLI). */
  progress?: (step: string) => void;
}

export interface DemoStack {
  pg: LocalPostgres;
  issuer: LocalIssuer;
  agent: RunningAgent;
  client: TunnelClient;
  listener: LocalListener;
  /** The agent's data directory (its audit trail): `hoopctl audit verify` takes it. Removed at stop. */
  dataDir: string;
  /** libpq URL of the tunnel's local port. */
  tunnelUrl: string;
  /** Direct superuser URL of the demo database (for tests and the benchmark's baseline). */
  directUrl: string;
  agentDbPassword: string;
  token(): Promise<string>;
  stop(): Promise<void>;
}

export async function startDemoStack(opts: DemoStackOptions = {}): Promise<DemoStack> {
  const progress = opts.progress ?? (() => {});
  const stops = new Teardown();
  const stop = stops.run;
  try {
    progress('starting PostgreSQL (embedded)');
    const pg = await startPostgres({ version: opts.pgVersion });
    stops.push(() => pg.stop());
    const agentDbPassword = randomBytes(18).toString('base64url');
    progress('loading the sample clinic (fake PHI)');
    await pg.exec(`CREATE DATABASE ${DEMO_DATABASE}`);
    await seedDemo((sql) => pg.exec(sql, DEMO_DATABASE), { patients: opts.patients, agentPassword: agentDbPassword });

    progress('starting the local OIDC issuer');
    const issuer = await startLocalIssuer();
    stops.push(() => issuer.stop());

    progress('starting hoop-agent');
    // The demo's audit trail lives and dies with the demo.
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'hoop-demo-agent-'));
    stops.push(() => rm(dataDir, { recursive: true, force: true }));
    const config = await resolveConfig(
      {
        listen: '127.0.0.1:0',
        dataDir,
        identity: { issuers: [{ issuer: issuer.issuer, audience: issuer.audience }] },
        reviewers: { groups: ['compliance'] },
        connections: {
          [DEMO_CONNECTION]: {
            postgres: { host: pg.host, port: pg.port, database: DEMO_DATABASE, user: 'gw_agent', passwordEnv: 'HOOP_DEMO_DB_PASSWORD' },
            access: [{ groups: ['data-eng'] }, { groups: ['compliance'] }],
            masking: opts.masking ?? DEMO_MASKING,
            unmasked: DEMO_UNMASKED,
            approval: {
              approvers: { groups: ['compliance'] },
              ...(opts.approvalTimeout ? { timeout: opts.approvalTimeout } : {}),
              ...(opts.approvalMode ? { mode: opts.approvalMode } : {}),
              ...(opts.transactionTimeout ? { transactionTimeout: opts.transactionTimeout } : {}),
            },
          },
        },
      },
      { HOOP_DEMO_DB_PASSWORD: agentDbPassword },
    );
    const agent = await startAgent({ config, log: opts.agentLog ?? silentLogger, ...opts.agent });
    stops.push(() => agent.stop());

    const token = () => issuer.clientCredentialsToken(DEMO_CLIENT.id, DEMO_CLIENT.secret);
    progress('opening the tunnel');
    const client = new TunnelClient({ agentUrl: agent.url, connection: DEMO_CONNECTION, getToken: token, ...opts.tunnel });
    await client.start();
    client.keepAlive();
    stops.push(() => client.stop());
    const listener = await startLocalListener(client, opts.port ?? 0);
    stops.push(() => listener.close());

    return {
      pg,
      issuer,
      agent,
      client,
      listener,
      dataDir,
      tunnelUrl: `postgres://noop@${listener.host}:${listener.port}/${DEMO_CONNECTION}`,
      directUrl: pg.url(DEMO_DATABASE),
      agentDbPassword,
      token,
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
