// `hoopctl evidence build|verify|attest` against a real agent and its real store: sessions with PHI
// through the gateway, a bundle built from the data directory and from the agent, verify.mjs run with
// plain node in an empty directory, every tamper class of issue 14 detected with a line naming it, and
// no PHI value in any file of the bundle.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { pathToFileURL } from 'node:url';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { directQuery, nextPendingApproval, run, startExtraAgent, useStack, type ExtraAgent } from '../harness/stack.js';
import { checkpointBody, newSigningKeyPem, parseNote, parseCheckpointBody, signNote, signerFromPem } from '../../shared/audit/checkpoint.js';

const s = useStack({ patients: 50 });
const ROOT = path.resolve(import.meta.dirname, '../..');
const CLI = ['--import', 'tsx', path.join(ROOT, 'cli/src/main.ts')];
const tmp: string[] = [];
const reviewerToken = () => s.get().issuer.clientCredentialsToken('approver-bot', 'approver-bot-secret'); // group compliance

let dataDir: string;
let bundle: string;
let a: ExtraAgent | undefined;
const FROM = '2026-01-01T00:00:00Z';
const TO = '2100-01-01T00:00:00Z';

async function tempDir(tag: string): Promise<string> {
  const d = await mkdtemp(path.join(os.tmpdir(), `hoop-ev-${tag}-`));
  tmp.push(d);
  return d;
}

async function cli(args: string[], env: Record<string, string> = {}) {
  return run('node', [...CLI, ...args], { env: { ...process.env, XDG_CONFIG_HOME: '/tmp/hoopctl-test-none', ...env }, cwd: ROOT, timeoutMs: 120_000 });
}

async function build(out: string, extra: string[] = [], from = FROM, to = TO) {
  const r = await cli(['--json', 'evidence', 'build', '--from', from, '--to', to, '--data-dir', dataDir, '-o', out, ...extra]);
  expect(r.code, r.stdout + r.stderr).toBe(0);
  return JSON.parse(r.stdout) as { dir: string; manifestSha256: string; events: number };
}

/** `node verify.mjs` inside a copy of the bundle in an empty directory: no node_modules anywhere near. */
async function nodeVerify(dir: string, args: string[] = []) {
  return run(process.execPath, ['verify.mjs', ...args], { cwd: dir, env: { PATH: process.env.PATH ?? '' } });
}

async function copyOf(dir: string, tag: string): Promise<string> {
  const d = path.join(await tempDir(tag), 'bundle');
  await cp(dir, d, { recursive: true });
  return d;
}

async function allFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const n of await readdir(dir)) {
    const p = path.join(dir, n);
    if ((await stat(p)).isDirectory()) out.push(...(await allFiles(p)));
    else out.push(p);
  }
  return out;
}

beforeAll(async () => {
  dataDir = await tempDir('data');
  a = await startExtraAgent(s.get(), { agentId: 'agent-ev', dataDir });
  const c = new pg.Client({ host: a.listener.host, port: a.listener.port, user: 'noop', database: 'demo-db' });
  await c.connect();
  await c.query('SELECT id, ssn, mrn, email, phone, date_of_birth FROM patients ORDER BY id LIMIT 20');
  await c.query('SELECT count(*) FROM visits');
  await expect(c.query('DROP TABLE visits')).rejects.toMatchObject({ code: '42501' });
  await c.end();
  // A checkpoint in the middle, then more: the bundle then holds two checkpoints and a consistency proof.
  const r = await fetch(a.agent.url.replace(/^ws/, 'http') + '/api/audit/checkpoint', { method: 'POST', headers: { authorization: `Bearer ${await reviewerToken()}` } });
  expect(r.status).toBe(200);
  const c2 = new pg.Client({ host: a.listener.host, port: a.listener.port, user: 'noop', database: 'demo-db' });
  await c2.connect();
  await c2.query('SELECT id, email FROM patients WHERE id < 5');
  // A write held for approval and approved by a reviewer through the API: section E.
  const held = c2.query("UPDATE visits SET notes = 'reviewed' WHERE id = 1");
  const pending = await nextPendingApproval(a);
  const ok = await fetch(a.agent.url.replace(/^ws/, 'http') + `/api/approvals/${pending.id}/approve`, {
    method: 'POST',
    headers: { authorization: `Bearer ${(await s.get().issuer.mintDeviceFlowToken('dave@clinic.example')).accessToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ reason: 'checked by the test' }),
  });
  expect(ok.status, await ok.clone().text()).toBe(200);
  expect((await held).rowCount).toBe(1);
  await c2.end();
  await a.stop(); // the shutdown checkpoint covers every event
  a = undefined;
  bundle = path.join(await tempDir('out'), 'bundle');
  await build(bundle);
}, 180_000);

afterAll(async () => {
  await a?.stop();
  for (const d of tmp) await rm(d, { recursive: true, force: true });
});

describe('evidence build', () => {
  it('writes the bundle of the issue, with a self-contained report', async () => {
    const files = (await allFiles(bundle)).map((f) => path.relative(bundle, f)).sort();
    for (const want of ['MANIFEST.json', 'MANIFEST.sig', 'VERIFY.md', 'events.jsonl', 'report.html', 'verify.mjs', 'checkpoints/proofs.json', 'checkpoints/keys.json', 'data/sessions.csv', 'data/approvals.csv', 'data/refusals.csv', 'data/identities.csv', 'data/policy.csv']) {
      expect(files).toContain(want);
    }
    expect(files.filter((f) => f.startsWith('recordings/')).length).toBeGreaterThan(0);
    expect(files.filter((f) => f.endsWith('.note')).length).toBeGreaterThanOrEqual(2);
    const html = await readFile(path.join(bundle, 'report.html'), 'utf8');
    for (const sec of 'ABCDEFGHIJ') expect(html).toContain(`<section id="${sec}">`);
    expect(html).toContain('<svg');
    expect(html).toMatch(/Self-approvals: <b data-figure="selfApprovals">0<\/b>/);
    // Nothing the browser would fetch: no src/href to anywhere, no external stylesheet or script.
    expect(html).not.toMatch(/\s(src|href)=/i);
    expect(html).not.toMatch(/@import|url\(/i);
    const m = JSON.parse(await readFile(path.join(bundle, 'MANIFEST.json'), 'utf8'));
    expect(m.figures).toMatchObject({ blocked: 1, selfApprovals: 0, sessions: 2, holds: 1, approved: 1 });
    const approvals = (await readFile(path.join(bundle, 'data', 'approvals.csv'), 'utf8')).trimEnd().split('\r\n');
    expect(approvals).toHaveLength(2);
    expect(approvals[1]).toMatch(/ci-nightly,.*dave.*,approve,.*,1,no$/);
    expect(m.agents[0]).toMatchObject({ agentId: 'agent-ev', firstSeq: 1 });
  });

  it('guards CSV cells against formula injection', async () => {
    const csv = await readFile(path.join(bundle, 'data', 'policy.csv'), 'utf8');
    expect(csv.split('\r\n')[0]).toBe('ts,agent_id,seq,config_hash,connection,access_rules,masked_columns');
    for (const f of await readdir(path.join(bundle, 'data'))) {
      const text = await readFile(path.join(bundle, 'data', f), 'utf8');
      for (const line of text.split('\r\n')) for (const cell of line.split(',')) expect(cell).not.toMatch(/^"?[=+\-@]/);
    }
  });

  it('holds no PHI value: every file scanned for the masked identifiers of the patients the sessions read', async () => {
    const rows = await directQuery<Record<string, string | Date>>(s.get(), 'SELECT ssn, mrn, email, phone, to_char(date_of_birth, \'YYYY-MM-DD\') AS dob FROM patients ORDER BY id LIMIT 20');
    const phi = rows.flatMap((r) => Object.values(r).map(String));
    expect(phi.length).toBe(100);
    for (const f of await allFiles(bundle)) {
      const text = await readFile(f, 'utf8');
      for (const v of phi) expect(text.includes(v), `${v} in ${path.relative(bundle, f)}`).toBe(false);
    }
  });

  it('says so and exits non-zero for a period without events or a store it cannot read', async () => {
    const none = await cli(['evidence', 'build', '--from', '2020-01-01', '--to', '2020-02-01', '--data-dir', dataDir, '-o', path.join(await tempDir('none'), 'b')]);
    expect(none.code).toBe(1);
    expect(none.stderr).toMatch(/no audit events of agent agent-ev between 2020-01-01T00:00:00.000Z and 2020-02-01T00:00:00.000Z/);
    const gone = await cli(['evidence', 'build', '--from', FROM, '--to', TO, '--data-dir', '/nonexistent/hoop', '-o', path.join(await tempDir('gone'), 'b')]);
    expect(gone.code).toBe(5);
    expect(gone.stderr).toMatch(/cannot read the audit store/);
    const pgGone = await cli(['evidence', 'build', '--from', FROM, '--to', TO, '--store-url', 'postgres://x@127.0.0.1:1/none', '--key', path.join(bundle, 'checkpoints', 'keys.json'), '--signing-key', '/dev/null', '-o', path.join(await tempDir('pg'), 'b')]);
    expect(pgGone.code).toBe(5);
    expect(pgGone.stderr).toMatch(/cannot read the PostgreSQL store/);
  });
});

describe('report.html in headless Chromium', () => {
  it('renders the key figures offline: a screenshot is saved, and no network request is made', async () => {
    // Every request the browser makes goes to this proxy, which records its target and refuses it. Headless
    // Chromium calls its own Google services even for a blank page (clock, accounts); the page may call nothing.
    const requests: string[] = [];
    const proxy = net.createServer((sock) => {
      sock.once('data', (d) => {
        requests.push(d.toString('latin1').split('\r\n')[0]);
        sock.destroy();
      });
      sock.on('error', () => {});
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const port = (proxy.address() as net.AddressInfo).port;
    const shotDir = path.join(ROOT, 'test-output');
    await mkdir(shotDir, { recursive: true });
    const shot = path.join(shotDir, 'evidence-report.png');
    await rm(shot, { force: true });
    const profile = await tempDir('chromium');
    const flags = [
      '--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--disable-default-apps', '--disable-extensions', '--metrics-recording-only', `--user-data-dir=${profile}`,
      `--proxy-server=http://127.0.0.1:${port}`, '--proxy-bypass-list=<-loopback>', '--window-size=1200,2400',
    ];
    const url = pathToFileURL(path.join(bundle, 'report.html')).href;
    try {
      const dom = await run('chromium', [...flags, '--dump-dom', url], { timeoutMs: 90_000 });
      expect(dom.code, dom.stderr.slice(-2000)).toBe(0);
      const fig = JSON.parse(await readFile(path.join(bundle, 'MANIFEST.json'), 'utf8')).figures as Record<string, number>;
      for (const k of ['events', 'sessions', 'statements', 'selfApprovals', 'refusals', 'blocked']) expect(dom.stdout).toContain(`data-figure="${k}">${fig[k]}</b>`);
      expect(dom.stdout).toContain('<svg');
      const png = await run('chromium', [...flags, `--screenshot=${shot}`, url], { timeoutMs: 90_000 });
      expect(png.code, png.stderr.slice(-2000)).toBe(0);
      expect((await stat(shot)).size).toBeGreaterThan(10_000);
      expect((await readFile(shot)).subarray(1, 4).toString()).toBe('PNG');
      const host = (r: string) => /^\w+ (?:https?:\/\/)?([^/:\s]+)/.exec(r)?.[1] ?? r;
      const browserOwn = /(^|\.)(google\.com|googleapis\.com|gvt1\.com|gstatic\.com)$/;
      expect(requests.filter((r) => !browserOwn.test(host(r)))).toEqual([]);
    } finally {
      proxy.close();
    }
  }, 200_000);
});

describe('evidence verify', () => {
  it('verify.mjs passes with plain node in an empty directory, pinned by the fingerprint; so does hoopctl evidence verify', async () => {
    const copy = await copyOf(bundle, 'plain');
    const fp = JSON.parse(await readFile(path.join(copy, 'MANIFEST.json'), 'utf8')).signer.fingerprint as string;
    const r = await nodeVerify(copy, ['--fingerprint', fp]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/bundle verified: \d+ events, every check holds/);
    const wrong = await nodeVerify(copy, ['--fingerprint', 'sha256:' + '0'.repeat(64)]);
    expect(wrong.code).toBe(1);
    const h = await cli(['evidence', 'verify', bundle, '--fingerprint', fp]);
    expect(h.code, h.stderr).toBe(0);
  });

  const events = (dir: string) => readFile(path.join(dir, 'events.jsonl'), 'utf8').then((t) => t.trimEnd().split('\n'));
  const setEvents = (dir: string, lines: string[]) => writeFile(path.join(dir, 'events.jsonl'), lines.join('\n') + '\n');
  const notes = async (dir: string) => (await readdir(path.join(dir, 'checkpoints'))).filter((f) => f.endsWith('.note')).sort();

  it.each([
    {
      desc: 'an edited event',
      tamper: async (d: string) => {
        const l = await events(d);
        l[2] = l[2].replace(/"ts":"[^"]+"/, '"ts":"2026-06-01T00:00:00.000Z"');
        await setEvents(d, l);
      },
      want: /FAIL events\.jsonl line 3 \(agent agent-ev, seq 3\): content does not match its hash \(edited\)/,
    },
    { desc: 'a deleted event', tamper: async (d: string) => setEvents(d, (await events(d)).filter((_, i) => i !== 2)), want: /FAIL events\.jsonl line 3 \(agent agent-ev, seq 4\): expected seq 3: 1 event\(s\) missing \(deleted\)/ },
    {
      desc: 'an inserted event',
      tamper: async (d: string) => {
        const l = await events(d);
        l.splice(3, 0, l[2]);
        await setEvents(d, l);
      },
      want: /FAIL events\.jsonl line 4 \(agent agent-ev, seq 3\): expected seq 4: duplicated \(inserted\)/,
    },
    {
      desc: 'reordered events',
      tamper: async (d: string) => {
        const l = await events(d);
        [l[2], l[3]] = [l[3], l[2]];
        await setEvents(d, l);
      },
      want: /FAIL events\.jsonl line 3 \(agent agent-ev, seq 4\): expected seq 3: 1 event\(s\) missing/,
    },
    { desc: 'a truncated tail', tamper: async (d: string) => setEvents(d, (await events(d)).slice(0, -2)), want: /FAIL agent agent-ev: events\.jsonl ends at seq \d+, the manifest says \d+ \(truncated tail\)/ },
    { desc: 'a missing checkpoint', tamper: async (d: string) => rm(path.join(d, 'checkpoints', (await notes(d)).at(-1)!)), want: /FAIL checkpoint agent-ev\.\d{12}\.note: missing/ },
    {
      desc: 'a swapped checkpoint',
      tamper: async (d: string) => {
        const [first, last] = [(await notes(d))[0], (await notes(d)).at(-1)!];
        await writeFile(path.join(d, 'checkpoints', last), await readFile(path.join(d, 'checkpoints', first)));
      },
      want: /FAIL checkpoint agent-ev\.\d{12}\.note: signs \d+ events, not what its name says \(swapped\)/,
    },
    {
      desc: 'a checkpoint signed by an unknown key',
      tamper: async (d: string) => {
        const last = (await notes(d)).at(-1)!;
        const { body } = parseNote(await readFile(path.join(d, 'checkpoints', last), 'utf8'));
        const cp = parseCheckpointBody(body);
        await writeFile(path.join(d, 'checkpoints', last), signNote(checkpointBody({ ...cp }), [signerFromPem(cp.origin, newSigningKeyPem())]));
      },
      want: /FAIL checkpoint agent-ev\.\d{12}\.note: signed by an unknown key \(hoopctl\/agent-ev\+[0-9a-f]{8}\)/,
    },
    {
      desc: 'a file replaced',
      tamper: async (d: string) => writeFile(path.join(d, 'data', 'sessions.csv'), 'session_id\r\nnothing-to-see\r\n'),
      want: /FAIL file data\/sessions\.csv: SHA-256 differs from the manifest \(replaced or edited\)/,
    },
  ])('detects $desc with a line naming it', async ({ tamper, want }) => {
    const d = await copyOf(bundle, 'tamper');
    await tamper(d);
    const r = await nodeVerify(d);
    expect(r.code, r.stdout).toBe(1);
    expect(r.stdout).toMatch(want);
    expect(r.stdout).toMatch(/bundle NOT verified/);
  });

  it('links consecutive bundles, and detects two bundles spliced and a period that skips events', async () => {
    const lines = await events(bundle);
    const ts = lines.map((l) => JSON.parse(l).ts as string);
    const cut = ts.find((t) => t > ts[4])!;
    const later = ts.find((t) => t > ts[8])!;
    const one = path.join(await tempDir('one'), 'b');
    const oneAgain = path.join(await tempDir('one-again'), 'b');
    const two = path.join(await tempDir('two'), 'b');
    const skip = path.join(await tempDir('skip'), 'b');
    await build(one, [], FROM, cut);
    await build(oneAgain, [], FROM, cut);
    await build(two, ['--previous', one], cut, TO);
    await build(skip, ['--previous', one], later, TO);

    const linked = await nodeVerify(two, ['--previous', one]);
    expect(linked.code, linked.stdout).toBe(0);
    // Spliced: bundle two offered behind a bundle it does not follow (same period, built again).
    const spliced = await nodeVerify(two, ['--previous', oneAgain]);
    expect(spliced.code).toBe(1);
    expect(spliced.stdout).toMatch(/FAIL previous bundle: its manifest is not the one this bundle follows \(spliced or replaced\)/);
    const skipped = await nodeVerify(skip, ['--previous', one]);
    expect(skipped.code).toBe(1);
    expect(skipped.stdout).toMatch(/FAIL agent agent-ev: events seq \d+\.\.\d+ are in neither bundle \(a skipped period\)/);
  }, 120_000);
});

describe('evidence from a PostgreSQL store', () => {
  it('builds from the store URL with the key history and signing key: one agent of two sharing the store, and the bundle verifies', async () => {
    const stack = s.get();
    const db = `hoop_ev_${Date.now().toString(36)}`;
    await stack.pg.exec(`CREATE DATABASE ${db}`);
    const pgData = await tempDir('pgdata');
    const b = await startExtraAgent(stack, { agentId: 'agent-ev-pg', state: { url: stack.pg.url(db) }, dataDir: pgData });
    const other = await startExtraAgent(stack, { agentId: 'agent-ev-pg2', state: { url: stack.pg.url(db) } });
    for (const x of [b, other]) {
      const c = new pg.Client({ host: x.listener.host, port: x.listener.port, user: 'noop', database: 'demo-db' });
      await c.connect();
      await c.query('SELECT id, ssn FROM patients LIMIT 3');
      await c.end();
    }
    await other.stop();
    await b.stop();
    const out = path.join(await tempDir('pgout'), 'b');
    const r = await cli(['--json', 'evidence', 'build', '--from', FROM, '--to', TO, '--store-url', stack.pg.url(db), '--key', path.join(pgData, 'audit-signing.key.keys.json'), '--signing-key', path.join(pgData, 'audit-signing.key'), '-o', out]);
    expect(r.code, r.stderr).toBe(0);
    const m = JSON.parse(await readFile(path.join(out, 'MANIFEST.json'), 'utf8'));
    expect(m.agents.map((x: { agentId: string }) => x.agentId)).toEqual(['agent-ev-pg']);
    expect(m.source).toMatch(/^PostgreSQL store /);
    expect(m.counts.recordings).toBe(1);
    const v = await nodeVerify(out, ['--fingerprint', m.signer.fingerprint]);
    expect(v.code, v.stdout).toBe(0);
  }, 120_000);
});

describe('evidence from the agent, and attest', () => {
  it('a reviewer attests a bundle; the next bundle, built from the agent, lists the attestation and verifies', async () => {
    a = await startExtraAgent(s.get(), { agentId: 'agent-ev', dataDir });
    const env = { HOOPCTL_TOKEN: await reviewerToken(), HOOPCTL_AGENT: a.agent.url };
    const att = await cli(['--json', 'evidence', 'attest', bundle, '--statement', 'Reviewed November access: no exceptions.'], env);
    expect(att.code, att.stderr).toBe(0);
    const manifestSha = JSON.parse(att.stdout).manifestSha256 as string;
    const out = path.join(await tempDir('agent'), 'b');
    const b = await cli(['--json', 'evidence', 'build', '--from', FROM, '--to', TO, '-o', out], env);
    expect(b.code, b.stderr).toBe(0);
    const m = JSON.parse(await readFile(path.join(out, 'MANIFEST.json'), 'utf8'));
    expect(m.figures.attestations).toBe(1);
    expect(await readFile(path.join(out, 'data', 'attestations.csv'), 'utf8')).toContain(manifestSha);
    const v = await nodeVerify(out, ['--fingerprint', m.signer.fingerprint]);
    expect(v.code, v.stdout).toBe(0);
    // Not a reviewer: refused, exit 4.
    const ci = await cli(['evidence', 'attest', bundle, '--statement', 'x'], { HOOPCTL_TOKEN: await s.get().token(), HOOPCTL_AGENT: a.agent.url });
    expect(ci.code).toBe(4);
    await a.stop();
    a = undefined;
  }, 120_000);
});
