// `hoopctl evidence build`: one bundle per period that an auditor verifies offline (issue 14).
//
//   source.chain() ──► per agent: check seq/prev/hash, keep the 32-byte leaf hash (proofs need the tree)
//        │             period events ──► events.jsonl (as stored)  and  figures/tables (verify.mjs's code)
//   checkpoints ──► verify with the agent's keys; the opening one (before the period), those inside it and
//        │          the closing one (first covering the last event), each root held against the chain
//   proofs.json ◄── inclusion of the first and last events, consistency between checkpoints (and from
//        │          the previous bundle's closing checkpoint)
//   recordings/, data/*.csv, report.html, VERIFY.md, verify.mjs ──► MANIFEST.json (every file's SHA-256)
//        └──► MANIFEST.sig: a signed note over the manifest's hash, by the agent's key
//
// Written into DIR.partial-<pid> and renamed at the end, so an interrupted build never looks complete.
// Memory: 32 bytes per chain event (the leaves) plus the period's per-session and per-approval rows.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { once } from 'node:events';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { hashEvent, GENESIS } from '../../../shared/audit/chain.js';
import { consistencyProof, eventLeaf, inclusionProof, LeafList, rootOf, type Hash } from '../../../shared/audit/merkle.js';
import { parseCheckpointBody, parseNote, parseVerifierKey, verifyCheckpoint, type Checkpoint, type VerifierKey } from '../../../shared/audit/checkpoint.js';
import { originOf } from '../../../shared/audit/against-checkpoints.js';
import { VERIFY_MJS } from '../../../shared/evidence/verify-script.js';
import { ExitCode, UserError } from '../errors.js';
import type { EvidenceSource } from './evidence-source.js';
import { renderReport, VERIFY_MD } from './evidence-report.js';

export interface BuildOptions {
  from: string;
  to: string;
  connection?: string;
  out: string;
  previous?: string;
  source: EvidenceSource;
  versions: { cli: string };
  now: () => number;
}

export interface AgentSpan {
  agentId: string;
  firstSeq: number;
  lastSeq: number;
  /** The hash of the event before the first one (genesis for seq 1): the link to the previous bundle. */
  prevHash: string;
  lastHash: string;
  events: number;
}

interface Chain {
  leaves: LeafList;
  head: { seq: number; hash: string };
  span?: AgentSpan;
}

type FiguresModule = {
  newFigures(connection?: string): { add(e: unknown): void; result(): { figures: Record<string, unknown>; tables: Record<string, { columns: string[]; rows: unknown[][] }> } };
  toCsv(t: { columns: string[]; rows: unknown[][] }): string;
};

export async function buildBundle(o: BuildOptions): Promise<{ dir: string; manifestSha256: string; events: number; figures: Record<string, unknown> }> {
  await mustBeFree(o.out);
  const work = `${o.out}.partial-${process.pid}`;
  await rm(work, { recursive: true, force: true });
  for (const d of ['data', 'recordings', 'checkpoints']) await mkdir(path.join(work, d), { recursive: true });
  try {
    return await build(o, work);
  } catch (err) {
    await rm(work, { recursive: true, force: true });
    throw err;
  }
}

async function build(o: BuildOptions, work: string) {
  const { source } = o;
  // verify.mjs first: the builder computes the figures and tables with the very code that re-checks them.
  await writeFile(path.join(work, 'verify.mjs'), VERIFY_MJS);
  const fx = (await import(pathToFileURL(path.join(work, 'verify.mjs')).href)) as FiguresModule;
  const keyRecords = await source.keys();
  const keys = keyRecords.map((k) => parseVerifierKey(k.vkey, k));
  // A bundle is one agent's chain: the agent whose keys sign it (agents sharing a PostgreSQL store each
  // have their own chain and key; build one bundle per agent).
  const origin = keys.at(-1)!.name;
  const agentId = origin.replace(/^hoopctl\//, '');
  const previous = o.previous ? await readPrevious(o.previous) : undefined;

  // ── the chains, one pass ──
  const chains = new Map<string, Chain>();
  const figures = fx.newFigures(o.connection);
  const sessions = new Set<string>();
  const events = createWriteStream(path.join(work, 'events.jsonl'));
  let inPeriod = 0;
  let oldestTs: string | undefined; // the oldest record still held, against the six-year retention target
  for await (const line of source.chain()) {
    const e = JSON.parse(line) as { seq: number; prev: string; hash: string; agentId: string; ts: string; sessionId?: string; connection?: string; type: string };
    if (e.agentId !== agentId) continue;
    let c = chains.get(e.agentId);
    if (!c) chains.set(e.agentId, (c = { leaves: new LeafList(), head: { seq: 0, hash: GENESIS } }));
    if (e.seq !== c.head.seq + 1 || e.prev !== c.head.hash || hashEvent(e) !== e.hash) {
      throw new UserError('CHAIN_BROKEN', `the audit chain of agent ${e.agentId} is broken at seq ${c.head.seq + 1}; no bundle was built`, {
        hint: 'Run `hoopctl audit verify` on the store to see where.',
      });
    }
    c.leaves.push(eventLeaf(e.hash));
    if (e.seq === 1 && (oldestTs === undefined || e.ts < oldestTs)) oldestTs = e.ts;
    if (e.ts >= o.from && e.ts < o.to) {
      c.span ??= { agentId: e.agentId, firstSeq: e.seq, lastSeq: e.seq, prevHash: e.prev, lastHash: e.hash, events: 0 };
      c.span.lastSeq = e.seq;
      c.span.lastHash = e.hash;
      c.span.events++;
      inPeriod++;
      if (!events.write(line + '\n')) await once(events, 'drain');
      figures.add(e);
      if (e.sessionId && (!o.connection || e.connection === o.connection)) sessions.add(e.sessionId);
    }
    c.head = { seq: e.seq, hash: e.hash };
  }
  await closeStream(events);
  if (inPeriod === 0) throw new UserError('NO_EVENTS', `no audit events of agent ${agentId} between ${o.from} and ${o.to}`, { hint: 'Check --from and --to (the period is [from, to)).' });

  // ── checkpoints and proofs ──
  const found = new Map<string, { cp: Checkpoint & { key: VerifierKey }; note: string }[]>();
  for (const { note } of await source.checkpoints()) {
    let cp: Checkpoint & { key: VerifierKey };
    try {
      if (parseCheckpointBody(parseNote(note).body).origin !== origin) continue; // another agent's chain
      cp = verifyCheckpoint(note, keys);
    } catch (err) {
      throw new UserError('CHECKPOINT_INVALID', `a stored checkpoint does not verify against the agent's keys: ${(err as Error).message}`);
    }
    found.set(agentId, [...(found.get(agentId) ?? []), { cp, note }]);
  }
  const spans: AgentSpan[] = [];
  const proofAgents: unknown[] = [];
  for (const [agentId, c] of chains) {
    if (!c.span) continue;
    const span = c.span;
    spans.push(span);
    const cps = (found.get(agentId) ?? []).sort((a, b) => a.cp.size - b.cp.size).filter((x, i, all) => i === 0 || all[i - 1].cp.size !== x.cp.size);
    const closeAt = cps.findIndex((x) => x.cp.size >= span.lastSeq);
    if (closeAt < 0) {
      throw new UserError('NO_CHECKPOINT', `no signed checkpoint of agent ${agentId} covers the period's last event (seq ${span.lastSeq}); no bundle was built`, {
        hint: 'Build from the agent (it signs one first), or wait for its next checkpoint (audit.checkpointInterval).',
      });
    }
    let openAt = cps.findIndex((x) => x.cp.size >= span.firstSeq);
    if (openAt > 0) openAt--; // the last checkpoint before the period too: it ties this bundle to earlier ones
    const chosen = cps.slice(Math.max(0, openAt), closeAt + 1);
    for (const x of chosen) {
      if (x.cp.size > c.leaves.length || !rootOf(c.leaves, 0, x.cp.size).equals(x.cp.root)) {
        throw new UserError('CHECKPOINT_MISMATCH', `agent ${agentId}'s chain differs from its signed checkpoint of ${x.cp.size} events; no bundle was built`);
      }
    }
    const files: string[] = [];
    for (const x of chosen) {
      const f = `${agentId}.${String(x.cp.size).padStart(12, '0')}.note`;
      await writeFile(path.join(work, 'checkpoints', f), x.note);
      files.push(f);
    }
    const close = chosen.at(-1)!.cp.size;
    const b64 = (hs: Hash[]) => hs.map((h) => h.toString('base64'));
    const prevClose = previous?.closing.get(agentId);
    proofAgents.push({
      agentId,
      origin: originOf(agentId),
      checkpoints: files,
      inclusion: [...new Set([span.firstSeq, span.lastSeq])].map((seq) => ({ seq, size: close, proof: b64(inclusionProof(c.leaves, seq - 1, close)) })),
      consistency: chosen.slice(1).map((x, i) => ({ from: chosen[i].cp.size, to: x.cp.size, proof: b64(consistencyProof(c.leaves, chosen[i].cp.size, x.cp.size)) })),
      fromPrevious: prevClose !== undefined && prevClose <= close ? { from: prevClose, to: close, proof: b64(consistencyProof(c.leaves, prevClose, close)) } : undefined,
    });
  }
  await writeFile(path.join(work, 'checkpoints', 'proofs.json'), JSON.stringify({ agents: proofAgents }, null, 1) + '\n');
  await writeFile(path.join(work, 'checkpoints', 'keys.json'), JSON.stringify(keyRecords, null, 1) + '\n');

  // ── recordings, tables, report ──
  for (const id of sessions) {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(id)) continue;
    const lines = await source.recording(id);
    if (lines.length) await writeFile(path.join(work, 'recordings', `${id}.jsonl`), lines.join('\n') + '\n');
  }
  const { figures: fig, tables } = figures.result();
  for (const [name, t] of Object.entries(tables)) await writeFile(path.join(work, 'data', `${name}.csv`), fx.toCsv(t));
  const signer = keyRecords.at(-1)!;
  await writeFile(
    path.join(work, 'report.html'),
    renderReport({ period: { from: o.from, to: o.to, connection: o.connection }, figures: fig, tables, spans, signer, source: source.describe, versions: o.versions, previous: previous?.manifestSha256, oldest: oldestTs, builtAt: new Date(o.now()).toISOString(), checkpoints: proofAgents.length }),
  );
  await writeFile(path.join(work, 'VERIFY.md'), VERIFY_MD);

  // ── manifest and its signature ──
  const files: Record<string, string> = {};
  for (const rel of await listFiles(work)) files[rel] = await fileSha256(path.join(work, rel));
  const manifest = {
    format: 'hoopctl-evidence/1',
    period: { from: o.from, to: o.to, connection: o.connection },
    builtAt: new Date(o.now()).toISOString(),
    versions: o.versions,
    source: source.describe,
    signer: { fingerprint: signer.fingerprint, vkey: signer.vkey },
    agents: spans,
    counts: { events: inPeriod, recordings: (await readdir(path.join(work, 'recordings'))).length, files: Object.keys(files).length },
    figures: fig,
    previous: previous && { manifestSha256: previous.manifestSha256, agents: previous.spans.map((s) => ({ agentId: s.agentId, lastSeq: s.lastSeq, lastHash: s.lastHash })) },
    files,
  };
  const manifestText = JSON.stringify(manifest, null, 1) + '\n';
  const manifestSha256 = createHash('sha256').update(manifestText).digest('hex');
  await writeFile(path.join(work, 'MANIFEST.json'), manifestText);
  await writeFile(path.join(work, 'MANIFEST.sig'), await o.source.signManifest(`hoopctl/${spans[0].agentId}`, manifestSha256));
  await rename(work, o.out);
  return { dir: o.out, manifestSha256, events: inPeriod, figures: fig };
}

async function mustBeFree(dir: string): Promise<void> {
  const st = await stat(dir).catch(() => undefined);
  if (!st) return;
  if (!st.isDirectory() || (await readdir(dir)).length) throw new UserError('OUTPUT_EXISTS', `${dir} exists and is not empty`, { exitCode: ExitCode.Usage, hint: 'Pick a new directory for the bundle.' });
  await rm(dir, { recursive: true });
}

async function readPrevious(dir: string): Promise<{ manifestSha256: string; spans: AgentSpan[]; closing: Map<string, number> }> {
  let text: string;
  try {
    text = await readFile(path.join(dir, 'MANIFEST.json'), 'utf8');
  } catch {
    throw new UserError('NOT_FOUND', `no MANIFEST.json in the previous bundle ${dir}`, { exitCode: ExitCode.Usage });
  }
  const m = JSON.parse(text) as { agents: AgentSpan[] };
  const closing = new Map<string, number>();
  for (const f of await readdir(path.join(dir, 'checkpoints')).catch(() => [] as string[])) {
    const mm = /^(.+)\.(\d{12})\.note$/.exec(f);
    if (!mm) continue;
    const span = m.agents.find((a) => a.agentId === mm[1]);
    const size = Number(mm[2]);
    if (span && size >= span.lastSeq && size < (closing.get(mm[1]) ?? Infinity)) closing.set(mm[1], size);
  }
  return { manifestSha256: createHash('sha256').update(text).digest('hex'), spans: m.agents, closing };
}

async function listFiles(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const n of (await readdir(path.join(dir, rel))).sort()) {
    const r = rel ? `${rel}/${n}` : n;
    if ((await stat(path.join(dir, r))).isDirectory()) out.push(...(await listFiles(dir, r)));
    else out.push(r);
  }
  return out;
}

async function fileSha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

async function closeStream(s: WriteStream): Promise<void> {
  s.end();
  await once(s, 'close');
}
