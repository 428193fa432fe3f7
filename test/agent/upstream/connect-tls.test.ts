// verify-full against a real PostgreSQL 18 with ssl=on and a test certificate (its own instance,
// so the shared worker server keeps its settings).
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgres, type LocalPostgres } from '../../../cli/src/demo/postgres.js';
import { BackendFramer } from '../../../agent/src/pgwire/backend.js';
import { serializeFrontend } from '../../../agent/src/pgwire/frontend.js';
import { connectUpstream } from '../../../agent/src/upstream/connect.js';

describe('connectUpstream over TLS to PostgreSQL 18', () => {
  let dir: string;
  let pg: LocalPostgres;
  let cert: string;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'hoop-pgtls-'));
    chmodSync(dir, 0o755);
    const key = path.join(dir, 'server.key');
    cert = path.join(dir, 'server.crt');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
    // PostgreSQL insists on a key only its own OS user can read; as root it runs as `postgres`.
    if (process.getuid?.() === 0) {
      const uid = Number(execFileSync('id', ['-u', 'postgres']).toString());
      const gid = Number(execFileSync('id', ['-g', 'postgres']).toString());
      chownSync(key, uid, gid);
    }
    chmodSync(key, 0o600);
    pg = await startPostgres({ settings: { ssl: 'on', ssl_cert_file: cert, ssl_key_file: key } });
  }, 120_000);
  afterAll(async () => {
    await pg?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('authenticates with SCRAM over verify-full TLS and runs a query', async () => {
    const conn = await connectUpstream({ host: pg.host, port: pg.port, sslmode: 'verify-full', sslrootcert: cert, database: 'postgres', user: pg.superuser, password: pg.password });
    try {
      expect(conn.tls).toBe(true);
      const f = new BackendFramer();
      const msgs: Buffer[] = [];
      await new Promise<void>((resolve) => {
        conn.socket.on('data', (c: Buffer) => {
          const n = f.push(c);
          for (let i = 0; i < n; i++) msgs.push(Buffer.from(f.message(i)));
          if (msgs.at(-1)?.[0] === 0x5a) resolve();
        });
        conn.socket.write(serializeFrontend({ type: 'Query', sql: 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()' }));
        conn.socket.resume();
      });
      expect(msgs.map((m) => String.fromCharCode(m[0])).join('')).toBe('TDCZ');
      const row = msgs[1];
      expect(row.subarray(-1).toString()).toBe('t'); // pg_stat_ssl.ssl = true
    } finally {
      conn.socket.destroy();
    }
  });
});
