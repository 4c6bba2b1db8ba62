//! The decision point: every SQL text that can run is shown to a [`DecisionPoint`]
//! before the ingress forwards it. The decider plugs in here.

use std::future::Future;

use gatehouse_schemas::StatementEvent;

/// What may happen to a statement.
///
/// Only `Allow` exists until the decider lands: the ingress's job so far is to
/// emit every statement at this seam; blocking, masking and approval verdicts are
/// added with the components that execute them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the statement unchanged.
    Allow,
}

/// Receives each statement before it runs and returns its verdict.
pub trait DecisionPoint: Send + Sync + 'static {
    /// Decides one statement. Called on the session's hot path: keep it cheap.
    fn decide(&self, event: &StatementEvent<'_>) -> impl Future<Output = Verdict> + Send;
}

/// The all-in-one default until the decider exists: records each statement in the
/// log (the SQL only at `debug`, since statement texts may carry literals) and
/// allows it.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogAndAllow;

impl DecisionPoint for LogAndAllow {
    async fn decide(&self, event: &StatementEvent<'_>) -> Verdict {
        // Session, role and subject are fields of the enclosing session span.
        tracing::debug!(seq = event.seq, protocol = ?event.protocol, sql = %event.sql, "statement");
        Verdict::Allow
    }
}
