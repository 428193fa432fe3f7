// Revoked tokens (issue 16, "Revocation and lifetime"), kept in the state store beside the audit trail so
// that every agent sharing the store refuses them. `hoopctl logout` presents its access token to
// POST /api/tokens/revoke; the agent records the token's keys until the token expires, and every agent
// closes the tunnels that token (or another of the same login session) opened.
//
//   key                       what it revokes
//   jti:<iss> <jti>           that one token
//   sid:<iss> <sid>           every token of that login session (renewals included)
//   iat:<iss> <sub> <iat>     a token with neither jti nor sid: the tokens of that subject minted that second
//
//   agent A (logout)                  store                              agent B
//   revoke(keys, exp) ──────────►  revocations (+ NOTIFY) ───────────►  subscriber: close its tunnels
//   verify(token) ──────────────►  isRevoked(keys)?  (every upgrade, API call and renewal, on every agent)
//
// Two implementations, as for the store: a JSON Lines file in dataDir (one agent) and a PostgreSQL table
// (state.url). A record is dropped once its token has expired: an expired token is refused anyway.
import { EventEmitter } from 'node:events';
import { mkdir, open, readFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import type { Clock } from './store.js';
import { listenWithRetry, type PgListener } from './pg-listen.js';

export interface Revocation {
  keys: string[];
  issuer: string;
  sub: string;
  /** When the revoked token expires (ms since the epoch): the record is kept until then. */
  expiresAt: number;
}

export interface Revocations {
  revoke(r: Revocation): Promise<void>;
  /** True when any of these keys is revoked. Throws when the store cannot be read (callers refuse). */
  isRevoked(keys: readonly string[]): Promise<boolean>;
  /**
   * Called with the keys revoked by any agent sharing the store, or '*' when revocations may have been
   * missed (the PostgreSQL listener reconnected): re-check every open tunnel then.
   */
  subscribe(fn: (keys: readonly string[] | '*') => void): () => void;
  close(): Promise<void>;
}

/** The keys a verified token is revoked by (see the table above). */
export function revocationKeys(who: { issuer: string; sub: string; claims: Record<string, unknown> }): string[] {
  const c = who.claims;
  const keys: string[] = [];
  if (typeof c.jti === 'string' && c.jti) keys.push(`jti:${who.issuer} ${c.jti}`);
  if (typeof c.sid === 'string' && c.sid) keys.push(`sid:${who.issuer} ${c.sid}`);
  if (!keys.length) keys.push(`iat:${who.issuer} ${who.sub} ${String(c.iat)}`);
  return keys;
}

interface Row {
  key: string;
  issuer: string;
  sub: string;
  expiresAt: number;
}

/** The embedded store's revocations: dataDir/revocations.jsonl, appended and fsync'd, read at start. */
export class FileRevocations implements Revocations {
  private readonly rows = new Map<string, Row>();
  private readonly changes = new EventEmitter();
  private lock: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly fh: FileHandle,
    private readonly clock: Clock,
  ) {}

  static async open(dataDir: string, clock: Clock): Promise<FileRevocations> {
    // The store may be injected (tests, the benchmark), so the directory may not exist yet.
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    const file = path.join(dataDir, 'revocations.jsonl');
    const text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? '' : Promise.reject(err)));
    const fh = await open(file, 'a', 0o600);
    const r = new FileRevocations(fh, clock);
    // A torn last line (a crash mid-write) is ignored; every complete line is a record.
    for (const line of text.split('\n')) {
      try {
        const row = JSON.parse(line) as Row;
        if (row.expiresAt > clock()) r.rows.set(row.key, row);
      } catch {}
    }
    return r;
  }

  revoke(rv: Revocation): Promise<void> {
    const run = this.lock.then(async () => {
      const rows = rv.keys.map((key) => ({ key, issuer: rv.issuer, sub: rv.sub, expiresAt: rv.expiresAt }));
      await this.fh.write(rows.map((x) => JSON.stringify(x) + '\n').join(''));
      await this.fh.datasync();
      for (const x of rows) this.rows.set(x.key, x);
      this.changes.emit('revoked', rv.keys);
    });
    this.lock = run.catch(() => {});
    return run;
  }

  async isRevoked(keys: readonly string[]): Promise<boolean> {
    const now = this.clock();
    return keys.some((k) => {
      const row = this.rows.get(k);
      if (row && row.expiresAt <= now) this.rows.delete(k);
      return row !== undefined && row.expiresAt > now;
    });
  }

  subscribe(fn: (keys: readonly string[] | '*') => void): () => void {
    this.changes.on('revoked', fn);
    return () => this.changes.off('revoked', fn);
  }

  async close(): Promise<void> {
    await this.lock;
    await this.fh.close().catch(() => {});
  }
}

const CHANNEL = 'hoop_revocations';
const SCHEMA = `CREATE TABLE IF NOT EXISTS token_revocations (
  key text PRIMARY KEY, issuer text NOT NULL, sub text NOT NULL, expires_at timestamptz NOT NULL,
  revoked_at timestamptz NOT NULL DEFAULT now())`;

/** PostgreSQL revocations (state.url): a table every agent reads, NOTIFY so each closes its tunnels. */
export class PgRevocations implements Revocations {
  private readonly changes = new EventEmitter();
  private listener?: PgListener;

  private constructor(
    private readonly pool: pg.Pool,
    private readonly clock: Clock,
  ) {}

  static async open(url: string, clock: Clock): Promise<PgRevocations> {
    const pool = new pg.Pool({ connectionString: url, max: 2 });
    pool.on('error', () => {}); // an idle client's failure shows up as the next query's error
    const r = new PgRevocations(pool, clock);
    try {
      const c = await pool.connect();
      try {
        // Agents starting together must not race on CREATE TABLE.
        await c.query('BEGIN');
        await c.query(`SELECT pg_advisory_xact_lock(hashtext('hoopctl.token_revocations'))`);
        await c.query(SCHEMA);
        await c.query('COMMIT');
      } catch (err) {
        await c.query('ROLLBACK').catch(() => {});
        throw err;
      } finally {
        c.release();
      }
      r.listener = await listenWithRetry(url, CHANNEL, {
        notify: (payload) => {
          let keys: unknown;
          try {
            keys = JSON.parse(payload);
          } catch {}
          r.changes.emit('revoked', Array.isArray(keys) ? keys.filter((k): k is string => typeof k === 'string') : '*');
        },
        reconnected: () => r.changes.emit('revoked', '*'),
      });
    } catch (err) {
      await r.close();
      throw err;
    }
    return r;
  }

  async revoke(rv: Revocation): Promise<void> {
    const exp = new Date(rv.expiresAt);
    await this.pool.query(
      `WITH gone AS (DELETE FROM token_revocations WHERE expires_at < now())
       INSERT INTO token_revocations (key, issuer, sub, expires_at) SELECT k, $2, $3, $4 FROM unnest($1::text[]) AS k
       ON CONFLICT (key) DO UPDATE SET expires_at = greatest(token_revocations.expires_at, EXCLUDED.expires_at)`,
      [rv.keys, rv.issuer, rv.sub, exp],
    );
    // Keys are short (issuer + id); a NOTIFY payload holds 8000 bytes.
    await this.pool.query('SELECT pg_notify($1, $2)', [CHANNEL, JSON.stringify(rv.keys).slice(0, 7900)]);
  }

  async isRevoked(keys: readonly string[]): Promise<boolean> {
    const { rows } = await this.pool.query('SELECT 1 FROM token_revocations WHERE key = ANY($1::text[]) AND expires_at > $2 LIMIT 1', [keys, new Date(this.clock())]);
    return rows.length > 0;
  }

  subscribe(fn: (keys: readonly string[] | '*') => void): () => void {
    this.changes.on('revoked', fn);
    return () => this.changes.off('revoked', fn);
  }

  async close(): Promise<void> {
    await this.listener?.close();
    await this.pool.end().catch(() => {});
  }
}

/** The revocation list beside the configured state store: PostgreSQL (state.url) or dataDir's file. */
export function openRevocations(state: { url?: string }, dataDir: string, clock: () => number): Promise<Revocations> {
  return state.url ? PgRevocations.open(state.url, clock) : FileRevocations.open(dataDir, clock);
}
