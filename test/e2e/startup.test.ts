// The agent holds the credential: whatever a client puts in its StartupMessage, upstream it is always
// the connection's own role on the connection's own database (DESIGN.md, Postgres session at the agent).
import { describe, expect, it } from 'vitest';
import pg from 'pg';
import { psql, tunnelClient, useStack } from '../harness/stack.js';
import { agentBackends, RawClient, startupMessage, waitForBackends } from './wire.js';

const s = useStack();

describe('who the session runs as', () => {
  it.each([
    { desc: 'the usual noop user', extra: {} },
    { desc: 'user=postgres is ignored', extra: { user: 'postgres' } },
    { desc: 'a password is ignored', extra: { user: 'postgres', password: 'postgres-local-only' } },
    { desc: 'database=clinic (the real name) is accepted', extra: { database: 'clinic' } },
  ])('$desc: current_user is gw_agent', async ({ extra }) => {
    const c = await tunnelClient(s.get(), extra);
    try {
      const r = await c.query('SELECT current_user, session_user, current_database() AS db');
      expect(r.rows).toEqual([{ current_user: 'gw_agent', session_user: 'gw_agent', db: 'clinic' }]);
    } finally {
      await c.end();
    }
  });

  it('psql with user=postgres is still gw_agent', async () => {
    const stack = s.get();
    const r = await psql(stack, ['-At', '-c', 'SELECT current_user'], {});
    expect(r.stdout.trim()).toBe('gw_agent');
    const r2 = await psql(stack, ['-At', '-U', 'postgres', '-c', 'SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user']);
    expect(r2.code).toBe(0);
    expect(r2.stdout.trim()).toBe('gw_agent|f');
  });
});

describe('startup parameters the agent refuses', () => {
  it.each([
    { desc: 'dbname=postgres', extra: { database: 'postgres' }, code: '28000', message: /database "postgres" is not reachable through this tunnel/ },
    { desc: 'dbname=template1', extra: { database: 'template1' }, code: '28000', message: /database "template1" is not reachable/ },
    { desc: 'options=-c role=postgres', extra: { options: '-c role=postgres' }, code: '08P01', message: /startup parameter "options" is not allowed/ },
    { desc: 'options=-c default_transaction_read_only=off', extra: { options: '-c default_transaction_read_only=off' }, code: '08P01', message: /"options"/ },
    { desc: 'replication=database', extra: { replication: 'database' }, code: '08P01', message: /startup parameter "replication" is not allowed/ },
  ] as Array<{ desc: string; extra: pg.ClientConfig; code: string; message: RegExp }>)('$desc → FATAL $code', async ({ extra, code, message }) => {
    const stack = s.get();
    const before = await agentBackends(stack.directUrl);
    const err = await tunnelClient(stack, extra).then(
      async (c) => {
        await c.end();
        return undefined;
      },
      (e: Error & { code?: string; severity?: string }) => e,
    );
    expect(err).toBeDefined();
    expect(err).toMatchObject({ code, severity: 'FATAL' });
    expect(err!.message).toMatch(message);
    // Refused before any upstream connection is opened.
    expect(await agentBackends(stack.directUrl)).toBe(before);
  });

  it('psql dbname=postgres prints a clear FATAL and exits 2', async () => {
    const stack = s.get();
    const r = await psql(stack, ['-d', `host=${stack.listener.host} port=${stack.listener.port} user=noop dbname=postgres`, '-c', 'SELECT 1']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('FATAL:  database "postgres" is not reachable through this tunnel');
    expect(r.stderr).toContain('use dbname=demo-db');
  });

  it('a raw StartupMessage with options gets 08P01 and the connection is closed', async () => {
    const stack = s.get();
    const raw = await RawClient.connect(stack.listener.host, stack.listener.port);
    try {
      raw.write(startupMessage({ user: 'noop', database: 'demo-db', options: '-c role=postgres' }));
      const err = await raw.nextError();
      expect(err).toMatchObject({ severity: 'FATAL', code: '08P01' });
      await raw.ended;
    } finally {
      raw.destroy();
    }
  });
});

describe('application_name', () => {
  it.each([
    { desc: 'plain ASCII passes as is', name: 'nightly-etl v1.2', want: 'nightly-etl v1.2' },
    { desc: 'non-ASCII and control characters become ?', name: 'etl\u00e9\tjob\u0007', want: 'etl??job?' },
    { desc: 'longer than 63 bytes is cut', name: 'x'.repeat(100), want: 'x'.repeat(63) },
  ])('$desc', async ({ name, want }) => {
    const stack = s.get();
    const c = await tunnelClient(stack, { application_name: name });
    try {
      // Through the tunnel (pg_stat_activity itself is blocked there by policy P3)…
      expect((await c.query('SHOW application_name')).rows).toEqual([{ application_name: want }]);
      // …and what the database really holds, seen as the superuser.
      const pid = (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
      const d = new pg.Client({ connectionString: stack.directUrl });
      await d.connect();
      try {
        const r = await d.query('SELECT usename, application_name FROM pg_stat_activity WHERE pid = $1', [pid]);
        expect(r.rows).toEqual([{ usename: 'gw_agent', application_name: want }]);
      } finally {
        await d.end();
      }
    } finally {
      await c.end();
    }
  });

  it('leaves no backend behind after the refusals above', async () => {
    const stack = s.get();
    expect(await waitForBackends(stack.directUrl, 0)).toBe(0);
  });
});
