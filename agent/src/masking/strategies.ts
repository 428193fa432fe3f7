/**
 * Masking strategies: what a masked value becomes, per type OID and result format.
 *
 * A masked field is always replaced by something the client can decode for the column's type, or by
 * SQL NULL (length -1), which every client decodes for every type. The rule per type:
 *
 * | type (OID)                                   | redact      | partial(N)          | hash                   | null |
 * |----------------------------------------------|-------------|---------------------|------------------------|------|
 * | text 25, varchar 1043, bpchar 1042, name 19, unknown 705 | `***` | `****6789`   | 64 hex chars (HMAC)    | NULL |
 * | json 114 / jsonb 3802                        | `"***"`     | NULL                | `"<hex>"`              | NULL |
 * | xml 142                                      | `***`       | NULL                | NULL                   | NULL |
 * | uuid 2950                                    | NULL        | NULL                | uuid from HMAC bytes   | NULL |
 * | bytea 17                                     | NULL        | NULL                | 32 HMAC bytes          | NULL |
 * | anything else (date, numeric, arrays, records, tsvector, unknown OIDs) | NULL | NULL | NULL          | NULL |
 *
 * In binary format the text-like types carry the same UTF-8 bytes as in text format; jsonb's binary
 * form is a version byte (1) followed by the text. NULL stays NULL (whether a value is NULL is
 * value-free, like `IS NULL`).
 *
 * `hash` is HMAC-SHA-256 over a canonical form of the value (uuid and bytea are canonicalised so text
 * and binary results hash the same), keyed by a secret per connection: equal values give equal
 * hashes, so equality joins and lookups by hashed value still work, but nobody without the key can
 * test a guess offline.
 *
 * Never fail open: `maskerFor` returns a function that cannot throw; on any internal error it yields
 * NULL.
 */
import { HmacSha256 } from './hmac.js';

export type Strategy =
  | { kind: 'redact' }
  | { kind: 'partial'; keep: number }
  | { kind: 'hash' }
  | { kind: 'null' };

/** The forms the configuration file accepts: `redact`, `hash`, `null`, `{ partial: 4 }`. */
export type StrategyConfig = 'redact' | 'hash' | 'null' | { partial: number };

export const REDACT: Strategy = Object.freeze({ kind: 'redact' });
export const NULLIFY: Strategy = Object.freeze({ kind: 'null' });
export const HASH: Strategy = Object.freeze({ kind: 'hash' });

/** Parses a configured strategy; anything not understood is refused (the caller refuses the config). */
export function parseStrategy(v: unknown): Strategy {
  if (v === 'redact') return REDACT;
  if (v === 'hash') return HASH;
  if (v === 'null') return NULLIFY;
  if (typeof v === 'object' && v !== null && 'partial' in v) {
    const keep = (v as { partial: unknown }).partial;
    if (typeof keep === 'number' && Number.isInteger(keep) && keep >= 0 && keep <= 64) return { kind: 'partial', keep };
  }
  throw new Error(`unknown masking strategy ${JSON.stringify(v)}`);
}

export function strategyName(s: Strategy): string {
  return s.kind === 'partial' ? `partial(${s.keep})` : s.kind;
}

/** Type OIDs (pg_type.dat) the strategies know. */
export const TypeOid = {
  bool: 16,
  bytea: 17,
  char: 18,
  name: 19,
  int8: 20,
  int2: 21,
  int4: 23,
  text: 25,
  oid: 26,
  json: 114,
  xml: 142,
  unknown: 705,
  bpchar: 1042,
  varchar: 1043,
  date: 1082,
  timestamp: 1114,
  timestamptz: 1184,
  numeric: 1700,
  uuid: 2950,
  jsonb: 3802,
} as const;

const TEXT_LIKE = new Set<number>([TypeOid.text, TypeOid.varchar, TypeOid.bpchar, TypeOid.name, TypeOid.unknown]);

/** Whether `typeOid` is masked with a text marker (others get a typed value or NULL). */
export function isTextLike(typeOid: number, extraTextOids?: ReadonlySet<number>): boolean {
  return TEXT_LIKE.has(typeOid) || (extraTextOids?.has(typeOid) ?? false);
}

/**
 * One masked field: given the field's bytes `buf[start, end)`, returns the replacement bytes, or
 * `null` for SQL NULL. Must not throw (wrapped by `maskerFor`).
 */
export type FieldMasker = (buf: Buffer, start: number, end: number) => Buffer | null;

export interface FieldMaskerInfo {
  mask: FieldMasker;
  /** A constant replacement (the hot path writes it without calling `mask`); undefined → call mask. */
  constant?: Buffer | null;
  /**
   * Optional fast path of `mask` for values that are never NULL: writes the replacement straight into
   * `out` at `at` (room for `maxBytes`) and returns its length. May throw; the caller then writes NULL.
   */
  write?: (buf: Buffer, start: number, end: number, out: Buffer, at: number) => number;
  /** Upper bound of the replacement's length in bytes, for one-shot output allocation. */
  maxBytes: number;
  /** The replacement depends on the input only through its length or not at all (for tests/docs). */
  kind: Strategy['kind'];
}

export interface MaskerOptions {
  /** HMAC key of the `hash` strategy; required when a column uses `hash` (else NULL is produced). */
  hashKey?: Buffer;
  /** Extra type OIDs to treat as text (citext, domains over text) found in the catalog. */
  extraTextOids?: ReadonlySet<number>;
}

const MARKER = Buffer.from('***');
const JSON_MARKER = Buffer.from('"***"');
const JSONB_MARKER = Buffer.concat([Buffer.from([1]), JSON_MARKER]);
const ALWAYS_NULL: FieldMasker = () => null;

const HEX = '0123456789abcdef';

/** One HmacSha256 per key (its pad blocks are precomputed): keys are per connection, so few. */
const macs = new WeakMap<Buffer, HmacSha256>();
function macFor(key: Buffer): HmacSha256 {
  let m = macs.get(key);
  if (!m) macs.set(key, (m = new HmacSha256(key)));
  return m;
}

function hmac(key: Buffer, data: Buffer): Buffer {
  return macFor(key).digest(data);
}

const HEX_BYTES = Buffer.from('0123456789abcdef', 'latin1');
const scratch = Buffer.alloc(32);

/** The hex HMAC of buf[s, e) written straight into `out` at `at` (64 bytes); returns 64. */
function writeHexHmac(mac: HmacSha256, buf: Buffer, s: number, e: number, out: Buffer, at: number): number {
  mac.digestInto(buf, s, e, scratch, 0);
  for (let i = 0; i < 32; i++) {
    out[at + 2 * i] = HEX_BYTES[scratch[i] >> 4];
    out[at + 2 * i + 1] = HEX_BYTES[scratch[i] & 15];
  }
  return 64;
}

/** Canonical input for the HMAC, so the same value hashes the same in text and binary results. */
function canonical(typeOid: number, format: 0 | 1, v: Buffer): Buffer {
  if (typeOid === TypeOid.uuid && format === 1 && v.length === 16) {
    const h = v.toString('hex');
    return Buffer.from(`${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`);
  }
  if (typeOid === TypeOid.bytea && format === 0 && v.length >= 2 && v[0] === 0x5c && v[1] === 0x78) {
    return Buffer.from(v.subarray(2).toString('latin1'), 'hex'); // '\x…' hex output → raw bytes
  }
  if (typeOid === TypeOid.jsonb && format === 1 && v.length > 0 && v[0] === 1) return v.subarray(1);
  return v;
}

function hexOf(d: Buffer): string {
  let s = '';
  for (let i = 0; i < d.length; i++) s += HEX[d[i] >> 4] + HEX[d[i] & 15];
  return s;
}

/**
 * Keeps the last `keep` characters (code points) of a UTF-8 value and replaces every character
 * before them with one `*`. A value of `keep` characters or fewer is fully replaced: partial
 * masking must never return a whole value.
 */
export function partialText(buf: Buffer, start: number, end: number, keep: number): Buffer {
  let chars = 0;
  for (let i = start; i < end; i++) if ((buf[i] & 0xc0) !== 0x80) chars++;
  if (chars <= keep) {
    return Buffer.alloc(chars, 0x2a);
  }
  // find the byte offset where the last `keep` characters begin
  let cut = end;
  let seen = 0;
  while (seen < keep && cut > start) {
    cut--;
    if ((buf[cut] & 0xc0) !== 0x80) seen++;
  }
  const stars = chars - keep;
  const out = Buffer.allocUnsafe(stars + (end - cut));
  out.fill(0x2a, 0, stars);
  for (let i = cut, j = stars; i < end; i++, j++) out[j] = buf[i];
  return out;
}

function guard(fn: FieldMasker): FieldMasker {
  return (buf, start, end) => {
    try {
      return fn(buf, start, end);
    } catch {
      return null; // never fail open
    }
  };
}

/**
 * The masker for one column: strategy × type OID × format (0 text, 1 binary). See the table at the
 * top of this file.
 */
export function maskerFor(strategy: Strategy, typeOid: number, format: 0 | 1, opts: MaskerOptions = {}): FieldMaskerInfo {
  const constant = (c: Buffer | null): FieldMaskerInfo => ({
    mask: () => c,
    constant: c,
    maxBytes: c ? c.length : 0,
    kind: strategy.kind,
  });
  try {
    const textLike = isTextLike(typeOid, opts.extraTextOids);
    switch (strategy.kind) {
      case 'null':
        return constant(null);
      case 'redact':
        if (textLike || typeOid === TypeOid.xml) return constant(MARKER);
        if (typeOid === TypeOid.json) return constant(JSON_MARKER);
        if (typeOid === TypeOid.jsonb) return constant(format === 1 ? JSONB_MARKER : JSON_MARKER);
        return constant(null);
      case 'partial': {
        if (!textLike) return constant(null);
        const keep = strategy.keep;
        return {
          mask: guard((buf, s, e) => partialText(buf, s, e, keep)),
          maxBytes: -1, // ≤ the input's length: partialText never grows a value
          kind: 'partial',
        };
      }
      case 'hash': {
        const key = opts.hashKey;
        if (!key || key.length === 0) return constant(null); // no key: cannot hash, fail closed
        if (textLike) {
          const mac = macFor(key);
          return {
            mask: guard((buf, s, e) => {
              const out = Buffer.allocUnsafe(64);
              writeHexHmac(mac, buf, s, e, out, 0);
              return out;
            }),
            write: (buf, s, e, out, at) => writeHexHmac(mac, buf, s, e, out, at),
            maxBytes: 64,
            kind: 'hash',
          };
        }
        if (typeOid === TypeOid.json || typeOid === TypeOid.jsonb) {
          const prefix = typeOid === TypeOid.jsonb && format === 1 ? '\x01' : '';
          return {
            mask: guard((buf, s, e) => Buffer.from(`${prefix}"${hexOf(hmac(key, canonical(typeOid, format, buf.subarray(s, e))))}"`, 'latin1')),
            maxBytes: 67,
            kind: 'hash',
          };
        }
        if (typeOid === TypeOid.uuid) {
          return {
            mask: guard((buf, s, e) => {
              const d = hmac(key, canonical(typeOid, format, buf.subarray(s, e))).subarray(0, 16);
              d[6] = (d[6] & 0x0f) | 0x80; // version 8 (custom), RFC 9562
              d[8] = (d[8] & 0x3f) | 0x80;
              if (format === 1) return Buffer.from(d);
              const h = hexOf(d);
              return Buffer.from(`${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`, 'latin1');
            }),
            maxBytes: 36,
            kind: 'hash',
          };
        }
        if (typeOid === TypeOid.bytea) {
          return {
            mask: guard((buf, s, e) => {
              const d = hmac(key, canonical(typeOid, format, buf.subarray(s, e)));
              return format === 1 ? d : Buffer.from(`\\x${hexOf(d)}`, 'latin1');
            }),
            maxBytes: 66,
            kind: 'hash',
          };
        }
        return constant(null);
      }
    }
  } catch {
    // fall through
  }
  return { mask: ALWAYS_NULL, constant: null, maxBytes: 0, kind: 'null' };
}

/** Masks one value given as a Buffer (or null); for messages, COPY and tests. Never throws. */
export function maskValue(strategy: Strategy, typeOid: number, format: 0 | 1, value: Buffer | null, opts: MaskerOptions = {}): Buffer | null {
  if (value === null) return null;
  const m = maskerFor(strategy, typeOid, format, opts);
  try {
    return m.mask(value, 0, value.length);
  } catch {
    return null;
  }
}
