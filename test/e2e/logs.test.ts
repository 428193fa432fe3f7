// Structured logs (issue 17): the agent's log never carries SQL literals, tokens or PHI, at any level.
// A session full of real PHI values from the demo clinic (in WHERE clauses, parameters, casts that fail
// quoting them, blocked, held and unparseable statements) runs through an agent logging at debug;
// every line it wrote is then searched for each value.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { createLogger } from '../../agent/src/log.js';
import { directQuery, nextPendingApproval, startExtraAgent, useStack, type ExtraAgent } from '../harness/stack.js';
import { DEMO_CONNECTION } from '../../cli/src/demo/stack.js';

const s = useStack({ patients: 50 });

describe('agent logs at debug level after a session full of PHI literals', () => {
  const lines: string[] = [];
  let A: ExtraAgent;
  beforeAll(async () => {
    A = await startExtraAgent(s.get(), { agentId: 'logs', log: createLogger({ level: 'debug', write: (l) => lines.push(l) }) });
  }, 120_000);
  afterAll(() => A?.stop(), 60_000);

  it('contains none of the values, no token, and still says what happened', async () => {
    const stack = s.get();
    const [p] = await directQuery<{ full_name: string; ssn: string; mrn: string; email: string; phone: string; dob: string }>(
      stack,
      "SELECT full_name, ssn, mrn, email, phone, to_char(date_of_birth, 'YYYY-MM-DD') AS dob FROM patients WHERE id = 7",
    );
    const [v] = await directQuery<{ notes: string }>(stack, 'SELECT notes FROM visits WHERE notes IS NOT NULL LIMIT 1');
    const c = new pg.Client({ host: A.listener.host, port: A.listener.port, user: 'noop', database: DEMO_CONNECTION });
    c.on('error', () => {});
    await c.connect();
    const tryQuery = (sql: string, params?: unknown[]) => c.query(sql, params).then((r) => r.rowCount, (e: Error & { code?: string }) => e.code);
    const outcomes = [
      await tryQuery(`SELECT id, ssn FROM patients WHERE ssn = '${p.ssn}'`),
      await tryQuery('SELECT full_name FROM patients WHERE mrn = $1 AND email = $2', [p.mrn, p.email]),
      await tryQuery(`SELECT '${p.full_name}'::int`), // 22P02, the server's message quotes the value
      await tryQuery(`SELECT * FROM visits WHERE notes = '${v.notes.replace(/'/g, "''")}'`),
      await tryQuery(`DROP TABLE visits -- ${p.phone}`), // blocked
      await tryQuery(`SELEC '${p.dob}' FROM patients`), // does not parse: refused (fail closed)
      await tryQuery(`SELECT pg_read_file('/etc/${p.mrn}')`), // blocked function
    ];
    const held = tryQuery(`UPDATE patients SET email = '${p.email}.x' WHERE full_name = '${p.full_name}'`);
    const a = await nextPendingApproval(A);
    await A.agent.store.approvals.decide(a.id, { sub: 'approver-bot', issuer: stack.issuer.issuer, groups: ['compliance'] }, 'deny', `not for ${p.full_name}`);
    outcomes.push(await held);
    await c.end();
    await A.stop();

    expect(outcomes).toEqual([1, 1, '22P02', expect.any(Number), '42501', '42501', '42501', '42501']);
    const log = lines.join('\n');
    // It logged the session and its decisions (the search below is not vacuous)…
    expect(lines.length).toBeGreaterThan(10);
    expect(log).toContain('"msg":"statement held"');
    expect(log.match(/"msg":"statement"/g)?.length).toBeGreaterThanOrEqual(6);
    // …and none of the values, whole or in part, nor a token (JWTs start with eyJ).
    const values = [p.full_name, ...p.full_name.split(' '), p.ssn, p.mrn, p.email, p.phone, p.dob, v.notes, v.notes.slice(0, 12)];
    for (const value of values) expect(log, value).not.toContain(value);
    expect(log).not.toMatch(/eyJ[\w-]{10,}/);
    // The start-up lint named the text columns left in clear beside masked ones (names, never values).
    const lint = lines.map((l) => JSON.parse(l) as { msg: string; column?: string; level: string }).filter((r) => r.msg === 'text column not masked beside masked columns');
    expect(lint.map((r) => r.column).sort()).toEqual(['public.patients.diagnosis', 'public.patients.full_name']);
    expect(lint.every((r) => r.level === 'warn')).toBe(true);
  }, 120_000);
});
