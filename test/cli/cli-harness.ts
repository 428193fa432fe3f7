// Runs the real hoopctl binary (through tsx) in a child process, with HOME and XDG_CONFIG_HOME in a
// temp dir.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const REPO = resolve(import.meta.dirname, '../..');
const MAIN = join(REPO, 'cli/src/main.ts');

/** Path of the CLI's main.ts (kept a function: tests written against a patched scratch copy still call it). */
export function cliMain(): Promise<string> {
  return Promise.resolve(MAIN);
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Async spawn (never spawnSync: an issuer may be running in this process). */
export async function runCli(
  args: string[],
  env: Record<string, string | undefined>,
  opts: { timeoutMs?: number; /** a command to run it under, e.g. ['dbus-run-session', '--'] */ wrap?: string[] } = {},
): Promise<RunResult> {
  const main = await cliMain();
  const tsx = join(REPO, 'node_modules/.bin/tsx');
  const argv = [tsx, '--tsconfig', join(REPO, 'tsconfig.json'), main, ...args];
  if (opts.wrap) argv.unshift(...opts.wrap);
  return new Promise((resolvePromise, reject) => {
    const child = spawn(argv[0], argv.slice(1), {
      cwd: REPO,
      env: env as NodeJS.ProcessEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
  });
}

/** A minimal environment for a child: PATH and a private HOME/XDG_CONFIG_HOME, nothing from CI. */
export async function tempHome(): Promise<{ home: string; env: Record<string, string>; cleanup: () => Promise<void> }> {
  const home = await mkdtemp(join(tmpdir(), 'hoopctl-home-'));
  return {
    home,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, XDG_CONFIG_HOME: join(home, '.config') },
    cleanup: () => rm(home, { recursive: true, force: true }),
  };
}
