// The attack corpus fixture (../shared/attacks/schema.sql) in a fresh database of the worker's
// PostgreSQL, plus the Catalog and masking rules the corpus assumes (patients.ssn/mrn/email/phone/dob).
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { freshDatabase, type TestDatabase } from '../../harness/pg.js';
import { loadCatalog, type Catalog } from '../../../agent/src/masking/catalog.js';
import { Lineage, type MaskRules } from '../../../agent/src/masking/lineage.js';
import { parseStrategy } from '../../../agent/src/masking/strategies.js';
import { loadParser } from '../../../agent/src/policy/parse.js';

export const SCHEMA_PATH = new URL('../../../../shared/attacks/schema.sql', import.meta.url);

export const RULES: MaskRules = new Map([
  ['public.patients.ssn', parseStrategy('redact')],
  ['public.patients.mrn', parseStrategy({ partial: 4 })],
  ['public.patients.email', parseStrategy('hash')],
  ['public.patients.phone', parseStrategy('redact')],
  ['public.patients.dob', parseStrategy('null')],
]);

export const CORE_VALUES: string[] = (() => {
  const corpus = JSON.parse(readFileSync(new URL('../../../../shared/attacks/corpus.json', import.meta.url), 'utf8')) as {
    meta: { sensitive_values: { core: string[] } };
  };
  return corpus.meta.sensitive_values.core;
})();

export interface Fixture {
  db: TestDatabase;
  client: pg.Client;
  catalog: Catalog;
  lineage: Lineage;
}

async function ensureRoles(db: TestDatabase): Promise<void> {
  for (const [role, opts] of [['gw_agent', "LOGIN PASSWORD 'gw_agent_test_only'"], ['phi_admin', 'NOLOGIN']]) {
    try {
      await db.pg.exec(`DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${role}') THEN CREATE ROLE ${role} ${opts}; END IF; END $$`);
    } catch {
      // another worker created it concurrently: fine
    }
  }
}

/** Loads schema.sql into a fresh database (ALTER SYSTEM lines and, if unavailable, dblink removed). */
export async function fixture(): Promise<Fixture> {
  await loadParser();
  const db = await freshDatabase('mask');
  await ensureRoles(db);
  let sql = readFileSync(SCHEMA_PATH, 'utf8');
  // cluster-wide settings are shared with other test files: leave them alone
  sql = sql.replace(/^ALTER SYSTEM RESET ALL;.*$/m, '').replace(/^SELECT pg_reload_conf\(\);.*$/m, '');
  const [avail] = await db.pg.exec(`SELECT 1 FROM pg_available_extensions WHERE name = 'dblink'`, db.name);
  if (avail.rowCount === 0) sql = sql.replace(/^CREATE EXTENSION IF NOT EXISTS dblink.*$/m, '');
  await db.pg.exec(sql, db.name);
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  const catalog = await loadCatalog(async (q) => (await client.query(q)).rows);
  return { db, client, catalog, lineage: new Lineage(catalog, RULES) };
}
