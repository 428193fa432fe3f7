// Which connections an identity may use: the connection's `access` rules, any one of which must match
// in full. Claims come only from the verified token (SECURITY-POLICY.md P1).
//
// Pull requests are not branches. A GitHub token minted for a `pull_request_target` run carries
// `ref: refs/heads/main` although it runs code the PR's author chose, and a `pull_request` run of a fork
// is anyone's code; GitLab's merge-request pipelines are the same. So a token from such an event matches
// only a rule that names the event (`claims: {event_name: pull_request}`), never a rule written for a
// repository and branch.
import type { ConnectionConfig } from '../../../shared/config/schema.js';
import { meetsAssurance, type TokenAssurance } from './assurance.js';

export interface Principal {
  sub: string;
  issuer: string;
  email?: string;
  groups: string[];
  claims: Record<string, unknown>;
  /** When the token this identity came from expires (ms since the epoch). */
  expiresAt?: number;
  /** The token's amr/acr; absent means it showed none (no requirement is met). */
  assurance?: TokenAssurance;
}

/** Claims whose values say "this run is for a change request", per CI platform. */
const CHANGE_REQUEST_EVENTS: Record<string, readonly string[]> = {
  event_name: ['pull_request', 'pull_request_target'], // GitHub Actions
  pipeline_source: ['merge_request_event', 'external_pull_request_event'], // GitLab CI
};

/** The claim and value that mark `who` as a change-request run, if it is one. */
export function changeRequestEvent(who: Principal): { claim: string; value: string } | undefined {
  for (const [claim, values] of Object.entries(CHANGE_REQUEST_EVENTS)) {
    const v = who.claims[claim];
    if (typeof v === 'string' && values.includes(v)) return { claim, value: v };
  }
  return undefined;
}

type AccessRule = ConnectionConfig['access'][number];

export function ruleMatches(rule: AccessRule, who: Principal): boolean {
  if (rule.issuer !== undefined && rule.issuer !== who.issuer) return false;
  if (rule.sub !== undefined && rule.sub !== who.sub) return false;
  if (rule.email !== undefined && rule.email !== who.email) return false;
  if (rule.groups && !rule.groups.some((g) => who.groups.includes(g))) return false;
  if (rule.claims) {
    for (const [k, v] of Object.entries(rule.claims)) if (who.claims[k] !== v) return false;
  }
  const pr = changeRequestEvent(who);
  if (pr && rule.claims?.[pr.claim] === undefined) return false;
  return meetsAssurance(rule.require, who.assurance);
}

export type AccessDecision = { allowed: true } | { allowed: false; reason: string; hint?: string };

export function canUse(conn: Pick<ConnectionConfig, 'access'>, connName: string, who: Principal): AccessDecision {
  if (conn.access.some((r) => ruleMatches(r, who))) return { allowed: true };
  const groups = who.groups.length ? who.groups.join(', ') : 'none';
  const pr = changeRequestEvent(who);
  // Say why the likely rule did not match, so the operator (or the job's author) knows what to write.
  const weak = !pr && conn.access.some((r) => r.require && ruleMatches({ ...r, require: undefined }, who));
  const why = pr ? `; it is a ${pr.value} run, which only a rule naming ${pr.claim}: ${pr.value} admits`
    : weak ? '; a rule for it requires a stronger sign-in (MFA) than its token shows'
    : '';
  return {
    allowed: false,
    reason: `identity ${who.sub} (issuer ${who.issuer}, groups: ${groups}) matches no access rule of connection ${connName}${why}`,
    hint: weak ? 'Run `hoopctl login` again and complete multi-factor authentication.' : undefined,
  };
}
