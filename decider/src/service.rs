//! The decider as a NATS service: request/reply on [`DECIDE_SUBJECT`] in the queue
//! group [`DECIDE_QUEUE`] (run several; each request reaches one), and
//! announcements of the loaded policy on [`POLICY_SUBJECT`].
//!
//! A request that is not a [`DecisionRequest`] of this [`SCHEMA_VERSION`] gets no
//! verdict but an error reply at once ([`ERROR_HEADER`] plus a [`DecideError`]
//! body): the ingress refuses the statement (fail closed) without waiting out its
//! timeout, and the mismatch is visible on both sides instead of as a slow decider.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, HeaderMap, Message};
use futures_util::StreamExt;
use gatehouse_schemas::SCHEMA_VERSION;
use gatehouse_schemas::decision::{
    DECIDE_QUEUE, DECIDE_SUBJECT, DecideError, DecisionRequest, ERROR_CODE_HEADER, ERROR_HEADER,
    POLICY_SUBJECT, PolicyAnnouncement,
};

use crate::engine::Query;
use crate::handle::PolicyHandle;

/// The loaded version is announced again this often, for ingresses that started
/// later or missed an announcement (core NATS delivers at most once).
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(5);

/// How often the handle is checked for a reload. Reloads happen elsewhere (SIGHUP,
/// file watch, tests calling `reload`); checking the epoch here announces every one
/// of them without the reloaders knowing about NATS. The check is an atomic load.
const RELOAD_CHECK: Duration = Duration::from_millis(50);

/// Why the service stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The queue subscription could not be made.
    #[error("subscribe to {DECIDE_SUBJECT}: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    /// The connection's client was closed under the service.
    #[error("the NATS subscription ended")]
    SubscriptionEnded,
}

/// Answers decision requests with the policy in `handle` until `shutdown`
/// completes, announcing the policy version at start and after every reload.
pub async fn run(
    handle: Arc<PolicyHandle>,
    client: Client,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    let mut requests = client
        .queue_subscribe(DECIDE_SUBJECT, DECIDE_QUEUE.into())
        .await?;
    let instance = uuid::Uuid::new_v4().to_string();
    // Announced after subscribing: whoever hears it can be answered.
    let mut announced = handle.epoch();
    announce(&client, &handle, &instance).await;
    tracing::info!(subject = DECIDE_SUBJECT, queue = DECIDE_QUEUE, decider = %instance, "decider_serving");

    let mut reload_check = tokio::time::interval(RELOAD_CHECK);
    let mut heartbeat = tokio::time::interval(ANNOUNCE_EVERY);
    heartbeat.reset(); // the first tick would repeat the start announcement
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            // Cancel safe: a message is either returned or left in the subscription.
            msg = requests.next() => match msg {
                Some(msg) => answer(&client, &handle, msg).await,
                None => break Err(ServiceError::SubscriptionEnded),
            },
            _ = reload_check.tick() => {
                let epoch = handle.epoch();
                if epoch != announced {
                    announced = epoch;
                    announce(&client, &handle, &instance).await;
                }
            }
            _ = heartbeat.tick() => announce(&client, &handle, &instance).await,
        }
    };
    // Leave the queue group before going, so that no request is routed to a
    // decider that will not answer it.
    let _ = requests.unsubscribe().await;
    let _ = client.flush().await;
    tracing::info!(decider = %instance, "decider_stopped");
    result
}

/// Publishes the loaded version. A failure is logged, not fatal: ingresses also
/// learn versions from the decisions themselves and from the next heartbeat.
async fn announce(client: &Client, handle: &PolicyHandle, instance: &str) {
    let msg = PolicyAnnouncement {
        v: SCHEMA_VERSION,
        version: handle.current().version.clone(),
        decider: instance.to_owned(),
    };
    let body = serde_json::to_vec(&msg).expect("announcement serializes");
    match client.publish(POLICY_SUBJECT, body.into()).await {
        Ok(()) => tracing::debug!(version = %msg.version, "policy_announced"),
        Err(e) => tracing::warn!(error = %e, "policy_announce_failed"),
    }
}

/// Decides one request and replies.
async fn answer(client: &Client, handle: &PolicyHandle, msg: Message) {
    let Some(reply) = msg.reply else {
        // Published, not requested: nobody waits for a verdict.
        tracing::warn!(subject = %msg.subject, "decide_request_without_reply_subject");
        return;
    };
    let request = match serde_json::from_slice::<DecisionRequest>(&msg.payload) {
        Ok(r) if r.v == SCHEMA_VERSION => r,
        Ok(r) => {
            let error = format!(
                "unsupported message version {} (this decider speaks {SCHEMA_VERSION})",
                r.v
            );
            return refuse(client, reply, error).await;
        }
        Err(e) => return refuse(client, reply, format!("not a decision request: {e}")).await,
    };
    let decision = handle.current().decide(Query::from(&request));
    tracing::debug!(
        role = %request.role,
        verdict = decision.verdict.name(),
        rule = decision.rule.as_deref().unwrap_or(""),
        "decided"
    );
    let body = serde_json::to_vec(&decision).expect("decision serializes");
    if let Err(e) = client.publish(reply, body.into()).await {
        tracing::warn!(error = %e, "decision_reply_failed");
    }
}

/// Replies with an error instead of a verdict.
async fn refuse(client: &Client, reply: async_nats::Subject, error: String) {
    tracing::warn!(error = %error, "decide_request_malformed");
    let mut headers = HeaderMap::new();
    // A header value is one line.
    headers.insert(ERROR_HEADER, error.replace(['\r', '\n'], " ").as_str());
    headers.insert(ERROR_CODE_HEADER, "400");
    let body = serde_json::to_vec(&DecideError {
        v: SCHEMA_VERSION,
        error,
    })
    .expect("error serializes");
    if let Err(e) = client
        .publish_with_headers(reply, headers, body.into())
        .await
    {
        tracing::warn!(error = %e, "decide_error_reply_failed");
    }
}
