// A chain held against its signed checkpoints: what a hash chain cannot show on its own. A chain cut
// at the tail, or rewritten and re-hashed, still links; its Merkle root at a signed size does not match,
// or it is shorter than a size that was signed. Used by `hoopctl audit verify` and `evidence verify`.
//
// Each checkpoint's origin names its chain (`hoopctl/<agentId>`); records stream through one accumulator
// per agent (O(log n) memory), and the root is taken when the accumulator reaches each signed size.
import { Accumulator, eventLeaf } from './merkle.js';
import { verifyCheckpoint, type Checkpoint, type VerifierKey } from './checkpoint.js';

export interface CheckedCheckpoint {
  agentId: string;
  size: number;
  time?: string;
  fingerprint: string;
}

export interface AgainstCheckpoints {
  /** Problems, each one line naming the checkpoint and what is wrong; empty when all hold. */
  problems: string[];
  checked: CheckedCheckpoint[];
  /** Per agent chain: its length, the largest size a verified checkpoint signed, and the events after it. */
  chains: { agentId: string; events: number; signed: number; unsigned: number }[];
}

export const originOf = (agentId: string) => `hoopctl/${agentId}`;

/**
 * `notes` are signed notes from anywhere (store, witness, a file); the same checkpoint twice counts
 * once. A note that does not verify is a problem, not skipped: a forged checkpoint must be noticed.
 */
export async function checkAgainstCheckpoints(
  records: Iterable<string | { agentId: string; hash: string }> | AsyncIterable<string | { agentId: string; hash: string }>,
  notes: readonly { note: string; where: string }[],
  keys: readonly VerifierKey[],
): Promise<AgainstCheckpoints> {
  const problems: string[] = [];
  const wanted = new Map<string, Map<number, { cp: Checkpoint & { key: VerifierKey }; where: string }>>();
  for (const { note, where } of notes) {
    let cp: Checkpoint & { key: VerifierKey };
    try {
      cp = verifyCheckpoint(note, keys);
    } catch (err) {
      problems.push(`checkpoint ${where}: ${(err as Error).message}`);
      continue;
    }
    if (!cp.origin.startsWith('hoopctl/')) {
      problems.push(`checkpoint ${where}: origin ${cp.origin} is not an hoopctl audit chain`);
      continue;
    }
    const agentId = cp.origin.slice('hoopctl/'.length);
    let bySize = wanted.get(agentId);
    if (!bySize) wanted.set(agentId, (bySize = new Map()));
    const seen = bySize.get(cp.size);
    if (seen && !seen.cp.root.equals(cp.root)) problems.push(`checkpoints ${seen.where} and ${where} sign two different trees of ${cp.size} events (a split view)`);
    else if (!seen) bySize.set(cp.size, { cp, where });
  }

  const accs = new Map<string, Accumulator>();
  const checked: CheckedCheckpoint[] = [];
  const settle = (agentId: string, acc: Accumulator) => {
    const c = wanted.get(agentId)?.get(acc.size);
    if (!c) return;
    if (!c.cp.root.equals(acc.root())) problems.push(`checkpoint ${c.where}: the first ${acc.size} events of agent ${agentId} differ from what was signed (history rewritten)`);
    else checked.push({ agentId, size: acc.size, time: c.cp.time, fingerprint: c.cp.key.fingerprint });
  };
  for await (const r of records) {
    let e: { agentId: string; hash: string };
    try {
      e = typeof r === 'string' ? (JSON.parse(r) as typeof e) : r;
    } catch {
      continue; // the chain verifier reports unparsable records
    }
    let acc = accs.get(e.agentId);
    if (!acc) accs.set(e.agentId, (acc = new Accumulator()));
    try {
      acc.push(eventLeaf(e.hash));
    } catch {
      continue; // a malformed hash: the chain verifier reports it
    }
    settle(e.agentId, acc);
  }

  const chains: AgainstCheckpoints['chains'] = [];
  for (const agentId of new Set([...accs.keys(), ...wanted.keys()])) {
    const events = accs.get(agentId)?.size ?? 0;
    const sizes = [...(wanted.get(agentId)?.keys() ?? [])].sort((a, b) => a - b);
    const beyond = sizes.filter((s) => s > events);
    if (beyond.length) {
      const top = wanted.get(agentId)!.get(beyond.at(-1)!)!;
      problems.push(`truncated: agent ${agentId}'s chain ends at seq ${events}, but checkpoint ${top.where} signed ${top.cp.size} events (${top.cp.size - events} missing at the tail)`);
    }
    const signed = Math.max(0, ...checked.filter((c) => c.agentId === agentId).map((c) => c.size));
    chains.push({ agentId, events, signed, unsigned: events - signed });
  }
  return { problems, checked, chains };
}
