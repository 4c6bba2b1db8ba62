//! The ingress's sections of the gateway's configuration (`[ingress]`,
//! `[[issuers]]`, `[roles.NAME]`, `[masking]`), and what the gateway is built
//! from ([`GatewayConfig`]). The whole file, with the other services'
//! sections, is read by the `gatehouse` binary.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::error::ConfigError;
pub use gatehouse_decider::claims::{ClaimConditions, ClaimMatch, ClaimOp};

/// What the gateway is built from.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The client-facing listener.
    pub ingress: IngressConfig,
    /// Token issuers whose tokens are accepted as passwords.
    pub issuers: Vec<IssuerConfig>,
    /// Gatehouse roles, by the name a client puts in its startup `user`.
    pub roles: BTreeMap<String, RoleConfig>,
    /// Inline masking.
    pub masking: MaskingConfig,
    /// A statement without a verdict by then is refused (fail closed).
    pub decision_timeout: Duration,
    /// How statements are held for approval.
    pub hold: HoldConfig,
}

/// How a statement whose verdict is `approve` is held.
#[derive(Debug, Clone)]
pub struct HoldConfig {
    /// How long a held statement waits for a decision.
    pub timeout: Duration,
    /// Where approvers look, shown to the held client in its NOTICE.
    pub notice: String,
}

impl GatewayConfig {
    /// Cross-field checks of the issuers and roles that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate(&self.issuers, &self.roles)
    }
}

/// Checks `issuers` (each well-formed, none twice) and that `roles` name only
/// configured issuers.
pub fn validate(
    issuers: &[IssuerConfig],
    roles: &BTreeMap<String, RoleConfig>,
) -> Result<(), ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    for iss in issuers {
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
        if issuers.iter().filter(|o| o.issuer == iss.issuer).count() > 1 {
            return invalid(format!("issuer {} is configured twice", iss.issuer));
        }
    }
    for (name, role) in roles {
        for rule in &role.allow {
            if let Some(iss) = &rule.issuer
                && !issuers.iter().any(|i| &i.name == iss)
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

/// PEM files for a TLS server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
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
