// The peer users already run in front of PostgreSQL: PgBouncer (Debian's package), session pooling, SCRAM
// to the client and to the server, one process. Started only if installed; the arm is skipped otherwise.
import { chmodSync, closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../shared/net.js';
import { run, startService, type Service } from './procs.js';

export interface PgbouncerArm {
  service: Service;
  port: number;
}

/** Why the arm cannot run (a sentence for the report), or undefined when pgbouncer is there. */
export async function pgbouncerMissing(): Promise<string | undefined> {
  const has = await run('sh', ['-c', 'command -v pgbouncer || test -x /usr/sbin/pgbouncer']);
  return has.code === 0 ? undefined : 'pgbouncer is not installed (apt-get install -y pgbouncer): arm skipped';
}

export async function startPgbouncer(pg: { host: string; port: number }, user: string, password: string, database: string): Promise<PgbouncerArm> {
  // pgbouncer refuses to run as root; it drops to `postgres` (-u), so its files must be readable by it.
  const dir = mkdtempSync(path.join(os.tmpdir(), 'hoop-bench-pgbouncer-'));
  chmodSync(dir, 0o755);
  const port = await freePort();
  const ini = path.join(dir, 'pgbouncer.ini');
  writeFileSync(path.join(dir, 'userlist.txt'), `"${user}" "${password}"\n`, { mode: 0o644 });
  writeFileSync(
    ini,
    `[databases]
${database} = host=${pg.host} port=${pg.port} dbname=${database}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = ${path.join(dir, 'userlist.txt')}
pool_mode = session
max_client_conn = 2000
default_pool_size = 600
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
log_stats = 0
`,
    { mode: 0o644 },
  );
  const asRoot = process.getuid?.() === 0;
  const logFd = openSync(path.join(dir, 'pgbouncer.log'), 'a');
  const service = await startService('pgbouncer', '/usr/sbin/pgbouncer', [...(asRoot ? ['-u', 'postgres'] : []), ini], {
    stderrFd: logFd,
    ready: async () => {
      for (;;) {
        const probe = await run('pg_isready', ['-h', '127.0.0.1', '-p', String(port)]);
        if (probe.code === 0) return;
        await new Promise((r) => setTimeout(r, 100));
      }
    },
  });
  closeSync(logFd);
  const stop = service.stop;
  service.stop = async () => {
    await stop();
    rmSync(dir, { recursive: true, force: true });
  };
  return { service, port };
}
