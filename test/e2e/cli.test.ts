// The two binaries as an operator and a CI job meet them: `hoopctl connect` against an agent that is
// down (and then comes up), and `hoop-agent --config` with a broken config file.
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { psql, run, useStack } from '../harness/stack.js';
import { Child } from '../harness/child.js';
import { freePort } from '../../shared/net.js';
import { resolveConfig } from '../../agent/src/config.js';
import { startAgent, type RunningAgent } from '../../agent/src/agent.js';
import { silentLogger } from '../../agent/src/log.js';

const s = useStack({ patients: 50 });
const ROOT = path.resolve(import.meta.dirname, '../..');
const TSX = path.join(ROOT, 'node_modules/.bin/tsx');


describe('hoopctl connect while the agent is down', () => {
  const children: Child[] = [];
  const agents: RunningAgent[] = [];
  afterAll(async () => {
    for (const c of children) await c.stop();
    for (const a of agents) await a.stop();
  });

  it(
    'names the URL it could not reach, keeps its port open with a readable FATAL, and connects once the agent is up',
    async () => {
      const stack = s.get();
      const agentPort = await freePort();
      const localPort = await freePort();
      const token = await stack.token();
      const agentUrl = `ws://127.0.0.1:${agentPort}`;
      const cli = new Child(TSX, ['cli/src/main.ts', 'connect', 'demo-db', '--agent', agentUrl, '--token', token, '--port', String(localPort)], {
        ...process.env,
        CI: 'true',
      });
      children.push(cli);

      // 1. It says which URL it could not reach (stderr), and still listens.
      await cli.waitFor(() => /listening on 127\.0\.0\.1:\d+/.test(cli.stderr), 'the listening line', 45_000);
      expect(cli.stderr).toContain(`could not reach the agent at ${agentUrl}/tunnel/demo-db`);
      expect(cli.stdout).not.toContain('error');

      // 2. A client on the local port gets a FATAL about the agent, not "connection refused".
      const refused = await psql({ ...stack, listener: { ...stack.listener, port: localPort } }, ['-c', 'SELECT 1'], {
        env: { ...process.env, PGPASSWORD: '', PGCONNECT_TIMEOUT: '30' },
        timeoutMs: 40_000,
      });
      expect(refused.code).toBe(2);
      expect(refused.stderr).toMatch(/FATAL: +hoopctl: .*agent/);
      expect(refused.stderr).toContain(agentUrl);
      expect(refused.stderr).not.toMatch(/Connection refused/i);

      // 3. The agent comes up on that port: the same hoopctl process reconnects on its own.
      const config = await resolveConfig(
        {
          listen: `127.0.0.1:${agentPort}`,
          identity: { issuers: [{ issuer: stack.issuer.issuer, audience: stack.issuer.audience }] },
          connections: {
            'demo-db': {
              postgres: { host: stack.pg.host, port: stack.pg.port, database: 'clinic', user: 'gw_agent', passwordEnv: 'PW' },
              access: [{ groups: ['data-eng'] }],
            },
          },
        },
        { PW: stack.agentDbPassword },
      );
      agents.push(await startAgent({ config, log: silentLogger }));
      // hoopctl backs off up to 15 s between attempts and a local client waits 10 s for the tunnel.
      const deadline = performance.now() + 20_000;
      let last = refused;
      while (performance.now() < deadline) {
        last = await psql({ ...stack, listener: { ...stack.listener, port: localPort } }, ['-At', '-c', 'SELECT current_user, count(*) FROM patients GROUP BY 1'], {
          env: { ...process.env, PGPASSWORD: '', PGCONNECT_TIMEOUT: '30' },
          timeoutMs: 40_000,
        });
        if (last.code === 0) break;
        await new Promise((r) => setTimeout(r, 500));
      }
      expect(last.stderr, `hoopctl stderr:\n${cli.stderr}`).toBe('');
      expect(last.stdout.trim()).toBe('gw_agent|50');
    },
    150_000,
  );
});

describe('hoop-agent --config with a broken file', () => {
  let dir: string;
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const base = (extra: { top?: string; postgres?: string; connection?: string } = {}) => `
listen: 127.0.0.1:0
dataDir: DATA_DIR
${extra.top ?? ''}
identity:
  issuers:
    - { issuer: "https://login.example.com", audience: hoop-agent }
connections:
  prod-db:
    postgres:
      host: 127.0.0.1
      port: 5432
      database: clinic
      user: gw_agent
      passwordEnv: HOOP_E2E_DB_PASSWORD
${extra.postgres ?? ''}
    access:
      - { groups: [data-eng] }
${extra.connection ?? ''}
`;

  async function agentWith(yaml: string, env: NodeJS.ProcessEnv) {
    dir ??= await mkdtemp(path.join(os.tmpdir(), 'hoop-e2e-agent-'));
    const file = path.join(dir, `agent-${Math.random().toString(36).slice(2)}.yaml`);
    await writeFile(file, yaml.replace('DATA_DIR', path.join(dir, 'data')));
    return { file, env: { ...process.env, HOOP_E2E_DB_PASSWORD: undefined, ...env } };
  }

  it.each([
    { desc: 'a misspelled top-level field', yaml: base({ top: 'dataDri: /tmp/x' }), field: 'dataDri' },
    { desc: 'a misspelled field of postgres', yaml: base({ postgres: '      sslmdoe: verify-full' }), field: 'sslmdoe', where: 'connections.prod-db.postgres' },
    { desc: 'a misspelled field of a connection', yaml: base({ connection: '    approvl:\n      timeout: 15m' }), field: 'approvl', where: 'connections.prod-db' },
    { desc: 'a misspelled masking strategy', yaml: base({ connection: '    masking:\n      public.patients.ssn: redcat' }), field: 'public.patients.ssn', where: 'connections.prod-db.masking' },
  ])('$desc → exit 2, one line naming $field', async ({ yaml, field, where }) => {
    const { file, env } = await agentWith(yaml, { HOOP_E2E_DB_PASSWORD: 'x' });
    const r = await run(TSX, ['agent/src/main.ts', '--config', file], { cwd: ROOT, env, timeoutMs: 50_000 });
    expect(r.code).toBe(2);
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^hoop-agent: config: /);
    expect(lines[0]).toContain(field);
    if (where) expect(lines[0]).toContain(where);
  }, 60_000);

  it('a passwordEnv variable that is not set → exit 2 naming it', async () => {
    const { file, env } = await agentWith(base(), {});
    const r = await run(TSX, ['agent/src/main.ts', '--config', file], { cwd: ROOT, env, timeoutMs: 50_000 });
    expect(r.code).toBe(2);
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    expect(lines).toEqual(['hoop-agent: config: connections.prod-db.postgres.passwordEnv: environment variable HOOP_E2E_DB_PASSWORD is not set']);
  }, 60_000);

  it('the same file with the variable set starts the agent (control), logging JSON lines at info by default', async () => {
    const { file, env } = await agentWith(base(), { HOOP_E2E_DB_PASSWORD: 'x' });
    const agent = new Child(TSX, ['agent/src/main.ts', '--config', file], env);
    try {
      await agent.waitFor(() => agent.stderr.includes('agent listening'), 'agent listening', 45_000);
      expect(agent.stderr).not.toContain('config:');
    } finally {
      await agent.stop();
    }
    expect(await agent.exited).toEqual({ code: 0, signal: null });
    const records = agent.stderr.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { level: string; msg: string; ts: string });
    expect(records.find((r) => r.msg === 'agent listening')).toMatchObject({ level: 'info', ts: expect.any(String) });
    expect(records.some((r) => r.level === 'debug')).toBe(false);
  }, 60_000);

  it('--log-format text prints readable lines; another format is exit 2', async () => {
    const { file, env } = await agentWith(base(), { HOOP_E2E_DB_PASSWORD: 'x' });
    const agent = new Child(TSX, ['agent/src/main.ts', '--config', file, '--log-format', 'text'], env);
    try {
      await agent.waitFor(() => agent.stderr.includes('agent listening'), 'agent listening', 45_000);
    } finally {
      await agent.stop();
    }
    expect(agent.stderr).toMatch(/^INFO  agent listening  url=ws:\/\/127\.0\.0\.1:\d+ connections=\["prod-db"\]$/m);
    expect(agent.stderr).not.toMatch(/^\{/m);
    const bad = await run(TSX, ['agent/src/main.ts', '--config', file, '--log-format', 'xml'], { cwd: ROOT, env, timeoutMs: 50_000 });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('hoop-agent: --log-format: expected json or text, got "xml"');
  }, 90_000);
});
