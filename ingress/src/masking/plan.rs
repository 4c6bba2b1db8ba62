//! A mask verdict compiled for matching result columns: which table columns
//! it masks (by origin), which outputs of which statement (by the decider's
//! lineage), and which content detectors scan every text column; and each
//! result column's mask, from its origin and its position.

use std::sync::Arc;

use gatehouse_schemas::decision::{Decision, MaskColumn, MaskMethod, MaskOutput};
use wildmatch::WildMatch;

use super::catalog::Catalog;
use super::copy::ColMask;
use super::wire::{Field, Kind};

/// The mask verdict of one SQL text, compiled for matching.
#[derive(Debug)]
pub struct MaskPlan {
    columns: Arc<Vec<(WildMatch, WildMatch, WildMatch, MaskColumn)>>,
    outputs: Vec<MaskOutput>,
    /// Content detectors for every text output column.
    detect: Option<MaskMethod>,
}

impl MaskPlan {
    /// The plan of a decision, when it masks.
    pub fn of(d: &Decision) -> Option<Arc<MaskPlan>> {
        let (columns, outputs) = d.verdict.masks()?;
        let columns = columns
            .iter()
            .filter_map(|c| {
                let mut parts = c.column.splitn(3, '.');
                let (s, t, col) = (parts.next()?, parts.next()?, parts.next()?);
                Some((
                    WildMatch::new(s),
                    WildMatch::new(t),
                    WildMatch::new(col),
                    c.clone(),
                ))
            })
            .collect();
        let detectors = d.verdict.detectors();
        Some(Arc::new(MaskPlan {
            columns: Arc::new(columns),
            outputs: outputs.to_vec(),
            detect: (!detectors.is_empty()).then(|| MaskMethod::Detect {
                detectors: detectors.to_vec(),
            }),
        }))
    }

    /// The plan of statement `index` alone, as statement 0 (a cursor's rows
    /// come back through a later FETCH).
    pub fn of_statement(&self, index: usize) -> Arc<MaskPlan> {
        Arc::new(MaskPlan {
            columns: self.columns.clone(),
            outputs: self
                .outputs
                .iter()
                .filter(|o| o.statement as usize == index)
                .map(|o| MaskOutput {
                    statement: 0,
                    ..o.clone()
                })
                .collect(),
            detect: self.detect.clone(),
        })
    }

    /// Masks by origin only (a statement whose lineage Gatehouse never saw).
    pub fn blind() -> Arc<MaskPlan> {
        Arc::new(MaskPlan {
            columns: Arc::new(Vec::new()),
            outputs: Vec::new(),
            detect: None,
        })
    }

    /// Whether the plan masks anything at all.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty() && self.outputs.is_empty() && self.detect.is_none()
    }

    /// The strictest method masking `schema.table.column`, if any.
    pub fn column_method(&self, schema: &str, table: &str, column: &str) -> Option<MaskMethod> {
        strictest(
            self.columns
                .iter()
                .filter(|(s, t, c, _)| s.matches(schema) && t.matches(table) && c.matches(column))
                .map(|(.., m)| &m.method),
        )
    }

    pub fn output_method(&self, statement: usize, position: usize) -> Option<MaskMethod> {
        strictest(
            self.outputs
                .iter()
                .filter(|o| o.statement as usize == statement && o.position as usize == position)
                .map(|o| &o.method),
        )
    }
}

/// The strictest of several methods; content detectors, the least strict,
/// combine (every detector of each scans the value).
pub fn strictest<'m>(methods: impl Iterator<Item = &'m MaskMethod>) -> Option<MaskMethod> {
    let mut best: Option<MaskMethod> = None;
    for m in methods {
        best = match (best, m) {
            (None, m) => Some(m.clone()),
            (
                Some(MaskMethod::Detect { detectors: mut a }),
                MaskMethod::Detect { detectors: b },
            ) => {
                for d in b {
                    if !a.contains(d) {
                        a.push(*d);
                    }
                }
                a.sort();
                Some(MaskMethod::Detect { detectors: a })
            }
            (Some(b), m) if m.strictness() > b.strictness() => Some(m.clone()),
            (b, _) => b,
        };
    }
    best
}

/// Relations of `fields` the catalog does not hold yet.
pub fn missing_relations(fields: &[Field], catalog: &Catalog) -> Option<Vec<u32>> {
    let missing: Vec<u32> = fields
        .iter()
        .filter(|f| f.table != 0 && catalog.get(f.table).is_none())
        .map(|f| f.table)
        .collect();
    (!missing.is_empty()).then_some(missing)
}

/// Each field's mask: from its origin column or the decider's output lineage,
/// the strictest of both; with the format it travels in.
pub fn field_masks(
    fields: &[Field],
    formats: Option<&[i16]>,
    plan: &MaskPlan,
    statement: usize,
) -> Vec<ColMask> {
    fields
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let by_output = plan.output_method(statement, i);
            let method = strictest(
                [
                    f.origin_method.as_ref(),
                    by_output.as_ref(),
                    plan.detect.as_ref(),
                ]
                .into_iter()
                .flatten(),
            )?;
            let binary = match formats {
                None => f.format == 1,
                Some([]) => false,
                Some([one]) => *one == 1,
                Some(all) => all.get(i).is_some_and(|x| *x == 1),
            };
            let kind = Kind::of(f.type_oid, binary);
            // Detectors scan text; a value of another type is left alone.
            if matches!(method, MaskMethod::Detect { .. }) && kind != Kind::Text {
                return None;
            }
            Some((method, kind))
        })
        .collect()
}

/// Sets each field's origin method from the catalog.
pub fn resolve_origins(fields: &mut [Field], plan: &MaskPlan, catalog: &Catalog) {
    for f in fields.iter_mut() {
        if f.table == 0 {
            continue;
        }
        let Some(rel) = catalog.get(f.table).filter(|r| r.kind != '?') else {
            // Looked up just before; gone only if invalidated meanwhile: mask.
            f.origin_method = Some(MaskMethod::Null);
            continue;
        };
        let own = rel
            .columns
            .get(&f.column)
            .and_then(|c| plan.column_method(&rel.schema, &rel.name, c));
        // A view column: masked when the view reads any masked column.
        let through_view: Vec<MaskMethod> = rel
            .reads
            .iter()
            .filter_map(|(s, t, c)| plan.column_method(s, t, c))
            .collect();
        f.origin_method = strictest(own.iter().chain(&through_view));
    }
}
