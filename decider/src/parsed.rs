//! A SQL text read once: tokenized (with locations, as the parser reads it)
//! and parsed. Everything the decider tells about a text — its analysis, its
//! lineage, where its values and comments stand, what it does with rows that
//! come without a description — is read from one [`Parsed`]; nothing reads the
//! text again. (Texts inside the text, `query_to_xml('select ...')`, and the
//! statement an `EXECUTE` runs are other texts, read once each.)

use std::cell::Cell;

use gatehouse_schemas::decision::{SpanKind, TextSpan};
use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Whitespace};

use crate::values::{ValueToken, is_value, literal_text, offsets};

thread_local! {
    /// Texts tokenized and parsed on this thread.
    static READS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// How many times the decider has run the tokenizer and the parser over a
/// text on this thread (a decision runs on one thread: what a test counts
/// per decision).
pub fn reads() -> (u64, u64) {
    READS.get()
}

/// One text, read.
pub(crate) struct Parsed<'a> {
    /// The text.
    pub sql: &'a str,
    /// Each statement's normalized text (literals blanked, names folded),
    /// split at semicolons by the tokens.
    pub normalized: Vec<String>,
    /// Whether [`crate::shape`] of the text is `Some`.
    pub shaped: bool,
    /// Its value tokens (literals and placeholders), in order, when asked for.
    pub values: Option<Vec<ValueToken>>,
    /// Where its values and comments stand, for evidence, when asked for.
    pub spans: Option<Vec<TextSpan>>,
    /// The statements, or the parser's message.
    pub statements: Result<Vec<Statement>, String>,
}

/// The text's tokens as the parser reads them.
pub(crate) fn tokenize(sql: &str) -> Result<Vec<TokenWithSpan>, String> {
    READS.set((READS.get().0 + 1, READS.get().1));
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .with_unescape(true)
        .tokenize_with_location()
        .map_err(|e| e.to_string())?;
    check_glued_ampersand_arrow(sql, &tokens)?;
    Ok(tokens)
}

/// sqlparser (0.63, and 0.64 still: its tokenizer's `&` arm calls `next()`
/// before `consume_and_return`) reads the operator `&>` and then drops the
/// character after it (it consumes one character too many), where PostgreSQL
/// reads that character: `box '(0,0),(1,1)' &>pg_read_file('f')::box` would be decided as
/// a call of `g_read_file`. A `&>` followed by anything but a blank is
/// refused. (Found by the `shape` fuzz target: the scanner and the tokenizer
/// disagreed on `a &>'x'`.)
fn check_glued_ampersand_arrow(sql: &str, tokens: &[TokenWithSpan]) -> Result<(), String> {
    for t in tokens {
        if t.token != Token::AmpersandRightAngleBracket {
            continue;
        }
        let at = t.span.start;
        // Lines and columns count from 1; the character after `&>` is two on.
        let after = usize::try_from(at.line)
            .ok()
            .and_then(|l| sql.split('\n').nth(l.checked_sub(1)?))
            .zip(usize::try_from(at.column).ok())
            .and_then(|(line, c)| line.chars().nth(c.checked_sub(1)? + 2));
        if after.is_some_and(|c| !c.is_whitespace()) {
            return Err(format!(
                "the operator &> at line {}, column {} must be followed by a blank",
                at.line, at.column
            ));
        }
    }
    Ok(())
}

/// Parses a token stream into statements, refusing a stream the parser stopped
/// reading before its end (sqlparser's `parse_statements` quietly stops at a
/// stray `END`).
pub(crate) fn parse(tokens: Vec<TokenWithSpan>) -> Result<Vec<Statement>, String> {
    READS.set((READS.get().0, READS.get().1 + 1));
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let statements = parser.parse_statements().map_err(|e| e.to_string())?;
    let next = parser.peek_token();
    if next.token != Token::EOF {
        return Err(format!(
            "sql parser error: unexpected {} at {}",
            next.token, next.span.start
        ));
    }
    Ok(statements)
}

impl<'a> Parsed<'a> {
    /// Reads `sql`; `values`: also where its values and comments stand (a
    /// caller a mask rule applies to). `Err`: the text cannot be read at all
    /// (it does not tokenize, or nests too deep, or hides a name behind
    /// non-ASCII white space); a text that tokenizes but does not parse comes
    /// back with the parser's message in [`Parsed::statements`].
    pub fn read(sql: &'a str, values: bool) -> Result<Self, String> {
        crate::classify::check_unicode_spaces(sql)?;
        let tokens = tokenize(sql)?;
        crate::classify::check_nesting(&tokens)?;
        let normalized = crate::classify::normalized_pieces(&tokens);
        let shaped = crate::classify::has_shape(sql, &normalized);
        let (values, spans) = if values {
            let (v, s) = values_and_spans(sql, &tokens);
            (Some(v), Some(s))
        } else {
            (None, None)
        };
        Ok(Self {
            sql,
            normalized,
            shaped,
            values,
            spans,
            statements: parse(crate::classify::table_queries(tokens)),
        })
    }
}

/// The value tokens of a text, and where each value and comment stands.
fn values_and_spans(sql: &str, tokens: &[TokenWithSpan]) -> (Vec<ValueToken>, Vec<TextSpan>) {
    let at = offsets(sql, tokens);
    let end_of = |i: usize| at.get(i + 1).copied().unwrap_or(sql.len());
    let pos = |b: usize| u32::try_from(b).unwrap_or(u32::MAX);
    let mut values = Vec::new();
    let mut spans = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let (start, end) = (at[i], end_of(i));
        let kind = match &t.token {
            Token::Whitespace(Whitespace::SingleLineComment { .. })
            | Token::Whitespace(Whitespace::MultiLineComment(_)) => SpanKind::Comment,
            Token::Placeholder(p) => {
                values.push(ValueToken {
                    start,
                    end,
                    param: p.strip_prefix('$').and_then(|n| n.parse().ok()),
                    location: (t.span.start.line, t.span.start.column),
                });
                SpanKind::Param
            }
            v if is_value(v) => {
                values.push(ValueToken {
                    start,
                    end,
                    param: None,
                    location: (t.span.start.line, t.span.start.column),
                });
                // Bytes of the token that spell its value exactly (the value
                // of a literal written with escapes has none).
                let value = literal_text(v);
                let written = sql.get(start..end).unwrap_or_default();
                let content = written
                    .find(&value)
                    .map(|at| (pos(start + at), pos(start + at + value.len())));
                SpanKind::Literal { content }
            }
            _ => continue,
        };
        spans.push(TextSpan {
            start: pos(start),
            end: pos(end),
            kind,
        });
    }
    (values, spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(sql: &str) -> Vec<(String, &'static str, Option<String>)> {
        let p = Parsed::read(sql, true).unwrap();
        p.spans
            .unwrap()
            .iter()
            .map(|s| {
                let text = sql[s.start as usize..s.end as usize].to_owned();
                match &s.kind {
                    SpanKind::Literal { content } => (
                        text,
                        "literal",
                        content.map(|(a, b)| sql[a as usize..b as usize].to_owned()),
                    ),
                    SpanKind::Param => (text, "param", None),
                    SpanKind::Comment => (text, "comment", None),
                }
            })
            .collect()
    }

    #[test]
    fn values_and_comments_are_placed_and_escaped_literals_have_no_content() {
        let got = spans("select 'a', 'it''s', E'x\\n', $$d$$, 12, $1 -- c\n/* m */");
        let want: Vec<(String, &str, Option<String>)> = vec![
            ("'a'".into(), "literal", Some("a".into())),
            ("'it''s'".into(), "literal", None),
            ("E'x\\n'".into(), "literal", None),
            ("$$d$$".into(), "literal", Some("d".into())),
            ("12".into(), "literal", Some("12".into())),
            ("$1".into(), "param", None),
            ("-- c".into(), "comment", None),
            ("/* m */".into(), "comment", None),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_text_is_tokenized_and_parsed_once() {
        let before = reads();
        let p = Parsed::read("select a from t where b = 'x'; select 2", true).unwrap();
        let after = reads();
        assert_eq!(p.statements.unwrap().len(), 2);
        assert_eq!(p.values.unwrap().len(), 2);
        assert_eq!(p.normalized.len(), 2);
        assert_eq!((after.0 - before.0, after.1 - before.1), (1, 1));
    }
}
