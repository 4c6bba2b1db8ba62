//! Gatehouse's approver: takes approvers' decisions on held statements and
//! enforces who may approve (invariant 5); announces new requests to bots.
//!
//! The core ([`Approver`]) is a plain async API over the approval [`store`]
//! (JetStream key-value, or memory in all-in-one mode), which the gateway
//! holding a statement writes its request to; [`service`] puts the core on
//! NATS, [`local`] runs it in the gateway's process.
//!
//! An approver proves who they are with a JWT from one of `[[approvals.issuers]]`
//! (checked by a [`TokenVerifier`] the binary gives: the gateway's own).
//! Their groups are the `[approvals] groups_claim` claim of that token (default
//! `groups`: an array of strings, or a space-separated string); the rule's
//! `approvers` group must be one of them.

pub mod admin;
pub mod local;
pub mod notify;
pub mod service;
pub mod store;
pub mod webhook;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gatehouse_schemas::approval::{
    ApprovalRecord, ApprovalState, ApproverDecision, Choice, DecidedBy, DecisionReply,
    RefusedDecision,
};
use gatehouse_schemas::{Identity, SCHEMA_VERSION};
use store::{ApprovalError, ApprovalStore};
use uuid::Uuid;
use webhook::WebhookConfig;

/// Proves who an approver is from their token.
pub trait TokenVerifier: Send + Sync + 'static {
    /// The identity `token` proves, or why it proves none (a message the
    /// approver may read).
    fn verify<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Identity, String>> + Send + 'a>>;
}

/// How the approver judges and announces requests (`[approvals]`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The claim of an approver's token that lists its groups (an array of
    /// strings, or a space-separated string).
    pub groups_claim: String,
    /// Claims of the requester's token that name a person: an approver whose
    /// `sub`, `preferred_username` or `email` equals one of them, or the
    /// requester's `sub`, is the requester.
    pub requester_claims: Vec<String>,
    /// How often requests past their deadline whose gateway did not close
    /// them (a gateway that died) are looked for.
    pub sweep_interval: Duration,
    /// Incoming webhooks told of each new request.
    pub webhooks: Vec<WebhookConfig>,
}

/// How long past its deadline a pending request must be before an approver
/// service expires it. Expiry is the gateway's to decide (one clock); this only
/// tidies the records of gateways that died, so it leaves room for clock skew.
pub const ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// The approver core.
pub struct Approver {
    store: ApprovalStore,
    auth: Arc<dyn TokenVerifier>,
    http: reqwest::Client,
    pub(crate) config: Settings,
}

/// Why a decision was not applied (the reply's `error`, and the record's refusal).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The message is not one this version reads.
    #[error("unreadable decision: {0}")]
    Unreadable(String),
    /// The approver's token was not accepted.
    #[error("approver token rejected: {0}")]
    Token(String),
    /// No such request.
    #[error("no approval request {0}")]
    Unknown(Uuid),
    /// The request is no longer pending.
    #[error("approval request {0} is {1}, not pending")]
    NotPending(Uuid, &'static str),
    /// The approver is not in the request's approver group.
    #[error("approver {0} is not in group \"{1}\"")]
    NotInGroup(String, String),
    /// The approver is the requester.
    #[error("approver {0} sent the statement: nobody approves their own statement")]
    SelfApproval(String),
    /// The decision names another statement.
    #[error("the decision names statement hash {0}, not the held statement's")]
    WrongStatement(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] ApprovalError),
}

impl Approver {
    /// A core over `store`, approvers proven by `auth`, webhooks posted with
    /// `http`.
    pub fn new(
        store: ApprovalStore,
        config: Settings,
        auth: Arc<dyn TokenVerifier>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            store,
            auth,
            http,
            config,
        }
    }

    /// The configured webhooks' notifier.
    pub fn webhooks(&self) -> webhook::Webhooks {
        webhook::Webhooks::new(self.http.clone(), self.config.webhooks.clone())
    }

    /// The store.
    pub fn store(&self) -> &ApprovalStore {
        &self.store
    }

    /// Verifies an approver's token.
    pub async fn approver(&self, token: &str) -> Result<Identity, Refused> {
        self.auth.verify(token.trim()).await.map_err(Refused::Token)
    }

    /// Applies a decision if every check passes; otherwise records the refusal
    /// on the request (when it exists) and says why.
    pub async fn decide(&self, d: &ApproverDecision) -> DecisionReply {
        let result = self.try_decide(d).await;
        match result {
            Ok(record) => {
                tracing::info!(request = %d.request, state = record.state.name(), "approval_decided");
                DecisionReply {
                    v: SCHEMA_VERSION,
                    accepted: true,
                    state: Some(record.state),
                    error: None,
                }
            }
            Err((refused, subject)) => {
                tracing::warn!(request = %d.request, error = %refused, subject = subject.as_deref().unwrap_or(""), "approval_decision_refused");
                let reason = refused.to_string();
                let state = match &refused {
                    Refused::Unknown(_) | Refused::Store(_) | Refused::Unreadable(_) => None,
                    _ => self
                        .store
                        .transition(d.request, |r| {
                            r.refuse(RefusedDecision {
                                subject: subject.clone(),
                                decision: d.decision,
                                reason: reason.clone(),
                                at: store::rfc3339(SystemTime::now()),
                            });
                            true
                        })
                        .await
                        .ok()
                        .map(|(r, _)| r.state),
                };
                DecisionReply {
                    v: SCHEMA_VERSION,
                    accepted: false,
                    state,
                    error: Some(reason),
                }
            }
        }
    }

    async fn try_decide(
        &self,
        d: &ApproverDecision,
    ) -> Result<ApprovalRecord, (Refused, Option<String>)> {
        if d.v != SCHEMA_VERSION {
            return Err((
                Refused::Unreadable(format!("message version {}", d.v)),
                None,
            ));
        }
        let approver = self.approver(&d.token).await.map_err(|e| (e, None))?;
        let subject = Some(approver.subject.clone());
        let (record, _) = self.store.get(d.request).await.map_err(|e| match e {
            ApprovalError::Unknown(id) => (Refused::Unknown(id), subject.clone()),
            e => (Refused::Store(e), subject.clone()),
        })?;
        self.check(&record, &approver, d)
            .map_err(|e| (e, subject.clone()))?;
        let mut refused = None;
        let (record, applied) = self
            .store
            .transition(d.request, |r| {
                // Re-checked on the record as it is now: another instance may
                // have decided, or the gateway expired it, meanwhile.
                if let Err(e) = self.check(r, &approver, d) {
                    refused = Some(e);
                    return false;
                }
                r.state = match d.decision {
                    Choice::Approve => ApprovalState::Approved,
                    Choice::Deny => ApprovalState::Denied,
                };
                r.decided = Some(DecidedBy {
                    identity: approver.clone(),
                    decision: d.decision,
                    comment: d.comment.clone(),
                    at: store::rfc3339(SystemTime::now()),
                });
                true
            })
            .await
            .map_err(|e| (Refused::Store(e), subject.clone()))?;
        match (applied, refused) {
            (true, _) => Ok(record),
            (false, Some(e)) => Err((e, subject)),
            (false, None) => Err((Refused::NotPending(d.request, record.state.name()), subject)),
        }
    }

    /// The checks of invariant 5 on one record.
    fn check(
        &self,
        r: &ApprovalRecord,
        approver: &Identity,
        d: &ApproverDecision,
    ) -> Result<(), Refused> {
        let id = r.request.id;
        if !r.state.is_pending() {
            return Err(Refused::NotPending(id, r.state.name()));
        }
        // No clock is read here: expiry is decided by one authority, the gateway
        // that holds the statement (its own timer closes the record as expired,
        // with the same compare-and-set a decision uses, and the first wins).
        // An approver's clock ahead of the gateway's would otherwise refuse
        // decisions in time, and one behind it would not matter anyway.
        if !in_group(approver, &self.config.groups_claim, &r.request.approvers) {
            return Err(Refused::NotInGroup(
                approver.subject.clone(),
                r.request.approvers.clone(),
            ));
        }
        if is_requester(
            approver,
            &r.request.requester,
            &self.config.requester_claims,
        ) {
            return Err(Refused::SelfApproval(approver.subject.clone()));
        }
        if d.statement_hash != r.request.statement_hash {
            return Err(Refused::WrongStatement(d.statement_hash.clone()));
        }
        Ok(())
    }

    /// Pending requests (or one request, any state) of the groups `token` is in.
    pub async fn list(
        &self,
        token: &str,
        id: Option<Uuid>,
    ) -> Result<Vec<ApprovalRecord>, Refused> {
        let approver = self.approver(token).await?;
        let records = match id {
            Some(id) => vec![
                self.store
                    .get(id)
                    .await
                    .map_err(|e| match e {
                        ApprovalError::Unknown(id) => Refused::Unknown(id),
                        e => Refused::Store(e),
                    })?
                    .0,
            ],
            None => self
                .store
                .all()
                .await?
                .into_iter()
                .filter(|r| r.state.is_pending())
                .collect(),
        };
        Ok(records
            .into_iter()
            .filter(|r| in_group(&approver, &self.config.groups_claim, &r.request.approvers))
            .collect())
    }

    /// Expires pending requests long past their deadline (by
    /// [`ORPHAN_GRACE`]): their gateway, which decides expiry, did not close
    /// them, so it died. Returns how many.
    pub async fn sweep(&self) -> Result<usize, ApprovalError> {
        let now = store::now_ms();
        let grace = u64::try_from(ORPHAN_GRACE.as_millis()).unwrap_or(u64::MAX);
        let mut n = 0;
        for r in self.store.all().await? {
            if r.state.is_pending() && now > r.request.deadline_ms.saturating_add(grace) {
                let after = self
                    .store
                    .close(
                        r.request.id,
                        ApprovalState::Expired,
                        "no decision before the deadline, and its gateway is gone (expired by the approver service)",
                    )
                    .await?;
                if after.state == ApprovalState::Expired {
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

/// Whether `claim` of the approver's token names `group`.
fn in_group(approver: &Identity, claim: &str, group: &str) -> bool {
    match approver.claims.get(claim) {
        Some(serde_json::Value::Array(a)) => a.iter().any(|g| g.as_str() == Some(group)),
        Some(serde_json::Value::String(s)) => s.split_whitespace().any(|g| g == group),
        _ => false,
    }
}

/// Whether the approver is the person (or identity) that sent the statement.
fn is_requester(approver: &Identity, requester: &Identity, requester_claims: &[String]) -> bool {
    let mut names = vec![approver.subject.as_str()];
    for c in ["preferred_username", "email"] {
        if let Some(v) = approver.claims.get(c).and_then(|v| v.as_str()) {
            names.push(v);
        }
    }
    let mut theirs = vec![requester.subject.as_str()];
    for c in requester_claims {
        if let Some(v) = requester.claims.get(c).and_then(|v| v.as_str()) {
            theirs.push(v);
        }
    }
    names
        .iter()
        .any(|n| theirs.iter().any(|t| t.eq_ignore_ascii_case(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(sub: &str, claims: serde_json::Value) -> Identity {
        Identity {
            issuer: "i".into(),
            subject: sub.into(),
            key_id: None,
            algorithm: "EdDSA".into(),
            claims: claims.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn groups_come_from_an_array_or_a_word_list() {
        let a = identity("alice", serde_json::json!({"groups": ["dba", "ops"]}));
        assert!(in_group(&a, "groups", "dba"));
        assert!(!in_group(&a, "groups", "db"));
        let b = identity("bob", serde_json::json!({"groups": "ops dba"}));
        assert!(in_group(&b, "groups", "dba"));
        assert!(!in_group(&b, "roles", "dba"));
    }

    #[test]
    fn the_requester_is_found_by_subject_or_person_claims() {
        let job = identity(
            "repo:acme/app:ref:refs/heads/main",
            serde_json::json!({"actor": "alice"}),
        );
        let claims = vec!["actor".to_owned()];
        let alice = identity("alice", serde_json::json!({}));
        assert!(is_requester(&alice, &job, &claims));
        let alice_by_name = identity("u-1", serde_json::json!({"preferred_username": "Alice"}));
        assert!(is_requester(&alice_by_name, &job, &claims));
        let bob = identity("bob", serde_json::json!({}));
        assert!(!is_requester(&bob, &job, &claims));
        let same_sub = identity("repo:acme/app:ref:refs/heads/main", serde_json::json!({}));
        assert!(is_requester(&same_sub, &job, &[]));
    }
}
