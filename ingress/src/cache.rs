//! Memoised verdicts, by (policy epoch, role, identity class, protocol, exact SQL).
//!
//! The key is the exact text, not a literal-free fingerprint: a literal can change
//! what a statement means to the policy (`DELETE ... WHERE 1 = 1` is unbounded,
//! `WHERE 1 = 2` is not), so two texts share a verdict only when they are equal.
//! Extended-protocol clients send the same `Parse` text every time, so they hit.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use gatehouse_schemas::ProtocolKind;
use gatehouse_schemas::decision::Decision;

/// Entries kept before the cache starts over.
const CAPACITY: usize = 16_384;

struct Entry {
    epoch: u64,
    class: u64,
    role: Box<str>,
    protocol: ProtocolKind,
    sql: Box<str>,
    decision: Arc<Decision>,
}

/// A bounded verdict cache shared by all sessions.
#[derive(Default)]
pub struct VerdictCache {
    // The hasher's keys are random per process, and entries are compared in
    // full, so a crafted text cannot collide into another's verdict.
    hasher: RandomState,
    inner: Mutex<(u64, usize, HashMap<u64, Vec<Entry>>)>,
}

impl VerdictCache {
    fn key(&self, epoch: u64, class: u64, role: &str, protocol: ProtocolKind, sql: &str) -> u64 {
        self.hasher
            .hash_one((epoch, class, role, protocol as u8, sql))
    }

    /// A cached verdict.
    pub fn get(
        &self,
        epoch: u64,
        class: u64,
        role: &str,
        protocol: ProtocolKind,
        sql: &str,
    ) -> Option<Arc<Decision>> {
        let k = self.key(epoch, class, role, protocol, sql);
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.2.get(&k)?.iter().find_map(|e| {
            (e.epoch == epoch
                && e.class == class
                && e.protocol == protocol
                && &*e.role == role
                && &*e.sql == sql)
                .then(|| e.decision.clone())
        })
    }

    /// Remembers a verdict the decider marked cacheable.
    pub fn put(
        &self,
        epoch: u64,
        class: u64,
        role: &str,
        protocol: ProtocolKind,
        sql: &str,
        decision: Arc<Decision>,
    ) {
        let k = self.key(epoch, class, role, protocol, sql);
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (cur_epoch, len, map) = &mut *guard;
        if *cur_epoch != epoch || *len >= CAPACITY {
            // A new policy (or a full cache): start over.
            map.clear();
            *len = 0;
            *cur_epoch = epoch;
        }
        map.entry(k).or_default().push(Entry {
            epoch,
            class,
            role: role.into(),
            protocol,
            sql: sql.into(),
            decision,
        });
        *len += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_schemas::decision::Verdict;

    fn decision(v: Verdict) -> Arc<Decision> {
        Arc::new(Decision {
            v: 1,
            verdict: v,
            rule: None,
            policy_version: "p".into(),
            statements: vec![],
            shadow: vec![],
            cacheable: true,
            shape_cacheable: false,
            values: None,
        })
    }

    #[test]
    fn hits_only_on_the_exact_key() {
        let c = VerdictCache::default();
        let p = ProtocolKind::Parse;
        c.put(1, 7, "etl", p, "select $1", decision(Verdict::Allow));
        assert!(c.get(1, 7, "etl", p, "select $1").is_some());
        assert!(c.get(1, 7, "etl", p, "select $2").is_none(), "other text");
        assert!(
            c.get(1, 8, "etl", p, "select $1").is_none(),
            "other identity class"
        );
        assert!(
            c.get(1, 7, "reporting", p, "select $1").is_none(),
            "other role"
        );
        assert!(
            c.get(1, 7, "etl", ProtocolKind::SimpleQuery, "select $1")
                .is_none()
        );
        assert!(
            c.get(2, 7, "etl", p, "select $1").is_none(),
            "new policy epoch"
        );
        c.put(2, 7, "etl", p, "select 1", decision(Verdict::Allow));
        assert!(
            c.get(1, 7, "etl", p, "select $1").is_none(),
            "a new epoch empties the cache"
        );
    }
}
