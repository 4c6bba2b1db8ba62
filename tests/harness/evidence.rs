//! Evidence events as a gateway writes them, for tests and benches that feed
//! JetStream without a gateway.

use gatehouse_schemas::evidence::{EventBody, Statement, StatementPath};

/// A simple-query statement event with `verdict`, decided by rule `load`.
pub fn statement(sql: &str, verdict: &str) -> EventBody {
    EventBody::Statement(Statement {
        path: StatementPath::SimpleQuery,
        statement_name: None,
        portal: None,
        sql: sql.into(),
        function_oid: None,
        params: None,
        verdict: verdict.into(),
        rule: Some("load".into()),
        reason: None,
        policy_version: Some("v1".into()),
        classes: vec!["read".into()],
        shadow: Vec::new(),
        forwarded: true,
        approval: None,
        objects: None,
    })
}
