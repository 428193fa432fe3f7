// The store's specialised event serializer must produce exactly the canonical JSON every verifier
// recomputes (shared/audit/chain.ts): one differing byte and the chain would not verify. Compared on
// events generated from a seeded source: unicode (astral, lone surrogates, controls), nested objects,
// undefined members, index-like keys, large and odd numbers, bigints, dates, shared identities.
import { describe, expect, it } from 'vitest';
import { eventContent } from '../../../agent/src/audit/event-json.js';
import { hashedContent, identityOf, makeStatementEvent, type AuditEvent, type EventType } from '../../../agent/src/audit/events.js';
import { rng, type Rng } from '../../harness/rng.js';

const TYPES: EventType[] = ['session_start', 'session_end', 'statement', 'statement_result', 'refused', 'async_message', 'attestation'];
const CHARS = ['a', 'Z', '0', ' ', '"', '\\', '\n', '\u0000', '\u001f', '\u007f', 'é', 'ß', '中', '\u2028', '😀', '\ud800', '\udfff', '$', '{', ','];
const NUMBERS = [0, -0, 1, -1, 0.1, 1e21, -1e-7, 2 ** 53, 2 ** 53 + 2, Number.MAX_VALUE, Number.MIN_VALUE, NaN, Infinity, -Infinity, 123456789.125];

function str(r: Rng, max = 12): string {
  return Array.from({ length: r.int(max) }, () => r.pick(CHARS)).join('');
}

function key(r: Rng): string {
  return r.pick([() => str(r, 6), () => String(r.int(20)), () => r.pick(['sql', 'rows', 'decision', 'rule', 'a', 'b', '__proto_', 'toJSON_'])])();
}

function value(r: Rng, depth: number): unknown {
  const k = r.int(depth > 2 ? 7 : 10);
  switch (k) {
    case 0:
      return str(r, 40);
    case 1:
      return r.pick(NUMBERS);
    case 2:
      return r.next() * 10 ** r.int(25) * (r.chance(0.5) ? -1 : 1);
    case 3:
      return r.chance(0.5);
    case 4:
      return r.chance(0.5) ? null : undefined;
    case 5:
      return BigInt(r.int(1e9)) * 10n ** BigInt(r.int(30));
    case 6:
      return new Date(r.int(2 ** 41));
    case 7:
      return Array.from({ length: r.int(5) }, () => value(r, depth + 1));
    default:
      return object(r, depth + 1);
  }
}

function object(r: Rng, depth: number): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (let i = r.int(7); i > 0; i--) o[key(r)] = value(r, depth);
  return o;
}

function event(r: Rng, identities: ReturnType<typeof identityOf>[]): Omit<AuditEvent, 'hash'> {
  return {
    seq: r.pick([1, r.int(2 ** 31), 2 ** 53 - 1]),
    ts: new Date(r.int(2 ** 42)).toISOString(),
    prev: r.bytes(32).toString('hex'),
    type: r.pick(TYPES),
    sessionId: r.chance(0.8) ? `s-${r.int(1000)}` : undefined,
    agentId: r.pick(['agent-a', 'a.b_c-1']),
    identity: r.chance(0.7) ? r.pick(identities) : r.chance(0.5) ? { sub: str(r), issuer: str(r), claims: object(r, 1) } : undefined,
    connection: r.chance(0.8) ? str(r, 10) : undefined,
    data: object(r, 0),
  };
}

describe('eventContent', () => {
  it('is byte-identical to canonical JSON on 20 000 generated events', () => {
    const r = rng(15);
    const identities = Array.from({ length: 5 }, (_, i) =>
      identityOf({ sub: `sub-${i}-${str(r)}`, issuer: 'https://idp.test', email: i % 2 ? undefined : 'a@b.test', groups: i % 3 ? ['g', str(r)] : [], claims: { repository: str(r), run_id: r.int(1e6), other: 'dropped' } }),
    );
    for (let i = 0; i < 20_000; i++) {
      const e = event(r, identities);
      const want = hashedContent(e);
      const got = eventContent(e);
      if (got !== want) expect({ event: e, got }).toEqual({ event: e, got: want });
    }
  });

  it('matches on the events sessions write, with the identity reused across them', () => {
    const who = { sub: 'alice', issuer: 'https://idp.test', groups: ['data-eng'], claims: { repository: 'acme/etl', jti: 'x' } };
    const first = makeStatementEvent({ sessionId: 's1', who, connection: 'db', sql: "SELECT 'é😀'", params: ['1', null, '***'], decision: 'allow', rule: 'P5' });
    const second = makeStatementEvent({ sessionId: 's1', who, connection: 'db', sql: 'SELECT 2', decision: 'block', rule: undefined });
    expect(first.identity).toBe(second.identity);
    for (const [seq, e] of [first, second].entries()) {
      const sealed = { ...e, seq: seq + 1, ts: '2026-01-01T00:00:00.000Z', prev: '0'.repeat(64), agentId: 'agent-a', data: e.data };
      expect(eventContent(sealed)).toBe(hashedContent(sealed));
    }
  });

  it('falls back to the general serializer for data it does not special-case', () => {
    const base = { seq: 1, ts: 't', prev: 'p', agentId: 'a', type: 'refused' as const };
    for (const data of [{ toJSON: () => ({ z: 1, a: [2] }) }, Object.assign(Object.create({ inherited: 1 }) as object, { own: 2 }), { 10: 'x', 2: 'y' }]) {
      const e = { ...base, data: data as Record<string, unknown> };
      expect(eventContent(e)).toBe(hashedContent(e));
    }
  });
});
