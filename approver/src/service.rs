//! The approver on NATS: decisions and listings (request/reply, queue group
//! [`APPROVER_QUEUE`]: run several, each message reaches one), announcements of
//! new requests and of every change, and the sweep of expired requests.

use std::future::Future;
use std::sync::Arc;

use async_nats::{Client, Message};
use futures_util::StreamExt;
use gatehouse_schemas::SCHEMA_VERSION;
use gatehouse_schemas::approval::{
    APPROVER_QUEUE, ApprovalList, ApprovalQuery, ApproverDecision, DECIDE_SUBJECT, DecisionReply,
    LIST_SUBJECT,
};

use crate::Approver;
use crate::notify::Announcer;

/// Why the service stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A subscription could not be made.
    #[error("subscribe: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    /// The store could not be watched.
    #[error(transparent)]
    Store(#[from] crate::store::ApprovalError),
    /// A subscription ended under the service.
    #[error("a NATS subscription ended")]
    SubscriptionEnded,
}

/// Serves `approver` on `client` until `shutdown` completes.
pub async fn run(
    approver: Arc<Approver>,
    client: Client,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    let announcer = Announcer {
        nats: Some(client.clone()),
        webhooks: approver.webhooks(),
    };
    // Changes from now on, watched before reading what is stored: of the records
    // already there, only the pending ones matter (announced if nobody did yet,
    // and their state published once); closed ones are not published again.
    let mut changes = Box::pin(approver.store().watch_new().await?);
    for record in approver.store().all().await? {
        if record.state.is_pending() {
            announcer.on_change(&approver, &record).await;
        }
    }
    // Joins the queue groups only now, ready to answer: a decision sent while
    // this approver was still reading the store would wait unanswered in its
    // subscription (the sender times out and asks again, and the stale copy is
    // then applied first), where without any subscriber it gets "no
    // responders" at once, which senders retry.
    let mut decisions = client
        .queue_subscribe(DECIDE_SUBJECT, APPROVER_QUEUE.into())
        .await?;
    let mut queries = client
        .queue_subscribe(LIST_SUBJECT, APPROVER_QUEUE.into())
        .await?;
    let mut sweep = tokio::time::interval(approver.config.sweep_interval);
    tracing::info!(
        subject = DECIDE_SUBJECT,
        queue = APPROVER_QUEUE,
        "approver_serving"
    );
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            // Cancel safe: a message is either returned or left in the subscription.
            msg = decisions.next() => {
                let msg = msg.ok_or(ServiceError::SubscriptionEnded)?;
                let reply = match serde_json::from_slice::<ApproverDecision>(&msg.payload) {
                    Ok(d) => approver.decide(&d).await,
                    Err(e) => DecisionReply {
                        v: SCHEMA_VERSION,
                        accepted: false,
                        state: None,
                        error: Some(format!("unreadable decision: {e}")),
                    },
                };
                respond(&client, &msg, &reply).await;
            }
            msg = queries.next() => {
                let msg = msg.ok_or(ServiceError::SubscriptionEnded)?;
                let reply = match serde_json::from_slice::<ApprovalQuery>(&msg.payload) {
                    Ok(q) => match approver.list(&q.token, q.id).await {
                        Ok(records) => ApprovalList { v: SCHEMA_VERSION, records, error: None },
                        Err(e) => ApprovalList { v: SCHEMA_VERSION, records: Vec::new(), error: Some(e.to_string()) },
                    },
                    Err(e) => ApprovalList { v: SCHEMA_VERSION, records: Vec::new(), error: Some(format!("unreadable query: {e}")) },
                };
                respond(&client, &msg, &reply).await;
            }
            change = changes.next() => {
                let Some((record, _)) = change else {
                    return Err(ServiceError::SubscriptionEnded);
                };
                announcer.on_change(&approver, &record).await;
            }
            _ = sweep.tick() => match approver.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "approval_requests_expired"),
                Err(e) => tracing::warn!(error = %e, "approval_sweep_failed"),
            },
        }
    }
}

async fn respond<T: serde::Serialize>(client: &Client, msg: &Message, body: &T) {
    let Some(reply) = &msg.reply else { return };
    match serde_json::to_vec(body) {
        Ok(b) => {
            if let Err(e) = client.publish(reply.clone(), b.into()).await {
                tracing::warn!(error = %e, "approver_reply_failed");
            }
        }
        Err(e) => tracing::warn!(error = %e, "approver_reply_unencodable"),
    }
}
