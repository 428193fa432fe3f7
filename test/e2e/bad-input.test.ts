// Bad bytes from a client get a clear Postgres error and break nothing: after each case a fresh client
// still works, and every upstream backend the case opened is gone again (checked as the superuser in
// pg_stat_activity, not by trusting the agent).
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { decideNextApproval, tunnelClient, useStack } from '../harness/stack.js';
import { agentBackends, cancelRequest, collect, cstr, header, parseErrorFields, query, RawClient, startupMessage, typed, waitForBackends, type PgErrorFields } from './wire.js';

const s = useStack();

let before = 0;
beforeEach(async () => {
  before = await agentBackends(s.get().directUrl);
});
afterEach(async () => {
  const stack = s.get();
  const c = await tunnelClient(stack);
  try {
    expect((await c.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  } finally {
    await c.end();
  }
  expect(await waitForBackends(stack.directUrl, before)).toBe(before);
});

async function raw(startup: boolean): Promise<RawClient> {
  const stack = s.get();
  const c = await RawClient.connect(stack.listener.host, stack.listener.port);
  if (startup) await c.startup();
  return c;
}

function functionCall(oid: number): Buffer {
  const b = Buffer.alloc(4 + 2 + 2 + 2);
  b.writeUInt32BE(oid, 0);
  b.writeInt16BE(0, 4); // argument format codes
  b.writeInt16BE(0, 6); // arguments
  b.writeInt16BE(0, 8); // result format
  return typed('F', b);
}

const INVALID_UTF8 = Buffer.from([0xc3, 0x28]);

interface FatalCase {
  desc: string;
  /** Complete the startup before sending `bytes`. */
  startup: boolean;
  bytes: Buffer;
  want: Omit<PgErrorFields, 'message'> & { message: RegExp };
  /** The refusal must come within this many ms (no waiting for more bytes). */
  withinMs?: number;
}

describe('refused with a FATAL error, then the connection is closed', () => {
  it.each<FatalCase>([
    {
      desc: 'garbage bytes (an HTTP request) as the first message',
      startup: false,
      bytes: Buffer.from('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n'),
      want: { code: '08P01', message: /invalid startup packet length/ },
      withinMs: 2000,
    },
    {
      desc: 'a startup packet with an unknown protocol code',
      startup: false,
      bytes: Buffer.from('00000010deadbeef0000000000000000', 'hex'),
      want: { code: '0A000', message: /unsupported frontend protocol/ },
    },
    {
      desc: 'a typed message whose length word is 3 (< 4)',
      startup: true,
      bytes: header('Q', 3),
      want: { code: '08P01', message: /invalid message length 3/ },
    },
    {
      desc: 'a typed message whose length word is negative',
      startup: true,
      bytes: header('Q', 0xffffffff),
      want: { code: '08P01', message: /invalid message length -1/ },
    },
    {
      desc: 'a typed message announcing 0x7fffffff bytes (refused at once, nothing buffered)',
      startup: true,
      bytes: header('Q', 0x7fffffff),
      want: { code: '08P01', message: /invalid message length 2147483647/ },
      withinMs: 1000,
    },
    {
      desc: 'a CopyData announcing one byte more than maxMessageBytes (16 MiB)',
      startup: true,
      bytes: header('d', 16 * 1024 * 1024 + 1),
      want: { code: '08P01', message: /invalid message length/ },
      withinMs: 1000,
    },
    {
      desc: 'a Query with bytes after its terminating NUL',
      startup: true,
      bytes: typed('Q', Buffer.concat([cstr('SELECT 1'), Buffer.from('; DROP TABLE patients')])),
      want: { code: '08P01', message: /invalid Query message: \d+ trailing bytes/ },
    },
    {
      desc: 'a Query without a terminating NUL',
      startup: true,
      bytes: typed('Q', 'SELECT 1'),
      want: { code: '08P01', message: /unterminated string/ },
    },
    {
      desc: 'invalid UTF-8 in a Query',
      startup: true,
      bytes: typed('Q', Buffer.concat([Buffer.from("SELECT '"), INVALID_UTF8, Buffer.from("'"), Buffer.from([0])])),
      want: { code: '22021', message: /invalid byte sequence for encoding "UTF8"/ },
    },
    {
      desc: 'invalid UTF-8 in a text parameter of Bind',
      startup: true,
      bytes: Buffer.concat([
        typed('P', Buffer.concat([cstr(''), cstr('SELECT $1::text'), Buffer.from([0, 0])])),
        typed('B', Buffer.concat([cstr(''), cstr(''), Buffer.from([0, 0, 0, 1, 0, 0, 0, 2]), INVALID_UTF8, Buffer.from([0, 0])])),
        typed('E', Buffer.concat([cstr(''), Buffer.alloc(4)])),
        typed('S'),
      ]),
      want: { code: '22021', message: /invalid byte sequence for encoding "UTF8"/ },
    },
    {
      desc: 'a message type no frontend sends (PasswordMessage after startup)',
      startup: true,
      bytes: typed('p', cstr('hunter2')),
      want: { code: '08P01', message: /invalid frontend message type 112/ },
    },
    {
      desc: 'a complete message of type 0 (startup-shaped) after startup',
      startup: true,
      bytes: typed('\0', Buffer.concat([Buffer.from([0, 3, 0, 0]), cstr('user'), cstr('postgres'), Buffer.from([0])])),
      want: { code: '08P01', message: /invalid frontend message type 0/ },
    },
  ])('$desc', async ({ startup, bytes, want, withinMs }) => {
    const c = await raw(startup);
    try {
      const sent = performance.now();
      c.write(bytes);
      const err = await c.nextError(withinMs ?? 5000);
      const took = performance.now() - sent;
      expect(err).toMatchObject({ severity: 'FATAL', code: want.code });
      expect(err!.message).toMatch(want.message);
      if (withinMs) expect(took).toBeLessThan(withinMs);
      // …and the agent hangs up.
      const endedAt = await Promise.race([c.ended, new Promise<number>((r) => setTimeout(() => r(-1), 3000))]);
      expect(endedAt).toBeGreaterThan(0);
    } finally {
      c.destroy();
    }
  });
});

describe('connections that vanish', () => {
  it.each([
    { desc: 'closed in the middle of the StartupMessage', startup: false, bytes: startupMessage({ user: 'noop', database: 'demo-db' }).subarray(0, 12) },
    { desc: 'closed in the middle of a Query message', startup: true, bytes: Buffer.concat([header('Q', 100), Buffer.from('SELECT pg_')]) },
    { desc: 'closed after 4 bytes of a message header', startup: true, bytes: Buffer.from([0x51, 0, 0, 0]) },
    { desc: 'closed while a 100,000-row result is streaming', startup: true, bytes: query('SELECT g, md5(g::text) FROM generate_series(1, 100000) g') },
    { desc: 'closed in the middle of a pipelined extended-protocol batch', startup: true, bytes: Buffer.concat([typed('P', Buffer.concat([cstr('s1'), cstr('SELECT $1::int'), Buffer.from([0, 0])])), header('B', 200)]) },
  ])('$desc: the upstream backend ends too', async ({ startup, bytes }) => {
    const stack = s.get();
    const c = await raw(startup);
    c.write(bytes);
    await new Promise((r) => setTimeout(r, 200));
    c.destroy();
    expect(await waitForBackends(stack.directUrl, before)).toBe(before);
  });
});

describe('refused with an ERROR; the session stays usable', () => {
  it('a FunctionCall message is refused with 42501 and the session goes on', async () => {
    const c = await raw(true);
    try {
      c.write(functionCall(2026)); // pg_backend_pid()
      const msgs = await c.until('Z');
      const errs = msgs.filter((m) => m.type === 'E');
      expect(msgs.some((m) => m.type === 'V')).toBe(false); // no FunctionCallResponse
      expect(errs).toHaveLength(1);
      const e = parseErrorFields(errs[0].body);
      expect(e).toMatchObject({ severity: 'ERROR', code: '42501' });
      expect(e.message).toMatch(/FunctionCall protocol message is not allowed/);
      expect(await c.simple('SELECT 41 + 1')).toEqual({ rows: ['42'] });
    } finally {
      c.destroy();
    }
  });

  it('CopyData and CopyDone outside COPY are dropped (as PostgreSQL does) and the session stays in sync', async () => {
    const c = await raw(true);
    try {
      c.write(Buffer.concat([typed('d', 'id\tname\n1\tx\n'), typed('c')]));
      expect(await c.simple("SELECT 'still in sync'")).toEqual({ rows: ['still in sync'] });
      expect(await c.simple('SELECT count(*) FROM patients')).toEqual({ rows: ['2000'] });
    } finally {
      c.destroy();
    }
  });

  it('COPY FROM STDIN pipelined with its data is refused (P4), the data dropped, the session in sync', async () => {
    const c = await raw(true);
    try {
      c.write(Buffer.concat([query('COPY patients (id) FROM STDIN'), typed('d', '990002\n'), typed('c'), query("SELECT 'after'")]));
      // Held for an approver (P4); the data that came with it was dropped on arrival, not kept for later.
      const pending = c.until('Z');
      await decideNextApproval(s.get(), 'deny', 'pipelined data');
      const first = collect(await pending);
      expect(first.error).toMatchObject({ severity: 'ERROR', code: '42501' });
      expect(first.error!.message).toMatch(/approval \S+ denied by approver-bot: pipelined data; the statement was not run \(P4\./);
      expect(collect(await c.until('Z'))).toEqual({ rows: ['after'] });
      expect(await c.simple('SELECT count(*) FROM patients WHERE id = 990002')).toEqual({ rows: ['0'] });
    } finally {
      c.destroy();
    }
  });
});

describe('CancelRequest', () => {
  const LONG = 'SELECT count(*) FROM visits a CROSS JOIN visits b CROSS JOIN visits c';
  const active = async () => {
    const { default: pg } = await import('pg');
    const d = new pg.Client({ connectionString: s.get().directUrl });
    await d.connect();
    try {
      return Number((await d.query("SELECT count(*) AS n FROM pg_stat_activity WHERE usename = 'gw_agent' AND state = 'active'")).rows[0].n);
    } finally {
      await d.end();
    }
  };

  it('a wrong key cancels nothing; the issued key cancels the query (57014)', async () => {
    const victim = await raw(true);
    try {
      expect(victim.key).toBeDefined();
      victim.write(query(LONG));
      await new Promise((r) => setTimeout(r, 300));

      for (const bad of [
        { pid: victim.key!.pid, secret: Buffer.from(victim.key!.secret.map((b) => b ^ 0xff)) },
        { pid: victim.key!.pid ^ 1, secret: victim.key!.secret },
      ]) {
        const c = await raw(false);
        c.write(cancelRequest(bad.pid, bad.secret));
        expect(await c.next(3000)).toBeUndefined(); // no answer, just a close: no oracle
        expect(c.isEnded).toBe(true);
      }
      await new Promise((r) => setTimeout(r, 500));
      expect(await active()).toBe(1);

      const c = await raw(false);
      const sent = performance.now();
      c.write(cancelRequest(victim.key!.pid, victim.key!.secret));
      const err = await victim.nextError(5000);
      expect(err).toMatchObject({ severity: 'ERROR', code: '57014', message: 'canceling statement due to user request' });
      expect(performance.now() - sent).toBeLessThan(3000);
      await victim.until('Z');
      expect(await victim.simple('SELECT 1')).toEqual({ rows: ['1'] });
      c.destroy();
    } finally {
      victim.destroy();
    }
  });
});
