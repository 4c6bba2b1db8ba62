//! Refusing a statement: why, as the client reads it, and exactly where it
//! stood.
//!
//! Every reason a statement is refused is a [`Refusal`], turned into the
//! client's `ErrorResponse` in one exhaustive match (SQLSTATE and message).
//!
//! A refused statement never reaches PostgreSQL, yet the upstream must end in
//! the state PostgreSQL itself would have left: a failed transaction inside a
//! block, the rest of an extended-protocol pipeline skipped until `Sync`. So
//! the session forwards a *substitute* in the refused message's place: the
//! same message type carrying text that cannot parse and names a per-session
//! secret marker. The server fails it at exactly that position (or skips it,
//! if an earlier message of the pipeline already failed, as it would have
//! skipped the original); the pipeline entry of the substitute carries the
//! marker and the client's error, and the server's error that names the
//! marker is swapped for it.

use bytes::{BufMut, BytesMut};
use rand::RngCore;
use uuid::Uuid;

use crate::error::{Severity, SqlState, UserFacing, error_response};
use crate::evidence::EvidenceError;
use crate::masking::session::Cause;
use crate::protocol::codec;
use crate::protocol::pipeline::{Kind, Substitute};

/// Why a statement does not run.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// The policy blocks it.
    #[error("blocked by policy")]
    Blocked {
        /// The deciding rule (`None`: default deny).
        rule: Option<String>,
        /// Why.
        reason: String,
    },
    /// It needs an approval, and this gateway holds no statements.
    #[error("needs an approval this gateway does not run")]
    ApprovalNotRun {
        /// Who may approve.
        approvers: String,
        /// The rule.
        rule: Option<String>,
        /// Why.
        reason: String,
    },
    /// The session holds as many prepared statements as it may.
    #[error("too many prepared statements")]
    TooManyPrepared,
    /// No verdict: the decider is unreachable, failing or late (fail closed).
    #[error("policy service unavailable")]
    DecisionUnavailable,
    /// Its evidence could not be made durable (nothing runs unrecorded).
    #[error("evidence unavailable: {0}")]
    Unrecorded(EvidenceError),
    /// It needs an approval the gateway cannot ask for here.
    #[error("needs an approval that cannot be requested")]
    ApprovalImpossible(&'static str),
    /// The approval request could not be stored.
    #[error("approval service unavailable")]
    ApprovalServiceUnavailable {
        /// Who would approve.
        approvers: String,
    },
    /// An approver denied it.
    #[error("denied")]
    Denied {
        /// The request.
        id: Uuid,
        /// Who denied it.
        by: String,
        /// Their comment.
        comment: Option<String>,
    },
    /// No decision came before the deadline.
    #[error("approval expired")]
    Expired {
        /// The request.
        id: Uuid,
        /// Who could have approved.
        approvers: String,
        /// Why it closed.
        reason: String,
    },
    /// The client withdrew it (cancelled, or went away).
    #[error("approval withdrawn")]
    Withdrawn {
        /// The request.
        id: Uuid,
        /// Why it closed.
        reason: String,
    },
    /// The approval was used already: it authorizes one statement.
    #[error("approval already used")]
    ApprovalUsed {
        /// The request.
        id: String,
    },
    /// An execution beyond the one its approval authorized, or with other
    /// parameters than approved.
    #[error("approval spent")]
    ApprovalSpent {
        /// The request.
        id: String,
    },
    /// The approval could not be marked used.
    #[error("approval not marked used")]
    ApprovalNotMarked {
        /// The request.
        id: Uuid,
        /// The store's error.
        error: String,
    },
}

impl UserFacing for Refusal {
    fn sqlstate(&self) -> SqlState {
        match self {
            Self::Blocked { .. }
            | Self::ApprovalNotRun { .. }
            | Self::ApprovalImpossible(_)
            | Self::Denied { .. }
            | Self::ApprovalUsed { .. }
            | Self::ApprovalSpent { .. } => SqlState::InsufficientPrivilege,
            Self::TooManyPrepared => SqlState::ConfigurationLimitExceeded,
            Self::DecisionUnavailable | Self::Unrecorded(_) => SqlState::CannotConnectNow,
            Self::ApprovalServiceUnavailable { .. }
            | Self::Expired { .. }
            | Self::Withdrawn { .. }
            | Self::ApprovalNotMarked { .. } => SqlState::QueryCanceled,
        }
    }

    fn client_message(&self) -> String {
        match self {
            Self::Blocked {
                rule: Some(r),
                reason,
            } => format!("statement blocked by policy rule \"{r}\": {reason}"),
            Self::Blocked { rule: None, reason } => {
                format!("statement blocked by policy: {reason}")
            }
            Self::ApprovalNotRun {
                approvers,
                rule,
                reason,
            } => format!(
                "statement requires approval by \"{approvers}\" under policy rule \"{}\" ({reason}); this gateway does not run approvals, so it is refused",
                rule.as_deref().unwrap_or("?")
            ),
            Self::TooManyPrepared => format!(
                "too many prepared statements in this session (Gatehouse tracks at most {}); close some first",
                crate::protocol::names::MAX_NAMES
            ),
            Self::DecisionUnavailable => "statement refused: the policy service is unavailable (Gatehouse fails closed); retry later".into(),
            Self::Unrecorded(e) => format!(
                "statement refused: its evidence could not be recorded ({e}); Gatehouse runs nothing unrecorded, retry later"
            ),
            Self::ApprovalImpossible(what) => (*what).into(),
            Self::ApprovalServiceUnavailable { approvers } => format!(
                "canceling statement: it needs approval by \"{approvers}\", and the approval service is unavailable; retry later"
            ),
            Self::Denied { id, by, comment } => format!(
                "statement denied by {by} (approval request {id}){}",
                comment.as_ref().map(|c| format!(": {c}")).unwrap_or_default()
            ),
            Self::Expired {
                id,
                approvers,
                reason,
            } => format!(
                "canceling statement: approval request {id} expired without a decision by \"{approvers}\" ({reason})"
            ),
            Self::Withdrawn { id, reason } => {
                format!("canceling statement: approval request {id} withdrawn ({reason})")
            }
            Self::ApprovalUsed { id } => format!(
                "approval request {id} was already used; an approval authorizes one statement"
            ),
            Self::ApprovalSpent { id } => format!(
                "approval request {id} authorized one execution of this statement with the parameters shown to the approver; prepare it again for a new approval"
            ),
            Self::ApprovalNotMarked { id, error } => format!(
                "canceling statement: approval request {id} could not be marked used ({error}); retry later"
            ),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Blocked { .. } => "policy_blocked",
            Self::ApprovalNotRun { .. } => "approval_not_run",
            Self::TooManyPrepared => "too_many_prepared",
            Self::DecisionUnavailable => "decision_unavailable",
            Self::Unrecorded(_) => "evidence_unavailable",
            Self::ApprovalImpossible(_) => "approval_impossible",
            Self::ApprovalServiceUnavailable { .. } => "approval_service_unavailable",
            Self::Denied { .. } => "approval_denied",
            Self::Expired { .. } => "approval_expired",
            Self::Withdrawn { .. } => "approval_withdrawn",
            Self::ApprovalUsed { .. } => "approval_used",
            Self::ApprovalSpent { .. } => "approval_spent",
            Self::ApprovalNotMarked { .. } => "approval_not_marked",
        }
    }
}

impl Refusal {
    /// The client's `ErrorResponse`.
    pub fn error_response(&self) -> BytesMut {
        error_response(Severity::Error, self.sqlstate(), &self.client_message())
    }
}

/// Marker prefix; the session nonce and a sequence number follow.
const PREFIX: &str = "gatehouse_refused_";

/// The substitutes of one session's refusals.
pub struct Substitutes {
    nonce: String,
    next: usize,
}

impl Default for Substitutes {
    fn default() -> Self {
        let mut n = [0u8; 16];
        rand::rng().fill_bytes(&mut n);
        Self {
            nonce: n.iter().map(|b| format!("{b:02x}")).collect(),
            next: 0,
        }
    }
}

/// A substitute: its bytes, and its pipeline entry's kind and masking cause.
pub struct Substituted {
    /// The message sent in the refused one's place.
    pub bytes: BytesMut,
    /// What it is to the pipeline.
    pub kind: Kind,
    /// What masking knows of it.
    pub cause: Cause,
    /// The marker and the client's error.
    pub substitute: Substitute,
}

impl Substitutes {
    /// The substitute of a refused message of type `tag` (`Query`, `Parse`,
    /// `FunctionCall`, `Execute`, or a held `Bind`); `name` is a `Parse`'s
    /// statement name, kept so later Binds fail as PostgreSQL's would.
    pub fn substitute(&mut self, tag: u8, name: &[u8], refusal: &Refusal) -> Substituted {
        let marker = format!("{PREFIX}{}_{}", self.nonce, self.next);
        self.next += 1;
        let mut body = BytesMut::new();
        let (out_tag, kind, cause) = match tag {
            codec::PARSE | codec::EXECUTE | codec::BIND => {
                // A refused Execute (or held Bind) becomes a Parse of a statement
                // named by the marker: it fails in the same place of the pipeline,
                // and touches neither the unnamed statement nor any portal.
                let name = if tag == codec::PARSE {
                    name
                } else {
                    marker.as_bytes()
                };
                body.put_slice(name);
                body.put_u8(0);
                body.put_slice(marker.as_bytes());
                body.put_u8(0);
                body.put_u16(0);
                let cause = Cause::Parse(String::from_utf8_lossy(name).into_owned());
                (codec::PARSE, Kind::Parse, cause)
            }
            // A refused FunctionCall is replaced by a Query: both end in one
            // ErrorResponse and one ReadyForQuery.
            _ => {
                body.put_slice(marker.as_bytes());
                body.put_u8(0);
                let cause = crate::masking::session::Masker::undecided_query();
                (codec::QUERY, Kind::Query, cause)
            }
        };
        let mut bytes = BytesMut::with_capacity(body.len() + 5);
        bytes.put_u8(out_tag);
        bytes.put_u32(body.len() as u32 + 4);
        bytes.put_slice(&body);
        Substituted {
            bytes,
            kind,
            cause,
            substitute: Substitute {
                marker,
                error: refusal.error_response(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_keep_the_parse_name_and_carry_a_fresh_marker() {
        let mut s = Substitutes::default();
        let refusal = Refusal::DecisionUnavailable;
        let q = s.substitute(codec::QUERY, b"", &refusal);
        assert_eq!((q.bytes[0], q.kind), (b'Q', Kind::Query));
        let p = s.substitute(codec::PARSE, b"stmt", &refusal);
        assert_eq!((p.bytes[0], p.kind), (b'P', Kind::Parse));
        assert!(
            p.bytes.windows(5).any(|w| w == b"stmt\0"),
            "the name is kept"
        );
        assert_ne!(q.substitute.marker, p.substitute.marker);
        assert!(
            p.bytes
                .windows(p.substitute.marker.len())
                .any(|w| w == p.substitute.marker.as_bytes())
        );
        let e = s.substitute(codec::EXECUTE, b"", &refusal);
        assert!(matches!(&e.cause, Cause::Parse(n) if *n == e.substitute.marker));
        // Another session's markers differ.
        let other = Substitutes::default().substitute(codec::QUERY, b"", &refusal);
        assert_ne!(other.substitute.marker, q.substitute.marker);
    }

    #[test]
    fn every_refusal_has_its_sqlstate_and_names_what_to_do() {
        let id = Uuid::nil();
        let cases = [
            (
                Refusal::Blocked {
                    rule: Some("r".into()),
                    reason: "no".into(),
                },
                "42501",
                "policy rule \"r\"",
            ),
            (Refusal::TooManyPrepared, "53400", "close some first"),
            (Refusal::DecisionUnavailable, "57P03", "fails closed"),
            (
                Refusal::Unrecorded(EvidenceError::Unavailable("disk".into())),
                "57P03",
                "runs nothing unrecorded",
            ),
            (
                Refusal::Expired {
                    id,
                    approvers: "dba".into(),
                    reason: "late".into(),
                },
                "57014",
                "expired without a decision by \"dba\"",
            ),
            (
                Refusal::Denied {
                    id,
                    by: "alice".into(),
                    comment: Some("not today".into()),
                },
                "42501",
                "denied by alice",
            ),
        ];
        for (r, state, needle) in cases {
            assert_eq!(r.sqlstate().code(), state, "{r:?}");
            assert!(
                r.client_message().contains(needle),
                "{}",
                r.client_message()
            );
        }
    }
}
