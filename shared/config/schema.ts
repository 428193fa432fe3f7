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

/**
 * How strongly a person proved who they are, as the token says: `amr` (any of these methods, e.g. mfa,
 * otp, hwk) and/or a minimum `acr` on the issuer's ordered `acrValues`. Every field given must hold.
 */
export const Assurance = z
  .strictObject({
    amr: z.array(z.string().min(1)).min(1).optional(),
    acr: z.string().min(1).optional(),
  })
  .refine((a) => a.amr !== undefined || a.acr !== undefined, { message: 'require needs amr, acr or both' });
export type Assurance = z.infer<typeof Assurance>;

const Issuer = z
  .strictObject({
    issuer: z.url(),
    audience: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
    algorithms: z.array(z.string()).min(1).optional(),
    /** Claim holding the identity's groups (default `groups`). */
    groupsClaim: z.string().optional(),
    /** Oldest token (by `iat`) and longest lifetime (exp − iat) accepted, seconds (default 3600: 1 h). */
    maxTokenAgeSec: z.number().int().min(1).max(604800).optional(),
    /** This issuer's `acr` values from weakest to strongest: what an `acr` minimum is measured on. */
    acrValues: z.array(z.string().min(1)).min(1).optional(),
    /** Every token of this issuer must show this assurance, for the tunnel and the API alike. */
    require: Assurance.optional(),
  })
  .refine((i) => i.require?.acr === undefined || (i.acrValues ?? []).includes(i.require.acr), {
    message: 'require.acr must be one of this issuer\'s acrValues (listed weakest to strongest)',
    path: ['require', 'acr'],
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
    /**
     * Any other claims that must equal these values exactly (CI claims: repository, ref, workflow…).
     * A pull-request token (GitHub `event_name: pull_request[_target]`, GitLab merge-request pipelines)
     * matches only a rule that names that event here (identity/access.ts).
     */
    claims: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).optional(),
    /** The assurance the token must show (e.g. `{amr: [mfa]}`): people only reach PHI with MFA. */
    require: Assurance.optional(),
  })
  .refine((r) => Object.keys(r).length > 0, { message: 'an access rule must name at least one field' });

export const MaskStrategy = z.union([
  z.enum(['redact', 'hash', 'null']),
  z.strictObject({ partial: z.number().int().min(1).max(64) }),
]);
export type MaskStrategy = z.infer<typeof MaskStrategy>;

const Approval = z.strictObject({
  approvers: z
    .strictObject({
      groups: z.array(z.string()).min(1),
      /** The assurance an approver's token must show to decide (e.g. `{amr: [mfa]}`). */
      require: Assurance.optional(),
    })
    .optional(),
  minApprovals: z.number().int().min(1).max(10).default(1),
  timeout: Duration.default('15m'),
  exportRowLimit: z.number().int().positive().default(10_000),
  /**
   * `statement`: every write waits for approval on its own, and a write inside BEGIN … COMMIT is
   * refused. `transaction`: writes inside a block run in that (read-write) transaction and its COMMIT
   * waits for an approver who sees every statement and the rows it changed; deny rolls back.
   */
  mode: z.enum(['statement', 'transaction']).default('statement'),
  /** Transaction mode: how long a reviewed transaction may hold its locks while its COMMIT waits. */
  transactionTimeout: Duration.default('5m'),
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

// A name as PostgreSQL stores it: plain (`visits`), or double-quoted for any other spelling (`"Mixed Case"`).
const IDENT = String.raw`(?:"(?:[^"]|"")+"|[^."\s(),]+)`;
const GRANT = new RegExp(String.raw`^(${IDENT})\.(${IDENT})(?:\s*\(\s*(${IDENT}(?:\s*,\s*${IDENT})*)\s*\))?$`);
const unquote = (n: string) => (n.startsWith('"') ? n.slice(1, -1).replace(/""/g, '"') : n);

/** `schema.table` or `schema.table(col, col)` → catalog key `schema.table` and columns (undefined: all). */
export function parseReadGrant(text: string): { relation: string; columns?: string[] } | undefined {
  const m = GRANT.exec(text.trim());
  if (!m) return undefined;
  const relation = `${unquote(m[1])}.${unquote(m[2])}`;
  if (m[3] === undefined) return { relation };
  return { relation, columns: [...m[3].matchAll(new RegExp(IDENT, 'g'))].map((c) => unquote(c[0])) };
}

const ReadGrant = z.string().refine((g) => parseReadGrant(g) !== undefined, 'expected schema.table or schema.table(col, col) (double-quote other spellings: public."Mixed Case")');
const TableName = z.string().refine((g) => parseReadGrant(g)?.columns === undefined, 'expected schema.table');
const ColumnName = z.string().regex(/^[^.\s]+\.[^.\s]+\.[^.\s]+$/, 'expected schema.table.column');

/**
 * P11 (SECURITY-POLICY.md): what one kind of identity may read and write on a connection. The first scope
 * whose `match` fits the identity applies; with scopes configured, an identity no scope matches reads nothing.
 */
const Scope = z.strictObject({
  /** Shown by `hoopctl whoami` and recorded in the audit trail. */
  name: z.string().min(1).max(64).optional(),
  /** The same matcher as an access rule: every field given must match. */
  match: AccessRule,
  /** Relations (all columns) or some of their columns; views are expanded to what they read unless named here. */
  read: z.array(ReadGrant).default([]),
  /** Relations this identity may even ask approval to write (INSERT, UPDATE, DELETE, MERGE, COPY FROM). */
  write: z.array(TableName).default([]),
  /** Results longer than this pause for approval (instead of approval.exportRowLimit). */
  maxRows: z.number().int().positive().optional(),
  /** Masked columns this identity reads in clear: an explicit exception, recorded on every statement that reads them. */
  unmask: z.array(ColumnName).default([]),
});

const Connection = z.strictObject({
  postgres: PostgresTarget,
  /** Every session must state its purpose (`hoopctl connect --reason`; in CI built from the job's claims). */
  requireReason: z.boolean().default(false),
  access: z.array(AccessRule).min(1, 'at least one access rule; nobody could use this connection'),
  masking: z.record(z.string().regex(/^[^.]+\.[^.]+\.[^.]+$/, 'expected schema.table.column'), MaskStrategy).default({}),
  /**
   * Text columns of tables with masked columns that are left in clear on purpose: silences the agent's
   * start-up warning about each (masking/catalog.ts `unmaskedTextColumns`).
   */
  unmasked: z.array(z.string().regex(/^[^.]+\.[^.]+\.[^.]+$/, 'expected schema.table.column')).default([]),
  approval: Approval.prefault({}),
  policy: PolicyOverrides.prefault({}),
  /** P11: per-identity scopes; absent, every identity the access rules admit reads what the policy allows. */
  scopes: z.array(Scope).optional(),
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
  /**
   * Processes that serve tunnels (the hoop-agent binary): 1 runs everything in one process; more fork
   * that many workers sharing the listening socket, each tunnel (and its sessions) pinned to one of them,
   * while one primary keeps the audit chain, approvals, revocations and the API. 'auto': one per core.
   */
  workers: z.union([z.literal('auto'), z.number().int().min(1).max(64)]).default(1),
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
