/**
 * Per-connection policy state: which statement each prepared-statement name and each cursor/portal
 * name really runs, so `EXECUTE s`, `FETCH c`, `MOVE c` and a protocol Execute are judged by that
 * statement, never by their own harmless-looking text (corpus WR-008, PR-001, PR-002, PR-007, PR-008).
 *
 * SQL `PREPARE` and protocol Parse share one namespace in PostgreSQL, as do `DECLARE` cursors and
 * protocol portals (`FETCH` works on a Bind-created portal): one map each.
 *
 * How the session state machine uses it (every method is pure; state changes only in `apply`/`close`/
 * `endTransaction`):
 *
 *   Query(sql)        d = query(sql)       block → ErrorResponse; hold → approval; allow → forward.
 *                                          After forwarding: apply(d, number of CommandCompletes).
 *   Parse(name, sql)  d = parse(name, sql) block → ErrorResponse; else forward, apply(d) on ParseComplete.
 *   Bind(portal, s)   d = bind(portal, s)  block (unknown statement) → ErrorResponse; else forward, apply(d).
 *   Execute(portal)   d = execute(portal)  allow → forward; hold → approval (d.statements[0].text is the
 *                                          real SQL, for the approver and the audit); block → error.
 *                                          After it ran: apply(d).
 *   Close('S'|'P', n) close(kind, n)
 *   ReadyForQuery 'I' endTransaction()     non-holdable cursors and portals are gone.
 *
 * Names that are re-used while still present (PREPARE s twice, DECLARE c twice, Bind to an open named
 * portal) are blocked: PostgreSQL would refuse them too, and recording the new statement while the
 * server keeps the old one would let the old one run under the new one's verdict.
 */
import { allow, asVerdict, block, stricter, type Verdict } from './rules.js';
import type { Decision, Effect, PolicyEngine, StatementFacts } from './engine.js';

export interface Portal {
  facts: StatementFacts;
  holdable: boolean;
}

/** What a name means at the server, as far as the caller knows it (session/namespace.ts in the agent). */
export interface NameTable {
  statement(name: string): StatementFacts | undefined;
  portal(name: string): Portal | undefined;
}

/** An overlay on a NameTable, so a multi-statement text sees its own PREPARE/DECLARE before they are applied. */
class View implements NameTable {
  readonly #statements = new Map<string, StatementFacts | null>();
  readonly #portals = new Map<string, Portal | null>();
  #noStatements = false;
  #noPortals = false;
  constructor(private readonly base: NameTable) {}
  statement(name: string): StatementFacts | undefined {
    const v = this.#statements.get(name);
    if (v !== undefined) return v ?? undefined;
    return this.#noStatements ? undefined : this.base.statement(name);
  }
  portal(name: string): Portal | undefined {
    const v = this.#portals.get(name);
    if (v !== undefined) return v ?? undefined;
    return this.#noPortals ? undefined : this.base.portal(name);
  }
  apply(e: Effect): void {
    switch (e.op) {
      case 'prepare':
        this.#statements.set(e.name, e.facts);
        break;
      case 'declare':
        this.#portals.set(e.name, { facts: e.facts, holdable: e.holdable });
        break;
      case 'deallocate':
        if (e.name === '*') (this.#statements.clear(), (this.#noStatements = true));
        else this.#statements.set(e.name, null);
        break;
      case 'close':
        if (e.name === '*') (this.#portals.clear(), (this.#noPortals = true));
        else this.#portals.set(e.name, null);
        break;
      case 'discard':
        this.#statements.clear();
        this.#portals.clear();
        this.#noStatements = this.#noPortals = true;
        break;
      case 'endTransaction':
        // Which non-holdable portals the base holds is not listed here: the rest of this text sees none
        // it declared itself; the base's are gone too, but judging them as present only blocks more.
        for (const [name, p] of this.#portals) if (p && !p.holdable) this.#portals.set(name, null);
        break;
    }
  }
}

const EMPTY: StatementFacts = {
  kind: 'EmptyQuery', text: '', action: 'allow', rule: 'P5.empty', reason: 'Empty query.', readOnly: true,
  locksRows: false, hasParams: false, relations: [], functions: [],
};

export class PolicySession {
  #statements = new Map<string, StatementFacts>();
  #portals = new Map<string, Portal>();
  /** Where names are looked up: this object's own maps, or the agent session's namespace. */
  readonly #names: NameTable;

  /**
   * Standalone (tests, `classify`), the session keeps its own maps and `apply`/`close`/`endTransaction`
   * change them. Given `names`, it only reads them: the owner changes them when the server confirms.
   */
  constructor(private readonly engine: PolicyEngine, names?: NameTable) {
    this.#names = names ?? { statement: (n) => this.#statements.get(n), portal: (n) => this.#portals.get(n) };
  }

  /** Simple Query: every statement of `sql`, with EXECUTE/FETCH resolved against this session. */
  query(sql: string): Decision {
    const analysis = this.engine.analyze(sql);
    if (!analysis.ok) return analysis.decision;
    return this.#resolve(analysis.statements, new View(this.#names));
  }

  /** Protocol Parse: one statement (`$n` allowed); recorded under `name` ('' = unnamed) by apply(). */
  parse(name: string, sql: string): Decision {
    const analysis = this.engine.analyze(sql);
    if (!analysis.ok) return analysis.decision;
    const [facts = EMPTY, ...more] = analysis.statements;
    if (more.length > 0) return decide(block('P3.parse.multi', 'A Parse message may carry only one statement.'), analysis.statements);
    if (facts.action === 'block') return decide(asVerdict(facts), [facts]);
    if (name !== '' && this.#names.statement(name)) return decide(block('P3.prepared.exists', `Prepared statement ${name} already exists.`), [facts]);
    return { ...allow('P5.parse', 'Parsing runs nothing; Execute is judged by the statement.'), statements: [facts], effects: [{ index: 0, op: 'prepare', name, facts }] };
  }

  /** Protocol Bind: the portal will run `statement`. */
  bind(portal: string, statement: string): Decision {
    const facts = this.#names.statement(statement);
    if (!facts) return decide(block('P3.prepared.unknown', `No prepared statement named "${statement}" passed the gateway.`), []);
    if (portal !== '' && this.#names.portal(portal)) return decide(block('P3.portal.exists', `Portal ${portal} already exists.`), [facts]);
    return { ...allow('P5.bind', 'Binding runs nothing; Execute is judged by the statement.'), statements: [facts], effects: [{ index: 0, op: 'declare', name: portal, facts, holdable: false }] };
  }

  /** Protocol Execute: judged by what the portal really runs (a SELECT, a DELETE, an EXECUTE s, a FETCH c…). */
  execute(portal: string): Decision {
    const p = this.#names.portal(portal);
    if (!p) return decide(block('P3.portal.unknown', `No portal named "${portal}" passed the gateway.`), []);
    return this.#resolve([p.facts], new View(this.#names));
  }

  /** Protocol Close. */
  close(kind: 'S' | 'P', name: string): void {
    (kind === 'S' ? this.#statements : this.#portals).delete(name);
  }

  /** ReadyForQuery with status 'I': no transaction, so only WITH HOLD cursors survive. */
  endTransaction(): void {
    for (const [name, p] of this.#portals) if (!p.holdable) this.#portals.delete(name);
  }

  /** Record the effects of a decision whose statements ran (only the first `completed` of them). */
  apply(decision: Decision, completed = Number.POSITIVE_INFINITY): void {
    for (const e of decision.effects ?? []) {
      if (e.index >= completed) break;
      applyEffect(e, this.#statements, this.#portals);
    }
  }

  #resolve(statements: readonly StatementFacts[], view: View): Decision {
    const effects: Effect[] = [];
    const out = statements.map((f, index) => {
      const r = this.#resolveOne(f, view);
      if (r.action === 'block') return r;
      const effect = effectOf(f, index);
      if (effect) {
        if (effect.op === 'prepare' && view.statement(effect.name))
          return { ...r, ...block('P3.prepared.exists', `Prepared statement ${effect.name} already exists in this session.`) };
        if (effect.op === 'declare' && view.portal(effect.name))
          return { ...r, ...block('P3.cursor.exists', `Cursor ${effect.name} already exists in this session.`) };
        effects.push(effect);
        view.apply(effect);
      }
      return r;
    });
    return { ...decide(undefined, out), effects };
  }

  /** EXECUTE / FETCH / MOVE / EXPLAIN ANALYZE EXECUTE: judged by the statement they run. */
  #resolveOne(f: StatementFacts, view: View): StatementFacts {
    if (f.executesPrepared !== undefined) {
      const target = view.statement(f.executesPrepared);
      if (!target) return { ...f, ...block('P3.prepared.unknown', `No prepared statement named "${f.executesPrepared}" passed the gateway.`) };
      return runs(f, `Prepared statement ${f.executesPrepared}`, this.#resolveOne(target, view));
    }
    if (f.fetchesCursor !== undefined) {
      const target = view.portal(f.fetchesCursor);
      if (!target) return { ...f, ...block('P3.cursor.unknown', `No cursor named "${f.fetchesCursor}" passed the gateway.`) };
      return runs(f, `Cursor ${f.fetchesCursor}`, this.#resolveOne(target.facts, view));
    }
    if (f.kind === 'ExplainStmt' && f.analyzes && f.inner && (f.inner.executesPrepared !== undefined || f.inner.fetchesCursor !== undefined))
      return runs(f, 'EXPLAIN ANALYZE', this.#resolveOne(f.inner, view));
    return f;
  }
}

/** The facts of `f` (EXECUTE, FETCH…) judged by `target`, the statement it really runs. */
function runs(f: StatementFacts, label: string, target: StatementFacts): StatementFacts {
  // f's own verdict still counts: e.g. a blocked function among EXECUTE's parameters.
  const v = stricter({ ...asVerdict(target), reason: `${label}: ${target.reason}` }, asVerdict(f));
  return {
    ...f, ...v, inner: target,
    readOnly: v.action === 'allow' && target.readOnly,
    locksRows: target.locksRows,
    escapesRollback: f.escapesRollback === true || target.escapesRollback === true,
    relations: [...new Set([...f.relations, ...target.relations])],
    functions: [...new Set([...f.functions, ...target.functions])],
  };
}

function effectOf(f: StatementFacts, index: number): Effect | undefined {
  if (f.preparedName !== undefined && f.inner) return { index, op: 'prepare', name: f.preparedName, facts: f.inner };
  if (f.cursorName !== undefined && f.inner) return { index, op: 'declare', name: f.cursorName, facts: f.inner, holdable: f.holdable ?? false };
  if (f.deallocates !== undefined) return { index, op: 'deallocate', name: f.deallocates };
  if (f.closesCursor !== undefined) return { index, op: 'close', name: f.closesCursor };
  if (f.discardsAll) return { index, op: 'discard' };
  if (f.endsTransaction) return { index, op: 'endTransaction' };
  return undefined;
}

function applyEffect(e: Effect, statements: Map<string, StatementFacts>, portals: Map<string, Portal>): void {
  switch (e.op) {
    case 'prepare':
      statements.set(e.name, e.facts);
      break;
    case 'declare':
      portals.set(e.name, { facts: e.facts, holdable: e.holdable });
      break;
    case 'deallocate':
      if (e.name === '*') statements.clear();
      else statements.delete(e.name);
      break;
    case 'close':
      if (e.name === '*') portals.clear();
      else portals.delete(e.name);
      break;
    case 'discard':
      statements.clear();
      portals.clear();
      break;
    case 'endTransaction':
      for (const [name, p] of portals) if (!p.holdable) portals.delete(name);
      break;
  }
}

/** The strictest statement decides (block > hold > allow); no statements → allow. */
function decide(forced: Verdict | undefined, statements: StatementFacts[]): Decision {
  let v: Verdict = forced ?? allow('P5.empty', 'Empty query.');
  if (!forced) {
    for (const s of statements) v = v.rule === 'P5.empty' ? asVerdict(s) : stricter(v, asVerdict(s));
  }
  return { ...v, statements };
}
