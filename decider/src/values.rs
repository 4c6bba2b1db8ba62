//! The values a statement text carries — its literals and `$n` placeholders,
//! numbered in order ("value tokens") — and the text as evidence shows it for a
//! caller under a mask: values that target a masked column masked, values
//! known to target none as written, any other withheld (`?`).

use gatehouse_schemas::decision::{MaskMethod, ValueMasks};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer, Whitespace};

/// One value token of a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueToken {
    /// Byte range in the text.
    pub start: usize,
    /// End of the byte range (exclusive).
    pub end: usize,
    /// `n` of a `$n` placeholder; `None` for a literal.
    pub param: Option<u32>,
    /// Where the tokenizer put it (what the parser's spans name).
    pub location: (u64, u64),
}

/// The text's tokens as the parser reads them (the same tokenizer settings
/// as `Parser::parse_sql`, so that spans in the tree match).
pub(crate) fn tokenize(sql: &str) -> Result<Vec<TokenWithSpan>, String> {
    Tokenizer::new(&PostgreSqlDialect {}, sql)
        .with_unescape(true)
        .tokenize_with_location()
        .map_err(|e| e.to_string())
}

/// Whether a token carries a value a client chose: a literal of any kind or a
/// placeholder. Everything else is syntax (keywords, names, operators).
fn is_value(t: &Token) -> bool {
    matches!(
        t,
        Token::Number(..)
            | Token::Placeholder(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::QuoteDelimitedStringLiteral(_)
            | Token::NationalQuoteDelimitedStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
    )
}

/// A literal token's value (what a mask method is applied to).
fn literal_text(t: &Token) -> String {
    match t {
        Token::Number(n, _) => n.clone(),
        Token::SingleQuotedString(s)
        | Token::DoubleQuotedString(s)
        | Token::EscapedStringLiteral(s)
        | Token::UnicodeStringLiteral(s)
        | Token::NationalStringLiteral(s)
        | Token::HexStringLiteral(s) => s.clone(),
        Token::DollarQuotedString(d) => d.value.clone(),
        other => other.to_string(),
    }
}

/// Byte offset of each token's start, found by walking the text with the
/// tokenizer's own line and column counting.
fn offsets(sql: &str, tokens: &[TokenWithSpan]) -> Vec<usize> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut chars = sql.char_indices().peekable();
    let (mut line, mut col) = (1u64, 1u64);
    for t in tokens {
        let Location { line: l, column: c } = t.span.start;
        while (line, col) < (l, c) {
            match chars.next() {
                Some((_, '\n')) => {
                    line += 1;
                    col = 1;
                }
                Some(_) => col += 1,
                None => break,
            }
        }
        out.push(chars.peek().map_or(sql.len(), |(i, _)| *i));
    }
    out
}

/// The text's value tokens, in order.
pub fn value_tokens(sql: &str) -> Result<Vec<ValueToken>, String> {
    let tokens = tokenize(sql)?;
    Ok(values_of(sql, &tokens))
}

pub(crate) fn values_of(sql: &str, tokens: &[TokenWithSpan]) -> Vec<ValueToken> {
    let at = offsets(sql, tokens);
    tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| is_value(&t.token))
        .map(|(i, t)| ValueToken {
            start: at[i],
            end: at.get(i + 1).copied().unwrap_or(sql.len()),
            param: match &t.token {
                Token::Placeholder(p) => p.strip_prefix('$').and_then(|n| n.parse().ok()),
                _ => None,
            },
            location: (t.span.start.line, t.span.start.column),
        })
        .collect()
}

/// The text as evidence and logs show it under `masks`: each literal that
/// targets a masked column replaced by `render` of its value (quoted; `None`
/// renders `NULL`), each literal known to target none kept, every other
/// literal `?`; placeholders kept; comments dropped. `None` when the text does
/// not tokenize or holds another number of values than the decided text did
/// (then the caller withholds every literal).
pub fn evidence_text(
    sql: &str,
    masks: &ValueMasks,
    render: impl Fn(&str, &MaskMethod) -> Option<String>,
) -> Option<String> {
    let tokens = tokenize(sql).ok()?;
    let at = offsets(sql, &tokens);
    let count = tokens.iter().filter(|t| is_value(&t.token)).count();
    if u32::try_from(count).ok()? != masks.values {
        return None;
    }
    let mut out = String::with_capacity(sql.len());
    let mut ordinal = 0u32;
    for (i, t) in tokens.iter().enumerate() {
        let end = at.get(i + 1).copied().unwrap_or(sql.len());
        let original = sql.get(at[i]..end).unwrap_or_default();
        match &t.token {
            Token::Whitespace(Whitespace::SingleLineComment { .. })
            | Token::Whitespace(Whitespace::MultiLineComment(_)) => out.push(' '),
            Token::Placeholder(_) => {
                out.push_str(original);
                ordinal += 1;
            }
            v if is_value(v) => {
                if let Some(m) = masks.literals.iter().find(|m| m.index == ordinal) {
                    match render(&literal_text(v), &m.method) {
                        Some(shown) => {
                            out.push('\'');
                            out.push_str(&shown.replace('\'', "''"));
                            out.push('\'');
                        }
                        None => out.push_str("NULL"),
                    }
                } else if masks.clear_literals.contains(&ordinal) {
                    out.push_str(original);
                } else {
                    out.push('?');
                }
                ordinal += 1;
            }
            _ => out.push_str(original),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_schemas::decision::ValueMask;

    #[test]
    fn value_tokens_are_numbered_with_their_byte_ranges() {
        let sql = "insert into t (a, b) values ($1, 'é''x'),\n  (2, E'y')";
        let v = value_tokens(sql).unwrap();
        let shown: Vec<&str> = v.iter().map(|t| &sql[t.start..t.end]).collect();
        assert_eq!(shown, ["$1", "'é''x'", "2", "E'y'"]);
        assert_eq!(v[0].param, Some(1));
        assert_eq!(v[1].param, None);
        assert_eq!(v[2].location, (2, 4));
    }

    #[test]
    fn evidence_text_masks_keeps_and_withholds() {
        let sql = "insert into t (name, ssn, n) values ('ann', '123-45-6789', 3) -- 987-65-4321\n";
        let masks = ValueMasks {
            values: 3,
            literals: vec![ValueMask {
                index: 1,
                column: "*.t.ssn".into(),
                method: MaskMethod::Redact,
            }],
            clear_literals: vec![0],
            ..Default::default()
        };
        let out = evidence_text(sql, &masks, |_, _| Some("****".into())).unwrap();
        assert_eq!(
            out,
            "insert into t (name, ssn, n) values ('ann', '****', ?)  \n"
        );
        // Another number of values: the decided text's numbering does not fit.
        let other = "insert into t (name, ssn, n) values ('ann', '123-45-6789', 3, 4)";
        assert!(evidence_text(other, &masks, |_, _| None).is_none());
        // Quotes in a shown value are doubled; NULL renders bare.
        let out = evidence_text("select 'a', 'b', 'c'", &masks, |v, _| {
            (v == "b").then(|| "it's".to_owned())
        })
        .unwrap();
        assert_eq!(out, "select 'a', 'it''s', ?");
    }
}
