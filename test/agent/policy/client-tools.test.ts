/**
 * psql meta-commands and pg_dump --schema-only must work through the gateway: every statement they send,
 * captured from a real server's log (fixtures/capture-client-sql.ts regenerates the fixtures), is judged
 * in one session, in order (pg_dump PREPAREs and later EXECUTEs), and must be allowed.
 *
 *   fixtures/psql-meta.json       psql 15 → PostgreSQL 15 and 18: \d, \d+, \dt … \dconfig, \sf, \l, …
 *   fixtures/pg-dump-schema.json  pg_dump 15 --schema-only → PostgreSQL 15
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadPolicyEngine, type Action, type PolicyEngine, type PolicySession } from '../../../agent/src/policy/index.js';

interface Captured { source: string; sql: string }
const HERE = path.dirname(fileURLToPath(import.meta.url));
const load = (name: string): Captured[] => JSON.parse(readFileSync(path.join(HERE, 'fixtures', name), 'utf8')) as Captured[];

/** Statements of the fixtures that stay refused, with the reason. */
const EXCEPTIONS: { match: RegExp; want: Action; why: string }[] = [
  { match: /FROM pg_catalog\.pg_user_mappings um/, want: 'block', why: '\\deu: pg_user_mappings holds foreign-server credentials (P3 catalog)' },
];

function rows(name: string) {
  return load(name).map((c, i) => ({ i, source: c.source, sql: c.sql, want: EXCEPTIONS.find((e) => e.match.test(c.sql))?.want ?? ('allow' as Action) }));
}

describe.each([
  ['psql meta-commands', 'psql-meta.json'],
  ['pg_dump --schema-only', 'pg-dump-schema.json'],
])('%s through the policy engine', (_, file) => {
  let engine: PolicyEngine;
  let session: PolicySession;
  beforeAll(async () => {
    // the corpus profile: strict predicates on, so P7 does not trip on catalog queries either
    engine = await loadPolicyEngine({ strictPredicates: true, maskedColumns: ['public.patients.ssn', 'public.patients.mrn'] });
    session = engine.session();
  });

  it('has captured statements', () => {
    expect(rows(file).length).toBeGreaterThan(50);
  });

  it.each(rows(file))('#$i $source → $want', ({ sql, want }) => {
    const d = session.query(sql);
    expect({ action: d.action, rule: d.rule, reason: d.reason }).toMatchObject({ action: want });
    if (d.action === 'allow') session.apply(d);
  });
});

describe('pg_dump: what still needs a human', () => {
  it('holds the data part (COPY … TO stdout is a bulk export) and blocks stronger locks', async () => {
    const engine = await loadPolicyEngine();
    expect(engine.classify('COPY public.patients (id, mrn, ssn) TO stdout;')).toMatchObject({ action: 'hold', rule: 'P4.export' });
    expect(engine.classify('LOCK TABLE public.patients IN SHARE MODE')).toMatchObject({ action: 'block', rule: 'P3.lock' });
    // the statements pg_dump runs are read-only: P8 can still wrap them in READ ONLY transactions
    for (const sql of ['LOCK TABLE public.patients IN ACCESS SHARE MODE', "SELECT pg_catalog.set_config('search_path', '', false)", 'SET row_security = off'])
      expect(engine.classify(sql).statements[0].readOnly).toBe(true);
  });
});
