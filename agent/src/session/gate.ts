// The one place every statement passes before it may reach PostgreSQL. The session asks; the policy
// engine answers. Until the policy engine is wired in, `allowAll` lets everything through (and the
// session still logs each statement).
export type Action = 'allow' | 'block' | 'hold';

export interface Verdict {
  action: Action;
  /** The rule that decided, e.g. `P3.ddl.drop`; shown to the client and recorded. */
  rule: string;
  /** One sentence for the person or job that sent the statement. */
  reason: string;
}

export interface Gate {
  /** A simple-protocol Query (possibly several statements). */
  judgeQuery(sql: string): Verdict;
  /** An extended-protocol Parse of a (possibly named) statement. */
  judgeParse(name: string, sql: string): Verdict;
}

const ALLOW: Verdict = { action: 'allow', rule: 'allow-all', reason: 'no policy configured' };

export const allowAll: Gate = {
  judgeQuery: () => ALLOW,
  judgeParse: () => ALLOW,
};
