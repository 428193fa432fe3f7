// The audit signing endpoints' bodies, parsed on both sides (the agent builds them, the CLI reads them):
//   GET  /api/audit/key            who signs this agent's checkpoints (public: no secret in it)
//   GET  /api/audit/checkpoints    this agent's stored checkpoints (reviewers)
//   POST /api/audit/checkpoint     sign one now (reviewers)
//   POST /api/evidence/sign        sign an evidence bundle's manifest hash (reviewers)
//   POST /api/evidence/attest      append a reviewer's attestation bound to a manifest hash (reviewers)
import { z } from 'zod';

const Iso = z.iso.datetime({ offset: true });

export const KeyRecord = z.object({
  /** signed-note verifier key: name+keyhash+base64(0x01||key). */
  vkey: z.string().regex(/^[^\s+]+\+[0-9a-f]{8}\+[A-Za-z0-9+/=]+$/),
  fingerprint: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  notBefore: Iso.optional(),
  notAfter: Iso.optional(),
});
export type KeyRecord = z.infer<typeof KeyRecord>;

export const KeyResponse = z.object({
  origin: z.string().min(1),
  current: KeyRecord,
  /** Every key this agent has signed with, oldest first, with its validity window. */
  keys: z.array(KeyRecord).min(1),
});
export type KeyResponse = z.infer<typeof KeyResponse>;

export const SignedCheckpoint = z.object({
  size: z.number().int().min(0),
  /** base64 of the 32-byte RFC 6962 root. */
  root: z.string().regex(/^[A-Za-z0-9+/]{43}=$/),
  /** The C2SP signed note. */
  note: z.string().min(1),
});
export type SignedCheckpoint = z.infer<typeof SignedCheckpoint>;

export const CheckpointList = z.object({ checkpoints: z.array(z.object({ size: z.number().int().min(0), note: z.string().min(1) })) });
export type CheckpointList = z.infer<typeof CheckpointList>;

const Sha256Hex = z.string().regex(/^[0-9a-f]{64}$/);
export const SignManifestRequest = z.strictObject({ manifestSha256: Sha256Hex });
export const AttestRequest = z.strictObject({ manifestSha256: Sha256Hex, statement: z.string().trim().min(1).max(4000) });
export const SignedManifest = z.object({ note: z.string().min(1) });
export const Attestation = z.object({ seq: z.number().int(), hash: z.string(), manifestSha256: Sha256Hex });
