// The session history endpoints' bodies, parsed on both sides (the agent before it answers, the CLI on
// receipt) instead of the CLI casting to hand-made copies:
//   GET /api/sessions                 SessionPage
//   GET /api/sessions/ID              SessionEvents (the events exactly as chained: unknown keys kept,
//                                     so a shown event still hashes to its `hash`)
//   GET /api/sessions/ID/recording    SessionRecording
import { z } from 'zod';

export const Identity = z.looseObject({
  sub: z.string(),
  issuer: z.string(),
  email: z.string().optional(),
  groups: z.array(z.string()).optional(),
  claims: z.record(z.string(), z.unknown()).optional(),
});

export const ChainedEvent = z.looseObject({
  seq: z.number().int(),
  ts: z.string(),
  prev: z.string(),
  hash: z.string(),
  type: z.string(),
  sessionId: z.string().optional(),
  agentId: z.string(),
  identity: Identity.optional(),
  connection: z.string().optional(),
  data: z.record(z.string(), z.unknown()),
});
export type ChainedEvent = z.infer<typeof ChainedEvent>;

export const SessionSummary = z.object({
  sessionId: z.string(),
  agentId: z.string(),
  sub: z.string().optional(),
  issuer: z.string().optional(),
  email: z.string().optional(),
  connection: z.string().optional(),
  clientAddr: z.string().optional(),
  applicationName: z.string().optional(),
  cliVersion: z.string().optional(),
  /** The session's stated purpose (`--reason`, or built from the CI job's claims). */
  purpose: z.string().optional(),
  startedAt: z.string(),
  endedAt: z.string().optional(),
  lastTs: z.string(),
  firstSeq: z.number().int(),
  lastSeq: z.number().int(),
  events: z.number().int(),
  statements: z.number().int(),
  refused: z.number().int(),
  /** Distinct statement decisions seen in the session (allow, block, hold, …): the `decision` filter. */
  decisions: z.array(z.string()),
});
export type SessionSummary = z.infer<typeof SessionSummary>;

export const SessionPage = z.object({ sessions: z.array(SessionSummary), nextCursor: z.string().optional() });
export type SessionPage = z.infer<typeof SessionPage>;

export const SessionEvents = z.object({ sessionId: z.string(), events: z.array(ChainedEvent) });

/** One step of a session's masked transcript. Masked values are already masked by the agent. */
export const RecordingEntry = z.object({
  ts: z.string().optional(),
  /** The statement event's seq, linking the transcript to the chain. */
  seq: z.number().int().optional(),
  sql: z.string().optional(),
  columns: z.array(z.string()).optional(),
  /** The columns' type OIDs (RowDescription), so a reader can align and interpret the values. */
  types: z.array(z.number().int()).optional(),
  rows: z.array(z.array(z.unknown())).optional(),
  rowCount: z.number().int().optional(),
  /** The CommandComplete tag (`SELECT 3`, `BEGIN`). */
  tag: z.string().optional(),
  /** The SQLSTATE of an error the statement ended with. */
  sqlstate: z.string().optional(),
  note: z.string().optional(),
  /** What was left out: rows past the per-statement cap, long values cut, the session budget spent. */
  truncated: z.object({ rowsOmitted: z.number().int().optional(), values: z.boolean().optional(), session: z.boolean().optional() }).optional(),
});
export type RecordingEntry = z.infer<typeof RecordingEntry>;

export const SessionRecording = z.object({ sessionId: z.string(), recording: z.array(RecordingEntry) });
