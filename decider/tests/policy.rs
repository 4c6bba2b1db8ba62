//! The policy engine on real analyses: permissive rules must cover a statement,
//! restrictive ones fire on any match, the strictest verdict wins, default deny.

mod common;

use gatehouse_decider::Policy;
use gatehouse_schemas::ProtocolKind;
use gatehouse_schemas::decision::{DecisionRequest, Verdict};
use serde_json::json;

const POLICY: &str = r#"
version = "test"

[[rules]]
id = "reporting-read"
roles = ["reporting"]
claims = { repository = "acme/reports" }
classes = ["read"]
objects = ["clinic.*", "pg_catalog.*"]
verdict = "allow"

[[rules]]
id = "etl-dml"
roles = ["etl"]
classes = ["read", "write", "transaction", "prepared"]
objects = ["clinic.*"]
risks = ["delete_without_where", "update_without_where"]
verdict = "allow"

[[rules]]
id = "unbounded-change-needs-approval"
risks = ["delete_without_where", "update_without_where"]
verdict = "approve"
reason = "changes every row"
approvers = "dba"

[[rules]]
id = "hr-off-limits"
objects = ["hr.*"]
verdict = "block"
reason = "HR data is off limits to automation"

[[rules]]
id = "ddl-shadow"
classes = ["ddl"]
verdict = "block"
reason = "DDL would be blocked"
enforce = false

[[rules]]
id = "legacy-fastpath"
roles = ["etl"]
classes = ["function-call"]
functions = ["oid:1598"]
verdict = "allow"
"#;

fn req(role: &str, repo: &str, sql: &str) -> DecisionRequest {
    let mut claims = serde_json::Map::new();
    claims.insert("repository".into(), json!(repo));
    common::request(role, "sub", claims, sql)
}

fn policy() -> Policy {
    Policy::parse(POLICY, "test.toml").unwrap()
}

fn verdict(r: &DecisionRequest) -> (&'static str, Option<String>) {
    let d = policy().decide(r);
    (d.verdict.name(), d.rule)
}

#[test]
fn permissive_rules_must_cover_the_whole_statement() {
    let ok = verdict(&req(
        "reporting",
        "acme/reports",
        "select name from clinic.patients",
    ));
    assert_eq!(ok, ("allow", Some("reporting-read".into())));
    // Another repository: the rule is not about this caller.
    assert_eq!(
        verdict(&req(
            "reporting",
            "acme/other",
            "select 1 from clinic.patients"
        ))
        .0,
        "block"
    );
    // An object outside the rule's patterns.
    assert_eq!(
        verdict(&req(
            "reporting",
            "acme/reports",
            "select * from clinic.patients join billing.cards using (id)"
        )),
        ("block", None)
    );
    // Unqualified names resolve through the policy's search_path (public here).
    assert_eq!(
        verdict(&req("reporting", "acme/reports", "select * from patients")).0,
        "block"
    );
    let clinic_path = POLICY.replace(
        "version = \"test\"",
        "version = \"test\"\nsearch_path = [\"clinic\"]",
    );
    let p = Policy::parse(&clinic_path, "t").unwrap();
    let d = p.decide(&req(
        "reporting",
        "acme/reports",
        "select * from patients, pg_class",
    ));
    assert_eq!(
        d.verdict.name(),
        "allow",
        "patients is clinic.patients, pg_class is pg_catalog's"
    );
    // A write is not a read, however it is dressed up.
    for sql in [
        "delete from clinic.patients where id = 1",
        "with d as (delete from clinic.patients where id = 1 returning *) select * from d",
        "explain analyze delete from clinic.patients where id = 1",
        "select * into clinic.copy from clinic.patients",
    ] {
        assert_eq!(
            verdict(&req("reporting", "acme/reports", sql)).0,
            "block",
            "{sql}"
        );
    }
    // Risky reads are not covered by a rule that lists no risks.
    assert_eq!(
        verdict(&req("reporting", "acme/reports", "select pg_sleep(10)")).0,
        "block"
    );
}

#[test]
fn restrictive_rules_fire_on_any_match_and_the_strictest_wins() {
    let (v, rule) = verdict(&req("etl", "acme/etl", "delete from clinic.visits"));
    assert_eq!(
        (v, rule.as_deref()),
        ("approve", Some("unbounded-change-needs-approval"))
    );
    let (v, rule) = verdict(&req(
        "etl",
        "acme/etl",
        "update clinic.visits set x = 1 where 1 = 1",
    ));
    assert_eq!(
        (v, rule.as_deref()),
        ("approve", Some("unbounded-change-needs-approval"))
    );
    assert_eq!(
        verdict(&req(
            "etl",
            "acme/etl",
            "delete from clinic.visits where id = 3"
        ))
        .0,
        "allow"
    );
    // One statement touching hr blocks the whole text.
    let (v, rule) = verdict(&req(
        "etl",
        "acme/etl",
        "select 1 from clinic.a; delete from clinic.b where id = 1; select * from hr.salaries",
    ));
    assert_eq!((v, rule.as_deref()), ("block", Some("hr-off-limits")));
    // Unqualified, salaries is public.salaries: not hr's, but not covered either.
    let d = policy().decide(&req("etl", "acme/etl", "select * from clinic.a, salaries"));
    assert_eq!((d.verdict.name(), d.rule), ("block", None));
    let hr_path = POLICY.replace(
        "version = \"test\"",
        "version = \"test\"\nsearch_path = [\"hr\"]",
    );
    let d = Policy::parse(&hr_path, "t").unwrap().decide(&req(
        "etl",
        "acme/etl",
        "select * from salaries",
    ));
    assert_eq!(d.rule.as_deref(), Some("hr-off-limits"));
    let d = policy().decide(&req("etl", "acme/etl", "delete from clinic.x"));
    match d.verdict {
        Verdict::Approve {
            reason, approvers, ..
        } => {
            assert_eq!(
                (reason.as_str(), approvers.as_str()),
                ("changes every row", "dba")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn shadow_rules_are_recorded_not_enforced() {
    let d = policy().decide(&req("etl", "acme/etl", "create table clinic.t (id int)"));
    assert_eq!(
        d.verdict.name(),
        "block",
        "default deny, not the shadow rule"
    );
    assert_eq!(d.rule, None);
    assert_eq!(d.shadow.len(), 1);
    assert_eq!(d.shadow[0].rule, "ddl-shadow");
    assert!(d.policy_version.starts_with("test-"));
}

#[test]
fn prepared_statements_are_decided_as_their_inner_statement() {
    let p = policy();
    let d = p.decide(&req(
        "etl",
        "acme/etl",
        "prepare wipe as delete from clinic.visits",
    ));
    assert_eq!(d.verdict.name(), "approve");
    let (name, inner) = d.statements[0].prepares.clone().expect("prepares");
    assert_eq!(name, "wipe");
    let mut exec = req("etl", "acme/etl", "execute wipe");
    exec.prepared.insert(name, inner);
    assert_eq!(p.decide(&exec).verdict.name(), "approve");
    assert!(!p.decide(&exec).cacheable);
    // Unknown to the gateway: refused.
    let d = p.decide(&req("etl", "acme/etl", "execute never_prepared"));
    assert_eq!(d.verdict.name(), "block");
}

#[test]
fn unparsed_sql_and_function_calls_need_explicit_rules() {
    let p = policy();
    let d = p.decide(&req("etl", "acme/etl", "selec 1 frm"));
    assert!(
        matches!(d.verdict, Verdict::Block { ref reason } if reason.contains("could not parse"))
    );
    let text = format!(
        "{POLICY}\n[[rules]]\nid = \"raw\"\nroles = [\"etl\"]\nallow_unparsed = true\nverdict = \"allow\"\n"
    );
    let lenient = Policy::parse(&text, "t").unwrap();
    assert_eq!(
        lenient
            .decide(&req("etl", "acme/etl", "selec 1 frm"))
            .verdict
            .name(),
        "allow"
    );
    assert_eq!(
        lenient
            .decide(&req("reporting", "acme/reports", "selec 1 frm"))
            .verdict
            .name(),
        "block"
    );

    let mut call = req("etl", "acme/etl", "");
    call.protocol = ProtocolKind::FunctionCall;
    call.function_oid = Some(1598);
    assert_eq!(p.decide(&call).verdict.name(), "allow");
    call.function_oid = Some(2000);
    assert_eq!(p.decide(&call).verdict.name(), "block");
    call.role = "reporting".into();
    call.function_oid = Some(1598);
    assert_eq!(p.decide(&call).verdict.name(), "block");
}

#[test]
fn identity_classes_follow_the_claims_rules_read() {
    let p = policy();
    let a = req("etl", "acme/etl", "");
    let mut b = a.clone();
    b.identity.claims.insert("run_id".into(), json!("999"));
    b.identity.subject = "someone-else".into();
    assert_eq!(
        p.identity_class("etl", &a.identity),
        p.identity_class("etl", &b.identity)
    );
    let c = req("etl", "acme/other", "");
    assert_ne!(
        p.identity_class("etl", &a.identity),
        p.identity_class("etl", &c.identity)
    );
    assert_ne!(
        p.identity_class("etl", &a.identity),
        p.identity_class("reporting", &a.identity)
    );
}

#[test]
fn bad_policies_say_where() {
    let err = Policy::parse("[[rules]]\nid = \"x\"\nverdict = \"maybe\"\n", "p.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("p.toml") && err.contains("line 3"), "{err}");
    let err = Policy::parse("\n\n[[rules]]\nid = \"b\"\nverdict = \"block\"\n", "p.toml")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 4") && err.contains("needs a reason"),
        "{err}"
    );
    let dup =
        "[[rules]]\nid = \"a\"\nverdict = \"allow\"\n[[rules]]\nid = \"a\"\nverdict = \"allow\"\n";
    assert!(
        Policy::parse(dup, "p")
            .unwrap_err()
            .to_string()
            .contains("duplicate")
    );
    assert!(
        Policy::parse(
            "[[rules]]\nid = \"a\"\nverdict = \"allow\"\nclasses = [\"reads\"]\n",
            "p"
        )
        .is_err()
    );
}

/// A statement has every class of what it does: a permissive rule must list
/// them all (reading aside, which any class it lists covers); a restrictive
/// rule fires on any of them.
#[test]
fn several_classes_must_all_be_covered() {
    const CLASSES: &str = r#"
version = "classes"

[[rules]]
id = "dml"
roles = ["etl"]
classes = ["read", "write"]
objects = ["clinic.*"]
risks = ["data_modifying_cte"]
verdict = "allow"

[[rules]]
id = "migrations"
roles = ["migrate"]
classes = ["ddl"]
objects = ["clinic.*"]
risks = ["data_modifying_cte"]
verdict = "allow"

[[rules]]
id = "no-reading-hr"
classes = ["read"]
reads = ["hr.*"]
verdict = "block"
reason = "HR data is off limits"
"#;
    let policy = Policy::parse(CLASSES, "classes.toml").unwrap();
    let decide = |role: &str, sql: &str| {
        let d = policy.decide(&req(role, "acme/x", sql));
        (d.verdict.name(), d.rule, d.statements[0].classes.clone())
    };
    // PostgreSQL logs these as DDL: a rule for reads and writes covers none.
    for sql in [
        "create table clinic.copy as select * from clinic.patients",
        "select * into clinic.copy from clinic.patients",
        "create materialized view clinic.mv as select * from clinic.patients",
        "refresh materialized view clinic.mv",
        "explain analyze create table clinic.copy as select 1",
    ] {
        let (verdict, _, classes) = decide("etl", sql);
        assert_eq!(verdict, "block", "{sql}: {classes:?}");
        assert_eq!(classes[0], "ddl", "{sql}");
        // A DDL rule covers them, the rows they read included.
        assert_eq!(decide("migrate", sql).0, "allow", "{sql}");
    }
    assert_eq!(
        decide(
            "etl",
            "create table clinic.copy as select * from clinic.patients"
        )
        .2,
        ["ddl", "read"]
    );
    // A write that reads is covered by a rule that lists `write`...
    for sql in [
        "insert into clinic.log select * from clinic.patients",
        "with d as (delete from clinic.log where id = 1 returning *) select * from d",
        "explain analyze delete from clinic.log where id = 1",
    ] {
        assert_eq!(decide("etl", sql).0, "allow", "{sql}");
        // ...and not by one that lists only `ddl`.
        assert_eq!(decide("migrate", sql).0, "block", "{sql}");
    }
    // A restrictive rule on reading fires on a write that reads.
    let (verdict, rule, classes) =
        decide("etl", "insert into clinic.log select * from hr.salaries");
    assert_eq!((verdict, rule.as_deref()), ("block", Some("no-reading-hr")));
    assert_eq!(classes, ["write", "read"]);
}
