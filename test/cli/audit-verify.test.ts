// `hoopctl audit verify` against a real store's files, intact and tampered, through the real CLI.
import { describe, expect, it } from 'vitest';
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { JsonlStore } from '../../agent/src/audit/jsonl-store.js';
import { makeStatementEvent } from '../../agent/src/audit/events.js';
import { run } from '../harness/stack.js';
import { Checkpointer, loadSigningKey } from '../../agent/src/audit/checkpoints.js';
import { silentLogger } from '../../agent/src/log.js';
import { rewriteAndRehash } from '../agent/audit/fixtures.js';
import { checkpointBody, newSigningKeyPem, signNote, signerFromPem } from '../../shared/audit/checkpoint.js';

const CLI = ['--import', 'tsx', path.resolve('cli/src/main.ts')];

describe('hoopctl audit verify', () => {
  it('says intact for a real trail and names the first broken seq after an edit', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'hoop-verify-'));
    let t = Date.UTC(2026, 10, 29);
    const store = await JsonlStore.open({ dataDir: dir, agentId: 'agent-test', clock: () => (t += 1000) });
    const who = { sub: 'ci-nightly', issuer: 'http://issuer', groups: ['data-eng'], claims: {} };
    for (let i = 0; i < 5; i++) {
      await store.append(makeStatementEvent({ sessionId: 's1', who, connection: 'demo-db', sql: `SELECT ${i}`, decision: 'allow', rule: 'P5.read' }));
    }
    await store.close();

    const ok = await run('node', [...CLI, 'audit', 'verify', dir, '--json']);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ ok: true, events: 5 });

    const seg = path.join(dir, 'audit', (await readdir(path.join(dir, 'audit'))).find((f) => f.endsWith('.jsonl') && f.startsWith('agent-test'))!);
    const lines = (await readFile(seg, 'utf8')).split('\n');
    lines[2] = lines[2].replace('SELECT 2', 'SELECT 9');
    await writeFile(seg, lines.join('\n'));

    const broken = await run('node', [...CLI, 'audit', 'verify', dir]);
    expect(broken.code).toBe(1);
    // Said once (issue 17, rough edge 10): the error on stderr, nothing on stdout.
    expect(broken.stdout).toBe('');
    expect(broken.stderr.match(/broken at seq 3/gi)).toHaveLength(1);
  }, 60_000);
});

describe('hoopctl audit verify against signed checkpoints', () => {
  const who = { sub: 'ci-nightly', issuer: 'http://issuer', groups: ['data-eng'], claims: {} };
  /** A real store with `n` events, a checkpoint signed over the first `signed`, and the rest appended after. */
  async function trail(n: number, signed: number): Promise<string> {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'hoop-verify-cp-'));
    let t = Date.UTC(2026, 10, 29);
    const clock = () => (t += 1000);
    const store = await JsonlStore.open({ dataDir: dir, agentId: 'agent-test', clock });
    const { signer, keys } = await loadSigningKey(path.join(dir, 'audit-signing.key'), 'hoopctl/agent-test', new Date(clock()).toISOString());
    const cp = await Checkpointer.start({ store, signer, keys, clock, log: silentLogger });
    for (let i = 0; i < n; i++) {
      await store.append(makeStatementEvent({ sessionId: 's1', who, connection: 'demo-db', sql: `SELECT ${i}`, decision: 'allow', rule: 'P5.read' }));
      if (i + 1 === signed) await cp.checkpoint();
    }
    await store.close();
    return dir;
  }
  const segment = async (dir: string) => path.join(dir, 'audit', (await readdir(path.join(dir, 'audit'))).find((f) => /^agent-test\.\d{12}\.jsonl$/.test(f))!);

  it('counts the events after the last checkpoint, and reports the last events deleted (intact before checkpoints existed)', async () => {
    const dir = await trail(46, 40);
    const ok = await run('node', [...CLI, 'audit', 'verify', dir, '--json']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ ok: true, events: 46, checkpoints: { chains: [{ agentId: 'agent-test', events: 46, signed: 40, unsigned: 6 }], problems: [] } });
    const text = await run('node', [...CLI, 'audit', 'verify', dir]);
    expect(text.stdout).toContain('6 event(s) after it are only chain-protected');

    // The last 6 events deleted: the chain still links, the checkpoint of 40 still holds, and only those
    // 6 were unsigned, so verify cannot know; cut 8 and the signed tree of 40 is no longer there.
    const seg = await segment(dir);
    const lines = (await readFile(seg, 'utf8')).trimEnd().split('\n');
    await writeFile(seg, lines.slice(0, 38).join('\n') + '\n');
    const cut = await run('node', [...CLI, 'audit', 'verify', dir]);
    expect(cut.code).toBe(1);
    expect(cut.stderr).toMatch(/truncated: agent agent-test's chain ends at seq 38, but checkpoint .* signed 40 events \(2 missing at the tail\)/);
  }, 60_000);

  it('the shutdown-style checkpoint over every event: deleting the last 6 of 46 is reported', async () => {
    const dir = await trail(46, 46);
    const seg = await segment(dir);
    const lines = (await readFile(seg, 'utf8')).trimEnd().split('\n');
    await writeFile(seg, lines.slice(0, 40).join('\n') + '\n');
    const cut = await run('node', [...CLI, 'audit', 'verify', dir, '--json']);
    expect(cut.code).toBe(1);
    expect(JSON.parse(cut.stdout)).toMatchObject({ error: { code: 'CHAIN_TRUNCATED' } });
    expect(JSON.parse(cut.stdout).error.message).toMatch(/ends at seq 40.*signed 46 events \(6 missing/);
  }, 60_000);

  it('reports a history rewritten and re-hashed, a checkpoint by an unknown key, and a key that does not match --fingerprint', async () => {
    const dir = await trail(10, 10);
    const seg = await segment(dir);
    const original = await readFile(seg, 'utf8');
    const rewritten = rewriteAndRehash(original.trimEnd().split('\n'), (e) => {
      if (e.seq === 3) e.data.sql = 'SELECT 99';
    });
    await writeFile(seg, rewritten.join('\n') + '\n');
    const r = await run('node', [...CLI, 'audit', 'verify', dir]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/the first 10 events of agent agent-test differ from what was signed \(history rewritten\)/);
    await writeFile(seg, original);

    // A checkpoint signed by someone else's key, offered as a file: named, and the verify fails.
    const forger = signerFromPem('hoopctl/agent-test', newSigningKeyPem());
    const forged = path.join(dir, 'forged.note');
    await writeFile(forged, signNote(checkpointBody({ origin: 'hoopctl/agent-test', size: 10, root: Buffer.alloc(32, 1), time: new Date().toISOString() }), [forger]));
    const f = await run('node', [...CLI, 'audit', 'verify', dir, '--checkpoint', forged]);
    expect(f.code).toBe(1);
    expect(f.stderr).toMatch(/checkpoint .*forged\.note: signed by an unknown key/);

    const fp = await run('node', [...CLI, 'audit', 'verify', dir, '--fingerprint', forger.fingerprint]);
    expect(fp.code).toBe(1);
    expect(fp.stderr).toMatch(/no signing key with fingerprint/);
    const pinned = JSON.parse(await readFile(path.join(dir, 'audit-signing.key.keys.json'), 'utf8'))[0].fingerprint as string;
    const good = await run('node', [...CLI, 'audit', 'verify', dir, '--fingerprint', pinned]);
    expect(good.code, good.stderr).toBe(0);
  }, 60_000);
});
