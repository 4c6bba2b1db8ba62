//! Inline masking: rewrites the `DataRow`s and `CopyData` of statements under
//! a mask verdict so masked values never reach the client, and scrubs their
//! errors and notices.
//!
//! Which result column is masked comes from two places: its origin (the
//! `RowDescription` table OID and attribute number, resolved by [`catalog`]) for
//! direct columns, and the decider's lineage (by position) for derived ones;
//! [`plan`] compiles a verdict for that. [`session`] is one session's masking,
//! as annotations on the entries of its pipeline (`protocol::pipeline`);
//! [`objects`] what it keeps of the session's statements, portals and
//! cursors; [`wire`] and [`copy`] the rewrites; [`values`] what evidence shows
//! of the values a masked caller sends; [`views`] the views and functions a
//! masked caller's statement reads, looked up before it is decided.

pub mod catalog;
pub mod copy;
pub mod detect;
pub mod method;
pub mod objects;
pub mod plan;
pub mod session;
pub mod values;
pub mod views;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Secret;
use crate::upstream::UpstreamTarget;
use catalog::Catalog;

/// Gateway-wide masking state: the hash key and one catalog per upstream.
pub struct Masking {
    key: Secret,
    ttl: Duration,
    catalogs: Mutex<HashMap<String, Arc<Catalog>>>,
}

impl Masking {
    /// `key` keys the `hash` method (never logged); catalog entries live `ttl`.
    pub fn new(key: Secret, ttl: Duration) -> Self {
        Self {
            key,
            ttl,
            catalogs: Mutex::default(),
        }
    }

    /// The key of the `hash` method.
    pub fn key(&self) -> &[u8] {
        self.key.expose().as_bytes()
    }

    /// The catalog of `target`'s upstream (shared by the roles that reach the
    /// same server and database as the same user).
    pub fn catalog(&self, target: &Arc<UpstreamTarget>) -> Arc<Catalog> {
        let id = format!("{}/{}/{}", target.addr(), target.config.dbname, target.user);
        let mut map = self.catalogs.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id)
            .or_insert_with(|| Arc::new(Catalog::new(target.clone(), self.ttl)))
            .clone()
    }
}
