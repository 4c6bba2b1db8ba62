//! Deciding one SQL text: the verdict cache first (by exact text, then by
//! shape for a plain SELECT), then the decision point within its timeout,
//! resolving a masked caller's views and functions in the upstream catalog.

use std::borrow::Cow;
use std::sync::Arc;

use gatehouse_schemas::decision::{Decision, ValueMasks};
use gatehouse_schemas::{ProtocolKind, SCHEMA_VERSION, StatementEvent};

use super::SessionCtx;
use crate::Gateway;
use crate::cache::{CatalogState, Key};
use crate::decision::{DecisionError, DecisionPoint};
use crate::masking;

/// The text to decide, as the client sent it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Text<'a> {
    /// Which message carried it.
    pub protocol: ProtocolKind,
    /// A `Parse`'s statement name (empty otherwise).
    pub name: &'a str,
    /// The SQL (empty for a `FunctionCall`).
    pub sql: &'a str,
    /// A `FunctionCall`'s function OID.
    pub function_oid: Option<u32>,
}

/// The verdict on `text`, from the cache or the decision point (which the
/// cache then keeps, when the decider marked it cacheable). Counts the
/// session's decision `seq`. Cancel safety: dropping it loses only the
/// decision in flight (nothing of the session changed but its `seq`).
pub(super) async fn decide<D: DecisionPoint>(
    gw: &Gateway<D>,
    ctx: &mut SessionCtx,
    text: Text<'_>,
) -> Result<Arc<Decision>, DecisionError> {
    let (protocol, sql) = (text.protocol, text.sql);
    ctx.seq += 1;
    let epoch = gw.decision.epoch();
    if ctx.class.0 != epoch {
        ctx.class = (epoch, gw.decision.identity_class(&ctx.role, &ctx.identity));
    }
    let class = ctx.class.1;
    // Exact text first; then, for a plain SELECT, its shape (literals blanked),
    // under which only verdicts the decider marked literal-invariant are stored.
    // The shape key starts with a NUL, which no statement text can contain.
    let mut shape_key: Option<String> = None;
    let generation = || ctx.catalog.generation();
    let key = Key {
        epoch,
        class,
        role: &ctx.role,
        protocol,
        sql,
    };
    if let Some(d) = gw.cache.get(key, generation) {
        return Ok(d);
    }
    if let Some(shape) = gatehouse_decider::shape(sql) {
        let shaped = format!("\0{shape}");
        if let Some(d) = gw.cache.get(
            Key {
                sql: &shaped,
                ..key
            },
            generation,
        ) {
            return Ok(for_this_text(d, sql));
        }
        shape_key = Some(shaped);
    }
    let event = StatementEvent {
        v: SCHEMA_VERSION,
        session_id: ctx.id,
        seq: ctx.seq,
        role: Cow::Borrowed(&ctx.role),
        identity: Cow::Borrowed(&ctx.identity),
        protocol,
        statement_name: (!text.name.is_empty()).then_some(Cow::Borrowed(text.name)),
        sql: Cow::Borrowed(sql),
        function_oid: text.function_oid,
    };
    let timeout = gw.config.decision_timeout;
    // Read before the look-ups: DDL meanwhile makes the verdict stale.
    let generation = ctx.catalog.generation();
    // `EXECUTE name` is decided as what the session prepared under the name.
    let prepared = ctx.shared.pipeline().names.sql_prepared();
    // A masked caller's views, and the functions any caller's statement
    // calls, are looked up and decided within the same timeout.
    let decided = masking::views::decide(&gw.decision, &ctx.catalog, &event, &prepared);
    let masking::views::Decided {
        decision,
        catalog_until,
    } = match tokio::time::timeout(timeout, decided).await {
        Ok(decided) => decided?,
        Err(_) => {
            return Err(DecisionError::Unavailable(format!(
                "no verdict within {timeout:?}"
            )));
        }
    };
    let catalog = catalog_until.map(|until| CatalogState { generation, until });
    if decision.shape_cacheable
        && let Some(shaped) = &shape_key
    {
        gw.cache
            .put(Key { sql: shaped, ..key }, decision.clone(), catalog);
    } else if decision.cacheable {
        gw.cache.put(key, decision.clone(), catalog);
    }
    Ok(decision)
}

/// A verdict decided for another text of the same shape, for this one: a
/// masked caller's values stand where the shape scanner places them in this
/// text (the decision placed them in its own).
fn for_this_text(d: Arc<Decision>, sql: &str) -> Arc<Decision> {
    let Some(v) = &d.values else {
        return d;
    };
    let spans = gatehouse_decider::shape_spans(sql).map(|(_, spans)| spans);
    Arc::new(Decision {
        values: Some(ValueMasks { spans, ..v.clone() }),
        ..(*d).clone()
    })
}
