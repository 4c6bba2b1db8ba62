//! A statement whose verdict is `approve`: requested, held while the client
//! waits (nothing is sent upstream), then run once or refused in its place.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::SystemTime;

use bytes::BytesMut;
use gatehouse_schemas::approval::{ApprovalRecord, ApprovalRequest, statement_hash};
use gatehouse_schemas::decision::{Decision, Verdict};
use gatehouse_schemas::evidence::{CiContext, EventBody, Statement};
use gatehouse_schemas::{ProtocolKind, SCHEMA_VERSION};
use tokio::io::AsyncRead;
use uuid::Uuid;

use super::frontend::{Outcome, Pending};
use super::refusal::Refusal;
use super::text::BoundParams;
use super::{SessionCtx, extended, text};
use crate::Gateway;
use crate::approval::{self, Resolution};
use crate::decision::DecisionPoint;
use crate::error::notice_response;
use crate::protocol::codec::{self, Frame};
use crate::protocol::names::{Approval, Prepared};
use gatehouse_approver::store;

/// How long the relay buffers client bytes while a statement is held.
pub(super) const HOLD_BUFFER: usize = 1 << 20;

/// A requested approval the relay waits on.
pub(super) struct Held {
    /// The stored request.
    record: ApprovalRecord,
    /// The statement's record as it is written again if it runs.
    statement: Statement,
    /// Which message carried it.
    protocol: ProtocolKind,
    /// The digest of the parameters bound with it, if any.
    digest: Option<[u8; 32]>,
    /// Its `Parse` name.
    name: String,
    /// Its verdict.
    decision: Arc<Decision>,
    /// Held at a `Bind` of a statement approved at its `Parse` without
    /// parameters: released, it carries this approval with these parameters.
    at_bind: bool,
}

/// Records the held statement, stores the request and returns the hold, or a
/// refusal when the request cannot be stored (nothing runs without approval).
pub(super) async fn request<D: DecisionPoint>(
    gw: &Gateway<D>,
    ctx: &mut SessionCtx,
    protocol: ProtocolKind,
    statement: Statement,
    params: Option<BoundParams>,
    name: &str,
    decision: &Arc<Decision>,
) -> Outcome {
    // Shown to approvers as recorded (withheld under a mask); enforced by digest.
    let (params, digest) = params.unzip();
    let (
        Verdict::Approve {
            reason, approvers, ..
        },
        Some(store),
    ) = (&decision.verdict, &gw.approvals)
    else {
        // Not reached: the caller checks both. Refused rather than let through.
        return Outcome::refuse(
            Refusal::ApprovalImpossible(
                "statement requires an approval this gateway cannot request",
            ),
            name,
        );
    };
    let id = Uuid::now_v7();
    let now = SystemTime::now();
    let timeout = gw.config.hold.timeout;
    let deadline = now + timeout;
    // The held statement is recorded as not forwarded, naming the request; if it
    // is approved it is recorded again, forwarded, before it runs.
    let held = Statement {
        approval: Some(id.to_string()),
        ..statement.clone()
    };
    let seq = {
        let mut ev = ctx.shared.evidence();
        ev.statements += 1;
        match ev.record(gw.evidence.as_deref(), EventBody::Statement(held)) {
            Some(Ok((seq, _))) => seq,
            Some(Err(e)) => return Outcome::refuse(Refusal::Unrecorded(e), name),
            None => ctx.seq,
        }
    };
    let request = ApprovalRequest {
        v: SCHEMA_VERSION,
        id,
        role: ctx.role.clone(),
        session_id: ctx.id,
        statement_seq: seq,
        sql: statement.sql.clone(),
        statement_hash: statement_hash(ctx.id, &statement.sql, params.as_deref()),
        params,
        requester: ctx.identity.clone(),
        ci: CiContext::from_claims(&ctx.identity.claims),
        rule: decision.rule.clone(),
        reason: reason.clone(),
        approvers: approvers.clone(),
        requested_at: store::rfc3339(now),
        deadline: store::rfc3339(deadline),
        deadline_ms: store::now_ms() + u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        gateway: gw.instance.clone(),
    };
    let record = ApprovalRecord::new(request);
    record_event(
        gw,
        ctx,
        store::event(&record, "requested", None, None, None),
    );
    if let Err(e) = store.create(&record).await {
        tracing::warn!(error = %e, request = %id, "approval_request_not_stored");
        record_event(
            gw,
            ctx,
            store::event(&record, "expired", None, Some(e.to_string()), None),
        );
        return Outcome::refuse(
            Refusal::ApprovalServiceUnavailable {
                approvers: approvers.clone(),
            },
            name,
        );
    }
    tracing::info!(request = %id, seq = ctx.seq, approvers = %approvers, rule = decision.rule.as_deref().unwrap_or(""), "statement_held_for_approval");
    Outcome::Hold(Box::new(Held {
        record,
        statement,
        protocol,
        digest,
        name: name.to_owned(),
        decision: decision.clone(),
        at_bind: false,
    }))
}

/// Holds the `Bind` of prepared statement `name` (approved at its `Parse`
/// without parameters) for a new approval of the statement with `params`.
pub(super) async fn request_at_bind<D: DecisionPoint>(
    gw: &Gateway<D>,
    ctx: &mut SessionCtx,
    name: &str,
    params: BoundParams,
) -> Outcome {
    let prepared = ctx
        .shared
        .pipeline()
        .names
        .statement(name)
        .map(|s| s.prepared.clone());
    let Some((sql, decision)) = prepared.and_then(|p| Some((p.sql.clone(), p.decision.clone()?)))
    else {
        return Outcome::refuse(
            Refusal::ApprovalImpossible("statement requires an approval of its parameters"),
            name,
        );
    };
    let statement = super::record::statement_record(
        ProtocolKind::Parse.into(),
        name,
        &sql,
        None,
        Some(&decision),
        false,
        gw.masking.key(),
    );
    let statement = Statement {
        params: Some(params.0.clone()),
        ..statement
    };
    match request(
        gw,
        ctx,
        ProtocolKind::Parse,
        statement,
        Some(params),
        name,
        &decision,
    )
    .await
    {
        Outcome::Hold(mut h) => {
            h.at_bind = true;
            Outcome::Hold(h)
        }
        other => other,
    }
}

/// The client's NOTICE while its statement waits.
pub(super) fn notice(held: &Held, where_to_look: &str) -> BytesMut {
    let r = &held.record.request;
    notice_response(&format!(
        "statement held for approval: request {} waits for a decision by \"{}\" under policy rule \"{}\" ({}) until {}; approvers: {where_to_look}; cancel the query to withdraw it",
        r.id,
        r.approvers,
        r.rule.as_deref().unwrap_or("?"),
        r.reason,
        r.deadline
    ))
}

/// Waits for the outcome (see [`approval::wait`]) and says what goes upstream
/// in the held message's place (`frame`, in `buf`): the message itself, its
/// record durable, or a refusal's substitute; with its pipeline entry. `None`:
/// the client went away. Bytes the client sends meanwhile are appended to
/// `buf`, up to `max_buffer`.
pub(super) async fn release<D: DecisionPoint, R: AsyncRead + Unpin>(
    gw: &Gateway<D>,
    ctx: &mut SessionCtx,
    held: Held,
    frame: Frame,
    client: &mut R,
    buf: &mut BytesMut,
    max_buffer: usize,
) -> Option<(BytesMut, Pending)> {
    let run = match wait(gw, ctx, &held, client, buf, max_buffer).await? {
        Ok(()) => run(gw, ctx, &held, &buf[frame.start..frame.end]).await,
        Err(refusal) => Err(refusal),
    };
    Some(match run {
        Ok(pending) => (BytesMut::from(&buf[frame.start..frame.end]), pending),
        Err(refusal) => {
            let s = ctx
                .substitutes
                .substitute(frame.tag, held.name.as_bytes(), &refusal);
            let entry = crate::protocol::pipeline::Entry {
                substitute: Some(s.substitute),
                ..crate::protocol::pipeline::Entry::client(s.kind, s.cause, None)
            };
            ctx.shared.pipeline().sending(&entry);
            (s.bytes, Pending::new(entry))
        }
    })
}

/// Waits for the request's outcome; `Ok`: approved and marked used.
/// Cancel safety: meant to be awaited to completion (see [`approval::wait`]).
async fn wait<D: DecisionPoint, R: AsyncRead + Unpin>(
    gw: &Gateway<D>,
    ctx: &mut SessionCtx,
    held: &Held,
    client: &mut R,
    buf: &mut BytesMut,
    max_buffer: usize,
) -> Option<Result<(), Refusal>> {
    let Some(store) = gw.approvals.as_ref() else {
        // Not reached: a hold exists only with an approval store.
        return Some(Err(Refusal::ApprovalImpossible(
            "statement requires an approval this gateway cannot wait for",
        )));
    };
    let shared = ctx.shared.clone();
    let recorder = gw.evidence.as_deref();
    let resolution = approval::wait(
        store,
        &held.record,
        client,
        buf,
        max_buffer,
        &ctx.withdraw,
        |e| {
            if let Some(Err(err)) = shared.evidence().record(recorder, EventBody::Approval(e)) {
                tracing::warn!(error = %err, "approval_step_not_recorded");
            }
        },
    )
    .await;
    let r = &held.record.request;
    let id = r.id;
    let refused = match resolution {
        Resolution::ClientGone => return None,
        Resolution::Approved(record) => {
            // Used once: the store moves Approved to Executed exactly once.
            match store.executed(id).await {
                Ok(true) => {
                    let by = record
                        .decided
                        .as_ref()
                        .map(|d| store::display_name(&d.identity));
                    record_event(gw, ctx, store::event(&record, "executed", by, None, None));
                    return Some(Ok(()));
                }
                Ok(false) => Refusal::ApprovalUsed { id: id.to_string() },
                Err(e) => {
                    tracing::warn!(error = %e, request = %id, "approval_execution_not_stored");
                    Refusal::ApprovalNotMarked {
                        id,
                        error: e.to_string(),
                    }
                }
            }
        }
        Resolution::Denied { by, comment } => Refusal::Denied { id, by, comment },
        Resolution::Expired { reason } => Refusal::Expired {
            id,
            approvers: r.approvers.clone(),
            reason,
        },
        Resolution::Withdrawn { reason } => Refusal::Withdrawn { id, reason },
    };
    tracing::info!(request = %id, sqlstate = crate::error::UserFacing::sqlstate(&refused).code(), "held_statement_refused");
    ctx.shared.evidence().refused += 1;
    Some(Err(refused))
}

/// An approved statement runs: recorded again (forwarded, naming its
/// approval) and made durable, then named as it runs (`body`: the held
/// message's body, a `Bind`'s when held at one).
async fn run<D: DecisionPoint>(
    gw: &Gateway<D>,
    ctx: &mut SessionCtx,
    held: &Held,
    message: &[u8],
) -> Result<Pending, Refusal> {
    let id = held.record.request.id;
    let statement = Statement {
        forwarded: true,
        approval: Some(id.to_string()),
        ..held.statement.clone()
    };
    // Counted in the session's statements when it was held, not again.
    let ticket = ctx
        .record(gw, statement, false)
        .map_err(Refusal::Unrecorded)?;
    if let (Some(t), Some(r)) = (ticket, gw.evidence.as_deref()) {
        r.durable(t).await.map_err(Refusal::Unrecorded)?;
    }
    tracing::info!(request = %id, "approved_statement_released");
    let sql = &held.record.request.sql;
    let approval = Approval {
        id: id.to_string(),
        used: AtomicBool::new(false),
        params: held.digest,
    };
    // An approved statement's results are masked like any other's.
    Ok(match held.protocol {
        // Held at Bind, this approval (with its parameters) replaces the one
        // of the text: the Bind's Execute runs once under it.
        ProtocolKind::Parse if held.at_bind => {
            ctx.shared.pipeline().names.approve_statement(
                &held.name,
                Arc::new(Prepared {
                    sql: sql.clone(),
                    decision: Some(held.decision.clone()),
                    approval: Some(approval),
                }),
            );
            extended::bound(ctx, &message[5..], gw.masking.key())
        }
        ProtocolKind::Parse => text::parsed(ctx, &held.name, sql, &held.decision, Some(approval)),
        _ => {
            debug_assert_eq!(message.first(), Some(&codec::QUERY));
            text::queried(ctx, &held.decision)
        }
    })
}

fn record_event<D: DecisionPoint>(
    gw: &Gateway<D>,
    ctx: &SessionCtx,
    e: gatehouse_schemas::evidence::ApprovalEvent,
) {
    let mut ev = ctx.shared.evidence();
    if let Some(Err(err)) = ev.record(gw.evidence.as_deref(), EventBody::Approval(e)) {
        tracing::warn!(error = %err, "approval_step_not_recorded");
    }
}
