// Flag values, parsed once and the same way in every command: commander calls these while it reads
// argv, so a bad value stops the command before it does anything (exit 2, the flag, what it got and
// what it accepts; with --json one error document). Commands receive typed values.
import { ExitCode, UserError } from './errors.js';

type Parse<T> = (value: string) => T;

function bad(flag: string, value: string, accepted: string): UserError {
  return new UserError('BAD_FLAG', `${flag}: not ${accepted}: ${JSON.stringify(value)}`, { hint: `${flag} accepts ${accepted}.`, exitCode: ExitCode.Usage });
}

const UNIT_MS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
const ISO = /^\d{4}-\d{2}-\d{2}([T ][\d:.]+(Z|[+-]\d{2}:?\d{2})?)?$/;
const TIME_FORMS = 'an ISO date or time (2026-11-01, 2026-11-01T08:00:00Z), a duration back from now (30m, 24h, 7d, 2w) or now';

/** An instant: ISO date/time, a duration back from now (30m, 24h, 7d, 2w) or `now`, as an ISO time. */
export function parseTime(flag: string, value: string, now = Date.now()): string {
  if (value === 'now') return new Date(now).toISOString();
  const rel = /^(\d+)([smhdw])$/.exec(value);
  if (rel) return new Date(now - Number(rel[1]) * UNIT_MS[rel[2]]).toISOString();
  const t = ISO.test(value) ? Date.parse(value) : NaN;
  if (Number.isNaN(t)) throw bad(flag, value, TIME_FORMS);
  return new Date(t).toISOString();
}

export const timeFlag =
  (flag: string): Parse<string> =>
  (v) =>
    parseTime(flag, v);

/** A whole number in [min, max]. */
export const intFlag =
  (flag: string, min: number, max: number): Parse<number> =>
  (v) => {
    const n = /^\d+$/.test(v) ? Number(v) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) throw bad(flag, v, `a whole number from ${min} to ${max}`);
    return n;
  };

/** One of a fixed list of words. */
export const enumFlag =
  <const T extends string>(flag: string, values: readonly T[]): Parse<T> =>
  (v) => {
    if (!(values as readonly string[]).includes(v)) throw bad(flag, v, `one of ${values.join(' | ')}`);
    return v as T;
  };

/** A local TCP port; 0 picks a free one. */
export const portFlag = (flag = '--port'): Parse<number> => intFlag(flag, 0, 65535);
