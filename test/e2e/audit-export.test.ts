// The audit export for SIEMs and long-term retention, through the real stack: GET /api/audit/export
// (reviewers only, streamed) and `hoopctl audit export`; a JSON Lines export verifies offline with
// `hoopctl audit verify`, a CSV export has its header and one row per event.
import { afterAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { run, tunnelClient, useStack } from '../harness/stack.js';
import { verifyChain } from '../../agent/src/audit/verify.js';
import type { AuditEvent } from '../../agent/src/audit/events.js';

const s = useStack({ patients: 50 });
const ROOT = path.resolve(import.meta.dirname, '../..');
const CLI = ['--import', 'tsx', path.join(ROOT, 'cli/src/main.ts')];
const tmp: string[] = [];
afterAll(async () => {
  for (const d of tmp) await rm(d, { recursive: true, force: true });
});

const reviewerToken = () => s.get().issuer.clientCredentialsToken('approver-bot', 'approver-bot-secret'); // group compliance

async function get(pathname: string, token: string) {
  const res = await request(s.get().agent.url.replace(/^ws/, 'http') + pathname, { headers: { authorization: `Bearer ${token}` } });
  return { status: res.statusCode, type: res.headers['content-type'], text: await res.body.text() };
}

async function cli(args: string[], token: string) {
  const env = { ...process.env, HOOPCTL_TOKEN: token, HOOPCTL_AGENT: s.get().agent.url, XDG_CONFIG_HOME: '/tmp/hoopctl-test-none' };
  return run('node', [...CLI, ...args], { env, cwd: ROOT });
}

/** Some traffic, so the trail holds sessions, statements, results and a refusal. */
async function traffic(tag: string): Promise<void> {
  const c = await tunnelClient(s.get(), { application_name: tag });
  await c.query('SELECT count(*) FROM visits');
  await expect(c.query('DROP TABLE visits')).rejects.toMatchObject({ code: '42501' });
  await c.end();
  await new Promise((r) => setTimeout(r, 200));
}

describe('GET /api/audit/export', () => {
  it('streams the whole trail as JSON Lines that verify, and as CSV with a header; reviewers only', async () => {
    await traffic('export-api');
    const token = await reviewerToken();
    const jsonl = await get('/api/audit/export?format=jsonl', token);
    expect(jsonl.status).toBe(200);
    expect(jsonl.type).toBe('application/x-ndjson');
    const lines = jsonl.text.trimEnd().split('\n');
    expect(await verifyChain(lines)).toEqual({ ok: true, events: lines.length });
    const events = lines.map((l) => JSON.parse(l) as AuditEvent);
    expect(events.some((e) => e.type === 'statement' && e.data.sql === 'DROP TABLE visits' && e.data.decision === 'block')).toBe(true);

    const csv = await get('/api/audit/export?format=csv', token);
    expect(csv.status).toBe(200);
    expect(csv.type).toMatch(/^text\/csv/);
    const rows = csv.text.split('\r\n').filter(Boolean);
    expect(rows[0]).toBe('seq,ts,agent_id,type,session_id,sub,issuer,connection,decision,rule,sql,rows,sqlstate,prev,hash,data');
    expect(rows.length).toBeGreaterThanOrEqual(events.length + 1);
    expect(rows.some((r) => /,statement,[^,]+,ci-nightly,[^,]+,demo-db,block,P3\.ddl\.drop,DROP TABLE visits,/.test(r))).toBe(true);

    // A time range: only events inside it (chain time never goes backwards).
    const mid = events[Math.floor(events.length / 2)].ts;
    const since = await get(`/api/audit/export?since=${encodeURIComponent(mid)}`, token);
    const tail = since.text.trimEnd().split('\n').map((l) => JSON.parse(l) as AuditEvent);
    expect(tail.length).toBeGreaterThan(0);
    expect(tail.every((e) => e.ts >= mid)).toBe(true);
    expect(tail.at(-1)!.seq).toBe(events.at(-1)!.seq);
    const until = await get(`/api/audit/export?until=${encodeURIComponent(mid)}&format=jsonl`, token);
    expect(until.text.trimEnd().split('\n').every((l) => (JSON.parse(l) as AuditEvent).ts < mid)).toBe(true);
  });

  it.each([
    { desc: 'a non-reviewer', token: () => s.get().token(), query: '', status: 403, code: 'NOT_A_REVIEWER' },
    { desc: 'no valid token', token: async () => 'not-a-token', query: '', status: 401, code: 'TOKEN_INVALID' },
    { desc: 'an unknown format', token: reviewerToken, query: '?format=xml', status: 400, code: 'BAD_FORMAT' },
    { desc: 'a bad time', token: reviewerToken, query: '?since=yesterday', status: 400, code: 'BAD_TIME' },
  ])('refuses $desc', async ({ token, query, status, code }) => {
    const r = await get(`/api/audit/export${query}`, await token());
    expect(r.status).toBe(status);
    expect(JSON.parse(r.text).error.code).toBe(code);
    expect(r.text).not.toContain('"hash"');
  });
});

describe('hoopctl audit export', () => {
  it('writes a JSON Lines file that `hoopctl audit verify` accepts, and CSV to stdout', async () => {
    await traffic('export-cli');
    const dir = await mkdtemp(path.join(os.tmpdir(), 'hoop-export-'));
    tmp.push(dir);
    const file = path.join(dir, 'audit.jsonl');
    const token = await reviewerToken();

    const out = await cli(['audit', 'export', '--since', '2020-01-01', '--format', 'jsonl', '-o', file], token);
    expect(out.stderr).toBe('');
    expect(out.code).toBe(0);
    const n = (await readFile(file, 'utf8')).trimEnd().split('\n').length;
    expect(out.stdout.trim()).toBe(`wrote ${n} events to ${file} (check it with: hoopctl audit verify ${file})`);
    expect(await readdir(dir)).toEqual(['audit.jsonl']); // no partial file left behind
    const verified = await cli(['audit', 'verify', file], token);
    // An export alone carries no checkpoint: verify says what it therefore cannot see.
    expect(verified.stdout.trim().split('\n')).toEqual([
      `audit trail intact: ${n} events in 1 file(s)`,
      'no signed checkpoint found: events cut from the tail would not show (pass --witness or --checkpoint)',
    ]);
    expect(verified.code).toBe(0);

    // Tampering with the export is caught like tampering with the agent's files.
    const lines = (await readFile(file, 'utf8')).trimEnd().split('\n');
    const at = lines.findIndex((l) => l.includes('DROP TABLE visits'));
    await writeFile(file, lines.map((l, i) => (i === at ? l.replace('DROP TABLE visits', 'SELECT 1') : l)).join('\n') + '\n');
    const broken = await cli(['audit', 'verify', file], token);
    expect(broken.code).toBe(1);
    // Said once: on stderr, as the error; nothing on stdout.
    expect(broken.stdout).toBe('');
    expect(broken.stderr.match(/broken at seq/g)).toHaveLength(1);
    expect(broken.stderr).toContain(`error: the audit chain is broken at seq ${(JSON.parse(lines[at]) as AuditEvent).seq}`);

    const csv = await cli(['audit', 'export', '--since', '24h', '--format', 'csv'], token);
    expect(csv.code).toBe(0);
    const rows = csv.stdout.split('\r\n').filter(Boolean);
    expect(rows[0]).toBe('seq,ts,agent_id,type,session_id,sub,issuer,connection,decision,rule,sql,rows,sqlstate,prev,hash,data');
    expect(rows.some((r) => r.includes(',session_start,'))).toBe(true);
  }, 120_000);

  it('verifies an export that starts mid-chain with --partial, and says so without it', async () => {
    await traffic('export-partial');
    await new Promise((r) => setTimeout(r, 20));
    await traffic('export-partial-2');
    const token = await reviewerToken();
    const all = (await get('/api/audit/export', token)).text.trimEnd().split('\n').map((l) => JSON.parse(l) as AuditEvent);
    const from = all.find((e) => e.ts > all[0].ts)!; // an export that cannot start at seq 1
    const dir = await mkdtemp(path.join(os.tmpdir(), 'hoop-export-'));
    tmp.push(dir);
    const file = path.join(dir, 'tail.jsonl');
    const out = await cli(['audit', 'export', '--since', from.ts, '-o', file], token);
    expect(out.code).toBe(0);
    expect(out.stdout).toContain(`(check it with: hoopctl audit verify ${file} --partial)`);
    const strict = await cli(['--json', 'audit', 'verify', file], token);
    expect(strict.code).toBe(1);
    expect(JSON.parse(strict.stdout).error.hint).toBe('If this is an export made with --since, verify it with --partial.');
    const partial = await cli(['audit', 'verify', '--partial', file], token);
    expect(partial.code).toBe(0);
    expect(partial.stdout).toMatch(/^audit trail intact: \d+ events in 1 file\(s\) \(partial: from seq \d+\)$/m);
  }, 120_000);

  it('refuses a non-reviewer (exit 4) and a bad --since (exit 2) without writing a file', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'hoop-export-'));
    tmp.push(dir);
    const file = path.join(dir, 'x.jsonl');
    const mine = await cli(['--json', 'audit', 'export', '-o', file], await s.get().token());
    expect(mine.code).toBe(4);
    expect(JSON.parse(mine.stdout)).toEqual({ error: { code: 'NOT_A_REVIEWER', message: 'only reviewers may export the audit trail', hint: 'Ask to be added to a reviewer group.' } });
    const bad = await cli(['audit', 'export', '--since', 'last tuesday', '-o', file], await reviewerToken());
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--since: not an ISO date or time (2026-11-01, 2026-11-01T08:00:00Z), a duration back from now (30m, 24h, 7d, 2w) or now: "last tuesday"');
    expect(await readdir(dir)).toEqual([]);
  }, 60_000);
});
