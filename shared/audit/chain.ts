// The hash chain every audit copy is checked against: canonical JSON, an event's hash, its stored line.
//
// An event's `hash` is SHA-256 over the canonical JSON of the event without its `hash` field; the next
// event of the same chain carries it as `prev`. Canonical JSON (keys sorted at every level, no
// whitespace, `undefined` dropped) makes the hash independent of how a store or an exporter happens to
// order keys (PostgreSQL, SIEM pipelines and `jq` all reorder), so one verifier works on every copy.
// Shared by the agent (sealing), the CLI (`audit verify`, `evidence`) and, re-stated in plain
// JavaScript, by an evidence bundle's verify.mjs.
import { hash } from 'node:crypto';

export const GENESIS = '0'.repeat(64);

/** The chain fields every audit event carries; the rest of the event is opaque to the chain. */
export interface ChainRecord {
  seq: number;
  ts: string;
  prev: string;
  hash: string;
  agentId: string;
}

/** Deterministic JSON: sorted keys, no whitespace, `undefined` members dropped, `toJSON` honoured. */
export function canonicalJson(v: unknown): string {
  // Fast path: copy with keys inserted in sorted order, then one native stringify (~4× faster than
  // stringifying leaf by leaf). Objects with array-index keys ("2", "10") cannot be ordered that way
  // (JavaScript iterates those numerically first), so they take the slow path.
  try {
    return JSON.stringify(sorted(v)) ?? 'null';
  } catch (err) {
    if (err !== INDEX_KEY) throw err;
    return slowCanonical(v);
  }
}

const INDEX_KEY = Symbol('index key');
const isIndex = (k: string) => k.length < 11 && /^(?:0|[1-9]\d*)$/.test(k);

function sorted(v: unknown): unknown {
  if (v === null || typeof v !== 'object') return typeof v === 'bigint' ? v.toString() : v;
  const o = v as { toJSON?: () => unknown };
  if (typeof o.toJSON === 'function') return sorted(o.toJSON());
  if (Array.isArray(v)) return v.map(sorted);
  const keys = Object.keys(v);
  if (keys.length && isIndex(keys[0])) throw INDEX_KEY;
  const out: Record<string, unknown> = {};
  for (const k of keys.sort()) out[k] = sorted((v as Record<string, unknown>)[k]);
  return out;
}

function slowCanonical(v: unknown): string {
  if (v === null || typeof v !== 'object') {
    if (typeof v === 'bigint') return JSON.stringify(v.toString());
    return JSON.stringify(v) ?? 'null';
  }
  const o = v as { toJSON?: () => unknown };
  if (typeof o.toJSON === 'function') return slowCanonical(o.toJSON());
  if (Array.isArray(v)) return '[' + v.map((x) => (x === undefined || typeof x === 'function' ? 'null' : slowCanonical(x))).join(',') + ']';
  let out = '';
  for (const k of Object.keys(v).sort()) {
    const x = (v as Record<string, unknown>)[k];
    if (x === undefined || typeof x === 'function') continue;
    out += (out ? ',' : '') + JSON.stringify(k) + ':' + slowCanonical(x);
  }
  return '{' + out + '}';
}

/** Canonical JSON of an event without its `hash` (the hashed content). */
export function hashedContent(e: object & { hash?: string }): string {
  const { hash: _ignored, ...rest } = e;
  return canonicalJson(rest);
}

/** One-shot hashing (no Hash object per event: a third of the cost on the append path). */
export function sha256(s: string): string {
  return hash('sha256', s, 'hex');
}

export function hashEvent(e: object & { hash?: string }): string {
  return sha256(hashedContent(e));
}

/**
 * The stored form of a sealed event: the hashed content with `"hash"` spliced in first. Not canonical
 * itself (hash is not in key order) but it needs no second serialisation, and the verifier recomputes
 * the canonical form anyway. `hash` first also keeps `grep`/`cut` on the files easy.
 */
export function storedLine(content: string, hash: string): string {
  return content === '{}' ? `{"hash":"${hash}"}` : `{"hash":"${hash}",` + content.slice(1);
}

/** The content `storedLine` spliced its hash into, or undefined when the line is not in that form. */
export function contentOfStoredLine(line: string): string | undefined {
  // `{"hash":"` (9) + 64 hex + `",` → the content's members start at 75
  if (line.length < 76 || !line.startsWith('{"hash":"') || line.charCodeAt(73) !== 34 || line.charCodeAt(74) !== 44) return undefined;
  return '{' + line.slice(75);
}

