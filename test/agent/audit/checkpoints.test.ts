// The checkpointer on a real embedded store, without an agent: it never signs a chain whose unsigned
// part is broken, and what it already signed is held to the signed root.
import { describe, expect, it } from 'vitest';
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { JsonlStore } from '../../../agent/src/audit/jsonl-store.js';
import { makeStatementEvent } from '../../../agent/src/audit/events.js';
import { Checkpointer, loadSigningKey } from '../../../agent/src/audit/checkpoints.js';
import { silentLogger } from '../../../agent/src/log.js';

const who = { sub: 'ci-nightly', issuer: 'http://issuer', groups: ['data-eng'], claims: {} };

async function open(dir: string) {
  let t = Date.UTC(2026, 11, 1);
  const clock = () => (t += 1000);
  const store = await JsonlStore.open({ dataDir: dir, agentId: 'agent-cp-unit', clock });
  const keys = await loadSigningKey(path.join(dir, 'audit-signing.key'), 'hoopctl/agent-cp-unit', new Date(clock()).toISOString());
  return { store, start: () => Checkpointer.start({ store, ...keys, clock, log: silentLogger }) };
}

async function editLine(dir: string, seq: number, from: string, to: string) {
  const audit = path.join(dir, 'audit');
  const seg = path.join(audit, (await readdir(audit)).find((f) => /^agent-cp-unit\.\d{12}\.jsonl$/.test(f))!);
  const lines = (await readFile(seg, 'utf8')).split('\n');
  lines[seq - 1] = lines[seq - 1].replace(from, to);
  await writeFile(seg, lines.join('\n'));
}

describe('Checkpointer', () => {
  it('refuses to sign over an unsigned event whose content no longer matches its hash', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'hoop-cp-unit-'));
    let s = await open(dir);
    const cp = await s.start();
    for (let i = 1; i <= 5; i++) {
      await s.store.append(makeStatementEvent({ sessionId: 's1', who, connection: 'db', sql: `SELECT ${i}`, decision: 'allow', rule: 'P5.read' }));
      if (i === 3) expect((await cp.checkpoint()).size).toBe(3);
    }
    await s.store.close();
    await editLine(dir, 5, 'SELECT 5', 'SELECT 6');
    s = await open(dir);
    const again = await s.start();
    await expect(again.checkpoint()).rejects.toThrow(/the chain is broken at seq 5; not signing it/);
    await s.store.close();
  });

  it('signs again after a restart over an intact chain, extending the checkpoint it found', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'hoop-cp-unit-'));
    let s = await open(dir);
    for (let i = 1; i <= 4; i++) await s.store.append(makeStatementEvent({ sessionId: 's1', who, connection: 'db', sql: `SELECT ${i}`, decision: 'allow', rule: 'P5.read' }));
    expect((await (await s.start()).checkpoint()).size).toBe(4);
    await s.store.close();
    s = await open(dir);
    const cp = await s.start();
    expect(cp.last?.size).toBe(4);
    await s.store.append(makeStatementEvent({ sessionId: 's2', who, connection: 'db', sql: 'SELECT 5', decision: 'allow', rule: 'P5.read' }));
    expect((await cp.checkpoint()).size).toBe(5);
    await s.store.close();
  });
});
