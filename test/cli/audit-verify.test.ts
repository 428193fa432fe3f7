// `hoopctl audit verify` against a real store's files, intact and tampered, through the real CLI.
import { describe, expect, it } from 'vitest';
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { JsonlStore } from '../../agent/src/audit/jsonl-store.js';
import { makeStatementEvent } from '../../agent/src/audit/events.js';
import { run } from '../harness/stack.js';

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
    expect(broken.stdout + broken.stderr).toMatch(/broken at seq 3/i);
  }, 60_000);
});
