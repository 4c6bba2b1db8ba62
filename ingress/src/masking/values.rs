//! What evidence, approval requests and logs show of the values a statement
//! sends when a mask rule applies to its caller: the decider says which
//! literals and bind parameters target a masked column (shown with that
//! column's method), which target none (shown as sent), and the rest are
//! withheld; and where each value and comment stands in the text, so that the
//! text is shown without being read again. A decision that says nothing (an
//! older decider) withholds all.

use std::borrow::Cow;

use gatehouse_schemas::decision::{Decision, SpanKind, TextSpan, ValueMasks};
use gatehouse_schemas::evidence::Param;

use super::method;
use crate::evidence::hex;
use crate::protocol::codec;

/// How a statement's bind parameters are recorded.
#[derive(Debug, Clone, Copy)]
pub enum ParamView<'a> {
    /// No mask applies to the caller: as sent.
    Clear,
    /// A mask applies and nothing says where the values go: lengths only.
    Withheld,
    /// As the decider placed them.
    Placed(&'a ValueMasks),
}

impl<'a> ParamView<'a> {
    /// The view for a statement decided as `d` (`None`: a statement prepared
    /// with SQL `PREPARE`, decided then, in a session whose caller is
    /// `masked_caller`).
    pub fn of(d: Option<&'a Decision>, masked_caller: bool) -> Self {
        match d {
            Some(Decision {
                values: Some(v), ..
            }) => Self::Placed(v),
            Some(d) if d.verdict.masks().is_some() => Self::Withheld,
            Some(_) => Self::Clear,
            None if masked_caller => Self::Withheld,
            None => Self::Clear,
        }
    }
}

/// Whether a mask rule applies to the caller of a statement decided as `d`.
pub fn masked_caller(d: &Decision) -> bool {
    d.values.is_some() || d.verdict.masks().is_some()
}

/// What evidence shows of a text none of whose values can be placed.
pub const WITHHELD: &str = "<statement text withheld: it holds values under a mask>";

/// The statement text as evidence and logs show it.
pub fn shown_sql<'s>(d: &Decision, sql: &'s str, key: &[u8]) -> Cow<'s, str> {
    match &d.values {
        Some(v) => Cow::Owned(shown(sql, v, key)),
        None if d.verdict.masks().is_some() => Cow::Borrowed(WITHHELD),
        None => Cow::Borrowed(sql),
    }
}

/// `sql` under `masks`, its values and comments where `masks.spans` places
/// them: each literal that targets a masked column replaced by its masked
/// value (quoted; NULL when the method shows none), each literal known to
/// target none kept, every other literal `?`; placeholders kept; comments
/// dropped. Spans that do not fit the text (another number of values than
/// the decided text's, or not on its character boundaries) withhold every
/// literal, or the whole text.
pub fn shown(sql: &str, masks: &ValueMasks, key: &[u8]) -> String {
    let Some(spans) = masks.spans.as_deref() else {
        return WITHHELD.to_owned();
    };
    let values = spans
        .iter()
        .filter(|s| !matches!(s.kind, SpanKind::Comment))
        .count();
    let placed = u32::try_from(values).is_ok_and(|n| n == masks.values);
    render(sql, spans, |ordinal, content| {
        if !placed {
            return None;
        }
        if let Some(m) = masks.literals.iter().find(|m| m.index == ordinal) {
            return Some(
                match content.and_then(|v| method::apply(&m.method, v, key)) {
                    Some(shown) => format!("'{}'", shown.replace('\'', "''")),
                    // No value to show (NULL method, or a literal written with
                    // escapes: its value is not at hand).
                    None if content.is_some() => "NULL".to_owned(),
                    None => "?".to_owned(),
                },
            );
        }
        masks
            .clear_literals
            .contains(&ordinal)
            .then(|| content_or_written(sql, spans, ordinal))
            .flatten()
    })
    .unwrap_or_else(|| WITHHELD.to_owned())
}

/// The literal of ordinal `ordinal` as written.
fn content_or_written(sql: &str, spans: &[TextSpan], ordinal: u32) -> Option<String> {
    let s = spans
        .iter()
        .filter(|s| !matches!(s.kind, SpanKind::Comment))
        .nth(usize::try_from(ordinal).ok()?)?;
    sql.get(s.start as usize..s.end as usize).map(str::to_owned)
}

/// Copies `sql`, dropping comments, keeping placeholders, and writing each
/// literal as `literal(ordinal, its value's bytes)` says (`None`: `?`).
/// `None` when a span does not fit the text.
fn render(
    sql: &str,
    spans: &[TextSpan],
    literal: impl Fn(u32, Option<&str>) -> Option<String>,
) -> Option<String> {
    let mut out = String::with_capacity(sql.len());
    let mut at = 0usize;
    let mut ordinal = 0u32;
    for s in spans {
        let (start, end) = (s.start as usize, s.end as usize);
        if start < at || end < start {
            return None;
        }
        out.push_str(sql.get(at..start)?);
        let written = sql.get(start..end)?;
        match &s.kind {
            SpanKind::Comment => out.push(' '),
            SpanKind::Param => {
                out.push_str(written);
                ordinal += 1;
            }
            SpanKind::Literal { content } => {
                let content = match content {
                    Some((a, b)) => Some(sql.get(*a as usize..*b as usize)?),
                    None => None,
                };
                match literal(ordinal, content) {
                    Some(shown) => out.push_str(&shown),
                    None => out.push('?'),
                }
                ordinal += 1;
            }
        }
        at = end;
    }
    out.push_str(sql.get(at..)?);
    Some(out)
}

/// A `Bind`'s parameters as evidence records them: values past `budget` bytes
/// in all withheld (their lengths kept); under a mask, as `view` says.
pub fn recorded_params(
    b: &codec::Bind<'_>,
    view: ParamView<'_>,
    mut budget: usize,
    key: &[u8],
) -> Vec<Param> {
    let withheld = |v: &[u8]| Param::Withheld(u32::try_from(v.len()).unwrap_or(u32::MAX));
    b.params
        .iter()
        .zip(1u32..)
        .map(|((binary, value), n)| {
            let Some(v) = value else {
                return Param::Null;
            };
            match view {
                ParamView::Clear => {}
                ParamView::Withheld => return withheld(v),
                ParamView::Placed(masks) => {
                    if let Some(m) = masks.params.iter().find(|m| m.index == n) {
                        // A binary value's type is not known here: withheld.
                        return match (binary, std::str::from_utf8(v)) {
                            (false, Ok(text)) => match method::apply(&m.method, text, key) {
                                Some(shown) => Param::Masked(shown),
                                None => withheld(v),
                            },
                            _ => withheld(v),
                        };
                    }
                    if !masks.clear_params.contains(&n) {
                        return withheld(v);
                    }
                }
            }
            if v.len() > budget {
                return withheld(v);
            }
            budget -= v.len();
            match (binary, std::str::from_utf8(v)) {
                (false, Ok(text)) => Param::Text(text.to_owned()),
                _ => Param::Binary(hex(v)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_schemas::decision::{MaskMethod, ValueMask};

    fn span(sql: &str, token: &str, kind: SpanKind) -> TextSpan {
        let start = sql.find(token).unwrap();
        TextSpan {
            start: start as u32,
            end: (start + token.len()) as u32,
            kind,
        }
    }

    fn literal(sql: &str, token: &str) -> TextSpan {
        let s = span(sql, token, SpanKind::Literal { content: None });
        let quoted = token.starts_with('\'');
        let content = if quoted {
            (s.start + 1, s.end - 1)
        } else {
            (s.start, s.end)
        };
        TextSpan {
            kind: SpanKind::Literal {
                content: Some(content),
            },
            ..s
        }
    }

    #[test]
    fn literals_are_masked_kept_or_withheld_and_comments_dropped() {
        let sql = "insert into t (name, ssn, n) values ('ann', '123-45-6789', 3) -- 987-65-4321\n";
        let masks = ValueMasks {
            values: 3,
            literals: vec![ValueMask {
                index: 1,
                column: "*.t.ssn".into(),
                method: MaskMethod::Redact,
            }],
            clear_literals: vec![0],
            spans: Some(vec![
                literal(sql, "'ann'"),
                literal(sql, "'123-45-6789'"),
                {
                    let at = sql.find(", 3)").unwrap() as u32 + 2;
                    TextSpan {
                        start: at,
                        end: at + 1,
                        kind: SpanKind::Literal {
                            content: Some((at, at + 1)),
                        },
                    }
                },
                span(sql, "-- 987-65-4321\n", SpanKind::Comment),
            ]),
            ..Default::default()
        };
        assert_eq!(
            shown(sql, &masks, b"k"),
            "insert into t (name, ssn, n) values ('ann', '****', ?)  "
        );
        // Another number of values: the decided text's numbering does not fit.
        let fewer = ValueMasks {
            values: 4,
            ..masks.clone()
        };
        let out = shown(sql, &fewer, b"k");
        assert_eq!(out, "insert into t (name, ssn, n) values (?, ?, ?)  ");
        // Spans that do not fit the text withhold it all.
        assert_eq!(shown("select 1", &masks, b"k"), WITHHELD);
        let unread = ValueMasks {
            spans: None,
            ..masks
        };
        assert_eq!(shown(sql, &unread, b"k"), WITHHELD);
    }

    #[test]
    fn a_masked_literal_written_with_escapes_is_withheld() {
        let sql = "select E'12\\x', 'it''s'";
        let masks = ValueMasks {
            values: 2,
            literals: vec![
                ValueMask {
                    index: 0,
                    column: "c".into(),
                    method: MaskMethod::Partial {
                        keep_first: 0,
                        keep_last: 1,
                    },
                },
                ValueMask {
                    index: 1,
                    column: "c".into(),
                    method: MaskMethod::Null,
                },
            ],
            spans: Some(vec![
                span(sql, "E'12\\x'", SpanKind::Literal { content: None }),
                literal(sql, "'it''s'"),
            ]),
            ..Default::default()
        };
        assert_eq!(shown(sql, &masks, b"k"), "select ?, NULL");
    }
}
