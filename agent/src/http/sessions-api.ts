// The session history API: who ran what, from the audit store: sessions, one session's events, its
// masked recording, and the export of the whole trail. Reviewers (config `reviewers.groups`) see every
// session and may export; anyone else sees only sessions of their own identity.
import { isoTime, type ExportFormat, type StateStore } from '../audit/store.js';
import type { Principal } from '../identity/access.js';
import { HttpRefusal, type ExportStream } from './server.js';
import { SessionEvents, SessionPage, SessionRecording } from '../../../shared/api/sessions.js';

export const reviewerOf = (reviewerGroups: readonly string[]) => (who: Principal) => who.groups.some((g) => reviewerGroups.includes(g));

export function sessionsApi(store: StateStore, reviewerGroups: readonly string[]) {
  const isReviewer = reviewerOf(reviewerGroups);
  return async (who: Principal, q: URLSearchParams, id?: string, recording?: boolean): Promise<unknown> => {
    if (!id) {
      const limit = Math.min(Math.max(Number(q.get('limit') ?? 50) || 50, 1), 500);
      const user = q.get('user') ?? undefined;
      if (user && user !== who.sub && !isReviewer(who)) {
        throw new HttpRefusal(403, 'NOT_A_REVIEWER', `only reviewers may list sessions of other identities`, 'Ask to be added to a reviewer group.');
      }
      return SessionPage.parse(await store.querySessions({
        sub: isReviewer(who) ? user : who.sub,
        connection: q.get('connection') ?? undefined,
        since: q.get('since') ?? undefined,
        until: q.get('until') ?? undefined,
        decision: q.get('decision') ?? undefined,
        cursor: q.get('cursor') ?? undefined,
        limit,
      }));
    }
    const events = await store.sessionEvents(id);
    const owner = events.find((e) => e.identity)?.identity;
    // An unknown session and someone else's session look the same to a non-reviewer.
    if (events.length === 0 || (!isReviewer(who) && (owner?.sub !== who.sub || owner?.issuer !== who.issuer))) {
      throw new HttpRefusal(404, 'NO_SUCH_SESSION', `no session ${id} visible to you`);
    }
    return recording ? SessionRecording.parse({ sessionId: id, recording: await store.readRecording(id) }) : SessionEvents.parse({ sessionId: id, events });
  };
}

/**
 * GET /api/audit/export?since=&until=&format=jsonl|csv: the audit events for a SIEM or long-term
 * retention, streamed. Reviewers only: the trail names every identity and statement. JSON Lines are the
 * stored lines, so an export verifies offline (`hoopctl audit verify FILE`).
 */
export function auditExportApi(store: StateStore, reviewerGroups: readonly string[]) {
  const isReviewer = reviewerOf(reviewerGroups);
  return async (who: Principal, q: URLSearchParams): Promise<ExportStream> => {
    if (!isReviewer(who)) throw new HttpRefusal(403, 'NOT_A_REVIEWER', 'only reviewers may export the audit trail', 'Ask to be added to a reviewer group.');
    const format = q.get('format') ?? 'jsonl';
    if (format !== 'jsonl' && format !== 'csv') throw new HttpRefusal(400, 'BAD_FORMAT', `unknown export format ${JSON.stringify(format.slice(0, 20))}: use jsonl or csv`);
    const time = (name: string) => {
      const v = q.get(name);
      if (v === null) return undefined;
      try {
        return isoTime(v);
      } catch {
        throw new HttpRefusal(400, 'BAD_TIME', `${name}: not a time: ${JSON.stringify(v.slice(0, 40))}`, 'Use an ISO time such as 2026-11-01T00:00:00Z.');
      }
    };
    const filter = { since: time('since'), until: time('until') };
    return {
      contentType: format === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson',
      body: store.exportEvents(filter, format as ExportFormat),
    };
  };
}
