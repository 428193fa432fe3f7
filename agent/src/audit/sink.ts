// Where the session reports what happened. The audit store (hash-chained, fail-closed) implements this;
// until then the agent log does.
import type { Principal } from '../identity/access.js';

export interface SessionRef {
  sessionId: string;
  streamId: number;
  clientAddr?: string;
  cliVersion?: string;
}

export interface AuditSink {
  sessionStart?(session: SessionRef, who: Principal, connection: string, applicationName: string): Promise<void> | void;
  sessionEnd?(session: SessionRef): Promise<void> | void;
}

export const noAudit: AuditSink = {};
