/**
 * HMAC-SHA-256 (RFC 2104, FIPS 180-4) for the `hash` strategy, which runs once per masked value.
 *
 * Node's `createHmac` costs 10–20 µs per call, mostly object setup: 150–300 ms per MB of short values.
 * Here the key's two pad blocks are compressed once, so a value of up to 55 bytes costs two SHA-256
 * compressions in JS (about 1 µs) and no allocation. Long values go to `createHmac` (native is faster
 * there). The result is the same function: tests compare both on every length.
 */
import { createHash, createHmac } from 'node:crypto';

const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
  0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
  0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
  0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const IV = new Int32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
const BLOCK = 64;
/** Longest value hashed in JS: one block with its padding (longer ones go to createHmac). */
const MAX_JS_BYTES = BLOCK - 9;

/** One SHA-256 compression of the 16 words in w[0..15] into `h`. */
function compress(h: Int32Array, w: Int32Array): void {
  for (let t = 16; t < 64; t++) {
    const a = w[t - 15];
    const b = w[t - 2];
    const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
    const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
    w[t] = (w[t - 16] + s0 + w[t - 7] + s1) | 0;
  }
  let a = h[0];
  let b = h[1];
  let c = h[2];
  let d = h[3];
  let e = h[4];
  let f = h[5];
  let g = h[6];
  let hh = h[7];
  for (let t = 0; t < 64; t++) {
    const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (hh + S1 + ((e & f) ^ (~e & g)) + K[t] + w[t]) | 0;
    const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    hh = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + t2) | 0;
  }
  h[0] = (h[0] + a) | 0;
  h[1] = (h[1] + b) | 0;
  h[2] = (h[2] + c) | 0;
  h[3] = (h[3] + d) | 0;
  h[4] = (h[4] + e) | 0;
  h[5] = (h[5] + f) | 0;
  h[6] = (h[6] + g) | 0;
  h[7] = (h[7] + hh) | 0;
}

/** w[0..15] ← one 64-byte block, big-endian words. */
function load(w: Int32Array, bytes: Uint8Array): void {
  for (let i = 0; i < 16; i++) w[i] = (bytes[4 * i] << 24) | (bytes[4 * i + 1] << 16) | (bytes[4 * i + 2] << 8) | bytes[4 * i + 3];
}

/** HMAC-SHA-256 under one key. Not reentrant (scratch state is shared); JS is single-threaded. */
export class HmacSha256 {
  /** SHA-256 state after the key's inner / outer pad block. */
  private readonly inner = new Int32Array(8);
  private readonly outer = new Int32Array(8);
  private readonly h = new Int32Array(8);
  private readonly w = new Int32Array(64);
  private readonly block = new Uint8Array(BLOCK);

  constructor(private readonly key: Buffer) {
    // RFC 2104: a key longer than the block is hashed first; shorter ones are zero-padded.
    const k = key.length > BLOCK ? createHash('sha256').update(key).digest() : key;
    for (const [state, pad] of [[this.inner, 0x36], [this.outer, 0x5c]] as const) {
      this.block.fill(pad);
      for (let i = 0; i < k.length; i++) this.block[i] = k[i] ^ pad;
      load(this.w, this.block);
      state.set(IV);
      compress(state, this.w);
    }
  }

  /** The 32-byte MAC of buf[start, end) into `out` at `at`. */
  digestInto(buf: Uint8Array, start: number, end: number, out: Uint8Array, at: number): void {
    const n = end - start;
    if (n > MAX_JS_BYTES) {
      out.set(createHmac('sha256', this.key).update(buf.subarray(start, end)).digest(), at);
      return;
    }
    const { h, w, block } = this;
    // Inner hash: ipad block (precomputed) + the value, padded, 1 block.
    block.fill(0);
    for (let i = 0; i < n; i++) block[i] = buf[start + i];
    block[n] = 0x80;
    const bits = (BLOCK + n) * 8;
    block[62] = bits >>> 8;
    block[63] = bits & 0xff;
    load(w, block);
    h.set(this.inner);
    compress(h, w);
    // Outer hash: opad block (precomputed) + the inner digest (32 bytes), padded, 1 block.
    for (let i = 0; i < 8; i++) w[i] = h[i];
    w[8] = 0x80000000;
    for (let i = 9; i < 15; i++) w[i] = 0;
    w[15] = (BLOCK + 32) * 8;
    h.set(this.outer);
    compress(h, w);
    for (let i = 0; i < 8; i++) {
      const v = h[i];
      out[at + 4 * i] = v >>> 24;
      out[at + 4 * i + 1] = v >>> 16;
      out[at + 4 * i + 2] = v >>> 8;
      out[at + 4 * i + 3] = v;
    }
  }

  /** The MAC as a new 32-byte Buffer. */
  digest(buf: Uint8Array, start = 0, end = buf.length): Buffer {
    const out = Buffer.allocUnsafe(32);
    this.digestInto(buf, start, end, out, 0);
    return out;
  }
}
