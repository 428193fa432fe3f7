// `hoopctl logout`: revoke the access token at the agent, then forget the stored tokens, in the keychain
// and in the file. Idempotent: logging out twice is not an error.
//   1. the agent (POST /api/tokens/revoke with the token itself): every agent sharing its state store
//      refuses the token, and the other tokens of the same login session, until it expires, and closes
//      the tunnels they opened; a copy of the token left anywhere is worth nothing from then on;
//   2. the refresh token at the issuer when it offers revocation (RFC 7009; best effort, a few seconds);
//   3. the local copies. What happened at each step is said, so nobody believes a token dead that is not.
import type { Command } from 'commander';
import type { Output } from '../output.js';
import { discover, revokeToken } from '../services/oidc-client.js';
import { postJson } from '../services/agent-api.js';
import { UserError } from '../errors.js';
import { clearSetting, loadSettings, type Env } from '../services/settings.js';
import { TokenStore, type Removed } from '../services/token-store.js';

/** What the agent did with the access token. */
export interface AgentRevocation {
  /** revoked; already-invalid (expired or revoked before); failed (tried); no-agent (none configured); no-token. */
  status: 'revoked' | 'already-invalid' | 'failed' | 'no-agent' | 'no-token';
  agent?: string;
  /** Until when agents refuse it (its expiry). */
  until?: string;
  /** `session`: every token of the login session; `token`: this one. */
  scope?: 'session' | 'token';
  error?: string;
}

export interface LogoutResult {
  removed: Removed[];
  /** Whether the keychain was looked at; `unavailable` when it errored (nothing can be in it then). */
  keychain: 'checked' | 'unavailable' | 'skipped';
  /** The refresh token at the issuer: revoked, failed (tried), not-offered (no revocation endpoint), or null (none stored). */
  revocation: 'revoked' | 'failed' | 'not-offered' | null;
  /** The access token at the agent. */
  agent: AgentRevocation;
}

export function registerLogout(program: Command, run: (fn: (out: Output) => Promise<void>) => Promise<void>): void {
  program
    .command('logout')
    .description('revoke the access token at the agent (every agent sharing its state store), revoke the refresh token at the issuer, and remove the stored tokens')
    .option('--agent <url>', 'agent URL to revoke the token at (env HOOPCTL_AGENT; default: the one `hoopctl login --agent` saved)')
    .action((opts: { agent?: string }) => run((out) => logout(out, { agent: opts.agent }).then(() => undefined)));
}

export async function logout(out: Output, deps: { env?: Env; agent?: string } = {}): Promise<LogoutResult> {
  const env = deps.env ?? process.env;
  const store = new TokenStore({ env, onNote: (l) => out.info(l) });
  const settings = await loadSettings(env);
  const issuers = [settings.active, settings.issuer].filter((i): i is string => Boolean(i));

  let revocation: LogoutResult['revocation'] = null;
  const current = settings.active ? await store.load(settings.active).catch(() => undefined) : undefined;
  const agentUrl = deps.agent ?? env.HOOPCTL_AGENT ?? settings.agent;
  const agent = await revokeAtAgent(agentUrl, current?.login.accessToken, current?.login.expiresAt);
  if (current?.login.refreshToken && current.login.clientId) {
    const { login } = current;
    revocation = await discover(login.issuer)
      .then((meta) => revokeToken(meta, { clientId: login.clientId as string, token: login.refreshToken as string, hint: 'refresh_token' }))
      .catch(() => 'failed' as const);
  }

  const { removed, keychain } = await store.removeAll(issuers);
  await clearSetting('active', env);
  const result: LogoutResult = { removed, keychain, revocation, agent };
  out.result(result, () => logoutText(result));
  return result;
}

async function revokeAtAgent(agentUrl: string | undefined, token: string | undefined, expiresAt: number | undefined): Promise<AgentRevocation> {
  if (!token) return { status: 'no-token' };
  const until = expiresAt === undefined ? undefined : new Date(expiresAt).toISOString();
  if (!agentUrl) return { status: 'no-agent', until };
  try {
    const r = await postJson<{ until?: string; scope?: 'session' | 'token' }>(agentUrl, '/api/tokens/revoke', token, {});
    return { status: 'revoked', agent: agentUrl, until: r.until ?? until, scope: r.scope };
  } catch (err) {
    // 401: the agent no longer takes the token (expired, or revoked already): nothing left to revoke.
    if (err instanceof UserError && ['TOKEN_EXPIRED', 'TOKEN_REVOKED'].includes(err.code)) return { status: 'already-invalid', agent: agentUrl };
    return { status: 'failed', agent: agentUrl, until, error: (err as Error).message };
  }
}

function agentText(a: AgentRevocation): string | undefined {
  const until = a.until ? ` until it expires (${a.until})` : ' until it expires';
  switch (a.status) {
    case 'revoked':
      return `The access token was revoked at the agent ${a.agent}: every agent sharing its state store refuses it${a.scope === 'session' ? ' and the other tokens of this login' : ''}${until}, and the tunnels it opened were closed.`;
    case 'already-invalid':
      return `The access token was already expired or revoked at the agent ${a.agent}.`;
    case 'failed':
      return `The access token could NOT be revoked at the agent ${a.agent} (${a.error}): a copy of it stays valid${until}.`;
    case 'no-agent':
      return `No agent is configured (--agent or HOOPCTL_AGENT), so the access token was not revoked: a copy of it stays valid${until}.`;
    case 'no-token':
      return undefined;
  }
}

function logoutText(r: LogoutResult): string {
  if (!r.removed.length) return 'Not logged in: there were no stored tokens to remove.';
  const lines = [agentText(r.agent)].filter((l): l is string => l !== undefined);
  lines.push(...r.removed.map((x) => `Removed the login for ${x.issuer} from ${x.store === 'keychain' ? 'the OS keychain' : x.location}.`));
  if (r.revocation === 'revoked') lines.push('The refresh token was revoked at the issuer.');
  if (r.revocation === 'failed') lines.push('The refresh token could not be revoked at the issuer; it expires on its own.');
  return lines.join('\n');
}
