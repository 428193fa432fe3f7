// Judging helpers: what the corpus says to look at, from the outside (SECURITY-POLICY.md "The corpus").
import type { ErrorFields, PgWire } from './pgclient.js';
import type { Fingerprint } from './stack.js';

export type Expect = 'blocked' | 'needs_approval' | 'masked' | 'allowed' | 'rejected';

export interface Case {
  id: string;
  kind: 'sql' | 'protocol' | 'auth' | 'approval' | 'tunnel' | string;
  title?: string;
  category?: string;
  expect: Expect;
  also_acceptable?: Expect[];
  then?: Expect;
  tier: 'must' | 'should' | 'stretch' | string;
  sql?: string | null;
  sql_template?: string;
  expand?: Record<string, { repeat: string; times: number }>;
  pre_sql?: string[];
  post_sql?: string[];
  emulate_sql?: string[];
  variants?: string[];
  copy_in_data?: string;
  protocol_steps?: Array<Record<string, unknown>>;
  token?: Record<string, unknown>;
  action?: string;
  flow?: string;
  masked_values_must_not_appear?: string[];
  literal_exempt_values?: string[];
  must_appear?: string[];
  oracle?: string;
  setup?: string;
  [k: string]: unknown;
}

export interface Corpus {
  meta: {
    sensitive_values?: { core?: string[] };
    fixture?: { masked_columns?: string[] };
    [k: string]: unknown;
  };
  cases: Case[];
}

export interface Verdict {
  id: string;
  prefix: string;
  tier: string;
  kind: string;
  expect: string;
  pass: boolean;
  /** what the runner observed: blocked, held, executed, rejected, error, timeout, not-implemented… */
  observed: string;
  /** one line: why it failed (or passed) */
  reason: string;
  /** product gap vs runner limitation, for failures */
  gap?: 'product' | 'runner';
  evidence: string[];
  ms: number;
}

export function prefixOf(id: string): string {
  return id.split(/[-/#]/)[0];
}

export function needlesFor(c: Case, core: string[]): Array<{ label: string; bytes: Buffer }> {
  const exempt = new Set(c.literal_exempt_values ?? []);
  const all = new Set<string>([...(c.masked_values_must_not_appear ?? []), ...core.filter((v) => !exempt.has(v))]);
  return [...all].map((v) => ({ label: v, bytes: v.startsWith('hex:') ? Buffer.from(v.slice(4), 'hex') : Buffer.from(v, 'utf8') }));
}

export function fingerprintDiff(a: Fingerprint, b: Fingerprint): string[] {
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  const out: string[] = [];
  for (const k of keys) if (a[k] !== b[k]) out.push(k);
  return out;
}

export const APPROVAL_RE = /approv/i;

/** Gateway refusal: 42501 or a message the agent wrote; everything else is the database's own error. */
export function classifyError(e: ErrorFields): 'held' | 'blocked' | 'rejected' | 'db-error' {
  const text = `${e.message ?? ''} ${e.detail ?? ''} ${e.hint ?? ''}`;
  if (e.severity === 'FATAL' || e.severity === 'PANIC' || e.code === '08P01' || e.code === '28000') return 'rejected';
  if (APPROVAL_RE.test(text)) return 'held';
  if (e.code === '42501' || /^hoopctl/i.test(e.message ?? '')) return 'blocked';
  return 'db-error';
}

export function describeErrors(errs: ErrorFields[]): string {
  return errs.map((e) => `${e.severity ?? '?'} ${e.code ?? '?'} ${(e.message ?? '').slice(0, 160)}`).join(' | ');
}

/** Leaks seen by the wire (raw bytes + concatenated row values) and in audit records. */
export function leaksOf(wires: PgWire[], auditText: string, needles: Array<{ label: string; bytes: Buffer }>): { wire: string[]; audit: string[] } {
  const wire = new Set<string>();
  for (const w of wires) {
    for (const k of w.scan.found.keys()) wire.add(k);
    for (const k of w.valueScan.found.keys()) wire.add(`${k} (across row values)`);
  }
  const audit: string[] = [];
  const auditBuf = Buffer.from(auditText, 'utf8');
  for (const n of needles) if (auditText && auditBuf.includes(n.bytes)) audit.push(n.label);
  return { wire: [...wire], audit };
}
