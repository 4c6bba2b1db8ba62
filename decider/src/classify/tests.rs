//! The analyser's unit tests: classes, objects, functions and risks read from SQL.

use super::*;

fn one(sql: &str) -> StatementAnalysis {
    match analyze(sql) {
        Analysis::Parsed { mut statements } if statements.len() == 1 => statements.remove(0),
        other => panic!("{sql}: {other:?}"),
    }
}

#[test]
fn keywords_are_values_in_settings_and_options_and_never_columns() {
    // PostgreSQL takes `on` as a value here; 110 statements of its
    // regression SQL were refused as unparsed when it counted as a column.
    for (sql, class) in [
        ("SET synchronous_commit = on", StatementClass::Session),
        ("set enable_seqscan to ON", StatementClass::Session),
        (
            "create index i on t using gin (a) with (fastupdate = on)",
            StatementClass::Ddl,
        ),
        (
            "create function f() returns int language sql as 'select 1' \
             set transaction_read_only = on",
            StatementClass::Ddl,
        ),
    ] {
        assert!(one(sql).classes.contains(&class), "{sql}");
    }
    // Where a bare name is a column, a reserved word is not one, whatever
    // sqlparser makes of it.
    for sql in [
        "select on from t",
        "select a from t where on = 1",
        "update t set a = on",
        "insert into t select on from s",
        "delete from t where on",
    ] {
        assert!(matches!(analyze(sql), Analysis::Unparsed { .. }), "{sql}");
    }
}

#[test]
fn a_glued_ampersand_arrow_is_refused_not_misread() {
    // sqlparser would drop the `p`: decided as `g_read_file`, run as
    // `pg_read_file`.
    for sql in [
        "select box '((0,0),(1,1))' &>pg_read_file('/etc/passwd')::box",
        "select a &>'x'",
        "select 1;\nselect a\n  &>b",
    ] {
        assert!(matches!(analyze(sql), Analysis::Unparsed { .. }), "{sql}");
    }
    let spaced = one("select box '((0,0),(1,1))' &> pg_read_file('/etc/passwd')::box");
    assert!(spaced.functions.contains("pg_read_file"), "{spaced:?}");
    one("select a &>\n b");
}

#[test]
fn fingerprints_ignore_literals_only() {
    assert_eq!(one("select 1").fingerprint, one("SELECT 2").fingerprint);
    assert_eq!(
        one("select * from t where id = 1").fingerprint,
        one("SELECT * FROM t WHERE id = 'x'").fingerprint
    );
    assert_ne!(
        one("select 1 from a").fingerprint,
        one("select 1 from b").fingerprint
    );
    assert_ne!(
        one("select set_config('search_path', 'x', false)").fingerprint,
        one("select set_config('work_mem', 'x', false)").fingerprint
    );
    assert_ne!(
        one("delete from t where 'a' = 'a'").fingerprint,
        one("delete from t where 'a' = 'b'").fingerprint
    );
    let f = one("select 1").fingerprint;
    assert_eq!(f.len(), 16);
    assert!(f.chars().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn explain_options_that_run() {
    let runs = |sql: &str| one(sql).class == StatementClass::Write;
    assert!(runs("EXPLAIN ANALYZE DELETE FROM t"));
    assert!(runs("EXPLAIN (ANALYZE) DELETE FROM t"));
    assert!(runs("EXPLAIN (ANALYSE) DELETE FROM t"));
    assert!(runs("EXPLAIN (analyze true) DELETE FROM t"));
    assert!(runs("EXPLAIN (FORMAT JSON, ANALYZE 1) DELETE FROM t"));
    assert!(runs("EXPLAIN (ANALYZE on) DELETE FROM t"));
    assert!(!runs("EXPLAIN (ANALYZE off) DELETE FROM t"));
    assert!(!runs("EXPLAIN (ANALYZE false) DELETE FROM t"));
    assert!(!runs("EXPLAIN DELETE FROM t"));
    assert!(!runs("EXPLAIN VERBOSE DELETE FROM t"));
}

#[test]
fn string_arguments_see_through_casts_and_concatenation() {
    let a = one("select set_config('search' || '_path', 'x', false)");
    assert!(a.risks.contains(&Risk::SearchPathChange));
    assert!(!a.risks.contains(&Risk::RoleChange));
    let a = one("select set_config(lower(name), 'x', false) from s");
    assert!(a.risks.contains(&Risk::SearchPathChange));
    assert!(a.risks.contains(&Risk::RoleChange));
    assert!(a.risks.contains(&Risk::ClientEncodingChange));
    let a = one("select nextval('clinic.\"Seq\"'::regclass)");
    assert!(a.writes.contains(&ObjectRef {
        schema: Some("clinic".into()),
        name: "Seq".into()
    }));
}

#[test]
fn cte_names_shadow_only_where_visible() {
    let a = one("WITH t AS (SELECT * FROM t) SELECT * FROM t");
    assert_eq!(a.reads.len(), 1, "{a:?}");
    let a = one("WITH x AS (SELECT 1) SELECT * FROM x, clinic.x");
    assert_eq!(
        a.reads.into_iter().collect::<Vec<_>>(),
        vec![ObjectRef {
            schema: Some("clinic".into()),
            name: "x".into()
        }]
    );
    let a = one("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a, b");
    assert_eq!(a.reads.len(), 1, "b inside a is the real table b: {a:?}");
    let a = one("WITH RECURSIVE r AS (SELECT 1 UNION ALL SELECT * FROM r) SELECT * FROM r");
    assert!(a.reads.is_empty(), "{a:?}");
    let a = one("SELECT * FROM (WITH p AS (SELECT 1) SELECT * FROM p) s, p");
    assert_eq!(a.reads.len(), 1, "the outer p is a table: {a:?}");
}

#[test]
fn stray_end_is_not_ignored() {
    assert!(matches!(
        analyze("SELECT 1 END; DELETE FROM t"),
        Analysis::Unparsed { .. }
    ));
}

#[test]
fn deep_chains_are_refused_not_overflowed() {
    let sql = format!("SELECT 1{}", "+1".repeat(50_000));
    assert!(matches!(analyze(&sql), Analysis::Unparsed { .. }));
    let sql = format!("SELECT 1{}", " UNION SELECT 1, 2".repeat(20_000));
    assert!(matches!(analyze(&sql), Analysis::Unparsed { .. }));
    let sql = format!("SELECT a{}", "[1]".repeat(50_000));
    assert!(matches!(analyze(&sql), Analysis::Unparsed { .. }));
    // Wide is fine: many rows, many columns, many statements.
    let sql = format!("INSERT INTO t VALUES (1){}", ", (1)".repeat(20_000));
    assert!(matches!(analyze(&sql), Analysis::Parsed { .. }));
    let sql = "SELECT 1;".repeat(5_000);
    assert!(matches!(analyze(&sql), Analysis::Parsed { .. }));
}
