// The audit signing API: the public key anyone may fetch to check this agent's checkpoints, and the
// checkpoints themselves for reviewers (listed, or one signed on demand). Bodies: shared/api/audit.ts.
import type { Principal } from '../identity/access.js';
import type { StateStore } from '../audit/store.js';
import { CheckpointRefused, type Checkpointer } from '../audit/checkpoints.js';
import { Attestation, AttestRequest, CheckpointList, KeyResponse, SignManifestRequest, SignedCheckpoint, SignedManifest } from '../../../shared/api/audit.js';
import { manifestNoteBody, signNote } from '../../../shared/audit/checkpoint.js';
import { identityOf } from '../audit/events.js';
import type http from 'node:http';
import { HttpRefusal } from './server.js';
import { reviewerOf } from './sessions-api.js';

export function auditSigningApi(checkpointer: Checkpointer, store: StateStore, reviewerGroups: readonly string[]) {
  const isReviewer = reviewerOf(reviewerGroups);
  return {
    key(): KeyResponse {
      const current = checkpointer.keys.at(-1)!;
      return KeyResponse.parse({ origin: checkpointer.origin, current, keys: checkpointer.keys });
    },
    /** POST /api/evidence/sign and /api/evidence/attest. */
    async evidence(who: Principal, req: http.IncomingMessage, what: 'sign' | 'attest'): Promise<unknown> {
      if (!isReviewer(who)) throw new HttpRefusal(403, 'NOT_A_REVIEWER', 'only reviewers may sign or attest evidence bundles', 'Ask to be added to a reviewer group.');
      const body = await jsonBody(req);
      if (what === 'sign') {
        const r = SignManifestRequest.safeParse(body);
        if (!r.success) throw new HttpRefusal(400, 'BAD_REQUEST', 'expected {"manifestSha256": "<64 hex>"}');
        return SignedManifest.parse({ note: signNote(manifestNoteBody(checkpointer.origin, r.data.manifestSha256, new Date().toISOString()), [checkpointer.signer]) });
      }
      const r = AttestRequest.safeParse(body);
      if (!r.success) throw new HttpRefusal(400, 'BAD_REQUEST', 'expected {"manifestSha256": "<64 hex>", "statement": "…"}');
      const e = await store.append({ type: 'attestation', identity: identityOf(who), data: { manifestSha256: r.data.manifestSha256, statement: r.data.statement } });
      return Attestation.parse({ seq: e.seq, hash: e.hash, manifestSha256: r.data.manifestSha256 });
    },
    async call(who: Principal, method: string, what: 'checkpoint' | 'checkpoints'): Promise<unknown> {
      if (!isReviewer(who)) throw new HttpRefusal(403, 'NOT_A_REVIEWER', 'only reviewers may read or make audit checkpoints', 'Ask to be added to a reviewer group.');
      if (what === 'checkpoints' && method === 'GET') return CheckpointList.parse({ checkpoints: await store.listCheckpoints() });
      if (what === 'checkpoint' && method === 'POST') {
        try {
          return SignedCheckpoint.parse(await checkpointer.checkpoint());
        } catch (err) {
          if (err instanceof CheckpointRefused) throw new HttpRefusal(409, err.code, err.message, 'Run `hoopctl audit verify` on the data directory to see where.');
          throw new HttpRefusal(503, 'AUDIT_STORE_UNAVAILABLE', `checkpoint not written: ${(err as Error).message}`);
        }
      }
      throw new HttpRefusal(404, 'NOT_FOUND', `no such endpoint: ${method} /api/audit/${what}`);
    },
  };
}

async function jsonBody(req: http.IncomingMessage): Promise<unknown> {
  let text = '';
  for await (const chunk of req) {
    text += String(chunk);
    if (text.length > 16_384) throw new HttpRefusal(400, 'BAD_REQUEST', 'request body too large');
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpRefusal(400, 'BAD_REQUEST', 'the request body is not JSON');
  }
}
