// Signed checkpoints of an audit chain's Merkle tree, in the C2SP forms:
//   tlog-checkpoint  https://c2sp.org/tlog-checkpoint   body = origin \n size \n base64(root) \n [extensions \n]
//   signed-note      https://c2sp.org/signed-note        note = body \n (— name base64(keyhash4 || sig) \n)+
// The key hash of an Ed25519 key is the first 4 bytes of SHA-256(name || 0x0A || 0x01 || publicKey); a
// verifier key is written `name+hex(keyhash)+base64(0x01 || publicKey)` (the form Go's sumdb/note reads).
// Ed25519 through node:crypto; no dependency, so the same rules restated in a bundle's verify.mjs hold.
//
// hoopctl adds one extension line, `time <ISO>`: when the checkpoint was signed, which places it inside
// a signing key's validity window (keys rotate; old keys stay valid for what they signed in their window).
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';

export interface Checkpoint {
  origin: string;
  size: number;
  root: Buffer;
  /** Signing time, from the `time` extension line (ISO). */
  time?: string;
  extensions: string[];
}

export interface NoteSignature {
  name: string;
  keyHash: Buffer;
  sig: Buffer;
}

export interface VerifierKey {
  name: string;
  keyHash: Buffer;
  publicKey: KeyObject;
  /** 32 raw bytes. */
  raw: Buffer;
  /** `name+hex+base64`, the signed-note verifier key text. */
  vkey: string;
  /** `sha256:<hex of SHA-256(raw public key)>`, what is printed and compared by people. */
  fingerprint: string;
  /** The key's validity window (ISO); a checkpoint signed outside it is refused. */
  notBefore?: string;
  notAfter?: string;
}

export interface SignerKey extends VerifierKey {
  privateKey: KeyObject;
}

const ALG_ED25519 = 0x01;
const DASH = '\u2014';
const ORIGIN = /^[^\s+\u2014][^\n]*$/;
const KEY_NAME = /^[^\s+]+$/;

export class CheckpointError extends Error {
  override readonly name = 'CheckpointError';
}

export function checkpointBody(c: Omit<Checkpoint, 'extensions'> & { extensions?: string[] }): string {
  if (!ORIGIN.test(c.origin)) throw new CheckpointError(`bad origin ${JSON.stringify(c.origin)}`);
  if (!Number.isSafeInteger(c.size) || c.size < 0) throw new CheckpointError(`bad tree size ${c.size}`);
  if (c.root.length !== 32) throw new CheckpointError('a root hash is 32 bytes');
  const ext = [...(c.time ? [`time ${c.time}`] : []), ...(c.extensions ?? [])];
  for (const e of ext) if (!e || e.includes('\n')) throw new CheckpointError('an extension line is one non-empty line');
  return [c.origin, String(c.size), c.root.toString('base64'), ...ext].join('\n') + '\n';
}

function rawPublic(pub: KeyObject): Buffer {
  const jwk = pub.export({ format: 'jwk' });
  if (jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string') throw new CheckpointError('not an Ed25519 key');
  return Buffer.from(jwk.x, 'base64url');
}

function keyHashOf(name: string, raw: Buffer): Buffer {
  return createHash('sha256').update(`${name}\n`).update(Buffer.from([ALG_ED25519])).update(raw).digest().subarray(0, 4);
}

export function verifierKey(name: string, publicKey: KeyObject | Buffer, window: { notBefore?: string; notAfter?: string } = {}): VerifierKey {
  if (!KEY_NAME.test(name)) throw new CheckpointError(`bad key name ${JSON.stringify(name)}`);
  const raw = Buffer.isBuffer(publicKey) ? publicKey : rawPublic(publicKey);
  if (raw.length !== 32) throw new CheckpointError('an Ed25519 public key is 32 bytes');
  const key = Buffer.isBuffer(publicKey) ? createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }, format: 'jwk' }) : publicKey;
  const keyHash = keyHashOf(name, raw);
  return {
    name,
    keyHash,
    publicKey: key,
    raw,
    vkey: `${name}+${keyHash.toString('hex')}+${Buffer.concat([Buffer.from([ALG_ED25519]), raw]).toString('base64')}`,
    fingerprint: `sha256:${createHash('sha256').update(raw).digest('hex')}`,
    ...window,
  };
}

/** Reads `name+hex+base64` verifier key text. */
export function parseVerifierKey(text: string, window: { notBefore?: string; notAfter?: string } = {}): VerifierKey {
  const m = /^([^\s+]+)\+([0-9a-f]{8})\+([A-Za-z0-9+/=]+)$/.exec(text.trim());
  if (!m) throw new CheckpointError('a verifier key reads name+keyhash+base64key');
  const bytes = Buffer.from(m[3], 'base64');
  if (bytes.length !== 33 || bytes[0] !== ALG_ED25519) throw new CheckpointError('not an Ed25519 verifier key');
  const k = verifierKey(m[1], bytes.subarray(1), window);
  if (k.keyHash.toString('hex') !== m[2]) throw new CheckpointError('the verifier key hash does not match its key');
  return k;
}

export function signerFromPem(name: string, pem: string, window: { notBefore?: string; notAfter?: string } = {}): SignerKey {
  const privateKey = createPrivateKey(pem);
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new CheckpointError('the signing key is not Ed25519');
  return { ...verifierKey(name, createPublicKey(privateKey), window), privateKey };
}

export function newSigningKeyPem(): string {
  return generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
}

/** The body with one signature line per key. */
export function signNote(body: string, keys: readonly SignerKey[]): string {
  if (!body.endsWith('\n')) throw new CheckpointError('a note body ends with a newline');
  const lines = keys.map((k) => `${DASH} ${k.name} ${Buffer.concat([k.keyHash, sign(null, Buffer.from(body), k.privateKey)]).toString('base64')}\n`);
  return body + '\n' + lines.join('');
}

export function parseCheckpointBody(body: string): Checkpoint {
  const lines = body.split('\n');
  if (lines.pop() !== '' || lines.length < 3) throw new CheckpointError('a checkpoint has an origin, a size and a root hash line');
  const [origin, sizeText, rootText, ...extensions] = lines;
  if (!ORIGIN.test(origin)) throw new CheckpointError('bad origin line');
  if (!/^(0|[1-9]\d{0,15})$/.test(sizeText) || !Number.isSafeInteger(Number(sizeText))) throw new CheckpointError('bad tree size line');
  const root = Buffer.from(rootText, 'base64');
  if (root.length !== 32 || root.toString('base64') !== rootText) throw new CheckpointError('bad root hash line');
  const time = extensions.find((e) => e.startsWith('time '))?.slice(5);
  return { origin, size: Number(sizeText), root, time, extensions: extensions.filter((e) => !e.startsWith('time ')) };
}

/** Splits a note into body and signatures, checking the form only. */
export function parseNote(text: string): { body: string; signatures: NoteSignature[] } {
  const at = text.lastIndexOf('\n\n');
  if (at < 0 || !text.endsWith('\n')) throw new CheckpointError('not a signed note: no blank line before the signatures');
  const body = text.slice(0, at + 1);
  const signatures: NoteSignature[] = [];
  const sigText = text.slice(at + 2, -1);
  for (const l of sigText ? sigText.split('\n') : []) {
    const m = new RegExp(`^${DASH} ([^\\s+]+) ([A-Za-z0-9+/=]+)$`).exec(l);
    if (!m) throw new CheckpointError(`malformed signature line ${JSON.stringify(l.slice(0, 80))}`);
    const b = Buffer.from(m[2], 'base64');
    if (b.length !== 4 + 64) throw new CheckpointError('an Ed25519 signature line holds a 4-byte key hash and 64 bytes');
    signatures.push({ name: m[1], keyHash: b.subarray(0, 4), sig: b.subarray(4) });
  }
  if (!signatures.length) throw new CheckpointError('a signed note has at least one signature');
  return { body, signatures };
}

/**
 * Verifies a signed checkpoint against known keys: at least one signature by a known key verifies, and
 * the checkpoint's time lies inside that key's validity window. Throws CheckpointError naming the cause.
 */
export function verifyCheckpoint(text: string, keys: readonly VerifierKey[]): Checkpoint & { key: VerifierKey } {
  const { body, signatures } = parseNote(text);
  const cp = parseCheckpointBody(body);
  let known = false;
  for (const s of signatures) {
    for (const k of keys) {
      if (k.name !== s.name || !k.keyHash.equals(s.keyHash)) continue;
      known = true;
      if (!verify(null, Buffer.from(body), k.publicKey, s.sig)) throw new CheckpointError(`the signature by ${k.name} (${k.fingerprint}) does not verify`);
      if ((k.notBefore && (!cp.time || cp.time < k.notBefore)) || (k.notAfter && (!cp.time || cp.time >= k.notAfter))) {
        throw new CheckpointError(`signed at ${cp.time ?? '(no time)'}, outside the validity window of key ${k.fingerprint}`);
      }
      return { ...cp, key: k };
    }
  }
  const who = signatures.map((s) => `${s.name}+${s.keyHash.toString('hex')}`).join(', ');
  throw new CheckpointError(known ? 'no signature verifies' : `signed by an unknown key (${who})`);
}

/**
 * The note an evidence bundle's MANIFEST.sig signs: the chain's origin, the manifest's SHA-256 and the
 * signing time (for key windows). Its second line is not a tree size, so it can never pass as a checkpoint.
 */
export function manifestNoteBody(origin: string, manifestSha256: string, time: string): string {
  return `${origin}\nmanifest sha256 ${manifestSha256}\ntime ${time}\n`;
}
