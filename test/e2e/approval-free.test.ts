// A write the connection approves in advance (policy.approvalFree, P4.approval-free) runs without an
// approver, read-write for itself alone, through the simple and the extended protocol; the session is
// read-only again after it, and a write not on the list is still held.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { fingerprint } from 'libpg-query';
import { directQuery, startExtraAgent, useStack, type ExtraAgent } from '../harness/stack.js';

const s = useStack({ patients: 50 });
let extra: ExtraAgent;
let c: pg.Client;

beforeAll(async () => {
  const fp = await fingerprint('UPDATE visits SET notes = $1 WHERE id = $2');
  extra = await startExtraAgent(s.get(), { agentId: 'approval-free', policy: { approvalFree: [fp] }, approval: { timeout: '3s' } });
  c = new pg.Client({ host: extra.listener.host, port: extra.listener.port, user: 'noop', database: 'demo-db' });
  await c.connect();
}, 60_000);
afterAll(async () => {
  await c?.end().catch(() => {});
  await extra?.stop();
});

const notes = (id: number) => directQuery<{ notes: string | null }>(s.get(), 'SELECT notes FROM visits WHERE id = $1', [id]).then((r) => r[0].notes);

describe('approval-free writes', () => {
  it('run at once with parameters (extended protocol) and as a simple Query; the session stays read-only', async () => {
    expect((await c.query('UPDATE visits SET notes = $1 WHERE id = $2', ['free-ext', 3])).rowCount).toBe(1);
    expect(await notes(3)).toBe('free-ext');
    expect((await c.query("UPDATE visits SET notes = 'free-simple' WHERE id = 4")).rowCount).toBe(1);
    expect(await notes(4)).toBe('free-simple');
    expect((await c.query('SHOW transaction_read_only')).rows).toEqual([{ transaction_read_only: 'on' }]);
    expect(await s.get().agent.store.approvals.list()).toEqual([]);
  });

  it('a write of another shape is still held (and expires here: nobody approves)', async () => {
    const before = await notes(5);
    await expect(c.query('DELETE FROM prescriptions WHERE id = $1', [5])).rejects.toMatchObject({ code: '42501' });
    await expect(c.query("UPDATE visits SET department = 'x' WHERE id = 5")).rejects.toMatchObject({ code: '42501' });
    expect(await notes(5)).toBe(before);
  });
});
