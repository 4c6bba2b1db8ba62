//! The messages that run or name what a `Parse` prepared — `Bind`,
//! `Execute`, `Describe`, `Close`, `Sync` — and those with no answer of their
//! own (COPY data, `Flush`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use gatehouse_schemas::evidence::{Statement, StatementPath};

use super::frontend::{Outcome, Pending};
use super::record::statement_record;
use super::refusal::Refusal;
use super::text::{BoundParams, MAX_RECORDED_PARAMS, params_digest};
use super::{SessionCtx, hold};
use crate::Gateway;
use crate::decision::DecisionPoint;
use crate::masking::session::Cause;
use crate::masking::values::{ParamView, recorded_params};
use crate::protocol::codec;
use crate::protocol::names::Portal;
use crate::protocol::pipeline::{Entry, Kind};

/// A `Bind`: the portal is named with its statement and parameters, unless
/// its statement's approval does not cover them (then it is held).
pub(super) async fn on_bind<D: DecisionPoint>(
    gw: &Gateway<D>,
    ctx: &mut SessionCtx,
    body: &[u8],
) -> Outcome {
    if let Some((statement, params)) = needs_approval(ctx, body, gw.masking.key()) {
        return hold::request_at_bind(gw, ctx, &statement, params).await;
    }
    Outcome::Forward {
        entry: Some(bound(ctx, body, gw.masking.key())),
        ticket: None,
    }
}

/// A `Bind` that goes upstream: its portal is named (its statement, its
/// parameters as evidence records them, its mask). `key` keys the `hash`
/// method for parameters shown masked.
pub(super) fn bound(ctx: &mut SessionCtx, body: &[u8], key: &[u8]) -> Pending {
    let masked_caller = ctx.masked_caller;
    let mut pipeline = ctx.shared.pipeline();
    let p = &mut *pipeline;
    let name = match codec::bind(body) {
        Some(b) => {
            let statement = String::from_utf8_lossy(b.statement).into_owned();
            let portal = String::from_utf8_lossy(b.portal).into_owned();
            let prepared = p.names.statement(&statement).map(|s| s.prepared.clone());
            let digest = prepared
                .as_ref()
                .filter(|s| s.approval.is_some())
                .map(|_| params_digest(&b));
            let view = ParamView::of(
                prepared.as_ref().and_then(|s| s.decision.as_deref()),
                masked_caller,
            );
            let params = match &prepared {
                Some(_) => recorded_params(&b, view, MAX_RECORDED_PARAMS, key),
                None => Vec::new(),
            };
            let (mask, ddl) = p.masker.bound(&p.names, &statement, &b.formats);
            p.names.bind(
                &portal,
                Portal {
                    prepared,
                    statement,
                    params,
                    digest,
                    formats: b.formats.into(),
                    mask,
                    ddl,
                    columns: None,
                },
            );
            portal
        }
        // Malformed: the server refuses it.
        None => String::new(),
    };
    let entry = Entry::client(Kind::Bind, Cause::Bind(name), None);
    p.sending(&entry);
    Pending::new(entry)
}

/// A `Bind` that needs an approval of its own: its statement was approved at its
/// `Parse` without parameters (the client bound only after the `Parse` round
/// trip), and this `Bind` carries some. The approval must cover the parameters
/// that run, so they are held and requested again. Returns the statement's name
/// and the parameters.
fn needs_approval(ctx: &SessionCtx, body: &[u8], key: &[u8]) -> Option<(String, BoundParams)> {
    let b = codec::bind(body)?;
    if b.params.is_empty() {
        // Nothing bound: the approved text is exactly what runs.
        return None;
    }
    let name = std::str::from_utf8(b.statement).ok()?;
    let pipeline = ctx.shared.pipeline();
    let prepared = &pipeline.names.statement(name)?.prepared;
    let approval = prepared.approval.as_ref()?;
    // Under a mask, values are masked or withheld in the request (enforced by
    // digest).
    let view = ParamView::of(prepared.decision.as_deref(), ctx.masked_caller);
    approval.params.is_none().then(|| {
        let shown = recorded_params(&b, view, MAX_RECORDED_PARAMS, key);
        (name.to_owned(), (shown, params_digest(&b)))
    })
}

/// An `Execute`: recorded as the statement its portal runs, with its
/// parameters; refused when it would use an approval a second time.
pub(super) fn on_execute<D: DecisionPoint>(
    gw: &Gateway<D>,
    ctx: &mut SessionCtx,
    body: &[u8],
) -> Outcome {
    let portal = codec::execute_portal(body)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let mut statement = None;
    let mut approval = None;
    {
        let pipeline = ctx.shared.pipeline();
        if let Some(p) = pipeline.names.portal(&portal)
            && let Some(prepared) = &p.prepared
        {
            if let Some(a) = &prepared.approval {
                // Approved with known parameters: only with those (compared by
                // their values: what the approver saw may be withheld under a mask).
                let other = a.params.is_some_and(|approved| p.digest != Some(approved));
                let used = a.used.swap(true, Ordering::AcqRel);
                approval = Some((a.id.clone(), other || used));
            }
            if gw.evidence.is_some() {
                let name = pipeline
                    .names
                    .statement(&p.statement)
                    .filter(|s| !s.sql_prepare && Arc::ptr_eq(&s.prepared, prepared))
                    .map(|_| p.statement.clone())
                    .filter(|n| !n.is_empty());
                statement = Some(Statement {
                    params: Some(p.params.clone()),
                    statement_name: name,
                    ..statement_record(
                        StatementPath::Execute,
                        "",
                        &prepared.sql,
                        None,
                        prepared.decision.as_deref(),
                        true,
                        gw.masking.key(),
                    )
                });
            }
        }
    }
    if let Some((id, true)) = approval {
        return Outcome::refuse(Refusal::ApprovalSpent { id }, "");
    }
    let ticket = if gw.evidence.is_some() {
        // A portal the gateway did not bind: a SQL cursor (`DECLARE`), whose
        // query was decided and recorded when it was declared; or none at all,
        // which the server refuses.
        let mut statement = statement.unwrap_or_else(|| Statement {
            verdict: "allow".into(),
            reason: Some(
                "portal not bound through the gateway (a SQL cursor, decided at DECLARE)".into(),
            ),
            ..statement_record(StatementPath::Execute, "", "", None, None, true, b"")
        });
        statement.portal = (!portal.is_empty()).then(|| portal.clone());
        statement.approval = approval.map(|(id, _)| id);
        match ctx.record(gw, statement, true) {
            Ok(ticket) => ticket,
            Err(e) => return Outcome::refuse(Refusal::Unrecorded(e), ""),
        }
    } else {
        None
    };
    let stmt = Some(ctx.last_recorded);
    let mut pipeline = ctx.shared.pipeline();
    let p = &mut *pipeline;
    let completing = p.completing(stmt, codec::EXECUTE, body);
    let (cause, ahead) = p.masker.executed(&p.names, &portal);
    let entry = Entry::client(Kind::Execute, cause, completing);
    p.sending(&entry);
    let mut pending = Pending::new(entry);
    if let Some((bytes, cause)) = ahead {
        pending
            .ahead
            .push((bytes, Entry::own(Kind::Describe, cause)));
    }
    Outcome::Forward {
        entry: Some(pending),
        ticket,
    }
}

/// A `Describe` of a statement or portal.
pub(super) fn on_describe(ctx: &mut SessionCtx, body: &[u8]) -> Outcome {
    let mut p = ctx.shared.pipeline();
    let completing = p
        .capture()
        .is_some()
        .then(|| p.completing(None, codec::DESCRIBE, body))
        .flatten();
    let cause = p.masker.described(&p.names, body);
    let entry = Entry::client(Kind::Describe, cause, completing);
    p.sending(&entry);
    Outcome::forward(entry, None)
}

/// A `Close` of a statement or portal: its name is forgotten.
pub(super) fn on_close(ctx: &mut SessionCtx, body: &[u8]) -> Outcome {
    let mut p = ctx.shared.pipeline();
    match codec::target(body) {
        Some((b'S', name)) => p.names.close_statement(&String::from_utf8_lossy(name)),
        Some((_, name)) => p.names.close_portal(&String::from_utf8_lossy(name)),
        None => {}
    }
    let entry = Entry::client(Kind::Close, Cause::None, None);
    p.sending(&entry);
    Outcome::forward(entry, None)
}

/// A `Sync`: the end of an extended-protocol batch.
pub(super) fn on_sync(ctx: &mut SessionCtx) -> Outcome {
    let entry = Entry::client(Kind::Sync, Cause::None, None);
    ctx.shared.pipeline().sending(&entry);
    Outcome::forward(entry, None)
}

/// `CopyData`, `CopyDone`, `CopyFail` (and `Flush`): forwarded, no answer of
/// their own. What a `COPY ... FROM STDIN` writes was decided with its text.
pub(super) fn on_copy_data() -> Outcome {
    Outcome::Forward {
        entry: None,
        ticket: None,
    }
}
