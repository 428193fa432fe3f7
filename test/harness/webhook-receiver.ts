// A real webhook receiver (node:http on port 0) for the approval-notification tests: it keeps what was
// posted and answers from a script (status codes, or 'hang' to never answer).
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Receiver {
  url: string;
  posts: { path: string; contentType?: string; body: any; raw: string }[];
  /** Requests the receiver got (a hanging receiver never answers them). */
  hits: number;
  /** Status codes to answer with, in order; then 200. `'hang'` never answers. */
  script: (number | 'hang')[];
  /** Resolves once `n` posts were answered 2xx. */
  waitFor(n: number): Promise<void>;
  /** Resolves once `n` requests arrived, answered or not. */
  waitForHits(n: number): Promise<void>;
  close(): Promise<void>;
}

export async function receiver(script: (number | 'hang')[] = []): Promise<Receiver> {
  const waiters: { n: number; resolve: () => void }[] = [];
  const hitWaiters: { n: number; resolve: () => void }[] = [];
  const held: http.ServerResponse[] = [];
  const r: Receiver = {
    url: '',
    posts: [],
    hits: 0,
    script,
    waitFor: (n) => new Promise((resolve) => (r.posts.length >= n ? resolve() : waiters.push({ n, resolve }))),
    waitForHits: (n) => new Promise((resolve) => (r.hits >= n ? resolve() : hitWaiters.push({ n, resolve }))),
    close: async () => {
      for (const res of held) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server = http.createServer((req, res) => {
    r.hits++;
    for (const w of hitWaiters.filter((w) => r.hits >= w.n)) w.resolve();
    let raw = '';
    req.on('data', (d) => (raw += d));
    req.on('end', () => {
      const step = r.script.shift() ?? 200;
      if (step === 'hang') return void held.push(res);
      res.writeHead(step).end();
      if (step >= 300) return;
      r.posts.push({ path: req.url ?? '', contentType: req.headers['content-type'], body: /json/.test(req.headers['content-type'] ?? '') ? JSON.parse(raw) : raw, raw });
      for (const w of waiters.filter((w) => r.posts.length >= w.n)) w.resolve();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  r.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/T000/B000/s3cr3t-path`;
  return r;
}

