// Where `hoopctl evidence build` reads an audit trail from. Three sources, one shape:
//   agent       the running agent's API (reviewers): the export, checkpoints, keys, recordings; it signs
//               a fresh checkpoint first so the period's last event is covered, and signs the manifest
//   data dir    an agent's data directory (an auditor's offline copy): segments, checkpoints, key history;
//               the manifest is signed with the key file there (or --signing-key)
//   store URL   a PostgreSQL state store: the tables, read-only; keys and the signing key come as files
// Each streams the chains (per agent in seq order) so a period of millions of events is never in memory.
import { createReadStream } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import pg from 'pg';
import { z } from 'zod';
import { CheckpointList, KeyRecord, KeyResponse, SignedCheckpoint, SignedManifest } from '../../../shared/api/audit.js';
import { manifestNoteBody, signNote, signerFromPem } from '../../../shared/audit/checkpoint.js';
import { ExitCode, UserError } from '../errors.js';
import { getJson, getStream, parseBody, postJson } from './agent-api.js';
import { SessionRecording } from '../../../shared/api/sessions.js';

export interface EvidenceSource {
  /** What the report names as its source. */
  readonly describe: string;
  /** Every agent's chain as stored lines, each agent in seq order (agents may interleave). */
  chain(): AsyncIterable<string>;
  checkpoints(): Promise<{ size: number; note: string }[]>;
  keys(): Promise<KeyRecord[]>;
  recording(sessionId: string): Promise<string[]>;
  /** A signed note over the manifest's SHA-256, by the agent's key. */
  signManifest(origin: string, manifestSha256: string): Promise<string>;
  close(): Promise<void>;
}

async function* fileLines(file: string): AsyncIterable<string> {
  const rl = createInterface({ input: createReadStream(file), crlfDelay: Infinity });
  for await (const l of rl) if (l) yield l;
}

const unreadable = (what: string, err: unknown) =>
  new UserError('STORE_UNREACHABLE', `cannot read ${what}: ${(err as Error).message}`, { exitCode: ExitCode.Unreachable });

export async function dataDirSource(dataDir: string, signingKey?: string): Promise<EvidenceSource> {
  const dir = path.join(dataDir, 'audit');
  let names: string[];
  try {
    names = (await readdir(dir)).sort();
  } catch (err) {
    throw unreadable(`the audit store in ${dataDir}`, err);
  }
  const segments = names.filter((n) => /\.\d{12}\.jsonl$/.test(n));
  const readKeys = async () => KeyRecordList.parse(JSON.parse(await readFile(path.join(dataDir, 'audit-signing.key.keys.json'), 'utf8')));
  return {
    describe: `data directory ${path.resolve(dataDir)}`,
    async *chain() {
      for (const s of segments) yield* fileLines(path.join(dir, s));
    },
    async checkpoints() {
      const out: { size: number; note: string }[] = [];
      for (const n of names.filter((x) => x.endsWith('.checkpoints'))) {
        for await (const l of fileLines(path.join(dir, n))) {
          const c = CheckpointLine.safeParse(safeJson(l));
          if (c.success) out.push(c.data);
        }
      }
      return out;
    },
    keys: () => readKeys().catch((err) => Promise.reject(unreadable('the key history of the data directory', err))),
    async recording(sessionId) {
      const text = await readFile(path.join(dir, 'recordings', `${sessionId}.jsonl`), 'utf8').catch(() => '');
      return text.split('\n').filter((l) => l);
    },
    async signManifest(origin, sha) {
      const pem = await readFile(signingKey ?? path.join(dataDir, 'audit-signing.key'), 'utf8').catch((err) => Promise.reject(unreadable('the signing key', err)));
      return signNote(manifestNoteBody(origin, sha, new Date().toISOString()), [signerFromPem(origin, pem)]);
    },
    async close() {},
  };
}

export async function storeUrlSource(url: string, keyFile: string | undefined, signingKey: string | undefined): Promise<EvidenceSource> {
  if (!keyFile || !signingKey) {
    throw new UserError('USAGE', 'a PostgreSQL store holds no keys: pass --key (the agent’s key history) and --signing-key', { exitCode: ExitCode.Usage });
  }
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  try {
    await client.connect();
    await client.query('SELECT 1 FROM audit_events LIMIT 1');
  } catch (err) {
    await client.end().catch(() => {});
    throw unreadable('the PostgreSQL store', err);
  }
  return {
    describe: `PostgreSQL store ${new URL(url).host}${new URL(url).pathname}`,
    async *chain() {
      const { rows: agents } = await client.query<{ agent_id: string }>('SELECT agent_id FROM audit_agents ORDER BY agent_id');
      for (const { agent_id } of agents) {
        for (let after = 0; ; ) {
          const { rows } = await client.query<{ seq: string; body: string }>('SELECT seq, body FROM audit_events WHERE agent_id = $1 AND seq > $2 ORDER BY seq LIMIT 5000', [agent_id, after]);
          for (const r of rows) yield r.body;
          if (rows.length < 5000) break;
          after = Number(rows[rows.length - 1].seq);
        }
      }
    },
    async checkpoints() {
      const { rows } = await client.query<{ size: string; note: string }>('SELECT size, note FROM audit_checkpoints ORDER BY agent_id, size');
      return rows.map((r) => ({ size: Number(r.size), note: r.note }));
    },
    keys: async () => KeyRecordList.parse(KeyFileJson.parse(JSON.parse(await readFile(keyFile, 'utf8')))),
    async recording(sessionId) {
      const { rows } = await client.query<{ entry: string }>('SELECT entry FROM audit_recordings WHERE session_id = $1 ORDER BY id', [sessionId]);
      return rows.map((r) => r.entry);
    },
    async signManifest(origin, sha) {
      return signNote(manifestNoteBody(origin, sha, new Date().toISOString()), [signerFromPem(origin, await readFile(signingKey, 'utf8'))]);
    },
    close: () => client.end(),
  };
}

export function agentSource(agent: string, token: string): EvidenceSource {
  return {
    describe: `agent ${agent}`,
    async *chain() {
      // A checkpoint now: the period's last event is then covered by a signature.
      parseBody(SignedCheckpoint, await postJson(agent, '/api/audit/checkpoint', token, {}), '/api/audit/checkpoint');
      for await (const l of splitLines(await getStream(agent, '/api/audit/export', token, { format: 'jsonl' }))) yield l;
    },
    async checkpoints() {
      return parseBody(CheckpointList, await getJson(agent, '/api/audit/checkpoints', token), '/api/audit/checkpoints').checkpoints;
    },
    async keys() {
      return parseBody(KeyResponse, await getJson(agent, '/api/audit/key', token), '/api/audit/key').keys;
    },
    async recording(sessionId) {
      const r = parseBody(SessionRecording, await getJson(agent, `/api/sessions/${encodeURIComponent(sessionId)}/recording`, token), '/api/sessions/ID/recording');
      return r.recording.map((e) => JSON.stringify(e));
    },
    async signManifest(_origin, sha) {
      return parseBody(SignedManifest, await postJson(agent, '/api/evidence/sign', token, { manifestSha256: sha }), '/api/evidence/sign').note;
    },
    async close() {},
  };
}

async function* splitLines(body: AsyncIterable<Buffer>): AsyncIterable<string> {
  let rest = '';
  for await (const chunk of body) {
    rest += chunk.toString('utf8');
    let i: number;
    while ((i = rest.indexOf('\n')) >= 0) {
      const l = rest.slice(0, i);
      rest = rest.slice(i + 1);
      if (l) yield l;
    }
  }
  if (rest) yield rest;
}

const KeyRecordList = z.array(KeyRecord).min(1);
const KeyFileJson = z.union([KeyResponse.transform((r) => r.keys), KeyRecordList]);
const CheckpointLine = z.object({ size: z.number().int().min(0), note: z.string().min(1) });

function safeJson(l: string): unknown {
  try {
    return JSON.parse(l);
  } catch {
    return undefined;
  }
}
