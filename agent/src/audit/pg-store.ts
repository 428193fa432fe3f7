// The PostgreSQL state store (`state.url`): several agents share one database, so sessions and approval
// requests are visible to all of them, and an approval decided through one agent wakes the agent that
// holds the statement (LISTEN/NOTIFY on a dedicated connection; no polling).
//
// One chain per agent, not one global chain: a global chain would need every append of every agent to
// take one lock (the head row) for the whole commit, serialising all agents' audit writes behind the
// slowest; per-agent chains need no cross-agent coordination, (agent_id, seq) is the primary key, so
// a second process using the same agent id fails its append (fail closed) instead of forking the chain,
// and `verify` checks every agent's chain. Each event is stored as its exact JSON line (`body`, text
// rather than jsonb so it round-trips byte for byte and an export verifies offline like a JSONL file);
// the other columns are for lookups only, and verify reads `body`.
//
// Appends are group-committed like the embedded store (store.ts): one transaction per batch, one
// INSERT … SELECT FROM unnest for the events and one upsert of the touched session summaries.
import { EventEmitter } from 'node:events';
import pg from 'pg';
import type { AuditEvent, EventInput } from './events.js';
import { GENESIS } from './events.js';
import { verifyChain, type VerifyResult } from './verify.js';
import {
  DEFAULT_RECORDING_LIMITS,
  encodeCursor,
  filterBounds,
  foldSummary,
  formatExport,
  GroupCommit,
  HealthLoop,
  isoTime,
  RecordingCaps,
  assertSessionId,
  type ChainHead,
  type Clock,
  type ExportFormat,
  type RecordingEntry,
  type RecordingLimits,
  type SealedEvent,
  type SessionFilter,
  type SessionPage,
  type SessionSummary,
  type StateStore,
} from './store.js';
import { ApprovalBook, notFound, type Approval, type ApprovalBackend } from './approvals.js';
import { listenWithRetry, type PgListener } from './pg-listen.js';

export interface PgStoreOptions {
  url: string;
  agentId: string;
  clock: Clock;
  recording?: RecordingLimits;
  poolSize?: number;
}

const CHANNEL = 'hoop_approvals';

/** Numbered migrations, applied in order in one transaction at start (schema_migrations records them). */
export const MIGRATIONS: string[] = [
  `CREATE TABLE audit_agents (agent_id text PRIMARY KEY, first_seen timestamptz NOT NULL DEFAULT now());
   CREATE TABLE audit_events (
     agent_id text NOT NULL, seq bigint NOT NULL, ts timestamptz NOT NULL, type text NOT NULL, session_id text,
     prev text NOT NULL, hash text NOT NULL, body text NOT NULL,
     PRIMARY KEY (agent_id, seq));
   CREATE INDEX audit_events_session ON audit_events (session_id, agent_id, seq) WHERE session_id IS NOT NULL;
   CREATE INDEX audit_events_ts ON audit_events (ts, agent_id, seq);
   CREATE TABLE audit_sessions (
     session_id text PRIMARY KEY, agent_id text NOT NULL, first_seq bigint NOT NULL, started_at timestamptz NOT NULL,
     sub text, connection text, decisions text[] NOT NULL, summary text NOT NULL);
   CREATE INDEX audit_sessions_order ON audit_sessions (started_at, agent_id, first_seq);
   CREATE INDEX audit_sessions_sub ON audit_sessions (sub, started_at, agent_id, first_seq);
   CREATE INDEX audit_sessions_conn ON audit_sessions (connection, started_at, agent_id, first_seq);
   CREATE TABLE audit_recordings (id bigserial PRIMARY KEY, session_id text NOT NULL, ts timestamptz NOT NULL, entry text NOT NULL);
   CREATE INDEX audit_recordings_session ON audit_recordings (session_id, id);
   CREATE TABLE approvals (
     id text PRIMARY KEY, agent_id text NOT NULL, status text NOT NULL, connection text NOT NULL,
     created_at timestamptz NOT NULL, record text NOT NULL);
   CREATE INDEX approvals_status ON approvals (status, connection);`,
  `CREATE TABLE audit_checkpoints (
     agent_id text NOT NULL, size bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), note text NOT NULL,
     PRIMARY KEY (agent_id, size));`,
];

export async function migrate(pool: pg.Pool): Promise<void> {
  await tx(pool, async (c) => {
    // Agents starting together must not both apply migration N.
    await c.query(`SELECT pg_advisory_xact_lock(hashtext('hoopctl.schema_migrations'))`);
    await c.query('CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())');
    const { rows } = await c.query<{ v: number }>('SELECT coalesce(max(version), 0)::int AS v FROM schema_migrations');
    for (let v = rows[0].v + 1; v <= MIGRATIONS.length; v++) {
      await c.query(MIGRATIONS[v - 1]);
      await c.query('INSERT INTO schema_migrations (version) VALUES ($1)', [v]);
    }
  });
}

async function tx<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  const c = await pool.connect();
  // A checked-out client whose connection dies between two queries emits 'error' (the pool only listens
  // on idle ones): the next query fails instead, so the event itself needs no more than a listener.
  const ignore = () => {};
  c.on('error', ignore);
  try {
    await c.query('BEGIN');
    const out = await fn(c);
    await c.query('COMMIT');
    return out;
  } catch (err) {
    await c.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    c.off('error', ignore);
    c.release();
  }
}

export class PgStore implements StateStore {
  readonly agentId: string;
  readonly approvals: ApprovalBook;
  private readonly pool: pg.Pool;
  private readonly clock: Clock;
  private commit!: GroupCommit;
  private readonly healthLoop: HealthLoop;
  private readonly caps: RecordingCaps;
  /** Summaries of this agent's open sessions (only this agent appends to them). */
  private readonly open = new Map<string, SessionSummary>();
  private readonly changes = new EventEmitter();
  private listener?: PgListener;

  private constructor(private readonly opts: PgStoreOptions) {
    this.agentId = opts.agentId;
    this.clock = opts.clock;
    this.pool = new pg.Pool({ connectionString: opts.url, max: opts.poolSize ?? 4 });
    // An idle client killed by the server must not crash the agent; the next query reports it.
    this.pool.on('error', () => {});
    this.caps = new RecordingCaps(opts.recording ?? DEFAULT_RECORDING_LIMITS);
    this.healthLoop = new HealthLoop(() => this.commit.exclusive(() => this.pool.query('SELECT 1').then(() => {})));
    this.changes.setMaxListeners(0);
    const backend: ApprovalBackend = {
      insert: async (a) => {
        await this.pool.query('INSERT INTO approvals (id, agent_id, status, connection, created_at, record) VALUES ($1, $2, $3, $4, $5, $6)', [
          a.id,
          a.agentId,
          a.status,
          a.connection,
          a.createdAt,
          JSON.stringify(a),
        ]);
      },
      load: async (id) => {
        const { rows } = await this.pool.query<{ record: string }>('SELECT record FROM approvals WHERE id = $1', [id]);
        return rows[0] && (JSON.parse(rows[0].record) as Approval);
      },
      list: async (f) => {
        const { rows } = await this.pool.query<{ record: string }>(
          'SELECT record FROM approvals WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR connection = $2) ORDER BY created_at, id',
          [f.status ?? null, f.connection ?? null],
        );
        return rows.map((r) => JSON.parse(r.record) as Approval);
      },
      // Row lock = the atomicity of decide/consume across every agent on this database.
      mutate: (id, fn) =>
        tx(this.pool, async (c) => {
          const { rows } = await c.query<{ record: string }>('SELECT record FROM approvals WHERE id = $1 FOR UPDATE', [id]);
          if (!rows[0]) throw notFound(id);
          const cur = JSON.parse(rows[0].record) as Approval;
          const next = fn(cur);
          if (next !== cur) {
            await c.query('UPDATE approvals SET status = $2, record = $3 WHERE id = $1', [id, next.status, JSON.stringify(next)]);
            await c.query('SELECT pg_notify($1, $2)', [CHANNEL, id]); // delivered at COMMIT
          }
          return next;
        }),
      changes: this.changes,
    };
    this.approvals = new ApprovalBook(backend, this.agentId, this.clock);
  }

  static async open(opts: PgStoreOptions): Promise<PgStore> {
    const s = new PgStore(opts);
    try {
      await s.start();
    } catch (err) {
      await s.pool.end().catch(() => {});
      await s.listener?.close();
      throw err;
    }
    return s;
  }

  private async start(): Promise<void> {
    await migrate(this.pool);
    await this.pool.query('INSERT INTO audit_agents (agent_id) VALUES ($1) ON CONFLICT DO NOTHING', [this.agentId]);
    const { rows } = await this.pool.query<{ seq: string; hash: string; ts: Date }>(
      'SELECT seq, hash, ts FROM audit_events WHERE agent_id = $1 ORDER BY seq DESC LIMIT 1',
      [this.agentId],
    );
    const head: ChainHead = rows[0] ? { seq: Number(rows[0].seq), hash: rows[0].hash, ts: rows[0].ts.toISOString() } : { seq: 0, hash: GENESIS, ts: '' };
    this.commit = new GroupCommit(this.agentId, head, this.clock, (b) => this.writeBatch(b), this.healthLoop);
    await this.listen();
  }

  /** The dedicated LISTEN connection; re-established with backoff, then waiters re-read ('*'). */
  private async listen(): Promise<void> {
    this.listener = await listenWithRetry(this.opts.url, CHANNEL, {
      notify: (payload) => payload && this.changes.emit('change', payload),
      reconnected: () => this.changes.emit('change', '*'),
    });
  }

  // ─── events ──────────────────────────────────────────────────────────────────────────────────────

  append(e: EventInput): Promise<AuditEvent> {
    return this.commit.append(e);
  }

  private async writeBatch(batch: SealedEvent[]): Promise<void> {
    const missing = [...new Set(batch.map((s) => s.event.sessionId).filter((id): id is string => !!id && !this.open.has(id)))];
    const known = new Map<string, SessionSummary>();
    if (missing.length) {
      // A session this agent was writing before a restart.
      const { rows } = await this.pool.query<{ summary: string }>('SELECT summary FROM audit_sessions WHERE session_id = ANY($1)', [missing]);
      for (const r of rows) {
        const s = JSON.parse(r.summary) as SessionSummary;
        known.set(s.sessionId, s);
      }
    }
    const touched = new Map<string, SessionSummary>();
    for (const { event: e } of batch) {
      if (!e.sessionId) continue;
      touched.set(e.sessionId, foldSummary(touched.get(e.sessionId) ?? this.open.get(e.sessionId) ?? known.get(e.sessionId), e));
    }
    const ev = batch.map((s) => s.event);
    await tx(this.pool, async (c) => {
      await c.query(
        `INSERT INTO audit_events (agent_id, seq, ts, type, session_id, prev, hash, body)
         SELECT $1, * FROM unnest($2::bigint[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])`,
        [this.agentId, ev.map((e) => e.seq), ev.map((e) => e.ts), ev.map((e) => e.type), ev.map((e) => e.sessionId ?? null), ev.map((e) => e.prev), ev.map((e) => e.hash), batch.map((s) => s.line)],
      );
      if (touched.size) {
        await c.query(
          `INSERT INTO audit_sessions (session_id, agent_id, first_seq, started_at, sub, connection, decisions, summary)
           SELECT j->>'sessionId', j->>'agentId', (j->>'firstSeq')::bigint, (j->>'startedAt')::timestamptz, j->>'sub', j->>'connection',
                  ARRAY(SELECT jsonb_array_elements_text(j->'decisions')), t
           FROM unnest($1::text[]) AS t, LATERAL (SELECT t::jsonb AS j) AS x
           ON CONFLICT (session_id) DO UPDATE SET sub = excluded.sub, connection = excluded.connection,
             decisions = excluded.decisions, summary = excluded.summary`,
          [[...touched.values()].map((s) => JSON.stringify(s))],
        );
      }
    });
    for (const [id, s] of touched) {
      if (s.endedAt) this.open.delete(id);
      else this.open.set(id, s);
    }
  }

  async querySessions(f: SessionFilter): Promise<SessionPage> {
    const { since, until, limit, cursor } = filterBounds(f);
    const where: string[] = [];
    const args: unknown[] = [];
    const arg = (v: unknown) => `$${args.push(v)}`;
    if (f.sub !== undefined) where.push(`sub = ${arg(f.sub)}`);
    if (f.connection !== undefined) where.push(`connection = ${arg(f.connection)}`);
    if (since !== undefined) where.push(`started_at >= ${arg(since)}`);
    if (until !== undefined) where.push(`started_at < ${arg(until)}`);
    if (f.decision !== undefined) where.push(`${arg(f.decision)} = ANY(decisions)`);
    if (cursor) where.push(`(started_at, agent_id, first_seq) < (${arg(cursor.startedAt)}::timestamptz, ${arg(cursor.agentId)}, ${arg(cursor.firstSeq)})`);
    const { rows } = await this.pool.query<{ summary: string }>(
      `SELECT summary FROM audit_sessions ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
       ORDER BY started_at DESC, agent_id DESC, first_seq DESC LIMIT ${limit + 1}`,
      args,
    );
    const sessions = rows.map((r) => JSON.parse(r.summary) as SessionSummary);
    if (sessions.length <= limit) return { sessions };
    sessions.length = limit;
    return { sessions, nextCursor: encodeCursor(sessions[limit - 1]) };
  }

  async sessionEvents(sessionId: string): Promise<AuditEvent[]> {
    const { rows } = await this.pool.query<{ body: string }>('SELECT body FROM audit_events WHERE session_id = $1 ORDER BY agent_id, seq', [sessionId]);
    return rows.map((r) => JSON.parse(r.body) as AuditEvent);
  }

  async verify(opts: { from?: number } = {}): Promise<VerifyResult> {
    const from = opts.from ?? 1;
    const { rows: agents } = await this.pool.query<{ agent_id: string }>('SELECT agent_id FROM audit_agents ORDER BY agent_id');
    const self = this;
    const lines = async function* () {
      for (const { agent_id } of agents) yield* self.agentLines(agent_id, from);
    };
    return verifyChain(lines(), { from: from > 1 ? from : undefined, expectLast: { agentId: this.agentId, seq: this.commit.last.seq } });
  }

  /** One agent's chain in seq order, by keyset pages so millions of rows never sit in memory at once. */
  private async *agentLines(agentId: string, from: number): AsyncIterable<string> {
    for (let after = from - 1; ; ) {
      const { rows } = await this.pool.query<{ seq: string; body: string }>('SELECT seq, body FROM audit_events WHERE agent_id = $1 AND seq > $2 ORDER BY seq LIMIT 2000', [
        agentId,
        after,
      ]);
      for (const r of rows) yield r.body;
      if (rows.length < 2000) return;
      after = Number(rows[rows.length - 1].seq);
    }
  }

  async *chainLines(from = 1): AsyncIterable<string> {
    await this.commit.flush();
    yield* this.agentLines(this.agentId, from);
  }

  async appendCheckpoint(cp: { size: number; note: string }): Promise<void> {
    await this.pool.query('INSERT INTO audit_checkpoints (agent_id, size, note) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING', [this.agentId, cp.size, cp.note]);
  }

  async listCheckpoints(): Promise<{ size: number; note: string }[]> {
    const { rows } = await this.pool.query<{ size: string; note: string }>('SELECT size, note FROM audit_checkpoints WHERE agent_id = $1 ORDER BY size', [this.agentId]);
    return rows.map((r) => ({ size: Number(r.size), note: r.note }));
  }

  exportEvents(filter: { since?: string | number; until?: string | number }, format: ExportFormat): AsyncIterable<string> {
    const since = filter.since === undefined ? null : isoTime(filter.since);
    const until = filter.until === undefined ? null : isoTime(filter.until);
    const pool = this.pool;
    // Time order across agents; within an agent that is chain order (chain time never goes back).
    const lines = async function* () {
      let after: [Date, string, string] | undefined;
      for (;;) {
        const { rows } = await pool.query<{ ts: Date; agent_id: string; seq: string; body: string }>(
          `SELECT ts, agent_id, seq, body FROM audit_events
           WHERE ($1::timestamptz IS NULL OR ts >= $1) AND ($2::timestamptz IS NULL OR ts < $2)
             AND ($3::timestamptz IS NULL OR (ts, agent_id, seq) > ($3, $4, $5::bigint))
           ORDER BY ts, agent_id, seq LIMIT 2000`,
          [since, until, ...(after ?? [null, null, null])],
        );
        for (const r of rows) yield r.body;
        if (rows.length < 2000) return;
        const last = rows[rows.length - 1];
        after = [last.ts, last.agent_id, last.seq];
      }
    };
    return formatExport(lines(), format);
  }

  // ─── recordings ──────────────────────────────────────────────────────────────────────────────────

  async appendRecording(sessionId: string, ...entries: RecordingEntry[]): Promise<boolean> {
    assertSessionId(sessionId);
    const now = new Date(this.clock()).toISOString();
    const { lines, room } = await this.caps.capAll(sessionId, entries, now, async () => {
      const { rows } = await this.pool.query<{ n: number }>('SELECT coalesce(sum(octet_length(entry) + 1), 0)::int AS n FROM audit_recordings WHERE session_id = $1', [sessionId]);
      return rows[0].n;
    });
    if (!lines.length) return room;
    // One statement for the batch; ids (the read order) follow the array order.
    await this.pool.query('INSERT INTO audit_recordings (session_id, ts, entry) SELECT $1, u.ts, u.entry FROM unnest($2::timestamptz[], $3::text[]) WITH ORDINALITY AS u(ts, entry, n) ORDER BY n', [
      sessionId,
      lines.map((l) => l.ts),
      lines.map((l) => l.line),
    ]);
    return room;
  }

  async readRecording(sessionId: string): Promise<RecordingEntry[]> {
    const { rows } = await this.pool.query<{ entry: string }>('SELECT entry FROM audit_recordings WHERE session_id = $1 ORDER BY id', [sessionId]);
    return rows.map((r) => JSON.parse(r.entry) as RecordingEntry);
  }

  async applyRetention(recordingsOlderThanMs: number): Promise<{ removed: number }> {
    const cutoff = new Date(this.clock() - recordingsOlderThanMs).toISOString();
    const { rows } = await this.pool.query<{ session_id: string }>(
      `WITH old AS (SELECT session_id FROM audit_recordings GROUP BY session_id HAVING max(ts) < $1),
            d AS (DELETE FROM audit_recordings r USING old WHERE r.session_id = old.session_id RETURNING r.session_id)
       SELECT DISTINCT session_id FROM d`,
      [cutoff],
    );
    for (const r of rows) this.caps.forget(r.session_id);
    return { removed: rows.length };
  }

  // ─── lifecycle ───────────────────────────────────────────────────────────────────────────────────

  health() {
    return this.healthLoop.get();
  }

  async close(): Promise<void> {
    await this.commit?.drain();
    this.healthLoop.stop();
    await this.listener?.close();
    await this.pool.end();
  }
}
