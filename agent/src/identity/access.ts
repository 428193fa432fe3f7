// Which connections an identity may use: the connection's `access` rules, any one of which must match
// in full. Claims come only from the verified token (SECURITY-POLICY.md P1).
import type { ConnectionConfig } from '../../../shared/config/schema.js';

export interface Principal {
  sub: string;
  issuer: string;
  email?: string;
  groups: string[];
  claims: Record<string, unknown>;
  /** When the token this identity came from expires (ms since the epoch). */
  expiresAt?: number;
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
  return true;
}

export type AccessDecision = { allowed: true } | { allowed: false; reason: string };

export function canUse(conn: Pick<ConnectionConfig, 'access'>, connName: string, who: Principal): AccessDecision {
  if (conn.access.some((r) => ruleMatches(r, who))) return { allowed: true };
  const groups = who.groups.length ? who.groups.join(', ') : 'none';
  return {
    allowed: false,
    reason: `identity ${who.sub} (issuer ${who.issuer}, groups: ${groups}) matches no access rule of connection ${connName}`,
  };
}
