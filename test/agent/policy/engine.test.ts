/** The default rule set, one row per class of SECURITY-POLICY.md P2–P5 (table-driven, [TP] style). */
import { beforeAll, describe, expect, it } from 'vitest';
import { loadPolicyEngine, type Action, type PolicyEngine } from '../../../agent/src/policy/index.js';

interface Row { desc: string; sql: string; want: Action; rule?: string }

const BLOCK: Row[] = [
  { desc: 'DROP TABLE', sql: 'DROP TABLE canary', want: 'block', rule: 'P3.ddl.drop' },
  { desc: 'mixed-case keywords', sql: 'dRoP tAbLe CaNaRy', want: 'block', rule: 'P3.ddl.drop' },
  { desc: 'DROP after a read in one text', sql: 'SELECT 1; DROP TABLE x', want: 'block', rule: 'P3.ddl.drop' },
  { desc: 'DROP hidden behind a block comment', sql: '/* SELECT */ DROP /* x */ TABLE t', want: 'block' },
  { desc: 'DROP DATABASE', sql: 'DROP DATABASE gwtest', want: 'block', rule: 'P3.ddl.drop' },
  { desc: 'TRUNCATE', sql: 'TRUNCATE canary', want: 'block', rule: 'P3.truncate' },
  { desc: 'ALTER TABLE RENAME', sql: 'ALTER TABLE patients RENAME TO visits', want: 'block', rule: 'P3.ddl.alter' },
  { desc: 'ALTER TABLE ADD COLUMN', sql: 'ALTER TABLE patients ADD COLUMN x int', want: 'block', rule: 'P3.ddl.alter' },
  { desc: 'ALTER SYSTEM', sql: "ALTER SYSTEM SET log_statement = 'none'", want: 'block', rule: 'P3.ddl.alter' },
  { desc: 'ALTER FUNCTION OWNER', sql: 'ALTER FUNCTION f() OWNER TO x', want: 'block', rule: 'P3.ddl.alter' },
  { desc: 'ALTER SEQUENCE', sql: 'ALTER SEQUENCE s RESTART', want: 'block', rule: 'P3.ddl.alter' },
  { desc: 'ALTER DEFAULT PRIVILEGES', sql: 'ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO PUBLIC', want: 'block', rule: 'P3.grant' },
  { desc: 'GRANT', sql: 'GRANT SELECT ON patients TO PUBLIC', want: 'block', rule: 'P3.grant' },
  { desc: 'GRANT role', sql: 'GRANT phi_admin TO gw_agent WITH ADMIN OPTION', want: 'block', rule: 'P3.grant' },
  { desc: 'REVOKE', sql: 'REVOKE ALL ON patients FROM x', want: 'block', rule: 'P3.grant' },
  { desc: 'CREATE ROLE', sql: "CREATE ROLE x LOGIN SUPERUSER PASSWORD 'x'", want: 'block', rule: 'P3.role' },
  { desc: 'CREATE USER', sql: 'CREATE USER x', want: 'block', rule: 'P3.role' },
  { desc: 'ALTER ROLE', sql: 'ALTER ROLE x SUPERUSER', want: 'block', rule: 'P3.role' },
  { desc: 'DROP ROLE', sql: 'DROP ROLE x', want: 'block' },
  { desc: 'REASSIGN OWNED', sql: 'REASSIGN OWNED BY a TO b', want: 'block', rule: 'P3.owned' },
  { desc: 'DROP OWNED', sql: 'DROP OWNED BY a', want: 'block', rule: 'P3.owned' },
  { desc: 'CREATE FUNCTION', sql: 'CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$', want: 'block', rule: 'P3.ddl.code' },
  { desc: 'CREATE PROCEDURE', sql: 'CREATE PROCEDURE p() LANGUAGE sql AS $$ SELECT 1 $$', want: 'block', rule: 'P3.ddl.code' },
  { desc: 'CREATE OR REPLACE FUNCTION', sql: 'CREATE OR REPLACE FUNCTION get_patient(int) RETURNS int LANGUAGE sql AS $$ SELECT 1 $$', want: 'block', rule: 'P3.ddl.replace' },
  { desc: 'CREATE OR REPLACE VIEW', sql: 'CREATE OR REPLACE VIEW patient_contacts AS SELECT ssn FROM patients', want: 'block', rule: 'P3.ddl.replace' },
  { desc: 'CREATE TRIGGER', sql: 'CREATE TRIGGER t BEFORE UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION f()', want: 'block', rule: 'P3.ddl.code' },
  { desc: 'CREATE RULE', sql: 'CREATE RULE r AS ON SELECT TO t DO INSTEAD SELECT 1', want: 'block', rule: 'P3.ddl.code' },
  { desc: 'CREATE EXTENSION', sql: 'CREATE EXTENSION IF NOT EXISTS file_fdw', want: 'block', rule: 'P3.ddl.code' },
  { desc: 'CREATE LANGUAGE', sql: 'CREATE LANGUAGE plperlu', want: 'block', rule: 'P3.ddl.code' },
  { desc: 'CREATE CAST', sql: 'CREATE CAST (text AS int) WITH FUNCTION f(text)', want: 'block', rule: 'P3.ddl.code' },
  { desc: 'CREATE OPERATOR', sql: 'CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = f)', want: 'block', rule: 'P3.ddl.code' },
  { desc: 'CREATE AGGREGATE', sql: 'CREATE AGGREGATE a (int) (sfunc = f, stype = int)', want: 'block', rule: 'P3.ddl.code' },
  { desc: 'CREATE base TYPE with I/O functions', sql: 'CREATE TYPE t (input = f, output = g)', want: 'block', rule: 'P3.ddl.code' },
  { desc: 'CREATE SERVER', sql: 'CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw', want: 'block', rule: 'P3.ddl.code' },
  { desc: 'CREATE FDW', sql: 'CREATE FOREIGN DATA WRAPPER w', want: 'block', rule: 'P3.ddl.code' },
  { desc: 'CREATE FOREIGN TABLE', sql: 'CREATE FOREIGN TABLE f (a int) SERVER s', want: 'block', rule: 'P3.ddl.code' },
  { desc: 'CREATE USER MAPPING', sql: "CREATE USER MAPPING FOR x SERVER s OPTIONS (password 'p')", want: 'block', rule: 'P3.ddl.code' },
  { desc: 'IMPORT FOREIGN SCHEMA', sql: 'IMPORT FOREIGN SCHEMA public FROM SERVER s INTO x', want: 'block', rule: 'P3.ddl.code' },
  { desc: 'CREATE POLICY', sql: 'CREATE POLICY p ON patients USING (true)', want: 'block', rule: 'P3.ddl.code' },
  { desc: 'CREATE PUBLICATION', sql: 'CREATE PUBLICATION p FOR ALL TABLES', want: 'block', rule: 'P3.ddl.code' },
  { desc: 'CREATE SUBSCRIPTION', sql: "CREATE SUBSCRIPTION s CONNECTION 'x' PUBLICATION p", want: 'block', rule: 'P3.ddl.code' },
  { desc: 'CREATE EVENT TRIGGER', sql: 'CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f()', want: 'block', rule: 'P3.ddl.code' },
  { desc: 'CREATE SCHEMA with a nested GRANT', sql: 'CREATE SCHEMA s GRANT SELECT ON t TO PUBLIC', want: 'block', rule: 'P3.grant' },
  { desc: 'CREATE TABLESPACE', sql: "CREATE TABLESPACE t LOCATION '/tmp/x'", want: 'block', rule: 'P3.ddl.cluster' },
  { desc: 'DO with a tagged body', sql: "DO LANGUAGE plpgsql $b$ BEGIN EXECUTE 'TRUNCATE x'; END $b$", want: 'block', rule: 'P3.do' },
  { desc: 'LOAD', sql: "LOAD 'auto_explain'", want: 'block', rule: 'P3.load' },
  { desc: 'COPY FROM PROGRAM', sql: "COPY canary FROM PROGRAM 'touch /tmp/x'", want: 'block', rule: 'P3.copy.program' },
  { desc: 'COPY TO PROGRAM', sql: "COPY (SELECT ssn FROM patients) TO PROGRAM 'cat'", want: 'block', rule: 'P3.copy.program' },
  { desc: 'COPY FROM server file', sql: "COPY notes (body) FROM '/etc/hostname'", want: 'block', rule: 'P3.copy.file' },
  { desc: 'COPY TO server file', sql: "COPY patients TO '/tmp/out.csv'", want: 'block', rule: 'P3.copy.file' },
  { desc: 'SET ROLE', sql: 'SET ROLE phi_admin', want: 'block', rule: 'P3.set.role' },
  { desc: 'SET ROLE NONE', sql: 'SET ROLE NONE', want: 'block', rule: 'P3.set.role' },
  { desc: 'RESET ROLE', sql: 'RESET ROLE', want: 'block', rule: 'P3.set.role' },
  { desc: 'SET SESSION AUTHORIZATION', sql: 'SET SESSION AUTHORIZATION phi_admin', want: 'block', rule: 'P3.set.role' },
  { desc: 'SET SESSION AUTHORIZATION DEFAULT', sql: 'SET SESSION AUTHORIZATION DEFAULT', want: 'block', rule: 'P3.set.role' },
  { desc: 'SET search_path', sql: 'SET search_path = pg_temp, public', want: 'block', rule: 'P3.set' },
  { desc: 'SET LOCAL of a non-allowlisted setting', sql: 'SET LOCAL search_path = x', want: 'block', rule: 'P3.set' },
  { desc: 'SET default_transaction_read_only', sql: 'SET default_transaction_read_only = off', want: 'block', rule: 'P3.set' },
  { desc: 'SET transaction_read_only', sql: 'SET transaction_read_only = off', want: 'block', rule: 'P3.set' },
  { desc: 'SET a custom GUC', sql: "SET atk.x = 'y'", want: 'block', rule: 'P3.set' },
  { desc: 'RESET ALL', sql: 'RESET ALL', want: 'block', rule: 'P3.set' },
  // pg_dump --data-only sends it; it returns to the connect-time value masking resolves names against.
  { desc: 'RESET search_path', sql: 'RESET search_path', want: 'allow', rule: 'P5.set.limited' },
  { desc: 'SET search_path TO DEFAULT', sql: 'SET search_path TO DEFAULT', want: 'allow', rule: 'P5.set.limited' },
  { desc: 'SET client_encoding', sql: "SET client_encoding TO 'SJIS'", want: 'block', rule: 'P2.lexing' },
  { desc: 'SET NAMES', sql: "SET NAMES 'SJIS'", want: 'block', rule: 'P2.lexing' },
  { desc: 'SET standard_conforming_strings', sql: 'SET standard_conforming_strings = off', want: 'block', rule: 'P2.lexing' },
  { desc: 'BEGIN READ WRITE', sql: 'BEGIN READ WRITE', want: 'block', rule: 'P3.read-write' },
  { desc: 'START TRANSACTION READ WRITE', sql: 'START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE', want: 'block', rule: 'P3.read-write' },
  { desc: 'SET TRANSACTION READ WRITE', sql: 'SET TRANSACTION READ WRITE', want: 'block', rule: 'P3.read-write' },
  { desc: 'SET SESSION CHARACTERISTICS … READ WRITE', sql: 'SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE', want: 'block', rule: 'P3.read-write' },
  { desc: 'PREPARE TRANSACTION', sql: "PREPARE TRANSACTION 'x'", want: 'block', rule: 'P3.2pc' },
  { desc: 'COMMIT PREPARED', sql: "COMMIT PREPARED 'x'", want: 'block', rule: 'P3.2pc' },
  { desc: 'LOCK', sql: 'LOCK TABLE patients IN ACCESS EXCLUSIVE MODE', want: 'block', rule: 'P3.lock' },
  { desc: 'VACUUM FULL', sql: 'VACUUM FULL patients', want: 'block', rule: 'P3.maintenance' },
  { desc: 'ANALYZE', sql: 'ANALYZE patients', want: 'block', rule: 'P3.maintenance' },
  { desc: 'CLUSTER', sql: 'CLUSTER patients USING patients_pkey', want: 'block', rule: 'P3.maintenance' },
  { desc: 'REINDEX', sql: 'REINDEX TABLE patients', want: 'block', rule: 'P3.maintenance' },
  { desc: 'CHECKPOINT', sql: 'CHECKPOINT', want: 'block', rule: 'P3.maintenance' },
  { desc: 'SECURITY LABEL', sql: "SECURITY LABEL ON TABLE patients IS 'x'", want: 'block', rule: 'P3.security-label' },
  // functions, anywhere in the tree
  { desc: 'pg_read_file', sql: "SELECT pg_read_file('/etc/hostname')", want: 'block', rule: 'P3.function.pg_read_file' },
  { desc: 'pg_read_file schema-qualified', sql: "SELECT pg_catalog.pg_read_file('/etc/hostname')", want: 'block', rule: 'P3.function.pg_read_file' },
  { desc: 'pg_read_file via U& identifier', sql: String.raw`SELECT U&"pg\005fread\005ffile"('/etc/hostname')`, want: 'block', rule: 'P3.function.pg_read_file' },
  { desc: 'pg_read_file quoted lower-case', sql: `SELECT "pg_read_file"('/etc/hostname')`, want: 'block' },
  { desc: 'pg_read_file in another schema', sql: "SELECT public.pg_read_file('/etc/hostname')", want: 'block' },
  { desc: 'in LATERAL / CTE / EXISTS', sql: "WITH f AS (SELECT 1) SELECT x FROM f, LATERAL pg_read_binary_file('/x') AS x WHERE EXISTS (SELECT pg_ls_dir('.'))", want: 'block' },
  { desc: 'in ORDER BY', sql: "SELECT 1 ORDER BY pg_ls_waldir() IS NULL", want: 'block' },
  { desc: 'in a column DEFAULT', sql: "CREATE TEMP TABLE t (a text DEFAULT pg_read_file('/x'))", want: 'block' },
  { desc: 'in RETURNING', sql: "DELETE FROM t RETURNING pg_stat_file('/x')", want: 'block' },
  { desc: 'in VALUES', sql: "VALUES (1), (pg_sleep(1))", want: 'block', rule: 'P3.function.pg_sleep' },
  { desc: 'in an INSERT value', sql: "INSERT INTO t VALUES (pg_sleep_for('1s'))", want: 'block' },
  { desc: 'in EXECUTE parameters', sql: "PREPARE p(text) AS SELECT $1; EXECUTE p(pg_read_file('/x'))", want: 'block' },
  { desc: 'in plain EXPLAIN', sql: "EXPLAIN SELECT pg_read_file('/x')", want: 'block' },
  { desc: 'in ROWS FROM', sql: "SELECT * FROM ROWS FROM (dblink('x', 'y') AS (a int))", want: 'block', rule: 'P3.function.dblink' },
  { desc: 'lo_import', sql: "SELECT lo_import('/etc/passwd')", want: 'block' },
  { desc: 'lo_get (large-object read)', sql: 'SELECT lo_get(42)', want: 'block' },
  { desc: 'dblink_exec', sql: "SELECT dblink_exec('x', 'DROP TABLE canary')", want: 'block', rule: 'P3.function.dblink_exec' },
  { desc: 'query_to_xml', sql: "SELECT query_to_xml('SELECT 1', true, false, '')", want: 'block' },
  { desc: 'table_to_xmlschema', sql: "SELECT table_to_xmlschema('patients', true, false, '')", want: 'block' },
  { desc: 'ts_stat', sql: "SELECT * FROM ts_stat('SELECT v FROM t')", want: 'block' },
  { desc: 'ts_rewrite query form', sql: "SELECT ts_rewrite('a'::tsquery, 'SELECT t, s FROM aliases')", want: 'block' },
  { desc: 'set_config', sql: "SELECT set_config('role', 'phi_admin', false)", want: 'block', rule: 'P3.function.set_config' },
  { desc: 'set_config qualified', sql: "SELECT pg_catalog.set_config('search_path', 'x', false)", want: 'block' },
  { desc: 'pg_terminate_backend', sql: 'SELECT pg_terminate_backend(1)', want: 'block' },
  { desc: 'pg_reload_conf', sql: 'SELECT pg_reload_conf()', want: 'block' },
  { desc: 'replication slot', sql: "SELECT pg_create_logical_replication_slot('s', 'test_decoding')", want: 'block' },
  { desc: 'logical decoding', sql: "SELECT * FROM pg_logical_slot_get_changes('s', NULL, NULL)", want: 'block' },
  { desc: 'pg_notify', sql: "SELECT pg_notify('c', ssn) FROM patients", want: 'block' },
  { desc: 'pg_sleep in CASE', sql: "SELECT CASE WHEN true THEN pg_sleep(2) END", want: 'block' },
  { desc: 'CALL of a blocked function', sql: "CALL pg_read_file('/x')", want: 'block' },
  { desc: 'in a COPY … WHERE', sql: 'COPY t FROM STDIN WHERE pg_sleep(1) IS NULL', want: 'block' },
  { desc: 'set_config of a setting outside the allowlist', sql: "SELECT set_config('atk.x', (SELECT string_agg(ssn, ',') FROM patients), false)", want: 'block' },
  { desc: 'set_config with a computed name', sql: "SELECT set_config(k, 'x', false) FROM t", want: 'block' },
  { desc: 'extra blocked by config', sql: 'SELECT my_export()', want: 'block', rule: 'P3.function.my_export' },
  // catalogs exposing values
  { desc: 'pg_stats', sql: "SELECT histogram_bounds FROM pg_stats WHERE tablename = 'patients'", want: 'block', rule: 'P3.catalog.pg_stats' },
  { desc: 'pg_catalog.pg_statistic', sql: 'SELECT * FROM pg_catalog.pg_statistic', want: 'block' },
  { desc: 'pg_stats_ext', sql: 'SELECT * FROM pg_stats_ext', want: 'block' },
  { desc: 'pg_statistic_ext_data', sql: 'SELECT * FROM pg_statistic_ext_data', want: 'block' },
  { desc: 'pg_stat_activity', sql: 'SELECT query FROM pg_stat_activity', want: 'block' },
  { desc: 'pg_stat_statements', sql: 'SELECT query FROM public.pg_stat_statements', want: 'block' },
  { desc: 'pg_largeobject', sql: 'SELECT data FROM pg_largeobject', want: 'block' },
  { desc: 'pg_authid', sql: 'SELECT rolpassword FROM pg_authid', want: 'block' },
  { desc: 'TABLE pg_stats', sql: 'TABLE pg_stats', want: 'block' },
  { desc: 'catalog inside a CTE body of the same name', sql: 'WITH pg_stats AS (SELECT * FROM pg_stats) SELECT * FROM pg_stats', want: 'block' },
  { desc: 'catalog in a sub-select', sql: 'SELECT (SELECT count(*) FROM pg_stats)', want: 'block' },
  // fail closed
  { desc: 'parse error', sql: 'SELEC 1', want: 'block', rule: 'P3.parse-error' },
  { desc: 'NUL byte', sql: 'SELECT 1\0DELETE FROM canary', want: 'block', rule: 'P3.parse-error' },
  { desc: 'unterminated string', sql: "SELECT 'abc", want: 'block', rule: 'P3.parse-error' },
  // search_path: only '' or pg_catalog (anything with a user schema could resolve names differently from masking)
  { desc: 'SET search_path with a user schema after pg_catalog', sql: 'SET search_path = pg_catalog, public', want: 'block', rule: 'P3.set' },
  { desc: 'SET search_path user schema first', sql: 'SET search_path = public, pg_catalog', want: 'block', rule: 'P3.set' },
  { desc: 'SET search_path pg_catalog, pg_temp', sql: 'SET search_path = pg_catalog, pg_temp', want: 'block', rule: 'P3.set' },
  { desc: 'SET search_path to a quoted look-alike', sql: 'SET search_path = "PG_CATALOG"', want: 'block', rule: 'P3.set' },
  { desc: 'SET search_path list in one string', sql: "SET search_path = 'pg_catalog, public'", want: 'block', rule: 'P3.set' },
  { desc: 'SET search_path TO DEFAULT', sql: 'SET search_path TO DEFAULT', want: 'allow', rule: 'P5.set.limited' },
  { desc: 'SET search_path FROM CURRENT', sql: 'SET search_path FROM CURRENT', want: 'block', rule: 'P3.set' },
  { desc: 'set_config search_path pg_temp first', sql: "SELECT pg_catalog.set_config('search_path', 'pg_temp, pg_catalog', false)", want: 'block', rule: 'P3.function.set_config' },
  { desc: 'set_config search_path with a user schema', sql: "SELECT set_config('search_path', 'pg_catalog, public', false)", want: 'block' },
  { desc: 'set_config search_path quoted look-alike', sql: `SELECT set_config('search_path', '"PG_CATALOG"', false)`, want: 'block' },
  { desc: 'set_config search_path $user', sql: `SELECT set_config('search_path', '"$user"', false)`, want: 'block' },
  { desc: 'set_config search_path computed', sql: "SELECT set_config('search_path', (SELECT string_agg(nspname, ',') FROM pg_namespace), false)", want: 'block' },
  { desc: 'set_config search_path parameter', sql: "SELECT set_config('search_path', $1, false)", want: 'block' },
  { desc: 'set_config search_path in another schema', sql: "SELECT public.set_config('search_path', '', false)", want: 'block' },
  // value-limited settings
  { desc: 'RESET row_security', sql: 'RESET row_security', want: 'block', rule: 'P3.set' },
  { desc: 'SET row_security to a list', sql: 'SET row_security = off, on', want: 'block', rule: 'P3.set' },
  { desc: 'SET restrict_nonsystem_relation_kind empty', sql: "SET restrict_nonsystem_relation_kind = ''", want: 'block', rule: 'P3.set' },
  { desc: 'SET transaction_read_only off', sql: 'SET transaction_read_only = off', want: 'block', rule: 'P3.set' },
  { desc: 'SET default_transaction_read_only false', sql: 'SET default_transaction_read_only TO false', want: 'block', rule: 'P3.set' },
  { desc: 'set_config transaction_read_only off', sql: "SELECT set_config('transaction_read_only', 'off', true)", want: 'block' },
  { desc: 'SET TRANSACTION … READ WRITE', sql: 'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE', want: 'block', rule: 'P3.read-write' },
  { desc: 'BEGIN … DEFERRABLE, READ WRITE', sql: 'BEGIN ISOLATION LEVEL SERIALIZABLE, DEFERRABLE, READ WRITE', want: 'block', rule: 'P3.read-write' },
  // set_config of an allowlisted setting with a computed value carries data into SHOW / pg_stat_activity (MK-032 class)
  { desc: 'set_config application_name from a column', sql: "SELECT set_config('application_name', (SELECT string_agg(ssn, ',') FROM patients), false)", want: 'block', rule: 'P3.function.set_config' },
  { desc: 'set_config application_name from an expression', sql: "SELECT set_config('application_name', ssn, false) FROM patients", want: 'block', rule: 'P3.function.set_config' },
  { desc: 'set_config statement_timeout concatenated', sql: "SELECT set_config('statement_timeout', '5' || 's', false)", want: 'block' },
  // pg_dump's `set_config(name, …) FROM pg_settings WHERE name = …`: only that exact shape, only that setting
  { desc: 'pg_settings form for role', sql: "SELECT set_config(name, 'phi_admin', false) FROM pg_settings WHERE name = 'role'", want: 'block' },
  { desc: 'pg_settings form loosening', sql: "SELECT set_config(name, '', false) FROM pg_settings WHERE name = 'restrict_nonsystem_relation_kind'", want: 'block' },
  { desc: 'pg_settings form with OR', sql: "SELECT set_config(name, 'view', false) FROM pg_settings WHERE name = 'restrict_nonsystem_relation_kind' OR true", want: 'block' },
  { desc: 'pg_settings form with a join', sql: "SELECT set_config(name, 'view', false) FROM pg_settings, r WHERE name = 'restrict_nonsystem_relation_kind'", want: 'block' },
  { desc: 'pg_settings form with a CTE', sql: "WITH x AS (SELECT 1) SELECT set_config(name, 'view', false) FROM pg_settings WHERE name = 'restrict_nonsystem_relation_kind'", want: 'block' },
  { desc: 'pg_settings form, nested call', sql: "SELECT set_config(name, 'view', false), (SELECT set_config(name, 'phi_admin', false) FROM r) FROM pg_settings WHERE name = 'restrict_nonsystem_relation_kind'", want: 'block' },
  { desc: 'pg_settings form, nested call in WHERE', sql: "SELECT set_config(name, 'view', false) FROM pg_settings WHERE name = 'restrict_nonsystem_relation_kind' AND (SELECT set_config(name, 'phi_admin', false) FROM r) IS NULL", want: 'block' },
  { desc: 'pg_settings form from another table', sql: "SELECT set_config(name, 'phi_admin', false) FROM roles WHERE name = 'restrict_nonsystem_relation_kind'", want: 'block' },
  // LOCK: only ACCESS SHARE
  { desc: 'LOCK default mode', sql: 'BEGIN; LOCK patients', want: 'block', rule: 'P3.lock' },
  { desc: 'LOCK ROW SHARE', sql: 'LOCK TABLE patients IN ROW SHARE MODE', want: 'block', rule: 'P3.lock' },
  { desc: 'LOCK SHARE', sql: 'LOCK TABLE patients IN SHARE MODE', want: 'block', rule: 'P3.lock' },
  { desc: 'LOCK EXCLUSIVE', sql: 'LOCK TABLE patients IN EXCLUSIVE MODE', want: 'block', rule: 'P3.lock' },
  { desc: 'LOCK SHARE UPDATE EXCLUSIVE', sql: 'LOCK TABLE patients IN SHARE UPDATE EXCLUSIVE MODE', want: 'block', rule: 'P3.lock' },
  { desc: 'LOCK ACCESS SHARE of a blocked catalog', sql: 'LOCK TABLE pg_statistic IN ACCESS SHARE MODE', want: 'block', rule: 'P3.catalog.pg_statistic' },
];

const HOLD: Row[] = [
  { desc: 'INSERT', sql: "INSERT INTO notes (body) VALUES ('x')", want: 'hold', rule: 'P4.write' },
  { desc: 'UPDATE', sql: 'UPDATE notes SET body = body', want: 'hold', rule: 'P4.write' },
  { desc: 'DELETE', sql: 'DELETE FROM notes WHERE id = 1', want: 'hold', rule: 'P4.write' },
  { desc: 'MERGE', sql: 'MERGE INTO notes n USING (SELECT 1 AS id) s ON n.id = s.id WHEN MATCHED THEN DELETE', want: 'hold', rule: 'P4.write' },
  { desc: 'DELETE in a CTE under SELECT', sql: 'WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d', want: 'hold', rule: 'P4.write' },
  { desc: 'UPDATE in a second CTE', sql: 'WITH a AS (SELECT 1), b AS (UPDATE t SET x = 1 RETURNING *) SELECT * FROM a', want: 'hold' },
  { desc: 'INSERT … SELECT', sql: 'INSERT INTO t SELECT * FROM patients', want: 'hold' },
  { desc: 'write after a read (E-string quote)', sql: String.raw`SELECT E'\''; DELETE FROM canary_truncate; --'`, want: 'hold' },
  { desc: 'write after a dollar-quoted quote', sql: "SELECT $q$ ' $q$; UPDATE canary_alter SET v = 'owned'; --'", want: 'hold' },
  { desc: 'write inside BEGIN … ROLLBACK', sql: 'BEGIN; DELETE FROM notes; ROLLBACK', want: 'hold' },
  { desc: 'SELECT INTO', sql: 'SELECT ssn INTO TEMP x FROM patients', want: 'hold', rule: 'P4.write.select-into' },
  { desc: 'CREATE TABLE AS', sql: 'CREATE TABLE x AS SELECT 1', want: 'hold', rule: 'P4.write.ctas' },
  { desc: 'CREATE MATERIALIZED VIEW', sql: 'CREATE MATERIALIZED VIEW m AS SELECT 1', want: 'hold', rule: 'P4.write.matview' },
  { desc: 'REFRESH MATERIALIZED VIEW', sql: 'REFRESH MATERIALIZED VIEW mv_patient_ids', want: 'hold', rule: 'P4.write.matview' },
  { desc: 'COPY FROM STDIN', sql: 'COPY notes (body) FROM STDIN', want: 'hold', rule: 'P4.write.copy-in' },
  { desc: 'COPY TO STDOUT', sql: 'COPY patients TO STDOUT WITH (FORMAT binary)', want: 'hold', rule: 'P4.export' },
  { desc: 'COPY (query) TO STDOUT', sql: 'COPY (SELECT id FROM patients) TO STDOUT', want: 'hold', rule: 'P4.export' },
  { desc: 'CALL', sql: 'CALL purge_patient(1)', want: 'hold', rule: 'P4.call' },
  { desc: 'EXPLAIN ANALYZE of a DELETE', sql: 'EXPLAIN ANALYZE DELETE FROM canary WHERE id = 1', want: 'hold', rule: 'P4.write' },
  { desc: 'EXPLAIN (ANALYZE) of a DELETE', sql: 'EXPLAIN (ANALYZE, BUFFERS) DELETE FROM canary', want: 'hold' },
  { desc: 'EXPLAIN (ANALYZE on) of an UPDATE', sql: 'EXPLAIN (ANALYZE on) UPDATE t SET a = 1', want: 'hold' },
  { desc: 'user-defined function', sql: 'SELECT touch_patient(3)', want: 'hold', rule: 'P4.function.unknown' },
  { desc: 'user-defined function in FROM', sql: 'SELECT * FROM get_patient(1)', want: 'hold', rule: 'P4.function.unknown' },
  { desc: 'quoted upper-case name is not the built-in', sql: `SELECT "PG_READ_FILE"('/x')`, want: 'hold', rule: 'P4.function.unknown' },
  { desc: 'built-in name in another schema', sql: "SELECT public.lower('x')", want: 'hold', rule: 'P4.function.unknown' },
  { desc: 'user-defined operator', sql: 'SELECT 1 OPERATOR(public.+) 2', want: 'hold', rule: 'P4.function.unknown' },
  { desc: 'extension TABLESAMPLE method', sql: 'SELECT * FROM t TABLESAMPLE system_rows(10)', want: 'hold' },
  { desc: 'nextval', sql: "SELECT nextval('patients_id_seq')", want: 'hold', rule: 'P4.function.sequence' },
  { desc: 'setval', sql: "SELECT setval('patients_id_seq', 1, false)", want: 'hold', rule: 'P4.function.sequence' },
  { desc: 'lo_from_bytea', sql: "SELECT lo_from_bytea(0, '\\x41'::bytea)", want: 'hold', rule: 'P4.function.lo-write' },
  { desc: 'NOTIFY', sql: "NOTIFY c, 'x'", want: 'hold', rule: 'P4.notify' },
  { desc: 'CREATE TABLE', sql: 'CREATE TABLE t (a int)', want: 'hold', rule: 'P4.ddl' },
  { desc: 'CREATE TEMP TABLE', sql: 'CREATE TEMP TABLE t (a int)', want: 'hold', rule: 'P4.ddl' },
  { desc: 'CREATE INDEX', sql: 'CREATE INDEX i ON t (a)', want: 'hold', rule: 'P4.ddl' },
  { desc: 'CREATE VIEW', sql: 'CREATE VIEW v AS SELECT 1', want: 'hold', rule: 'P4.ddl' },
  { desc: 'CREATE SEQUENCE', sql: 'CREATE SEQUENCE s', want: 'hold', rule: 'P4.ddl' },
  { desc: 'CREATE TYPE (composite)', sql: 'CREATE TYPE t AS (a int)', want: 'hold', rule: 'P4.ddl' },
  { desc: 'CREATE SCHEMA', sql: 'CREATE SCHEMA s CREATE TABLE t (a int)', want: 'hold', rule: 'P4.ddl' },
  { desc: 'COMMENT ON', sql: "COMMENT ON TABLE t IS 'x'", want: 'hold', rule: 'P4.ddl.comment' },
];

const ALLOW: Row[] = [
  { desc: 'SELECT', sql: 'SELECT id, full_name FROM patients WHERE id = 1', want: 'allow', rule: 'P5.read' },
  { desc: 'VALUES', sql: 'VALUES (1), (2)', want: 'allow' },
  { desc: 'TABLE', sql: 'TABLE notes', want: 'allow' },
  { desc: 'SHOW', sql: 'SHOW search_path', want: 'allow', rule: 'P5.show' },
  { desc: 'SHOW ALL', sql: 'SHOW ALL', want: 'allow' },
  { desc: 'plain EXPLAIN of a DELETE', sql: 'EXPLAIN DELETE FROM canary', want: 'allow', rule: 'P5.explain' },
  { desc: 'EXPLAIN (ANALYZE false) of a DELETE', sql: 'EXPLAIN (ANALYZE false) DELETE FROM canary', want: 'allow', rule: 'P5.explain' },
  { desc: 'EXPLAIN ANALYZE of a read', sql: 'EXPLAIN ANALYZE SELECT * FROM patients', want: 'allow' },
  { desc: 'literal that looks like DDL', sql: "SELECT 'DROP TABLE x'", want: 'allow' },
  { desc: 'keywords in literals and quoted identifiers', sql: `SELECT 'please DROP TABLE patients; TRUNCATE x' AS note, diagnosis AS "delete" FROM patients WHERE id = 1`, want: 'allow' },
  { desc: 'comments that look like DDL', sql: '/* DROP TABLE x; */ SELECT 1 -- ; DELETE FROM t', want: 'allow' },
  { desc: 'identifiers named like keywords', sql: 'SELECT "drop", "truncate" FROM "table" AS "grant"', want: 'allow' },
  { desc: 'function name inside a literal', sql: "SELECT 'pg_read_file(''/etc/passwd'')'", want: 'allow' },
  { desc: 'SELECT FOR SHARE', sql: 'SELECT id, diagnosis FROM patients WHERE id = 1 FOR SHARE', want: 'allow' },
  { desc: 'SELECT FOR UPDATE', sql: 'SELECT id FROM patients WHERE id = 1 FOR UPDATE', want: 'allow' },
  { desc: 'safe built-ins', sql: "SELECT count(*), lower(full_name), coalesce(null, 1), now(), date_trunc('day', now()), row_to_json(p), to_char(dob, 'YYYY') FROM patients p", want: 'allow' },
  { desc: 'SQL-syntax built-ins', sql: "SELECT extract(year FROM now()), substring('abc' FROM 1 FOR 2), trim(' a '), position('a' IN 'cat'), overlay('abc' PLACING 'x' FROM 1 FOR 1), now() AT TIME ZONE 'UTC'", want: 'allow' },
  { desc: 'generate_series in FROM', sql: 'SELECT g FROM generate_series(1, 10) g', want: 'allow' },
  { desc: 'currval', sql: "SELECT currval('s')", want: 'allow' },
  { desc: 'ts_rewrite 3-argument form', sql: "SELECT ts_rewrite('a & b'::tsquery, 'a'::tsquery, 'c'::tsquery)", want: 'allow' },
  { desc: 'TABLESAMPLE bernoulli', sql: 'SELECT * FROM patients TABLESAMPLE bernoulli(10)', want: 'allow' },
  { desc: 'CTE named like a table', sql: 'WITH patients AS (SELECT 1 AS id) SELECT id FROM patients', want: 'allow' },
  { desc: 'BEGIN', sql: 'BEGIN', want: 'allow', rule: 'P5.transaction' },
  { desc: 'BEGIN READ ONLY', sql: 'BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY', want: 'allow' },
  { desc: 'SET TRANSACTION ISOLATION LEVEL', sql: 'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE', want: 'allow' },
  { desc: 'savepoints', sql: 'BEGIN; SAVEPOINT a; RELEASE a; ROLLBACK TO SAVEPOINT a; COMMIT', want: 'allow' },
  { desc: 'LISTEN / UNLISTEN', sql: 'LISTEN c; UNLISTEN *', want: 'allow', rule: 'P5.listen' },
  { desc: 'DISCARD ALL', sql: 'DISCARD ALL', want: 'allow', rule: 'P5.discard' },
  { desc: 'SET statement_timeout', sql: "SET statement_timeout = '5s'", want: 'allow', rule: 'P5.set' },
  { desc: 'SET LOCAL lock_timeout', sql: 'SET LOCAL lock_timeout = 1000', want: 'allow' },
  { desc: 'SET "DateStyle" (quoted, mixed case)', sql: `SET "DateStyle" = 'ISO'`, want: 'allow' },
  { desc: 'SET TIME ZONE', sql: "SET TIME ZONE 'UTC'", want: 'allow' },
  { desc: 'SET application_name', sql: "SET application_name = 'etl'", want: 'allow' },
  { desc: 'set_config of an allowlisted setting', sql: "SELECT set_config('statement_timeout', '5s', false)", want: 'allow', rule: 'P5.read' },
  { desc: 'RESET statement_timeout', sql: 'RESET statement_timeout', want: 'allow' },
  { desc: 'PREPARE / EXECUTE / DEALLOCATE a read', sql: 'PREPARE p(int) AS SELECT $1; EXECUTE p(1); DEALLOCATE p', want: 'allow' },
  { desc: 'DECLARE / FETCH / MOVE / CLOSE', sql: 'BEGIN; DECLARE c CURSOR FOR SELECT 1; FETCH 1 FROM c; MOVE c; CLOSE c; COMMIT', want: 'allow' },
  { desc: 'empty text', sql: '', want: 'allow', rule: 'P5.empty' },
  { desc: 'only semicolons and comments', sql: ';; /* x */ ;', want: 'allow', rule: 'P5.empty' },
  { desc: 'allowlisted user function', sql: 'SELECT * FROM get_patient(1)', want: 'allow' },
  // pg_dump --schema-only's session setup
  { desc: "set_config search_path ''", sql: "SELECT pg_catalog.set_config('search_path', '', false);", want: 'allow', rule: 'P5.read' },
  { desc: 'set_config search_path pg_catalog', sql: "SELECT set_config('search_path', ' PG_Catalog ', true)", want: 'allow', rule: 'P5.read' },
  { desc: "SET search_path = ''", sql: "SET search_path = ''", want: 'allow', rule: 'P5.set.limited' },
  { desc: 'SET search_path TO pg_catalog', sql: 'SET LOCAL search_path TO pg_catalog', want: 'allow', rule: 'P5.set.limited' },
  { desc: 'SET synchronize_seqscans', sql: 'SET synchronize_seqscans TO off', want: 'allow', rule: 'P5.set.limited' },
  { desc: 'SET row_security = off', sql: 'SET row_security = off', want: 'allow', rule: 'P5.set.limited' },
  { desc: 'set_config row_security', sql: "SELECT set_config('row_security', 'off', false)", want: 'allow' },
  { desc: 'SET restrict_nonsystem_relation_kind', sql: "SET restrict_nonsystem_relation_kind = 'view, foreign-table'", want: 'allow', rule: 'P5.set.limited' },
  { desc: 'pg_dump restrict_nonsystem_relation_kind', sql: "SELECT set_config(name, 'view, foreign-table', false) FROM pg_settings WHERE name = 'restrict_nonsystem_relation_kind'", want: 'allow', rule: 'P5.read' },
  { desc: 'SET TRANSACTION REPEATABLE READ, READ ONLY', sql: 'SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY', want: 'allow', rule: 'P5.set' },
  { desc: 'SET TRANSACTION SERIALIZABLE, READ ONLY, DEFERRABLE', sql: 'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE', want: 'allow', rule: 'P5.set' },
  { desc: 'BEGIN SERIALIZABLE, READ ONLY, DEFERRABLE', sql: 'BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE', want: 'allow', rule: 'P5.transaction' },
  { desc: 'SET transaction_isolation', sql: "SET transaction_isolation = 'repeatable read'", want: 'allow', rule: 'P5.set.limited' },
  { desc: 'SET transaction_read_only on', sql: 'SET transaction_read_only = on', want: 'allow', rule: 'P5.set.limited' },
  { desc: 'LOCK IN ACCESS SHARE MODE', sql: 'LOCK TABLE public.patients IN ACCESS SHARE MODE', want: 'allow', rule: 'P5.lock.access-share' },
  { desc: 'LOCK IN ACCESS SHARE MODE in a transaction', sql: 'BEGIN; LOCK TABLE public.patients IN ACCESS SHARE MODE; COMMIT', want: 'allow' },
  { desc: 'LOCK ONLY … ACCESS SHARE NOWAIT', sql: 'LOCK TABLE ONLY patients, visits IN ACCESS SHARE MODE NOWAIT', want: 'allow' },
  { desc: 'set_config application_name from a parameter', sql: "SELECT set_config('application_name', $1, false)", want: 'allow', rule: 'P5.read' },
  // psql \d family catalog helpers
  { desc: 'psql \\d partition helpers', sql: "SELECT pg_catalog.pg_partition_ancestors('16411'), pg_catalog.pg_partition_root('16411'), pg_catalog.pg_get_partkeydef('16411'::pg_catalog.oid), pg_catalog.pg_get_partition_constraintdef('16411')", want: 'allow' },
  { desc: 'psql \\d statistics objects', sql: 'SELECT pg_catalog.pg_get_statisticsobjdef_columns(oid), pg_catalog.pg_statistics_obj_is_visible(oid) FROM pg_catalog.pg_statistic_ext', want: 'allow' },
  { desc: 'psql \\dP partition tree', sql: "SELECT sum(pg_catalog.pg_table_size(ppt.relid)) FROM pg_catalog.pg_partition_tree('16411') ppt", want: 'allow' },
  { desc: 'pg_dump acldefault', sql: "SELECT n.oid, acldefault('n', n.nspowner) FROM pg_namespace n", want: 'allow' },
];

describe('policy engine: default rules', () => {
  let engine: PolicyEngine;
  let configured: PolicyEngine;
  beforeAll(async () => {
    engine = await loadPolicyEngine({ extraBlockedFunctions: ['my_export'] });
    configured = await loadPolicyEngine({ allowedFunctions: ['public.get_patient'], extraBlockedFunctions: ['my_export'] });
  });

  it.each([...BLOCK, ...HOLD, ...ALLOW])('$want: $desc', ({ sql, want, rule, desc }) => {
    const d = (desc === 'allowlisted user function' ? configured : engine).classify(sql);
    expect({ action: d.action, rule: rule ? d.rule : undefined }).toEqual({ action: want, rule });
    expect(d.reason.length).toBeGreaterThan(5);
  });

  it('blocks a DROP behind 2 MB of comment padding', () => {
    expect(engine.classify(`/*${' '.repeat(2_000_000)}*/ DROP TABLE canary`).action).toBe('block');
  });

  it('blocks absurdly deep nesting instead of giving up open', () => {
    for (const n of [1000, 3000, 10_000]) {
      expect(engine.classify(`SELECT ${'lower('.repeat(n)}'x'${')'.repeat(n)}`).action).toBe('block');
      expect(engine.classify(`SELECT ${'(SELECT '.repeat(n)}1${')'.repeat(n)}`).action).toBe('block');
    }
  });

  it('reports facts: relations, functions, kind, readOnly, locksRows, params', () => {
    const d = engine.classify('SELECT lower(p.full_name) FROM public.patients p JOIN notes n ON n.id = p.id FOR SHARE');
    expect(d.statements[0]).toMatchObject({
      kind: 'SelectStmt', relations: ['public.patients', 'notes'], functions: ['lower'], readOnly: false, locksRows: true,
    });
    const w = engine.classify('WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d');
    expect(w.statements[0].relations).toEqual(['t']);
    expect(w.statements[0].readOnly).toBe(false);
    expect(engine.classify('SELECT $1::int').statements[0]).toMatchObject({ hasParams: true, readOnly: true });
    // plain EXPLAIN and PREPARE run nothing, so PostgreSQL accepts them in a READ ONLY transaction
    expect(engine.classify('EXPLAIN DELETE FROM t').statements[0].readOnly).toBe(true);
    expect(engine.classify('PREPARE p AS DELETE FROM t').statements[0]).toMatchObject({ readOnly: true, preparedName: 'p', inner: { readOnly: false, text: 'DELETE FROM t' } });
    expect(engine.classify('CALL p(1)').statements[0].functions).toEqual(['p']);
  });

  it('gives each statement of a multi-statement text its own text and verdict', () => {
    const d = engine.classify("SELECT 'é'; DELETE FROM t; DROP TABLE x");
    expect(d.statements.map((s) => [s.text, s.action])).toEqual([["SELECT 'é'", 'allow'], ['DELETE FROM t', 'hold'], ['DROP TABLE x', 'block']]);
    expect(d.action).toBe('block');
  });

  it('approvalFreeFingerprints turn a hold into an allow, never a block', async () => {
    const { fingerprint } = await import('libpg-query');
    const fp = await fingerprint("UPDATE jobs SET done = true WHERE id = 1");
    const e = await loadPolicyEngine({ approvalFreeFingerprints: [fp, await fingerprint('DROP TABLE x')] });
    expect(e.classify('UPDATE jobs SET done = true WHERE id = 42')).toMatchObject({ action: 'allow', rule: 'P4.approval-free' });
    expect(e.classify('UPDATE jobs SET done = false WHERE id = 1 AND 1 = 1').action).toBe('hold');
    expect(e.classify('DROP TABLE x').action).toBe('block');
  });
});
