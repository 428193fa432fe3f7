// The session's side of the audit trail: the statement events, and what became of each statement.
//
//   forward  ── statement event (decision, SQL, redacted parameters) ── appended before the bytes go out
//   backend  ── the pipeline (pipeline.ts) adds rows and SQLSTATE to the statement's InFlight and calls
//               finish() at its end: CommandComplete / PortalSuspended / ErrorResponse for an Execute,
//               ReadyForQuery for a simple Query, or "not run" when the server skipped it.
import type { EventInput } from '../audit/events.js';
import { makeStatementEvent } from '../audit/events.js';
import type { Principal } from '../identity/access.js';

export interface InFlight {
  kind: 'query' | 'execute';
  /** The SQL as audited (literals removed when it reads masked columns). */
  sql: string;
  startedAt: number;
  rows: number;
  sqlstate?: string;
  /** Seq of the statement event, once it is durable. */
  seq?: number;
  /** Refused by the agent: its refusal is the outcome, no statement_result follows. */
  refused?: boolean;
  finished?: boolean;
  /** Why it stopped early (P11 row threshold: paused, refused, the client left); kept over a generic note. */
  note?: string;
  /** Recording entries written for it so far. */
  recorded?: number;
}

export interface StatementLogDeps {
  sessionId: string;
  who: Principal;
  connection: string;
  clock: () => number;
  /** Fire-and-forget: results are evidence, but the statement already ran. */
  appendResult(e: EventInput): void;
}

export class StatementLog {
  /** Statements forwarded to run (refusals not counted). */
  count = 0;

  constructor(private readonly deps: StatementLogDeps) {}

  /** The event that must be durable before the statement may reach PostgreSQL. */
  statementEvent(sql: string, decision: string, rule: string, params?: unknown[], scope?: { scope: string; unmasked?: string[] }): EventInput {
    // Data members in canonical (sorted) order, so the store's serializer need not sort them.
    return makeStatementEvent({
      sessionId: this.deps.sessionId,
      who: this.deps.who,
      connection: this.deps.connection,
      decision,
      params,
      rule,
      ...scope,
      sql,
    });
  }

  /** A statement about to be forwarded; its outcome comes from the backend messages that follow. */
  started(kind: InFlight['kind'], sql: string): InFlight {
    this.count++;
    return { kind, sql, startedAt: this.deps.clock(), rows: 0 };
  }

  /** A refused statement's record (the recording shows its refusal; the audit has its event). */
  refused(kind: InFlight['kind'], sql: string): InFlight {
    return { kind, sql, startedAt: this.deps.clock(), rows: 0, refused: true };
  }

  /** The statement's outcome, once: rows, SQLSTATE, duration, and a note when it did not run. */
  finish(f: InFlight, note?: string): void {
    if (f.finished) return;
    f.finished = true;
    if (f.refused) return;
    this.deps.appendResult({
      type: 'statement_result',
      sessionId: this.deps.sessionId,
      connection: this.deps.connection,
      data: {
        durationMs: Math.round((this.deps.clock() - f.startedAt) * 1000) / 1000,
        note: f.note ?? note,
        rows: f.rows,
        sqlstate: f.sqlstate ?? '00000',
        statementSeq: f.seq,
      },
    });
  }
}

/**
 * Bind parameters for the audit record. Values of statements that touch a table with masked columns are
 * redacted (which parameter meets which column is not provable here); others are kept, capped.
 */
export function auditParams(params: readonly (Buffer | null)[], formats: readonly number[], redact: boolean): unknown[] {
  return params.map((p, i) => {
    if (p === null) return null;
    if (redact) return '***';
    const binary = (formats.length === 1 ? formats[0] : formats[i]) === 1;
    if (binary) return `<binary ${p.length} bytes>`;
    const s = p.toString('utf8');
    return s.length > 200 ? s.slice(0, 200) + '…' : s;
  });
}
