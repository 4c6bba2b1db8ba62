//! Statement shapes: a text's tokens with literal values blanked, for caching
//! verdicts across texts that differ only in their literals.
//!
//! Sharing a verdict between `... WHERE aid = 1` and `... WHERE aid = 2` is only
//! sound when no literal can change what the statement is to the policy. The
//! analyser reads literal values in a few places only: arguments of the
//! functions in [`LITERAL_READING_FUNCTIONS`], the WHERE of UPDATE/DELETE/MERGE
//! (always-true detection), EXPLAIN options and SET values. A single statement
//! that starts with SELECT, is a plain read with no risk features and calls none
//! of those functions has the same analysis, and so the same verdict, for every
//! literal value; [`literal_invariant`] says exactly that.

use crate::analysis::{StatementAnalysis, StatementClass};
use crate::classify::shape_of;

/// Functions whose literal arguments the analyser interprets (setting names,
/// sequence names, query texts, table and schema names).
pub const LITERAL_READING_FUNCTIONS: &[&str] = &[
    "set_config",
    "nextval",
    "setval",
    "currval",
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "ts_stat",
    "crosstab",
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
    "schema_to_xml",
    "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema",
];

/// The shape of a single SELECT statement (`None` for anything else): its
/// tokens, keywords and unquoted names upper-cased, literals and parameters
/// replaced by `?`, quoted names kept as written.
pub fn shape(sql: &str) -> Option<String> {
    // Cheap gate: only texts that start with SELECT can be shape-cached; the rest
    // are not worth a tokenizer pass.
    if !starts_with_select(sql) {
        return None;
    }
    shape_of(sql).filter(|s| s.starts_with("SELECT "))
}

/// Whether the text's first non-blank characters spell `select`, in any case.
pub(crate) fn starts_with_select(sql: &str) -> bool {
    let head = sql.trim_start().as_bytes();
    head.len() >= 6 && head[..6].eq_ignore_ascii_case(b"select")
}

/// Whether every text of this statement's shape has the same analysis.
pub fn literal_invariant(a: &StatementAnalysis) -> bool {
    a.class == StatementClass::Read
        && a.risks.is_empty()
        && a.prepared.is_none()
        && !a
            .functions
            .iter()
            .any(|f| LITERAL_READING_FUNCTIONS.iter().any(|l| f.contains(l)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Analysis, analyze};

    fn one(sql: &str) -> StatementAnalysis {
        match analyze(sql) {
            Analysis::Parsed { mut statements } if statements.len() == 1 => statements.remove(0),
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn shapes_blank_literals_and_nothing_else() {
        let a = shape("select abalance from pgbench_accounts where aid = 42");
        assert!(a.is_some());
        assert_eq!(
            a,
            shape("SELECT abalance FROM PGBENCH_ACCOUNTS WHERE aid = 'x'")
        );
        assert_eq!(
            a,
            shape("  select abalance from pgbench_accounts where aid = $1")
        );
        assert_ne!(
            shape("select * from t"),
            shape("select * from \"T\""),
            "quoted names stay"
        );
        assert_ne!(shape("select * from t"), shape("select * from u"));
        assert_eq!(shape("select 1; select 2"), None, "one statement only");
        assert_eq!(shape("with x as (select 1) select * from x"), None);
        assert_eq!(shape("explain (analyze 0) delete from t"), None);
        assert_eq!(shape("delete from t where 1 = 1"), None);
    }

    #[test]
    fn only_literal_blind_analyses_are_invariant() {
        assert!(literal_invariant(&one(
            "select abalance from t where aid = 1"
        )));
        assert!(literal_invariant(&one(
            "select lower(name), count(*) from t where id > 3 group by 1"
        )));
        for sql in [
            "select set_config('search_path', 'evil', false)",
            "select nextval('s')",
            "select currval('s')",
            "select * from query_to_xml('select 1', true, true, '')",
            "select table_to_xml('t', true, true, '')",
            "select pg_sleep(1)",
            "select * into t2 from t",
            "select pg_read_file('x')",
        ] {
            assert!(!literal_invariant(&one(sql)), "{sql}");
        }
    }
}
