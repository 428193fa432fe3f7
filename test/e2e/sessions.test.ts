// The audit trail as users read it: statements through the tunnel show up in /api/sessions and in
// `hoopctl sessions`, reviewers see everyone, others only themselves.
import { describe, expect, it } from 'vitest';
import path from 'node:path';
import { request } from 'undici';
import { run, tunnelClient, useStack } from '../harness/stack.js';

const s = useStack();
const CLI = ['--import', 'tsx', path.resolve('cli/src/main.ts')];

async function api(pathname: string, token: string) {
  const url = s.get().agent.url.replace(/^ws/, 'http') + pathname;
  const res = await request(url, { headers: { authorization: `Bearer ${token}` } });
  return { status: res.statusCode, body: (await res.body.json()) as any };
}

describe('session history', () => {
  it('records a session with its statements, decisions and results, readable by its owner and reviewers', async () => {
    const stack = s.get();
    const c = await tunnelClient(stack, { application_name: 'nightly-etl' });
    await c.query('SELECT count(*) FROM visits');
    await expect(c.query('DROP TABLE visits')).rejects.toMatchObject({ code: '42501' });
    await c.query({ text: 'SELECT full_name FROM patients WHERE id = $1', values: [7] });
    await c.end();
    await new Promise((r) => setTimeout(r, 200));

    const mine = await stack.token();
    const list = await api('/api/sessions?connection=demo-db&limit=5', mine);
    expect(list.status).toBe(200);
    const sess = list.body.sessions.find((x: any) => x.applicationName === 'nightly-etl');
    expect(sess).toMatchObject({ sub: 'ci-nightly', connection: 'demo-db', statements: 3 });
    expect(sess.decisions.sort()).toEqual(['allow', 'block']);

    const one = await api(`/api/sessions/${sess.sessionId}`, mine);
    const types = one.body.events.map((e: any) => e.type);
    expect(types[0]).toBe('session_start');
    expect(types.at(-1)).toBe('session_end');
    const stmts = one.body.events.filter((e: any) => e.type === 'statement').map((e: any) => [e.data.decision, e.data.rule, e.data.sql]);
    expect(stmts).toEqual([
      ['allow', 'P5.read', 'SELECT count(*) FROM visits'],
      ['block', 'P3.ddl.drop', 'DROP TABLE visits'],
      // reads the masked table: recorded without literals, parameters redacted
      ['allow', 'P5.read', 'SELECT full_name FROM patients WHERE id = $1'],
    ]);
    const params = one.body.events.filter((e: any) => e.type === 'statement').at(-1).data.params;
    expect(params).toEqual(['***']);
    expect(one.body.events.filter((e: any) => e.type === 'statement_result').map((e: any) => e.data.sqlstate)).toEqual(['00000', '00000']);

    // A reviewer (group compliance) sees it too; another non-reviewer does not.
    const reviewer = await stack.issuer.clientCredentialsToken('approver-bot', 'approver-bot-secret');
    expect((await api(`/api/sessions/${sess.sessionId}`, reviewer)).status).toBe(200);
    expect((await api('/api/sessions?user=approver-bot', mine)).status).toBe(403);
    expect((await api('/api/sessions', 'not-a-token')).status).toBe(401);
  });

  it('`hoopctl sessions --json` lists them; `sessions show` prints the statements', async () => {
    const stack = s.get();
    const c = await tunnelClient(stack, { application_name: 'cli-check' });
    await c.query('SELECT 42 AS answer');
    await c.end();
    await new Promise((r) => setTimeout(r, 200));
    const env = { ...process.env, HOOPCTL_TOKEN: await stack.token(), HOOPCTL_AGENT: stack.agent.url, XDG_CONFIG_HOME: '/tmp/hoopctl-test-none' };
    const listed = await run('node', [...CLI, 'sessions', '--json', '--limit', '20'], { env });
    expect(listed.code).toBe(0);
    const page = JSON.parse(listed.stdout);
    const sess = page.sessions.find((x: any) => x.applicationName === 'cli-check');
    expect(sess).toBeTruthy();
    const shown = await run('node', [...CLI, 'sessions', 'show', sess.sessionId], { env });
    expect(shown.code).toBe(0);
    expect(shown.stdout).toMatch(/allow\s+P5\.read\s+SELECT 42 AS answer/);
    expect(shown.stdout).toMatch(/→ 00000 rows=1/);
  }, 60_000);
});
