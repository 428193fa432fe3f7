// The `policy_loaded` event: at start, the rules in force, so that an evidence bundle can say which
// access, masking and approval rules applied to a period and when they changed (sections C and G).
// Passwords and their sources are left out; the hash covers exactly what the event shows, so two
// agents with the same rules log the same hash.
import type { ResolvedConfig } from '../config.js';
import { canonicalJson, sha256 } from '../../../shared/audit/chain.js';
import type { EventInput } from './events.js';

export function makePolicyLoadedEvent(config: ResolvedConfig, versions: { agent?: string } = {}): EventInput {
  const connections: Record<string, unknown> = {};
  for (const [name, c] of config.connections) {
    connections[name] = {
      database: c.postgres.database,
      access: c.access,
      masking: c.masking,
      approval: { approvers: c.approval.approvers, minApprovals: c.approval.minApprovals, timeout: c.approval.timeout, exportRowLimit: c.approval.exportRowLimit },
      policy: c.policy,
    };
  }
  const rules = {
    connections,
    issuers: config.identity.issuers.map((i) => ({ issuer: i.issuer, audience: i.audience })),
    reviewers: config.reviewers,
    recording: config.recording,
    retention: config.retention,
  };
  return { type: 'policy_loaded', data: { configHash: sha256(canonicalJson(rules)), ...rules, agentVersion: versions.agent } };
}
