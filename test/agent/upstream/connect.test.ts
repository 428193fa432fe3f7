import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshDatabase, type TestDatabase } from '../../harness/pg.js';
import { freePort } from '../../../shared/net.js';
import {
  AUTH_OK,
  BackendFramer,
  backendKeyData,
  errorResponse,
  noticeResponse,
  parameterStatus,
  parseCommandComplete,
  parseDataRow,
  parseErrorFields,
  parseReadyForQuery,
  parseRowDescription,
  READY_IDLE,
} from '../../../agent/src/pgwire/backend.js';
import { serializeFrontend } from '../../../agent/src/pgwire/frontend.js';
import { Writer } from '../../../agent/src/pgwire/writer.js';
import { connectUpstream, sendCancelRequest, type UpstreamConnection } from '../../../agent/src/upstream/connect.js';
import { UpstreamError } from '../../../agent/src/upstream/errors.js';
import { ScramKeyCache } from '../../../agent/src/upstream/scram.js';
import { fakeUpstream } from './fake-upstream.js';

/** Sends one simple Query and collects the backend messages up to ReadyForQuery. */
function query(conn: UpstreamConnection, sql: string): Promise<Buffer[]> {
  const f = new BackendFramer();
  const msgs: Buffer[] = [];
  return new Promise((resolve, reject) => {
    const onData = (c: Buffer) => {
      const n = f.push(c);
      for (let i = 0; i < n; i++) {
        msgs.push(Buffer.from(f.message(i)));
        if (f.types[i] === 0x5a) {
          conn.socket.off('data', onData).pause();
          resolve(msgs);
        }
      }
    };
    conn.socket.on('data', onData).once('error', reject);
    if (conn.leftover.length) onData(conn.leftover);
    conn.socket.write(serializeFrontend({ type: 'Query', sql }));
    conn.socket.resume();
  });
}

const types = (msgs: Buffer[]) => msgs.map((m) => String.fromCharCode(m[0])).join('');

async function rejection(p: Promise<unknown>): Promise<UpstreamError> {
  const e = await p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(UpstreamError);
  return e as UpstreamError;
}

describe('connectUpstream against PostgreSQL 18', () => {
  let db: TestDatabase;
  const open: UpstreamConnection[] = [];
  const ROLE_PASSWORD = `pw-${randomBytes(6).toString('hex')}-ü`; // non-ASCII: exercises SASLprep
  let role: string;
  let target: { host: string; port: number; sslmode: 'disable' };

  beforeAll(async () => {
    db = await freshDatabase('upstream');
    role = `agent_${randomBytes(3).toString('hex')}`;
    await db.pg.exec(`CREATE ROLE ${role} LOGIN PASSWORD '${ROLE_PASSWORD}'`);
    target = { host: db.pg.host, port: db.pg.port, sslmode: 'disable' };
  });
  afterAll(async () => {
    for (const c of open) c.socket.destroy();
    await db.pg.exec(`DROP ROLE IF EXISTS ${role}`).catch(() => {});
  });

  const connect = async (over: Partial<Parameters<typeof connectUpstream>[0]> = {}) => {
    const c = await connectUpstream({ ...target, database: db.name, user: role, password: ROLE_PASSWORD, ...over });
    open.push(c);
    return c;
  };

  it('authenticates with SCRAM-SHA-256 and collects the startup state', async () => {
    const c = await connect({ params: { application_name: 'hoop-agent-test' } });
    expect(c.serverVersion).toMatch(/^18\./);
    expect(c.parameters.get('client_encoding')).toBe('UTF8');
    expect(c.parameters.get('application_name')).toBe('hoop-agent-test');
    expect(c.backendKey.pid).toBeGreaterThan(0);
    expect(c.backendKey.secret).toHaveLength(4);
    expect(c.leftover).toHaveLength(0);
    expect(c.tls).toBe(false);
    expect(c.socket.isPaused()).toBe(true);
  });

  it('hands over a socket that runs queries', async () => {
    const c = await connect();
    const msgs = await query(c, 'SELECT 1 AS one');
    expect(types(msgs)).toBe('TDCZ');
    expect(parseRowDescription(msgs[0].subarray(5))[0]).toMatchObject({ name: 'one', typeOid: 23 });
    expect(parseDataRow(msgs[1].subarray(5))).toEqual([Buffer.from('1')]);
    expect(parseCommandComplete(msgs[2].subarray(5))).toMatchObject({ command: 'SELECT', rows: 1 });
    expect(parseReadyForQuery(msgs[3].subarray(5))).toBe('I');
  });

  it('refuses a wrong password with 28P01 and a hint, without echoing the password', async () => {
    const e = await rejection(connect({ password: 'not-the-password' }));
    expect(e.code).toBe('28P01');
    expect(e.pg?.severity).toBe('FATAL');
    expect(e.hint).toMatch(/password/);
    expect(`${e.message} ${e.hint}`).not.toContain('not-the-password');
  });

  it('derives SCRAM keys once per role secret with a key cache; a new password gets new keys, an old or wrong one is still refused', async () => {
    const cache = new ScramKeyCache();
    const user = `agent_${randomBytes(3).toString('hex')}`;
    await db.pg.exec(`CREATE ROLE ${user} LOGIN PASSWORD 'first-secret'`);
    try {
      const as = (password: string) => connect({ user, password, scramKeys: cache });
      // Three connections, one PBKDF2: each exchange still proves itself with its own nonces, and the
      // cached client key is not consumed by building a proof.
      for (let i = 0; i < 3; i++) expect(types(await query(await as('first-secret'), 'SELECT 1'))).toBe('TDCZ');
      expect(cache.derivations).toBe(1);
      expect(cache.size).toBe(1);

      // Same salt, wrong password: refused, and nothing is kept for it.
      expect((await rejection(as('not-the-secret'))).code).toBe('28P01');
      expect(cache.size).toBe(1);

      // A new password has a new salt: its keys are derived anew; the old password (cached keys and all) no longer logs in.
      await db.pg.exec(`ALTER ROLE ${user} PASSWORD 'second-secret'`);
      expect(types(await query(await as('second-secret'), 'SELECT 1'))).toBe('TDCZ');
      expect((await rejection(as('first-secret'))).code).toBe('28P01');
      expect(types(await query(await as('second-secret'), 'SELECT 1'))).toBe('TDCZ');
      expect(cache.derivations).toBe(4); // first, wrong, second, first-with-the-new-salt
    } finally {
      await db.pg.exec(`DROP ROLE IF EXISTS ${user}`).catch(() => {});
    }
  });

  it('maps a missing database to 3D000', async () => {
    const e = await rejection(connect({ database: 'no_such_db_here' }));
    expect(e.code).toBe('3D000');
    expect(e.hint).toBeDefined();
  });

  it('refuses sslmode=require when the server has no SSL', async () => {
    const e = await rejection(connect({ sslmode: 'require' }));
    expect(e.code).toBe('08001');
    expect(e.message).toMatch(/does not support SSL/);
  });

  it('cancels a running statement with a CancelRequest (57014)', async () => {
    const c = await connect();
    const running = query(c, 'SELECT pg_sleep(10)');
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    await sendCancelRequest(target, c.backendKey.pid, c.backendKey.secret);
    const msgs = await running;
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(types(msgs)).toMatch(/E.*Z$/);
    const err = parseErrorFields(msgs.find((m) => m[0] === 0x45)!.subarray(5));
    expect(err.code).toBe('57014');
  });

  it('reports a closed port as 08001', async () => {
    const port = await freePort();
    const e = await rejection(connectUpstream({ host: '127.0.0.1', port, sslmode: 'disable', database: 'x', user: 'x', password: 'x' }));
    expect(e.code).toBe('08001');
    expect(e.message).toMatch(/refused/);
  });

  it('times out on a server that never answers (08001)', async () => {
    const sockets: net.Socket[] = [];
    const silent = net.createServer((s) => sockets.push(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const port = (silent.address() as net.AddressInfo).port;
      const e = await rejection(connectUpstream({ host: '127.0.0.1', port, sslmode: 'disable', database: 'x', user: 'x', password: 'x', connectTimeoutMs: 300 }));
      expect(e.code).toBe('08001');
      expect(e.message).toMatch(/timed out/);
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });
});

describe('connectUpstream against a scripted server', () => {
  const base = { host: '127.0.0.1', sslmode: 'disable' as const, database: 'clinic', user: 'gw_agent', password: 's3cret-pw' };
  const w = new Writer();
  const auth = (code: number, data?: Buffer) => {
    w.begin(0x52).i32(code);
    if (data) w.bytes(data);
    return w.end().take();
  };
  const READY = Buffer.concat([AUTH_OK, parameterStatus('server_version', '16.4'), backendKeyData(77, Buffer.from('0a0b0c0d', 'hex')), READY_IDLE]);
  const md5 = (s: string | Buffer) => createHash('md5').update(s).digest('hex');

  it('answers MD5, sends the pinned startup parameters, and returns bytes read past ReadyForQuery', async () => {
    const notice = noticeResponse({ severity: 'NOTICE', code: '00000', message: 'early' });
    await using srv = await fakeUpstream(async (c) => {
      expect(Object.fromEntries(c.startup)).toEqual({ application_name: 'x', user: 'gw_agent', database: 'clinic', client_encoding: 'UTF8' });
      const salt = Buffer.from('01020304', 'hex');
      c.socket.write(auth(5, salt));
      const m = await c.next();
      expect(String.fromCharCode(m.type)).toBe('p');
      expect(m.body.toString()).toBe(`md5${md5(Buffer.concat([Buffer.from(md5('s3cret-pwgw_agent')), salt]))}\0`);
      c.socket.write(Buffer.concat([READY, notice]));
    });
    const conn = await connectUpstream({ ...base, port: srv.port, params: { application_name: 'x', user: 'intruder', client_encoding: 'LATIN1' } });
    await srv.done;
    expect(conn.serverVersion).toBe('16.4');
    expect(conn.backendKey).toEqual({ pid: 77, secret: Buffer.from('0a0b0c0d', 'hex') });
    expect(conn.leftover).toEqual(notice);
    conn.socket.destroy();
  });

  it('never sends a cleartext password over an unencrypted connection (28000)', async () => {
    let received: Buffer = Buffer.alloc(0);
    await using srv = await fakeUpstream(async (c) => {
      c.socket.write(auth(3));
      await c.next().catch(() => undefined);
      received = c.received();
    });
    const e = await rejection(connectUpstream({ ...base, port: srv.port }));
    expect(e.code).toBe('28000');
    await srv.done;
    expect(received.toString('latin1')).not.toContain('s3cret-pw');
  });

  /** Plays a SCRAM server up to the final message, then does what `finish` says. */
  const scramServer = (finish: 'bad-signature' | 'skip-final' | 'error-final') =>
    fakeUpstream(async (c) => {
      c.socket.write(auth(10, Buffer.from('SCRAM-SHA-256\0\0')));
      const init = await c.next();
      const mechEnd = init.body.indexOf(0);
      expect(init.body.subarray(0, mechEnd).toString()).toBe('SCRAM-SHA-256');
      const first = init.body.subarray(mechEnd + 5).toString();
      expect(first).toMatch(/^n,,n=,r=/);
      if (finish === 'skip-final') {
        c.socket.write(READY);
        return;
      }
      const nonce = first.slice('n,,n=,r='.length);
      c.socket.write(auth(11, Buffer.from(`r=${nonce}srv,s=${randomBytes(16).toString('base64')},i=4096`)));
      const final = (await c.next()).body.toString();
      expect(final).toMatch(new RegExp(`^c=biws,r=${nonce.replace(/[+/]/g, '\\$&')}srv,p=`));
      c.socket.write(finish === 'error-final' ? auth(12, Buffer.from('e=invalid-proof')) : auth(12, Buffer.from(`v=${randomBytes(32).toString('base64')}`)));
      c.socket.write(READY);
    });

  it.each([
    { desc: 'a wrong server signature', finish: 'bad-signature' as const, want: /incorrect SCRAM server signature/ },
    { desc: 'AuthenticationOk without the SCRAM final step', finish: 'skip-final' as const, want: /without proving/ },
    { desc: 'a SCRAM error from the server', finish: 'error-final' as const, want: /invalid-proof/ },
  ])('refuses $desc (28000)', async ({ finish, want }) => {
    await using srv = await scramServer(finish);
    const e = await rejection(connectUpstream({ ...base, port: srv.port }));
    expect(e.code).toBe('28000');
    expect(e.message).toMatch(want);
  });

  it('maps an ErrorResponse during startup, with a hint', async () => {
    await using srv = await fakeUpstream(async (c) => {
      c.socket.write(errorResponse({ severity: 'FATAL', code: '53300', message: 'sorry, too many clients already' }));
    });
    const e = await rejection(connectUpstream({ ...base, port: srv.port }));
    expect(e).toMatchObject({ code: '53300', pg: { message: 'sorry, too many clients already' } });
    expect(e.hint).toMatch(/max_connections/);
  });

  it('refuses a server that is not PostgreSQL (08P01)', async () => {
    await using srv = await fakeUpstream(async (c) => {
      c.socket.write('HTTP/1.1 400 Bad Request\r\n\r\n');
    });
    const e = await rejection(connectUpstream({ ...base, port: srv.port }));
    expect(e.code).toBe('08P01');
  });
});

describe('connectUpstream over TLS (scripted server, test CA)', () => {
  let dir: string;
  let good: { key: Buffer; cert: Buffer; file: string };
  let wrongName: { key: Buffer; cert: Buffer; file: string };
  const base = { host: '127.0.0.1', database: 'clinic', user: 'gw_agent', password: 's3cret-pw' };

  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'hoop-tls-'));
    const make = (name: string, san: string) => {
      const key = path.join(dir, `${name}.key`);
      const file = path.join(dir, `${name}.crt`);
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', file, '-days', '2', '-subj', '/CN=hoop-test', '-addext', `subjectAltName=${san}`], { stdio: 'ignore' });
      return { key: readFileSync(key), cert: readFileSync(file), file };
    };
    good = make('good', 'IP:127.0.0.1,DNS:localhost');
    wrongName = make('wrong', 'DNS:db.other.example');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** Asks for a cleartext password (allowed only under TLS), checks it, then ReadyForQuery. */
  const server = (cert: { key: Buffer; cert: Buffer }) =>
    fakeUpstream(
      async (c) => {
        c.socket.write(Buffer.from('520000000800000003', 'hex'));
        const m = await c.next();
        expect(m.body.toString()).toBe('s3cret-pw\0');
        c.socket.write(Buffer.concat([AUTH_OK, backendKeyData(1, Buffer.alloc(4)), READY_IDLE]));
      },
      { tls: cert },
    );

  it('connects with verify-full against the configured CA', async () => {
    await using srv = await server(good);
    const conn = await connectUpstream({ ...base, port: srv.port, sslmode: 'verify-full', sslrootcert: good.file });
    await srv.done;
    expect(conn.tls).toBe(true);
    conn.socket.destroy();
  });

  it('connects with require without verifying', async () => {
    await using srv = await server(wrongName);
    const conn = await connectUpstream({ ...base, port: srv.port, sslmode: 'require' });
    expect(conn.tls).toBe(true);
    conn.socket.destroy();
  });

  it.each([
    { desc: 'an untrusted certificate', cert: () => good, rootcert: () => undefined },
    { desc: 'a certificate for another host', cert: () => wrongName, rootcert: () => wrongName.file },
  ])('refuses $desc with verify-full (08001)', async ({ cert, rootcert }) => {
    await using srv = await server(cert());
    const e = await rejection(connectUpstream({ ...base, port: srv.port, sslmode: 'verify-full', sslrootcert: rootcert() }));
    expect(e.code).toBe('08001');
    expect(e.message).toMatch(/TLS/);
  });

  it('reports an unreadable sslrootcert', async () => {
    const e = await rejection(connectUpstream({ ...base, port: 1, sslmode: 'verify-full', sslrootcert: path.join(dir, 'missing.pem') }));
    expect(e.code).toBe('08001');
  });
});
