/**
 * Parsing large texts on a worker thread: a 1 MiB multi-statement Query takes the parser seconds,
 * during which every other session of the agent would wait. One worker per process, requests answered
 * in order; each statement comes back as its own JSON so the caller can build and judge them in slices.
 *
 * The worker is plain CommonJS evaluated from a string (libpg-query is an external dependency both in
 * development and in the built agent), unref'd so it never keeps the process alive.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const lib = require(workerData.lib);
const ready = lib.loadModule();
parentPort.on('message', async ({ id, sql }) => {
  try {
    await ready;
    const tree = lib.parseSync(sql);
    const statements = (tree.stmts || []).filter((s) => s.stmt).map((s) => ({ json: JSON.stringify(s.stmt), start: s.stmt_location || 0, len: s.stmt_len || 0 }));
    parentPort.postMessage({ id, ok: true, statements });
  } catch (err) {
    parentPort.postMessage({ id, ok: false, error: err && err.message ? err.message : String(err) });
  }
});
`;

/** One statement as the worker returns it: its node as JSON, and its byte span (len 0: to the end). */
export interface RawStatement {
  json: string;
  start: number;
  len: number;
}

export type RawParse = { ok: true; statements: RawStatement[] } | { ok: false; error: string };

type Reply = { id: number; ok: true; statements: RawStatement[] } | { id: number; ok: false; error: string };

let worker: Worker | undefined;
let nextId = 0;
const waiting = new Map<number, { resolve: (r: RawParse) => void; reject: (e: Error) => void }>();

function theWorker(): Worker {
  if (worker) return worker;
  const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { lib: createRequire(import.meta.url).resolve('libpg-query') } });
  w.unref();
  w.on('message', (r: Reply) => {
    const p = waiting.get(r.id);
    waiting.delete(r.id);
    p?.resolve(r.ok ? { ok: true, statements: r.statements } : { ok: false, error: r.error });
  });
  const fail = (err: Error): void => {
    worker = undefined;
    for (const p of waiting.values()) p.reject(err);
    waiting.clear();
  };
  w.on('error', fail);
  w.on('exit', (code) => fail(new Error(`the parser worker exited (${code})`)));
  worker = w;
  return w;
}

/** Parse `sql` on the worker. Rejects when the worker fails (the caller parses inline instead). */
export function parseOffThread(sql: string): Promise<RawParse> {
  return new Promise((resolve, reject) => {
    const id = nextId++;
    waiting.set(id, { resolve, reject });
    const w = theWorker();
    w.ref(); // keep the process up while a parse is pending…
    w.postMessage({ id, sql });
  }).finally(() => {
    if (waiting.size === 0) worker?.unref(); // …and only then
  }) as Promise<RawParse>;
}
