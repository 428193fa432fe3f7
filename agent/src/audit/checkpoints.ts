// Signed checkpoints of this agent's audit chain: what lets an outsider notice a rewritten or truncated
// history, which a hash chain alone cannot show (whoever runs the gateway could re-hash it).
//
//   start ── load key (create 0600 if absent) ── replay the chain into a Merkle accumulator, checking
//            every stored checkpoint's root at its size (a chain that no longer matches what was signed
//            refuses to start: signing on top of it would launder the rewrite)
//   every checkpointInterval, at shutdown, on POST /api/audit/checkpoint:
//            read the chain from the last leaf on ── check seq / prev / hash ── push leaves ── sign
//            `origin, size, root, time` (C2SP signed note) ── store ── witnesses (directory, webhook)
//
// Leaves are appended, never recomputed, so each checkpoint extends the previous tree and is consistent
// with it by construction; the accumulator keeps O(log n) hashes. Keys rotate by replacing the key file:
// the key history beside it (`<keyfile>.keys.json`) closes the old key's window and opens the new one's,
// so checkpoints the old key signed in its window stay valid (shared/audit/checkpoint.ts checks windows).
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../log.js';
import type { StateStore } from './store.js';
import { GENESIS, contentOfStoredLine, hashEvent, sha256 } from '../../../shared/audit/chain.js';
import { eventContent } from './event-json.js';
import type { AuditEvent } from './events.js';
import { Accumulator, eventLeaf } from '../../../shared/audit/merkle.js';
import {
  checkpointBody,
  newSigningKeyPem,
  parseVerifierKey,
  signNote,
  signerFromPem,
  verifyCheckpoint,
  type SignerKey,
} from '../../../shared/audit/checkpoint.js';
import type { KeyRecord, SignedCheckpoint } from '../../../shared/api/audit.js';

export class CheckpointRefused extends Error {
  override readonly name = 'CheckpointRefused';
  readonly code = 'CHECKPOINT_REFUSED';
  /** The break is in events no checkpoint signed yet (damage to report), not in signed history (tampering). */
  unsigned = false;
}

export interface Witnesses {
  dir?: string;
  webhook?: string;
}

/** The signing key (created 0600 if absent) and the history of keys this agent has signed with. */
export async function loadSigningKey(file: string, name: string, now: string): Promise<{ signer: SignerKey; keys: KeyRecord[] }> {
  let pem: string;
  try {
    const st = await stat(file);
    // The key proves what this agent signed; readable by others it proves nothing.
    if (st.mode & 0o077) throw new CheckpointRefused(`audit signing key ${file} is readable by group or others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
    pem = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    pem = newSigningKeyPem();
    await writeFile(file, pem, { mode: 0o600, flag: 'wx' });
  }
  const signer = signerFromPem(name, pem);
  const historyFile = `${file}.keys.json`;
  let keys: KeyRecord[] = [];
  try {
    keys = JSON.parse(await readFile(historyFile, 'utf8')) as KeyRecord[];
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new CheckpointRefused(`cannot read the key history ${historyFile}: ${(err as Error).message}`);
  }
  if (keys.at(-1)?.vkey !== signer.vkey) {
    // A new key file: the previous key's window closes now, the new one's opens.
    const last = keys.at(-1);
    if (last && !last.notAfter) last.notAfter = now;
    keys.push({ vkey: signer.vkey, fingerprint: signer.fingerprint, notBefore: keys.length ? now : undefined });
    await writeFile(`${historyFile}.tmp`, JSON.stringify(keys, null, 2) + '\n', { mode: 0o644 });
    await rename(`${historyFile}.tmp`, historyFile);
  }
  return { signer, keys };
}

export class Checkpointer {
  private readonly acc = new Accumulator();
  private next = 1;
  private lastHash = GENESIS;
  private latest?: SignedCheckpoint;
  private queue: Promise<unknown> = Promise.resolve();
  private broken?: CheckpointRefused;

  private constructor(
    private readonly store: StateStore,
    readonly origin: string,
    readonly signer: SignerKey,
    readonly keys: KeyRecord[],
    private readonly clock: () => number,
    private readonly witnesses: Witnesses,
    private readonly log: Logger,
  ) {}

  static async start(opts: {
    store: StateStore;
    signer: SignerKey;
    keys: KeyRecord[];
    clock: () => number;
    witnesses?: Witnesses;
    log: Logger;
  }): Promise<Checkpointer> {
    const c = new Checkpointer(opts.store, opts.signer.name, opts.signer, opts.keys, opts.clock, opts.witnesses ?? {}, opts.log);
    const stored = await opts.store.listCheckpoints();
    const verifiers = opts.keys.map((k) => parseVerifierKey(k.vkey, { notBefore: k.notBefore, notAfter: k.notAfter }));
    const expected = stored.map((s) => {
      try {
        return verifyCheckpoint(s.note, verifiers);
      } catch (err) {
        throw new CheckpointRefused(`stored checkpoint of size ${s.size} does not verify: ${(err as Error).message}`);
      }
    });
    try {
      await c.catchUp(expected);
    } catch (err) {
      // Signed history rewritten or cut: refuse to start. A damaged record after the last checkpoint: the
      // agent runs (the store keeps it for `audit verify` to report) but signs nothing until it is resolved.
      if (!(err instanceof CheckpointRefused && err.unsigned)) throw err;
      c.broken = err;
      opts.log.error('audit chain damaged after the last checkpoint; no checkpoint will be signed', { error: err.message });
    }
    const last = stored.at(-1);
    if (last) c.latest = { size: last.size, root: expected.at(-1)!.root.toString('base64'), note: last.note };
    return c;
  }

  /** The newest checkpoint signed (or found at start). */
  get last(): SignedCheckpoint | undefined {
    return this.latest;
  }

  /** Signs the chain as it stands now; when nothing was appended since the last one, returns that one. */
  checkpoint(): Promise<SignedCheckpoint> {
    const run = this.queue.then(() => this.sign());
    this.queue = run.catch(() => {});
    return run;
  }

  private async sign(): Promise<SignedCheckpoint> {
    if (this.broken) throw this.broken;
    await this.catchUp([]);
    if (this.latest && this.latest.size === this.acc.size) return this.latest;
    const root = this.acc.root();
    const body = checkpointBody({ origin: this.origin, size: this.acc.size, root, time: new Date(this.clock()).toISOString() });
    const note = signNote(body, [this.signer]);
    await this.store.appendCheckpoint({ size: this.acc.size, note });
    this.latest = { size: this.acc.size, root: root.toString('base64'), note };
    await this.witness(this.latest);
    return this.latest;
  }

  /** Pushes the chain's new events; checks each link, and stored roots at their sizes. */
  private async catchUp(expected: { size: number; root: Buffer }[]): Promise<void> {
    let k = 0;
    const check = () => {
      for (; k < expected.length && expected[k].size <= this.acc.size; k++) {
        if (expected[k].size === this.acc.size && !expected[k].root.equals(this.acc.root())) {
          throw new CheckpointRefused(`the chain no longer matches the signed checkpoint of size ${expected[k].size}: its first ${expected[k].size} events were changed`);
        }
      }
    };
    check();
    const signedUpTo = expected.at(-1)?.size ?? this.latest?.size ?? 0;
    for await (const line of this.store.chainLines(this.next)) {
      let e: { seq: number; prev: string; hash: string };
      try {
        e = JSON.parse(line) as typeof e;
      } catch {
        const err = new CheckpointRefused(`unparsable record at seq ${this.next}; not signing a broken chain`);
        err.unsigned = this.next > signedUpTo;
        throw err;
      }
      // Events already under a signed checkpoint are held to its root (below), which covers their hashes;
      // their content is re-hashed only for those about to be signed (start-up cost, see the bench).
      const signed = this.next <= signedUpTo;
      if (e.seq !== this.next || e.prev !== this.lastHash || (!signed && !hashMatches(line, e))) {
        const err = new CheckpointRefused(`the chain is broken at seq ${this.next}; not signing it`);
        err.unsigned = !signed;
        throw err;
      }
      this.acc.push(eventLeaf(e.hash));
      this.next++;
      this.lastHash = e.hash;
      check();
    }
    if (k < expected.length) {
      throw new CheckpointRefused(`the chain has ${this.acc.size} events but a checkpoint signed ${expected.at(-1)!.size}: events were deleted from its tail`);
    }
  }

  /** Witness copies: failures are logged, never fatal (the store holds the checkpoint either way). */
  private async witness(cp: SignedCheckpoint): Promise<void> {
    const { dir, webhook } = this.witnesses;
    if (dir) {
      const file = path.join(dir, witnessFileName(this.origin, cp.size));
      await mkdir(dir, { recursive: true })
        .then(() => writeFile(file, cp.note, { flag: 'wx' }))
        .catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'EEXIST') this.log.warn('checkpoint witness directory not written', { dir, error: err.message });
        });
    }
    if (webhook) {
      await fetch(webhook, { method: 'POST', headers: { 'content-type': 'text/plain; charset=utf-8' }, body: cp.note, signal: AbortSignal.timeout(5000) })
        .then((r) => {
          if (!r.ok) this.log.warn('checkpoint witness webhook refused', { origin: new URL(webhook).origin, status: r.status });
        })
        .catch((err: Error) => this.log.warn('checkpoint witness webhook failed', { origin: new URL(webhook).origin, error: err.message }));
    }
  }
}

/**
 * Whether a stored event's content hashes to its `hash`, as `hashEvent` decides. The common case costs
 * one hash: the line as the store wrote it (storedLine) holds exactly the content the fast serializer
 * makes of the parsed event, and then that content is the canonical one (event-json.test.ts). Any other
 * line (edited, or in another form) is judged by the general canonical serializer.
 */
function hashMatches(line: string, e: { hash: string }): boolean {
  const raw = contentOfStoredLine(line);
  if (raw !== undefined && raw === eventContent(e as unknown as AuditEvent)) return sha256(raw) === e.hash;
  return hashEvent(e) === e.hash;
}

/** `<origin with / as _>.<size, 12 digits>.checkpoint`: sorts by size, one file per checkpoint. */
export function witnessFileName(origin: string, size: number): string {
  return `${origin.replace(/[^A-Za-z0-9_.-]/g, '_')}.${String(size).padStart(12, '0')}.checkpoint`;
}
