//! Distributed mode's decision point: each statement is asked of a decider over
//! NATS request/reply; policy announcements from the deciders move the cache epoch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::{Client, ConnectOptions, Request};
use futures_util::StreamExt;
use gatehouse_schemas::decision::{
    CatalogFacts, DECIDE_SUBJECT, Decision, DecisionRequest, ERROR_HEADER, POLICY_SUBJECT,
    PolicyAnnouncement,
};
use gatehouse_schemas::{SCHEMA_VERSION, StatementEvent};
use tokio::task::JoinHandle;

use crate::config::NatsConfig;
use crate::decision::{DecisionError, DecisionPoint};

/// Asks the deciders of the `gatehouse-decider` queue group over NATS.
///
/// The only deadline is the session's `[decider] timeout`: requests here carry
/// none of their own, and a future the session drops leaves nothing behind.
/// Unreachable NATS, no decider listening, an error reply or an unreadable answer
/// are all [`DecisionError::Unavailable`]: the statement is refused (fail closed).
pub struct NatsDecisionPoint {
    client: Client,
    policy: Arc<PolicyVersion>,
    listener: JoinHandle<()>,
}

/// The policy version the deciders announced last, and the cache epoch it maps to.
#[derive(Debug)]
struct PolicyVersion {
    epoch: AtomicU64,
    version: Mutex<Option<String>>,
}

impl PolicyVersion {
    /// Takes `version` as the one in force; a different one than before starts a
    /// new epoch, which empties the verdict cache.
    fn observe(&self, version: &str) -> bool {
        let mut cur = self.version.lock().unwrap_or_else(|p| p.into_inner());
        if cur.as_deref() == Some(version) {
            return false;
        }
        *cur = Some(version.to_owned());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Whether a verdict made under `version` may be cached: only under the
    /// version in force (a decider still on the old policy during a rollout must
    /// not fill the new epoch's cache). Before any announcement, the first
    /// decision's version is taken as the one in force.
    fn current(&self, version: &str) -> bool {
        let known = self
            .version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if !known {
            self.observe(version);
        }
        self.version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
            == Some(version)
    }
}

impl NatsDecisionPoint {
    /// Connects to the bus. The connection is retried in the background (and
    /// after any later disconnect): meanwhile every statement is refused.
    pub async fn connect(config: &NatsConfig) -> Result<Self, async_nats::Error> {
        let client = ConnectOptions::new()
            .name("gatehouse-ingress")
            .retry_on_initial_connect()
            .request_timeout(None)
            .connect(config.url.as_str())
            .await?;
        Ok(Self::new(client).await?)
    }

    /// Uses an existing client and starts listening for policy announcements.
    pub async fn new(client: Client) -> Result<Self, async_nats::SubscribeError> {
        let mut announcements = client.subscribe(POLICY_SUBJECT).await?;
        let policy = Arc::new(PolicyVersion {
            epoch: AtomicU64::new(1),
            version: Mutex::new(None),
        });
        let state = policy.clone();
        let listener = tokio::spawn(async move {
            while let Some(msg) = announcements.next().await {
                match serde_json::from_slice::<PolicyAnnouncement>(&msg.payload) {
                    Ok(a) if a.v == SCHEMA_VERSION => {
                        if state.observe(&a.version) {
                            tracing::info!(version = %a.version, decider = %a.decider, "policy_version_changed_cache_emptied");
                        }
                    }
                    Ok(a) => tracing::warn!(v = a.v, "policy_announcement_unknown_version"),
                    Err(e) => tracing::warn!(error = %e, "policy_announcement_unreadable"),
                }
            }
        });
        Ok(Self {
            client,
            policy,
            listener,
        })
    }

    /// The policy version announced last (`None` before any announcement or decision).
    pub fn policy_version(&self) -> Option<String> {
        self.policy
            .version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for NatsDecisionPoint {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl DecisionPoint for NatsDecisionPoint {
    async fn decide(
        &self,
        event: &StatementEvent<'_>,
        prepared: &BTreeMap<String, String>,
        catalog: &CatalogFacts,
    ) -> Result<Arc<Decision>, DecisionError> {
        let request = DecisionRequest {
            v: SCHEMA_VERSION,
            role: event.role.clone().into_owned(),
            identity: event.identity.clone().into_owned(),
            protocol: event.protocol,
            sql: event.sql.clone().into_owned(),
            function_oid: event.function_oid,
            prepared: prepared.clone(),
            catalog: catalog.clone(),
        };
        let body = serde_json::to_vec(&request)
            .map_err(|e| DecisionError::Unavailable(format!("encode request: {e}")))?;
        let reply = self
            .client
            .send_request(
                DECIDE_SUBJECT,
                Request::new().payload(body.into()).timeout(None),
            )
            .await
            .map_err(|e| DecisionError::Unavailable(format!("decider request: {e}")))?;
        if let Some(error) = reply.headers.as_ref().and_then(|h| h.get(ERROR_HEADER)) {
            return Err(DecisionError::Unavailable(format!(
                "decider refused the request: {}",
                error.as_str()
            )));
        }
        let mut decision: Decision = serde_json::from_slice(&reply.payload)
            .map_err(|e| DecisionError::Unavailable(format!("unreadable decision: {e}")))?;
        if decision.v != SCHEMA_VERSION {
            return Err(DecisionError::Unavailable(format!(
                "decision of unknown message version {}",
                decision.v
            )));
        }
        if decision.cacheable && !self.policy.current(&decision.policy_version) {
            decision.cacheable = false;
        }
        Ok(Arc::new(decision))
    }

    fn epoch(&self) -> u64 {
        self.policy.epoch.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_version_is_a_new_epoch_and_only_it_is_cacheable() {
        let p = PolicyVersion {
            epoch: AtomicU64::new(1),
            version: Mutex::new(None),
        };
        // The first decision's version is adopted.
        assert!(p.current("v1"));
        let e1 = p.epoch.load(Ordering::Acquire);
        assert!(!p.observe("v1"), "the same version again changes nothing");
        assert_eq!(p.epoch.load(Ordering::Acquire), e1);
        assert!(p.observe("v2"));
        assert!(p.epoch.load(Ordering::Acquire) > e1);
        // A decider still on v1 answers: not cacheable, and no epoch change.
        let e2 = p.epoch.load(Ordering::Acquire);
        assert!(!p.current("v1"));
        assert!(p.current("v2"));
        assert_eq!(p.epoch.load(Ordering::Acquire), e2);
    }
}
