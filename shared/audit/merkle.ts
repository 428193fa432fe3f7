// RFC 6962 §2.1 Merkle tree over an audit chain (also RFC 9162 §2.1, whose verification algorithms are
// used here). A leaf is one chain event; its data is the event's 32-byte hash (which already commits to
// the event's content), so a tree can be built from hashes alone:
//
//   leaf = SHA-256(0x00 || eventHash)          node = SHA-256(0x01 || left || right)
//   MTH(D[n]), n > 1: k = largest power of two < n; node(MTH(D[0:k]), MTH(D[k:n]))
//
// Proofs are generated from an array of leaf hashes by the recursive definitions of the RFC (PATH and
// SUBPROOF), and checked with RFC 9162's iterative algorithms, so the two sides share no code and a test
// that round-trips them cross-checks both. `Accumulator` computes the root in O(log n) memory while the
// chain is streamed (the agent's checkpoints, the bundle builder).
import { createHash, hash } from 'node:crypto';

export type Hash = Buffer;

const LEAF = Buffer.from([0]);
const NODE = Buffer.from([1]);

export function leafHash(data: Uint8Array): Hash {
  return hash('sha256', Buffer.concat([LEAF, data]), 'buffer');
}

export function nodeHash(left: Uint8Array, right: Uint8Array): Hash {
  return createHash('sha256').update(NODE).update(left).update(right).digest();
}

/** The leaf of one chain event: its hex `hash` decoded to 32 bytes. */
export function eventLeaf(eventHashHex: string): Hash {
  if (!/^[0-9a-f]{64}$/.test(eventHashHex)) throw new RangeError('an event hash is 64 lower-case hex digits');
  return leafHash(Buffer.from(eventHashHex, 'hex'));
}

export const EMPTY_ROOT: Hash = createHash('sha256').digest();

/** Largest power of two strictly less than n (n ≥ 2). */
function split(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/** Leaf hashes packed 32 bytes apiece in one growing buffer: a million leaves in 32 MB. */
export class LeafList {
  private buf = Buffer.allocUnsafe(32 * 4096);
  length = 0;

  push(h: Hash): void {
    if ((this.length + 1) * 32 > this.buf.length) {
      const next = Buffer.allocUnsafe(this.buf.length * 2);
      this.buf.copy(next, 0, 0, this.length * 32);
      this.buf = next;
    }
    h.copy(this.buf, this.length * 32);
    this.length++;
  }

  get(i: number): Hash {
    return this.buf.subarray(i * 32, i * 32 + 32);
  }
}

export type Leaves = readonly Hash[] | LeafList;
const at = (l: Leaves, i: number): Hash => (l instanceof LeafList ? l.get(i) : l[i]);

/** MTH over leaf hashes [lo, hi). */
export function rootOf(leaves: Leaves, lo = 0, hi = leaves.length): Hash {
  const n = hi - lo;
  if (n === 0) return EMPTY_ROOT;
  if (n === 1) return at(leaves, lo);
  const k = split(n);
  return nodeHash(rootOf(leaves, lo, lo + k), rootOf(leaves, lo + k, hi));
}

/** PATH(m, D[n]): the audit path of leaf `index` in the tree of the first `size` leaves. */
export function inclusionProof(leaves: Leaves, index: number, size = leaves.length): Hash[] {
  if (!(index >= 0 && index < size && size <= leaves.length)) throw new RangeError(`no leaf ${index} in a tree of ${size}`);
  const path = (m: number, lo: number, hi: number): Hash[] => {
    const n = hi - lo;
    if (n === 1) return [];
    const k = split(n);
    return m < k ? [...path(m, lo, lo + k), rootOf(leaves, lo + k, hi)] : [...path(m - k, lo + k, hi), rootOf(leaves, lo, lo + k)];
  };
  return path(index, 0, size);
}

/** PROOF(m, D[n]): that the tree of the first `first` leaves is a prefix of the tree of `second`. */
export function consistencyProof(leaves: Leaves, first: number, second = leaves.length): Hash[] {
  if (!(first >= 0 && first <= second && second <= leaves.length)) throw new RangeError(`no consistency proof from ${first} to ${second}`);
  if (first === 0 || first === second) return [];
  const sub = (m: number, lo: number, hi: number, whole: boolean): Hash[] => {
    const n = hi - lo;
    if (m === n) return whole ? [] : [rootOf(leaves, lo, hi)];
    const k = split(n);
    return m <= k ? [...sub(m, lo, lo + k, whole), rootOf(leaves, lo + k, hi)] : [...sub(m - k, lo + k, hi, false), rootOf(leaves, lo, lo + k)];
  };
  return sub(first, 0, second, true);
}

const odd = (x: number) => x % 2 === 1;
const half = (x: number) => Math.floor(x / 2);

/** RFC 9162 §2.1.3.2. */
export function verifyInclusion(leaf: Hash, index: number, size: number, proof: readonly Hash[], root: Hash): boolean {
  if (!(Number.isSafeInteger(index) && Number.isSafeInteger(size) && index >= 0 && index < size)) return false;
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (odd(fn) || fn === sn) {
      r = nodeHash(p, r);
      if (!odd(fn)) while (!odd(fn) && fn !== 0) [fn, sn] = [half(fn), half(sn)];
    } else r = nodeHash(r, p);
    [fn, sn] = [half(fn), half(sn)];
  }
  return sn === 0 && r.equals(root);
}

/** RFC 9162 §2.1.4.2. A tree of size 0 is a prefix of any tree. */
export function verifyConsistency(first: number, second: number, firstRoot: Hash, secondRoot: Hash, proof: readonly Hash[]): boolean {
  if (!(Number.isSafeInteger(first) && Number.isSafeInteger(second) && first >= 0 && first <= second)) return false;
  if (first === 0) return proof.length === 0;
  if (first === second) return proof.length === 0 && firstRoot.equals(secondRoot);
  const c = isPow2(first) ? [firstRoot, ...proof] : [...proof];
  if (c.length === 0) return false;
  let fn = first - 1;
  let sn = second - 1;
  while (odd(fn)) [fn, sn] = [half(fn), half(sn)];
  let fr = c[0];
  let sr = c[0];
  for (const p of c.slice(1)) {
    if (sn === 0) return false;
    if (odd(fn) || fn === sn) {
      fr = nodeHash(p, fr);
      sr = nodeHash(p, sr);
      if (!odd(fn)) while (!odd(fn) && fn !== 0) [fn, sn] = [half(fn), half(sn)];
    } else sr = nodeHash(sr, p);
    [fn, sn] = [half(fn), half(sn)];
  }
  return fr.equals(firstRoot) && sr.equals(secondRoot) && sn === 0;
}

function isPow2(n: number): boolean {
  while (n > 1 && n % 2 === 0) n /= 2;
  return n === 1;
}

/**
 * The root of a growing tree in O(log n) memory: the roots of its perfect subtrees, left to right (a
 * "compact range"). The RFC's tree over n leaves is exactly those subtrees joined right to left.
 */
export class Accumulator {
  private readonly stack: { size: number; hash: Hash }[] = [];
  private n = 0;

  get size(): number {
    return this.n;
  }

  push(leaf: Hash): void {
    let top = { size: 1, hash: leaf };
    while (this.stack.length && this.stack[this.stack.length - 1].size === top.size) {
      const left = this.stack.pop()!;
      top = { size: left.size * 2, hash: nodeHash(left.hash, top.hash) };
    }
    this.stack.push(top);
    this.n++;
  }

  root(): Hash {
    if (!this.stack.length) return EMPTY_ROOT;
    let r = this.stack[this.stack.length - 1].hash;
    for (let i = this.stack.length - 2; i >= 0; i--) r = nodeHash(this.stack[i].hash, r);
    return r;
  }
}
