//! Announcing requests: each new pending request is claimed once (compare-and-set
//! on `notified`, so of several approver instances one announces it), then
//! published for bots (NATS, distributed mode) and posted to webhooks.

use async_nats::Client;
use gatehouse_schemas::approval::{ApprovalRecord, request_subject, update_subject};

use crate::Approver;
use crate::webhook::Webhooks;

/// Where announcements go.
pub struct Announcer {
    /// The bus (distributed mode); `None` in all-in-one mode.
    pub nats: Option<Client>,
    /// The configured webhooks.
    pub webhooks: Webhooks,
}

impl Announcer {
    /// Handles one record as stored now: a pending request nobody announced is
    /// claimed and announced; on the bus every change is published.
    pub async fn on_change(&self, approver: &Approver, record: &ApprovalRecord) {
        let id = record.request.id;
        if record.state.is_pending() && !record.notified {
            match approver
                .store()
                .transition(id, |r| {
                    if r.notified || !r.state.is_pending() {
                        return false;
                    }
                    r.notified = true;
                    true
                })
                .await
            {
                Ok((r, true)) => {
                    if let Some(nats) = &self.nats {
                        publish(nats, request_subject(&r.request.role), &r.request).await;
                    }
                    self.webhooks.notify(&r.request);
                    tracing::info!(request = %id, role = %r.request.role, "approval_request_announced");
                }
                Ok((_, false)) => {}
                Err(e) => tracing::warn!(request = %id, error = %e, "approval_announce_failed"),
            }
        }
        if let Some(nats) = &self.nats {
            publish(nats, update_subject(id), record).await;
        }
    }
}

async fn publish<T: serde::Serialize>(client: &Client, subject: String, body: &T) {
    if let Ok(b) = serde_json::to_vec(body)
        && let Err(e) = client.publish(subject, b.into()).await
    {
        tracing::warn!(error = %e, "approval_publish_failed");
    }
}
