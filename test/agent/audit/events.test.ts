import { describe, expect, it } from 'vitest';
import { canonicalJson, hashEvent, identityOf, makeRefusedEvent, makeSessionStartEvent } from '../../../agent/src/audit/events.js';

describe('canonicalJson', () => {
  it.each([
    { desc: 'sorts keys at every level', v: { b: 1, a: { d: [{ z: 1, y: 2 }], c: null } }, want: '{"a":{"c":null,"d":[{"y":2,"z":1}]},"b":1}' },
    { desc: 'drops undefined members, nulls them in arrays', v: { a: undefined, b: [undefined, 1] }, want: '{"b":[null,1]}' },
    { desc: 'orders index-like keys as strings', v: { 10: 'x', 2: 'y', a: 1 }, want: '{"10":"x","2":"y","a":1}' },
    { desc: 'uses toJSON', v: { t: new Date(0) }, want: '{"t":"1970-01-01T00:00:00.000Z"}' },
    { desc: 'escapes NUL and quotes', v: { s: 'a\u0000"b' }, want: '{"s":"a\\u0000\\"b"}' },
    { desc: 'bigint as string', v: { n: 12n }, want: '{"n":"12"}' },
  ])('$desc', ({ v, want }) => expect(canonicalJson(v)).toBe(want));

  it('makes the hash independent of key order', () => {
    const a = { seq: 1, ts: 't', prev: 'p', agentId: 'x', type: 'refused' as const, data: { a: 1, b: 2 } };
    const b = { data: { b: 2, a: 1 }, type: 'refused' as const, agentId: 'x', prev: 'p', ts: 't', seq: 1 };
    expect(hashEvent(a)).toBe(hashEvent(b));
  });
});

describe('event constructors', () => {
  it('keep attribution claims only', () => {
    const id = identityOf({ sub: 's', issuer: 'i', groups: [], claims: { repository: 'acme/etl', name: 'Jane Doe', ref: 'refs/heads/main' } });
    expect(id).toEqual({ sub: 's', issuer: 'i', email: undefined, groups: undefined, claims: { repository: 'acme/etl', ref: 'refs/heads/main' } });
    const e = makeSessionStartEvent({ sessionId: 's1', who: { sub: 's', issuer: 'i', groups: ['g'], claims: { email_verified: true } }, connection: 'c', applicationName: 'psql' });
    expect(e.identity).toEqual({ sub: 's', issuer: 'i', email: undefined, groups: ['g'], claims: undefined });
  });
  it('strip tokens from refusal reasons', () => {
    expect(makeRefusedEvent({ reason: 'bad eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig' }).data.reason).toBe('bad [token]');
  });
});
