// One reusable, growable output buffer per connection (postgres.js bytes.js style): ints written by
// byte arithmetic, growth by 1.5x so a burst of messages costs O(log n) reallocations, and length
// words back-patched by `end()` so a message is written in one pass without measuring it first.
// @see https://www.postgresql.org/docs/current/protocol-message-formats.html

export class Writer {
  buf: Buffer;
  pos = 0;
  /** Offset of the open message's length word, or -1 when none is open. */
  private lengthAt = -1;

  constructor(initialSize = 1024) {
    this.buf = Buffer.allocUnsafe(initialSize);
  }

  /** Makes room for `n` more bytes. */
  ensure(n: number): this {
    const need = this.pos + n;
    if (need > this.buf.length) {
      const next = Buffer.allocUnsafe(Math.max((this.buf.length * 1.5) | 0, need));
      this.buf.copy(next, 0, 0, this.pos);
      this.buf = next;
    }
    return this;
  }

  /**
   * Opens a message: writes the type byte (omitted when `type` is undefined, for the untyped
   * startup-phase messages) and reserves the length word that `end()` fills in.
   */
  begin(type?: number): this {
    this.ensure(5);
    if (type !== undefined) this.buf[this.pos++] = type;
    this.lengthAt = this.pos;
    this.pos += 4;
    return this;
  }

  /** Closes the open message: its length counts itself and the body, not the type byte. */
  end(): this {
    const at = this.lengthAt;
    if (at < 0) throw new Error('Writer.end() without begin()');
    this.lengthAt = -1;
    return this.i32At(at, this.pos - at);
  }

  /** Overwrites 4 already-written bytes at `at` (a back-patched length word). */
  i32At(at: number, v: number): this {
    const b = this.buf;
    b[at] = v >>> 24;
    b[at + 1] = v >>> 16;
    b[at + 2] = v >>> 8;
    b[at + 3] = v;
    return this;
  }

  i8(v: number): this {
    this.ensure(1);
    this.buf[this.pos++] = v;
    return this;
  }

  i16(v: number): this {
    this.ensure(2);
    const b = this.buf;
    b[this.pos++] = v >>> 8;
    b[this.pos++] = v;
    return this;
  }

  /** Signed or unsigned 32-bit (OIDs are unsigned): `>>>` keeps the low 32 bits either way. */
  i32(v: number): this {
    this.ensure(4);
    const b = this.buf;
    b[this.pos++] = v >>> 24;
    b[this.pos++] = v >>> 16;
    b[this.pos++] = v >>> 8;
    b[this.pos++] = v;
    return this;
  }

  /** UTF-8 text without a terminator. 3 bytes per UTF-16 unit is the worst case. */
  str(s: string): this {
    this.ensure(s.length * 3);
    this.pos += this.buf.write(s, this.pos, 'utf8');
    return this;
  }

  /** NUL-terminated UTF-8 text (String in the protocol docs). */
  cstring(s: string): this {
    this.ensure(s.length * 3 + 1);
    this.pos += this.buf.write(s, this.pos, 'utf8');
    this.buf[this.pos++] = 0;
    return this;
  }

  bytes(src: Uint8Array): this {
    this.ensure(src.length);
    this.buf.set(src, this.pos);
    this.pos += src.length;
    return this;
  }

  /** A copy of what was written; the writer is reset and its storage kept for reuse. */
  take(): Buffer {
    const out = Buffer.allocUnsafe(this.pos);
    this.buf.copy(out, 0, 0, this.pos);
    this.reset();
    return out;
  }

  reset(): this {
    this.pos = 0;
    this.lengthAt = -1;
    return this;
  }
}
