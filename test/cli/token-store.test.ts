// The token store: file permissions, atomic replacement under concurrent writers, forcing a store, the
// keychain path (a stand-in backend: no secret service runs on this host), and fallback to the file.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { chmod, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TokenStore, type KeychainBackend, type StoredLogin } from '../../cli/src/services/token-store.js';
import { tempEnv } from './helpers.js';

let t: Awaited<ReturnType<typeof tempEnv>>;
beforeEach(async () => (t = await tempEnv()));
afterEach(() => t.cleanup());

const login = (issuer: string, accessToken = 'at'): StoredLogin => ({
  version: 1,
  issuer,
  method: 'device',
  accessToken,
  refreshToken: 'rt',
  expiresAt: Date.now() + 900_000,
  obtainedAt: Date.now(),
  clientId: 'hoopctl',
});

function memoryKeychain(): KeychainBackend & { items: Map<string, string>; calls: number } {
  const items = new Map<string, string>();
  const kc = {
    items,
    calls: 0,
    async get(k: string) {
      kc.calls++;
      return items.get(k) ?? null;
    },
    async set(k: string, v: string) {
      kc.calls++;
      items.set(k, v);
    },
    async delete(k: string) {
      kc.calls++;
      return items.delete(k);
    },
  };
  return kc;
}

const failingKeychain = (message: string): KeychainBackend => ({
  get: () => Promise.reject(new Error(message)),
  set: () => Promise.reject(new Error(message)),
  delete: () => Promise.reject(new Error(message)),
});

describe('file store', () => {
  it('writes credentials.json 0600 in a 0700 directory, and tightens a directory that was looser', async () => {
    const dir = join(t.env.XDG_CONFIG_HOME!, 'hoopctl');
    await mkdir(dir, { recursive: true, mode: 0o755 });
    await chmod(dir, 0o755);
    const store = new TokenStore({ env: t.env });
    expect(await store.save(login('https://idp.example'))).toEqual({ store: 'file', location: join(dir, 'credentials.json') });
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    expect((await stat(join(dir, 'credentials.json'))).mode & 0o777).toBe(0o600);
    expect((await store.load('https://idp.example'))?.login.accessToken).toBe('at');
  });

  it('many concurrent saves: the file is always valid, holds one of the writes, and no temp file is left', async () => {
    const store = new TokenStore({ env: t.env });
    const tokens = Array.from({ length: 60 }, (_, i) => `token-${i}`);
    const reads: Promise<unknown>[] = [];
    await Promise.all(
      tokens.map(async (tok, i) => {
        await store.save(login('https://idp.example', tok));
        // Readers running alongside writers never see a torn file.
        if (i % 5 === 0) reads.push(store.load('https://idp.example'));
      }),
    );
    for (const r of await Promise.all(reads)) expect(tokens).toContain((r as { login: StoredLogin }).login.accessToken);
    const dir = join(t.env.XDG_CONFIG_HOME!, 'hoopctl');
    const doc = JSON.parse(await readFile(join(dir, 'credentials.json'), 'utf8')) as { logins: Record<string, StoredLogin> };
    expect(tokens).toContain(doc.logins['https://idp.example'].accessToken);
    expect((await readdir(dir)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  it('tightens a credentials file someone made readable by others, and says so', async () => {
    const notes: string[] = [];
    const store = new TokenStore({ env: t.env, onNote: (l) => notes.push(l) });
    await store.save(login('https://idp.example'));
    await chmod(store.filePath, 0o644);
    await store.load('https://idp.example');
    expect((await stat(store.filePath)).mode & 0o777).toBe(0o600);
    expect(notes.join('\n')).toMatch(/was readable by others \(mode 644\)/);
  });

  it('an unreadable credentials file → NOT_AUTHENTICATED with a way out; logout still removes it', async () => {
    const store = new TokenStore({ env: t.env });
    await store.save(login('https://idp.example'));
    await writeFile(store.filePath, '{"version":1,"logins":{"https://idp.example":{"garbage":true}}}');
    await expect(store.load('https://idp.example')).rejects.toMatchObject({ code: 'NOT_AUTHENTICATED', exitCode: 3 });
    await store.removeAll(['https://idp.example']);
    await expect(stat(store.filePath)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('choosing the store', () => {
  it('Linux without DBUS_SESSION_BUS_ADDRESS → the file, and the keychain is never touched (no hang)', async () => {
    const kc = memoryKeychain();
    const store = new TokenStore({ env: t.env, keychain: kc, platform: 'linux' });
    expect((await store.save(login('https://idp.example'))).store).toBe('file');
    expect(kc.calls).toBe(0);
  });

  it('with a session bus the keychain is used (Entry hoopctl/<issuer>), and no file is written', async () => {
    const kc = memoryKeychain();
    const env = { ...t.env, DBUS_SESSION_BUS_ADDRESS: 'unix:path=/run/user/1000/bus' };
    const store = new TokenStore({ env, keychain: kc, platform: 'linux' });
    const saved = await store.save(login('https://idp.example'));
    expect(saved.store).toBe('keychain');
    expect(JSON.parse(kc.items.get('https://idp.example')!)).toMatchObject({ accessToken: 'at' });
    await expect(stat(store.filePath)).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await store.load('https://idp.example'))?.store).toBe('keychain');
  });

  it('HOOPCTL_TOKEN_STORE=file forces the file even where a keychain works', async () => {
    const kc = memoryKeychain();
    const env = { ...t.env, DBUS_SESSION_BUS_ADDRESS: 'unix:path=/x', HOOPCTL_TOKEN_STORE: 'file' };
    const store = new TokenStore({ env, keychain: kc, platform: 'darwin' });
    expect((await store.save(login('https://idp.example'))).store).toBe('file');
    expect(kc.items.size).toBe(0);
  });

  it('a keychain error falls back to the file with a note on the caller\'s channel', async () => {
    const notes: string[] = [];
    const env = { ...t.env, DBUS_SESSION_BUS_ADDRESS: 'unix:path=/x' };
    const store = new TokenStore({ env, keychain: failingKeychain("Couldn't access platform storage: AccessDenied"), onNote: (l) => notes.push(l), platform: 'linux' });
    expect((await store.save(login('https://idp.example'))).store).toBe('file');
    expect(notes[0]).toMatch(/keychain is not usable \(Couldn't access platform storage: AccessDenied\); keeping tokens in .*credentials\.json/);
    expect((await store.load('https://idp.example'))?.store).toBe('file');
  });

  it('a keychain that never answers (locked, unlock prompt nobody sees) falls back after the timeout', async () => {
    const hang: KeychainBackend = { get: () => new Promise(() => {}), set: () => new Promise(() => {}), delete: () => new Promise(() => {}) };
    const env = { ...t.env, DBUS_SESSION_BUS_ADDRESS: 'unix:path=/x' };
    const store = new TokenStore({ env, keychain: hang, keychainTimeoutMs: 100, platform: 'linux' });
    const t0 = Date.now();
    expect((await store.save(login('https://idp.example'))).store).toBe('file');
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('HOOPCTL_TOKEN_STORE=keychain with no usable keychain is an error, not a silent fallback (real @napi-rs/keyring)', async () => {
    const env = { ...t.env, HOOPCTL_TOKEN_STORE: 'keychain' };
    const store = new TokenStore({ env });
    await expect(store.save(login('https://idp.example'))).rejects.toMatchObject({ code: 'KEYCHAIN_UNAVAILABLE' });
    await expect(stat(store.filePath)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('rejects an unknown HOOPCTL_TOKEN_STORE value', async () => {
    await expect(new TokenStore({ env: { ...t.env, HOOPCTL_TOKEN_STORE: 'vault' } }).save(login('x'))).rejects.toMatchObject({ code: 'BAD_TOKEN_STORE', exitCode: 2 });
  });

  it('removeAll clears both stores and is idempotent', async () => {
    const kc = memoryKeychain();
    const env = { ...t.env, DBUS_SESSION_BUS_ADDRESS: 'unix:path=/x' };
    await new TokenStore({ env, keychain: kc, platform: 'linux' }).save(login('https://a.example'));
    await new TokenStore({ env: { ...env, HOOPCTL_TOKEN_STORE: 'file' }, keychain: kc, platform: 'linux' }).save(login('https://b.example'));
    const store = new TokenStore({ env, keychain: kc, platform: 'linux' });
    const first = await store.removeAll(['https://a.example', 'https://b.example']);
    expect(first.removed.map((r) => `${r.store}:${r.issuer}`).sort()).toEqual(['file:https://b.example', 'keychain:https://a.example']);
    expect((await store.removeAll(['https://a.example'])).removed).toEqual([]);
  });
});
