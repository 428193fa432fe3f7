// The bundle's verify.mjs, as the text that is written into every bundle. One implementation: the
// bundle builder imports the written file for the figures and tables (so the report and the verifier
// compute them the same way), and `hoopctl evidence verify` runs the same file.
//
// Plain Node ≥ 18, no dependencies, no network: an auditor runs it in an empty directory. It restates
// the canonical JSON of shared/audit/chain.ts, RFC 9162's proof checks (shared/audit/merkle.ts) and the
// signed-note rules (shared/audit/checkpoint.ts) in plain JavaScript; test/evidence checks they agree.
// Written with String.raw: the source below holds no backtick and no dollar-brace.
export const VERIFY_MJS = String.raw`// verify.mjs: checks this hoopctl evidence bundle offline. Plain Node (18 or later), no dependencies.
//   node verify.mjs [--key FILE | --fingerprint sha256:HEX] [--previous DIR] [--json]
// Exit 0 only when every check holds; each failure is one line naming what and where. VERIFY.md says
// what is checked and how to repeat parts of it with shell tools.
import { createHash, createPublicKey, verify as edVerify } from 'node:crypto';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const FORMAT = 'hoopctl-evidence/1';
const GENESIS = '0'.repeat(64);
const DASH = '\u2014';

// ─── hashing ──────────────────────────────────────────────────────────────────────────────────────
export function canonical(v) {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  if (Array.isArray(v)) return '[' + v.map((x) => (x === undefined ? 'null' : canonical(x))).join(',') + ']';
  return '{' + Object.keys(v).sort().filter((k) => v[k] !== undefined).map((k) => JSON.stringify(k) + ':' + canonical(v[k])).join(',') + '}';
}
export const sha256 = (b) => createHash('sha256').update(b).digest('hex');
export function eventHash(e) {
  const { hash, ...rest } = e;
  return sha256(canonical(rest));
}
const H = (...parts) => { const h = createHash('sha256'); for (const p of parts) h.update(p); return h.digest(); };
export const leafOf = (hexHash) => H(Buffer.from([0]), Buffer.from(hexHash, 'hex'));
const node = (l, r) => H(Buffer.from([1]), l, r);
const odd = (x) => x % 2 === 1;
const half = (x) => Math.floor(x / 2);

// RFC 9162 2.1.3.2
export function verifyInclusion(leaf, index, size, proof, root) {
  if (!(index >= 0 && index < size)) return false;
  let fn = index, sn = size - 1, r = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (odd(fn) || fn === sn) {
      r = node(p, r);
      if (!odd(fn)) while (!odd(fn) && fn !== 0) { fn = half(fn); sn = half(sn); }
    } else r = node(r, p);
    fn = half(fn); sn = half(sn);
  }
  return sn === 0 && r.equals(root);
}

// RFC 9162 2.1.4.2
export function verifyConsistency(first, second, firstRoot, secondRoot, proof) {
  if (!(first >= 0 && first <= second)) return false;
  if (first === 0) return proof.length === 0;
  if (first === second) return proof.length === 0 && firstRoot.equals(secondRoot);
  let m = first; while (m > 1 && m % 2 === 0) m /= 2;
  const c = m === 1 ? [firstRoot, ...proof] : [...proof];
  if (!c.length) return false;
  let fn = first - 1, sn = second - 1;
  while (odd(fn)) { fn = half(fn); sn = half(sn); }
  let fr = c[0], sr = c[0];
  for (const p of c.slice(1)) {
    if (sn === 0) return false;
    if (odd(fn) || fn === sn) {
      fr = node(p, fr); sr = node(p, sr);
      if (!odd(fn)) while (!odd(fn) && fn !== 0) { fn = half(fn); sn = half(sn); }
    } else sr = node(sr, p);
    fn = half(fn); sn = half(sn);
  }
  return fr.equals(firstRoot) && sr.equals(secondRoot) && sn === 0;
}

// ─── signed notes (C2SP signed-note, Ed25519) ─────────────────────────────────────────────────────
export function parseVkey(text, window = {}) {
  const m = /^([^\s+]+)\+([0-9a-f]{8})\+([A-Za-z0-9+/=]+)$/.exec(text.trim());
  if (!m) throw new Error('not a verifier key: ' + text.slice(0, 60));
  const b = Buffer.from(m[3], 'base64');
  if (b.length !== 33 || b[0] !== 1) throw new Error('not an Ed25519 verifier key');
  const raw = b.subarray(1);
  const keyHash = H(Buffer.from(m[1] + '\n'), Buffer.from([1]), raw).subarray(0, 4);
  if (keyHash.toString('hex') !== m[2]) throw new Error('verifier key hash does not match its key');
  const publicKey = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }, format: 'jwk' });
  return { name: m[1], keyHash, publicKey, fingerprint: 'sha256:' + sha256(raw), vkey: text.trim(), notBefore: window.notBefore, notAfter: window.notAfter };
}

/** Returns { body, key, time } or throws an Error saying why. */
export function openNote(text, keys) {
  const at = text.lastIndexOf('\n\n');
  if (at < 0 || !text.endsWith('\n')) throw new Error('not a signed note');
  const body = text.slice(0, at + 1);
  const sigs = text.slice(at + 2, -1).split('\n').filter((l) => l);
  if (!sigs.length) throw new Error('no signature');
  const time = (body.split('\n').find((l) => l.startsWith('time ')) || '').slice(5) || undefined;
  const seen = [];
  for (const l of sigs) {
    const m = new RegExp('^' + DASH + ' ([^\\s+]+) ([A-Za-z0-9+/=]+)$').exec(l);
    if (!m) throw new Error('malformed signature line');
    const b = Buffer.from(m[2], 'base64');
    seen.push(m[1] + '+' + b.subarray(0, 4).toString('hex'));
    for (const k of keys) {
      if (k.name !== m[1] || !k.keyHash.equals(b.subarray(0, 4))) continue;
      if (!edVerify(null, Buffer.from(body), k.publicKey, b.subarray(4))) throw new Error('signature by ' + k.fingerprint + ' does not verify');
      if ((k.notBefore && (!time || time < k.notBefore)) || (k.notAfter && (!time || time >= k.notAfter))) throw new Error('signed at ' + time + ', outside the window of key ' + k.fingerprint);
      return { body, key: k, time };
    }
  }
  throw new Error('signed by an unknown key (' + seen.join(', ') + ')');
}

export function parseCheckpoint(body) {
  const [origin, size, root] = body.split('\n');
  if (!/^(0|[1-9]\d*)$/.test(size || '') || Buffer.from(root || '', 'base64').length !== 32) throw new Error('not a checkpoint');
  return { origin, size: Number(size), root: Buffer.from(root, 'base64') };
}

// ─── figures and tables: computed from events.jsonl, by the builder and again here ───────────────
export function csvCell(v) {
  if (v === undefined || v === null) return '';
  let s = typeof v === 'string' ? v : typeof v === 'object' ? canonical(v) : String(v);
  if (/^[=+\-@\t\r]/.test(s)) s = "'" + s;
  return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
}
export const toCsv = (t) => [t.columns, ...t.rows].map((r) => r.map(csvCell).join(',') + '\r\n').join('');

const kindOf = (id) => {
  const c = id.claims || {};
  if (c.run_id || c.pipeline_id || c.repository || c.project_path) return 'CI job';
  return id.email ? 'person' : 'service';
};
const who = (id) => (id ? id.issuer + ' ' + id.sub : '');

/** One pass over the period's events (scoped to a connection when given). */
export function newFigures(connection) {
  const types = {};
  const identities = new Map();
  const sessions = new Map();
  const approvals = new Map();
  const refusals = [];
  const policies = [];
  const attestations = [];
  const exceptions = [];
  const days = new Map();
  const heldStatements = new Map(); // agent#statementSeq of a consumed approval -> approvalId, for its rows
  let statements = 0, blocked = 0, events = 0;
  const inScope = (e) => !connection || !e.connection || e.connection === connection;
  return {
    add(e) {
      if (!inScope(e)) return;
      events++;
      types[e.type] = (types[e.type] || 0) + 1;
      const d = e.data || {};
      if (e.identity) {
        const k = who(e.identity);
        const i = identities.get(k) || { issuer: e.identity.issuer, sub: e.identity.sub, kind: kindOf(e.identity), claims: e.identity.claims || {}, firstSeen: e.ts, lastSeen: e.ts, events: 0 };
        i.lastSeen = e.ts; i.events++;
        identities.set(k, i);
      }
      if (e.sessionId && (e.type === 'session_start' || sessions.has(e.sessionId))) {
        const s = sessions.get(e.sessionId) || { sessionId: e.sessionId, agentId: e.agentId, who: who(e.identity), connection: e.connection, startedAt: e.ts, endedAt: '', statements: 0, firstSeq: e.seq, lastSeq: e.seq, purpose: (e.type === 'session_start' && e.data && typeof e.data.purpose === 'string') ? e.data.purpose : '' };
        if (e.type === 'session_end') s.endedAt = e.ts;
        if (e.type === 'statement') s.statements++;
        s.lastSeq = e.seq;
        sessions.set(e.sessionId, s);
      }
      if (e.type === 'statement') {
        statements++;
        const day = e.ts.slice(0, 10);
        const dd = days.get(day) || { allow: 0, block: 0, hold: 0 };
        const dec = d.decision === 'block' ? 'block' : d.decision === 'hold' ? 'hold' : 'allow';
        dd[dec]++; days.set(day, dd);
        if (d.decision === 'block') { blocked++; refusals.push([e.ts, e.agentId, e.seq, 'blocked by rule', who(e.identity), e.connection, d.rule, '']); }
      }
      if (e.type === 'statement_result') {
        const id = heldStatements.get(e.agentId + '#' + d.statementSeq);
        if (id && approvals.has(id)) approvals.get(id).rows = d.rows;
      }
      if (e.type === 'refused') refusals.push([e.ts, e.agentId, e.seq, 'refused', who(e.identity), e.connection, d.code, d.reason]);
      if (e.type.startsWith('approval_') && d.approvalId) {
        const a = approvals.get(d.approvalId) || { approvalId: d.approvalId, connection: e.connection, requester: '', requestedAt: '', approvers: [], decision: '', decidedAt: '', consumedAt: '', rows: '', self: false };
        if (e.type === 'approval_requested') { a.requester = who(e.identity); a.requestedAt = e.ts; }
        if (e.type === 'approval_decided') {
          a.decision = d.verdict || ''; a.decidedAt = e.ts;
          if (d.verdict === 'approve') { a.approvers.push(who(e.identity)); if (a.requester && who(e.identity) === a.requester) a.self = true; }
        }
        if (e.type === 'approval_consumed') { a.consumedAt = e.ts; if (d.statementSeq) heldStatements.set(e.agentId + '#' + d.statementSeq, d.approvalId); }
        if (e.type === 'approval_expired' || e.type === 'approval_withdrawn') a.decision = a.decision || e.type.slice(9);
        approvals.set(d.approvalId, a);
        if (e.type === 'approval_expired' || (e.type === 'approval_decided' && d.verdict !== 'approve')) refusals.push([e.ts, e.agentId, e.seq, e.type === 'approval_expired' ? 'hold expired' : 'hold denied', who(e.identity), e.connection, d.approvalId, d.reason]);
      }
      if (e.type === 'policy_loaded') {
        for (const [name, c] of Object.entries(d.connections || {})) {
          if (connection && name !== connection) continue;
          policies.push([e.ts, e.agentId, e.seq, d.configHash, name, (c.access || []).map((r) => canonical(r)).join(' | '), Object.entries(c.masking || {}).map(([col, s]) => col + '=' + (typeof s === 'string' ? s : canonical(s))).join(' ')]);
        }
      }
      if (e.type === 'attestation') attestations.push([e.ts, e.agentId, e.seq, who(e.identity), d.manifestSha256, d.statement]);
    },
    result() {
      const approvalRows = [...approvals.values()];
      const selfApprovals = approvalRows.filter((a) => a.self).length;
      for (const a of approvalRows) if (a.self) exceptions.push(['self-approval', a.approvalId, a.requester]);
      for (const s of sessions.values()) if (!s.endedAt) exceptions.push(['session without an end in the period', s.sessionId, s.who]);
      const configHashes = [...new Set(policies.map((p) => p[3]))];
      const maskedColumns = new Set(policies.flatMap((p) => (p[6] ? p[6].split(' ').map((x) => p[4] + ':' + x.split('=')[0]) : [])));
      const figures = {
        events, types, statements, blocked, sessions: sessions.size, identities: identities.size,
        holds: approvalRows.length, approved: approvalRows.filter((a) => a.decision === 'approve').length,
        selfApprovals, refusals: refusals.length, policyVersions: configHashes.length, maskedColumns: maskedColumns.size,
        attestations: attestations.length, exceptions: exceptions.length,
        days: Object.fromEntries([...days.entries()].sort()),
      };
      const tables = {
        identities: { columns: ['issuer', 'sub', 'kind', 'repository', 'workflow', 'ref', 'sha', 'run_id', 'first_seen', 'last_seen', 'events'], rows: [...identities.values()].map((i) => [i.issuer, i.sub, i.kind, i.claims.repository, i.claims.workflow || i.claims.job_workflow_ref, i.claims.ref, i.claims.sha, i.claims.run_id, i.firstSeen, i.lastSeen, i.events]) },
        policy: { columns: ['ts', 'agent_id', 'seq', 'config_hash', 'connection', 'access_rules', 'masked_columns'], rows: policies },
        sessions: { columns: ['session_id', 'agent_id', 'identity', 'connection', 'started_at', 'ended_at', 'statements', 'first_seq', 'last_seq', 'purpose'], rows: [...sessions.values()].map((s) => [s.sessionId, s.agentId, s.who, s.connection, s.startedAt, s.endedAt, s.statements, s.firstSeq, s.lastSeq, s.purpose]) },
        approvals: { columns: ['approval_id', 'connection', 'requester', 'requested_at', 'approvers', 'decision', 'decided_at', 'consumed_at', 'rows', 'self_approved'], rows: approvalRows.map((a) => [a.approvalId, a.connection, a.requester, a.requestedAt, a.approvers.join(' | '), a.decision, a.decidedAt, a.consumedAt, a.rows, a.self ? 'yes' : 'no']) },
        refusals: { columns: ['ts', 'agent_id', 'seq', 'kind', 'identity', 'connection', 'rule_or_code', 'reason'], rows: refusals },
        attestations: { columns: ['ts', 'agent_id', 'seq', 'reviewer', 'manifest_sha256', 'statement'], rows: attestations },
        exceptions: { columns: ['kind', 'id', 'identity'], rows: exceptions },
      };
      return { figures, tables };
    },
  };
}

// ─── the checks ───────────────────────────────────────────────────────────────────────────────────
function loadKeys(dir, opts, notes) {
  let list;
  if (opts.key) {
    const text = readFileSync(opts.key, 'utf8');
    const t = text.trimStart();
    const recs = t.startsWith('{') ? JSON.parse(text).keys : t.startsWith('[') ? JSON.parse(text) : text.split('\n').filter((l) => l.trim() && !l.startsWith('#')).map((vkey) => ({ vkey }));
    list = recs.map((r) => parseVkey(r.vkey, r));
    notes.push('keys pinned by ' + opts.key);
  } else {
    list = JSON.parse(readFileSync(path.join(dir, 'checkpoints', 'keys.json'), 'utf8')).map((r) => parseVkey(r.vkey, r));
    if (opts.fingerprint) {
      const fp = opts.fingerprint.toLowerCase().replace(/^(sha256:)?/, 'sha256:');
      list = list.filter((k) => k.fingerprint === fp);
      notes.push('keys pinned by fingerprint ' + fp);
    } else notes.push('keys taken from the bundle itself: pass --fingerprint (compared out of band) to pin them');
  }
  return list;
}

function filesUnder(dir, rel = '') {
  const out = [];
  for (const n of readdirSync(path.join(dir, rel)).sort()) {
    const r = rel ? rel + '/' + n : n;
    if (statSync(path.join(dir, r)).isDirectory()) out.push(...filesUnder(dir, r));
    else out.push(r);
  }
  return out;
}

const b64 = (s) => Buffer.from(s, 'base64');

/** SHA-256 of a file, read in 1 MiB chunks. */
function fileSha256(file) {
  const h = createHash('sha256');
  const fd = openSync(file, 'r');
  const chunk = Buffer.allocUnsafe(1 << 20);
  try {
    for (let n; (n = readSync(fd, chunk, 0, chunk.length, null)) > 0; ) h.update(chunk.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

/** The lines of a file, read in 1 MiB chunks: a period of millions of events never sits in memory. */
function* fileLines(file) {
  if (!existsSync(file)) return;
  const fd = openSync(file, 'r');
  const chunk = Buffer.allocUnsafe(1 << 20);
  let rest = Buffer.alloc(0);
  try {
    for (;;) {
      const n = readSync(fd, chunk, 0, chunk.length, null);
      if (n === 0) break;
      let buf = Buffer.concat([rest, chunk.subarray(0, n)]);
      let start = 0;
      for (let i = buf.indexOf(10); i >= 0; i = buf.indexOf(10, start)) {
        yield buf.toString('utf8', start, i);
        start = i + 1;
      }
      rest = Buffer.from(buf.subarray(start));
    }
    if (rest.length) yield rest.toString('utf8');
  } finally {
    closeSync(fd);
  }
}

export function verifyBundle(dir, opts = {}) {
  const problems = [];
  const notes = [];
  const fail = (what, where) => problems.push(what + (where ? ': ' + where : ''));
  const read = (rel) => (existsSync(path.join(dir, rel)) ? readFileSync(path.join(dir, rel)) : undefined);

  const manifestBytes = read('MANIFEST.json');
  if (!manifestBytes) return { ok: false, problems: ['MANIFEST.json is missing'], notes };
  let m;
  try { m = JSON.parse(manifestBytes.toString('utf8')); } catch { return { ok: false, problems: ['MANIFEST.json does not parse'], notes }; }
  if (m.format !== FORMAT) fail('MANIFEST.json', 'format ' + m.format + ' is not ' + FORMAT);
  const manifestSha = sha256(manifestBytes);

  let keys = [];
  try { keys = loadKeys(dir, opts, notes); } catch (err) { fail('signing keys', err.message); }
  if (!keys.length) fail('signing keys', 'no key to check signatures with' + (opts.fingerprint ? ' (fingerprint ' + opts.fingerprint + ' not in the bundle)' : ''));

  // 1. the manifest's signature
  const sig = read('MANIFEST.sig');
  if (!sig) fail('MANIFEST.sig', 'missing');
  else {
    try {
      const { body, key } = openNote(sig.toString('utf8'), keys);
      if (body.split('\n')[1] !== 'manifest sha256 ' + manifestSha) fail('MANIFEST.sig', 'signs another manifest (MANIFEST.json was changed after signing)');
      else notes.push('manifest signed by ' + key.fingerprint);
    } catch (err) { fail('MANIFEST.sig', err.message); }
  }

  // 2. every file's hash; nothing added, nothing missing
  const listed = m.files || {};
  for (const [rel, want] of Object.entries(listed)) {
    if (!existsSync(path.join(dir, rel))) fail('file ' + rel, 'listed in the manifest but missing');
    else if (fileSha256(path.join(dir, rel)) !== want) fail('file ' + rel, 'SHA-256 differs from the manifest (replaced or edited)');
  }
  for (const rel of filesUnder(dir)) if (!(rel in listed) && rel !== 'MANIFEST.json' && rel !== 'MANIFEST.sig') fail('file ' + rel, 'not in the manifest (added)');

  // 3. the chain, recomputed from events.jsonl (streamed; only the hashes inclusion proofs need are kept)
  let proofs = {};
  try { proofs = JSON.parse((read('checkpoints/proofs.json') || '{}').toString()); } catch { fail('checkpoints/proofs.json', 'does not parse'); }
  const wanted = new Set();
  for (const p of proofs.agents || []) for (const inc of p.inclusion || []) wanted.add(p.agentId + '#' + inc.seq);
  const hashAt = new Map();
  const heads = new Map();
  const figures = newFigures(m.period && m.period.connection);
  const firstOf = new Map();
  let lineNo = 0;
  for (const line of fileLines(path.join(dir, 'events.jsonl'))) {
    lineNo++;
    if (!line) continue;
    let e;
    try { e = JSON.parse(line); } catch { fail('events.jsonl line ' + lineNo, 'does not parse'); continue; }
    const h = heads.get(e.agentId);
    const where = 'events.jsonl line ' + lineNo + ' (agent ' + e.agentId + ', seq ' + e.seq + ')';
    if (!h) firstOf.set(e.agentId, e);
    else if (e.seq !== h.seq + 1) fail(where, 'expected seq ' + (h.seq + 1) + ': ' + (e.seq > h.seq + 1 ? (e.seq - h.seq - 1) + ' event(s) missing (deleted)' : e.seq === h.seq ? 'duplicated (inserted)' : 'out of order (reordered or inserted)'));
    else if (e.prev !== h.hash) fail(where, 'prev does not link to seq ' + h.seq + ' (inserted or spliced)');
    if (eventHash(e) !== e.hash) fail(where, 'content does not match its hash (edited)');
    heads.set(e.agentId, { seq: e.seq, hash: e.hash });
    if (wanted.has(e.agentId + '#' + e.seq)) hashAt.set(e.agentId + '#' + e.seq, e.hash);
    figures.add(e);
  }

  for (const a of m.agents || []) {
    const first = firstOf.get(a.agentId);
    const head = heads.get(a.agentId);
    if (!first || !head) { fail('agent ' + a.agentId, 'no events in events.jsonl'); continue; }
    if (first.seq !== a.firstSeq) fail('agent ' + a.agentId, 'events.jsonl starts at seq ' + first.seq + ', the manifest says ' + a.firstSeq + ' (events cut from the head)');
    if (first.prev !== a.prevHash) fail('agent ' + a.agentId, 'the first event does not follow the hash the manifest records before it');
    if (head.seq < a.lastSeq) fail('agent ' + a.agentId, 'events.jsonl ends at seq ' + head.seq + ', the manifest says ' + a.lastSeq + ' (truncated tail)');
    else if (head.seq !== a.lastSeq || head.hash !== a.lastHash) fail('agent ' + a.agentId, 'the last event is not the one the manifest records (seq ' + head.seq + ')');
  }
  for (const id of heads.keys()) if (!(m.agents || []).some((a) => a.agentId === id)) fail('agent ' + id, 'has events but is not in the manifest');

  // 4. checkpoints: signed, consistent with each other, covering the period's first and last events
  const closing = new Map();
  for (const a of m.agents || []) {
    const p = (proofs.agents || []).find((x) => x.agentId === a.agentId);
    if (!p) { fail('checkpoints for agent ' + a.agentId, 'none in checkpoints/proofs.json'); continue; }
    const cps = [];
    for (const f of p.checkpoints) {
      const t = read('checkpoints/' + f);
      if (!t) { fail('checkpoint ' + f, 'missing'); continue; }
      try {
        const { body, key, time } = openNote(t.toString('utf8'), keys);
        const cp = parseCheckpoint(body);
        if (cp.origin !== 'hoopctl/' + a.agentId) fail('checkpoint ' + f, 'is for ' + cp.origin + ', not agent ' + a.agentId + ' (swapped)');
        if (!f.endsWith('.' + String(cp.size).padStart(12, '0') + '.note')) fail('checkpoint ' + f, 'signs ' + cp.size + ' events, not what its name says (swapped)');
        cps.push({ ...cp, file: f, time, fingerprint: key.fingerprint });
      } catch (err) { fail('checkpoint ' + f, err.message); }
    }
    cps.sort((x, y) => x.size - y.size);
    for (let i = 1; i < cps.length; i++) {
      const c = (p.consistency || []).find((x) => x.from === cps[i - 1].size && x.to === cps[i].size);
      if (!c) fail('checkpoints ' + cps[i - 1].file + ' and ' + cps[i].file, 'no consistency proof');
      else if (!verifyConsistency(c.from, c.to, cps[i - 1].root, cps[i].root, c.proof.map(b64))) fail('checkpoints ' + cps[i - 1].file + ' and ' + cps[i].file, 'not consistent: the later tree does not extend the earlier one');
    }
    const close = cps.find((c) => c.size >= a.lastSeq);
    if (!close) { fail('agent ' + a.agentId, 'the period\'s last event (seq ' + a.lastSeq + ') is in no signed checkpoint'); continue; }
    closing.set(a.agentId, close);
    for (const inc of p.inclusion || []) {
      const h = hashAt.get(a.agentId + '#' + inc.seq);
      if (!h) { fail('inclusion proof for seq ' + inc.seq, 'that event is not in events.jsonl'); continue; }
      if (inc.size !== close.size) fail('inclusion proof for seq ' + inc.seq, 'is against a tree of ' + inc.size + ', the closing checkpoint has ' + close.size);
      else if (!verifyInclusion(leafOf(h), inc.seq - 1, close.size, inc.proof.map(b64), close.root)) fail('event seq ' + inc.seq + ' (agent ' + a.agentId + ')', 'not included in the signed checkpoint ' + close.file);
    }
    for (const s of [a.firstSeq, a.lastSeq]) if (!(p.inclusion || []).some((x) => x.seq === s)) fail('agent ' + a.agentId, 'no inclusion proof for seq ' + s);
  }
  if (!problems.length) notes.push('every event of the period is under a signed checkpoint (the last one is included, and each event links to the next)');

  // 5. the previous bundle
  if (opts.previous) {
    const pb = existsSync(path.join(opts.previous, 'MANIFEST.json')) ? readFileSync(path.join(opts.previous, 'MANIFEST.json')) : undefined;
    if (!pb) fail('previous bundle', 'no MANIFEST.json in ' + opts.previous);
    else {
      const pm = JSON.parse(pb.toString('utf8'));
      if (!m.previous) fail('previous bundle', 'this bundle names no previous bundle');
      else if (m.previous.manifestSha256 !== sha256(pb)) fail('previous bundle', 'its manifest is not the one this bundle follows (spliced or replaced)');
      const pp = existsSync(path.join(opts.previous, 'checkpoints', 'proofs.json')) ? JSON.parse(readFileSync(path.join(opts.previous, 'checkpoints', 'proofs.json'), 'utf8')) : { agents: [] };
      for (const a of m.agents || []) {
        const pa = (pm.agents || []).find((x) => x.agentId === a.agentId);
        if (!pa) continue;
        if (a.firstSeq > pa.lastSeq + 1) fail('agent ' + a.agentId, 'events seq ' + (pa.lastSeq + 1) + '..' + (a.firstSeq - 1) + ' are in neither bundle (a skipped period)');
        else if (a.firstSeq <= pa.lastSeq) fail('agent ' + a.agentId, 'the bundles overlap at seq ' + a.firstSeq + '..' + pa.lastSeq);
        else if (a.prevHash !== pa.lastHash) fail('agent ' + a.agentId, 'the first event does not follow the previous bundle\'s last (spliced)');
        const pcp = (pp.agents || []).find((x) => x.agentId === a.agentId);
        const link = ((proofs.agents || []).find((x) => x.agentId === a.agentId) || {}).fromPrevious;
        const close = closing.get(a.agentId);
        if (pcp && close) {
          const pfile = pcp.checkpoints.map((f) => ({ f, size: Number(f.split('.').at(-2)) })).filter((x) => x.size >= pa.lastSeq).sort((x, y) => x.size - y.size)[0];
          try {
            const prevCp = parseCheckpoint(openNote(readFileSync(path.join(opts.previous, 'checkpoints', pfile.f), 'utf8'), keys).body);
            if (!link || link.from !== prevCp.size || link.to !== close.size || !verifyConsistency(link.from, link.to, prevCp.root, close.root, link.proof.map(b64))) fail('agent ' + a.agentId, 'the closing checkpoint is not consistent with the previous bundle\'s');
          } catch (err) { fail('previous bundle checkpoint', err.message); }
        }
      }
    }
  } else if (m.previous) notes.push('the link to the previous bundle was not checked: pass --previous DIR');

  // 6. the report's figures, recomputed
  const { figures: fig, tables } = figures.result();
  if (canonical(fig) !== canonical(m.figures)) fail('MANIFEST.json figures', 'differ from the figures recomputed from events.jsonl');
  const html = (read('report.html') || Buffer.alloc(0)).toString('utf8');
  const jm = /<script type="application\/json" id="figures">([^<]*)<\/script>/.exec(html);
  if (!jm || canonical(JSON.parse(jm[1])) !== canonical(fig)) fail('report.html', 'its figures differ from those recomputed from events.jsonl');
  for (const [, name, shown] of html.matchAll(/data-figure="(\w+)">([^<]*)</g)) if (String(fig[name]) !== shown) fail('report.html figure ' + name, 'shows ' + shown + ', events.jsonl gives ' + fig[name]);
  for (const [name, t] of Object.entries(tables)) {
    const b = read('data/' + name + '.csv');
    if (!b || b.toString('utf8') !== toCsv(t)) fail('data/' + name + '.csv', 'differs from the table recomputed from events.jsonl');
  }
  if (fig.selfApprovals !== 0) notes.push('self-approvals: ' + fig.selfApprovals + ' (listed in data/exceptions.csv)');
  return { ok: problems.length === 0, problems, notes, figures: fig };
}

function main(argv) {
  const opts = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--key') opts.key = argv[++i];
    else if (a === '--fingerprint') opts.fingerprint = argv[++i];
    else if (a === '--previous') opts.previous = argv[++i];
    else if (a === '--json') opts.json = true;
    else if (a === '--dir') opts.dir = argv[++i];
    else { process.stderr.write('usage: node verify.mjs [--key FILE | --fingerprint sha256:HEX] [--previous DIR] [--json]\n'); process.exit(2); }
  }
  const dir = opts.dir || path.dirname(fileURLToPath(import.meta.url));
  const r = verifyBundle(dir, opts);
  if (opts.json) process.stdout.write(JSON.stringify(r) + '\n');
  else {
    for (const n of r.notes) process.stdout.write('note: ' + n + '\n');
    for (const p of r.problems) process.stdout.write('FAIL ' + p + '\n');
    process.stdout.write(r.ok ? 'bundle verified: ' + r.figures.events + ' events, every check holds\n' : 'bundle NOT verified: ' + r.problems.length + ' problem(s)\n');
  }
  process.exitCode = r.ok ? 0 : 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main(process.argv.slice(2));
`;
