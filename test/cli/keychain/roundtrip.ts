// Runs inside `dbus-run-session` with an unlocked gnome-keyring: save, load and remove a login through the
// real OS keychain (@napi-rs/keyring → Secret Service), and check that no credentials file was written.
import { existsSync } from 'node:fs';
import { TokenStore } from '../../../cli/src/services/token-store.js';

const store = new TokenStore({ env: { ...process.env, HOOPCTL_TOKEN_STORE: 'keychain' } });
const login = {
  version: 1 as const,
  issuer: 'https://issuer.example',
  method: 'device' as const,
  accessToken: 'at-' + Date.now(),
  refreshToken: 'rt',
  expiresAt: Date.now() + 60_000,
  claims: { sub: 'u-alice' },
};
const saved = await store.save(login as never);
const loaded = await store.load('https://issuer.example');
const fileWritten = existsSync(store.filePath);
const { removed } = await store.removeAll(['https://issuer.example']);
const after = await store.load('https://issuer.example');
console.log(JSON.stringify({ saved: saved.store, loadedFrom: loaded?.store, roundTrip: loaded?.login.accessToken === login.accessToken, fileWritten, removed: removed.map((r) => r.store), after: after ?? null }));
