// Shared bits for the CLI identity tests: a fake clock, a temp config home, stdout/stderr capture, and a
// tiny scripted HTTP server for endpoints the local issuer cannot play (GitHub Actions, odd OAuth replies).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { vi } from 'vitest';
import type { Clock } from '../../cli/src/services/oidc-client.js';

export interface FakeClock extends Clock {
  sleeps: number[];
  advance(ms: number): void;
}

/** Time moves only when the code sleeps (or the test advances it); each sleep also yields `realMs` of real time. */
export function fakeClock(start = Date.now(), realMs = 5): FakeClock {
  let t = start;
  const sleeps: number[] = [];
  return {
    sleeps,
    now: () => t,
    advance: (ms) => {
      t += ms;
    },
    async sleep(ms, signal) {
      sleeps.push(ms);
      t += ms;
      await new Promise((r) => setTimeout(r, realMs));
      if (signal?.aborted) throw signal.reason;
    },
  };
}

/** A private XDG_CONFIG_HOME; no D-Bus, so the token store uses the file (as on any headless host). */
export async function tempEnv(extra: Record<string, string> = {}): Promise<{ dir: string; env: Record<string, string | undefined>; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'hoopctl-test-'));
  return {
    dir,
    env: { HOME: dir, XDG_CONFIG_HOME: join(dir, 'config'), PATH: process.env.PATH, ...extra },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

/** Captures what a command writes to stdout and stderr. */
export function capture(): { stdout: () => string; stderr: () => string; restore: () => void } {
  let out = '';
  let err = '';
  const o = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out += String(chunk);
    return true;
  });
  const e = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    err += String(chunk);
    return true;
  });
  return { stdout: () => out, stderr: () => err, restore: () => (o.mockRestore(), e.mockRestore()) };
}

export interface SeenRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export type Route = (req: SeenRequest) => { status: number; json?: unknown } | undefined;

/** A loopback HTTP server answering with `route`; records every request. */
export async function scriptedServer(route: Route): Promise<{ url: string; seen: SeenRequest[]; close: () => Promise<void> }> {
  const seen: SeenRequest[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      const r: SeenRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body };
      seen.push(r);
      const answer = route(r) ?? { status: 404, json: { error: { code: 'NOT_FOUND', message: 'no such endpoint' } } };
      res.writeHead(answer.status, { 'content-type': 'application/json' }).end(answer.json === undefined ? '' : JSON.stringify(answer.json));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () => {
      server.closeAllConnections();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** An unsigned-looking but well-formed JWT with the given claims (the CLI never verifies; the agent does). */
export function jwt(claims: Record<string, unknown>): string {
  const enc = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  return `${enc({ alg: 'RS256', typ: 'JWT', kid: 'k1' })}.${enc(claims)}.${Buffer.from('sig').toString('base64url')}`;
}
