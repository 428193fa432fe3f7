// The keychain path for real: a D-Bus session with an unlocked gnome-keyring (Secret Service), and
// @napi-rs/keyring storing, reading and removing a login there, with no credentials file written.
// Needs Debian's gnome-keyring and dbus (.ci/run installs them).
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { run } from '../harness/stack.js';

const SCRIPT = `
export XDG_CONFIG_HOME=$(mktemp -d) HOME=$(mktemp -d)
eval "$(printf 'test-password' | gnome-keyring-daemon --unlock --components=secrets 2>/dev/null)"
exec node --import tsx test/cli/keychain/roundtrip.ts`;

describe('token store on a real secret service', () => {
  it('keeps the login in the keychain and nowhere else, then removes it', async () => {
    for (const tool of ['dbus-run-session', 'gnome-keyring-daemon']) {
      try {
        execFileSync('which', [tool]);
      } catch {
        throw new Error(`${tool} is missing: apt-get install -y gnome-keyring dbus (as .ci/run does)`);
      }
    }
    const r = await run('dbus-run-session', ['--', 'bash', '-c', SCRIPT], { timeoutMs: 60_000 });
    const line = r.stdout.trim().split('\n').at(-1) ?? '';
    expect(JSON.parse(line)).toEqual({ saved: 'keychain', loadedFrom: 'keychain', roundTrip: true, fileWritten: false, removed: ['keychain'], after: null });
  }, 90_000);
});
