// The CLI as a newcomer meets it against a real agent (issue 17): an expired token is one "run hoopctl
// login", not two (rough edge 10); Ctrl-C on `hoopctl connect` exits 130 run directly, as under npm, and
// SIGTERM 0 (rough edge 9, README "Exit codes").
import { afterAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { run, useStack } from '../harness/stack.js';
import { Child } from '../harness/child.js';
import { baseClaims, signRs256 } from '../harness/oidc.js';

const s = useStack({ patients: 50 });
const ROOT = path.resolve(import.meta.dirname, '../..');
const cli = (args: string[], env: NodeJS.ProcessEnv) => run(process.execPath, ['--import', 'tsx', 'cli/src/main.ts', ...args], { cwd: ROOT, env: { ...process.env, CI: 'true', ...env }, timeoutMs: 60_000 });

describe('an expired token', () => {
  it('is refused with exit 3 and one line saying to run hoopctl login', async () => {
    const { issuer, agent } = s.get();
    const now = Math.floor(Date.now() / 1000);
    const expired = signRs256({ alg: 'RS256', typ: 'at+jwt', kid: issuer.privateJwk.kid }, { ...baseClaims(issuer, now - 3600), groups: ['compliance'], exp: now - 600 }, issuer.privateJwk);
    for (const args of [['sessions'], ['approvals']]) {
      const r = await cli(args, { HOOPCTL_AGENT: agent.url, HOOPCTL_TOKEN: expired });
      expect(r.code).toBe(3);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/^error: Your access token has expired/);
      expect(r.stderr.match(/hoopctl login/g), r.stderr).toHaveLength(1);
    }
  }, 120_000);
});

describe('hoopctl connect stopped by a signal', () => {
  const children: Child[] = [];
  afterAll(async () => {
    for (const c of children) await c.stop();
  });
  it.each([
    { signal: 'SIGINT' as const, code: 130 },
    { signal: 'SIGTERM' as const, code: 0 },
  ])('$signal: closes the tunnel, prints a stopped event, exits $code', async ({ signal, code }) => {
    const stack = s.get();
    const c = new Child(process.execPath, ['--import', 'tsx', 'cli/src/main.ts', '--json', 'connect', 'demo-db', '--agent', stack.agent.url, '--token', await stack.token()], { ...process.env, CI: 'true' });
    children.push(c);
    await c.waitFor(() => c.stdout.includes('"type":"listening"'), 'the listening event', 60_000);
    c.signal(signal);
    expect(await c.exited, c.stderr).toEqual({ code, signal: null });
    expect(c.stdout.trim().split('\n').at(-1)).toBe(JSON.stringify({ type: 'stopped', signal }));
  }, 90_000);
});
