//! Helpers shared by the decider's integration tests.

use std::collections::BTreeMap;

use gatehouse_schemas::decision::DecisionRequest;
use gatehouse_schemas::{Identity, ProtocolKind, SCHEMA_VERSION};

/// A simple-query decision request for `role` by subject `subject` with `claims`.
pub fn request(
    role: &str,
    subject: &str,
    claims: serde_json::Map<String, serde_json::Value>,
    sql: &str,
) -> DecisionRequest {
    DecisionRequest {
        v: SCHEMA_VERSION,
        role: role.into(),
        identity: Identity {
            issuer: "https://issuer".into(),
            subject: subject.into(),
            key_id: None,
            algorithm: "RS256".into(),
            claims,
        },
        protocol: ProtocolKind::SimpleQuery,
        sql: sql.into(),
        function_oid: None,
        prepared: BTreeMap::new(),
        catalog: Default::default(),
    }
}
