// A dedicated PostgreSQL LISTEN connection that comes back by itself: re-established with backoff after
// any error, then `onReconnect` (notifications sent meanwhile are lost, so listeners re-read).
import pg from 'pg';

export interface PgListener {
  close(): Promise<void>;
}

/** Resolves once the first LISTEN is in place; rejects when that first attempt fails. */
export async function listenWithRetry(
  url: string,
  channel: string,
  on: { notify(payload: string): void; reconnected(): void },
): Promise<PgListener> {
  let current: pg.Client | undefined;
  let retry: NodeJS.Timeout | undefined;
  let closed = false;
  const connect = async (attempt: number): Promise<void> => {
    const c = new pg.Client({ connectionString: url });
    const again = () => {
      if (closed || current !== c) return;
      current = undefined;
      c.end().catch(() => {});
      retry = setTimeout(() => void connect(attempt + 1).catch(() => {}), Math.min(2000, 50 * 2 ** attempt));
      retry.unref();
    };
    c.on('error', again);
    c.on('end', again);
    c.on('notification', (n) => n.channel === channel && n.payload !== undefined && on.notify(n.payload));
    current = c;
    try {
      await c.connect();
      await c.query(`LISTEN ${channel}`);
    } catch (err) {
      if (attempt === 0) {
        current = undefined;
        await c.end().catch(() => {});
        throw err;
      }
      again();
      return;
    }
    if (attempt > 0) on.reconnected();
  };
  await connect(0);
  return {
    async close() {
      closed = true;
      clearTimeout(retry);
      const c = current;
      current = undefined;
      await c?.end().catch(() => {});
    },
  };
}
