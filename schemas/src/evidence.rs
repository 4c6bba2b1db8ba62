//! Evidence: what the ingress records about every session, before each statement
//! runs, and what the archiver ships to Kafka and S3.
//!
//! # The record and its chain
//!
//! An [`Event`] is serialized once, by the ingress, as one line of JSON without a
//! trailing newline: its *record*. Those exact bytes are what the spool, JetStream
//! and the segments store, and what the hash chain covers: each event's `prev` is
//! the hex SHA-256 of the previous record of the same session ([`GENESIS`] for
//! the first, whose `seq` is 1). So no canonical re-serialization is needed to
//! verify anything, in any language: hash the bytes as stored.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::decision::ShadowHit;
use crate::{Identity, ProtocolKind};

/// JetStream stream holding evidence events (file storage).
pub const EVIDENCE_STREAM: &str = "GATEHOUSE_EVIDENCE";
/// Subject prefix of evidence events: one subject per session,
/// `gatehouse.v1.evidence.<session id>`.
pub const EVIDENCE_SUBJECT_PREFIX: &str = "gatehouse.v1.evidence";
/// Durable consumer shared by the archivers (each event reaches one of them).
pub const ARCHIVER_CONSUMER: &str = "gatehouse-archiver";
/// `prev` of a session's first event: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The evidence subject of one session.
pub fn evidence_subject(session: Uuid) -> String {
    format!("{EVIDENCE_SUBJECT_PREFIX}.{session}")
}

/// One evidence event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    /// Always [`crate::SCHEMA_VERSION`].
    pub v: u32,
    /// The gateway session.
    pub session_id: Uuid,
    /// Position in the session's chain, from 1, without gaps.
    pub seq: u64,
    /// When the ingress recorded it: RFC 3339, UTC, microseconds.
    pub ts: String,
    /// Hex SHA-256 of the previous record of this session ([`GENESIS`] for `seq` 1).
    pub prev: String,
    /// What happened.
    #[serde(flatten)]
    pub body: EventBody,
}

impl Event {
    /// A stable id for deduplication: `<session id>/<seq>`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.session_id, self.seq)
    }
}

/// The kinds of event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// A session was authenticated and connected upstream.
    SessionStarted(Box<SessionStarted>),
    /// A runnable SQL text (or function call) and its verdict, recorded before it
    /// is forwarded.
    Statement(Statement),
    /// How a forwarded statement ended.
    StatementCompleted(StatementCompleted),
    /// Result rows kept for replay (as the client saw them, masked values masked).
    ResultData(ResultData),
    /// A step of an approval.
    Approval(ApprovalEvent),
    /// The session ended.
    SessionEnded(SessionEnded),
}

impl EventBody {
    /// The wire name of the kind (`session_started`, `statement`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SessionStarted(_) => "session_started",
            Self::Statement(_) => "statement",
            Self::StatementCompleted(_) => "statement_completed",
            Self::ResultData(_) => "result_data",
            Self::Approval(_) => "approval",
            Self::SessionEnded(_) => "session_ended",
        }
    }
}

/// The CI context of a token, lifted out of its claims for auditors (the claims
/// themselves are in [`Identity::claims`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CiContext {
    /// `github`, `gitlab`, `kubernetes` or `oidc`.
    pub provider: String,
    /// Repository or project path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Workflow (GitHub) or pipeline source (GitLab).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Run (GitHub) or pipeline (GitLab) id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Commit SHA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Git ref.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Job (GitHub `job_workflow_ref`, GitLab `job_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Kubernetes namespace and service account (`ns/sa`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

impl CiContext {
    /// Reads the well-known CI claims of GitHub Actions, GitLab CI and Kubernetes
    /// service-account tokens; anything else is `oidc` with no fields.
    pub fn from_claims(claims: &serde_json::Map<String, serde_json::Value>) -> Self {
        let s = |k: &str| {
            claims.get(k).and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        };
        if claims.contains_key("run_id") && claims.contains_key("repository") {
            Self {
                provider: "github".into(),
                repository: s("repository"),
                workflow: s("workflow"),
                run_id: s("run_id"),
                commit: s("sha"),
                git_ref: s("ref"),
                job: s("job_workflow_ref"),
                service_account: None,
            }
        } else if claims.contains_key("project_path") && claims.contains_key("pipeline_id") {
            Self {
                provider: "gitlab".into(),
                repository: s("project_path"),
                workflow: s("pipeline_source"),
                run_id: s("pipeline_id"),
                commit: s("sha"),
                git_ref: s("ref"),
                job: s("job_id"),
                service_account: None,
            }
        } else if let Some(k8s) = claims.get("kubernetes.io").and_then(|v| v.as_object()) {
            let name = |o: Option<&serde_json::Value>| {
                o.and_then(|v| v.get("name"))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            let ns = k8s.get("namespace").and_then(|v| v.as_str());
            let sa = name(k8s.get("serviceaccount"));
            Self {
                provider: "kubernetes".into(),
                service_account: match (ns, sa) {
                    (Some(ns), Some(sa)) => Some(format!("{ns}/{sa}")),
                    _ => None,
                },
                job: name(k8s.get("pod")),
                ..Self::default()
            }
        } else {
            Self {
                provider: "oidc".into(),
                ..Self::default()
            }
        }
    }
}

/// The TLS a client connected with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TlsInfo {
    /// e.g. `TLSv1.3`.
    pub version: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// The server name the client asked for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
}

/// A session started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionStarted {
    /// The Gatehouse role assumed (the startup `user`).
    pub role: String,
    /// The caller: issuer, subject, key id, algorithm and every claim (never the token).
    pub identity: Identity,
    /// CI context read from the claims.
    pub ci: CiContext,
    /// The upstream, `host:port/dbname`.
    pub upstream: String,
    /// The upstream user Gatehouse connected as (the credential itself is never recorded).
    pub upstream_user: String,
    /// The client's address, `ip:port`.
    pub client_addr: String,
    /// The client's TLS, `None` for a cleartext connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsInfo>,
    /// Which gateway instance served it.
    pub gateway: String,
}

/// Which protocol path a recorded statement took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatementPath {
    /// A simple-protocol `Query` (all the statements of its text).
    SimpleQuery,
    /// An extended-protocol `Parse`: decided, not yet run.
    Parse,
    /// An extended-protocol `Execute` of a bound portal: what runs, with its parameters.
    Execute,
    /// A legacy `FunctionCall`.
    FunctionCall,
}

impl From<ProtocolKind> for StatementPath {
    fn from(p: ProtocolKind) -> Self {
        match p {
            ProtocolKind::SimpleQuery => Self::SimpleQuery,
            ProtocolKind::Parse => Self::Parse,
            ProtocolKind::FunctionCall => Self::FunctionCall,
        }
    }
}

/// One bound parameter as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Param {
    /// SQL NULL.
    Null,
    /// A text-format value.
    Text(String),
    /// A binary-format value, hex.
    Binary(String),
    /// Withheld by policy (masked): only its length in bytes is recorded.
    Withheld(u32),
    /// Sent towards a masked column: recorded as the mask rule's method shows
    /// it (`***-**-6789`), never as sent.
    Masked(String),
}

/// A statement and its verdict, recorded before it runs (or is refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Statement {
    /// The protocol path.
    pub path: StatementPath,
    /// Prepared-statement name (`Parse`, `Execute`), absent when unnamed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_name: Option<String>,
    /// Portal name of an `Execute`, absent when unnamed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<String>,
    /// The SQL text (for `Execute`, the prepared statement's text).
    pub sql: String,
    /// The function OID of a `FunctionCall`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_oid: Option<u32>,
    /// Bound parameters of an `Execute` (or `FunctionCall` arguments), per the
    /// role's evidence settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Vec<Param>>,
    /// `allow`, `mask`, `approve` or `block`.
    pub verdict: String,
    /// The rule that decided (absent: default deny, unparsed, or the decider was
    /// unavailable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why, for `block` and `approve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The policy version that decided (absent when no verdict was obtained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    /// Statement classes of the text, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
    /// Shadow rules that matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadow: Vec<ShadowHit>,
    /// Whether it was forwarded to PostgreSQL (`false`: refused).
    pub forwarded: bool,
    /// The approval it ran under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
}

/// How a forwarded statement ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StatementCompleted {
    /// The `seq` of its [`Statement`] event.
    pub statement: u64,
    /// `ok`, `error`, `suspended` (portal row limit reached) or `skipped` (not
    /// run because an earlier message of its pipeline failed).
    pub outcome: String,
    /// Command tags, one per statement of the text (e.g. `SELECT 1`, `UPDATE 3`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Rows returned or affected, summed over the tags.
    pub rows: u64,
    /// From forwarding to the end of its response, microseconds.
    pub duration_us: u64,
    /// SQLSTATE of the error (the message is not recorded: it may quote data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
}

/// Result rows kept for replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResultData {
    /// The `seq` of its [`Statement`] event.
    pub statement: u64,
    /// Column names.
    pub columns: Vec<String>,
    /// Text-format values as the client received them (`None`: NULL; binary
    /// values are hex).
    pub rows: Vec<Vec<Option<String>>>,
    /// Whether rows were left out to stay within the role's bound (or not
    /// kept at all: the role records counts only).
    pub truncated: bool,
    /// Rows the result set returned, kept or not.
    #[serde(default)]
    pub row_count: u64,
}

/// A step of an approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApprovalEvent {
    /// The `seq` of the held [`Statement`] event.
    pub statement: u64,
    /// The approval request's id.
    pub request: String,
    /// `requested`, `notified`, `refused` (a decision that was not accepted),
    /// `approved`, `denied`, `expired`, `withdrawn` or `executed`.
    pub state: String,
    /// The approver group asked.
    pub approvers: String,
    /// Who decided (the approver's subject), for `approved`/`denied`/`refused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Free text: the approver's comment, or why a decision was refused or the
    /// request closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The hash the approval is bound to (session, exact text, parameters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_hash: Option<String>,
    /// The requester's subject (the session's identity, named again here so each
    /// approval event carries both identities).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// The approver's verified identity, for `approved`/`denied`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<Identity>,
}

/// A session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SessionEnded {
    /// `client_terminated`, `client_closed`, `upstream_closed`, `protocol_violation`
    /// or `error`.
    pub reason: String,
    /// Statements recorded.
    pub statements: u64,
    /// Of which refused.
    pub refused: u64,
    /// Session length, milliseconds.
    pub duration_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_a_flat_tagged_shape() {
        let e = Event {
            v: 1,
            session_id: Uuid::nil(),
            seq: 2,
            ts: "2026-11-22T10:00:00.000001Z".into(),
            prev: GENESIS.into(),
            body: EventBody::StatementCompleted(StatementCompleted {
                statement: 1,
                outcome: "ok".into(),
                tags: vec!["SELECT 1".into()],
                rows: 1,
                duration_us: 12,
                sqlstate: None,
            }),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "statement_completed");
        assert_eq!(v["statement"], 1);
        assert_eq!(v["seq"], 2);
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), e);
        assert_eq!(e.body.kind(), "statement_completed");
        assert_eq!(
            e.id(),
            "00000000-0000-0000-0000-000000000000/2",
            "dedupe id"
        );
    }

    #[test]
    fn ci_context_reads_github_gitlab_and_kubernetes_claims() {
        let gh = serde_json::json!({"repository": "acme/etl", "run_id": "42", "sha": "abc",
            "workflow": "nightly", "ref": "refs/heads/main", "job_workflow_ref": "acme/etl/.github/workflows/n.yml@refs/heads/main"});
        let c = CiContext::from_claims(gh.as_object().unwrap());
        assert_eq!(c.provider, "github");
        assert_eq!(c.run_id.as_deref(), Some("42"));
        assert_eq!(c.commit.as_deref(), Some("abc"));
        let gl = serde_json::json!({"project_path": "g/p", "pipeline_id": 7, "job_id": "9"});
        let c = CiContext::from_claims(gl.as_object().unwrap());
        assert_eq!(
            (c.provider.as_str(), c.run_id.as_deref()),
            ("gitlab", Some("7"))
        );
        let k8s = serde_json::json!({"kubernetes.io": {"namespace": "ci", "serviceaccount": {"name": "runner"}, "pod": {"name": "p-1"}}});
        let c = CiContext::from_claims(k8s.as_object().unwrap());
        assert_eq!(c.service_account.as_deref(), Some("ci/runner"));
        let c = CiContext::from_claims(serde_json::json!({"sub": "x"}).as_object().unwrap());
        assert_eq!(c.provider, "oidc");
    }
}
