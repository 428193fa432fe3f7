// The agent on more than one core (issue 15, config `workers`): the real hoop-agent binary with two
// worker processes behind one port. Tunnels land on both workers and stay there; every statement of
// every worker is sealed on the one audit chain before it runs; an approval given through whichever
// worker the approver's request lands on releases a write held in another; a CancelRequest reaches a
// session held by another worker; a worker that dies is replaced; SIGTERM drains all and exits 0.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { request } from 'undici';
import { useStack } from '../harness/stack.js';
import type { Child } from '../harness/child.js';
import { readAuditEvents, startAgentBinary } from '../harness/agent-binary.js';
import { DEMO_CONNECTION, DEMO_DATABASE, type DemoStack } from '../../cli/src/demo/stack.js';
import { TunnelClient } from '../../cli/src/services/tunnel-client.js';
import { startLocalListener } from '../../cli/src/services/local-listener.js';
import { JsonlStore } from '../../agent/src/audit/jsonl-store.js';

const s = useStack({ patients: 50 });

/** Minutes of counting (150⁵ rows with this stack's visits), allowed by policy (pg_sleep is not, P3). */
const FOREVER = 'SELECT count(*) FROM visits a CROSS JOIN visits b CROSS JOIN visits c CROSS JOIN visits d CROSS JOIN visits e';

interface Tunnel {
  worker: number;
  client(): Promise<pg.Client>;
  port: number;
  close(): Promise<void>;
}

describe('hoop-agent with workers: 2', () => {
  let dir: string;
  let dataDir: string;
  let url: string;
  let child: Child;
  const tunnels: Tunnel[] = [];

  const logLines = () =>
    child.stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown> & { msg: string });

  beforeAll(async () => {
    const stack = s.get();
    dir = await mkdtemp(path.join(os.tmpdir(), 'hoop-workers-'));
    ({ child, url, dataDir } = await startAgentBinary(stack, dir, {
      top: 'workers: 2\nreviewers: { groups: [compliance] }\nshutdown:\n  drainTimeout: 5s',
      connection: '    approval:\n      approvers: { groups: [compliance] }',
    }));
  }, 120_000);

  afterAll(async () => {
    for (const t of tunnels) await t.close();
    await child?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  async function api(method: 'GET' | 'POST', p: string, body?: unknown) {
    const approver = (await s.get().issuer.mintDeviceFlowToken('dave@clinic.example')).accessToken;
    const res = await request(url.replace(/^ws/, 'http') + p, {
      method,
      headers: { authorization: `Bearer ${approver}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.statusCode, body: (await res.body.json()) as any };
  }

  /** The first pending approval request, once it exists. */
  async function pending(): Promise<string> {
    for (let i = 0; i < 100; i++) {
      // Each request is a new connection: the workers take turns accepting them, so both forward.
      const id = (await api('GET', '/api/approvals?status=pending')).body.approvals?.[0]?.id;
      if (id) return id;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('no approval request appeared');
  }

  /** Opens a tunnel and reads which worker accepted it from that worker's own log line. */
  async function openTunnel(stack: DemoStack, getToken: () => Promise<string> = stack.token): Promise<Tunnel> {
    const before = logLines().filter((l) => l.msg === 'tunnel accepted').length;
    const client = new TunnelClient({ agentUrl: url, connection: DEMO_CONNECTION, getToken });
    await client.start();
    const listener = await startLocalListener(client, 0);
    await child.waitFor(() => logLines().filter((l) => l.msg === 'tunnel accepted').length > before, 'tunnel accepted');
    const worker = logLines().filter((l) => l.msg === 'tunnel accepted')[before].worker as number;
    const t: Tunnel = {
      worker,
      port: listener.port,
      async client() {
        const c = new pg.Client({ host: listener.host, port: listener.port, user: 'noop', database: DEMO_CONNECTION });
        c.on('error', () => {});
        await c.connect();
        return c;
      },
      async close() {
        await listener.close().catch(() => {});
        await client.stop().catch(() => {});
      },
    };
    tunnels.push(t);
    return t;
  }

  it('starts two workers and spreads tunnels over both; each masks and audits', async () => {
    const stack = s.get();
    const workers = logLines().filter((l) => l.msg === 'worker listening');
    expect(new Set(workers.map((l) => l.pid)).size).toBe(2);
    expect(new Set(workers.map((l) => l.worker))).toEqual(new Set([0, 1]));
    for (let i = 0; i < 4; i++) await openTunnel(stack);
    expect(new Set(tunnels.map((t) => t.worker))).toEqual(new Set([0, 1]));
    for (const t of tunnels) {
      const c = await t.client();
      const r = await c.query('SELECT ssn, mrn FROM patients ORDER BY id LIMIT 1');
      expect(r.rows[0].ssn).not.toMatch(/^\d{3}-\d{2}-\d{4}$/);
      const blocked = await c.query('DROP TABLE visits').catch((e: { code?: string }) => e);
      expect((blocked as { code?: string }).code).toBe('42501');
      await c.end();
    }
  }, 60_000);

  it("/metrics, through any worker, sums every worker's registry", async () => {
    const stack = s.get();
    const reviewer = (await stack.issuer.mintDeviceFlowToken('dave@clinic.example')).accessToken;
    const res = await request(url.replace(/^ws/, 'http') + '/metrics', { headers: { authorization: `Bearer ${reviewer}` } });
    expect(res.statusCode).toBe(200);
    const body = await res.body.text();
    // Sessions ran on both workers (2 each, above): the sum, not one worker's share.
    const line = body.split('\n').find((l) => l.startsWith(`hoop_sessions_total{connection="${DEMO_CONNECTION}"}`));
    expect(Number(line?.split(' ').pop())).toBe(4);
  });

  it('a write held in one worker is approved through the API on any worker, once', async () => {
    const stack = s.get();
    const holder = tunnels.find((t) => t.worker === 0)!;
    const c = await holder.client();
    const note = `workers-e2e ${process.pid}`;
    const held = c.query(`UPDATE visits SET notes = '${note}' WHERE id = 1`);
    const id = await pending();
    const ok = await api('POST', `/api/approvals/${id}/approve`, { reason: 'workers e2e' });
    expect(ok.status).toBe(200);
    expect((await held).rowCount).toBe(1);
    const again = await api('POST', `/api/approvals/${id}/approve`, { reason: 'twice' });
    expect(again.status).toBeGreaterThanOrEqual(400);
    const [after] = await stack.pg.exec(`SELECT count(*)::int AS n FROM visits WHERE notes = '${note}'`, DEMO_DATABASE);
    expect(after.rows[0].n).toBe(1);
    await c.end();
  }, 60_000);

  it("a CancelRequest sent through another worker's tunnel cancels the statement", async () => {
    const a = tunnels.find((t) => t.worker === 0)!;
    const b = tunnels.find((t) => t.worker === 1)!;
    const c = await a.client();
    const key = c as unknown as { processID: number; secretKey: number };
    const running = c.query(FOREVER).then(
      () => 'finished',
      (e: { code?: string }) => e.code,
    );
    await new Promise((r) => setTimeout(r, 500));
    await new Promise<void>((resolve, reject) => {
      const sock = net.connect(b.port, '127.0.0.1', () => {
        const m = Buffer.alloc(16);
        m.writeInt32BE(16, 0);
        m.writeInt32BE(80877102, 4);
        m.writeInt32BE(key.processID, 8);
        m.writeInt32BE(key.secretKey, 12);
        sock.end(m);
      });
      sock.on('close', () => resolve());
      sock.on('error', reject);
    });
    expect(await running).toBe('57014');
    await c.end();
  }, 60_000);

  it('a token revoked through the API closes its tunnels on every worker and opens no new one', async () => {
    const stack = s.get();
    const token = (await stack.issuer.mintDeviceFlowToken('alice@clinic.example')).accessToken;
    const mine: Tunnel[] = [];
    while (new Set(mine.map((t) => t.worker)).size < 2) mine.push(await openTunnel(stack, async () => token));
    const sessions = await Promise.all(mine.map((t) => t.client()));
    const ended = sessions.map((c) => new Promise<void>((resolve) => c.once('end', () => resolve())));
    const res = await request(url.replace(/^ws/, 'http') + '/api/tokens/revoke', { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(res.statusCode).toBe(200);
    await res.body.dump();
    await Promise.all(ended);
    for (const c of sessions) await expect(c.query('SELECT 1')).rejects.toThrow();
    const replay = new TunnelClient({ agentUrl: url, connection: DEMO_CONNECTION, getToken: async () => token });
    await expect(replay.start()).rejects.toMatchObject({ code: 'NOT_AUTHENTICATED', message: expect.stringMatching(/revoked/) });
    for (const t of mine) {
      tunnels.splice(tunnels.indexOf(t), 1);
      await t.close();
    }
  }, 60_000);

  it('a worker that dies is replaced; its sessions are closed in the audit and their held writes withdrawn', async () => {
    const stack = s.get();
    const c = await tunnels.find((t) => t.worker === 1)!.client();
    const held = c.query(`UPDATE visits SET notes = 'never' WHERE id = 2`).then(
      () => 'ran',
      (e: Error) => e.message,
    );
    const id = await pending();
    const victim = logLines().find((l) => l.msg === 'worker listening' && l.worker === 1)!.pid as number;
    process.kill(victim, 'SIGKILL');
    await child.waitFor(() => child.stderr.includes('agent worker exited; starting another'), 'worker restart');
    expect(await held).not.toBe('ran');
    for (let i = 0; i < 50 && (await api('GET', `/api/approvals/${id}`)).body.approval.status === 'pending'; i++) await new Promise((r) => setTimeout(r, 100));
    expect((await api('GET', `/api/approvals/${id}`)).body.approval.status).toBe('withdrawn');
    // Approving it now changes nothing: the statement is gone with its worker.
    expect((await api('POST', `/api/approvals/${id}/approve`, { reason: 'late' })).status).toBeGreaterThanOrEqual(400);
    const [row] = await stack.pg.exec(`SELECT notes FROM visits WHERE id = 2`, DEMO_DATABASE);
    expect(row.rows[0].notes).not.toBe('never');
    await child.waitFor(() => logLines().filter((l) => l.msg === 'worker listening').length === 3, 'a third worker listening', 60_000);
    for (let i = 0; i < 2; i++) {
      const t = await openTunnel(stack);
      const c = await t.client();
      expect((await c.query('SELECT count(*)::int AS n FROM patients')).rows[0].n).toBe(50);
      await c.end();
    }
  }, 90_000);

  it('SIGTERM drains every worker and exits 0; one intact chain holds every session of both', async () => {
    for (const t of tunnels.splice(0)) await t.close();
    child.signal('SIGTERM');
    const exit = await Promise.race([child.terminated, new Promise((r) => setTimeout(() => r('still running'), 30_000))]);
    expect(exit).toEqual({ code: 0, signal: null });
    const store = await JsonlStore.open({ dataDir, agentId: 'verify-only', clock: Date.now });
    try {
      expect(await store.verify()).toMatchObject({ ok: true });
    } finally {
      await store.close();
    }
    const events = await readAuditEvents<{ type: string; agentId: string; seq: number; sessionId?: string }>(dataDir);
    // One chain: one agent id, seq 1..n with no gap, whichever worker ran the statement.
    expect(new Set(events.map((e) => e.agentId)).size).toBe(1);
    expect(events.map((e) => e.seq).sort((a, b) => a - b)).toEqual(events.map((_, i) => i + 1));
    // 4 tunnels' sessions, the held write, the cancelled statement, 2+ revoked, the write held when its
    // worker died, 2 after the restart: every session has its end, the killed worker's written by the primary.
    const starts = events.filter((e) => e.type === 'session_start');
    expect(starts.length).toBeGreaterThanOrEqual(11);
    const ends = events.filter((e) => e.type === 'session_end') as Array<{ sessionId?: string; data?: { reason?: string } }>;
    expect(new Set(ends.map((e) => e.sessionId))).toEqual(new Set(starts.map((e) => e.sessionId)));
    expect(ends.filter((e) => e.data?.reason?.startsWith('agent worker exited'))).toHaveLength(1);
    // The held write: asked in worker 0, decided through the primary's API, used once; all on the chain.
    for (const type of ['approval_decided', 'approval_consumed']) expect(events.filter((e) => e.type === type)).toHaveLength(1);
    expect(events.filter((e) => e.type === 'approval_requested')).toHaveLength(2);
  }, 60_000);
});
