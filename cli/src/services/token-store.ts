// Where logins are kept: the OS keychain (@napi-rs/keyring: Keychain, Credential Manager, Secret
// Service) when one is usable, else a private file, `$XDG_CONFIG_HOME/hoopctl/credentials.json`, mode
// 0600 in a 0700 directory, replaced atomically.
//
// Choosing the store (NOTES-deps.md, keyring section):
//   HOOPCTL_TOKEN_STORE=file       → the file, always
//   HOOPCTL_TOKEN_STORE=keychain   → the keychain, and an error if it is not usable (no silent fallback)
//   Linux without DBUS_SESSION_BUS_ADDRESS → the file directly: no session bus means no secret service,
//                                    and asking for one can only fail or hang (headless hosts, CI)
//   otherwise                      → the keychain; any keychain error or a 3 s timeout → the file, with a
//                                    note (the caller decides where notes go; services do not print)
//
// One entry per issuer: keychain `Entry('hoopctl', <issuer>)` holding the JSON of the login, or the key
// `<issuer>` in the file's `logins` map. Which one is active is in settings (`active`).
import { readFile, rm, stat, chmod, readdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ExitCode, UserError } from '../errors.js';
import { configDir, writeFileAtomic, type Env } from './settings.js';

export type LoginMethod = 'device' | 'client_credentials' | 'workload_identity' | 'token';

/** Where a workload identity token came from, so it can be fetched again when it expires. */
export type WorkloadSource = { kind: 'file'; path: string } | { kind: 'github-actions'; audience: string };

export interface StoredLogin {
  version: 1;
  /** Issuer (the `iss` of the tokens); also the key of the entry. */
  issuer: string;
  /** How the login was obtained, which decides how it is renewed. */
  method: LoginMethod;
  accessToken: string;
  refreshToken?: string;
  /** Claims of the ID token, decoded (not verified: for display only). */
  idClaims?: Record<string, unknown>;
  /** Access token expiry, ms since the epoch; absent when unknown. */
  expiresAt?: number;
  obtainedAt: number;
  /** Public client (device flow) or the confidential client id (client credentials; never its secret). */
  clientId?: string;
  scope?: string;
  resource?: string;
  workload?: WorkloadSource;
}

export type StoreKind = 'keychain' | 'file';

/** The keychain, narrowed to what the store needs; injectable for tests. */
export interface KeychainBackend {
  get(key: string, signal: AbortSignal): Promise<string | null>;
  set(key: string, value: string, signal: AbortSignal): Promise<void>;
  delete(key: string, signal: AbortSignal): Promise<boolean>;
}

export interface TokenStoreOptions {
  env?: Env;
  /** Receives one-line notes (keychain fell back to the file, permissions fixed). Default: dropped. */
  onNote?: (line: string) => void;
  keychain?: KeychainBackend;
  keychainTimeoutMs?: number;
  platform?: NodeJS.Platform;
}

export interface Removed {
  store: StoreKind;
  issuer: string;
  location: string;
}

export const KEYCHAIN_SERVICE = 'hoopctl';

interface FileDoc {
  version: 1;
  logins: Record<string, StoredLogin>;
}

export class TokenStore {
  readonly env: Env;
  readonly #note: (line: string) => void;
  readonly #timeoutMs: number;
  readonly #platform: NodeJS.Platform;
  #keychain: KeychainBackend | undefined;

  constructor(opts: TokenStoreOptions = {}) {
    this.env = opts.env ?? process.env;
    this.#note = opts.onNote ?? (() => {});
    this.#keychain = opts.keychain;
    this.#timeoutMs = opts.keychainTimeoutMs ?? 3000;
    this.#platform = opts.platform ?? process.platform;
  }

  get filePath(): string {
    return join(configDir(this.env), 'credentials.json');
  }

  /** Which store is tried first: 'file' | 'keychain' (forced) | 'auto' (keychain, falling back). */
  mode(): 'file' | 'keychain' | 'auto' {
    const forced = this.env.HOOPCTL_TOKEN_STORE?.trim().toLowerCase();
    if (forced === 'file' || forced === 'keychain') return forced;
    if (forced) {
      throw new UserError('BAD_TOKEN_STORE', `HOOPCTL_TOKEN_STORE must be "file" or "keychain", not "${forced}"`, { exitCode: ExitCode.Usage });
    }
    if (this.#platform === 'linux' && !this.env.DBUS_SESSION_BUS_ADDRESS) return 'file';
    return 'auto';
  }

  /** Saves (replaces) the login for `login.issuer`; returns where it went. */
  async save(login: StoredLogin): Promise<{ store: StoreKind; location: string }> {
    const mode = this.mode();
    if (mode !== 'file') {
      try {
        await this.#kc('set', login.issuer, JSON.stringify(login));
        // A copy left in the file by an earlier fallback would outlive a later logout of the keychain.
        await this.#fileRemove(login.issuer).catch(() => {});
        return { store: 'keychain', location: `keychain service "${KEYCHAIN_SERVICE}", account "${login.issuer}"` };
      } catch (err) {
        if (mode === 'keychain') throw keychainError(err);
        this.#note(`hoopctl: the OS keychain is not usable (${errMessage(err)}); keeping tokens in ${this.filePath} (mode 0600) instead`);
      }
    }
    const doc = (await this.#readFile({ tolerateCorrupt: true })) ?? { version: 1, logins: {} };
    doc.logins[login.issuer] = login;
    await writeFileAtomic(this.filePath, JSON.stringify(doc, null, 2) + '\n', this.env);
    return { store: 'file', location: this.filePath };
  }

  /** The login stored for `issuer`, looking in the keychain first (unless the file is forced), then the file. */
  async load(issuer: string): Promise<{ login: StoredLogin; store: StoreKind } | undefined> {
    const mode = this.mode();
    if (mode !== 'file') {
      try {
        const text = await this.#kc('get', issuer);
        if (text) return { login: parseLogin(text, `keychain entry for ${issuer}`), store: 'keychain' };
      } catch (err) {
        if (err instanceof UserError) throw err;
        if (mode === 'keychain') throw keychainError(err);
        this.#note(`hoopctl: the OS keychain is not usable (${errMessage(err)}); reading ${this.filePath}`);
      }
    }
    const doc = await this.#readFile({ tolerateCorrupt: false });
    const login = doc?.logins[issuer];
    return login ? { login, store: 'file' } : undefined;
  }

  /**
   * Removes the logins of `issuers` from the keychain (when one is reachable) and every login from the
   * file. Idempotent: returns what was actually removed, possibly nothing.
   */
  async removeAll(issuers: string[]): Promise<{ removed: Removed[]; keychain: 'checked' | 'unavailable' | 'skipped' }> {
    const removed: Removed[] = [];
    let keychain: 'checked' | 'unavailable' | 'skipped' = 'skipped';
    const mode = this.mode();
    // Logout looks in the keychain even when the file is forced now: an earlier login may have used it.
    const reachable = this.#keychain !== undefined || !(this.#platform === 'linux' && !this.env.DBUS_SESSION_BUS_ADDRESS);
    if (reachable) {
      keychain = 'checked';
      for (const issuer of new Set(issuers)) {
        try {
          if (await this.#kc('delete', issuer)) {
            removed.push({ store: 'keychain', issuer, location: `keychain service "${KEYCHAIN_SERVICE}", account "${issuer}"` });
          }
        } catch (err) {
          if (mode === 'keychain') throw keychainError(err);
          keychain = 'unavailable';
          break;
        }
      }
    }
    const doc = await this.#readFile({ tolerateCorrupt: true }).catch(() => undefined);
    if (doc) for (const issuer of Object.keys(doc.logins)) removed.push({ store: 'file', issuer, location: this.filePath });
    await rm(this.filePath, { force: true });
    await this.#removeStrayTemps();
    return { removed, keychain };
  }

  async #fileRemove(issuer: string): Promise<void> {
    const doc = await this.#readFile({ tolerateCorrupt: true });
    if (!doc || !(issuer in doc.logins)) return;
    delete doc.logins[issuer];
    if (Object.keys(doc.logins).length === 0) await rm(this.filePath, { force: true });
    else await writeFileAtomic(this.filePath, JSON.stringify(doc, null, 2) + '\n', this.env);
  }

  async #readFile(opts: { tolerateCorrupt: boolean }): Promise<FileDoc | undefined> {
    const path = this.filePath;
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    // Someone loosened the mode (a copy, a chmod): tighten it rather than keep serving secrets from it.
    const st = await stat(path);
    if ((st.mode & 0o077) !== 0) {
      await chmod(path, 0o600);
      this.#note(`hoopctl: ${path} was readable by others (mode ${(st.mode & 0o777).toString(8)}); set it to 0600`);
    }
    try {
      const doc = JSON.parse(text) as FileDoc;
      if (!doc || typeof doc !== 'object' || doc.version !== 1 || !doc.logins || typeof doc.logins !== 'object') throw new Error('unknown format');
      for (const [k, v] of Object.entries(doc.logins)) doc.logins[k] = parseLogin(JSON.stringify(v), path);
      return doc;
    } catch (err) {
      if (opts.tolerateCorrupt) return undefined;
      throw new UserError('NOT_AUTHENTICATED', `the credentials file ${path} is unreadable (${errMessage(err)})`, {
        hint: 'Run `hoopctl logout` to remove it, then `hoopctl login`.',
        exitCode: ExitCode.NotAuthenticated,
      });
    }
  }

  /** Temporary files a killed writer may have left behind. */
  async #removeStrayTemps(): Promise<void> {
    const dir = dirname(this.filePath);
    const prefix = `${basename(this.filePath)}.`;
    let names: string[] = [];
    try {
      names = await readdir(dir);
    } catch {
      return;
    }
    await Promise.all(names.filter((n) => n.startsWith(prefix) && n.endsWith('.tmp')).map((n) => rm(join(dir, n), { force: true })));
  }

  async #kc(op: 'get', key: string): Promise<string | null>;
  async #kc(op: 'set', key: string, value: string): Promise<void>;
  async #kc(op: 'delete', key: string): Promise<boolean>;
  async #kc(op: 'get' | 'set' | 'delete', key: string, value?: string): Promise<unknown> {
    const backend = await this.#backend();
    const ac = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    // A locked keyring can wait forever on an unlock prompt nobody sees; never let it hang the CLI.
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        ac.abort();
        reject(new Error(`no answer within ${this.#timeoutMs / 1000} s`));
      }, this.#timeoutMs);
      timer.unref();
    });
    try {
      const work = op === 'get' ? backend.get(key, ac.signal) : op === 'set' ? backend.set(key, value as string, ac.signal) : backend.delete(key, ac.signal);
      return await Promise.race([work, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async #backend(): Promise<KeychainBackend> {
    if (!this.#keychain) this.#keychain = await napiKeychain();
    return this.#keychain;
  }
}

/** The real keychain. Loaded lazily so that file-only hosts never load the native module. */
async function napiKeychain(): Promise<KeychainBackend> {
  const { AsyncEntry } = await import('@napi-rs/keyring');
  const entry = (key: string) => new AsyncEntry(KEYCHAIN_SERVICE, key);
  return {
    get: (key, signal) => entry(key).getPassword(signal),
    set: (key, value, signal) => entry(key).setPassword(value, signal),
    delete: (key, signal) => entry(key).deleteCredential(signal),
  };
}

const METHODS: readonly LoginMethod[] = ['device', 'client_credentials', 'workload_identity', 'token'];

function parseLogin(text: string, where: string): StoredLogin {
  let v: Partial<StoredLogin>;
  try {
    v = JSON.parse(text) as Partial<StoredLogin>;
  } catch {
    v = {};
  }
  if (v?.version !== 1 || typeof v.issuer !== 'string' || typeof v.accessToken !== 'string' || !METHODS.includes(v.method as LoginMethod)) {
    throw new UserError('NOT_AUTHENTICATED', `the stored login (${where}) is unreadable`, {
      hint: 'Run `hoopctl logout`, then `hoopctl login`.',
      exitCode: ExitCode.NotAuthenticated,
    });
  }
  return v as StoredLogin;
}

function keychainError(err: unknown): UserError {
  return new UserError('KEYCHAIN_UNAVAILABLE', `the OS keychain is not usable: ${errMessage(err)}`, {
    hint: 'HOOPCTL_TOKEN_STORE=keychain was set; unset it (or set it to "file") to keep tokens in a private file instead.',
    exitCode: ExitCode.Failure,
  });
}

function errMessage(err: unknown): string {
  return (err as Error)?.message ?? String(err);
}
