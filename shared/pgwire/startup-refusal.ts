// Turning a client away in its own protocol, before any session exists: answer SSLRequest/GSSENCRequest
// with 'N' (no encryption on this leg), then answer the startup packet with a FATAL ErrorResponse that
// psql and every driver print verbatim, instead of a bare connection reset nobody can act on.
// Used by the CLI (tunnel down, another OS user) and the agent (session limit of a tunnel reached).

const SSL_OR_GSS = new Set([80877103, 80877104]);
/** Startup packets are small; anything longer is not a Postgres client, and gets the error at once. */
const MAX_STARTUP_BYTES = 10_000;

/** A FATAL ErrorResponse with `code` (SQLSTATE) and `message`. */
export function fatalErrorResponse(code: string, message: string): Buffer {
  const fields = Buffer.from(`SFATAL\0VFATAL\0C${code}\0M${message}\0\0`, 'utf8');
  const msg = Buffer.allocUnsafe(5 + fields.length);
  msg[0] = 0x45; // 'E'
  msg.writeInt32BE(fields.length + 4, 1);
  fields.copy(msg, 5);
  return msg;
}

export class StartupRefusal {
  private buf: Buffer = Buffer.alloc(0);
  private done = false;

  /**
   * @param error the ErrorResponse to end with
   * @param reply writes a negotiation answer ('N') to the client
   * @param finish writes `error` and ends the connection; called once
   */
  constructor(
    private readonly error: Buffer,
    private readonly reply: (b: Buffer) => void,
    private readonly finish: (error: Buffer) => void,
  ) {}

  /** The client's bytes, as they arrive. */
  feed(chunk: Buffer): void {
    if (this.done) return;
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    while (this.buf.length >= 8) {
      const len = this.buf.readInt32BE(0);
      if (len < 8 || len > MAX_STARTUP_BYTES) return this.end();
      if (this.buf.length < len) return;
      const code = this.buf.readInt32BE(4);
      this.buf = this.buf.subarray(len);
      if (!SSL_OR_GSS.has(code)) return this.end();
      this.reply(NO_ENCRYPTION);
    }
  }

  /** Ends now (a timeout, or the client said nothing we could wait for). */
  end(): void {
    if (this.done) return;
    this.done = true;
    this.buf = Buffer.alloc(0);
    this.finish(this.error);
  }
}

const NO_ENCRYPTION = Buffer.from('N');
