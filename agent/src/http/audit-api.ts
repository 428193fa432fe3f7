// The audit signing API: the public key anyone may fetch to check this agent's checkpoints, and the
// checkpoints themselves for reviewers (listed, or one signed on demand). Bodies: shared/api/audit.ts.
import type { Principal } from '../identity/access.js';
import type { StateStore } from '../audit/store.js';
import { CheckpointRefused, type Checkpointer } from '../audit/checkpoints.js';
import { CheckpointList, KeyResponse, SignedCheckpoint } from '../../../shared/api/audit.js';
import { HttpRefusal } from './server.js';
import { reviewerOf } from './sessions-api.js';

export function auditSigningApi(checkpointer: Checkpointer, store: StateStore, reviewerGroups: readonly string[]) {
  const isReviewer = reviewerOf(reviewerGroups);
  return {
    key(): KeyResponse {
      const current = checkpointer.keys.at(-1)!;
      return KeyResponse.parse({ origin: checkpointer.origin, current, keys: checkpointer.keys });
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
