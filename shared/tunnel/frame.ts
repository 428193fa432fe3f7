// The tunnel frame: what travels inside the one WebSocket between `hoopctl connect` and hoop-agent.
//
//   byte 0      frame type (FrameType)
//   bytes 1..4  stream id, uint32 big-endian (one stream per local TCP connection; chosen by the CLI)
//   bytes 5..   payload (type-specific)
//
// One WebSocket message carries exactly one frame, and a DATA frame carries the socket reads of one turn
// of the event loop (mux.ts coalesces them), never one Postgres message: the relay stays byte-oriented. Flow control is per stream and credit-based: each side
// may send at most `INITIAL_WINDOW` DATA bytes per stream before the peer grants more with WINDOW, so one
// slow client cannot fill the shared socket and stall every other stream.
import { z } from 'zod';

export const FrameType = {
  Open: 1, //     CLI → agent: a new local connection; payload: JSON OpenPayload
  Data: 2, //     both ways: bytes of the stream
  Close: 3, //    both ways: the stream is finished; payload: optional UTF-8 reason
  Window: 4, //   both ways: uint32 credit grant (bytes the sender of this frame has consumed)
  Event: 5, //    agent → CLI: JSON TunnelEvent meant for the person or job running `hoopctl connect`
  Renew: 6, //    CLI → agent, stream 0: JSON RenewPayload, a fresh token for the open tunnel (answered by
  //              an EVENT token_renewed, or token_renewal_failed and the tunnel closes)
} as const;
export type FrameType = (typeof FrameType)[keyof typeof FrameType];

export const HEADER_BYTES = 5;
/** Credit each side starts with per stream. Large enough for bulk reads to stream at full speed. */
export const INITIAL_WINDOW = 4 * 1024 * 1024;
/** Largest WebSocket message either side accepts (mux.ts coalesces DATA up to 256 KiB; margin for more). */
export const MAX_FRAME_BYTES = 1024 * 1024 + HEADER_BYTES;
/** Highest stream id; ids are allocated by the CLI and never reused within one WebSocket. */
export const MAX_STREAM_ID = 0xffffffff;

export const OpenPayload = z.strictObject({
  /** Address of the local client as the CLI saw it (for the audit record). */
  clientAddr: z.string().max(100).optional(),
  /** hoopctl version, for the audit record. */
  cliVersion: z.string().max(50).optional(),
});
export type OpenPayload = z.infer<typeof OpenPayload>;

/** A renewed access token for the tunnel (same issuer and subject); the agent verifies it like the first. */
export const RenewPayload = z.strictObject({ token: z.string().min(1).max(16 * 1024) });
export type RenewPayload = z.infer<typeof RenewPayload>;

export const TunnelEvent = z.object({
  type: z.string().max(64),
  streamId: z.number().int().nonnegative().optional(),
  message: z.string().max(4096).optional(),
  data: z.record(z.string(), z.unknown()).optional(),
});
export type TunnelEvent = z.infer<typeof TunnelEvent>;

export interface Frame {
  type: FrameType;
  streamId: number;
  /** A view into the received message: consume or copy before the next one. */
  payload: Buffer;
}

export class FrameError extends Error {
  override readonly name = 'FrameError';
}

function header(type: FrameType, streamId: number, payloadBytes: number): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_BYTES + payloadBytes);
  buf[0] = type;
  buf[1] = streamId >>> 24;
  buf[2] = (streamId >>> 16) & 0xff;
  buf[3] = (streamId >>> 8) & 0xff;
  buf[4] = streamId & 0xff;
  return buf;
}

/** Encodes a frame into one buffer (one copy of the payload; cheaper than a fragmented message). */
export function encodeFrame(type: FrameType, streamId: number, payload?: Buffer): Buffer {
  if (!payload || payload.length === 0) return header(type, streamId, 0);
  const buf = header(type, streamId, payload.length);
  payload.copy(buf, HEADER_BYTES);
  return buf;
}

export function encodeData(streamId: number, data: Buffer): Buffer {
  return encodeFrame(FrameType.Data, streamId, data);
}

/** One DATA frame carrying several buffers back to back (each copied once, straight into the frame). */
export function encodeDataParts(streamId: number, parts: readonly Buffer[]): Buffer {
  if (parts.length === 1) return encodeFrame(FrameType.Data, streamId, parts[0]);
  let n = 0;
  for (const p of parts) n += p.length;
  const buf = header(FrameType.Data, streamId, n);
  let at = HEADER_BYTES;
  for (const p of parts) at += p.copy(buf, at);
  return buf;
}

export function encodeWindow(streamId: number, credit: number): Buffer {
  const buf = header(FrameType.Window, streamId, 4);
  buf.writeUInt32BE(credit, HEADER_BYTES);
  return buf;
}

export function encodeJson(type: typeof FrameType.Open | typeof FrameType.Event | typeof FrameType.Renew, streamId: number, value: unknown): Buffer {
  return encodeFrame(type, streamId, Buffer.from(JSON.stringify(value), 'utf8'));
}

export function encodeClose(streamId: number, reason?: string): Buffer {
  return encodeFrame(FrameType.Close, streamId, reason ? Buffer.from(reason.slice(0, 1024), 'utf8') : undefined);
}

/** Decodes one WebSocket message. Anything malformed is a FrameError: the peer is broken or hostile. */
export function decodeFrame(msg: Buffer): Frame {
  if (msg.length < HEADER_BYTES) throw new FrameError(`frame of ${msg.length} bytes is shorter than its header`);
  if (msg.length > MAX_FRAME_BYTES) throw new FrameError(`frame of ${msg.length} bytes exceeds ${MAX_FRAME_BYTES}`);
  const type = msg[0] as FrameType;
  if (type < FrameType.Open || type > FrameType.Renew) throw new FrameError(`unknown frame type ${type}`);
  const streamId = ((msg[1] << 24) | (msg[2] << 16) | (msg[3] << 8) | msg[4]) >>> 0;
  const payload = msg.subarray(HEADER_BYTES);
  if (type === FrameType.Window && payload.length !== 4) throw new FrameError('WINDOW frame must carry 4 bytes');
  return { type, streamId, payload };
}

export function readWindowCredit(payload: Buffer): number {
  return payload.readUInt32BE(0);
}

/** Parses a JSON payload against its schema; a FrameError if it does not fit. */
export function decodeJson<T>(schema: z.ZodType<T>, payload: Buffer): T {
  let raw: unknown;
  try {
    raw = payload.length === 0 ? {} : JSON.parse(payload.toString('utf8'));
  } catch {
    throw new FrameError('frame payload is not JSON');
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) throw new FrameError(`frame payload rejected: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
  return parsed.data;
}
