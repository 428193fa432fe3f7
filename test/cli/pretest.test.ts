// `npm test` on a fresh machine: its pretest says exactly what to install when psql, pg_dump,
// gnome-keyring or dbus are missing, and lets the tests run when they are there.
import { describe, expect, it } from 'vitest';
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run } from '../harness/stack.js';

const SCRIPT = path.resolve(import.meta.dirname, '../../scripts/pretest.mjs');

describe('scripts/pretest.mjs', () => {
  it('with none of the tools on PATH: exit 1 and the exact apt-get line', async () => {
    const bin = await mkdtemp(path.join(os.tmpdir(), 'hoop-pretest-'));
    try {
      await symlink('/bin/sh', path.join(bin, 'sh'));
      const r = await run(process.execPath, [SCRIPT], { env: { PATH: bin } });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain('npm test needs psql, pg_dump, gnome-keyring-daemon, dbus-run-session, chromium');
      expect(r.stderr).toContain('apt-get update && apt-get install -y postgresql-client gnome-keyring dbus chromium');
    } finally {
      await rm(bin, { recursive: true, force: true });
    }
  });

  it('on this machine (the tools installed): exit 0, silent', async () => {
    const r = await run(process.execPath, [SCRIPT]);
    expect(r).toMatchObject({ code: 0, stderr: '' });
  });
});
