// Approval webhooks end to end (issue 8): psql through the tunnel runs a write, the agent holds it and
// tells the connection's webhook; the approval is announced too, and the write runs once. A webhook that
// never answers holds up neither the session nor the approval.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { decideNextApproval, psql, startExtraAgent, useStack, type ExtraAgent } from '../harness/stack.js';
import { receiver, type Receiver } from '../harness/webhook-receiver.js';

const s = useStack({ patients: 50 });
let rx: Receiver;
let dead: Receiver;
let agent: ExtraAgent; //     webhook → rx
let deadAgent: ExtraAgent; // webhook → a receiver that never answers
let db: pg.Client;

beforeAll(async () => {
  rx = await receiver();
  dead = await receiver(Array(100).fill('hang'));
  agent = await startExtraAgent(s.get(), { agentId: 'agent-webhook', approval: { webhook: { url: rx.url } } });
  deadAgent = await startExtraAgent(s.get(), { agentId: 'agent-dead-webhook', approval: { webhook: { url: dead.url, timeout: '1s', retries: 1 } } });
  db = new pg.Client({ connectionString: s.get().directUrl });
  await db.connect();
}, 120_000);

afterAll(async () => {
  await db?.end();
  await agent?.stop();
  await deadAgent?.stop();
  await rx?.close();
  await dead?.close();
}, 60_000);

const phoneOf = async (id: number) => (await db.query<{ phone: string }>('SELECT phone FROM patients WHERE id = $1', [id])).rows[0].phone;
/** The stack's approver (group compliance), deciding through the store of the agent that holds the statement. */
const decide = (a: ExtraAgent, verdict: 'approve' | 'deny', reason?: string) => decideNextApproval({ ...s.get(), agent: a.agent }, verdict, reason);

describe('approval webhooks through the stack', () => {
  it('a held UPDATE posts a request; its approval posts a decision; the UPDATE runs once', async () => {
    const ssn = (await db.query<{ ssn: string }>('SELECT ssn FROM patients WHERE id = 3')).rows[0].ssn;
    const run = psql(agent, ['-c', `UPDATE patients SET phone = '555-0100' WHERE ssn = '${ssn}'`]);
    await rx.waitFor(1);
    const req = rx.posts[0].body;
    expect(req).toMatchObject({ event: 'approval.requested', status: 'pending', connection: 'demo-db', agentId: 'agent-webhook', requester: { sub: 'ci-nightly' } });
    expect(req.rule).toEqual(expect.any(String));
    expect(req.statement).toMatch(/^UPDATE patients SET phone = /);
    expect(req.url).toBe(`${agent.agent.url.replace(/^ws/, 'http')}/api/approvals/${req.id}`);
    // The statement filters on a masked column: it is recorded (and sent) without its literals.
    expect(rx.posts[0].raw).not.toContain(ssn);
    expect(await phoneOf(3)).not.toBe('555-0100');

    expect(await decide(agent, 'approve', 'ticket OPS-7')).toBe(req.id);
    const out = await run;
    expect(out.stdout).toContain('UPDATE 1');
    await rx.waitFor(2);
    expect(rx.posts[1].body).toMatchObject({ event: 'approval.approved', id: req.id, decidedBy: 'approver-bot', reason: 'ticket OPS-7' });
    expect(await phoneOf(3)).toBe('555-0100');
  });

  it('a denial is posted and the table is unchanged', async () => {
    const before = rx.posts.length;
    const run = psql(agent, ['-c', `UPDATE patients SET phone = '555-0199' WHERE id = 4`]);
    await rx.waitFor(before + 1);
    await decide(agent, 'deny', 'no ticket');
    const out = await run;
    expect(out.stderr).toMatch(/denied/);
    await rx.waitFor(before + 2);
    expect(rx.posts.slice(before).map((p) => p.body.event)).toEqual(['approval.requested', 'approval.denied']);
    expect(await phoneOf(4)).not.toBe('555-0199');
  });

  it('a webhook that never answers holds up nothing: reads run and an approved write completes', async () => {
    const run = psql(deadAgent, ['-c', 'SELECT count(*) AS n FROM visits', '-c', `UPDATE patients SET phone = '555-0111' WHERE id = 5`, '-c', 'SELECT 42 AS answer']);
    await decide(deadAgent, 'approve');
    const out = await run;
    expect(out.stdout).toContain('UPDATE 1');
    expect(out.stdout).toMatch(/answer\s*\n-+\n\s*42/);
    expect(await phoneOf(5)).toBe('555-0111');
    // The receiver got the request's notification and never answered it.
    await dead.waitForHits(1);
    expect(dead.posts).toHaveLength(0);
  });
});
