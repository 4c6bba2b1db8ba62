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
/// tokens, keywords and unquoted names upper-cased, numbers, strings and
/// parameters replaced by placeholders, quoted names kept as written.
///
/// This runs on every statement the verdict cache does not know by its exact
/// text, so it is a scanner of its own rather than sqlparser's tokenizer (which
/// allocates each word). It accepts only a plain subset of PostgreSQL's lexical
/// grammar, where where each token ends is beyond doubt: ASCII text; names, quoted
/// names without doubled quotes; unsigned numbers not followed by a name
/// character or a dot; `'…'` strings with no backslash, no doubled quote and no
/// prefix (`E'`, `B'`, `X'`, `U&'`, `N'`), never two in a row; `$n` parameters;
/// punctuation and operator runs without `--` or `/*`; at most a trailing `;`.
/// Anything else (comments, dollar quotes, escapes, several statements,
/// non-ASCII) has no shape here and is decided by its exact text.
///
/// Texts share a shape only if they have the same tokens apart from the values
/// of their literals, so a verdict the decider marked literal-invariant (see
/// [`literal_invariant`]) holds for all of them.
pub fn shape(sql: &str) -> Option<String> {
    // Cheap gate: only texts that start with SELECT can be shape-cached.
    if !starts_with_select(sql) {
        return None;
    }
    scan(sql.as_bytes())
}

/// What the previous token was, where it matters to the next one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Last {
    Other,
    String,
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_name_part(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

fn is_operator(b: u8) -> bool {
    matches!(
        b,
        b'+' | b'-'
            | b'*'
            | b'/'
            | b'<'
            | b'>'
            | b'='
            | b'~'
            | b'!'
            | b'@'
            | b'#'
            | b'%'
            | b'^'
            | b'&'
            | b'|'
            | b'`'
            | b'?'
    )
}

fn scan(s: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(s.len() + 8);
    let mut last = Last::Other;
    let mut i = 0;
    let push = |out: &mut String, piece: &[u8]| {
        if !out.is_empty() {
            out.push(' ');
        }
        // Only ASCII is accepted (checked byte by byte below).
        out.extend(piece.iter().map(|&b| char::from(b)));
    };
    while i < s.len() {
        let b = s[i];
        if !b.is_ascii() {
            return None;
        }
        let start = i;
        let mut this = Last::Other;
        match b {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            _ if is_name_start(b) => {
                while i < s.len() && is_name_part(s[i]) {
                    i += 1;
                }
                // A prefix glued to a quote (E'…', B'…', U&'…', U&"…").
                if matches!(s.get(i), Some(b'\'' | b'"' | b'&')) {
                    return None;
                }
                if !out.is_empty() {
                    out.push(' ');
                }
                out.extend(
                    s[start..i]
                        .iter()
                        .map(|b| char::from(b.to_ascii_uppercase())),
                );
            }
            b'"' => {
                i += 1;
                while i < s.len() && s[i] != b'"' {
                    if !s[i].is_ascii() {
                        return None;
                    }
                    i += 1;
                }
                // Unterminated, empty, or a doubled quote inside.
                if i >= s.len() || i == start + 1 || s.get(i + 1) == Some(&b'"') {
                    return None;
                }
                i += 1;
                push(&mut out, &s[start..i]);
            }
            b'\'' => {
                // Adjacent strings (continued across a newline) are one literal
                // to PostgreSQL: not worth telling apart here.
                if last == Last::String {
                    return None;
                }
                i += 1;
                while i < s.len() && s[i] != b'\'' {
                    // A backslash means different things under
                    // standard_conforming_strings on and off.
                    if s[i] == b'\\' || !s[i].is_ascii() {
                        return None;
                    }
                    i += 1;
                }
                if i >= s.len() || s.get(i + 1) == Some(&b'\'') {
                    return None;
                }
                i += 1;
                push(&mut out, b"'?'");
                this = Last::String;
            }
            b'0'..=b'9' | b'.' if b != b'.' || s.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i = number_end(s, i)?;
                push(&mut out, b"?");
            }
            b'$' => {
                i += 1;
                let digits = i;
                while i < s.len() && s[i].is_ascii_digit() {
                    i += 1;
                }
                // `$tag$` dollar quotes, `$` alone, `$1abc`.
                if i == digits || s.get(i).is_some_and(|&c| is_name_part(c)) {
                    return None;
                }
                push(&mut out, b"$?");
            }
            b';' => {
                // One statement: only blanks may follow.
                if s[i + 1..]
                    .iter()
                    .all(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
                {
                    break;
                }
                return None;
            }
            // sqlparser reads `._` as a period only right after a name
            // (`t._c`), and refuses it elsewhere (`t ._c`), where PostgreSQL
            // reads the same name: not shaped.
            b'.' if s.get(i + 1) == Some(&b'_')
                && !(i > 0 && (is_name_part(s[i - 1]) || s[i - 1] == b'"')) =>
            {
                return None;
            }
            b',' | b'(' | b')' | b'[' | b']' | b'.' | b':' => {
                // `::` and `:=` stay one token, as PostgreSQL reads them.
                i += 1;
                if b == b':' && matches!(s.get(i), Some(b':' | b'=')) {
                    i += 1;
                }
                push(&mut out, &s[start..i]);
            }
            _ if is_operator(b) => {
                while i < s.len() && is_operator(s[i]) {
                    i += 1;
                }
                let op = &s[start..i];
                if op.windows(2).any(|w| w == b"--" || w == b"/*") {
                    return None;
                }
                // sqlparser drops the character after `&>` (the decider
                // refuses such texts): not shaped unless a blank follows.
                if let Some(p) = op.windows(2).position(|w| w == b"&>")
                    && !matches!(
                        s.get(start + p + 2),
                        None | Some(b' ' | b'\t' | b'\n' | b'\r')
                    )
                {
                    return None;
                }
                push(&mut out, op);
            }
            // Form feed, vertical tab, other controls, backslash, braces.
            _ => return None,
        }
        last = this;
    }
    out.starts_with("SELECT ").then_some(out)
}

/// Where the unsigned number starting at `i` ends, or `None` when a name
/// character or a dot follows it (`1abc`, `1..2`, `0x1F`: read differently by
/// PostgreSQL versions, or not at all).
fn number_end(s: &[u8], mut i: usize) -> Option<usize> {
    let digits = |s: &[u8], mut i: usize| {
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    i = digits(s, i);
    if s.get(i) == Some(&b'.') {
        i = digits(s, i + 1);
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(s.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if !s.get(j).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        i = digits(s, j);
    }
    if s.get(i).is_some_and(|&c| is_name_part(c) || c == b'.') {
        return None;
    }
    Some(i)
}

/// The shape sqlparser's tokenizer gives the same text (literals of every kind
/// blanked alike): the reference [`shape`] is tested against, never coarser
/// than it.
#[doc(hidden)]
pub fn tokenizer_shape(sql: &str) -> Option<String> {
    if !starts_with_select(sql) {
        return None;
    }
    crate::classify::shape_of(sql).filter(|s| s.starts_with("SELECT "))
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
        assert_eq!(
            a.as_deref(),
            Some("SELECT ABALANCE FROM PGBENCH_ACCOUNTS WHERE AID = ?")
        );
        assert_eq!(
            a,
            shape("SELECT abalance\n\tFROM PGBENCH_ACCOUNTS WHERE aid=1.5e-3;")
        );
        assert_eq!(
            shape("select * from t where a = 'x' and b = $1 and c = .5").as_deref(),
            Some("SELECT * FROM T WHERE A = '?' AND B = $? AND C = ?")
        );
        assert_ne!(
            a,
            shape("select abalance from pgbench_accounts where aid = '42'")
        );
        assert_ne!(
            a,
            shape("select abalance from pgbench_accounts where aid = $1")
        );
        assert_ne!(
            shape("select * from t"),
            shape("select * from \"T\""),
            "quoted names stay"
        );
        assert_eq!(
            shape("select \"Mixed Case\".x from \"Mixed Case\"").as_deref(),
            Some("SELECT \"Mixed Case\" . X FROM \"Mixed Case\"")
        );
        assert_ne!(shape("select * from t"), shape("select * from u"));
        assert_ne!(shape("select a >= 1"), shape("select a > = 1"));
        // Found by the `shape` fuzz target: `:=` is one token.
        assert_ne!(shape("select f(a := 1)"), shape("select f(a : = 1)"));
        assert!(shape("select t._c, \"T\"._c from t").is_some());
        assert_eq!(
            shape("select x::int, y[1], f(a, b)").as_deref(),
            Some("SELECT X :: INT , Y [ ? ] , F ( A , B )")
        );
    }

    #[test]
    fn what_the_scanner_is_not_sure_of_has_no_shape() {
        for sql in [
            "select 1; select 2",
            "select 1;\nselect 2",
            "select 1 -- comment",
            "select /* c */ 1",
            "select 1 +-- comment\n 2",
            "select 1 */* c */ 2",
            "select E'a\\'b'",
            "select e'x'",
            "select B'101'",
            "select X'ff'",
            "select N'x'",
            "select U&'d\\0061t'",
            "select U&\"d\\0061t\"",
            "select 'it''s'",
            "select 'back\\slash'",
            "select 'a'\n'b'",
            "select 'a' 'b'",
            "select $$dollar$$",
            "select $tag$x$tag$",
            "select $",
            "select $1abc",
            "select 0x1F",
            "select 1_000",
            "select 123abc",
            "select 1e",
            "select 1e+",
            "select 1..2",
            "select 1.5.2",
            "select 'unterminated",
            "select \"unterminated",
            "select \"\"",
            "select \"a\"\"b\"",
            "select 'caf\u{e9}'",
            "select caf\u{e9}",
            "select\u{a0}1",
            "select 1\x0b",
            "select 1\x0c",
            "select {1}",
            // Found by the `shape` fuzz target: shaped like `a &> 'x'`,
            // which the tokenizer reads, while it cannot read this one.
            "select a &>'x'",
            "select a &>b",
            // Found by the `shape` fuzz target: `t ._c` is refused by the
            // tokenizer, `t._c` read.
            "select t ._c from t",
            "select (t)._c from t",
            "select a\\b",
            "with x as (select 1) select * from x",
            "explain (analyze 0) delete from t",
            "delete from t where 1 = 1",
            "select",
            "selectx from t",
        ] {
            assert_eq!(shape(sql), None, "{sql:?}");
        }
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
