//! One client connection: negotiation, startup, identity, upstream, then the relay.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use gatehouse_schemas::{Identity, ProtocolKind, SCHEMA_VERSION, StatementEvent};
use pgwire::messages::response::{ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, NegotiateProtocolVersion, ParameterStatus, SecretKey, Startup,
};
use pgwire::messages::{
    DecodeContext, Message, PgWireFrontendMessage, ProtocolVersion, SslNegotiationMetaMessage,
};
use std::borrow::Cow;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::Instrument;
use uuid::Uuid;

use crate::Gateway;
use crate::auth::{Verified, may_assume};
use crate::cache::CatalogState;
use crate::codec::{self, StatementText};
use crate::decision::{DecisionError, DecisionPoint};
use crate::error::{
    ProtocolError, Severity, SqlState, StartupError, UserFacing, error_response, fatal,
};
use crate::evidence::{Chain, EvidenceError, Recorder, Ticket};
use crate::gather;
use crate::masking::values::{ParamView, recorded_params};
use crate::masking::{self, SessionMasker};
use crate::refusal::Refusals;
use crate::tls::{ClientStream, MaybeTls};
use crate::tracker::{Completion, Sent, Tracker};

mod hold;
use crate::upstream::{self, Upstream};
use gatehouse_schemas::decision::{Decision, Verdict};
use gatehouse_schemas::evidence::{
    CiContext, EventBody, Param, ResultData, SessionEnded, SessionStarted, Statement,
    StatementCompleted, StatementObjects, StatementPath, TlsInfo,
};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Startup parameters passed on to the upstream. Anything else a client sets at
/// startup could change what later statements mean (`options`, `search_path`,
/// `role`, ...), so it is refused rather than silently dropped.
const PASSED_PARAMETERS: &[&str] = &[
    "application_name",
    "datestyle",
    "timezone",
    "intervalstyle",
    "extra_float_digits",
];

/// Where a connection is. Each phase is bounded by the authentication timeout
/// until `Relaying`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading `SSLRequest`/`GSSENCRequest`/`CancelRequest`/`StartupMessage`.
    Negotiating,
    /// Asked for the token, waiting for the `PasswordMessage`.
    Authenticating,
    /// Token accepted; connecting and authenticating to the upstream.
    Connecting,
    /// Statements flow both ways.
    Relaying,
}

/// What a session knows about itself once authenticated.
struct SessionCtx {
    id: Uuid,
    role: String,
    identity: Identity,
    seq: u64,
    /// The policy epoch and this caller's identity class under it.
    class: (u64, u64),
    /// SQL-`PREPARE`d statements: name to inner SQL, so `EXECUTE` is decided as
    /// what it runs.
    prepared: BTreeMap<String, String>,
    /// Protocol-level prepared statements the server accepted from us: name to
    /// SQL and verdict, so each `Execute` is recorded as what it runs.
    statements: HashMap<String, Arc<Prepared>>,
    /// Bound portals by name.
    portals: HashMap<String, Portal>,
    /// Evidence shared with the backend direction.
    evidence: Arc<Mutex<SessionEvidence>>,
    /// When the session started.
    started: Instant,
    /// `seq` of the last statement event recorded.
    last_recorded: u64,
    /// Masking, shared with the backend direction.
    masker: Arc<Mutex<SessionMasker>>,
    /// What masking learnt from the last decided message that is forwarded.
    mask_pending: masking::Pending,
    /// Woken by this session's `CancelRequest`: withdraws a held statement.
    withdraw: Arc<tokio::sync::Notify>,
    /// A mask rule applied to the caller in a verdict of this session: the
    /// parameters of a statement decided without one (SQL `PREPARE`) are
    /// withheld.
    masked_caller: bool,
    /// The upstream catalog of the role's target (views of a masked caller's
    /// statements are looked up there).
    catalog: Arc<masking::catalog::Catalog>,
}

impl SessionCtx {
    fn last_seq(&self) -> u64 {
        self.last_recorded
    }
}

/// A statement prepared with `Parse`, as the evidence of its executions names it.
struct Prepared {
    sql: String,
    /// `None` for a statement prepared with SQL `PREPARE` (decided then).
    decision: Option<Arc<Decision>>,
    /// The approval a held `Parse` ran under, and whether an `Execute` used it:
    /// an approval authorizes one execution.
    /// With the parameters it was approved with, when they were known.
    /// With the digest of the parameters it was approved with, when they were
    /// bound before the approval ([`params_digest`]).
    approval: Option<(String, std::sync::atomic::AtomicBool, Option<[u8; 32]>)>,
}

/// What both directions of a session record into.
struct SessionEvidence {
    chain: Option<Chain>,
    tracker: Tracker,
    statements: u64,
    refused: u64,
}

impl SessionEvidence {
    /// Records one event; `None` when this gateway records no evidence.
    fn record(
        &mut self,
        recorder: Option<&Recorder>,
        body: EventBody,
    ) -> Option<Result<(u64, Ticket), EvidenceError>> {
        Some(self.chain.as_mut()?.record(recorder?, body))
    }

    fn complete(&mut self, recorder: Option<&Recorder>, done: Vec<Completion>) {
        for mut c in done {
            // Result data first: replay shows a statement's rows, then how it ended.
            for set in std::mem::take(&mut c.results) {
                let body = EventBody::ResultData(ResultData {
                    statement: c.stmt,
                    columns: set.columns,
                    rows: set.rows,
                    truncated: set.truncated,
                    row_count: set.count,
                });
                if let Some(Err(e)) = self.record(recorder, body) {
                    tracing::warn!(error = %e, statement = c.stmt, "result_data_not_recorded");
                }
            }
            let body = EventBody::StatementCompleted(StatementCompleted {
                statement: c.stmt,
                outcome: c.outcome.to_owned(),
                tags: c.tags,
                rows: c.rows,
                duration_us: c.duration_us,
                sqlstate: c.sqlstate,
            });
            if let Some(Err(e)) = self.record(recorder, body) {
                tracing::warn!(error = %e, statement = c.stmt, "completion_not_recorded");
            }
        }
    }
}

/// A bound portal: its statement, its parameters as recorded, and the digest
/// of their values when the statement runs under an approval.
struct Portal {
    prepared: Arc<Prepared>,
    params: Vec<Param>,
    digest: Option<[u8; 32]>,
}

/// Parameter bytes recorded per statement; past this, values are withheld
/// (their lengths recorded).
const MAX_RECORDED_PARAMS: usize = 64 * 1024;
/// Protocol-level prepared statements and portals a session may hold.
const MAX_STATEMENTS: usize = 10_000;

/// Prepared names a session may hold; past this, new ones are not tracked and
/// their `EXECUTE` is refused (fail closed).
const MAX_PREPARED: usize = 10_000;

impl SessionCtx {
    /// Tracks PREPARE and DEALLOCATE of an allowed text.
    fn remember_prepared(&mut self, d: &Decision) {
        for s in &d.statements {
            if let Some((name, inner)) = &s.prepares
                && self.prepared.len() < MAX_PREPARED
            {
                self.prepared.insert(name.clone(), inner.clone());
            }
            match &s.deallocates {
                Some(Some(name)) => {
                    self.prepared.remove(name);
                }
                Some(None) => self.prepared.clear(),
                None => {}
            }
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
            tokio::time::timeout_at(deadline, startup(&gw, tcp, id, peer, &mut phase)).await;
        let (client, pending, upstream, ctx, _cancel_guard) = match started {
            Err(_) => {
                tracing::warn!(phase = ?phase, "auth_timeout");
                return;
            }
            Ok(None) => return,
            Ok(Some(s)) => s,
        };
        tracing::info!(upstream = %gw.roles[&ctx.role].target.addr(), "session_started");
        let evidence = ctx.evidence.clone();
        let started = ctx.started;
        let ended = relay(&gw, ctx, client, pending, upstream).await;
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
        let mut ev = evidence.lock().unwrap_or_else(|p| p.into_inner());
        let body = EventBody::SessionEnded(SessionEnded {
            reason: reason.to_owned(),
            statements: ev.statements,
            refused: ev.refused,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
        if let Some(Err(e)) = ev.record(gw.evidence.as_deref(), body) {
            tracing::warn!(error = %e, "session_end_not_recorded");
        }
    }
    .instrument(span)
    .await
}

/// The client stream, client bytes already read past the password message, the
/// upstream, the session, and its cancel key registration.
type Started = (
    ClientStream,
    BytesMut,
    Upstream,
    SessionCtx,
    crate::cancel::CancelGuard,
);

/// Negotiation, startup, authentication and upstream connection. `None` when the
/// connection ended (an error was already sent, or a cancel request was served).
async fn startup<D: DecisionPoint>(
    gw: &Gateway<D>,
    tcp: TcpStream,
    id: Uuid,
    peer: SocketAddr,
    phase: &mut Phase,
) -> Option<Started> {
    let mut stream: ClientStream = MaybeTls::Plain(tcp);
    let mut buf = BytesMut::with_capacity(1024);
    let mut ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    let mut tls_done = false;
    let mut gss_done = false;

    let startup = loop {
        let msg = match read_frontend(&mut stream, &mut buf, &mut ctx).await {
            Ok(Some(m)) => m,
            Ok(None) => return None,
            Err(e) => {
                // An oversized or garbled startup packet: PostgreSQL drops these
                // without an answer, and so does Gatehouse.
                tracing::warn!(error = %e, "startup_packet_rejected");
                return None;
            }
        };
        match msg {
            PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::PostgresSsl(_))
                if !tls_done =>
            {
                tls_done = true;
                if !buf.is_empty() {
                    // Bytes sent before the handshake would be read as if they had
                    // come through TLS (CVE-2021-23214).
                    tracing::warn!("data_before_tls_handshake");
                    return None;
                }
                let MaybeTls::Plain(mut tcp) = stream else {
                    return None;
                };
                match &gw.tls {
                    Some(tls) => {
                        tcp.write_all(b"S").await.ok()?;
                        match tokio_rustls::TlsAcceptor::from(tls.clone())
                            .accept(tcp)
                            .await
                        {
                            Ok(s) => stream = MaybeTls::Tls(Box::new(s)),
                            Err(e) => {
                                tracing::warn!(error = %e, "tls_handshake_failed");
                                return None;
                            }
                        }
                    }
                    None => {
                        tcp.write_all(b"N").await.ok()?;
                        stream = MaybeTls::Plain(tcp);
                    }
                }
            }
            PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::PostgresGss(_))
                if !gss_done && !tls_done =>
            {
                gss_done = true;
                stream.write_all(b"N").await.ok()?;
            }
            PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::None) => {
                ctx.awaiting_frontend_ssl = false;
            }
            PgWireFrontendMessage::SslNegotiation(_) => {
                tracing::warn!("repeated_encryption_request");
                return None;
            }
            PgWireFrontendMessage::CancelRequest(c) => {
                if let Some(secret) = c.secret_key.as_i32() {
                    gw.cancels.cancel(c.pid, secret).await;
                }
                return None;
            }
            PgWireFrontendMessage::Startup(s) => break s,
            other => {
                tracing::warn!(message = ?std::mem::discriminant(&other), "unexpected_startup_message");
                return None;
            }
        }
    };
    let is_tls = matches!(stream, MaybeTls::Tls(_));

    match authenticate(gw, &mut stream, &mut buf, startup, is_tls, phase).await {
        Ok((role, verified, params)) => {
            tracing::Span::current().record("role", role.as_str());
            tracing::Span::current().record("subject", verified.identity.subject.as_str());
            *phase = Phase::Connecting;
            let rt = &gw.roles[&role];
            let connected = tokio::time::timeout(
                gw.config.ingress.upstream_connect_timeout,
                upstream::connect(&rt.target, &params),
            )
            .await
            .unwrap_or(Err(crate::error::UpstreamError::Timeout));
            let upstream = match connected {
                Ok(u) => u,
                Err(e) => {
                    let err = StartupError::Upstream(e);
                    tracing::warn!(kind = err.kind(), error = %err, upstream = %rt.target.addr(), "upstream_failed");
                    let _ = stream.write_all(&fatal(&err)).await;
                    return None;
                }
            };
            let mut chain = gw.evidence.as_ref().map(|_| Chain::new(id));
            if let (Some(recorder), Some(chain)) = (&gw.evidence, &mut chain) {
                let body = EventBody::SessionStarted(Box::new(SessionStarted {
                    role: role.clone(),
                    ci: CiContext::from_claims(&verified.identity.claims),
                    identity: verified.identity.clone(),
                    upstream: format!("{}/{}", rt.target.addr(), rt.target.config.dbname),
                    upstream_user: rt.target.user.clone(),
                    client_addr: peer.to_string(),
                    tls: tls_info(&stream),
                    gateway: gw.instance.clone(),
                }));
                // A session starts only once its start is durable: when evidence
                // is down, the client hears so now, not at its first statement.
                let recorded = match chain.record(recorder, body) {
                    Ok((_, ticket)) => recorder.durable(ticket).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = recorded {
                    tracing::warn!(error = %e, "session_refused_evidence_unavailable");
                    let err = StartupError::EvidenceUnavailable(e.to_string());
                    let _ = stream.write_all(&fatal(&err)).await;
                    let _ = stream.flush().await;
                    return None;
                }
            }
            let (guard, pid, secret) = gw.cancels.register(rt.target.clone(), upstream.backend_key);
            let mut out = BytesMut::with_capacity(512);
            encode(&mut out, &Authentication::Ok);
            for (name, value) in &upstream.parameters {
                encode(&mut out, &ParameterStatus::new(name.clone(), value.clone()));
            }
            encode(&mut out, &BackendKeyData::new(pid, SecretKey::I32(secret)));
            encode(&mut out, &ReadyForQuery::new(TransactionStatus::Idle));
            stream.write_all(&out).await.ok()?;
            stream.flush().await.ok()?;
            *phase = Phase::Relaying;
            let ctx = SessionCtx {
                id,
                role,
                identity: verified.identity,
                seq: 0,
                class: (u64::MAX, 0),
                prepared: BTreeMap::new(),
                statements: HashMap::new(),
                portals: HashMap::new(),
                evidence: Arc::new(Mutex::new(SessionEvidence {
                    chain,
                    tracker: Tracker::new(rt.config.results),
                    statements: 0,
                    refused: 0,
                })),
                started: Instant::now(),
                last_recorded: 0,
                masker: Arc::default(),
                mask_pending: masking::Pending::default(),
                masked_caller: false,
                catalog: gw.masking.catalog(&rt.target),
                withdraw: guard.withdrawals(),
            };
            Some((stream, buf, upstream, ctx, guard))
        }
        Err(StartupError::ClientGone) => {
            tracing::debug!("client_gone_during_startup");
            None
        }
        Err(err) => {
            tracing::warn!(kind = err.kind(), error = %err, "startup_refused");
            let _ = stream.write_all(&fatal(&err)).await;
            let _ = stream.flush().await;
            None
        }
    }
}

/// Checks the startup message, asks for and verifies the token, and picks the role.
async fn authenticate<D: DecisionPoint>(
    gw: &Gateway<D>,
    stream: &mut ClientStream,
    buf: &mut BytesMut,
    startup: Startup,
    is_tls: bool,
    phase: &mut Phase,
) -> Result<(String, Verified, BTreeMap<String, String>), StartupError> {
    if startup.protocol_number_major != 3 {
        return Err(StartupError::UnsupportedProtocol(
            startup.protocol_number_major,
            startup.protocol_number_minor,
        ));
    }
    let mut params = startup.parameters;
    let unsupported: Vec<String> = params
        .keys()
        .filter(|k| k.starts_with("_pq_."))
        .cloned()
        .collect();
    if startup.protocol_number_minor > 0 || !unsupported.is_empty() {
        // We speak 3.0 and no protocol extensions; say so, as PostgreSQL does.
        for k in &unsupported {
            params.remove(k);
        }
        let mut out = BytesMut::new();
        encode(&mut out, &NegotiateProtocolVersion::new(0, unsupported));
        stream
            .write_all(&out)
            .await
            .map_err(|e| StartupError::Protocol(e.to_string()))?;
    }
    let role_name = params.remove("user").ok_or(StartupError::NoUser)?;
    let database = params.remove("database");
    let passed = filter_parameters(params)?;

    if !is_tls && !gw.config.ingress.allow_cleartext_without_tls {
        // Refused before the client is asked for the token, so it is never sent.
        return Err(StartupError::CleartextWithoutTls);
    }

    *phase = Phase::Authenticating;
    let mut out = BytesMut::new();
    encode(&mut out, &Authentication::CleartextPassword);
    stream
        .write_all(&out)
        .await
        .map_err(|e| StartupError::Protocol(e.to_string()))?;
    stream
        .flush()
        .await
        .map_err(|e| StartupError::Protocol(e.to_string()))?;
    let mut ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    ctx.awaiting_frontend_ssl = false;
    ctx.awaiting_frontend_startup = false;
    let token = match read_frontend(stream, buf, &mut ctx).await {
        Ok(Some(PgWireFrontendMessage::PasswordMessageFamily(p))) => {
            p.into_password()
                .map_err(|_| StartupError::Protocol("malformed password message".into()))?
                .password
        }
        Ok(Some(_)) => return Err(StartupError::Protocol("expected a password message".into())),
        Ok(None) => return Err(StartupError::ClientGone),
        Err(e) => return Err(StartupError::Protocol(e)),
    };
    let verified = gw.auth.verify(token.trim()).await?;

    let role = gw
        .roles
        .get(&role_name)
        .ok_or_else(|| StartupError::UnknownRole(role_name.clone()))?;
    if !may_assume(&role.config.allow, &verified) {
        return Err(StartupError::RoleNotAllowed {
            role: role_name,
            subject: verified.identity.subject.clone(),
        });
    }
    if let Some(db) = database
        && db != role_name
        && db != role.config.upstream.dbname
    {
        return Err(StartupError::DatabaseMismatch {
            asked: db,
            role: role_name,
        });
    }
    Ok((role_name, verified, passed))
}

/// Keeps the parameters Gatehouse passes on; refuses the rest.
fn filter_parameters(
    params: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, StartupError> {
    let mut passed = BTreeMap::new();
    for (key, value) in params {
        let lower = key.to_ascii_lowercase();
        if lower == "client_encoding" {
            let norm: String = value
                .chars()
                .filter(|c| *c != '-' && *c != '_')
                .collect::<String>()
                .to_ascii_uppercase();
            // The statement path reads SQL as UTF-8; SQL_ASCII bytes are
            // validated as UTF8 by a UTF8 server, so both are safe.
            if !matches!(norm.as_str(), "UTF8" | "UNICODE" | "SQLASCII") {
                return Err(StartupError::EncodingRefused(value));
            }
            passed.insert(key, value);
        } else if PASSED_PARAMETERS.contains(&lower.as_str()) {
            passed.insert(key, value);
        } else {
            return Err(StartupError::ParameterRefused(key));
        }
    }
    Ok(passed)
}

fn encode<M: Message>(out: &mut BytesMut, msg: &M) {
    // Messages built by Gatehouse itself are always within pgwire's limits.
    msg.encode(out).expect("gateway message within limits");
}

/// Reads one startup-phase message. `Err` carries a log-only description.
async fn read_frontend<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    ctx: &mut DecodeContext,
) -> Result<Option<PgWireFrontendMessage>, String> {
    loop {
        if let Some(m) = codec::startup_message(buf, ctx).map_err(|e| e.to_string())? {
            return Ok(Some(m));
        }
        match stream.read_buf(buf).await {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Moves bytes both ways until either side ends. Client messages are framed so
/// each runnable SQL text meets the decision point before it is forwarded;
/// backend bytes stream through untouched but for the errors of refused
/// statements' substitutes (see `refusal`).
async fn relay<D: DecisionPoint>(
    gw: &Gateway<D>,
    mut ctx: SessionCtx,
    client: ClientStream,
    pending: BytesMut,
    upstream: Upstream,
) -> std::io::Result<End> {
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut up_rd, mut up_wr) = tokio::io::split(upstream.stream);
    let max = gw.config.ingress.max_message_size;
    let refusals = Refusals::default();

    let recorder = gw.evidence.as_deref();
    let evidence = ctx.evidence.clone();
    let masker = ctx.masker.clone();
    let catalog = gw.masking.catalog(&gw.roles[&ctx.role].target);
    // Notices for the client from this direction (a held statement's), written
    // by the backend direction between two backend messages.
    let (notice_tx, mut notice_rx) = tokio::sync::mpsc::unbounded_channel::<BytesMut>();
    let client_to_upstream = async {
        // A client may pipeline messages right behind its password; they are
        // framed and decided like any other.
        let mut buf = pending;
        let mut plan: Vec<Piece> = Vec::new();
        let mut sents: Vec<Sent> = Vec::new();
        // Per entry of `sents`: its frame and what masking learnt deciding it.
        let mut sent_frames: Vec<(codec::Frame, masking::Pending)> = Vec::new();
        loop {
            let mut at = 0;
            let mut forwarded = 0;
            let mut terminated = false;
            // The last record this batch must see durable before it is forwarded.
            let mut needs: Option<Ticket> = None;
            // A statement held for approval ends the batch; the bytes after it
            // wait in `buf` until it is released.
            let mut held = None;
            plan.clear();
            sents.clear();
            sent_frames.clear();
            while let Some(frame) = codec::next_frontend_frame(&buf, at, max)? {
                at = frame.end;
                let tracked = sents.len();
                let step = match frame.tag {
                    codec::QUERY | codec::PARSE | codec::FUNCTION_CALL => {
                        Some(decide(gw, &mut ctx, frame, &buf).await)
                    }
                    codec::EXECUTE => Some(execute(gw, &mut ctx, frame, &buf)),
                    codec::BIND => {
                        match bind_needs_approval(&ctx, frame.body(&buf), gw.masking.key()) {
                            Some((statement, params)) => {
                                Some(hold::request_at_bind(gw, &mut ctx, statement, params).await)
                            }
                            None => {
                                bind(&mut ctx, frame.body(&buf), gw.masking.key());
                                sents.push(Sent::Bind);
                                None
                            }
                        }
                    }
                    codec::CLOSE => {
                        match codec::close_target(frame.body(&buf)) {
                            Some((b'S', name)) => {
                                ctx.statements.remove(&*String::from_utf8_lossy(name));
                            }
                            Some((b'P', name)) => {
                                ctx.portals.remove(&*String::from_utf8_lossy(name));
                            }
                            _ => {}
                        }
                        sents.push(Sent::Close);
                        None
                    }
                    codec::DESCRIBE => {
                        sents.push(Sent::Describe);
                        None
                    }
                    codec::SYNC => {
                        sents.push(Sent::Sync);
                        None
                    }
                    codec::TERMINATE => {
                        terminated = true;
                        break;
                    }
                    _ => None,
                };
                match step {
                    None => {}
                    Some(Outcome::Forward { sent, ticket }) => {
                        if ticket.is_some() {
                            needs = ticket;
                            plan.push(Piece::Raw(forwarded, frame.start));
                            plan.push(Piece::Stmt {
                                frame,
                                sent: sents.len(),
                            });
                            forwarded = frame.end;
                        }
                        sents.push(sent);
                    }
                    Some(Outcome::Hold(h)) => {
                        plan.push(Piece::Raw(forwarded, frame.start));
                        forwarded = frame.end;
                        held = Some((h, frame));
                        break;
                    }
                    Some(Outcome::Refuse { error, name }) => {
                        // Everything before the refused message goes as it came;
                        // the message itself is replaced.
                        let (substitute, sent) = refusals.substitute(frame.tag, name, error);
                        plan.push(Piece::Raw(forwarded, frame.start));
                        plan.push(Piece::Sub(frame.start, substitute));
                        sents.push(sent);
                        forwarded = frame.end;
                    }
                }
                if sents.len() > tracked {
                    sent_frames.push((frame, std::mem::take(&mut ctx.mask_pending)));
                }
            }
            plan.push(Piece::Raw(forwarded, at));
            if let Some(ticket) = needs
                && let Some(recorder) = recorder
                && let Err(e) = recorder.durable(ticket).await
            {
                refuse_unrecorded(
                    &mut plan, &mut sents, &buf, &refusals, &evidence, recorder, &e,
                );
            }
            // Bytes masking sends upstream ahead of a message (its probes of a
            // COPY's columns, a Describe), by the offset of that message.
            let mut ahead: Vec<(usize, BytesMut)> = Vec::new();
            {
                // Masking, like the tracker, learns what was sent before any
                // answer can arrive.
                let mut masker = ctx.masker.lock().unwrap_or_else(|p| p.into_inner());
                for (sent, (frame, pending)) in sents.iter().zip(sent_frames.iter_mut()) {
                    let pending = std::mem::take(pending);
                    if let Some(bytes) = masker.sent(*sent, frame.tag, frame.body(&buf), pending) {
                        ahead.push((frame.start, bytes));
                    }
                }
            }
            if recorder.is_some() {
                // The tracker learns what was sent before any answer can arrive.
                let mut ev = evidence.lock().unwrap_or_else(|p| p.into_inner());
                for (sent, (frame, _)) in sents.iter().zip(&sent_frames) {
                    ev.tracker.sent_message(*sent, frame.tag, frame.body(&buf));
                }
            }
            // The round goes upstream in one (vectored) write: its pieces,
            // with masking's bytes ahead of the messages they precede.
            let mut parts: Vec<&[u8]> = Vec::with_capacity(plan.len() + 2 * ahead.len());
            let mut ahead = ahead.iter().peekable();
            for piece in &plan {
                match piece {
                    Piece::Raw(from, to) if from < to => {
                        let mut at = *from;
                        while let Some((start, bytes)) = ahead.next_if(|(s, _)| s < to) {
                            parts.push(&buf[at..*start]);
                            parts.push(bytes);
                            at = *start;
                        }
                        parts.push(&buf[at..*to]);
                    }
                    Piece::Raw(..) => {}
                    Piece::Stmt { frame, .. } => {
                        while let Some((_, bytes)) = ahead.next_if(|(s, _)| *s <= frame.start) {
                            parts.push(bytes);
                        }
                        parts.push(&buf[frame.start..frame.end]);
                    }
                    Piece::Sub(start, bytes) => {
                        while let Some((_, bytes)) = ahead.next_if(|(s, _)| s <= start) {
                            parts.push(bytes);
                        }
                        parts.push(bytes);
                    }
                }
            }
            gather::write_all_parts(&mut up_wr, &parts).await?;
            drop(parts);
            let released = held.is_some();
            if let Some((h, frame)) = held.take() {
                up_wr.flush().await?;
                let _ = notice_tx.send(hold::notice(&h, &gw.config.approvals.notice));
                let limit = buf.len() + hold::HOLD_BUFFER;
                let release =
                    hold::release(gw, &mut ctx, *h, &mut client_rd, &mut buf, limit).await;
                let (bytes, sent) = match release {
                    hold::Release::ClientGone => return Ok(End::ClientClosed),
                    hold::Release::Run { sent, ticket } => {
                        let durable = match (ticket, recorder) {
                            (Some(t), Some(r)) => r.durable(t).await,
                            _ => Ok(()),
                        };
                        match durable {
                            Ok(()) => {
                                if frame.tag == codec::BIND {
                                    // The portal of the approved Bind, for its Execute.
                                    bind(&mut ctx, frame.body(&buf), gw.masking.key());
                                }
                                (BytesMut::from(&buf[frame.start..frame.end]), sent)
                            }
                            Err(e) => refusals.substitute(
                                frame.tag,
                                b"",
                                error_response(
                                    Severity::Error,
                                    SqlState::CannotConnectNow,
                                    &unrecorded_message(&e),
                                ),
                            ),
                        }
                    }
                    hold::Release::Refuse { error, name } => {
                        refusals.substitute(frame.tag, &name, error)
                    }
                };
                // Masking and the tracker pair this message's answers too.
                let ahead = ctx.masker.lock().unwrap_or_else(|p| p.into_inner()).sent(
                    sent,
                    frame.tag,
                    frame.body(&buf),
                    std::mem::take(&mut ctx.mask_pending),
                );
                if let Some(ahead) = ahead {
                    // Masking's probe of the released statement goes first.
                    up_wr.write_all(&ahead).await?;
                }
                if recorder.is_some() {
                    evidence
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .tracker
                        .sent_message(sent, frame.tag, frame.body(&buf));
                }
                up_wr.write_all(&bytes).await?;
            }
            if at > 0 {
                up_wr.flush().await?;
                buf.advance(at);
            }
            if released {
                // Bytes the client sent while it waited are framed now.
                continue;
            }
            if terminated {
                return Ok::<End, RelayError>(End::ClientTerminated);
            }
            // Grow toward a large declared message as its bytes arrive rather than
            // reserving all of it on the client's word.
            buf.reserve(codec::missing_bytes(&buf, 0).clamp(4096, 1 << 20));
            if client_rd.read_buf(&mut buf).await? == 0 {
                return Ok(End::ClientClosed);
            }
        }
    };

    let upstream_to_client = async {
        let mut buf = upstream.leftover;
        // Bytes of the current message still to pass through (header included).
        let mut passing = 0usize;
        let mut done: Vec<Completion> = Vec::new();
        // Which backend bodies result capture reads (see `Tracker::wants`).
        let wants = evidence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .tracker
            .wants();
        // What this round sends the client: ranges of `buf` and rewritten
        // messages, written together once the round's messages are read.
        let mut out = gather::Gather::default();
        loop {
            let mut i = 0;
            // The start of the bytes of `buf` not yet in `out`.
            let mut from = 0;
            loop {
                if passing > 0 {
                    let n = passing.min(buf.len() - i);
                    i += n;
                    passing -= n;
                    if passing > 0 {
                        break;
                    }
                    continue;
                }
                if buf.len() - i < 5 {
                    break;
                }
                let len =
                    u32::from_be_bytes([buf[i + 1], buf[i + 2], buf[i + 3], buf[i + 4]]) as usize;
                if len < 4 {
                    return Err(RelayError::Io(std::io::Error::other(
                        "upstream sent a bad message length",
                    )));
                }
                let tag = buf[i];
                // A masking session reads every backend message whole: masking
                // rewrites rows, COPY data and errors, and swallows the answers
                // to its own messages.
                let whole = masker.lock().unwrap_or_else(|p| p.into_inner()).active();
                // CommandComplete and ErrorResponse are read whole for evidence:
                // their tag and SQLSTATE complete a statement's record; so are
                // the RowDescriptions and DataRows its results are kept from.
                // Every wait for more bytes comes before anything is told of
                // this message.
                let tracked_whole = recorder.is_some()
                    && (matches!(tag, b'C' | b'E')
                        || (tag == b'T' && wants.0)
                        || (tag == b'D' && wants.1));
                let refused = tag == b'E' && refusals.pending();
                if (whole || tracked_whole || refused) && buf.len() - i < 1 + len {
                    break;
                }
                let end = if whole { i + 1 + len } else { i + 5 };
                let mut action =
                    match masking::backend(&masker, &catalog, &gw.masking, &buf[i..end]).await {
                        masking::Backend::Pass => None,
                        masking::Backend::Replace(ours) => Some(ours),
                        masking::Backend::Swallow => {
                            // The answer to Gatehouse's own message: the client
                            // and the evidence never asked for it.
                            out.buf(from, i);
                            i += 1 + len;
                            from = i;
                            continue;
                        }
                    };
                if tag == b'E' && refusals.pending() {
                    // An error while refusals wait: read it whole and see whether
                    // it is a substitute's.
                    if buf.len() - i < 1 + len {
                        break;
                    }
                    if let Some(ours) = refusals.replacement(&buf[i..i + 1 + len]) {
                        action = Some(ours);
                    }
                }
                if recorder.is_some() {
                    // The tracker reads what the client receives (masked rows).
                    let body = match (&action, tracked_whole) {
                        (Some(ours), true) => &ours[5..],
                        (None, true) => &buf[i + 5..i + 1 + len],
                        (_, false) => &[][..],
                    };
                    let mut ev = evidence.lock().unwrap_or_else(|p| p.into_inner());
                    done.clear();
                    ev.tracker.received(tag, body, &mut done);
                    if !done.is_empty() {
                        ev.complete(recorder, std::mem::take(&mut done));
                    }
                }
                if let Some(ours) = action {
                    out.buf(from, i);
                    out.own(ours);
                    i += 1 + len;
                    from = i;
                    continue;
                }
                passing = 1 + len;
            }
            out.buf(from, i);
            if !out.is_empty() {
                out.write_to(&mut client_wr, &buf).await?;
            }
            buf.advance(i);
            client_wr.flush().await?;
            buf.reserve(16384);
            tokio::select! {
                // Cancel safe: read_buf either read into buf or did nothing.
                n = up_rd.read_buf(&mut buf) => {
                    if n? == 0 {
                        return Ok::<End, RelayError>(End::UpstreamClosed);
                    }
                }
                // Only between two backend messages (`passing == 0`: everything
                // written so far ends on a message boundary).
                Some(notice) = notice_rx.recv(), if passing == 0 => {
                    client_wr.write_all(&notice).await?;
                    client_wr.flush().await?;
                }
            }
        }
    };

    // Cancel safety: whichever side finishes first ends the session; the other
    // future is dropped mid-read or mid-write, which loses nothing that matters
    // because both connections close right after.
    let result = tokio::select! {
        r = client_to_upstream => r,
        r = upstream_to_client => r,
    };
    match result {
        Ok(end) => {
            let _ = up_wr.shutdown().await;
            Ok(end)
        }
        Err(RelayError::Protocol(e)) => {
            tracing::warn!(kind = e.kind(), error = %e, "protocol_violation");
            let _ = client_wr.write_all(&fatal(&e)).await;
            let _ = client_wr.flush().await;
            Err(std::io::Error::other(e.to_string()))
        }
        Err(RelayError::Io(e)) => Err(e),
    }
}

/// What to do with a statement.
enum Outcome<'a> {
    /// Forward it untouched; `ticket`: only once that record is durable.
    Forward {
        /// What the tracker waits an answer for.
        sent: Sent,
        /// The statement's evidence record, for texts that run.
        ticket: Option<Ticket>,
    },
    /// Hold it for approval (see [`crate::approval`]); nothing goes upstream
    /// before the request is approved.
    Hold(Box<hold::Held>),
    /// Replace it with a substitute; the client gets `error`.
    Refuse {
        /// The encoded ErrorResponse for the client.
        error: BytesMut,
        /// The `Parse` statement name, kept in the substitute.
        name: &'a [u8],
    },
}

/// Decides one statement: cache, then the decision point within its timeout.
async fn decide<'b, D: DecisionPoint>(
    gw: &Gateway<D>,
    ctx: &mut SessionCtx,
    frame: codec::Frame,
    buf: &'b [u8],
) -> Outcome<'b> {
    let body = frame.body(buf);
    let (protocol, name, sql, function_oid) = match frame.tag {
        codec::FUNCTION_CALL => (
            ProtocolKind::FunctionCall,
            "",
            "",
            codec::function_oid(body),
        ),
        tag => match codec::statement_text(tag, body) {
            StatementText::Text { name, sql } => {
                let kind = if tag == codec::QUERY {
                    ProtocolKind::SimpleQuery
                } else {
                    ProtocolKind::Parse
                };
                (kind, name, sql, None)
            }
            // The server rejects these bytes itself and runs nothing (see
            // `StatementText::Unreadable`).
            StatementText::Unreadable => {
                let sent = if tag == codec::QUERY {
                    Sent::Query { stmt: None }
                } else {
                    Sent::Parse
                };
                return Outcome::Forward { sent, ticket: None };
            }
        },
    };
    ctx.seq += 1;
    let epoch = gw.decision.epoch();
    if ctx.class.0 != epoch {
        ctx.class = (epoch, gw.decision.identity_class(&ctx.role, &ctx.identity));
    }
    let class = ctx.class.1;
    // Exact text first; then, for a plain SELECT, its shape (literals blanked),
    // under which only verdicts the decider marked literal-invariant are stored.
    // The shape key starts with a NUL, which no statement text can contain.
    let mut shape_key: Option<String> = None;
    let generation = || ctx.catalog.generation();
    let mut cached = gw
        .cache
        .get(epoch, class, &ctx.role, protocol, sql, generation);
    if cached.is_none()
        && let Some(shape) = gatehouse_decider::shape(sql)
    {
        let key = format!("\0{shape}");
        cached = gw
            .cache
            .get(epoch, class, &ctx.role, protocol, &key, generation);
        shape_key = Some(key);
    }
    let decision = match cached {
        Some(d) => Ok(d),
        None => {
            let event = StatementEvent {
                v: SCHEMA_VERSION,
                session_id: ctx.id,
                seq: ctx.seq,
                role: Cow::Borrowed(&ctx.role),
                identity: Cow::Borrowed(&ctx.identity),
                protocol,
                statement_name: (!name.is_empty()).then_some(Cow::Borrowed(name)),
                sql: Cow::Borrowed(sql),
                function_oid,
            };
            let timeout = gw.config.decider.timeout;
            // Read before the look-ups: DDL meanwhile makes the verdict stale.
            let generation = ctx.catalog.generation();
            // A masked caller's views, and the functions any caller's
            // statement calls, are looked up and decided within the same
            // timeout.
            let decided = masking::views::decide(&gw.decision, &ctx.catalog, &event, &ctx.prepared);
            match tokio::time::timeout(timeout, decided).await {
                Ok(Ok(masking::views::Decided {
                    decision: d,
                    catalog_until,
                })) => {
                    let catalog = catalog_until.map(|until| CatalogState { generation, until });
                    if d.shape_cacheable
                        && let Some(key) = &shape_key
                    {
                        gw.cache
                            .put(epoch, class, &ctx.role, protocol, key, d.clone(), catalog);
                    } else if d.cacheable {
                        gw.cache
                            .put(epoch, class, &ctx.role, protocol, sql, d.clone(), catalog);
                    }
                    Ok(d)
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(DecisionError::Unavailable(format!(
                    "no verdict within {timeout:?}"
                ))),
            }
        }
    };
    let decision = match decision {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(seq = ctx.seq, error = %e, "statement_refused_unavailable");
            // Without a verdict it is not known whether a mask applies to the
            // caller: the text is recorded with its literals withheld.
            let statement = Statement {
                verdict: "block".into(),
                reason: Some(e.to_string()),
                sql: gatehouse_decider::classify::literal_free(sql),
                ..statement_record(protocol.into(), name, "", function_oid, None, false, b"")
            };
            // Refused either way; a failed record is logged inside.
            let _ = record_statement(gw, ctx, statement);
            let err = error_response(
                Severity::Error,
                SqlState::CannotConnectNow,
                "statement refused: the policy service is unavailable (Gatehouse fails closed); retry later",
            );
            return Outcome::Refuse {
                error: err,
                name: name.as_bytes(),
            };
        }
    };
    tracing::debug!(
        seq = ctx.seq,
        protocol = ?protocol,
        verdict = decision.verdict.name(),
        rule = decision.rule.as_deref().unwrap_or(""),
        policy = %decision.policy_version,
        sql = %masking::values::shown_sql(&decision, sql, gw.masking.key()),
        "statement"
    );
    ctx.masked_caller |= masking::values::masked_caller(&decision);
    for hit in &decision.shadow {
        tracing::info!(seq = ctx.seq, rule = %hit.rule, would = hit.verdict.name(), "shadow_rule_matched");
    }
    if let Verdict::Approve { .. } = &decision.verdict
        && gw.approvals.is_some()
        && protocol != ProtocolKind::FunctionCall
    {
        let statement = statement_record(
            protocol.into(),
            name,
            sql,
            None,
            Some(&decision),
            false,
            gw.masking.key(),
        );
        let params = (protocol == ProtocolKind::Parse)
            .then(|| {
                let view = ParamView::of(Some(&decision), ctx.masked_caller);
                bound_params(gw, frame, buf, name, view)
            })
            .flatten();
        return hold::request(gw, ctx, protocol, statement, params, name, &decision).await;
    }
    let mut refusal = refusal_message(&decision).map(|m| (SqlState::InsufficientPrivilege, m));
    if refusal.is_none()
        && protocol == ProtocolKind::Parse
        && ctx.statements.len() >= MAX_STATEMENTS
        && !ctx.statements.contains_key(name)
    {
        refusal = Some((
            SqlState::ConfigurationLimitExceeded,
            format!(
                "too many prepared statements in this session (Gatehouse tracks at most {MAX_STATEMENTS}); close some first"
            ),
        ));
    }
    // Without evidence nothing reads the record, and placing a masked caller's
    // values for it means tokenizing the text: it is not built.
    let recorded = match gw.evidence {
        None => Ok(None),
        Some(_) => {
            let statement = statement_record(
                protocol.into(),
                name,
                sql,
                function_oid,
                Some(&decision),
                refusal.is_none(),
                gw.masking.key(),
            );
            record_statement(gw, ctx, statement)
        }
    };
    let ticket = match recorded {
        Ok(ticket) => ticket,
        Err(e) => {
            if refusal.is_none() {
                refusal = Some((SqlState::CannotConnectNow, unrecorded_message(&e)));
            }
            None
        }
    };
    match refusal {
        None => {
            ctx.remember_prepared(&decision);
            if protocol != ProtocolKind::FunctionCall {
                let tag = if protocol == ProtocolKind::Parse {
                    codec::PARSE
                } else {
                    codec::QUERY
                };
                let mut masker = ctx.masker.lock().unwrap_or_else(|p| p.into_inner());
                ctx.mask_pending = masker.decided(tag, name, sql, &decision);
            }
            let sent = match protocol {
                ProtocolKind::Parse => {
                    let prepared = Arc::new(Prepared {
                        sql: sql.to_owned(),
                        decision: Some(decision.clone()),
                        approval: None,
                    });
                    ctx.statements.insert(name.to_owned(), prepared);
                    Sent::Parse
                }
                ProtocolKind::SimpleQuery => {
                    // A simple query drops the unnamed statement.
                    ctx.statements.remove("");
                    Sent::Query {
                        stmt: Some(ctx.last_seq()),
                    }
                }
                ProtocolKind::FunctionCall => Sent::FunctionCall {
                    stmt: Some(ctx.last_seq()),
                },
            };
            let ticket = if protocol == ProtocolKind::Parse {
                None
            } else {
                ticket
            };
            Outcome::Forward { sent, ticket }
        }
        Some((state, message)) => {
            tracing::info!(
                seq = ctx.seq,
                verdict = decision.verdict.name(),
                rule = decision.rule.as_deref().unwrap_or("default-deny"),
                policy = %decision.policy_version,
                "statement_refused"
            );
            let err = error_response(Severity::Error, state, &message);
            Outcome::Refuse {
                error: err,
                name: name.as_bytes(),
            }
        }
    }
}

/// The client's message when a statement's evidence could not be recorded.
fn unrecorded_message(e: &EvidenceError) -> String {
    format!(
        "statement refused: its evidence could not be recorded ({e}); Gatehouse runs nothing unrecorded, retry later"
    )
}

/// A statement event's body, without parameters. `key` keys the `hash`
/// method for values shown masked.
fn statement_record(
    path: StatementPath,
    name: &str,
    sql: &str,
    function_oid: Option<u32>,
    decision: Option<&Decision>,
    forwarded: bool,
    key: &[u8],
) -> Statement {
    let reason = decision.and_then(|d| match &d.verdict {
        Verdict::Block { reason } | Verdict::Approve { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    // A masked caller's statement may carry a masked value in a literal
    // (`insert ... values ('123-45-6789')`), whatever its verdict: evidence
    // shows it masked (see `masking::values`).
    Statement {
        path,
        statement_name: (!name.is_empty()).then(|| name.to_owned()),
        portal: None,
        sql: match decision {
            Some(d) => masking::values::shown_sql(d, sql, key).into_owned(),
            None => sql.to_owned(),
        },
        function_oid,
        params: None,
        verdict: decision.map_or("block", |d| d.verdict.name()).to_owned(),
        rule: decision.and_then(|d| d.rule.clone()),
        reason,
        policy_version: decision.map(|d| d.policy_version.clone()),
        classes: decision
            .map(|d| d.statements.iter().flat_map(statement_classes).collect())
            .unwrap_or_default(),
        shadow: decision.map(|d| d.shadow.clone()).unwrap_or_default(),
        forwarded,
        approval: None,
        objects: decision.map(StatementObjects::of),
    }
}

/// A statement's classes, primary first (a decider that predates several
/// classes a statement sends its one class alone).
fn statement_classes(s: &gatehouse_schemas::decision::StatementSummary) -> Vec<String> {
    if s.classes.is_empty() {
        vec![s.class.clone()]
    } else {
        s.classes.clone()
    }
}

/// Records a statement event. `Ok(None)`: this gateway records no evidence.
fn record_statement(
    gw: &Gateway<impl DecisionPoint>,
    ctx: &mut SessionCtx,
    statement: Statement,
) -> Result<Option<Ticket>, EvidenceError> {
    record_statement_counted(gw, ctx, statement, true)
}

/// [`record_statement`]; `count`: whether it is a statement the session's count
/// has not seen yet (a held statement released is counted when it was held).
fn record_statement_counted(
    gw: &Gateway<impl DecisionPoint>,
    ctx: &mut SessionCtx,
    statement: Statement,
    count: bool,
) -> Result<Option<Ticket>, EvidenceError> {
    let forwarded = statement.forwarded;
    let mut ev = ctx.evidence.lock().unwrap_or_else(|p| p.into_inner());
    if count {
        ev.statements += 1;
    }
    if !forwarded {
        ev.refused += 1;
    }
    match ev.record(gw.evidence.as_deref(), EventBody::Statement(statement)) {
        None => Ok(None),
        Some(Ok((seq, ticket))) => {
            ctx.last_recorded = seq;
            Ok(Some(ticket))
        }
        Some(Err(e)) => {
            if forwarded {
                ev.refused += 1;
            }
            tracing::warn!(error = %e, "statement_refused_evidence_unavailable");
            Err(e)
        }
    }
}

/// An `Execute`: recorded as the statement its portal runs, with its parameters.
fn execute<'b, D: DecisionPoint>(
    gw: &Gateway<D>,
    ctx: &mut SessionCtx,
    frame: codec::Frame,
    buf: &'b [u8],
) -> Outcome<'b> {
    let portal_name = codec::execute_portal(frame.body(buf)).unwrap_or_default();
    let approval = ctx
        .portals
        .get(&*String::from_utf8_lossy(portal_name))
        .and_then(|p| Some((p.prepared.approval.as_ref()?, &p.digest)))
        .map(|((id, used, approved), digest)| {
            // Approved with known parameters: only with those (compared by
            // their values: what the approver saw may be withheld under a mask).
            let other = approved.is_some_and(|a| *digest != Some(a));
            let used = used.swap(true, std::sync::atomic::Ordering::AcqRel);
            (id.clone(), other || used)
        });
    if let Some((id, true)) = &approval {
        return Outcome::Refuse {
            error: error_response(
                Severity::Error,
                SqlState::InsufficientPrivilege,
                &format!(
                    "approval request {id} authorized one execution of this statement with the parameters shown to the approver; prepare it again for a new approval"
                ),
            ),
            name: b"",
        };
    }
    if gw.evidence.is_none() {
        return Outcome::Forward {
            sent: Sent::Execute { stmt: None },
            ticket: None,
        };
    }
    let portal = codec::execute_portal(frame.body(buf))
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let mut statement = match ctx.portals.get(&portal) {
        Some(Portal {
            prepared, params, ..
        }) => Statement {
            params: Some(params.clone()),
            ..statement_record(
                StatementPath::Execute,
                "",
                &prepared.sql,
                None,
                prepared.decision.as_deref(),
                true,
                gw.masking.key(),
            )
        },
        // A portal Gatehouse did not bind: a SQL cursor (`DECLARE`), whose query
        // was decided and recorded when it was declared; or none at all, which
        // the server refuses.
        None => Statement {
            verdict: "allow".into(),
            reason: Some(
                "portal not bound through the gateway (a SQL cursor, decided at DECLARE)".into(),
            ),
            ..statement_record(StatementPath::Execute, "", "", None, None, true, b"")
        },
    };
    statement.portal = (!portal.is_empty()).then_some(portal);
    statement.approval = approval.map(|(id, _)| id);
    if let Some(name) = ctx
        .portals
        .get(statement.portal.as_deref().unwrap_or(""))
        .map(|p| p.prepared.clone())
    {
        statement.statement_name = ctx
            .statements
            .iter()
            .find(|(_, v)| Arc::ptr_eq(v, &name))
            .map(|(k, _)| k.clone())
            .filter(|k| !k.is_empty());
    }
    match record_statement(gw, ctx, statement) {
        Ok(ticket) => Outcome::Forward {
            sent: Sent::Execute {
                stmt: Some(ctx.last_recorded),
            },
            ticket,
        },
        Err(e) => Outcome::Refuse {
            error: error_response(
                Severity::Error,
                SqlState::CannotConnectNow,
                &unrecorded_message(&e),
            ),
            name: b"",
        },
    }
}

/// A `Bind`: remembers the portal's statement and parameters for its `Execute`.
/// `key` keys the `hash` method for parameters shown masked.
fn bind(ctx: &mut SessionCtx, body: &[u8], key: &[u8]) {
    let Some(b) = codec::bind(body) else { return };
    let statement = String::from_utf8_lossy(b.statement);
    let prepared = match ctx.statements.get(&*statement) {
        Some(p) => p.clone(),
        None => match ctx.prepared.get(&*statement) {
            // A statement prepared with SQL PREPARE (decided then).
            Some(inner) => Arc::new(Prepared {
                sql: inner.clone(),
                decision: None,
                approval: None,
            }),
            None => return,
        },
    };
    let portal = String::from_utf8_lossy(b.portal).into_owned();
    if ctx.portals.len() >= MAX_STATEMENTS && !ctx.portals.contains_key(&portal) {
        // Its Execute is then recorded without its statement text.
        return;
    }
    let digest = prepared.approval.is_some().then(|| params_digest(&b));
    let view = ParamView::of(prepared.decision.as_deref(), ctx.masked_caller);
    let params = recorded_params(&b, view, MAX_RECORDED_PARAMS, key);
    ctx.portals.insert(
        portal,
        Portal {
            prepared,
            params,
            digest,
        },
    );
}

/// SHA-256 over a `Bind`'s parameter values (format, length, bytes): what an
/// approval with parameters is checked against at `Execute`.
fn params_digest(b: &codec::Bind<'_>) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for (binary, value) in &b.params {
        h.update([u8::from(*binary)]);
        match value {
            None => h.update((-1i64).to_be_bytes()),
            Some(v) => {
                h.update((v.len() as i64).to_be_bytes());
                h.update(v);
            }
        }
    }
    h.finalize().into()
}

/// Parameters as an approval request shows them, and the digest of their values
/// ([`params_digest`]) it is enforced on.
type BoundParams = (Vec<Param>, [u8; 32]);

/// A `Bind` that needs an approval of its own: its statement was approved at its
/// `Parse` without parameters (the client bound only after the `Parse` round
/// trip), and this `Bind` carries some. The approval must cover the parameters
/// that run, so they are held and requested again. Returns the statement's name
/// and the parameters.
fn bind_needs_approval<'b>(
    ctx: &SessionCtx,
    body: &'b [u8],
    key: &[u8],
) -> Option<(&'b str, BoundParams)> {
    let b = codec::bind(body)?;
    if b.params.is_empty() {
        // Nothing bound: the approved text is exactly what runs.
        return None;
    }
    let name = std::str::from_utf8(b.statement).ok()?;
    let prepared = ctx.statements.get(name)?;
    let (_, _, approved) = prepared.approval.as_ref()?;
    // Under a mask, values are masked or withheld in the request (enforced by
    // digest).
    let view = ParamView::of(prepared.decision.as_deref(), ctx.masked_caller);
    approved.is_none().then(|| {
        let shown = recorded_params(&b, view, MAX_RECORDED_PARAMS, key);
        (name, (shown, params_digest(&b)))
    })
}

/// The parameters of the `Bind` of statement `name` that follows its `Parse` in
/// the same batch (libpq's `PQexecParams`, pipelines), so an approval binds them
/// too; `None` when the client binds later (then the approval covers the text,
/// for one execution).
fn bound_params<D: DecisionPoint>(
    gw: &Gateway<D>,
    parse: codec::Frame,
    buf: &[u8],
    name: &str,
    view: ParamView<'_>,
) -> Option<(Vec<Param>, [u8; 32])> {
    let mut at = parse.end;
    while let Ok(Some(f)) = codec::next_frontend_frame(buf, at, gw.config.ingress.max_message_size)
    {
        at = f.end;
        match f.tag {
            codec::BIND => {
                let b = codec::bind(f.body(buf))?;
                return (b.statement == name.as_bytes()).then(|| {
                    let shown = recorded_params(&b, view, MAX_RECORDED_PARAMS, gw.masking.key());
                    (shown, params_digest(&b))
                });
            }
            codec::DESCRIBE => {}
            _ => return None,
        }
    }
    None
}

/// The record of a batch's statements could not be made durable: each statement
/// that would have run is replaced by a refusal, and its evidence says so.
fn refuse_unrecorded(
    plan: &mut [Piece],
    sents: &mut [Sent],
    buf: &[u8],
    refusals: &Refusals,
    evidence: &Mutex<SessionEvidence>,
    recorder: &Recorder,
    e: &EvidenceError,
) {
    tracing::warn!(error = %e, "statements_refused_evidence_not_durable");
    let mut ev = evidence.lock().unwrap_or_else(|p| p.into_inner());
    for piece in plan.iter_mut() {
        let Piece::Stmt { frame, sent } = piece else {
            continue;
        };
        let stmt = match sents[*sent] {
            Sent::Query { stmt } | Sent::FunctionCall { stmt } | Sent::Execute { stmt } => stmt,
            _ => None,
        };
        let error = error_response(
            Severity::Error,
            SqlState::CannotConnectNow,
            &unrecorded_message(e),
        );
        let name: &[u8] = match frame.tag {
            codec::PARSE => match codec::statement_text(codec::PARSE, frame.body(buf)) {
                StatementText::Text { name, .. } => name.as_bytes(),
                StatementText::Unreadable => b"",
            },
            _ => b"",
        };
        let (substitute, new_sent) = refusals.substitute(frame.tag, name, error);
        sents[*sent] = new_sent;
        *piece = Piece::Sub(frame.start, substitute);
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
            let _ = ev.record(Some(recorder), body);
        }
    }
}

/// One part of what a batch of client bytes becomes upstream.
enum Piece {
    /// `buf[from..to]`, as it came.
    Raw(usize, usize),
    /// A statement that runs: forwarded once its record is durable, else
    /// replaced. `sent` indexes its tracker entry.
    Stmt { frame: codec::Frame, sent: usize },
    /// A refused message's substitute, standing where the message started.
    Sub(usize, BytesMut),
}

/// The client's TLS, for the session's evidence.
fn tls_info(stream: &ClientStream) -> Option<TlsInfo> {
    let MaybeTls::Tls(tls) = stream else {
        return None;
    };
    let conn = tls.get_ref().1;
    Some(TlsInfo {
        version: conn
            .protocol_version()
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_owned(),
        cipher: conn
            .negotiated_cipher_suite()
            .and_then(|c| c.suite().as_str())
            .unwrap_or("unknown")
            .to_owned(),
        sni: conn.server_name().map(str::to_owned),
    })
}

/// The client's message for a verdict that does not let the statement run.
fn refusal_message(d: &Decision) -> Option<String> {
    let rule = d.rule.as_deref();
    match &d.verdict {
        Verdict::Allow => None,
        Verdict::Block { reason } => Some(match rule {
            Some(r) => format!("statement blocked by policy rule \"{r}\": {reason}"),
            None => format!("statement blocked by policy: {reason}"),
        }),
        // Approval is executed by a component this gateway does not run yet; a
        // statement that needs it is refused rather than let through.
        Verdict::Approve {
            reason, approvers, ..
        } => Some(format!(
            "statement requires approval by \"{approvers}\" under policy rule \"{}\" ({reason}); this gateway does not run approvals, so it is refused",
            rule.unwrap_or("?")
        )),
        // Masked in flight (see `masking`).
        Verdict::Mask { .. } => None,
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
