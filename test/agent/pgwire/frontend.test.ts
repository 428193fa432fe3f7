import { describe, expect, it } from 'vitest';
import { serialize as pgSerialize } from 'pg-protocol';
import {
  FrontendFramer,
  parseFrontend,
  parseStartup,
  serializeCancel,
  serializeFrontend,
  serializeStartup,
  SSL_REQUEST,
  GSSENC_REQUEST,
  SYNC,
  type FrontendMessage,
  type FrontendRaw,
} from '../../../agent/src/pgwire/frontend.js';
import { ProtocolError } from '../../../agent/src/pgwire/errors.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** A typed message from raw parts, with a correct length word. */
function typed(type: string, ...parts: (Buffer | string)[]): Buffer {
  const body = Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : p)));
  const head = Buffer.alloc(5);
  head[0] = type.charCodeAt(0);
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}
const i16 = (...v: number[]) => Buffer.concat(v.map((x) => { const b = Buffer.alloc(2); b.writeInt16BE(x); return b; }));
const i32 = (...v: number[]) => Buffer.concat(v.map((x) => { const b = Buffer.alloc(4); b.writeInt32BE(x); return b; }));
const z = '\0';

const MESSAGES: FrontendMessage[] = [
  { type: 'Query', sql: 'SELECT 1; SELECT \'é\u{1F600}\'' },
  { type: 'Parse', name: 's1', sql: 'SELECT $1::int, $2', paramTypes: [23, 0, 4294967295] },
  { type: 'Bind', portal: '', statement: 's1', paramFormats: [0, 1], params: [Buffer.from('42'), hex('ff00fe')], resultFormats: [1] },
  { type: 'Bind', portal: 'p', statement: '', paramFormats: [], params: [null, Buffer.from('x')], resultFormats: [] },
  { type: 'Describe', target: 'S', name: 's1' },
  { type: 'Describe', target: 'P', name: '' },
  { type: 'Execute', portal: '', maxRows: 100 },
  { type: 'Close', target: 'P', name: 'p' },
  { type: 'Flush' },
  { type: 'Sync' },
  { type: 'CopyData', data: hex('00ff10') },
  { type: 'CopyDone' },
  { type: 'CopyFail', message: 'client gave up' },
  { type: 'FunctionCall', fnOid: 1598, argFormats: [1], args: [hex('01'), null], resultFormat: 0 },
  { type: 'Terminate' },
];

const STARTUP = serializeStartup({ user: 'u', database: 'd', application_name: 'psql' });
const STREAM = Buffer.concat([SSL_REQUEST, STARTUP, ...MESSAGES.map(serializeFrontend)]);

/** Frames `chunks` the way the session drives the framer. Messages are copied (views are per push). */
function frame(chunks: Buffer[], framer = new FrontendFramer()) {
  const out: FrontendRaw[] = [];
  const take = (ms: FrontendRaw[]): void => {
    for (const m of ms) {
      out.push({ type: m.type, body: Buffer.from(m.body) });
      if (m.type !== 0) continue;
      take(parseStartup(m.body).kind === 'Startup' ? framer.startupDone() : framer.nextStartup());
    }
  };
  for (const c of chunks) take(framer.push(c));
  return { out, buffered: framer.buffered };
}

describe('FrontendFramer', () => {
  const whole = frame([STREAM]).out;

  it('frames a concatenated stream: SSLRequest, StartupMessage, then typed messages', () => {
    expect(whole.length).toBe(2 + MESSAGES.length);
    expect(parseStartup(whole[0].body)).toEqual({ kind: 'SSLRequest' });
    expect(parseStartup(whole[1].body)).toMatchObject({ kind: 'Startup', major: 3, minor: 0 });
    expect(whole.slice(2).map((m) => parseFrontend(m.type, m.body))).toEqual(MESSAGES);
  });

  it('gives the same messages when split at every byte', () => {
    for (let i = 1; i < STREAM.length; i++) {
      const r = frame([STREAM.subarray(0, i), STREAM.subarray(i)]);
      expect(r.out, `split at ${i}`).toEqual(whole);
      expect(r.buffered).toBe(0);
    }
  });

  it('gives the same messages fed one byte at a time', () => {
    const bytes = Array.from(STREAM, (b) => Buffer.from([b]));
    expect(frame(bytes).out).toEqual(whole);
  });

  it('holds a truncated message back, at every truncation point', () => {
    const ends: number[] = [];
    let at = 0;
    for (const m of whole) ends.push((at += m.body.length + (m.type === 0 ? 4 : 5)));
    for (let i = 0; i < STREAM.length; i++) {
      const r = frame([STREAM.subarray(0, i)]);
      const n = ends.filter((e) => e <= i).length;
      expect(r.out).toEqual(whole.slice(0, n));
      expect(r.buffered).toBe(i - (n ? ends[n - 1] : 0));
    }
  });

  it('returns zero-copy views when a message lies inside one chunk', () => {
    const f = new FrontendFramer();
    f.push(STARTUP);
    const chunk = Buffer.concat([SYNC, typed('Q', 'SELECT 1', z)]);
    f.startupDone();
    const [a, b] = f.push(chunk);
    expect(a.body.buffer).toBe(chunk.buffer);
    expect(b.body.byteOffset).toBe(chunk.byteOffset + 10);
  });

  it('holds bytes pipelined behind a startup message until the session decides', () => {
    const f = new FrontendFramer();
    const [m] = f.push(Buffer.concat([SSL_REQUEST, STARTUP]));
    expect(parseStartup(m.body).kind).toBe('SSLRequest');
    expect(f.buffered).toBe(STARTUP.length); // the session can refuse data sent before its answer
    expect(f.push(SYNC)).toEqual([]); // held, not framed as a startup message
    const [s] = f.nextStartup();
    expect(parseStartup(s.body).kind).toBe('Startup');
    expect(f.startupDone().map((m) => m.type)).toEqual([0x53]);
  });

  it('bounds what a client sends before the session has decided', () => {
    const f = new FrontendFramer({ maxMessageBytes: 100 });
    f.push(STARTUP);
    f.push(Buffer.alloc(100));
    expect(() => f.push(Buffer.alloc(1))).toThrow(expect.objectContaining({ code: '08P01' }));
  });

  it.each([
    { desc: 'typed length < 4', bytes: hex('51 00000003') },
    { desc: 'typed length negative', bytes: hex('51 ffffffff') },
    { desc: 'typed length > max', bytes: hex('51 00100001') },
  ])('refuses $desc before buffering the body (08P01)', ({ bytes }) => {
    const f = new FrontendFramer();
    f.startupDone();
    expect(() => f.push(bytes)).toThrow(expect.objectContaining({ code: '08P01' }));
  });

  it.each([
    { desc: 'startup length < 8', bytes: hex('00000007 0003000000') },
    { desc: 'startup length > 10000', bytes: hex('00002711 00030000') },
  ])('refuses $desc (08P01)', ({ bytes }) => {
    expect(() => new FrontendFramer().push(bytes)).toThrow(ProtocolError);
  });

  it('accepts CopyData up to a configured maximum and no more', () => {
    const f = new FrontendFramer({ maxMessageBytes: 64 });
    f.startupDone();
    expect(f.push(typed('d', Buffer.alloc(60)))).toHaveLength(1);
    expect(() => f.push(typed('d', Buffer.alloc(61)))).toThrow(expect.objectContaining({ code: '08P01' }));
  });

  it('joins a large split message once', () => {
    const f = new FrontendFramer();
    f.startupDone();
    const msg = typed('d', Buffer.alloc(300_000, 7));
    let got: FrontendRaw[] = [];
    for (let i = 0; i < msg.length; i += 4096) got = got.concat(f.push(msg.subarray(i, i + 4096)));
    expect(got).toHaveLength(1);
    expect(got[0].body.equals(msg.subarray(5))).toBe(true);
  });
});

describe('parseStartup', () => {
  it('parses the special requests', () => {
    expect(parseStartup(SSL_REQUEST.subarray(4))).toEqual({ kind: 'SSLRequest' });
    expect(parseStartup(GSSENC_REQUEST.subarray(4))).toEqual({ kind: 'GSSENCRequest' });
    expect(parseStartup(serializeCancel(1234, hex('deadbeef')).subarray(4))).toEqual({ kind: 'CancelRequest', pid: 1234, secret: hex('deadbeef') });
    // Protocol 3.2 (PG 18) cancel keys are up to 256 bytes.
    expect(parseStartup(serializeCancel(7, Buffer.alloc(32, 1)).subarray(4))).toMatchObject({ secret: Buffer.alloc(32, 1) });
  });

  it('parses a StartupMessage and matches pg-protocol byte for byte', () => {
    const params = { user: 'alice', database: 'clinic', client_encoding: 'UTF8' };
    const ours = serializeStartup(params);
    // pg-protocol appends client_encoding=UTF8 itself.
    expect(ours.equals(pgSerialize.startup({ user: 'alice', database: 'clinic' }))).toBe(true);
    expect(parseStartup(ours.subarray(4))).toEqual({ kind: 'Startup', major: 3, minor: 0, params: new Map(Object.entries(params)) });
  });

  it.each([
    { desc: 'SSLRequest with trailing bytes', body: Buffer.concat([SSL_REQUEST.subarray(4), hex('00')]), code: '08P01' },
    { desc: 'cancel key of 3 bytes', body: Buffer.concat([i32(80877102, 1), hex('aabbcc')]), code: '08P01' },
    { desc: 'cancel key of 257 bytes', body: Buffer.concat([i32(80877102, 1), Buffer.alloc(257)]), code: '08P01' },
    { desc: 'protocol 2.0', body: Buffer.concat([i32(0x20000), Buffer.from(`user${z}u${z}${z}`)]), code: '0A000' },
    { desc: 'no terminator', body: Buffer.concat([i32(196608), Buffer.from(`user${z}u${z}`)]), code: '08P01' },
    { desc: 'unterminated value', body: Buffer.concat([i32(196608), Buffer.from(`user${z}u`)]), code: '08P01' },
    { desc: 'trailing bytes after terminator', body: Buffer.concat([i32(196608), Buffer.from(`user${z}u${z}${z}x`)]), code: '08P01' },
    { desc: 'duplicate parameter', body: Buffer.concat([i32(196608), Buffer.from(`user${z}a${z}user${z}b${z}${z}`)]), code: '08P01' },
    { desc: 'invalid UTF-8', body: Buffer.concat([i32(196608), Buffer.from(`user${z}`), hex('c3 28 00 00')]), code: '22021' },
    { desc: 'no code', body: hex('0003'), code: '08P01' },
  ])('refuses $desc ($code)', ({ body, code }) => {
    expect(() => parseStartup(body)).toThrow(expect.objectContaining({ name: 'ProtocolError', code }));
  });
});

describe('parseFrontend', () => {
  it.each([
    { desc: 'Query unterminated', msg: typed('Q', 'SELECT 1'), code: '08P01' },
    { desc: 'Query with bytes after the NUL', msg: typed('Q', 'SELECT 1', z, 'x'), code: '08P01' },
    { desc: 'Query with invalid UTF-8', msg: typed('Q', hex('53 c3 28'), z), code: '22021' },
    { desc: 'Query with an overlong encoding', msg: typed('Q', hex('c0 af'), z), code: '22021' },
    { desc: 'Query with a lone surrogate', msg: typed('Q', hex('ed a0 80'), z), code: '22021' },
    { desc: 'Parse with fewer OIDs than counted', msg: typed('P', `s${z}SELECT 1${z}`, i16(2), i32(23)), code: '08P01' },
    { desc: 'Parse with a negative count', msg: typed('P', `s${z}SELECT 1${z}`, i16(-1)), code: '08P01' },
    { desc: 'Bind with 2 formats for 3 params', msg: typed('B', `${z}${z}`, i16(2, 0, 0), i16(3), i32(-1, -1, -1), i16(0)), code: '08P01' },
    { desc: 'Bind with format code 2', msg: typed('B', `${z}${z}`, i16(1, 2), i16(0), i16(0)), code: '08P01' },
    { desc: 'Bind with a value length of -2', msg: typed('B', `${z}${z}`, i16(0), i16(1), i32(-2), i16(0)), code: '08P01' },
    { desc: 'Bind with a value past the end', msg: typed('B', `${z}${z}`, i16(0), i16(1), i32(10), 'abc'), code: '08P01' },
    { desc: 'Bind with invalid UTF-8 in a text param', msg: typed('B', `${z}${z}`, i16(0), i16(1), i32(2), hex('c328'), i16(0)), code: '22021' },
    { desc: 'Bind with NUL in a text param', msg: typed('B', `${z}${z}`, i16(1, 0), i16(1), i32(3), hex('610062'), i16(0)), code: '22021' },
    { desc: 'Bind with trailing bytes', msg: typed('B', `${z}${z}`, i16(0), i16(0), i16(0), 'x'), code: '08P01' },
    { desc: 'Execute truncated', msg: typed('E', `${z}`, hex('0000')), code: '08P01' },
    { desc: 'Describe with target X', msg: typed('D', `X${z}`), code: '08P01' },
    { desc: 'Close with no name', msg: typed('C', 'S'), code: '08P01' },
    { desc: 'Sync with a body', msg: typed('S', hex('00')), code: '08P01' },
    { desc: 'CopyFail unterminated', msg: typed('f', 'oops'), code: '08P01' },
    { desc: 'FunctionCall with result format 5', msg: typed('F', i32(1598), i16(0), i16(0), i16(5)), code: '08P01' },
    { desc: 'PasswordMessage (never expected from a client here)', msg: typed('p', `x${z}`), code: '08P01' },
    { desc: 'unknown type', msg: typed('!', ''), code: '08P01' },
  ])('refuses $desc ($code)', ({ msg, code }) => {
    expect(() => parseFrontend(msg[0], msg.subarray(5))).toThrow(expect.objectContaining({ name: 'ProtocolError', code }));
  });

  it('accepts invalid UTF-8 in a binary param', () => {
    const msg = typed('B', `${z}${z}`, i16(1, 1), i16(1), i32(2), hex('c328'), i16(0));
    const m = parseFrontend(msg[0], msg.subarray(5));
    expect(m).toMatchObject({ type: 'Bind', params: [hex('c328')] });
  });

  it('keeps a leading BOM so the round trip is exact', () => {
    const msg = typed('Q', hex('efbbbf'), 'SELECT 1', z);
    const m = parseFrontend(msg[0], msg.subarray(5));
    expect(serializeFrontend(m).equals(msg)).toBe(true);
  });

  it('serialises like pg-protocol', () => {
    expect(serializeFrontend({ type: 'Query', sql: 'SELECT 1' }).equals(pgSerialize.query('SELECT 1'))).toBe(true);
    expect(serializeFrontend({ type: 'Parse', name: 'a', sql: 'SELECT $1', paramTypes: [23] }).equals(pgSerialize.parse({ name: 'a', text: 'SELECT $1', types: [23] }))).toBe(true);
    expect(serializeFrontend({ type: 'Execute', portal: 'p', maxRows: 5 }).equals(pgSerialize.execute({ portal: 'p', rows: 5 }))).toBe(true);
    expect(serializeFrontend({ type: 'Describe', target: 'S', name: 'a' }).equals(pgSerialize.describe({ type: 'S', name: 'a' }))).toBe(true);
    expect(serializeFrontend({ type: 'Close', target: 'P', name: 'b' }).equals(pgSerialize.close({ type: 'P', name: 'b' }))).toBe(true);
    expect(serializeFrontend({ type: 'Sync' }).equals(pgSerialize.sync())).toBe(true);
    expect(serializeFrontend({ type: 'Flush' }).equals(pgSerialize.flush())).toBe(true);
    expect(serializeFrontend({ type: 'Terminate' }).equals(pgSerialize.end())).toBe(true);
    expect(serializeFrontend({ type: 'CopyData', data: hex('0102') }).equals(pgSerialize.copyData(hex('0102')))).toBe(true);
    expect(serializeFrontend({ type: 'CopyDone' }).equals(pgSerialize.copyDone())).toBe(true);
    expect(serializeFrontend({ type: 'CopyFail', message: 'no' }).equals(pgSerialize.copyFail('no'))).toBe(true);
    const bind = pgSerialize.bind({ portal: 'p', statement: 's', values: ['1', null, Buffer.from([0xff])], binary: true });
    expect(serializeFrontend(parseFrontend(bind[0], bind.subarray(5))).equals(bind)).toBe(true);
  });
});

describe('round trips (property test, seeded)', () => {
  let seed = 0x2545f491;
  const rnd = (n: number) => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const ALPHABET = ['a', 'Z', ' ', ';', "'", 'é', 'ß', '\u{1F600}', '\uFEFF', '中', '\n', '$1'];
  const str = () => Array.from({ length: rnd(12) }, () => ALPHABET[rnd(ALPHABET.length)]).join('');
  const bytes = () => Buffer.from(Array.from({ length: rnd(20) }, () => rnd(256)));
  const fmt = () => rnd(2);
  function values(formats: number[], n: number): (Buffer | null)[] {
    return Array.from({ length: n }, (_, i) => {
      if (rnd(5) === 0) return null;
      const f = formats.length === 0 ? 0 : formats.length === 1 ? formats[0] : formats[i];
      return f === 0 ? Buffer.from(str()) : bytes();
    });
  }
  function random(): FrontendMessage {
    switch (rnd(13)) {
      case 0: return { type: 'Query', sql: str() };
      case 1: return { type: 'Parse', name: str(), sql: str(), paramTypes: Array.from({ length: rnd(4) }, () => rnd(2 ** 31) * 2) };
      case 2: {
        const n = rnd(5);
        const paramFormats = Array.from({ length: [0, 1, n][rnd(3)] }, fmt);
        return { type: 'Bind', portal: str(), statement: str(), paramFormats, params: values(paramFormats, n), resultFormats: Array.from({ length: rnd(3) }, fmt) };
      }
      case 3: return { type: 'Execute', portal: str(), maxRows: rnd(2 ** 31) };
      case 4: return { type: 'Describe', target: rnd(2) ? 'S' : 'P', name: str() };
      case 5: return { type: 'Close', target: rnd(2) ? 'S' : 'P', name: str() };
      case 6: return { type: 'Sync' };
      case 7: return { type: 'Flush' };
      case 8: return { type: 'CopyData', data: bytes() };
      case 9: return { type: 'CopyDone' };
      case 10: return { type: 'CopyFail', message: str() };
      case 11: {
        const n = rnd(3);
        const argFormats = Array.from({ length: [0, 1, n][rnd(3)] }, fmt);
        return { type: 'FunctionCall', fnOid: rnd(100000), argFormats, args: values(argFormats, n), resultFormat: fmt() };
      }
      default: return { type: 'Terminate' };
    }
  }

  it('parse(serialize(m)) equals m, and re-serialises to the same bytes, across a framed stream', () => {
    const msgs = Array.from({ length: 3000 }, random);
    const wire = msgs.map(serializeFrontend);
    const f = new FrontendFramer();
    f.startupDone();
    const all = Buffer.concat(wire);
    const framed: FrontendRaw[] = [];
    for (let i = 0; i < all.length; ) {
      const n = 1 + rnd(200);
      framed.push(...f.push(all.subarray(i, i + n)));
      i += n;
    }
    expect(framed).toHaveLength(msgs.length);
    framed.forEach((raw, i) => {
      const m = parseFrontend(raw.type, raw.body);
      expect(m).toEqual(msgs[i]);
      expect(serializeFrontend(m).equals(wire[i])).toBe(true);
    });
  });
});
