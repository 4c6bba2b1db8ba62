//! A statement whose verdict is `approve`: requested, held while the client
//! waits (nothing is sent upstream), then run once or refused in its place.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::SystemTime;

use bytes::BytesMut;
use gatehouse_schemas::approval::{ApprovalRecord, ApprovalRequest, statement_hash};
use gatehouse_schemas::decision::{Decision, Verdict};
use gatehouse_schemas::evidence::{CiContext, EventBody, Param, Statement};
use gatehouse_schemas::{ProtocolKind, SCHEMA_VERSION};
use tokio::io::AsyncRead;
use uuid::Uuid;

use super::{Outcome, Prepared, SessionCtx, record_statement_counted, unrecorded_message};
use crate::Gateway;
use crate::approval::{self, Resolution};
use crate::codec;
use crate::decision::DecisionPoint;
use crate::error::{Severity, SqlState, error_response, notice_response};
use crate::evidence::Ticket;
use crate::tracker::Sent;

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

/// What the relay sends upstream once the hold ends.
pub(super) enum Release {
    /// The original message (approved), once `ticket` is durable.
    Run { sent: Sent, ticket: Option<Ticket> },
    /// A refusal: the client gets `error` at the message's place.
    Refuse { error: BytesMut, name: Vec<u8> },
    /// The client went away.
    ClientGone,
}

/// Records the held statement, stores the request and returns the hold, or a
/// refusal when the request cannot be stored (nothing runs without approval).
pub(super) async fn request<'b, D: DecisionPoint>(
    gw: &Gateway<D>,
    ctx: &mut SessionCtx,
    protocol: ProtocolKind,
    statement: Statement,
    params: Option<(Vec<Param>, [u8; 32])>,
    name: &'b str,
    decision: &Arc<Decision>,
) -> Outcome<'b> {
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
        return refuse(
            SqlState::InsufficientPrivilege,
            "statement requires an approval this gateway cannot request".into(),
            name,
        );
    };
    let id = Uuid::now_v7();
    let now = SystemTime::now();
    let timeout = gw.config.approvals.timeout;
    let deadline = now + timeout;
    // The held statement is recorded as not forwarded, naming the request; if it
    // is approved it is recorded again, forwarded, before it runs.
    let held = Statement {
        approval: Some(id.to_string()),
        ..statement.clone()
    };
    let seq = {
        let mut ev = ctx.evidence.lock().unwrap_or_else(|p| p.into_inner());
        ev.statements += 1;
        match ev.record(gw.evidence.as_deref(), EventBody::Statement(held)) {
            Some(Ok((seq, _))) => seq,
            Some(Err(e)) => {
                return refuse(SqlState::CannotConnectNow, unrecorded_message(&e), name);
            }
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
        requested_at: approval::rfc3339(now),
        deadline: approval::rfc3339(deadline),
        deadline_ms: approval::now_ms() + u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        gateway: gw.instance.clone(),
    };
    let record = ApprovalRecord::new(request);
    record_event(
        gw,
        ctx,
        approval::event(&record, "requested", None, None, None),
    );
    if let Err(e) = store.create(&record).await {
        tracing::warn!(error = %e, request = %id, "approval_request_not_stored");
        record_event(
            gw,
            ctx,
            approval::event(&record, "expired", None, Some(e.to_string()), None),
        );
        return refuse(
            SqlState::QueryCanceled,
            format!(
                "canceling statement: it needs approval by \"{approvers}\", and the approval service is unavailable; retry later"
            ),
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
pub(super) async fn request_at_bind<'b, D: DecisionPoint>(
    gw: &Gateway<D>,
    ctx: &mut SessionCtx,
    name: &'b str,
    params: (Vec<Param>, [u8; 32]),
) -> Outcome<'b> {
    let Some(prepared) = ctx.statements.get(name).cloned() else {
        return refuse(
            SqlState::InsufficientPrivilege,
            "statement requires an approval of its parameters".into(),
            name,
        );
    };
    let Some(decision) = prepared.decision.clone() else {
        return refuse(
            SqlState::InsufficientPrivilege,
            "statement requires an approval of its parameters".into(),
            name,
        );
    };
    let statement = super::statement_record(
        ProtocolKind::Parse.into(),
        name,
        &prepared.sql,
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

/// Waits for the outcome (see [`approval::wait`]) and says what goes upstream.
pub(super) async fn release<D: DecisionPoint, R: AsyncRead + Unpin>(
    gw: &Gateway<D>,
    ctx: &mut SessionCtx,
    held: Held,
    client: &mut R,
    buf: &mut BytesMut,
    max_buffer: usize,
) -> Release {
    let Some(store) = gw.approvals.as_ref() else {
        // Not reached: a hold exists only with an approval store.
        return refused_release(
            SqlState::InsufficientPrivilege,
            "statement requires an approval this gateway cannot wait for".into(),
            held.name,
        );
    };
    let withdraw = ctx.withdraw.clone();
    let evidence = ctx.evidence.clone();
    let recorder = gw.evidence.as_deref();
    let resolution = approval::wait(
        store,
        &held.record,
        client,
        buf,
        max_buffer,
        &withdraw,
        |e| {
            let mut ev = evidence.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(Err(err)) = ev.record(recorder, EventBody::Approval(e)) {
                tracing::warn!(error = %err, "approval_step_not_recorded");
            }
        },
    )
    .await;
    let id = held.record.request.id;
    match resolution {
        Resolution::ClientGone => Release::ClientGone,
        Resolution::Refused { state, message } => {
            tracing::info!(request = %id, sqlstate = state.code(), "held_statement_refused");
            count_refused(ctx);
            Release::Refuse {
                error: error_response(Severity::Error, state, &message),
                name: held.name.into_bytes(),
            }
        }
        Resolution::Approved(record) => {
            // Used once: the store moves Approved to Executed exactly once.
            match store.executed(id).await {
                Ok(true) => {}
                Ok(false) => {
                    count_refused(ctx);
                    return refused_release(
                        SqlState::InsufficientPrivilege,
                        format!(
                            "approval request {id} was already used; an approval authorizes one statement"
                        ),
                        held.name,
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, request = %id, "approval_execution_not_stored");
                    count_refused(ctx);
                    return refused_release(
                        SqlState::QueryCanceled,
                        format!(
                            "canceling statement: approval request {id} could not be marked used ({e}); retry later"
                        ),
                        held.name,
                    );
                }
            }
            let by = record
                .decided
                .as_ref()
                .map(|d| approval::display_name(&d.identity));
            record_event(
                gw,
                ctx,
                approval::event(&record, "executed", by, None, None),
            );
            let statement = Statement {
                forwarded: true,
                approval: Some(id.to_string()),
                ..held.statement
            };
            // Counted in the session's statements when it was held, not again.
            let ticket = match record_statement_counted(gw, ctx, statement, false) {
                Ok(t) => t,
                Err(e) => {
                    return refused_release(
                        SqlState::CannotConnectNow,
                        unrecorded_message(&e),
                        held.name,
                    );
                }
            };
            tracing::info!(request = %id, "approved_statement_released");
            // Masking learns the statement as it would have at its decision: an
            // approved statement's results are masked like any other's.
            let tag = match held.protocol {
                ProtocolKind::Parse => codec::PARSE,
                _ => codec::QUERY,
            };
            ctx.mask_pending = ctx
                .masker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .decided(tag, &held.name, &record.request.sql, &held.decision);
            match held.protocol {
                ProtocolKind::Parse => {
                    // Held at Bind, this approval (with its parameters) replaces
                    // the one of the text: the Bind's Execute runs once under it.
                    ctx.statements.insert(
                        held.name.clone(),
                        Arc::new(Prepared {
                            sql: record.request.sql.clone(),
                            decision: Some(held.decision.clone()),
                            approval: Some((id.to_string(), AtomicBool::new(false), held.digest)),
                        }),
                    );
                    let sent = if held.at_bind {
                        Sent::Bind
                    } else {
                        Sent::Parse
                    };
                    Release::Run { sent, ticket }
                }
                _ => {
                    ctx.statements.remove("");
                    Release::Run {
                        sent: Sent::Query {
                            stmt: Some(ctx.last_seq()),
                        },
                        ticket,
                    }
                }
            }
        }
    }
}

fn refused_release(state: SqlState, message: String, name: String) -> Release {
    Release::Refuse {
        error: error_response(Severity::Error, state, &message),
        name: name.into_bytes(),
    }
}

fn refuse(state: SqlState, message: String, name: &str) -> Outcome<'_> {
    Outcome::Refuse {
        error: error_response(Severity::Error, state, &message),
        name: name.as_bytes(),
    }
}

fn count_refused(ctx: &SessionCtx) {
    ctx.evidence
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .refused += 1;
}

fn record_event<D: DecisionPoint>(
    gw: &Gateway<D>,
    ctx: &SessionCtx,
    e: gatehouse_schemas::evidence::ApprovalEvent,
) {
    let mut ev = ctx.evidence.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(Err(err)) = ev.record(gw.evidence.as_deref(), EventBody::Approval(e)) {
        tracing::warn!(error = %err, "approval_step_not_recorded");
    }
}

/// How long the relay buffers client bytes while a statement is held.
pub(super) const HOLD_BUFFER: usize = 1 << 20;
