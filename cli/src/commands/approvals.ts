// `hoopctl approvals`: decide statements the agent holds for approval (issue 8, SECURITY-POLICY.md P4).
//
//   hoopctl approvals                      pending requests you may decide: an ink list on a TTY
//                                          (↑/↓, a approve, d deny, r refresh, q quit), else a table or,
//                                          with --json, one JSON document
//   hoopctl approvals show ID              one request: statement, parameters, requester, votes
//   hoopctl approvals approve ID [--reason R]
//   hoopctl approvals deny ID --reason R
//
// The agent decides who may vote (the connection's approver groups, never the requester, once per
// identity); this command only shows its answer, with the exit codes of errors.ts (401 → 3, 403 → 4).
import type { Command } from 'commander';
import { ExitCode, UserError } from '../errors.js';
import type { Output } from '../output.js';
import { getJson, parseBody, postJson } from '../services/agent-api.js';
import { ApprovalDecision, ApprovalList, ApprovalOne, type ApprovalView, type Verdict } from '../../../shared/api/approvals.js';
import { resolveToken } from '../services/credentials.js';
import { loadSettings } from '../services/settings.js';
import { enumFlag } from '../flags.js';

export type { ApprovalView, Verdict };

export interface ApprovalsOptions {
  agent?: string;
  token?: string;
  connection?: string;
  status?: string;
  all?: boolean;
  reason?: string;
}


const STATUSES = ['pending', 'approved', 'denied', 'expired', 'withdrawn', 'consumed', 'all'] as const;

type Run = (fn: (out: Output) => Promise<void>) => Promise<void>;

export function registerApprovals(program: Command, run: Run): void {
  const approvals = program
    .command('approvals')
    .description('list statements held for approval that you may decide; approve or deny them')
    .option('--agent <url>', 'agent URL (env HOOPCTL_AGENT; default: the one `hoopctl login` remembered)')
    .option('--token <token>', 'access token (env HOOPCTL_TOKEN; default: the stored login)')
    .option('--connection <name>', 'only requests on this connection')
    .option('--status <s>', `${STATUSES.join(' | ')} (default pending)`, enumFlag('--status', STATUSES))
    .option('--all', 'also requests you cannot decide (your own, already voted, decided)')
    .addHelpText(
      'after',
      '\nOn a terminal the list is interactive: ↑/↓ select, a approve, d deny (asks for a reason), r refresh, q quit.\n' +
        '\nExamples:\n  $ hoopctl approvals --json\n  $ hoopctl approvals approve ap_3Xk… --reason "ticket OPS-42"\n  $ hoopctl approvals deny ap_3Xk… --reason "not in the change window"',
    )
    .action((opts: ApprovalsOptions) => run((out) => listApprovals(opts, out)));
  approvals
    .command('show')
    .argument('<id>', 'approval id (from `hoopctl approvals` or the notice psql printed)')
    .description('one request: the statement, its parameters (redacted), requester, connection, votes')
    .option('--agent <url>', 'agent URL')
    .option('--token <token>', 'access token')
    .action((id: string, _opts: ApprovalsOptions, cmd: Command) => run((out) => showApproval(id, merged(cmd), out)));
  approvals
    .command('approve')
    .argument('<id>', 'approval id')
    .description('approve a held statement (it runs once, exactly as shown, when enough approvers agreed)')
    .option('--reason <text>', 'why (recorded in the audit trail)')
    .option('--agent <url>', 'agent URL')
    .option('--token <token>', 'access token')
    .action((id: string, _opts: ApprovalsOptions, cmd: Command) => run((out) => decideApproval(id, 'approve', merged(cmd), out)));
  approvals
    .command('deny')
    .argument('<id>', 'approval id')
    .description('deny a held statement: nothing runs and the client gets an error')
    .requiredOption('--reason <text>', 'why (required; recorded in the audit trail and shown to the requester)')
    .option('--agent <url>', 'agent URL')
    .option('--token <token>', 'access token')
    .action((id: string, _opts: ApprovalsOptions, cmd: Command) => run((out) => decideApproval(id, 'deny', merged(cmd), out)));
}

/**
 * A subcommand's options with those given to `approvals` itself: commander hands `--agent`/`--token`
 * to the parent when both declare them (`hoopctl approvals approve ID --agent …`).
 */
function merged(cmd: Command): ApprovalsOptions {
  return cmd.optsWithGlobals<ApprovalsOptions>();
}

async function agentAndToken(opts: ApprovalsOptions): Promise<{ agent: string; token: string }> {
  const agent = opts.agent ?? process.env.HOOPCTL_AGENT ?? (await loadSettings()).agent;
  if (!agent) throw new UserError('NO_AGENT', 'no agent URL', { hint: 'Pass --agent or set HOOPCTL_AGENT.', exitCode: ExitCode.Usage });
  return { agent, token: await resolveToken({ flagToken: opts.token, env: process.env, now: Date.now }) };
}

/** The requests the caller may see; for the default (pending) list only those they may decide, unless `all`. */
export async function fetchApprovals(agent: string, token: string, opts: Pick<ApprovalsOptions, 'connection' | 'status' | 'all'> = {}): Promise<ApprovalView[]> {
  const page = parseBody(ApprovalList, await getJson(agent, '/api/approvals', token, { status: opts.status ?? 'pending', connection: opts.connection }), '/api/approvals');
  // The default view is a to-do list; asking for another status (or --all) shows what is visible.
  const todo = !opts.all && (opts.status ?? 'pending') === 'pending';
  return todo ? page.approvals.filter((a) => a.canDecide) : page.approvals;
}

export async function listApprovals(opts: ApprovalsOptions, out: Output): Promise<void> {
  const { agent, token } = await agentAndToken(opts);
  const rows = await fetchApprovals(agent, token, opts);
  if (out.interactive) {
    const { runApprovalsScreen } = await import('../ui/approvals.js');
    await runApprovalsScreen({
      initial: rows,
      load: () => fetchApprovals(agent, token, opts),
      decide: async (id, verdict, reason) => (await postDecision(agent, token, id, verdict, reason)).approval,
    });
    return;
  }
  out.result({ approvals: rows }, () => approvalsText(rows, Date.now()));
}

export async function showApproval(id: string, opts: ApprovalsOptions, out: Output): Promise<void> {
  const { agent, token } = await agentAndToken(opts);
  const doc = parseBody(ApprovalOne, await getJson(agent, `/api/approvals/${encodeURIComponent(id)}`, token), '/api/approvals/ID');
  out.result(doc, () => approvalDetail(doc.approval, Date.now()).join('\n'));
}

export async function decideApproval(id: string, verdict: Verdict, opts: ApprovalsOptions, out: Output): Promise<void> {
  const reason = opts.reason?.trim() || undefined;
  if (verdict === 'deny' && !reason) {
    throw new UserError('REASON_REQUIRED', 'a denial needs a reason', { hint: 'Pass --reason "…".', exitCode: ExitCode.Usage });
  }
  const { agent, token } = await agentAndToken(opts);
  const res = await postDecision(agent, token, id, verdict, reason);
  if (res.warning) out.info(`warning: ${res.warning}`);
  out.result(res, () => decisionLine(res.approval, verdict));
}

/** POST /api/approvals/ID/approve|deny; refusals become UserErrors with the agent's words (403 → 4, 401 → 3). */
export async function postDecision(
  agentUrl: string,
  token: string,
  id: string,
  verdict: Verdict,
  reason?: string,
): Promise<ApprovalDecision> {
  return parseBody(ApprovalDecision, await postJson(agentUrl, `/api/approvals/${encodeURIComponent(id)}/${verdict}`, token, reason === undefined ? {} : { reason }), `/api/approvals/ID/${verdict}`);
}

// ─── presenters (plain text; the ink screen reuses them) ────────────────────────────────────────────

/** "42s", "3m", "2h 5m", "3d". */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 24) return m % 60 ? `${h}h ${m % 60}m` : `${h}h`;
  return `${Math.floor(h / 24)}d`;
}

export function requesterOf(a: Pick<ApprovalView, 'requester'>): string {
  return a.requester.email ?? a.requester.sub;
}

export function oneLine(s: string, max = 80): string {
  const x = s.replace(/\s+/g, ' ').trim();
  return x.length > max ? x.slice(0, max - 3) + '...' : x;
}

/** Parameters as the agent stored them (already redacted), one line. */
export function formatParams(params: unknown[] | undefined): string {
  if (!params || params.length === 0) return '';
  return params.map((p, i) => `$${i + 1}=${p === null ? 'NULL' : typeof p === 'string' ? JSON.stringify(p) : JSON.stringify(p) ?? String(p)}`).join(' ');
}

export function approvalsText(rows: ApprovalView[], now: number): string {
  if (rows.length === 0) return 'no approval requests match';
  // A STATUS column only when the list is not the to-do list of pending requests.
  const withStatus = rows.some((a) => a.status !== 'pending');
  const head = ['ID', ...(withStatus ? ['STATUS'] : []), 'AGE', 'CONNECTION', 'REQUESTER', 'VOTES', 'STATEMENT', 'PARAMS'];
  const body = rows.map((a) => [
    a.id,
    ...(withStatus ? [a.status] : []),
    formatAge(now - Date.parse(a.createdAt)),
    a.connection,
    requesterOf(a),
    `${a.approvals}/${a.minApprovals}`,
    oneLine(a.display ?? a.sql, 60),
    oneLine(formatParams(a.params), 40) || '-',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const fmt = (cols: string[]) => cols.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
  return [fmt(head), ...body.map(fmt)].join('\n');
}

export function approvalDetail(a: ApprovalView, now: number): string[] {
  const expires = Date.parse(a.expiresAt) - now;
  const lines = [
    `approval   ${a.id}  (${a.status})`,
    `connection ${a.connection}`,
    `requester  ${requesterOf(a)}${a.requester.email ? ` (${a.requester.sub})` : ''}  session ${a.sessionId}`,
    `purpose    ${a.purpose ?? '(none stated)'}`,
    `age        ${formatAge(now - Date.parse(a.createdAt))}${a.status === 'pending' ? `, expires in ${formatAge(expires)}` : ''}`,
    `approvals  ${a.approvals} of ${a.minApprovals}`,
    ...(a.transaction ? [`transaction ${a.transaction.statements.length} statement(s), ${a.transaction.rowsChanged} row(s) changed, holding locks for ${formatAge(now - Date.parse(a.transaction.startedAt))}; approve commits it, deny rolls it back`] : []),
    a.transaction ? 'statements' : 'statement',
    ...(a.display ?? a.sql).split('\n').map((l) => `  ${l}`),
    ...(a.warnings ?? []).map((w) => `WARNING    ${w}`),
  ];
  if (a.params?.length) lines.push(`parameters ${formatParams(a.params)}`);
  if (a.rowsSoFar !== undefined) lines.push(`paused     the result passed ${a.rowsSoFar} rows; approving sends the rest (the rows so far: hoopctl sessions replay ${a.sessionId})`);
  for (const v of a.votes) {
    const how = v.amr?.length ? ` [signed in with ${v.amr.join('+')}${v.acr ? `, ${v.acr}` : ''}]` : '';
    lines.push(`vote       ${v.verdict} by ${v.sub}${how} at ${v.at.replace('T', ' ').slice(0, 19)}${v.reason ? `: ${v.reason}` : ''}`);
  }
  if (!a.canDecide && a.why) lines.push(`you        cannot decide it: ${a.why}`);
  return lines;
}

export function decisionLine(a: ApprovalView, verdict: Verdict): string {
  if (verdict === 'deny') return `denied ${a.id}: ${a.transaction ? 'the transaction will be rolled back' : 'the statement will not run'}`;
  if (a.status === 'approved') return `approved ${a.id}: ${a.transaction ? 'the held transaction commits, as shown' : 'the held statement runs once, as shown'}`;
  return `vote recorded on ${a.id}: ${a.approvals} of ${a.minApprovals} approvals; waiting for another approver`;
}
