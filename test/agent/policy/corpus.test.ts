/**
 * Every plain-SQL case of the attack corpus (../shared/attacks/corpus.json), plus the protocol cases
 * whose steps are only Query/Parse/Bind/Execute/Close/Sync, classified by the policy engine and
 * compared with `expect` / `also_acceptable` (meta.judging: for chained cases, blocking or holding an
 * earlier step also passes).
 *
 * Mapping: blocked → block, needs_approval → hold, allowed / masked → allow (masking is not the
 * engine's job), rejected → block. The fixture profile is used: masked columns from meta.fixture,
 * strict predicates (P7) on.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadPolicyEngine, type Action, type PolicyEngine, type PolicySession } from '../../../agent/src/policy/index.js';

interface Step { msg: string; sql?: string; name?: string; statement?: string; portal?: string; kind?: string }
interface Case {
  id: string; kind: string; sql?: string | null; sql_template?: string; expand?: Record<string, { repeat: string; times: number }>;
  pre_sql?: string[]; post_sql?: string[]; emulate_sql?: string[]; variants?: string[]; protocol_steps?: Step[];
  expect: string; also_acceptable?: string[]; tier?: string;
}

const corpus = JSON.parse(readFileSync(path.resolve(process.cwd(), '../shared/attacks/corpus.json'), 'utf8')) as {
  meta: { fixture: { masked_columns: string[] } }; cases: Case[];
};

const TO_ACTION: Record<string, Action> = { blocked: 'block', needs_approval: 'hold', allowed: 'allow', masked: 'allow', rejected: 'block' };
const fill = (sql: string): string => sql
  .replaceAll('{MARKER_DIR}', '/tmp/gw-marker')
  .replaceAll('{DBLINK_CONNSTR}', 'dbname=gwtest user=gw_agent password=x host=127.0.0.1');

/**
 * Known gaps, each asserted to still fail so a fix shows up. Keep reasons honest.
 */
const KNOWN_GAPS: Record<string, string> = {
  'MK-024': 'get_patient() is user-defined: held (P4 "user-defined functions … not allowlisted") unless the operator allowlists it; the corpus expects it to run masked',
};

interface SubCase { id: string; steps: string[]; want: Action[]; chained: boolean }

function sqlCases(): SubCase[] {
  const out: SubCase[] = [];
  for (const c of corpus.cases.filter((c) => c.kind === 'sql')) {
    const want = [c.expect, ...(c.also_acceptable ?? [])].map((e) => TO_ACTION[e]);
    let main = c.sql ?? undefined;
    if (!main && c.sql_template) {
      main = c.sql_template.replace(/\{(\w+)\}/g, (_, k: string) => c.expand?.[k] ? c.expand[k].repeat.repeat(c.expand[k].times) : `{${k}}`);
    }
    if (!main) continue;
    const pre = c.emulate_sql ? c.emulate_sql.slice(0, -1) : c.pre_sql ?? [];
    const last = c.emulate_sql ? c.emulate_sql[c.emulate_sql.length - 1] : main;
    out.push({ id: c.id, steps: [...pre, last, ...(c.post_sql ?? [])].map(fill), want, chained: pre.length > 0 });
    (c.variants ?? []).forEach((v, i) => out.push({ id: `${c.id}/v${i + 1}`, steps: [...pre, v].map(fill), want, chained: pre.length > 0 }));
  }
  return out;
}

const SUPPORTED = new Set(['Query', 'Parse', 'Bind', 'Execute', 'Close', 'Sync']);
function protocolCases(): { id: string; steps: Step[]; want: Action[] }[] {
  return corpus.cases
    // (a step with size_bytes is about the session's message-size limit, not the statement)
    .filter((c) => c.kind === 'protocol' && c.protocol_steps?.every((s) => SUPPORTED.has(s.msg) && !('size_bytes' in s)))
    .map((c) => ({ id: c.id, steps: c.protocol_steps!, want: [c.expect, ...(c.also_acceptable ?? [])].map((e) => TO_ACTION[e]) }));
}

/** Run the statements in one session: the first step that is not allowed decides; else the last one. */
function runChain(session: PolicySession, steps: string[], chained: boolean, want: Action[]): { got: Action; at: number; rule: string } {
  for (let i = 0; i < steps.length; i++) {
    const d = session.query(steps[i]);
    // meta.judging: blocking or holding an earlier step passes when the case expects a block or hold.
    const stop = d.action !== 'allow' && (i === steps.length - 1 || (chained && want.some((w) => w !== 'allow')));
    if (stop || i === steps.length - 1) return { got: d.action, at: i, rule: d.rule };
    session.apply(d);
  }
  throw new Error('no steps');
}

function runProtocol(session: PolicySession, steps: Step[]): { got: Action; rule: string } {
  let inTx = false;
  for (const s of steps) {
    let d;
    switch (s.msg) {
      case 'Query':
        d = session.query(s.sql!);
        if (/^\s*(BEGIN|START)/i.test(s.sql!)) inTx = true;
        if (/^\s*(COMMIT|ROLLBACK|END)/i.test(s.sql!)) inTx = false;
        break;
      case 'Parse': d = session.parse(s.name ?? '', s.sql!); break;
      case 'Bind': d = session.bind(s.portal ?? '', s.statement ?? ''); break;
      case 'Execute': d = session.execute(s.portal ?? ''); break;
      case 'Close': session.close(s.kind === 'P' ? 'P' : 'S', s.name ?? ''); continue;
      case 'Sync': if (!inTx) session.endTransaction(); continue;
      default: throw new Error(s.msg);
    }
    if (d.action !== 'allow') return { got: d.action, rule: d.rule };
    session.apply(d);
  }
  return { got: 'allow', rule: 'P5' };
}

describe('attack corpus', () => {
  let fixture: PolicyEngine;
  let plain: PolicyEngine;
  beforeAll(async () => {
    fixture = await loadPolicyEngine({ maskedColumns: corpus.meta.fixture.masked_columns.map((c) => `public.${c}`), strictPredicates: true });
    plain = await loadPolicyEngine();
  });

  it.each(sqlCases())('$id (sql)', ({ id, steps, want, chained }) => {
    const r = runChain(fixture.session(), steps, chained, want);
    const pass = want.includes(r.got);
    const gap = KNOWN_GAPS[id.split('/')[0]];
    expect({ id, pass, got: r.got, rule: r.rule, step: r.at }).toMatchObject({ pass: !gap });
  });

  it.each(sqlCases().filter((c) => /^(CB|PD|WR)-/.test(c.id)))('$id (sql, default profile)', ({ steps, want, chained }) => {
    const r = runChain(plain.session(), steps, chained, want);
    expect(want).toContain(r.got);
  });

  it.each(protocolCases())('$id (protocol statements)', ({ steps, want }) => {
    const r = runProtocol(fixture.session(), steps);
    expect({ got: r.got, rule: r.rule, ok: want.includes(r.got) }).toMatchObject({ ok: true });
  });
});
