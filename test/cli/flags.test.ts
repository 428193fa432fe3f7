// Flags are validated once, the same way in every command (cli/src/flags.ts): the parsers themselves,
// then the real binary refusing bad values with exit 2, the allowed values, and one JSON error document.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enumFlag, intFlag, parseTime } from '../../cli/src/flags.js';
import { UserError } from '../../cli/src/errors.js';
import { runCli, tempHome } from './cli-harness.js';

describe('time flags', () => {
  const now = Date.parse('2026-11-29T12:00:00Z');
  it.each([
    { v: '24h', want: '2026-11-28T12:00:00.000Z' },
    { v: '1h', want: '2026-11-29T11:00:00.000Z' },
    { v: '7d', want: '2026-11-22T12:00:00.000Z' },
    { v: '30m', want: '2026-11-29T11:30:00.000Z' },
    { v: '2w', want: '2026-11-15T12:00:00.000Z' },
    { v: 'now', want: '2026-11-29T12:00:00.000Z' },
    { v: '2026-11-01', want: '2026-11-01T00:00:00.000Z' },
    { v: '2026-11-01T08:00:00Z', want: '2026-11-01T08:00:00.000Z' },
    { v: '2026-11-01T08:00:00+02:00', want: '2026-11-01T06:00:00.000Z' },
  ])('$v → $want', ({ v, want }) => {
    expect(parseTime('--since', v, now)).toBe(want);
  });
  it.each(['yesterday', '7 days', '2026-13-45', '-1d', ''])('refuses %j with exit 2 and the accepted forms', (v) => {
    const err = (() => {
      try {
        parseTime('--since', v, now);
      } catch (e) {
        return e as UserError;
      }
    })();
    expect(err).toBeInstanceOf(UserError);
    expect(err!.exitCode).toBe(2);
    expect(err!.message).toMatch(/^--since: not an ISO date or time .* duration back from now .*: /);
  });
});

describe('number and word flags', () => {
  it.each(['abc', '0', '501', '1.5', '-3', '', '1e2'])('--limit %j is refused', (v) => {
    expect(() => intFlag('--limit', 1, 500)(v)).toThrow(/^--limit: not a whole number from 1 to 500: /);
  });
  it('--limit 25 is 25', () => expect(intFlag('--limit', 1, 500)('25')).toBe(25));
  it('an enum names its values', () => {
    expect(() => enumFlag('--decision', ['allow', 'block', 'hold'])('maybe')).toThrow('--decision: not one of allow | block | hold: "maybe"');
    expect(enumFlag('--decision', ['allow', 'block', 'hold'])('hold')).toBe('hold');
  });
});

describe('the binary refuses bad flags before doing anything', { timeout: 120_000 }, () => {
  let home: Awaited<ReturnType<typeof tempHome>>;
  beforeAll(async () => (home = await tempHome()));
  afterAll(() => home.cleanup());
  // No agent and no login: a flag accepted by mistake would fail later with another code (2 NO_AGENT is
  // ruled out by checking the message).
  it.each([
    { args: ['sessions', '--limit', 'abc'], flag: '--limit', accepts: 'a whole number from 1 to 500' },
    { args: ['sessions', '--decision', 'maybe'], flag: '--decision', accepts: 'one of allow | block | hold' },
    { args: ['sessions', '--since', 'yesterday'], flag: '--since', accepts: 'an ISO date or time' },
    { args: ['audit', 'export', '--since', 'yesterday'], flag: '--since', accepts: 'an ISO date or time' },
    { args: ['audit', 'export', '--format', 'xml'], flag: '--format', accepts: 'one of jsonl | csv' },
    { args: ['evidence', 'build', '--from', 'last week', '--to', 'now', '-o', 'x'], flag: '--from', accepts: 'an ISO date or time' },
    { args: ['approvals', '--status', 'open'], flag: '--status', accepts: 'one of pending | approved' },
    { args: ['connect', 'prod-db', '--port', '70000'], flag: '--port', accepts: 'a whole number from 0 to 65535' },
  ])('$args.0 $flag: exit 2, one line with what it accepts; --json: one error document', async ({ args, flag, accepts }) => {
    const [text, json] = await Promise.all([runCli(args, home.env), runCli(['--json', ...args], home.env)]);
    expect(text.code).toBe(2);
    expect(text.stdout).toBe('');
    expect(text.stderr).toContain(`error: ${flag}: not ${accepts}`);
    expect(text.stderr.trimEnd().split('\n')).toHaveLength(2); // the message and what it accepts
    expect(json.code).toBe(2);
    expect(JSON.parse(json.stdout)).toMatchObject({ error: { code: 'BAD_FLAG', message: expect.stringContaining(flag) } });
  });
  it('sessions --since 1h is accepted like audit export --since 1h (fails later, on the missing agent)', async () => {
    const r = await runCli(['sessions', '--since', '1h'], home.env);
    expect(r.stderr).toContain('no agent URL');
  });
});
