#!/usr/bin/env node
// `npm test` runs this first (the `pretest` script): the end-to-end tests drive the real psql and
// pg_dump, the token store's keychain test needs a Secret Service (gnome-keyring under dbus), and the
// evidence report is checked in headless Chromium.
// On a fresh machine say exactly what to install instead of failing deep inside a test.
import { execFileSync } from 'node:child_process';

const NEEDED = [
  { command: 'psql', pkg: 'postgresql-client' },
  { command: 'pg_dump', pkg: 'postgresql-client' },
  { command: 'gnome-keyring-daemon', pkg: 'gnome-keyring' },
  { command: 'dbus-run-session', pkg: 'dbus' },
  // the evidence report is opened in headless Chromium (test/e2e/evidence.test.ts)
  { command: 'chromium', pkg: 'chromium' },
];

const has = (cmd) => {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};

const missing = NEEDED.filter((n) => !has(n.command));
if (missing.length) {
  const pkgs = [...new Set(missing.map((n) => n.pkg))];
  process.stderr.write(
    `npm test needs ${missing.map((n) => n.command).join(', ')}, not found on PATH. On Debian or Ubuntu:\n\n` +
      `  apt-get update && apt-get install -y ${pkgs.join(' ')}     # as root, or with sudo\n\n` +
      `(.ci/run installs them the same way.)\n`,
  );
  process.exit(1);
}
