// Masking for one connection: its rules, its hash key, and the catalog the lineage analysis resolves
// names against (loaded once with the agent's own credential, reloaded when a result names a table the
// catalog does not know).
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import pg from 'pg';
import type { ResolvedConnection } from '../config.js';
import { loadCatalog, type Catalog } from './catalog.js';
import { Lineage, type MaskRules } from './lineage.js';
import { parseStrategy } from './strategies.js';

export class ConnectionMasking {
  readonly rules: MaskRules;
  readonly hashKey: Buffer;
  private lineage?: Promise<Lineage>;
  /** the last analyser loaded: what P7 judges by (kept across a reload until the new one is ready) */
  private ready?: Lineage;

  constructor(private readonly conn: ResolvedConnection) {
    this.rules = new Map(Object.entries(conn.masking).map(([col, s]) => [col, parseStrategy(s)]));
    this.hashKey = hashKeyFor(conn);
  }

  get enabled(): boolean {
    return this.rules.size > 0;
  }

  /** The lineage analyser over a fresh-enough catalog. Rejects when the catalog cannot be read. */
  current(): Promise<Lineage> {
    this.lineage ??= this.load().catch((err) => {
      this.lineage = undefined; // try again next session
      throw err;
    });
    return this.lineage;
  }

  /**
   * The analyser for an identity whose scope reads `unmask` columns in clear (P11): the same catalog,
   * without those rules. Built once per catalog and set of columns.
   */
  async currentFor(unmask: readonly string[]): Promise<Lineage> {
    const base = await this.current();
    if (unmask.length === 0) return base;
    return this.derived(base, `unmask:${[...unmask].sort().join(',')}`, () => {
      const rules = new Map([...this.rules].filter(([col]) => !unmask.includes(col)));
      return new Lineage(base.catalog, rules, base.options);
    });
  }

  /** The reads-mode analyser over the current catalog (P11 scopes: what each statement reads and writes). */
  async currentReads(): Promise<Lineage> {
    const base = await this.current();
    return this.derived(base, 'reads', () => new Lineage(base.catalog, new Map(), { ...base.options, reads: true }));
  }

  private readonly derivedOf = new WeakMap<Lineage, Map<string, Lineage>>();

  private derived(base: Lineage, key: string, make: () => Lineage): Lineage {
    let m = this.derivedOf.get(base);
    if (!m) this.derivedOf.set(base, (m = new Map()));
    let l = m.get(key);
    if (!l) m.set(key, (l = make()));
    return l;
  }

  /** The analyser over the last catalog loaded, without waiting (undefined before the first load). */
  loaded(): Lineage | undefined {
    return this.ready;
  }

  /**
   * Agent stop: ends the catalog watch connection, which otherwise keeps the process alive, and any
   * catalog load still under way; later sessions cannot load one (they are refused, fail closed).
   */
  close(): void {
    this.closed = true;
    this.invalidate();
  }

  private closed = false;

  /** Drops the cached catalog (after DDL, or when a result names an unknown table). */
  invalidate(): void {
    this.lineage = undefined;
    const c = this.watch;
    this.watch = undefined;
    c?.end().catch(() => {});
  }

  /**
   * The catalog connection stays open as a watch: when the database goes away (dropped, recreated,
   * restarted) it breaks, and the next session reloads the catalog instead of trusting stale OIDs.
   */
  private watch?: pg.Client;

  private async load(): Promise<Lineage> {
    if (this.closed) throw new Error('the agent is stopping');
    const p = this.conn.postgres;
    const client = new pg.Client({
      host: p.host,
      port: p.port,
      database: p.database,
      user: p.user,
      password: this.conn.password,
      application_name: 'hoop-agent catalog',
      ssl:
        p.sslmode === 'disable'
          ? false
          : { rejectUnauthorized: p.sslmode === 'verify-full', ca: p.sslrootcert ? readFileSync(p.sslrootcert) : undefined },
      connectionTimeoutMillis: 10_000,
    });
    // Until it becomes the watch (below), a connection lost mid-load fails the load's query; its 'error'
    // event must not become an uncaught exception.
    client.on('error', () => {});
    await client.connect();
    let ok = false;
    try {
      // One query at a time: node-postgres queues concurrent ones but warns that it will stop doing so.
      let last: Promise<unknown> = Promise.resolve();
      const query = (sql: string) => {
        const next = last.then(() => client.query(sql)).then((r) => r.rows);
        last = next.catch(() => {});
        return next;
      };
      const catalog: Catalog = await loadCatalog(query);
      const lineage = new Lineage(catalog, this.rules, {
        trustedFunctions: new Set(this.conn.policy.allowedFunctions),
        maxEqualityValues: this.conn.policy.maxEqualityValues,
      });
      if (this.closed) throw new Error('the agent is stopping');
      ok = true;
      this.ready = lineage;
      this.watch?.end().catch(() => {});
      this.watch = client;
      const lost = () => {
        if (this.watch === client) this.invalidate();
      };
      client.on('error', lost);
      client.on('end', lost);
      return lineage;
    } finally {
      if (!ok) await client.end().catch(() => {});
    }
  }
}

/**
 * The HMAC key of the `hash` strategy: from HOOP_MASKING_KEY_<CONNECTION> or HOOP_MASKING_KEY when set
 * (stable across agents and restarts, so hashed values join across runs), else random per agent start.
 */
function hashKeyFor(conn: ResolvedConnection): Buffer {
  const env = process.env[`HOOP_MASKING_KEY_${conn.name.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`] ?? process.env.HOOP_MASKING_KEY;
  return env ? createHash('sha256').update(env).digest() : randomBytes(32);
}
