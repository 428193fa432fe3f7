// Approval webhooks (issue 8) against a real HTTP receiver (node:http on port 0) and real state stores:
// what is sent (JSON and Slack bodies, nothing secret), when (request and each way it ends), how (retries
// after 5xx, a timeout per try, a bounded queue) and that a dead receiver never holds up the approvals
// a session waits on. Two PgStores on one database stand for two agents: each request is sent once.
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { JsonlStore } from '../../agent/src/audit/jsonl-store.js';
import { PgStore } from '../../agent/src/audit/pg-store.js';
import type { ApprovalRequest } from '../../agent/src/audit/approvals.js';
import type { StateStore } from '../../agent/src/audit/store.js';
import { startApprovalWebhooks, type ApprovalWebhooks } from '../../agent/src/approvals/webhook.js';
import { WebhookDelivery } from '../../agent/src/approvals/delivery.js';
import { silentLogger, type Logger } from '../../agent/src/log.js';
import { freshDatabase, type TestDatabase } from '../harness/pg.js';
import { tempDir } from './audit/fixtures.js';
import { receiver } from '../harness/webhook-receiver.js';

/** A logger that keeps what it was told, to assert failures are logged (and URLs are not). */
function recordingLogger(): Logger & { lines: { level: string; msg: string; fields?: Record<string, unknown> }[] } {
  const lines: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
  const at = (level: string) => (msg: string, fields?: Record<string, unknown>) => void lines.push({ level, msg, fields });
  const log = { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: () => log };
  return log;
}

// ─── fixtures ────────────────────────────────────────────────────────────────────────────────────────

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
});

const REQUESTER = { sub: 'ci-nightly', issuer: 'https://idp.test', email: 'etl@clinic.example', groups: ['data-eng'], claims: { repository: 'acme/etl' } };
const DAVE = { sub: 'u-dave', issuer: 'https://idp.test', email: 'dave@clinic.example', groups: ['compliance'] };
/** What must never leave the agent: a parameter value and the approval's fingerprint. */
const SECRET_PARAM = '123-45-6789';
const FINGERPRINT = 'fp-' + 'f'.repeat(60);

function request(extra: Partial<ApprovalRequest> = {}): ApprovalRequest {
  return {
    sessionId: `s-${randomBytes(4).toString('hex')}`,
    connection: 'clinic',
    requester: REQUESTER,
    sql: 'UPDATE patients SET phone = $1 WHERE id = $2',
    params: [SECRET_PARAM, 7],
    fingerprint: FINGERPRINT,
    timeoutMs: 10 * 60_000,
    rule: 'P4.write',
    ...extra,
  };
}

async function jsonlStore(agentId = 'agent-a'): Promise<StateStore> {
  const dir = tempDir('hoop-webhook-');
  const store = await JsonlStore.open({ dataDir: dir, agentId, clock: Date.now });
  cleanups.push(() => rm(dir, { recursive: true, force: true }), () => store.close());
  return store;
}

function webhooks(store: StateStore, webhook: Record<string, unknown> | undefined, log: Logger = silentLogger): ApprovalWebhooks {
  const connections = new Map([['clinic', { approval: { minApprovals: 1, timeout: '15m', exportRowLimit: 10_000, webhook: webhook && { format: 'json', timeout: '5s', retries: 4, ...webhook } } }]]);
  const w = startApprovalWebhooks({ approvals: store.approvals, connections: connections as any, agentUrl: 'http://agent.test:8443', log, delivery: { backoffMs: 20, maxBackoffMs: 200 } });
  cleanups.push(() => w.close());
  return w;
}

function expectNoSecrets(raw: string) {
  expect(raw).not.toContain(SECRET_PARAM);
  expect(raw).not.toContain(FINGERPRINT);
  expect(raw).not.toContain('acme/etl'); // identity claims stay home
  expect(raw).not.toContain('params');
}

// ─── tests ───────────────────────────────────────────────────────────────────────────────────────────

describe('approval webhooks', () => {
  it('json: posts the request, then its approval, with who decided and why, and no parameter value', async () => {
    const rx = await receiver();
    cleanups.push(() => rx.close());
    const store = await jsonlStore();
    webhooks(store, { url: rx.url });

    const a = await store.approvals.create(request());
    await rx.waitFor(1);
    await store.approvals.decide(a.id, DAVE, 'approve', 'ticket OPS-42');
    await rx.waitFor(2);

    expect(rx.posts.map((p) => [p.path, p.contentType])).toEqual([
      ['/hooks/T000/B000/s3cr3t-path', 'application/json'],
      ['/hooks/T000/B000/s3cr3t-path', 'application/json'],
    ]);
    expect(rx.posts[0].body).toEqual({
      event: 'approval.requested',
      id: a.id,
      status: 'pending',
      connection: 'clinic',
      agentId: 'agent-a',
      requester: { sub: 'ci-nightly', issuer: 'https://idp.test', email: 'etl@clinic.example' },
      statement: 'UPDATE patients SET phone = $1 WHERE id = $2',
      warnings: [],
      rule: 'P4.write',
      createdAt: a.createdAt,
      expiresAt: a.expiresAt,
      approvals: 0,
      minApprovals: 1,
      approveCommand: `hoopctl approvals approve ${a.id}`,
      denyCommand: `hoopctl approvals deny ${a.id} --reason "…"`,
      url: `http://agent.test:8443/api/approvals/${a.id}`,
    });
    expect(rx.posts[1].body).toMatchObject({ event: 'approval.approved', id: a.id, status: 'approved', decidedBy: 'u-dave', reason: 'ticket OPS-42', approvals: 1 });
    for (const p of rx.posts) expectNoSecrets(p.raw);
  });

  it('json and slack carry the session\'s stated purpose (issue 16)', async () => {
    const rx = await receiver();
    cleanups.push(() => rx.close());
    const json = await jsonlStore('agent-json');
    const slack = await jsonlStore('agent-slack');
    webhooks(json, { url: rx.url });
    webhooks(slack, { url: rx.url, format: 'slack' });
    await json.approvals.create(request({ purpose: 'OPS-7: fix <visit> dates' }));
    await rx.waitFor(1);
    await slack.approvals.create(request({ purpose: 'OPS-7: fix <visit> dates' }));
    await rx.waitFor(2);
    expect(rx.posts[0].body).toMatchObject({ event: 'approval.requested', purpose: 'OPS-7: fix <visit> dates' });
    expect(JSON.stringify((rx.posts[1].body as { blocks: unknown[] }).blocks)).toContain('Purpose: OPS-7: fix &lt;visit&gt; dates');
  });

  it('notifies a denial, an expiry and a withdrawal, each once', async () => {
    const rx = await receiver();
    cleanups.push(() => rx.close());
    const store = await jsonlStore();
    webhooks(store, { url: rx.url });

    const denied = await store.approvals.create(request());
    await store.approvals.decide(denied.id, DAVE, 'deny', 'no ticket');
    const expiring = await store.approvals.create(request({ timeoutMs: 30 }));
    // What a holding session does: wait; its deadline timer expires the request.
    expect((await store.approvals.awaitDecision(expiring.id)).status).toBe('expired');
    const withdrawn = await store.approvals.create(request());
    await store.approvals.withdraw(withdrawn.id);
    await rx.waitFor(6);
    // The consumed approval is not a new notification, and nothing arrives twice.
    const approved = await store.approvals.create(request());
    await store.approvals.decide(approved.id, DAVE, 'approve');
    await store.approvals.consume(approved.id, FINGERPRINT);
    await rx.waitFor(8);
    await new Promise((r) => setTimeout(r, 200));

    const seen = rx.posts.map((p) => [p.body.id, p.body.event]);
    expect(seen).toHaveLength(8);
    expect(seen).toEqual(
      expect.arrayContaining([
        [denied.id, 'approval.requested'],
        [denied.id, 'approval.denied'],
        [expiring.id, 'approval.requested'],
        [expiring.id, 'approval.expired'],
        [withdrawn.id, 'approval.requested'],
        [withdrawn.id, 'approval.withdrawn'],
        [approved.id, 'approval.requested'],
        [approved.id, 'approval.approved'],
      ]),
    );
    expect(rx.posts.find((p) => p.body.event === 'approval.denied')!.body).toMatchObject({ decidedBy: 'u-dave', reason: 'no ticket' });
    // Nobody decided an expiry: no voter is named.
    expect(rx.posts.find((p) => p.body.event === 'approval.expired')!.body.decidedBy).toBeUndefined();
  });

  it('slack: an incoming-webhook body with text and blocks; mrkdwn and code fences cannot be broken out of', async () => {
    const rx = await receiver();
    cleanups.push(() => rx.close());
    const store = await jsonlStore();
    webhooks(store, { url: rx.url, format: 'slack' });

    const sql = "UPDATE visits SET notes = '<!channel> ``` *bold*' WHERE id = $1";
    const a = await store.approvals.create(request({ sql }));
    await store.approvals.decide(a.id, DAVE, 'deny', 'see <https://evil.test|docs>');
    await rx.waitFor(2);

    const [req, den] = rx.posts.map((p) => p.body);
    expect(Object.keys(req).sort()).toEqual(['blocks', 'text']);
    expect(req.text).toBe(`:hourglass: Statement held for approval \`${a.id}\` on *clinic* (requested by etl@clinic.example, rule P4.write)`);
    expect(req.blocks[0]).toEqual({ type: 'section', text: { type: 'mrkdwn', text: req.text } });
    // The statement in one fence: no raw <, >, & and no backtick that would close it early.
    expect(req.blocks[1]).toEqual({ type: 'section', text: { type: 'mrkdwn', text: "```UPDATE visits SET notes = '&lt;!channel&gt; ˋˋˋ *bold*' WHERE id = $1```" } });
    expect(JSON.stringify(req.blocks)).toContain(`hoopctl approvals approve ${a.id}`);
    expect(den.text).toBe(`:no_entry: Approval \`${a.id}\` on *clinic* denied by u-dave: see &lt;https://evil.test|docs&gt;`);
    for (const p of rx.posts) expectNoSecrets(p.raw);
  });

  it('retries after 500s with backoff, then delivers once', async () => {
    const rx = await receiver([500, 503]);
    cleanups.push(() => rx.close());
    const store = await jsonlStore();
    const log = recordingLogger();
    webhooks(store, { url: rx.url }, log);

    const a = await store.approvals.create(request());
    await rx.waitFor(1);
    expect(rx.hits).toBe(3);
    expect(rx.posts).toHaveLength(1);
    expect(rx.posts[0].body).toMatchObject({ event: 'approval.requested', id: a.id });
    expect(log.lines.filter((l) => l.level === 'warn')).toEqual([]);
  });

  it('gives up after the configured tries and logs it, by origin only (the URL path is a secret)', async () => {
    const rx = await receiver([500, 500, 500, 500]);
    cleanups.push(() => rx.close());
    const store = await jsonlStore();
    const log = recordingLogger();
    const w = webhooks(store, { url: rx.url, retries: 2 }, log);

    const a = await store.approvals.create(request());
    await until(() => w.pending === 0);
    expect(rx.hits).toBe(3);
    expect(rx.posts).toHaveLength(0);
    const warn = log.lines.find((l) => l.msg === 'approval notification not delivered');
    expect(warn?.fields).toMatchObject({ approvalId: a.id, event: 'approval.requested', tries: 3, error: 'HTTP 500', target: new URL(rx.url).origin });
    expect(JSON.stringify(log.lines)).not.toContain('s3cr3t-path');
  });

  it('a receiver that never answers holds up nothing: requests, decisions and the waiting session go on', async () => {
    const rx = await receiver(Array(20).fill('hang'));
    cleanups.push(() => rx.close());
    const store = await jsonlStore();
    const log = recordingLogger();
    const w = webhooks(store, { url: rx.url, timeout: '300ms', retries: 1 }, log);

    const a = await store.approvals.create(request());
    const waiting = store.approvals.awaitDecision(a.id);
    await rx.waitForHits(1); // the request's notification is in flight, unanswered
    await store.approvals.decide(a.id, DAVE, 'approve');
    expect((await waiting).status).toBe('approved');
    expect(rx.posts).toHaveLength(0);
    // Each try ends at its timeout; then the notification is given up and logged.
    await until(() => w.pending === 0);
    expect(rx.hits).toBe(4); // 2 documents × (1 try + 1 retry)
    expect(log.lines.filter((l) => l.msg === 'approval notification not delivered').map((l) => l.fields?.error)).toEqual([
      'no answer within 300 ms',
      'no answer within 300 ms',
    ]);
  });

  it('the queue is bounded: what does not fit is dropped and logged, never buffered without end', async () => {
    const rx = await receiver(Array(10).fill('hang'));
    cleanups.push(() => rx.close());
    const log = recordingLogger();
    const d = new WebhookDelivery({ log, maxQueued: 2 });
    cleanups.push(() => d.close());
    const target = { url: rx.url, timeoutMs: 60_000, retries: 0 };
    expect([d.send(target, { n: 1 }), d.send(target, { n: 2 }), d.send(target, { n: 3 })]).toEqual([true, true, false]);
    expect(log.lines.map((l) => l.msg)).toContain('webhook queue full; notification dropped');
    await d.close();
    expect(d.send(target, { n: 4 })).toBe(false);
  });

  it('a connection without a webhook sends nothing', async () => {
    const rx = await receiver();
    cleanups.push(() => rx.close());
    const store = await jsonlStore();
    const w = webhooks(store, undefined);
    const a = await store.approvals.create(request());
    await store.approvals.decide(a.id, DAVE, 'approve');
    expect(w.pending).toBe(0);
    expect(rx.hits).toBe(0);
  });
});

describe('approval webhooks with two agents on one PostgreSQL store', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await freshDatabase('webhook');
  }, 120_000);

  it('a request created on A and decided on B is notified once per event, by A', async () => {
    const rx = await receiver();
    cleanups.push(() => rx.close());
    const [a, b] = await Promise.all(['agent-a', 'agent-b'].map((agentId) => PgStore.open({ url: db.url, agentId, clock: Date.now })));
    cleanups.push(() => a.close(), () => b.close());
    // Both agents are configured with the same webhook, as a fleet would be.
    webhooks(a, { url: rx.url });
    webhooks(b, { url: rx.url });

    const req = await a.approvals.create(request());
    const waiting = a.approvals.awaitDecision(req.id);
    await rx.waitFor(1);
    await b.approvals.decide(req.id, DAVE, 'deny', 'not today');
    expect((await waiting).status).toBe('denied');
    await rx.waitFor(2);
    // Both agents heard both changes (NOTIFY reaches every listener); still nothing is sent twice.
    await new Promise((r) => setTimeout(r, 300));
    expect(rx.posts.map((p) => [p.body.event, p.body.agentId, p.body.decidedBy ?? null])).toEqual([
      ['approval.requested', 'agent-a', null],
      ['approval.denied', 'agent-a', 'u-dave'],
    ]);
  });
});

async function until(cond: () => boolean, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
