// Transactions reviewed before COMMIT (approval.mode: transaction).
//
//   client                         agent                                   PostgreSQL
//   BEGIN (alone, no access mode)  ──►  BEGIN, then the agent's own SET TRANSACTION READ WRITE ──►  block 'T', read-write
//   UPDATE … / INSERT … / reads    ──►  judged as always; writes run in the block, listed here ──►  rows changed, invisible to others
//   COMMIT                         ──►  held: did the transaction write? (the server's own xid) ─►
//                                       approver sees every statement and rows changed
//                                  ◄──  approve: COMMIT goes ──────────────────────────────────►  visible
//                                  ◄──  deny, expiry, withdrawal: the agent's ROLLBACK, then an error
//
// The block is read-write only because the server confirmed the agent's switch right after BEGIN (it
// must come before the block's first query); every other block stays read-only, as in statement mode.
import { createHash } from 'node:crypto';
import type { InFlight } from './statement-log.js';
import type { TransactionDetail } from '../../../shared/api/approvals.js';

export type { TransactionDetail };

/** One message the reviewed block ran, as the audit trail records it. */
export interface ReviewEntry {
  /** The SQL as audited (literals removed when it may read masked columns). */
  sql: string;
  params?: unknown[];
  /** Held as a write (P4) outside a reviewed block. */
  writes: boolean;
  /** Its outcome, filled in by the pipeline: rows, SQLSTATE. */
  log: InFlight;
}

export class TransactionReview {
  /** The server answered the agent's read-write switch inside the block: writes may run in it. */
  confirmed = false;
  private readonly entries: ReviewEntry[] = [];

  /** `startedMs`: the session clock (epoch milliseconds) when the block began, for approval.transactionTimeout. */
  constructor(readonly startedMs: number) {}

  add(e: ReviewEntry): void {
    this.entries.push(e);
  }

  detail(): TransactionDetail {
    const statements = this.entries.map((e) => ({ sql: e.sql, params: e.params, writes: e.writes, rows: e.log.rows, sqlstate: e.log.sqlstate }));
    return { startedAt: new Date(this.startedMs).toISOString(), statements, rowsChanged: statements.reduce((n, s) => n + (s.writes && !s.sqlstate ? s.rows : 0), 0) };
  }

  /** The text approvers read, one line per statement. */
  render(d = this.detail()): string {
    const lines = d.statements.map((s, i) => {
      const outcome = s.sqlstate ? `failed ${s.sqlstate}` : s.writes ? `${s.rows} row${s.rows === 1 ? '' : 's'} changed` : 'read';
      const params = s.params?.length ? `  -- params ${JSON.stringify(s.params)}` : '';
      return `-- ${i + 1}. (${outcome})\n${s.sql.trim()}${params}`;
    });
    return [`-- transaction of ${d.statements.length} statement${d.statements.length === 1 ? '' : 's'}, ${d.rowsChanged} row${d.rowsChanged === 1 ? '' : 's'} changed`, ...lines, 'COMMIT'].join('\n');
  }

  /** What the approval is bound to: this session and every statement, parameter and outcome, in order. */
  fingerprint(sessionId: string, d = this.detail()): string {
    return createHash('sha256').update(`${sessionId}\0transaction\0${JSON.stringify(d.statements)}`).digest('hex');
  }
}
