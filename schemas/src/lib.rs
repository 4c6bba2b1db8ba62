//! Messages that leave a Gatehouse component: plain serde types, versioned, no I/O.
//!
//! Every message carries [`SCHEMA_VERSION`] in its `v` field so that consumers in
//! other languages can refuse a shape they do not know.

pub mod approval;
pub mod decision;
pub mod evidence;
pub mod json_schema;
pub mod siem;

use std::borrow::Cow;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version of the message shapes in this crate. Bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Who is calling: the validated claims of the caller's token, never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Identity {
    /// The `iss` claim (the issuer's URL or name as it appears in the token).
    pub issuer: String,
    /// The `sub` claim.
    pub subject: String,
    /// The `kid` of the key that signed the token, when the header named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The signature algorithm, e.g. `RS256`.
    pub algorithm: String,
    /// Every claim of the token (CI context such as `repository`, `run_id`, `sha` lives here).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// Which protocol message carried a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolKind {
    /// A simple-protocol `Query` message; its text may hold several statements.
    SimpleQuery,
    /// An extended-protocol `Parse` message (one statement, possibly named).
    Parse,
    /// The legacy `FunctionCall` message: runs a function by OID, no SQL text.
    FunctionCall,
}

/// One runnable SQL text seen by the ingress, emitted before it is forwarded.
///
/// Borrowed where it can be so the per-statement path copies nothing; an owned
/// copy (`into_owned`) is what crosses a bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StatementEvent<'a> {
    /// Always [`SCHEMA_VERSION`].
    pub v: u32,
    /// The gateway session this statement belongs to.
    pub session_id: Uuid,
    /// Position of this statement in its session, starting at 1.
    pub seq: u64,
    /// The Gatehouse role the session assumed (the startup `user`).
    #[serde(borrow)]
    pub role: Cow<'a, str>,
    /// The caller.
    pub identity: Cow<'a, Identity>,
    /// The message that carried the statement.
    pub protocol: ProtocolKind,
    /// Prepared-statement name of a `Parse` (`None` for the unnamed statement).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub statement_name: Option<Cow<'a, str>>,
    /// The SQL text exactly as the server will receive it (empty for `FunctionCall`).
    #[serde(borrow)]
    pub sql: Cow<'a, str>,
    /// The function OID of a `FunctionCall`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_oid: Option<u32>,
}

impl StatementEvent<'_> {
    /// A copy that borrows nothing, for queues and buses.
    pub fn into_owned(self) -> StatementEvent<'static> {
        StatementEvent {
            v: self.v,
            session_id: self.session_id,
            seq: self.seq,
            role: Cow::Owned(self.role.into_owned()),
            identity: Cow::Owned(self.identity.into_owned()),
            protocol: self.protocol,
            statement_name: self.statement_name.map(|n| Cow::Owned(n.into_owned())),
            sql: Cow::Owned(self.sql.into_owned()),
            function_oid: self.function_oid,
        }
    }
}

/// Lower-case hex of `bytes` (hashes, key ids, binary values in evidence).
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_lower_case_two_digits_a_byte() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(super::hex(&[]), "");
    }

    use super::*;

    fn identity() -> Identity {
        let mut claims = serde_json::Map::new();
        claims.insert("repository".into(), "acme/etl".into());
        claims.insert("run_id".into(), "42".into());
        Identity {
            issuer: "https://token.actions.githubusercontent.com".into(),
            subject: "repo:acme/etl:ref:refs/heads/main".into(),
            key_id: Some("k1".into()),
            algorithm: "RS256".into(),
            claims,
        }
    }

    #[test]
    fn statement_event_roundtrips_through_json() {
        let id = identity();
        let event = StatementEvent {
            v: SCHEMA_VERSION,
            session_id: Uuid::new_v4(),
            seq: 7,
            role: Cow::Borrowed("etl"),
            identity: Cow::Borrowed(&id),
            protocol: ProtocolKind::Parse,
            statement_name: Some(Cow::Borrowed("s1")),
            sql: Cow::Borrowed("select $1::int"),
            function_oid: None,
        };
        let json = serde_json::to_string(&event).unwrap();
        let back: StatementEvent<'_> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.clone().into_owned(), event);
        // The wire names are part of the contract with other languages.
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["protocol"], "parse");
        assert_eq!(value["identity"]["claims"]["repository"], "acme/etl");
        assert!(value.get("function_oid").is_none());
    }

    #[test]
    fn protocol_kinds_have_stable_names() {
        for (kind, name) in [
            (ProtocolKind::SimpleQuery, "\"simple_query\""),
            (ProtocolKind::Parse, "\"parse\""),
            (ProtocolKind::FunctionCall, "\"function_call\""),
        ] {
            assert_eq!(serde_json::to_string(&kind).unwrap(), name);
            assert_eq!(serde_json::from_str::<ProtocolKind>(name).unwrap(), kind);
        }
    }
}
