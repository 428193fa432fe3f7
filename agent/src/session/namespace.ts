// The one namespace of the PostgreSQL session, kept as the server keeps it (SECURITY-POLICY.md P10).
//
//   prepared statements   protocol Parse / Close 'S'  and  SQL PREPARE / DEALLOCATE   (one namespace)
//   portals               protocol Bind / Close 'P'   and  SQL DECLARE / CLOSE        (one namespace)
//
// Each name carries what the agent knows of it: the policy facts of the statement it runs and its
// lineage plan for masking (a cursor's plan travels with the cursor), and for portals the result formats
// and the RowDescription a Describe reported.
//
// Nothing changes here when a message is forwarded. A change is *staged* with the request that makes it
// and applied when PostgreSQL confirms it (ParseComplete, BindComplete, CloseComplete, the statement's
// CommandComplete, ReadyForQuery for the end of a transaction); a request the server skipped (after an
// error, until Sync) drops its changes.
//
// Judging must happen before the server answers, so lookups see the confirmed state plus every staged
// change, in order. That is exact only when a staged change cannot be skipped while the message judged
// now still runs: both are extended-protocol messages of the same run (an error in between makes the
// server skip everything up to Sync, the message judged too). Any other staged change (one from a
// simple Query, or from a run that a Sync already ended) is *unsettled*: the session waits for the
// server's answer before it judges anything that reads names (settled()).
import type { NameTable, StatementFacts } from '../policy/index.js';
import type { LineagePlan } from '../masking/lineage.js';
import type { RowField } from '../pgwire/backend.js';
import type { FrontendMessage } from '../pgwire/frontend.js';

export interface Statement {
  readonly facts: StatementFacts;
  /** Lineage of its result; `NO_PLAN` on a connection that masks nothing. */
  readonly plan: LineagePlan;
}

export interface Portal {
  readonly facts: StatementFacts;
  readonly plan: LineagePlan;
  readonly holdable: boolean;
  /** Result formats asked for in Bind (protocol portals); SQL cursors send text. */
  readonly formats?: readonly number[];
  /** The Bind that created it: parameters for the audit record and approval binding. */
  readonly bind?: Extract<FrontendMessage, { type: 'Bind' }>;
  /** From a Describe of this portal, once the server sent it. */
  fields?: RowField[];
  /** P11 row threshold: rows this cursor or portal passed to the client over all its FETCHes and Executes. */
  counter?: RowCounter;
}

/** Rows one result, cursor or portal passed to the client; `approved` once an approver let the rest flow. */
export interface RowCounter {
  delivered: number;
  approved?: boolean;
  /** What the approver is shown when the rows are a cursor's (its query, as audited), not the FETCH's text. */
  sql?: string;
}

export type Op =
  | { op: 'prepare'; name: string; entry: Statement }
  | { op: 'deallocate'; name: string }
  | { op: 'declare'; name: string; entry: Portal }
  /** '*' (CLOSE ALL) spares `except`: the portal that runs it. */
  | { op: 'close'; name: string; except?: string }
  /** DISCARD ALL: every named statement and every portal but `except`. */
  | { op: 'discard'; except?: string }
  /** COMMIT / ROLLBACK inside a statement: portals without HOLD end (applied by the pipeline from the tag). */
  | { op: 'endTransaction' };

/** A staged change, owned by the request that makes it. */
export interface Staged {
  readonly op: Op;
  /** From an extended-protocol message (skipped with the rest of its run after an error). */
  readonly extended: boolean;
  /** The run (Syncs forwarded before it) it belongs to. */
  readonly run: number;
}

export class Namespace {
  private readonly statements = new Map<string, Statement>();
  private readonly portals = new Map<string, Portal>();
  /** Holdable cursors declared in the open transaction: they survive only its commit. */
  private readonly tentative = new Set<Portal>();
  private readonly staged: Staged[] = [];
  private run = 0;
  private waiters: (() => void)[] = [];

  /** The view the policy judges by (confirmed + staged). */
  readonly names: NameTable = {
    statement: (n) => this.statement(n)?.facts,
    portal: (n) => this.portal(n),
  };

  // ── judging side ───────────────────────────────────────────────────────────────────────────────

  statement(name: string): Statement | undefined {
    let v = this.statements.get(name);
    for (const s of this.staged) v = stepStatement(s.op, name, v);
    return v;
  }

  portal(name: string): Portal | undefined {
    let v = this.portals.get(name);
    for (const s of this.staged) v = stepPortal(s.op, name, v);
    return v;
  }

  /** Whether a staged change could be skipped by the server while a message judged now runs. */
  unsettled(): boolean {
    for (const s of this.staged) if (!this.safe(s)) return true;
    return false;
  }

  /**
   * The same for one name: what decides it is the last staged change that touches it. A change of this
   * run stands or falls with the message judged now; an unsettled one before it then no longer matters.
   */
  unsettledName(kind: 'statement' | 'portal', name: string): boolean {
    for (let i = this.staged.length - 1; i >= 0; i--) {
      const s = this.staged[i];
      if (touches(s.op, kind, name)) return !this.safe(s);
    }
    return false;
  }

  private safe(s: Staged): boolean {
    return s.extended && s.run === this.run;
  }

  /** Resolves once nothing is unsettled (the server answered what came before). */
  settled(): Promise<void> {
    if (!this.unsettled()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Records the changes a forwarded request will make if the server confirms it. */
  stage(ops: readonly Op[], extended: boolean): Staged[] {
    const out = ops.map((op) => ({ op, extended, run: this.run }));
    this.staged.push(...out);
    return out;
  }

  /** A Sync was forwarded: a new run begins. */
  sync(): void {
    this.run++;
  }

  // ── server side ────────────────────────────────────────────────────────────────────────────────

  /** The server confirmed these changes: they are the server's state now. */
  confirm(changes: readonly Staged[] | undefined): void {
    if (!changes?.length) return;
    for (const s of changes) {
      this.unstage(s);
      const op = s.op;
      switch (op.op) {
        case 'prepare':
          this.statements.set(op.name, op.entry);
          break;
        case 'deallocate':
          for (const name of [...this.statements.keys()]) if (covers(op, 'statement', name)) this.statements.delete(name);
          break;
        case 'declare':
          this.portals.set(op.name, op.entry);
          if (op.entry.holdable) this.tentative.add(op.entry); // kept only if its transaction commits
          break;
        case 'close':
        case 'discard':
          for (const name of [...this.portals.keys()]) if (covers(op, 'portal', name)) this.portals.delete(name);
          if (op.op === 'discard') for (const name of [...this.statements.keys()]) if (covers(op, 'statement', name)) this.statements.delete(name);
          break;
        case 'endTransaction':
          break; // the pipeline ends the transaction from the CommandComplete tag (COMMIT or ROLLBACK)
      }
    }
    this.wake();
  }

  /** The server skipped the request (an earlier error in its run): its changes never happen. */
  drop(changes: readonly Staged[] | undefined): void {
    if (!changes?.length) return;
    for (const s of changes) this.unstage(s);
    this.wake();
  }

  /**
   * A transaction ended (ReadyForQuery 'I', or COMMIT / ROLLBACK completed): portals and cursors
   * without HOLD are gone; a holdable cursor declared in it survives only a commit.
   */
  transactionEnded(committed: boolean): void {
    for (const [name, p] of this.portals) {
      if (!p.holdable || (!committed && this.tentative.has(p))) this.portals.delete(name);
    }
    this.tentative.clear();
  }

  /** Every name the server has, for the model-based test (compared with pg_prepared_statements / pg_cursors). */
  snapshot(): { statements: string[]; portals: string[]; staged: number } {
    return { statements: [...this.statements.keys()].sort(), portals: [...this.portals.keys()].sort(), staged: this.staged.length };
  }

  private unstage(s: Staged): void {
    const i = this.staged.indexOf(s);
    if (i >= 0) this.staged.splice(i, 1);
  }

  private wake(): void {
    if (this.waiters.length === 0 || this.unsettled()) return;
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

function touches(op: Op, kind: 'statement' | 'portal', name: string): boolean {
  return op.op === 'endTransaction' ? kind === 'portal' : covers(op, kind, name) || (op.op === 'prepare' && kind === 'statement' && op.name === name) || (op.op === 'declare' && kind === 'portal' && op.name === name);
}

/**
 * Whether `op` removes `name`. The "all" forms spare what PostgreSQL spares: DEALLOCATE ALL and DISCARD
 * ALL leave the unnamed statement (it is not a prepared statement of the SQL namespace), CLOSE ALL the
 * portal that runs it.
 */
function covers(op: Op, kind: 'statement' | 'portal', name: string): boolean {
  switch (op.op) {
    case 'deallocate':
      return kind === 'statement' && (op.name === name || (op.name === '*' && name !== ''));
    case 'close':
      return kind === 'portal' && (op.name === name || (op.name === '*' && name !== op.except));
    case 'discard':
      return kind === 'statement' ? name !== '' : name !== op.except;
    default:
      return false;
  }
}

/** What `name` means after `op` (lookups replay staged changes over the confirmed state). */
export function stepStatement(op: Op, name: string, v: Statement | undefined): Statement | undefined {
  if (op.op === 'prepare') return op.name === name ? op.entry : v;
  return covers(op, 'statement', name) ? undefined : v;
}

export function stepPortal(op: Op, name: string, v: Portal | undefined): Portal | undefined {
  if (op.op === 'declare') return op.name === name ? op.entry : v;
  if (op.op === 'endTransaction') return v?.holdable ? v : undefined;
  return covers(op, 'portal', name) ? undefined : v;
}
