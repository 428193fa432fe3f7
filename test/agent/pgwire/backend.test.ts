import { describe, expect, it } from 'vitest';
import { Parser } from 'pg-protocol/dist/parser.js';
import type { BackendMessage } from 'pg-protocol/dist/messages.js';
import {
  AUTH_OK,
  BackendFramer,
  backendKeyData,
  BIND_COMPLETE,
  commandComplete,
  dataRow,
  EMPTY_QUERY_RESPONSE,
  errorResponse,
  NO_DATA,
  noticeResponse,
  parameterStatus,
  parseAuthentication,
  parseBackendKeyData,
  parseCommandComplete,
  parseDataRow,
  parseErrorFields,
  parseParameterStatus,
  parseReadyForQuery,
  parseRowDescription,
  PARSE_COMPLETE,
  READY_FAILED,
  READY_IDLE,
  READY_INTRANS,
  readyForQuery,
  rowDescription,
  SSL_NO,
  type PgErrorFields,
  type RowField,
} from '../../../agent/src/pgwire/backend.js';
import { Writer } from '../../../agent/src/pgwire/writer.js';

/** What pg-protocol (node-postgres) reads from our bytes: an independent check of the builders. */
function pgParse(buf: Buffer): BackendMessage[] {
  const out: BackendMessage[] = [];
  new Parser().parse(buf, (m) => out.push(m));
  return out;
}

const FIELDS: RowField[] = [
  { name: 'id', tableOid: 16384, columnAttr: 1, typeOid: 23, typeLen: 4, typmod: -1, format: 0 },
  { name: 'naïve', tableOid: 4294967295, columnAttr: -2, typeOid: 3000000000, typeLen: -1, typmod: 68, format: 1 },
];
const ERR: PgErrorFields = {
  severity: 'ERROR',
  code: '42501',
  message: 'permission denied for table patients',
  detail: 'd',
  hint: 'h',
  position: '15',
  where: 'w',
  schema: 'public',
  table: 'patients',
  column: 'ssn',
  routine: 'aclcheck_error',
};

describe('builders', () => {
  it('build constant messages once', () => {
    expect(SSL_NO).toEqual(Buffer.from('N'));
    expect(AUTH_OK).toEqual(Buffer.from('520000000800000000', 'hex'));
    expect(readyForQuery('I')).toBe(READY_IDLE);
    expect(readyForQuery('T')).toBe(READY_INTRANS);
    expect(readyForQuery('E')).toBe(READY_FAILED);
    expect(NO_DATA).toEqual(Buffer.from('6e00000004', 'hex'));
  });

  it('are read by pg-protocol as intended', () => {
    const msgs = pgParse(
      Buffer.concat([
        AUTH_OK,
        parameterStatus('server_version', '18.4'),
        backendKeyData(4242, Buffer.from('01020304', 'hex')),
        READY_INTRANS,
        rowDescription(FIELDS),
        dataRow(['1', null, Buffer.from([0xff]), 'é']),
        commandComplete('SELECT 1'),
        errorResponse(ERR),
        noticeResponse({ severity: 'NOTICE', code: '00000', message: 'approval 7 pending' }),
        EMPTY_QUERY_RESPONSE,
        PARSE_COMPLETE,
        BIND_COMPLETE,
        NO_DATA,
      ]),
    );
    expect(msgs.map((m) => m.name)).toEqual([
      'authenticationOk', 'parameterStatus', 'backendKeyData', 'readyForQuery', 'rowDescription', 'dataRow',
      'commandComplete', 'error', 'notice', 'emptyQuery', 'parseComplete', 'bindComplete', 'noData',
    ]);
    expect(msgs[1]).toMatchObject({ parameterName: 'server_version', parameterValue: '18.4' });
    expect(msgs[2]).toMatchObject({ processID: 4242, secretKey: 0x01020304 });
    expect(msgs[3]).toMatchObject({ status: 'T' });
    expect((msgs[4] as unknown as { fields: unknown[] }).fields[1]).toMatchObject({ name: 'naïve', dataTypeID: 3000000000, dataTypeModifier: 68, format: 'binary' });
    expect(msgs[5]).toMatchObject({ fields: ['1', null, '\ufffd', 'é'] });
    expect(msgs[6]).toMatchObject({ text: 'SELECT 1' });
    expect(msgs[7]).toMatchObject({ severity: 'ERROR', code: '42501', message: ERR.message, table: 'patients', column: 'ssn', position: '15' });
    expect(msgs[8]).toMatchObject({ severity: 'NOTICE', message: 'approval 7 pending' });
  });
});

describe('parsers', () => {
  it('round-trip with the builders', () => {
    expect(parseErrorFields(errorResponse(ERR).subarray(5))).toEqual(ERR);
    expect(parseRowDescription(rowDescription(FIELDS).subarray(5))).toEqual(FIELDS);
    expect(parseParameterStatus(parameterStatus('TimeZone', 'UTC').subarray(5))).toEqual({ name: 'TimeZone', value: 'UTC' });
    expect(parseBackendKeyData(backendKeyData(-5, Buffer.alloc(32, 9)).subarray(5))).toEqual({ pid: -5, secret: Buffer.alloc(32, 9) });
    expect(parseReadyForQuery(READY_FAILED.subarray(5))).toBe('E');
    expect(parseDataRow(dataRow(['a', null, '']).subarray(5))).toEqual([Buffer.from('a'), null, Buffer.alloc(0)]);
    expect(parseAuthentication(AUTH_OK.subarray(5))).toEqual({ kind: 'Ok' });
  });

  it('parse SASL and MD5 authentication requests', () => {
    const w = new Writer();
    const sasl = w.begin(0x52).i32(10).cstring('SCRAM-SHA-256-PLUS').cstring('SCRAM-SHA-256').i8(0).end().take();
    expect(parseAuthentication(sasl.subarray(5))).toEqual({ kind: 'SASL', mechanisms: ['SCRAM-SHA-256-PLUS', 'SCRAM-SHA-256'] });
    const md5 = w.begin(0x52).i32(5).bytes(Buffer.from('a1b2c3d4', 'hex')).end().take();
    expect(parseAuthentication(md5.subarray(5))).toEqual({ kind: 'MD5Password', salt: Buffer.from('a1b2c3d4', 'hex') });
    expect(parseAuthentication(w.begin(0x52).i32(7).end().take().subarray(5))).toEqual({ kind: 'Unsupported', code: 7 });
  });

  it.each([
    { tag: 'SELECT 5', want: { command: 'SELECT', rows: 5 } },
    { tag: 'INSERT 0 12', want: { command: 'INSERT', rows: 12 } },
    { tag: 'UPDATE 0', want: { command: 'UPDATE', rows: 0 } },
    { tag: 'MERGE 3', want: { command: 'MERGE', rows: 3 } },
    { tag: 'COPY 1000000', want: { command: 'COPY', rows: 1000000 } },
    { tag: 'CREATE TABLE', want: { command: 'CREATE TABLE', rows: null } },
    { tag: 'BEGIN', want: { command: 'BEGIN', rows: null } },
  ])('CommandComplete "$tag"', ({ tag, want }) => {
    expect(parseCommandComplete(commandComplete(tag).subarray(5))).toEqual({ tag, ...want });
  });

  it.each([
    { desc: 'ErrorResponse without terminator', parse: parseErrorFields, body: Buffer.from('SERROR\0CXX000\0Mm\0') },
    { desc: 'ErrorResponse without a code', parse: parseErrorFields, body: Buffer.from('SERROR\0Mm\0\0') },
    { desc: 'ReadyForQuery with status X', parse: parseReadyForQuery, body: Buffer.from('X') },
    { desc: 'RowDescription truncated', parse: parseRowDescription, body: rowDescription(FIELDS).subarray(5, -2) },
    { desc: 'ParameterStatus with trailing bytes', parse: parseParameterStatus, body: Buffer.from('a\0b\0c') },
    { desc: 'BackendKeyData with a 2-byte secret', parse: parseBackendKeyData, body: Buffer.from('000000010102', 'hex') },
    { desc: 'CommandComplete with invalid UTF-8', parse: parseCommandComplete, body: Buffer.from('c32800', 'hex') },
  ])('refuse $desc', ({ parse, body }) => {
    expect(() => parse(body)).toThrow(expect.objectContaining({ name: 'ProtocolError' }));
  });
});

describe('BackendFramer', () => {
  const MSGS = [
    parameterStatus('a', 'b'),
    rowDescription(FIELDS),
    ...Array.from({ length: 20 }, (_, i) => dataRow([String(i), i % 3 ? null : 'x'.repeat(i * 7)])),
    commandComplete('SELECT 20'),
    errorResponse(ERR),
    READY_IDLE,
  ];
  const STREAM = Buffer.concat(MSGS);

  /** Frames `chunks`; returns each message (copied) and what `complete` forwarded per push. */
  function run(chunks: Buffer[], f = new BackendFramer()) {
    const msgs: Buffer[] = [];
    const forwarded: Buffer[] = [];
    for (const c of chunks) {
      const n = f.push(c);
      for (let i = 0; i < n; i++) {
        expect(f.types[i]).toBe(f.message(i)[0]);
        expect(f.body(i).equals(f.message(i).subarray(5))).toBe(true);
        msgs.push(Buffer.from(f.message(i)));
      }
      forwarded.push(Buffer.from(f.complete));
    }
    return { msgs, forwarded: Buffer.concat(forwarded), buffered: f.buffered };
  }

  it('frames a concatenated stream and forwards it as one buffer', () => {
    const f = new BackendFramer();
    expect(f.push(STREAM)).toBe(MSGS.length);
    expect(f.complete.buffer).toBe(STREAM.buffer); // zero-copy
    expect(f.complete.length).toBe(STREAM.length);
    expect(Array.from(f.types.subarray(0, 3))).toEqual([0x53, 0x54, 0x44]);
  });

  it('gives the same messages and forwarded bytes when split at every byte', () => {
    for (let i = 0; i <= STREAM.length; i++) {
      const r = run([STREAM.subarray(0, i), STREAM.subarray(i)]);
      expect(r.msgs, `split at ${i}`).toEqual(MSGS);
      expect(r.forwarded.equals(STREAM)).toBe(true);
      expect(r.buffered).toBe(0);
    }
  });

  it('gives the same messages fed one byte at a time', () => {
    const r = run(Array.from(STREAM, (b) => Buffer.from([b])));
    expect(r.msgs).toEqual(MSGS);
    expect(r.forwarded.equals(STREAM)).toBe(true);
  });

  it('holds back a truncated message at every truncation point', () => {
    let end = 0;
    const ends = MSGS.map((m) => (end += m.length));
    for (let i = 0; i < STREAM.length; i++) {
      const r = run([STREAM.subarray(0, i)]);
      const n = ends.filter((e) => e <= i).length;
      expect(r.msgs).toEqual(MSGS.slice(0, n));
      expect(r.buffered).toBe(i - (n ? ends[n - 1] : 0));
    }
  });

  it('joins a large message split over many reads once, then frames what follows it', () => {
    const big = dataRow([Buffer.alloc(1_000_000, 1)]);
    const all = Buffer.concat([big, READY_IDLE]);
    const f = new BackendFramer();
    const counts: number[] = [];
    for (let i = 0; i < all.length; i += 65536) counts.push(f.push(all.subarray(i, i + 65536)));
    expect(counts.slice(0, -1).every((c) => c === 0)).toBe(true);
    expect(counts.at(-1)).toBe(2);
    expect(f.message(0).equals(big)).toBe(true);
    expect(f.message(1)).toEqual(READY_IDLE);
    expect(f.complete.length).toBe(all.length);
  });

  it('grows its offset tables for reads with many messages', () => {
    const many = Buffer.concat(Array.from({ length: 5000 }, () => NO_DATA));
    const f = new BackendFramer();
    expect(f.push(many)).toBe(5000);
    expect(f.message(4999)).toEqual(NO_DATA);
    expect(f.complete.length).toBe(many.length);
  });

  it('hands over the rest with remainder()', () => {
    const f = new BackendFramer();
    const n = f.push(STREAM.subarray(0, STREAM.length - 3));
    expect(n).toBe(MSGS.length - 1);
    expect(f.remainder(n - 1)).toEqual(Buffer.concat([MSGS[n - 1], READY_IDLE.subarray(0, 3)]));
    expect(f.buffered).toBe(0);
  });

  it.each([
    { desc: 'length < 4', bytes: Buffer.from('4400000003', 'hex') },
    { desc: 'negative length', bytes: Buffer.from('4480000000', 'hex') },
    { desc: 'length > max', bytes: Buffer.from('4400010001', 'hex') },
  ])('refuses $desc before buffering (08P01)', ({ bytes }) => {
    expect(() => new BackendFramer({ maxMessageBytes: 65536 }).push(bytes)).toThrow(expect.objectContaining({ code: '08P01' }));
  });
});

describe('Writer', () => {
  it('grows by 1.5x and back-patches lengths', () => {
    const w = new Writer(4);
    w.begin(0x51).cstring('x'.repeat(100)).end();
    expect(w.buf.length).toBeGreaterThanOrEqual(106);
    const out = w.take();
    expect(out.readInt32BE(1)).toBe(105);
    expect(w.pos).toBe(0);
    expect(() => new Writer().end()).toThrow();
  });

  it('writes unsigned and signed 32-bit values alike', () => {
    const out = new Writer(1).i32(4294967295).i32(-1).i16(-2).i16(65534).take();
    expect(out).toEqual(Buffer.from('fffffffffffffffffffefffe', 'hex'));
  });
});
