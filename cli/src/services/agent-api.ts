// Calls to the agent's HTTP API with the caller's token. The token never travels in clear: ws/http is
// accepted only for an agent on this machine.
import { request } from './http.js';
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

/**
 * A response body checked against its shared schema (shared/api): an agent of another version that
 * answers something else is one clear error, not a crash later in a presenter.
 */
export function parseBody<T>(schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: { issues: { path: PropertyKey[]; message: string }[] } } }, body: unknown, apiPath: string): T {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const i = r.error.issues[0];
  throw new UserError('BAD_RESPONSE', `the agent's answer to ${apiPath} is not what this hoopctl expects (${i.path.map(String).join('.') || 'body'}: ${i.message})`, {
    hint: 'The agent and hoopctl may be of different versions: upgrade the older one.',
  });
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
    throw unreachable(url, err);
  }
  const body = parseJson(await res.body.text());
  if (res.statusCode === 200) return body as T;
  throw refusal(res.statusCode, body);
}

/**
 * GET a streamed body (the audit export): resolves once the agent answered 200, with the body to read
 * as it arrives. A transfer the agent aborts midway makes the iteration throw.
 */
export async function getStream(agentUrl: string, apiPath: string, token: string, query: Record<string, string | undefined> = {}): Promise<AsyncIterable<Buffer>> {
  const url = agentApiUrl(agentUrl, apiPath);
  for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, v);
  let res;
  try {
    res = await request(url, { method: 'GET', headers: { authorization: `Bearer ${token}` }, headersTimeout: 10_000, bodyTimeout: 60_000 });
  } catch (err) {
    throw unreachable(url, err);
  }
  if (res.statusCode !== 200) throw refusal(res.statusCode, parseJson(await res.body.text()));
  return res.body;
}

function unreachable(url: URL, err: unknown): UserError {
  return new UserError('AGENT_UNREACHABLE', `could not reach the agent at ${url.origin} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, {
    hint: 'Check --agent / HOOPCTL_AGENT and that hoop-agent is running.',
    exitCode: ExitCode.Unreachable,
  });
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** An HTTP refusal in the agent's own words, with the exit code scripts branch on. */
function refusal(status: number, body: unknown): UserError {
  const e = (body as ApiErrorBody | undefined)?.error;
  const exitCode = status === 401 ? ExitCode.NotAuthenticated : status === 403 ? ExitCode.Forbidden : status === 400 ? ExitCode.Usage : ExitCode.Failure;
  return new UserError(e?.code ?? `HTTP_${status}`, e?.message ?? `the agent answered HTTP ${status}`, {
    hint: e?.hint ?? (status === 401 ? 'Run `hoopctl login`.' : undefined),
    exitCode,
  });
}
