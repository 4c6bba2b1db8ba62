//! The gateway's configuration: a TOML file with `GATEHOUSE__SECTION__KEY` env overrides.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;
pub use gatehouse_decider::claims::{ClaimConditions, ClaimMatch, ClaimOp};

/// Everything `gatehouse serve` reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The client-facing listener.
    #[serde(default)]
    pub ingress: IngressConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The policy and how statements are decided.
    #[serde(default)]
    pub decider: DeciderConfig,
    /// Token issuers whose tokens are accepted as passwords.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Gatehouse roles, by the name a client puts in its startup `user`.
    #[serde(default)]
    pub roles: BTreeMap<String, RoleConfig>,
    /// The NATS bus (distributed mode: `serve --role ingress|decider`).
    #[serde(default)]
    pub nats: NatsConfig,
    /// Evidence: where every statement is recorded before it runs.
    #[serde(default)]
    pub evidence: EvidenceConfig,
    /// The distributed archiver (`serve --role archiver`).
    #[serde(default)]
    pub archiver: ArchiverConfig,
    /// Inline masking.
    #[serde(default)]
    pub masking: MaskingConfig,
    /// Just-in-time approvals (`serve --role approver`, and the ingress's hold).
    #[serde(default)]
    pub approvals: ApprovalsConfig,
    /// The operator's listener (health, readiness, metrics), in every role.
    #[serde(default)]
    pub admin: AdminConfig,
}

/// `[admin]`: where a role serves `/healthz`, `/readyz` and `/metrics` to
/// probes and Prometheus. The deploy files point their probes and scrape
/// configuration here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener (plain HTTP; no secrets are served on it).
    /// Unset: none.
    pub listen: Option<SocketAddr>,
}

/// Just-in-time approvals of single statements.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    /// How long a held statement waits for a decision.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Where approvers look, shown to the held client in its NOTICE.
    pub notice: String,
    /// The claim of an approver's token that lists its groups (an array of
    /// strings, or a space-separated string).
    pub groups_claim: String,
    /// Claims of the requester's token that name a person (e.g. GitHub's
    /// `actor`): an approver whose `sub`, `preferred_username` or `email` equals
    /// one of them, or the requester's `sub`, is the requester.
    pub requester_claims: Vec<String>,
    /// How often the approver service looks for requests past their deadline
    /// whose gateway did not close them (a gateway that died).
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Issuers of approvers' tokens. Kept apart from `[[issuers]]`, so an
    /// approver's token never opens a database session and a CI token never
    /// approves.
    pub issuers: Vec<IssuerConfig>,
    /// All-in-one mode: where the gateway serves approvers (`gatehouse approvals
    /// --admin http://ADDR`), each call authenticated with the approver's token.
    /// Unset: all-in-one mode refuses statements that need approval.
    pub admin_listen: Option<SocketAddr>,
    /// Incoming webhooks told of each new request (both modes).
    pub webhooks: Vec<WebhookConfig>,
}

/// One incoming webhook told of each new approval request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The URL the request is POSTed to (JSON).
    pub url: String,
    /// The body's shape.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Attempts before the notification is given up (logged).
    #[serde(default = "default_webhook_attempts")]
    pub attempts: u32,
    /// Time allowed for one attempt.
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_webhook_attempts() -> u32 {
    3
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}

/// The body of a webhook notification.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// An incoming-webhook message (`text` and `blocks`) that Slack and
    /// Microsoft Teams accept.
    Slack,
    /// The approval request as on the bus (`approval-request.schema.json`).
    #[default]
    Generic,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(600),
            notice: "run `gatehouse approvals list`, or see your chat-ops channel".into(),
            groups_claim: "groups".into(),
            requester_claims: vec!["actor".into(), "user_login".into(), "user_email".into()],
            sweep_interval: Duration::from_secs(5),
            issuers: Vec::new(),
            admin_listen: None,
            webhooks: Vec::new(),
        }
    }
}

/// Inline masking: the `hash` method's key and the catalog cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaskingConfig {
    /// Environment variable holding the key of the `hash` mask method.
    pub hash_key_env: Option<String>,
    /// File holding that key (trailing newline ignored). Neither given: a
    /// random key per process (hashes then change at every restart).
    pub hash_key_file: Option<PathBuf>,
    /// How long a resolved table OID stays cached (DDL through the gateway
    /// empties the cache at once).
    #[serde(with = "humantime_serde")]
    pub catalog_ttl: Duration,
}

impl Default for MaskingConfig {
    fn default() -> Self {
        Self {
            hash_key_env: None,
            hash_key_file: None,
            catalog_ttl: Duration::from_secs(60),
        }
    }
}

impl MaskingConfig {
    /// The hash key, from wherever the config says it lives; `None`: not set.
    pub fn hash_key(&self) -> Result<Option<Secret>, ConfigError> {
        if self.hash_key_env.is_some() && self.hash_key_file.is_some() {
            return Err(ConfigError::Invalid(
                "masking: give only one of hash_key_env, hash_key_file".into(),
            ));
        }
        if let Some(var) = &self.hash_key_env {
            return std::env::var(var).map(|k| Some(Secret(k))).map_err(|_| {
                ConfigError::Invalid(format!(
                    "masking: environment variable {var} (hash_key_env) is not set"
                ))
            });
        }
        if let Some(path) = &self.hash_key_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::Invalid(format!(
                    "masking: cannot read hash_key_file {}: {e}",
                    path.display()
                ))
            })?;
            return Ok(Some(Secret(text.trim_end_matches(['\r', '\n']).to_owned())));
        }
        Ok(None)
    }
}

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
    pub s3: Option<gatehouse_archiver::S3Config>,
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
    S3(gatehouse_archiver::S3Config),
}

impl ArchiverConfig {
    /// The signing key and the store. Checked where the archiver starts, not at
    /// parse time: other roles share the file.
    pub fn store(&self) -> Result<(&Path, ArchiverStore), ConfigError> {
        let key = self.signing_key.as_deref().ok_or_else(|| {
            ConfigError::Invalid(
                "archiver: archiver.signing_key is required (`gatehouse evidence keygen`)".into(),
            )
        })?;
        let store = match (&self.dir, &self.s3) {
            (Some(dir), None) => ArchiverStore::Local(dir.clone()),
            (None, Some(s3)) => ArchiverStore::S3(s3.clone()),
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "archiver: set one of archiver.dir and [archiver.s3], not both".into(),
                ));
            }
            (None, None) => {
                return Err(ConfigError::Invalid(
                    "archiver: set archiver.dir (a directory) or [archiver.s3] (a bucket) for the segments".into(),
                ));
            }
        };
        if self.kafka.enabled && (self.kafka.brokers.is_empty() || self.kafka.topic.is_empty()) {
            return Err(ConfigError::Invalid(
                "archiver: archiver.kafka needs brokers and topic (or enabled = false)".into(),
            ));
        }
        if self.fetch_batch == 0 || self.max_inflight == 0 || self.segment_max_events == 0 {
            return Err(ConfigError::Invalid(
                "archiver: fetch_batch, max_inflight and segment_max_events must be positive"
                    .into(),
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

/// Where evidence goes.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceMode {
    /// All-in-one: an fsync'd spool and signed segments under `evidence.dir`.
    #[default]
    Local,
    /// Distributed: published to the JetStream stream the archivers consume.
    Jetstream,
    /// No evidence at all: statements run unrecorded. For development only;
    /// logged as a warning at start.
    Off,
}

/// Evidence settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvidenceConfig {
    /// `local` (default), `jetstream` or `off`.
    pub mode: EvidenceMode,
    /// Local mode: the directory holding the spool and the archived segments.
    pub dir: Option<PathBuf>,
    /// Local mode: the Ed25519 key (PKCS#8 PEM, `gatehouse evidence keygen`)
    /// that signs segment manifests.
    pub signing_key: Option<PathBuf>,
    /// A statement whose record is not durable by then is refused.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Records allowed to wait for storage, in bytes; past this, statements are
    /// refused at once.
    pub max_backlog_bytes: usize,
    /// Local mode: a session's open segment is sealed after this long.
    #[serde(with = "humantime_serde")]
    pub segment_max_age: Duration,
    /// Local mode: the OCSF records the archiver would send to Kafka, written
    /// as NDJSON for a log shipper (Vector, Fluent Bit) instead.
    pub siem: Option<SiemOutputConfig>,
}

/// `[evidence] siem = { ndjson = "/path" }`: where the OCSF records go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiemOutputConfig {
    /// A file appended to (one record a line), or `-` for standard output.
    pub ndjson: PathBuf,
}

impl EvidenceConfig {
    /// Local mode's directory and signing key. Checked where evidence is
    /// recorded (the ingress), not at parse time: a decider's config has no
    /// use for them.
    pub fn local_paths(&self) -> Result<(&Path, &Path), ConfigError> {
        match (&self.dir, &self.signing_key) {
            (Some(dir), Some(key)) => Ok((dir, key)),
            _ => Err(ConfigError::Invalid(
                "evidence: local mode needs evidence.dir and evidence.signing_key (`gatehouse evidence keygen`); set evidence.mode = \"jetstream\" for distributed mode, or \"off\" to run statements unrecorded (development only)".into(),
            )),
        }
    }
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        Self {
            mode: EvidenceMode::Local,
            dir: None,
            signing_key: None,
            timeout: Duration::from_secs(2),
            max_backlog_bytes: 64 << 20,
            segment_max_age: Duration::from_secs(60),
            siem: None,
        }
    }
}

/// Where the NATS bus is, for distributed mode. All-in-one mode does not use it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated, e.g. `nats://nats-1:4222,nats://nats-2:4222`.
    pub url: String,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
        }
    }
}

impl NatsConfig {
    /// The URL(s) as logs and errors show them: a `user:password@` (which a
    /// deployment may pass in `GATEHOUSE__NATS__URL`) shown as `***@`.
    pub fn shown_url(&self) -> String {
        without_userinfo(&self.url)
    }
}

/// `url` (or a comma-separated list of them) with any `user:password@` shown
/// as `***@`.
pub fn without_userinfo(url: &str) -> String {
    url.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}***@{}", &u[..scheme + 3], &u[at + 1..])
            }
            _ => u.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The client-facing side of the ingress.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngressConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Server certificate and key; without them `SSLRequest` is answered `N`.
    pub tls: Option<TlsFiles>,
    /// Accept the token over a connection without TLS. For local development only:
    /// the token is a bearer credential.
    pub allow_cleartext_without_tls: bool,
    /// A client that has not finished startup and authentication by then is dropped.
    #[serde(with = "humantime_serde")]
    pub auth_timeout: Duration,
    /// Largest client message accepted after startup, in bytes; larger ones are a
    /// protocol violation (08P01) and close the connection.
    pub max_message_size: usize,
    /// Time allowed for connecting and authenticating to the upstream.
    #[serde(with = "humantime_serde")]
    pub upstream_connect_timeout: Duration,
}

impl Default for IngressConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 6432)),
            tls: None,
            allow_cleartext_without_tls: false,
            auth_timeout: Duration::from_secs(15),
            max_message_size: 64 << 20,
            upstream_connect_timeout: Duration::from_secs(10),
        }
    }
}

/// How statements are decided.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeciderConfig {
    /// The policy file (all-in-one mode). Without one, `gatehouse serve` refuses
    /// to start rather than run with every statement denied.
    pub policy: Option<PathBuf>,
    /// A statement without a verdict by then is refused (fail closed).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How often the policy file is checked for changes (SIGHUP reloads at once).
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
}

impl Default for DeciderConfig {
    fn default() -> Self {
        Self {
            policy: None,
            timeout: Duration::from_secs(2),
            watch_interval: Duration::from_secs(1),
        }
    }
}

/// PEM files for a TLS server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` EnvFilter directive, e.g. `info,gatehouse_ingress=debug`.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A token issuer (GitHub Actions, GitLab, a Kubernetes cluster, any OIDC provider).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Name used in role rules and logs.
    pub name: String,
    /// The exact `iss` claim of its tokens.
    pub issuer: String,
    /// Accepted `aud` values; a token must carry at least one of them.
    pub audiences: Vec<String>,
    /// Where the signing keys come from: an HTTP(S) URL ...
    pub jwks_url: Option<String>,
    /// ... or a file.
    pub jwks_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) for an HTTPS `jwks_url`, beside the system roots.
    pub jwks_ca_file: Option<PathBuf>,
    /// Signature algorithms accepted from this issuer; only asymmetric ones exist here.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde", default = "default_leeway")]
    pub leeway: Duration,
    /// An unknown `kid` triggers a refetch at most this often.
    #[serde(with = "humantime_serde", default = "default_refresh_min_interval")]
    pub jwks_refresh_min_interval: Duration,
    /// Keys are refetched after this long even when every `kid` is known.
    #[serde(with = "humantime_serde", default = "default_cache_ttl")]
    pub jwks_cache_ttl: Duration,
}

fn default_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_refresh_min_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_cache_ttl() -> Duration {
    Duration::from_secs(3600)
}

/// The asymmetric signature algorithms Gatehouse can accept. `none` and the HMAC
/// family are deliberately absent: a shared secret cannot prove who signed.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA P-256 with SHA-256.
    ES256,
    /// ECDSA P-384 with SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

impl Algorithm {
    /// The `jsonwebtoken` counterpart.
    pub fn to_jwt(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as A;
        match self {
            Self::RS256 => A::RS256,
            Self::RS384 => A::RS384,
            Self::RS512 => A::RS512,
            Self::PS256 => A::PS256,
            Self::PS384 => A::PS384,
            Self::PS512 => A::PS512,
            Self::ES256 => A::ES256,
            Self::ES384 => A::ES384,
            Self::EdDSA => A::EdDSA,
        }
    }
}

/// A Gatehouse role: where it connects, as whom, and who may assume it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// The upstream server.
    pub upstream: UpstreamConfig,
    /// The upstream PostgreSQL user.
    pub user: String,
    /// The upstream password, inline (prefer `password_env` or `password_file`).
    pub password: Option<Secret>,
    /// Name of an environment variable holding the upstream password.
    pub password_env: Option<String>,
    /// A file holding the upstream password (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// Who may assume the role: any entry may match; inside an entry, all must.
    #[serde(default)]
    pub allow: Vec<AllowRule>,
    /// Result data kept in evidence for replay.
    #[serde(default)]
    pub results: ResultsConfig,
}

/// `[roles.NAME.results]`: what of each statement's results evidence keeps.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsConfig {
    /// `none`, `counts` (column names and row counts) or `rows` (also the rows
    /// as the client received them, masked values masked).
    #[serde(default)]
    pub record: ResultRecord,
    /// Rows kept per statement (`rows`); the rest are counted, not kept.
    #[serde(default = "default_result_rows")]
    pub max_rows: usize,
    /// Value bytes kept per statement (`rows`).
    #[serde(default = "default_result_bytes")]
    pub max_bytes: usize,
}

impl Default for ResultsConfig {
    fn default() -> Self {
        ResultsConfig {
            record: ResultRecord::None,
            max_rows: default_result_rows(),
            max_bytes: default_result_bytes(),
        }
    }
}

/// What [`ResultsConfig::record`] keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultRecord {
    /// No result data (the statement's completion still counts its rows).
    #[default]
    None,
    /// Column names and the row count of each result set.
    Counts,
    /// Also the rows, bounded by `max_rows` and `max_bytes`.
    Rows,
}

fn default_result_rows() -> usize {
    100
}

fn default_result_bytes() -> usize {
    64 * 1024
}

/// One way to be allowed into a role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    /// Restrict to tokens from the `[[issuers]]` entry of this name.
    pub issuer: Option<String>,
    /// Conditions on claims, by claim name or JSON pointer (`/kubernetes.io/namespace`).
    #[serde(default)]
    pub claims: ClaimConditions,
}

/// Where a role connects.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Host name or address.
    pub host: String,
    /// Port.
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// Database name.
    pub dbname: String,
    /// TLS to the upstream.
    #[serde(default)]
    pub tls: UpstreamTls,
    /// CA certificates (PEM) to verify the upstream with, instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Name to verify the certificate against, when it differs from `host`.
    pub server_name: Option<String>,
}

fn default_pg_port() -> u16 {
    5432
}

/// TLS to the upstream, with libpq's `sslmode` meanings.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTls {
    /// Plain TCP.
    Disable,
    /// Encrypt without verifying the server: protects against eavesdropping only.
    Require,
    /// Encrypt and verify the chain, not the name.
    VerifyCa,
    /// Encrypt and verify chain and name. The default.
    #[default]
    VerifyFull,
}

/// A string that never appears in `Debug` output or logs.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Self(value)
    }
    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl RoleConfig {
    /// Reads the upstream password from wherever the role says it lives.
    pub fn resolve_password(&self, role: &str) -> Result<Secret, ConfigError> {
        let sources = [
            self.password.is_some(),
            self.password_env.is_some(),
            self.password_file.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err(ConfigError::Invalid(format!(
                "role {role}: give only one of password, password_env, password_file"
            )));
        }
        if let Some(p) = &self.password {
            return Ok(p.clone());
        }
        if let Some(var) = &self.password_env {
            return std::env::var(var).map(Secret).map_err(|_| {
                ConfigError::Invalid(format!(
                    "role {role}: environment variable {var} (password_env) is not set"
                ))
            });
        }
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::Invalid(format!(
                    "role {role}: cannot read password_file {}: {e}",
                    path.display()
                ))
            })?;
            return Ok(Secret(text.trim_end_matches(['\r', '\n']).to_owned()));
        }
        // Trust or peer authentication upstream needs no password.
        Ok(Secret(String::new()))
    }
}

impl Config {
    /// Loads a file, applies `GATEHOUSE__...` environment overrides, and checks it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let raw = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("GATEHOUSE")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()?;
        let cfg: Config = raw.try_deserialize()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a TOML text without environment overrides (tests, `policy check`).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()?;
        let cfg: Config = raw.try_deserialize()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Cross-field checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.evidence.siem.is_some() && self.evidence.mode != EvidenceMode::Local {
            return invalid(
                "evidence: siem (NDJSON output) needs evidence.mode = \"local\"; in distributed mode the archiver sends the records to Kafka".into(),
            );
        }
        for iss in &self.issuers {
            if iss.jwks_url.is_some() == iss.jwks_file.is_some() {
                return invalid(format!(
                    "issuer {}: give exactly one of jwks_url and jwks_file",
                    iss.name
                ));
            }
            if iss.audiences.is_empty() {
                return invalid(format!("issuer {}: audiences must not be empty", iss.name));
            }
            if iss.algorithms.is_empty() {
                return invalid(format!("issuer {}: algorithms must not be empty", iss.name));
            }
            if self
                .issuers
                .iter()
                .filter(|o| o.issuer == iss.issuer)
                .count()
                > 1
            {
                return invalid(format!("issuer {} is configured twice", iss.issuer));
            }
        }
        for (name, role) in &self.roles {
            for rule in &role.allow {
                if let Some(iss) = &rule.issuer
                    && !self.issuers.iter().any(|i| &i.name == iss)
                {
                    return invalid(format!("role {name}: allow names unknown issuer {iss}"));
                }
            }
            if role.allow.is_empty() {
                tracing::warn!(role = %name, "role has no allow rules; nobody can assume it");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_urls_are_shown_without_their_credentials() {
        let cfg = NatsConfig {
            url: "nats://svc:s3cret@nats-1:4222,nats://nats-2:4222".into(),
        };
        assert_eq!(cfg.shown_url(), "nats://***@nats-1:4222,nats://nats-2:4222");
        assert_eq!(
            without_userinfo("tls://tok3n@nats:4222"),
            "tls://***@nats:4222"
        );
        assert_eq!(NatsConfig::default().shown_url(), "nats://127.0.0.1:4222");
    }

    const SAMPLE: &str = r#"
        [ingress]
        listen = "127.0.0.1:7432"
        auth_timeout = "2s"

        [[issuers]]
        name = "gh"
        issuer = "https://token.actions.githubusercontent.com"
        audiences = ["gatehouse"]
        jwks_url = "https://token.actions.githubusercontent.com/.well-known/jwks"
        algorithms = ["RS256"]

        [roles.etl]
        user = "etl"
        password = "hunter2"
        upstream = { host = "db", dbname = "app" }
        [[roles.etl.allow]]
        issuer = "gh"
        claims = { repository = "acme/etl", ref = { one_of = ["refs/heads/main"] }, "/kubernetes.io/namespace" = { glob = "ci-*" } }

        [evidence]
        dir = "/var/lib/gatehouse/evidence"
        signing_key = "/etc/gatehouse/evidence-signing.pem"
    "#;

    #[test]
    fn evidence_is_local_by_default_and_needs_a_dir_and_key() {
        let cfg = Config::from_toml(SAMPLE).unwrap();
        assert_eq!(cfg.evidence.mode, EvidenceMode::Local);
        assert_eq!(cfg.evidence.timeout, Duration::from_secs(2));
        assert!(cfg.evidence.local_paths().is_ok());
        let (head, _) = SAMPLE.split_once("[evidence]").unwrap();
        let bare = Config::from_toml(head).unwrap();
        let err = bare.evidence.local_paths().unwrap_err().to_string();
        assert!(err.contains("evidence.dir"), "{err}");
        let js = format!("{head}[evidence]\nmode = \"jetstream\"\ntimeout = \"500ms\"\n");
        let cfg = Config::from_toml(&js).unwrap();
        assert_eq!(
            (cfg.evidence.mode, cfg.evidence.timeout),
            (EvidenceMode::Jetstream, Duration::from_millis(500))
        );
        let off = format!("{head}[evidence]\nmode = \"off\"\n");
        assert_eq!(
            Config::from_toml(&off).unwrap().evidence.mode,
            EvidenceMode::Off
        );
        let typo = format!("{head}[evidence]\nmode = \"of\"\n");
        assert!(Config::from_toml(&typo).is_err());
    }

    #[test]
    fn parses_a_full_config() {
        let cfg = Config::from_toml(SAMPLE).unwrap();
        assert_eq!(cfg.ingress.listen.port(), 7432);
        assert_eq!(cfg.ingress.auth_timeout, Duration::from_secs(2));
        assert!(!cfg.ingress.allow_cleartext_without_tls);
        let role = &cfg.roles["etl"];
        assert_eq!(role.upstream.port, 5432);
        assert_eq!(role.upstream.tls, UpstreamTls::VerifyFull);
        assert!(matches!(
            role.allow[0].claims["repository"],
            ClaimMatch::Equals(_)
        ));
        assert!(matches!(
            role.allow[0].claims["ref"],
            ClaimMatch::Op(ClaimOp::OneOf(_))
        ));
        assert_eq!(role.resolve_password("etl").unwrap().expose(), "hunter2");
    }

    #[test]
    fn approvals_admin_endpoint_and_webhooks_parse() {
        let text = format!(
            "{SAMPLE}\n[approvals]\nadmin_listen = \"127.0.0.1:7433\"\n\
             [[approvals.webhooks]]\nurl = \"https://hooks.example/x\"\nformat = \"slack\"\n\
             [[approvals.webhooks]]\nurl = \"https://bots.example/y\"\nattempts = 5\ntimeout = \"2s\"\n"
        );
        let cfg = Config::from_toml(&text).unwrap();
        let a = &cfg.approvals;
        assert_eq!(a.admin_listen, Some("127.0.0.1:7433".parse().unwrap()));
        assert_eq!(a.webhooks[0].format, WebhookFormat::Slack);
        assert_eq!(a.webhooks[0].attempts, 3);
        assert_eq!(a.webhooks[1].format, WebhookFormat::Generic);
        assert_eq!(
            (a.webhooks[1].attempts, a.webhooks[1].timeout),
            (5, Duration::from_secs(2))
        );
        let bad =
            format!("{SAMPLE}\n[[approvals.webhooks]]\nurl = \"https://x\"\nformat = \"teams\"\n");
        assert!(Config::from_toml(&bad).is_err());
    }

    #[test]
    fn the_shipped_example_config_parses() {
        // Keeps deploy/gatehouse.example.toml in step with these structs.
        let text = include_str!("../../deploy/gatehouse.example.toml");
        let cfg = Config::from_toml(text).unwrap();
        assert!(cfg.roles.len() >= 3);
        let results = cfg.roles["reporting"].results;
        assert_eq!(
            (results.record, results.max_rows),
            (ResultRecord::Rows, 100)
        );
        assert_eq!(cfg.roles["etl"].results.record, ResultRecord::None);
        assert!(
            cfg.issuers
                .iter()
                .any(|i| i.issuer == "https://token.actions.githubusercontent.com")
        );
    }

    #[test]
    fn archiver_section_is_checked_where_the_archiver_starts() {
        // Other roles share the file: no [archiver] is fine until one starts.
        let cfg = Config::from_toml(SAMPLE).unwrap();
        assert!(cfg.archiver.store().is_err());
        let shipped =
            Config::from_toml(include_str!("../../deploy/gatehouse.example.toml")).unwrap();
        let (key, store) = shipped.archiver.store().unwrap();
        assert_eq!(
            key,
            Path::new("/run/credentials/gatehouse-archiver.service/evidence-signing.pem")
        );
        assert_eq!(
            store,
            ArchiverStore::Local("/var/lib/gatehouse-archiver/archive".into())
        );
        assert_eq!(shipped.archiver.ack_wait, Duration::from_secs(120));
        let no_brokers = format!("{SAMPLE}\n[archiver]\nsigning_key = \"/k.pem\"\ndir = \"/a\"\n");
        let cfg = Config::from_toml(&no_brokers).unwrap();
        assert!(
            cfg.archiver
                .store()
                .unwrap_err()
                .to_string()
                .contains("brokers"),
            "Kafka is on by default and needs brokers"
        );
        let off = format!("{no_brokers}[archiver.kafka]\nenabled = false\n");
        assert!(Config::from_toml(&off).unwrap().archiver.store().is_ok());
        let both = format!("{off}[archiver.s3]\nbucket = \"ev\"\n");
        let err = Config::from_toml(&both)
            .unwrap()
            .archiver
            .store()
            .unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
        let s3 = format!(
            "{SAMPLE}\n[archiver]\nsigning_key = \"/k.pem\"\n[archiver.kafka]\nenabled = false\n\
             [archiver.s3]\nbucket = \"ev\"\nobject_lock_days = 30\n"
        );
        match Config::from_toml(&s3).unwrap().archiver.store().unwrap().1 {
            ArchiverStore::S3(c) => {
                assert_eq!((c.bucket.as_str(), c.object_lock_days), ("ev", Some(30)))
            }
            other => panic!("{other:?}"),
        }
        let typo = format!("{off}topik = \"x\"\n");
        assert!(
            Config::from_toml(&typo).is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn nats_section_defaults_and_parses() {
        let cfg = Config::from_toml(SAMPLE).unwrap();
        assert_eq!(cfg.nats.url, "nats://127.0.0.1:4222");
        let with = format!("{SAMPLE}\n[nats]\nurl = \"nats://bus:4333\"\n");
        assert_eq!(
            Config::from_toml(&with).unwrap().nats.url,
            "nats://bus:4333"
        );
        let typo = format!("{SAMPLE}\n[nats]\nuri = \"nats://bus:4333\"\n");
        assert!(Config::from_toml(&typo).is_err());
    }

    #[test]
    fn secrets_never_print() {
        let cfg = Config::from_toml(SAMPLE).unwrap();
        let debug = format!("{cfg:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn rejects_unknown_algorithms_and_fields() {
        let hs = SAMPLE.replace(r#"algorithms = ["RS256"]"#, r#"algorithms = ["HS256"]"#);
        assert!(Config::from_toml(&hs).is_err());
        let none = SAMPLE.replace(r#"algorithms = ["RS256"]"#, r#"algorithms = ["none"]"#);
        assert!(Config::from_toml(&none).is_err());
        let typo = SAMPLE.replace("auth_timeout", "auth_timout");
        assert!(Config::from_toml(&typo).is_err());
    }

    #[test]
    fn rejects_ambiguous_key_sources_and_unknown_issuers() {
        let both = SAMPLE.replace(
            "algorithms = [\"RS256\"]",
            "algorithms = [\"RS256\"]\njwks_file = \"x.json\"",
        );
        assert!(Config::from_toml(&both).is_err());
        let unknown = SAMPLE.replace("issuer = \"gh\"", "issuer = \"gitlab\"");
        assert!(Config::from_toml(&unknown).is_err());
    }

    #[test]
    fn password_sources() {
        let mut role = Config::from_toml(SAMPLE).unwrap().roles["etl"].clone();
        role.password = None;
        role.password_env = Some("GATEHOUSE_TEST_SURELY_UNSET_VAR".into());
        assert!(role.resolve_password("etl").is_err());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        role.password_env = None;
        role.password_file = Some(file);
        assert_eq!(role.resolve_password("etl").unwrap().expose(), "s3cret");
    }
}
