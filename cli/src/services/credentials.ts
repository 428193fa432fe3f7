// Getting, keeping and renewing the credential hoopctl presents to the agent.
//
//   login (person)   deviceLogin()   → device grant → StoredLogin{method:'device', refresh token}
//   login (machine)  machineLogin()  → first usable of: --token/HOOPCTL_TOKEN, --id-token-file,
//                                      GitHub Actions ID token, HOOPCTL_CLIENT_ID/SECRET
//   connect, whoami  resolveToken()  → explicit token, else the stored one, renewed when it expires within
//                                      60 s: refresh grant for people; machines re-run their own grant
//                                      (a refresh token is never issued to them, and a CI job's identity
//                                      must come from the platform each time, not from a cache)
//
// Renewal happens under a lock directory next to the credentials, because the issuer rotates refresh
// tokens for public clients and treats reuse of an old one as theft (it revokes the whole grant): two
// `hoopctl connect` processes refreshing at once would log the user out.
import { mkdir, readFile, rmdir, stat } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { ExitCode, UserError } from '../errors.js';
import {
  clientCredentialsGrant,
  decodeClaims,
  discover,
  githubActionsIdToken,
  OAuthError,
  pollDeviceToken,
  refreshGrant,
  startDeviceAuthorization,
  systemClock,
  type Clock,
  type DeviceAuthorization,
  type DeviceStatus,
  type TokenSet,
} from './oidc-client.js';
import { configDir, ensurePrivateDir, loadSettings, updateSettings, type Env, type Settings } from './settings.js';
import { TokenStore, type LoginMethod, type StoreKind, type StoredLogin, type WorkloadSource } from './token-store.js';

/** Renew when the access token has less than this left. */
export const REFRESH_MARGIN_MS = 60_000;

type Now = number | (() => number);
const nowOf = (now: Now | undefined): number => (typeof now === 'function' ? now() : (now ?? Date.now()));

// ---------------------------------------------------------------------------------------------------
// Logging in

export interface DeviceLoginOptions {
  issuer: string;
  clientId: string;
  scope?: string;
  resource?: string;
  clock?: Clock;
  signal?: AbortSignal;
  /** Called once the code exists: show it to the person (and open the browser). */
  onCode?: (auth: DeviceAuthorization & { expiresAt: number }) => void;
  onStatus?: (s: DeviceStatus) => void;
}

/** The device authorization grant from discovery to tokens; throws LOGIN_DENIED / LOGIN_EXPIRED. */
export async function deviceLogin(opts: DeviceLoginOptions): Promise<StoredLogin> {
  const clock = opts.clock ?? systemClock;
  const meta = await discover(opts.issuer);
  const startedAt = clock.now();
  const auth = await startDeviceAuthorization(meta, { clientId: opts.clientId, scope: opts.scope, resource: opts.resource });
  opts.onCode?.({ ...auth, expiresAt: startedAt + auth.expiresIn * 1000 });
  const tokens = await pollDeviceToken(meta, auth, { clientId: opts.clientId, clock, startedAt, signal: opts.signal, onStatus: opts.onStatus });
  return toStoredLogin(tokens, { issuer: meta.issuer, method: 'device', clientId: opts.clientId, resource: opts.resource }, clock.now());
}

export interface MachineLoginOptions {
  env: Env;
  flagToken?: string;
  idTokenFile?: string;
  /** Issuer for client credentials (flag > HOOPCTL_ISSUER > settings). */
  issuer?: string;
  /** Audience for the workload identity token. */
  audience: string;
  resource?: string;
  now?: Now;
}

/**
 * Non-interactive login. Never prompts, never waits on a person: it uses the first credential source
 * that is present, and fails with one line naming the options when none is.
 */
export async function machineLogin(opts: MachineLoginOptions): Promise<StoredLogin> {
  const { env } = opts;
  const now = nowOf(opts.now);
  const explicit = (opts.flagToken ?? env.HOOPCTL_TOKEN)?.trim();
  if (explicit) return explicitTokenLogin(explicit, opts.issuer, now);
  if (opts.idTokenFile) {
    const path = resolvePath(opts.idTokenFile);
    return workloadLogin(await readIdTokenFile(path), { kind: 'file', path }, now);
  }
  if (env.ACTIONS_ID_TOKEN_REQUEST_URL && env.ACTIONS_ID_TOKEN_REQUEST_TOKEN) {
    const source: WorkloadSource = { kind: 'github-actions', audience: opts.audience };
    return workloadLogin(await githubActionsIdToken(env, opts.audience), source, now);
  }
  if (env.HOOPCTL_CLIENT_ID && env.HOOPCTL_CLIENT_SECRET) {
    if (!opts.issuer) {
      throw new UserError('NO_ISSUER', 'HOOPCTL_CLIENT_ID is set but no issuer is configured', {
        hint: 'Pass --issuer https://login.example.com or set HOOPCTL_ISSUER.',
        exitCode: ExitCode.Usage,
      });
    }
    return clientCredentialsLogin(opts.issuer, env.HOOPCTL_CLIENT_ID, env.HOOPCTL_CLIENT_SECRET, opts.resource, now);
  }
  const half = env.HOOPCTL_CLIENT_ID ? ' (HOOPCTL_CLIENT_ID is set but HOOPCTL_CLIENT_SECRET is not)'
    : env.HOOPCTL_CLIENT_SECRET ? ' (HOOPCTL_CLIENT_SECRET is set but HOOPCTL_CLIENT_ID is not)' : '';
  throw new UserError(
    'NOT_AUTHENTICATED',
    `no credential for a non-interactive login${half}: pass --token or set HOOPCTL_TOKEN, pass --id-token-file or run in GitHub Actions with \`permissions: id-token: write\`, or set HOOPCTL_CLIENT_ID and HOOPCTL_CLIENT_SECRET`,
    { exitCode: ExitCode.NotAuthenticated },
  );
}

function explicitTokenLogin(token: string, issuer: string | undefined, now: number): StoredLogin {
  const claims = decodeClaims(token);
  const expiresAt = typeof claims?.exp === 'number' ? claims.exp * 1000 : undefined;
  if (expiresAt !== undefined && expiresAt <= now) {
    throw new UserError('NOT_AUTHENTICATED', `the token given has expired (${new Date(expiresAt).toISOString()})`, {
      hint: 'Get a fresh token from your identity provider.',
      exitCode: ExitCode.NotAuthenticated,
    });
  }
  return {
    version: 1,
    issuer: typeof claims?.iss === 'string' ? claims.iss : (issuer ?? 'unknown-issuer'),
    method: 'token',
    accessToken: token,
    expiresAt,
    obtainedAt: now,
  };
}

async function readIdTokenFile(path: string): Promise<string> {
  let text: string;
  try {
    text = (await readFile(path, 'utf8')).trim();
  } catch (err) {
    throw new UserError('NOT_AUTHENTICATED', `cannot read the ID token file ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, {
      exitCode: ExitCode.NotAuthenticated,
    });
  }
  if (!text) throw new UserError('NOT_AUTHENTICATED', `the ID token file ${path} is empty`, { exitCode: ExitCode.NotAuthenticated });
  return text;
}

/** A workload identity token is presented to the agent as it is; the agent trusts its issuer directly. */
function workloadLogin(token: string, source: WorkloadSource, now: number): StoredLogin {
  const claims = decodeClaims(token);
  if (!claims) {
    throw new UserError('NOT_AUTHENTICATED', `the workload identity token from ${describeSource(source)} is not a JWT`, { exitCode: ExitCode.NotAuthenticated });
  }
  const expiresAt = typeof claims.exp === 'number' ? claims.exp * 1000 : undefined;
  if (expiresAt !== undefined && expiresAt <= now) {
    throw new UserError('NOT_AUTHENTICATED', `the workload identity token from ${describeSource(source)} has expired`, { exitCode: ExitCode.NotAuthenticated });
  }
  return {
    version: 1,
    issuer: typeof claims.iss === 'string' ? claims.iss : 'unknown-issuer',
    method: 'workload_identity',
    accessToken: token,
    expiresAt,
    obtainedAt: now,
    workload: source,
  };
}

async function clientCredentialsLogin(issuer: string, clientId: string, clientSecret: string, resource: string | undefined, now: number): Promise<StoredLogin> {
  const meta = await discover(issuer);
  const tokens = await clientCredentialsGrant(meta, { clientId, clientSecret, resource });
  return toStoredLogin(tokens, { issuer: meta.issuer, method: 'client_credentials', clientId, resource }, now);
}

function describeSource(s: WorkloadSource): string {
  return s.kind === 'file' ? s.path : 'GitHub Actions';
}

/** Turns a token response into what is stored: the ID token only as its claims. */
export function toStoredLogin(
  tokens: TokenSet,
  info: { issuer: string; method: LoginMethod; clientId?: string; resource?: string },
  now: number,
  previous?: StoredLogin,
): StoredLogin {
  const accessClaims = decodeClaims(tokens.accessToken);
  const expiresAt = tokens.expiresIn !== undefined ? now + tokens.expiresIn * 1000
    : typeof accessClaims?.exp === 'number' ? accessClaims.exp * 1000 : undefined;
  return {
    version: 1,
    issuer: info.issuer,
    method: info.method,
    accessToken: tokens.accessToken,
    // Refresh responses may omit the refresh token (no rotation) or the ID token: keep the previous ones.
    refreshToken: tokens.refreshToken ?? previous?.refreshToken,
    idClaims: decodeClaims(tokens.idToken) ?? previous?.idClaims,
    expiresAt,
    obtainedAt: now,
    clientId: info.clientId,
    scope: tokens.scope ?? previous?.scope,
    resource: info.resource,
  };
}

/** Stores the login and makes it the active one. */
export async function saveLogin(
  login: StoredLogin,
  opts: { store: TokenStore; env: Env; settings?: Partial<Settings> },
): Promise<{ store: StoreKind; location: string }> {
  const saved = await opts.store.save(login);
  await updateSettings({ ...opts.settings, active: login.issuer }, opts.env);
  return saved;
}

// ---------------------------------------------------------------------------------------------------
// Using the stored login

export interface ResolveOptions {
  /** `--token`; wins over everything. */
  flagToken?: string;
  env?: Env;
  /** ms since the epoch, or a function returning it. Default Date.now(). */
  now?: Now;
  store?: TokenStore;
}

/** The current login (active issuer), without renewing it. */
export async function currentLogin(opts: { env?: Env; store?: TokenStore } = {}): Promise<{ login: StoredLogin; store: StoreKind } | undefined> {
  const env = opts.env ?? process.env;
  const settings = await loadSettings(env);
  if (!settings.active) return undefined;
  return (opts.store ?? new TokenStore({ env })).load(settings.active);
}

/**
 * The access token to present to the agent. `--token`/HOOPCTL_TOKEN win; otherwise the stored login,
 * renewed silently when it expires within 60 s. Throws UserError NOT_AUTHENTICATED (exit 3) when there is
 * no login or it cannot be renewed.
 */
export async function resolveToken(opts: ResolveOptions = {}): Promise<string> {
  return (await resolveLogin(opts)).accessToken;
}

/** As resolveToken, returning the whole (possibly renewed) login; `explicit` logins are not stored. */
export async function resolveLogin(opts: ResolveOptions = {}): Promise<StoredLogin & { explicit?: boolean }> {
  const env = opts.env ?? process.env;
  const explicit = (opts.flagToken ?? env.HOOPCTL_TOKEN)?.trim();
  if (explicit) {
    const claims = decodeClaims(explicit);
    return {
      version: 1,
      issuer: typeof claims?.iss === 'string' ? claims.iss : 'unknown-issuer',
      method: 'token',
      accessToken: explicit,
      expiresAt: typeof claims?.exp === 'number' ? claims.exp * 1000 : undefined,
      obtainedAt: nowOf(opts.now),
      explicit: true,
    };
  }
  const store = opts.store ?? new TokenStore({ env });
  const settings = await loadSettings(env);
  const found = settings.active ? await store.load(settings.active) : undefined;
  if (!found) throw notLoggedIn();
  if (isFresh(found.login, nowOf(opts.now))) return found.login;

  return withRenewLock(env, async () => {
    // Another process may have renewed it while this one waited for the lock.
    const again = (await store.load(found.login.issuer)) ?? found;
    const now = nowOf(opts.now);
    if (isFresh(again.login, now)) return again.login;
    let renewed: StoredLogin;
    try {
      renewed = await renew(again.login, env, now);
    } catch (err) {
      // An unreachable issuer is no reason to drop a token that still works for a few seconds.
      if (err instanceof UserError && err.code === 'ISSUER_UNREACHABLE' && (again.login.expiresAt ?? 0) > now) return again.login;
      throw err;
    }
    await store.save(renewed);
    return renewed;
  });
}

function isFresh(login: StoredLogin, now: number): boolean {
  return login.expiresAt === undefined || login.expiresAt - now > REFRESH_MARGIN_MS;
}

async function renew(login: StoredLogin, env: Env, now: number): Promise<StoredLogin> {
  switch (login.method) {
    case 'device': {
      if (!login.refreshToken || !login.clientId) throw sessionExpired();
      const meta = await discover(login.issuer);
      try {
        const tokens = await refreshGrant(meta, { clientId: login.clientId, refreshToken: login.refreshToken, resource: login.resource });
        return toStoredLogin(tokens, { issuer: login.issuer, method: 'device', clientId: login.clientId, resource: login.resource }, now, login);
      } catch (err) {
        if (err instanceof OAuthError) throw sessionExpired();
        throw err;
      }
    }
    case 'client_credentials': {
      const secret = env.HOOPCTL_CLIENT_SECRET;
      const id = env.HOOPCTL_CLIENT_ID ?? login.clientId;
      if (!secret || !id || (login.clientId && id !== login.clientId)) {
        throw new UserError('NOT_AUTHENTICATED', `the client-credentials token for ${login.clientId ?? 'this client'} expired and HOOPCTL_CLIENT_SECRET for it is not set`, {
          hint: 'Set HOOPCTL_CLIENT_ID and HOOPCTL_CLIENT_SECRET (the secret is never stored), or run `hoopctl login` again.',
          exitCode: ExitCode.NotAuthenticated,
        });
      }
      return clientCredentialsLogin(login.issuer, id, secret, login.resource, now);
    }
    case 'workload_identity': {
      const source = login.workload;
      if (!source) throw sessionExpired();
      const token = source.kind === 'file' ? await readIdTokenFile(source.path) : await githubActionsIdToken(env, source.audience);
      return workloadLogin(token, source, now);
    }
    case 'token':
      throw new UserError('NOT_AUTHENTICATED', 'the token stored by `hoopctl login --token` has expired', {
        hint: 'Run `hoopctl login` again with a fresh token.',
        exitCode: ExitCode.NotAuthenticated,
      });
  }
}

function notLoggedIn(): UserError {
  return new UserError('NOT_AUTHENTICATED', 'not logged in', {
    hint: 'Run `hoopctl login` (in CI: `hoopctl login --ci`, or pass --token / set HOOPCTL_TOKEN).',
    exitCode: ExitCode.NotAuthenticated,
  });
}

function sessionExpired(): UserError {
  return new UserError('NOT_AUTHENTICATED', 'your session expired; run `hoopctl login`', { exitCode: ExitCode.NotAuthenticated });
}

/**
 * Cross-process mutual exclusion with `mkdir` (atomic on every platform). A lock older than 30 s is
 * from a process that died and is taken over; waiting is bounded at 20 s.
 */
async function withRenewLock<T>(env: Env, fn: () => Promise<T>): Promise<T> {
  await ensurePrivateDir(env);
  const lock = join(configDir(env), 'renew.lock');
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      await mkdir(lock, { mode: 0o700 });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const age = await stat(lock).then((s) => Date.now() - s.mtimeMs, () => 0);
      if (age > 30_000) {
        await rmdir(lock).catch(() => {});
        continue;
      }
      if (Date.now() > deadline) {
        throw new UserError('NOT_AUTHENTICATED', `another hoopctl is renewing the login and did not finish (lock ${lock})`, {
          hint: `If no other hoopctl is running, remove ${lock}.`,
          exitCode: ExitCode.NotAuthenticated,
        });
      }
      await new Promise((r) => setTimeout(r, 50 + Math.random() * 100));
    }
  }
  try {
    return await fn();
  } finally {
    await rmdir(lock).catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------------
// Who a login is (for login's result and whoami): from the ID token claims and the access token payload,
// decoded without verification. Display only; the agent verifies.

export interface Identity {
  issuer: string;
  subject?: string;
  email?: string;
  name?: string;
  groups: string[];
  /** Client credentials: the client id the token was issued to. */
  clientId?: string;
  /** CI claims of a workload identity token (GitHub Actions: repository, ref, workflow…). */
  ci?: Record<string, string>;
  method: LoginMethod;
  /** ms since the epoch; undefined when unknown. */
  expiresAt?: number;
}

const CI_CLAIMS = ['repository', 'ref', 'workflow', 'environment', 'job_workflow_ref', 'event_name', 'run_id'] as const;

export function describeIdentity(login: StoredLogin): Identity {
  const at = decodeClaims(login.accessToken) ?? {};
  const id = login.idClaims ?? {};
  const pick = (k: string): string | undefined => {
    const v = id[k] ?? at[k];
    return typeof v === 'string' ? v : undefined;
  };
  const groupsRaw = id.groups ?? at.groups;
  const ci: Record<string, string> = {};
  for (const k of CI_CLAIMS) if (typeof at[k] === 'string' || typeof at[k] === 'number') ci[k] = String(at[k]);
  return {
    issuer: login.issuer,
    subject: pick('sub'),
    email: pick('email'),
    name: pick('name'),
    groups: Array.isArray(groupsRaw) ? groupsRaw.filter((g): g is string => typeof g === 'string') : [],
    clientId: login.method === 'client_credentials' ? (typeof at.client_id === 'string' ? at.client_id : login.clientId) : undefined,
    ci: Object.keys(ci).length ? ci : undefined,
    method: login.method,
    expiresAt: login.expiresAt,
  };
}
