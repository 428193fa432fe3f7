// The CLI's own configuration: which issuer people log in to, the public client id, the agent, and which
// login is active. It lives in `$XDG_CONFIG_HOME/hoopctl/config.json` (default `~/.config`), next to the
// file token store. Nothing secret is kept here; tokens live in the token store.
//
// Precedence everywhere: flag > environment (HOOPCTL_ISSUER, HOOPCTL_AGENT, HOOPCTL_AUDIENCE) > this file
// > built-in default.
import { mkdir, readFile, rename, rm, open, chmod } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ExitCode, UserError } from '../errors.js';

export type Env = Record<string, string | undefined>;

export interface Settings {
  /** OIDC issuer people log in to with the device flow (exactly as in its `iss`). */
  issuer?: string;
  /** Public OAuth client id of the CLI at that issuer. Default `hoopctl`. */
  clientId?: string;
  /** Agent URL (`wss://host:port`), used by `connect` and `whoami`. */
  agent?: string;
  /** Audience requested for workload identity tokens (GitHub Actions). Default `hoop-agent`. */
  audience?: string;
  /** RFC 8707 resource indicator, sent only when set (for issuers that do not default one). */
  resource?: string;
  /** Key (issuer) of the login `connect` and `whoami` use: one active login at a time. */
  active?: string;
}

export const DEFAULT_CLIENT_ID = 'hoopctl';
export const DEFAULT_AUDIENCE = 'hoop-agent';

/** `$HOOPCTL_CONFIG_DIR`, `$XDG_CONFIG_HOME/hoopctl`, or `~/.config/hoopctl`. */
export function configDir(env: Env = process.env): string {
  // A private config for one shell (the demo's approver) without moving every program's XDG config.
  if (env.HOOPCTL_CONFIG_DIR && env.HOOPCTL_CONFIG_DIR.startsWith('/')) return env.HOOPCTL_CONFIG_DIR;
  const base = env.XDG_CONFIG_HOME && env.XDG_CONFIG_HOME.startsWith('/') ? env.XDG_CONFIG_HOME : join(env.HOME || homedir(), '.config');
  return join(base, 'hoopctl');
}

export function settingsPath(env: Env = process.env): string {
  return join(configDir(env), 'config.json');
}

export async function loadSettings(env: Env = process.env): Promise<Settings> {
  const path = settingsPath(env);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw err;
  }
  try {
    const parsed = JSON.parse(text) as unknown;
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not an object');
    const s = parsed as Record<string, unknown>;
    const out: Settings = {};
    for (const k of ['issuer', 'clientId', 'agent', 'audience', 'resource', 'active'] as const) {
      if (typeof s[k] === 'string') out[k] = s[k] as string;
    }
    return out;
  } catch (err) {
    throw new UserError('BAD_CONFIG', `cannot read ${path}: ${(err as Error).message}`, {
      hint: 'Fix or delete the file; `hoopctl login --issuer URL` writes a new one.',
      exitCode: ExitCode.Usage,
    });
  }
}

/** Merges `patch` into the stored settings (undefined values leave a key as it is). */
export async function updateSettings(patch: Partial<Settings>, env: Env = process.env): Promise<Settings> {
  const current = await loadSettings(env);
  const next: Settings = { ...current };
  for (const [k, v] of Object.entries(patch) as [keyof Settings, string | undefined][]) {
    if (v !== undefined) next[k] = v;
  }
  await writeFileAtomic(settingsPath(env), JSON.stringify(next, null, 2) + '\n', env);
  return next;
}

/** Removes one key (e.g. `active` after logout). */
export async function clearSetting(key: keyof Settings, env: Env = process.env): Promise<void> {
  const current = await loadSettings(env);
  if (current[key] === undefined) return;
  delete current[key];
  await writeFileAtomic(settingsPath(env), JSON.stringify(current, null, 2) + '\n', env);
}

/** The directory for our files: created 0700, and tightened to 0700 if it already exists looser. */
export async function ensurePrivateDir(env: Env = process.env): Promise<string> {
  const dir = configDir(env);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // mkdir's mode is filtered by the umask and ignored for an existing directory.
  await chmod(dir, 0o700);
  return dir;
}

/**
 * Writes a file so that readers see either the old or the new content, never a torn one: a private
 * temporary file in the same directory (0600 from creation, so the secret is never world-readable, even
 * briefly), fsync, then rename over the target. Concurrent writers each use their own temporary file;
 * the last rename wins.
 */
export async function writeFileAtomic(path: string, content: string, env: Env = process.env): Promise<void> {
  await ensurePrivateDir(env);
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    const fh = await open(tmp, 'wx', 0o600);
    try {
      await fh.writeFile(content, 'utf8');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
