// A cursor over one message body, shared by the frontend and backend codecs. Strict by design:
// every read is bounds-checked, strings must be NUL-terminated and valid UTF-8, and `done()`
// refuses trailing bytes, so a message that parses is exactly the message that re-serialises.
// Ints are read by byte arithmetic (no DataView per field; STYLE.md "Relay hot path").
import { ProtocolError } from './errors.js';

/** `fatal` refuses invalid UTF-8; `ignoreBOM` keeps a leading U+FEFF so round trips stay exact. */
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Decodes UTF-8 strictly; invalid sequences are SQLSTATE 22021 as in PostgreSQL. */
export function decodeUtf8(b: Uint8Array): string {
  try {
    return utf8.decode(b);
  } catch {
    throw new ProtocolError('invalid byte sequence for encoding "UTF8"', '22021');
  }
}

export function readI32(b: Uint8Array, at: number): number {
  return ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) | 0;
}

export class Reader {
  b: Buffer = Buffer.alloc(0);
  p = 0;
  /** Message name, only for error texts. */
  what = '';

  /** Reuses this reader for another body (one reader per module; parsing is synchronous). */
  reset(b: Buffer, what: string): this {
    this.b = b;
    this.p = 0;
    this.what = what;
    return this;
  }

  fail(reason: string): never {
    throw new ProtocolError(`invalid ${this.what} message: ${reason}`);
  }

  private need(n: number): void {
    if (this.p + n > this.b.length) this.fail('truncated');
  }

  u8(): number {
    this.need(1);
    return this.b[this.p++];
  }

  i16(): number {
    this.need(2);
    const b = this.b;
    const v = (b[this.p] << 8) | b[this.p + 1];
    this.p += 2;
    return (v << 16) >> 16;
  }

  i32(): number {
    this.need(4);
    const v = readI32(this.b, this.p);
    this.p += 4;
    return v;
  }

  /** Unsigned 32-bit, for OIDs. */
  u32(): number {
    return this.i32() >>> 0;
  }

  /** A non-negative Int16 count. */
  count(): number {
    const n = this.i16();
    if (n < 0) this.fail('negative count');
    return n;
  }

  cstring(): string {
    const end = this.b.indexOf(0, this.p);
    if (end < 0) this.fail('unterminated string');
    const s = decodeUtf8(this.b.subarray(this.p, end));
    this.p = end + 1;
    return s;
  }

  /** A zero-copy view of the next `n` bytes. */
  bytes(n: number): Buffer {
    if (n < 0) this.fail('negative length');
    this.need(n);
    const v = this.b.subarray(this.p, this.p + n);
    this.p += n;
    return v;
  }

  /** The rest of the body as a view. */
  rest(): Buffer {
    const v = this.b.subarray(this.p);
    this.p = this.b.length;
    return v;
  }

  /** Int32 length-prefixed value; -1 is NULL. */
  value(): Buffer | null {
    const n = this.i32();
    if (n === -1) return null;
    return this.bytes(n);
  }

  /** Refuses trailing bytes. */
  done(): void {
    if (this.p !== this.b.length) this.fail(`${this.b.length - this.p} trailing bytes`);
  }
}
