/**
 * Masking of the other channels a value can leave by: ErrorResponse / NoticeResponse text fields and
 * NotificationResponse payloads.
 *
 * The agent cannot know which values an error quotes, so for a statement that read a masked column
 * (`LineagePlan.readsMasked`) every free-text field is treated as possibly quoting data:
 * - M (message): the text up to the first `"` is kept and everything from the first to the last `"`
 *   becomes `"***"` (`invalid input syntax for type integer: "123-45-6789"` →
 *   `invalid input syntax for type integer: "***"`); a message without quotes is kept only when it
 *   matches a known value-free template, otherwise it is replaced by a generic text.
 * - D (detail): `Key (ssn)=(…) already exists.` keeps the key columns and redacts the values;
 *   `Failing row contains (…)` is redacted; anything else → generic text.
 * - H (hint): kept only when it is one of PostgreSQL's value-free hints; W (where/context): only
 *   `SQL function …` / `PL/pgSQL function …` lines are kept; q (internal query) → generic text.
 * - SQLSTATE, severity, position, schema/table/column/type/constraint names, file/line/routine are
 *   kept. Unknown field types are dropped.
 * A message that cannot be parsed is replaced by a generic one of the same kind (fail closed).
 *
 * @see https://www.postgresql.org/docs/current/protocol-error-fields.html
 */
import { errorResponse, noticeResponse } from '../pgwire/backend.js';

const ERROR_RESPONSE = 0x45; // 'E'
const NOTICE_RESPONSE = 0x4e; // 'N'
const NOTIFICATION_RESPONSE = 0x41; // 'A'

export const GENERIC_MESSAGE = 'error text redacted: the statement reads masked columns';
export const GENERIC_DETAIL = 'detail redacted: the statement reads masked columns';
export const GENERIC_CONTEXT = 'context redacted';

/** Field types kept verbatim: S V C P p s t c d n F L R */
const KEEP = new Set([0x53, 0x56, 0x43, 0x50, 0x70, 0x73, 0x74, 0x63, 0x64, 0x6e, 0x46, 0x4c, 0x52]);

/** Messages without quotes that never contain a value. */
const VALUE_FREE_MESSAGES: RegExp[] = [
  /^division by zero$/,
  /^value too long for type [a-z ]+(\(\d+\))?$/,
  /^numeric field overflow$/,
  /^(smallint|integer|bigint|value|input|interval|date|timestamp) out of range$/,
  /^[a-z ]+ out of range$/,
  /^more than one row returned by a subquery used as an expression$/,
  /^canceling statement due to (statement timeout|user request|lock timeout)$/,
  /^current transaction is aborted, commands ignored until end of transaction block$/,
  /^could not serialize access due to [a-z ]+$/,
  /^deadlock detected$/,
  /^cannot execute [A-Z ]+ in a read-only transaction$/,
];

const VALUE_FREE_HINTS: RegExp[] = [
  /^No (function|operator|procedure|aggregate) matches the given name and argument types\. You might need to add explicit type casts\.$/,
  /^Perhaps you meant to reference the column "[^"]*"\.$/,
  /^You might need to add explicit type casts\.$/,
  /^Could not choose a best candidate (function|operator)\. You might need to add explicit type casts\.$/,
];

const SAFE_CONTEXT = /^(SQL function "[^"\n]*"( statement \d+| during (startup|inlining))?|PL\/pgSQL function [^\n"]* (line \d+ at [A-Za-z ]+|during function entry|during statement block local variable initialization))$/;

/** `… "x" …` → prefix + `"***"`; undefined when the text has no quote. */
function redactQuoted(s: string): string | undefined {
  const a = s.indexOf('"');
  if (a < 0) return undefined;
  const b = s.lastIndexOf('"');
  const suffix = b > a ? s.slice(b + 1) : '';
  // the suffix may itself be a value (a quote inside the value broke pairing): keep only punctuation / template words
  return `${s.slice(0, a)}"***"${/^[\s.,;:)a-zA-Z]*$/.test(suffix) && !/\d/.test(suffix) ? suffix : ''}`;
}

export function maskMessageText(m: string): string {
  const q = redactQuoted(m);
  if (q !== undefined) return q;
  return VALUE_FREE_MESSAGES.some((r) => r.test(m)) ? m : GENERIC_MESSAGE;
}

export function maskDetail(d: string): string {
  const key = /^Key \((.*?)\)=\(.*\) (already exists|is (?:still )?(?:not )?(?:present|referenced) (?:in|from) table "[^"]*")\.$/s.exec(d);
  if (key) return `Key (${redactQuoted(key[1]) ?? key[1]})=(***) ${key[2]}.`;
  if (/^Key \(/.test(d)) return 'Key (***)=(***)';
  if (/^Failing row contains \(/.test(d)) return 'Failing row contains (***).';
  return GENERIC_DETAIL;
}

export function maskHint(h: string): string {
  return VALUE_FREE_HINTS.some((r) => r.test(h)) ? h : GENERIC_DETAIL;
}

export function maskContext(w: string): string {
  return w
    .split('\n')
    .map((line) => (SAFE_CONTEXT.test(line) ? line : GENERIC_CONTEXT))
    .filter((l, i, all) => l !== GENERIC_CONTEXT || all[i - 1] !== GENERIC_CONTEXT)
    .join('\n');
}

/**
 * ErrorResponse / NoticeResponse `buf[start, end)` (type byte included). When `readsMasked` is false
 * the original bytes are returned; else a rewritten message.
 */
export function maskErrorMessage(buf: Buffer, start: number, end: number, readsMasked: boolean): Buffer {
  const type = buf[start];
  if (!readsMasked) return buf.subarray(start, end);
  try {
    if (type !== ERROR_RESPONSE && type !== NOTICE_RESPONSE) throw new Error('not an error or notice');
    const len = buf.readInt32BE(start + 1);
    if (start + 1 + len !== end) throw new Error('bad length');
    const parts: Buffer[] = [];
    let i = start + 5;
    for (;;) {
      if (i >= end) throw new Error('unterminated');
      const t = buf[i++];
      if (t === 0) break;
      const z = buf.indexOf(0, i);
      if (z < 0 || z >= end) throw new Error('unterminated field');
      const v = buf.toString('utf8', i, z);
      i = z + 1;
      let out: string | undefined;
      if (KEEP.has(t)) out = v;
      else if (t === 0x4d) out = maskMessageText(v); // M
      else if (t === 0x44) out = maskDetail(v); // D
      else if (t === 0x48) out = maskHint(v); // H
      else if (t === 0x57) out = maskContext(v); // W
      else if (t === 0x71) out = GENERIC_CONTEXT; // q
      if (out === undefined) continue; // unknown field: dropped
      parts.push(Buffer.from([t]), Buffer.from(out, 'utf8'), Buffer.from([0]));
    }
    if (i !== end) throw new Error('trailing bytes');
    const body = Buffer.concat([...parts, Buffer.from([0])]);
    const head = Buffer.allocUnsafe(5);
    head[0] = type;
    head.writeInt32BE(body.length + 4, 1);
    return Buffer.concat([head, body]);
  } catch {
    const generic = { severity: 'ERROR' as const, code: 'XX000', message: GENERIC_MESSAGE };
    return type === NOTICE_RESPONSE ? noticeResponse({ ...generic, severity: 'NOTICE', code: '00000' }) : errorResponse(generic);
  }
}

/**
 * NotificationResponse `buf[start, end)`: the payload is replaced by `***` (notifications arrive
 * outside any statement and cannot be attributed; channel and pid are kept). A malformed message
 * becomes a notification with empty channel and payload `***`.
 */
export function maskNotification(buf: Buffer, start: number, end: number): Buffer {
  let pid = 0;
  let channel = '';
  try {
    if (buf[start] !== NOTIFICATION_RESPONSE) throw new Error('not a notification');
    pid = buf.readInt32BE(start + 5);
    const z = buf.indexOf(0, start + 9);
    if (z < 0 || z >= end) throw new Error('bad channel');
    channel = buf.toString('utf8', start + 9, z);
  } catch {
    pid = 0;
    channel = '';
  }
  const body = Buffer.concat([Buffer.alloc(4), Buffer.from(channel, 'utf8'), Buffer.from([0]), Buffer.from('***'), Buffer.from([0])]);
  body.writeInt32BE(pid | 0, 0);
  const head = Buffer.allocUnsafe(5);
  head[0] = NOTIFICATION_RESPONSE;
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}
