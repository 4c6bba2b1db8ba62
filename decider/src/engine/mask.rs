//! Masking a statement's verdict: which output columns a masked caller's
//! statement shows masked, or why it is refused; and what evidence may show of
//! the values its text carries.

use std::collections::{BTreeMap, BTreeSet};

use gatehouse_schemas::decision::{
    CallKind, Detector, MaskColumn, MaskOutput, ValueMask, ValueMasks, Verdict,
};

use crate::analysis::StatementAnalysis;
use crate::callees::Callees;
use crate::classify::{STATISTICS_FUNCTIONS, STATISTICS_RELATIONS};
use crate::lineage::{Item, Source, StatementLineage, Use};
use crate::policy::{CompiledRule, MaskTarget, Policy};

impl Policy {
    /// Masks a statement that runs: which output columns, or why it cannot be
    /// masked precisely (then it is refused). `verdict` is the statement's
    /// verdict before masking.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn mask_statement(
        &self,
        index: usize,
        verdict: Verdict,
        a: &StatementAnalysis,
        lineage: Result<&StatementLineage, &str>,
        callees: &Callees<'_>,
        masking: &[(&CompiledRule, &MaskTarget)],
        detecting: &[&CompiledRule],
    ) -> (Verdict, Option<String>) {
        // Every mask rule that applies to the caller masks every statement it
        // runs: a rule's `classes` and `objects` say what it allows, not what it
        // masks (a COPY or FETCH allowed by another rule is masked too).
        let applicable: Vec<&(&CompiledRule, &MaskTarget)> = masking.iter().collect();
        if (applicable.is_empty() && detecting.is_empty())
            || !matches!(
                verdict,
                Verdict::Allow | Verdict::Mask { .. } | Verdict::Approve { .. }
            )
        {
            return (
                match verdict {
                    // An exempt caller: the mask rule lets it through unmasked.
                    Verdict::Mask { .. } => Verdict::Allow,
                    v => v,
                },
                None,
            );
        }
        // A statement held for approval stays held, and once approved its
        // results are masked like any other's: the hold carries the masks.
        let hold = match verdict {
            Verdict::Approve {
                reason, approvers, ..
            } => Some((reason, approvers)),
            _ => None,
        };
        // Detectors of rules that name no columns for them scan every text
        // output column; the others scan theirs (as columns with the
        // `detect` method, which only masks what the detectors find).
        let detect: Vec<Detector> = detecting
            .iter()
            .filter(|r| r.detect.is_empty())
            .flat_map(|r| r.rule.detectors.iter().copied())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let masked = move |columns, outputs| match hold {
            Some((reason, approvers)) => Verdict::Approve {
                reason,
                approvers,
                columns,
                outputs,
                detect,
            },
            None => Verdict::Mask {
                columns,
                outputs,
                detect,
            },
        };
        let rule_of_first = applicable
            .first()
            .map(|(r, _)| r)
            .or(detecting.first())
            .map(|r| r.rule.id.clone())
            .unwrap_or_default();
        let columns: Vec<MaskColumn> = applicable
            .iter()
            .map(|p| (p.0, p.1))
            .chain(
                detecting
                    .iter()
                    .flat_map(|r| r.detect.iter().map(move |m| (*r, m))),
            )
            .map(|(r, m)| MaskColumn {
                column: m.pattern.clone(),
                method: m.method.clone(),
                class: m.class.clone(),
                rule: r.rule.id.clone(),
            })
            .collect();
        let refuse = |why: String, rule: &str| {
            (
                Verdict::Block {
                    reason: format!("masking could not be guaranteed: {why}"),
                },
                Some(rule.to_owned()),
            )
        };
        // Which targets a source may carry.
        let hits = |s: &Source| -> Vec<&(&CompiledRule, &MaskTarget)> {
            applicable
                .iter()
                .copied()
                .filter(|(_, m)| self.carries(m, s))
                .collect()
        };
        let touches = |tables: &std::collections::BTreeSet<crate::ObjectRef>| {
            tables
                .iter()
                .chain(a.reads.iter())
                .chain(a.writes.iter())
                .any(|t| {
                    applicable
                        .iter()
                        .any(|(_, m)| m.may_match_table(&self.resolve(t)))
                })
        };
        if let Some(why) = callees.masked_refusal(&a.calls) {
            return refuse(why, &rule_of_first);
        }
        let lineage = match lineage {
            Ok(l) => l,
            Err(e) => {
                if touches(&Default::default()) {
                    return refuse(
                        format!("Gatehouse could not trace this statement's columns ({e})"),
                        &rule_of_first,
                    );
                }
                return (masked(columns, Vec::new()), None);
            }
        };
        if let Some(why) = &lineage.unreadable_view {
            return refuse(why.clone(), &rule_of_first);
        }
        // Statistics and other sessions' statements show column values that
        // no output column carries.
        let statistics = lineage
            .tables
            .iter()
            .find(|t| STATISTICS_RELATIONS.contains(&t.name.as_str()))
            .map(ToString::to_string)
            .or_else(|| {
                lineage
                    .calls
                    .iter()
                    .find(|f| {
                        f.kind == CallKind::Function
                            && STATISTICS_FUNCTIONS.contains(&f.name.as_str())
                    })
                    .map(ToString::to_string)
            });
        if let Some(what) = statistics {
            return refuse(
                format!(
                    "{what} shows values of table columns (statistics, or other sessions' statements) that Gatehouse cannot mask"
                ),
                &rule_of_first,
            );
        }
        if let Some(why) = callees.masked_refusal(&lineage.calls) {
            return refuse(why, &rule_of_first);
        }
        if let Some(why) = &lineage.unsupported
            && touches(&lineage.tables)
        {
            return refuse(
                format!("{why} over a table with masked columns"),
                &rule_of_first,
            );
        }
        // A value sent out of the statement is named as such first.
        let uses = lineage
            .predicates
            .iter()
            .filter(|(_, u)| *u == Use::Effect)
            .chain(lineage.predicates.iter().filter(|(_, u)| *u != Use::Effect));
        for (src, u) in uses {
            for (r, m) in hits(src) {
                if *u == Use::Equality && m.allow_equality {
                    continue;
                }
                let what = match u {
                    Use::Effect => format!(
                        "passes masked column {} to a function with effects beyond its result (a setting, a notification, a lock, a large object)",
                        m.pattern
                    ),
                    _ => format!(
                        "filters, joins, groups, orders on or copies masked column {}",
                        m.pattern
                    ),
                };
                return refuse(
                    format!(
                        "the statement {what} (rule \"{}\"); a masked caller may only read it",
                        r.rule.id
                    ),
                    &r.rule.id,
                );
            }
        }
        let mut outputs = Vec::new();
        let mut position = Some(0u32);
        for item in &lineage.items {
            match item {
                Item::Star(_) => position = None,
                Item::Output(o) => {
                    let matched: Vec<_> = o.reads.iter().flat_map(&hits).collect();
                    if let Some(strictest) =
                        matched.iter().max_by_key(|(_, m)| m.method.strictness())
                    {
                        match position {
                            Some(p) => outputs.push(MaskOutput {
                                statement: u32::try_from(index).unwrap_or(u32::MAX),
                                position: p,
                                source: strictest.1.pattern.clone(),
                                // Several masked columns in one value: the
                                // strictest method shows the least of all.
                                method: strictest.1.method.clone(),
                            }),
                            // After a `*`, a direct column is still found by its
                            // table OID; a derived one cannot be placed.
                            None if o.direct => {}
                            None => {
                                return refuse(
                                    format!(
                                        "an output column derived from masked column {} follows a * whose width Gatehouse cannot know; list the columns",
                                        strictest.1.pattern
                                    ),
                                    &strictest.0.rule.id,
                                );
                            }
                        }
                    } else if let Some(p) = position {
                        // A value derived from a column whose text detectors
                        // scan is scanned too (not placeable after a `*`:
                        // detectors are defence in depth, not an exact mask).
                        for (r, m) in detecting
                            .iter()
                            .flat_map(|r| r.detect.iter().map(move |m| (r, m)))
                        {
                            if !o.direct && o.reads.iter().any(|s| self.carries(m, s)) {
                                outputs.push(MaskOutput {
                                    statement: u32::try_from(index).unwrap_or(u32::MAX),
                                    position: p,
                                    source: format!("{} (rule {})", m.pattern, r.rule.id),
                                    method: m.method.clone(),
                                });
                            }
                        }
                    }
                    position = position.map(|p| p + 1);
                }
            }
        }
        (masked(columns, outputs), Some(rule_of_first))
    }

    /// Whether values from (or towards) `s` may be masked by `m`.
    fn carries(&self, m: &MaskTarget, s: &Source) -> bool {
        match s {
            Source::Column { tables, column } => {
                tables.iter().any(|t| m.matches(&self.resolve(t), column))
            }
            Source::WholeRow(t) => m.may_match_table(&self.resolve(t)),
        }
    }

    /// What evidence may show of the text's values (see [`ValueMasks`]): a
    /// value the lineage places towards a masked column is masked with the
    /// strictest method there; one it places only towards other columns is
    /// clear; one it does not place (or a text it cannot read) is withheld.
    pub(super) fn value_masks(
        &self,
        sql: &str,
        lineages: Option<&Result<Vec<StatementLineage>, String>>,
        masking: &[(&CompiledRule, &MaskTarget)],
    ) -> ValueMasks {
        let Ok(tokens) = crate::values::value_tokens(sql) else {
            return ValueMasks::default();
        };
        let mut out = ValueMasks {
            values: u32::try_from(tokens.len()).unwrap_or(u32::MAX),
            ..ValueMasks::default()
        };
        let Some(Ok(lineages)) = lineages else {
            return out;
        };
        let n = tokens.len();
        let mut seen = vec![false; n];
        let mut masked: Vec<Option<&MaskTarget>> = vec![None; n];
        for (sources, ordinals) in lineages.iter().flat_map(|l| &l.values) {
            let strictest = sources
                .iter()
                .flat_map(|s| {
                    masking
                        .iter()
                        .filter(move |(_, m)| self.carries(m, s))
                        .map(|(_, m)| *m)
                })
                .max_by_key(|m| m.method.strictness());
            for &o in ordinals {
                let Some(i) = usize::try_from(o).ok().filter(|i| *i < n) else {
                    continue;
                };
                seen[i] = true;
                if let Some(m) = strictest
                    && masked[i].is_none_or(|p| m.method.strictness() > p.method.strictness())
                {
                    masked[i] = Some(m);
                }
            }
        }
        let mask = |index: u32, m: &MaskTarget| ValueMask {
            index,
            column: m.pattern.clone(),
            method: m.method.clone(),
        };
        // Per parameter: clear only if every use of it is; masked if any is.
        let mut params: BTreeMap<u32, (bool, Option<&MaskTarget>)> = BTreeMap::new();
        for ((i, t), index) in tokens.iter().enumerate().zip(0u32..) {
            match t.param {
                Some(p) => {
                    let e = params.entry(p).or_insert((true, None));
                    e.0 &= seen[i] && masked[i].is_none();
                    if let Some(m) = masked[i]
                        && e.1
                            .is_none_or(|q| m.method.strictness() > q.method.strictness())
                    {
                        e.1 = Some(m);
                    }
                }
                None => match masked[i] {
                    Some(m) => out.literals.push(mask(index, m)),
                    None if seen[i] => out.clear_literals.push(index),
                    None => {}
                },
            }
        }
        for (p, (clear, m)) in params {
            match m {
                Some(m) => out.params.push(mask(p, m)),
                None if clear => out.clear_params.push(p),
                None => {}
            }
        }
        out
    }
}
