// `hoopctl whoami`: who the stored (or given) token says you are, and, when an agent is known, which
// connections that agent lets this identity use (GET /api/whoami with the token).
import type { z } from 'zod';
import { WhoamiConnection, WhoamiResponse, type WhoamiScope } from '../../../shared/api/whoami.js';
import type { Command } from 'commander';
import { agentApiUrl } from '../services/agent-api.js';
import { request } from '../services/http.js';
import type { Output } from '../output.js';
import { describeIdentity, resolveLogin, type Identity } from '../services/credentials.js';
import { loadSettings, type Env } from '../services/settings.js';
import type { LoginMethod } from '../services/token-store.js';
import { formatDuration } from '../ui/duration.js';

export interface WhoamiOptions {
  agent?: string;
  token?: string;
}

export type AgentConnection = z.infer<typeof WhoamiConnection>;

export interface AgentView {
  url: string;
  /** ok: the list below is the agent's answer; the rest say why there is none. */
  status: 'ok' | 'unsupported' | 'unauthorized' | 'forbidden' | 'unreachable' | 'error';
  message?: string;
  connections?: AgentConnection[];
}

export interface WhoamiResult {
  identity: Omit<Identity, 'expiresAt'> & { expiresAt: string | null; expiresInSec: number | null };
  /** explicit: --token / HOOPCTL_TOKEN; stored: the login `hoopctl login` saved. */
  source: 'explicit' | 'stored';
  agent: AgentView | null;
}

export function registerWhoami(program: Command, run: (fn: (out: Output) => Promise<void>) => Promise<void>): void {
  program
    .command('whoami')
    .description('show the identity hoopctl presents, and which connections the agent allows it')
    .option('--agent <url>', 'agent to ask (env HOOPCTL_AGENT; default: the one `hoopctl login` remembered)')
    .option('--token <token>', 'describe this token instead of the stored login (env HOOPCTL_TOKEN)')
    .action((opts: WhoamiOptions) => run((out) => whoami(opts, out).then(() => undefined)));
}

export async function whoami(opts: WhoamiOptions, out: Output, deps: { env?: Env; now?: () => number } = {}): Promise<WhoamiResult> {
  const env = deps.env ?? process.env;
  const now = deps.now ?? Date.now;
  // Renews the stored login if it is about to expire, so the agent is asked with a token that works.
  const login = await resolveLogin({ flagToken: opts.token, env, now });
  const { expiresAt, ...identity } = describeIdentity(login);
  const settings = await loadSettings(env);
  const agentUrl = opts.agent ?? env.HOOPCTL_AGENT ?? settings.agent;
  const result: WhoamiResult = {
    identity: {
      ...identity,
      expiresAt: expiresAt !== undefined ? new Date(expiresAt).toISOString() : null,
      expiresInSec: expiresAt !== undefined ? Math.round((expiresAt - now()) / 1000) : null,
    },
    source: login.explicit ? 'explicit' : 'stored',
    agent: agentUrl ? await askAgent(agentUrl, login.accessToken) : null,
  };
  out.result(result, () => whoamiText(result));
  return result;
}

/** `wss://h:p/x` → `https://h:p/x/api/whoami` (ws → http only on loopback: the token must not travel in clear). */
export function agentWhoamiUrl(agentUrl: string): URL {
  return agentApiUrl(agentUrl, '/api/whoami');
}

async function askAgent(agentUrl: string, token: string): Promise<AgentView> {
  let url: URL;
  try {
    url = agentWhoamiUrl(agentUrl);
  } catch (err) {
    return { url: agentUrl, status: 'error', message: (err as Error).message };
  }
  let status: number;
  let body: unknown;
  try {
    const res = await request(url, {
      method: 'GET',
      headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
      headersTimeout: 5000,
      bodyTimeout: 5000,
    });
    status = res.statusCode;
    const text = await res.body.text();
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
  } catch (err) {
    return { url: agentUrl, status: 'unreachable', message: `cannot reach the agent (${(err as Error).message || (err as NodeJS.ErrnoException).code})` };
  }
  const errMsg = (body as { error?: { message?: unknown } } | undefined)?.error?.message;
  const said = typeof errMsg === 'string' ? `: ${errMsg}` : '';
  if (status === 404) return { url: agentUrl, status: 'unsupported', message: 'the agent does not answer /api/whoami (it is older than this hoopctl, or not a hoop-agent)' };
  if (status === 401) return { url: agentUrl, status: 'unauthorized', message: `the agent rejected the token${said}` };
  if (status === 403) return { url: agentUrl, status: 'forbidden', message: `the agent refused this identity${said}` };
  if (status !== 200) return { url: agentUrl, status: 'error', message: `the agent answered HTTP ${status}${said}` };
  const parsed = WhoamiResponse.safeParse(body);
  if (!parsed.success) return { url: agentUrl, status: 'error', message: 'the agent answered without a connection list' };
  const connections: AgentConnection[] = parsed.data.connections;
  return { url: agentUrl, status: 'ok', connections };
}

const METHOD_TEXT: Record<LoginMethod, string> = {
  device: 'device flow',
  client_credentials: 'client credentials',
  workload_identity: 'workload identity token',
  token: 'token given to login',
};

export function whoamiText(r: WhoamiResult): string {
  const id = r.identity;
  const rows: [string, string][] = [];
  rows.push(['Subject', id.subject ?? '(none)']);
  if (id.email) rows.push(['Email', id.email]);
  if (id.name) rows.push(['Name', id.name]);
  if (id.clientId) rows.push(['Client', id.clientId]);
  rows.push(['Groups', id.groups.length ? id.groups.join(', ') : '(none)']);
  for (const [k, v] of Object.entries(id.ci ?? {})) rows.push([k, v]);
  rows.push(['Issuer', id.issuer]);
  rows.push(['Via', r.source === 'explicit' ? '--token / HOOPCTL_TOKEN' : METHOD_TEXT[id.method]]);
  if (id.expiresAt && id.expiresInSec !== null) {
    const rel = id.expiresInSec >= 0 ? `in ${formatDuration(id.expiresInSec)}` : `${formatDuration(-id.expiresInSec)} ago`;
    rows.push(['Expires', `${rel} (${id.expiresAt})`]);
  } else rows.push(['Expires', 'unknown']);
  const width = Math.max(...rows.map(([k]) => k.length)) + 1;
  const lines = rows.map(([k, v]) => `${`${k}:`.padEnd(width + 1)}${v}`);
  if (!r.agent) {
    lines.push('', 'No agent known: pass --agent wss://host:port to see which connections you may use.');
    return lines.join('\n');
  }
  lines.push('', `Agent ${r.agent.url}:`);
  if (r.agent.status !== 'ok') lines.push(`  ${r.agent.message}`);
  else if (!r.agent.connections?.length) lines.push('  no connections are configured');
  else {
    const w = Math.max(...r.agent.connections.map((c) => c.name.length));
    for (const c of r.agent.connections) {
      lines.push(`  ${c.name.padEnd(w)}  ${c.allowed ? 'allowed' : `not allowed${c.reason ? `: ${c.reason}` : ''}`}`);
      if (c.scope) lines.push(...scopeText(c.scope).map((l) => `  ${' '.repeat(w)}  ${l}`));
    }
  }
  return lines.join('\n');
}

/** The scope that applies on a connection (P11), one line per kind of grant. */
function scopeText(s: WhoamiScope): string[] {
  if (s.name === '(none)') return ['scope: none matches this identity, so it reads no table'];
  const lines = [`scope ${s.name}`, `  reads:  ${s.read.length ? s.read.join(', ') : '(nothing)'}`];
  if (s.write.length) lines.push(`  writes (with approval): ${s.write.join(', ')}`);
  if (s.maxRows !== undefined) lines.push(`  results over ${s.maxRows} rows pause for approval`);
  if (s.unmask.length) lines.push(`  reads in clear (audited): ${s.unmask.join(', ')}`);
  return lines;
}
