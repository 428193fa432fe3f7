// The attack runner on a tiny generated corpus, against the real product: an allowed SELECT that must
// pass, and a DROP TABLE canary whose verdict must agree with the evidence (executed → fingerprint
// changed → FAIL; refused by the policy → fingerprint unchanged → PASS).
import { describe, expect, it } from 'vitest';
import { mkdtemp, copyFile, writeFile, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { runAttacks } from '../../scripts/attacks/runner.js';
import { classifyError, fingerprintDiff, needlesFor } from '../../scripts/attacks/judge.js';
import { approvedSteps } from '../../scripts/attacks/expected.js';

const SHARED = path.resolve(__dirname, '../../../shared/attacks');

describe('attack runner', () => {
  it('judges the pure helpers', () => {
    expect(fingerprintDiff({ a: '1', b: '2' }, { a: '1', b: '3' })).toEqual(['b']);
    expect(classifyError({ severity: 'ERROR', code: '42501', message: 'hoopctl: statement blocked by policy' })).toBe('blocked');
    expect(classifyError({ severity: 'ERROR', code: '42501', message: 'hoopctl: statement needs approval and was not run' })).toBe('held');
    expect(classifyError({ severity: 'FATAL', code: '08P01', message: 'bad' })).toBe('rejected');
    expect(needlesFor({ id: 'X-1', kind: 'sql', expect: 'masked', tier: 'must', masked_values_must_not_appear: ['hex:ffff'] }, ['a']).map((n) => n.bytes.toString('hex'))).toEqual(['ffff', '61']);
  });

  it('replays only what the second human approved, with the PREPAREs it EXECUTEs', async () => {
    const sent = ['PREPARE d(int) AS DELETE FROM notes WHERE id = $1', 'SELECT 1', "SELECT lo_from_bytea(7, 'x')", 'EXECUTE d(1)', 'DROP TABLE canary', 'PREPARE late AS SELECT 1'].map((sql) => ({ sql, replay: () => sql }));
    const granted = [
      { id: 'a1', sql: 'SELECT lo_from_bytea($1, $2)', sessionId: 's' }, // recorded normalised (it may read masked columns)
      { id: 'a2', sql: 'EXECUTE d(1)', sessionId: 's' },
      { id: 'a3', sql: 'DELETE FROM notes', sessionId: 's' }, // never sent by the case: not expected
    ];
    const { replay, unmatched } = await approvedSteps(granted, sent);
    expect(replay.map((r) => r.sql)).toEqual(['PREPARE d(int) AS DELETE FROM notes WHERE id = $1', "SELECT lo_from_bytea(7, 'x')", 'EXECUTE d(1)']);
    expect(unmatched.map((u) => u.id)).toEqual(['a3']);
    // matches move forward: an approval never matches a step sent before the previous match
    const again = await approvedSteps([granted[1], granted[0]], sent);
    expect(again.replay.map((r) => r.sql)).toEqual(['PREPARE d(int) AS DELETE FROM notes WHERE id = $1', 'EXECUTE d(1)']);
    expect(again.unmatched.map((u) => u.id)).toEqual(['a1']);
  });

  it('auto-approve mode judges against F0 plus the approved steps, and fails on any other change', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'atk-test-'));
    try {
      await copyFile(path.join(SHARED, 'schema.sql'), path.join(dir, 'schema.sql'));
      const corpus = {
        meta: { fixture: { masked_columns: ['patients.ssn'] }, sensitive_values: { core: ['123-45-6789'] } },
        cases: [
          // approved pre step changes notes; the blocked main step must still change nothing
          { id: 'TA-001', kind: 'sql', pre_sql: ['DELETE FROM notes WHERE id = 1'], sql: 'DROP TABLE canary', expect: 'blocked', tier: 'must', masked_values_must_not_appear: [] },
          // approved, but the state the gateway left differs from the same statement replayed directly
          { id: 'TA-002', kind: 'sql', sql: 'UPDATE notes SET body = md5(random()::text) WHERE id = 2', expect: 'needs_approval', tier: 'must', masked_values_must_not_appear: [] },
          // a pipelined approved DELETE next to a blocked DROP (protocol kind)
          { id: 'TA-003', kind: 'protocol', protocol_steps: [{ msg: 'Query', sql: 'DROP TABLE canary' }, { msg: 'Query', sql: 'DELETE FROM notes' }], expect: 'blocked', tier: 'must', masked_values_must_not_appear: [] },
        ],
      };
      const file = path.join(dir, 'corpus.json');
      await writeFile(file, JSON.stringify(corpus));
      const lines: string[] = [];
      const summary = await runAttacks({ corpus: file, mode: 'auto-approve', gate: [], caseTimeoutMs: 30_000, profile: 'hostile-db', out: (l) => lines.push(l), progress: () => {} });
      const v = Object.fromEntries(summary.verdicts.map((x) => [x.id, x]));
      expect(v['TA-001'].evidence.join('\n')).toMatch(/expected state \(F0 \+ the approved steps, replayed directly\): notes_md5 -> /);
      expect(v['TA-001'].evidence).toContain('state equals the expected state');
      expect(v['TA-001']).toMatchObject({ pass: true, observed: 'blocked' });
      expect(v['TA-002'].pass).toBe(false);
      expect(v['TA-002'].reason).toMatch(/state differs from F0 plus the approved steps \(notes_md5\)/);
      expect(v['TA-003'].evidence).toContain('state equals the expected state');
      expect(v['TA-003'].pass).toBe(true);
      expect(lines.at(-1)).toBe('2 passed, 1 failed');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 180_000);

  it('runs a generated corpus and prints verdict lines consistent with the evidence', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'atk-test-'));
    try {
      await copyFile(path.join(SHARED, 'schema.sql'), path.join(dir, 'schema.sql'));
      const corpus = {
        meta: {
          fixture: { masked_columns: ['patients.ssn'] },
          sensitive_values: { core: ['123-45-6789'] },
        },
        cases: [
          { id: 'TT-001', kind: 'sql', sql: 'SELECT id, diagnosis FROM patients ORDER BY id', expect: 'allowed', tier: 'must', masked_values_must_not_appear: [] },
          { id: 'TT-002', kind: 'sql', sql: 'DROP TABLE canary', expect: 'blocked', tier: 'must', masked_values_must_not_appear: [] },
        ],
      };
      const file = path.join(dir, 'corpus.json');
      await writeFile(file, JSON.stringify(corpus));
      const lines: string[] = [];
      const summary = await runAttacks({
        corpus: file, json: path.join(dir, 'out.json'), mode: 'deny', gate: [], caseTimeoutMs: 20_000, profile: 'hostile-db',
        out: (l) => lines.push(l), progress: () => {},
      });
      const text = lines.join('\n');
      expect(lines.at(-1)).toMatch(/^\d+ passed, \d+ failed$/);
      expect(text).toMatch(/^PASS TT-001 /m);
      const drop = summary.verdicts.find((v) => v.id === 'TT-002')!;
      const evidence = drop.evidence.join('\n');
      if (/fingerprint changed/.test(evidence)) {
        // Nothing blocked the DROP: the runner must see it and fail the case.
        expect(drop.pass).toBe(false);
        expect(text).toMatch(/^FAIL TT-002 /m);
      } else {
        expect(evidence).toMatch(/fingerprint unchanged/);
        expect(drop.observed).toMatch(/blocked|held|db-error/);
        expect(drop.pass).toBe(true);
        expect(text).toMatch(/^PASS TT-002 /m);
      }
      expect(summary.exitCode).toBe(0);
      const json = JSON.parse(await readFile(path.join(dir, 'out.json'), 'utf8'));
      expect(json.verdicts).toHaveLength(2);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
