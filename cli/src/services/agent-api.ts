// Calls to the agent's HTTP API with the caller's token. The token never travels in clear: ws/http is
// accepted only for an agent on this machine.
import { request } from 'undici';
import type { ApiErrorBody } from '../../../shared/errors.js';
import { ExitCode, UserError } from '../errors.js';

/** `wss://h:p/x` + `/api/whoami` → `https://h:p/x/api/whoami`. */
export function agentApiUrl(agentUrl: string, apiPath: string): URL {
  const u = new URL(agentUrl);
  const scheme = ({ 'wss:': 'https:', 'https:': 'https:', 'ws:': 'http:', 'http:': 'http:' } as Record<string, string>)[u.protocol];
  if (!scheme) throw new Error(`unsupported scheme ${u.protocol}`);
  const loopback = ['127.0.0.1', 'localhost', '[::1]', '::1'].includes(u.hostname);
  if (scheme === 'http:' && !loopback) throw new Error(`refusing to send the token in clear to ${u.host}; use wss://`);
  u.protocol = scheme;
  u.pathname = `${u.pathname.replace(/\/$/, '')}${apiPath}`;
  u.search = '';
  return u;
}

/** GET a JSON document; HTTP refusals become UserErrors with the agent's own words and an exit code. */
export function getJson<T>(agentUrl: string, apiPath: string, token: string, query: Record<string, string | undefined> = {}): Promise<T> {
  return callAgent<T>('GET', agentUrl, apiPath, token, { query });
}

/** POST a JSON body; as getJson. */
export function postJson<T>(agentUrl: string, apiPath: string, token: string, body: unknown): Promise<T> {
  return callAgent<T>('POST', agentUrl, apiPath, token, { body });
}

async function callAgent<T>(
  method: 'GET' | 'POST',
  agentUrl: string,
  apiPath: string,
  token: string,
  opts: { query?: Record<string, string | undefined>; body?: unknown },
): Promise<T> {
  const url = agentApiUrl(agentUrl, apiPath);
  for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined) url.searchParams.set(k, v);
  const headers: Record<string, string> = { authorization: `Bearer ${token}`, accept: 'application/json' };
  if (method === 'POST') headers['content-type'] = 'application/json';
  let res;
  try {
    res = await request(url, {
      method,
      headers,
      body: method === 'POST' ? JSON.stringify(opts.body ?? {}) : undefined,
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
    });
  } catch (err) {
    throw new UserError('AGENT_UNREACHABLE', `could not reach the agent at ${url.origin} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, {
      hint: 'Check --agent / HOOPCTL_AGENT and that hoop-agent is running.',
      exitCode: ExitCode.Unreachable,
    });
  }
  const text = await res.body.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  if (res.statusCode === 200) return body as T;
  const e = (body as ApiErrorBody | undefined)?.error;
  const exitCode =
    res.statusCode === 401 ? ExitCode.NotAuthenticated : res.statusCode === 403 ? ExitCode.Forbidden : res.statusCode === 400 ? ExitCode.Usage : ExitCode.Failure;
  throw new UserError(e?.code ?? `HTTP_${res.statusCode}`, e?.message ?? `the agent answered HTTP ${res.statusCode}`, {
    hint: e?.hint ?? (res.statusCode === 401 ? 'Run `hoopctl login`.' : undefined),
    exitCode,
  });
}
