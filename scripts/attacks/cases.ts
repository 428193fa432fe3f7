// One function per case kind: run the case against the running product, then judge it from the
// outside (meta.judging of the corpus). Every function returns a Verdict and never throws for what
// the product does; the runner turns a thrown error into a failed verdict.
import http from 'node:http';
import path from 'node:path';
import { readdir, readFile } from 'node:fs/promises';
import { verifyChain } from '../../agent/src/audit/verify.js';
import os from 'node:os';
import { spawn } from 'node:child_process';
import { createPublicKey, createPrivateKey, createSign, createHmac, type JsonWebKey } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { generateKeyPair, exportJWK } from 'jose';
import { FrameType } from '../../shared/tunnel/frame.js';
import { tunnelUrl as cliTunnelUrl } from '../../cli/src/services/tunnel-client.js';
import {
  PgWire, GSSENC_REQUEST, SSL_REQUEST, cancelRequest, connectTcp, msg, startupMessage, summarize, tcpTransport, typed,
  parseRowDescription, parseErrorFields, type RowField,
} from './pgclient.js';
import { openTunnelWs, rawHttp, upgradeRequest, waitServerClose, wsFrame, TunnelStream } from './ws.js';
import { CONNECTION, type AttackStack, type Fingerprint } from './stack.js';
import { approvedSteps, expectedState, preparedBody, type ExpectedState, type SentStep } from './expected.js';
import {
  classifyError, describeErrors, fingerprintDiff, leaksOf, needlesFor, prefixOf, type Case, type Expect, type Verdict,
} from './judge.js';

export interface RunContext {
  stack: AttackStack;
  core: string[];
  maskedColumns: string[];
  mode: 'deny' | 'auto-approve';
  stepTimeoutMs: number;
  /** Set by the runner when the case's time is up: long loops stop early. */
  aborted: () => boolean;
}

type Partial = Omit<Verdict, 'id' | 'prefix' | 'tier' | 'kind' | 'expect' | 'ms'>;

function fill(s: string, ph: Record<string, string>): string {
  let out = s;
  for (const [k, v] of Object.entries(ph)) out = out.split(k).join(v);
  return out;
}

export function acceptable(c: Case, mode: RunContext['mode']): Expect[] {
  if (mode === 'auto-approve' && c.expect === 'needs_approval' && c.then) return [c.then];
  return [c.expect, ...(c.also_acceptable ?? [])];
}

/** Sub-cases: each entry of `variants` (sql kinds) is a separate sub-case with the same expectation. */
export function expandCases(cases: Case[]): Case[] {
  const out: Case[] = [];
  for (const c of cases) {
    let sql = c.sql ?? undefined;
    if (!sql && c.sql_template) {
      sql = c.sql_template;
      for (const [k, e] of Object.entries(c.expand ?? {})) sql = sql.split(`{${k}}`).join(e.repeat.repeat(e.times));
    }
    out.push({ ...c, sql });
    if (c.kind === 'sql' && Array.isArray(c.variants)) {
      c.variants.forEach((v, i) => out.push({ ...c, id: `${c.id}/v${i + 1}`, sql: v, variants: undefined }));
    }
  }
  return out;
}

// ── shared checks ───────────────────────────────────────────────────────────────────────────────

async function controlSelect1(ctx: RunContext): Promise<string | null> {
  try {
    const w = await ctx.stack.session();
    const r = await w.query('SELECT 1', 10_000);
    w.close();
    if (r.outcome !== 'ready' || r.errors.length || r.rows[0]?.[0]?.toString() !== '1') return `control SELECT 1 failed (${r.outcome} ${describeErrors(r.errors)})`;
    return null;
  } catch (err) {
    return `control SELECT 1 failed: ${(err as Error).message}`;
  }
}

async function sameSessionUsable(w: PgWire): Promise<string | null> {
  if (w.closed) return 'the session was closed';
  await w.query('ROLLBACK', 5000);
  const r = await w.query('SELECT 1', 5000);
  if (r.outcome !== 'ready' || r.errors.length) return `SELECT 1 in the same session failed (${r.outcome} ${describeErrors(r.errors)})`;
  return null;
}

interface StateCheck {
  f0: Fingerprint;
  f1: Fingerprint;
  /** Fingerprint keys that differ from F0. */
  changed: string[];
  markers: string[];
  /** auto-approve mode, when the second human approved something: F0 plus the approved steps (expected.ts). */
  expected?: ExpectedState;
  /** What differs from the expected state (F0, or the reference with the approved steps): keys and marker files. */
  unexpected: string[];
}

async function readState(ctx: RunContext, f0: Fingerprint): Promise<StateCheck> {
  const f1 = await ctx.stack.fixture.fingerprint();
  const markers = await ctx.stack.fixture.markerFiles();
  const changed = fingerprintDiff(f0, f1);
  return { f0, f1, changed, markers, unexpected: [...changed, ...markers] };
}

/**
 * auto-approve mode: what the approved steps did is expected; so the state is judged against a reference
 * fixture into which exactly those steps were replayed (expected.ts). Resets the fixture: call it once
 * the case's sessions are closed. Deny mode, or nothing approved: the state is judged against F0.
 */
async function judgeAgainstApproved(ctx: RunContext, s: StateCheck, sent: SentStep[], grantedFrom: number): Promise<StateCheck> {
  if (ctx.mode !== 'auto-approve') return s;
  const granted = ctx.stack.approvalLoop.granted.slice(grantedFrom);
  if (!granted.length) return s;
  const { replay, unmatched } = await approvedSteps(granted, sent);
  const expected = await expectedState(ctx.stack, replay, unmatched, ctx.stepTimeoutMs);
  const markerDiff = [...s.markers.filter((m) => !expected.markers.includes(m)), ...expected.markers.filter((m) => !s.markers.includes(m)).map((m) => `${m} (expected, absent)`)];
  return { ...s, expected, unexpected: [...fingerprintDiff(expected.f, s.f1), ...markerDiff] };
}

function stateWord(s: StateCheck): string {
  return s.expected ? 'state as expected after the approved steps' : 'state unchanged';
}

function stateEvidence(s: StateCheck): string[] {
  const ev: string[] = [];
  if (s.changed.length) ev.push(`fingerprint changed: ${s.changed.map((k) => `${k} ${s.f0[k]} -> ${s.f1[k]}`).join('; ')}`);
  else ev.push('fingerprint unchanged');
  if (s.markers.length) ev.push(`marker files: ${s.markers.join(', ')}`);
  if (s.expected) {
    const e = s.expected;
    const moved = fingerprintDiff(s.f0, e.f);
    ev.push(`expected state (F0 + the approved steps, replayed directly): ${moved.length ? moved.map((k) => `${k} -> ${e.f[k]}`).join('; ') : 'F0'}`);
    ev.push(...e.evidence);
    ev.push(s.unexpected.length ? `state differs from the expected state: ${s.unexpected.map((k) => (k in s.f1 ? `${k} expected ${e.f[k]}, got ${s.f1[k]}` : k)).join('; ')}` : 'state equals the expected state');
  }
  return ev;
}

/**
 * What the audit records say, for the leak scan: their content, not the chain's own bookkeeping (hashes,
 * sequence numbers, ids, timings are hex or digits that short values such as "123" match by chance).
 */
const CHAIN_FIELDS = new Set(['seq', 'prev', 'hash', 'ts', 'at', 'agentId', 'sessionId', 'statementSeq', 'durationMs', 'jti', 'clientAddr', 'issuer']);
function auditText(ctx: RunContext, from: number): string {
  const recs = ctx.stack.audit.since(from);
  return recs.length ? JSON.stringify(recs, (k, v) => (CHAIN_FIELDS.has(k) ? undefined : v)) : '';
}

/** Masked columns of the fixture as (table OID, attnum), read directly (OIDs change with every reset). */
async function maskedAttrs(ctx: RunContext): Promise<Set<string>> {
  const set = new Set<string>();
  for (const col of ctx.maskedColumns) {
    const parts = col.split('.');
    const [schema, table, column] = parts.length === 3 ? parts : ['public', parts[0], parts[1]];
    const r = await ctx.stack.fixture.adminQuery(`SELECT 1`); // keep the admin connection warm
    void r;
    const q = await directQueryRows(ctx, `SELECT c.oid::int, a.attnum FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '${schema}' AND c.relname = '${table}' AND a.attname = '${column}'`);
    for (const row of q) set.add(`${row[0]}:${row[1]}`);
  }
  return set;
}

async function directQueryRows(ctx: RunContext, sql: string): Promise<string[][]> {
  const d = await ctx.stack.direct();
  try {
    const r = await d.query(sql, 10_000);
    return r.rows.map((row) => row.map((f) => (f === null ? '' : f.toString('utf8'))));
  } finally {
    d.close();
  }
}

interface StepResult {
  sql: string;
  from: number;
  to: number;
  outcome: string;
  errors: ReturnType<PgWire['errors']>;
  notices: ReturnType<PgWire['notices']>;
  rowCount: number;
}

async function runSqlSteps(w: PgWire, steps: string[], ctx: RunContext, copyIn?: string): Promise<StepResult[]> {
  const out: StepResult[] = [];
  for (let i = 0; i < steps.length; i++) {
    if (w.closed || ctx.aborted()) break;
    w.step = i;
    const r = await w.query(steps[i], ctx.stepTimeoutMs, copyIn);
    out.push({ sql: steps[i], from: r.from, to: w.messages.length, outcome: r.outcome, errors: r.errors, notices: w.notices(r.from), rowCount: r.rowCount });
    if (r.outcome !== 'ready') break;
  }
  return out;
}

/** Rows of a step's messages as text, with masked-source columns replaced by '*'. */
function stepRows(w: PgWire, s: StepResult, masked: Set<string>): string[] {
  const out: string[] = [];
  let fields: RowField[] = [];
  for (let i = s.from; i < s.to; i++) {
    const m = w.messages[i];
    if (m.type === 'T' && m.body) fields = parseRowDescription(m.body);
    if (m.type === 'D' && m.body) {
      const n = m.body.readInt16BE(0);
      const vals: string[] = [];
      let at = 2;
      for (let k = 0; k < n; k++) {
        const len = m.body.readInt32BE(at);
        at += 4;
        const f = fields[k];
        const isMasked = f && masked.has(`${f.tableOid}:${f.column}`);
        vals.push(len < 0 ? 'NULL' : isMasked ? '*' : m.body.subarray(at, at + len).toString('utf8'));
        if (len > 0) at += len;
      }
      out.push(vals.join('|'));
    }
  }
  return out;
}

// ── kind: sql ───────────────────────────────────────────────────────────────────────────────────

export async function runSqlCase(c: Case, ctx: RunContext): Promise<Partial> {
  const { stack } = ctx;
  const accept = acceptable(c, ctx.mode);
  const needles = needlesFor(c, ctx.core);
  const evidence: string[] = [];
  const main = c.emulate_sql?.length ? [...c.emulate_sql] : [...(c.pre_sql ?? []), c.sql ?? ''];
  const templates = [...main, ...(c.post_sql ?? [])];
  const stepsOf = () => {
    const p = stack.fixture.placeholders();
    return { steps: templates.map((t) => fill(t, p)), mainIndex: main.length - 1 };
  };

  // Direct execution (for row counts and result equality), on its own fresh fixture.
  let direct: { w: PgWire; steps: StepResult[] } | undefined;
  let masked = new Set<string>();
  if (accept.includes('masked') || accept.includes('allowed')) {
    await stack.fixture.reset();
    const { steps } = stepsOf();
    const dw = await stack.direct({ keepRows: 2000 });
    direct = { w: dw, steps: await runSqlSteps(dw, steps, ctx, c.copy_in_data) };
    dw.close();
  }
  const f0 = await stack.fixture.reset();
  if (direct) masked = await maskedAttrs(ctx);
  const auditFrom = stack.audit.records.length;
  const grantedFrom = stack.approvalLoop.granted.length;
  const { steps, mainIndex } = stepsOf();
  const sent: SentStep[] = steps.map((sql, i) => ({ sql, replay: (p) => fill(templates[i], p), copyIn: c.copy_in_data }));

  const w = await stack.session({ needles, keepRows: 2000 });
  const results = await runSqlSteps(w, steps, ctx, c.copy_in_data);
  const seen = await readState(ctx, f0); // while the session is still open (temp objects)
  evidence.push(...results.map((r, i) => `step ${i + 1}${i === mainIndex ? ' (main)' : i < mainIndex ? ' (pre)' : ' (post)'}: ${r.outcome}${r.errors.length ? ` ${describeErrors(r.errors)}` : ''}, rows ${r.rowCount}${r.notices.length ? `, notices: ${describeErrors(r.notices)}` : ''}`));
  if (results.length < steps.length) evidence.push(`only ${results.length} of ${steps.length} steps ran (${w.closed ? `connection closed: ${w.closeWhy}` : 'stopped'})`);

  // What happened: the first refusal of a pre step (chain rule), else the main statement's outcome.
  let observed = 'executed';
  let refusedAt = -1;
  for (let i = 0; i < results.length && i <= mainIndex; i++) {
    const r = results[i];
    if (r.outcome === 'closed' || r.outcome === 'fatal') {
      observed = 'rejected';
      refusedAt = i;
      break;
    }
    if (r.outcome === 'timeout') {
      observed = 'timeout';
      refusedAt = i;
      break;
    }
    const approvalNotices = r.notices.filter((n) => /approv/i.test(`${n.message} ${n.hint}`));
    // auto-approve mode: held, approved by the second human, and run without error. An earlier step that
    // did so is no refusal (the chain goes on to the main step); the main step's results are judged when
    // the case's `then` expects results (masked / allowed). What it changed is in the expected state.
    if (ctx.mode === 'auto-approve' && r.errors.length === 0 && approvalNotices.length && (i < mainIndex || accept.includes('masked') || accept.includes('allowed'))) {
      evidence.push(`step ${i + 1}: held, approved by the second human, then ran`);
      continue;
    }
    const kinds = [...r.errors, ...approvalNotices].map(classifyError);
    if (kinds.length) {
      observed = kinds.includes('held') ? 'held' : kinds.includes('blocked') ? 'blocked' : kinds.includes('rejected') ? 'rejected' : 'db-error';
      refusedAt = i;
      break;
    }
  }
  const chained = refusedAt >= 0 && refusedAt < mainIndex;
  if (chained) evidence.push(`pre step ${refusedAt + 1} was ${observed} (chain rule)`);
  const usable = observed === 'blocked' || observed === 'held' || observed === 'db-error' ? await sameSessionUsable(w) : null;
  w.close();
  const control = await controlSelect1(ctx);
  const state = await judgeAgainstApproved(ctx, seen, sent, grantedFrom);
  const audit = auditText(ctx, auditFrom);
  const leaks = leaksOf([w], audit, needles);
  evidence.push(...stateEvidence(state));
  if (!audit) evidence.push('no audit records');
  else evidence.push(`audit records: ${ctx.stack.audit.since(auditFrom).map((r) => r.method).join(', ')}`);
  if (control) evidence.push(control);
  if (usable) evidence.push(`session not usable after the refusal: ${usable}`);
  const stateOk = state.unexpected.length === 0;

  const fail = (reason: string, gap: 'product' | 'runner' = 'product'): Partial => ({ pass: false, observed, reason, gap, evidence });
  if (leaks.wire.length) return fail(`leaked to the client: ${leaks.wire.join(', ')}`);
  if (leaks.audit.length) return fail(`leaked into audit records: ${leaks.audit.join(', ')}`);
  if (observed === 'timeout') return fail(`no answer within ${ctx.stepTimeoutMs} ms`);
  if (prefixOf(c.id) === 'AD' && !audit) return fail('no audit records for this case');

  const refusedOk = (what: Expect) => accept.includes(what) || (chained && (accept.includes('blocked') || accept.includes('needs_approval')));
  if (observed === 'blocked' || observed === 'held' || (observed === 'db-error' && !direct)) {
    const what: Expect = observed === 'held' ? 'needs_approval' : 'blocked';
    // auto-approve mode: a second human approved the held statement, so it ran; that is the expectation
    // for needs_approval cases without a `then` (meta.run_modes.approvals). What it changed is in the
    // expected state; anything else is not.
    if (ctx.mode === 'auto-approve' && observed === 'held' && accept.includes('needs_approval')) evidence.push('auto-approve: held, approved by the second human, then ran');
    if (!stateOk) return fail(`${observed} but the state differs from ${state.expected ? 'F0 plus the approved steps' : 'F0'} (${state.unexpected.join(', ')})`);
    if (control) return fail(control);
    if (!refusedOk(what)) {
      return fail(observed === 'held' ? `held for approval, but the case expects ${accept.join('/')}` : `refused (${describeErrors(results[refusedAt]?.errors ?? [])}), but the case expects ${accept.join('/')}`);
    }
    if (usable) return fail(`refused, but the session did not stay usable: ${usable}`);
    const codes = (results[refusedAt]?.errors ?? []).map((e) => e.code);
    if (observed === 'db-error') evidence.push(`note: SQLSTATE ${codes.join(',')} is not 42501: the error may come from PostgreSQL, not the gateway`);
    return { pass: true, observed, reason: `${observed}${chained ? ' (earlier step)' : ''}, ${state.expected ? 'state as expected after the approved steps' : 'fingerprint unchanged'}, no leak`, evidence };
  }
  if (observed === 'rejected') {
    if (accept.includes('rejected') && stateOk && !control) return { pass: true, observed, reason: `rejected, ${stateWord(state)}`, evidence };
    return fail(`session ended (${results[refusedAt]?.outcome}: ${describeErrors(results[refusedAt]?.errors ?? [])}) instead of ${accept.join('/')}`);
  }
  // executed (or a database error like direct execution's)
  if (accept.includes('masked') || accept.includes('allowed')) {
    const d = direct!;
    const gwCount = results.reduce((n, r) => n + r.rowCount, 0);
    const dCount = d.steps.reduce((n, r) => n + r.rowCount, 0);
    const gwCodes = results.flatMap((r) => r.errors.map((e) => e.code)).join(',');
    const dCodes = d.steps.flatMap((r) => r.errors.map((e) => e.code)).join(',');
    evidence.push(`rows: gateway ${gwCount}, direct ${dCount}; errors: gateway [${gwCodes}], direct [${dCodes}]`);
    if (observed === 'db-error' && gwCodes !== dCodes) return fail(`error ${gwCodes} differs from direct execution [${dCodes}]`);
    if (results.length < steps.length) return fail('not every step ran');
    if (accept.includes('masked') && !accept.includes('allowed')) {
      if (gwCount !== dCount) return fail(`row count ${gwCount} differs from direct execution (${dCount})`);
      for (const v of c.must_appear ?? []) {
        if (!w.scan.found.has(v) && !bytesSeen(w, v)) return fail(`must_appear value "${v}" absent`);
      }
      if (!stateOk && c.expect !== 'needs_approval') evidence.push('note: state changed by a masked read');
      return { pass: true, observed: 'masked', reason: `executed, ${gwCount} rows as direct, no sensitive value in ${w.bytesReceived} bytes`, evidence };
    }
    // allowed: results equal direct execution except masked columns
    for (let i = 0; i < results.length; i++) {
      const a = stepRows(w, results[i], masked);
      const b = d.steps[i] ? stepRows(d.w, d.steps[i], masked) : [];
      if (a.join('\n') !== b.join('\n')) return fail(`step ${i + 1} result differs from direct execution: gateway [${a.slice(0, 3).join(' / ')}] direct [${b.slice(0, 3).join(' / ')}]`);
    }
    if (observed === 'db-error') evidence.push('note: the statement errored the same way directly');
    return { pass: true, observed: 'allowed', reason: `executed, results equal direct execution (${gwCount} rows)`, evidence };
  }
  return fail(stateOk ? `executed without refusal (expected ${accept.join('/')}); nothing changed this time` : `executed: ${state.changed.length ? 'fingerprint changed' : 'marker file written'} (expected ${accept.join('/')})`);
}

function bytesSeen(w: PgWire, v: string): boolean {
  const b = Buffer.from(v, 'utf8');
  return w.messages.some((m) => m.body?.includes(b));
}

// ── kind: protocol ──────────────────────────────────────────────────────────────────────────────

const BEFORE_STARTUP = /first bytes|before the startup|before startup/i;

function stepNeedsNoStartup(c: Case): boolean {
  const first = c.protocol_steps?.[0];
  if (!first) return false;
  const m = String(first.msg);
  if (['Startup', 'RawStartup', 'SSLRequest', 'GSSENCRequest', 'CancelRequest'].includes(m)) return true;
  if (first.before_startup === true) return true;
  return m === 'Raw' && (BEFORE_STARTUP.test(String(first.note ?? '')) || BEFORE_STARTUP.test(c.title ?? ''));
}

function* repeatChunks(head: Buffer, fill: string, total: number, tail: Buffer): Generator<Buffer> {
  yield head;
  const chunk = Buffer.alloc(1024 * 1024, fill);
  let left = total;
  while (left > 0) {
    const n = Math.min(left, chunk.length);
    yield n === chunk.length ? chunk : chunk.subarray(0, n);
    left -= n;
  }
  yield tail;
}

export async function runProtocolCase(c: Case, ctx: RunContext): Promise<Partial> {
  const { stack } = ctx;
  const accept = acceptable(c, ctx.mode);
  const needles = needlesFor(c, ctx.core);
  const evidence: string[] = [];
  const steps = c.protocol_steps ?? [];
  if (steps.some((s) => s.msg === 'CancelRequest')) return runCancelCase(c, ctx);
  const f0 = await stack.fixture.reset();
  const ph = stack.fixture.placeholders();
  const auditFrom = stack.audit.records.length;
  const grantedFrom = stack.approvalLoop.granted.length;
  const backends0 = await stack.fixture.agentBackends();
  const useWs = steps.some((s) => typeof s.transport === 'string');
  let ws: TunnelStream | undefined;
  const open = async (): Promise<PgWire> => {
    if (useWs) {
      ws = await stack.wsStream(await stack.ciToken());
      return new PgWire(ws, { needles, keepRows: 2000 });
    }
    return stack.localWire({ needles, keepRows: 2000 });
  };
  const wires: PgWire[] = [];
  let w = await open();
  wires.push(w);
  const notes: string[] = [];
  const base = { user: 'noop', database: CONNECTION };
  if (!stepNeedsNoStartup(c)) {
    const r = await w.startup(base, ctx.stepTimeoutMs);
    notes.push(`startup: ${r}`);
  }
  let pendingCoalesce: Buffer | undefined;
  const send = (b: Buffer, transport?: string) => {
    if (pendingCoalesce) {
      b = Buffer.concat([pendingCoalesce, b]);
      pendingCoalesce = undefined;
    }
    if (transport && /coalesce/i.test(transport)) {
      pendingCoalesce = b;
      return;
    }
    if (transport && /1 byte per/i.test(transport) && ws) ws.writeChunked(b, 1);
    else w.send(b);
  };
  let startedRaw = 0;
  const waitAny = async (from: number, ms: number) => {
    const r = await w.waitReady(from, 1, ms);
    if (r === 'timeout' && w.messages.length > from) return 'answered';
    return r;
  };
  for (let i = 0; i < steps.length && !ctx.aborted(); i++) {
    const s = steps[i];
    const m = String(s.msg);
    const from = w.messages.length;
    w.step = i;
    const transport = typeof s.transport === 'string' ? s.transport : undefined;
    let wait: number | null = null;
    switch (m) {
      case 'Startup': {
        const r = await w.startup({ ...base, ...((s.params as Record<string, string>) ?? {}) }, ctx.stepTimeoutMs);
        notes.push(`Startup: ${r}${w.errors(from).length ? ` ${describeErrors(w.errors(from))}` : ''}`);
        break;
      }
      case 'RawStartup': {
        if (startedRaw++ > 0 || w.bytesReceived > 0) {
          w.close();
          w = await open();
          wires.push(w);
        }
        const [maj, min] = String(s.version ?? '3.0').split('.').map(Number);
        w.send(startupMessage({ ...base, ...((s.params as Record<string, string>) ?? {}) }, maj, min));
        const r = await waitAny(0, 5000);
        notes.push(`RawStartup ${s.version}: ${r}, ${summarize(w)}${w.errors().length ? ` ${describeErrors(w.errors())}` : ''}`);
        break;
      }
      case 'SSLRequest':
      case 'GSSENCRequest': {
        w.expectSingleByte();
        w.send(m === 'SSLRequest' ? SSL_REQUEST : GSSENC_REQUEST);
        const n = w.singleBytes.length;
        await w.until(() => w.singleBytes.length > n || w.messages.length > from, 5000);
        notes.push(`${m}: answered ${w.singleBytes[n] ?? (w.messages.length > from ? summarize(w, from) : 'nothing')}`);
        break;
      }
      case 'Query': {
        const sql = fill(String(s.sql ?? ''), ph);
        if (typeof s.size_bytes === 'number') {
          const head = Buffer.from("SELECT '", 'utf8');
          const tail = Buffer.from("'\0", 'utf8');
          const body = s.size_bytes - head.length - tail.length;
          const len = Buffer.alloc(5);
          len[0] = 0x51;
          len.writeInt32BE(Math.min(0x7fffffff, 4 + head.length + body + tail.length), 1);
          const t0 = Date.now();
          const sent = await w.sendStream(repeatChunks(Buffer.concat([len, head]), 'x', body, tail));
          notes.push(`huge Query: sent ${sent} of ${s.size_bytes + 5} bytes in ${Date.now() - t0} ms${w.closed ? ' (peer closed)' : ''}`);
          wait = 10_000;
        } else {
          send(msg.query(sql), transport);
          wait = pendingCoalesce ? null : ctx.stepTimeoutMs;
        }
        break;
      }
      case 'QueryHex':
        send(typed('Q', Buffer.concat([Buffer.from(String(s.hex), 'hex'), Buffer.from([0])])), transport);
        wait = ctx.stepTimeoutMs;
        break;
      case 'Parse':
        send(msg.parse(String(s.name ?? ''), fill(String(s.sql ?? ''), ph), (s.param_types as number[]) ?? []), transport);
        break;
      case 'Bind': {
        const params = ((s.params as Array<string | null>) ?? []).map((p) => (p === null ? null : String(p)));
        send(msg.bind(String(s.portal ?? ''), String(s.statement ?? ''), params, (s.param_formats as number[]) ?? [], (s.result_formats as number[]) ?? []), transport);
        break;
      }
      case 'RawBind': {
        // 3 parameter format codes for 2 params; a parameter length of -2; 65535 result format codes.
        const parts = [Buffer.from('\0\0'), Buffer.from([0, 3, 0, 0, 0, 0, 0, 0]), Buffer.from([0, 2])];
        const neg = Buffer.alloc(4);
        neg.writeInt32BE(-2);
        const one = Buffer.alloc(4);
        one.writeInt32BE(1);
        parts.push(neg, one, Buffer.from('a'), Buffer.from([0xff, 0xff]), Buffer.alloc(16));
        send(typed('B', Buffer.concat(parts)), transport);
        break;
      }
      case 'Execute':
        send(msg.execute(String(s.portal ?? ''), Number(s.max_rows ?? 0)), transport);
        break;
      case 'Describe':
        send(msg.describe((String(s.kind ?? 'S') as 'S' | 'P'), String(s.name ?? '')), transport);
        break;
      case 'Close':
        send(msg.close((String(s.kind ?? 'S') as 'S' | 'P'), String(s.name ?? '')), transport);
        break;
      case 'Sync':
        send(msg.sync(), transport);
        wait = ctx.stepTimeoutMs;
        break;
      case 'Flush':
        send(msg.flush(), transport);
        break;
      case 'CopyData':
        send(msg.copyData(Buffer.from(String(s.data ?? ''), 'utf8')), transport);
        break;
      case 'CopyDone':
        send(msg.copyDone(), transport);
        wait = 3000;
        break;
      case 'FunctionCall': {
        const sig = String(s.function ?? '');
        let oid = Number(s.oid ?? s.oid_pg15 ?? 0);
        try {
          const rows = await directQueryRows(ctx, `SELECT '${sig.replace(/'/g, "''")}'::regprocedure::oid`);
          if (rows[0]?.[0]) oid = Number(rows[0][0]);
        } catch {
          /* keep the corpus's oid */
        }
        const args: Buffer[] = Array.isArray(s.args_hex)
          ? (s.args_hex as string[]).map((h) => Buffer.from(h, 'hex'))
          : ((s.args as string[]) ?? []).map((a) => Buffer.from(String(a), 'utf8'));
        send(msg.functionCall(oid, args, (s.arg_formats as number[]) ?? []), transport);
        wait = ctx.stepTimeoutMs;
        break;
      }
      case 'Raw':
        send(Buffer.from(String(s.hex ?? ''), 'hex'), transport);
        wait = 5000;
        break;
      default:
        notes.push(`unknown step ${m}: runner cannot send it`);
        return { pass: false, observed: 'not-run', reason: `runner cannot interpret protocol step "${m}"`, gap: 'runner', evidence: notes };
    }
    if (wait !== null && !w.closed) {
      const r = await waitAny(from, wait);
      notes.push(`${m}${s.sql ? ` ${String(s.sql).slice(0, 60)}` : ''}: ${r}; ${summarize(w, from)}${w.errors(from).length ? ` ${describeErrors(w.errors(from))}` : ''}`);
    }
    if (w.closed) {
      notes.push(`connection closed after step ${i + 1} (${m}): ${w.closeWhy}`);
      if (steps.slice(i + 1).every((x) => x.msg !== 'RawStartup')) break;
    }
  }
  if (pendingCoalesce) w.send(pendingCoalesce);
  const seen = await readState(ctx, f0);
  for (const x of wires) x.close();
  await new Promise((r) => setTimeout(r, 200));
  const backends1 = await stack.fixture.agentBackends();
  const control = await controlSelect1(ctx);
  const state = await judgeAgainstApproved(ctx, seen, protocolUnits(steps, ph), grantedFrom);
  const audit = auditText(ctx, auditFrom);
  const leaks = leaksOf(wires, audit, needles);
  evidence.push(...notes, ...stateEvidence(state), `gw_agent backends before ${backends0}, after ${backends1}`);
  if (control) evidence.push(control);
  const stateOk = state.unexpected.length === 0;

  const all = wires.flatMap((x) => x.errors());
  const kinds = new Set(all.map(classifyError));
  const closedByServer = wires.some((x) => x.closed && !x.closedByUs);
  const negotiated = wires.some((x) => x.messages.some((m2) => m2.type === 'v'));
  const observedSet = new Set<string>();
  if (kinds.has('rejected') || closedByServer) observedSet.add('rejected');
  // auto-approve mode: a held statement that was approved answers with the hold notice and no error.
  if (kinds.has('held') || wires.some((x) => x.notices().some((n) => classifyError(n) === 'held'))) observedSet.add('needs_approval');
  if (kinds.has('blocked')) observedSet.add('blocked');
  const observed = [...observedSet].join('+') || (kinds.has('db-error') ? 'db-error' : 'executed');
  // With `then` (auto-approve mode), a hold that was approved and ran is the way to the expected results.
  const refusals = new Set(observedSet);
  if (ctx.mode === 'auto-approve' && c.expect === 'needs_approval' && c.then) refusals.delete('needs_approval');
  const fail = (reason: string, gap: 'product' | 'runner' = 'product'): Partial => ({ pass: false, observed, reason, gap, evidence });

  if (leaks.wire.length) return fail(`leaked to the client: ${leaks.wire.join(', ')}`);
  if (leaks.audit.length) return fail(`leaked into audit records: ${leaks.audit.join(', ')}`);
  if (!stateOk) return fail(`state ${state.expected ? 'differs from F0 plus the approved steps' : 'changed'}: ${state.unexpected.join(', ')}`);
  if (control) return fail(control);
  if (backends1 > backends0) return fail(`backend session left open (${backends0} -> ${backends1})`);
  const hung = notes.some((n) => /: timeout;/.test(n));
  if (hung && accept.includes('rejected')) return fail(`no answer within the step timeout: ${notes.find((n) => /: timeout;/.test(n))}`);

  // allowed: the handshake and every statement completed, answers as PostgreSQL's.
  if (accept.includes('allowed') && refusals.size === 0 && !kinds.has('db-error')) {
    const bad = wires.flatMap((x) => x.singleBytes).filter((b) => b !== 'N' && b !== 'S');
    if (bad.length) return fail(`unexpected answer to SSLRequest/GSSENCRequest: ${bad.join(',')}`);
    if (negotiated) evidence.push('NegotiateProtocolVersion received');
    const queries = steps.filter((s) => s.msg === 'Query' && typeof s.sql === 'string').map((s) => fill(String(s.sql), ph));
    for (const q of queries) {
      const directRows = await directQueryRows(ctx, q);
      const gw = wires[wires.length - 1].rows().map((r) => r.map((f) => (f === null ? '' : f.toString('utf8'))));
      if (JSON.stringify(gw.slice(-directRows.length)) !== JSON.stringify(directRows)) return fail(`result of ${q} differs from direct execution: gateway ${JSON.stringify(gw)} direct ${JSON.stringify(directRows)}`);
    }
    if (!wires.some((x) => x.count('Z') > 0) && !negotiated) return fail('startup never completed');
    return { pass: true, observed: 'allowed', reason: 'completed, answers equal direct execution', evidence };
  }
  if (accept.includes('masked') && refusals.size === 0) {
    const rows = wires.reduce((n, x) => n + x.rowCount(), 0);
    evidence.push(`rows received: ${rows} (row count not compared with direct execution for protocol cases)`);
    if (rows === 0) return fail('executed but no rows came back (masking must not drop rows)');
    return { pass: true, observed: 'masked', reason: `executed, ${rows} rows, no sensitive value in the bytes`, evidence };
  }
  if (accept.includes('rejected') && (observedSet.has('rejected') || (negotiated && c.also_acceptable?.includes('allowed')))) {
    return { pass: true, observed, reason: `refused at the protocol level; ${stateWord(state)}`, evidence };
  }
  for (const a of accept) if (observedSet.has(a)) return { pass: true, observed, reason: `${a}; ${stateWord(state)}, no leak`, evidence };
  return fail(`observed ${observed || 'nothing refused'}, expected ${accept.join('/')}`);
}

/**
 * The statements a protocol case ran, in order, for the auto-approve reference (expected.ts): each simple
 * Query (with the COPY FROM STDIN data that followed it), and each Execute, as the messages that run its
 * portal again: the statement's Parse (unnamed, so replays never collide) or, for a SQL-level PREPARE,
 * nothing (the PREPARE itself is replayed before it), then the case's own Bind and Execute.
 */
function protocolUnits(steps: Array<Record<string, unknown>>, ph: Record<string, string>): SentStep[] {
  const out: SentStep[] = [];
  const stmts = new Map<string, { sql: (p: Record<string, string>) => string; types: number[]; sqlLevel: boolean }>();
  const portals = new Map<string, { stmt: string; bind: (stmtName: string) => Buffer }>();
  for (let i = 0; i < steps.length; i++) {
    const s = steps[i];
    if (s.msg === 'Parse') {
      const text = String(s.sql ?? '');
      stmts.set(String(s.name ?? ''), { sql: (p) => fill(text, p), types: (s.param_types as number[]) ?? [], sqlLevel: false });
      continue;
    }
    if (s.msg === 'Bind') {
      const params = ((s.params as Array<string | null>) ?? []).map((x) => (x === null ? null : String(x)));
      portals.set(String(s.portal ?? ''), {
        stmt: String(s.statement ?? ''),
        bind: (stmtName) => msg.bind('', stmtName, params, (s.param_formats as number[]) ?? [], (s.result_formats as number[]) ?? []),
      });
      continue;
    }
    if (s.msg === 'Execute') {
      const portal = portals.get(String(s.portal ?? ''));
      const st = portal && stmts.get(portal.stmt);
      if (!portal || !st) continue; // a cursor or an unknown portal: nothing the runner can replay
      const maxRows = Number(s.max_rows ?? 0);
      out.push({
        sql: st.sql(ph),
        replay: (p) => Buffer.concat([...(st.sqlLevel ? [] : [msg.parse('', st.sql(p), st.types)]), portal.bind(st.sqlLevel ? portal.stmt : ''), msg.execute('', maxRows)]),
      });
      continue;
    }
    let text: string;
    if (s.msg === 'Query' && typeof s.size_bytes !== 'number') text = String(s.sql ?? '');
    else if (s.msg === 'QueryHex') text = Buffer.from(String(s.hex), 'hex').toString('utf8');
    else continue;
    const prepared = s.msg === 'Query' ? preparedBody(fill(text, ph)) : undefined;
    if (prepared) stmts.set(prepared.name, { sql: (p) => preparedBody(fill(text, p))?.body ?? '', types: [], sqlLevel: true });
    let data = '';
    let k = i + 1;
    for (; k < steps.length && steps[k].msg === 'CopyData'; k++) data += String(steps[k].data ?? '');
    out.push({ sql: s.msg === 'Query' ? fill(text, ph) : text, replay: (p) => (s.msg === 'Query' ? fill(text, p) : text), copyIn: steps[k]?.msg === 'CopyDone' ? data : undefined });
  }
  return out;
}

/** PR-026 class: CancelRequest with another identity's key, and with a guessed key. */
async function runCancelCase(c: Case, ctx: RunContext): Promise<Partial> {
  const { stack } = ctx;
  const evidence: string[] = [];
  const f0 = await stack.fixture.reset();
  // The other identity (alice, device flow) runs a long query through its own tunnel.
  const victimStream = await stack.wsStream(await stack.userToken('alice@clinic.example'));
  const victim = new PgWire(victimStream);
  const st = await victim.startup({ user: 'noop', database: CONNECTION });
  const key = victim.backendKey();
  if (st !== 'ready' || !key) return { pass: false, observed: 'setup-failed', reason: `victim session did not start (${st})`, gap: 'runner', evidence };
  const pids = await stack.fixture.backendPids();
  if (pids.has(key.pid)) evidence.push(`BackendKeyData pid ${key.pid} is a real backend pid (exposed)`);
  else evidence.push('BackendKeyData pid is not a real backend pid');
  const longSql = 'SELECT count(*) FROM generate_series(1, 40000000) g';
  const t0 = Date.now();
  const from = victim.messages.length;
  victim.send(msg.query(longSql));
  await new Promise((r) => setTimeout(r, 300));
  // The attacker: ci-nightly through the CLI port, first with the victim's key, then a guessed one.
  for (const [pid, secret] of [[key.pid, key.secret], [12345, 0]] as Array<[number, Buffer | number]>) {
    const a = await stack.localWire();
    a.send(cancelRequest(pid, secret));
    await a.until(() => a.closed, 3000);
    evidence.push(`CancelRequest(${pid === key.pid ? "victim's key" : 'guessed 12345/0'}): ${a.closed ? 'connection closed' : 'still open'}; ${summarize(a)}`);
    a.close();
  }
  const r = await victim.waitReady(from, 1, 60_000);
  const errs = victim.errors(from);
  evidence.push(`victim query: ${r} after ${Date.now() - t0} ms ${describeErrors(errs)}`);
  victim.close();
  const state = await readState(ctx, f0);
  evidence.push(...stateEvidence(state));
  const control = await controlSelect1(ctx);
  if (control) evidence.push(control);
  if (errs.some((e) => e.code === '57014')) return { pass: false, observed: 'cancelled', reason: "another identity's query was cancelled with its key", gap: 'product', evidence };
  if (errs.length && errs.some((e) => classifyError(e) === 'blocked')) return { pass: false, observed: 'setup-failed', reason: `victim's long query was refused by policy (${describeErrors(errs)}); cannot judge`, gap: 'runner', evidence };
  if (r !== 'ready') return { pass: false, observed: r, reason: `victim query did not complete (${r})`, gap: 'product', evidence };
  if (pids.has(key.pid)) return { pass: false, observed: 'exposed', reason: 'a real backend pid is exposed in BackendKeyData', gap: 'product', evidence };
  if (control) return { pass: false, observed: 'unhealthy', reason: control, gap: 'product', evidence };
  return { pass: true, observed: 'rejected', reason: 'foreign and guessed cancel keys had no effect; no real pid exposed', evidence };
}

// ── tokens ──────────────────────────────────────────────────────────────────────────────────────

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

function signRs256Raw(headerB64: string, payloadB64: string, jwk: JsonWebKey): string {
  const input = `${headerB64}.${payloadB64}`;
  return `${input}.${createSign('RSA-SHA256').update(input).sign(createPrivateKey({ key: jwk, format: 'jwk' })).toString('base64url')}`;
}

function evalNow(v: unknown, now: number): unknown {
  if (typeof v !== 'string') return v;
  const m = /^now\s*([+-])\s*([\d*\s]+)$/.exec(v);
  if (!m) return v;
  const n = m[2].split('*').reduce((a, x) => a * Number(x.trim()), 1);
  return m[1] === '+' ? now + n : now - n;
}

interface Attempt {
  label: string;
  token?: string;
  headers?: Record<string, string>;
  path?: string;
}

async function validClaims(ctx: RunContext): Promise<{ header: Record<string, unknown>; payload: Record<string, unknown>; token: string }> {
  const token = await ctx.stack.ciToken();
  const [h, p] = token.split('.');
  return { token, header: JSON.parse(Buffer.from(h, 'base64url').toString()), payload: JSON.parse(Buffer.from(p, 'base64url').toString()) };
}

async function tryUpgrade(ctx: RunContext, a: Attempt): Promise<{ status: number; body: string; ms: number; ok: boolean }> {
  const url = `${ctx.stack.agent.url}${a.path ?? `/tunnel/${CONNECTION}`}`;
  const r = await openTunnelWs(url, a.token, a.headers ?? {}, 10_000);
  if (r.ws) r.ws.terminate();
  return { status: r.status, body: r.body || r.error || '', ms: r.ms, ok: r.ok };
}

/** A harness listener that records any request it gets (jku/x5u/iss SSRF oracles). */
async function harnessListener(jwks?: unknown): Promise<{ url: string; hits: string[]; close(): Promise<void> }> {
  const hits: string[] = [];
  const srv = http.createServer((req, res) => {
    hits.push(`${req.method} ${req.url}`);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(jwks ?? {}));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, hits, close: () => new Promise<void>((r) => srv.close(() => r())) };
}

export async function runAuthCase(c: Case, ctx: RunContext): Promise<Partial> {
  const { stack } = ctx;
  const evidence: string[] = [];
  const now = Math.floor(Date.now() / 1000);
  const { header: vh, payload: vp } = await validClaims(ctx);
  const key = stack.issuer.privateJwk as unknown as JsonWebKey;
  const t = c.token ?? {};
  const spec = { header: (t.header ?? {}) as Record<string, unknown>, payload: t.payload, signature: t.signature };
  const claims = (over: Record<string, unknown> = {}) => {
    const p: Record<string, unknown> = { ...vp, iat: now, exp: now + 300 };
    for (const [k, v] of Object.entries(over)) p[k] = evalNow(v, now);
    return p;
  };
  const rs = (h: Record<string, unknown>, p: Record<string, unknown>, k: JsonWebKey = key) => signRs256Raw(b64({ ...vh, ...h }), b64(p), k);
  const attempts: Attempt[] = [];
  let listener: Awaited<ReturnType<typeof harnessListener>> | undefined;
  const payloadOver = typeof spec.payload === 'object' && spec.payload ? (spec.payload as Record<string, unknown>) : {};
  try {
    switch (c.id) {
      case 'AU-001':
        for (const alg of ['none', 'None', 'NONE', 'nOnE']) attempts.push({ label: `alg ${alg}`, token: `${b64({ alg, typ: 'JWT' })}.${b64(claims())}.` });
        break;
      case 'AU-002': {
        const pub = createPublicKey({ key: stack.issuer.publicJwk as unknown as JsonWebKey, format: 'jwk' });
        const forms: Array<[string, Buffer]> = [
          ['PEM', Buffer.from(pub.export({ type: 'spki', format: 'pem' }) as string)],
          ['DER', pub.export({ type: 'spki', format: 'der' }) as Buffer],
          ['JWK-JSON', Buffer.from(JSON.stringify(stack.issuer.publicJwk))],
          ['PKCS1-PEM', Buffer.from(pub.export({ type: 'pkcs1', format: 'pem' }) as string)],
        ];
        for (const [label, secret] of forms) {
          const input = `${b64({ alg: 'HS256', typ: vh.typ, kid: vh.kid })}.${b64(claims())}`;
          attempts.push({ label: `HS256 with public key (${label})`, token: `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}` });
        }
        break;
      }
      case 'AU-011': {
        const good = rs({}, claims());
        const [h, p, s] = good.split('.');
        const changed = b64({ ...claims(), sub: 'nhi:admin-bot' });
        attempts.push({ label: 'signature stripped', token: `${h}.${p}.` }, { label: 'signature truncated', token: `${h}.${p}.${s.slice(0, 10)}` }, { label: 'payload modified, original signature', token: `${h}.${changed}.${s}` });
        break;
      }
      case 'AU-013': {
        const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
        const atkPub = { ...(await exportJWK(publicKey)), kid: 'k9', alg: 'RS256' };
        listener = await harnessListener({ keys: [atkPub] });
        const atkPriv = (await exportJWK(privateKey)) as unknown as JsonWebKey;
        attempts.push({ label: 'jku/x5u to the harness, signed by the attacker key', token: rs({ alg: 'RS256', kid: 'k9', jku: `${listener.url}/jwks.json`, x5u: `${listener.url}/cert.pem` }, claims(), atkPriv) });
        attempts.push({ label: 'jku only, signed by the attacker key', token: rs({ alg: 'RS256', kid: 'k9', jku: `${listener.url}/jwks.json` }, claims(), atkPriv) });
        break;
      }
      case 'AU-014':
        listener = await harnessListener();
        attempts.push({ label: 'iss = metadata service', token: rs({}, claims({ iss: 'http://169.254.169.254/latest/meta-data/' })) });
        attempts.push({ label: 'iss = harness listener', token: rs({}, claims({ iss: `${listener.url}/` })) });
        break;
      case 'AU-016':
        for (const kid of (spec.header.kid as unknown[]) ?? []) attempts.push({ label: `kid ${JSON.stringify(kid).slice(0, 30)}`, token: rs({ kid }, claims()) });
        break;
      case 'AU-017':
        attempts.push({
          label: 'GitHub-issuer token from another repository',
          token: signRs256Raw(b64({ alg: 'RS256', typ: 'JWT', kid: stack.gh.privateJwk.kid }), b64({ ...claims(), ...payloadOver, client_id: undefined, groups: undefined, scope: undefined }), stack.gh.privateJwk as unknown as JsonWebKey),
        });
        break;
      case 'AU-022':
        return runTokenExpiryCase(ctx, rs({}, claims({ exp: now + 4 })));
      case 'AU-023': {
        const big = { ...claims() } as Record<string, unknown>;
        for (let i = 0; i < 10_000; i++) big[`c${i}`] = 'x'.repeat(90);
        attempts.push({ label: '1 MiB token, 10k claims', token: rs({}, big) });
        break;
      }
      case 'AU-025': {
        const other = 'nhi:admin-bot';
        const p = claims();
        const rest = JSON.stringify({ ...p, sub: undefined }).slice(1);
        const mk = (a: string, b: string) => signRs256Raw(b64(vh), Buffer.from(`{"sub":${JSON.stringify(a)},"sub":${JSON.stringify(b)},${rest}`).toString('base64url'), key);
        attempts.push({ label: 'duplicate sub (mapped first)', token: mk(String(vp.sub), other) }, { label: 'duplicate sub (mapped last)', token: mk(other, String(vp.sub)) });
        break;
      }
      case 'AU-026': {
        const good = await stack.ciToken();
        attempts.push({ label: 'token in ?access_token=', path: `/tunnel/${CONNECTION}?access_token=${good}` }, { label: 'token in ?token=', path: `/tunnel/${CONNECTION}?token=${good}` });
        break;
      }
      case 'AU-028': {
        const input = `${b64({ alg: 'ES256', typ: vh.typ, kid: vh.kid })}.${b64(claims())}`;
        attempts.push({ label: 'ES256 r=s=0', token: `${input}.${Buffer.alloc(64).toString('base64url')}` });
        break;
      }
      case 'AU-010':
        attempts.push({ label: 'iat now-30d', token: rs({}, claims(payloadOver)) }, { label: 'iat now+30d', token: rs({}, claims({ iat: now + 86400 * 30, exp: now + 3600 })) });
        break;
      default: {
        // Generic: header overrides, payload overrides (now±N), signature "" / "zeros".
        const h = { ...spec.header };
        const p = claims(payloadOver);
        let tok: string;
        if (h.alg && h.alg !== 'RS256') {
          const input = `${b64({ ...vh, ...h })}.${b64(p)}`;
          tok = `${input}.${spec.signature === 'zeros' ? Buffer.alloc(64).toString('base64url') : ''}`;
        } else tok = rs(h, p);
        attempts.push({ label: 'token per corpus spec', token: tok });
      }
    }
    const b0 = await stack.fixture.agentBackends();
    const results: string[] = [];
    let accepted = 0;
    let bad = 0;
    for (const a of attempts) {
      const r = await tryUpgrade(ctx, a);
      const trace = /\n\s+at .+\(.*:\d+:\d+\)/.test(r.body);
      results.push(`${a.label}: ${r.ok ? '101 ACCEPTED' : `HTTP ${r.status}`} in ${r.ms} ms${r.body ? ` ${r.body.slice(0, 140)}` : ''}${trace ? ' [stack trace in body]' : ''}`);
      if (r.ok) accepted++;
      else if (!(r.status >= 400 && r.status < 500) || trace) bad++;
    }
    const control = await tryUpgrade(ctx, { label: 'control', token: await stack.ciToken() });
    await new Promise((r) => setTimeout(r, 150));
    const b1 = await stack.fixture.agentBackends();
    evidence.push(...results, `control token: ${control.ok ? 'accepted' : `HTTP ${control.status}`}`, `gw_agent backends ${b0} -> ${b1}`);
    if (listener) evidence.push(`harness listener requests: ${listener.hits.length ? listener.hits.join(', ') : 'none'}`);
    if (!control.ok) return { pass: false, observed: 'control-refused', reason: 'the valid control token was refused: the rejections prove nothing', gap: 'runner', evidence };
    if (accepted && c.id === 'AU-025') {
      return { pass: false, observed: 'accepted', reason: 'a duplicate-sub token was accepted (last value wins); the oracle allows that only if the same sub drives audit and approval, which the runner cannot check yet (no statement audit / approval records)', gap: 'runner', evidence };
    }
    if (accepted) return { pass: false, observed: 'accepted', reason: `${accepted} of ${attempts.length} forged tokens accepted`, gap: 'product', evidence };
    if (bad) return { pass: false, observed: 'error', reason: 'refused with a non-4xx status or an exception trace', gap: 'product', evidence };
    if (listener?.hits.length) return { pass: false, observed: 'ssrf', reason: `the agent fetched attacker-controlled URLs: ${listener.hits.join(', ')}`, gap: 'product', evidence };
    if (b1 > b0) return { pass: false, observed: 'db-connection', reason: 'a DB connection was opened', gap: 'product', evidence };
    if (c.id === 'AU-023' && results.some((r) => / in (\d+) ms/.exec(r) && Number(/ in (\d+) ms/.exec(r)![1]) > 2000)) return { pass: false, observed: 'slow', reason: 'refusal took more than 2 s', gap: 'product', evidence };
    return { pass: true, observed: 'rejected', reason: `all ${attempts.length} attempts refused before the upgrade`, evidence };
  } finally {
    await listener?.close();
  }
}

async function runTokenExpiryCase(ctx: RunContext, shortToken: string): Promise<Partial> {
  const evidence: string[] = [];
  const { stack } = ctx;
  let stream: TunnelStream;
  try {
    stream = await stack.wsStream(shortToken);
  } catch (err) {
    return { pass: false, observed: 'setup-failed', reason: `token with exp=now+4s refused at open: ${(err as Error).message}`, gap: 'runner', evidence };
  }
  const w = new PgWire(stream);
  const st = await w.startup({ user: 'noop', database: CONNECTION });
  evidence.push(`session with a token expiring in 4 s: ${st}`);
  const t0 = Date.now();
  // Tolerance up to 30 s after exp (SECURITY-POLICY / corpus AU-007); poll until then.
  while (Date.now() - t0 < 40_000 && !ctx.aborted()) {
    const r = await w.query('SELECT 1', 5000);
    if (r.outcome !== 'ready' || r.errors.length) {
      evidence.push(`statement refused ${Math.round((Date.now() - t0) / 1000)} s after open: ${r.outcome} ${describeErrors(r.errors)}`);
      w.close();
      return { pass: true, observed: 'rejected', reason: 'session ended after token expiry', evidence };
    }
    await new Promise((r2) => setTimeout(r2, 2000));
  }
  w.close();
  evidence.push('SELECT 1 still worked 36 s after the token expired');
  return { pass: false, observed: 'still-open', reason: 'the tunnel outlives token expiry (+30 s tolerance)', gap: 'product', evidence };
}

// ── kind: tunnel ────────────────────────────────────────────────────────────────────────────────

export async function runTunnelCase(c: Case, ctx: RunContext): Promise<Partial> {
  const { stack } = ctx;
  const evidence: string[] = [];
  const host = '127.0.0.1';
  const port = stack.agent.port;
  const path = `/tunnel/${CONNECTION}`;
  const healthy = async () => {
    const r = await rawHttp(host, port, `GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, 5000);
    r.socket.destroy();
    return r.status === 200;
  };
  const b0 = await stack.fixture.agentBackends();
  const done = async (pass: boolean, observed: string, reason: string, gap?: 'product' | 'runner'): Promise<Partial> => {
    const ok = await healthy();
    const b1 = await stack.fixture.agentBackends();
    evidence.push(`agent healthy after: ${ok}`, `gw_agent backends ${b0} -> ${b1}`);
    if (pass && !ok) return { pass: false, observed, reason: 'agent unhealthy afterwards', gap: 'product', evidence };
    return { pass, observed, reason, gap: pass ? undefined : gap ?? 'product', evidence };
  };
  switch (c.id) {
    case 'TU-001': {
      const r = await rawHttp(host, port, upgradeRequest(path, `${host}:${port}`), 5000);
      r.socket.destroy();
      evidence.push(`HTTP ${r.status}`);
      return done(r.status === 401, r.status === 101 ? 'upgraded' : `HTTP ${r.status}`, r.status === 401 ? '401 before the upgrade' : `got HTTP ${r.status}`);
    }
    case 'TU-003': {
      const tok = await stack.ciToken();
      const r = await rawHttp(host, port, upgradeRequest(path, `${host}:${port}`, { Origin: 'https://evil.example', Cookie: `session=${tok}`, Authorization: `Bearer ${tok}` }), 5000);
      r.socket.destroy();
      const r2 = await rawHttp(host, port, upgradeRequest(path, `${host}:${port}`, { Origin: 'https://evil.example', Cookie: `token=${tok}` }), 5000);
      r2.socket.destroy();
      evidence.push(`Origin evil + bearer + cookie: HTTP ${r.status}`, `Origin evil + cookie only: HTTP ${r2.status}`);
      const pass = r.status === 403 && r2.status >= 400 && r2.status < 500;
      return done(pass, `HTTP ${r.status}/${r2.status}`, pass ? 'cross-origin upgrade refused' : 'cross-origin upgrade not refused with 403');
    }
    case 'TU-004': {
      const N = 5000;
      const tok = await stack.ciToken();
      const sockets: import('node:net').Socket[] = [];
      const t0 = Date.now();
      let refused = 0;
      const opens = [];
      for (let i = 0; i < N; i++) {
        opens.push(
          connectTcp(host, port, 5000).then(
            (s) => {
              sockets.push(s);
              s.on('error', () => {});
              s.resume(); // read, so a close by the server is seen (readableEnded) and not only a reset
              // half: slow, incomplete headers; half: complete upgrade without a token
              if (i % 2) s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\n`);
              else s.write(upgradeRequest(path, 'x'));
            },
            () => refused++,
          ),
        );
      }
      await Promise.all(opens);
      evidence.push(`${sockets.length} of ${N} flood connections opened in ${Date.now() - t0} ms (${refused} refused at TCP)`);
      const c0 = Date.now();
      const ctrl = await openTunnelWs(`${stack.agent.url}${path}`, tok, {}, 5000);
      const ctrlMs = Date.now() - c0;
      ctrl.ws?.terminate();
      await new Promise((r) => setTimeout(r, 1000));
      const stillOpen = sockets.filter((s) => !s.destroyed && !s.readableEnded).length;
      for (const s of sockets) s.destroy();
      evidence.push(`control client: ${ctrl.ok ? 'connected' : `HTTP ${ctrl.status} ${ctrl.error ?? ''}`} in ${ctrlMs} ms`, `flood connections still open after 1 s: ${stillOpen}`);
      if (!ctrl.ok || ctrlMs > 2000) return done(false, 'control-slow', `control client did not connect within 2 s (${ctrlMs} ms)`);
      const slow = Math.floor(N / 2);
      if (stillOpen >= slow) return done(false, 'no-limit', `no per-IP/global connection limit: ${stillOpen} idle half-open connections kept`);
      return done(true, 'limited', 'control connected within 2 s; flood limited');
    }
    case 'TU-006': {
      const tok = await stack.ciToken();
      const idle = await stack.wsStream(tok, 1);
      const drip = await stack.wsStream(tok, 1);
      const startup = startupMessage({ user: 'noop', database: CONNECTION });
      let dripAt = 0;
      const t0 = Date.now();
      const timer = setInterval(() => {
        if (dripAt < startup.length && !drip.closed) drip.writeChunked(startup.subarray(dripAt, ++dripAt), 1);
      }, 10_000);
      const deadline = 25_000;
      while (Date.now() - t0 < deadline && !(idle.closed && drip.closed) && !ctx.aborted()) await new Promise((r) => setTimeout(r, 250));
      clearInterval(timer);
      evidence.push(`idle stream: ${idle.closed ? `closed after ${Math.round((Date.now() - t0) / 1000)} s (${idle.closeReason})` : 'still open'}`, `1 byte / 10 s stream: ${drip.closed ? `closed (${drip.closeReason})` : 'still open'}`);
      idle.ws.terminate();
      drip.ws.terminate();
      return done(idle.closed && drip.closed, 'closed', idle.closed && drip.closed ? 'both closed by the startup timeout' : `not closed within ${deadline / 1000} s`);
    }
    case 'TU-007': {
      const tok = await stack.ciToken();
      const results: string[] = [];
      let ok = true;
      for (const variant of ['1 GiB frame header', '64 MiB fragmented message']) {
        const r = await rawHttp(host, port, upgradeRequest(path, `${host}:${port}`, { Authorization: `Bearer ${tok}` }), 5000);
        if (r.status !== 101) {
          results.push(`${variant}: upgrade refused HTTP ${r.status}`);
          ok = false;
          r.socket.destroy();
          continue;
        }
        const closeP = waitServerClose(r.socket, r.rest, 5000);
        if (variant.startsWith('1 GiB')) r.socket.write(wsFrame(0x2, Buffer.alloc(16), { declaredLength: 1024 ** 3 }).subarray(0, 14));
        else {
          // Frames built once and written one per tick: masking 64 MiB in a loop would stall the event
          // loop the agent shares with the runner, and the close would be missed.
          const piece = Buffer.alloc(1024 * 1024);
          const firstFrame = wsFrame(0x2, piece, { fin: false });
          const contFrame = wsFrame(0x0, piece, { fin: false });
          let closedEarly = false;
          void closeP.then(() => (closedEarly = true));
          for (let i = 0; i < 64 && !r.socket.destroyed && !closedEarly; i++) {
            r.socket.write(i === 0 ? firstFrame : contFrame);
            await new Promise((res) => setImmediate(res));
          }
        }
        const cl = await closeP;
        results.push(`${variant}: ${cl.code !== undefined ? `close ${cl.code}` : cl.closedSocket ? 'socket closed' : 'no close'} in ${cl.ms} ms`);
        if (cl.code !== 1009 && !(cl.closedSocket && cl.ms < 5000)) ok = false;
        if (cl.code !== undefined && cl.code !== 1009) ok = false;
        r.socket.destroy();
      }
      evidence.push(...results);
      return done(ok, ok ? 'closed 1009' : 'not closed', ok ? 'oversized frames closed with 1009' : 'oversized frame not refused with 1009');
    }
    case 'TU-009': {
      const lines = Array.from({ length: 2000 }, (_, i) => `X-Atk-${i}: v`);
      const r = await rawHttp(host, port, upgradeRequest(path, `${host}:${port}`, {}, lines), 5000);
      r.socket.destroy();
      evidence.push(`2000 headers: HTTP ${r.status}${r.closed && !r.status ? ' (closed without a response)' : ''}`);
      const pass = [400, 401, 431].includes(r.status) || (r.status === 0 && r.closed);
      return done(pass, `HTTP ${r.status}`, pass ? 'refused, process alive' : `unexpected HTTP ${r.status}`);
    }
    case 'TU-010': {
      const tok = await stack.ciToken();
      const variants: Array<[string, (s: import('node:net').Socket) => void]> = [
        ['text frame', (s) => s.write(wsFrame(0x1, Buffer.from('Q\0\0\0\rSELECT 1\0')))],
        ['unmasked frame', (s) => s.write(wsFrame(0x2, Buffer.from([FrameType.Data, 0, 0, 0, 1, 0x51]), { mask: false }))],
        ['reserved opcode 0x3', (s) => s.write(wsFrame(0x3, Buffer.from('x')))],
        ['RSV1 set', (s) => s.write(wsFrame(0x2, Buffer.from([FrameType.Data, 0, 0, 0, 1]), { rsv: 4 }))],
      ];
      let ok = true;
      for (const [label, act] of variants) {
        const r = await rawHttp(host, port, upgradeRequest(path, `${host}:${port}`, { Authorization: `Bearer ${tok}` }), 5000);
        if (r.status !== 101) {
          evidence.push(`${label}: upgrade HTTP ${r.status}`);
          ok = false;
          r.socket.destroy();
          continue;
        }
        const p = waitServerClose(r.socket, r.rest, 3000);
        act(r.socket);
        const cl = await p;
        evidence.push(`${label}: ${cl.code !== undefined ? `close ${cl.code}` : cl.closedSocket ? 'socket closed' : 'not closed'} in ${cl.ms} ms`);
        if (!(cl.code === 1002 || cl.code === 1003 || (cl.code === undefined && cl.closedSocket))) ok = false;
        r.socket.destroy();
      }
      // ping flood: 10k pings in about a second
      const r = await rawHttp(host, port, upgradeRequest(path, `${host}:${port}`, { Authorization: `Bearer ${tok}` }), 5000);
      if (r.status === 101) {
        const p = waitServerClose(r.socket, r.rest, 2500);
        for (let i = 0; i < 10_000 && !r.socket.destroyed; i++) r.socket.write(wsFrame(0x9, Buffer.from('p')));
        const cl = await p;
        evidence.push(`ping flood 10k: ${cl.pongs} pongs, ${cl.code !== undefined ? `close ${cl.code}` : cl.closedSocket ? 'socket closed' : 'not closed'}`);
        if (cl.code === undefined && !cl.closedSocket && cl.pongs >= 5000) {
          ok = false;
          evidence.push('ping flood not rate limited');
        }
        r.socket.destroy();
      }
      return done(ok, ok ? 'closed' : 'accepted', ok ? 'protocol violations closed with 1002/1003' : 'some violation not refused (see evidence)');
    }
    case 'TU-012': {
      const l = stack.listener;
      evidence.push(`listener bound to ${l.host}:${l.port}`);
      const external = Object.values(os.networkInterfaces()).flat().find((i) => i && i.family === 'IPv4' && !i.internal)?.address;
      if (external) {
        const reach = await connectTcp(external, l.port, 2000).then((s) => (s.destroy(), true), () => false);
        evidence.push(`from ${external}: ${reach ? 'REACHABLE' : 'refused'}`);
        if (reach) return done(false, 'exposed', 'local listener reachable on a non-loopback address');
      }
      if (process.getuid?.() !== 0) return done(false, 'not-run', 'runner not root: cannot test another OS user', 'runner');
      const script = `const net=require('net');const s=net.connect(${l.port},'127.0.0.1');let b=Buffer.alloc(0);` +
        `const st=(p)=>{const parts=[Buffer.from([0,3,0,0])];for(const[k,v]of Object.entries(p))parts.push(Buffer.from(k+'\\0'+v+'\\0'));parts.push(Buffer.from([0]));const body=Buffer.concat(parts);const l=Buffer.alloc(4);l.writeInt32BE(body.length+4);return Buffer.concat([l,body]);};` +
        `s.on('connect',()=>s.write(st({user:'noop',database:'${CONNECTION}'})));let sent=false;` +
        `s.on('data',d=>{b=Buffer.concat([b,d]);if(!sent&&b.includes(Buffer.from([0x5a,0,0,0,5]))){sent=true;const q=Buffer.from('SELECT 4242\\0');const h=Buffer.alloc(5);h[0]=0x51;h.writeInt32BE(q.length+4,1);s.write(Buffer.concat([h,q]));}` +
        `if(b.includes(Buffer.from('4242'))&&b.lastIndexOf(0x5a)>b.indexOf(Buffer.from('4242'))){console.log('QUERY_OK');process.exit(0)}});` +
        `s.on('close',()=>{console.log('CLOSED '+b.toString('latin1').replace(/[^ -~]/g,'.').slice(0,200));process.exit(0)});s.on('error',e=>{console.log('ERR '+e.message);process.exit(0)});setTimeout(()=>{console.log('TIMEOUT');process.exit(0)},8000);`;
      const out = await new Promise<string>((resolve) => {
        const p = spawn(process.execPath, ['-e', script], { uid: 65534, gid: 65534, stdio: ['ignore', 'pipe', 'pipe'], cwd: '/' });
        let o = '';
        p.stdout.on('data', (d) => (o += d));
        p.stderr.on('data', (d) => (o += d));
        p.on('close', () => resolve(o.trim()));
        p.on('error', (e) => resolve(`spawn failed: ${e.message}`));
      });
      evidence.push(`as OS user nobody (uid 65534): ${out.slice(0, 200)}`);
      if (out.startsWith('spawn failed')) return done(false, 'not-run', out, 'runner');
      if (out.includes('QUERY_OK')) return done(false, 'exposed', 'another OS user ran SELECT through the authenticated tunnel (no per-session secret / peer check)');
      return done(true, 'rejected', 'listener on loopback only; other OS users refused');
    }
    case 'TU-013': {
      let ok = true;
      try {
        cliTunnelUrl('ws://agent.example.com:8443', CONNECTION, false);
        evidence.push('CLI accepted ws:// to a non-loopback host');
        ok = false;
      } catch (err) {
        evidence.push(`CLI refuses ws:// to a remote host: ${(err as Error).message.slice(0, 100)}`);
      }
      // wss:// with a self-signed certificate: a TLS server the CLI must refuse to talk to.
      const tls = await selfSignedServer();
      if (!tls) evidence.push('could not create a self-signed TLS server (openssl): that half not tested');
      else {
        const { TunnelClient } = await import('../../cli/src/services/tunnel-client.js');
        const client = new TunnelClient({ agentUrl: `wss://127.0.0.1:${tls.port}`, connection: CONNECTION, getToken: () => 'x' });
        try {
          await client.start();
          evidence.push('CLI connected to a self-signed wss:// endpoint');
          ok = false;
        } catch (err) {
          evidence.push(`CLI refuses a self-signed certificate: ${(err as Error).message.slice(0, 120)}`);
        }
        await client.stop();
        await tls.close();
      }
      evidence.push('agent production mode (refuse plain ws off loopback): not judged by the runner');
      return done(ok, ok ? 'rejected' : 'downgrade', ok ? 'CLI refuses ws:// to remote hosts and unverified TLS' : 'TLS downgrade accepted');
    }
    case 'TU-015': {
      const a = await stack.wsStream(await stack.ciToken(), 1);
      const aw = new PgWire(a);
      await aw.startup({ user: 'noop', database: CONNECTION });
      const before = aw.messages.length;
      const b = await stack.wsStream(await stack.userToken('alice@clinic.example'), 7);
      const bw = new PgWire(b);
      await bw.startup({ user: 'noop', database: CONNECTION });
      // B writes into stream 1 (A's id on A's socket) without opening it, and closes it.
      b.sendFrame(FrameType.Data, 1, msg.query('SELECT 4242'));
      b.sendFrame(FrameType.Window, 1, Buffer.from([0, 0, 0x10, 0]));
      b.sendFrame(FrameType.Close, 1);
      await new Promise((r) => setTimeout(r, 1000));
      const aGot = aw.messages.length - before;
      const r = await aw.query('SELECT 1', 5000);
      evidence.push(`A's stream got ${aGot} unsolicited messages; A still usable: ${r.outcome === 'ready' && !r.errors.length}`);
      a.close();
      b.close();
      a.ws.terminate();
      b.ws.terminate();
      const pass = aGot === 0 && r.outcome === 'ready' && !r.errors.length;
      return done(pass, pass ? 'isolated' : 'hijacked', pass ? "stream ids are bound to their own socket" : "another tunnel affected A's stream");
    }
    case 'TU-016': {
      const tok = await stack.ciToken();
      const opened: UpgradeResultLike[] = [];
      for (let i = 0; i < 200; i++) opened.push(await openTunnelWs(`${stack.agent.url}${path}`, tok, {}, 5000));
      const ok = opened.filter((x) => x.ok).length;
      const statuses = [...new Set(opened.filter((x) => !x.ok).map((x) => x.status))];
      const other = await stack.wsStream(await stack.userToken('alice@clinic.example'), 1).then(async (s) => {
        const w = new PgWire(s);
        const st = await w.startup({ user: 'noop', database: CONNECTION });
        const q = st === 'ready' ? await w.query('SELECT 1', 5000) : undefined;
        s.ws.terminate();
        return st === 'ready' && q?.outcome === 'ready' && !q.errors.length;
      }, () => false);
      for (const x of opened) x.ws?.terminate();
      evidence.push(`${ok} of 200 tunnels opened with one token; refusals: ${statuses.join(',') || 'none'}`, `other identity still served: ${other}`);
      const pass = ok < 200 && other;
      return done(pass, pass ? 'capped' : 'uncapped', pass ? `capped at ${ok} per identity` : 'not capped or other identities starved');
    }
    default:
      return { pass: false, observed: 'not-run', reason: `runner has no procedure for tunnel action "${String(c.action ?? '').slice(0, 80)}"`, gap: 'runner', evidence };
  }
}

type UpgradeResultLike = { ok: boolean; status: number; ws?: import('ws').WebSocket };

async function selfSignedServer(): Promise<{ port: number; close(): Promise<void> } | null> {
  const { mkdtemp, readFile, rm } = await import('node:fs/promises');
  const { execFileSync } = await import('node:child_process');
  const path = await import('node:path');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'atk-tls-'));
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${dir}/k.pem`, '-out', `${dir}/c.pem`, '-days', '1', '-subj', '/CN=127.0.0.1'], { stdio: 'ignore' });
    const https = await import('node:https');
    const srv = https.createServer({ key: await readFile(`${dir}/k.pem`), cert: await readFile(`${dir}/c.pem`) }, (_q, s) => s.end());
    srv.on('upgrade', (_req, sock) => sock.destroy());
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    return { port: (srv.address() as AddressInfo).port, close: async () => { srv.close(); await rm(dir, { recursive: true, force: true }); } };
  } catch {
    await rm(dir, { recursive: true, force: true });
    return null;
  }
}

// ── kind: approval (and audit cases of that kind) ───────────────────────────────────────────────

export async function runApprovalCase(c: Case, ctx: RunContext): Promise<Partial> {
  const { stack } = ctx;
  const evidence: string[] = [];
  const auditFrom = stack.audit.records.length;
  if (c.id === 'AD-006') {
    await stack.fixture.reset();
    stack.audit.failing = true;
    let r;
    try {
      const w = await stack.session();
      r = await w.query('SELECT id FROM patients', 10_000);
      w.close();
    } catch (err) {
      r = { outcome: 'refused', errors: [{ message: (err as Error).message }], rowCount: 0 };
    } finally {
      stack.audit.failing = false;
    }
    evidence.push(`with the audit sink failing: ${r.outcome} ${describeErrors(r.errors as never)}, rows ${r.rowCount}`, `audit calls refused: ${stack.audit.failures}`);
    const refused = r.outcome !== 'ready' || r.errors.length > 0;
    return refused && r.rowCount === 0
      ? { pass: true, observed: 'rejected', reason: 'statement refused while the audit store is unavailable', evidence }
      : { pass: false, observed: 'executed', reason: 'statement ran unaudited while the audit sink failed (not fail-closed)', gap: 'product', evidence };
  }
  if (c.id === 'AD-003' || c.id === 'AD-009') {
    await stack.fixture.reset();
    const w = await stack.session();
    if (c.id === 'AD-003') {
      w.send(Buffer.concat([msg.parse('u', 'UPDATE notes SET body = $1 WHERE id = $2'), msg.bind('', 'u', ['harmless', '1']), msg.execute(''), msg.sync()]));
      await w.waitReady(0, 2, 5000);
      await w.query('PREPARE stealth(int) AS SELECT id FROM canary WHERE id = $1', 5000);
      w.send(Buffer.concat([msg.bind('', 'stealth', ['1']), msg.execute(''), msg.sync()]));
      await w.waitReady(0, 4, 5000);
      w.close();
    } else {
      await w.query('SELECT 1', 5000);
      w.transport.close(); // abrupt
    }
    await new Promise((r) => setTimeout(r, 500));
    const recs = stack.audit.since(auditFrom);
    const text = JSON.stringify(recs);
    evidence.push(`audit records: ${recs.length ? recs.map((r) => r.method).join(', ') : 'none'}`);
    if (c.id === 'AD-003') {
      const hasSql = text.includes('UPDATE notes SET body = $1') && text.includes('harmless');
      const hasPrepared = text.includes('SELECT id FROM canary WHERE id = $1');
      return hasSql && hasPrepared
        ? { pass: true, observed: 'audited', reason: 'statement text and parameters recorded', evidence }
        : { pass: false, observed: 'not-audited', reason: 'no statement-level audit record with the prepared SQL text and its bound parameters', gap: 'product', evidence };
    }
    const hasStart = recs.some((r) => /start/i.test(r.method));
    const hasEnd = recs.some((r) => /end/i.test(r.method));
    const hasReason = /reason/i.test(JSON.stringify(recs.filter((r) => /end/i.test(r.method))));
    const hasJti = text.includes('jti');
    evidence.push(`start ${hasStart}, end ${hasEnd}, end reason ${hasReason}, jti ${hasJti}`);
    return hasStart && hasEnd && hasReason && hasJti
      ? { pass: true, observed: 'audited', reason: 'session start/end recorded with reason and token id', evidence }
      : { pass: false, observed: 'partial', reason: 'session lifecycle records incomplete (end reason / jti missing)', gap: 'product', evidence };
  }
  if (c.id === 'AD-007') {
    // Leave some events, then tamper with a copy of the stored chain and ask the product's verifier.
    const w = await stack.session();
    await w.query('SELECT id FROM patients WHERE id = 1', 5000);
    w.close();
    await new Promise((r) => setTimeout(r, 300));
    const dir = path.join(stack.auditDir, 'audit');
    const files = (await readdir(dir)).filter((f) => f.endsWith('.jsonl') && !f.startsWith('approvals')).sort();
    const lines = (await Promise.all(files.map((f) => readFile(path.join(dir, f), 'utf8')))).join('').split('\n').filter(Boolean);
    const intact = await verifyChain(lines);
    const edited = lines.map((l, i) => (i === Math.floor(lines.length / 2) ? l.replace('"type":"', '"type":"x') : l));
    const deleted = lines.filter((_, i) => i !== Math.floor(lines.length / 3));
    const swapped = [...lines];
    [swapped[1], swapped[2]] = [swapped[2], swapped[1]];
    const results = { intact, edited: await verifyChain(edited), deleted: await verifyChain(deleted), swapped: await verifyChain(swapped) };
    evidence.push(`events ${lines.length}; ` + Object.entries(results).map(([k, v]) => `${k}: ${v.ok ? 'ok' : `broken at ${v.brokenAt} (${v.reason})`}`).join('; '));
    const detected = intact.ok && !results.edited.ok && !results.deleted.ok && !results.swapped.ok;
    return detected
      ? { pass: true, observed: 'rejected', reason: 'the verifier reports every edit, deletion and reordering', evidence }
      : { pass: false, observed: 'accepted', reason: 'a tampered chain verified', gap: 'product', evidence };
  }
  const aw = AW_CASES[c.id];
  if (aw) return runAw(c, ctx, aw);
  // Approval-workflow cases without a procedure: run the statement (if any) to show whether it is held.

  const sql = typeof c.sql === 'string' ? c.sql : /DELETE FROM notes WHERE id = 2/.test(String(c.flow ?? c.setup ?? '')) ? 'DELETE FROM notes WHERE id = 2' : undefined;
  if (sql) {
    const f0 = await stack.fixture.reset();
    const w = await stack.session();
    const r = await w.query(sql, ctx.stepTimeoutMs);
    const state = await readState(ctx, f0);
    w.close();
    const kinds = r.errors.map(classifyError);
    evidence.push(`${sql.slice(0, 60).replace(/\s+/g, ' ')}…: ${kinds.join(',') || 'executed'} ${describeErrors(r.errors)}`, ...stateEvidence(state));
  }
  return { pass: false, observed: 'not-run', reason: `runner has no procedure for approval case ${c.id}`, gap: 'runner', evidence };
}

// ── approval workflow (AW-*) ────────────────────────────────────────────────────────────────────
//
// Judged from the outside: what the client received (the hold notice names the request ap_…), the
// approval records through the agent's HTTP API, and the notes table / fingerprint read directly.
// The runner decides requests itself through the API as carol (human, group compliance); the auto-
// approve loop of the stack is paused meanwhile. The flow's own prerequisite approvals ("get approval
// for A", "approved by a human") are given in both modes; the attack statement, once shown held, is
// denied in deny mode (it must never run) and approved in auto-approve mode (the second human approves
// every request: it must run then, once, and only then).

const DEL2 = 'DELETE FROM notes WHERE id = 2';
const HELD_RE = /held for approval (ap_[A-Za-z0-9_-]+)/;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface ApiReply {
  status: number;
  json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  text: string;
}

interface Aw {
  c: Case;
  ctx: RunContext;
  stack: AttackStack;
  deny: boolean;
  evidence: string[];
  f0: Fingerprint;
  carol: string;
  auditFrom: number;
  /** Opens a session through the CLI's local port (ci-nightly, "nhi:ci-reporting"); closed at the end. */
  session(opts?: WireOptionsLike, params?: Record<string, string>): Promise<PgWire>;
  /** A session of another identity over the agent's WebSocket; closed at the end. */
  sessionAs(token: string): Promise<PgWire>;
  api(method: string, p: string, o?: { token?: string | null; body?: unknown; headers?: Record<string, string> }): Promise<ApiReply>;
  /** GET /api/approvals/ID as carol: the record, or undefined. */
  record(id: string): Promise<any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  /** POST approve|deny as carol; evidence line; returns the HTTP status. */
  decide(id: string, verdict: 'approve' | 'deny', why?: string): Promise<number>;
  /** The attack request: denied in deny mode, approved in auto-approve mode. */
  settle(id: string, what: string): Promise<number>;
  notes(): Promise<string[]>;
  fail(observed: string, reason: string, gap?: 'product' | 'runner'): Partial;
  pass(observed: string, reason: string): Partial;
}
type WireOptionsLike = ConstructorParameters<typeof PgWire>[1];

/** The request id of the first hold notice after `from` not in `skip`; or what came instead. */
async function waitHeld(w: PgWire, from: number, timeoutMs = 5000, skip: string[] = [], zLimit = 1): Promise<{ id?: string; instead: string; at: number }> {
  let id: string | undefined;
  let at = -1;
  const find = () => {
    for (let i = from; i < w.messages.length; i++) {
      const m = w.messages[i];
      if (m.type !== 'N' || !m.body) continue;
      const r = HELD_RE.exec(parseErrorFields(m.body).message ?? '');
      if (r && !skip.includes(r[1])) {
        id = r[1];
        at = i;
        return true;
      }
    }
    return false;
  };
  // Stops at the hold notice, or once `zLimit` statements after `from` ended without one.
  await w.until(() => find() || w.count('Z', from) >= zLimit, timeoutMs);
  if (id) return { id, instead: '', at };
  const errs = w.errors(from);
  const tags = commandTags(w, from);
  const instead = w.closed ? `connection closed (${w.closeWhy})` : errs.length ? `refused: ${describeErrors(errs)}` : tags.length ? `EXECUTED without a hold (${tags.join(', ')})` : `no hold notice within ${timeoutMs} ms (${summarize(w, from)})`;
  return { instead, at };
}

function commandTags(w: PgWire, from = 0, to = w.messages.length): string[] {
  const out: string[] = [];
  for (let i = from; i < Math.min(to, w.messages.length); i++) {
    const m = w.messages[i];
    if (m.type === 'C' && m.body) out.push(m.body.subarray(0, Math.max(0, m.body.indexOf(0))).toString('utf8'));
  }
  return out;
}

/** Sends a simple query and waits for its hold notice. */
async function sendHeld(w: PgWire, sql: string, timeoutMs = 5000): Promise<{ from: number; id?: string; instead: string }> {
  const from = w.messages.length;
  w.send(msg.query(sql));
  const h = await waitHeld(w, from, timeoutMs);
  return { from, id: h.id, instead: h.instead };
}

/** Waits for `n` ReadyForQuery after `from`; returns the tags, errors and outcome of that span. */
async function finish(w: PgWire, from: number, n = 1, timeoutMs = 8000) {
  const outcome = await w.waitReady(from, n, timeoutMs);
  return { outcome, tags: commandTags(w, from), errors: w.errors(from), copyData: w.count('d', from), text: `${outcome}: ${commandTags(w, from).join(', ') || 'no CommandComplete'}${w.errors(from).length ? ` | ${describeErrors(w.errors(from))}` : ''}` };
}

function httpCall(base: string, method: string, p: string, headers: Record<string, string>, body?: string): Promise<ApiReply> {
  return new Promise((resolve) => {
    const u = new URL(p, base);
    const req = http.request({ host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers: { ...headers, ...(body !== undefined ? { 'content-length': String(Buffer.byteLength(body)) } : {}) }, timeout: 5000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, json, text });
      });
      res.on('error', (e) => resolve({ status: 0, json: undefined, text: `response error: ${e.message}` }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, json: undefined, text: `request error: ${e.message}` }));
    req.end(body);
  });
}

function apiWhy(r: ApiReply): string {
  return `${r.status}${r.json?.error ? ` ${r.json.error.code}: ${String(r.json.error.message ?? '').slice(0, 120)}` : r.json?.approval ? ` (${r.json.approval.status})` : ''}`;
}

async function runAw(c: Case, ctx: RunContext, body: (aw: Aw) => Promise<Partial>): Promise<Partial> {
  const { stack } = ctx;
  const evidence: string[] = [];
  const wires: PgWire[] = [];
  const sockets: Array<{ terminate(): void }> = [];
  const base = stack.agent.url.replace(/^ws/, 'http');
  const carolId = { sub: 'u-carol', issuer: stack.issuer.issuer, email: 'carol@clinic.example', groups: ['compliance'] };
  stack.approvalLoop.paused = true;
  await sleep(120); // let a running loop iteration finish
  try {
    const f0 = await stack.fixture.reset();
    const carol = await stack.userToken('carol@clinic.example');
    const deny = ctx.mode === 'deny';
    const api: Aw['api'] = (method, p, o = {}) => {
      const headers: Record<string, string> = { ...(o.headers ?? {}) };
      const token = o.token === undefined ? carol : o.token;
      if (token) headers.authorization = `Bearer ${token}`;
      let payload: string | undefined;
      if (o.body !== undefined) {
        payload = typeof o.body === 'string' ? o.body : JSON.stringify(o.body);
        headers['content-type'] ??= 'application/json';
      }
      return httpCall(base, method, p, headers, payload);
    };
    const aw: Aw = {
      c, ctx, stack, deny, evidence, f0, carol,
      auditFrom: stack.audit.records.length,
      async session(o = {}, params = {}) {
        const w = await stack.session(o, params);
        wires.push(w);
        return w;
      },
      async sessionAs(token) {
        const s = await stack.wsStream(token, 1);
        sockets.push(s.ws);
        const w = new PgWire(s);
        wires.push(w);
        const r = await w.startup({ user: 'noop', database: CONNECTION });
        if (r !== 'ready') throw new Error(`startup over the WebSocket failed (${r} ${describeErrors(w.errors())})`);
        return w;
      },
      api,
      async record(id) {
        const r = await api('GET', `/api/approvals/${id}`);
        return r.status === 200 ? r.json?.approval : undefined;
      },
      async decide(id, verdict, why) {
        const r = await api('POST', `/api/approvals/${id}/${verdict}`, { body: { reason: why ?? `attack runner (${ctx.mode} mode)` } });
        evidence.push(`carol ${verdict}s ${id}: HTTP ${apiWhy(r)}`);
        return r.status;
      },
      settle(id, what) {
        return aw.decide(id, deny ? 'deny' : 'approve', `attack runner, ${ctx.mode} mode: ${what}`);
      },
      async notes() {
        return (await directQueryRows(ctx, 'SELECT id, body FROM notes ORDER BY id')).map((r) => `${r[0]}:${r[1]}`);
      },
      fail: (observed, reason, gap = 'product') => ({ pass: false, observed, reason, gap, evidence }),
      pass: (observed, reason) => ({ pass: true, observed, reason, evidence }),
    };
    return await body(aw);
  } finally {
    for (const w of wires) w.close();
    for (const s of sockets) s.terminate();
    await sleep(150);
    const left = await stack.agent.store.approvals.list({ status: 'pending' }).catch(() => []);
    if (left.length) {
      evidence.push(`note: ${left.length} request(s) still pending after the case's sessions closed (${left.map((a) => a.id).slice(0, 5).join(', ')}${left.length > 5 ? ', …' : ''}): closing the client does not withdraw a held statement's request; the runner denies them`);
      for (const a of left) await stack.agent.store.approvals.decide(a.id, carolId, 'deny', 'attack runner cleanup').catch(() => {});
    }
    stack.approvalLoop.paused = false;
  }
}

/** Nothing after `from` says the statement ran (no CommandComplete, no rows). */
function notRunYet(w: PgWire, from: number): boolean {
  return w.count('C', from) === 0 && w.count('D', from) === 0 && w.count('d', from) === 0;
}

/**
 * The end of one attack request, per mode: deny mode → the client got 42501 and `notes` equals `before`;
 * auto-approve mode → it ran (a CommandComplete). Returns a failure reason or null.
 */
function judgeSettled(aw: Aw, fin: Awaited<ReturnType<typeof finish>>, what: string): string | null {
  if (fin.outcome !== 'ready') return `${what}: no answer after the decision (${fin.text})`;
  if (aw.deny) {
    if (fin.tags.length) return `${what} RAN although its request was denied (${fin.text})`;
    if (!fin.errors.some((e) => e.code === '42501')) return `${what}: denied, but the client got no 42501 (${fin.text})`;
    return null;
  }
  if (!fin.tags.length) return `${what}: approved, but it did not run (${fin.text})`;
  return null;
}

const AW_CASES: Record<string, (aw: Aw) => Promise<Partial>> = {
  // Machine identity as approver: a machine token in the approver group is refused (403), and so are a
  // human outside it and the requester; the request stays pending and the statement does not run.
  async 'AW-002'(aw) {
    const { stack, evidence } = aw;
    const bot = await stack.issuer.clientCredentialsToken('approver-bot', 'approver-bot-secret');
    const alice = await stack.userToken('alice@clinic.example');
    const requester = await stack.ciToken();
    const w = await aw.session();
    const h = await sendHeld(w, DEL2);
    if (!h.id) return aw.fail('not-held', `${DEL2} was not held: ${h.instead}`);
    evidence.push(`${DEL2}: held as ${h.id}`);
    const tries: Array<[string, string]> = [['approver-bot (machine, group compliance)', bot], ['alice (human, not an approver)', alice], ['ci-nightly (the requester, machine)', requester]];
    const accepted: string[] = [];
    for (const [who, tok] of tries) {
      const r = await aw.api('POST', `/api/approvals/${h.id}/approve`, { token: tok, body: { reason: 'lgtm' } });
      evidence.push(`${who} approves: HTTP ${apiWhy(r)}`);
      if (r.status !== 403) accepted.push(`${who} got HTTP ${r.status}`);
    }
    const rec = await aw.record(h.id);
    evidence.push(`record after the attempts: ${rec?.status} with ${rec?.votes?.length ?? '?'} vote(s)`);
    const ranEarly = !notRunYet(w, h.from);
    if (aw.deny) await aw.settle(h.id, 'AW-002 request');
    else await aw.decide(h.id, 'approve', 'AW-002: the real human approver');
    const fin = await finish(w, h.from);
    evidence.push(`client after the decision: ${fin.text}`);
    const st = await readState(aw.ctx, aw.f0);
    evidence.push(...stateEvidence(st));
    if (accepted.length) return aw.fail('accepted', `approval by a non-eligible identity not refused with 403: ${accepted.join('; ')}`);
    if (rec?.status !== 'pending' || (rec?.votes?.length ?? 0) > 0) return aw.fail('accepted', `the refused attempts changed the request (${rec?.status}, ${rec?.votes?.length} votes)`);
    if (ranEarly) return aw.fail('executed', 'the statement ran before any eligible approval');
    const bad = judgeSettled(aw, fin, DEL2);
    if (bad) return aw.fail('executed', bad);
    if (aw.deny && st.changed.length) return aw.fail('executed', `denied but the fingerprint changed (${st.changed.join(', ')})`);
    return aw.pass('rejected', `machine approver, non-approver and requester all got 403; request stayed pending; ${aw.deny ? 'denied: not run' : "ran only after carol's approval"}`);
  },

  // Approve A, execute B: B is a new pending request; notes keeps row 1 (deny mode).
  async 'AW-003'(aw) {
    const { evidence } = aw;
    const B = 'DELETE FROM notes WHERE id = 2 OR true';
    const w = await aw.session();
    const a = await sendHeld(w, DEL2);
    if (!a.id) return aw.fail('not-held', `A (${DEL2}) was not held: ${a.instead}`);
    if ((await aw.decide(a.id, 'approve', 'AW-003: approve A')) !== 200) return aw.fail('runner-error', `could not approve A ${a.id}`, 'runner');
    const fa = await finish(w, a.from);
    evidence.push(`A after approval: ${fa.text}`);
    if (!fa.tags.includes('DELETE 1')) return aw.fail('error', `approved A did not run as DELETE 1 (${fa.text})`);
    const b = await sendHeld(w, B);
    if (!b.id) return aw.fail(/EXECUTED/.test(b.instead) ? 'executed' : 'not-held', `B (${B}) was not held as a new request: ${b.instead}`);
    evidence.push(`B: held as ${b.id}`);
    const [recA, recB] = [await aw.record(a.id), await aw.record(b.id)];
    evidence.push(`A's record: ${recA?.status}; B's record: ${recB?.status}, sql ${JSON.stringify(recB?.sql)}`);
    await sleep(200);
    const ranEarly = !notRunYet(w, b.from);
    const mid = await aw.notes();
    await aw.settle(b.id, 'B');
    const fb = await finish(w, b.from);
    evidence.push(`B after the decision: ${fb.text}`);
    const end = await aw.notes();
    evidence.push(`notes: after A [${mid.join(' ; ')}], at the end [${end.join(' ; ')}]`);
    if (b.id === a.id) return aw.fail('replayed', 'B reused A\'s approval id');
    if (recB?.sql !== B) return aw.fail('mismatch', `B's request does not show B's text (${JSON.stringify(recB?.sql)})`);
    if (recA?.status !== 'consumed') return aw.fail('reusable', `A's approval is ${recA?.status} after it ran (expected consumed)`);
    if (ranEarly || mid.length !== 1) return aw.fail('executed', `B ran on A's approval (notes [${mid.join(' ; ')}])`);
    const bad = judgeSettled(aw, fb, 'B');
    if (bad) return aw.fail('executed', bad);
    if (aw.deny && !end.some((r) => r.startsWith('1:'))) return aw.fail('executed', 'notes lost row 1');
    return aw.pass('held', `B held as its own request ${b.id}; ${aw.deny ? 'denied: notes still has row 1' : 'ran only after its own approval'}`);
  },

  // Approval replay: the identical statement again (same session, then a new one) needs new approvals.
  async 'AW-005'(aw) {
    const { evidence, ctx } = aw;
    const w = await aw.session();
    const a = await sendHeld(w, DEL2);
    if (!a.id) return aw.fail('not-held', `${DEL2} was not held: ${a.instead}`);
    if ((await aw.decide(a.id, 'approve', 'AW-005: the one approved run')) !== 200) return aw.fail('runner-error', `could not approve ${a.id}`, 'runner');
    const fa = await finish(w, a.from);
    evidence.push(`first run (approved ${a.id}): ${fa.text}`);
    if (!fa.tags.includes('DELETE 1')) return aw.fail('error', `the approved statement did not run (${fa.text})`);
    // Put row 2 back, so that a replay would be visible in the table.
    await directQueryRows(ctx, "INSERT INTO notes (id, patient_id, body) VALUES (2, 2, 'BP stable')");
    const before = await aw.notes();
    const ids = [a.id];
    const problems: string[] = [];
    for (const where of ['same session', 'new session']) {
      const ws = where === 'same session' ? w : await aw.session();
      const r = await sendHeld(ws, DEL2);
      if (!r.id || ids.includes(r.id)) {
        problems.push(`${where}: ${r.id ? `reused ${r.id}` : r.instead}`);
        await finish(ws, r.from, 1, 3000);
        continue;
      }
      ids.push(r.id);
      evidence.push(`${where}: held again as ${r.id}`);
      if (where === 'same session') {
        const re = await aw.api('POST', `/api/approvals/${a.id}/approve`, { body: { reason: 'replay' } });
        evidence.push(`approving the consumed ${a.id} again: HTTP ${apiWhy(re)}`);
        if (re.status === 200) problems.push(`the consumed approval ${a.id} accepted another vote`);
      }
      await sleep(150);
      if (!notRunYet(ws, r.from)) problems.push(`${where}: ran before a new approval`);
      await aw.settle(r.id, `replay in the ${where}`);
      const fr = await finish(ws, r.from);
      evidence.push(`${where} after the decision: ${fr.text}`);
      const bad = judgeSettled(aw, fr, `replay (${where})`);
      if (bad) problems.push(bad);
    }
    const recA = await aw.record(a.id);
    const end = await aw.notes();
    evidence.push(`first approval now ${recA?.status}; notes before the replays [${before.join(' ; ')}], after [${end.join(' ; ')}]`);
    if (recA?.status !== 'consumed') problems.push(`the first approval is ${recA?.status}, not consumed`);
    if (aw.deny && end.join('|') !== before.join('|')) problems.push('a replay changed notes');
    if (problems.length) return aw.fail(problems.some((p) => /ran|reused|EXECUTED|changed/.test(p)) ? 'replayed' : 'error', problems.join('; '));
    return aw.pass('held', `single use: each replay was held as a new request (${ids.slice(1).join(', ')}); ${aw.deny ? 'denied, not run' : 'ran only after its own approval'}`);
  },

  // Approval transplanted to another session / identity: S2 (same NHI) and a session of another NHI send
  // the identical statement; approving S1's request must not release theirs.
  async 'AW-006'(aw) {
    const { evidence, stack, ctx } = aw;
    const otherTok = await stack.issuer.clientCredentialsToken('approver-bot', 'approver-bot-secret');
    const w1 = await aw.session();
    const a = await sendHeld(w1, DEL2);
    if (!a.id) return aw.fail('not-held', `S1: ${DEL2} was not held: ${a.instead}`);
    evidence.push(`S1: held as ${a.id}`);
    // S2 names S1's approval wherever a client could: the application_name and a comment.
    const w2 = await aw.session({}, { application_name: `approval ${a.id}` });
    const s2sql = DEL2;
    const b = await sendHeld(w2, s2sql);
    let w3: PgWire | undefined;
    let c3: Awaited<ReturnType<typeof sendHeld>> | undefined;
    try {
      w3 = await aw.sessionAs(otherTok);
      c3 = await sendHeld(w3, DEL2);
    } catch (err) {
      evidence.push(`nhi:other (approver-bot) session: ${(err as Error).message}`);
    }
    evidence.push(`S2 (same NHI): ${b.id ? `held as ${b.id}` : b.instead}; S3 (nhi:other = approver-bot): ${c3 ? (c3.id ? `held as ${c3.id}` : c3.instead) : 'no session'}`);
    if ((await aw.decide(a.id, 'approve', "AW-006: S1's own request")) !== 200) return aw.fail('runner-error', `could not approve ${a.id}`, 'runner');
    const f1 = await finish(w1, a.from);
    evidence.push(`S1 after approval: ${f1.text}`);
    await directQueryRows(ctx, "INSERT INTO notes (id, patient_id, body) VALUES (2, 2, 'BP stable')");
    const before = await aw.notes();
    await sleep(200);
    const problems: string[] = [];
    if (!f1.tags.includes('DELETE 1')) problems.push(`S1's approved statement did not run (${f1.text})`);
    const others: Array<[string, PgWire, { from: number; id?: string; instead: string }]> = [['S2', w2, b]];
    if (w3 && c3) others.push(['S3 (nhi:other)', w3, c3]);
    for (const [name, w, r] of others) {
      if (!r.id) {
        problems.push(`${name}: ${r.instead}`);
        continue;
      }
      if (r.id === a.id) problems.push(`${name} was attached to S1's request ${a.id}`);
      if (!notRunYet(w, r.from)) problems.push(`${name} ran on S1's approval (${commandTags(w, r.from).join(', ')})`);
      const rec = await aw.record(r.id);
      const recA = await aw.record(a.id);
      evidence.push(`${name}'s request ${r.id}: ${rec?.status}, session ${rec?.sessionId?.slice(0, 12)}, requester ${rec?.requester?.sub} (S1: session ${recA?.sessionId?.slice(0, 12)}, requester ${recA?.requester?.sub})`);
      if (rec?.status !== 'pending') problems.push(`${name}'s request is ${rec?.status} after S1's approval`);
      await aw.settle(r.id, name);
      const fr = await finish(w, r.from);
      evidence.push(`${name} after the decision: ${fr.text}`);
      const bad = judgeSettled(aw, fr, name);
      if (bad) problems.push(bad);
    }
    if (!c3) problems.push('the session of nhi:other could not be opened (runner)');
    const end = await aw.notes();
    if (aw.deny && end.join('|') !== before.join('|')) problems.push(`notes changed after S1's run: [${before.join(' ; ')}] -> [${end.join(' ; ')}]`);
    if (problems.length) return aw.fail(problems.some((p) => /ran on|attached|RAN|EXECUTED/.test(p)) ? 'transplanted' : 'error', problems.join('; '), problems.every((p) => /runner/.test(p)) ? 'runner' : 'product');
    return aw.pass('held', `approval bound to its session: S2 and nhi:other each got their own request and stayed held when S1's was approved; ${aw.deny ? 'denied: not run' : 'ran only after their own approvals'}`);
  },

  // Pipelined statements behind a held write: approving the first runs only it; the second gets its own
  // request; nothing overtakes; order preserved.
  async 'AW-008'(aw) {
    const { evidence, ctx, c } = aw;
    const needles = needlesFor(c, ctx.core);
    const w = await aw.session({ needles, keepRows: 100 });
    const from = w.messages.length;
    w.send(Buffer.concat([msg.query(DEL2), msg.query('DELETE FROM notes'), msg.query('SELECT * FROM patients')]));
    const h1 = await waitHeld(w, from);
    if (!h1.id) return aw.fail('not-held', `first statement not held: ${h1.instead}`);
    await sleep(250);
    const problems: string[] = [];
    if (!notRunYet(w, from) || w.count('T', from) > 0) problems.push(`something ran while the first was held (${summarize(w, from)})`);
    if ((await aw.decide(h1.id, 'approve', 'AW-008: the first statement')) !== 200) return aw.fail('runner-error', `could not approve ${h1.id}`, 'runner');
    const h2 = await waitHeld(w, h1.at + 1, 5000, [h1.id], 3);
    const mid = await aw.notes();
    evidence.push(`after approving ${h1.id}: ${commandTags(w, from).join(', ') || 'nothing'}; second ${h2.id ? `held as ${h2.id}` : h2.instead}; notes [${mid.join(' ; ')}]`);
    if (!h2.id) {
      problems.push(`the second statement was not held as its own request: ${h2.instead}`);
    } else {
      const rec2 = await aw.record(h2.id);
      if (rec2?.sql !== 'DELETE FROM notes') problems.push(`the second request shows ${JSON.stringify(rec2?.sql)}`);
      await sleep(150);
      if (w.count('T', from) > 0 || w.count('D', from) > 0) problems.push('SELECT overtook the held second statement');
      await aw.settle(h2.id, 'the second statement');
    }
    const fin = await finish(w, from, 3);
    await w.until(() => false, 400); // anything that trails the third ReadyForQuery
    const end = await aw.notes();
    // Order on the wire: hold 1, DELETE 1, hold 2, its end, then the SELECT's rows.
    const seq: string[] = [];
    for (let i = from; i < w.messages.length; i++) {
      const m = w.messages[i];
      if (m.type === 'N') seq.push(HELD_RE.test(parseErrorFields(m.body!).message ?? '') ? 'hold' : 'N');
      else if (m.type === 'C') seq.push(`C(${commandTags(w, i, i + 1)[0]})`);
      else if (m.type === 'E') seq.push(`E(${parseErrorFields(m.body!).code})`);
      else if (m.type === 'T' || m.type === 'Z') seq.push(m.type);
      else if (m.type === 'D' && seq.at(-1) !== 'D…') seq.push('D…');
    }
    evidence.push(`wire: ${seq.join(' ')}`, `notes at the end [${end.join(' ; ')}]`);
    const want = aw.deny ? ['hold', 'C(DELETE 1)', 'Z', 'hold', 'E(42501)', 'Z', 'T', 'D…', 'C(SELECT 3)', 'Z'] : ['hold', 'C(DELETE 1)', 'Z', 'hold', 'C(DELETE 1)', 'Z', 'T', 'D…', 'C(SELECT 3)', 'Z'];
    if (fin.outcome !== 'ready') problems.push(`the pipeline did not complete (${fin.text})`);
    if (mid.join('|') !== '1:follow-up in 3 months') problems.push(`approving the first did not run exactly it (notes [${mid.join(' ; ')}])`);
    if (seq.includes('C(SET)')) problems.push("the client got a 'SET' completion it never sent (the agent's hidden read-only restore after the approved write reached the client) and every later answer shifted by one");
    if (!seq.includes('T')) problems.push('the SELECT never got its answer');
    if (seq.join(' ') !== want.join(' ')) problems.push(`order on the wire differs from ${want.join(' ')}`);
    if (aw.deny && end.join('|') !== '1:follow-up in 3 months') problems.push('the denied DELETE FROM notes ran');
    const leaks = leaksOf([w], auditText(ctx, aw.auditFrom), needles);
    if (leaks.wire.length || leaks.audit.length) problems.push(`leak: ${[...leaks.wire, ...leaks.audit.map((x) => `${x} (audit)`)].join(', ')}`);
    if (problems.length) {
      // Is the session still alive after that?
      const z = w.messages.length;
      w.send(msg.query('SELECT 4242'));
      const alive = await w.waitReady(z, 1, 2000);
      evidence.push(`afterwards, SELECT 4242 in the same session: ${alive} ${summarize(w, z)}`);
      if (alive !== 'ready') problems.push(`the session is stuck afterwards (SELECT 4242: ${alive})`);
    }
    if (problems.length) return aw.fail(problems.some((p) => /ran|overtook/.test(p)) ? 'executed' : 'error', problems.join('; '));
    return aw.pass('held', `first approved → only it ran; second held as ${h2.id}; SELECT after it; order preserved; no leak`);
  },

  // TOCTOU: state-changing statements pipelined behind the held DELETE wait (or are refused); the
  // approved statement runs against what the approver saw (public.notes), or the approval is voided.
  async 'AW-009'(aw) {
    const { evidence } = aw;
    const w = await aw.session();
    const a = await sendHeld(w, DEL2);
    if (!a.id) return aw.fail('not-held', `${DEL2} was not held: ${a.instead}`);
    const from2 = w.messages.length;
    const follow = ['SET search_path TO pg_temp, public', 'CREATE TEMP TABLE notes (id int, patient_id int, body text)', "INSERT INTO notes VALUES (2, 2, 'decoy')"];
    w.send(Buffer.concat(follow.map((s) => msg.query(s))));
    await sleep(300);
    const early = summarize(w, from2);
    const overtook = w.count('C', from2) > 0 || w.count('S', from2) > 0;
    evidence.push(`while ${a.id} was pending, after pipelining ${follow.length} state changes: ${early || 'nothing'}`);
    const rec = await aw.record(a.id);
    if ((await aw.decide(a.id, 'approve', 'AW-009: the DELETE as shown')) !== 200) return aw.fail('runner-error', `could not approve ${a.id}`, 'runner');
    const fa = await w.waitReady(a.from, 1, 8000);
    const delTags = commandTags(w, a.from, w.messages.findIndex((m, i) => i >= a.from && m.type === 'Z') + 1);
    const delErrs = w.errors(a.from).slice(0, 1);
    evidence.push(`DELETE after approval: ${fa} ${delTags.join(', ')} ${describeErrors(delErrs)}`);
    // The follow-ups: held ones are decided per mode, until all three ended and no new hold comes.
    const seen = [a.id];
    const deadline = Date.now() + 9000;
    for (;;) {
      if (w.closed || Date.now() > deadline) break;
      const h = await waitHeld(w, a.from, 400, seen, 99);
      if (h.id) {
        seen.push(h.id);
        await aw.settle(h.id, 'state change queued behind the held DELETE');
      } else if (w.count('Z', a.from) >= 1 + follow.length) break;
    }
    const fin = await finish(w, a.from, 1 + follow.length, 1000);
    const pub = await aw.notes();
    const zs = w.count('Z', a.from);
    const leftover = (await aw.stack.agent.store.approvals.list({ status: 'pending' }).catch(() => [])).filter((x) => x.sql !== undefined);
    evidence.push(`all: ${fin.text}; ${zs} ReadyForQuery for ${1 + follow.length} queries; ${seen.length - 1} follow-up request(s) decided`, `public.notes [${pub.join(' ; ')}]`, `request showed ${JSON.stringify(rec?.sql)}`);
    const publicHit = !pub.some((r) => r.startsWith('2:')) && pub.some((r) => r.startsWith('1:'));
    const voided = delTags.length === 0 && delErrs.some((e) => e.code === '42501') && pub.length === 2;
    if (overtook && !voided && !publicHit) return aw.fail('toctou', 'state changes ran before the approved DELETE and it hit another table');
    // Queued statements must each get their own answer, in order (a desynchronised session means the
    // agent's model of the session state (search_path, temp tables) no longer matches the server's).
    const desync: string[] = [];
    const tagsAfter = commandTags(w, a.from);
    if (tagsAfter.filter((t) => t === 'SET').length > 1) desync.push(`the client got ${tagsAfter.filter((t) => t === 'SET').length} 'SET' completions for one SET it sent (the agent's hidden read-only restore reached the client)`);
    const raw = w.errors(a.from).filter((e) => e.code === '42601');
    if (raw.length) desync.push(`a raw syntax error reached the client (${describeErrors(raw)}): a refusal sentinel was not translated`);
    if (zs !== 1 + follow.length) desync.push(`${zs} ReadyForQuery for ${1 + follow.length} queries`);
    if (leftover.length) desync.push(`${leftover.length} follow-up request(s) still pending whose statement never got an answer`);
    if (aw.deny) {
      const unanswered = seen.slice(1).filter((id) => !w.errors(a.from).some((e) => (e.message ?? '').includes(id)));
      if (unanswered.length) desync.push(`the client never got the refusal of denied request(s) ${unanswered.join(', ')} (an answer was swallowed)`);
    }
    if (desync.length) {
      const z = w.messages.length;
      w.send(msg.query('SELECT 4242'));
      const alive = await w.waitReady(z, 1, 2000);
      evidence.push(`afterwards, SELECT 4242 in the same session: ${alive} ${summarize(w, z)}`);
      if (alive !== 'ready') desync.push(`the session is stuck afterwards (SELECT 4242: ${alive})`);
      return aw.fail('desync', `${publicHit && delTags[0] === 'DELETE 1' ? 'the approved DELETE did hit public.notes, but ' : ''}the session desynchronised behind the approved statement: ${desync.join('; ')}`);
    }
    if (publicHit && delTags[0] === 'DELETE 1') {
      return aw.pass('held', `state changes ${overtook ? 'ran first but' : 'were queued behind the hold;'} the approved DELETE removed public.notes row 2 (the state shown at approval)`);
    }
    if (voided) return aw.pass('rejected', 'the approval was voided after the session state changed');
    return aw.fail('toctou', `the approved DELETE did not act on public.notes as approved (${delTags.join(', ') || describeErrors(delErrs)}; public.notes [${pub.join(' ; ')}])`);
  },

  // Deceptive display: padding and comments. The request keeps the complete statement and gives a
  // display/normalised form (or warnings) that shows what the padding hides.
  async 'AW-011'(aw) {
    return displayCase(aw, (rec, problems) => {
      const shown = [typeof rec.display === 'string' ? rec.display : '', ...strings(rec.normalized), ...strings(rec.normalised), ...strings(rec.deparsed)].filter(Boolean);
      const warnings = strings(rec.warnings).join(' | ');
      const clean = shown.find((s) => /OR\s+true/i.test(s) && !/[\s\u00a0]{40,}/.test(s));
      const warned = /blank|padding|whitespace|spaces/i.test(warnings);
      if (!shown.length && !warnings) problems.push('the approval record has no display/normalised form and no warnings: an approver sees a 4000-space line');
      else if (!clean && !warned) problems.push('neither a display form without the padding nor a warning about it');
      return `display: ${clean ? JSON.stringify(clean.slice(0, 160)) : shown.length ? 'still padded' : 'none'}; warnings: ${warnings || 'none'}${/comment/i.test(warnings) ? '' : ' (no comment warning)'}`;
    });
  },

  // Trojan Source: bidi and zero-width characters are shown as code points (display) or named (warnings).
  async 'AW-012'(aw) {
    return displayCase(aw, (rec, problems) => {
      const shown = [typeof rec.display === 'string' ? rec.display : '', ...strings(rec.normalized), ...strings(rec.normalised)].filter(Boolean);
      const warnings = strings(rec.warnings).join(' | ');
      const all = [...shown, warnings].join('\n');
      const missing = ['202E', '2066', '200B'].filter((cp) => !new RegExp(`(\\\\u\\{?0*|U\\+0*|&#x0*)${cp}`, 'i').test(all));
      if (!shown.length && !warnings) problems.push('the approval record has no display field and no warnings: bidi/zero-width characters reach the approver raw');
      else if (missing.length) problems.push(`code points not exposed: ${missing.map((m) => `U+${m}`).join(', ')}`);
      const raw = shown.filter((s) => /[\u202a-\u202e\u2066-\u2069\u200b-\u200f]/.test(s));
      if (raw.length) problems.push('the display form still contains raw bidi/zero-width characters');
      return `display: ${shown.length ? JSON.stringify(shown[0].slice(0, 160)) : 'none'}; warnings: ${warnings || 'none'}`;
    });
  },

  // GET on an approve URL (CSRF by <img>) has no side effect; cross-origin and cookie-only requests refused.
  async 'AW-014'(aw) {
    const { evidence } = aw;
    const w = await aw.session();
    const h = await sendHeld(w, DEL2);
    if (!h.id) return aw.fail('not-held', `${DEL2} was not held: ${h.instead}`);
    const p = `/api/approvals/${h.id}/approve`;
    const probes: Array<[string, Promise<ApiReply>]> = [
      ['GET approve with carol\'s bearer', aw.api('GET', p)],
      ['GET approve as an <img> would (cookie, no Authorization)', aw.api('GET', p, { token: null, headers: { cookie: 'session=carol', referer: 'https://evil.example/' } })],
      ['GET /approvals/ID/approve (no /api)', aw.api('GET', `/approvals/${h.id}/approve`, { headers: { cookie: 'session=carol' } })],
      ['cross-site POST (Origin evil, text/plain, carol bearer)', aw.api('POST', p, { body: '{}', headers: { origin: 'https://evil.example', 'content-type': 'text/plain' } })],
      ['POST with cookie only', aw.api('POST', p, { token: null, body: {}, headers: { cookie: 'session=carol' } })],
      ['POST with text/plain body (simple request, carol bearer)', aw.api('POST', p, { body: '{"reason":"x"}', headers: { 'content-type': 'text/plain' } })],
    ];
    const accepted: string[] = [];
    for (const [what, pr] of probes) {
      const r = await pr;
      evidence.push(`${what}: HTTP ${apiWhy(r)}`);
      if (r.status >= 200 && r.status < 300) accepted.push(what);
    }
    const get405 = /^405/.test(evidence[0].split('HTTP ')[1] ?? '');
    const rec = await aw.record(h.id);
    evidence.push(`record afterwards: ${rec?.status}, ${rec?.votes?.length ?? '?'} vote(s)`);
    const ranEarly = !notRunYet(w, h.from);
    await aw.settle(h.id, 'AW-014 request');
    const fin = await finish(w, h.from);
    evidence.push(`client after the decision: ${fin.text}`);
    if (accepted.length) return aw.fail('accepted', `accepted: ${accepted.join('; ')}`);
    if (rec?.status !== 'pending' || (rec?.votes?.length ?? 0) > 0) return aw.fail('accepted', `the probes changed the request (${rec?.status}, ${rec?.votes?.length} votes)`);
    if (ranEarly) return aw.fail('executed', 'the statement ran before a real approval');
    const bad = judgeSettled(aw, fin, DEL2);
    if (bad) return aw.fail('executed', bad);
    return aw.pass('rejected', `GET approve ${get405 ? '405' : 'refused'}, cross-site/cookie/text-plain requests refused; request still pending${aw.deny ? '; denied, not run' : '; ran after the real approval'}`);
  },

  // Flood: many writes at once. None runs unapproved; another identity's request still gets through.
  async 'AW-015'(aw) {
    const { evidence, stack } = aw;
    const SESSIONS = 40;
    const PER = 2;
    const aliceTok = await stack.userToken('alice@clinic.example');
    const opened = await Promise.allSettled(Array.from({ length: SESSIONS }, () => aw.session()));
    const ws = opened.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const refusedSessions = opened.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason?.message ?? r).slice(0, 100));
    if (refusedSessions.length) evidence.push(`${refusedSessions.length} of ${SESSIONS} sessions refused: ${[...new Set(refusedSessions)].slice(0, 2).join(' | ')}`);
    const t0 = Date.now();
    for (const w of ws) w.send(Buffer.concat(Array.from({ length: PER }, () => msg.query(DEL2))));
    // Approvers' view, sampled; in auto-approve mode the runner approves as requests appear.
    let peak = 0;
    let stop = false;
    const decided = new Set<string>();
    let aliceId: string | undefined;
    const watcher = (async () => {
      while (!stop) {
        const r = await aw.api('GET', '/api/approvals?status=pending&limit=500');
        const list: Array<{ id: string; requester: { sub: string } }> = r.json?.approvals ?? [];
        peak = Math.max(peak, list.length);
        if (!aw.deny) {
          for (const a of list) {
            if (decided.has(a.id) || a.id === aliceId || a.requester?.sub === 'u-alice') continue;
            decided.add(a.id);
            await aw.api('POST', `/api/approvals/${a.id}/approve`, { body: { reason: 'AW-015 auto-approve' } });
          }
        }
        await sleep(40);
      }
    })();
    await sleep(600);
    // Another identity while the flood is pending.
    let aliceLine = 'alice: no session';
    let aliceOk = false;
    let aliceRan = false;
    try {
      const wa = await aw.sessionAs(aliceTok);
      const h = await sendHeld(wa, 'DELETE FROM notes WHERE id = 1');
      aliceId = h.id;
      if (h.id) {
        const rec = await aw.record(h.id);
        aliceOk = rec?.status === 'pending';
        aliceRan = !notRunYet(wa, h.from);
        await aw.settle(h.id, "another identity's request during the flood");
        const f = await finish(wa, h.from);
        aliceLine = `alice's write during the flood: held as ${h.id} after ${Date.now() - t0} ms, visible to carol (${rec?.status}); then ${f.text}`;
        if (aw.deny ? f.tags.length > 0 : !f.tags.length) aliceOk = false;
      } else aliceLine = `alice's write during the flood: ${h.instead}`;
    } catch (err) {
      aliceLine = `alice's session: ${(err as Error).message}`;
    }
    evidence.push(aliceLine);
    // Every flood write ends: expired (deny mode) or approved and run (auto-approve).
    const deadline = Date.now() + (aw.deny ? 2500 * PER + 3000 : 8000);
    await Promise.all(ws.map((w) => w.waitReady(0, 1 + PER, Math.max(100, deadline - Date.now()))));
    stop = true;
    await watcher;
    let held = 0;
    let refused = 0;
    let unheldRuns = 0;
    let unfinished = 0;
    const refusals = new Set<string>();
    for (const w of ws) {
      const holds = w.notices(0).filter((n) => HELD_RE.test(n.message ?? '')).length;
      held += holds;
      const errs = w.errors(0).filter((e) => !HELD_RE.test(e.message ?? '') && !/approval ap_/.test(e.message ?? ''));
      refused += errs.length;
      for (const e of errs) refusals.add(`${e.code} ${(e.message ?? '').slice(0, 80)}`);
      const runs = commandTags(w, 0).filter((t) => t.startsWith('DELETE')).length;
      if (runs > holds || (aw.deny && runs > 0)) unheldRuns += runs;
      if (w.count('Z', 0) < 1 + PER) unfinished++;
    }
    const st = await readState(aw.ctx, aw.f0);
    const control = await controlSelect1(aw.ctx);
    evidence.push(`${ws.length} sessions × ${PER} writes: ${held} held, ${refused} refused${refusals.size ? ` (${[...refusals].slice(0, 2).join(' | ')})` : ''}, ${unheldRuns} ran without approval, ${unfinished} unfinished; approvers saw up to ${peak} pending requests at once`, ...stateEvidence(st));
    if (control) evidence.push(control);
    if (unheldRuns) return aw.fail('executed', `${unheldRuns} flood write(s) ran without an approval`);
    if (aw.deny && st.changed.length) return aw.fail('executed', `fingerprint changed (${st.changed.join(', ')})`);
    if (!aliceOk || aliceRan) return aw.fail('starved', `another identity's request was not delivered/handled during the flood (${aliceLine})`);
    if (control) return aw.fail('unhealthy', control);
    if (unfinished) return aw.fail('stuck', `${unfinished} flood session(s) never got their answers`);
    const limited = refused > 0 || refusedSessions.length > 0;
    return aw.pass(limited ? 'rejected' : 'held', limited
      ? `flood rate-limited (${refused} writes / ${refusedSessions.length} sessions refused); nothing ran unapproved; alice's request delivered`
      : `all ${held} flood writes held, none ran unapproved; alice's request delivered; note: no rate limit or coalescing, approvers saw up to ${peak} pending at once`);
  },

  // An approved export is still masked.
  async 'AW-017'(aw) {
    const { evidence, ctx, c } = aw;
    const COPY = 'COPY patients TO STDOUT';
    const needles = needlesFor(c, ctx.core);
    const d = await ctx.stack.direct();
    const dr = await d.query(COPY, 5000);
    d.close();
    const directRows = dr.rowCount;
    const w = await aw.session({ needles, keepRows: 100 });
    const problems: string[] = [];
    if (aw.deny) {
      const h0 = await sendHeld(w, COPY);
      if (!h0.id) return aw.fail(/EXECUTED/.test(h0.instead) ? 'executed' : 'not-held', `${COPY} was not held: ${h0.instead}`);
      await aw.settle(h0.id, 'first export attempt');
      const f0 = await finish(w, h0.from);
      evidence.push(`denied export ${h0.id}: ${f0.text}, ${f0.copyData} CopyData`);
      const bad = judgeSettled(aw, f0, 'denied export');
      if (bad || f0.copyData) problems.push(bad ?? `denied export sent ${f0.copyData} CopyData`);
    }
    const h = await sendHeld(w, COPY);
    if (!h.id) return aw.fail(/EXECUTED/.test(h.instead) ? 'executed' : 'not-held', `${COPY} was not held: ${h.instead}`);
    if (!notRunYet(w, h.from)) problems.push('CopyData before the approval');
    if ((await aw.decide(h.id, 'approve', 'AW-017: approved export')) !== 200) return aw.fail('runner-error', `could not approve ${h.id}`, 'runner');
    const f = await finish(w, h.from);
    const text = w.messages.slice(h.from).filter((m) => m.type === 'd' && m.body).map((m) => m.body!.toString('utf8')).join('');
    evidence.push(`approved export ${h.id}: ${f.text}; ${f.copyData} CopyData rows (direct: ${directRows}); first row ${JSON.stringify(text.split('\n')[0]?.slice(0, 140))}`);
    const leaks = leaksOf([w], auditText(ctx, aw.auditFrom), needles);
    if (f.outcome !== 'ready' || !f.tags.some((t) => t.startsWith('COPY'))) problems.push(`the approved export did not complete (${f.text})`);
    if (f.copyData !== directRows) problems.push(`row count ${f.copyData} differs from direct execution (${directRows})`);
    if (leaks.wire.length) problems.push(`leaked to the client: ${leaks.wire.join(', ')}`);
    if (leaks.audit.length) problems.push(`leaked into audit records: ${leaks.audit.join(', ')}`);
    const clear = ['Alice Moreno', 'Bob Kowalski', 'Carol Nguyen'].filter((n) => !text.includes(n));
    if (f.copyData && clear.length) problems.push(`non-sensitive column full_name not clear (missing ${clear.join(', ')})`);
    if (problems.length) return aw.fail(leaks.wire.length || leaks.audit.length ? 'leaked' : 'error', problems.join('; '));
    return aw.pass('masked', `export held, approved by a human, ${f.copyData} rows as direct, no sensitive value in ${w.bytesReceived} bytes${aw.deny ? '; the first attempt was denied and sent nothing' : ''}`);
  },
};

function strings(v: unknown): string[] {
  if (typeof v === 'string') return [v];
  if (Array.isArray(v)) return v.flatMap(strings);
  if (v && typeof v === 'object') return Object.values(v).flatMap(strings);
  return [];
}

/** AW-011 / AW-012: held, the record keeps the exact statement, and `check` judges what approvers see. */
async function displayCase(aw: Aw, check: (rec: any, problems: string[]) => string): Promise<Partial> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const { evidence, c } = aw;
  const sql = c.sql ?? '';
  const w = await aw.session();
  const h = await sendHeld(w, sql);
  if (!h.id) return aw.fail(/EXECUTED/.test(h.instead) ? 'executed' : 'not-held', `the statement was not held: ${h.instead}`);
  const rec = await aw.record(h.id);
  const listed = (await aw.api('GET', '/api/approvals?status=pending')).json?.approvals?.find((a: { id: string }) => a.id === h.id);
  const problems: string[] = [];
  if (!rec) problems.push(`GET /api/approvals/${h.id} as carol failed`);
  else {
    evidence.push(`held as ${h.id}; record sql ${rec.sql === sql ? 'is the complete statement' : `DIFFERS (${String(rec.sql).length} vs ${sql.length} chars)`}; fields: ${Object.keys(rec).join(', ')}`);
    if (rec.sql !== sql) problems.push('the recorded statement is not the exact statement that would run (truncated or altered)');
    evidence.push(check(rec, problems));
    if (listed && !('display' in listed) && 'display' in rec) evidence.push('note: the list view lacks the display field');
  }
  const ranEarly = !notRunYet(w, h.from);
  await aw.settle(h.id, 'deceptive display');
  const fin = await finish(w, h.from);
  evidence.push(`client after the decision: ${fin.text}`);
  const st = await readState(aw.ctx, aw.f0);
  evidence.push(...stateEvidence(st));
  if (ranEarly) problems.push('ran before the decision');
  const bad = judgeSettled(aw, fin, 'the statement');
  if (bad) problems.push(bad);
  if (aw.deny && st.changed.length) problems.push(`fingerprint changed (${st.changed.join(', ')})`);
  if (problems.length) return aw.fail(problems.some((p) => /ran|RAN|fingerprint/.test(p)) ? 'executed' : 'held-undisclosed', problems.join('; '));
  return aw.pass('held', `held; the record keeps the exact statement and shows what is hidden (${aw.deny ? 'denied, not run' : 'ran after approval'})`);
}
