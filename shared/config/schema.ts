// The agent's configuration file (hoop-agent.yaml), validated once at start and trusted inside.
// The format is DESIGN.md's; unknown keys are errors so that a typo never silently drops a rule.
import { z } from 'zod';

const HostPort = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'expected host:port, e.g. 0.0.0.0:8443');

/** "15m", "30s", "2h", "30d" or a number of seconds. */
export const Duration = z.union([
  z.number().positive(),
  z.string().regex(/^\d+(ms|s|m|h|d)$/, 'expected a duration such as 30s, 15m, 2h or 30d'),
]);

export function durationMs(d: z.infer<typeof Duration>): number {
  if (typeof d === 'number') return d * 1000;
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(d)!;
  const n = Number(m[1]);
  return n * { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
}

const Issuer = z.strictObject({
  issuer: z.url(),
  audience: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
  algorithms: z.array(z.string()).min(1).optional(),
  /** Claim holding the identity's groups (default `groups`). */
  groupsClaim: z.string().optional(),
  /** Oldest token (by `iat`) and longest lifetime accepted, seconds (default 24 h). */
  maxTokenAgeSec: z.number().int().min(1).max(604800).optional(),
});

const PostgresTarget = z
  .strictObject({
    host: z.string().min(1),
    port: z.number().int().min(1).max(65535).default(5432),
    database: z.string().min(1),
    user: z.string().min(1),
    /** Name of the environment variable holding the password. */
    passwordEnv: z.string().min(1).optional(),
    /** Path of a file holding the password (trailing newline ignored). */
    passwordFile: z.string().min(1).optional(),
    sslmode: z.enum(['disable', 'require', 'verify-full']).default('disable'),
    sslrootcert: z.string().optional(),
  })
  .refine((p) => !(p.passwordEnv && p.passwordFile), { message: 'set passwordEnv or passwordFile, not both' })
  .refine((p) => p.passwordEnv || p.passwordFile, {
    message: 'a password source is required: passwordEnv or passwordFile (never the password itself)',
  });

/** One rule of who may use a connection: every field given must match. */
const AccessRule = z
  .strictObject({
    issuer: z.string().optional(),
    sub: z.string().optional(),
    groups: z.array(z.string()).min(1).optional(),
    email: z.string().optional(),
    /** Any other claims that must equal these values exactly (CI claims: repository, ref, workflow…). */
    claims: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).optional(),
  })
  .refine((r) => Object.keys(r).length > 0, { message: 'an access rule must name at least one field' });

export const MaskStrategy = z.union([
  z.enum(['redact', 'hash', 'null']),
  z.strictObject({ partial: z.number().int().min(1).max(64) }),
]);
export type MaskStrategy = z.infer<typeof MaskStrategy>;

const Approval = z.strictObject({
  approvers: z.strictObject({ groups: z.array(z.string()).min(1) }).optional(),
  minApprovals: z.number().int().min(1).max(10).default(1),
  timeout: Duration.default('15m'),
  exportRowLimit: z.number().int().positive().default(10_000),
  webhook: z
    .strictObject({
      /** Where requests and decisions are POSTed. A secret for Slack: never logged, only its origin. */
      url: z.url({ protocol: /^https?$/ }),
      /** `json`: hoopctl's own document; `slack`: an incoming-webhook body ({text, blocks}). */
      format: z.enum(['json', 'slack']).default('json'),
      /** Per try; a slow receiver never holds a statement (delivery is queued, off the session). */
      timeout: Duration.default('5s'),
      /** Tries after the first, with exponential backoff, on network errors, timeouts, 429 and 5xx. */
      retries: z.number().int().min(0).max(10).default(4),
      /** How approvers reach this agent, for the link in notifications (default: its listen address). */
      agentUrl: z.url({ protocol: /^https?$/ }).optional(),
    })
    .optional(),
});

const PolicyOverrides = z.strictObject({
  extraBlockedFunctions: z.array(z.string()).default([]),
  allowedFunctions: z.array(z.string()).default([]),
  /** libpg-query fingerprints of statements that known jobs may run without approval. */
  approvalFree: z.array(z.string()).default([]),
  /**
   * P7 (SECURITY-POLICY.md): masked values may only be compared by equality with constants or parameters.
   * `false` opts out: masking then protects against accidental exposure only, not a job that wants the values.
   */
  strictPredicates: z.boolean().default(true),
  /** P7: at most this many constants or parameters compared with masked columns by equality per statement. */
  maxEqualityValues: z.number().int().min(1).max(100_000).default(100),
});

const Connection = z.strictObject({
  postgres: PostgresTarget,
  access: z.array(AccessRule).min(1, 'at least one access rule; nobody could use this connection'),
  masking: z.record(z.string().regex(/^[^.]+\.[^.]+\.[^.]+$/, 'expected schema.table.column'), MaskStrategy).default({}),
  approval: Approval.prefault({}),
  policy: PolicyOverrides.prefault({}),
});
export type ConnectionConfig = z.infer<typeof Connection>;

export const AgentConfig = z.strictObject({
  listen: HostPort.default('127.0.0.1:8443'),
  tls: z.strictObject({ cert: z.string(), key: z.string() }).optional(),
  dataDir: z.string().default('./.hoop/agent'),
  /** Origins allowed to open the tunnel from a browser; the CLI sends none. */
  allowedOrigins: z.array(z.string()).default([]),
  maxMessageBytes: z.number().int().min(1024).max(64 * 1024 * 1024).default(16 * 1024 * 1024),
  /** Concurrent sessions one `hoopctl connect` may hold; the next is refused with 53300 and logged on both sides. */
  maxSessionsPerTunnel: z.number().int().min(1).max(100_000).default(256),
  identity: z.strictObject({ issuers: z.array(Issuer).min(1) }),
  state: z.strictObject({ url: z.string().optional() }).prefault({}),
  /** Who may read every session's audit trail (`hoopctl sessions`); anyone else sees only their own. */
  reviewers: z.strictObject({ groups: z.array(z.string()).default([]) }).prefault({}),
  /** Sessions' masked transcripts (`hoopctl sessions replay`), capped per statement and per session. */
  recording: z
    .strictObject({
      enabled: z.boolean().default(true),
      maxRowsPerStatement: z.number().int().min(0).max(100_000).default(100),
      maxBytesPerSession: z.number().int().min(1024).max(1 << 30).default(1 << 20),
    })
    .prefault({}),
  /** Recordings older than this are deleted (at start, then hourly); audit events are never deleted. */
  retention: z.strictObject({ recordings: Duration.optional() }).prefault({}),
  /** Signed Merkle checkpoints of the audit chain (shared/audit, agent/src/audit/checkpoints.ts). */
  audit: z
    .strictObject({
      /** Ed25519 private key (PKCS#8 PEM), created 0600 at first start if absent. Default dataDir/audit-signing.key. */
      signingKeyFile: z.string().min(1).optional(),
      checkpointInterval: Duration.default('1h'),
      /** Copies of every checkpoint outside the operator's reach. */
      witness: z
        .strictObject({
          /** A directory (e.g. a WORM bucket mount): one file per checkpoint. */
          dir: z.string().min(1).optional(),
          /** POSTed as text/plain, the signed note. */
          webhook: z.url({ protocol: /^https?$/ }).optional(),
        })
        .prefault({}),
    })
    .prefault({}),
  /** On SIGTERM: how long running statements may finish before they are cancelled (README, Stopping the agent). */
  shutdown: z.strictObject({ drainTimeout: Duration.default('30s') }).prefault({}),
  /**
   * GET /metrics (Prometheus text). Without `listen` it is served on the main address to reviewers'
   * bearer tokens, like the API; with `listen` on that address alone, without a token (keep it private).
   */
  metrics: z.strictObject({ listen: HostPort.optional() }).prefault({}),
  connections: z.record(z.string().regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, 'connection names are lower-case letters, digits, - and _'), Connection)
    .refine((c) => Object.keys(c).length > 0, { message: 'define at least one connection' }),
});
export type AgentConfig = z.infer<typeof AgentConfig>;

/** One line per problem, each naming the field: what a person fixing the file needs. */
export function formatConfigIssues(err: z.ZodError): string[] {
  return err.issues.map((i) => {
    const where = i.path.length ? i.path.map(String).join('.') : '(top level)';
    return `${where}: ${i.message}`;
  });
}
