// The hashed content of an event as the store seals it, built for that one shape: the envelope's keys
// are written in their canonical (sorted) order by hand, leaves go through the native JSON.stringify,
// and an identity's JSON is built once per Identity object (a session reuses one for all its events).
// The output is byte-identical to `hashedContent` (canonical JSON, shared/audit/chain.ts), which
// verifiers recompute; event-json.test.ts compares the two on generated events. Anything unusual in
// `data` (a toJSON, an array) goes through the general serializer.
import type { AuditEvent } from './events.js';
import { canonicalJson, hashedContent } from './events.js';

/** Canonical JSON of identities seen, per object: identities are built once per session and not mutated. */
const identityJson = new WeakMap<object, string>();

/** JSON of one member value; undefined when canonical JSON drops the member. */
function valueJson(v: unknown): string | undefined {
  switch (typeof v) {
    case 'string':
    case 'number':
      return JSON.stringify(v);
    case 'boolean':
      return v ? 'true' : 'false';
    case 'bigint':
      return JSON.stringify(v.toString());
    case 'object':
      if (v === null) return 'null';
      // Bind parameters: an array of strings, numbers, booleans and nulls is its own canonical JSON.
      if (Array.isArray(v) && v.every(isScalar)) return JSON.stringify(v);
      return canonicalJson(v);
    default:
      return undefined; // undefined, function, symbol
  }
}

function isScalar(x: unknown): boolean {
  return x === null || typeof x === 'string' || typeof x === 'number' || typeof x === 'boolean';
}

/** `,"key":value`, or nothing when canonical JSON drops the member. */
function member(key: string, v: unknown): string {
  const j = valueJson(v);
  return j === undefined ? '' : `,"${key}":${j}`;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return (proto === Object.prototype || proto === null) && typeof (v as { toJSON?: unknown }).toJSON !== 'function';
}

function objectJson(o: Record<string, unknown>): string {
  let out = '';
  const keys = Object.keys(o);
  // The event constructors write their data's keys in order already: check instead of sorting.
  for (let i = 1; i < keys.length; i++) {
    if (keys[i - 1] > keys[i]) {
      keys.sort();
      break;
    }
  }
  for (const k of keys) {
    const j = valueJson(o[k]);
    if (j !== undefined) out += (out ? ',' : '') + JSON.stringify(k) + ':' + j;
  }
  return '{' + out + '}';
}

function identityFragment(identity: object): string {
  let j = identityJson.get(identity);
  if (j === undefined) identityJson.set(identity, (j = canonicalJson(identity)));
  return j;
}

/** `hashedContent(e)` for an event being sealed (no `hash` yet). */
export function eventContent(e: Omit<AuditEvent, 'hash'>): string {
  const { data, identity } = e;
  if (!isPlainObject(data) || (identity !== undefined && !isPlainObject(identity))) return hashedContent(e);
  // Keys in sorted order: agentId, connection, data, identity, prev, seq, sessionId, ts, type.
  const members =
    member('agentId', e.agentId) +
    member('connection', e.connection) +
    ',"data":' +
    objectJson(data) +
    (identity === undefined ? '' : ',"identity":' + identityFragment(identity)) +
    member('prev', e.prev) +
    member('seq', e.seq) +
    member('sessionId', e.sessionId) +
    member('ts', e.ts) +
    member('type', e.type);
  return '{' + members.slice(1) + '}'; // data is always there: drop the first member's comma
}
