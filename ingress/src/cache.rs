//! Memoised verdicts, by (policy epoch, role, identity class, protocol, exact SQL).
//!
//! The key is the exact text, not a literal-free fingerprint: a literal can change
//! what a statement means to the policy (`DELETE ... WHERE 1 = 1` is unbounded,
//! `WHERE 1 = 2` is not), so two texts share a verdict only when they are equal.
//! Extended-protocol clients send the same `Parse` text every time, so they hit.
//!
//! A verdict may also depend on the upstream catalog (which of the relations a
//! masked caller reads are views, and their definitions; which functions the
//! names any caller's statement calls may run; see `masking::views`): it is
//! kept with the catalog's generation and expiry, and served only while both
//! hold, so DDL through the gateway (which empties the catalog) or the
//! catalog's TTL retires it. A statement that calls no function and reads
//! no view through a mask depends on nothing of it.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
    catalog: Option<CatalogState>,
}

impl Entry {
    /// Whether this is the entry of exactly this key (hashes may collide).
    fn is(&self, epoch: u64, class: u64, role: &str, protocol: ProtocolKind, sql: &str) -> bool {
        self.epoch == epoch
            && self.class == class
            && self.protocol == protocol
            && &*self.role == role
            && &*self.sql == sql
    }
}

/// What the upstream catalog said when a verdict was decided: its generation,
/// and until when its answers hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogState {
    /// The catalog's generation then.
    pub generation: u64,
    /// When the oldest catalog entry the verdict used expires.
    pub until: Instant,
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

    /// A cached verdict. `generation` is the catalog's generation now (asked
    /// only of an entry that depends on the catalog).
    pub fn get(
        &self,
        epoch: u64,
        class: u64,
        role: &str,
        protocol: ProtocolKind,
        sql: &str,
        generation: impl FnOnce() -> u64,
    ) -> Option<Arc<Decision>> {
        let k = self.key(epoch, class, role, protocol, sql);
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let e = guard
            .2
            .get(&k)?
            .iter()
            .find(|e| e.is(epoch, class, role, protocol, sql))?;
        match e.catalog {
            None => Some(e.decision.clone()),
            Some(c) => (c.generation == generation() && Instant::now() < c.until)
                .then(|| e.decision.clone()),
        }
    }

    /// Remembers a verdict the decider marked cacheable; `catalog`: what the
    /// catalog said when it was decided, if it depends on it.
    #[allow(clippy::too_many_arguments)]
    pub fn put(
        &self,
        epoch: u64,
        class: u64,
        role: &str,
        protocol: ProtocolKind,
        sql: &str,
        decision: Arc<Decision>,
        catalog: Option<CatalogState>,
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
        let entries = map.entry(k).or_default();
        // A stale entry (the catalog moved on) is replaced, not shadowed.
        let before = entries.len();
        entries.retain(|e| !e.is(epoch, class, role, protocol, sql));
        *len -= before - entries.len();
        entries.push(Entry {
            epoch,
            class,
            role: role.into(),
            protocol,
            sql: sql.into(),
            decision,
            catalog,
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
            relations: Vec::new(),
            functions: Vec::new(),
        })
    }

    #[test]
    fn hits_only_on_the_exact_key() {
        let c = VerdictCache::default();
        let p = ProtocolKind::Parse;
        let g = || 0;
        c.put(1, 7, "etl", p, "select $1", decision(Verdict::Allow), None);
        assert!(c.get(1, 7, "etl", p, "select $1", g).is_some());
        assert!(
            c.get(1, 7, "etl", p, "select $2", g).is_none(),
            "other text"
        );
        assert!(
            c.get(1, 8, "etl", p, "select $1", g).is_none(),
            "other identity class"
        );
        assert!(
            c.get(1, 7, "reporting", p, "select $1", g).is_none(),
            "other role"
        );
        assert!(
            c.get(1, 7, "etl", ProtocolKind::SimpleQuery, "select $1", g)
                .is_none()
        );
        assert!(
            c.get(2, 7, "etl", p, "select $1", g).is_none(),
            "new policy epoch"
        );
        c.put(2, 7, "etl", p, "select 1", decision(Verdict::Allow), None);
        assert!(
            c.get(1, 7, "etl", p, "select $1", g).is_none(),
            "a new epoch empties the cache"
        );
    }

    #[test]
    fn verdicts_that_read_the_catalog_follow_it() {
        let c = VerdictCache::default();
        let p = ProtocolKind::SimpleQuery;
        let sql = "select upper(ssn) from v";
        let later = Instant::now() + std::time::Duration::from_secs(60);
        let at = |generation| {
            Some(CatalogState {
                generation,
                until: later,
            })
        };
        c.put(1, 7, "app", p, sql, decision(Verdict::Allow), at(3));
        assert!(c.get(1, 7, "app", p, sql, || 3).is_some());
        assert!(
            c.get(1, 7, "app", p, sql, || 4).is_none(),
            "the catalog was emptied since"
        );
        // Decided again under the new generation: replaces the stale entry.
        c.put(1, 7, "app", p, sql, decision(Verdict::Allow), at(4));
        assert!(c.get(1, 7, "app", p, sql, || 4).is_some());
        assert_eq!(c.inner.lock().unwrap().1, 1);
        // Past the catalog's TTL.
        let past = Some(CatalogState {
            generation: 4,
            until: Instant::now(),
        });
        c.put(1, 7, "app", p, sql, decision(Verdict::Allow), past);
        assert!(c.get(1, 7, "app", p, sql, || 4).is_none(), "expired");
        // A verdict that does not read the catalog never asks for it.
        c.put(1, 7, "app", p, "select 1", decision(Verdict::Allow), None);
        assert!(
            c.get(1, 7, "app", p, "select 1", || unreachable!())
                .is_some()
        );
    }
}
