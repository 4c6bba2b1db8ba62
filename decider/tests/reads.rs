//! Each text a decision is about is read once: one tokenization and one parse
//! per uncached decision, for a masked caller too (whose decision also needs
//! the text's lineage, where its values stand, and its result ops), and the
//! decision carries what the ingress needs so that it reads nothing again.

mod common;

use gatehouse_decider::{Policy, reads};
use gatehouse_schemas::decision::{ResultOp, SpanKind};
use serde_json::json;

/// The research role of the shipped example: clinic reads, identifiers
/// masked unless the caller's groups include `phi-readers`.
const POLICY: &str = include_str!("../../deploy/policy.example.toml");

fn decide(sql: &str, groups: &[&str]) -> (gatehouse_schemas::decision::Decision, (u64, u64)) {
    let claims = json!({ "groups": groups }).as_object().unwrap().clone();
    let req = common::request("research", "job", claims, sql);
    let policy = Policy::parse(POLICY, "example").unwrap();
    let before = reads();
    let d = policy.decide(&req);
    let after = reads();
    (d, (after.0 - before.0, after.1 - before.1))
}

#[test]
fn a_masked_callers_statement_is_tokenized_and_parsed_once() {
    let sql = "select id, upper(ssn) from clinic.patients where name = 'ann' -- note";
    let (d, reads) = decide(sql, &[]);
    assert_eq!(d.verdict.name(), "mask");
    assert_eq!(reads, (1, 1), "one tokenization, one parse");
    // Where its values and comments stand, for evidence.
    let v = d.values.expect("a masked caller's values are placed");
    let spans = v.spans.expect("the text was read");
    let shown: Vec<&str> = spans
        .iter()
        .map(|s| &sql[s.start as usize..s.end as usize])
        .collect();
    assert_eq!(shown, ["'ann'", "-- note"]);
    assert!(matches!(spans[1].kind, SpanKind::Comment));
}

#[test]
fn an_unmasked_callers_statement_too() {
    let (d, reads) = decide(
        "select id from clinic.patients where id = 1",
        &["phi-readers"],
    );
    assert_eq!(d.verdict.name(), "allow");
    assert_eq!(reads, (1, 1));
    assert!(d.values.is_none());
}

#[test]
fn the_decision_carries_what_undescribed_rows_need() {
    let sql = "copy (select ssn from clinic.patients) to stdout with (format csv); \
               declare c cursor for select ssn from clinic.patients; fetch 2 from c";
    let (d, reads) = decide(sql, &[]);
    assert_eq!(reads, (1, 1));
    assert!(matches!(&d.results[0], ResultOp::CopyOut { probe, .. } if probe.contains("ssn")));
    assert_eq!(
        d.results[1],
        ResultOp::Declare {
            name: "c".into(),
            hold: false
        }
    );
    assert_eq!(d.results[2], ResultOp::Fetch { name: "c".into() });
}
