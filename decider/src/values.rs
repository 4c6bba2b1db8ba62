//! The values a statement text carries — its literals and `$n` placeholders,
//! numbered in order ("value tokens"). For a caller under a mask, the decider
//! says which of them target a masked column (see `engine`), and where each
//! stands in the text (see `parsed`), so that evidence can show the text with
//! them masked, kept or withheld without reading it again.

use sqlparser::tokenizer::{Location, Token, TokenWithSpan};

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

/// Whether a token carries a value a client chose: a literal of any kind or a
/// placeholder. Everything else is syntax (keywords, names, operators).
pub(crate) fn is_value(t: &Token) -> bool {
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
pub(crate) fn literal_text(t: &Token) -> String {
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
pub(crate) fn offsets(sql: &str, tokens: &[TokenWithSpan]) -> Vec<usize> {
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
    let tokens = crate::parsed::tokenize(sql)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
