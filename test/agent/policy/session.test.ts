/** Per-connection state: EXECUTE / FETCH / protocol Execute are judged by what they really run. */
import { beforeAll, describe, expect, it } from 'vitest';
import { loadPolicyEngine, type PolicyEngine, type PolicySession } from '../../../agent/src/policy/index.js';

describe('policy session: prepared statements, cursors, portals', () => {
  let engine: PolicyEngine;
  let s: PolicySession;
  beforeAll(async () => {
    engine = await loadPolicyEngine();
  });
  const run = (sql: string) => {
    const d = s.query(sql);
    if (d.action === 'allow') s.apply(d);
    return d;
  };

  it('EXECUTE of a prepared write is held, and shows the real SQL', () => {
    s = engine.session();
    expect(run('PREPARE atk_d(int) AS DELETE FROM notes WHERE id = $1')).toMatchObject({ action: 'allow', rule: 'P5.prepare' });
    const d = run('EXECUTE atk_d(1)');
    expect(d).toMatchObject({ action: 'hold', rule: 'P4.write' });
    expect(d.statements[0].inner?.text).toBe('DELETE FROM notes WHERE id = $1');
    expect(d.reason).toMatch(/atk_d/);
  });

  it('EXECUTE of an unknown name is blocked; a PREPARE that was never applied is unknown', () => {
    s = engine.session();
    expect(run('EXECUTE nope').rule).toBe('P3.prepared.unknown');
    s.query('PREPARE p AS SELECT 1'); // not applied: the session never forwarded it
    expect(run('EXECUTE p').action).toBe('block');
  });

  it('a blocked PREPARE is refused and not recorded', () => {
    s = engine.session();
    expect(run("PREPARE p AS SELECT pg_read_file('/x')").action).toBe('block');
    expect(run('EXECUTE p').rule).toBe('P3.prepared.unknown');
  });

  it('re-using a live name is blocked; after DEALLOCATE / DISCARD ALL it is free', () => {
    s = engine.session();
    run('PREPARE p AS SELECT 1');
    expect(run('PREPARE p AS DELETE FROM notes').rule).toBe('P3.prepared.exists');
    expect(run('EXECUTE p').action).toBe('allow');
    run('DEALLOCATE p');
    run('PREPARE p AS DELETE FROM notes');
    expect(run('EXECUTE p').action).toBe('hold');
    run('DISCARD ALL');
    expect(run('EXECUTE p').action).toBe('block');
  });

  it('one text that prepares and executes sees its own PREPARE', () => {
    s = engine.session();
    expect(s.query('PREPARE p AS DELETE FROM t; EXECUTE p').action).toBe('hold');
    expect(s.query('PREPARE p AS SELECT 1; EXECUTE p; DEALLOCATE p; EXECUTE p').rule).toBe('P3.prepared.unknown');
  });

  it('apply() records only the statements that completed', () => {
    s = engine.session();
    const d = s.query('PREPARE a AS SELECT 1; PREPARE b AS SELECT 2');
    s.apply(d, 1);
    expect(run('EXECUTE a').action).toBe('allow');
    expect(run('EXECUTE b').action).toBe('block');
  });

  it('EXPLAIN ANALYZE EXECUTE runs the prepared statement; plain EXPLAIN EXECUTE does not', () => {
    s = engine.session();
    run('PREPARE w AS UPDATE t SET a = 1');
    expect(run('EXPLAIN ANALYZE EXECUTE w').action).toBe('hold');
    expect(run('EXPLAIN EXECUTE w').action).toBe('allow');
  });

  it('FETCH / MOVE are judged by the cursor; unknown or closed cursors are blocked', () => {
    s = engine.session();
    run('BEGIN');
    expect(run('DECLARE c CURSOR FOR SELECT ssn FROM patients').rule).toBe('P5.cursor');
    expect(run('FETCH ALL FROM c').action).toBe('allow');
    expect(run('MOVE 1 IN c').action).toBe('allow');
    expect(run('FETCH 1 FROM other').rule).toBe('P3.cursor.unknown');
    expect(run('DECLARE c CURSOR FOR SELECT 1').rule).toBe('P3.cursor.exists');
    run('CLOSE c');
    expect(run('FETCH 1 FROM c').action).toBe('block');
  });

  it('a cursor over a held function is held at DECLARE and at FETCH', () => {
    s = engine.session();
    expect(s.query('DECLARE c CURSOR FOR SELECT touch_patient(1)').action).toBe('hold');
    s.apply(s.query('DECLARE c CURSOR FOR SELECT touch_patient(1)')); // approved
    expect(run('FETCH ALL FROM c').action).toBe('hold');
  });

  it('transaction end drops cursors, except WITH HOLD ones', () => {
    s = engine.session();
    run('BEGIN');
    run('DECLARE a CURSOR FOR SELECT 1');
    run('DECLARE b CURSOR WITH HOLD FOR SELECT 2');
    run('COMMIT');
    expect(run('FETCH 1 FROM a').action).toBe('block');
    expect(run('FETCH 1 FROM b').action).toBe('allow');
    expect(run('DECLARE a CURSOR FOR SELECT 3').action).toBe('allow');
    s.endTransaction();
    expect(run('FETCH 1 FROM a').action).toBe('block');
  });

  describe('extended protocol', () => {
    it('Parse runs nothing; Execute of the portal is held (PR-013)', () => {
      s = engine.session();
      const p = s.parse('u', 'UPDATE notes SET body = $1 WHERE id = $2');
      expect(p).toMatchObject({ action: 'allow', rule: 'P5.parse' });
      expect(p.statements[0]).toMatchObject({ action: 'hold', hasParams: true });
      s.apply(p);
      s.apply(s.bind('', 'u'));
      const e = s.execute('');
      expect(e).toMatchObject({ action: 'hold', rule: 'P4.write' });
      expect(e.statements[0].text).toBe('UPDATE notes SET body = $1 WHERE id = $2');
    });

    it('Parse of a blocked statement, or of several statements, is refused', () => {
      s = engine.session();
      expect(s.parse('', 'DROP TABLE x').action).toBe('block');
      expect(s.parse('', 'SELECT 1; SELECT 2').rule).toBe('P3.parse.multi');
      expect(s.parse('', 'SELEC').rule).toBe('P3.parse-error');
    });

    it('Bind of a statement the gateway never saw, Execute of an unknown portal: blocked', () => {
      s = engine.session();
      expect(s.bind('', 'ghost').rule).toBe('P3.prepared.unknown');
      expect(s.execute('ghost').rule).toBe('P3.portal.unknown');
    });

    it('SQL PREPARE then protocol Bind/Execute (PR-001)', () => {
      s = engine.session();
      run('PREPARE stealth(int) AS DELETE FROM canary WHERE id = $1');
      s.apply(s.bind('', 'stealth'));
      expect(s.execute('').action).toBe('hold');
    });

    it('Close and re-Parse a name with different SQL (PR-007)', () => {
      s = engine.session();
      s.apply(s.parse('s1', 'SELECT 1'));
      expect(s.parse('s1', 'DELETE FROM notes').rule).toBe('P3.prepared.exists');
      s.close('S', 's1');
      s.apply(s.parse('s1', 'DELETE FROM notes'));
      s.apply(s.bind('', 's1'));
      expect(s.execute('').action).toBe('hold');
    });

    it('SQL FETCH from a Bind-created portal is judged by the portal’s statement', () => {
      s = engine.session();
      s.apply(s.parse('', 'DELETE FROM notes RETURNING *'));
      s.apply(s.bind('p1', ''));
      expect(run('FETCH ALL FROM p1').action).toBe('hold');
      expect(s.bind('p1', '').rule).toBe('P3.portal.exists');
    });

    it('protocol Execute of a SQL-declared cursor (PR-002) and of a Parse’d EXECUTE', () => {
      s = engine.session();
      run('BEGIN');
      run('DECLARE cur CURSOR FOR SELECT ssn, email FROM patients');
      expect(s.execute('cur').action).toBe('allow');
      run('PREPARE w AS DELETE FROM notes');
      s.apply(s.parse('', 'EXECUTE w'));
      s.apply(s.bind('', ''));
      expect(s.execute('').action).toBe('hold');
    });

    it('an empty Parse is an empty query', () => {
      s = engine.session();
      s.apply(s.parse('', ''));
      s.apply(s.bind('', ''));
      expect(s.execute('')).toMatchObject({ action: 'allow', rule: 'P5.empty' });
    });
  });
});
