/**
 * The default rule set (SECURITY-POLICY.md P2–P5), one verdict per statement node, function call or
 * relation, each with the reason a psql user reads. Statement types not listed here are blocked:
 * the allowlist of reads is explicit, so a statement type added by a future grammar fails closed.
 */
import {
  BLOCKED_FUNCTIONS, BLOCKED_RELATIONS, HELD_FUNCTIONS, SAFE_FUNCTIONS, SAFE_TABLESAMPLE, SETTABLE, SETTABLE_VALUES, matchRule, splitSettingList,
} from './functions.js';
import { constantType, constantValue, intConstant, stringConstant } from './constants.js';
import type { FunctionRef, RelationRef } from './walk.js';

export type Action = 'allow' | 'block' | 'hold';

export interface Verdict {
  action: Action;
  /** the rule that fired, e.g. `P3.ddl.drop`, `P4.write`, `P3.function.pg_read_file` */
  rule: string;
  /** one sentence for the psql user */
  reason: string;
}

const SEVERITY: Record<Action, number> = { allow: 0, hold: 1, block: 2 };

/** The stricter of two verdicts (block > hold > allow); on a tie the first one stays. */
export function stricter(a: Verdict, b: Verdict): Verdict {
  return SEVERITY[b.action] > SEVERITY[a.action] ? b : a;
}

/** Just the verdict part of anything that carries one (facts, decisions). */
export function asVerdict(v: Verdict): Verdict {
  return { action: v.action, rule: v.rule, reason: v.reason };
}

export const allow = (rule: string, reason: string): Verdict => ({ action: 'allow', rule, reason });
export const hold = (rule: string, reason: string): Verdict => ({ action: 'hold', rule, reason });
export const block = (rule: string, reason: string): Verdict => ({ action: 'block', rule, reason });

type Body = Record<string, unknown>;

/** LockStmt.mode of ACCESS SHARE (lockdefs.h AccessShareLock) */
const ACCESS_SHARE_LOCK = 1;

const DDL_CODE = 'creates code that would run later, out of sight of the gateway';
const HELD_DDL = 'changes the schema and needs approval';
const MAINTENANCE = 'takes heavy locks and is not a read';

/** Verdict for one statement node on its own (what it contains is judged by the walk). */
export function statementVerdict(kind: string, body: Body): Verdict {
  if (body.replace === true) return block('P3.ddl.replace', 'CREATE OR REPLACE can redefine objects other sessions already trust.');
  switch (kind) {
    // ── P5 reads ────────────────────────────────────────────────────────────────────────────────
    case 'SelectStmt':
      // SELECT … INTO creates and fills a table.
      if (body.intoClause) return hold('P4.write.select-into', 'SELECT INTO creates a table and needs approval.');
      return allow('P5.read', 'Read-only query.');
    case 'VariableShowStmt':
      return allow('P5.show', 'SHOW only reads a setting.');
    case 'FetchStmt':
      return allow('P5.cursor', 'FETCH/MOVE of a cursor is judged by the cursor’s query.');
    case 'ClosePortalStmt':
    case 'DeallocateStmt':
      return allow('P5.cursor', 'Closing a cursor or prepared statement changes no data.');
    case 'ExecuteStmt':
      return allow('P5.execute', 'EXECUTE is judged by the prepared statement.');
    case 'ListenStmt':
    case 'UnlistenStmt':
      return allow('P5.listen', 'LISTEN/UNLISTEN only subscribe this session.');
    case 'DiscardStmt':
      // DISCARD ALL resets the role to the session user: the gateway's own login, never a stronger one.
      return allow('P5.discard', 'DISCARD only drops session state.');
    case 'ConstraintsSetStmt':
      return allow('P5.transaction', 'SET CONSTRAINTS only affects this transaction.');
    case 'TransactionStmt':
      return transactionVerdict(body);
    case 'VariableSetStmt':
      return setVerdict(body);
    // Wrappers: the engine judges their inner statement.
    case 'ExplainStmt':
    case 'PrepareStmt':
    case 'DeclareCursorStmt':
      return allow('P5.read', 'Judged by the inner statement.');

    // ── P4 held ─────────────────────────────────────────────────────────────────────────────────
    case 'InsertStmt':
    case 'UpdateStmt':
    case 'DeleteStmt':
    case 'MergeStmt':
      return hold('P4.write', `${kind.replace('Stmt', '').toUpperCase()} changes data and needs approval.`);
    case 'CreateTableAsStmt':
      return body.objtype === 'OBJECT_MATVIEW'
        ? hold('P4.write.matview', 'CREATE MATERIALIZED VIEW copies data and needs approval.')
        : hold('P4.write.ctas', 'CREATE TABLE AS copies data and needs approval.');
    case 'RefreshMatViewStmt':
      return hold('P4.write.matview', 'REFRESH MATERIALIZED VIEW rewrites data and needs approval.');
    case 'CallStmt':
      return hold('P4.call', 'CALL runs a procedure that may write and needs approval.');
    case 'NotifyStmt':
      // NOTIFY is refused in read-only transactions: a side effect on other sessions, not a read.
      return hold('P4.notify', 'NOTIFY signals other sessions and needs approval.');
    case 'CopyStmt':
      return copyVerdict(body);
    case 'CreateStmt':
    case 'IndexStmt':
    case 'ViewStmt':
    case 'CreateSeqStmt':
    case 'CompositeTypeStmt':
    case 'CreateEnumStmt':
    case 'CreateRangeStmt':
    case 'CreateDomainStmt':
    case 'CreateSchemaStmt':
    case 'CreateStatsStmt':
      return hold('P4.ddl', `${kind.replace(/Stmt$/, '')} ${HELD_DDL}.`);
    case 'CommentStmt':
      return hold('P4.ddl.comment', 'COMMENT ON changes the catalog and needs approval.');
    case 'DefineStmt':
      return defineVerdict(body);

    // ── P3 blocked ──────────────────────────────────────────────────────────────────────────────
    case 'DropStmt':
    case 'DropSubscriptionStmt':
    case 'DropTableSpaceStmt':
    case 'DropUserMappingStmt':
    case 'DropdbStmt':
      return block('P3.ddl.drop', 'DROP is not allowed through the gateway.');
    case 'TruncateStmt':
      return block('P3.truncate', 'TRUNCATE is not allowed through the gateway.');
    case 'GrantStmt':
    case 'GrantRoleStmt':
    case 'AlterDefaultPrivilegesStmt':
      return block('P3.grant', 'GRANT/REVOKE changes privileges and is not allowed.');
    case 'CreateRoleStmt':
    case 'AlterRoleStmt':
    case 'AlterRoleSetStmt':
    case 'DropRoleStmt':
      return block('P3.role', 'Role DDL is not allowed through the gateway.');
    case 'ReassignOwnedStmt':
    case 'DropOwnedStmt':
      return block('P3.owned', 'REASSIGN/DROP OWNED is not allowed through the gateway.');
    case 'CreateFunctionStmt':
    case 'CreateTrigStmt':
    case 'RuleStmt':
    case 'CreateExtensionStmt':
    case 'CreatePLangStmt':
    case 'CreateCastStmt':
    case 'CreateOpClassStmt':
    case 'CreateOpFamilyStmt':
    case 'CreateConversionStmt':
    case 'CreateTransformStmt':
    case 'CreateAmStmt':
    case 'CreateEventTrigStmt':
    case 'CreatePolicyStmt':
    case 'CreatePublicationStmt':
    case 'CreateSubscriptionStmt':
    case 'CreateForeignServerStmt':
    case 'CreateFdwStmt':
    case 'CreateForeignTableStmt':
    case 'CreateUserMappingStmt':
    case 'ImportForeignSchemaStmt':
      return block('P3.ddl.code', `${kind.replace(/Stmt$/, '')} ${DDL_CODE} and is not allowed.`);
    case 'CreateTableSpaceStmt':
    case 'CreatedbStmt':
      return block('P3.ddl.cluster', 'Creating databases or tablespaces touches the server and is not allowed.');
    case 'DoStmt':
      return block('P3.do', 'DO runs procedural code the gateway cannot inspect.');
    case 'LoadStmt':
      return block('P3.load', 'LOAD loads a shared library into the server.');
    case 'LockStmt':
      // ACCESS SHARE is the lock every SELECT already takes and holds to the end of its transaction; it
      // conflicts only with ACCESS EXCLUSIVE (DROP, TRUNCATE, ALTER, VACUUM FULL), so it adds nothing a read
      // in a transaction could not do. pg_dump takes it on every table it dumps. Stronger modes stop
      // other sessions' writes or reads (corpus CB-043): blocked.
      if (body.mode === ACCESS_SHARE_LOCK) return allow('P5.lock.access-share', 'LOCK … IN ACCESS SHARE MODE takes only the lock a SELECT takes.');
      return block('P3.lock', 'LOCK TABLE can stop every other session and is not allowed; only IN ACCESS SHARE MODE is.');
    case 'VacuumStmt':
      return block('P3.maintenance', `${body.is_vacuumcmd ? 'VACUUM' : 'ANALYZE'} ${MAINTENANCE}.`);
    case 'ClusterStmt':
    case 'ReindexStmt':
    case 'CheckPointStmt':
      return block('P3.maintenance', `${kind.replace(/Stmt$/, '').toUpperCase()} ${MAINTENANCE}.`);
    case 'SecLabelStmt':
      return block('P3.security-label', 'SECURITY LABEL is not allowed through the gateway.');
    default:
      // Every ALTER (RENAME, OWNER, SET SCHEMA, SYSTEM, …) and anything unknown: fail closed.
      if (kind.startsWith('Alter') || kind === 'RenameStmt' || kind === 'ReplicaIdentityStmt')
        return block('P3.ddl.alter', 'ALTER is not allowed through the gateway.');
      return block('P3.unknown-statement', `${kind} is not a statement type the gateway knows to be safe.`);
  }
}

function transactionVerdict(body: Body): Verdict {
  const kind = String(body.kind ?? '');
  // Two-phase commit detaches a transaction from the session (locks held forever) and lets a
  // session commit transactions it never saw.
  if (/PREPARED|TRANS_STMT_PREPARE/.test(kind)) return block('P3.2pc', 'Two-phase commit commands are not allowed.');
  if (switchesToReadWrite(body.options)) return block('P3.read-write', 'Switching a transaction to READ WRITE is not allowed; writes go through approval.');
  return allow('P5.transaction', 'Transaction control.');
}

/**
 * True when a transaction-mode list sets `transaction_read_only` to anything but a literal 1.
 * BEGIN READ WRITE arrives as `transaction_read_only = 0` (encoded as an empty `ival`).
 */
function switchesToReadWrite(options: unknown): boolean {
  if (!Array.isArray(options)) return false;
  return options.some((o) => {
    const d = (o as Body).DefElem as Body | undefined;
    if (!d || d.defname !== 'transaction_read_only') return false;
    return intConstant(d.arg) !== 1;
  });
}

function setVerdict(body: Body): Verdict {
  const kind = String(body.kind);
  const name = String(body.name ?? '').toLowerCase();
  if (kind === 'VAR_RESET_ALL') return block('P3.set', 'RESET ALL would reset settings the gateway pins.');
  if (kind === 'VAR_SET_MULTI') {
    // SET TRANSACTION … / SET SESSION CHARACTERISTICS AS TRANSACTION …: only the read-write switch matters.
    return switchesToReadWrite(body.args)
      ? block('P3.read-write', 'Switching a transaction to READ WRITE is not allowed; writes go through approval.')
      : allow('P5.set', 'Transaction characteristics.');
  }
  if (name === 'role' || name === 'session_authorization')
    return block('P3.set.role', 'Changing the role or session authorization is not allowed.');
  // P2: the agent and the server must lex the same bytes the same way.
  if (name === 'client_encoding' || name === 'standard_conforming_strings' || name === 'backslash_quote' || name === 'escape_string_warning')
    return block('P2.lexing', `${name} is pinned by the gateway so it and the server read SQL identically.`);
  if (SETTABLE.has(name)) return allow('P5.set', `Setting ${name} is allowed.`);
  const limited = SETTABLE_VALUES.get(name);
  if (limited) {
    if (limited.resettable && (kind === 'VAR_RESET' || kind === 'VAR_SET_DEFAULT')) return allow('P5.set.limited', `Resetting ${name} is allowed: ${limited.resettable}.`);
    // Only SET … TO <constants>; RESET / DEFAULT / FROM CURRENT go back to a value the rule cannot see.
    const values = kind === 'VAR_SET_VALUE' ? constantArgs(body.args) : undefined;
    const elements = values && (limited.shape === 'quoted-list' ? values : limited.shape === 'list' ? splitAll(values) : values);
    if (elements && limited.accepts(elements)) return allow('P5.set.limited', `Setting ${name} to this value is allowed: ${limited.why}.`);
    return block('P3.set', `${name} may only be set to values that cannot widen what this session sees (${limited.why}); this change is not allowed.`);
  }
  return block('P3.set', `Changing ${name || 'this setting'} is not allowed through the gateway.`);
}

/** SET arguments as text when every one is a constant (`off`, `'x'`, `0`, `1.5`), else undefined. */
function constantArgs(args: unknown): string[] | undefined {
  if (!Array.isArray(args) || args.length === 0) return undefined;
  const out: string[] = [];
  for (const a of args) {
    const type = constantType(a);
    if (type !== 'string' && type !== 'int' && type !== 'float') return undefined;
    const c = constantValue(a);
    if (c?.type !== 'string' && c?.type !== 'int' && c?.type !== 'float') return undefined;
    out.push(String(c.value));
  }
  return out;
}

function splitAll(values: string[]): string[] | undefined {
  const out: string[] = [];
  for (const v of values) {
    const parts = splitSettingList(v);
    if (!parts) return undefined;
    out.push(...parts);
  }
  return out;
}

/**
 * set_config(name, value, is_local) of a setting a client may SET. The value must be a string constant
 * (or, for the unrestricted SETTABLE names, a client-supplied `$n`): a computed value could carry column
 * data into a setting, where SHOW, current_setting() and other sessions' pg_stat_activity read it with no
 * masking lineage (corpus MK-032).
 */
function setConfigVerdict(fn: FunctionRef, pinned?: string): Verdict | undefined {
  if (fn.name !== 'set_config' || (fn.schema && fn.schema !== 'pg_catalog')) return undefined;
  const firstArg = stringConstant(fn.args[0]) ?? (fn.firstArgColumn === 'name' ? pinned : undefined);
  if (firstArg === undefined) return undefined;
  const name = firstArg.toLowerCase();
  const secondArg = stringConstant(fn.args[1]);
  if (SETTABLE.has(name)) {
    if (secondArg !== undefined || fn.secondArgIsParam) return allow('P5.set', `Setting ${firstArg} is allowed.`);
    return block('P3.function.set_config', `set_config(${firstArg}) is only allowed with a constant value, so it is blocked.`);
  }
  const limited = SETTABLE_VALUES.get(name);
  if (!limited || secondArg === undefined) return undefined;
  const elements = limited.shape === 'scalar' ? [secondArg] : splitSettingList(secondArg);
  return elements && limited.accepts(elements)
    ? allow('P5.set.limited', `Setting ${name} to this value is allowed: ${limited.why}.`)
    : undefined;
}

function copyVerdict(body: Body): Verdict {
  if (body.is_program) return block('P3.copy.program', 'COPY … PROGRAM runs a shell command on the database server.');
  if (typeof body.filename === 'string') return block('P3.copy.file', 'COPY to or from a server-side file is not allowed.');
  if (body.is_from) return hold('P4.write.copy-in', 'COPY FROM STDIN writes rows and needs approval.');
  return hold('P4.export', 'COPY … TO STDOUT is a bulk export and needs approval.');
}

function defineVerdict(body: Body): Verdict {
  const kind = String(body.kind);
  // Aggregates and operators bind functions that run implicitly; a base type binds I/O functions that
  // run on every cast; text-search parsers and templates are C code.
  const code = ['OBJECT_AGGREGATE', 'OBJECT_OPERATOR', 'OBJECT_TSPARSER', 'OBJECT_TSTEMPLATE'].includes(kind)
    || (kind === 'OBJECT_TYPE' && Array.isArray(body.definition));
  return code
    ? block('P3.ddl.code', `CREATE ${kind.replace('OBJECT_', '')} ${DDL_CODE} and is not allowed.`)
    : hold('P4.ddl', `CREATE ${kind.replace('OBJECT_', '')} ${HELD_DDL}.`);
}

export interface FunctionLists {
  extraBlocked: readonly string[];
  /** bare or schema-qualified names (`get_patient`, `public.get_patient`) */
  allowed: readonly string[];
}

/**
 * Verdict for one function call anywhere in the tree. `pinned`: the setting name a `set_config(name, …)`
 * call's `name` column is pinned to (engine.ts, pg_dump's `… FROM pg_settings WHERE name = 'x'`).
 */
export function functionVerdict(fn: FunctionRef, lists: FunctionLists, pinned?: string): Verdict {
  const shown = fn.schema ? `${fn.schema}.${fn.name}` : fn.name;
  // set_config of an allowlisted setting (to an allowed constant) is the same as SET of it; any other → blocked below.
  const setting = setConfigVerdict(fn, pinned);
  if (setting) return setting;
  const blocked = matchRule(BLOCKED_FUNCTIONS, fn.name)
    ?? lists.extraBlocked.map((p) => ({ pattern: p, rule: 'P3.function.configured', reason: 'is blocked by this connection’s policy' }))
      .find((r) => matchRule([r], fn.name) || matchRule([r], shown));
  if (blocked) return block(`P3.function.${fn.name}`, `${shown}() ${blocked.reason}, so it is blocked.`);
  // ts_rewrite(query, 'SELECT …') runs its second argument as SQL; the 3-argument form is pure.
  if (fn.name === 'ts_rewrite' && fn.nargs === 2) return block('P3.function.ts_rewrite', `${shown}() with a query argument ${'runs SQL given as text'}, so it is blocked.`);
  if (lists.allowed.some((a) => a === shown || (!fn.schema && (a === fn.name || a.endsWith(`.${fn.name}`)))))
    return allow('P5.function.allowed', `${shown}() is allowlisted for this connection.`);
  const builtin = !fn.schema || fn.schema === 'pg_catalog';
  const held = builtin ? matchRule(HELD_FUNCTIONS, fn.name) : undefined;
  if (held) return hold(held.rule, `${shown}() ${held.reason} and needs approval.`);
  if (builtin && (SAFE_FUNCTIONS.has(fn.name) || fn.name === 'ts_rewrite')) return allow('P5.function', 'Read-only built-in.');
  return hold('P4.function.unknown', `${shown}() is not a known read-only built-in and may write, so it needs approval.`);
}

/** Verdict for one relation reference. */
export function relationVerdict(rel: RelationRef): Verdict {
  // Checked before the CTE test on purpose: a CTE named pg_stats is not worth getting scoping right for.
  const why = BLOCKED_RELATIONS.get(rel.name);
  if (why) return block(`P3.catalog.${rel.name}`, `${rel.name} ${why}, so reading it is blocked.`);
  if (rel.cte) return allow('P5.read', 'CTE reference.');
  return allow('P5.read', 'Relation reference.');
}

/** `OPERATOR(myschema.+)`: a user-defined operator is a function call in disguise. */
export function operatorVerdict(op: string): Verdict {
  return op.startsWith('pg_catalog.')
    ? allow('P5.function', 'Built-in operator.')
    : hold('P4.function.unknown', `Operator ${op} is user-defined and may write, so it needs approval.`);
}

export function tablesampleVerdict(method: string): Verdict {
  return SAFE_TABLESAMPLE.has(method) || SAFE_TABLESAMPLE.has(method.replace(/^pg_catalog\./, ''))
    ? allow('P5.read', 'Built-in sampling method.')
    : hold('P4.function.unknown', `Sampling method ${method} is extension code and needs approval.`);
}

/** EXPLAIN runs its statement only with ANALYZE (any spelling of "true", or no value at all). */
export function explainAnalyzes(body: Body): boolean {
  if (!Array.isArray(body.options)) return false;
  return body.options.some((o) => {
    const d = (o as Body).DefElem as Body | undefined;
    if (!d || d.defname !== 'analyze') return false;
    if (d.arg === undefined) return true;
    const arg = d.arg as Body;
    // String / Boolean / Integer nodes: a literal there leaves the statement unbound (parse.ts), never cached by skeleton.
    const text = (arg.String as Body | undefined)?.sval ?? (arg.Boolean as Body | undefined)?.boolval
      ?? intConstant(arg) ?? ((arg.Integer as Body | undefined)?.ival);
    // Fail closed: only a clear false keeps it a plain EXPLAIN.
    return !['false', 'off', 'no', '0', 0, false].includes(text as never);
  });
}

