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
  parseRowDescription, type RowField,
} from './pgclient.js';
import { openTunnelWs, rawHttp, upgradeRequest, waitServerClose, wsFrame, TunnelStream } from './ws.js';
import { CONNECTION, type AttackStack, type Fingerprint } from './stack.js';
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
  changed: string[];
  markers: string[];
}

async function readState(ctx: RunContext, f0: Fingerprint): Promise<StateCheck> {
  const f1 = await ctx.stack.fixture.fingerprint();
  return { f0, f1, changed: fingerprintDiff(f0, f1), markers: await ctx.stack.fixture.markerFiles() };
}

function stateEvidence(s: StateCheck): string[] {
  const ev: string[] = [];
  if (s.changed.length) ev.push(`fingerprint changed: ${s.changed.map((k) => `${k} ${s.f0[k]} -> ${s.f1[k]}`).join('; ')}`);
  else ev.push('fingerprint unchanged');
  if (s.markers.length) ev.push(`marker files: ${s.markers.join(', ')}`);
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
  const ph = () => stack.fixture.placeholders();
  const stepsOf = () => {
    const p = ph();
    const main = c.emulate_sql?.length ? c.emulate_sql.map((s) => fill(s, p)) : [...(c.pre_sql ?? []).map((s) => fill(s, p)), fill(c.sql ?? '', p)];
    const mainIndex = main.length - 1;
    return { steps: [...main, ...(c.post_sql ?? []).map((s) => fill(s, p))], mainIndex };
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
  const { steps, mainIndex } = stepsOf();

  const w = await stack.session({ needles, keepRows: 2000 });
  const results = await runSqlSteps(w, steps, ctx, c.copy_in_data);
  const state = await readState(ctx, f0); // while the session is still open (temp objects)
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
    const kinds = [...r.errors, ...r.notices.filter((n) => /approv/i.test(`${n.message} ${n.hint}`))].map(classifyError);
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
  const audit = auditText(ctx, auditFrom);
  const leaks = leaksOf([w], audit, needles);
  evidence.push(...stateEvidence(state));
  if (!audit) evidence.push('no audit records');
  else evidence.push(`audit records: ${ctx.stack.audit.since(auditFrom).map((r) => r.method).join(', ')}`);
  if (control) evidence.push(control);
  if (usable) evidence.push(`session not usable after the refusal: ${usable}`);
  const stateOk = state.changed.length === 0 && state.markers.length === 0;

  const fail = (reason: string, gap: 'product' | 'runner' = 'product'): Partial => ({ pass: false, observed, reason, gap, evidence });
  if (leaks.wire.length) return fail(`leaked to the client: ${leaks.wire.join(', ')}`);
  if (leaks.audit.length) return fail(`leaked into audit records: ${leaks.audit.join(', ')}`);
  if (observed === 'timeout') return fail(`no answer within ${ctx.stepTimeoutMs} ms`);
  if (prefixOf(c.id) === 'AD' && !audit) return fail('no audit records (audit store not implemented)');

  const refusedOk = (what: Expect) => accept.includes(what) || (chained && (accept.includes('blocked') || accept.includes('needs_approval')));
  if (observed === 'blocked' || observed === 'held' || (observed === 'db-error' && !direct)) {
    const what: Expect = observed === 'held' ? 'needs_approval' : 'blocked';
    if (!stateOk) return fail(`${observed} but state changed (${state.changed.join(', ') || state.markers.join(', ')})`);
    if (control) return fail(control);
    if (!refusedOk(what)) {
      return fail(observed === 'held' ? `held for approval, but the case expects ${accept.join('/')}` : `refused (${describeErrors(results[refusedAt]?.errors ?? [])}), but the case expects ${accept.join('/')}`);
    }
    if (usable) return fail(`refused, but the session did not stay usable: ${usable}`);
    const codes = (results[refusedAt]?.errors ?? []).map((e) => e.code);
    if (observed === 'db-error') evidence.push(`note: SQLSTATE ${codes.join(',')} is not 42501: the error may come from PostgreSQL, not the gateway`);
    return { pass: true, observed, reason: `${observed}${chained ? ' (earlier step)' : ''}, fingerprint unchanged, no leak`, evidence };
  }
  if (observed === 'rejected') {
    if (accept.includes('rejected') && stateOk && !control) return { pass: true, observed, reason: 'rejected, state unchanged', evidence };
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
  const state = await readState(ctx, f0);
  for (const x of wires) x.close();
  await new Promise((r) => setTimeout(r, 200));
  const backends1 = await stack.fixture.agentBackends();
  const control = await controlSelect1(ctx);
  const audit = auditText(ctx, auditFrom);
  const leaks = leaksOf(wires, audit, needles);
  evidence.push(...notes, ...stateEvidence(state), `gw_agent backends before ${backends0}, after ${backends1}`);
  if (control) evidence.push(control);
  const stateOk = state.changed.length === 0 && state.markers.length === 0;

  const all = wires.flatMap((x) => x.errors());
  const kinds = new Set(all.map(classifyError));
  const closedByServer = wires.some((x) => x.closed && !x.closedByUs);
  const negotiated = wires.some((x) => x.messages.some((m2) => m2.type === 'v'));
  const observedSet = new Set<string>();
  if (kinds.has('rejected') || closedByServer) observedSet.add('rejected');
  if (kinds.has('held')) observedSet.add('needs_approval');
  if (kinds.has('blocked')) observedSet.add('blocked');
  const observed = [...observedSet].join('+') || (kinds.has('db-error') ? 'db-error' : 'executed');
  const fail = (reason: string, gap: 'product' | 'runner' = 'product'): Partial => ({ pass: false, observed, reason, gap, evidence });

  if (leaks.wire.length) return fail(`leaked to the client: ${leaks.wire.join(', ')}`);
  if (leaks.audit.length) return fail(`leaked into audit records: ${leaks.audit.join(', ')}`);
  if (!stateOk) return fail(`state changed: ${[...state.changed, ...state.markers].join(', ')}`);
  if (control) return fail(control);
  if (backends1 > backends0) return fail(`backend session left open (${backends0} -> ${backends1})`);
  const hung = notes.some((n) => /: timeout;/.test(n));
  if (hung && accept.includes('rejected')) return fail(`no answer within the step timeout: ${notes.find((n) => /: timeout;/.test(n))}`);

  // allowed: the handshake and every statement completed, answers as PostgreSQL's.
  if (accept.includes('allowed') && observedSet.size === 0 && !kinds.has('db-error')) {
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
  if (accept.includes('masked') && observedSet.size === 0) {
    const rows = wires.reduce((n, x) => n + x.rowCount(), 0);
    evidence.push(`rows received: ${rows} (row count not compared with direct execution for protocol cases)`);
    if (rows === 0) return fail('executed but no rows came back (masking must not drop rows)');
    return { pass: true, observed: 'masked', reason: `executed, ${rows} rows, no sensitive value in the bytes`, evidence };
  }
  if (accept.includes('rejected') && (observedSet.has('rejected') || (negotiated && c.also_acceptable?.includes('allowed')))) {
    return { pass: true, observed, reason: 'refused at the protocol level; state unchanged', evidence };
  }
  for (const a of accept) if (observedSet.has(a)) return { pass: true, observed, reason: `${a}; state unchanged, no leak`, evidence };
  return fail(`observed ${observed || 'nothing refused'}, expected ${accept.join('/')}`);
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
        : { pass: false, observed: 'not-audited', reason: 'no statement-level audit records (SQL text + bound parameters): audit store not implemented', gap: 'product', evidence };
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
  // Approval-workflow cases: no approvals API exists. Run the statement (if any) to show whether it is held.
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
  return { pass: false, observed: 'not-implemented', reason: 'approvals not implemented: no approval API to request, approve, deny or inspect', gap: 'product', evidence };
}
