// The ink login screen: what a person sees at each status (frames without ANSI codes).
import { describe, expect, it } from 'vitest';
import React from 'react';
import { render } from 'ink';
import { Writable } from 'node:stream';
import { LoginScreen, formatDuration, type LoginView } from '../../cli/src/ui/login.js';

class FakeTty extends Writable {
  columns = 100;
  rows = 30;
  isTTY = true;
  frames: string[] = [];
  override _write(chunk: Buffer, _enc: string, cb: () => void) {
    this.frames.push(chunk.toString());
    cb();
  }
}

const stripAnsi = (s: string) => s.replace(/\x1b\[[0-9;?]*[ -/]*[@-~]/g, '');

async function frameOf(view: LoginView, now: number): Promise<string> {
  const stdout = new FakeTty();
  const app = render(<LoginScreen view={view} now={() => now} />, { stdout: stdout as unknown as NodeJS.WriteStream, debug: true, patchConsole: false });
  // React 19 commits the first render asynchronously.
  for (let i = 0; i < 50 && !stdout.frames.some((f) => stripAnsi(f).trim()); i++) await new Promise((r) => setTimeout(r, 10));
  app.unmount();
  return (stdout.frames.map(stripAnsi).filter((f) => f.trim()).at(-1) ?? '').trim();
}

const base: LoginView = {
  issuer: 'https://login.clinic.example',
  verificationUri: 'https://login.clinic.example/device',
  verificationUriComplete: 'https://login.clinic.example/device?user_code=WDJB-MJHT',
  userCode: 'WDJB-MJHT',
  expiresAt: 1_000_000 + 600_000,
  interval: 5,
  browser: 'opened',
  status: 'waiting',
};

describe('LoginScreen', () => {
  it('waiting: URL, code, countdown, status', async () => {
    expect(await frameOf(base, 1_000_000)).toMatchInlineSnapshot(`
      "Sign in to https://login.clinic.example

      1. Open https://login.clinic.example/device (opened in your browser)
      2. Enter the code WDJB-MJHT (expires in 10m 0s)
         or open https://login.clinic.example/device?user_code=WDJB-MJHT

      ⧗ Waiting for you to approve in the browser…"
    `);
  });

  it.each([
    { status: 'slow_down' as const, want: '⧗ Waiting (the issuer asked to poll every 10 s)…' },
    { status: 'approved' as const, want: '✔ Approved: alice@clinic.example' },
    { status: 'denied' as const, want: '✘ The sign-in was denied in the browser.' },
    { status: 'expired' as const, want: '✘ The code expired before it was approved.' },
  ])('$status', async ({ status, want }) => {
    const frame = await frameOf({ ...base, status, interval: 10, detail: 'alice@clinic.example' }, 1_000_000);
    expect(frame.split('\n').at(-1)).toBe(want);
    // The countdown only runs while waiting.
    if (status !== 'slow_down') expect(frame).not.toContain('expires in');
  });

  it('formats durations', () => {
    expect([42, 605, 3 * 3600 + 120, 2 * 86400 + 3600].map(formatDuration)).toEqual(['42s', '10m 5s', '3h 2m', '2d 1h']);
  });
});
