// Bench for issue 14: `hoopctl evidence build` over a period of N events (default 1,000,000) in
// bounded memory. Writes a data directory the way the agent does (segments of sealed events, a signed
// checkpoint over the chain, the key history), then runs the real CLI build under /usr/bin/time -v
// and the bundle's verify.mjs, and prints time and peak RSS of each; then the agent's start-up cost on
// that store (the store's index, and the checkpointer replaying the chain against the checkpoint).
// Asserts nothing.
//
//   npx tsx scripts/evidence-bench.ts [--events 1000000] [--keep]
import { mkdtemp, rm, writeFile, mkdir, open } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { GENESIS, hashedContent, sha256, storedLine } from '../shared/audit/chain.js';
import { Accumulator, eventLeaf } from '../shared/audit/merkle.js';
import { checkpointBody, newSigningKeyPem, signNote, signerFromPem } from '../shared/audit/checkpoint.js';
import { JsonlStore } from '../agent/src/audit/jsonl-store.js';
import { Checkpointer, loadSigningKey } from '../agent/src/audit/checkpoints.js';
import { silentLogger } from '../agent/src/log.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({ options: { events: { type: 'string', default: '1000000' }, keep: { type: 'boolean', default: false } } });
const N = Number(values.events);
const agentId = 'agent-bench';
const dir = await mkdtemp(path.join(os.tmpdir(), 'hoop-evbench-'));
const dataDir = path.join(dir, 'data');
await mkdir(path.join(dataDir, 'audit', 'recordings'), { recursive: true });

const t0 = performance.now();
const pem = newSigningKeyPem();
const signer = signerFromPem(`hoopctl/${agentId}`, pem);
await writeFile(path.join(dataDir, 'audit-signing.key'), pem, { mode: 0o600 });
await writeFile(path.join(dataDir, 'audit-signing.key.keys.json'), JSON.stringify([{ vkey: signer.vkey, fingerprint: signer.fingerprint }]));
const acc = new Accumulator();
const seg = await open(path.join(dataDir, 'audit', `${agentId}.000000000001.jsonl`), 'w');
let prev = GENESIS;
let buf: string[] = [];
const start = Date.UTC(2026, 10, 1);
for (let i = 1; i <= N; i++) {
  const session = `s${Math.floor(i / 50)}`;
  const kind = i % 50;
  const base = {
    seq: i,
    ts: new Date(start + i * 2000).toISOString(),
    prev,
    type: kind === 1 ? 'session_start' : kind === 0 ? 'session_end' : 'statement',
    sessionId: session,
    agentId,
    identity: { sub: `job-${i % 20}`, issuer: 'https://issuer.example', claims: { repository: 'clinic/etl', run_id: String(Math.floor(i / 50)) } },
    connection: 'demo-db',
    data: kind > 1 ? { sql: 'SELECT count(*) FROM visits WHERE visited_at > $1', decision: i % 97 === 0 ? 'block' : 'allow', rule: 'P5.read', rows: 1 } : {},
  };
  const content = hashedContent(base);
  prev = sha256(content);
  acc.push(eventLeaf(prev));
  buf.push(storedLine(content, prev));
  if (buf.length === 10_000) {
    await seg.write(buf.join('\n') + '\n');
    buf = [];
  }
}
if (buf.length) await seg.write(buf.join('\n') + '\n');
await seg.close();
const note = signNote(checkpointBody({ origin: `hoopctl/${agentId}`, size: N, root: acc.root(), time: new Date().toISOString() }), [signer]);
await writeFile(path.join(dataDir, 'audit', `${agentId}.checkpoints`), JSON.stringify({ size: N, note }) + '\n');
console.log(`generated ${N} events in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

function measured(label: string, cmd: string, args: string[], cwd: string) {
  const r = spawnSync('/usr/bin/time', ['-v', cmd, ...args], { cwd, encoding: 'utf8', env: { ...process.env, XDG_CONFIG_HOME: '/tmp/hoopctl-test-none' } });
  const wall = /Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)/.exec(r.stderr)?.[1];
  const rss = Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(r.stderr)?.[1]);
  console.log(`${label}: exit ${r.status}, wall ${wall}, peak RSS ${(rss / 1024).toFixed(0)} MiB`);
  if (r.status !== 0) console.log(r.stdout.slice(-2000), r.stderr.slice(0, 2000));
}

const out = path.join(dir, 'bundle');
measured('evidence build', process.execPath, ['--import', 'tsx', path.join(ROOT, 'cli/src/main.ts'), 'evidence', 'build', '--from', '2026-11-01', '--to', '2027-01-01', '--data-dir', dataDir, '-o', out], ROOT);
measured('node verify.mjs', process.execPath, ['verify.mjs', '--fingerprint', signer.fingerprint], out);
const t1 = performance.now();
const store = await JsonlStore.open({ dataDir, agentId, clock: Date.now });
const t2 = performance.now();
const keys = await loadSigningKey(path.join(dataDir, 'audit-signing.key'), `hoopctl/${agentId}`, new Date().toISOString());
await Checkpointer.start({ store, ...keys, clock: Date.now, log: silentLogger });
const t3 = performance.now();
console.log(`agent start on ${N} events: store index ${((t2 - t1) / 1000).toFixed(1)} s, checkpoint replay ${((t3 - t2) / 1000).toFixed(1)} s`);
await store.close();
if (!values.keep) await rm(dir, { recursive: true, force: true });
else console.log(`kept ${dir}`);
