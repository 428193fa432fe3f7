// Where `audit verify` and `evidence verify` find signing keys and signed checkpoints. No printing.
//   keys:        --key FILE (the agent's /api/audit/key document, its key history file, or verifier key
//                lines), else the key history beside the signing key in a data directory; --fingerprint
//                keeps only the key a person compared out of band.
//   checkpoints: the store's <agentId>.checkpoints, a witness directory's *.checkpoint files,
//                and --checkpoint FILE (one signed note).
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { parseVerifierKey, type VerifierKey } from '../../../shared/audit/checkpoint.js';
import { KeyRecord, KeyResponse } from '../../../shared/api/audit.js';
import { ExitCode, UserError } from '../errors.js';

export interface Keys {
  keys: VerifierKey[];
  /** Where they came from, for the report ("pinned by --fingerprint", "the data directory's own copy"…). */
  source: string;
}

const KeyFile = z.union([KeyResponse.transform((r) => r.keys), z.array(KeyRecord)]);

async function readKeyFile(file: string): Promise<VerifierKey[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    throw new UserError('NOT_FOUND', `cannot read the key file ${file}`, { exitCode: ExitCode.Usage });
  }
  try {
    if (text.trimStart().startsWith('{') || text.trimStart().startsWith('[')) {
      return KeyFile.parse(JSON.parse(text)).map((k) => parseVerifierKey(k.vkey, k));
    }
    return text.split('\n').filter((l) => l.trim() && !l.startsWith('#')).map((l) => parseVerifierKey(l));
  } catch (err) {
    throw new UserError('BAD_KEY', `${file} holds no usable verifier key: ${(err as Error).message.split('\n')[0]}`, {
      exitCode: ExitCode.Usage,
      hint: 'Pass the agent’s /api/audit/key document, its audit-signing.key.keys.json, or verifier key lines (name+hash+key).',
    });
  }
}

export async function loadKeys(opts: { key?: string; fingerprint?: string; dataDir?: string }): Promise<Keys | undefined> {
  let keys: VerifierKey[] | undefined;
  let source = '';
  if (opts.key) {
    keys = await readKeyFile(opts.key);
    source = opts.key;
  } else if (opts.dataDir) {
    const file = path.join(opts.dataDir, 'audit-signing.key.keys.json');
    keys = await readKeyFile(file).catch(() => undefined);
    source = `${file} (the operator's own copy: pass --key or --fingerprint to pin the key)`;
  }
  if (opts.fingerprint) {
    const fp = opts.fingerprint.toLowerCase().replace(/^(sha256:)?/, 'sha256:');
    const pinned = (keys ?? []).filter((k) => k.fingerprint === fp);
    if (!pinned.length) throw new UserError('UNKNOWN_KEY', `no signing key with fingerprint ${fp} ${keys ? `in ${opts.key ?? 'the data directory'}` : 'found'}`, { hint: 'Pass the key file with --key, or check the fingerprint.' });
    return { keys: pinned, source: `${fp} (pinned)` };
  }
  return keys && { keys, source };
}

export interface FoundNote {
  note: string;
  where: string;
}

/** Signed checkpoints from the audit folder (store), a witness directory and single files. */
export async function findCheckpoints(opts: { auditDir?: string; witness?: string; files?: string[] }): Promise<FoundNote[]> {
  const out: FoundNote[] = [];
  if (opts.auditDir) {
    for (const f of (await readdir(opts.auditDir).catch(() => [] as string[])).filter((n) => n.endsWith('.checkpoints')).sort()) {
      const lines = (await readFile(path.join(opts.auditDir, f), 'utf8')).split('\n');
      for (const l of lines) {
        try {
          const c = JSON.parse(l) as { size: number; note: string };
          if (typeof c.note === 'string') out.push({ note: c.note, where: `${f} (size ${c.size})` });
        } catch {
          /* a torn line: that checkpoint was never acknowledged */
        }
      }
    }
  }
  if (opts.witness) {
    let names: string[];
    try {
      names = await readdir(opts.witness);
    } catch {
      throw new UserError('NOT_FOUND', `no such witness directory: ${opts.witness}`, { exitCode: ExitCode.Usage });
    }
    for (const n of names.filter((x) => x.endsWith('.checkpoint')).sort()) out.push({ note: await readFile(path.join(opts.witness, n), 'utf8'), where: path.join(opts.witness, n) });
  }
  for (const f of opts.files ?? []) {
    const note = await readFile(f, 'utf8').catch(() => {
      throw new UserError('NOT_FOUND', `cannot read the checkpoint file ${f}`, { exitCode: ExitCode.Usage });
    });
    out.push({ note, where: f });
  }
  return out;
}
