//! The answers over a small synthetic session, fed record by record as a scan
//! hands them on: what each counts, pairs and lists.

use gatehouse_archiver::{SessionReport, SessionStatus, Visitor};
use gatehouse_schemas::Identity;
use gatehouse_schemas::evidence::{
    ApprovalEvent, CiContext, Event, EventBody, SessionEnded, SessionStarted, Statement,
    StatementCompleted, StatementObjects, StatementPath,
};
use uuid::Uuid;

use super::events::{Answer, Reader};
use super::facts::Facts;
use super::who_changed::{Authority, WhoChanged};

fn identity() -> Identity {
    let claims = serde_json::json!({"repository": "acme/etl", "run_id": "7", "sha": "abc"});
    Identity {
        issuer: "https://issuer".into(),
        subject: "repo:acme/etl".into(),
        key_id: None,
        algorithm: "EdDSA".into(),
        claims: claims.as_object().unwrap().clone(),
    }
}

fn st(sql: &str, verdict: &str, rule: Option<&str>, class: &str, writes: &[&str]) -> Statement {
    Statement {
        path: StatementPath::SimpleQuery,
        statement_name: None,
        portal: None,
        sql: sql.into(),
        function_oid: None,
        params: None,
        verdict: verdict.into(),
        rule: rule.map(str::to_owned),
        reason: (verdict == "block").then(|| "no".into()),
        policy_version: Some("p1".into()),
        classes: vec![class.into()],
        shadow: Vec::new(),
        forwarded: verdict == "allow" || verdict == "mask",
        approval: None,
        objects: Some(StatementObjects {
            reads: Vec::new(),
            writes: writes.iter().map(|w| (*w).into()).collect(),
            calls: Vec::new(),
        }),
    }
}

fn done(statement: u64, rows: u64, sqlstate: Option<&str>) -> EventBody {
    EventBody::StatementCompleted(StatementCompleted {
        statement,
        outcome: if sqlstate.is_some() { "error" } else { "ok" }.into(),
        tags: Vec::new(),
        rows,
        duration_us: 1,
        sqlstate: sqlstate.map(str::to_owned),
    })
}

fn approval(statement: u64, state: &str) -> EventBody {
    EventBody::Approval(ApprovalEvent {
        statement,
        request: "req-1".into(),
        state: state.into(),
        approvers: "dba".into(),
        by: (state == "approved").then(|| "alice".into()),
        reason: None,
        statement_hash: None,
        requester: Some("repo:acme/etl".into()),
        approver: None,
    })
}

/// Feeds one session's bodies, in seq order, then its end.
fn feed<A: Answer>(answer: A, bodies: Vec<EventBody>) -> A {
    let session = Uuid::now_v7();
    let mut reader = Reader::new(answer);
    let n = bodies.len() as u64;
    for (i, body) in bodies.into_iter().enumerate() {
        let e = Event {
            v: 1,
            session_id: session,
            seq: i as u64 + 1,
            ts: format!("2027-01-15T08:00:{:02}.000000Z", i),
            prev: String::new(),
            ctx: None,
            body,
        };
        reader.record(session, e.seq, &serde_json::to_vec(&e).unwrap());
    }
    let report = SessionReport {
        session,
        started: None,
        status: SessionStatus::Complete,
        records: n,
        last_seq: n,
        segments: 1,
    };
    reader.session_done(&report, &[]);
    assert_eq!(reader.unreadable, 0);
    reader.answer
}

fn workload() -> Vec<EventBody> {
    let mut held = st(
        "delete from t",
        "approve",
        Some("bulk"),
        "write",
        &["public.t"],
    );
    held.approval = Some("req-1".into());
    held.forwarded = false;
    let released = Statement {
        forwarded: true,
        ..held.clone()
    };
    vec![
        EventBody::SessionStarted(Box::new(SessionStarted {
            role: "etl".into(),
            ci: CiContext::from_claims(&identity().claims),
            identity: identity(),
            upstream: "db:5432/app".into(),
            upstream_user: "app".into(),
            client_addr: "127.0.0.1:1".into(),
            tls: None,
            gateway: "gw".into(),
        })),
        // 2, 3: a write allowed by a rule, 4 rows.
        EventBody::Statement(st(
            "update t set x = 1 where y",
            "allow",
            Some("w"),
            "write",
            &["public.t"],
        )),
        done(2, 4, None),
        // 4: a refused DDL.
        EventBody::Statement(st(
            "drop table t",
            "block",
            Some("no-ddl"),
            "ddl",
            &["public.t"],
        )),
        // 5: a DDL allowed by a rule alone, 6: failed.
        EventBody::Statement(st(
            "create index on t (x)",
            "allow",
            Some("ddl-ok"),
            "ddl",
            &["public.t"],
        )),
        done(5, 0, Some("42P07")),
        // 7..11: held, approved, executed, released, 2 rows.
        EventBody::Statement(held),
        approval(7, "requested"),
        approval(7, "approved"),
        approval(7, "executed"),
        EventBody::Statement(released),
        done(11, 2, None),
        // 13: a masked read, 14: never completed (the session ends first).
        EventBody::Statement(st(
            "select ssn from p",
            "mask",
            Some("mask-ssn"),
            "read",
            &[],
        )),
        EventBody::SessionEnded(SessionEnded {
            reason: "client_terminated".into(),
            statements: 5,
            refused: 1,
            duration_ms: 1,
        }),
    ]
}

#[test]
fn the_report_counts_decisions_runs_changes_and_approvals() {
    let f = feed(Facts::new(10), workload());
    assert_eq!(f.sessions, 1);
    // The released statement is not a second decision.
    assert_eq!(f.decided, 5);
    assert_eq!(f.statements["write"]["allow"], 1);
    assert_eq!(f.statements["write"]["approve"], 1);
    assert_eq!(f.statements["ddl"]["block"], 1);
    assert_eq!(f.refusals.total, 1, "a held statement is not a refusal");
    assert_eq!(f.refusal_rules["no-ddl"], 1);
    assert_eq!(f.changes.total, 3);
    assert_eq!(f.rows_changed, 6);
    assert_eq!(f.change_authority["approval"], 1);
    assert_eq!(f.change_authority["rule w"], 1);
    assert_eq!(f.unapproved_privileged.total, 1);
    assert_eq!(f.unapproved_privileged.rows[0].sql, "create index on t (x)");
    assert_eq!(f.failed_changes.total, 1);
    assert_eq!(f.never_completed.total, 1);
    assert_eq!(f.never_completed.rows[0].sql, "select ssn from p");
    assert_eq!(f.masked.total, 1);
    let a = f.approvals();
    assert_eq!(a.len(), 1);
    assert_eq!(
        (
            a[0].outcome.as_str(),
            a[0].decided_by.as_str(),
            a[0].executed
        ),
        ("approved", "alice", true)
    );
    assert_eq!(a[0].seconds_to_decide, Some(1.0));
    assert_eq!(a[0].sql, "delete from t");
    assert_eq!(a[0].exception(), None);
    let approved = f
        .changes
        .rows
        .iter()
        .find(|r| r.sql == "delete from t")
        .unwrap();
    assert_eq!(approved.authority, "approval req-1 by alice");
    assert_eq!(approved.outcome, "ok, 2 rows");
    assert_eq!(f.cleartext.total, 1);
    let who = f.identities.keys().next().unwrap();
    let u = &f.identities[who]["etl"];
    assert_eq!((u.sessions, u.refused, u.changes), (1, 1, 3));
}

#[test]
fn who_changed_lists_the_writes_to_a_table_with_their_authority() {
    let w = feed(WhoChanged::new("t", 10), workload());
    let c = &w.changes.rows;
    assert_eq!(w.changes.total, 3, "{c:#?}");
    assert_eq!((c[0].rows, c[0].outcome.as_str()), (Some(4), "ok"));
    assert!(matches!(&c[0].authority, Authority::Rule { rule } if rule.as_deref() == Some("w")));
    assert_eq!(c[1].sqlstate.as_deref(), Some("42P07"));
    assert!(matches!(
        &c[2].authority,
        Authority::Approval { approver, .. } if approver.as_deref() == Some("alice")
    ));
    assert_eq!(c[2].ci.run_id.as_deref(), Some("7"));
    assert!(c.iter().all(|c| c.objects_from == "recorded"));
    assert_eq!(
        feed(WhoChanged::new("other.*", 10), workload())
            .changes
            .total,
        0
    );
    // A record from before objects were recorded is read again from its SQL.
    let mut old = st(
        "insert into s.u values (1)",
        "allow",
        Some("w"),
        "write",
        &[],
    );
    old.objects = None;
    let w = feed(
        WhoChanged::new("s.u", 10),
        vec![EventBody::Statement(old), done(1, 1, None)],
    );
    assert_eq!(w.changes.total, 1);
    assert_eq!(w.changes.rows[0].objects_from, "sql");
}
