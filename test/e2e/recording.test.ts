// Session recordings through the real stack: statements run on a masked connection (node-postgres in
// text and binary formats, psql), the agent records what the client was sent, and the transcript is
// read back through the API and `hoopctl sessions replay`. The recording must hold masked values only,
// cap rows per statement and bytes per session with the cut recorded, and be readable only by its owner
// and reviewers. Retention deletes old recordings and leaves the chain verifiable.
import { afterAll, describe, expect, it } from 'vitest';
import { appendFile, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { RawClient, cstr, query, typed } from './wire.js';
import { request } from 'undici';
import { psql, run, tunnelClient, useStack } from '../harness/stack.js';
import { resolveConfig } from '../../agent/src/config.js';
import { startAgent, type RunningAgent } from '../../agent/src/agent.js';
import { silentLogger } from '../../agent/src/log.js';
import { makeSessionEndEvent, makeSessionStartEvent, makeStatementEvent } from '../../agent/src/audit/events.js';
import { DEFAULT_RECORDING_LIMITS, type RecordingEntry } from '../../agent/src/audit/store.js';

const s = useStack();
const ROOT = path.resolve(import.meta.dirname, '../..');
const CLI = ['--import', 'tsx', path.join(ROOT, 'cli/src/main.ts')];

async function api(pathname: string, token: string) {
  const url = s.get().agent.url.replace(/^ws/, 'http') + pathname;
  const res = await request(url, { headers: { authorization: `Bearer ${token}` } });
  return { status: res.statusCode, body: (await res.body.json()) as any };
}

/** The session a client opened with this application_name (the tunnel identity is ci-nightly). */
async function sessionIdOf(appName: string): Promise<string> {
  const token = await s.get().token();
  for (let i = 0; i < 100; i++) {
    const list = await api('/api/sessions?limit=100', token);
    const sess = list.body.sessions.find((x: any) => x.applicationName === appName && x.endedAt);
    if (sess) return sess.sessionId;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no ended session for ${appName}`);
}

/** The recording once it holds at least `n` entries (recording writes are off the relay's path). */
async function recordingOf(id: string, n: number): Promise<RecordingEntry[]> {
  const token = await s.get().token();
  let rec: RecordingEntry[] = [];
  for (let i = 0; i < 200; i++) {
    const r = await api(`/api/sessions/${id}/recording`, token);
    expect(r.status).toBe(200);
    rec = r.body.recording;
    if (rec.length >= n) return rec;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`recording of ${id} has ${rec.length} entries, expected ${n}: ${JSON.stringify(rec).slice(0, 500)}`);
}

/** Every masked value of these patients as stored (read directly, as a superuser). */
async function fixturePhi(ids: number[]): Promise<string[]> {
  const c = new pg.Client({ connectionString: s.get().directUrl });
  await c.connect();
  try {
    const { rows } = await c.query("SELECT ssn, mrn, email, phone, to_char(date_of_birth, 'YYYY-MM-DD') AS dob FROM patients WHERE id = ANY($1)", [ids]);
    return rows.flatMap((r) => [r.ssn, r.mrn, r.email, r.phone, r.dob]);
  } finally {
    await c.end();
  }
}

describe('recording a masked session', () => {
  it('records statements and their rows as the client got them: masked, in text and binary formats', async () => {
    const stack = s.get();
    const phi = await fixturePhi([1, 2, 3, 7]);
    const c = await tunnelClient(stack, { application_name: 'rec-masked' });
    const text = await c.query('SELECT id, full_name, ssn, mrn, email, phone, date_of_birth FROM patients WHERE id <= 3 ORDER BY id');
    const binary = { text: 'SELECT id, ssn, mrn FROM patients WHERE id = $1', values: [7], binary: true }; // pg: results in binary format
    const bin = await c.query(binary);
    // A lookup by MRN: the literal must not reach the recording either (audited SQL has no literals).
    const byMrn = await c.query(`SELECT id, full_name FROM patients WHERE mrn = '${phi[6]}'`);
    await expect(c.query('DROP TABLE visits')).rejects.toMatchObject({ code: '42501' });
    await c.query('BEGIN; SELECT 1 AS one; COMMIT');
    await c.end();
    expect(text.rows).toHaveLength(3);
    expect(byMrn.rows).toHaveLength(1);
    expect(bin.rows).toHaveLength(1);

    const id = await sessionIdOf('rec-masked');
    const rec = await recordingOf(id, 7);
    const all = JSON.stringify(rec);
    for (const v of phi) expect(all).not.toContain(v);

    const [t, b, m, drop, begin, one, commit] = rec;
    expect(t).toMatchObject({ sql: 'SELECT id, full_name, ssn, mrn, email, phone, date_of_birth FROM patients WHERE id <= $1 ORDER BY id', columns: ['id', 'full_name', 'ssn', 'mrn', 'email', 'phone', 'date_of_birth'], types: [23, 25, 25, 25, 25, 25, 1082], rowCount: 3, tag: 'SELECT 3' });
    expect(t.seq).toEqual(expect.any(Number));
    // What the client received is exactly what was recorded (text format: strings, NULL as null).
    expect(t.rows).toEqual(text.rows.map((r) => [String(r.id), r.full_name, r.ssn, r.mrn, r.email, r.phone, r.date_of_birth]));
    expect(t.rows!.map((r) => r[2])).toEqual(['***', '***', '***']);
    expect(t.rows![0][3]).toMatch(/^\*+0001$/);
    expect(t.rows!.map((r) => r[6])).toEqual([null, null, null]);
    // Binary results: integers decoded, masked text as the client got it.
    expect(b).toMatchObject({ sql: 'SELECT id, ssn, mrn FROM patients WHERE id = $1', columns: ['id', 'ssn', 'mrn'], rows: [[7, '***', expect.stringMatching(/^\*+0007$/)]], rowCount: 1 });
    expect(m).toMatchObject({ sql: 'SELECT id, full_name FROM patients WHERE mrn = $1', rowCount: 1 });
    expect(drop).toMatchObject({ sql: 'DROP TABLE visits', sqlstate: '42501', note: expect.stringContaining('P3.ddl.drop') });
    // One Query, three results: the SQL once, then each result under the same seq.
    expect(begin).toMatchObject({ sql: 'BEGIN; SELECT 1 AS one; COMMIT', tag: 'BEGIN' });
    expect(one).toMatchObject({ seq: begin.seq, columns: ['one'], rows: [['1']], rowCount: 1 });
    expect(one.sql).toBeUndefined();
    expect(commit).toMatchObject({ seq: begin.seq, tag: 'COMMIT' });
  });

  it('keeps pipelined statements apart: results by statement, a failed Sync block not ending the next', async () => {
    const stack = s.get();
    const raw = await RawClient.connect(stack.listener.host, stack.listener.port);
    await raw.startup({ user: 'noop', database: 'demo-db', application_name: 'rec-pipeline' });
    const i16 = (n: number) => Buffer.from([n >> 8, n & 255]);
    const run1 = (sql: string) => [
      typed('P', Buffer.concat([cstr(''), cstr(sql), i16(0)])),
      typed('B', Buffer.concat([cstr(''), cstr(''), i16(0), i16(0), i16(0)])),
      typed('D', Buffer.concat([Buffer.from('P'), cstr('')])),
      typed('E', Buffer.concat([cstr(''), Buffer.alloc(4)])),
    ];
    // Three Sync blocks and a simple Query in one write: the second block fails at its first Parse, so
    // the server skips its second statement; the third block and the Query still run.
    raw.write(
      Buffer.concat([
        ...run1('SELECT 1 AS a'), typed('S'),
        ...run1('SELECT nope FROM patients'), ...run1('SELECT 4 AS d'), typed('S'),
        ...run1('SELECT 2 AS b'), typed('S'),
        query('SELECT 5 AS e'),
      ]),
    );
    for (let i = 0; i < 4; i++) await raw.until('Z', 10_000);
    raw.write(typed('X'));
    raw.destroy();

    const id = await sessionIdOf('rec-pipeline');
    const rec = await recordingOf(id, 5);
    expect(rec.map((e) => [e.sql, e.rows ?? null, e.sqlstate ?? null, e.note?.startsWith('not run') ?? false])).toEqual([
      ['SELECT 1 AS a', [['1']], null, false],
      ['SELECT nope FROM patients', null, '42703', false],
      ['SELECT 4 AS d', null, null, true],
      ['SELECT 2 AS b', [['2']], null, false],
      ['SELECT 5 AS e', [['5']], null, false],
    ]);
  });

  it('caps rows per statement and bytes per session, and says so', async () => {
    const stack = s.get();
    const c = await tunnelClient(stack, { application_name: 'rec-caps' });
    const max = DEFAULT_RECORDING_LIMITS.maxRowsPerStatement;
    const many = await c.query(`SELECT id, ssn FROM patients ORDER BY id LIMIT ${max + 50}`);
    expect(many.rows).toHaveLength(max + 50);
    // ~50 KB per statement: the 1 MiB session budget is spent after about 20 of them.
    const wide = `SELECT g, repeat('x', 500) AS pad FROM generate_series(1, ${max}) AS g`;
    const perStatement = max * 510;
    const statements = Math.ceil(DEFAULT_RECORDING_LIMITS.maxBytesPerSession / perStatement) + 5;
    for (let i = 0; i < statements; i++) await c.query(`${wide} -- ${i}`);
    await c.end();

    const id = await sessionIdOf('rec-caps');
    let rec: RecordingEntry[] = [];
    for (let i = 0; i < 200 && !rec.at(-1)?.truncated?.session; i++) {
      rec = (await api(`/api/sessions/${id}/recording`, await stack.token())).body.recording;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(rec[0]).toMatchObject({ rowCount: max + 50, truncated: { rowsOmitted: 50 } });
    expect(rec[0].rows).toHaveLength(max);
    expect(rec[0].rows!.every((r) => r[1] === '***')).toBe(true);
    expect(rec.at(-1)).toMatchObject({ note: expect.stringMatching(/cap reached/), truncated: { session: true } });
    // Later statements ran but are not recorded.
    expect(rec.some((e) => e.sql?.endsWith(`-- ${statements - 1}`))).toBe(false);
    expect(rec.filter((e) => e.truncated?.session)).toHaveLength(1);
    expect(JSON.stringify(rec).length).toBeLessThan(DEFAULT_RECORDING_LIMITS.maxBytesPerSession + 4096);

    // The CLI turns the cuts into notes.
    const env = { ...process.env, HOOPCTL_TOKEN: await stack.token(), HOOPCTL_AGENT: stack.agent.url, XDG_CONFIG_HOME: '/tmp/hoopctl-test-none' };
    const shown = await run('node', [...CLI, 'sessions', 'replay', id], { env });
    expect(shown.code).toBe(0);
    // (asserted on excerpts: the whole transcript is a megabyte of padding)
    const notes = shown.stdout.split('\n').filter((l) => l.startsWith('(') || l.startsWith('-- '));
    expect(notes).toContain(`(${max + 50} rows)`);
    expect(notes).toContain(`(recording shows the first ${max} of these rows; 50 more were not recorded)`);
    expect(notes.at(-1)).toBe('-- recording cap reached; later statements not recorded');
  }, 120_000);

  it('is readable by its owner and reviewers only', async () => {
    const stack = s.get();
    const c = await tunnelClient(stack, { application_name: 'rec-access' });
    await c.query('SELECT 42 AS answer');
    await c.end();
    const id = await sessionIdOf('rec-access');
    await recordingOf(id, 1);

    const bob = (await stack.issuer.mintDeviceFlowToken('bob@clinic.example')).accessToken; // data-eng, not a reviewer
    const reviewer = await stack.issuer.clientCredentialsToken('approver-bot', 'approver-bot-secret'); // compliance
    const refused = await api(`/api/sessions/${id}/recording`, bob);
    expect(refused.status).toBe(404);
    expect(JSON.stringify(refused.body)).not.toContain('answer');
    const seen = await api(`/api/sessions/${id}/recording`, reviewer);
    expect(seen.status).toBe(200);
    expect(seen.body.recording[0]).toMatchObject({ sql: 'SELECT 42 AS answer', rows: [['42']] });
    expect((await api(`/api/sessions/${id}/recording`, 'not-a-token')).status).toBe(401);

    const env = (token: string) => ({ ...process.env, HOOPCTL_TOKEN: token, HOOPCTL_AGENT: stack.agent.url, XDG_CONFIG_HOME: '/tmp/hoopctl-test-none' });
    const asBob = await run('node', [...CLI, '--json', 'sessions', 'replay', id], { env: env(bob) });
    expect(asBob.code).toBe(1);
    expect(JSON.parse(asBob.stdout)).toEqual({ error: { code: 'NO_SUCH_SESSION', message: `no session ${id} visible to you` } });
  }, 60_000);
});

describe('hoopctl sessions replay', () => {
  it('prints a psql-like transcript of a psql session; --json prints the entries', async () => {
    const stack = s.get();
    const r = await psql(stack, ['-c', 'SELECT id, full_name, ssn FROM patients WHERE id IN (1, 2) ORDER BY id', '-c', 'SHOW TimeZone', '-c', 'DROP TABLE visits'], {
      env: { ...process.env, PGPASSWORD: '', PGCONNECT_TIMEOUT: '10', PGAPPNAME: 'rec-psql' },
    });
    expect(r.stdout).toContain('(2 rows)');
    const id = await sessionIdOf('rec-psql');
    const rec = await recordingOf(id, 3);
    const names = await fixturePhi([1, 2]);

    const env = { ...process.env, HOOPCTL_TOKEN: await stack.token(), HOOPCTL_AGENT: stack.agent.url, XDG_CONFIG_HOME: '/tmp/hoopctl-test-none' };
    const shown = await run('node', [...CLI, 'sessions', 'replay', id], { env });
    expect(shown.code).toBe(0);
    const lines = shown.stdout.split('\n');
    const at = lines.indexOf('SELECT id, full_name, ssn FROM patients WHERE id IN ($1, $2) ORDER BY id;');
    expect(at).toBeGreaterThan(0);
    expect(lines[at - 1]).toMatch(/^-- \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}  #\d+$/);
    // The same tables psql printed (aligned, centred headers, numbers right), with their row counts.
    const psqlTables = r.stdout.split('\n\n').filter(Boolean);
    expect(psqlTables).toHaveLength(2);
    expect(lines.slice(at + 1, at + 6).join('\n')).toBe(psqlTables[0]);
    expect(shown.stdout).toContain(`SHOW TimeZone;\n${psqlTables[1]}`);
    expect(shown.stdout).toMatch(/DROP TABLE visits;\nERROR: {2}hoopctl: statement blocked by policy \(P3\.ddl\.drop\).*\(SQLSTATE 42501\)/);
    for (const v of names) expect(shown.stdout).not.toContain(v);
    expect(shown.stdout).not.toMatch(/\x1b\[/); // plain text when piped

    const json = await run('node', [...CLI, '--json', 'sessions', 'replay', id], { env });
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual({ sessionId: id, recording: rec });
  }, 60_000);
});

describe('recording retention', () => {
  const dirs: string[] = [];
  const agents: RunningAgent[] = [];
  afterAll(async () => {
    for (const a of agents) await a.stop().catch(() => {});
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('deletes recordings older than the setting, at start and then periodically; the chain still verifies', async () => {
    const stack = s.get();
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'hoop-retention-'));
    dirs.push(dataDir);
    const config = await resolveConfig(
      {
        listen: '127.0.0.1:0',
        dataDir,
        identity: { issuers: [{ issuer: stack.issuer.issuer, audience: stack.issuer.audience }] },
        retention: { recordings: '30d' },
        connections: { db: { postgres: { host: '127.0.0.1', port: 1, database: 'x', user: 'x', passwordEnv: 'PW' }, access: [{ groups: ['data-eng'] }] } },
      },
      { PW: 'unused' },
    );
    const DAY = 86_400_000;
    let now = Date.parse('2026-01-01T00:00:00Z');
    const clock = () => now;
    const start = (everyMs: number) => startAgent({ config, log: silentLogger, clock, agentId: 'agent-retention', retentionEveryMs: everyMs }).then((a) => (agents.push(a), a));
    const stop = async (a: RunningAgent) => {
      agents.splice(agents.indexOf(a), 1);
      await a.stop();
    };
    const who = { sub: 'alice', issuer: stack.issuer.issuer };
    const session = async (a: RunningAgent, id: string) => {
      await a.store.append(makeSessionStartEvent({ sessionId: id, who, connection: 'db' }));
      const st = await a.store.append(makeStatementEvent({ sessionId: id, who, connection: 'db', sql: 'SELECT 1', decision: 'allow', rule: 'P5.read' }));
      await a.store.appendRecording(id, { seq: st.seq, sql: 'SELECT 1', columns: ['?column?'], rows: [['1']], rowCount: 1 });
      await a.store.append(makeSessionEndEvent({ sessionId: id, who, connection: 'db' }));
    };
    const gone = async (a: RunningAgent, id: string) => {
      for (let i = 0; i < 400; i++) {
        if ((await a.store.readRecording(id)).length === 0) return;
        await new Promise((r) => setTimeout(r, 25));
      }
      throw new Error(`recording ${id} was not deleted`);
    };

    // Periodically: an agent that keeps running deletes a recording once it is 30 days old.
    const a = await start(50);
    await session(a, 'old-1');
    // A line torn by a crash mid-write must not stop retention.
    await appendFile(path.join(dataDir, 'audit', 'recordings', 'old-1.jsonl'), '{"seq":9,"sql":"SEL');
    expect((await a.store.readRecording('old-1')).map((e) => e.sql ?? e.note)).toEqual(['SELECT 1', 'a damaged recording line was skipped']);
    now += 31 * DAY;
    await session(a, 'new-1');
    await gone(a, 'old-1');
    expect(await a.store.readRecording('new-1')).toHaveLength(1);
    expect((await a.store.sessionEvents('old-1')).map((e) => e.type)).toEqual(['session_start', 'statement', 'session_end']);
    // 6 session events and the policy_loaded event each agent start records.
    expect(await a.store.verify()).toEqual({ ok: true, events: 7 });
    await stop(a);

    // At start: an agent started 31 days later deletes what aged meanwhile before its first hour passes.
    now += 31 * DAY;
    const b = await start(3_600_000);
    await gone(b, 'new-1');
    expect(await b.store.verify()).toEqual({ ok: true, events: 8 });
    await stop(b);

    const verified = await run('node', [...CLI, 'audit', 'verify', dataDir], { env: { ...process.env, XDG_CONFIG_HOME: '/tmp/hoopctl-test-none' } });
    expect(verified.stdout).toContain('audit trail intact: 8 events');
    expect(verified.code).toBe(0);
  }, 60_000);
});
