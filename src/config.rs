//! The gateway's configuration file: a TOML file with `GATEHOUSE__SECTION__KEY`
//! environment overrides. Each section's type belongs to the crate of the
//! service it configures (`[ingress]`, `[[issuers]]`, `[roles]`, `[masking]` to
//! the ingress, `[archiver]` to the archiver, `[[approvals.webhooks]]` to the
//! approver); the sections several services read (`[approvals]`, `[decider]`,
//! `[evidence]`, `[nats]`, `[log]`) are here, with what each service is built
//! from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_approver::webhook::WebhookConfig;
use gatehouse_archiver::config::ArchiverConfig;
use gatehouse_ingress::config::{
    GatewayConfig, HoldConfig, IngressConfig, IssuerConfig, MaskingConfig, RoleConfig,
};
use serde::Deserialize;

/// The configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading or parsing failed.
    #[error(transparent)]
    Load(#[from] config::ConfigError),
    /// A section the ingress reads is wrong.
    #[error(transparent)]
    Ingress(#[from] gatehouse_ingress::error::ConfigError),
    /// Values that do not fit together.
    #[error("{0}")]
    Invalid(String),
}

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

impl ApprovalsConfig {
    /// How the approver judges and announces requests.
    pub fn approver(&self) -> gatehouse_approver::Settings {
        gatehouse_approver::Settings {
            groups_claim: self.groups_claim.clone(),
            requester_claims: self.requester_claims.clone(),
            sweep_interval: self.sweep_interval,
            webhooks: self.webhooks.clone(),
        }
    }

    /// How the ingress holds statements.
    pub fn hold(&self) -> HoldConfig {
        HoldConfig {
            timeout: self.timeout,
            notice: self.notice.clone(),
        }
    }
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

    /// What the gateway (the ingress) is built from.
    pub fn gateway(&self) -> GatewayConfig {
        GatewayConfig {
            ingress: self.ingress.clone(),
            issuers: self.issuers.clone(),
            roles: self.roles.clone(),
            masking: self.masking.clone(),
            decision_timeout: self.decider.timeout,
            hold: self.approvals.hold(),
        }
    }

    /// Cross-field checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.evidence.siem.is_some() && self.evidence.mode != EvidenceMode::Local {
            return Err(ConfigError::Invalid(
                "evidence: siem (NDJSON output) needs evidence.mode = \"local\"; in distributed mode the archiver sends the records to Kafka".into(),
            ));
        }
        Ok(gatehouse_ingress::config::validate(
            &self.issuers,
            &self.roles,
        )?)
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
    use gatehouse_approver::webhook::WebhookFormat;
    use gatehouse_archiver::config::ArchiverStore;
    use gatehouse_ingress::config::{ClaimMatch, ClaimOp, ResultRecord, UpstreamTls};

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
        let text = include_str!("../deploy/gatehouse.example.toml");
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
        let shipped = Config::from_toml(include_str!("../deploy/gatehouse.example.toml")).unwrap();
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
