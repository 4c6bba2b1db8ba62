//! Mask verdicts: which output columns are masked and how, exemptions, data
//! classes, and the statements refused because masking could not be guaranteed.

mod common;

use gatehouse_decider::Policy;
use gatehouse_schemas::decision::{DecisionRequest, MaskMethod, Verdict};
use serde_json::json;

const POLICY: &str = r#"
version = "mask-test"

[[data_classes]]
name = "pii.ssn"
columns = ["clinic.patients.ssn"]

[[data_classes]]
name = "pii.email"
columns = ["clinic.*.email"]

[[rules]]
id = "nightly-read"
roles = ["etl"]
classes = ["read", "write", "cursor", "copy-out", "transaction", "prepared"]
objects = ["clinic.*"]
verdict = "allow"

[[rules]]
id = "mask-pii"
roles = ["etl"]
verdict = "mask"
exempt = { groups = { contains = "phi-readers" } }

[[rules.mask]]
class = "pii.ssn"
method = "partial"
keep_last = 4

[[rules.mask]]
class = "pii.email"
method = "email"

[[rules.mask]]
column = "*.*.card_number"
method = "hash"
allow_equality = true
"#;

fn req(sql: &str, groups: &[&str]) -> DecisionRequest {
    let mut claims = serde_json::Map::new();
    claims.insert("repository".into(), json!("acme/etl"));
    claims.insert("groups".into(), json!(groups));
    common::request("etl", "job", claims, sql)
}

fn policy() -> Policy {
    Policy::parse(POLICY, "test").unwrap()
}

fn verdict(sql: &str) -> Verdict {
    policy().decide(&req(sql, &[])).verdict
}

/// Masked output positions and method names.
fn outputs(sql: &str) -> Vec<(u32, &'static str)> {
    match verdict(sql) {
        Verdict::Mask { outputs, columns } => {
            assert!(!columns.is_empty());
            outputs
                .iter()
                .map(|o| (o.position, o.method.name()))
                .collect()
        }
        other => panic!("{sql}: {other:?}"),
    }
}

fn refused(sql: &str) -> String {
    match verdict(sql) {
        Verdict::Block { reason } => {
            assert!(
                reason.starts_with("masking could not be guaranteed"),
                "{sql}: {reason}"
            );
            reason
        }
        other => panic!("{sql}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn masked_callers_get_mask_verdicts_with_columns_from_classes_and_patterns() {
    match verdict("select id, ssn, email from clinic.patients") {
        Verdict::Mask { columns, outputs } => {
            let ssn = columns
                .iter()
                .find(|c| c.column == "clinic.patients.ssn")
                .unwrap();
            assert_eq!(
                ssn.method,
                MaskMethod::Partial {
                    keep_first: 0,
                    keep_last: 4
                }
            );
            assert_eq!(ssn.class.as_deref(), Some("pii.ssn"));
            assert!(columns.iter().any(|c| c.column == "clinic.*.email"));
            assert!(columns.iter().any(|c| c.column == "*.*.card_number"));
            // Direct columns are masked by position too when the list is known.
            let pos: Vec<u32> = outputs.iter().map(|o| o.position).collect();
            assert_eq!(pos, [1, 2]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn exempt_callers_read_unmasked() {
    let d = policy().decide(&req("select ssn from clinic.patients", &["phi-readers"]));
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.rule.as_deref(), Some("nightly-read"));
}

#[test]
fn derived_outputs_are_masked_by_position() {
    for sql in [
        "select id, upper(ssn) from clinic.patients",
        "select id, ssn || '' from clinic.patients",
        "select id, ssn::int from clinic.patients",
        "select id, substr(ssn, 1, 3) from clinic.patients",
        "select id, string_agg(ssn, ',') from clinic.patients group by id",
        "select id, case when ssn like '1%' then 'a' end from clinic.patients",
        "select id, json_build_object('s', ssn) from clinic.patients",
        "select id, first_value(ssn) over (partition by id) from clinic.patients",
        "select id, s from (select id, lower(ssn) s from clinic.patients) x",
        "with c as (select id, ssn as s from clinic.patients) select id, s from c",
        "select id, name from clinic.visits union all select id, ssn from clinic.patients",
    ] {
        assert_eq!(outputs(sql), [(1, "partial")], "{sql}");
    }
    // A whole row may hold every masked column of its table: the strictest.
    assert_eq!(
        outputs("select id, row_to_json(p) from clinic.patients p"),
        [(1, "hash")]
    );
    // A data class pattern with a glob over tables.
    assert_eq!(
        outputs("select lower(email) from clinic.staff"),
        [(0, "email")]
    );
    // Several masked columns in one value: the strictest method.
    assert_eq!(
        outputs("select ssn || card_number from clinic.patients"),
        [(0, "hash")]
    );
    // Nothing masked read: no outputs.
    assert_eq!(outputs("select id, name from clinic.patients"), []);
}

#[test]
fn predicates_on_masked_columns_are_refused() {
    for sql in [
        "select id from clinic.patients where ssn like '123%'",
        "select id from clinic.patients where ssn = '123-45-6789'",
        "select id from clinic.patients order by ssn",
        "select count(*) from clinic.patients group by ssn",
        "select id from clinic.patients p join clinic.visits v on p.ssn = v.ssn",
        "select id from clinic.patients where substr(ssn, 1, 3) = '123'",
        "select distinct ssn from clinic.patients",
        "insert into clinic.visits (note) select ssn from clinic.patients",
        "select ssn from clinic.patients intersect select '123-45-6789'",
    ] {
        let reason = refused(sql);
        assert!(reason.contains("clinic.patients.ssn"), "{sql}: {reason}");
    }
    // A hash rule that allows equality: equality joins and group-bys pass,
    // comparisons with a value do not.
    assert!(matches!(
        verdict(
            "select c.id from clinic.cards c join clinic.payments p on c.card_number = p.card_number"
        ),
        Verdict::Mask { .. }
    ));
    assert!(matches!(
        verdict("select card_number, count(*) from clinic.cards group by card_number"),
        Verdict::Mask { .. }
    ));
    refused("select id from clinic.cards where card_number = '4111111111111111'");
}

#[test]
fn outputs_that_cannot_be_placed_are_refused() {
    refused("select *, upper(ssn) from clinic.patients");
    refused("select * from clinic.patients p, lateral generate_series(1, 2) g");
    // A direct column after * is found by its table OID: allowed.
    assert!(matches!(
        verdict("select *, ssn from clinic.patients"),
        Verdict::Mask { .. }
    ));
    // COPY TO STDOUT and cursors are masked by position like their query;
    // what their query cannot mask exactly is refused.
    assert_eq!(
        outputs("copy (select id, upper(ssn) from clinic.patients) to stdout"),
        [(1, "partial")]
    );
    assert_eq!(
        outputs("copy clinic.patients (id, ssn) to stdout with (format csv)"),
        [(1, "partial")]
    );
    assert_eq!(
        outputs("declare c cursor for select id, upper(ssn) from clinic.patients"),
        [(1, "partial")]
    );
    refused("declare c cursor for select id from clinic.patients where ssn like '1%'");
    refused("copy (select id from clinic.patients order by ssn) to stdout");
    refused("copy clinic.patients to stdout with (encoding 'latin1')");
}

#[test]
fn returning_is_masked() {
    assert_eq!(
        outputs("update clinic.patients set name = 'x' where id = 1 returning id, ssn, upper(ssn)"),
        [(1, "partial"), (2, "partial")]
    );
}

#[test]
fn a_statement_held_for_approval_carries_its_masks() {
    // The same policy, with deletes of every row held for a DBA.
    let policy = Policy::parse(
        &format!(
            "{POLICY}\n[[rules]]\nid = \"unbounded-delete\"\nrisks = [\"delete_without_where\"]\n\
             verdict = \"approve\"\nreason = \"deletes every row\"\napprovers = \"dba\"\n"
        ),
        "test",
    )
    .unwrap();
    let sql = "delete from clinic.patients returning id, ssn, upper(ssn)";
    match policy.decide(&req(sql, &[])).verdict {
        Verdict::Approve {
            approvers,
            columns,
            outputs,
            ..
        } => {
            assert_eq!(approvers, "dba");
            assert!(
                columns.iter().any(|c| c.column == "clinic.patients.ssn"),
                "{columns:?}"
            );
            let placed: Vec<_> = outputs
                .iter()
                .map(|o| (o.position, o.method.name()))
                .collect();
            assert_eq!(placed, [(1, "partial"), (2, "partial")]);
        }
        other => panic!("{sql}: {other:?}"),
    }
    // An exempt caller's held statement carries none.
    match policy.decide(&req(sql, &["phi-readers"])).verdict {
        v @ Verdict::Approve { .. } => assert!(v.masks().is_none(), "{v:?}"),
        other => panic!("{sql}: {other:?}"),
    }
    // What cannot be masked exactly is refused, held or not.
    assert!(matches!(
        policy
            .decide(&req(
                "delete from clinic.patients returning *, upper(ssn)",
                &[]
            ))
            .verdict,
        Verdict::Block { .. }
    ));
}

#[test]
fn a_mask_rules_classes_do_not_limit_what_it_masks() {
    // The mask rule allows reads only; another rule allows COPY and cursors.
    let policy = Policy::parse(
        r#"
version = "classes"

[[rules]]
id = "exports"
roles = ["etl"]
classes = ["copy-out", "cursor", "write"]
objects = ["clinic.*"]
verdict = "allow"

[[rules]]
id = "mask-ssn"
roles = ["etl"]
classes = ["read"]
objects = ["clinic.*"]
verdict = "mask"

[[rules.mask]]
column = "clinic.patients.ssn"
method = "null"
"#,
        "test",
    )
    .unwrap();
    for sql in [
        "copy (select id, upper(ssn) from clinic.patients) to stdout",
        "declare c cursor for select id, upper(ssn) from clinic.patients",
        "update clinic.patients set name = 'x' where id = 1 returning id, upper(ssn)",
    ] {
        match policy.decide(&req(sql, &[])).verdict {
            Verdict::Mask { outputs, .. } => {
                let placed: Vec<_> = outputs.iter().map(|o| o.position).collect();
                assert_eq!(placed, [1], "{sql}");
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
}
