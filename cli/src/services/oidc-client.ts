// The OAuth 2.0 / OIDC client side of hoopctl: discovery, the device authorization grant (RFC 8628) for
// people, client credentials and GitHub Actions ID tokens for machines, and the refresh grant. Returns
// data or throws UserError; prints nothing.
//
//   hoopctl ── GET  /.well-known/openid-configuration ─▶ issuer   (endpoints; `issuer` must match exactly)
//   hoopctl ── POST device_authorization_endpoint ─────▶ issuer   (device_code, user_code, interval)
//   person  ── verification_uri in a browser, types user_code, signs in, consents
//   hoopctl ── POST token_endpoint (device_code) every `interval` s ─▶ pending … slow_down (+5 s) … tokens
//
// Time comes from an injected Clock so tests can run a ten-minute device code to expiry in milliseconds.
import { request } from './http.js';
import { decodeJwt } from 'jose';
import { ExitCode, UserError } from '../errors.js';
import type { Env } from './settings.js';

export const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
/** Identity for whoami, a refresh token, and the agent's scope. */
export const PERSON_SCOPE = 'openid email profile groups offline_access db:connect';
/** What a machine asks for with client credentials: the agent's scope only. */
export const MACHINE_SCOPE = 'db:connect';

const HTTP_TIMEOUT_MS = 15_000;

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      const t = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      const onAbort = () => {
        clearTimeout(t);
        reject(signal?.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};

export interface IssuerMetadata {
  issuer: string;
  token_endpoint: string;
  device_authorization_endpoint?: string;
  revocation_endpoint?: string;
  grant_types_supported?: string[];
}

export interface TokenSet {
  accessToken: string;
  refreshToken?: string;
  idToken?: string;
  /** Seconds, as the issuer said; undefined when it did not. */
  expiresIn?: number;
  scope?: string;
}

/** An OAuth error response (RFC 6749 §5.2), kept apart so callers can branch on `error`. */
export class OAuthError extends Error {
  override readonly name = 'OAuthError';
  constructor(
    readonly error: string,
    readonly description: string | undefined,
    readonly status: number,
  ) {
    super(description ? `${error}: ${description}` : error);
  }
}

// ---------------------------------------------------------------------------------------------------
// Discovery

/**
 * Reads the issuer's discovery document. The issuer must be https (or loopback http: the demo and
 * tests), and the document's `issuer` must equal the one asked for, so a redirect or a proxy cannot
 * swap in another IdP's endpoints.
 */
export async function discover(issuer: string): Promise<IssuerMetadata> {
  const base = checkIssuerUrl(issuer);
  const url = `${base}/.well-known/openid-configuration`;
  const { status, json } = await httpJson('GET', url, {}, undefined, `the issuer ${base}`);
  if (status !== 200) {
    throw new UserError('ISSUER_DISCOVERY_FAILED', `the issuer ${base} has no usable discovery document (HTTP ${status} from ${url})`, {
      hint: 'Check --issuer: it is the URL that appears as `iss` in its tokens.',
      exitCode: ExitCode.Unreachable,
    });
  }
  const meta = json as Partial<IssuerMetadata>;
  if (typeof meta.issuer !== 'string' || (meta.issuer !== issuer && meta.issuer !== base && meta.issuer.replace(/\/$/, '') !== base)) {
    throw new UserError('ISSUER_MISMATCH', `the discovery document at ${url} names another issuer (${String(meta.issuer)})`, {
      hint: 'Use exactly the issuer URL your identity provider documents.',
      exitCode: ExitCode.Usage,
    });
  }
  if (typeof meta.token_endpoint !== 'string') {
    throw new UserError('ISSUER_DISCOVERY_FAILED', `the issuer ${base} publishes no token_endpoint`, { exitCode: ExitCode.Unreachable });
  }
  for (const k of ['token_endpoint', 'device_authorization_endpoint', 'revocation_endpoint'] as const) {
    if (typeof meta[k] === 'string') checkIssuerUrl(meta[k] as string);
  }
  return meta as IssuerMetadata;
}

/** https, or http on loopback only: tokens must not cross a network in clear. Returns it without a trailing slash. */
export function checkIssuerUrl(raw: string): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new UserError('BAD_ISSUER_URL', `not a URL: ${raw}`, { hint: 'Pass --issuer https://login.example.com', exitCode: ExitCode.Usage });
  }
  const loopback = ['127.0.0.1', 'localhost', '[::1]', '::1'].includes(u.hostname);
  if (u.protocol !== 'https:' && !(u.protocol === 'http:' && loopback)) {
    throw new UserError('INSECURE_ISSUER_URL', `refusing ${u.protocol}//${u.host}: tokens would cross the network in clear`, {
      hint: 'Use the issuer\'s https:// URL.',
      exitCode: ExitCode.Usage,
    });
  }
  return raw.replace(/\/+$/, '');
}

// ---------------------------------------------------------------------------------------------------
// Device authorization grant (RFC 8628)

export interface DeviceAuthorization {
  deviceCode: string;
  userCode: string;
  verificationUri: string;
  verificationUriComplete?: string;
  /** Seconds the codes stay valid. */
  expiresIn: number;
  /** Seconds to wait between polls (RFC 8628 default 5). */
  interval: number;
}

export async function startDeviceAuthorization(
  meta: IssuerMetadata,
  opts: { clientId: string; scope?: string; resource?: string },
): Promise<DeviceAuthorization> {
  if (!meta.device_authorization_endpoint) {
    throw new UserError('NO_DEVICE_FLOW', `the issuer ${meta.issuer} does not offer the device authorization grant`, {
      hint: 'Ask your identity team to enable it for the hoopctl client, or log in with --token.',
      exitCode: ExitCode.Usage,
    });
  }
  const form: Record<string, string> = { client_id: opts.clientId, scope: opts.scope ?? PERSON_SCOPE };
  if (opts.resource) form.resource = opts.resource;
  const { status, json } = await httpJson('POST', meta.device_authorization_endpoint, form, undefined, `the issuer ${meta.issuer}`);
  if (status !== 200) {
    const err = oauthErrorOf(json, status);
    throw new UserError('LOGIN_FAILED', `the issuer refused to start a device login: ${err.message}`, {
      hint: err.error === 'invalid_client' || err.error === 'unauthorized_client' ? 'Check --client-id: it must be a public client allowed the device grant.' : undefined,
      exitCode: ExitCode.NotAuthenticated,
    });
  }
  const j = json as Record<string, unknown>;
  if (typeof j.device_code !== 'string' || typeof j.user_code !== 'string' || typeof j.verification_uri !== 'string') {
    throw new UserError('LOGIN_FAILED', 'the issuer answered the device login with an incomplete response', { exitCode: ExitCode.NotAuthenticated });
  }
  return {
    deviceCode: j.device_code,
    userCode: j.user_code,
    verificationUri: j.verification_uri,
    verificationUriComplete: typeof j.verification_uri_complete === 'string' ? j.verification_uri_complete : undefined,
    expiresIn: Number.isFinite(Number(j.expires_in)) && Number(j.expires_in) > 0 ? Number(j.expires_in) : 600,
    interval: Number.isFinite(Number(j.interval)) && Number(j.interval) > 0 ? Number(j.interval) : 5,
  };
}

export type DeviceStatus =
  | { state: 'waiting'; expiresAt: number; interval: number }
  | { state: 'slow_down'; expiresAt: number; interval: number }
  | { state: 'retrying'; expiresAt: number; interval: number; reason: string }
  | { state: 'approved' }
  | { state: 'denied' }
  | { state: 'expired' };

/**
 * Polls the token endpoint until the person approves, denies, or the code expires. Waits `interval`
 * seconds before every poll, adds 5 s for good on `slow_down` (RFC 8628 §3.5), and backs off (doubling)
 * on network errors rather than failing: a laptop changing networks should not lose the login.
 */
export async function pollDeviceToken(
  meta: IssuerMetadata,
  auth: DeviceAuthorization,
  opts: { clientId: string; clock?: Clock; startedAt?: number; signal?: AbortSignal; onStatus?: (s: DeviceStatus) => void },
): Promise<TokenSet> {
  const clock = opts.clock ?? systemClock;
  const onStatus = opts.onStatus ?? (() => {});
  const expiresAt = (opts.startedAt ?? clock.now()) + auth.expiresIn * 1000;
  let intervalSec = auth.interval;
  let netBackoffSec = 0;
  onStatus({ state: 'waiting', expiresAt, interval: intervalSec });
  for (;;) {
    await clock.sleep((intervalSec + netBackoffSec) * 1000, opts.signal);
    if (clock.now() >= expiresAt) {
      onStatus({ state: 'expired' });
      throw expiredError(auth);
    }
    let res: { status: number; json: unknown };
    try {
      res = await httpJson('POST', meta.token_endpoint, { grant_type: DEVICE_GRANT, device_code: auth.deviceCode, client_id: opts.clientId }, undefined, `the issuer ${meta.issuer}`);
    } catch (err) {
      if (!(err instanceof UserError) || err.code !== 'ISSUER_UNREACHABLE') throw err;
      netBackoffSec = Math.min(60, netBackoffSec ? netBackoffSec * 2 : intervalSec);
      onStatus({ state: 'retrying', expiresAt, interval: intervalSec + netBackoffSec, reason: err.message });
      continue;
    }
    netBackoffSec = 0;
    if (res.status === 200) {
      const tokens = tokenSetOf(res.json);
      onStatus({ state: 'approved' });
      return tokens;
    }
    const err = oauthErrorOf(res.json, res.status);
    switch (err.error) {
      case 'authorization_pending':
        onStatus({ state: 'waiting', expiresAt, interval: intervalSec });
        continue;
      case 'slow_down':
        intervalSec += 5;
        onStatus({ state: 'slow_down', expiresAt, interval: intervalSec });
        continue;
      case 'expired_token':
        onStatus({ state: 'expired' });
        throw expiredError(auth);
      case 'access_denied':
        onStatus({ state: 'denied' });
        throw new UserError('LOGIN_DENIED', 'the sign-in was denied in the browser, so nothing was stored', {
          hint: 'Run `hoopctl login` again and choose Allow if you meant to sign in.',
          exitCode: ExitCode.NotAuthenticated,
        });
      default:
        throw new UserError('LOGIN_FAILED', `the issuer refused the device login: ${err.message}`, { exitCode: ExitCode.NotAuthenticated });
    }
  }
}

function expiredError(auth: DeviceAuthorization): UserError {
  return new UserError('LOGIN_EXPIRED', `the code ${auth.userCode} expired before it was approved, so nothing was stored`, {
    hint: 'Run `hoopctl login` again and enter the new code within the time shown.',
    exitCode: ExitCode.NotAuthenticated,
  });
}

// ---------------------------------------------------------------------------------------------------
// Machines and refresh

/** Client credentials grant (RFC 6749 §4.4), the secret sent with HTTP Basic as §2.3.1 says. */
export async function clientCredentialsGrant(
  meta: IssuerMetadata,
  opts: { clientId: string; clientSecret: string; scope?: string; resource?: string },
): Promise<TokenSet> {
  const form: Record<string, string> = { grant_type: 'client_credentials', scope: opts.scope ?? MACHINE_SCOPE };
  if (opts.resource) form.resource = opts.resource;
  const { status, json } = await httpJson('POST', meta.token_endpoint, form, basicAuth(opts.clientId, opts.clientSecret), `the issuer ${meta.issuer}`);
  if (status !== 200) {
    const err = oauthErrorOf(json, status);
    throw new UserError('NOT_AUTHENTICATED', `the issuer refused client credentials for ${opts.clientId}: ${err.message}`, {
      hint: err.error === 'invalid_client' ? 'Check HOOPCTL_CLIENT_ID and HOOPCTL_CLIENT_SECRET.' : undefined,
      exitCode: ExitCode.NotAuthenticated,
    });
  }
  return tokenSetOf(json);
}

/** Refresh grant for the public client. Throws OAuthError when the issuer says no (revoked, expired, reused). */
export async function refreshGrant(
  meta: IssuerMetadata,
  opts: { clientId: string; refreshToken: string; resource?: string },
): Promise<TokenSet> {
  const form: Record<string, string> = { grant_type: 'refresh_token', refresh_token: opts.refreshToken, client_id: opts.clientId };
  if (opts.resource) form.resource = opts.resource;
  const { status, json } = await httpJson('POST', meta.token_endpoint, form, undefined, `the issuer ${meta.issuer}`);
  if (status !== 200) throw oauthErrorOf(json, status);
  return tokenSetOf(json);
}

/** Best-effort token revocation (RFC 7009) at logout; never throws. */
export async function revokeToken(
  meta: IssuerMetadata,
  opts: { clientId: string; token: string; hint: 'refresh_token' | 'access_token' },
): Promise<'revoked' | 'failed' | 'not-offered'> {
  if (!meta.revocation_endpoint) return 'not-offered';
  try {
    const { status } = await httpJson('POST', meta.revocation_endpoint, { token: opts.token, token_type_hint: opts.hint, client_id: opts.clientId }, undefined, 'the issuer', 5000);
    return status === 200 ? 'revoked' : 'failed';
  } catch {
    return 'failed';
  }
}

/**
 * A GitHub Actions OIDC token for `audience`: GET ACTIONS_ID_TOKEN_REQUEST_URL (which already carries
 * `api-version`) with `audience` added, `Authorization: bearer ACTIONS_ID_TOKEN_REQUEST_TOKEN`; the answer
 * is `{"value": "<jwt>"}`. Only present in jobs with `permissions: id-token: write`.
 */
export async function githubActionsIdToken(env: Env, audience: string): Promise<string> {
  const rawUrl = env.ACTIONS_ID_TOKEN_REQUEST_URL;
  const bearer = env.ACTIONS_ID_TOKEN_REQUEST_TOKEN;
  if (!rawUrl || !bearer) {
    throw new UserError('NOT_AUTHENTICATED', 'GitHub Actions did not provide an ID token request URL', {
      hint: 'Give the job `permissions: id-token: write`.',
      exitCode: ExitCode.NotAuthenticated,
    });
  }
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch {
    throw new UserError('NOT_AUTHENTICATED', 'ACTIONS_ID_TOKEN_REQUEST_URL is not a URL', { exitCode: ExitCode.NotAuthenticated });
  }
  url.searchParams.set('audience', audience);
  const { status, json } = await httpJson('GET', url.href, {}, `bearer ${bearer}`, 'the GitHub Actions token service');
  const value = (json as { value?: unknown }).value;
  if (status !== 200 || typeof value !== 'string' || !value) {
    throw new UserError('NOT_AUTHENTICATED', `GitHub Actions refused an ID token for audience ${audience} (HTTP ${status})`, {
      hint: 'Give the job `permissions: id-token: write`, and check --audience.',
      exitCode: ExitCode.NotAuthenticated,
    });
  }
  return value;
}

// ---------------------------------------------------------------------------------------------------
// Helpers

/** The payload of a JWT, not verified (display and expiry bookkeeping only; the agent verifies). */
export function decodeClaims(token: string | undefined): Record<string, unknown> | undefined {
  if (!token) return undefined;
  try {
    return decodeJwt(token) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

function tokenSetOf(json: unknown): TokenSet {
  const j = (json ?? {}) as Record<string, unknown>;
  if (typeof j.access_token !== 'string' || !j.access_token) {
    throw new UserError('LOGIN_FAILED', 'the issuer answered without an access token', { exitCode: ExitCode.NotAuthenticated });
  }
  const expiresIn = Number(j.expires_in);
  return {
    accessToken: j.access_token,
    refreshToken: typeof j.refresh_token === 'string' ? j.refresh_token : undefined,
    idToken: typeof j.id_token === 'string' ? j.id_token : undefined,
    expiresIn: Number.isFinite(expiresIn) && expiresIn > 0 ? expiresIn : undefined,
    scope: typeof j.scope === 'string' ? j.scope : undefined,
  };
}

function oauthErrorOf(json: unknown, status: number): OAuthError {
  const j = (json ?? {}) as Record<string, unknown>;
  return new OAuthError(
    typeof j.error === 'string' ? j.error : `http_${status}`,
    typeof j.error_description === 'string' ? j.error_description : undefined,
    status,
  );
}

/** RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding. */
function basicAuth(id: string, secret: string): string {
  const enc = (s: string) => encodeURIComponent(s).replace(/%20/g, '+');
  return `Basic ${Buffer.from(`${enc(id)}:${enc(secret)}`).toString('base64')}`;
}

async function httpJson(
  method: 'GET' | 'POST',
  url: string,
  form: Record<string, string>,
  authorization: string | undefined,
  who: string,
  timeoutMs = HTTP_TIMEOUT_MS,
): Promise<{ status: number; json: unknown }> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (authorization) headers.authorization = authorization;
  let body: string | undefined;
  if (method === 'POST') {
    headers['content-type'] = 'application/x-www-form-urlencoded';
    body = new URLSearchParams(form).toString();
  }
  try {
    const res = await request(url, { method, headers, body, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
    const text = await res.body.text();
    let json: unknown = {};
    try {
      json = text ? JSON.parse(text) : {};
    } catch {
      // An HTML error page or a proxy's message: the status decides.
    }
    return { status: res.statusCode, json };
  } catch (err) {
    throw new UserError('ISSUER_UNREACHABLE', `cannot reach ${who} (${(err as Error).message || (err as NodeJS.ErrnoException).code})`, {
      hint: 'Check the network and the URL.',
      exitCode: ExitCode.Unreachable,
    });
  }
}
