//! The archiver's section of the gateway's configuration (`[archiver]`):
//! where segments go (a directory or a bucket), how they are sealed and
//! signed, and the Kafka sink.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::S3Config;

/// The `[archiver]` section cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// `serve --role archiver`: JetStream evidence into Kafka and signed segments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiverConfig {
    /// The Ed25519 key (PKCS#8 PEM, `gatehouse evidence keygen`) that signs
    /// segment manifests.
    pub signing_key: Option<PathBuf>,
    /// Local store: segments and manifests under this directory (the layout
    /// `gatehouse verify` reads). Exactly one of `dir` and `s3`.
    pub dir: Option<PathBuf>,
    /// S3 store (`[archiver.s3]`): the same layout in a bucket, with Object Lock.
    pub s3: Option<S3Config>,
    /// A session's open segment is sealed after this long…
    #[serde(with = "humantime_serde")]
    pub segment_max_age: Duration,
    /// …or at this many records. Messages are acknowledged once sealed and
    /// stored, so this and `segment_max_age` bound how long they are held.
    pub segment_max_events: usize,
    /// At most this many messages asked for per JetStream fetch.
    pub fetch_batch: usize,
    /// At most this many records held unacknowledged by one archiver (give or
    /// take one message's worth).
    pub max_inflight: usize,
    /// The durable consumer's `ack_wait` (set by the archiver that creates it):
    /// a message neither acknowledged nor renewed within it goes to another archiver.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// The durable consumer's `max_ack_pending`, over all archivers.
    pub max_ack_pending: i64,
    /// The SIEM sink.
    pub kafka: ArchiverKafkaConfig,
}

impl Default for ArchiverConfig {
    fn default() -> Self {
        Self {
            signing_key: None,
            dir: None,
            s3: None,
            segment_max_age: Duration::from_secs(10),
            segment_max_events: 10_000,
            fetch_batch: 1000,
            max_inflight: 20_000,
            ack_wait: Duration::from_secs(120),
            max_ack_pending: 100_000,
            kafka: ArchiverKafkaConfig::default(),
        }
    }
}

/// Where the archiver puts segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiverStore {
    /// A local directory (`archiver.dir`).
    Local(PathBuf),
    /// A bucket (`[archiver.s3]`).
    S3(S3Config),
}

impl ArchiverConfig {
    /// The signing key and the store. Checked where the archiver starts, not at
    /// parse time: other roles share the file.
    pub fn store(&self) -> Result<(&Path, ArchiverStore), ConfigError> {
        let key = self.signing_key.as_deref().ok_or_else(|| {
            ConfigError("archiver.signing_key is required (`gatehouse evidence keygen`)".into())
        })?;
        let store = match (&self.dir, &self.s3) {
            (Some(dir), None) => ArchiverStore::Local(dir.clone()),
            (None, Some(s3)) => ArchiverStore::S3(s3.clone()),
            (Some(_), Some(_)) => {
                return Err(ConfigError(
                    "set one of archiver.dir and [archiver.s3], not both".into(),
                ));
            }
            (None, None) => {
                return Err(ConfigError(
                    "set archiver.dir (a directory) or [archiver.s3] (a bucket) for the segments"
                        .into(),
                ));
            }
        };
        if self.kafka.enabled && (self.kafka.brokers.is_empty() || self.kafka.topic.is_empty()) {
            return Err(ConfigError(
                "archiver.kafka needs brokers and topic (or enabled = false)".into(),
            ));
        }
        if self.fetch_batch == 0 || self.max_inflight == 0 || self.segment_max_events == 0 {
            return Err(ConfigError(
                "fetch_batch, max_inflight and segment_max_events must be positive".into(),
            ));
        }
        Ok((key, store))
    }
}

/// The archiver's Kafka sink: one OCSF record per evidence event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiverKafkaConfig {
    /// `false`: segments only (messages are acknowledged once stored).
    pub enabled: bool,
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// The topic (created beforehand; the key is the session id).
    pub topic: String,
    /// A send not confirmed within this is retried, after a look at the topic.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// How far before a record's time the topic is read back when looking for
    /// an earlier copy (clock skew between gateways and brokers).
    #[serde(with = "humantime_serde")]
    pub scan_margin: Duration,
    /// Extra librdkafka properties (`security.protocol`, `ssl.ca.location`,
    /// `sasl.mechanism` …).
    pub properties: BTreeMap<String, String>,
}

impl Default for ArchiverKafkaConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            brokers: String::new(),
            topic: "gatehouse.evidence.ocsf".into(),
            delivery_timeout: Duration::from_secs(30),
            scan_margin: Duration::from_secs(60),
            properties: BTreeMap::new(),
        }
    }
}
