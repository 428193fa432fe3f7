// `hoopctl exec` as a CI job runs it: reads print rows, a held write waits for its approver and runs
// once when approved; a denial exits 6 and changes nothing.
import { describe, expect, it } from 'vitest';
import path from 'node:path';
import { decideNextApproval, directQuery, run, useStack } from '../harness/stack.js';

const s = useStack();
const CLI = ['--import', 'tsx', path.resolve('cli/src/main.ts')];

const direct = (sql: string) => directQuery(s.get(), sql);

describe('hoopctl exec', () => {
  it('runs a read and prints its rows as JSON', async () => {
    const env = { ...process.env, HOOPCTL_TOKEN: await s.get().token(), HOOPCTL_AGENT: s.get().agent.url };
    const r = await run('node', [...CLI, 'exec', 'demo-db', '-c', 'SELECT id, ssn FROM patients WHERE id = 1', '--json'], { env });
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ results: [{ command: 'SELECT', rowCount: 1, fields: ['id', 'ssn'], rows: [{ id: 1, ssn: '***' }] }] });
  }, 60_000);

  it('a held UPDATE runs once when approved; a denied one exits 6 and changes nothing', async () => {
    const env = { ...process.env, HOOPCTL_TOKEN: await s.get().token(), HOOPCTL_AGENT: s.get().agent.url };
    const approved = run('node', [...CLI, 'exec', 'demo-db', '-c', "UPDATE patients SET diagnosis = 'reviewed' WHERE id = 5"], { env });
    await decideNextApproval(s.get(), 'approve');
    const ok = await approved;
    expect(ok.code).toBe(0);
    expect(ok.stderr).toMatch(/statement held for approval ap_/);
    expect(ok.stdout.trim()).toBe('UPDATE 1');
    expect(await direct('SELECT diagnosis FROM patients WHERE id = 5')).toEqual([{ diagnosis: 'reviewed' }]);

    const denied = run('node', [...CLI, 'exec', 'demo-db', '-c', "UPDATE patients SET diagnosis = 'nope' WHERE id = 5"], { env });
    await decideNextApproval(s.get(), 'deny', 'not during business hours');
    const no = await denied;
    expect(no.code).toBe(6);
    expect(no.stderr).toMatch(/denied by approver-bot: not during business hours/);
    expect(await direct('SELECT diagnosis FROM patients WHERE id = 5')).toEqual([{ diagnosis: 'reviewed' }]);
  }, 90_000);
});
