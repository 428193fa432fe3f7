// The attack runner on a tiny generated corpus, against the real product: an allowed SELECT that must
// pass, and a DROP TABLE canary whose verdict must agree with the evidence (executed → fingerprint
// changed → FAIL; refused by the policy → fingerprint unchanged → PASS).
import { describe, expect, it } from 'vitest';
import { mkdtemp, copyFile, writeFile, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { runAttacks } from '../../scripts/attacks/runner.js';
import { classifyError, fingerprintDiff, needlesFor } from '../../scripts/attacks/judge.js';

const SHARED = path.resolve(__dirname, '../../../shared/attacks');

describe('attack runner', () => {
  it('judges the pure helpers', () => {
    expect(fingerprintDiff({ a: '1', b: '2' }, { a: '1', b: '3' })).toEqual(['b']);
    expect(classifyError({ severity: 'ERROR', code: '42501', message: 'hoopctl: statement blocked by policy' })).toBe('blocked');
    expect(classifyError({ severity: 'ERROR', code: '42501', message: 'hoopctl: statement needs approval and was not run' })).toBe('held');
    expect(classifyError({ severity: 'FATAL', code: '08P01', message: 'bad' })).toBe('rejected');
    expect(needlesFor({ id: 'X-1', kind: 'sql', expect: 'masked', tier: 'must', masked_values_must_not_appear: ['hex:ffff'] }, ['a']).map((n) => n.bytes.toString('hex'))).toEqual(['ffff', '61']);
  });

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
