// The session's side of the audit trail: which statements are in flight and what became of them.
//
//   forward  ── statement event (decision, SQL, redacted parameters) ── appended before the bytes go out
//   backend  ── CommandComplete / ErrorResponse / PortalSuspended / ReadyForQuery ── statement_result
//
// Results follow the protocol's order: a simple Query is answered up to its ReadyForQuery, an Execute by
// its CommandComplete, PortalSuspended, EmptyQueryResponse or ErrorResponse; an Execute the server skipped
// after an earlier error in the same pipeline is closed at the ReadyForQuery, marked as not run.
import type { EventInput } from '../audit/events.js';
import { makeStatementEvent } from '../audit/events.js';
import type { Principal } from '../identity/access.js';

export interface InFlight {
  kind: 'query' | 'execute';
  sql: string;
  startedAt: number;
  rows: number;
  sqlstate?: string;
  /** Seq of the statement event, once it is durable. */
  seq?: number;
}

export interface StatementLogDeps {
  sessionId: string;
  who: Principal;
  connection: string;
  clock: () => number;
  /** Fire-and-forget: results are evidence, but the statement already ran. */
  appendResult(e: EventInput): void;
}

/** A Sync or a refused Query in the queue: answered by a ReadyForQuery, not a statement of its own. */
const READY = { kind: 'ready' } as const;
type Entry = InFlight | typeof READY;

export class StatementLog {
  private readonly queue: Entry[] = [];
  private head = 0;
  count = 0;

  constructor(private readonly deps: StatementLogDeps) {}

  /** The event that must be durable before the statement may reach PostgreSQL. */
  statementEvent(sql: string, decision: string, rule: string, params?: unknown[]): EventInput {
    return makeStatementEvent({
      sessionId: this.deps.sessionId,
      who: this.deps.who,
      connection: this.deps.connection,
      sql,
      params,
      decision,
      rule,
    });
  }

  /** A statement was forwarded; its outcome comes from the backend messages that follow. */
  started(kind: InFlight['kind'], sql: string): InFlight {
    const f: InFlight = { kind, sql, startedAt: this.deps.clock(), rows: 0 };
    this.queue.push(f);
    this.count++;
    return f;
  }

  /**
   * A Sync or a refused Query was forwarded: its ReadyForQuery ends what came before it and nothing
   * after it (a client may pipeline the next run before this one is answered).
   */
  ready(): void {
    this.queue.push(READY);
  }

  private current(): Entry | undefined {
    return this.queue[this.head];
  }

  onCommandComplete(rows: number): void {
    const f = this.current();
    if (!f || f.kind === 'ready') return;
    f.rows += rows;
    if (f.kind === 'execute') this.finish();
  }

  /** PortalSuspended / EmptyQueryResponse end an Execute. */
  onExecuteEnd(): void {
    if (this.current()?.kind === 'execute') this.finish();
  }

  onError(sqlstate: string): void {
    const f = this.current();
    if (!f || f.kind === 'ready') return;
    f.sqlstate = sqlstate;
    if (f.kind === 'execute') this.finish();
  }

  /**
   * ReadyForQuery: the simple Query at the head is done; or a Sync's run is, with any Execute of it the
   * server skipped after an error.
   */
  onReady(): void {
    if (this.current()?.kind === 'query') return this.finish();
    while (this.current()?.kind === 'execute') this.finish('not run: an earlier message of the pipeline failed');
    if (this.current()?.kind === 'ready') this.advance();
  }

  private advance(): Entry {
    const f = this.queue[this.head++];
    if (this.head > 64 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    return f;
  }

  private finish(note?: string): void {
    const f = this.advance() as InFlight;
    this.deps.appendResult({
      type: 'statement_result',
      sessionId: this.deps.sessionId,
      connection: this.deps.connection,
      data: {
        statementSeq: f.seq,
        rows: f.rows,
        sqlstate: f.sqlstate ?? '00000',
        durationMs: Math.round((this.deps.clock() - f.startedAt) * 1000) / 1000,
        note,
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
