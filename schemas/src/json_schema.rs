//! JSON Schemas of the messages, derived from the types (types only, no I/O), so
//! that bots and SIEM pipelines in other languages can validate what they read.
//!
//! The same schemas are checked in under `schemas/json/`; a test keeps those files
//! equal to what the types derive.

use schemars::{JsonSchema, schema_for};

use crate::StatementEvent;
use crate::approval::{
    ApprovalList, ApprovalQuery, ApprovalRecord, ApprovalRequest, ApproverDecision, DecisionReply,
};
use crate::decision::{DecideError, Decision, DecisionRequest, PolicyAnnouncement};
use crate::evidence::Event;
use crate::siem::SiemRecord;

/// Every message's schema, by the file name it has under `schemas/json/`.
pub fn all() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        schema::<DecisionRequest>("decision-request.schema.json"),
        schema::<Decision>("decision.schema.json"),
        schema::<DecideError>("decide-error.schema.json"),
        schema::<PolicyAnnouncement>("policy-announcement.schema.json"),
        schema::<StatementEvent<'static>>("statement-event.schema.json"),
        schema::<Event>("evidence-event.schema.json"),
        schema::<SiemRecord>("siem-record.schema.json"),
        schema::<ApprovalRequest>("approval-request.schema.json"),
        schema::<ApprovalRecord>("approval-record.schema.json"),
        schema::<ApproverDecision>("approver-decision.schema.json"),
        schema::<DecisionReply>("approval-decision-reply.schema.json"),
        schema::<ApprovalQuery>("approval-query.schema.json"),
        schema::<ApprovalList>("approval-list.schema.json"),
    ]
}

fn schema<T: JsonSchema>(file: &'static str) -> (&'static str, serde_json::Value) {
    (file, schema_for!(T).to_value())
}
