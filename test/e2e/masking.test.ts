// Masking end to end (issue 6, SECURITY-POLICY P6): through `hoopctl connect`, clients see masked values
// where the demo policy says (DEMO_MASKING: ssn/phone redact, mrn partial 4, email hash, dob null) and
// nothing else changes: unmasked columns, types, row counts and ordering are as direct. Real psql
// (results, and `\copy … to` in text, csv and binary, approved as bulk exports per P4), node-postgres in
// binary result format, and a raw frontend that checks the binary bytes themselves; every output is
// scanned for the seeded PHI, and the same scan finds that PHI in the direct output.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { decideNextApproval, psql, run, startExtraAgent, useStack, tunnelClient, type ExtraAgent, type RunResult } from '../harness/stack.js';
import { collect, cstr, parseErrorFields, RawClient, typed, type BackendMsg } from './wire.js';

const s = useStack();

interface Phi {
  id: number;
  ssn: string;
  mrn: string;
  email: string;
  phone: string;
  dob: string;
}
/** The seeded patients, read directly, in id order. */
let phi: Phi[];
let dobs: Set<string>;

async function direct<T extends pg.QueryResultRow>(q: string | pg.QueryConfig): Promise<pg.QueryResult<T>> {
  const c = new pg.Client({ connectionString: s.get().directUrl });
  await c.connect();
  try {
    return await c.query<T>(q as pg.QueryConfig);
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  phi = (await direct<Phi>(`SELECT id, ssn, mrn, email, phone, date_of_birth::text AS dob FROM patients ORDER BY id`)).rows;
  dobs = new Set(phi.map((p) => p.dob));
});

/**
 * Seeded PHI found in `text`. SSN, MRN, email and phone are found by shape (nothing else in these
 * results looks like them); dates of birth by value (the only other dates, created_at, are in 2023).
 */
function phiIn(text: string): string[] {
  const found = new Set<string>();
  for (const re of [/\b\d{3}-\d{2}-\d{4}\b/g, /MRN-\d{5}/g, /[a-z0-9.]*@example\.org/g, /555-01\d\d/g]) for (const m of text.matchAll(re)) found.add(m[0]);
  for (const m of text.matchAll(/\d{4}-\d{2}-\d{2}/g)) if (dobs.has(m[0])) found.add(m[0]);
  return [...found];
}

const partial4 = (v: string) => '*'.repeat(Math.max(0, v.length - 4)) + v.slice(-4);
const HEX64 = /^[0-9a-f]{64}$/;

/** The masked form of each masked column, as the client must see it (text; null = SQL NULL). */
function expectMasked(row: { ssn: unknown; mrn: unknown; email: unknown; phone: unknown; dob: unknown }, p: Phi): void {
  expect(row.ssn).toBe('***');
  expect(row.mrn).toBe(partial4(p.mrn));
  expect(row.email).toMatch(HEX64);
  expect(row.phone).toBe('***');
  expect(row.dob).toBeNull();
}

/** RFC 4180 CSV (quotes, doubled quotes, commas and newlines inside quotes); empty unquoted = null. */
function parseCsv(text: string): (string | null)[][] {
  const rows: (string | null)[][] = [];
  let row: (string | null)[] = [];
  let i = 0;
  while (i < text.length) {
    let v: string | null;
    if (text[i] === '"') {
      let j = i + 1;
      v = '';
      for (;;) {
        const q = text.indexOf('"', j);
        if (q < 0) throw new Error('unterminated CSV quote');
        v += text.slice(j, q);
        if (text[q + 1] === '"') {
          v += '"';
          j = q + 2;
        } else {
          i = q + 1;
          break;
        }
      }
    } else {
      let j = i;
      while (j < text.length && text[j] !== ',' && text[j] !== '\n') j++;
      v = j === i ? null : text.slice(i, j);
      i = j;
    }
    row.push(v);
    if (text[i] === ',') i++;
    else {
      rows.push(row);
      row = [];
      i++; // '\n' or end
    }
  }
  return rows;
}

/** COPY text format: one line per row, tab-separated, \N for NULL (the fixture has no escapes). */
function parseCopyText(text: string): (string | null)[][] {
  const lines = text.split('\n');
  if (lines.pop() !== '') throw new Error('COPY text output does not end with a newline');
  return lines.map((l) => l.split('\t').map((f) => (f === '\\N' ? null : f)));
}

const PGCOPY = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');

/** COPY binary format: signature, flags, header extension, then tuples up to the -1 trailer. */
function parseCopyBinary(buf: Buffer): (Buffer | null)[][] {
  if (!buf.subarray(0, PGCOPY.length).equals(PGCOPY)) throw new Error(`no PGCOPY signature: ${buf.subarray(0, 11).toString('hex')}`);
  let at = PGCOPY.length + 4;
  at += 4 + buf.readUInt32BE(at);
  const rows: (Buffer | null)[][] = [];
  for (;;) {
    const n = buf.readInt16BE(at);
    at += 2;
    if (n === -1) break;
    const row: (Buffer | null)[] = [];
    for (let k = 0; k < n; k++) {
      const len = buf.readInt32BE(at);
      at += 4;
      row.push(len < 0 ? null : buf.subarray(at, at + len));
      if (len > 0) at += len;
    }
    rows.push(row);
  }
  if (at !== buf.length) throw new Error(`${buf.length - at} bytes after the COPY binary trailer`);
  return rows;
}

const COLS = ['id', 'full_name', 'ssn', 'mrn', 'email', 'phone', 'date_of_birth', 'diagnosis', 'created_at'] as const;
const col = (name: (typeof COLS)[number]) => COLS.indexOf(name);
/** Ordered by an unmasked column, so that the order itself is compared with direct execution. */
const SELECT_ALL = `SELECT ${COLS.join(', ')} FROM patients ORDER BY diagnosis, full_name DESC, id`;

function psqlDirect(args: string[], opts: Parameters<typeof run>[2] = {}): Promise<RunResult> {
  return run('psql', [s.get().directUrl, '-X', '-v', 'ON_ERROR_STOP=1', ...args], { env: { ...process.env, PGCONNECT_TIMEOUT: '10' }, ...opts });
}

/** A psql run through the tunnel whose one statement is a bulk export: held, approved, then run (P4). */
async function approvedExport(args: string[]): Promise<RunResult> {
  const r = psql(s.get(), args);
  await decideNextApproval(s.get(), 'approve', 'masking e2e export');
  return r;
}

describe('psql results', () => {
  it('masked columns are masked; unmasked columns, row count and ORDER BY order equal direct', async () => {
    const gw = await psql(s.get(), ['--csv', '-c', SELECT_ALL]);
    const dr = await psqlDirect(['--csv', '-c', SELECT_ALL]);
    expect(gw.stderr).toBe('');
    expect(gw.code).toBe(0);
    expect(dr.code).toBe(0);
    expect(phiIn(dr.stdout).length).toBeGreaterThan(1000); // the scan finds PHI where it is
    expect(phiIn(gw.stdout)).toEqual([]);

    const [gh, ...g] = parseCsv(gw.stdout);
    const [dh, ...d] = parseCsv(dr.stdout);
    expect(gh).toEqual(dh);
    expect(g.length).toBe(2000);
    expect(g.length).toBe(d.length);
    const byId = new Map(phi.map((p) => [String(p.id), p]));
    const hashOf = new Map<string, string>();
    g.forEach((row, i) => {
      for (const c of ['id', 'full_name', 'diagnosis', 'created_at'] as const) expect(row[col(c)]).toBe(d[i][col(c)]);
      const p = byId.get(row[col('id')]!)!;
      expectMasked({ ssn: row[col('ssn')], mrn: row[col('mrn')], email: row[col('email')], phone: row[col('phone')], dob: row[col('date_of_birth')] }, p);
      hashOf.set(p.email, row[col('email')]!);
    });
    // hash is keyed and stable: one hash per distinct email, so equality joins still work
    expect(new Set(hashOf.values()).size).toBe(new Set(phi.map((p) => p.email)).size);
  });

  it('column names and types are as direct (\\gdesc)', async () => {
    const q = `${SELECT_ALL} \\gdesc\n`;
    const gw = await psql(s.get(), ['-A'], { input: q });
    const dr = await psqlDirect(['-A'], { input: q });
    expect(gw.stderr).toBe('');
    expect(gw.stdout).toContain('date_of_birth|date');
    expect(gw.stdout).toBe(dr.stdout);
  });

  it('value-free aggregates and filters on unmasked columns count as direct', async () => {
    const q = `SELECT diagnosis, count(*), count(ssn), count(date_of_birth) FROM patients WHERE full_name LIKE 'O%' GROUP BY diagnosis ORDER BY diagnosis`;
    const gw = await psql(s.get(), ['-At', '-c', q]);
    const dr = await psqlDirect(['-At', '-c', q]);
    expect(gw.stderr).toBe('');
    expect(gw.stdout.trim().split('\n').length).toBeGreaterThan(1);
    expect(gw.stdout).toBe(dr.stdout);
  });
});

// Masked columns of several types next to unmasked int4, text and timestamptz: plain references keep
// their column's strategy (text: redact, partial, hash; date: null); derived values are redacted
// (agent/src/masking/lineage.ts), which is '***' for varchar and NULL for int, numeric and uuid.
const BINARY_SQL = `SELECT id, full_name, ssn, mrn, mrn::varchar(20) AS mrn_v, email, phone, date_of_birth,
  extract(year FROM date_of_birth)::int AS birth_year, replace(ssn, '-', '')::numeric AS ssn_n,
  md5(email)::uuid AS email_u, created_at FROM patients ORDER BY id`;

describe('binary result format', () => {
  it('node-postgres (binary: true, extended protocol) decodes every row and sees masked values', async () => {
    // pg only asks for binary results on the extended protocol.
    const q = { text: BINARY_SQL, binary: true, queryMode: 'extended' } as pg.QueryConfig;
    const c = await tunnelClient(s.get());
    let gw: pg.QueryResult;
    try {
      gw = await c.query(q);
    } finally {
      await c.end();
    }
    const dr = await direct(q);
    expect(gw.fields.map((f) => [f.name, f.dataTypeID, f.format])).toEqual(dr.fields.map((f) => [f.name, f.dataTypeID, f.format]));
    expect(gw.fields.every((f) => f.format === 'binary')).toBe(true);
    expect(gw.rows.length).toBe(2000);
    expect(gw.rows.length).toBe(dr.rows.length);
    gw.rows.forEach((row, i) => {
      const want = dr.rows[i];
      // node-postgres reads binary fields through a UTF-8 string (lossy for some bytes: pg-protocol's
      // reader), so unmasked values are compared as the same client decodes them directly; the raw
      // test below compares the bytes.
      expect([row.id, row.full_name, row.created_at]).toEqual([want.id, want.full_name, want.created_at]);
      expectMasked({ ssn: row.ssn, mrn: row.mrn, email: row.email, phone: row.phone, dob: row.date_of_birth }, phi[i]);
      expect([row.mrn_v, row.birth_year, row.ssn_n, row.email_u]).toEqual(['***', null, null, null]);
      expect(want.email_u).not.toBeNull();
    });
    expect(phiIn(JSON.stringify(gw.rows))).toEqual([]);
  });

  it('the binary bytes: unmasked fields byte-equal to direct, masked fields valid for their type', async () => {
    const i16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
    const c = await RawClient.connect(s.get().listener.host, s.get().listener.port);
    let msgs: BackendMsg[];
    try {
      await c.startup();
      c.write(
        Buffer.concat([
          typed('P', Buffer.concat([cstr(''), cstr(BINARY_SQL), i16(0)])),
          typed('B', Buffer.concat([cstr(''), cstr(''), i16(0), i16(0), i16(1), i16(1)])), // every result column binary
          typed('D', Buffer.concat([Buffer.from('P'), cstr('')])),
          typed('E', Buffer.concat([cstr(''), Buffer.alloc(4)])),
          typed('S'),
        ]),
      );
      msgs = await c.until('Z', 30_000);
    } finally {
      c.destroy();
    }
    const err = msgs.find((m) => m.type === 'E');
    expect(err && parseErrorFields(err.body)).toBeUndefined();
    const t = msgs.find((m) => m.type === 'T')!;
    const fields = rowDescription(t.body);
    expect(fields.every((f) => f.format === 1)).toBe(true);
    const rows = msgs.filter((m) => m.type === 'D').map((m) => dataRow(m.body));
    expect(rows.length).toBe(2000);
    expect(phiIn(Buffer.concat(rows.flat().filter((v): v is Buffer => v !== null)).toString('latin1'))).toEqual([]);

    // What PostgreSQL's own send functions produce for the unmasked columns (bytea in text: lossless).
    const want = (
      await direct<{ id: Buffer; full_name: Buffer; created_at: Buffer }>(
        `SELECT int4send(id) AS id, textsend(full_name) AS full_name, timestamptz_send(created_at) AS created_at FROM patients ORDER BY id`,
      )
    ).rows;
    const at = (name: string) => fields.findIndex((f) => f.name === name);
    const utf8 = new TextDecoder('utf-8', { fatal: true });
    rows.forEach((r, i) => {
      expect(r.length).toBe(fields.length);
      expect(r[at('id')]).toEqual(want[i].id);
      expect(r[at('full_name')]).toEqual(want[i].full_name);
      expect(r[at('created_at')]).toEqual(want[i].created_at);
      const text = (name: string) => utf8.decode(r[at(name)]!); // throws on invalid UTF-8
      expectMasked({ ssn: text('ssn'), mrn: text('mrn'), email: text('email'), phone: text('phone'), dob: r[at('date_of_birth')] }, phi[i]);
      expect(text('mrn_v')).toBe('***');
      expect([r[at('birth_year')], r[at('ssn_n')], r[at('email_u')]]).toEqual([null, null, null]);
    });
  });
});

describe('\\copy … to (COPY TO STDOUT, approved as a bulk export)', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'hoop-e2e-mask-copy-'));
    return () => rm(dir, { recursive: true, force: true });
  });

  /** The same \copy through the tunnel (approved) and directly; returns both files' bytes. */
  async function copyBoth(source: string, options: string): Promise<{ gw: Buffer; dr: Buffer }> {
    const tag = `${Math.random().toString(36).slice(2)}`;
    const gwFile = path.join(dir, `gw-${tag}`);
    const drFile = path.join(dir, `dr-${tag}`);
    const g = await approvedExport(['-c', `\\copy ${source} TO '${gwFile}' ${options}`]);
    expect(g.stderr).not.toMatch(/ERROR/);
    expect(g.stdout.trim()).toBe('COPY 2000');
    const d = await psqlDirect(['-c', `\\copy ${source} TO '${drFile}' ${options}`]);
    expect(d.stderr).toBe('');
    return { gw: await readFile(gwFile), dr: await readFile(drFile) };
  }

  const QUERY = `(${SELECT_ALL})`;

  function checkRows(g: (string | Buffer | null)[][], d: (string | Buffer | null)[][], text: (v: string | Buffer | null) => string | null): void {
    expect(g.length).toBe(2000);
    expect(g.length).toBe(d.length);
    const byId = new Map(phi.map((p) => [p.id, p]));
    g.forEach((row, i) => {
      expect(row.length).toBe(COLS.length);
      for (const c of ['id', 'full_name', 'diagnosis', 'created_at'] as const) expect(row[col(c)]).toEqual(d[i][col(c)]);
      const id = Buffer.isBuffer(row[0]) ? row[0].readInt32BE(0) : Number(row[0]);
      expectMasked(
        { ssn: text(row[col('ssn')]), mrn: text(row[col('mrn')]), email: text(row[col('email')]), phone: text(row[col('phone')]), dob: row[col('date_of_birth')] },
        byId.get(id)!,
      );
    });
  }

  it('text format: no PHI, rows and order as direct, masked like the query results', async () => {
    const { gw, dr } = await copyBoth(QUERY, '');
    expect(phiIn(dr.toString('utf8')).length).toBeGreaterThan(1000);
    expect(phiIn(gw.toString('utf8'))).toEqual([]);
    checkRows(parseCopyText(gw.toString('utf8')), parseCopyText(dr.toString('utf8')), (v) => v as string | null);
    // the same keyed hash as in query results (one key per connection, every channel)
    const c = await tunnelClient(s.get());
    try {
      const r = await c.query<{ email: string }>('SELECT email FROM patients WHERE id = 1');
      const row = parseCopyText(gw.toString('utf8')).find((x) => x[0] === '1')!;
      expect(row[col('email')]).toBe(r.rows[0].email);
    } finally {
      await c.end();
    }
  });

  it('csv format with header: no PHI, header, rows and order as direct', async () => {
    const { gw, dr } = await copyBoth(QUERY, 'WITH (FORMAT csv, HEADER)');
    expect(phiIn(gw.toString('utf8'))).toEqual([]);
    const [gh, ...g] = parseCsv(gw.toString('utf8'));
    const [dh, ...d] = parseCsv(dr.toString('utf8'));
    expect(gh).toEqual([...COLS]);
    expect(gh).toEqual(dh);
    checkRows(g, d, (v) => v as string | null);
  });

  it('binary format: a valid PGCOPY file, no PHI, tuples and order as direct', async () => {
    const { gw, dr } = await copyBoth(QUERY, 'WITH (FORMAT binary)');
    expect(phiIn(gw.toString('latin1'))).toEqual([]);
    const g = parseCopyBinary(gw);
    const d = parseCopyBinary(dr);
    checkRows(g, d, (v) => (v === null ? null : new TextDecoder('utf-8', { fatal: true }).decode(v as Buffer)));
  });

  it('\\copy patients to: the whole table, no PHI, as direct', async () => {
    const { gw, dr } = await copyBoth('patients', '');
    expect(phiIn(dr.toString('utf8')).length).toBeGreaterThan(1000);
    expect(phiIn(gw.toString('utf8'))).toEqual([]);
    checkRows(parseCopyText(gw.toString('utf8')), parseCopyText(dr.toString('utf8')), (v) => v as string | null);
  });
});

interface Field {
  name: string;
  typeOid: number;
  format: number;
}

/** RowDescription body → fields. @see https://www.postgresql.org/docs/current/protocol-message-formats.html */
function rowDescription(b: Buffer): Field[] {
  const n = b.readInt16BE(0);
  const out: Field[] = [];
  let at = 2;
  for (let k = 0; k < n; k++) {
    const end = b.indexOf(0, at);
    const name = b.subarray(at, end).toString('utf8');
    at = end + 1;
    out.push({ name, typeOid: b.readInt32BE(at + 6), format: b.readInt16BE(at + 16) });
    at += 18;
  }
  return out;
}

/** DataRow body → field bytes (null for SQL NULL). */
function dataRow(b: Buffer): (Buffer | null)[] {
  const n = b.readInt16BE(0);
  const out: (Buffer | null)[] = [];
  let at = 2;
  for (let k = 0; k < n; k++) {
    const len = b.readInt32BE(at);
    at += 4;
    out.push(len < 0 ? null : Buffer.from(b.subarray(at, at + len)));
    if (len > 0) at += len;
  }
  return out;
}

// ── information flow (issue 13, SECURITY-POLICY P6/P7) ─────────────────────────────────────────────
// A masked value reaches row counts and errors too, and P7 (strict by default) refuses every use of it
// that decides rows, order, grouping or errors. The default stack is strict; an extra agent on the same
// database has `policy.strictPredicates: false`, where masking still covers values, counts and errors.

/** Every backend message of one simple Query (type byte + body), up to ReadyForQuery. */
async function simpleBytes(c: RawClient, sql: string): Promise<BackendMsg[]> {
  c.write(typed('Q', cstr(sql)));
  return c.until('Z', 30_000);
}

/** The same statement through the extended protocol (unnamed statement and portal, text results). */
async function extendedBytes(c: RawClient, sql: string, params: string[] = []): Promise<BackendMsg[]> {
  const i16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
  const i32 = (n: number) => Buffer.from([n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
  const values = params.map((p) => Buffer.concat([i32(Buffer.byteLength(p)), Buffer.from(p)]));
  c.write(
    Buffer.concat([
      typed('P', Buffer.concat([cstr(''), cstr(sql), i16(0)])),
      typed('B', Buffer.concat([cstr(''), cstr(''), i16(0), i16(params.length), ...values, i16(0)])),
      typed('D', Buffer.concat([Buffer.from('P'), cstr('')])),
      typed('E', Buffer.concat([cstr(''), Buffer.alloc(4)])),
      typed('S'),
    ]),
  );
  return c.until('Z', 30_000);
}

const errorOf = (msgs: BackendMsg[]) => {
  const e = msgs.find((m) => m.type === 'E');
  return e && parseErrorFields(e.body);
};
const textOf = (msgs: BackendMsg[]) => msgs.map((m) => m.body.toString('latin1')).join('\n');

async function withRaw<T>(listener: { host: string; port: number }, f: (c: RawClient) => Promise<T>): Promise<T> {
  const c = await RawClient.connect(listener.host, listener.port);
  try {
    await c.startup();
    return await f(c);
  } finally {
    c.destroy();
  }
}

/** The single-statement SSN extraction through row counts, on the demo table. */
const ROW_COUNT_SQL = `SELECT p.id, string_agg(chr((SELECT count(*) FROM generate_series(1, ascii(substr(p.ssn, k, 1))))::int), '' ORDER BY k) AS s
  FROM patients p CROSS JOIN generate_series(1, 11) k WHERE p.id <= 3 GROUP BY p.id ORDER BY p.id`;

/** One statement per class that P7 refuses by default: none of them may run. */
const REFUSED = [
  { cls: 'row counts (SRF in FROM fed by ssn)', sql: ROW_COUNT_SQL },
  { cls: 'EXISTS over an SRF fed by the value', sql: `SELECT id FROM patients p WHERE EXISTS (SELECT 1 FROM generate_series(1, ascii(p.ssn) - 57)) AND id <= 5` },
  { cls: 'LIMIT from a masked value', sql: `SELECT 1 FROM visits LIMIT (SELECT ssn FROM patients WHERE id = 1)::int` },
  { cls: 'TABLESAMPLE with a CASE on the value', sql: `SELECT count(*) FROM patients TABLESAMPLE BERNOULLI ((SELECT CASE WHEN ssn LIKE '9%' THEN 100 ELSE 0 END FROM patients WHERE id = 1))` },
  { cls: 'window frame offset', sql: `SELECT sum(id) OVER (ORDER BY id ROWS BETWEEN ascii(ssn) PRECEDING AND CURRENT ROW) FROM patients` },
  { cls: 'NULLIF(pred, true) IS NULL', sql: `SELECT id, NULLIF(ssn LIKE '9%', true) IS NULL FROM patients WHERE id <= 5` },
  { cls: 'count(NULLIF(…))', sql: `SELECT count(NULLIF(mrn LIKE 'MRN-0%', false)) FROM patients` },
  { cls: 'LATERAL VALUES rename', sql: `SELECT p.id FROM patients p, LATERAL (VALUES (p.ssn)) v(x) WHERE x LIKE '9%'` },
  { cls: 'parenthesised join aliases', sql: `SELECT a FROM (patients p JOIN visits v ON v.patient_id = p.id) AS j(a, b, c) WHERE c LIKE '9%'` },
  { cls: 'ORDER BY a masked value', sql: 'SELECT id FROM patients ORDER BY date_of_birth LIMIT 5' },
  { cls: 'IN list as a range', sql: `SELECT id FROM patients WHERE date_of_birth IN (${Array.from({ length: 150 }, (_, i) => `'${new Date(Date.UTC(1970, 0, 1 + i)).toISOString().slice(0, 10)}'`).join(', ')})` },
];

describe('strict predicates by default (P7)', () => {
  it.each(REFUSED)('psql: $cls is refused, nothing runs', async ({ sql }) => {
    const gw = await psql(s.get(), ['-At', '-c', sql]);
    expect(gw.stderr).toMatch(/P7\.predicate|masked columns may only be compared/i);
    expect(gw.stdout).toBe('');
    expect(phiIn(gw.stderr)).toEqual([]);
  });

  it.each(REFUSED)('extended protocol: $cls is refused with 42501', async ({ sql }) => {
    const msgs = await withRaw(s.get().listener, (c) => extendedBytes(c, sql));
    expect(errorOf(msgs)?.code).toBe('42501');
    expect(msgs.some((m) => m.type === 'D')).toBe(false);
  });

  it('equality lookups still work and equal direct (psql and extended protocol with a parameter)', async () => {
    const mrn = (await direct<{ mrn: string }>('SELECT mrn FROM patients WHERE id = 7')).rows[0].mrn;
    const q = `SELECT id, full_name, diagnosis FROM patients WHERE mrn = '${mrn}'`;
    const gw = await psql(s.get(), ['-At', '-c', q]);
    expect(gw.stderr).toBe('');
    expect(gw.stdout).toBe((await psqlDirect(['-At', '-c', q])).stdout);
    const msgs = await withRaw(s.get().listener, (c) => extendedBytes(c, 'SELECT id FROM patients WHERE mrn = $1', [mrn]));
    expect(errorOf(msgs)).toBeUndefined();
    expect(collect(msgs).rows).toEqual(['7']);
  });

  it('JSON_TABLE and XMLTABLE columns equal direct where they hold no masked value', async () => {
    const q = `SELECT p.id, jt.* FROM patients p, JSON_TABLE(jsonb_build_object('n', p.full_name, 'd', p.diagnosis, 'k', jsonb_build_array(1, 2)), '$'
      COLUMNS (o FOR ORDINALITY, n text PATH '$.n', d text PATH '$.d', NESTED PATH '$.k[*]' COLUMNS (k int PATH '$'))) jt
      CROSS JOIN XMLTABLE('/r/x' PASSING xml '<r><x>a</x><x>b</x></r>' COLUMNS xo FOR ORDINALITY, x text PATH '.') xt
      WHERE p.id <= 5 ORDER BY p.id, k, xo`;
    const gw = await psql(s.get(), ['-At', '-c', q]);
    expect(gw.stderr).toBe('');
    const dr = await psqlDirect(['-At', '-c', q]);
    expect(gw.stdout.trim().split('\n').length).toBe(20);
    expect(gw.stdout).toBe(dr.stdout);
  });

  it('hash stays usable for joins on the masked column', async () => {
    const q = 'SELECT count(*) FROM patients a JOIN patients b ON a.email = b.email';
    const gw = await psql(s.get(), ['-At', '-c', q]);
    expect(gw.stderr).toBe('');
    expect(gw.stdout).toBe((await psqlDirect(['-At', '-c', q])).stdout);
  });
});

describe('strictPredicates: false still masks values, row counts and errors', () => {
  let lax: ExtraAgent;
  beforeAll(async () => {
    lax = await startExtraAgent(s.get(), { agentId: 'masking-lax', policy: { strictPredicates: false } });
  });
  afterAll(async () => {
    await lax?.stop();
  });

  it('psql: the row-count extraction runs, but what it computed is masked', async () => {
    const dr = await psqlDirect(['-At', '-c', ROW_COUNT_SQL]);
    expect(phiIn(dr.stdout).length).toBe(3); // directly, the statement returns the SSNs
    const gw = await psql(lax, ['-At', '-c', ROW_COUNT_SQL]);
    expect(gw.stderr).toBe('');
    expect(gw.stdout.trim().split('\n')).toEqual(['1|***', '2|***', '3|***']);
  });

  it('extended protocol: EXISTS and counts over SRFs fed by a masked value are masked', async () => {
    const sql = 'SELECT id, EXISTS (SELECT 1 FROM generate_series(1, ascii(p.ssn) - 57)), (SELECT count(*) FROM generate_series(1, ascii(p.ssn))) FROM patients p WHERE id <= 3 ORDER BY id';
    const msgs = await withRaw(lax.listener, (c) => extendedBytes(c, sql));
    expect(errorOf(msgs)).toBeUndefined();
    const rows = msgs.filter((m) => m.type === 'D').map((m) => dataRow(m.body).map((v) => v?.toString('utf8') ?? null));
    expect(rows.map((r) => r[0])).toEqual(['1', '2', '3']);
    // derived values are redacted: NULL for bool and bigint (what PostgreSQL says: true, and 57 or so)
    for (const r of rows) expect(r.slice(1)).toEqual([null, null]);
  });

  // Each evaluates ssn (or a view of it) only in one clause; the cast error quotes the SSN directly.
  const CLAUSE_ERRORS = [
    { clause: 'LIMIT', sql: 'SELECT 1 FROM visits LIMIT (SELECT ssn FROM patients WHERE id = 1)::int' },
    { clause: 'OFFSET', sql: 'SELECT 1 FROM visits OFFSET (SELECT ssn FROM patients WHERE id = 1)::int' },
    { clause: 'FETCH FIRST', sql: 'SELECT 1 FROM visits ORDER BY id FETCH FIRST ((SELECT ssn FROM patients WHERE id = 1)::int) ROWS ONLY' },
    { clause: 'TABLESAMPLE REPEATABLE', sql: 'SELECT 1 FROM visits TABLESAMPLE SYSTEM (1) REPEATABLE ((SELECT ssn FROM patients WHERE id = 1)::float8)' },
    { clause: 'window frame offset', sql: 'SELECT sum(id) OVER (ORDER BY id ROWS BETWEEN (SELECT ssn FROM patients WHERE id = 1)::int PRECEDING AND CURRENT ROW) FROM visits' },
  ];

  it.each(CLAUSE_ERRORS)('psql: an error from $clause is redacted (SQLSTATE kept)', async ({ sql }) => {
    const dr = await psqlDirect(['-At', '-c', sql]).catch((e) => e as RunResult);
    expect(phiIn(dr.stderr).length).toBe(1); // PostgreSQL quotes the SSN
    const gw = await psql(lax, ['-At', '-v', 'VERBOSITY=verbose', '-c', sql]);
    expect(gw.stderr).toMatch(/ERROR: {2}22P02/);
    expect(phiIn(gw.stderr)).toEqual([]);
  });

  it.each(CLAUSE_ERRORS)('extended protocol: an error from $clause is redacted', async ({ sql }) => {
    const msgs = await withRaw(lax.listener, (c) => extendedBytes(c, sql));
    expect(errorOf(msgs)?.code).toBe('22P02');
    expect(phiIn(textOf(msgs))).toEqual([]);
  });

  // The cursor's query runs later than its DECLARE: at MOVE, or at COMMIT for a WITH HOLD cursor.
  it.each([
    { at: 'MOVE', sql: 'BEGIN; DECLARE c CURSOR FOR SELECT ssn::int FROM patients ORDER BY id; MOVE NEXT IN c; ROLLBACK;' },
    { at: 'COMMIT (WITH HOLD)', sql: 'BEGIN; DECLARE h CURSOR WITH HOLD FOR SELECT ssn::int FROM patients ORDER BY id; COMMIT;' },
  ])('deferred execution: the error at $at is redacted', async ({ sql }) => {
    const dr = await psqlDirect(['-At', '-c', sql]).catch((e) => e as RunResult);
    expect(phiIn(dr.stderr).length).toBe(1);
    const gw = await psql(lax, ['-At', '-c', sql]);
    expect(gw.stderr).toMatch(/ERROR: {2}invalid input syntax/);
    expect(phiIn(gw.stderr)).toEqual([]);
  });
});

describe('differential: changing masked values directly changes nothing the client receives', () => {
  // Generated statements over the demo table; every one that the default policy lets run must give the
  // same bytes (values, row counts, error text) before and after the masked columns change in
  // PostgreSQL; refusals must be the same refusals. email (hash) is left alone: a keyed hash of a new
  // value is a new hash, which P6 allows; MRN keeps the 4 characters `partial` shows.
  const TARGETS = ['p.id', 'p.ssn', 'upper(p.ssn)', 'length(p.phone)', 'p.date_of_birth', 'p.ssn::int', 'p.mrn',
    '(SELECT count(*) FROM generate_series(1, ascii(p.ssn)))', `NULLIF(p.ssn LIKE '9%', true) IS NULL`,
    'EXISTS (SELECT 1 FROM generate_series(1, ascii(p.ssn) - 57))', 'count(*) OVER ()', 'p.date_of_birth - DATE \'1900-01-01\''];
  const FILTERS = ['', `AND p.ssn LIKE '90%'`, `AND p.date_of_birth > DATE '1970-01-01'`, `AND ascii(p.phone) > 0`, 'AND p.mrn IS NOT NULL',
    'AND EXISTS (SELECT 1 FROM generate_series(1, ascii(p.ssn) - 57))'];
  const TAILS = ['ORDER BY p.id', 'ORDER BY p.ssn, p.id', 'ORDER BY p.id LIMIT (SELECT ascii(ssn) - 48 FROM patients WHERE id = 1)', 'ORDER BY p.id LIMIT 5'];
  const QUERIES = TARGETS.flatMap((t) => FILTERS.flatMap((f) => TAILS.map((tail) => `SELECT p.id, ${t} FROM patients p WHERE p.id <= 30 ${f} ${tail}`)));

  const MUTATE = `UPDATE patients SET
    ssn = translate(ssn, '0123456789-', '9876543210/'),
    phone = translate(phone, '0123456789', '9876543210'),
    mrn = overlay(mrn placing translate(substr(mrn, 1, length(mrn) - 4), 'MRN0123456789', 'XYZ9876543210') from 1 for length(mrn) - 4),
    date_of_birth = date_of_birth + 400`;
  const RESTORE = `UPDATE patients SET
    ssn = translate(ssn, '9876543210/', '0123456789-'),
    phone = translate(phone, '9876543210', '0123456789'),
    mrn = overlay(mrn placing translate(substr(mrn, 1, length(mrn) - 4), 'XYZ9876543210', 'MRN0123456789') from 1 for length(mrn) - 4),
    date_of_birth = date_of_birth - 400`;

  async function observe(): Promise<string[]> {
    return withRaw(s.get().listener, async (c) => {
      const out: string[] = [];
      for (const q of QUERIES) {
        out.push(textOf(await simpleBytes(c, q)), textOf(await extendedBytes(c, q)));
      }
      return out;
    });
  }

  it(`${QUERIES.length} generated statements, simple and extended protocol`, async () => {
    const before = await observe();
    const changed = await direct(MUTATE);
    expect(changed.rowCount).toBe(2000);
    let after: string[];
    try {
      after = await observe();
    } finally {
      await direct(RESTORE);
    }
    const differ = QUERIES.flatMap((q, i) => (before[2 * i] !== after[2 * i] || before[2 * i + 1] !== after[2 * i + 1] ? [q] : []));
    expect(differ).toEqual([]);
    // and the set is not vacuous: dozens ran and returned rows, the rest were refused
    expect(before.filter((b) => !b.includes('42501')).length).toBeGreaterThan(50);
    expect(before.filter((b) => b.includes('42501')).length).toBeGreaterThan(QUERIES.length);
    expect(phiIn(before.join('\n'))).toEqual([]);
  });
});
