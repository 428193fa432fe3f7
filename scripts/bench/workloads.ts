// The measured workloads. Each takes a target (direct, relay or the hoopctl local port) and returns how
// much work it did (`units`: transactions, bytes or connections) and the wall time it took.
//
// The bulk read and the connect loop use a lean wire client (the agent's own upstream connector for the
// startup, then raw bytes): no row decoding on the client, so the client's CPU does not mask the path's.
import type net from 'node:net';
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { connectUpstream } from '../../agent/src/upstream/connect.js';
import { run } from './procs.js';

export interface Target {
  host: string;
  port: number;
  user: string;
  /** Empty for the hoopctl path: the agent holds the credential. */
  password: string;
  database: string;
}

export interface Measured {
  /** Transactions (pgbench), bytes received (bulk read) or connections (connect loop). */
  units: number;
  seconds: number;
}

export interface PgbenchOptions {
  clients: number;
  threads: number;
  mode: 'simple' | 'prepared';
  seconds: number;
  /**
   * `select-only` (-S, the default), `simple-update` (-N: TPC-B without the branch and teller updates),
   * or `simple-update-autocommit`: -N's statements without its BEGIN … END (a block stays read-only
   * through hoopctl in statement mode; each write runs read-write on its own).
   */
  script?: 'select-only' | 'simple-update' | 'simple-update-autocommit';
}

/** pgbench's built-in -N script, each statement in its own transaction. */
const SIMPLE_UPDATE_AUTOCOMMIT = `\\set aid random(1, 100000 * :scale)
\\set bid random(1, 1 * :scale)
\\set tid random(1, 10 * :scale)
\\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
`;

async function scriptArgs(script: PgbenchOptions['script']): Promise<string[]> {
  if (script === 'simple-update') return ['-N'];
  if (script !== 'simple-update-autocommit') return ['-S'];
  const file = path.join(os.tmpdir(), 'hoop-bench-tpcb-autocommit.sql');
  await writeFile(file, SIMPLE_UPDATE_AUTOCOMMIT);
  return ['-f', file];
}

/** pgbench -S or -N; throughput is pgbench's own "tps (without initial connection time)". */
export async function pgbench(t: Target, o: PgbenchOptions): Promise<Measured & { tps: number }> {
  const args = ['-n', ...(await scriptArgs(o.script)), '-M', o.mode, '-c', String(o.clients), '-j', String(o.threads), '-T', String(o.seconds)];
  args.push('-h', t.host, '-p', String(t.port), '-U', t.user, t.database);
  const r = await run('pgbench', args, { env: pgEnv(t), timeoutMs: (o.seconds + 60) * 1000 });
  const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(r.stdout);
  const done = /number of transactions actually processed: (\d+)/.exec(r.stdout);
  if (r.code !== 0 || !tps || !done) throw new Error(`pgbench failed (${r.code}) on port ${t.port}: ${r.stderr.trim() || r.stdout.trim()}`);
  return { units: Number(done[1]), seconds: Number(done[1]) / Number(tps[1]), tps: Number(tps[1]) };
}

export function pgEnv(t: Target): NodeJS.ProcessEnv {
  return { ...process.env, PGPASSWORD: t.password, PGSSLMODE: 'disable', PGCONNECT_TIMEOUT: '10', PGAPPNAME: 'hoop-bench', LC_ALL: 'C' };
}

function open(t: Target) {
  return connectUpstream({ host: t.host, port: t.port, database: t.database, user: t.user, password: t.password, sslmode: 'disable', connectTimeoutMs: 15_000 });
}

function queryMessage(sql: string): Buffer {
  const text = Buffer.from(sql + '\0', 'utf8');
  const msg = Buffer.allocUnsafe(5 + text.length);
  msg[0] = 0x51; // Q
  msg.writeInt32BE(4 + text.length, 1);
  text.copy(msg, 5);
  return msg;
}

const TERMINATE = Buffer.from([0x58, 0, 0, 0, 4]);

/**
 * Sends one simple Query and reads until ReadyForQuery, walking only the 5-byte message headers.
 * Resolves with the number of bytes received.
 */
function simpleQuery(sock: net.Socket, leftover: Buffer, sql: string): Promise<number> {
  return new Promise((resolve, reject) => {
    let bytes = 0;
    let need = 0; // body bytes left in the current message
    let type = 0;
    let hlen = 0;
    const head = Buffer.alloc(5);
    let failed = false;
    const onData = (chunk: Buffer) => {
      bytes += chunk.length;
      let i = 0;
      while (i < chunk.length) {
        if (need > 0) {
          const take = Math.min(need, chunk.length - i);
          i += take;
          need -= take;
          if (need === 0 && end()) return;
          continue;
        }
        head[hlen++] = chunk[i++];
        if (hlen === 5) {
          hlen = 0;
          type = head[0];
          need = head.readInt32BE(1) - 4;
          if (type === 0x45 /* E */) failed = true;
          if (need === 0 && end()) return;
        }
      }
    };
    const end = (): boolean => {
      if (type !== 0x5a /* Z */) return false;
      sock.off('data', onData).off('error', reject).off('close', onClose);
      sock.pause();
      if (failed) reject(new Error(`query failed (ErrorResponse): ${sql.slice(0, 60)}`));
      else resolve(bytes);
      return true;
    };
    const onClose = () => reject(new Error('connection closed during the query'));
    sock.on('data', onData).on('error', reject).on('close', onClose);
    sock.write(queryMessage(sql));
    if (leftover.length) onData(leftover);
    sock.resume();
  });
}

/** One connection, one big SELECT, every byte received counted; the connect time is not included. */
export async function bulkRead(t: Target, sql: string): Promise<Measured> {
  const c = await open(t);
  try {
    const t0 = process.hrtime.bigint();
    const bytes = await simpleQuery(c.socket, c.leftover, sql);
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    return { units: bytes, seconds };
  } finally {
    c.socket.end(TERMINATE);
  }
}

export interface IdleSessions {
  opened: number;
  failed: number;
  /** Wall time until every connection was open (or had failed). */
  seconds: number;
  /** Median time of one connect (startup through the first ReadyForQuery). */
  connectP50Ms: number;
  firstError?: string;
  close(): void;
}

/** Opens `n` connections at once and keeps them idle (after their first ReadyForQuery) until close(). */
export async function openIdle(t: Target, n: number): Promise<IdleSessions> {
  const t0 = process.hrtime.bigint();
  const times: number[] = [];
  const settled = await Promise.allSettled(
    Array.from({ length: n }, async () => {
      const s = process.hrtime.bigint();
      const c = await open(t);
      times.push(Number(process.hrtime.bigint() - s) / 1e6);
      return c;
    }),
  );
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const sockets = settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value.socket] : []));
  const errors = settled.flatMap((r) => (r.status === 'rejected' ? [String((r.reason as Error).message ?? r.reason)] : []));
  times.sort((a, b) => a - b);
  return {
    opened: sockets.length,
    failed: errors.length,
    seconds,
    connectP50Ms: times[Math.floor(times.length / 2)] ?? 0,
    firstError: errors[0],
    close: () => sockets.forEach((s) => s.end(TERMINATE)),
  };
}

/** `n` sequential connections, each: startup (+ SCRAM where the path needs it), SELECT 1, Terminate. */
export async function connectLoop(t: Target, n: number): Promise<Measured> {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const c = await open(t);
    await simpleQuery(c.socket, c.leftover, 'SELECT 1');
    c.socket.end(TERMINATE);
  }
  return { units: n, seconds: Number(process.hrtime.bigint() - t0) / 1e9 };
}
