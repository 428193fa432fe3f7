// A local OpenID Connect issuer (oidc-provider) for the demo, the tests and the benchmark.
//
// It is configured the way a production IdP would be, so that nothing the agent or the CLI learns
// against it has to be unlearned against Okta/Entra/Keycloak:
//   - its own RS256 signing key (generated at start), never the library's dev key;
//   - access tokens for the agent are JWTs (`at+jwt`) bound to one resource (audience `hoop-agent`,
//     scope `db:connect`), and carry the identity claims the agent authorises on (`sub`, `email`,
//     `groups`): users' groups for people, client metadata `groups` for service accounts;
//   - people log in with the device authorization grant (public client `hoopctl`), machines with
//     client credentials (confidential clients such as `ci-nightly`);
//   - the dev-only interactions are replaced by a small login and consent page of our own, which a test
//     drives over HTTP exactly as a browser would (`approveDeviceCode`).
//
//   hoopctl ── POST /device/auth ─────────────▶ issuer   (device_code, user_code)
//   browser ── GET/POST /device (user_code) ──▶ issuer ─▶ /interaction/:uid (login, then consent)
//   hoopctl ── POST /token (device_code) ─────▶ issuer   (access JWT for hoop-agent, id token, refresh)
//   CI job  ── POST /token (client_credentials, Basic ci-nightly:secret) ─▶ access JWT
//   "GitHub" ── mintWorkloadToken({repository, ref, event_name…}) ─▶ a GitHub-Actions-shaped OIDC JWT,
//              signed with the issuer's key (served by its JWKS) as GitHub's own issuer would
//
// The login page takes an optional one-time code (DEMO_OTP): with it the person's tokens say
// `amr: [pwd, otp, mfa]`, `acr: urn:hoopctl:demo:mfa`; without it `amr: [pwd]`, `acr: urn:hoopctl:demo:pwd`
// (DEMO_ACR_VALUES, weakest first), so MFA requirements can be tested against a real device flow. User
// tokens carry `sid`, the login session, which `hoopctl logout` revokes at the agent.
//
// State lives in oidc-provider's in-memory adapter: one process, gone at stop(), which is what a demo
// and a test want.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import { request } from 'undici';
import type { Account, Interaction, Provider, TokenLike } from 'oidc-provider';

export interface DemoUser {
  /** Stable subject identifier (what the agent audits on). */
  sub: string;
  email: string;
  name: string;
  groups: string[];
}

export interface DemoClient {
  clientId: string;
  /** Absent for public clients (the CLI). */
  clientSecret?: string;
  /** Service-account groups, copied into the client-credentials access token's `groups` claim. */
  groups?: string[];
  name?: string;
}

export interface LocalIssuerOptions {
  /** 0 / absent: a free loopback port. */
  port?: number;
  /** The agent's audience (`aud` of access tokens). Default `hoop-agent`. */
  audience?: string;
  users?: DemoUser[];
  /** Confidential clients for client credentials; the public `hoopctl` client is always present. */
  clients?: DemoClient[];
  /**
   * Lifetime of access tokens, seconds. Default 900. Tests of renewal in place use 20–30 s, so a token
   * expires several times during one long pg_dump or psql session without making the suite slow.
   */
  accessTokenTtlSec?: number;
  /** Diagnostics sink (server errors inside oidc-provider). Default: silent. */
  log?: (line: string) => void;
}

export interface DeviceFlowTokens {
  accessToken: string;
  idToken?: string;
  refreshToken?: string;
  expiresIn: number;
  scope?: string;
}

export interface LocalIssuer {
  /** `http://127.0.0.1:PORT`, exactly as it appears in `iss`. */
  readonly issuer: string;
  readonly audience: string;
  /** The RFC 8707 resource indicator that maps to `audience` (resource indicators must be URIs). */
  readonly resource: string;
  /** The scope the agent's resource server grants. */
  readonly scope: string;
  /** The public client the CLI uses for the device flow. */
  readonly cliClientId: string;
  readonly users: readonly DemoUser[];
  readonly clients: readonly DemoClient[];
  /** The signing key, private parts included: for tests that forge or craft tokens. */
  readonly privateJwk: JWK & { kid: string; alg: string };
  readonly publicJwk: JWK & { kid: string; alg: string };
  /** Client-credentials grant, as a CI job would run it. Returns the access token (a JWT). */
  clientCredentialsToken(clientId: string, clientSecret: string, opts?: { scope?: string }): Promise<string>;
  /** Plays the whole device flow for `userEmail` (start, approve in the "browser", poll once); `mfa` enters the one-time code. */
  mintDeviceFlowToken(userEmail: string, opts?: { scope?: string; mfa?: boolean }): Promise<DeviceFlowTokens>;
  /**
   * A CI workload token shaped like GitHub Actions' (claims per GitHub's OIDC docs): `sub` is
   * `repo:R:pull_request` for pull-request events, else `repo:R:ref:REF`. Lives `ttlSec` (default the
   * access token TTL).
   */
  mintWorkloadToken(ctx: WorkloadContext, opts?: { ttlSec?: number; audience?: string }): Promise<string>;
  /**
   * Acts as the user's browser: GET /device, submit the user code with its xsrf token, confirm,
   * log in on our login page, consent. Throws with the page's message if any step is refused.
   */
  approveDeviceCode(userCode: string, userEmail: string, opts?: ApproveOptions): Promise<void>;
  stop(): Promise<void>;
}

export interface WorkloadContext {
  repository: string;
  ref: string;
  event_name: string;
  workflow?: string;
  run_id?: string;
  sha?: string;
  actor?: string;
}

export interface ApproveOptions {
  /** Default DEMO_PASSWORD; pass another to exercise a failed login. */
  password?: string;
  /** Enter the one-time code (DEMO_OTP) at login: the tokens then say MFA. */
  mfa?: boolean;
  /** Press "Deny" on the consent page instead of "Allow" (the CLI then gets access_denied). */
  deny?: boolean;
}

/** Every demo user shares this password; it exists so that a login can fail, not to protect anything. */
export const DEMO_PASSWORD = 'demo-password';
/** The demo's second factor: the one-time code every demo user "has". */
export const DEMO_OTP = '246810';
/** The demo issuer's acr values, weakest first (what an agent's `acrValues` lists for it). */
export const DEMO_ACR_VALUES = ['urn:hoopctl:demo:pwd', 'urn:hoopctl:demo:mfa'] as const;

export const DEMO_USERS: readonly DemoUser[] = [
  { sub: 'u-alice', email: 'alice@clinic.example', name: 'Alice Analyst', groups: ['data-eng'] },
  { sub: 'u-bob', email: 'bob@clinic.example', name: 'Bob Builder', groups: ['data-eng'] },
  { sub: 'u-carol', email: 'carol@clinic.example', name: 'Carol Compliance', groups: ['compliance'] },
  { sub: 'u-dave', email: 'dave@clinic.example', name: 'Dave Duty-Officer', groups: ['compliance'] },
];

export const DEMO_CLIENTS: readonly DemoClient[] = [
  { clientId: 'ci-nightly', clientSecret: 'ci-nightly-secret', groups: ['data-eng'], name: 'Nightly ETL (CI)' },
  { clientId: 'approver-bot', clientSecret: 'approver-bot-secret', groups: ['compliance'], name: 'Approver bot' },
];

const CLI_CLIENT_ID = 'hoopctl';
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const RESOURCE_SCOPE = 'db:connect';
/** What `hoopctl login` asks for: identity for `whoami`, a refresh token, and the agent's scope. */
const CLI_SCOPE = `openid email profile groups offline_access ${RESOURCE_SCOPE}`;

export async function startLocalIssuer(opts: LocalIssuerOptions = {}): Promise<LocalIssuer> {
  const audience = opts.audience ?? 'hoop-agent';
  // RFC 8707 wants an absolute URI as the resource indicator; a bare audience name gets a urn.
  const resource = URL.canParse(audience) ? audience : `urn:hoopctl:resource:${audience}`;
  const users = [...(opts.users ?? DEMO_USERS)];
  const clients = [...(opts.clients ?? DEMO_CLIENTS)];
  const accessTokenTtl = opts.accessTokenTtlSec ?? 900;
  const log = opts.log ?? (() => {});
  const usersBySub = new Map(users.map((u) => [u.sub, u]));
  const usersByEmail = new Map(users.map((u) => [u.email.toLowerCase(), u]));

  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const privateJwk = await exportJWK(privateKey);
  const kid = await calculateJwkThumbprint(privateJwk);
  const signingJwk = { ...privateJwk, kid, alg: 'RS256', use: 'sig' };
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...publicParts } = signingJwk;
  const publicJwk = { ...publicParts, kid, alg: 'RS256' };

  // Listen first so the issuer URL carries the real port; the provider is attached right after.
  let handler: http.RequestListener = (_req, res) => {
    res.statusCode = 503;
    res.end();
  };
  const server = http.createServer((req, res) => handler(req, res));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const issuer = `http://127.0.0.1:${port}`;

  // Imported here, not at the top: oidc-provider prints a warning on Node 20 when it loads, and a
  // process that only needs this module's types or constants should stay quiet.
  const { default: ProviderClass, errors: oidcErrors } = await importQuietly();
  const provider = new ProviderClass(issuer, {
    adapter: memoryAdapter(),
    jwks: { keys: [signingJwk] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    clients: [
      {
        client_id: CLI_CLIENT_ID,
        client_name: 'hoopctl',
        token_endpoint_auth_method: 'none',
        grant_types: [DEVICE_GRANT, 'refresh_token'],
        response_types: [],
        redirect_uris: [],
      },
      ...clients.map((c) => ({
        client_id: c.clientId,
        client_secret: c.clientSecret,
        client_name: c.name ?? c.clientId,
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        token_endpoint_auth_method: c.clientSecret ? 'client_secret_basic' : 'none',
        groups: c.groups ?? [],
      })),
    ],
    extraClientMetadata: {
      properties: ['groups'],
      validator(_ctx: unknown, key: string, value: unknown) {
        if (key === 'groups' && value !== undefined && !(Array.isArray(value) && value.every((g) => typeof g === 'string'))) {
          throw new oidcErrors.InvalidClientMetadata('groups must be an array of strings');
        }
      },
    },
    // The ID token carries the user claims directly, since a resource-bound JWT access token cannot
    // be used at /me (NOTES-deps.md).
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    conformIdTokenClaims: false,
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
    async findAccount(_ctx: unknown, sub: string): Promise<Account | undefined> {
      const user = usersBySub.get(sub);
      if (!user) return undefined;
      return {
        accountId: user.sub,
        claims: () => ({ sub: user.sub, email: user.email, email_verified: true, name: user.name, groups: user.groups }),
      };
    },
    // The agent authorises from the access token alone, so identity claims go into it.
    async extraTokenClaims(ctx: { oidc: { provider: Provider; entities: Record<string, GrantSource | undefined> } }, token: TokenLike) {
      if (token.kind === 'ClientCredentials' && token.clientId) {
        const client = await ctx.oidc.provider.Client.find(token.clientId);
        const groups = client?.metadata().groups;
        return { groups: Array.isArray(groups) ? groups : [] };
      }
      const user = token.accountId ? usersBySub.get(token.accountId) : undefined;
      if (!user) return undefined;
      // How the person signed in, from what the token was minted from (device code or refresh token).
      const e = ctx.oidc.entities;
      const src = e.DeviceCode ?? e.RotatedRefreshToken ?? e.RefreshToken;
      const sid = src?.sessionUid ?? src?.sid;
      return { email: user.email, groups: user.groups, amr: src?.amr, acr: src?.acr, ...(sid ? { sid } : {}) };
    },
    features: {
      devInteractions: { enabled: false },
      deviceFlow: {
        enabled: true,
        userCodeInputSource: deviceInputPage,
        userCodeConfirmSource: deviceConfirmPage,
        successSource: deviceSuccessPage,
      },
      clientCredentials: { enabled: true },
      // One resource server, the agent: every access token is a JWT for it, even when the CLI does
      // not name it, so the agent can verify offline.
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx: unknown, _client: unknown, oneOf?: string) => oneOf ?? resource,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx: unknown, indicator: string) => {
          if (indicator !== resource) throw new oidcErrors.InvalidTarget();
          return {
            scope: RESOURCE_SCOPE,
            audience,
            accessTokenFormat: 'jwt',
            accessTokenTTL: accessTokenTtl,
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    // Short lives, as a gateway to PHI should have; all set so the library prints no notices.
    ttl: {
      AccessToken: accessTokenTtl,
      ClientCredentials: accessTokenTtl,
      DeviceCode: 600,
      IdToken: 3600,
      Interaction: 600,
      RefreshToken: 12 * 3600,
      Session: 12 * 3600,
      Grant: 12 * 3600,
    },
    clientBasedCORS: () => false,
    renderError: errorPage,
  });
  // Koa would print 5xx errors to stderr; route them to the caller's sink instead.
  provider.on('error', (err) => log(`oidc-provider error: ${String(err)}`));
  provider.on('server_error', (_ctx, err) => log(`oidc-provider server_error: ${String(err)}`));

  const providerCallback = provider.callback();
  const interactions = interactionRouter(provider, usersByEmail);
  handler = (req, res) => {
    if (req.url?.startsWith('/interaction/')) {
      interactions(req, res).catch((err: unknown) => {
        log(`interaction error: ${String(err)}`);
        if (!res.headersSent) sendPage(res, 400, errorHtml('Sign-in failed', 'This sign-in request is no longer valid. Start again from your device.'));
        else res.end();
      });
      return;
    }
    providerCallback(req, res);
  };

  const approveDeviceCode = (userCode: string, userEmail: string, approveOpts: ApproveOptions = {}) =>
    new Browser(issuer).approveDevice(userCode, userEmail, approveOpts.password ?? DEMO_PASSWORD, !!approveOpts.deny, approveOpts.mfa ? DEMO_OTP : undefined);

  return {
    issuer,
    audience,
    resource,
    scope: RESOURCE_SCOPE,
    cliClientId: CLI_CLIENT_ID,
    users,
    clients,
    privateJwk: { ...signingJwk },
    publicJwk,
    async clientCredentialsToken(clientId, clientSecret, ccOpts = {}) {
      const body = await tokenRequest(issuer, {
        grant_type: 'client_credentials',
        scope: ccOpts.scope ?? RESOURCE_SCOPE,
        resource,
      }, basicAuth(clientId, clientSecret));
      return String(body.access_token);
    },
    async mintDeviceFlowToken(userEmail, mintOpts = {}) {
      const started = await formPost(`${issuer}/device/auth`, {
        client_id: CLI_CLIENT_ID,
        scope: mintOpts.scope ?? CLI_SCOPE,
      });
      if (started.status !== 200) throw new Error(`device authorization failed: ${oauthError(started.json)}`);
      await approveDeviceCode(String(started.json.user_code), userEmail, { mfa: mintOpts.mfa });
      const body = await tokenRequest(issuer, {
        grant_type: DEVICE_GRANT,
        device_code: String(started.json.device_code),
        client_id: CLI_CLIENT_ID,
      });
      return {
        accessToken: String(body.access_token),
        idToken: typeof body.id_token === 'string' ? body.id_token : undefined,
        refreshToken: typeof body.refresh_token === 'string' ? body.refresh_token : undefined,
        expiresIn: Number(body.expires_in),
        scope: typeof body.scope === 'string' ? body.scope : undefined,
      };
    },
    approveDeviceCode,
    async mintWorkloadToken(w, wOpts = {}) {
      const pr = w.event_name === 'pull_request' || w.event_name === 'pull_request_target';
      const now = Math.floor(Date.now() / 1000);
      return new SignJWT({
        ...w,
        repository_owner: w.repository.split('/')[0],
        ref_type: 'branch',
        run_attempt: '1',
        job_workflow_ref: `${w.repository}/.github/workflows/${w.workflow ?? 'ci'}.yml@${w.ref}`,
      })
        .setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' })
        .setIssuer(issuer)
        .setAudience(wOpts.audience ?? audience)
        .setSubject(pr ? `repo:${w.repository}:pull_request` : `repo:${w.repository}:ref:${w.ref}`)
        .setJti(randomBytes(12).toString('base64url'))
        .setIssuedAt(now)
        .setNotBefore(now - 5)
        .setExpirationTime(now + (wOpts.ttlSec ?? accessTokenTtl))
        .sign(privateKey);
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// Storage. The library's own memory adapter is a process-wide LRU of 1000 entries, shared by every
// provider in the process; a benchmark minting many tokens would evict live sessions and grants, and
// two issuers in one test worker would see each other's state. This one is per issuer and unbounded,
// with entries dropped when they expire.

interface Stored {
  payload: Record<string, unknown>;
  expiresAt: number;
}

function memoryAdapter() {
  const entries = new Map<string, Stored>();
  const byUid = new Map<string, string>();
  const byUserCode = new Map<string, string>();
  const byGrant = new Map<string, Set<string>>();
  let writes = 0;
  // Every 1000 writes, drop what has expired so a long benchmark run does not grow without bound.
  const sweep = () => {
    const now = Date.now();
    for (const [k, e] of entries) if (e.expiresAt <= now) entries.delete(k);
    for (const [uid, id] of byUid) if (!entries.has(`Session:${id}`)) byUid.delete(uid);
    for (const [code, id] of byUserCode) if (!entries.has(`DeviceCode:${id}`)) byUserCode.delete(code);
    for (const [g, members] of byGrant) {
      for (const k of members) if (!entries.has(k)) members.delete(k);
      if (!members.size) byGrant.delete(g);
    }
  };
  const live = (key: string) => {
    const e = entries.get(key);
    if (e && e.expiresAt <= Date.now()) entries.delete(key);
    return e && e.expiresAt > Date.now() ? e.payload : undefined;
  };
  return (model: string) => {
    const key = (id: string) => `${model}:${id}`;
    return {
      async upsert(id: string, payload: Record<string, unknown>, expiresIn?: number) {
        if (++writes % 1000 === 0) sweep();
        const k = key(id);
        entries.set(k, { payload, expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : Infinity });
        if (model === 'Session' && typeof payload.uid === 'string') byUid.set(payload.uid, id);
        if (typeof payload.userCode === 'string') byUserCode.set(payload.userCode, id);
        if (typeof payload.grantId === 'string') {
          const members = byGrant.get(payload.grantId) ?? new Set<string>();
          byGrant.set(payload.grantId, members.add(k));
        }
      },
      async find(id: string) {
        return live(key(id));
      },
      async findByUid(uid: string) {
        const id = byUid.get(uid);
        return id ? live(key(id)) : undefined;
      },
      async findByUserCode(userCode: string) {
        const id = byUserCode.get(userCode);
        return id ? live(key(id)) : undefined;
      },
      async consume(id: string) {
        const p = live(key(id));
        if (p) p.consumed = Math.floor(Date.now() / 1000);
      },
      async destroy(id: string) {
        entries.delete(key(id));
      },
      async revokeByGrantId(grantId: string) {
        for (const k of byGrant.get(grantId) ?? []) entries.delete(k);
        byGrant.delete(grantId);
      },
    };
  };
}

// ---------------------------------------------------------------------------------------------------
// Interactions: our own login and consent pages, in place of the library's dev-only ones.
// The `_interaction` cookie (SameSite=Lax, bound to the uid) is what ties a POST to the browser that
// started the flow, so a cross-site form post cannot complete someone else's login.

function interactionRouter(provider: Provider, usersByEmail: Map<string, DemoUser>) {
  const route = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|consent))?$/;
  return async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const m = route.exec(new URL(req.url ?? '/', 'http://x').pathname);
    if (!m) return sendPage(res, 404, errorHtml('Not found', 'There is no such page.'));
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== m[1]) return sendPage(res, 400, errorHtml('Sign-in failed', 'This sign-in request does not match your browser session.'));
    const step = m[2];

    if (req.method === 'GET' && !step) {
      if (details.prompt.name === 'login') return sendPage(res, 200, loginHtml(details, [...usersByEmail.values()]));
      if (details.prompt.name === 'consent') return sendPage(res, 200, consentHtml(details));
      return sendPage(res, 400, errorHtml('Sign-in failed', `Unsupported step "${details.prompt.name}".`));
    }
    if (req.method !== 'POST' || !step) return sendPage(res, 405, errorHtml('Not allowed', 'Use the form.'));
    const form = await readForm(req);

    if (step === 'login' && details.prompt.name === 'login') {
      const user = usersByEmail.get((form.get('email') ?? '').toLowerCase());
      if (!user || !constantTimeEqual(form.get('password') ?? '', DEMO_PASSWORD)) {
        return sendPage(res, 401, loginHtml(details, [...usersByEmail.values()], 'Wrong email or password.'));
      }
      // The second factor is optional here, so a test can sign in with and without it; the token says which.
      const otp = form.get('otp') ?? '';
      if (otp && !constantTimeEqual(otp, DEMO_OTP)) {
        return sendPage(res, 401, loginHtml(details, [...usersByEmail.values()], 'Wrong one-time code.'));
      }
      const [weak, strong] = DEMO_ACR_VALUES;
      const login = otp ? { accountId: user.sub, amr: ['pwd', 'otp', 'mfa'], acr: strong } : { accountId: user.sub, amr: ['pwd'], acr: weak };
      return provider.interactionFinished(req, res, { login }, { mergeWithLastSubmission: false });
    }

    if (step === 'consent' && details.prompt.name === 'consent') {
      if (form.get('decision') !== 'allow') {
        return provider.interactionFinished(req, res, {
          error: 'access_denied',
          error_description: 'End-User denied the request',
        }, { mergeWithLastSubmission: false });
      }
      const accountId = details.session?.accountId;
      const clientId = details.params.client_id;
      if (!accountId || !clientId) throw new Error('interaction has no session or client');
      const grant = details.grantId ? await provider.Grant.find(details.grantId) : new provider.Grant({ accountId, clientId });
      if (!grant) throw new Error('grant not found');
      const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = details.prompt.details;
      if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
      if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
      const grantId = await grant.save();
      return provider.interactionFinished(req, res, { consent: details.grantId ? {} : { grantId } }, { mergeWithLastSubmission: true });
    }
    return sendPage(res, 400, errorHtml('Sign-in failed', 'This step does not match the sign-in request.'));
  };
}

function constantTimeEqual(a: string, b: string): boolean {
  // Hash first so lengths never leak through an early return.
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}

async function readForm(req: http.IncomingMessage): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > 16 * 1024) throw new Error('form too large');
    chunks.push(chunk as Buffer);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

// ---------------------------------------------------------------------------------------------------
// Pages. Each <body> carries data-page so the scripted browser below knows where it is without
// scraping prose; forms carry ids for the same reason.

const esc = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);

function page(kind: string, title: string, inner: string): string {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head>` +
    `<body data-page="${kind}"><main><h1>${esc(title)}</h1>${inner}</main></body></html>`;
}

function sendPage(res: http.ServerResponse, status: number, html: string): void {
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Security-Policy', "default-src 'none'; form-action 'self'; frame-ancestors 'none'");
  res.end(html);
}

function loginHtml(details: Interaction, users: DemoUser[], error?: string): string {
  const options = users.map((u) => `<option value="${esc(u.email)}">${esc(u.name)} (${esc(u.email)})</option>`).join('');
  return page('login', 'Sign in to the clinic', `${error ? `<p class="error">${esc(error)}</p>` : ''}
<form id="login" method="post" action="/interaction/${esc(details.uid)}/login">
<label>User <select name="email">${options}</select></label>
<label>Password <input type="password" name="password" autocomplete="current-password"></label>
<label>One-time code (optional) <input type="text" name="otp" autocomplete="one-time-code" inputmode="numeric"></label>
<button type="submit">Sign in</button></form>`);
}

function consentHtml(details: Interaction): string {
  const client = String(details.params.client_id ?? '');
  return page('consent', 'Allow access?', `<p>${esc(client)} asks to connect to databases on your behalf
(${esc(String(details.params.scope ?? ''))}).</p>
<form id="consent" method="post" action="/interaction/${esc(details.uid)}/consent">
<button type="submit" name="decision" value="allow">Allow</button>
<button type="submit" name="decision" value="deny">Deny</button></form>`);
}

function errorHtml(title: string, message: string): string {
  return page('error', title, `<p class="error">${esc(message)}</p>`);
}

/** The fields of a device code or refresh token that say how the person signed in. */
interface GrantSource {
  amr?: string[];
  acr?: string;
  sessionUid?: string;
  sid?: string;
}

type Ctx = { body: unknown; type?: string; oidc: { client?: { clientId: string } } };

async function deviceInputPage(ctx: Ctx, form: string, _out: unknown, err?: { name?: string; userCode?: string }) {
  const msg = !err ? 'Enter the code shown by hoopctl.'
    : err.userCode || err.name === 'NoCodeError' ? 'That code is not valid. Check it and try again.'
    : err.name === 'AbortedError' ? 'The sign-in request was cancelled.'
    : 'Your request could not be processed.';
  ctx.body = page(err ? 'device-error' : 'device-input', 'Sign in a device', `<p${err ? ' class="error"' : ''}>${esc(msg)}</p>${form}
<button type="submit" form="op.deviceInputForm">Continue</button>`);
}

async function deviceConfirmPage(ctx: Ctx, form: string, client: { clientId: string }, _info: unknown, userCode: string) {
  ctx.body = page('device-confirm', 'Confirm device', `<p>${esc(client.clientId)} shows the code <code>${esc(userCode)}</code>.
If you did not start this, press Abort.</p>${form}
<button type="submit" form="op.deviceConfirmForm">Continue</button>
<button type="submit" form="op.deviceConfirmForm" name="abort" value="yes">Abort</button>`);
}

async function deviceSuccessPage(ctx: Ctx) {
  ctx.body = page('device-success', 'Signed in', '<p>You can close this page and return to your terminal.</p>');
}

async function errorPage(ctx: Ctx, out: Record<string, unknown>) {
  ctx.type = 'html';
  const text = typeof out.error_description === 'string' ? out.error_description : String(out.error ?? 'error');
  ctx.body = errorHtml('Something went wrong', text);
}

// ---------------------------------------------------------------------------------------------------
// A scripted browser: cookies, redirects and HTML forms, nothing else. It reads each page's
// data-page marker and submits the form a person would, so the provider's xsrf and cookie checks
// run for real.

interface Loaded {
  url: string;
  status: number;
  html: string;
}

class Browser {
  readonly #cookies = new Map<string, string>();
  constructor(readonly origin: string) {}

  async approveDevice(userCode: string, email: string, password: string, deny: boolean, otp?: string): Promise<void> {
    let at = await this.#go('GET', `${this.origin}/device`);
    let denied = false;
    for (let steps = 0; steps < 10; steps++) {
      const kind = /<body data-page="([a-z-]+)"/.exec(at.html)?.[1];
      switch (kind) {
        case 'device-input':
          at = await this.#submit(at, 'op.deviceInputForm', { user_code: userCode });
          break;
        case 'device-confirm':
          at = await this.#submit(at, 'op.deviceConfirmForm', {});
          break;
        case 'login':
          if (steps > 0 && /class="error"/.test(at.html)) throw new Error(`login refused: ${pageMessage(at.html)}`);
          at = await this.#submit(at, 'login', { email, password, ...(otp ? { otp } : {}) });
          break;
        case 'consent':
          at = await this.#submit(at, 'consent', { decision: deny ? 'deny' : 'allow' });
          denied = deny;
          break;
        case 'device-success':
          return;
        case 'device-error':
          // After "Deny" the provider shows the code page again with its "cancelled" notice.
          if (denied) return;
          throw new Error(`device approval failed: ${pageMessage(at.html)}`);
        case 'error':
          throw new Error(`device approval failed: ${pageMessage(at.html)}`);
        default:
          throw new Error(`device approval reached an unexpected page (HTTP ${at.status} at ${new URL(at.url).pathname})`);
      }
    }
    throw new Error('device approval did not finish');
  }

  async #submit(at: Loaded, formId: string, values: Record<string, string>): Promise<Loaded> {
    const form = new RegExp(`<form[^>]*id="${formId.replace('.', '\\.')}"[^>]*>([\\s\\S]*?)</form>`).exec(at.html);
    if (!form) throw new Error(`form ${formId} not found on ${new URL(at.url).pathname}`);
    const action = /action="([^"]*)"/.exec(form[0])?.[1] ?? at.url;
    const fields: Record<string, string> = {};
    for (const input of form[1].matchAll(/<input\b[^>]*>/g)) {
      const name = /name="([^"]*)"/.exec(input[0])?.[1];
      const value = /value="([^"]*)"/.exec(input[0])?.[1];
      if (name && /type="hidden"/.test(input[0])) fields[name] = unescapeHtml(value ?? '');
    }
    return this.#go('POST', new URL(unescapeHtml(action), at.url).href, { ...fields, ...values });
  }

  async #go(method: 'GET' | 'POST', url: string, form?: Record<string, string>): Promise<Loaded> {
    for (let hops = 0; hops < 10; hops++) {
      const headers: Record<string, string> = { accept: 'text/html' };
      if (this.#cookies.size) headers.cookie = [...this.#cookies].map(([k, v]) => `${k}=${v}`).join('; ');
      let body: string | undefined;
      if (form) {
        body = new URLSearchParams(form).toString();
        headers['content-type'] = 'application/x-www-form-urlencoded';
      }
      const res = await request(url, { method, headers, body });
      this.#keepCookies(res.headers['set-cookie']);
      const location = res.headers.location;
      if (res.statusCode >= 300 && res.statusCode < 400 && typeof location === 'string') {
        await res.body.dump();
        url = new URL(location, url).href;
        method = 'GET';
        form = undefined;
        continue;
      }
      return { url, status: res.statusCode, html: await res.body.text() };
    }
    throw new Error('too many redirects');
  }

  #keepCookies(header: string | string[] | undefined): void {
    for (const line of header === undefined ? [] : Array.isArray(header) ? header : [header]) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      if (eq < 1) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = attrs.some((a) => /^\s*expires=/i.test(a) && Date.parse(a.split('=')[1]) < Date.now())
        || attrs.some((a) => /^\s*max-age=\s*0\s*$/i.test(a));
      if (expired || value === '') this.#cookies.delete(name);
      else this.#cookies.set(name, value);
    }
  }
}

function unescapeHtml(s: string): string {
  return s.replace(/&(amp|lt|gt|quot|#39|#x27);/g, (_m, e: string) =>
    ({ amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'", '#x27': "'" })[e] as string);
}

function pageMessage(html: string): string {
  const m = /<p class="error">([\s\S]*?)<\/p>/.exec(html) ?? /<p[^>]*>([\s\S]*?)<\/p>/.exec(html);
  return m ? unescapeHtml(m[1].replace(/<[^>]+>/g, '').trim()) : 'no message';
}

// ---------------------------------------------------------------------------------------------------
// Token endpoint calls, as the CLI and CI jobs make them.

/** RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding. */
function basicAuth(id: string, secret: string): string {
  const enc = (s: string) => encodeURIComponent(s).replace(/%20/g, '+');
  return `Basic ${Buffer.from(`${enc(id)}:${enc(secret)}`).toString('base64')}`;
}

async function formPost(url: string, form: Record<string, string>, authorization?: string) {
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
  if (authorization) headers.authorization = authorization;
  const res = await request(url, { method: 'POST', headers, body: new URLSearchParams(form).toString() });
  const text = await res.body.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    // Non-JSON error pages fall through to the status check of the caller.
  }
  return { status: res.statusCode, json };
}

async function tokenRequest(issuer: string, form: Record<string, string>, authorization?: string) {
  const { status, json } = await formPost(`${issuer}/token`, form, authorization);
  if (status !== 200 || typeof json.access_token !== 'string') {
    throw new Error(`token request (${form.grant_type}) failed: HTTP ${status} ${oauthError(json)}`);
  }
  return json;
}

function oauthError(json: Record<string, unknown>): string {
  return [json.error, json.error_description].filter((x) => typeof x === 'string').join(': ') || 'no error body';
}

/**
 * oidc-provider prints one "Unsupported runtime" warning on Node 20 when it is first imported. Node 20
 * is what this project targets and the warning only confuses demo users, so that one line is dropped.
 */
async function importQuietly(): Promise<typeof import('oidc-provider')> {
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    if (!String(args[0]).includes('Unsupported runtime')) warn(...args);
  };
  try {
    return await import('oidc-provider');
  } finally {
    console.warn = warn;
  }
}
