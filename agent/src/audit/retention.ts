// Recording retention (`retention.recordings` in the agent config): at start, then periodically, the
// store deletes recordings whose last entry is older than the limit. Only recordings: audit events are
// the hash chain, and deleting any of them would break `hoopctl audit verify`.
import type { Logger } from '../log.js';
import type { StateStore } from './store.js';

export interface Retention {
  stop(): void;
}

/** Runs a pass now (not awaited: start-up does not wait on it), then every `everyMs`; passes never overlap. */
export function startRetention(store: Pick<StateStore, 'applyRetention'>, maxAgeMs: number, everyMs: number, log: Logger): Retention {
  let running: Promise<void> | undefined;
  const pass = (): Promise<void> =>
    (running ??= store.applyRetention(maxAgeMs).then(
      ({ removed }) => {
        if (removed) log.info('retention: old recordings deleted', { removed });
      },
      (err) => log.warn('retention pass failed; retried at the next one', { error: (err as Error).message }),
    ).finally(() => (running = undefined)));
  const timer = setInterval(() => void pass(), everyMs);
  timer.unref(); // retention never keeps the process alive
  void pass();
  return { stop: () => clearInterval(timer) };
}
