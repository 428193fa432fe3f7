// The real binary (tsx + main), spawned asynchronously (the issuer runs in this process), with a private
// HOME/XDG_CONFIG_HOME: exit codes, the one-line refusal, and exactly one JSON document with --json.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { access } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { useIssuer } from '../harness/oidc.js';
import { cliMain, runCli, tempHome } from './cli-harness.js';
import { scriptedServer } from './helpers.js';

const issuer = useIssuer();
let home: Awaited<ReturnType<typeof tempHome>>;
beforeAll(async () => (home = await tempHome()));
afterAll(() => home.cleanup());

const oneDoc = (stdout: string) => {
  const lines = stdout.trim().split('\n');
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]) as Record<string, unknown>;
};

describe('hoopctl login/whoami/logout as a process', { timeout: 240_000 }, () => {
  it('with nothing usable, `login --ci` and a TTY-less `login` exit 3 with one line; --json gives one error document', async () => {
    const [ci, noTty, json] = await Promise.all([
      runCli(['login', '--ci'], home.env),
      runCli(['login'], home.env), // stdin is not a TTY: machine mode, no prompt, no hang
      runCli(['--json', 'login', '--ci'], home.env),
    ]);
    for (const r of [ci, noTty]) {
      expect(r.code).toBe(3);
      expect(r.stdout).toBe('');
      expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/^error: no credential for a non-interactive login: pass --token or set HOOPCTL_TOKEN, .*HOOPCTL_CLIENT_ID and HOOPCTL_CLIENT_SECRET\n$/);
    }
    expect(json.code).toBe(3);
    expect(oneDoc(json.stdout)).toMatchObject({ error: { code: 'NOT_AUTHENTICATED' } });
  });

  it('client credentials from the environment, then whoami and logout, each --json run printing one document', async () => {
    const agent = await scriptedServer((req) =>
      req.url === '/api/whoami' ? { status: 200, json: { identity: { sub: 'ci-nightly', groups: ['data-eng'], issuer: issuer.current.issuer }, connections: [{ name: 'prod-db', allowed: true }] } } : undefined,
    );
    try {
      const env = { ...home.env, CI: 'true', HOOPCTL_CLIENT_ID: 'ci-nightly', HOOPCTL_CLIENT_SECRET: 'ci-nightly-secret' };
      const login = await runCli(['--json', 'login', '--ci', '--issuer', issuer.current.issuer, '--agent', agent.url.replace('http:', 'ws:')], env);
      expect(login.code, login.stderr).toBe(0);
      expect(oneDoc(login.stdout)).toMatchObject({ method: 'client_credentials', store: 'file', identity: { clientId: 'ci-nightly', groups: ['data-eng'] } });
      await access(join(home.env.XDG_CONFIG_HOME, 'hoopctl', 'credentials.json'));

      const who = await runCli(['--json', 'whoami'], env);
      expect(who.code, who.stderr).toBe(0);
      expect(oneDoc(who.stdout)).toMatchObject({
        identity: { issuer: issuer.current.issuer, clientId: 'ci-nightly', method: 'client_credentials' },
        agent: { status: 'ok', connections: [{ name: 'prod-db', allowed: true }] },
      });
      expect(agent.seen[0].headers.authorization).toMatch(/^Bearer ey/);

      const out1 = await runCli(['logout'], env);
      expect(out1.code).toBe(0);
      expect(out1.stdout).toContain(`Removed the login for ${issuer.current.issuer} from`);
      const out2 = await runCli(['--json', 'logout'], env);
      expect(out2.code).toBe(0);
      expect(oneDoc(out2.stdout)).toMatchObject({ removed: [] });

      const after = await runCli(['whoami'], env);
      expect(after.code).toBe(3);
    } finally {
      await agent.close();
    }
  });

  it('a session bus without a secret service: the keychain fails fast and the file is used, with a note', async () => {
    const dbus = '/usr/bin/dbus-run-session';
    try {
      await access(dbus);
    } catch {
      return; // no dbus-run-session on this host
    }
    const env = { ...home.env, HOOPCTL_TOKEN: 'opaque-token' };
    const r = await runCli(['login', '--ci'], env, { wrap: [dbus, '--'] });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/the OS keychain is not usable \(.*\); keeping tokens in .*credentials\.json \(mode 0600\) instead/);
    expect(r.stdout).toContain('Tokens are in the file');
  });

  it('on a terminal (a pty from `script`): the ink screen shows URL, code and status, and the login completes', async () => {
    try {
      await access('/usr/bin/script');
    } catch {
      return; // util-linux `script` not installed
    }
    const tsx = join(import.meta.dirname, '../../node_modules/.bin/tsx');
    const cmd = `stty cols 100 rows 40; ${tsx} --tsconfig ${join(import.meta.dirname, '../../tsconfig.json')} ${await cliMain()} login --issuer ${issuer.current.issuer} --no-browser`;
    const child = spawn('script', ['-qfec', cmd, '/dev/null'], { env: { ...home.env, TERM: 'xterm' }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let approving: Promise<void> | undefined;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /Enter the code (?:\x1b\[[0-9;]*m)*([A-Z]{4}-[A-Z]{4})/.exec(out);
      if (m && !approving) approving = issuer.current.approveDeviceCode(m[1], 'carol@clinic.example');
    });
    const code = await new Promise<number | null>((r) => child.on('close', r));
    await approving;
    const plain = out.replace(/\x1b\[[0-9;?]*[ -/]*[@-~]/g, '');
    expect(code, plain).toBe(0);
    expect(plain).toContain(`1. Open ${issuer.current.issuer}/device`);
    expect(plain).toMatch(/⧗ Waiting for you to approve in the browser…/);
    expect(plain).toContain('✔ Approved: carol@clinic.example');
    expect(plain).toContain(`Logged in to ${issuer.current.issuer} as carol@clinic.example (u-carol) with the device flow`);
  });
});
