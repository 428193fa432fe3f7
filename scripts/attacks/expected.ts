// The state a case should leave behind in auto-approve mode (corpus meta.run_modes: a second human
// approves every request, and `then` applies). A statement the second human approved was allowed to
// change the fixture; nothing else was. So the expected state is not F0 but F0 plus exactly the
// approved statements: the runner replays them, as the case sent them, straight into a freshly reset
// fixture and reads the fingerprint there. Anything the gateway ran without approval, or ran twice,
// or ran differently, leaves a state that differs from this reference, and the case fails.
//
// Which steps were approved comes from the runner's own approver (the stack's auto-approve loop
// records every request it approved, with the SQL text the agent showed it), matched back to the
// steps the case sent; the agent's word alone never widens what is expected.
import { loadModule, normalizeSync, parseSync } from 'libpg-query';
import type { AttackStack, Fingerprint, GrantedApproval } from './stack.js';
import { describeErrors } from './judge.js';
import { msg, type PgWire } from './pgclient.js';

/** A statement the case ran: a simple Query, or an extended-protocol Execute of a bound statement. */
export interface SentStep {
  /** The statement text as sent through the gateway (placeholders filled for that run). */
  sql: string;
  /**
   * What to send again (placeholders filled again for the reference fixture): a simple Query's text, or
   * the extended-protocol messages (Parse/Bind/Execute) that run it, which the replay ends with a Sync.
   */
  replay: (placeholders: Record<string, string>) => string | Buffer;
  /** COPY FROM STDIN data that followed it (undefined: the copy was failed or never finished). */
  copyIn?: string;
}

export interface ExpectedState {
  f: Fingerprint;
  markers: string[];
  /** Approvals granted during the case that match no step the case sent (not replayed). */
  unmatched: GrantedApproval[];
  evidence: string[];
}

/** The approved steps to replay, in the order sent, with the PREPAREs they may EXECUTE. */
export async function approvedSteps(granted: GrantedApproval[], steps: SentStep[]): Promise<{ replay: SentStep[]; unmatched: GrantedApproval[] }> {
  await loadModule();
  const approved = new Set<number>();
  const unmatched: GrantedApproval[] = [];
  let next = 0;
  // Requests are created in the order the statements arrive, so matches move forward only.
  for (const g of granted) {
    let found = -1;
    for (let i = next; i < steps.length; i++) {
      if (sameStatement(steps[i].sql, g.sql)) {
        found = i;
        break;
      }
    }
    if (found < 0) unmatched.push(g);
    else {
      approved.add(found);
      next = found + 1;
    }
  }
  const last = Math.max(-1, ...approved);
  const replay = steps.filter((s, i) => approved.has(i) || (i < last && onlyPrepares(s.sql)));
  return { replay, unmatched };
}

/**
 * Resets the fixture, replays `replay` directly (as the gateway's own database role, in one session,
 * like the case's session) and reads the fingerprint while that session is still open (temp objects).
 */
export async function expectedState(stack: AttackStack, replay: SentStep[], unmatched: GrantedApproval[], timeoutMs: number): Promise<ExpectedState> {
  const evidence: string[] = [];
  await stack.fixture.reset();
  const ph = stack.fixture.placeholders();
  const d = await stack.direct();
  try {
    for (const s of replay) {
      const what = s.replay(ph);
      let outcome: string;
      let errors: ReturnType<PgWire['errors']>;
      if (typeof what === 'string') ({ outcome, errors } = await d.query(what, timeoutMs, s.copyIn));
      else {
        const from = d.messages.length;
        d.send(Buffer.concat([what, msg.sync()]));
        outcome = await d.waitReady(from, 1, timeoutMs);
        errors = d.errors(from);
      }
      evidence.push(`reference: ${typeof what === 'string' ? '' : '(extended) '}${s.sql.slice(0, 80).replace(/\s+/g, ' ')} → ${outcome}${errors.length ? ` ${describeErrors(errors)}` : ''}`);
    }
    const f = await stack.fixture.fingerprint();
    const markers = await stack.fixture.markerFiles();
    for (const u of unmatched) evidence.push(`approval ${u.id} (${u.sql.slice(0, 80)}) matches no step the case sent: not part of the expected state`);
    return { f, markers, unmatched, evidence };
  } finally {
    d.close();
  }
}

/** The agent records a statement that may read masked columns in its normalised form ($n for literals). */
function sameStatement(sent: string, recorded: string): boolean {
  if (sent === recorded) return true;
  try {
    return normalizeSync(sent) === recorded;
  } catch {
    return false;
  }
}

/** The statement of a single SQL-level PREPARE (what an EXECUTE or a protocol Bind of it runs), else undefined. */
export function preparedBody(sql: string): { name: string; body: string } | undefined {
  try {
    const tree = parseSync(sql) as { stmts?: Array<{ stmt?: { PrepareStmt?: { name?: string } } }> };
    const name = tree.stmts?.length === 1 ? tree.stmts[0].stmt?.PrepareStmt?.name : undefined;
    if (name === undefined) return undefined;
    // PREPARE name [(types)] AS statement: the statement is what follows the first top-level AS.
    const m = /^\s*PREPARE\s+("(?:[^"]|"")+"|\S+?)\s*(\((?:[^()]|\([^()]*\))*\))?\s*AS\s+/i.exec(sql);
    return m ? { name, body: sql.slice(m[0].length).replace(/;\s*$/, '') } : undefined;
  } catch {
    return undefined;
  }
}

/** PREPARE / DEALLOCATE only: session context an approved EXECUTE needs, which changes no data itself. */
function onlyPrepares(sql: string): boolean {
  try {
    const tree = parseSync(sql) as { stmts?: Array<{ stmt?: Record<string, unknown> }> };
    const stmts = tree.stmts ?? [];
    return stmts.length > 0 && stmts.every((s) => Object.keys(s.stmt ?? {}).every((k) => k === 'PrepareStmt' || k === 'DeallocateStmt'));
  } catch {
    return false;
  }
}
