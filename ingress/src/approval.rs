//! The wait of a session whose statement needs approval: its request's
//! record watched in the approval store (see `gatehouse_approver::store`)
//! until approved, denied, expired or withdrawn, the client still read
//! meanwhile.

use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use gatehouse_approver::store::{ApprovalStore, display_name, event, now_ms};
use gatehouse_schemas::approval::{ApprovalRecord, ApprovalState};
use gatehouse_schemas::evidence::ApprovalEvent;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Notify;

/// How a hold ended.
#[derive(Debug)]
pub enum Resolution {
    /// Approved: run the statement once.
    Approved(Box<ApprovalRecord>),
    /// An approver denied it.
    Denied {
        /// Who.
        by: String,
        /// Their comment.
        comment: Option<String>,
    },
    /// No decision before the deadline.
    Expired {
        /// Why it closed.
        reason: String,
    },
    /// Withdrawn (the client cancelled).
    Withdrawn {
        /// Why it closed.
        reason: String,
    },
    /// The client went away while it waited.
    ClientGone,
}

/// Waits for the outcome of `record` (already stored), while still reading the
/// client: bytes it sends meanwhile are appended to `buf` (up to `max_buffer`),
/// and its going away withdraws the request, as does a `CancelRequest`
/// (`withdraw`). The deadline is the gateway's own: a bus or approver service
/// that is gone by then expires the request here. Each step becomes an evidence
/// event through `record_event`.
///
/// Cancel safety: meant to be awaited to completion; dropping it leaves the
/// request pending until an approver service's sweep expires it.
pub async fn wait<R: AsyncRead + Unpin>(
    store: &ApprovalStore,
    record: &ApprovalRecord,
    client: &mut R,
    buf: &mut BytesMut,
    max_buffer: usize,
    withdraw: &Notify,
    mut record_event: impl FnMut(ApprovalEvent),
) -> Resolution {
    let id = record.request.id;
    let left = record.request.deadline_ms.saturating_sub(now_ms());
    let deadline = tokio::time::Instant::now() + Duration::from_millis(left);
    let mut updates = match store.watch(id).await {
        Ok(w) => Some(Box::pin(w)),
        Err(e) => {
            tracing::warn!(error = %e, request = %id, "approval_watch_failed");
            None
        }
    };
    let mut notified = false;
    let mut refusals_seen = 0u64;
    loop {
        let closed = tokio::select! {
            // Cancel safe: a change not taken now is taken at the next poll.
            next = async { updates.as_mut()?.next().await }, if updates.is_some() => {
                let Some(r) = next else {
                    // The bus went away: wait out the deadline.
                    updates = None;
                    continue;
                };
                if r.notified && !notified {
                    notified = true;
                    record_event(event(&r, "notified", None, None, None));
                }
                if r.refused_total > refusals_seen {
                    let new = (r.refused_total - refusals_seen) as usize;
                    for f in r.refusals.iter().rev().take(new).rev() {
                        record_event(event(&r, "refused", f.subject.clone(), Some(f.reason.clone()), None));
                    }
                    refusals_seen = r.refused_total;
                }
                if r.state.is_pending() {
                    continue;
                }
                r
            }
            _ = tokio::time::sleep_until(deadline) => {
                close(store, record, ApprovalState::Expired, "no decision before the deadline", " (approval service unreachable)").await
            }
            // Cancel safe: a cancel that came since the request was made is kept
            // as a permit and taken here.
            _ = withdraw.notified() => {
                close(store, record, ApprovalState::Withdrawn, "cancelled by the client", "").await
            }
            // Cancel safe: read_buf either read bytes into buf or did nothing.
            n = client.read_buf(buf), if buf.len() < max_buffer => {
                match n {
                    Ok(0) | Err(_) => {
                        let r = store.close(id, ApprovalState::Withdrawn, "the client went away").await;
                        if let Ok(r) = &r
                            && r.state == ApprovalState::Withdrawn
                        {
                            record_event(event(r, "withdrawn", None, r.closed_reason.clone(), None));
                        }
                        return Resolution::ClientGone;
                    }
                    Ok(_) => continue,
                }
            }
        };
        return resolve(&closed, &mut record_event);
    }
}

/// Closes `record` in `state` for `reason`; when the store cannot be reached,
/// the record as it would be, its reason followed by `unreachable`. Whoever
/// changed the record first (an approver deciding meanwhile) wins.
async fn close(
    store: &ApprovalStore,
    record: &ApprovalRecord,
    state: ApprovalState,
    reason: &str,
    unreachable: &str,
) -> ApprovalRecord {
    let id = record.request.id;
    match store.close(id, state, reason).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, request = %id, state = state.name(), "approval_close_not_stored");
            let mut r = record.clone();
            r.state = state;
            r.closed_reason = Some(format!("{reason}{unreachable}"));
            r
        }
    }
}

/// The resolution of a request that left `pending`, and its evidence.
fn resolve(r: &ApprovalRecord, record_event: &mut impl FnMut(ApprovalEvent)) -> Resolution {
    let decided = r.decided.as_ref();
    let by = decided.map(|d| display_name(&d.identity));
    let comment = decided.and_then(|d| d.comment.clone());
    match r.state {
        ApprovalState::Approved | ApprovalState::Executed => {
            record_event(event(
                r,
                "approved",
                by,
                comment,
                decided.map(|d| d.identity.clone()),
            ));
            Resolution::Approved(Box::new(r.clone()))
        }
        ApprovalState::Denied => {
            let who = by.clone().unwrap_or_else(|| "an approver".into());
            record_event(event(
                r,
                "denied",
                by,
                comment.clone(),
                decided.map(|d| d.identity.clone()),
            ));
            Resolution::Denied { by: who, comment }
        }
        ApprovalState::Expired | ApprovalState::Withdrawn | ApprovalState::Pending => {
            let withdrawn = r.state == ApprovalState::Withdrawn;
            let reason = r
                .closed_reason
                .clone()
                .unwrap_or_else(|| "no decision".into());
            let state = if withdrawn { "withdrawn" } else { "expired" };
            record_event(event(r, state, None, Some(reason.clone()), None));
            if withdrawn {
                Resolution::Withdrawn { reason }
            } else {
                Resolution::Expired { reason }
            }
        }
    }
}
