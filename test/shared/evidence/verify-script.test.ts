// verify.mjs restates the chain, Merkle and signed-note rules in plain JavaScript; these tests hold its
// restatements to the TypeScript modules the agent and the CLI use, on the same inputs.
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { VERIFY_MJS } from '../../../shared/evidence/verify-script.js';
import { canonicalJson, hashEvent } from '../../../shared/audit/chain.js';
import { consistencyProof, eventLeaf, inclusionProof, rootOf } from '../../../shared/audit/merkle.js';
import { checkpointBody, manifestNoteBody, newSigningKeyPem, signNote, signerFromPem } from '../../../shared/audit/checkpoint.js';

type Mjs = {
  canonical(v: unknown): string;
  eventHash(e: object): string;
  leafOf(h: string): Buffer;
  verifyInclusion(leaf: Buffer, i: number, n: number, p: Buffer[], root: Buffer): boolean;
  verifyConsistency(m: number, n: number, a: Buffer, b: Buffer, p: Buffer[]): boolean;
  parseVkey(v: string, w?: object): { fingerprint: string };
  openNote(text: string, keys: unknown[]): { body: string; key: { fingerprint: string } };
  csvCell(v: unknown): string;
};
let mjs: Mjs;
beforeAll(async () => {
  const file = path.join(await mkdtemp(path.join(os.tmpdir(), 'hoop-mjs-')), 'verify.mjs');
  await writeFile(file, VERIFY_MJS);
  mjs = (await import(pathToFileURL(file).href)) as Mjs;
});

describe("verify.mjs agrees with shared/audit", () => {
  it('canonical JSON and event hashes, including index-like keys, unicode and nesting', () => {
    const ev = { seq: 7, ts: '2026-12-07T00:00:00.000Z', prev: '0'.repeat(64), type: 'statement', agentId: 'a', data: { sql: "SELECT '=1'", rows: 0.5, neg: -0 } };
    const cases: unknown[] = [
      ev,
      { b: 1, a: [3, { z: null, y: 'é\u2028"' }], '10': 'x', '2': true, nested: { '0': 1, k: [] } },
      [1, 'two', [3]],
      'plain',
      42,
    ];
    for (const c of cases) expect(mjs.canonical(c)).toBe(canonicalJson(c));
    expect(mjs.eventHash({ ...ev, hash: 'x' })).toBe(hashEvent({ ...ev, hash: 'x' }));
  });

  it('RFC 9162 proof checks accept the TypeScript proofs and refuse altered ones', () => {
    const hashes = Array.from({ length: 37 }, (_, i) => canonicalJson(i).padStart(64, 'a').slice(0, 64).replace(/[^0-9a-f]/g, 'b'));
    const leaves = hashes.map(eventLeaf);
    for (let n = 1; n <= 37; n++) {
      const root = rootOf(leaves, 0, n);
      for (let i = 0; i < n; i++) {
        expect(mjs.leafOf(hashes[i])).toEqual(leaves[i]);
        expect(mjs.verifyInclusion(leaves[i], i, n, inclusionProof(leaves, i, n), root)).toBe(true);
      }
      for (let m = 1; m <= n; m++) {
        const p = consistencyProof(leaves, m, n);
        expect(mjs.verifyConsistency(m, n, rootOf(leaves, 0, m), root, p)).toBe(true);
        if (p.length) expect(mjs.verifyConsistency(m, n, rootOf(leaves, 0, m), root, [leaves[0], ...p.slice(1)])).toBe(p[0].equals(leaves[0]));
      }
    }
  });

  it('signed notes: verifies what the TypeScript signs, with key windows, and names an unknown key', () => {
    const k = signerFromPem('hoopctl/agent-1', newSigningKeyPem());
    const note = signNote(checkpointBody({ origin: 'hoopctl/agent-1', size: 5, root: Buffer.alloc(32, 3), time: '2026-12-07T00:00:00.000Z' }), [k]);
    expect(mjs.openNote(note, [mjs.parseVkey(k.vkey)]).key.fingerprint).toBe(k.fingerprint);
    expect(() => mjs.openNote(note, [mjs.parseVkey(k.vkey, { notAfter: '2026-12-06T00:00:00.000Z' })])).toThrow(/outside the window/);
    const other = signerFromPem('hoopctl/agent-1', newSigningKeyPem());
    expect(() => mjs.openNote(note, [mjs.parseVkey(other.vkey)])).toThrow(/unknown key/);
    expect(() => mjs.openNote(note.replace('\n5\n', '\n6\n'), [mjs.parseVkey(k.vkey)])).toThrow(/does not verify/);
    const m = signNote(manifestNoteBody('hoopctl/agent-1', 'ab'.repeat(32), '2026-12-07T00:00:00.000Z'), [k]);
    expect(mjs.openNote(m, [mjs.parseVkey(k.vkey)]).body.split('\n')[1]).toBe(`manifest sha256 ${'ab'.repeat(32)}`);
  });

  it('CSV cells: formula prefixes neutralised, quoting as RFC 4180', () => {
    for (const v of ['=HYPERLINK("x")', '+1', '-2', '@SUM(A1)', 'a,b', 'say "hi"', 'line\nbreak', 7, null]) {
      const c = mjs.csvCell(v);
      expect(c).not.toMatch(/^"?[=+\-@]/);
    }
    expect(mjs.csvCell('say "hi"')).toBe('"say ""hi"""');
  });
});

describe('the sessions table', () => {
  it('carries each session\'s stated purpose (issue 16), empty when none was stated', async () => {
    const fx = mjs as unknown as { newFigures(c?: string): { add(e: unknown): void; result(): { tables: Record<string, { columns: string[]; rows: unknown[][] }> } } };
    const f = fx.newFigures();
    const base = { agentId: 'a', prev: '0'.repeat(64), hash: '1'.repeat(64), connection: 'db', identity: { sub: 'u-alice', issuer: 'https://idp' } };
    f.add({ ...base, seq: 1, ts: '2026-12-07T00:00:00.000Z', type: 'session_start', sessionId: 's1', data: { purpose: 'OPS-7: fix visit dates' } });
    f.add({ ...base, seq: 2, ts: '2026-12-07T00:00:01.000Z', type: 'session_start', sessionId: 's2', data: {} });
    const { columns, rows } = f.result().tables.sessions;
    const purpose = columns.indexOf('purpose');
    expect(purpose).toBeGreaterThan(-1);
    expect(rows.map((r) => [r[0], r[purpose]])).toEqual([['s1', 'OPS-7: fix visit dates'], ['s2', '']]);
  });
});
