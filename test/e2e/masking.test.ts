// Masking end to end (issue 6, SECURITY-POLICY P6): through `hoopctl connect`, clients see masked values
// where the demo policy says (DEMO_MASKING: ssn/phone redact, mrn partial 4, email hash, dob null) and
// nothing else changes: unmasked columns, types, row counts and ordering are as direct. Real psql
// (results, and `\copy … to` in text, csv and binary, approved as bulk exports per P4), node-postgres in
// binary result format, and a raw frontend that checks the binary bytes themselves; every output is
// scanned for the seeded PHI, and the same scan finds that PHI in the direct output.
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { decideNextApproval, psql, run, useStack, tunnelClient, type RunResult } from '../harness/stack.js';
import { cstr, parseErrorFields, RawClient, typed, type BackendMsg } from './wire.js';

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
