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

/** What SCRAM derives from the password alone (RFC 5802 §3): the same for every exchange with one salt. */
interface ScramKeys {
  clientKey: Buffer;
  storedKey: Buffer;
  serverKey: Buffer;
}

/**
 * The salted password's derived keys, per (password, salt, iterations): PBKDF2 (4096 rounds of
 * HMAC-SHA-256, ~3 ms of CPU) runs once per role secret instead of once per connection, as poolers
 * such as PgBouncer do. Only the keys are kept, under a digest of the password: a cached entry does
 * not reveal the password and a different password (or salt, or count) never finds one. Every
 * exchange still has its own nonces and proves both ways (client proof, server signature).
 */
export class ScramKeyCache {
  private readonly keys = new Map<string, Promise<ScramKeys>>();
  /** PBKDF2 runs so far (each a miss). */
  derivations = 0;

  /** `max`: distinct secrets kept (a role's salt changes only when its password does). */
  constructor(private readonly max = 16) {}

  get size(): number {
    return this.keys.size;
  }

  derive(password: string, salt: Buffer, iterations: number): Promise<ScramKeys> {
    const id = secretId(password, salt, iterations);
    let keys = this.keys.get(id);
    if (!keys) {
      this.derivations++;
      keys = deriveKeys(password, salt, iterations);
      keys.catch(() => this.keys.delete(id));
      if (this.keys.size >= this.max) this.keys.delete(this.keys.keys().next().value!);
      this.keys.set(id, keys);
    }
    return keys;
  }

  /** The server refused keys derived from `password` with this salt (wrong password): not kept. */
  forget(password: string, salt: Buffer, iterations: number): void {
    this.keys.delete(secretId(password, salt, iterations));
  }
}

function secretId(password: string, salt: Buffer, iterations: number): string {
  return `${iterations}:${salt.toString('base64')}:${createHash('sha256').update(password).digest('base64')}`;
}

async function deriveKeys(password: string, salt: Buffer, iterations: number): Promise<ScramKeys> {
  const salted = await pbkdf2Async(password, salt, iterations, 32, 'sha256');
  const clientKey = hmac(salted, 'Client Key');
  return { clientKey, storedKey: createHash('sha256').update(clientKey).digest(), serverKey: hmac(salted, 'Server Key') };
}

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

  /** Set by final(): the keys this exchange used (forgotten by the cache when the server refuses them). */
  private derived?: { salt: Buffer; iterations: number };

  constructor(
    private readonly password: string,
    /** Derived keys shared across connections; without it PBKDF2 runs for this exchange alone. */
    private readonly cache?: ScramKeyCache,
  ) {}

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
    const saltBytes = Buffer.from(salt, 'base64');
    const password = saslprep(this.password);
    const keys = await (this.cache ? this.cache.derive(password, saltBytes, iterations) : deriveKeys(password, saltBytes, iterations));
    this.derived = { salt: saltBytes, iterations };
    const withoutProof = `c=biws,r=${nonce}`; // biws = base64("n,,")
    const authMessage = `${this.firstBare},${serverFirst},${withoutProof}`;
    const clientKey = Buffer.from(keys.clientKey); // the cached key stays intact: the proof is built in a copy
    const signature = hmac(keys.storedKey, authMessage);
    for (let i = 0; i < clientKey.length; i++) clientKey[i] ^= signature[i];
    this.serverSignature = hmac(keys.serverKey, authMessage);
    return Buffer.from(`${withoutProof},p=${clientKey.toString('base64')}`);
  }

  /** The server refused the proof (wrong password): keys derived from this password and salt are not kept. */
  refused(): void {
    if (this.derived) this.cache?.forget(saslprep(this.password), this.derived.salt, this.derived.iterations);
  }

  /** Checks the server-final-message; throws unless the server signature matches. */
  verify(serverFinalBytes: Buffer): void {
    const a = attributes(serverFinalBytes.toString('utf8'));
    const err = a.get('e');
    if (err !== undefined) {
      this.refused();
      throw fail(`SCRAM failed on the server: ${err}`);
    }
    const v = Buffer.from(a.get('v') ?? '', 'base64');
    const want = this.serverSignature;
    if (!want || v.length !== want.length || !timingSafeEqual(v, want)) throw fail('incorrect SCRAM server signature');
    this.verified = true;
  }
}
