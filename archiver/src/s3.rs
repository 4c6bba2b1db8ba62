//! [`S3Store`]: evidence in an S3 bucket, or in an S3-compatible store, written
//! with Object Lock retention when the operator asks for it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::Credentials;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectLockEnabled, ObjectLockMode};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use serde::Deserialize;

use crate::error::StoreError;
use crate::store::{SegmentStore, check_key};

/// Where and how evidence is kept in S3: `[archiver.s3]` in the archiver's
/// configuration, and the `--s3-*` options of the auditor's commands.
///
/// Credentials are not configured here: they come from the standard AWS chain
/// (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, web identity,
/// ECS or EC2 instance roles).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// The key prefix the archive lives under (`gatehouse/prod`); none puts it
    /// at the root of the bucket.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The endpoint of an S3-compatible store (`http://127.0.0.1:9000`); none
    /// means AWS S3 itself.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The bucket's region.
    #[serde(default = "default_region")]
    pub region: String,
    /// Path-style addressing (`<endpoint>/<bucket>/<key>`), which most
    /// S3-compatible stores need; AWS S3 itself uses virtual-hosted style.
    #[serde(default)]
    pub force_path_style: bool,
    /// Write every object with `COMPLIANCE` retention for this many days: no
    /// one, root included, can delete or overwrite that object version before
    /// then. The bucket must have Object Lock enabled, or connecting fails.
    #[serde(default)]
    pub object_lock_days: Option<u32>,
    /// One request, retries included, gives up after this long.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// One attempt of a request gives up after this long, and is retried while
    /// `timeout` allows.
    #[serde(default = "default_attempt_timeout", with = "humantime_serde")]
    pub attempt_timeout: Duration,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_attempt_timeout() -> Duration {
    Duration::from_secs(20)
}

impl S3Config {
    /// A bucket on AWS S3 with every other setting at its default.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            prefix: None,
            endpoint: None,
            region: default_region(),
            force_path_style: false,
            object_lock_days: None,
            timeout: default_timeout(),
            attempt_timeout: default_attempt_timeout(),
        }
    }
}

/// Evidence objects in an S3 bucket under an optional prefix: key `a/b` is
/// object `<prefix>/a/b`.
///
/// Every put carries a SHA-256 checksum, which S3 checks before it stores the
/// object (and which S3 requires of puts with Object Lock retention). With
/// [`S3Config::object_lock_days`] every put also carries `COMPLIANCE` retention
/// until that many days from now. A put that returns `Ok` is durable: S3
/// acknowledges a PutObject only once the object is stored redundantly.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// `""`, or the prefix with one trailing `/`.
    root: String,
    object_lock_days: Option<u32>,
}

/// What the bucket says about Object Lock.
enum BucketLock {
    /// Not enabled on the bucket.
    Off,
    /// Enabled, with this default retention (`None`: no default rule).
    On(Option<String>),
    /// The configuration could not be read (e.g. no permission to).
    Unknown(String),
}

impl S3Store {
    /// Connects with credentials from the standard AWS chain, and checks the
    /// bucket: that it exists and can be reached, and, when
    /// `object_lock_days` is set, that it has Object Lock enabled.
    pub async fn connect(config: &S3Config) -> Result<Self, StoreError> {
        Self::open(config, None).await
    }

    /// [`S3Store::connect`] with the given credentials instead of the chain's.
    pub async fn connect_with_credentials(
        config: &S3Config,
        credentials: Credentials,
    ) -> Result<Self, StoreError> {
        Self::open(config, Some(credentials)).await
    }

    async fn open(config: &S3Config, credentials: Option<Credentials>) -> Result<Self, StoreError> {
        let unusable = |reason: String| StoreError::Unusable {
            store: format!("s3://{}/", config.bucket),
            reason,
        };
        if config.bucket.is_empty() {
            return Err(unusable("no bucket given".into()));
        }
        let root = root_prefix(config.prefix.as_deref()).map_err(unusable)?;
        if config.object_lock_days == Some(0) {
            return Err(unusable(
                "object_lock_days must be at least 1 (leave it out to write without retention)"
                    .into(),
            ));
        }
        let store = Self {
            client: client(config, credentials).await,
            bucket: config.bucket.clone(),
            root,
            object_lock_days: config.object_lock_days,
        };
        store.check_bucket(&config.region).await?;
        let lock = store.bucket_lock().await;
        let (bucket, prefix) = (&store.bucket, &store.root);
        match (config.object_lock_days, lock) {
            (Some(days), BucketLock::On(_)) => {
                tracing::info!(%bucket, %prefix, object_lock = "compliance", retention_days = days, "s3_store_ready");
            }
            (Some(_), BucketLock::Off) => {
                return Err(store.unusable(
                    "object_lock_days is set but the bucket does not have Object Lock enabled; \
                     refusing to write evidence without retention. Use a bucket created with \
                     Object Lock, or leave object_lock_days out"
                        .into(),
                ));
            }
            (Some(_), BucketLock::Unknown(why)) => {
                return Err(store.unusable(format!(
                    "object_lock_days is set but the bucket's Object Lock configuration cannot \
                     be read ({why}); allow s3:GetBucketObjectLockConfiguration"
                )));
            }
            (None, BucketLock::On(Some(default))) => {
                tracing::info!(%bucket, %prefix, object_lock = "bucket_default", default_retention = %default, "s3_store_ready");
            }
            (None, BucketLock::On(None)) => {
                tracing::info!(%bucket, %prefix, object_lock = "off", "s3_store_ready");
                tracing::warn!(%bucket, "s3_object_lock_enabled_but_no_retention_set");
            }
            (None, BucketLock::Off) => {
                tracing::info!(%bucket, %prefix, object_lock = "off", "s3_store_ready");
            }
            (None, BucketLock::Unknown(why)) => {
                tracing::info!(%bucket, %prefix, object_lock = "unknown", reason = %why, "s3_store_ready");
            }
        }
        Ok(store)
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix: `""`, or a prefix ending in `/`.
    pub fn prefix(&self) -> &str {
        &self.root
    }

    /// The S3 object key of an archive key (the prefix, then the key).
    pub fn object_key(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    /// The SDK client, for what the store does not do itself (tests, tools).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn unusable(&self, reason: String) -> StoreError {
        StoreError::Unusable {
            store: self.to_string(),
            reason,
        }
    }

    async fn check_bucket(&self, region: &str) -> Result<(), StoreError> {
        let err = match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let bucket = &self.bucket;
        let reason = match err.raw_response().map(|r| r.status().as_u16()) {
            Some(404) => format!("bucket {bucket} does not exist"),
            Some(403) => format!(
                "access to bucket {bucket} denied: check the credentials (the standard AWS \
                 chain: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance \
                 or task role) and the bucket policy"
            ),
            Some(301) => {
                let actual = err
                    .raw_response()
                    .and_then(|r| r.headers().get("x-amz-bucket-region"))
                    .unwrap_or("another region");
                format!("bucket {bucket} is in {actual}, not {region}: set the region")
            }
            _ => format!("cannot reach bucket {bucket}: {}", describe(&err)),
        };
        Err(self.unusable(reason))
    }

    async fn bucket_lock(&self) -> BucketLock {
        let out = match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.code() == Some("ObjectLockConfigurationNotFoundError") => {
                return BucketLock::Off;
            }
            Err(e) => return BucketLock::Unknown(describe(&e)),
        };
        let Some(config) = out.object_lock_configuration() else {
            return BucketLock::Off;
        };
        if config.object_lock_enabled() != Some(&ObjectLockEnabled::Enabled) {
            return BucketLock::Off;
        }
        let default = config.rule().and_then(|r| r.default_retention()).map(|d| {
            let mode = d.mode().map(|m| m.as_str()).unwrap_or("?");
            match (d.days(), d.years()) {
                (Some(days), _) => format!("{mode} {days} days"),
                (None, Some(years)) => format!("{mode} {years} years"),
                (None, None) => mode.to_owned(),
            }
        });
        BucketLock::On(default)
    }
}

impl fmt::Display for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.root)
    }
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("prefix", &self.root)
            .field("object_lock_days", &self.object_lock_days)
            .finish_non_exhaustive()
    }
}

/// The SDK client: rustls on ring (the workspace's TLS), the configured
/// timeouts, the SDK's standard retries.
async fn client(config: &S3Config, credentials: Option<Credentials>) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let timeouts = TimeoutConfig::builder()
        .operation_timeout(config.timeout)
        .operation_attempt_timeout(config.attempt_timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(config.region.clone()))
        .http_client(http)
        .timeout_config(timeouts);
    if let Some(credentials) = credentials {
        loader = loader.credentials_provider(credentials);
    }
    let shared = loader.load().await;
    let mut s3 =
        aws_sdk_s3::config::Builder::from(&shared).force_path_style(config.force_path_style);
    if let Some(endpoint) = &config.endpoint {
        s3 = s3.endpoint_url(endpoint);
    }
    Client::from_conf(s3.build())
}

/// `""` for no prefix, else the prefix without leading or trailing `/`, plus one `/`.
fn root_prefix(prefix: Option<&str>) -> Result<String, String> {
    let trimmed = prefix.unwrap_or("").trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    check_key(trimmed).map_err(|_| {
        format!(
            "prefix {:?} is not a plain path (no empty, `.` or `..` parts)",
            prefix.unwrap_or("")
        )
    })?;
    Ok(format!("{trimmed}/"))
}

/// `now + days`, rounded up to a whole second: retention never ends earlier
/// than asked, and the header carries no fractional seconds (which some
/// S3-compatible stores do not parse).
fn retain_until(now: SystemTime, days: u32) -> DateTime {
    let until = now.duration_since(UNIX_EPOCH).unwrap_or_default()
        + Duration::from_secs(u64::from(days) * 86_400);
    let secs = until.as_secs() + u64::from(until.subsec_nanos() > 0);
    DateTime::from_secs(secs as i64)
}

/// What a failed request says, for a person: the service's error code, message
/// and HTTP status, or the chain of causes (unreachable endpoint, timeout,
/// credentials that could not be loaded), without the SDK's debug dumps.
fn describe<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if let SdkError::ServiceError(ctx) = err {
        let status = ctx.raw().status().as_u16();
        let e = ctx.err();
        return match (e.code(), e.message()) {
            (Some(code), Some(message)) => format!("{code}: {message} (HTTP {status})"),
            (Some(code), None) => format!("{code} (HTTP {status})"),
            _ => format!("HTTP {status}"),
        };
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

fn remote<E>(op: &'static str, key: &str, err: &SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    StoreError::Remote {
        op,
        key: key.to_owned(),
        message: describe(err),
    }
}

impl SegmentStore for S3Store {
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        check_key(key)?;
        let object = self.object_key(key);
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&object)
            .body(ByteStream::from(bytes.to_vec()))
            // S3 refuses an Object Lock put without Content-MD5 or a checksum;
            // SHA-256 also has S3 check the bytes it stores.
            .checksum_algorithm(ChecksumAlgorithm::Sha256);
        if let Some(days) = self.object_lock_days {
            request = request
                .object_lock_mode(ObjectLockMode::Compliance)
                .object_lock_retain_until_date(retain_until(SystemTime::now(), days));
        }
        request
            .send()
            .await
            .map_err(|e| remote("put", &object, &e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        check_key(key)?;
        let object = self.object_key(key);
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&object)
            .send()
            .await
        {
            Ok(out) => out,
            // Also the answer when the current version is a delete marker.
            Err(e) if matches!(e.as_service_error(), Some(GetObjectError::NoSuchKey(_))) => {
                return Ok(None);
            }
            Err(e) => return Err(remote("get", &object, &e)),
        };
        let body = out.body.collect().await.map_err(|e| StoreError::Remote {
            op: "get",
            key: object.clone(),
            message: format!("reading the object: {e}"),
        })?;
        Ok(Some(body.into_bytes().to_vec()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let object_prefix = self.object_key(prefix);
        // The paginator follows continuation tokens: a listing is every page,
        // not the first 1000 keys.
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&object_prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| remote("list", &object_prefix, &e))?;
            for object in page.contents() {
                // Objects that are no archive key (`a//b`, `.hidden`, written by
                // something else) are not listed, as LocalDir lists no hidden file.
                if let Some(key) = object.key().and_then(|k| k.strip_prefix(&self.root))
                    && check_key(key).is_ok()
                {
                    keys.push(key.to_owned());
                }
            }
        }
        keys.sort();
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_durations() {
        let c: S3Config = from_json(r#"{"bucket": "evidence"}"#);
        assert_eq!(c, S3Config::new("evidence"));
        assert_eq!(c.region, "us-east-1");
        assert_eq!(c.timeout, Duration::from_secs(60));
        let c: S3Config = from_json(
            r#"{"bucket": "b", "prefix": "gh/prod", "endpoint": "http://127.0.0.1:9000",
                "region": "eu-west-1", "force_path_style": true, "object_lock_days": 365,
                "timeout": "5s", "attempt_timeout": "1500ms"}"#,
        );
        assert_eq!(c.object_lock_days, Some(365));
        assert_eq!(c.attempt_timeout, Duration::from_millis(1500));
        assert_eq!(c.prefix.as_deref(), Some("gh/prod"));
        let unknown = serde_json::from_str::<S3Config>(r#"{"bucket": "b", "lock_days": 3}"#);
        assert!(unknown.unwrap_err().to_string().contains("unknown field"));
    }

    fn from_json(json: &str) -> S3Config {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_commented_example_parses() {
        // Keeps the `[archiver.s3]` example in deploy/gatehouse.example.toml in
        // step with S3Config: its lines, with one `# ` taken off each.
        let text = include_str!("../../deploy/gatehouse.example.toml");
        let start = text
            .find("# [archiver.s3]\n")
            .expect("the example is there");
        let body: Vec<&str> = text[start..]
            .lines()
            .skip(1)
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
            .collect();
        let c: S3Config = toml::from_str(&body.join("\n")).unwrap();
        assert_eq!(c.bucket, "acme-evidence");
        assert_eq!(c.prefix.as_deref(), Some("gatehouse/prod"));
        assert_eq!(c.object_lock_days, Some(400));
        assert_eq!(c.timeout, Duration::from_secs(60));
    }

    #[test]
    fn prefixes_are_normalised_and_checked() {
        assert_eq!(root_prefix(None).unwrap(), "");
        assert_eq!(root_prefix(Some("")).unwrap(), "");
        assert_eq!(root_prefix(Some("/")).unwrap(), "");
        assert_eq!(root_prefix(Some("a/b")).unwrap(), "a/b/");
        assert_eq!(root_prefix(Some("/a/b/")).unwrap(), "a/b/");
        for bad in ["a//b", "a/../b", "./a", "a/.b"] {
            assert!(root_prefix(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn retention_is_whole_seconds_never_early() {
        let now = UNIX_EPOCH + Duration::new(1_000, 1);
        assert_eq!(retain_until(now, 1).secs(), 1_000 + 86_400 + 1);
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(retain_until(now, 2).secs(), 1_000 + 2 * 86_400);
        assert_eq!(retain_until(now, 2).subsec_nanos(), 0);
    }
}
