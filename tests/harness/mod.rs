//! End-to-end test harness: a real PostgreSQL started per test, a development
//! token issuer, and the gateway running in-process on a free port; real
//! NATS and S3-compatible (moto) servers for the tests that need them.
#![allow(dead_code, unused_imports)] // each test binary uses its own subset

pub mod clients;
pub mod evidence;
pub mod gateway;
pub mod kafka;
pub mod nats;
pub mod pg;
pub mod raw;
pub mod s3;

pub use clients::*;
pub use gateway::*;
pub use pg::*;
pub use raw::*;

/// The Python that has deploy/test.sh's test tools (kubernetes-validate,
/// ocsf-json-schema, jsonschema): `GATEHOUSE_PYTHON`, else deploy/test.sh's venv.
pub fn tools_python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("GATEHOUSE_PYTHON") {
        return p.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME");
    let venv = cache.join("gatehouse/venv/bin/python");
    assert!(
        venv.is_file(),
        "no {} (deploy/test.sh makes it; or set GATEHOUSE_PYTHON)",
        venv.display()
    );
    venv
}

/// A path inside the repository.
pub fn repo_path(path: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}
