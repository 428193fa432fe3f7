// `hoopctl logout`: forget the stored tokens, in the keychain and in the file. Idempotent: logging out
// twice is not an error. The refresh token is also revoked at the issuer when it offers revocation
// (RFC 7009; best effort, a few seconds at most), so an old copy of the credentials is worth nothing.
import type { Command } from 'commander';
import type { Output } from '../output.js';
import { discover, revokeToken } from '../services/oidc-client.js';
import { clearSetting, loadSettings, type Env } from '../services/settings.js';
import { TokenStore, type Removed } from '../services/token-store.js';

export interface LogoutResult {
  removed: Removed[];
  /** Whether the keychain was looked at; `unavailable` when it errored (nothing can be in it then). */
  keychain: 'checked' | 'unavailable' | 'skipped';
  /** The refresh token at the issuer: revoked, failed (tried), not-offered (no revocation endpoint), or null (none stored). */
  revocation: 'revoked' | 'failed' | 'not-offered' | null;
}

export function registerLogout(program: Command, run: (fn: (out: Output) => Promise<void>) => Promise<void>): void {
  program
    .command('logout')
    .description('remove the stored tokens (keychain and file) and revoke the refresh token at the issuer')
    .action(() => run((out) => logout(out).then(() => undefined)));
}

export async function logout(out: Output, deps: { env?: Env } = {}): Promise<LogoutResult> {
  const env = deps.env ?? process.env;
  const store = new TokenStore({ env, onNote: (l) => out.info(l) });
  const settings = await loadSettings(env);
  const issuers = [settings.active, settings.issuer].filter((i): i is string => Boolean(i));

  let revocation: LogoutResult['revocation'] = null;
  const current = settings.active ? await store.load(settings.active).catch(() => undefined) : undefined;
  if (current?.login.refreshToken && current.login.clientId) {
    const { login } = current;
    revocation = await discover(login.issuer)
      .then((meta) => revokeToken(meta, { clientId: login.clientId as string, token: login.refreshToken as string, hint: 'refresh_token' }))
      .catch(() => 'failed' as const);
  }

  const { removed, keychain } = await store.removeAll(issuers);
  await clearSetting('active', env);
  const result: LogoutResult = { removed, keychain, revocation };
  out.result(result, () => logoutText(result));
  return result;
}

function logoutText(r: LogoutResult): string {
  if (!r.removed.length) return 'Not logged in: there were no stored tokens to remove.';
  const lines = r.removed.map((x) => `Removed the login for ${x.issuer} from ${x.store === 'keychain' ? 'the OS keychain' : x.location}.`);
  if (r.revocation === 'revoked') lines.push('The refresh token was revoked at the issuer.');
  if (r.revocation === 'failed') lines.push('The refresh token could not be revoked at the issuer; it expires on its own.');
  return lines.join('\n');
}
