//! Cancel keys: each session gets a Gatehouse pid/secret that maps to its
//! upstream's, so a client can cancel its own query and nobody else's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rand::Rng;
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use crate::upstream::{UpstreamTarget, cancel};

struct Entry {
    secret: i32,
    /// Woken by a matching cancel: withdraws a statement held for approval.
    withdraw: Arc<Notify>,
    target: Arc<UpstreamTarget>,
    upstream_key: (i32, i32),
}

/// All live sessions' cancel keys.
#[derive(Default)]
pub struct CancelRegistry {
    entries: Mutex<HashMap<i32, Entry>>,
}

/// Removes a session's key when the session ends.
pub struct CancelGuard {
    registry: Arc<CancelRegistry>,
    pid: i32,
    withdraw: Arc<Notify>,
}

impl CancelGuard {
    /// Woken when a client cancels with this session's key: a statement held for
    /// approval is withdrawn (nothing runs upstream to cancel).
    pub fn withdrawals(&self) -> Arc<Notify> {
        self.withdraw.clone()
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.pid);
    }
}

impl CancelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Entry>> {
        // A panic while holding this lock leaves the map consistent (single
        // insert/remove), so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issues a fresh (pid, secret) for a session whose upstream key is `upstream_key`.
    pub fn register(
        self: &Arc<Self>,
        target: Arc<UpstreamTarget>,
        upstream_key: (i32, i32),
    ) -> (CancelGuard, i32, i32) {
        let mut rng = rand::rng();
        let secret: i32 = rng.random();
        let mut map = self.lock();
        let pid = loop {
            let pid = rng.random_range(1..i32::MAX);
            if !map.contains_key(&pid) {
                break pid;
            }
        };
        let withdraw = Arc::new(Notify::new());
        map.insert(
            pid,
            Entry {
                secret,
                withdraw: withdraw.clone(),
                target,
                upstream_key,
            },
        );
        (
            CancelGuard {
                registry: self.clone(),
                pid,
                withdraw,
            },
            pid,
            secret,
        )
    }

    /// Forwards a cancel when `secret` matches `pid`'s; otherwise does nothing, as
    /// PostgreSQL does, so a prober learns nothing.
    pub async fn cancel(&self, pid: i32, secret: i32) -> bool {
        let found = {
            let map = self.lock();
            map.get(&pid).and_then(|e| {
                let ok: bool = e.secret.to_be_bytes().ct_eq(&secret.to_be_bytes()).into();
                if ok {
                    // Kept as a permit if the hold is not waiting yet; a session
                    // drops a stale permit before it holds a statement.
                    e.withdraw.notify_one();
                }
                ok.then(|| (e.target.clone(), e.upstream_key))
            })
        };
        let Some((target, key)) = found else {
            tracing::warn!(pid, "cancel_request_unmatched");
            return false;
        };
        match cancel(&target, key).await {
            Ok(()) => {
                tracing::info!(pid, "cancel_forwarded");
                true
            }
            Err(e) => {
                tracing::warn!(pid, error = %e, "cancel_forward_failed");
                false
            }
        }
    }
}
