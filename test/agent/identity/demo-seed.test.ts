// The demo seed (cli/src/demo/seed.ts) against a real PostgreSQL: sizes, fake-only identifiers,
// determinism, and an agent role that can use the tables but is not a superuser.
// (Lives here because this suite owns the demo fixtures the identity tests share.)
import { beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { freshDatabase, type TestDatabase } from '../../harness/pg.js';
import { seedDemo } from '../../../cli/src/demo/seed.js';

const PATIENTS = 5000;
const AGENT_PASSWORD = "s3cret with 'quotes' and spaces";
let db: TestDatabase;
let seedMs = 0;

const one = async (sql: string, database = db.name) => (await db.pg.exec(sql, database))[0].rows[0] as Record<string, unknown>;
/** A digest of every row, in id order: equal digests mean equal data. */
const fingerprint = (database: string) =>
  one(`SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) AS p FROM patients t`, database).then(async (p) => {
    const v = await one(`SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) AS v FROM visits t`, database);
    const r = await one(`SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) AS r FROM prescriptions t`, database);
    return `${p.p}/${v.v}/${r.r}`;
  });

beforeAll(async () => {
  db = await freshDatabase('seed');
  const t0 = performance.now();
  await seedDemo((sql) => db.pg.exec(sql, db.name), { agentPassword: AGENT_PASSWORD, patients: PATIENTS });
  seedMs = performance.now() - t0;
});

describe('demo seed', () => {
  it('creates the expected number of rows, in well under the demo budget', async () => {
    expect(await one('SELECT (SELECT count(*) FROM patients)::int AS p, (SELECT count(*) FROM visits)::int AS v, (SELECT count(*) FROM prescriptions)::int AS r'))
      .toEqual({ p: PATIENTS, v: 3 * PATIENTS, r: 2 * PATIENTS });
    expect(seedMs).toBeLessThan(20_000); // ~0.4–0.7 s on an idle 2-core machine; loose for loaded CI
  });

  it('uses only SSNs that cannot be real: area 900-999, groups outside the ITIN ranges, all unique', async () => {
    const row = await one(`SELECT
        count(*) FILTER (WHERE ssn !~ '^9[0-9]{2}-[1-4][0-9]-[0-9]{4}$')::int AS malformed,
        count(*) FILTER (WHERE left(ssn, 3) IN ('000', '666') OR left(ssn, 1) <> '9')::int AS real_areas,
        count(*) FILTER (WHERE substr(ssn, 5, 2)::int BETWEEN 50 AND 65 OR substr(ssn, 5, 2)::int BETWEEN 70 AND 99)::int AS itin_groups,
        count(*) FILTER (WHERE right(ssn, 4) = '0000')::int AS zero_serials,
        (count(*) - count(DISTINCT ssn))::int AS duplicates
      FROM patients`);
    expect(row).toEqual({ malformed: 0, real_areas: 0, itin_groups: 0, zero_serials: 0, duplicates: 0 });
  });

  it('formats MRNs, emails and phone numbers as fakes', async () => {
    expect(await one(`SELECT mrn, email, phone FROM patients WHERE id = 1`)).toMatchObject({ mrn: 'MRN-00001', email: expect.stringMatching(/^[a-z]+\.[a-z]+1@example\.org$/) });
    const row = await one(`SELECT
        count(*) FILTER (WHERE mrn !~ '^MRN-[0-9]{5}$')::int AS bad_mrn,
        count(*) FILTER (WHERE email !~ '^[a-z]+\\.[a-z]+[0-9]+@example\\.org$')::int AS bad_email,
        count(*) FILTER (WHERE phone !~ '^\\+1-[0-9]{3}-555-01[0-9]{2}$')::int AS bad_phone,
        count(*) FILTER (WHERE date_of_birth NOT BETWEEN '1940-01-01' AND '2006-01-01')::int AS bad_dob
      FROM patients`);
    expect(row).toEqual({ bad_mrn: 0, bad_email: 0, bad_phone: 0, bad_dob: 0 });
  });

  it('is deterministic: a second database seeds to the same rows', async () => {
    const other = await freshDatabase('seed2');
    // Same password: the role is cluster-wide, so a second seed resets it.
    await seedDemo((sql) => db.pg.exec(sql, other.name), { agentPassword: AGENT_PASSWORD, patients: PATIENTS });
    expect(await fingerprint(other.name)).toBe(await fingerprint(db.name));
  });

  it('gives the agent role DML on the tables and nothing more', async () => {
    expect(await one(`SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = 'gw_agent'`))
      .toEqual({ rolsuper: false, rolcreaterole: false, rolcreatedb: false, rolbypassrls: false, rolcanlogin: true });
    // The password was stored as a SCRAM verifier computed client-side.
    expect(await one(`SELECT left(rolpassword, 14) AS p FROM pg_authid WHERE rolname = 'gw_agent'`)).toEqual({ p: 'SCRAM-SHA-256$' });

    const url = new URL(db.url);
    url.username = 'gw_agent';
    url.password = AGENT_PASSWORD;
    const agent = new pg.Client({ connectionString: url.href });
    await agent.connect();
    try {
      expect((await agent.query('SELECT count(*)::int AS n FROM visits WHERE patient_id = 42')).rows[0].n).toBe(3);
      const inserted = await agent.query(
        `INSERT INTO patients (full_name, ssn, mrn, email, phone, date_of_birth, diagnosis)
         VALUES ('Test Person', '999-49-9999', 'MRN-99999', 't@example.org', '+1-202-555-0100', '1990-01-01', 'Z00.00') RETURNING id`,
      );
      expect(inserted.rows[0].id).toBe(PATIENTS + 1);
      await agent.query('UPDATE patients SET phone = $1 WHERE id = $2', ['+1-202-555-0101', PATIENTS + 1]);
      await agent.query('DELETE FROM patients WHERE id = $1', [PATIENTS + 1]);
      await expect(agent.query('DROP TABLE prescriptions')).rejects.toMatchObject({ code: '42501' });
      await expect(agent.query('CREATE TABLE x (a int)')).rejects.toMatchObject({ code: '42501' });
      await expect(agent.query("SELECT pg_read_file('postgresql.conf')")).rejects.toMatchObject({ code: '42501' });
    } finally {
      await agent.end();
    }
  });
});
