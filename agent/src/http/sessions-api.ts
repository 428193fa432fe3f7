// The session history API: who ran what, from the audit store. Reviewers (config `reviewers.groups`) see
// every session; anyone else sees only sessions of their own identity.
import type { StateStore } from '../audit/store.js';
import type { Principal } from '../identity/access.js';
import { HttpRefusal } from './server.js';

export function sessionsApi(store: StateStore, reviewerGroups: readonly string[]) {
  const isReviewer = (who: Principal) => who.groups.some((g) => reviewerGroups.includes(g));
  return async (who: Principal, q: URLSearchParams, id?: string, recording?: boolean): Promise<unknown> => {
    if (!id) {
      const limit = Math.min(Math.max(Number(q.get('limit') ?? 50) || 50, 1), 500);
      const user = q.get('user') ?? undefined;
      if (user && user !== who.sub && !isReviewer(who)) {
        throw new HttpRefusal(403, 'NOT_A_REVIEWER', `only reviewers may list sessions of other identities`, 'Ask to be added to a reviewer group.');
      }
      return store.querySessions({
        sub: isReviewer(who) ? user : who.sub,
        connection: q.get('connection') ?? undefined,
        since: q.get('since') ?? undefined,
        until: q.get('until') ?? undefined,
        decision: q.get('decision') ?? undefined,
        cursor: q.get('cursor') ?? undefined,
        limit,
      });
    }
    const events = await store.sessionEvents(id);
    const owner = events.find((e) => e.identity)?.identity;
    // An unknown session and someone else's session look the same to a non-reviewer.
    if (events.length === 0 || (!isReviewer(who) && (owner?.sub !== who.sub || owner?.issuer !== who.issuer))) {
      throw new HttpRefusal(404, 'NO_SUCH_SESSION', `no session ${id} visible to you`);
    }
    return recording ? { sessionId: id, recording: await store.readRecording(id) } : { sessionId: id, events };
  };
}
