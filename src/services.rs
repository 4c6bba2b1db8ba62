//! How the binary builds each service from the configuration file: what the
//! crates cannot do without knowing each other (the approver proves
//! approvers with the gateway's token validation, for instance).

use std::sync::Arc;

use gatehouse_approver::local::InProcess;
use gatehouse_approver::store::ApprovalStore;
use gatehouse_approver::{Approver, TokenVerifier};
use gatehouse_ingress::auth::Authenticator;

use crate::config::{ApprovalsConfig, ConfigError};

/// The approver core over `store`, approvers proven against
/// `[[approvals.issuers]]`.
pub fn approver(store: ApprovalStore, cfg: &ApprovalsConfig) -> Result<Approver, ConfigError> {
    let (auth, http) = approver_auth(cfg)?;
    Ok(Approver::new(store, cfg.approver(), auth, http))
}

/// The approver core in the gateway's process (all-in-one mode, `[approvals]
/// admin_listen`), over an in-memory store.
pub fn in_process_approvals(cfg: &ApprovalsConfig) -> Result<InProcess, ConfigError> {
    if cfg.issuers.is_empty() {
        return Err(ConfigError::Invalid(
            "approvals: admin_listen is set but no [[approvals.issuers]]: nobody could approve"
                .into(),
        ));
    }
    let (auth, http) = approver_auth(cfg)?;
    Ok(InProcess::new(cfg.approver(), auth, http))
}

/// Approvers' token validation, and the HTTP client it and the webhooks use.
fn approver_auth(
    cfg: &ApprovalsConfig,
) -> Result<(Arc<dyn TokenVerifier>, reqwest::Client), ConfigError> {
    let http = gatehouse_ingress::http_client(&cfg.issuers)?;
    let auth = Authenticator::new(&cfg.issuers, http.clone())?;
    Ok((Arc::new(auth), http))
}
