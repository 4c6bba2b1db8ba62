//! The Kafka record the archiver writes for SIEMs: one per evidence event,
//! shaped after OCSF (the Open Cybersecurity Schema Framework) 1.3, class
//! *Datastore Activity* (`class_uid` 6005, category *Application Activity*).
//!
//! The mapping is deliberately shallow: the fields a SIEM indexes (who, from
//! where, which database, which SQL, allowed or blocked, when) are lifted into
//! their OCSF places, and the original event's record is carried verbatim in
//! `raw_data`, byte for byte as the ingress wrote it, so nothing is lost and the
//! hash chain can be checked from the SIEM's copy alone (`prev` is the SHA-256
//! of the session's previous `raw_data`).
//!
//! Every record names the caller (`actor`), the client (`src_endpoint`), the
//! upstream and its database: `session_started` from its own fields, every later
//! event from the session context the ingress stamps on it (`ctx`), so a record
//! stands alone for a SIEM (and an archiver handling one event of a session need
//! not have seen its start). The records declare the `security_control` profile
//! (`metadata.profiles`) for `action_id` and `disposition_id`, and validate
//! against the OCSF 1.3.0 schema (tests/siem.rs, deploy/siem/ocsf-validate.py).
//! Events hold no token or credential, and neither does this record.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::evidence::Event;

mod map;

/// OCSF version the records follow.
pub const OCSF_VERSION: &str = "1.3.0";
/// OCSF class: Datastore Activity.
pub const CLASS_UID: u32 = 6005;
/// OCSF category: Application Activity.
pub const CATEGORY_UID: u32 = 6;
/// Kafka header carrying the event id `<session>/<seq>` (also `metadata.uid`),
/// so a reader can deduplicate without parsing the value.
pub const EVENT_ID_HEADER: &str = "gatehouse-event-id";

/// The OCSF profiles the records use: `security_control` brings `action_id`
/// and `disposition_id`.
pub const PROFILES: &[&str] = &["security_control"];

/// OCSF Datastore Activity `activity_id`s used here.
pub mod activity {
    /// Read: result rows were returned to the client, or a table copied out.
    pub const READ: u8 = 1;
    /// Update: rows or definitions changed (`UPDATE`, `MERGE`, `ALTER`, `GRANT` …).
    pub const UPDATE: u8 = 2;
    /// Connect: a session was established.
    pub const CONNECT: u8 = 3;
    /// Query: a query, or a statement that changes no data (`SELECT`, `BEGIN`, `SET` …).
    pub const QUERY: u8 = 4;
    /// Write: rows added (`INSERT`, `COPY … FROM`).
    pub const WRITE: u8 = 5;
    /// Create: an object created (`CREATE …`, `SELECT … INTO`).
    pub const CREATE: u8 = 6;
    /// Delete: rows or objects removed (`DELETE`, `TRUNCATE`, `DROP …`).
    pub const DELETE: u8 = 7;
    /// Other (see `activity_name`): approvals, session end.
    pub const OTHER: u8 = 99;
}

/// One Kafka record: an OCSF Datastore Activity event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SiemRecord {
    /// Always [`CLASS_UID`] (6005, Datastore Activity).
    pub class_uid: u32,
    /// `Datastore Activity`.
    pub class_name: String,
    /// Always [`CATEGORY_UID`] (6, Application Activity).
    pub category_uid: u32,
    /// `Application Activity`.
    pub category_name: String,
    /// 3 Connect (`session_started`); for `statement` and
    /// `statement_completed`, what the SQL does: 5 Write, 2 Update, 7 Delete, 6
    /// Create, 1 Read (a copy out), else 4 Query ([`activity`]); 1 Read
    /// (`result_data`); 99 Other (`approval`, `session_ended`; see `activity_name`).
    pub activity_id: u8,
    /// The activity's caption (`Connect`, `Query`, `Write`, …, `Approval`, `Disconnect`).
    pub activity_name: String,
    /// `class_uid * 100 + activity_id`.
    pub type_uid: u64,
    /// `Datastore Activity: <activity_name>`.
    pub type_name: String,
    /// When the ingress recorded the event, milliseconds since the Unix epoch.
    pub time: i64,
    /// 1 Informational; 3 Medium for a refused statement or a denied approval.
    pub severity_id: u8,
    /// The severity's caption.
    pub severity: String,
    /// 1 Success, 2 Failure (a refused or failed statement, a denied or expired approval).
    pub status_id: u8,
    /// The status's caption.
    pub status: String,
    /// Why a statement was refused, its SQLSTATE when it failed, or the approval state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<String>,
    /// 1 Allowed, 2 Denied: whether the gateway let the activity happen (99
    /// Other where it decided nothing: an approval requested, a session's end).
    pub action_id: u8,
    /// The action's caption.
    pub action: String,
    /// 1 Allowed, 2 Blocked, 14 Delayed (held for approval), 8 Approved, 99
    /// Other (masked): the statement's verdict, or the approval's outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition_id: Option<u8>,
    /// The disposition's caption (`Allowed`, `Blocked`, `Delayed`, `Approved`, `Masked`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<String>,
    /// A one-line description for people.
    pub message: String,
    /// Where the record comes from, and its id.
    pub metadata: Metadata,
    /// Who acted: the verified identity, the role and the session.
    pub actor: Actor,
    /// The client (absent only in records of gateways that did not stamp `ctx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_endpoint: Option<Endpoint>,
    /// The upstream PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_endpoint: Option<Endpoint>,
    /// The upstream database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<Database>,
    /// The SQL text (on `statement`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_info: Option<QueryInfo>,
    /// The decision: policy rule and verdict (on `statement`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorizations: Vec<Authorization>,
    /// How long it took, milliseconds (`statement_completed`, `session_ended`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    /// Rows returned or affected (`statement_completed`, `result_data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// The original Gatehouse event: its record, exactly as stored in the
    /// archive and hashed by the chain.
    pub raw_data: String,
    /// Gatehouse fields OCSF has no place for.
    pub unmapped: Unmapped,
}

/// OCSF `metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Metadata {
    /// The OCSF version, [`OCSF_VERSION`].
    pub version: String,
    /// The profiles the record uses, [`PROFILES`].
    pub profiles: Vec<String>,
    /// Gatehouse.
    pub product: Product,
    /// The event id `<session>/<seq>`: unique, the deduplication key.
    pub uid: String,
    /// The session: every event of a session shares it.
    pub correlation_uid: String,
    /// The event's position in its session (`seq`).
    pub sequence: u64,
    /// The original `ts` (RFC 3339, microseconds).
    pub original_time: String,
    /// `gatehouse-evidence`.
    pub log_name: String,
}

/// OCSF `product`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Product {
    /// `Gatehouse`.
    pub name: String,
    /// `Gatehouse`.
    pub vendor_name: String,
}

/// OCSF `actor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Actor {
    /// The caller's verified identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    /// The gateway session.
    pub session: Session,
    /// The Gatehouse role assumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
}

/// OCSF `user`: a machine identity, from its token's validated claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct User {
    /// The token's `sub`.
    pub uid: String,
    /// A readable name: the repository or service account when the CI context
    /// has one, else the subject.
    pub name: String,
    /// 3 System: a non-human identity.
    pub type_id: u8,
    /// `System`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The issuer (`iss`) as the domain of the identity.
    pub domain: String,
}

/// OCSF `session`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Session {
    /// The gateway session id.
    pub uid: String,
    /// The token's issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

/// OCSF `network_endpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Endpoint {
    /// The address, when it is an IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The host name, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// OCSF `database`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Database {
    /// The database name.
    pub name: String,
    /// `PostgreSQL`.
    #[serde(rename = "type")]
    pub kind: String,
    /// 1 Relational.
    pub type_id: u8,
}

/// OCSF `query_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct QueryInfo {
    /// The SQL text.
    pub query_string: String,
    /// The prepared-statement name, when named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The event id of the statement (`<session>/<seq>`).
    pub uid: String,
}

/// OCSF `authorization`: the policy decision on a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Authorization {
    /// The verdict: `allow`, `mask`, `approve` or `block`.
    pub decision: String,
    /// The rule and policy version that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
}

/// OCSF `policy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Policy {
    /// The rule id; `(no rule)` when none decided (default deny, unparsed
    /// SQL, no decider answering).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The policy version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The reason given, for `block` and `approve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
}

/// Gatehouse fields without an OCSF place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Unmapped {
    /// The event's `type` (`session_started`, `statement`, …).
    pub gatehouse_event_type: String,
    /// The Gatehouse schema version of the event (`v`).
    pub gatehouse_schema_version: u32,
    /// On `statement`: the relations it reads and writes and the functions it
    /// calls, as the decider resolved them. OCSF's `table` holds one table and
    /// no direction, so the lists stay here, for a SIEM rule on "who wrote to
    /// `billing.*`".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gatehouse_objects: Option<crate::evidence::StatementObjects>,
}

/// The record is not an evidence event.
#[derive(Debug)]
pub struct NotAnEvent(pub serde_json::Error);

impl std::fmt::Display for NotAnEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not an evidence event: {}", self.0)
    }
}

impl std::error::Error for NotAnEvent {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl SiemRecord {
    /// Maps one record (an event's exact JSON) to its SIEM record.
    pub fn from_record(record: &str) -> Result<Self, NotAnEvent> {
        let event: Event = serde_json::from_str(record).map_err(NotAnEvent)?;
        Ok(Self::from_event(&event, record))
    }

    /// Maps an event; `record` is its exact JSON, carried in `raw_data`.
    pub fn from_event(event: &Event, record: &str) -> Self {
        let id = event.id();
        let session = event.session_id.to_string();
        let mut r = map::Mapped::new(event);
        r.map(event, &id);
        let type_uid = u64::from(CLASS_UID) * 100 + u64::from(r.activity_id);
        Self {
            class_uid: CLASS_UID,
            class_name: "Datastore Activity".into(),
            category_uid: CATEGORY_UID,
            category_name: "Application Activity".into(),
            activity_id: r.activity_id,
            type_uid,
            type_name: format!("Datastore Activity: {}", r.activity_name),
            activity_name: r.activity_name.into(),
            time: map::epoch_ms(&event.ts),
            severity_id: r.severity_id,
            severity: map::severity_name(r.severity_id).into(),
            status_id: if r.success { 1 } else { 2 },
            status: if r.success { "Success" } else { "Failure" }.into(),
            status_detail: r.status_detail,
            action_id: r.action.0,
            action: r.action.1.into(),
            disposition_id: r.disposition.map(|(id, _)| id),
            disposition: r.disposition.map(|(_, name)| name.to_owned()),
            message: r.message,
            metadata: Metadata {
                version: OCSF_VERSION.into(),
                profiles: PROFILES.iter().map(|p| (*p).to_owned()).collect(),
                product: Product {
                    name: "Gatehouse".into(),
                    vendor_name: "Gatehouse".into(),
                },
                uid: id,
                correlation_uid: session.clone(),
                sequence: event.seq,
                original_time: event.ts.clone(),
                log_name: "gatehouse-evidence".into(),
            },
            actor: Actor {
                user: r.user,
                session: Session {
                    uid: session,
                    issuer: r.issuer,
                },
                app_name: r.role,
            },
            src_endpoint: r.src,
            dst_endpoint: r.dst,
            database: r.database,
            query_info: r.query,
            authorizations: r.authorizations,
            duration: r.duration,
            count: r.count,
            raw_data: record.to_owned(),
            unmapped: Unmapped {
                gatehouse_event_type: event.body.kind().into(),
                gatehouse_schema_version: event.v,
                gatehouse_objects: match &event.body {
                    crate::evidence::EventBody::Statement(s) => s.objects.clone(),
                    _ => None,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;
    use crate::evidence::{
        ApprovalEvent, CiContext, EventBody, GENESIS, Param, ResultData, SessionEnded,
        SessionStarted, Statement, StatementCompleted, StatementPath,
    };
    use uuid::Uuid;

    fn event(seq: u64, body: EventBody) -> (Event, String) {
        let e = Event {
            v: 1,
            session_id: Uuid::nil(),
            seq,
            ts: "2026-11-22T10:00:00.123456Z".into(),
            prev: GENESIS.into(),
            ctx: None,
            body,
        };
        let record = serde_json::to_string(&e).unwrap();
        (e, record)
    }

    fn started() -> EventBody {
        let mut claims = serde_json::Map::new();
        claims.insert("repository".into(), "acme/etl".into());
        claims.insert("run_id".into(), "42".into());
        EventBody::SessionStarted(Box::new(SessionStarted {
            role: "etl".into(),
            identity: Identity {
                issuer: "https://token.actions.githubusercontent.com".into(),
                subject: "repo:acme/etl:ref:refs/heads/main".into(),
                key_id: None,
                algorithm: "RS256".into(),
                claims: claims.clone(),
            },
            ci: CiContext::from_claims(&claims),
            upstream: "db.internal:5432/app".into(),
            upstream_user: "etl".into(),
            client_addr: "10.1.2.3:51000".into(),
            tls: None,
            gateway: "gw-1".into(),
        }))
    }

    fn statement(verdict: &str, forwarded: bool) -> EventBody {
        EventBody::Statement(Statement {
            path: StatementPath::Execute,
            statement_name: Some("s1".into()),
            portal: None,
            sql: "select * from t where id = $1".into(),
            function_oid: None,
            params: Some(vec![Param::Text("7".into())]),
            verdict: verdict.into(),
            rule: Some("r1".into()),
            reason: (!forwarded).then(|| "no".to_owned()),
            policy_version: Some("p1".into()),
            classes: vec!["read".into()],
            shadow: Vec::new(),
            forwarded,
            approval: None,
            objects: None,
        })
    }

    #[test]
    fn session_start_names_the_caller_the_client_and_the_database() {
        let (e, raw) = event(1, started());
        let r = SiemRecord::from_event(&e, &raw);
        assert_eq!((r.class_uid, r.category_uid), (6005, 6));
        assert_eq!((r.activity_id, r.type_uid), (3, 600503));
        assert_eq!(r.time, 1_795_341_600_123);
        let user = r.actor.user.as_ref().unwrap();
        assert_eq!(user.uid, "repo:acme/etl:ref:refs/heads/main");
        assert_eq!(user.name, "acme/etl");
        assert_eq!(r.actor.app_name.as_deref(), Some("etl"));
        let src = r.src_endpoint.as_ref().unwrap();
        assert_eq!(
            (src.ip.as_deref(), src.port),
            (Some("10.1.2.3"), Some(51000))
        );
        let dst = r.dst_endpoint.as_ref().unwrap();
        assert_eq!(
            (dst.hostname.as_deref(), dst.port),
            (Some("db.internal"), Some(5432))
        );
        assert_eq!(r.database.as_ref().unwrap().name, "app");
        assert_eq!(r.metadata.uid, format!("{}/1", Uuid::nil()));
        assert_eq!(r.metadata.correlation_uid, Uuid::nil().to_string());
        assert_eq!(r.metadata.product.name, "Gatehouse");
        // Nothing is lost: the record is carried byte for byte.
        assert_eq!(r.raw_data, raw);
        assert_eq!(SiemRecord::from_record(&raw).unwrap(), r);
    }

    #[test]
    fn statements_name_what_they_read_write_and_call() {
        let mut body = statement("allow", true);
        let EventBody::Statement(s) = &mut body else {
            unreachable!()
        };
        s.objects = Some(crate::evidence::StatementObjects {
            reads: vec!["public.t".into()],
            writes: vec!["billing.invoices".into()],
            calls: vec!["public.f".into()],
        });
        let (e, raw) = event(2, body);
        let r = SiemRecord::from_event(&e, &raw);
        let o = r.unmapped.gatehouse_objects.as_ref().expect("objects");
        assert_eq!(
            (o.reads.as_slice(), o.writes.as_slice(), o.calls.as_slice()),
            (
                &["public.t".to_owned()][..],
                &["billing.invoices".to_owned()][..],
                &["public.f".to_owned()][..]
            )
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["unmapped"]["gatehouse_objects"]["writes"][0],
            "billing.invoices"
        );
        // Other events carry none.
        let (e, raw) = event(1, started());
        assert!(
            SiemRecord::from_event(&e, &raw)
                .unmapped
                .gatehouse_objects
                .is_none()
        );
    }

    #[test]
    fn statements_carry_sql_verdict_and_rule() {
        let (e, raw) = event(2, statement("allow", true));
        let r = SiemRecord::from_event(&e, &raw);
        assert_eq!((r.activity_id, r.status_id, r.severity_id), (4, 1, 1));
        assert_eq!(
            (r.disposition_id, r.disposition.as_deref()),
            (Some(1), Some("Allowed"))
        );
        let q = r.query_info.as_ref().unwrap();
        assert_eq!(q.query_string, "select * from t where id = $1");
        assert_eq!(q.name.as_deref(), Some("s1"));
        let policy = r.authorizations[0].policy.as_ref().unwrap();
        assert_eq!(
            (policy.name.as_deref(), policy.version.as_deref()),
            (Some("r1"), Some("p1"))
        );
        assert!(r.actor.user.is_none(), "a record without ctx has no caller");
        assert_eq!((r.action_id, r.metadata.profiles.len()), (1, 1));

        let (e, raw) = event(3, statement("block", false));
        let r = SiemRecord::from_event(&e, &raw);
        assert_eq!(
            (r.status.as_str(), r.severity_id, r.disposition_id),
            ("Failure", 3, Some(2))
        );
        assert_eq!(r.status_detail.as_deref(), Some("no"));
        let (e, raw) = event(3, statement("approve", false));
        assert_eq!(SiemRecord::from_event(&e, &raw).disposition_id, Some(14));
        let (e, raw) = event(3, statement("mask", true));
        let r = SiemRecord::from_event(&e, &raw);
        assert_eq!(
            (r.disposition_id, r.disposition.as_deref()),
            (Some(99), Some("Masked"))
        );
    }

    #[test]
    fn completion_results_approvals_and_end_map_too() {
        let cases = [
            (
                EventBody::StatementCompleted(StatementCompleted {
                    statement: 2,
                    outcome: "error".into(),
                    tags: Vec::new(),
                    rows: 0,
                    duration_us: 2500,
                    sqlstate: Some("42P01".into()),
                }),
                (4, "Query", 2),
            ),
            (
                EventBody::ResultData(ResultData {
                    statement: 2,
                    columns: vec!["a".into()],
                    rows: vec![vec![Some("1".into())], vec![None]],
                    truncated: false,
                    row_count: 2,
                }),
                (1, "Read", 1),
            ),
            (
                EventBody::Approval(ApprovalEvent {
                    statement: 2,
                    request: "req-1".into(),
                    state: "denied".into(),
                    approvers: "dba".into(),
                    by: Some("alice".into()),
                    reason: None,
                    statement_hash: None,
                    requester: None,
                    approver: None,
                }),
                (99, "Approval", 2),
            ),
            (
                EventBody::SessionEnded(SessionEnded {
                    reason: "client_terminated".into(),
                    statements: 3,
                    refused: 1,
                    duration_ms: 40,
                }),
                (99, "Disconnect", 1),
            ),
        ];
        for (body, (activity, name, status)) in cases {
            let (e, raw) = event(4, body);
            let r = SiemRecord::from_event(&e, &raw);
            assert_eq!(
                (r.activity_id, r.activity_name.as_str(), r.status_id),
                (activity, name, status),
                "{raw}"
            );
            assert_eq!(r.type_uid, 600500 + u64::from(activity));
            assert_eq!(r.raw_data, raw);
            assert_eq!(r.unmapped.gatehouse_event_type, e.body.kind());
        }
        let (e, raw) = event(
            4,
            EventBody::StatementCompleted(StatementCompleted {
                statement: 2,
                outcome: "error".into(),
                tags: Vec::new(),
                rows: 0,
                duration_us: 2500,
                sqlstate: Some("42P01".into()),
            }),
        );
        let r = SiemRecord::from_event(&e, &raw);
        assert_eq!(
            (r.duration, r.status_detail.as_deref()),
            (Some(2), Some("SQLSTATE 42P01"))
        );
    }

    #[test]
    fn every_record_names_the_caller_the_client_and_the_database() {
        let (start, _) = event(1, started());
        let EventBody::SessionStarted(s) = &start.body else {
            unreachable!()
        };
        let ctx = crate::evidence::SessionContext::of(s);
        let (mut e, _) = event(2, statement("block", false));
        e.ctx = Some(ctx);
        let raw = serde_json::to_string(&e).unwrap();
        let r = SiemRecord::from_record(&raw).unwrap();
        let user = r.actor.user.as_ref().unwrap();
        assert_eq!(
            (user.uid.as_str(), user.name.as_str()),
            ("repo:acme/etl:ref:refs/heads/main", "acme/etl")
        );
        assert_eq!(r.actor.app_name.as_deref(), Some("etl"));
        assert_eq!(
            r.src_endpoint.as_ref().unwrap().ip.as_deref(),
            Some("10.1.2.3")
        );
        assert_eq!(r.database.as_ref().unwrap().name, "app");
        assert_eq!((r.action_id, r.action.as_str()), (2, "Denied"));
        assert_eq!(r.metadata.profiles, ["security_control"]);
    }

    #[test]
    fn garbage_is_not_an_event() {
        assert!(SiemRecord::from_record("{\"hello\":1}").is_err());
        assert!(SiemRecord::from_record("not json").is_err());
    }
}
