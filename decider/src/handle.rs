//! The policy in force, swapped atomically on reload so sessions never stop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::policy::{Policy, PolicyError};

/// A reloadable policy.
pub struct PolicyHandle {
    path: Option<PathBuf>,
    current: RwLock<Arc<Policy>>,
    epoch: AtomicU64,
    loaded_mtime: RwLock<Option<SystemTime>>,
}

impl PolicyHandle {
    /// Loads `path`; later [`reload`](Self::reload)s re-read it.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let policy = Policy::load(path)?;
        Ok(Self {
            path: Some(path.to_owned()),
            current: RwLock::new(Arc::new(policy)),
            epoch: AtomicU64::new(1),
            loaded_mtime: RwLock::new(mtime),
        })
    }

    /// A fixed policy (tests, `policy explain`).
    pub fn fixed(policy: Policy) -> Self {
        Self {
            path: None,
            current: RwLock::new(Arc::new(policy)),
            epoch: AtomicU64::new(1),
            loaded_mtime: RwLock::new(None),
        }
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<Policy> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Changes whenever the policy does; keys verdict caches.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Re-reads the file. A policy that fails to load leaves the old one in force.
    /// Returns the new version when it changed.
    pub fn reload(&self) -> Result<Option<String>, PolicyError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        let policy = Policy::load(path)?;
        *self.loaded_mtime.write().unwrap_or_else(|p| p.into_inner()) = mtime;
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if cur.version == policy.version {
            return Ok(None);
        }
        let version = policy.version.clone();
        *cur = Arc::new(policy);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        Ok(Some(version))
    }

    /// Whether the file changed on disk since it was last loaded.
    pub fn changed_on_disk(&self) -> bool {
        let Some(path) = &self.path else { return false };
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        mtime != *self.loaded_mtime.read().unwrap_or_else(|p| p.into_inner())
    }
}
