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
//!
//! # Batch messages
//!
//! An ingress publishes the records it makes durable together (group commit) as
//! one JetStream message on [`EVIDENCE_BATCH_SUBJECT`]: NDJSON, every record
//! exactly as serialized (one line of JSON: JSON escapes any newline in a
//! value) followed by one `\n`, in the order the ingress queued them: the
//! format of the all-in-one spool. A batch holds records of many sessions,
//! each session's in `seq` order; at most [`BATCH_MAX_RECORDS`] records and
//! [`BATCH_MAX_BYTES`] bytes ([`split_batches`]). Each line is an [`Event`]
//! (`schemas/json/evidence-event.schema.json`); the message has no envelope of
//! its own, so the per-record schema, hashes and ids are unchanged, and a
//! change of framing would take a new subject.
//!
//! Its `Nats-Msg-Id` is [`batch_message_id`] of its first record and its count:
//! the same when the same batch is published again after a failure, so
//! JetStream's duplicate window drops the copy. A reader must still expect a
//! record twice (in two messages, or redelivered) and deduplicate on the event
//! id `<session>/<seq>`.
//!
//! [`batch_records`] reads both forms: a batch, and the older single record
//! without a trailing newline.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::decision::{Decision, ShadowHit};
use crate::{Identity, ProtocolKind};

/// JetStream stream holding evidence events (file storage), on every subject
/// under [`EVIDENCE_SUBJECT_PREFIX`].
pub const EVIDENCE_STREAM: &str = "GATEHOUSE_EVIDENCE";
/// Subject prefix of evidence messages: [`EVIDENCE_BATCH_SUBJECT`] (what an
/// ingress publishes), and `gatehouse.v1.evidence.<session id>` (one record per
/// message: what ingresses before batching published, still archived).
pub const EVIDENCE_SUBJECT_PREFIX: &str = "gatehouse.v1.evidence";
/// Subject of evidence batch messages: see [`encode_batch`].
pub const EVIDENCE_BATCH_SUBJECT: &str = "gatehouse.v1.evidence.batch";
/// At most this many records in one batch message.
pub const BATCH_MAX_RECORDS: usize = 1000;
/// At most this many bytes in one batch message, unless it carries a single
/// record that is larger on its own: well under nats-server's default maximum
/// payload (1 MiB).
pub const BATCH_MAX_BYTES: usize = 512 * 1024;
/// Durable consumer shared by the archivers (each event reaches one of them).
pub const ARCHIVER_CONSUMER: &str = "gatehouse-archiver";
/// `prev` of a session's first event: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The evidence subject of one session, on which ingresses before batching
/// published each record as a message of its own (`Nats-Msg-Id`
/// `<session>/<seq>`). Archivers still take such messages.
pub fn evidence_subject(session: Uuid) -> String {
    format!("{EVIDENCE_SUBJECT_PREFIX}.{session}")
}

/// The records of one batch message: `records` each followed by `\n`.
pub fn encode_batch<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        out.extend_from_slice(r);
        out.push(b'\n');
    }
    out
}

/// The records an evidence message carries, in order: the lines of a batch, or
/// the one record of an older single-record message (which has no trailing
/// newline). An empty line, or an empty message, is returned as an empty record
/// (not an event: the reader reports it).
pub fn batch_records(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    payload
        .strip_suffix(b"\n")
        .unwrap_or(payload)
        .split(|&b| b == b'\n')
}

/// The `Nats-Msg-Id` of a batch message whose first record is `<session>/<seq>`
/// and which carries `records` records: `<session>/<seq>+<records>`.
pub fn batch_message_id(session: Uuid, seq: u64, records: usize) -> String {
    format!("{session}/{seq}+{records}")
}

/// Splits `records` (in order) into the runs that go into one batch message
/// each: at most [`BATCH_MAX_RECORDS`] records and [`BATCH_MAX_BYTES`] bytes
/// (`len` of a record, plus its newline), except that a record larger than
/// that goes alone. The same input always splits the same way, so a batch
/// published again gets the same message ids.
pub fn split_batches<T>(records: &[T], len: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, r) in records.iter().enumerate() {
        let n = len(r) + 1;
        if i > start && (i - start == BATCH_MAX_RECORDS || bytes + n > BATCH_MAX_BYTES) {
            out.push(&records[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += n;
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
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
    /// Who the session is, on every event after `session_started`: so that each
    /// record stands alone for a reader that sees only some of a session's
    /// events (a SIEM, one of several archivers). Absent in records of older
    /// gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctx: Option<SessionContext>,
    /// What happened.
    #[serde(flatten)]
    pub body: EventBody,
}

/// The session an event belongs to, as its `session_started` told it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SessionContext {
    /// The Gatehouse role.
    pub role: String,
    /// The caller's `iss`.
    pub iss: String,
    /// The caller's `sub`.
    pub sub: String,
    /// A readable name: the repository or service account, else the subject.
    pub name: String,
    /// The client's address, `ip:port`.
    pub client: String,
    /// The upstream, `host:port/dbname`.
    pub upstream: String,
}

impl SessionContext {
    /// The context a session's start gives its later events.
    pub fn of(s: &SessionStarted) -> Self {
        Self {
            role: s.role.clone(),
            iss: s.identity.issuer.clone(),
            sub: s.identity.subject.clone(),
            name: s
                .ci
                .repository
                .clone()
                .or_else(|| s.ci.service_account.clone())
                .unwrap_or_else(|| s.identity.subject.clone()),
            client: s.client_addr.clone(),
            upstream: s.upstream.clone(),
        }
    }
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
    /// Statement classes of the text: each statement's classes, its primary
    /// class first, statements in order (`create table t as select 1; select 2`
    /// has `ddl`, `read`, `read`).
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
    /// What it reads, writes and calls, as the decider found them (absent: no
    /// verdict was obtained, or the record predates this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<StatementObjects>,
}

/// What a recorded statement reads, writes and calls, over every statement of
/// its text, as the decider resolved them (`schema.name`): what `gatehouse
/// who-changed` and `policy suggest` read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StatementObjects {
    /// Tables, views and sequences read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reads: Vec<String>,
    /// Tables written, sequences advanced, objects created, altered, dropped or
    /// granted on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writes: Vec<String>,
    /// Functions called.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<String>,
}

impl StatementObjects {
    /// The union over a decision's statements, sorted, without repeats.
    pub fn of(d: &Decision) -> Self {
        let collect = |f: fn(&crate::decision::StatementSummary) -> &Vec<String>| {
            let set: std::collections::BTreeSet<&String> =
                d.statements.iter().flat_map(f).collect();
            set.into_iter().cloned().collect()
        };
        Self {
            reads: collect(|s| &s.reads),
            writes: collect(|s| &s.writes),
            calls: collect(|s| &s.calls),
        }
    }
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
            ctx: None,
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
    fn batches_round_trip_and_old_single_records_still_read() {
        let records: Vec<&[u8]> = vec![br#"{"a":1}"#, br#"{"b":"x\ny"}"#, b"{}"];
        let payload = encode_batch(records.iter().copied());
        // A newline inside a value is escaped in JSON: lines are records.
        assert_eq!(payload, b"{\"a\":1}\n{\"b\":\"x\\ny\"}\n{}\n");
        assert_eq!(batch_records(&payload).collect::<Vec<_>>(), records);
        // The older form: one record, no newline.
        assert_eq!(
            batch_records(br#"{"a":1}"#).collect::<Vec<_>>(),
            vec![br#"{"a":1}"#]
        );
        // Nothing to read is one empty record, for the reader to report.
        assert_eq!(batch_records(b"").collect::<Vec<_>>(), vec![b""]);
        assert_eq!(
            batch_records(b"{}\n\n{}\n").collect::<Vec<_>>(),
            vec![&b"{}"[..], b"", b"{}"]
        );
        assert_eq!(
            batch_message_id(Uuid::nil(), 7, 3),
            "00000000-0000-0000-0000-000000000000/7+3"
        );
    }

    #[test]
    fn batches_split_by_records_and_bytes_the_same_way_every_time() {
        let small = vec![100usize; 2500];
        let runs = split_batches(&small, |&n| n);
        assert_eq!(
            runs.iter().map(|r| r.len()).collect::<Vec<_>>(),
            vec![1000, 1000, 500]
        );
        // 2,000-byte records (2,001 with the newline): 262 fit in 512 KiB.
        let big = vec![2000usize; 600];
        let runs = split_batches(&big, |&n| n);
        assert_eq!(
            runs.iter().map(|r| r.len()).collect::<Vec<_>>(),
            vec![262, 262, 76]
        );
        assert!(runs.iter().all(|r| r.len() * 2001 <= BATCH_MAX_BYTES));
        // A record larger than a message goes alone, in its place.
        let mixed = vec![10, BATCH_MAX_BYTES + 5, 10, 10];
        let runs = split_batches(&mixed, |&n| n);
        assert_eq!(
            runs.iter().map(|r| r.to_vec()).collect::<Vec<_>>(),
            vec![vec![10], vec![BATCH_MAX_BYTES + 5], vec![10, 10]]
        );
        assert_eq!(split_batches(&mixed, |&n| n), runs);
        assert!(split_batches::<usize>(&[], |&n| n).is_empty());
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
