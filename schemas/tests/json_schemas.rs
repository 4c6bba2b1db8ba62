//! The checked-in JSON Schemas (`schemas/json/`) match the types, and real
//! serialized messages validate against them (and broken ones do not).
//!
//! `GATEHOUSE_UPDATE_SCHEMAS=1 cargo test -p gatehouse-schemas` rewrites the files.

use std::collections::BTreeMap;
use std::path::Path;

use gatehouse_schemas::decision::{
    CallKind, CallName, Callee, CatalogFacts, DecideError, Decision, DecisionRequest, MaskColumn,
    MaskMethod, MaskOutput, PolicyAnnouncement, Resolution, ShadowHit, StatementSummary, Verdict,
    ViewDefinition,
};
use gatehouse_schemas::{Identity, ProtocolKind, SCHEMA_VERSION, json_schema};
use serde_json::{Value, json};

fn checked_in(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("json")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with GATEHOUSE_UPDATE_SCHEMAS=1)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

#[test]
fn checked_in_schemas_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("json");
    let update = std::env::var_os("GATEHOUSE_UPDATE_SCHEMAS").is_some();
    for (file, schema) in json_schema::all() {
        if update {
            let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
            // Write then rename: the other tests read these files concurrently.
            let tmp = dir.join(format!(".{file}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, dir.join(file)).unwrap();
        }
        assert_eq!(
            checked_in(file),
            schema,
            "schemas/json/{file} is stale: rerun with GATEHOUSE_UPDATE_SCHEMAS=1"
        );
    }
}

fn validator(file: &str) -> jsonschema::Validator {
    jsonschema::validator_for(&checked_in(file)).expect("a valid JSON Schema")
}

fn identity() -> Identity {
    let mut claims = serde_json::Map::new();
    claims.insert("repository".into(), "acme/etl".into());
    claims.insert("run_id".into(), json!(42));
    Identity {
        issuer: "https://token.actions.githubusercontent.com".into(),
        subject: "repo:acme/etl:ref:refs/heads/main".into(),
        key_id: None,
        algorithm: "RS256".into(),
        claims,
    }
}

#[test]
fn decision_requests_validate() {
    let v = validator("decision-request.schema.json");
    let mut prepared = BTreeMap::new();
    prepared.insert("q".to_owned(), "delete from t".to_owned());
    let requests = [
        DecisionRequest {
            v: SCHEMA_VERSION,
            role: "etl".into(),
            identity: identity(),
            protocol: ProtocolKind::SimpleQuery,
            sql: "select 1; execute q".into(),
            function_oid: None,
            prepared,
            catalog: CatalogFacts {
                views: BTreeMap::from([(
                    "clinic.v".to_owned(),
                    ViewDefinition {
                        columns: vec!["id".into(), "ssn".into()],
                        query: " SELECT patients.id, patients.ssn FROM clinic.patients;".into(),
                    },
                )]),
                functions: vec![Resolution {
                    call: CallName {
                        kind: CallKind::Function,
                        schema: None,
                        name: "purge".into(),
                    },
                    callees: vec![Callee {
                        schema: "etl".into(),
                        name: "purge".into(),
                        builtin: false,
                    }],
                }],
            },
        },
        DecisionRequest {
            v: SCHEMA_VERSION,
            role: "etl".into(),
            identity: identity(),
            protocol: ProtocolKind::FunctionCall,
            sql: String::new(),
            function_oid: Some(1598),
            prepared: BTreeMap::new(),
            catalog: CatalogFacts::default(),
        },
    ];
    for r in &requests {
        let value = serde_json::to_value(r).unwrap();
        assert!(v.is_valid(&value), "{value}");
    }
    let mut bad = serde_json::to_value(&requests[0]).unwrap();
    bad["protocol"] = json!("telepathy");
    assert!(!v.is_valid(&bad));
    bad = serde_json::to_value(&requests[0]).unwrap();
    bad["functions"][0]["kind"] = json!("macro");
    assert!(!v.is_valid(&bad));
    bad = serde_json::to_value(&requests[0]).unwrap();
    bad.as_object_mut().unwrap().remove("sql");
    assert!(!v.is_valid(&bad));
}

#[test]
fn decisions_validate() {
    let v = validator("decision.schema.json");
    let verdicts = [
        Verdict::Allow,
        Verdict::Mask {
            columns: vec![MaskColumn {
                column: "public.users.email".into(),
                method: MaskMethod::Email,
                class: None,
                rule: "r1".into(),
            }],
            outputs: vec![MaskOutput {
                statement: 0,
                position: 1,
                source: "public.users.email".into(),
                method: MaskMethod::Partial {
                    keep_first: 1,
                    keep_last: 0,
                },
            }],
            detect: vec![gatehouse_schemas::decision::Detector::Phone],
        },
        Verdict::Approve {
            reason: "deletes every row".into(),
            approvers: "dba".into(),
            columns: Vec::new(),
            outputs: Vec::new(),
            detect: Vec::new(),
        },
        Verdict::Approve {
            reason: "reads every patient".into(),
            approvers: "dba".into(),
            columns: vec![MaskColumn {
                column: "clinic.patients.ssn".into(),
                method: MaskMethod::Redact,
                class: None,
                rule: "mask-ssn".into(),
            }],
            outputs: vec![MaskOutput {
                statement: 0,
                position: 1,
                source: "clinic.patients.ssn".into(),
                method: MaskMethod::Null,
            }],
            detect: Vec::new(),
        },
        Verdict::Block {
            reason: "no".into(),
        },
    ];
    for verdict in verdicts {
        let d = Decision {
            v: SCHEMA_VERSION,
            verdict: verdict.clone(),
            rule: Some("r1".into()),
            policy_version: "p1".into(),
            statements: vec![
                StatementSummary {
                    class: "write".into(),
                    classes: vec!["write".into(), "prepared".into()],
                    fingerprint: "00ff".into(),
                    prepares: Some(("q".into(), "delete from t".into())),
                    deallocates: None,
                    reads: vec!["public.t".into()],
                    writes: vec!["public.t".into()],
                    calls: Vec::new(),
                },
                StatementSummary {
                    class: "prepared".into(),
                    classes: vec!["prepared".into()],
                    fingerprint: "0100".into(),
                    prepares: None,
                    deallocates: Some(None),
                    reads: Vec::new(),
                    writes: Vec::new(),
                    calls: Vec::new(),
                },
            ],
            shadow: vec![ShadowHit {
                rule: "s".into(),
                verdict,
            }],
            cacheable: true,
            shape_cacheable: false,
            values: None,
            relations: vec!["v".into(), "clinic.patients".into()],
            functions: vec![
                CallName {
                    kind: CallKind::Function,
                    schema: None,
                    name: "upper".into(),
                },
                CallName {
                    kind: CallKind::Type,
                    schema: Some("etl".into()),
                    name: "checked".into(),
                },
            ],
            results: Vec::new(),
        };
        let value = serde_json::to_value(&d).unwrap();
        assert!(v.is_valid(&value), "{value}");
    }
    let bad = json!({"v": 1, "verdict": {"verdict": "maybe"}, "policy_version": "p",
                     "statements": [], "cacheable": false});
    assert!(!v.is_valid(&bad));
}

#[test]
fn announcements_and_errors_validate() {
    let a = PolicyAnnouncement {
        v: SCHEMA_VERSION,
        version: "p1".into(),
        decider: "d".into(),
    };
    assert!(
        validator("policy-announcement.schema.json").is_valid(&serde_json::to_value(&a).unwrap())
    );
    let e = DecideError {
        v: SCHEMA_VERSION,
        error: "not JSON".into(),
    };
    assert!(validator("decide-error.schema.json").is_valid(&serde_json::to_value(&e).unwrap()));
    assert!(!validator("decide-error.schema.json").is_valid(&json!({"v": 1})));
}

#[test]
fn siem_records_validate() {
    use gatehouse_schemas::evidence::{Event, EventBody, GENESIS, SessionEnded};
    use gatehouse_schemas::siem::SiemRecord;
    let v = validator("siem-record.schema.json");
    let event = Event {
        v: SCHEMA_VERSION,
        session_id: uuid::Uuid::nil(),
        seq: 1,
        ts: "2026-11-22T10:00:00.000001Z".into(),
        prev: GENESIS.into(),
        ctx: None,
        body: EventBody::SessionEnded(SessionEnded {
            reason: "client_terminated".into(),
            statements: 0,
            refused: 0,
            duration_ms: 1,
        }),
    };
    let raw = serde_json::to_string(&event).unwrap();
    let value = serde_json::to_value(SiemRecord::from_event(&event, &raw)).unwrap();
    assert!(v.is_valid(&value), "{value}");
    let mut bad = value.clone();
    bad.as_object_mut().unwrap().remove("raw_data");
    assert!(!v.is_valid(&bad));
    bad = value;
    bad["metadata"]["sequence"] = json!("one");
    assert!(!v.is_valid(&bad));
}

#[test]
fn approver_decisions_validate() {
    use gatehouse_schemas::approval::{ApproverDecision, Choice};
    let v = validator("approver-decision.schema.json");
    let d = ApproverDecision {
        v: SCHEMA_VERSION,
        request: uuid::Uuid::nil(),
        statement_hash: "ab".into(),
        decision: Choice::Approve,
        comment: None,
        token: "a.b.c".into(),
    };
    let value = serde_json::to_value(&d).unwrap();
    assert!(v.is_valid(&value), "{value}");
    let mut bad = value.clone();
    bad["decision"] = json!("maybe");
    assert!(!v.is_valid(&bad));
    bad = value;
    bad.as_object_mut().unwrap().remove("token");
    assert!(!v.is_valid(&bad));
}
