//! Just-in-time approvals: the held statement as approvers see it, the state it
//! is in, and what approvers (chat-ops bots, the CLI) send and get back.
//!
//! # Subjects and storage (distributed mode)
//!
//! - [`APPROVAL_BUCKET`]: JetStream key-value bucket, one [`ApprovalRecord`] per
//!   request id. Every state change is a compare-and-set on the entry's revision,
//!   so a request is decided once, whichever instance applies the decision.
//! - `gatehouse.v1.approvals.request.<role>` ([`request_subject`]): each new
//!   [`ApprovalRequest`], published once by an approver service, for bots.
//! - `gatehouse.v1.approvals.update.<id>` ([`update_subject`]): the
//!   [`ApprovalRecord`] after each change (decided, refused decision, expired, ...).
//! - [`DECIDE_SUBJECT`] (request/reply, queue group [`APPROVER_QUEUE`]): an
//!   [`ApproverDecision`] in, a [`DecisionReply`] out.
//! - [`LIST_SUBJECT`] (request/reply, same queue group): an [`ApprovalQuery`] in,
//!   an [`ApprovalList`] out.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::Identity;
use crate::evidence::{CiContext, Param};

/// JetStream key-value bucket of approval records, keyed by request id.
pub const APPROVAL_BUCKET: &str = "GATEHOUSE_APPROVALS";
/// Prefix of the subjects new requests are announced on, one per role.
pub const REQUEST_SUBJECT_PREFIX: &str = "gatehouse.v1.approvals.request";
/// Prefix of the subjects each record change is announced on, one per request.
pub const UPDATE_SUBJECT_PREFIX: &str = "gatehouse.v1.approvals.update";
/// Approvers' decisions (request/reply, queue group [`APPROVER_QUEUE`]).
pub const DECIDE_SUBJECT: &str = "gatehouse.v1.approvals.decide";
/// Listing and showing requests (request/reply, queue group [`APPROVER_QUEUE`]).
pub const LIST_SUBJECT: &str = "gatehouse.v1.approvals.list";
/// Queue group of approver service instances.
pub const APPROVER_QUEUE: &str = "gatehouse-approver";
/// Refused decisions kept per record (the oldest go first); each is also logged
/// and, while the statement is held, recorded in the session's evidence.
pub const MAX_REFUSALS: usize = 32;

/// The subject new requests of `role` are announced on.
pub fn request_subject(role: &str) -> String {
    format!("{REQUEST_SUBJECT_PREFIX}.{}", subject_token(role))
}

/// The subject changes of request `id` are announced on.
pub fn update_subject(id: Uuid) -> String {
    format!("{UPDATE_SUBJECT_PREFIX}.{id}")
}

/// A role name as one subject token: NATS separators and wildcards become `_`.
fn subject_token(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '.' | '*' | '>' | ' ' | '\t' | '\r' | '\n' => '_',
            c => c,
        })
        .collect()
}

/// What an approval is bound to (invariant 5): hex SHA-256 over the session, the
/// exact SQL text and its parameters, each length-prefixed so that no two
/// different triples hash alike.
pub fn statement_hash(session: Uuid, sql: &str, params: Option<&[Param]>) -> String {
    let mut h = Sha256::new();
    h.update(b"gatehouse-approval-v1\0");
    h.update(session.as_bytes());
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    field(sql.as_bytes());
    match params {
        None => field(b"-"),
        Some(ps) => {
            field(&(ps.len() as u64).to_be_bytes());
            for p in ps {
                let (kind, value) = match p {
                    Param::Null => ("n", String::new()),
                    Param::Text(t) => ("t", t.clone()),
                    Param::Binary(b) => ("b", b.clone()),
                    Param::Withheld(n) => ("w", n.to_string()),
                    Param::Masked(m) => ("m", m.clone()),
                };
                field(kind.as_bytes());
                field(value.as_bytes());
            }
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A held statement, as approvers are shown it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalRequest {
    /// Always [`crate::SCHEMA_VERSION`].
    pub v: u32,
    /// The request id (also the key in [`APPROVAL_BUCKET`]).
    pub id: Uuid,
    /// The Gatehouse role of the session.
    pub role: String,
    /// The gateway session holding the statement.
    pub session_id: Uuid,
    /// The `seq` of the held statement's evidence event.
    pub statement_seq: u64,
    /// The statement text, exactly as it would run.
    pub sql: String,
    /// Its parameters, when the protocol had them at hold time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Vec<Param>>,
    /// [`statement_hash`] of session, text and parameters: a decision must name it.
    pub statement_hash: String,
    /// Who sent it (the verified claims of the caller's token).
    pub requester: Identity,
    /// The CI context of those claims (repository, workflow, run id, commit).
    pub ci: CiContext,
    /// The policy rule that asked for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The rule's reason.
    pub reason: String,
    /// The approver group: an approver's token must carry it in its groups claim.
    pub approvers: String,
    /// When it was requested, RFC 3339 UTC.
    pub requested_at: String,
    /// Decisions after this are refused, RFC 3339 UTC.
    pub deadline: String,
    /// The deadline as milliseconds since the Unix epoch (for comparisons).
    pub deadline_ms: u64,
    /// The gateway instance holding it.
    pub gateway: String,
}

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    /// Waiting for a decision.
    Pending,
    /// Approved; the gateway runs the statement once.
    Approved,
    /// Denied; the client got `42501`.
    Denied,
    /// The deadline passed first; the client got `57014`.
    Expired,
    /// The client cancelled or went away first.
    Withdrawn,
    /// Approved and sent to the database (once).
    Executed,
}

impl ApprovalState {
    /// The wire name, also used in evidence.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Withdrawn => "withdrawn",
            Self::Executed => "executed",
        }
    }

    /// Whether decisions are still taken.
    pub fn is_pending(self) -> bool {
        self == Self::Pending
    }
}

/// Who decided, or tried to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DecidedBy {
    /// The approver's verified identity.
    pub identity: Identity,
    /// `approve` or `deny`.
    pub decision: Choice,
    /// The approver's comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// When, RFC 3339 UTC.
    pub at: String,
}

/// A decision that was not accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RefusedDecision {
    /// The token's subject when the token was valid; absent when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// What it asked for.
    pub decision: Choice,
    /// Why it was refused.
    pub reason: String,
    /// When, RFC 3339 UTC.
    pub at: String,
}

/// An approver's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// Let the statement run once.
    Approve,
    /// Refuse it.
    Deny,
}

/// A request and everything that happened to it: the value in [`APPROVAL_BUCKET`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalRecord {
    /// Always [`crate::SCHEMA_VERSION`].
    pub v: u32,
    /// The request.
    pub request: ApprovalRequest,
    /// Its state.
    pub state: ApprovalState,
    /// Whether an approver service has announced it on [`request_subject`].
    #[serde(default)]
    pub notified: bool,
    /// The accepted decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided: Option<DecidedBy>,
    /// Why it left `pending` without a decision (`expired`, `withdrawn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_reason: Option<String>,
    /// Refused decisions, oldest first, at most [`MAX_REFUSALS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refusals: Vec<RefusedDecision>,
    /// Refused decisions in all (`refusals` keeps the last few).
    #[serde(default)]
    pub refused_total: u64,
}

impl ApprovalRecord {
    /// A new pending record.
    pub fn new(request: ApprovalRequest) -> Self {
        Self {
            v: crate::SCHEMA_VERSION,
            request,
            state: ApprovalState::Pending,
            notified: false,
            decided: None,
            closed_reason: None,
            refusals: Vec::new(),
            refused_total: 0,
        }
    }

    /// Appends a refused decision, keeping at most [`MAX_REFUSALS`].
    pub fn refuse(&mut self, refusal: RefusedDecision) {
        if self.refusals.len() >= MAX_REFUSALS {
            self.refusals.remove(0);
        }
        self.refusals.push(refusal);
        self.refused_total += 1;
    }
}

/// An approver's decision, sent on [`DECIDE_SUBJECT`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApproverDecision {
    /// Always [`crate::SCHEMA_VERSION`].
    pub v: u32,
    /// The request id.
    pub request: Uuid,
    /// The request's `statement_hash`: the decision is for exactly that statement.
    pub statement_hash: String,
    /// Approve or deny.
    pub decision: Choice,
    /// Free text, recorded and shown to the client on a denial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The approver's own JWT from an approver issuer (identity proof).
    pub token: String,
}

/// The answer to an [`ApproverDecision`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DecisionReply {
    /// Always [`crate::SCHEMA_VERSION`].
    pub v: u32,
    /// Whether the decision was applied.
    pub accepted: bool,
    /// The request's state afterwards (absent for an unknown request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ApprovalState>,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A listing or a look-up, sent on [`LIST_SUBJECT`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalQuery {
    /// Always [`crate::SCHEMA_VERSION`].
    pub v: u32,
    /// The approver's JWT: only requests of groups it belongs to are shown.
    pub token: String,
    /// One request (any state); absent: every pending request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
}

/// The answer to an [`ApprovalQuery`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalList {
    /// Always [`crate::SCHEMA_VERSION`].
    pub v: u32,
    /// The records, oldest request first.
    pub records: Vec<ApprovalRecord>,
    /// Why nothing is listed (a token that was not accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ApprovalRequest {
        ApprovalRequest {
            v: 1,
            id: Uuid::nil(),
            role: "etl".into(),
            session_id: Uuid::nil(),
            statement_seq: 3,
            sql: "delete from t".into(),
            params: None,
            statement_hash: statement_hash(Uuid::nil(), "delete from t", None),
            requester: Identity {
                issuer: "i".into(),
                subject: "s".into(),
                key_id: None,
                algorithm: "EdDSA".into(),
                claims: serde_json::Map::new(),
            },
            ci: CiContext::default(),
            rule: Some("r".into()),
            reason: "every row".into(),
            approvers: "dba".into(),
            requested_at: "2026-11-23T10:00:00.000Z".into(),
            deadline: "2026-11-23T10:10:00.000Z".into(),
            deadline_ms: 1,
            gateway: "g".into(),
        }
    }

    #[test]
    fn records_and_decisions_roundtrip() {
        let mut rec = ApprovalRecord::new(request());
        for i in 0..(MAX_REFUSALS + 3) {
            rec.refuse(RefusedDecision {
                subject: None,
                decision: Choice::Approve,
                reason: format!("r{i}"),
                at: "t".into(),
            });
        }
        assert_eq!(rec.refusals.len(), MAX_REFUSALS);
        assert_eq!(rec.refused_total, MAX_REFUSALS as u64 + 3);
        assert_eq!(rec.refusals[0].reason, "r3", "the oldest go first");
        let json = serde_json::to_value(&rec).unwrap();
        assert_eq!(json["state"], "pending");
        assert_eq!(serde_json::from_value::<ApprovalRecord>(json).unwrap(), rec);
        let d = ApproverDecision {
            v: 1,
            request: Uuid::nil(),
            statement_hash: "00".into(),
            decision: Choice::Deny,
            comment: Some("not now".into()),
            token: "t".into(),
        };
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["decision"], "deny");
        assert_eq!(serde_json::from_value::<ApproverDecision>(json).unwrap(), d);
    }

    #[test]
    fn the_hash_binds_session_text_and_parameters() {
        let s = Uuid::now_v7();
        let base = statement_hash(s, "delete from t", None);
        assert_eq!(base.len(), 64);
        assert_eq!(base, statement_hash(s, "delete from t", None));
        assert_ne!(base, statement_hash(Uuid::now_v7(), "delete from t", None));
        assert_ne!(base, statement_hash(s, "delete from t ", None));
        assert_ne!(base, statement_hash(s, "delete from t", Some(&[])));
        let a = statement_hash(s, "q", Some(&[Param::Text("ab".into()), Param::Null]));
        let b = statement_hash(
            s,
            "q",
            Some(&[Param::Text("a".into()), Param::Text("b".into())]),
        );
        assert_ne!(a, b);
    }

    #[test]
    fn role_names_become_one_subject_token() {
        assert_eq!(request_subject("etl"), "gatehouse.v1.approvals.request.etl");
        assert_eq!(
            request_subject("a.b*>"),
            "gatehouse.v1.approvals.request.a_b__"
        );
    }
}
