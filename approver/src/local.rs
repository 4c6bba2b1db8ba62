//! All-in-one mode: the approver core in the gateway's process, over an
//! in-memory store, with the admin endpoint for approvers and the webhook
//! notifier. No NATS.

use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt;

use crate::notify::Announcer;
use crate::store::ApprovalStore;
use crate::{Approver, Settings, TokenVerifier};

/// The in-process approver: give [`InProcess::store`] to the gateway
/// (`Gateway::with_approvals`) and run [`InProcess::run`].
pub struct InProcess {
    /// The core.
    pub approver: Arc<Approver>,
}

impl InProcess {
    /// A core over a fresh in-memory store (see [`Approver::new`]).
    pub fn new(config: Settings, auth: Arc<dyn TokenVerifier>, http: reqwest::Client) -> Self {
        Self {
            approver: Arc::new(Approver::new(ApprovalStore::memory(), config, auth, http)),
        }
    }

    /// The store the gateway holds statements in.
    pub fn store(&self) -> ApprovalStore {
        self.approver.store().clone()
    }

    /// Serves the admin endpoint on `admin`, announces new requests to the
    /// webhooks and sweeps expired requests, until `shutdown` completes.
    pub async fn run(
        self,
        admin: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let approver = self.approver;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let notifier = tokio::spawn(announce(approver.clone(), stop_rx));
        let served = crate::admin::serve(approver, admin, shutdown).await;
        let _ = stop_tx.send(true);
        let _ = notifier.await;
        served
    }
}

/// Announces each new request and sweeps expired ones until `stop`.
async fn announce(approver: Arc<Approver>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let announcer = Announcer {
        nats: None,
        webhooks: approver.webhooks(),
    };
    let mut changes = match approver.store().watch_new().await {
        Ok(c) => Box::pin(c),
        Err(e) => {
            tracing::error!(error = %e, "approval_watch_failed");
            return;
        }
    };
    let mut sweep = tokio::time::interval(approver.config.sweep_interval);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            // Cancel safe: the feed keeps what is not taken.
            change = changes.next() => {
                let Some((record, _)) = change else { return };
                announcer.on_change(&approver, &record).await;
            }
            _ = sweep.tick() => {
                if let Err(e) = approver.sweep().await {
                    tracing::warn!(error = %e, "approval_sweep_failed");
                }
            }
        }
    }
}
