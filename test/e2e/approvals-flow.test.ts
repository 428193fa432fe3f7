// Just-in-time approval as people and jobs meet it (issue 8): a CI job's psql runs through a real
// `hoopctl connect --json` process; an approver in another terminal runs `hoopctl approvals approve`.
// Judged from the outside: the database, psql's output and exit code, the JSON events the job sees.
//   ci-nightly  client credentials, data-eng    the requester (a machine)
//   u-dave      device flow, compliance         an approver; also a requester in the last case
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { directQuery, psql, run, useStack } from '../harness/stack.js';
import { Child } from '../harness/child.js';
import { freePort } from '../../shared/net.js';

// Short enough to wait out in the timeout case, long enough for a CLI to start on a busy machine.
const s = useStack({ patients: 50, approvalTimeout: '40s' });
const ROOT = path.resolve(import.meta.dirname, '../..');
const TSX = path.join(ROOT, 'node_modules/.bin/tsx');

let dave: string;
const children: Child[] = [];

beforeAll(async () => {
  dave = (await s.get().issuer.mintDeviceFlowToken('dave@clinic.example')).accessToken;
}, 60_000);
afterAll(async () => {
  for (const c of children) await c.stop();
});

/** `hoopctl connect demo-db --json` as its own process, on a port of its own. */
async function connect(token: string): Promise<{ cli: Child; port: number; events(): Array<Record<string, any>> }> {
  const port = await freePort();
  const cli = new Child(TSX, ['cli/src/main.ts', 'connect', 'demo-db', '--json', '--agent', s.get().agent.url, '--token', token, '--port', String(port)], {
    ...process.env,
    CI: 'true',
  });
  children.push(cli);
  const events = () =>
    cli.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, any>);
  await cli.waitFor(() => events().some((e) => e.type === 'listening'), 'the listening event', 60_000);
  return { cli, port, events };
}

/** The CLI as an approver in another terminal. */
function approvals(token: string, ...args: string[]) {
  return run(TSX, ['cli/src/main.ts', 'approvals', ...args, '--agent', s.get().agent.url], { cwd: ROOT, env: { ...process.env, CI: 'true', HOOPCTL_TOKEN: token }, timeoutMs: 60_000 });
}

function psqlOn(port: number, sql: string) {
  return psql({ ...s.get(), listener: { ...s.get().listener, port } }, ['-c', sql], { timeoutMs: 90_000 });
}

async function notes(id: number): Promise<string | null> {
  return (await directQuery<{ notes: string | null }>(s.get(), 'SELECT notes FROM visits WHERE id = $1', [id]))[0].notes;
}

/** Waits for the job's next approval_requested event after `seen` of them. */
async function nextRequest(job: Awaited<ReturnType<typeof connect>>, seen: number): Promise<string> {
  const requests = () => job.events().filter((e) => e.type === 'approval_requested');
  await job.cli.waitFor(() => requests().length > seen, 'an approval_requested event', 60_000);
  return requests()[seen].data.id as string;
}

describe('a held UPDATE from psql through `hoopctl connect --json`', () => {
  const BUMP = "UPDATE visits SET notes = coalesce(notes, '') || '+' WHERE id = 1";

  it('is approved from another terminal and runs once; the identical statement is held again; a denial changes nothing', async () => {
    const job = await connect(await s.get().token());
    const before = (await notes(1)) ?? '';

    // 1. Held: the job sees approval_requested with the id and the statement.
    const first = psqlOn(job.port, BUMP);
    const id1 = await nextRequest(job, 0);
    expect(job.events().find((e) => e.type === 'approval_requested')).toMatchObject({ data: { id: id1, connection: 'demo-db', sql: BUMP } });
    expect(await notes(1)).toBe(before); // nothing ran while it waits

    // 2. Approved by dave with the CLI: psql's statement completes, once.
    const ok = await approvals(dave, 'approve', id1, '--reason', 'ticket OPS-1');
    expect(ok.code, ok.stderr).toBe(0);
    const r1 = await first;
    expect(r1.code, r1.stderr).toBe(0);
    expect(r1.stdout.trim()).toBe('UPDATE 1');
    expect(r1.stderr).toContain(`statement held for approval ${id1}`);
    expect(await notes(1)).toBe(before + '+');
    await job.cli.waitFor(() => job.events().some((e) => e.type === 'approved' && e.data?.id === id1), 'the approved event');

    // 3. The same text again is a new request: an approval is used once.
    const second = psqlOn(job.port, BUMP);
    const id2 = await nextRequest(job, 1);
    expect(id2).not.toBe(id1);
    const no = await approvals(dave, 'deny', id2, '--reason', 'already done');
    expect(no.code, no.stderr).toBe(0);
    const r2 = await second;
    expect(r2.stderr).toMatch(/ERROR: +hoopctl: approval .* denied by u-dave: already done/);
    expect(r2.stdout).not.toContain('UPDATE 1');
    expect(await notes(1)).toBe(before + '+');
    await job.cli.waitFor(() => job.events().some((e) => e.type === 'denied' && e.data?.id === id2), 'the denied event');

    // 4. A decided request cannot be decided again (no replay of the approval).
    const replay = await approvals(dave, 'approve', id1);
    expect(replay.code).not.toBe(0);
    expect(replay.stderr).toMatch(/consumed|not pending/);
  }, 240_000);

  it('the requester cannot approve their own statement, even as an approver; unanswered, it times out and nothing runs', async () => {
    const job = await connect(dave); // dave is in compliance: an approver of demo-db, and here the requester
    const before = await notes(2);
    const started = performance.now();
    const held = psqlOn(job.port, "UPDATE visits SET notes = 'self-approved' WHERE id = 2");
    const id = await nextRequest(job, 0);

    const self = await approvals(dave, 'approve', id, '--reason', 'trust me');
    expect(self.code).not.toBe(0);
    expect(self.stderr).toMatch(/cannot decide their own request/);

    const r = await held;
    expect(r.stderr).toMatch(/ERROR: +hoopctl: approval .* expired/);
    expect(performance.now() - started).toBeGreaterThan(35_000); // it waited for the connection's timeout
    expect(await notes(2)).toBe(before);
    expect((await s.get().agent.store.approvals.get(id))?.status).toBe('expired');
  }, 240_000);
});
