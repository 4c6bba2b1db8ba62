//! Gatehouse's PostgreSQL wire proxy: TLS, startup, identity, the gateway-held
//! upstream credential, and the per-statement decision point.

pub mod approval;
pub mod auth;
pub mod cache;
pub mod cancel;
pub mod config;
pub mod decision;
pub mod error;
pub mod evidence;
pub mod gather;
pub mod masking;
pub mod protocol;
pub mod remote;
pub mod session;
pub mod tls;
pub mod upstream;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use auth::Authenticator;
use cancel::CancelRegistry;
use config::{GatewayConfig, RoleConfig};
use decision::DecisionPoint;
use error::ConfigError;
use gatehouse_approver::store::ApprovalStore;
use upstream::UpstreamTarget;

/// A role as the running gateway holds it.
pub struct RoleRuntime {
    /// Its configuration.
    pub config: RoleConfig,
    /// How to reach its upstream (credential resolved once, at start).
    pub target: Arc<UpstreamTarget>,
}

/// Everything sessions share.
pub struct Gateway<D> {
    /// The configuration it was built from.
    pub config: GatewayConfig,
    /// Roles by name.
    pub roles: HashMap<String, RoleRuntime>,
    /// Token validation.
    pub auth: Authenticator,
    /// Client-facing TLS, when configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Live cancel keys.
    pub cancels: Arc<CancelRegistry>,
    /// Where statements are decided.
    pub decision: D,
    /// Memoised cacheable verdicts.
    pub cache: cache::VerdictCache,
    /// Where statements are recorded before they run (`None`: evidence off).
    pub evidence: Option<Arc<evidence::Recorder>>,
    /// This gateway instance's name in evidence (`GATEHOUSE_INSTANCE`, else the host name).
    pub instance: String,
    /// Inline masking: hash key and upstream catalogs.
    pub masking: masking::Masking,
    /// Where held statements wait for approval (`None`: an `approve` verdict is
    /// refused).
    pub approvals: Option<ApprovalStore>,
}

impl<D: DecisionPoint> Gateway<D> {
    /// Resolves credentials, loads TLS material and builds the issuers.
    pub fn new(config: GatewayConfig, decision: D) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut roles = HashMap::new();
        for (name, rc) in &config.roles {
            let target = UpstreamTarget::for_role(name, rc)?;
            roles.insert(
                name.clone(),
                RoleRuntime {
                    config: rc.clone(),
                    target: Arc::new(target),
                },
            );
        }
        let key = match config.masking.hash_key()? {
            Some(k) => k,
            None => {
                tracing::warn!("masking_hash_key_random");
                let mut k = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rng(), &mut k);
                config::Secret::new(k.iter().map(|b| format!("{b:02x}")).collect())
            }
        };
        let masking = masking::Masking::new(key, config.masking.catalog_ttl);
        let http = http_client(&config.issuers)?;
        let auth = Authenticator::new(&config.issuers, http)?;
        let tls = config
            .ingress
            .tls
            .as_ref()
            .map(tls::server_config)
            .transpose()?;
        Ok(Self {
            config,
            roles,
            auth,
            tls,
            cancels: Arc::default(),
            decision,
            cache: cache::VerdictCache::default(),
            evidence: None,
            instance: instance_name(),
            masking,
            approvals: None,
        })
    }

    /// Holds statements whose verdict is `approve` until approved (see [`approval`]).
    pub fn with_approvals(mut self, store: ApprovalStore) -> Self {
        self.approvals = Some(store);
        self
    }

    /// Records evidence through `recorder` (see [`evidence`]).
    pub fn with_evidence(mut self, recorder: Arc<evidence::Recorder>) -> Self {
        self.evidence = Some(recorder);
        self
    }
}

/// `GATEHOUSE_INSTANCE`, else the host name, else `gatehouse`.
fn instance_name() -> String {
    std::env::var("GATEHOUSE_INSTANCE")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "gatehouse".to_owned())
}

/// The HTTP client for these issuers' JWKS URLs (also the approver's issuers).
pub fn http_client(issuers: &[config::IssuerConfig]) -> Result<reqwest::Client, ConfigError> {
    let mut roots = tls::root_store(None)?;
    for iss in issuers {
        if let Some(ca) = &iss.jwks_ca_file {
            for cert in tls::root_store(Some(ca))?.roots {
                roots.roots.push(cert);
            }
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ConfigError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| ConfigError::Tls(e.to_string()))
}

/// Serves clients on `listener` until `shutdown` completes. One bad client never
/// affects another: each connection is its own task.
pub async fn run<D: DecisionPoint>(
    gateway: Arc<Gateway<D>>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let mut sessions = JoinSet::new();
    tokio::pin!(shutdown);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(addr = %addr, "ingress_listening");
    }
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    sessions.spawn(session::serve(gateway.clone(), tcp, peer));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept_failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            // Reap finished sessions so the set does not grow without bound.
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    tracing::info!(sessions = sessions.len(), "ingress_stopping");
    sessions.shutdown().await;
}
