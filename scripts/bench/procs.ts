// Child processes of the benchmark: spawned, waited for, measured (CPU from /proc) and always cleaned up.
//
// Every child goes into one registry; `killAll()` runs on normal exit, on an uncaught error and on
// Ctrl-C/SIGTERM, so no agent, CLI, relay or pgbench outlives the benchmark.
import { spawn, execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

const children = new Set<ChildProcess>();

/** Clock ticks per second for /proc/<pid>/stat (100 on every Linux we run on; asked once anyway). */
export const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** User + system CPU of a live process and its children, in ms (all threads: /proc/<pid>/stat fields 14 and 15). */
export function cpuMs(pid: number): number {
  return withChildren(pid).reduce((sum, p) => {
    const stat = readOr(`/proc/${p}/stat`);
    if (!stat) return sum;
    // Field 2 (comm) is parenthesised and may hold spaces: count fields after the last ')'.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return sum + ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
  }, 0);
}

/** Resident set size of a live process and its children, in bytes (/proc/<pid>/status VmRSS). */
export function rssBytes(pid: number): number {
  return withChildren(pid).reduce((sum, p) => {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readOr(`/proc/${p}/status`));
    return sum + (m ? Number(m[1]) * 1024 : 0);
  }, 0);
}

/** A process and its live descendants (an agent with `workers` forks one process per worker). */
export function withChildren(pid: number): number[] {
  const all = [pid];
  for (let i = 0; i < all.length; i++) {
    for (const tid of readdirOr(`/proc/${all[i]}/task`)) {
      for (const c of readOr(`/proc/${all[i]}/task/${tid}/children`).split(' ')) if (c.trim()) all.push(Number(c));
    }
  }
  return all;
}

// A child may exit between listing and reading: it then counts for nothing.
function readOr(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}
function readdirOr(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

export interface Service {
  name: string;
  proc: ChildProcess;
  pid: number;
  /** Resolves when a stdout line matches `ready` (the service is listening). */
  stop(): Promise<void>;
  cpuMs(): number;
  /** What the service printed on stdout until it was ready (e.g. the port it chose). */
  stdout(): string;
}

/**
 * Starts a long-lived child and waits until its stdout prints a line matching `ready` (or, with
 * `ready` a function, until it resolves). stderr goes to `stderrFd` (a log file) so a chatty child
 * costs the same as it would in production and never blocks on a full pipe.
 */
export async function startService(
  name: string,
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; stderrFd?: number; ready: RegExp | (() => Promise<void>); timeoutMs?: number },
): Promise<Service> {
  const proc = spawn(cmd, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', opts.stderrFd ?? 'inherit'] });
  children.add(proc);
  proc.on('exit', () => children.delete(proc));
  let out = '';
  const exited = new Promise<never>((_, reject) =>
    proc.once('exit', (code, sig) => reject(new Error(`${name} exited early (code ${code}, signal ${sig}); stdout: ${out.slice(-500)}`))),
  );
  exited.catch(() => {});
  const ready =
    opts.ready instanceof RegExp
      ? new Promise<void>((resolve) => {
          const re = opts.ready as RegExp;
          proc.stdout!.on('data', (d: Buffer) => {
            out += d.toString();
            if (re.test(out)) resolve();
          });
        })
      : (proc.stdout!.on('data', (d: Buffer) => (out += d.toString())), opts.ready());
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${name} not ready after ${opts.timeoutMs ?? 20_000} ms; stdout: ${out.slice(-500)}`)), opts.timeoutMs ?? 20_000);
  });
  try {
    await Promise.race([ready, exited, timeout]);
  } catch (err) {
    proc.kill('SIGKILL');
    throw err;
  } finally {
    clearTimeout(timer);
  }
  // Keep reading stdout so the child never blocks on a full pipe.
  proc.stdout!.removeAllListeners('data').resume();
  return {
    name,
    proc,
    pid: proc.pid!,
    cpuMs: () => cpuMs(proc.pid!),
    stop: () => stopProcess(proc),
    stdout: () => out,
  };
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
export function stopProcess(proc: ChildProcess, graceMs = 5000, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
    proc.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    proc.kill(signal);
  });
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program to completion (pgbench, psql), registered for cleanup while it runs. */
export function run(cmd: string, args: string[], opts: SpawnOptions & { timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    children.add(p);
    let stdout = '';
    let stderr = '';
    p.stdout?.on('data', (d) => (stdout += d));
    p.stderr?.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    p.on('error', (e) => {
      clearTimeout(timer);
      children.delete(p);
      reject(e);
    });
    p.on('close', (code) => {
      clearTimeout(timer);
      children.delete(p);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Synchronous last resort (process 'exit'): SIGKILL whatever is still running. */
export function killAll(signal: NodeJS.Signals = 'SIGKILL'): void {
  for (const p of children) {
    try {
      p.kill(signal);
    } catch {
      /* already gone */
    }
  }
}

/**
 * Installs the cleanup: `shutdown` (async: stop services, PostgreSQL) on SIGINT/SIGTERM, then a hard
 * kill of any child left on process exit.
 */
export function installCleanup(shutdown: () => Promise<void>): void {
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`\nbench: ${sig}, cleaning up…\n`);
    const hard = setTimeout(() => process.exit(130), 15_000);
    hard.unref();
    shutdown().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', () => killAll());
}
