//! The messages that carry something to decide: `Query` and `Parse` (SQL),
//! `FunctionCall` (a function by OID). Each is decided, recorded, and then
//! forwarded, held for approval or refused.

use std::sync::Arc;

use gatehouse_schemas::ProtocolKind;
use gatehouse_schemas::decision::{Decision, Verdict};
use gatehouse_schemas::evidence::{Param, Statement};

use super::decide::{Text, decide};
use super::frontend::{Outcome, Pending};
use super::record::statement_record;
use super::refusal::Refusal;
use super::{SessionCtx, hold};
use crate::Gateway;
use crate::decision::DecisionPoint;
use crate::masking::session::{Cause, Masker};
use crate::masking::values::{ParamView, recorded_params};
use crate::masking::{self};
use crate::protocol::codec::{self, Frame, StatementText};
use crate::protocol::names::{Mask, Prepared, Statement as Named};
use crate::protocol::pipeline::{Entry, Kind};

/// Parameter bytes recorded per statement; past this, values are withheld
/// (their lengths recorded).
pub(super) const MAX_RECORDED_PARAMS: usize = 64 * 1024;

/// A `Query`.
pub(super) async fn on_query<D: DecisionPoint>(
    gw: &Gateway<D>,
    ctx: &mut SessionCtx,
    body: &[u8],
) -> Outcome {
    match codec::statement_text(codec::QUERY, body) {
        StatementText::Text { sql, .. } => {
            let text = Text {
                protocol: ProtocolKind::SimpleQuery,
                name: "",
                sql,
                function_oid: None,
            };
            decided(gw, ctx, text, None).await
        }
        // The server rejects these bytes itself and runs nothing (see
        // `StatementText::Unreadable`).
        StatementText::Unreadable => {
            let entry = Entry::client(Kind::Query, Masker::undecided_query(), None);
            ctx.shared.pipeline().sending(&entry);
            Outcome::forward(entry, None)
        }
    }
}

/// A `Parse`. `frame` is read in `buf`, where a `Bind` of the statement may
/// follow (its parameters are then approved with it).
pub(super) async fn on_parse<D: DecisionPoint>(
    gw: &Gateway<D>,
    ctx: &mut SessionCtx,
    frame: Frame,
    buf: &[u8],
) -> Outcome {
    match codec::statement_text(codec::PARSE, frame.body(buf)) {
        StatementText::Text { name, sql } => {
            let text = Text {
                protocol: ProtocolKind::Parse,
                name,
                sql,
                function_oid: None,
            };
            decided(gw, ctx, text, Some((frame, buf))).await
        }
        StatementText::Unreadable => {
            let name = masking::wire::cstr(frame.body(buf));
            let entry = Entry::client(Kind::Parse, Cause::Parse(name), None);
            ctx.shared.pipeline().sending(&entry);
            Outcome::forward(entry, None)
        }
    }
}

/// A `FunctionCall`: decided by its function's OID.
pub(super) async fn on_function_call<D: DecisionPoint>(
    gw: &Gateway<D>,
    ctx: &mut SessionCtx,
    body: &[u8],
) -> Outcome {
    let text = Text {
        protocol: ProtocolKind::FunctionCall,
        name: "",
        sql: "",
        function_oid: codec::function_oid(body),
    };
    decided(gw, ctx, text, None).await
}

/// Decides `text` and says what becomes of its message. `parse`: a `Parse`
/// frame in its buffer.
async fn decided<D: DecisionPoint>(
    gw: &Gateway<D>,
    ctx: &mut SessionCtx,
    text: Text<'_>,
    parse: Option<(Frame, &[u8])>,
) -> Outcome {
    let Text {
        protocol,
        name,
        sql,
        function_oid,
    } = text;
    let decision = match decide(gw, ctx, text).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(seq = ctx.seq, error = %e, "statement_refused_unavailable");
            // Without a verdict it is not known whether a mask applies to the
            // caller: the text is recorded with its literals withheld.
            let statement = Statement {
                verdict: "block".into(),
                reason: Some(e.to_string()),
                sql: gatehouse_decider::literal_free(sql),
                ..statement_record(protocol.into(), name, "", function_oid, None, false, b"")
            };
            // Refused either way; a failed record is logged inside.
            let _ = ctx.record(gw, statement, true);
            return Outcome::refuse(Refusal::DecisionUnavailable, name);
        }
    };
    tracing::debug!(
        seq = ctx.seq,
        protocol = ?protocol,
        verdict = decision.verdict.name(),
        rule = decision.rule.as_deref().unwrap_or(""),
        policy = %decision.policy_version,
        sql = %masking::values::shown_sql(&decision, sql, gw.masking.key()),
        "statement"
    );
    ctx.masked_caller |= masking::values::masked_caller(&decision);
    for hit in &decision.shadow {
        tracing::info!(seq = ctx.seq, rule = %hit.rule, would = hit.verdict.name(), "shadow_rule_matched");
    }
    if let Verdict::Approve { .. } = &decision.verdict
        && gw.approvals.is_some()
        && protocol != ProtocolKind::FunctionCall
    {
        let statement = statement_record(
            protocol.into(),
            name,
            sql,
            None,
            Some(&decision),
            false,
            gw.masking.key(),
        );
        let params = parse.and_then(|(frame, buf)| {
            let view = ParamView::of(Some(&decision), ctx.masked_caller);
            bound_params(gw, frame, buf, name, view)
        });
        return hold::request(gw, ctx, protocol, statement, params, name, &decision).await;
    }
    let mut refusal = refusal(&decision);
    if refusal.is_none()
        && protocol == ProtocolKind::Parse
        && !ctx.shared.pipeline().names.statement_room(name)
    {
        refusal = Some(Refusal::TooManyPrepared);
    }
    // Without evidence nothing reads the record, and placing a masked caller's
    // values for it means tokenizing the text: it is not built.
    let recorded = match gw.evidence {
        None => Ok(None),
        Some(_) => {
            let statement = statement_record(
                protocol.into(),
                name,
                sql,
                function_oid,
                Some(&decision),
                refusal.is_none(),
                gw.masking.key(),
            );
            ctx.record(gw, statement, true)
        }
    };
    let ticket = match recorded {
        Ok(ticket) => ticket,
        Err(e) => {
            refusal.get_or_insert(Refusal::Unrecorded(e));
            None
        }
    };
    if let Some(refusal) = refusal {
        tracing::info!(
            seq = ctx.seq,
            verdict = decision.verdict.name(),
            rule = decision.rule.as_deref().unwrap_or("default-deny"),
            policy = %decision.policy_version,
            "statement_refused"
        );
        return Outcome::refuse(refusal, name);
    }
    match protocol {
        ProtocolKind::Parse => {
            let pending = parsed(ctx, name, sql, &decision, None);
            Outcome::Forward {
                entry: Some(pending),
                ticket: None,
            }
        }
        ProtocolKind::SimpleQuery => Outcome::Forward {
            entry: Some(queried(ctx, &decision)),
            ticket,
        },
        ProtocolKind::FunctionCall => {
            let stmt = Some(ctx.last_recorded);
            let mut p = ctx.shared.pipeline();
            let completing = p.completing(stmt, codec::FUNCTION_CALL, b"");
            let entry = Entry::client(Kind::FunctionCall, Cause::None, completing);
            p.sending(&entry);
            Outcome::forward(entry, ticket)
        }
    }
}

/// An allowed `Parse` of `sql` as `name`: the statement is named, with the
/// approval it runs under (if it was held), and masking learns its plan.
pub(super) fn parsed(
    ctx: &mut SessionCtx,
    name: &str,
    sql: &str,
    decision: &Arc<Decision>,
    approval: Option<crate::protocol::names::Approval>,
) -> Pending {
    let ddl = decision.statements.iter().any(|s| s.class == "ddl");
    let mut pipeline = ctx.shared.pipeline();
    let p = &mut *pipeline;
    let decided = p.masker.decided(&mut p.names, codec::PARSE, name, decision);
    p.names.name_statement(
        name,
        Named {
            prepared: Arc::new(Prepared {
                sql: sql.to_owned(),
                decision: Some(decision.clone()),
                approval,
            }),
            sql_prepare: false,
            mask: decided.statement.unwrap_or(Mask::Unknown),
            ddl,
            columns: None,
        },
    );
    let cause = decided
        .cause
        .unwrap_or_else(|| Cause::Parse(name.to_owned()));
    let entry = Entry::client(Kind::Parse, cause, None);
    p.sending(&entry);
    Pending::with_probes(entry, decided.probes, false)
}

/// An allowed `Query`: masking learns its plan (and SQL `PREPARE`s).
pub(super) fn queried(ctx: &mut SessionCtx, decision: &Decision) -> Pending {
    let stmt = Some(ctx.last_recorded);
    let mut pipeline = ctx.shared.pipeline();
    let p = &mut *pipeline;
    let completing = p.completing(stmt, codec::QUERY, b"");
    let decided = p.masker.decided(&mut p.names, codec::QUERY, "", decision);
    let cause = decided.cause.unwrap_or_else(Masker::undecided_query);
    let entry = Entry::client(Kind::Query, cause, completing);
    p.sending(&entry);
    Pending::with_probes(entry, decided.probes, true)
}

/// The refusal a verdict means, if it does not let the statement run.
fn refusal(d: &Decision) -> Option<Refusal> {
    let rule = d.rule.clone();
    match &d.verdict {
        // Masked in flight (see `masking`).
        Verdict::Allow | Verdict::Mask { .. } => None,
        Verdict::Block { reason } => Some(Refusal::Blocked {
            rule,
            reason: reason.clone(),
        }),
        // This gateway holds no statements: one that needs an approval is
        // refused rather than let through.
        Verdict::Approve {
            reason, approvers, ..
        } => Some(Refusal::ApprovalNotRun {
            approvers: approvers.clone(),
            rule,
            reason: reason.clone(),
        }),
    }
}

/// SHA-256 over a `Bind`'s parameter values (format, length, bytes): what an
/// approval with parameters is checked against at `Execute`.
pub(super) fn params_digest(b: &codec::Bind<'_>) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for (binary, value) in &b.params {
        h.update([u8::from(*binary)]);
        match value {
            None => h.update((-1i64).to_be_bytes()),
            Some(v) => {
                h.update((v.len() as i64).to_be_bytes());
                h.update(v);
            }
        }
    }
    h.finalize().into()
}

/// Parameters as an approval request shows them, and the digest of their values
/// ([`params_digest`]) it is enforced on.
pub(super) type BoundParams = (Vec<Param>, [u8; 32]);

/// The parameters of the `Bind` of statement `name` that follows its `Parse` in
/// the same batch (libpq's `PQexecParams`, pipelines), so an approval binds them
/// too; `None` when the client binds later (then the approval covers the text,
/// for one execution).
fn bound_params<D: DecisionPoint>(
    gw: &Gateway<D>,
    parse: Frame,
    buf: &[u8],
    name: &str,
    view: ParamView<'_>,
) -> Option<BoundParams> {
    let mut at = parse.end;
    while let Ok(Some(f)) = codec::next_frontend_frame(buf, at, gw.config.ingress.max_message_size)
    {
        at = f.end;
        match f.tag {
            codec::BIND => {
                let b = codec::bind(f.body(buf))?;
                return (b.statement == name.as_bytes()).then(|| {
                    let shown = recorded_params(&b, view, MAX_RECORDED_PARAMS, gw.masking.key());
                    (shown, params_digest(&b))
                });
            }
            codec::DESCRIBE => {}
            _ => return None,
        }
    }
    None
}
