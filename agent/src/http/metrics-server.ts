// The separate metrics listener (config metrics.listen): /metrics, /readyz with each check, and /healthz,
// without a token. Bind it to an address only the monitoring system reaches (loopback, a private network).
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface MetricsSources {
  metrics(): Promise<{ contentType: string; body: string }>;
  ready(): Promise<{ ready: boolean; checks: Record<string, string> }>;
}

export async function listenMetrics(listen: string, src: MetricsSources): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const json = (status: number, body: unknown) =>
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(body));
    if (req.method !== 'GET') return json(405, { error: { code: 'METHOD_NOT_ALLOWED', message: 'only GET' } });
    if (path === '/healthz') return json(200, { ok: true });
    if (path === '/readyz') return void src.ready().then((r) => json(r.ready ? 200 : 503, r));
    if (path === '/metrics') {
      return void src.metrics().then(
        (m) => res.writeHead(200, { 'content-type': m.contentType, 'cache-control': 'no-store' }).end(m.body),
        () => json(500, { error: { code: 'INTERNAL', message: 'metrics unavailable' } }),
      );
    }
    json(404, { error: { code: 'NOT_FOUND', message: `no such endpoint: ${path}` } });
  });
  const i = listen.lastIndexOf(':');
  const host = listen.slice(0, i).replace(/^\[|\]$/g, '');
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(listen.slice(i + 1)), host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
