/**
 * A violation of the wire protocol by the peer: bad framing, bad lengths, unterminated strings,
 * trailing bytes, unknown message types, or text that is not valid UTF-8 (code 22021).
 * The session turns it into a FATAL ErrorResponse with `code` and closes the connection.
 */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  constructor(
    message: string,
    /** SQLSTATE: 08P01 protocol_violation, 22021 character_not_in_repertoire, 0A000 unsupported. */
    readonly code: string = '08P01',
  ) {
    super(message);
  }
}
