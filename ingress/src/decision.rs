//! The decision point: every SQL text that can run is shown to a [`DecisionPoint`]
//! before the ingress forwards it, and forwarded only if the verdict allows it.

use std::collections::BTreeMap;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use gatehouse_decider::{PolicyHandle, Query};
use gatehouse_schemas::decision::{CatalogFacts, Decision};
use gatehouse_schemas::{Identity, StatementEvent};

/// The decider could not answer; the statement is refused (fail closed).
#[derive(Debug, Clone, thiserror::Error)]
pub enum DecisionError {
    /// Unreachable, failing, or too slow.
    #[error("policy service unavailable: {0}")]
    Unavailable(String),
}

/// Receives each statement before it runs and returns its verdict.
pub trait DecisionPoint: Send + Sync + 'static {
    /// Decides one statement. `prepared` holds the session's SQL-`PREPARE`d
    /// statements (name to inner SQL) so that `EXECUTE name` is decided as its
    /// inner statement; `catalog` what the upstream catalog said about the
    /// views it reads and the functions it calls (see [`crate::masking::views`]).
    fn decide(
        &self,
        event: &StatementEvent<'_>,
        prepared: &BTreeMap<String, String>,
        catalog: &CatalogFacts,
    ) -> impl Future<Output = Result<Arc<Decision>, DecisionError>> + Send;

    /// Changes whenever verdicts may change (a new policy); part of the verdict
    /// cache key, so a new policy empties the cache.
    fn epoch(&self) -> u64 {
        0
    }

    /// What the policy can tell apart about a caller. Callers of one class get
    /// the same verdict for the same statement, so they share cache entries.
    /// The default is every claim but the per-token ones.
    fn identity_class(&self, role: &str, identity: &Identity) -> u64 {
        let mut h = DefaultHasher::new();
        role.hash(&mut h);
        identity.issuer.hash(&mut h);
        for (k, v) in &identity.claims {
            if !matches!(k.as_str(), "exp" | "iat" | "nbf" | "jti") {
                k.hash(&mut h);
                v.to_string().hash(&mut h);
            }
        }
        h.finish()
    }
}

/// All-in-one mode: the policy evaluated in-process.
pub struct LocalPolicy {
    handle: Arc<PolicyHandle>,
}

impl LocalPolicy {
    /// Decides with the policy in `handle` (reloaded elsewhere).
    pub fn new(handle: Arc<PolicyHandle>) -> Self {
        Self { handle }
    }
}

impl DecisionPoint for LocalPolicy {
    async fn decide(
        &self,
        event: &StatementEvent<'_>,
        prepared: &BTreeMap<String, String>,
        catalog: &CatalogFacts,
    ) -> Result<Arc<Decision>, DecisionError> {
        let policy = self.handle.current();
        Ok(Arc::new(policy.decide(Query {
            role: &event.role,
            identity: &event.identity,
            protocol: event.protocol,
            sql: &event.sql,
            function_oid: event.function_oid,
            prepared,
            catalog,
        })))
    }

    fn epoch(&self) -> u64 {
        self.handle.epoch()
    }

    fn identity_class(&self, role: &str, identity: &Identity) -> u64 {
        self.handle.current().identity_class(role, identity)
    }
}
