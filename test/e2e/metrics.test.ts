// GET /metrics and /readyz (issue 17): scraped and parsed with a real Prometheus text-format parser.
// Metrics are for reviewers on the main listener, or for anyone who reaches metrics.listen; no label
// carries SQL text, an identity or a value.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { request } from 'undici';
import parsePrometheus, { type PromFamily } from 'parse-prometheus-text-format';
import { startExtraAgent, tunnelClient, useStack, type ExtraAgent } from '../harness/stack.js';

const s = useStack({ patients: 50 });
const http = (wsUrl: string) => wsUrl.replace(/^ws/, 'http');

async function get(url: string, token?: string) {
  const res = await request(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: res.statusCode, type: String(res.headers['content-type']), text: await res.body.text() };
}

const family = (fams: PromFamily[], name: string) => fams.find((f) => f.name === name);

describe('/metrics on the main listener', () => {
  let reviewer: string;
  beforeAll(async () => {
    reviewer = (await s.get().issuer.mintDeviceFlowToken('dave@clinic.example')).accessToken; // group compliance
    const c = await tunnelClient(s.get());
    try {
      await c.query('SELECT ssn, full_name FROM patients ORDER BY id LIMIT 3');
      await expect(c.query("SELECT pg_sleep(0) /* 'Pt James Williams' */")).rejects.toMatchObject({ code: '42501' });
    } finally {
      await c.end();
    }
  });

  it.each([
    { desc: 'no token', token: () => undefined, status: 401 },
    { desc: 'a token that is not a reviewer’s (ci-nightly, data-eng)', token: () => s.get().token(), status: 403 },
  ])('$desc → $status', async ({ token, status }) => {
    const r = await get(`${http(s.get().agent.url)}/metrics`, await token());
    expect(r.status).toBe(status);
    expect(r.text).not.toContain('hoop_');
  });

  it('a reviewer scrapes Prometheus text that parses, with the issue’s metrics and no SQL or identity in labels', async () => {
    const r = await get(`${http(s.get().agent.url)}/metrics`, reviewer);
    expect(r.status).toBe(200);
    expect(r.type).toContain('text/plain');
    const fams = parsePrometheus(r.text);
    for (const name of [
      'hoop_sessions_open',
      'hoop_sessions_total',
      'hoop_statements_total',
      'hoop_holds_total',
      'hoop_approval_wait_seconds',
      'hoop_audit_append_seconds',
      'hoop_audit_append_queue',
      'hoop_audit_store_writable',
      'hoop_upstream_connect_errors_total',
      'hoop_upstream_connect_seconds',
      'hoop_refused_total',
      'hoop_tunnel_frames_total',
      'hoop_tunnel_bytes_total',
      'hoop_tunnels_open',
      'nodejs_eventloop_lag_seconds',
      'process_resident_memory_bytes',
    ]) {
      expect(family(fams, name), name).toBeDefined();
    }
    const statements = family(fams, 'hoop_statements_total')!.metrics;
    expect(statements).toContainEqual({ labels: { connection: 'demo-db', decision: 'allow', rule: 'P5.read' }, value: expect.any(String) });
    expect(statements.some((m) => m.labels?.decision === 'block' && m.labels.rule === 'P3.function')).toBe(true); // never P3.function.pg_sleep
    expect(Number(family(fams, 'hoop_sessions_total')!.metrics[0].value)).toBeGreaterThanOrEqual(1);
    expect(family(fams, 'hoop_audit_store_writable')!.metrics[0].value).toBe('1');
    expect(Number(family(fams, 'hoop_tunnel_frames_total')!.metrics.find((m) => m.labels?.direction === 'in')!.value)).toBeGreaterThan(0);
    expect(Number(family(fams, 'hoop_upstream_connect_seconds')!.metrics[0].buckets!['+Inf'])).toBeGreaterThanOrEqual(1); // (this parser keeps a histogram's buckets only)
    // No label value is SQL, a literal, an identity or an address.
    const values = fams.flatMap((f) => f.metrics.flatMap((m) => Object.values(m.labels ?? {})));
    for (const bad of ['SELECT', 'pg_sleep', 'James', 'ci-nightly', 'dave', '@', '127.0.0.1']) {
      expect(values.filter((v) => v.includes(bad)), bad).toEqual([]);
    }
  });

  it('/readyz answers 200 {ready:true} without a token, and only that', async () => {
    const r = await get(`${http(s.get().agent.url)}/readyz`);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.text)).toEqual({ ready: true });
  });
});

describe('metrics.listen: a separate address', () => {
  let A: ExtraAgent;
  beforeAll(async () => {
    A = await startExtraAgent(s.get(), { agentId: 'metrics-a', config: { metrics: { listen: '127.0.0.1:0' } } });
  }, 60_000);
  afterAll(async () => {
    await A?.stop();
  });

  it('serves /metrics there without a token, and not on the main listener', async () => {
    expect(A.agent.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const r = await get(`${A.agent.metricsUrl}/metrics`);
    expect(r.status).toBe(200);
    expect(family(parsePrometheus(r.text), 'hoop_sessions_open')).toBeDefined();
    expect((await get(`${http(A.agent.url)}/metrics`)).status).toBe(404);
  });

  it('/readyz there lists each check', async () => {
    const r = await get(`${A.agent.metricsUrl}/readyz`);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.text)).toEqual({ ready: true, checks: { store: 'ok', 'demo-db.upstream': 'ok', 'demo-db.catalog': 'ok' } });
  });
});
