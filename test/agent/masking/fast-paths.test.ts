// The masked-read fast paths against their slow, obvious definitions: the in-place DataRow rewrite
// (redact, partial, hash, null written straight into one output buffer) must give, for every field,
// exactly what maskValue gives; the JS HMAC must be HMAC-SHA-256 (node:crypto) for every key and value
// length; the framer must say when a read ended inside a stream of rows; coalesced tunnel frames must
// carry the bytes of every part in order.
import { describe, expect, it } from 'vitest';
import { createHmac, randomBytes } from 'node:crypto';
import { BackendFramer, commandComplete, dataRow, READY_IDLE } from '../../../agent/src/pgwire/backend.js';
import type { ColumnMask } from '../../../agent/src/masking/lineage.js';
import { copyMasker, maskDataRows, MaskingError, RowMasker, unescapeText } from '../../../agent/src/masking/rewrite.js';
import { maskValue, parseStrategy, type Strategy } from '../../../agent/src/masking/strategies.js';
import { HmacSha256 } from '../../../agent/src/masking/hmac.js';
import { decodeFrame, encodeDataParts, FrameType } from '../../../shared/tunnel/frame.js';

const KEY = Buffer.from('fast-path-test-key');
const TEXT = 25;
const INT4 = 23;

/** A small deterministic PRNG, so a failure can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const ALPHABET = ['a', 'Z', '7', '@', '.', ' ', 'é', 'ß', '東', '京', '😀', '\\', '"'];

function randomText(r: () => number, max: number): string {
  let s = '';
  const n = Math.floor(r() * max);
  for (let i = 0; i < n; i++) s += ALPHABET[Math.floor(r() * ALPHABET.length)];
  return s;
}

/** DataRow fields back from wire bytes: null for SQL NULL. */
function fieldsOf(msg: Buffer): (Buffer | null)[] {
  const n = msg.readInt16BE(5);
  const out: (Buffer | null)[] = [];
  let i = 7;
  for (let c = 0; c < n; c++) {
    const len = msg.readInt32BE(i);
    i += 4;
    if (len < 0) out.push(null);
    else {
      out.push(msg.subarray(i, i + len));
      i += len;
    }
  }
  expect(i).toBe(msg.length);
  expect(msg.readInt32BE(1)).toBe(msg.length - 1);
  return out;
}

/** Splits a buffer of whole backend messages into messages. */
function messages(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; ) {
    const end = i + 1 + buf.readInt32BE(i + 1);
    out.push(buf.subarray(i, end));
    i = end;
  }
  return out;
}

describe('DataRow rewrite in place', () => {
  const strategies: Record<string, Strategy | undefined> = {
    clear: undefined,
    redact: parseStrategy('redact'),
    partial0: parseStrategy({ partial: 0 }),
    partial4: parseStrategy({ partial: 4 }),
    hash: parseStrategy('hash'),
    null: parseStrategy('null'),
  };

  for (const [name, strategy] of Object.entries(strategies)) {
    it(`gives maskValue's bytes for every field: ${name} on text, split reads, UTF-8, NULLs, empty values`, () => {
      const r = rng(name.length * 7919);
      const plan: ColumnMask[] = [{ masked: false }, strategy ? { masked: true, strategy, sources: ['t.c'] } : { masked: false }, { masked: false }];
      const rows: (string | null)[][] = [];
      const parts: Buffer[] = [];
      for (let k = 0; k < 3000; k++) {
        const v = r() < 0.1 ? null : randomText(r, k % 97 === 0 ? 200 : 20);
        const row = [String(k), v, r() < 0.2 ? null : randomText(r, 60)];
        rows.push(row);
        parts.push(dataRow(row));
      }
      parts.push(commandComplete('SELECT 3000'), READY_IDLE);
      const all = Buffer.concat(parts);
      const masker = new RowMasker(plan, [0], [INT4, TEXT, TEXT], { hashKey: KEY });
      const framer = new BackendFramer();
      const out: Buffer[] = [];
      const kept: Buffer[] = []; // the outputs themselves: a later read's rewrite must not touch an earlier output
      // Reads of odd sizes, so rows are split across reads as a socket splits them.
      for (let i = 0, size = 1; i < all.length; i += size, size = 1 + Math.floor(r() * 5000)) {
        const n = framer.push(Buffer.from(all.subarray(i, i + size)));
        if (n > 0) {
          const o = maskDataRows(framer.buffer, framer.types, framer.offsets, 0, n, masker);
          kept.push(o);
          out.push(Buffer.from(o));
        }
      }
      expect(Buffer.concat(kept).equals(Buffer.concat(out))).toBe(true);
      const msgs = messages(Buffer.concat(out));
      expect(msgs).toHaveLength(rows.length + 2);
      rows.forEach((row, k) => {
        const got = fieldsOf(msgs[k]);
        const v = row[1] === null ? null : Buffer.from(row[1]);
        const want = strategy ? maskValue(strategy, TEXT, 0, v, { hashKey: KEY }) : v;
        expect(got[0]?.toString()).toBe(row[0]);
        expect(got[1] === null ? null : got[1].toString('hex')).toBe(want === null ? null : want.toString('hex'));
        expect(got[2] === null ? null : got[2].toString()).toBe(row[2]);
      });
      expect(msgs[rows.length].equals(commandComplete('SELECT 3000'))).toBe(true);
    });
  }

  it('partial(keep) gives maskValue\'s bytes for ASCII and UTF-8 values of every length around keep and the 4-byte word', () => {
    for (const keep of [0, 1, 3, 4, 5, 8]) {
      const strategy = parseStrategy({ partial: keep });
      const masker = new RowMasker([{ masked: false }, { masked: true, strategy, sources: ['t.c'] }, { masked: false }], [0], [INT4, TEXT, TEXT], {});
      for (let n = 0; n <= 24; n++) {
        for (const v of ['x'.repeat(n), 'é'.repeat(n), `${'a'.repeat(n)}é`, `é${'b'.repeat(n)}`]) {
          const row = dataRow(['1', v, 'tail']);
          const got = fieldsOf(masker.rewrite(row, 0, row.length));
          expect(got[1]!.toString('hex'), `keep ${keep}, value ${JSON.stringify(v)}`).toBe(maskValue(strategy, TEXT, 0, Buffer.from(v))!.toString('hex'));
          expect(got[2]!.toString()).toBe('tail');
        }
      }
    }
  });

  it('hash of text is the hex HMAC-SHA-256 of the value under the connection key', () => {
    const masker = new RowMasker([{ masked: true, strategy: parseStrategy('hash'), sources: ['t.c'] }], [0], [TEXT], { hashKey: KEY });
    const row = dataRow(['p12@example.org']);
    const [field] = fieldsOf(masker.rewrite(row, 0, row.length));
    expect(field!.toString('latin1')).toBe(createHmac('sha256', KEY).update('p12@example.org').digest('hex'));
  });

  it('refuses a malformed row instead of forwarding it (fail closed)', () => {
    const masker = new RowMasker([{ masked: true, strategy: parseStrategy('redact'), sources: ['t.c'] }], [0], [TEXT], {});
    const row = dataRow(['secret value']);
    row.writeInt32BE(1000, 7); // a field length past the end of the message
    expect(() => masker.rewrite(row, 0, row.length)).toThrow(MaskingError);
  });
});

describe('COPY text rewrite into one buffer per payload', () => {
  const CHARS = ['a', 'Z', '7', '@', ' ', 'é', '😀', '\\', '\t', '\n', '\r', '|', '\b', 'N'];

  /** COPY text escaping as PostgreSQL writes it (CopyAttributeOutText), for a delimiter. */
  function escapeAsServer(v: string, delim: string): string {
    let o = '';
    for (const ch of v) {
      if (ch === '\\') o += '\\\\';
      else if (ch === '\n') o += '\\n';
      else if (ch === '\r') o += '\\r';
      else if (ch === '\t') o += '\\t';
      else if (ch === '\b') o += '\\b';
      else if (ch === delim) o += '\\' + ch;
      else o += ch;
    }
    return o;
  }

  /** The masked field the slow, obvious way: unescape, maskValue, escape (backslash, \n, \r, \t, delimiter). */
  function reference(field: string, strategy: Strategy, delim: string, nullStr: string): string {
    if (field === nullStr) return nullStr;
    const v = maskValue(strategy, TEXT, 0, unescapeText(Buffer.from(field)), { hashKey: KEY });
    if (v === null) return nullStr;
    let o = '';
    for (const ch of v.toString()) o += ch === '\\' ? '\\\\' : ch === '\n' ? '\\n' : ch === '\r' ? '\\r' : ch === '\t' ? '\\t' : ch === delim ? '\\' + ch : ch;
    return o;
  }

  for (const [name, strategy] of Object.entries({ redact: parseStrategy('redact'), partial3: parseStrategy({ partial: 3 }), hash: parseStrategy('hash'), null: parseStrategy('null') })) {
    for (const fmt of [{ delim: '\t', nullStr: '\\N' }, { delim: '|', nullStr: 'nil' }]) {
      it(`${name}, delimiter ${JSON.stringify(fmt.delim)}: every masked field as unescape → maskValue → escape, clear fields byte for byte, rows split anywhere`, () => {
        const r = rng(name.length * 131 + fmt.delim.charCodeAt(0));
        const field = () => (r() < 0.1 ? fmt.nullStr : escapeAsServer(Array.from({ length: Math.floor(r() * 12) }, () => CHARS[Math.floor(r() * CHARS.length)]).join(''), fmt.delim));
        const rows = Array.from({ length: 2000 }, () => [field(), field(), field()]);
        const input = Buffer.from(rows.map((f) => f.join(fmt.delim) + '\n').join(''));
        const masker = copyMasker([{ masked: false }, { masked: true, strategy, sources: ['t.c'] }, { masked: false }], [TEXT, TEXT, TEXT], { format: 'text', delimiter: fmt.delim, null: fmt.nullStr }, { hashKey: KEY });
        const out: Buffer[] = [];
        for (let i = 0, size = 1; i < input.length; i += size, size = 1 + Math.floor(r() * 3000)) out.push(Buffer.from(masker.push(input.subarray(i, i + size))));
        masker.end();
        const want = rows.map(([a, b, c]) => [a, reference(b, strategy, fmt.delim, fmt.nullStr), c].join(fmt.delim) + '\n').join('');
        expect(Buffer.concat(out).toString()).toBe(want);
      });
    }
  }
});

describe('COPY csv rewrite into one buffer per payload', () => {
  const CHARS = ['a', 'Z', '7', ' ', 'é', '😀', '"', "'", '\\', ',', ';', '\n', '\r'];

  /** A value as PostgreSQL's CSV output writes it (CopyAttributeOutCSV): quoted when it must be. */
  function csvOut(v: string, o: { delim: string; quote: string; escape: string; nullStr: string }): string {
    const must = v === o.nullStr || v === '' || [...v].some((ch) => ch === o.delim || ch === o.quote || ch === '\n' || ch === '\r' || ch === o.escape);
    if (!must) return v;
    let s = o.quote;
    for (const ch of v) s += ch === o.quote || ch === o.escape ? o.escape + ch : ch;
    return s + o.quote;
  }

  const formats = [
    { delim: ',', quote: '"', escape: '"', nullStr: '' },
    { delim: ';', quote: "'", escape: '\\', nullStr: 'NULL' },
  ];
  for (const [name, strategy] of Object.entries({ redact: parseStrategy('redact'), partial3: parseStrategy({ partial: 3 }), hash: parseStrategy('hash'), null: parseStrategy('null') })) {
    for (const o of formats) {
      it(`${name}, delimiter ${o.delim} quote ${o.quote} escape ${o.escape}: masked values decoded, masked and quoted; clear fields byte for byte`, () => {
        const r = rng(name.length * 977 + o.delim.charCodeAt(0));
        const value = () => (r() < 0.1 ? null : Array.from({ length: Math.floor(r() * 10) }, () => CHARS[Math.floor(r() * CHARS.length)]).join(''));
        const rows = Array.from({ length: 2000 }, () => [value(), value(), value()]);
        const field = (v: string | null) => (v === null ? o.nullStr : csvOut(v, o));
        const input = Buffer.from(rows.map((f) => f.map(field).join(o.delim) + '\n').join(''));
        const fmt = { format: 'csv' as const, delimiter: o.delim, quote: o.quote, escape: o.escape, null: o.nullStr };
        const masker = copyMasker([{ masked: false }, { masked: true, strategy, sources: ['t.c'] }, { masked: false }], [TEXT, TEXT, TEXT], fmt, { hashKey: KEY });
        const out: Buffer[] = [];
        for (let i = 0, size = 1; i < input.length; i += size, size = 1 + Math.floor(r() * 3000)) out.push(Buffer.from(masker.push(input.subarray(i, i + size))));
        masker.end();
        const masked = (v: string | null) => {
          const m = v === null ? null : maskValue(strategy, TEXT, 0, Buffer.from(v), { hashKey: KEY });
          if (m === null) return o.nullStr;
          let s = o.quote;
          for (const ch of m.toString()) s += ch === o.quote || ch === o.escape ? o.escape + ch : ch;
          return s + o.quote;
        };
        const want = rows.map(([a, b, c]) => [field(a), masked(b), field(c)].join(o.delim) + '\n').join('');
        expect(Buffer.concat(out).toString()).toBe(want);
      });
    }
  }
});

describe('COPY binary rewrite into one buffer per payload', () => {
  const field = (v: Buffer | null) => (v === null ? Buffer.from([0xff, 0xff, 0xff, 0xff]) : Buffer.concat([Buffer.from([v.length >>> 24, v.length >>> 16, v.length >>> 8, v.length]), v]));
  const SIG = Buffer.concat([Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1'), Buffer.alloc(8)]);
  const TRAILER = Buffer.from([0xff, 0xff]);

  for (const [name, strategy] of Object.entries({ redact: parseStrategy('redact'), partial4: parseStrategy({ partial: 4 }), hash: parseStrategy('hash'), null: parseStrategy('null') })) {
    it(`${name}: masked fields as maskValue gives them in binary format, clear fields and framing byte for byte, tuples split anywhere`, () => {
      const r = rng(name.length * 4099);
      const rows = Array.from({ length: 1500 }, (_, k) => {
        const int = Buffer.alloc(4);
        int.writeInt32BE(k);
        return [int, r() < 0.1 ? null : Buffer.from(randomText(r, 30)), r() < 0.1 ? null : Buffer.from(randomText(r, 30))];
      });
      const tuple = (fs: (Buffer | null)[]) => Buffer.concat([Buffer.from([0, fs.length]), ...fs.map(field)]);
      const input = Buffer.concat([SIG, ...rows.map(tuple), TRAILER]);
      const masker = copyMasker([{ masked: false }, { masked: true, strategy, sources: ['t.c'] }, { masked: false }], [INT4, TEXT, TEXT], { format: 'binary' }, { hashKey: KEY });
      const out: Buffer[] = [];
      for (let i = 0, size = 1; i < input.length; i += size, size = 1 + Math.floor(r() * 3000)) out.push(Buffer.from(masker.push(input.subarray(i, i + size))));
      masker.end();
      const want = Buffer.concat([SIG, ...rows.map(([a, b, c]) => tuple([a, b === null ? null : maskValue(strategy, TEXT, 1, b, { hashKey: KEY }), c])), TRAILER]);
      expect(Buffer.concat(out).toString('hex')).toBe(want.toString('hex'));
    });
  }
});

describe('HmacSha256', () => {
  it('equals node:crypto HMAC-SHA-256 for keys of 0–100 bytes and values of 0–200 bytes', () => {
    for (const klen of [0, 1, 31, 32, 63, 64, 65, 100]) {
      const key = randomBytes(klen);
      const mac = new HmacSha256(key);
      for (let n = 0; n <= 200; n++) {
        const v = randomBytes(n + 6);
        expect(mac.digest(v, 3, 3 + n).toString('hex')).toBe(createHmac('sha256', key).update(v.subarray(3, 3 + n)).digest('hex'));
      }
    }
  });
});

describe('BackendFramer.midResult', () => {
  it('is true only while a read ends inside a stream of DataRows', () => {
    const rows = Buffer.concat([dataRow(['1']), dataRow(['2'])]);
    const f = new BackendFramer();
    f.push(rows);
    expect(f.midResult).toBe(true); // ended on a complete DataRow: more may come
    f.push(Buffer.concat([dataRow(['3']).subarray(0, 4)]));
    expect(f.midResult).toBe(true); // a DataRow still incomplete
    f.push(Buffer.concat([dataRow(['3']).subarray(4), commandComplete('SELECT 3'), READY_IDLE]));
    expect(f.midResult).toBe(false); // the result is over
  });
});

describe('encodeDataParts', () => {
  it('carries every part in order in one DATA frame', () => {
    const parts = [Buffer.from('abc'), Buffer.alloc(0), Buffer.from('defgh'), randomBytes(70_000)];
    const frame = decodeFrame(encodeDataParts(42, parts));
    expect(frame.type).toBe(FrameType.Data);
    expect(frame.streamId).toBe(42);
    expect(frame.payload.equals(Buffer.concat(parts))).toBe(true);
  });
});
