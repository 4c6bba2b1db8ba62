//! What evidence, approval requests and logs show of the values a statement
//! sends when a mask rule applies to its caller: the decider says which
//! literals and bind parameters target a masked column (shown with that
//! column's method), which target none (shown as sent), and the rest are
//! withheld. A decision that says nothing (an older decider) withholds all.

use std::borrow::Cow;

use gatehouse_decider::classify::literal_free;
use gatehouse_decider::values::evidence_text;
use gatehouse_schemas::decision::{Decision, ValueMasks};
use gatehouse_schemas::evidence::Param;

use super::method;
use crate::codec;
use crate::evidence::hex;

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

/// The statement text as evidence and logs show it.
pub fn shown_sql<'s>(d: &Decision, sql: &'s str, key: &[u8]) -> Cow<'s, str> {
    match &d.values {
        Some(v) => Cow::Owned(
            evidence_text(sql, v, |value, m| method::apply(m, value, key))
                .unwrap_or_else(|| literal_free(sql)),
        ),
        None if d.verdict.masks().is_some() => Cow::Owned(literal_free(sql)),
        None => Cow::Borrowed(sql),
    }
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
