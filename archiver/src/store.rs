//! Where segments and manifests are kept: the [`SegmentStore`] trait, and
//! [`LocalDir`], the all-in-one store ([`crate::s3::S3Store`] is the other).

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::StoreError;

/// An object store of archived evidence, addressed by relative `/`-separated keys.
///
/// Keys are the same in every store (see [`crate::segment`]); a store maps them
/// under its own root or prefix.
pub trait SegmentStore: Send + Sync {
    /// Writes an object. Durable when it returns `Ok`: the bytes survive a crash
    /// of this process and of the machine.
    fn put(&self, key: &str, bytes: &[u8]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reads an object; `None` when there is none under `key`.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// Every key that starts with `prefix` (at any depth), sorted.
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
}

impl<S: SegmentStore> SegmentStore for Arc<S> {
    fn put(&self, key: &str, bytes: &[u8]) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).put(key, bytes)
    }
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send {
        (**self).get(key)
    }
    fn list(&self, prefix: &str) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send {
        (**self).list(prefix)
    }
}

/// Objects as files under a root directory: key `a/b/c` is file `<root>/a/b/c`.
///
/// `put` writes a hidden temporary file beside the target, fsyncs it, renames it
/// into place and fsyncs the directory (and the directories it had to create),
/// so a crash leaves either the old object or the whole new one. Files whose
/// name starts with `.` are never listed.
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    /// A store rooted at `root` (created on first `put`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of a key, after checking the key is a plain relative path.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        let mut path = self.root.clone();
        path.extend(key.split('/'));
        Ok(path)
    }
}

/// Refuses a key that is not a plain relative `/`-separated path: empty, with
/// an empty part, a part starting with `.` (so `.`, `..` and hidden names), a
/// backslash or a NUL. Every store refuses the same keys, so an archive can move
/// between stores unchanged.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    let bad = key.is_empty()
        || key.contains('\\')
        || key.contains('\0')
        || key
            .split('/')
            .any(|part| part.is_empty() || part.starts_with('.'));
    if bad {
        return Err(StoreError::InvalidKey(key.to_owned()));
    }
    Ok(())
}

fn io_err(op: &'static str, key: &str) -> impl FnOnce(std::io::Error) -> StoreError {
    let key = key.to_owned();
    move |source| StoreError::Io { op, key, source }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn put_blocking(root: &Path, path: &Path, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let err = || io_err("put", key);
    let dir = path.parent().expect("a key has at least one part");
    // The directories this put creates must be made durable too, up to one that existed.
    let mut created = Vec::new();
    let mut d = dir;
    while !d.exists() {
        created.push(d.to_owned());
        match d.parent() {
            Some(p) if d != root => d = p,
            _ => break,
        }
    }
    std::fs::create_dir_all(dir).map_err(err())?;
    let name = path.file_name().expect("a key part").to_string_lossy();
    let mut nonce = [0u8; 8];
    rand::fill(&mut nonce);
    let tmp = dir.join(format!(".{name}.{}.tmp", crate::keys::hex(&nonce)));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)?;
        for c in &created {
            if let Some(parent) = c.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err())
}

fn list_blocking(root: &Path, prefix: &str) -> Result<Vec<String>, StoreError> {
    // Walk only the folder the prefix names, not the whole tree.
    let (dir_part, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
    let mut start = root.to_owned();
    for part in dir_part.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return Err(StoreError::InvalidKey(prefix.to_owned()));
        }
        start.push(part);
    }
    let mut keys = Vec::new();
    let mut stack = vec![start];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("list", prefix)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("list", prefix))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let kind = entry.file_type().map_err(io_err("list", prefix))?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let rel = path.strip_prefix(root).expect("walked under root");
                let key: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
                let key = key.join("/");
                if key.starts_with(prefix) {
                    keys.push(key);
                }
            }
        }
    }
    keys.sort();
    Ok(keys)
}

impl SegmentStore for LocalDir {
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        let (root, key, bytes) = (self.root.clone(), key.to_owned(), bytes.to_vec());
        blocking(move || put_blocking(&root, &path, &key, &bytes)).await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path_of(key)?;
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("get", key)(e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let (root, prefix) = (self.root.clone(), prefix.to_owned());
        blocking(move || list_blocking(&root, &prefix)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_list_under_a_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path().join("evidence"));
        assert_eq!(store.list("sessions/").await.unwrap(), Vec::<String>::new());
        store.put("sessions/b/2.gz", b"two").await.unwrap();
        store.put("sessions/a/1.gz", b"one").await.unwrap();
        store.put("sessions/a/1.gz", b"uno").await.unwrap();
        store.put("other/x", b"x").await.unwrap();
        assert_eq!(store.get("sessions/a/1.gz").await.unwrap().unwrap(), b"uno");
        assert_eq!(store.get("sessions/a/none").await.unwrap(), None);
        assert_eq!(
            store.list("sessions/").await.unwrap(),
            vec!["sessions/a/1.gz", "sessions/b/2.gz"]
        );
        assert_eq!(
            store.list("sessions/a").await.unwrap(),
            vec!["sessions/a/1.gz"]
        );
        assert_eq!(store.list("").await.unwrap().len(), 3);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("evidence/sessions/a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["1.gz"]);
    }

    #[tokio::test]
    async fn refuses_keys_that_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path());
        for key in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "a\\b",
            ".hidden",
        ] {
            assert!(
                matches!(store.put(key, b"x").await, Err(StoreError::InvalidKey(_))),
                "{key:?}"
            );
            assert!(store.get(key).await.is_err(), "{key:?}");
        }
        assert!(store.list("../").await.is_err());
    }
}
