// `hoopctl exec NAME -c SQL | -f FILE`: run statements through the gateway without psql, for CI jobs.
// Held statements wait for their approval like in psql; a denial or timeout exits 6 with the reason.
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import pg from 'pg';
import { ExitCode, UserError } from '../errors.js';
import type { Output } from '../output.js';
import { TunnelClient } from '../services/tunnel-client.js';
import { startLocalListener } from '../services/local-listener.js';
import { resolveToken } from '../services/credentials.js';
import { loadSettings } from '../services/settings.js';
import { statedReason } from '../services/reason.js';

interface ExecOptions {
  command?: string;
  file?: string;
  agent?: string;
  token?: string;
  reason?: string;
  insecure?: boolean;
  transaction?: boolean;
}

export function registerExec(program: Command, run: (fn: (out: Output) => Promise<void>) => Promise<void>): void {
  program
    .command('exec')
    .argument('<name>', 'connection name')
    .description('run SQL through the gateway without psql; waits for approval when a statement is held')
    .option('-c, --command <sql>', 'the SQL to run (several statements allowed)')
    .option('-f, --file <path>', 'read the SQL from a file')
    .option('--agent <url>', 'agent URL (env HOOPCTL_AGENT)')
    .option('--token <token>', 'access token (env HOOPCTL_TOKEN)')
    .option('--reason <text>', 'why this session needs the data, e.g. "ticket OPS-123" (env HOOPCTL_REASON); recorded in the audit and shown to approvers')
    .option('--transaction', 'run the SQL as one transaction (BEGIN … COMMIT); where the connection reviews transactions, its COMMIT waits for one approval of everything it changed')
    .option('--insecure', 'allow ws:// to a non-loopback agent (testing only)')
    .addHelpText(
      'after',
      `
Examples:
  $ hoopctl exec prod-db -c "SELECT count(*) FROM visits"
  $ hoopctl exec prod-db -f nightly-fix.sql --json     # rows and approval events as JSON
  $ hoopctl exec prod-db -f migration.sql --transaction # one reviewed transaction (approval.mode: transaction)

Exit codes: 0 ok, 1 SQL error, 6 a held statement was denied or timed out, 3/4/5 as for connect.`,
    )
    .action((name: string, opts: ExecOptions) => run((out) => exec(name, opts, out)));
}

async function exec(name: string, opts: ExecOptions, out: Output): Promise<void> {
  if (!opts.command === !opts.file) {
    throw new UserError('USAGE', 'give exactly one of -c SQL or -f FILE', { exitCode: ExitCode.Usage });
  }
  const sql = opts.command ?? (await readFile(opts.file!, 'utf8'));
  const agent = opts.agent ?? process.env.HOOPCTL_AGENT ?? (await loadSettings()).agent;
  if (!agent) throw new UserError('NO_AGENT', 'no agent URL', { hint: 'Pass --agent or set HOOPCTL_AGENT.', exitCode: ExitCode.Usage });
  const getToken = () => resolveToken({ flagToken: opts.token, env: process.env, now: Date.now });
  await getToken();
  const events: unknown[] = [];
  const client = new TunnelClient({
    agentUrl: agent,
    connection: name,
    getToken,
    reason: statedReason(opts.reason, process.env),
    allowInsecure: opts.insecure,
    onEvent: (e) => {
      events.push(e);
      if (out.json) out.info(JSON.stringify(e));
      else if (e.message) out.info(e.message);
    },
  });
  await client.start();
  const listener = await startLocalListener(client, 0);
  const db = new pg.Client({ host: listener.host, port: listener.port, user: 'noop', database: name, application_name: 'hoopctl exec' });
  try {
    await db.connect();
    db.on('notice', (n) => {
      if (!out.json) out.info(`NOTICE: ${n.message}`);
    });
    let results;
    try {
      results = opts.transaction ? await inTransaction(db, sql) : await db.query(sql);
    } catch (err) {
      const e = err as { code?: string; message: string; hint?: string };
      const denied = e.code === '42501' && /approval \S+ (denied|expired|withdrawn)/.test(e.message);
      throw new UserError(denied ? 'DENIED' : `SQLSTATE_${e.code ?? 'XX000'}`, e.message, {
        hint: e.hint,
        exitCode: denied ? ExitCode.Denied : ExitCode.Failure,
      });
    }
    const list = (Array.isArray(results) ? results : [results]) as pg.QueryResult[];
    const doc = list.map((r) => ({ command: r.command, rowCount: r.rowCount, fields: r.fields?.map((f) => f.name) ?? [], rows: r.rows }));
    out.result({ results: doc }, () => doc.map(renderResult).join('\n\n'));
  } finally {
    await db.end().catch(() => {});
    await listener.close();
    await client.stop();
  }
}

/** The script inside BEGIN … COMMIT, the COMMIT on its own (a reviewed transaction's COMMIT is held alone). */
async function inTransaction(db: pg.Client, sql: string): Promise<pg.QueryResult | pg.QueryResult[]> {
  await db.query('BEGIN');
  try {
    const results = await db.query(sql);
    await db.query('COMMIT');
    return results;
  } catch (err) {
    await db.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

function renderResult(r: { command: string; rowCount: number | null; fields: string[]; rows: Record<string, unknown>[] }): string {
  if (r.fields.length === 0) return `${r.command}${r.rowCount !== null ? ` ${r.rowCount}` : ''}`;
  const cell = (v: unknown) => (v === null ? '' : v instanceof Date ? v.toISOString() : typeof v === 'object' ? JSON.stringify(v) : String(v));
  const rows = r.rows.map((row) => r.fields.map((f) => cell(row[f])));
  const widths = r.fields.map((f, i) => Math.max(f.length, ...rows.map((x) => x[i].length)));
  const line = (cols: string[]) => cols.map((c, i) => c.padEnd(widths[i])).join(' | ').trimEnd();
  return [line(r.fields), widths.map((w) => '-'.repeat(w)).join('-+-'), ...rows.map(line), `(${r.rows.length} row${r.rows.length === 1 ? '' : 's'})`].join('\n');
}
