// SCRAM-SHA-256 client (RFC 5802, RFC 7677) as PostgreSQL speaks it: no channel binding (gs2
// header "n,,"), empty user name in the client-first message (PostgreSQL takes the user from the
// StartupMessage), and the server signature verified before AuthenticationOk is believed, so a
// server that does not know the password cannot impersonate the database.
// @see https://www.postgresql.org/docs/current/sasl-authentication.html
import { createHash, createHmac, pbkdf2, randomBytes, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import { UpstreamError } from './errors.js';

const pbkdf2Async = promisify(pbkdf2);

export const SCRAM_SHA_256 = 'SCRAM-SHA-256';
/** Sanity bound on the server-chosen iteration count (PostgreSQL's default is 4096). */
const MAX_ITERATIONS = 10_000_000;

// RFC 4013 SASLprep, as PostgreSQL applies it to passwords (src/common/saslprep.c): map non-ASCII
// spaces to ' ', drop "commonly mapped to nothing" characters, NFKC; if the result holds a
// prohibited character, the raw password is used instead (PostgreSQL does the same).
const NON_ASCII_SPACE = /[\u00A0\u1680\u2000-\u200B\u202F\u205F\u3000]/g;
const MAPPED_TO_NOTHING = /[\u00AD\u034F\u1806\u180B-\u180D\u200C\u200D\u2060\uFE00-\uFE0F\uFEFF]/g;
const PROHIBITED = /[\u0000-\u001F\u007F-\u009F\u0340\u0341\u200E\u200F\u202A-\u202E\u206A-\u206F\uE000-\uF8FF\uFFF9-\uFFFD\uD800-\uDFFF]/;

export function saslprep(password: string): string {
  if (/^[\x20-\x7e]*$/.test(password)) return password; // printable ASCII: SASLprep is the identity
  const s = password.replace(NON_ASCII_SPACE, ' ').replace(MAPPED_TO_NOTHING, '').normalize('NFKC');
  return PROHIBITED.test(s) ? password : s;
}

const hmac = (key: Buffer, data: string): Buffer => createHmac('sha256', key).update(data).digest();

function attributes(msg: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of msg.split(',')) {
    const eq = part.indexOf('=');
    if (eq !== 1) throw fail('malformed SCRAM message from server');
    out.set(part[0], part.slice(2));
  }
  return out;
}

function fail(message: string): UpstreamError {
  return new UpstreamError('28000', message, 'the server did not complete SCRAM-SHA-256 correctly; is this the expected server?');
}

/** One SCRAM-SHA-256 exchange: `first()` → `final(serverFirst)` → `verify(serverFinal)`. */
export class ScramClient {
  private readonly nonce = randomBytes(18).toString('base64');
  private readonly firstBare = `n=,r=${this.nonce}`;
  private serverSignature: Buffer | null = null;
  /** True once the server proved it knows the password. */
  verified = false;

  constructor(private readonly password: string) {}

  /** client-first-message. */
  first(): Buffer {
    return Buffer.from(`n,,${this.firstBare}`);
  }

  /** client-final-message for the server-first-message. */
  async final(serverFirstBytes: Buffer): Promise<Buffer> {
    const serverFirst = serverFirstBytes.toString('utf8');
    if (serverFirst.startsWith('m=')) throw fail('server requires an unsupported SCRAM extension');
    const a = attributes(serverFirst);
    const nonce = a.get('r');
    const salt = a.get('s');
    const iterations = Number(a.get('i'));
    // The server nonce must extend ours, or this is a replay of another exchange.
    if (!nonce || !nonce.startsWith(this.nonce) || nonce.length === this.nonce.length) throw fail('SCRAM nonce mismatch');
    if (!salt) throw fail('SCRAM salt missing');
    if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_ITERATIONS) throw fail('bad SCRAM iteration count');
    const salted = await pbkdf2Async(saslprep(this.password), Buffer.from(salt, 'base64'), iterations, 32, 'sha256');
    const clientKey = hmac(salted, 'Client Key');
    const storedKey = createHash('sha256').update(clientKey).digest();
    const withoutProof = `c=biws,r=${nonce}`; // biws = base64("n,,")
    const authMessage = `${this.firstBare},${serverFirst},${withoutProof}`;
    const signature = hmac(storedKey, authMessage);
    for (let i = 0; i < clientKey.length; i++) clientKey[i] ^= signature[i];
    this.serverSignature = hmac(hmac(salted, 'Server Key'), authMessage);
    return Buffer.from(`${withoutProof},p=${clientKey.toString('base64')}`);
  }

  /** Checks the server-final-message; throws unless the server signature matches. */
  verify(serverFinalBytes: Buffer): void {
    const a = attributes(serverFinalBytes.toString('utf8'));
    const err = a.get('e');
    if (err !== undefined) throw fail(`SCRAM failed on the server: ${err}`);
    const v = Buffer.from(a.get('v') ?? '', 'base64');
    const want = this.serverSignature;
    if (!want || v.length !== want.length || !timingSafeEqual(v, want)) throw fail('incorrect SCRAM server signature');
    this.verified = true;
  }
}
