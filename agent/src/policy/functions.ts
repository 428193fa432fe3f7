/**
 * Name lists the rules consult: blocked and held functions, the allowlist of safe built-ins, the
 * catalogs that expose data values, and the settings a client may change.
 *
 * Names are compared exactly as the parser hands them over: unquoted identifiers arrive lower-cased,
 * quoted ones keep their case (`"PG_READ_FILE"` is a different, user-defined function and is therefore
 * merely unknown → held, never allowed).
 */

export interface FunctionRule {
  /** exact bare name, or a prefix when it ends in `*` */
  pattern: string;
  rule: string;
  reason: string;
}

const FILE = 'reads or writes files on the database server';
const RUNS_SQL = 'runs SQL given as text, which no check of this statement can see';
const CONTROL = 'controls the session or the server';
const REPL = 'drives replication or logical decoding, which streams every row change';

/**
 * P3: blocked wherever they appear in the tree and in whatever schema they are qualified with.
 * Schema is ignored on purpose: extension functions (dblink, pg_stat_statements) live in `public`
 * or any schema the installer chose, and a same-named user function is never worth the risk.
 */
export const BLOCKED_FUNCTIONS: FunctionRule[] = [
  ...['pg_read_file', 'pg_read_binary_file', 'pg_ls_*', 'pg_stat_file', 'pg_file_*', 'lo_import', 'lo_export']
    .map((pattern) => ({ pattern, rule: 'P3.function.file', reason: FILE })),
  { pattern: 'dblink*', rule: 'P3.function.dblink', reason: 'opens a second database connection the gateway cannot see' },
  ...['query_to_xml*', 'cursor_to_xml*', 'table_to_xml*', 'schema_to_xml*', 'database_to_xml*', 'ts_stat', 'crosstab*']
    .map((pattern) => ({ pattern, rule: 'P3.function.sql-text', reason: RUNS_SQL })),
  ...['set_config', 'pg_reload_conf', 'pg_rotate_logfile*', 'pg_terminate_backend', 'pg_cancel_backend', 'pg_promote',
    'pg_switch_wal', 'pg_create_restore_point', 'pg_backup_*', 'pg_wal_replay_*', 'pg_log_backend_memory_contexts']
    .map((pattern) => ({ pattern, rule: 'P3.function.control', reason: CONTROL })),
  ...['pg_create_*replication_slot', 'pg_drop_replication_slot', 'pg_copy_*replication_slot', 'pg_replication_*',
    'pg_logical_*', 'pg_sync_replication_slots']
    .map((pattern) => ({ pattern, rule: 'P3.function.replication', reason: REPL })),
  { pattern: 'pg_sleep*', rule: 'P3.function.sleep', reason: 'is a timing oracle and ties up a backend' },
  { pattern: 'pg_notify', rule: 'P3.function.notify', reason: 'sends data on a channel outside the result set, where masking cannot follow' },
  // Large-object readers: a value laundered into a large object carries no lineage (corpus MK-029).
  ...['lo_get', 'loread'].map((pattern) => ({ pattern, rule: 'P3.function.lo-read', reason: 'reads a large object, which carries no masking lineage' })),
  // Functions that hand out other sessions' query text or raw statistics / pages (P3 catalogs).
  ...['pg_stat_get_activity', 'pg_stat_get_backend_activity', 'pg_stat_statements*', 'pg_mcv_list_items',
    'get_raw_page', 'heap_page_item*', 'tuple_data_split', 'bt_page_items', 'pg_get_wal_*']
    .map((pattern) => ({ pattern, rule: 'P3.function.catalog', reason: 'exposes data values outside the masked columns' })),
];

/** P4: held for approval (they write, but are a legitimate part of some jobs). */
export const HELD_FUNCTIONS: FunctionRule[] = [
  ...['nextval', 'setval'].map((pattern) => ({ pattern, rule: 'P4.function.sequence', reason: 'changes a sequence' })),
  ...['lo_from_bytea', 'lo_create', 'lo_creat', 'lo_put', 'lowrite', 'lo_unlink', 'lo_truncate', 'lo_truncate64', 'lo_open',
    'lo_close', 'lo_lseek', 'lo_lseek64', 'lo_tell', 'lo_tell64']
    .map((pattern) => ({ pattern, rule: 'P4.function.lo-write', reason: 'writes a large object' })),
];

/**
 * Built-ins known not to write, run SQL text, or reach outside the database. Anything else (user-defined,
 * extension, VOLATILE side-effecting built-ins) is held: P4 "calls that may write". Matched only when the
 * call is unqualified or qualified with `pg_catalog` (a `public.lower` is somebody's own function).
 *
 * The catalog helpers at the end (partition tree, `pg_get_*def`, `*_is_visible`, `acldefault`, sizes…) are
 * what psql's \d family and pg_dump --schema-only call (captured in test/agent/policy/fixtures/): they
 * return object definitions, names, privileges and sizes, never column values.
 */
export const SAFE_FUNCTIONS: ReadonlySet<string> = new Set(`
  count sum avg min max bool_and bool_or every array_agg string_agg json_agg jsonb_agg json_agg_strict jsonb_agg_strict
  json_object_agg jsonb_object_agg json_object_agg_strict jsonb_object_agg_strict json_object_agg_unique
  jsonb_object_agg_unique json_object_agg_unique_strict jsonb_object_agg_unique_strict xmlagg bit_and bit_or bit_xor
  stddev stddev_pop stddev_samp variance var_pop var_samp corr covar_pop covar_samp regr_avgx regr_avgy regr_count
  regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy mode percentile_cont percentile_disc rank dense_rank
  percent_rank cume_dist range_agg range_intersect_agg any_value grouping
  row_number ntile lag lead first_value last_value nth_value
  lower upper initcap length char_length character_length octet_length bit_length concat concat_ws format substr
  substring left right lpad rpad ltrim rtrim btrim replace repeat reverse split_part strpos position overlay translate
  ascii chr md5 sha224 sha256 sha384 sha512 encode decode quote_ident quote_literal quote_nullable regexp_replace
  regexp_match regexp_matches regexp_split_to_array regexp_split_to_table regexp_count regexp_instr regexp_like
  regexp_substr starts_with string_to_array string_to_table array_to_string to_hex to_bin to_oct to_ascii convert
  convert_from convert_to normalize is_normalized unistr casefold text textlen bpchar varchar similar_to_escape
  like_escape pg_client_encoding parse_ident crc32 crc32c get_byte get_bit set_byte set_bit bit_count
  abs ceil ceiling floor round trunc sign sqrt cbrt exp ln log log10 power pow mod div degrees radians pi random
  random_normal sin cos tan cot asin acos atan atan2 sind cosd tand cotd asind acosd atand atan2d sinh cosh tanh asinh
  acosh atanh width_bucket gcd lcm factorial scale min_scale trim_scale numeric int2 int4 int8 float4 float8 erf erfc
  gamma lgamma
  now clock_timestamp statement_timestamp transaction_timestamp timeofday date_trunc date_part date_bin extract age
  to_char to_date to_timestamp to_number make_date make_time make_timestamp make_timestamptz make_interval
  justify_days justify_hours justify_interval isfinite timezone overlaps date_add date_subtract
  to_json to_jsonb row_to_json array_to_json json_build_object jsonb_build_object json_build_array jsonb_build_array
  json_object jsonb_object json_array_length jsonb_array_length json_each jsonb_each json_each_text jsonb_each_text
  json_extract_path jsonb_extract_path json_extract_path_text jsonb_extract_path_text json_object_keys
  jsonb_object_keys json_populate_record jsonb_populate_record json_populate_recordset jsonb_populate_recordset
  jsonb_populate_record_valid json_to_record jsonb_to_record json_to_recordset jsonb_to_recordset json_array_elements
  jsonb_array_elements json_array_elements_text jsonb_array_elements_text json_typeof jsonb_typeof json_strip_nulls
  jsonb_strip_nulls jsonb_set jsonb_set_lax jsonb_insert jsonb_pretty jsonb_path_exists jsonb_path_match
  jsonb_path_query jsonb_path_query_array jsonb_path_query_first jsonb_path_exists_tz jsonb_path_match_tz
  jsonb_path_query_tz jsonb_path_query_array_tz jsonb_path_query_first_tz
  array_length array_lower array_upper array_dims array_ndims array_position array_positions array_append
  array_prepend array_cat array_remove array_replace array_fill cardinality unnest generate_subscripts trim_array
  array_sample array_shuffle array_reverse array_sort generate_series
  to_tsvector to_tsquery plainto_tsquery phraseto_tsquery websearch_to_tsquery ts_rank ts_rank_cd ts_headline
  setweight strip ts_delete ts_filter tsvector_to_array array_to_tsvector numnode querytree ts_lexize
  get_current_ts_config
  xmlcomment xmltext xml_is_well_formed xml_is_well_formed_document xml_is_well_formed_content xpath xpath_exists
  host hostmask masklen netmask network broadcast abbrev family inet_merge inet_same_family set_masklen
  gen_random_uuid uuidv4 uuidv7 uuid_extract_timestamp uuid_extract_version
  num_nulls num_nonnulls pg_typeof pg_column_size pg_size_pretty pg_size_bytes version current_database
  current_schema current_schemas current_setting pg_backend_pid inet_client_addr inet_client_port inet_server_addr
  inet_server_port pg_postmaster_start_time pg_conf_load_time pg_is_in_recovery has_table_privilege
  has_column_privilege has_schema_privilege has_database_privilege has_function_privilege has_any_column_privilege
  has_sequence_privilege has_type_privilege pg_has_role row_security_active format_type pg_get_viewdef
  pg_get_constraintdef pg_get_indexdef pg_get_functiondef pg_get_function_arguments pg_get_function_result
  pg_get_function_identity_arguments pg_get_triggerdef pg_get_ruledef pg_get_expr pg_get_serial_sequence
  pg_get_userbyid pg_table_is_visible pg_type_is_visible pg_function_is_visible obj_description col_description
  shobj_description pg_relation_size pg_total_relation_size pg_table_size pg_indexes_size pg_database_size
  pg_encoding_to_char to_regclass to_regtype to_regproc to_regprocedure to_regnamespace to_regrole to_regoper
  to_regoperator to_regtypemod currval lastval pg_jit_available pg_trigger_depth pg_listening_channels
  pg_notification_queue_usage pg_my_temp_schema pg_is_other_temp_schema pg_get_keywords pg_collation_for
  system_user current_role current_user session_user
  has_foreign_data_wrapper_privilege has_language_privilege has_server_privilege has_tablespace_privilege
  has_parameter_privilege has_largeobject_privilege acldefault aclexplode makeaclitem
  pg_partition_ancestors pg_partition_root pg_partition_tree pg_get_partkeydef pg_get_partition_constraintdef
  pg_get_statisticsobjdef pg_get_statisticsobjdef_columns pg_get_statisticsobjdef_expressions pg_get_function_sqlbody
  pg_get_function_arg_default pg_get_replica_identity_index pg_get_publication_tables pg_relation_is_publishable
  pg_describe_object pg_identify_object pg_identify_object_as_address pg_get_object_address pg_options_to_table
  pg_index_has_property pg_index_column_has_property pg_indexam_has_property pg_get_triggerdef pg_get_acl
  pg_collation_is_visible pg_conversion_is_visible pg_opclass_is_visible pg_operator_is_visible
  pg_opfamily_is_visible pg_statistics_obj_is_visible pg_ts_config_is_visible pg_ts_dict_is_visible
  pg_ts_parser_is_visible pg_ts_template_is_visible
  pg_tablespace_location pg_tablespace_size getdatabaseencoding pg_char_to_encoding pg_collation_actual_version
  pg_database_collation_actual_version pg_sequence_parameters pg_get_catalog_foreign_keys ts_token_type
`.split(/\s+/).filter(Boolean));

/** Table sampling methods shipped with PostgreSQL; others are extension code (held). */
export const SAFE_TABLESAMPLE = new Set(['bernoulli', 'system']);

/**
 * P3 catalogs that expose data values (histograms, most-common values, other sessions' query text,
 * large-object pages) or credentials. Matched by bare name in any schema: unqualified names of these
 * resolve to pg_catalog anyway, and pg_stat_statements lives wherever the extension was installed.
 */
export const BLOCKED_RELATIONS: ReadonlyMap<string, string> = new Map([
  ['pg_stats', 'holds histogram bounds and most-common values of every column'],
  ['pg_stats_ext', 'holds most-common values of column groups'],
  ['pg_stats_ext_exprs', 'holds most-common values of indexed expressions'],
  ['pg_statistic', 'holds histogram bounds and most-common values of every column'],
  ['pg_statistic_ext_data', 'holds most-common values of column groups'],
  ['pg_stat_activity', "shows other sessions' query text and parameters"],
  ['pg_stat_statements', 'shows the text of queries other sessions ran'],
  ['pg_stat_statements_info', 'belongs to pg_stat_statements'],
  ['pg_largeobject', 'holds large-object contents, which carry no masking lineage'],
  ['pg_authid', 'holds password hashes'],
  ['pg_shadow', 'holds password hashes'],
  ['pg_user_mapping', 'holds foreign-server credentials'],
  ['pg_user_mappings', 'holds foreign-server credentials'],
]);

/** P3: the only run-time settings a client may SET / RESET (compared lower-cased, as GUC names are). */
export const SETTABLE = new Set([
  'application_name', 'statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout', 'datestyle',
  'intervalstyle', 'timezone', 'extra_float_digits', 'client_min_messages',
]);

/** A setting a client may change only to some values: `accepts` gets the value as one list of elements. */
export interface SettingValueRule {
  /** true when every element of the new value is one the rule vouches for */
  accepts(elements: readonly string[]): boolean;
  /**
   * `scalar`: one value. `list`: comma-separated; each SET argument and set_config's text are split like
   * the server does. `quoted-list` (search_path, GUC_LIST_QUOTE): each SET argument is one element verbatim,
   * set_config's text is split.
   */
  shape: 'scalar' | 'list' | 'quoted-list';
  /** why these values cannot widen what the session sees or does */
  why: string;
  /** Set when RESET / SET … TO DEFAULT is safe too: why the default cannot widen anything. */
  resettable?: string;
}

const BOOLEAN = new Set(['on', 'off', 'true', 'false', 'yes', 'no', '1', '0', 't', 'f', 'y', 'n']);
const TRUE = new Set(['on', 'true', 'yes', '1', 't', 'y']);
const single = (test: (v: string) => boolean) => (xs: readonly string[]): boolean => xs.length === 1 && test(xs[0].toLowerCase());

/**
 * P3 exceptions for the tools CI jobs run (pg_dump, psql): settings outside SETTABLE that may be SET /
 * set_config'd, but only to the listed values. RESET / SET … TO DEFAULT of them stay blocked (the
 * default may be whatever the operator configured, which the rule cannot see) unless `resettable` says why not.
 */
export const SETTABLE_VALUES: ReadonlyMap<string, SettingValueRule> = new Map<string, SettingValueRule>([
  // Only '' or pg_catalog: both remove user schemas from name resolution (pg_catalog is searched first
  // anyway, and pg_temp is still searched only for relations, exactly as before), so a name can only stop
  // resolving, never resolve to something new. A list with user schemas is refused even after pg_catalog:
  // masking resolves unqualified names against the search_path read at connect (masking/catalog.ts), and
  // `pg_catalog, other` would make the server read other.patients while lineage checks public.patients.
  // pg_temp tricks (`pg_temp, public`) and quoted look-alikes ("PG_CATALOG" is another schema) fail too.
  // RESET returns to the session's starting value: the one masking resolved names against when the
  // connection opened (a client cannot set search_path at startup). pg_dump --data-only sends it.
  ['search_path', { shape: 'quoted-list', accepts: (xs) => xs.every((x) => x === '' || x === 'pg_catalog'),
    why: 'an empty search_path or pg_catalog alone only makes name resolution stricter',
    resettable: 'it returns to the value masking already resolves names against' }],
  // Only changes where a sequential scan starts: row order, never which rows.
  ['synchronize_seqscans', { shape: 'scalar', accepts: single((v) => BOOLEAN.has(v)), why: 'it only changes where a table scan starts' }],
  // off: a query that row-level security would filter fails instead of running; on is the default. Roles
  // that bypass RLS bypass it either way. Neither value can show a row that was hidden.
  ['row_security', { shape: 'scalar', accepts: single((v) => BOOLEAN.has(v)), why: 'it can only make a query fail, never show more rows' }],
  // Forbids reading views / foreign tables (pg_dump's CVE-2024-7348 guard): only ever restricts.
  ['restrict_nonsystem_relation_kind', {
    shape: 'list', accepts: (xs) => xs.length > 0 && xs.every((x) => x === 'view' || x === 'foreign-table'),
    why: 'it only forbids reading views or foreign tables' }],
  // Isolation and DEFERRABLE change which snapshot a read sees, not what it may read; READ ONLY only ever
  // narrows. transaction_read_only = off is the read-write switch: refused.
  ...['transaction_isolation', 'default_transaction_isolation'].map((n): [string, SettingValueRule] =>
    [n, { shape: 'scalar', accepts: single((v) => ['serializable', 'repeatable read', 'read committed', 'read uncommitted'].includes(v)), why: 'the isolation level changes the snapshot, not what may be read' }]),
  ...['transaction_deferrable', 'default_transaction_deferrable'].map((n): [string, SettingValueRule] =>
    [n, { shape: 'scalar', accepts: single((v) => BOOLEAN.has(v)), why: 'DEFERRABLE only delays a serializable read-only transaction' }]),
  ...['transaction_read_only', 'default_transaction_read_only'].map((n): [string, SettingValueRule] =>
    [n, { shape: 'scalar', accepts: single((v) => TRUE.has(v)), why: 'READ ONLY only forbids writes' }]),
]);

/**
 * A list setting's text as the server splits it (SplitIdentifierString): comma-separated, blanks around
 * elements dropped, unquoted elements lower-cased, double-quoted ones verbatim (`""` is a quote).
 * Returns undefined for text the server would reject or that this reading is not sure about.
 */
export function splitSettingList(text: string): string[] | undefined {
  const out: string[] = [];
  let i = 0;
  const blank = (c: string | undefined) => c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f' || c === '\v';
  while (blank(text[i])) i++;
  if (i === text.length) return out;
  for (;;) {
    let el = '';
    if (text[i] === '"') {
      for (i++; ; i++) {
        if (i >= text.length) return undefined;
        if (text[i] === '"') {
          if (text[i + 1] !== '"') break;
          i++;
        }
        el += text[i];
      }
      i++;
      if (el === '') return undefined;
    } else {
      while (i < text.length && text[i] !== ',' && !blank(text[i]) && text[i] !== '"') el += text[i++];
      // Non-ASCII case folding depends on the server's encoding and locale: not worth guessing.
      if (el === '' || /[^\x20-\x7e]/.test(el)) return undefined;
      el = el.toLowerCase();
    }
    out.push(el);
    while (blank(text[i])) i++;
    if (i === text.length) return out;
    if (text[i] !== ',') return undefined;
    i++;
    while (blank(text[i])) i++;
  }
}

/** First rule whose pattern matches `name`; a pattern holds at most one `*` (any run of characters). */
export function matchRule(rules: FunctionRule[], name: string): FunctionRule | undefined {
  return rules.find(({ pattern }) => {
    const star = pattern.indexOf('*');
    if (star < 0) return name === pattern;
    const head = pattern.slice(0, star);
    const tail = pattern.slice(star + 1);
    return name.length >= head.length + tail.length && name.startsWith(head) && name.endsWith(tail);
  });
}
