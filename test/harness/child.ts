// A long-running program under test (hoopctl connect, hoop-agent): its output can be awaited, and it is
// stopped by its own pid at the end.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';

const ROOT = path.resolve(import.meta.dirname, '../..');

/** A long-running child whose output the test can wait on; killed (by its own pid) at the end. */
export class Child {
  stdout = '';
  stderr = '';
  /** The process ended and its output is all read (a helper it started may hold stderr a while longer). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The process itself ended (for timing an exit). */
  readonly terminated: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private readonly proc: ChildProcess;
  private waiters: Array<() => void> = [];

  constructor(cmd: string, args: string[], env: NodeJS.ProcessEnv) {
    this.proc = spawn(cmd, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.on('data', (d) => {
      this.stdout += d;
      this.poke();
    });
    this.proc.stderr!.on('data', (d) => {
      this.stderr += d;
      this.poke();
    });
    this.exited = new Promise((resolve) => this.proc.on('close', (code, signal) => resolve({ code, signal })));
    this.terminated = new Promise((resolve) => this.proc.on('exit', (code, signal) => resolve({ code, signal })));
  }

  private poke(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** Waits until `pred` holds for the output so far. */
  async waitFor(pred: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (!pred()) {
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; stderr so far:\n${this.stderr}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 250));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Sends a signal to the child (a SIGTERM drain, a second SIGTERM). */
  signal(sig: NodeJS.Signals): void {
    this.proc.kill(sig);
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(t);
  }
}
