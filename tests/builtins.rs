//! The decider's tables of PostgreSQL's own functions and types cannot drift
//! from the server: the derivations below run against the harness's real
//! PostgreSQL, and every function (or type) they find must be in a table.

mod harness;

use std::collections::BTreeSet;

use gatehouse_decider::classify::{
    ADMIN_FUNCTIONS, BUILTIN_TYPES, RELATION_READING_FUNCTIONS, SIDE_EFFECT_FUNCTIONS,
    STATISTICS_FUNCTIONS, listed_function,
};
use harness::*;

/// Which built-in functions may do more than compute a value from their
/// arguments, derived from `pg_proc` rather than from memory. A function is
/// a candidate when it was created by initdb (OID below 16384), can be
/// called from SQL at all (no argument or result of a type only the server
/// makes: `internal`, `trigger`, handlers), and any of:
///
/// 1. an argument of type `regclass` or `refcursor`: it reads (or acts on) a
///    relation or cursor named at run time;
/// 2. an input argument named like query text, a table, a schema or a cursor
///    (`query`, `sqlquery`, `sql`, `cursor`, `tbl`, `table`, `relation`,
///    `schema`): it runs SQL text or reads what the name says;
/// 3. a C function (`internal` language) whose symbol says it runs a query
///    or exports relations (`…_query`, `…_to_xml…`): `ts_rewrite`'s text
///    form has no argument names to go by;
/// 4. no `EXECUTE` for `PUBLIC` in its ACL: initdb revoked it because it
///    reads the server's files, signals processes, or changes server state
///    (superusers and `pg_*` roles only);
/// 5. volatile: it may change something beyond its result (locks,
///    sequences, large objects, settings, WAL, replication, statistics).
///
/// Each candidate must be in one of the decider's tables (admin, side
/// effects, relation readers, statistics: `decider/src/classify/functions.rs`)
/// or in [`REVIEWED_HARMLESS`] below.
const CANDIDATES: &str = "\
select distinct p.proname from pg_catalog.pg_proc p \
where p.oid < 16384 \
  and p.prorettype not in ('pg_catalog.trigger'::pg_catalog.regtype, \
      'pg_catalog.event_trigger'::pg_catalog.regtype, 'pg_catalog.internal'::pg_catalog.regtype, \
      'pg_catalog.language_handler'::pg_catalog.regtype, 'pg_catalog.fdw_handler'::pg_catalog.regtype, \
      'pg_catalog.index_am_handler'::pg_catalog.regtype, \
      'pg_catalog.table_am_handler'::pg_catalog.regtype, 'pg_catalog.tsm_handler'::pg_catalog.regtype) \
  and not 'pg_catalog.internal'::pg_catalog.regtype = any (p.proargtypes::pg_catalog.oid[]) \
  and ('pg_catalog.regclass'::pg_catalog.regtype = any (p.proargtypes::pg_catalog.oid[]) \
    or 'pg_catalog.refcursor'::pg_catalog.regtype = any (p.proargtypes::pg_catalog.oid[]) \
    or exists (select from unnest(p.proargnames, p.proargmodes) a(n, m) \
               where coalesce(m, 'i') in ('i', 'b', 'v') \
                 and n ~ '^(query|sqlquery|sql|cursor|tbl|table|relation|schema)$') \
    or (p.prolang = (select oid from pg_catalog.pg_language where lanname = 'internal') \
        and p.prosrc ~ '(_query$|_to_xml)') \
    or (p.proacl is not null and not exists ( \
          select from pg_catalog.aclexplode(p.proacl) a \
          where a.grantee = 0 and a.privilege_type = 'EXECUTE')) \
    or p.provolatile = 'v') \
order by 1";

/// Candidates reviewed as harmless: they read only catalog metadata, sizes,
/// the server's own status, the session's own state, or the clock; or they
/// return what their literal argument already names (`currval`, whose
/// sequence the decider reads from the literal).
const REVIEWED_HARMLESS: &[&str] = &[
    // Catalog metadata and sizes of the relation named.
    "amvalidate",
    "currtid2",
    "pg_column_is_updatable",
    "pg_get_replica_identity_index",
    "pg_index_column_has_property",
    "pg_index_has_property",
    "pg_indexes_size",
    "pg_partition_ancestors",
    "pg_partition_root",
    "pg_partition_tree",
    "pg_relation_filenode",
    "pg_relation_filepath",
    "pg_relation_is_publishable",
    "pg_relation_is_updatable",
    "pg_relation_size",
    "pg_table_size",
    "pg_total_relation_size",
    "pg_database_size",
    "pg_tablespace_size",
    "pg_collation_actual_version",
    "pg_database_collation_actual_version",
    "regclassout",
    "regclasssend",
    "plpgsql_validator",
    // Sequences: the value of the sequence its argument names.
    "currval",
    "lastval",
    "pg_sequence_last_value",
    // The server's status: WAL positions, recovery, control file, locks,
    // transactions' status.
    "pg_control_checkpoint",
    "pg_control_init",
    "pg_control_recovery",
    "pg_control_system",
    "pg_current_wal_flush_lsn",
    "pg_current_wal_insert_lsn",
    "pg_current_wal_lsn",
    "pg_get_wal_replay_pause_state",
    "pg_get_wal_resource_managers",
    "pg_is_in_recovery",
    "pg_is_wal_replay_paused",
    "pg_jit_available",
    "pg_last_committed_xact",
    "pg_last_wal_receive_lsn",
    "pg_last_wal_replay_lsn",
    "pg_last_xact_replay_timestamp",
    "pg_stat_get_recovery_prefetch",
    "pg_blocking_pids",
    "pg_safe_snapshot_blocking_pids",
    "pg_isolation_test_session_is_blocked",
    "pg_lock_status",
    "pg_get_multixact_members",
    "pg_prepared_xact",
    "pg_notification_queue_usage",
    "pg_xact_commit_timestamp",
    "pg_xact_commit_timestamp_origin",
    "pg_xact_status",
    "txid_status",
    "pg_stat_have_stats",
    // The session's own statistics snapshot and current statement.
    "pg_stat_clear_snapshot",
    "pg_stat_force_next_flush",
    "pg_stat_get_xact_blocks_fetched",
    "pg_stat_get_xact_blocks_hit",
    "pg_stat_get_xact_function_calls",
    "pg_stat_get_xact_function_self_time",
    "pg_stat_get_xact_function_total_time",
    "pg_stat_get_xact_numscans",
    "pg_stat_get_xact_tuples_deleted",
    "pg_stat_get_xact_tuples_fetched",
    "pg_stat_get_xact_tuples_hot_updated",
    "pg_stat_get_xact_tuples_inserted",
    "pg_stat_get_xact_tuples_returned",
    "pg_stat_get_xact_tuples_updated",
    "current_query",
    // Values: the clock and random numbers (the session's seed).
    "clock_timestamp",
    "timeofday",
    "random",
    "setseed",
    "gen_random_uuid",
    // A JSON path query over its argument (matched by its C symbol's name).
    "jsonb_path_query",
];

/// The built-in types an unqualified cast may name without a look-up: the
/// base, pseudo, range and multirange types of `pg_catalog` (arrays aside).
const BUILTIN_TYPES_SQL: &str = "\
select t.typname from pg_catalog.pg_type t \
where t.oid < 16384 and t.typnamespace = 'pg_catalog'::pg_catalog.regnamespace \
  and t.typtype in ('b', 'p', 'r', 'm') and t.typcategory <> 'A' \
order by 1";

fn rows(pg: &Pg, sql: &str) -> Vec<String> {
    pg.psql_admin(sql).lines().map(str::to_owned).collect()
}

fn in_a_table(name: &str) -> Vec<&'static str> {
    let parts = [name.to_owned()];
    [
        ("admin", ADMIN_FUNCTIONS),
        ("side effects", SIDE_EFFECT_FUNCTIONS),
        ("relation readers", RELATION_READING_FUNCTIONS),
        ("statistics", STATISTICS_FUNCTIONS),
    ]
    .into_iter()
    .filter(|(_, list)| listed_function(list, &parts))
    .map(|(table, _)| table)
    .collect()
}

#[test]
fn every_built_in_function_that_may_do_more_than_compute_is_in_a_table() {
    let pg = Pg::start();
    let found = rows(&pg, CANDIDATES);
    // The derivation finds what it is meant to (a query that silently found
    // nothing would pass everything below).
    for known in [
        "query_to_xml",
        "cursor_to_xml",
        "pg_read_file",
        "lo_import",
        "ts_rewrite",
    ] {
        assert!(
            found.iter().any(|f| f == known),
            "{known} not derived: {found:?}"
        );
    }
    let missing: Vec<&String> = found
        .iter()
        .filter(|f| in_a_table(f).is_empty() && !REVIEWED_HARMLESS.contains(&f.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "built-in functions in no table of decider/src/classify/functions.rs (review each: admin, side effect, relation reader, or harmless here): {missing:?}"
    );
    // The review list names real functions, none of which a table names too.
    let all: BTreeSet<String> = rows(&pg, "select distinct proname from pg_catalog.pg_proc")
        .into_iter()
        .collect();
    for h in REVIEWED_HARMLESS {
        assert!(all.contains(*h), "{h} is no function of this server");
        assert!(
            in_a_table(h).is_empty(),
            "{h} is both harmless and in {:?}",
            in_a_table(h)
        );
    }
    // The relation readers among PostgreSQL's own functions exist as named.
    for f in [
        "query_to_xml",
        "cursor_to_xml",
        "table_to_xml",
        "schema_to_xml",
        "ts_stat",
    ] {
        assert!(all.contains(f), "{f}");
    }
}

#[test]
fn built_in_types_are_the_servers() {
    let pg = Pg::start();
    let server: BTreeSet<String> = rows(&pg, BUILTIN_TYPES_SQL).into_iter().collect();
    let ours: BTreeSet<String> = BUILTIN_TYPES.iter().map(|t| (*t).to_owned()).collect();
    assert_eq!(
        server.difference(&ours).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "types of this server missing from BUILTIN_TYPES"
    );
    assert_eq!(
        ours.difference(&server).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "BUILTIN_TYPES names types this server does not have"
    );
}
