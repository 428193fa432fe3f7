// Agent answers are parsed against the shared schemas (shared/api); one that does not fit is a clear
// UserError naming the endpoint and the field, not a crash in a presenter.
import { describe, expect, it } from 'vitest';
import { parseBody } from '../../cli/src/services/agent-api.js';
import { SessionPage, SessionEvents } from '../../shared/api/sessions.js';
import { UserError } from '../../cli/src/errors.js';

describe('parseBody', () => {
  it('returns the parsed body, and keeps unknown event fields (a shown event must still hash to its hash)', () => {
    const ev = { seq: 1, ts: 't', prev: 'p', hash: 'h', type: 'statement', agentId: 'a', data: {}, futureField: 1 };
    expect(parseBody(SessionEvents, { sessionId: 's', events: [ev] }, '/api/sessions/ID').events[0]).toEqual(ev);
  });
  it('names the endpoint and the field that does not fit', () => {
    const bad = { sessions: [{ sessionId: 's', agentId: 'a', startedAt: 't', lastTs: 't', firstSeq: 1, lastSeq: 'two', events: 1, statements: 0, refused: 0, decisions: [] }] };
    let err: unknown;
    try {
      parseBody(SessionPage, bad, '/api/sessions');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UserError);
    expect(err).toMatchObject({ code: 'BAD_RESPONSE' });
    expect((err as Error).message).toMatch(/answer to \/api\/sessions .*sessions\.0\.lastSeq/);
  });
});
