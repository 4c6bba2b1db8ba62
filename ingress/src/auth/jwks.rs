//! An issuer's signing keys: loaded from a JWKS file or URL, cached, refetched
//! when an unknown `kid` arrives (at most once per interval) or when stale.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use tokio::sync::Mutex;

use crate::error::AuthError;

/// Where keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// Fetched over HTTP(S).
    Url(String),
    /// Read from a file (re-read on refresh, so rotating the file works).
    File(PathBuf),
}

#[derive(Default)]
struct Cache {
    keys: Option<Arc<JwkSet>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// A cached key set.
pub struct Jwks {
    source: JwksSource,
    http: reqwest::Client,
    min_refresh: Duration,
    ttl: Duration,
    cache: Mutex<Cache>,
}

impl Jwks {
    /// A key set that loads lazily on first use.
    pub fn new(
        source: JwksSource,
        http: reqwest::Client,
        min_refresh: Duration,
        ttl: Duration,
    ) -> Self {
        Self {
            source,
            http,
            min_refresh,
            ttl,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The current keys; `unknown_kid` asks for a refetch when the last attempt is
    /// old enough. Concurrent callers wait for one fetch rather than each fetching.
    pub async fn keys(&self, unknown_kid: bool) -> Result<Arc<JwkSet>, AuthError> {
        let mut cache = self.cache.lock().await;
        let now = Instant::now();
        let stale = cache
            .fetched_at
            .is_none_or(|t| now.duration_since(t) >= self.ttl);
        let may_retry = cache
            .last_attempt
            .is_none_or(|t| now.duration_since(t) >= self.min_refresh);
        if (stale || unknown_kid) && may_retry {
            cache.last_attempt = Some(now);
            match self.fetch().await {
                Ok(set) => {
                    cache.keys = Some(Arc::new(set));
                    cache.fetched_at = Some(now);
                }
                Err(e) => {
                    tracing::warn!(source = ?self.source, error = %e, "jwks_fetch_failed");
                }
            }
        }
        // A stale set is still better than none while the issuer is unreachable.
        cache.keys.clone().ok_or(AuthError::KeysUnavailable)
    }

    /// Fetches (or reads) the key set now, bypassing the cache: the error says
    /// why it failed (for `gatehouse doctor`; clients only ever see 28000).
    pub async fn fetch(&self) -> Result<JwkSet, String> {
        let body = match &self.source {
            JwksSource::File(path) => tokio::fs::read(path).await.map_err(|e| e.to_string())?,
            JwksSource::Url(url) => {
                let resp = self
                    .http
                    .get(url)
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if !resp.status().is_success() {
                    return Err(format!("HTTP {}", resp.status()));
                }
                resp.bytes().await.map_err(|e| e.to_string())?.to_vec()
            }
        };
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        tracing::info!(source = ?self.source, keys = set.keys.len(), "jwks_loaded");
        Ok(set)
    }
}
