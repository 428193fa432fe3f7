// `hoopctl login`: a person at a terminal signs in with the device flow; a job (no TTY, or --ci) uses
// the first machine credential it has and never waits for anyone.
import { spawn } from 'node:child_process';
import React from 'react';
import type { Command } from 'commander';
import { Cancelled, ExitCode, UserError } from '../errors.js';
import type { Output } from '../output.js';
import { deviceLogin, describeIdentity, machineLogin, saveLogin, type Identity } from '../services/credentials.js';
import type { Clock, DeviceStatus } from '../services/oidc-client.js';
import { DEFAULT_AUDIENCE, DEFAULT_CLIENT_ID, loadSettings, type Env, type Settings } from '../services/settings.js';
import { TokenStore, type LoginMethod, type StoreKind } from '../services/token-store.js';
import { deviceCodeLines, formatDuration, LoginScreen, statusLine, type LoginView } from '../ui/login.js';

export interface LoginOptions {
  issuer?: string;
  clientId?: string;
  agent?: string;
  ci?: boolean;
  device?: boolean;
  idTokenFile?: string;
  audience?: string;
  token?: string;
  /** `--no-browser` sets this to false. */
  browser?: boolean;
}

/** What tests and embedders can replace. */
export interface LoginDeps {
  env?: Env;
  clock?: Clock;
  /** Is a person at this terminal? Default: stdin and stderr are TTYs and CI is unset. */
  personPresent?: boolean;
  /** Opens a URL in a browser; returns false when it could not. */
  openBrowser?: (url: string) => boolean;
  signal?: AbortSignal;
}

export interface LoginResult {
  issuer: string;
  method: LoginMethod;
  identity: Identity;
  expiresAt: string | null;
  store: StoreKind;
  location: string;
  agent: string | null;
}

export function registerLogin(program: Command, run: (fn: (out: Output) => Promise<void>) => Promise<void>): void {
  program
    .command('login')
    .description('sign in: the device flow for people; a workload identity, client credentials or a token for CI')
    .option('--issuer <url>', 'OIDC issuer (env HOOPCTL_ISSUER; remembered)')
    .option('--client-id <id>', `public client id of hoopctl at the issuer (default ${DEFAULT_CLIENT_ID}; remembered)`)
    .option('--agent <url>', 'agent URL, e.g. wss://hoop.example.com:8443 (env HOOPCTL_AGENT; remembered)')
    .option('--ci', 'non-interactive: never prompt or wait for a person (implied without a TTY)')
    .option('--device', 'use the device flow even without a TTY (prints the code on stderr)')
    .option('--token <token>', 'store this access token as it is (env HOOPCTL_TOKEN)')
    .option('--id-token-file <file>', 'a workload identity token (JWT) issued by the CI platform')
    .option('--audience <aud>', `audience to request for a GitHub Actions ID token (default ${DEFAULT_AUDIENCE}; remembered)`)
    .option('--no-browser', 'do not try to open a browser')
    .addHelpText(
      'after',
      `
Examples:
  $ hoopctl login --issuer https://login.example.com --agent wss://hoop.example.com:8443
  $ hoopctl login                                  # later logins reuse the remembered issuer
  $ hoopctl login --ci                             # in CI: first of --token/HOOPCTL_TOKEN, --id-token-file,
                                                   #   the GitHub Actions ID token, HOOPCTL_CLIENT_ID/SECRET

Tokens go to the OS keychain, or to $XDG_CONFIG_HOME/hoopctl/credentials.json (mode 0600) when no
keychain is running; HOOPCTL_TOKEN_STORE=file|keychain forces one. Client secrets are never stored.`,
    )
    .action((opts: LoginOptions) => run((out) => login(opts, out).then(() => undefined)));
}

export async function login(opts: LoginOptions, out: Output, deps: LoginDeps = {}): Promise<LoginResult> {
  const env = deps.env ?? process.env;
  const settings = await loadSettings(env);
  const issuer = opts.issuer ?? env.HOOPCTL_ISSUER ?? settings.issuer;
  const clientId = opts.clientId ?? settings.clientId ?? DEFAULT_CLIENT_ID;
  const agent = opts.agent ?? env.HOOPCTL_AGENT ?? settings.agent;
  const audience = opts.audience ?? env.HOOPCTL_AUDIENCE ?? settings.audience ?? DEFAULT_AUDIENCE;
  const resource = env.HOOPCTL_RESOURCE ?? settings.resource;
  const explicitToken = opts.token ?? env.HOOPCTL_TOKEN;
  const personPresent = deps.personPresent ?? (Boolean(process.stdin.isTTY && process.stderr.isTTY) && !env.CI);
  const person = !opts.ci && !explicitToken && (opts.device || personPresent);

  const remember: Partial<Settings> = { clientId: opts.clientId, agent: opts.agent, audience: opts.audience };
  let stored;
  if (person) {
    if (!issuer) {
      throw new UserError('NO_ISSUER', 'no issuer to sign in to', {
        hint: 'Pass --issuer https://login.example.com (remembered for next time) or set HOOPCTL_ISSUER.',
        exitCode: ExitCode.Usage,
      });
    }
    stored = await runDeviceFlow({ issuer, clientId, resource, opts, out, deps, env });
    remember.issuer = issuer;
  } else {
    stored = await machineLogin({ env, flagToken: opts.token, idTokenFile: opts.idTokenFile, issuer, audience, resource, now: deps.clock?.now });
    if (opts.issuer) remember.issuer = opts.issuer;
  }

  const store = new TokenStore({ env, onNote: (l) => out.info(l) });
  const saved = await saveLogin(stored, { store, env, settings: remember });
  const identity = describeIdentity(stored);
  const result: LoginResult = {
    issuer: stored.issuer,
    method: stored.method,
    identity,
    expiresAt: stored.expiresAt !== undefined ? new Date(stored.expiresAt).toISOString() : null,
    store: saved.store,
    location: saved.location,
    agent: agent ?? null,
  };
  out.result(result, () => loginText(result, deps.clock?.now() ?? Date.now()));
  return result;
}

const METHOD_TEXT: Record<LoginMethod, string> = {
  device: 'the device flow',
  client_credentials: 'client credentials',
  workload_identity: 'a workload identity token',
  token: 'the token given',
};

function loginText(r: LoginResult, now: number): string {
  const who = r.identity.email ?? r.identity.clientId ?? r.identity.subject ?? 'an unnamed identity';
  const sub = r.identity.subject && r.identity.subject !== who ? ` (${r.identity.subject})` : '';
  const exp = r.expiresAt ? `; the access token expires in ${formatDuration((Date.parse(r.expiresAt) - now) / 1000)}` : '';
  const lines = [`Logged in to ${r.issuer} as ${who}${sub} with ${METHOD_TEXT[r.method]}${exp}.`];
  lines.push(`Tokens are in the ${r.store === 'keychain' ? 'OS keychain' : `file ${r.location}`}.`);
  if (!r.agent) lines.push('No agent URL yet: pass --agent wss://host:port to `hoopctl login` or `hoopctl connect`.');
  return lines.join('\n');
}

async function runDeviceFlow(a: {
  issuer: string;
  clientId: string;
  resource?: string;
  opts: LoginOptions;
  out: Output;
  deps: LoginDeps;
  env: Env;
}): Promise<Awaited<ReturnType<typeof deviceLogin>>> {
  const { out, deps, env, opts } = a;
  const useInk = out.interactive && (deps.personPresent ?? true) && Boolean(process.stderr.isTTY);
  const view: LoginView = { issuer: a.issuer, status: 'starting' };
  let ink: { rerender: (n: React.ReactNode) => void; unmount: () => void; waitUntilExit?: () => Promise<unknown> } | undefined;
  if (useInk) {
    const { render } = await import('ink');
    ink = render(React.createElement(LoginScreen, { view: { ...view } }), { stdout: process.stderr, patchConsole: false });
  }
  const paint = () => ink?.rerender(React.createElement(LoginScreen, { view: { ...view } }));

  // Ctrl-C during the wait ends the login quietly with nothing stored.
  const ac = new AbortController();
  const onSigint = () => ac.abort(new Cancelled('login cancelled'));
  process.once('SIGINT', onSigint);
  deps.signal?.addEventListener('abort', () => ac.abort(deps.signal?.reason), { once: true });

  const wantBrowser = opts.browser !== false && !env.HOOPCTL_NO_BROWSER && (deps.personPresent ?? Boolean(process.stdin.isTTY));
  try {
    const login = await deviceLogin({
      issuer: a.issuer,
      clientId: a.clientId,
      resource: a.resource,
      clock: deps.clock,
      signal: ac.signal,
      onCode: (auth) => {
        Object.assign(view, {
          verificationUri: auth.verificationUri,
          verificationUriComplete: auth.verificationUriComplete,
          userCode: auth.userCode,
          expiresAt: auth.expiresAt,
          interval: auth.interval,
        });
        if (wantBrowser) {
          const opened = (deps.openBrowser ?? openBrowser)(auth.verificationUriComplete ?? auth.verificationUri);
          view.browser = opened ? 'opened' : 'failed';
        } else view.browser = 'off';
        if (ink) paint();
        else for (const l of deviceCodeLines(view)) out.info(l);
      },
      onStatus: (s: DeviceStatus) => {
        view.status = s.state;
        if ('interval' in s) view.interval = s.interval;
        if (ink) paint();
        else {
          const line = statusLine(s);
          if (line) out.info(line);
        }
      },
    });
    const who = describeIdentity(login);
    view.detail = who.email ?? who.subject;
    if (ink) paint();
    return login;
  } catch (err) {
    if (ac.signal.aborted && ac.signal.reason instanceof Cancelled) throw ac.signal.reason;
    throw err;
  } finally {
    process.off('SIGINT', onSigint);
    ink?.unmount();
  }
}

/** xdg-open / open / start, detached; any failure is ignored (the URL is on screen anyway). */
function openBrowser(url: string): boolean {
  // Without a display xdg-open falls back to a text browser, which has no business in this terminal.
  if (process.platform === 'linux' && !process.env.DISPLAY && !process.env.WAYLAND_DISPLAY) return false;
  const [cmd, args] =
    process.platform === 'darwin' ? ['open', [url]]
    : process.platform === 'win32' ? ['cmd', ['/c', 'start', '""', url.replace(/&/g, '^&')]]
    : ['xdg-open', [url]];
  try {
    const child = spawn(cmd, args, { stdio: 'ignore', detached: true });
    child.on('error', () => {});
    child.unref();
    return child.pid !== undefined;
  } catch {
    return false;
  }
}
