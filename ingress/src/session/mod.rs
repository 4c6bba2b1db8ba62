//! One client connection, stage by stage: [`startup`] (negotiation, token,
//! role, upstream) ends in a typed `Started`; then the relay runs the client
//! direction ([`frontend`]: one handler per message kind, in [`text`] and
//! [`extended`], statements [`hold`]-ed for approval or refused with a
//! [`refusal::Refusal`]) and the backend direction ([`backend`]) until either
//! ends. Both directions pair answers with requests through one
//! `protocol::pipeline::Pipeline`.

mod backend;
mod decide;
mod extended;
mod frontend;
mod hold;
mod record;
pub mod refusal;
mod startup;
mod text;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::BytesMut;
use gatehouse_schemas::Identity;
use gatehouse_schemas::evidence::{EventBody, SessionEnded, Statement, StatementCompleted};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::Instrument;
use uuid::Uuid;

use crate::Gateway;
use crate::decision::DecisionPoint;
use crate::error::{ProtocolError, SqlState, UserFacing, fatal};
use crate::evidence::capture::Capture;
use crate::evidence::{EvidenceError, Ticket};
use crate::masking::catalog::Catalog;
use crate::protocol::pipeline::Pipeline;
use record::SessionEvidence;
use refusal::Substitutes;
use startup::{Phase, Started};

/// What both directions of a session share.
struct Shared {
    /// What went upstream and awaits its answers, with the session's names.
    pipeline: Mutex<Pipeline>,
    /// The session's evidence.
    evidence: Mutex<SessionEvidence>,
}

impl Shared {
    fn pipeline(&self) -> MutexGuard<'_, Pipeline> {
        // Every change under this lock leaves the pipeline consistent before
        // anything that can panic, so a poisoned lock is still usable.
        self.pipeline.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn evidence(&self) -> MutexGuard<'_, SessionEvidence> {
        self.evidence.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the client direction knows about its session.
struct SessionCtx {
    id: Uuid,
    role: String,
    identity: Identity,
    /// Statements decided (the `seq` of decision requests).
    seq: u64,
    /// The policy epoch and this caller's identity class under it.
    class: (u64, u64),
    /// `seq` of the last statement event recorded.
    last_recorded: u64,
    /// Woken by this session's `CancelRequest`: withdraws a held statement.
    withdraw: Arc<tokio::sync::Notify>,
    /// A mask rule applied to the caller in a verdict of this session: the
    /// parameters of a statement decided without one (SQL `PREPARE`) are
    /// withheld.
    masked_caller: bool,
    /// The upstream catalog of the role's target (views of a masked caller's
    /// statements are looked up there).
    catalog: Arc<Catalog>,
    /// Shared with the backend direction.
    shared: Arc<Shared>,
    /// Refused messages' substitutes.
    substitutes: Substitutes,
    /// Notices for the client from this direction (a held statement's),
    /// written by the backend direction between two backend messages.
    notices: mpsc::UnboundedSender<BytesMut>,
}

impl SessionCtx {
    /// Records a statement event; `count`: a statement the session's count
    /// has not seen yet. `Ok(None)`: this gateway records no evidence.
    fn record<D: DecisionPoint>(
        &mut self,
        gw: &Gateway<D>,
        statement: Statement,
        count: bool,
    ) -> Result<Option<Ticket>, EvidenceError> {
        let recorded =
            self.shared
                .evidence()
                .statement(gw.evidence.as_deref(), statement, count)?;
        Ok(recorded.map(|(seq, ticket)| {
            self.last_recorded = seq;
            ticket
        }))
    }

    /// A statement whose record could not be made durable was replaced by a
    /// refusal: it is counted refused, and `stmt` completes as not run.
    fn not_run<D: DecisionPoint>(&self, gw: &Gateway<D>, stmt: Option<u64>) {
        let mut ev = self.shared.evidence();
        ev.refused += 1;
        if let Some(stmt) = stmt {
            let body = EventBody::StatementCompleted(StatementCompleted {
                statement: stmt,
                outcome: "not_run".into(),
                tags: Vec::new(),
                rows: 0,
                duration_us: 0,
                sqlstate: Some(SqlState::CannotConnectNow.code().into()),
            });
            let _ = ev.record(gw.evidence.as_deref(), body);
        }
    }
}

/// How a session ended, for the log.
#[derive(Debug)]
enum End {
    ClientTerminated,
    ClientClosed,
    UpstreamClosed,
}

impl End {
    fn name(&self) -> &'static str {
        match self {
            Self::ClientTerminated => "client_terminated",
            Self::ClientClosed => "client_closed",
            Self::UpstreamClosed => "upstream_closed",
        }
    }
}

/// Why the relay stopped early.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Serves one TCP connection until it ends. Never panics on client input.
pub async fn serve<D: DecisionPoint>(gw: Arc<Gateway<D>>, tcp: TcpStream, peer: SocketAddr) {
    // Time-ordered, so evidence sorts by session start.
    let id = Uuid::now_v7();
    let span = tracing::info_span!(
        "session",
        session = %id,
        client = %peer,
        role = tracing::field::Empty,
        subject = tracing::field::Empty
    );
    async move {
        let _ = tcp.set_nodelay(true);
        let deadline = tokio::time::Instant::now() + gw.config.ingress.auth_timeout;
        let mut phase = Phase::Negotiating;
        let started =
            tokio::time::timeout_at(deadline, startup::run(&gw, tcp, id, peer, &mut phase)).await;
        let started = match started {
            Err(_) => {
                tracing::warn!(phase = ?phase, "auth_timeout");
                return;
            }
            Ok(None) => return,
            Ok(Some(s)) => s,
        };
        tracing::info!(upstream = %gw.roles[&started.role].target.addr(), "session_started");
        let began = Instant::now();
        let (shared, ended) = relay(&gw, id, started).await;
        let reason = match &ended {
            Ok(end) => {
                tracing::info!(end = ?end, "session_ended");
                end.name()
            }
            Err(e) => {
                tracing::info!(error = %e, "session_ended");
                "error"
            }
        };
        let mut ev = shared.evidence();
        let body = EventBody::SessionEnded(SessionEnded {
            reason: reason.to_owned(),
            statements: ev.statements,
            refused: ev.refused,
            duration_ms: u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
        if let Some(Err(e)) = ev.record(gw.evidence.as_deref(), body) {
            tracing::warn!(error = %e, "session_end_not_recorded");
        }
    }
    .instrument(span)
    .await
}

/// Moves bytes both ways until either side ends: client messages are framed
/// so each runnable SQL text meets the decision point before it is forwarded;
/// backend messages pair with what caused them (see `protocol::pipeline`).
async fn relay<D: DecisionPoint>(
    gw: &Gateway<D>,
    id: Uuid,
    started: Started,
) -> (Arc<Shared>, Result<End, RelayError>) {
    let Started {
        client,
        pending,
        upstream,
        role,
        identity,
        chain,
        cancel,
    } = started;
    let rt = &gw.roles[&role];
    let capture = Capture::new(rt.config.results);
    let shared = Arc::new(Shared {
        pipeline: Mutex::new(Pipeline::new(gw.evidence.is_some(), capture)),
        evidence: Mutex::new(SessionEvidence {
            chain,
            statements: 0,
            refused: 0,
        }),
    });
    let (notices, notices_rx) = mpsc::unbounded_channel::<BytesMut>();
    let mut ctx = SessionCtx {
        id,
        role,
        identity,
        seq: 0,
        class: (u64::MAX, 0),
        last_recorded: 0,
        withdraw: cancel.withdrawals(),
        masked_caller: false,
        catalog: gw.masking.catalog(&rt.target),
        shared: shared.clone(),
        substitutes: Substitutes::default(),
        notices,
    };
    let catalog = ctx.catalog.clone();
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut up_rd, mut up_wr) = tokio::io::split(upstream.stream);
    // Cancel safety: whichever side finishes first ends the session; the other
    // future is dropped mid-read or mid-write, which loses nothing that matters
    // because both connections close right after.
    let result = tokio::select! {
        r = frontend::run(gw, &mut ctx, &mut client_rd, &mut up_wr, pending) => r,
        r = backend::run(gw, &shared, &catalog, &mut up_rd, &mut client_wr, upstream.leftover, notices_rx) => r,
    };
    drop(cancel);
    let ended = match result {
        Ok(end) => {
            let _ = up_wr.shutdown().await;
            Ok(end)
        }
        Err(RelayError::Protocol(e)) => {
            tracing::warn!(kind = e.kind(), error = %e, "protocol_violation");
            let _ = client_wr.write_all(&fatal(&e)).await;
            let _ = client_wr.flush().await;
            Err(RelayError::Io(std::io::Error::other(e.to_string())))
        }
        Err(e) => Err(e),
    };
    (shared, ended)
}
