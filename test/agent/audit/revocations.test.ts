// The embedded store's revocation list (dataDir/revocations.jsonl): durable across restarts, dropped once
// the revoked token has expired, announced to subscribers (the PostgreSQL one is exercised with two
// agents in test/e2e/revocation.test.ts). And the keys a token is revoked by.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, appendFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { FileRevocations, revocationKeys } from '../../../agent/src/audit/revocations.js';

let dir: string;
let now = 1_000_000;
const clock = () => now;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'hoop-revocations-'));
  now = 1_000_000;
});
afterEach(() => rm(dir, { recursive: true, force: true }));

describe('FileRevocations', () => {
  it('keeps a revocation across a restart until the token expires, and tells subscribers at once', async () => {
    const r = await FileRevocations.open(dir, clock);
    const heard: unknown[] = [];
    r.subscribe((keys) => void heard.push(keys));
    expect(await r.isRevoked(['jti:https://idp a1'])).toBe(false);
    await r.revoke({ keys: ['jti:https://idp a1', 'sid:https://idp s1'], issuer: 'https://idp', sub: 'u-alice', expiresAt: now + 60_000 });
    expect(heard).toEqual([['jti:https://idp a1', 'sid:https://idp s1']]);
    expect(await r.isRevoked(['jti:https://idp other', 'sid:https://idp s1'])).toBe(true);
    expect(await r.isRevoked(['jti:https://idp other'])).toBe(false);
    await r.close();

    // A torn last line (a crash mid-write) does not stop the agent from reading the rest.
    await appendFile(path.join(dir, 'revocations.jsonl'), '{"key":"jti:https://idp torn","exp');
    const again = await FileRevocations.open(dir, clock);
    expect(await again.isRevoked(['jti:https://idp a1'])).toBe(true);
    now += 60_000; // the token's own expiry: refused anyway from here on, so the record goes
    expect(await again.isRevoked(['jti:https://idp a1'])).toBe(false);
    await again.close();
    const third = await FileRevocations.open(dir, clock);
    expect(await third.isRevoked(['sid:https://idp s1'])).toBe(false);
    await third.close();
    expect(await readFile(path.join(dir, 'revocations.jsonl'), 'utf8')).not.toContain('eyJ'); // never a token
  });
});

describe('revocationKeys', () => {
  it('a token by its jti and its login session; one with neither by subject and issue time', () => {
    expect(revocationKeys({ issuer: 'https://idp', sub: 'u', claims: { jti: 'j', sid: 's', iat: 5 } })).toEqual(['jti:https://idp j', 'sid:https://idp s']);
    expect(revocationKeys({ issuer: 'https://idp', sub: 'u', claims: { jti: 'j', iat: 5 } })).toEqual(['jti:https://idp j']);
    expect(revocationKeys({ issuer: 'https://idp', sub: 'u', claims: { iat: 5 } })).toEqual(['iat:https://idp u 5']);
  });
});
