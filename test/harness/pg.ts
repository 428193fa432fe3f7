// One real PostgreSQL per vitest worker, started on first use; a fresh database per test file.
import { afterAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import { startPostgres, type LocalPostgres } from '../../cli/src/demo/postgres.js';

let shared: Promise<LocalPostgres> | undefined;

/** The worker's PostgreSQL. Stopped when the worker's last file finishes (process exit). */
export function workerPostgres(): Promise<LocalPostgres> {
  if (!shared) {
    shared = startPostgres();
    const stop = () => shared?.then((p) => p.stop());
    process.once('beforeExit', stop);
  }
  return shared;
}

export interface TestDatabase {
  pg: LocalPostgres;
  name: string;
  url: string;
}

/** Creates a database with a random name for this file and drops it after the file's tests. */
export async function freshDatabase(prefix = 'test'): Promise<TestDatabase> {
  const pg = await workerPostgres();
  const name = `${prefix}_${randomBytes(4).toString('hex')}`;
  await pg.exec(`CREATE DATABASE ${name}`);
  afterAll(async () => {
    await pg.exec(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  });
  return { pg, name, url: pg.url(name) };
}
