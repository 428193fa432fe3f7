// Signed checkpoints from a real agent on both stores: the key (0600, served at /api/audit/key), the
// checkpoints (on demand for reviewers, at shutdown, to a witness directory), their consistency, key
// rotation, the policy_loaded event, and an agent that refuses to start over a rewritten or cut chain.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { request } from 'undici';
import { startExtraAgent, useStack, type ExtraAgent } from '../harness/stack.js';
import { receiver } from '../harness/webhook-receiver.js';
import { DEMO_MASKING } from '../../cli/src/demo/stack.js';
import { KeyResponse, SignedCheckpoint } from '../../shared/api/audit.js';
import { newSigningKeyPem, parseVerifierKey, signerFromPem, verifyCheckpoint } from '../../shared/audit/checkpoint.js';
import { consistencyProof, eventLeaf, rootOf, verifyConsistency } from '../../shared/audit/merkle.js';
import { rewriteAndRehash } from '../agent/audit/fixtures.js';

const s = useStack({ patients: 50 });
const tmp: string[] = [];
afterAll(async () => {
  for (const d of tmp) await rm(d, { recursive: true, force: true });
});
const reviewerToken = () => s.get().issuer.clientCredentialsToken('approver-bot', 'approver-bot-secret'); // group compliance

async function tempDir(tag: string): Promise<string> {
  const d = await mkdtemp(path.join(os.tmpdir(), `hoop-cp-${tag}-`));
  tmp.push(d);
  return d;
}

async function api(a: ExtraAgent, method: 'GET' | 'POST', pathname: string, token?: string) {
  const res = await request(a.agent.url.replace(/^ws/, 'http') + pathname, { method, headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: res.statusCode, body: (await res.body.json()) as unknown };
}

async function traffic(a: ExtraAgent, n = 2): Promise<void> {
  const c = new pg.Client({ host: a.listener.host, port: a.listener.port, user: 'noop', database: 'demo-db' });
  await c.connect();
  for (let i = 0; i < n; i++) await c.query('SELECT count(*) FROM visits');
  await c.end();
}

async function chainHashes(a: ExtraAgent): Promise<string[]> {
  const out: string[] = [];
  for await (const l of a.agent.store.chainLines()) out.push((JSON.parse(l) as { hash: string }).hash);
  return out;
}

/** What a checkpoint says, checked against the agent's published key; and the chain's own root. */
async function checkAgainstChain(a: ExtraAgent, cp: SignedCheckpoint) {
  const key = KeyResponse.parse((await api(a, 'GET', '/api/audit/key')).body);
  const v = verifyCheckpoint(cp.note, key.keys.map((k) => parseVerifierKey(k.vkey, k)));
  const leaves = (await chainHashes(a)).map(eventLeaf);
  expect(v.size).toBe(cp.size);
  expect(v.root.toString('base64')).toBe(cp.root);
  expect(rootOf(leaves, 0, cp.size).toString('base64')).toBe(cp.root);
  return { v, leaves };
}

describe('signed checkpoints, embedded store', () => {
  let dataDir: string;
  let witness: string;
  let a: ExtraAgent;
  beforeAll(async () => {
    dataDir = await tempDir('data');
    witness = await tempDir('witness');
    a = await startExtraAgent(s.get(), { agentId: 'agent-cp', dataDir, audit: { witness: { dir: witness } } });
  });

  it('creates the signing key 0600 and serves its public half without a token', async () => {
    const file = path.join(dataDir, 'audit-signing.key');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const res = await api(a, 'GET', '/api/audit/key');
    expect(res.status).toBe(200);
    const key = KeyResponse.parse(res.body);
    const local = signerFromPem('hoopctl/agent-cp', await readFile(file, 'utf8'));
    expect(key).toMatchObject({ origin: 'hoopctl/agent-cp', current: { vkey: local.vkey, fingerprint: local.fingerprint } });
    expect(JSON.stringify(res.body)).not.toContain('PRIVATE');
  });

  it('records the policy in force as the first event, with no password', async () => {
    const first = JSON.parse((await a.agent.store.chainLines()[Symbol.asyncIterator]().next()).value as string);
    expect(first).toMatchObject({ seq: 1, type: 'policy_loaded', data: { connections: { 'demo-db': { masking: DEMO_MASKING } } } });
    expect(first.data.configHash).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(first)).not.toContain(s.get().agentDbPassword);
  });

  it('signs on demand for reviewers only; each checkpoint covers the chain and extends the one before', async () => {
    await traffic(a);
    const refused = await api(a, 'POST', '/api/audit/checkpoint', await s.get().token());
    expect(refused.status).toBe(403);
    const one = SignedCheckpoint.parse((await api(a, 'POST', '/api/audit/checkpoint', await reviewerToken())).body);
    const first = await checkAgainstChain(a, one);
    expect(one.size).toBe(first.leaves.length);
    // Nothing new: the same checkpoint comes back.
    await new Promise((r) => setTimeout(r, 100));
    const hashesBefore = (await chainHashes(a)).length;
    if (hashesBefore === one.size) expect(SignedCheckpoint.parse((await api(a, 'POST', '/api/audit/checkpoint', await reviewerToken())).body)).toEqual(one);

    await traffic(a, 3);
    const two = SignedCheckpoint.parse((await api(a, 'POST', '/api/audit/checkpoint', await reviewerToken())).body);
    const { leaves } = await checkAgainstChain(a, two);
    expect(two.size).toBeGreaterThan(one.size);
    const proof = consistencyProof(leaves, one.size, two.size);
    expect(verifyConsistency(one.size, two.size, Buffer.from(one.root, 'base64'), Buffer.from(two.root, 'base64'), proof)).toBe(true);

    const listed = (await api(a, 'GET', '/api/audit/checkpoints', await reviewerToken())).body as { checkpoints: { size: number }[] };
    expect(listed.checkpoints.map((c) => c.size)).toEqual(expect.arrayContaining([one.size, two.size]));
    const files = await readdir(witness);
    expect(files).toContain(`hoopctl_agent-cp.${String(two.size).padStart(12, '0')}.checkpoint`);
  });

  it('checkpoints at shutdown; a restart over the same chain goes on; a rotated key keeps the old one valid in its window', async () => {
    await a.stop();
    const files = (await readdir(witness)).sort();
    const lastSize = Number(files.at(-1)!.split('.').at(-2));
    const stored = (await readFile(path.join(dataDir, 'audit', 'agent-cp.checkpoints'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { size: number; note: string });
    expect(stored.at(-1)!.size).toBe(lastSize);
    // Every session event, session_end included, is under the shutdown checkpoint.
    const seg = (await readdir(path.join(dataDir, 'audit'))).filter((f) => /^agent-cp\.\d{12}\.jsonl$/.test(f));
    const lines = (await Promise.all(seg.map((f) => readFile(path.join(dataDir, 'audit', f), 'utf8')))).join('').trim().split('\n');
    expect(lastSize).toBe(lines.length);

    // Rotation: a new key file. The old key's window closes, checkpoints it signed still verify.
    const keyFile = path.join(dataDir, 'audit-signing.key');
    await writeFile(keyFile, newSigningKeyPem(), { mode: 0o600 });
    a = await startExtraAgent(s.get(), { agentId: 'agent-cp', dataDir, audit: { witness: { dir: witness } } });
    const key = KeyResponse.parse((await api(a, 'GET', '/api/audit/key')).body);
    expect(key.keys).toHaveLength(2);
    expect(key.keys[0].notAfter).toBeDefined();
    expect(key.keys[1]).toMatchObject({ vkey: key.current.vkey, notBefore: key.keys[0].notAfter });
    const verifiers = key.keys.map((k) => parseVerifierKey(k.vkey, k));
    for (const c of stored) expect(verifyCheckpoint(c.note, verifiers).key.vkey).toBe(key.keys[0].vkey);
    await traffic(a, 1);
    const three = SignedCheckpoint.parse((await api(a, 'POST', '/api/audit/checkpoint', await reviewerToken())).body);
    expect(verifyCheckpoint(three.note, verifiers).key.vkey).toBe(key.current.vkey);
    await a.stop();
  });

  it('refuses to start over a chain rewritten and re-hashed after it was signed', async () => {
    const segName = (await readdir(path.join(dataDir, 'audit'))).find((f) => /^agent-cp\.\d{12}\.jsonl$/.test(f))!;
    const seg = path.join(dataDir, 'audit', segName);
    const original = await readFile(seg, 'utf8');
    const rewritten = rewriteAndRehash(original.trim().split('\n'), (e) => {
      if (e.seq === 2) e.ts = '2020-01-01T00:00:00.000Z';
    });
    await writeFile(seg, rewritten.join('\n') + '\n');
    await expect(startExtraAgent(s.get(), { agentId: 'agent-cp', dataDir })).rejects.toThrow(/no longer matches the signed checkpoint/);
    await writeFile(seg, original);
    const back = await startExtraAgent(s.get(), { agentId: 'agent-cp', dataDir });
    await back.stop();
  });

  it('refuses a signing key others can read', async () => {
    const keyFile = await tempDir('key').then((d) => path.join(d, 'k.pem'));
    await writeFile(keyFile, newSigningKeyPem(), { mode: 0o644 });
    await expect(startExtraAgent(s.get(), { agentId: 'agent-cp-key', audit: { signingKeyFile: keyFile } })).rejects.toThrow(/readable by group or others/);
  });
});

describe('checkpoint witnesses', () => {
  it('POSTs every new checkpoint to the witness webhook as a signed note; a failing witness does not stop checkpoints', async () => {
    const rx = await receiver([500]);
    const dataDir = await tempDir('wh');
    const w = await startExtraAgent(s.get(), { agentId: 'agent-cp-wh', dataDir, audit: { witness: { webhook: rx.url } } });
    try {
      const one = SignedCheckpoint.parse((await api(w, 'POST', '/api/audit/checkpoint', await reviewerToken())).body);
      await traffic(w, 1);
      const two = SignedCheckpoint.parse((await api(w, 'POST', '/api/audit/checkpoint', await reviewerToken())).body);
      await rx.waitForHits(2);
      // The first post was refused (500): that checkpoint is still in the store; the second was taken.
      expect(rx.posts.map((p) => p.raw)).toContain(two.note);
      expect(rx.posts[0].contentType).toMatch(/^text\/plain/);
      const key = KeyResponse.parse((await api(w, 'GET', '/api/audit/key')).body);
      expect(verifyCheckpoint(rx.posts.at(-1)!.raw, key.keys.map((k) => parseVerifierKey(k.vkey, k))).size).toBe(two.size);
      const stored = ((await api(w, 'GET', '/api/audit/checkpoints', await reviewerToken())).body as { checkpoints: { size: number }[] }).checkpoints.map((c) => c.size);
      expect(stored).toEqual(expect.arrayContaining([one.size, two.size]));
    } finally {
      await w.stop();
      await rx.close();
    }
  });
});

describe('signed checkpoints, PostgreSQL store', () => {
  it('stores checkpoints per agent, and refuses to start when events were cut from the tail', async () => {
    const stack = s.get();
    const db = `hoop_cp_${randomBytes(4).toString('hex')}`;
    await stack.pg.exec(`CREATE DATABASE ${db}`);
    const state = { url: stack.pg.url(db) };
    const dataDir = await tempDir('pgdata');
    let a = await startExtraAgent(stack, { agentId: 'agent-cp-pg', state, dataDir });
    await traffic(a, 2);
    const one = SignedCheckpoint.parse((await api(a, 'POST', '/api/audit/checkpoint', await reviewerToken())).body);
    await checkAgainstChain(a, one);
    await a.stop();
    const c = new pg.Client({ connectionString: state.url });
    await c.connect();
    try {
      const { rows } = await c.query<{ size: string }>("SELECT size FROM audit_checkpoints WHERE agent_id = 'agent-cp-pg' ORDER BY size");
      const sizes = rows.map((r) => Number(r.size));
      expect(sizes[0]).toBe(one.size);
      const { rows: n } = await c.query<{ n: number }>("SELECT count(*)::int AS n FROM audit_events WHERE agent_id = 'agent-cp-pg'");
      expect(sizes.at(-1)).toBe(n[0].n);

      a = await startExtraAgent(stack, { agentId: 'agent-cp-pg', state, dataDir });
      await a.stop();
      await c.query("DELETE FROM audit_events WHERE agent_id = 'agent-cp-pg' AND seq > (SELECT max(seq) - 3 FROM audit_events WHERE agent_id = 'agent-cp-pg')");
      await expect(startExtraAgent(stack, { agentId: 'agent-cp-pg', state, dataDir })).rejects.toThrow(/deleted from its tail/);
    } finally {
      await c.end();
    }
  });
});
