// Every channel on real bytes: query results from a real PostgreSQL (node-postgres, text and binary
// formats) are framed as the relay sees them, masked with the lineage plan, parsed back with
// pg-protocol and decoded with node-postgres' type parsers; COPY streams (postgres.js, text / csv /
// binary) are masked; error and notice texts are redacted. No fixture value may survive.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import postgres from 'postgres';
import { Parser } from 'pg-protocol/dist/parser.js';
import { BackendFramer, commandComplete, dataRow, READY_IDLE, rowDescription, type RowField } from '../../../agent/src/pgwire/backend.js';
import { crossCheck, maskAll, type ColumnMask } from '../../../agent/src/masking/lineage.js';
import { copyMasker, maskDataRows, RowMasker } from '../../../agent/src/masking/rewrite.js';
import { GENERIC_DETAIL, GENERIC_MESSAGE, maskContext, maskDetail, maskErrorMessage, maskMessageText, maskNotification } from '../../../agent/src/masking/messages.js';
import { CORE_VALUES, fixture, type Fixture } from './fixture.js';

const KEY = Buffer.from('test-hmac-key-0123456789');
let fx: Fixture;
let sql: ReturnType<typeof postgres>;
beforeAll(async () => {
  fx = await fixture();
  sql = postgres(fx.db.url, { max: 1, onnotice: () => {} });
});
afterAll(async () => {
  await fx?.client.end();
  await sql?.end();
});

function leaks(bytes: Buffer, extra: string[] = []): string[] {
  const s = bytes.toString('latin1');
  return [...CORE_VALUES, ...extra].filter((v) => s.includes(v));
}

/** Runs `text` on PG, returns the wire bytes PostgreSQL would have sent (RowDescription, DataRows, CommandComplete). */
async function wire(text: string, binary: boolean): Promise<{ bytes: Buffer; fields: RowField[] }> {
  const raw = { getTypeParser: () => (v: unknown) => v } as unknown as pg.CustomTypesConfig;
  const res = await fx.client.query({ text, binary, types: raw, rowMode: 'array' } as pg.QueryConfig);
  const fields: RowField[] = res.fields.map((f) => ({
    name: f.name, tableOid: f.tableID, columnAttr: f.columnID, typeOid: f.dataTypeID, typeLen: f.dataTypeSize, typmod: f.dataTypeModifier, format: binary ? 1 : 0,
  }));
  const parts = [rowDescription(fields)];
  for (const row of res.rows as unknown[][]) parts.push(dataRow(row.map((v) => (v === null ? null : typeof v === 'string' ? v : Buffer.from(v as Buffer)))));
  parts.push(commandComplete(`SELECT ${res.rowCount}`), READY_IDLE);
  return { bytes: Buffer.concat(parts), fields };
}

/** The relay: frame in small reads, mask each read into one buffer. */
function relay(bytes: Buffer, masks: ColumnMask[], fields: RowField[], readSize = 97): Buffer {
  const masker = new RowMasker(masks, fields.map((f) => f.format as 0 | 1), fields.map((f) => f.typeOid), { hashKey: KEY });
  const framer = new BackendFramer();
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += readSize) {
    const n = framer.push(bytes.subarray(i, i + readSize));
    out.push(Buffer.from(maskDataRows(framer.buffer, framer.types, framer.offsets, 0, n, masker)));
  }
  return Buffer.concat(out);
}

/** Client side: pg-protocol parses, node-postgres' parsers decode each field. */
function decode(bytes: Buffer): unknown[][] {
  const rows: unknown[][] = [];
  let fields: { dataTypeID: number; format: string }[] = [];
  new Parser().parse(bytes, (msg) => {
    const m = msg as unknown as { name: string; fields?: { dataTypeID: number; format: string }[]; fields2?: unknown };
    if (m.name === 'rowDescription') fields = m.fields!;
    if (m.name === 'dataRow') {
      const vals = (msg as unknown as { fields: (string | Buffer | null)[] }).fields;
      rows.push(vals.map((v, i) => (v === null ? null : pg.types.getTypeParser(fields[i].dataTypeID, fields[i].format as 'text' | 'binary')(v as string))));
    }
  });
  return rows;
}

const queries = [
  'SELECT * FROM patients ORDER BY id',
  'SELECT ssn AS x, p.mrn AS "Harmless", (p).email, "phone", DoB FROM public.patients AS p',
  'SELECT full_name FROM patients WHERE false UNION ALL SELECT ssn FROM patients',
  `SELECT ssn || '', CAST(mrn AS varchar(50)), email COLLATE "C", CASE WHEN true THEN phone END, dob::text FROM patients`,
  `SELECT dob - DATE '2000-01-01' AS d, extract(epoch FROM dob) AS e, to_char(dob, 'DD/MM/YYYY') AS f, age(DATE '2000-01-01', dob) AS g FROM patients`,
  'SELECT p FROM patients p UNION ALL SELECT patients FROM patients',
  'SELECT ROW(p.*)::text, (p.*)::text, row_to_json(p), to_jsonb(p) FROM patients p',
  `SELECT string_agg(ssn, ','), array_agg(mrn), max(email), min(dob), json_agg(p) FROM patients p`,
  `SELECT xmlelement(name a, ssn), xmlforest(mrn, email), ssn::xml, jsonb_build_object('k', ssn) FROM patients`,
  'SELECT national_id, record_no FROM mv_patient_ids ORDER BY id',
  'SELECT * FROM get_patient(1) UNION ALL SELECT (get_patient(2)).*',
  `SELECT regexp_split_to_table(ssn, ''), id FROM patients`,
  `SELECT id, ssn::bytea, gen_random_uuid() AS u, ARRAY[dob] FROM patients`,
  `SELECT id, full_name, diagnosis, mrn FROM patients WHERE mrn = 'MRN-00042-A'`,
  `SELECT * FROM patient_contacts`,
];

describe('DataRow masking on real results', () => {
  for (const binary of [false, true]) {
    it.each(queries)(`${binary ? 'binary' : 'text'}: %s`, async (q) => {
      const plan = fx.lineage.analyzeSql(q);
      const { bytes, fields } = await wire(q, binary);
      const direct = decode(bytes);
      let masks = crossCheck(plan, fields, fx.lineage);
      if (masks === 'mismatch') masks = maskAll(fields.length);
      const masked = relay(bytes, masks, fields);
      expect(leaks(masked)).toEqual([]);
      const rows = decode(masked); // must not throw
      expect(rows.length).toBe(direct.length); // row counts equal direct execution
      // unmasked columns unchanged
      masks.forEach((m, c) => {
        if (!m.masked) expect(rows.map((r) => r[c])).toEqual(direct.map((r) => r[c]));
      });
    });
  }

  it('keeps clear values and applies each strategy (text)', async () => {
    const q = 'SELECT id, full_name, ssn, mrn, email, dob FROM patients WHERE id = 1';
    const { bytes, fields } = await wire(q, false);
    const masks = crossCheck(fx.lineage.analyzeSql(q), fields, fx.lineage) as ColumnMask[];
    const [row] = decode(relay(bytes, masks, fields));
    expect(row[0]).toBe(1);
    expect(row[1]).toBe('Alice Moreno');
    expect(row[2]).toBe('***');
    expect(row[3]).toBe('*******42-A');
    expect(row[4]).toMatch(/^[0-9a-f]{64}$/);
    expect(row[5]).toBeNull();
    // hash is stable: the same value in binary format hashes the same
    const b = await wire(q, true);
    const [brow] = decode(relay(b.bytes, masks, b.fields));
    expect(brow[4]).toBe(row[4]);
  });

  it('returns the chunk itself when nothing is masked', async () => {
    const { bytes, fields } = await wire('SELECT id, full_name FROM patients', false);
    const masker = new RowMasker([{ masked: false }, { masked: false }], [0, 0], fields.map((f) => f.typeOid));
    const f = new BackendFramer();
    const n = f.push(bytes);
    const out = maskDataRows(f.buffer, f.types, f.offsets, 0, n, masker);
    expect(out.buffer).toBe(bytes.buffer);
  });

  it('refuses a DataRow whose field count differs from the plan', () => {
    const masker = new RowMasker([{ masked: true, strategy: { kind: 'redact' }, sources: [] }], [0], [25]);
    const row = dataRow(['a', 'b']);
    expect(() => masker.rewrite(row, 0, row.length)).toThrow(/fields/);
  });
});

describe('COPY masking on real COPY streams', () => {
  const variants = [
    { sql: 'COPY patients TO STDOUT', fmt: 'text' },
    { sql: `COPY patients TO STDOUT WITH (FORMAT text, DELIMITER '|', NULL 'nil', HEADER)`, fmt: 'text' },
    { sql: 'COPY patients (ssn, dob) TO STDOUT WITH (FORMAT csv, HEADER, FORCE_QUOTE *)', fmt: 'csv' },
    { sql: `COPY (SELECT full_name, E'a"b\\n' || ssn, email FROM patients) TO STDOUT WITH (FORMAT csv, QUOTE '''', DELIMITER ';')`, fmt: 'csv' },
    { sql: 'COPY patients TO STDOUT WITH (FORMAT binary)', fmt: 'binary' },
    { sql: `COPY (SELECT id, E'x\\ty' || ssn, dob FROM patients) TO STDOUT`, fmt: 'text' },
  ];
  it.each(variants)('$sql', async ({ sql: text }) => {
    const plan = fx.lineage.analyzeSql(text);
    expect(plan.kind).toBe('rows');
    if (plan.kind !== 'rows' || !plan.copy) throw new Error('no copy plan');
    const chunks: Buffer[] = [];
    const stream = await sql.unsafe(text).readable();
    for await (const c of stream) chunks.push(Buffer.from(c as Buffer));
    const direct = Buffer.concat(chunks);
    const masker = copyMasker(plan.columns.map((c) => c.mask), plan.columns.map((c) => c.typeOid ?? 0), plan.copy, { hashKey: KEY });
    // re-split at awkward places: rows split across CopyData messages
    const out: Buffer[] = [];
    for (let i = 0; i < direct.length; i += 7) out.push(masker.push(direct.subarray(i, i + 7)));
    masker.end();
    const masked = Buffer.concat(out);
    expect(leaks(direct).length).toBeGreaterThan(0);
    expect(leaks(masked, ['hex:'])).toEqual([]);
    if (plan.copy.format === 'binary') {
      for (const h of ['ffffc8a4', 'ffffdd86', 'ffffefb3']) expect(masked.toString('hex')).not.toContain(h);
    } else if (plan.copy.format === 'text') {
      expect(masked.toString().split('\n').length).toBe(direct.toString().split('\n').length);
    }
  });
});

describe('COPY rows must have the width of their plan', () => {
  const clear = { masked: false } as const;
  it.each([
    { fmt: { format: 'text' as const }, rows: 'a\tb\n', bad: 'a\tb\tc\n' },
    { fmt: { format: 'csv' as const }, rows: '"a,x",b\n', bad: 'a,b,c\n' },
  ])('$fmt.format: a row wider than the plan is refused even when no column is masked', ({ fmt, rows, bad }) => {
    const ok = copyMasker([clear, clear], [25, 25], fmt, { hashKey: KEY });
    expect(ok.push(Buffer.from(rows)).toString()).toBe(rows);
    ok.end();
    const wide = copyMasker([clear, clear], [25, 25], fmt, { hashKey: KEY });
    expect(() => wide.push(Buffer.from(bad))).toThrow(/3 fields, the plan 2/);
  });

  it('a row split across CopyData messages is checked whole', () => {
    const m = copyMasker([clear, clear], [25, 25], { format: 'text' }, { hashKey: KEY });
    expect(m.push(Buffer.from('a\t')).toString()).toBe('');
    expect(m.push(Buffer.from('b\nc\td\n')).toString()).toBe('a\tb\nc\td\n');
    m.end();
  });
});

describe('errors, notices, notifications', () => {
  async function errorBytes(q: string): Promise<Buffer> {
    // the ErrorResponse as PostgreSQL built it, rebuilt from node-postgres' parsed fields
    const { errorResponse } = await import('../../../agent/src/pgwire/backend.js');
    try {
      await fx.client.query(q);
    } catch (e) {
      const err = e as pg.DatabaseError;
      return errorResponse({ severity: 'ERROR', code: err.code!, message: err.message, detail: err.detail, hint: err.hint, where: err.where, internalQuery: err.internalQuery });
    }
    throw new Error('expected an error');
  }
  const cases = [
    'SELECT ssn::int FROM patients WHERE id = 1',
    'SELECT email::inet FROM patients WHERE id = 1',
    'SELECT mrn::numeric FROM patients WHERE id = 1',
    'SELECT ssn::uuid FROM patients WHERE id = 1',
    'SELECT ssn::regclass FROM patients WHERE id = 1',
    'SELECT phone::bool FROM patients WHERE id = 1',
    'SELECT dob::text::int FROM patients WHERE id = 1',
    'SELECT 1 FROM patients WHERE id = 1 AND ssn::date IS NULL',
    'SELECT xmlparse(document ssn) FROM patients WHERE id = 1',
    'SELECT ssn::json FROM patients WHERE id = 1',
    `SELECT to_date(email, 'YYYY') FROM patients WHERE id = 1`,
    `INSERT INTO patients (id, ssn) SELECT 99, ssn FROM patients WHERE id = 1`,
  ];
  it.each(cases)('%s', async (q) => {
    const plan = fx.lineage.analyzeSql(q);
    expect(plan.readsMasked).toBe(true);
    const bytes = await errorBytes(q);
    const masked = maskErrorMessage(bytes, 0, bytes.length, plan.readsMasked);
    expect(leaks(masked, ['"alic"'])).toEqual([]);
    let parsed: { code?: string; message?: string } = {};
    new Parser().parse(masked, (m) => (parsed = m as unknown as typeof parsed));
    expect(parsed.code).toMatch(/INSERT/.test(q) ? /^23505$/ : /^[0-9A-Z]{5}$/);
    expect(parsed.message).toBeTruthy();
  });

  it('keeps the template and key columns', () => {
    expect(maskMessageText('invalid input syntax for type integer: "123-45-6789"')).toBe('invalid input syntax for type integer: "***"');
    expect(maskMessageText('invalid value "alic" for "YYYY"')).toBe('invalid value "***"');
    expect(maskMessageText('division by zero')).toBe('division by zero');
    expect(maskMessageText('SSN is 123-45-6789')).toBe(GENERIC_MESSAGE);
    expect(maskDetail('Key (ssn)=(123-45-6789) already exists.')).toBe('Key (ssn)=(***) already exists.');
    expect(maskDetail('Failing row contains (1, Alice, 123-45-6789).')).toBe('Failing row contains (***).');
    expect(maskDetail('Token "123-45-6789" is invalid.')).toBe(GENERIC_DETAIL);
    expect(maskContext('JSON data, line 1: 123-45-6789\nSQL function "f" statement 1')).toBe('context redacted\nSQL function "f" statement 1');
  });

  it('a statement that read no masked column passes untouched', async () => {
    const bytes = await errorBytes(`SELECT full_name::int FROM patients WHERE id = 1`);
    expect(fx.lineage.analyzeSql(`SELECT full_name::int FROM patients WHERE id = 1`).readsMasked).toBe(false);
    expect(maskErrorMessage(bytes, 0, bytes.length, false)).toEqual(bytes);
  });

  it('notification payloads are replaced', () => {
    const body = Buffer.concat([Buffer.from([0, 0, 0, 7]), Buffer.from(`atk${'\u0000'}123-45-6789 MRN-00042-A${'\u0000'}`)]);
    const msg = Buffer.concat([Buffer.from([0x41, 0, 0, 0, body.length + 4]), body]);
    const out = maskNotification(msg, 0, msg.length);
    expect(leaks(out)).toEqual([]);
    let parsed: { channel?: string; payload?: string; processId?: number } = {};
    new Parser().parse(out, (m) => (parsed = m as unknown as typeof parsed));
    expect(parsed).toMatchObject({ channel: 'atk', payload: '***', processId: 7 });
  });
});
