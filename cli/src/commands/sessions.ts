// `hoopctl sessions`: the audit trail as people read it. List with filters, show one session's events,
// replay its masked transcript like a psql session.
import type { Command } from 'commander';
import { ExitCode, UserError } from '../errors.js';
import type { Output } from '../output.js';
import { getJson, parseBody } from '../services/agent-api.js';
import { resolveToken } from '../services/credentials.js';
import { loadSettings } from '../services/settings.js';
import { enumFlag, intFlag, timeFlag } from '../flags.js';
import { SessionEvents, SessionPage, SessionRecording, type ChainedEvent as AuditEvent, type RecordingEntry, type SessionSummary } from '../../../shared/api/sessions.js';

/** The decisions a statement can get (agent policy rules.ts `Action`). */
const DECISIONS = ['allow', 'block', 'hold'] as const;

interface ListOptions {
  agent?: string;
  token?: string;
  user?: string;
  connection?: string;
  since?: string;
  until?: string;
  decision?: (typeof DECISIONS)[number];
  limit?: number;
  cursor?: string;
}

export function registerSessions(program: Command, run: (fn: (out: Output) => Promise<void>) => Promise<void>): void {
  const sessions = program
    .command('sessions')
    .description('list sessions from the audit trail: who ran what, when, under which decision')
    .option('--agent <url>', 'agent URL (env HOOPCTL_AGENT; default: the one `hoopctl login` remembered)')
    .option('--token <token>', 'access token (env HOOPCTL_TOKEN; default: the stored login)')
    .option('--user <sub>', "only this identity's sessions (reviewers only, for others than yourself)")
    .option('--connection <name>', 'only sessions on this connection')
    .option('--since <time>', 'started at or after: ISO date/time (2026-11-29, 2026-11-29T08:00:00Z) or a duration back from now (1h, 7d)', timeFlag('--since'))
    .option('--until <time>', 'started before: same forms as --since', timeFlag('--until'))
    .option('--decision <d>', `with at least one statement decided so: ${DECISIONS.join(' | ')}`, enumFlag('--decision', DECISIONS))
    .option('--limit <n>', 'at most this many, 1 to 500 (default 50)', intFlag('--limit', 1, 500))
    .option('--cursor <c>', 'continue after the page that printed this cursor')
    .addHelpText('after', '\nExamples:\n  $ hoopctl sessions --decision block --since 24h\n  $ hoopctl sessions show 3f2c…  --json')
    .action((opts: ListOptions) => run((out) => list(opts, out)));
  sessions
    .command('show')
    .argument('<id>', 'session id (from `hoopctl sessions`)')
    .description("one session's events in order: start, every statement with its decision and result, end")
    .option('--agent <url>', 'agent URL')
    .option('--token <token>', 'access token')
    // --agent/--token may land on the parent `sessions` when given after the id: merge both.
    .action((id: string, _opts: ListOptions, cmd: Command) => run((out) => show(id, cmd.optsWithGlobals<ListOptions>(), out)));
  sessions
    .command('replay')
    .argument('<id>', 'session id (from `hoopctl sessions`)')
    .description("one session's recording, like a psql transcript: each statement and its first rows (masked as the client saw them)")
    .option('--agent <url>', 'agent URL')
    .option('--token <token>', 'access token')
    .addHelpText('after', '\nExamples:\n  $ hoopctl sessions replay 3f2c…\n  $ hoopctl sessions replay 3f2c… --json | jq \'.recording[].sql\'')
    .action((id: string, _opts: ListOptions, cmd: Command) => run((out) => replay(id, cmd.optsWithGlobals<ListOptions>(), out)));
}

export async function agentAndToken(opts: { agent?: string; token?: string }): Promise<{ agent: string; token: string }> {
  const agent = opts.agent ?? process.env.HOOPCTL_AGENT ?? (await loadSettings()).agent;
  if (!agent) throw new UserError('NO_AGENT', 'no agent URL', { hint: 'Pass --agent or set HOOPCTL_AGENT.', exitCode: ExitCode.Usage });
  return { agent, token: await resolveToken({ flagToken: opts.token, env: process.env, now: Date.now }) };
}

async function list(opts: ListOptions, out: Output): Promise<void> {
  const { agent, token } = await agentAndToken(opts);
  const page = parseBody(SessionPage, await getJson(agent, '/api/sessions', token, {
    user: opts.user,
    connection: opts.connection,
    since: opts.since,
    until: opts.until,
    decision: opts.decision,
    limit: opts.limit === undefined ? undefined : String(opts.limit),
    cursor: opts.cursor,
  }), '/api/sessions');
  out.result(page, () => sessionsTable(page.sessions, page.nextCursor));
}

async function show(id: string, opts: ListOptions, out: Output): Promise<void> {
  const { agent, token } = await agentAndToken(opts);
  const doc = parseBody(SessionEvents, await getJson(agent, `/api/sessions/${encodeURIComponent(id)}`, token), '/api/sessions/ID');
  out.result(doc, () => doc.events.map(eventLine).join('\n'));
}

async function replay(id: string, opts: ListOptions, out: Output): Promise<void> {
  const { agent, token } = await agentAndToken(opts);
  const doc = parseBody(SessionRecording, await getJson(agent, `/api/sessions/${encodeURIComponent(id)}/recording`, token), '/api/sessions/ID/recording');
  out.result(doc, () => transcript(doc.recording));
}

/** The recording as psql would have shown it: statement, aligned rows, row count, then what was left out. */
export function transcript(entries: RecordingEntry[]): string {
  if (entries.length === 0) return 'no recording for this session (nothing ran, recording was off, or it was deleted by retention)';
  const out: string[] = [];
  let lastSeq: number | undefined;
  for (const e of entries) {
    if (e.sql !== undefined && (e.seq === undefined || e.seq !== lastSeq)) {
      out.push('', `-- ${e.ts ? e.ts.replace('T', ' ').slice(0, 19) : ''}${e.seq !== undefined ? `  #${e.seq}` : ''}`.trimEnd(), /;\s*$/.test(e.sql) ? e.sql : `${e.sql};`);
    }
    lastSeq = e.seq;
    if (e.columns) {
      out.push(table(e.columns, e.types ?? [], e.rows ?? []));
      const n = e.rowCount ?? e.rows?.length ?? 0;
      out.push(`(${n} ${n === 1 ? 'row' : 'rows'})`);
    } else if (e.tag) out.push(e.tag);
    if (e.truncated?.rowsOmitted) out.push(`(recording shows the first ${e.rows?.length ?? 0} of these rows; ${e.truncated.rowsOmitted} more were not recorded)`);
    if (e.truncated?.values) out.push('(long values are cut in the recording)');
    if (e.truncated?.session) out.push('', `-- ${e.note ?? 'recording stopped'}`);
    else if (e.note) out.push(e.sqlstate ? `${e.note}  (SQLSTATE ${e.sqlstate})` : e.note);
  }
  return out.join('\n').replace(/^\n/, '');
}

// Numeric type OIDs (int2/4/8, oid, float4/8, numeric, money): psql aligns these to the right.
const NUMERIC_TYPES = new Set([20, 21, 23, 26, 700, 701, 790, 1700]);

/** psql's aligned format: centred headers, numbers to the right, text to the left (the last column unpadded). */
function table(columns: string[], types: number[], rows: unknown[][]): string {
  const cells = rows.map((r) => columns.map((_, i) => cell(r[i])));
  const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((r) => r[i].length)));
  const right = columns.map((_, i) => NUMERIC_TYPES.has(types[i]));
  const last = columns.length - 1;
  const head = columns.map((c, i) => {
    const pad = widths[i] - c.length;
    return ' '.repeat(Math.floor(pad / 2)) + c + ' '.repeat(pad - Math.floor(pad / 2));
  });
  const row = (r: string[]) => ' ' + r.map((v, i) => (right[i] ? v.padStart(widths[i]) : i === last ? v : v.padEnd(widths[i]))).join(' | ');
  return [` ${head.join(' | ')} `, widths.map((w) => '-'.repeat(w + 2)).join('+'), ...cells.map(row)].join('\n');
}

function cell(v: unknown): string {
  if (v === null || v === undefined) return '';
  const s = typeof v === 'string' ? v : typeof v === 'object' ? JSON.stringify(v) : String(v);
  return s.replace(/\r?\n/g, '\\n');
}

export function sessionsTable(rows: SessionSummary[], next?: string): string {
  if (rows.length === 0) return 'no sessions match';
  const head = ['STARTED', 'IDENTITY', 'CONNECTION', 'STMTS', 'DECISIONS', 'SESSION', 'PURPOSE'];
  const body = rows.map((r) => [r.startedAt.replace('T', ' ').slice(0, 19), r.email ?? r.sub ?? '?', r.connection ?? '?', String(r.statements), r.decisions.join(',') || '-', r.sessionId, r.purpose ? oneLine(r.purpose, 60) : '-']);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const fmt = (cols: string[]) => cols.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  return [fmt(head), ...body.map(fmt), ...(next ? [`more: --cursor ${next}`] : [])].join('\n');
}

function eventLine(e: AuditEvent): string {
  const d = e.data;
  const t = e.ts.replace('T', ' ').slice(0, 23);
  switch (e.type) {
    case 'statement':
      return `${t}  #${e.seq} ${String(d.decision).padEnd(5)} ${d.rule}  ${oneLine(String(d.sql ?? ''))}${Array.isArray(d.params) ? `  params=${JSON.stringify(d.params)}` : ''}`;
    case 'statement_result':
      return `${t}  #${e.seq}   → ${d.sqlstate} rows=${d.rows} ${d.durationMs}ms (statement #${d.statementSeq ?? '?'})${d.note ? ` ${d.note}` : ''}`;
    case 'approval_requested':
      return `${t}  #${e.seq} held  statement #${d.statementSeq ?? '?'} waits for approval ${d.approvalId}`;
    case 'approval_decided': {
      // Who decided is the event's identity (the approver), not the session's owner.
      const verdict = d.verdict === 'approve' ? 'approved' : d.verdict === 'deny' ? 'denied' : String(d.verdict);
      const count = typeof d.approvals === 'number' && typeof d.minApprovals === 'number' && d.minApprovals > 1 ? ` (${d.approvals}/${d.minApprovals})` : '';
      return `${t}  #${e.seq} ${verdict} by ${who(e)}: approval ${d.approvalId}${count}${d.reason ? `, "${oneLine(String(d.reason))}"` : ''}`;
    }
    case 'approval_consumed':
      return `${t}  #${e.seq} ran   statement #${d.statementSeq ?? '?'} under approval ${d.approvalId}`;
    case 'approval_withdrawn':
    case 'approval_expired':
      return `${t}  #${e.seq} ${e.type.slice('approval_'.length)}: approval ${d.approvalId}${d.reason ? ` (${oneLine(String(d.reason))})` : ''}; the statement was not run`;
    case 'session_start': {
      const amr = e.identity?.claims?.amr;
      const how = Array.isArray(amr) && amr.length ? `  signed in with ${amr.join('+')}` : '';
      return `${t}  #${e.seq} session_start ${who(e)}${how}${d.purpose ? `  purpose: ${oneLine(String(d.purpose))}` : '  (no purpose stated)'}  ${JSON.stringify({ ...d, purpose: undefined })}`;
    }
    default:
      return `${t}  #${e.seq} ${e.type} ${JSON.stringify(d)}`;
  }
}

function who(e: AuditEvent): string {
  return e.identity?.email ?? e.identity?.sub ?? 'unknown identity';
}

function oneLine(s: string, max = 120): string {
  const x = s.replace(/\s+/g, ' ').trim();
  return x.length > max ? x.slice(0, max - 3) + '...' : x;
}
