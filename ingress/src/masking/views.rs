//! Views for masking: a masked caller's statement is decided again with the
//! definitions of the views it reads, so that the decider's lineage sees
//! through them (`select upper(ssn) from v`, `v` a view over a masked table).
//!
//! The decider names the relations a masked caller's statement reads
//! ([`Decision::relations`]); the catalog tells which are views and fetches
//! their definitions; the decider is asked again with them, and again for the
//! views it finds inside those, up to [`MAX_VIEW_DEPTH`]. A caller no mask rule
//! applies to gets no relations, so it pays for none of this. The same path
//! serves both decision points (in-process and over NATS).
//!
//! The names any caller's statement may run functions through
//! ([`Decision::functions`]: calls, custom operators, casts to types not built
//! in) are looked up too, whoever the caller: when the catalog says a name
//! may run something other than what the decider assumed without it (a
//! function not built into PostgreSQL, say), the decider is asked again with
//! the catalog's answer ([`CatalogFacts::functions`]) and decides whether a
//! rule names those functions. A statement that calls no function pays for
//! none of this.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use gatehouse_decider::callees::as_assumed;
use gatehouse_decider::lineage::MAX_VIEW_DEPTH;
use gatehouse_schemas::StatementEvent;
use gatehouse_schemas::decision::{CatalogFacts, Decision, Resolution, ValueMasks, Verdict};

use super::catalog::{Catalog, Named};
use crate::decision::{DecisionError, DecisionPoint};

/// A decision, and until when it holds as far as the catalog is concerned.
#[derive(Debug)]
pub struct Decided {
    /// The verdict (a block when the views could not be resolved).
    pub decision: Arc<Decision>,
    /// `Some`: the decision depends on what the catalog said about views or
    /// functions, which holds until then (and until the catalog is emptied).
    pub catalog_until: Option<Instant>,
}

/// Decides `event` with `point`, resolving views for a masked caller and
/// functions for any caller.
/// Cancel safety: dropping it loses only the look-ups in flight.
pub async fn decide<D: DecisionPoint>(
    point: &D,
    catalog: &Catalog,
    event: &StatementEvent<'_>,
    prepared: &BTreeMap<String, String>,
) -> Result<Decided, DecisionError> {
    let mut facts = CatalogFacts::default();
    let mut decision = point.decide(event, prepared, &facts).await?;
    if decision.relations.is_empty() && decision.functions.is_empty() {
        return Ok(Decided {
            decision,
            catalog_until: None,
        });
    }
    let mut looked_up: HashSet<String> = HashSet::new();
    let mut until: Option<Instant> = None;
    let mut asked = 0;
    loop {
        let new: Vec<String> = decision
            .relations
            .iter()
            .filter(|r| !looked_up.contains(*r))
            .cloned()
            .collect();
        if new.is_empty() {
            break;
        }
        let (found, fresh) = match catalog.resolve(&new).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "masking_views_lookup_failed");
                return Ok(refused(
                    &decision,
                    "masking could not be guaranteed: the upstream catalog could not be read to tell the views among the relations it reads; retry later",
                ));
            }
        };
        until = Some(until.map_or(fresh, |u| u.min(fresh)));
        let mut added = false;
        for (name, named) in found {
            match &*named {
                Named::NotView => {}
                Named::View(qualified, def) => {
                    if !facts.views.contains_key(qualified) {
                        facts.views.insert(qualified.clone(), def.clone());
                        added = true;
                    }
                }
                Named::Ambiguous(all) => {
                    return Ok(refused(
                        &decision,
                        &format!(
                            "masking could not be guaranteed: relation name {name} may name any of {} (views among them), and Gatehouse cannot tell which the session's search_path picks; qualify it with its schema",
                            all.join(", ")
                        ),
                    ));
                }
            }
            looked_up.insert(name);
        }
        if !added {
            break;
        }
        asked += 1;
        if asked > MAX_VIEW_DEPTH {
            return Ok(refused(
                &decision,
                &format!(
                    "masking could not be guaranteed: the statement reads views nested more than {MAX_VIEW_DEPTH} deep"
                ),
            ));
        }
        decision = point.decide(event, prepared, &facts).await?;
    }
    if !decision.functions.is_empty() {
        let (found, fresh) = match catalog.callees(&decision.functions).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "catalog_functions_lookup_failed");
                return Ok(refused(
                    &decision,
                    "the upstream catalog could not be read to tell which functions it calls; retry later",
                ));
            }
        };
        until = Some(until.map_or(fresh, |u| u.min(fresh)));
        let resolutions: Vec<Resolution> = found
            .into_iter()
            .map(|(call, callees)| Resolution {
                call,
                callees: callees.to_vec(),
            })
            .collect();
        // The verdict was decided assuming what each name runs; asked again
        // only when the catalog says otherwise.
        if !resolutions.iter().all(as_assumed) {
            facts.functions = resolutions;
            decision = point.decide(event, prepared, &facts).await?;
            let unresolved = decision
                .functions
                .iter()
                .find(|c| !facts.functions.iter().any(|r| r.call == **c));
            if let Some(call) = unresolved {
                return Ok(refused(
                    &decision,
                    &format!("Gatehouse could not resolve {call} in the upstream catalog"),
                ));
            }
        }
    }
    Ok(Decided {
        decision,
        catalog_until: until,
    })
}

/// `d` turned into a refusal for `why`. Named after the mask rule if one
/// applies, not cached; every value of the text withheld from evidence (`d`
/// placed them without the views' definitions: a value compared with a view's
/// column may go to a masked one).
fn refused(d: &Decision, why: &str) -> Decided {
    let rule = d
        .verdict
        .masks()
        .and_then(|(columns, _)| columns.first())
        .map(|c| c.rule.clone())
        .or_else(|| d.rule.clone());
    Decided {
        decision: Arc::new(Decision {
            verdict: Verdict::Block {
                reason: why.to_owned(),
            },
            rule,
            cacheable: false,
            shape_cacheable: false,
            values: d.values.as_ref().map(|v| ValueMasks {
                values: v.values,
                ..ValueMasks::default()
            }),
            ..d.clone()
        }),
        catalog_until: None,
    }
}
