//! The start of a connection: encryption negotiation, the startup message,
//! the caller's token, the role, the upstream connection, and the session's
//! first evidence; ends in a typed [`Started`] or a closed connection.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::BytesMut;
use gatehouse_schemas::Identity;
use gatehouse_schemas::evidence::{CiContext, EventBody, SessionStarted, TlsInfo};
use pgwire::messages::response::{ReadyForQuery, TransactionStatus};
use pgwire::messages::startup::{
    Authentication, BackendKeyData, NegotiateProtocolVersion, ParameterStatus, SecretKey, Startup,
};
use pgwire::messages::{
    DecodeContext, Message, PgWireFrontendMessage, ProtocolVersion, SslNegotiationMetaMessage,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::Gateway;
use crate::auth::{Verified, may_assume};
use crate::cancel::CancelGuard;
use crate::decision::DecisionPoint;
use crate::error::{StartupError, UserFacing, fatal};
use crate::evidence::Chain;
use crate::protocol::codec;
use crate::tls::{ClientStream, MaybeTls};
use crate::upstream::{self, Upstream};

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
pub(super) enum Phase {
    /// Reading `SSLRequest`/`GSSENCRequest`/`CancelRequest`/`StartupMessage`.
    Negotiating,
    /// Asked for the token, waiting for the `PasswordMessage`.
    Authenticating,
    /// Token accepted; connecting and authenticating to the upstream.
    Connecting,
    /// Statements flow both ways.
    Relaying,
}

/// A session that started: the client (authenticated, told it is ready), the
/// upstream, and what the session is.
pub(super) struct Started {
    /// The client's stream.
    pub client: ClientStream,
    /// Client bytes read past its password message (a client may pipeline
    /// statements right behind it).
    pub pending: BytesMut,
    /// The upstream, authenticated with the gateway's credential.
    pub upstream: Upstream,
    /// The role assumed.
    pub role: String,
    /// The caller.
    pub identity: Identity,
    /// The session's evidence chain (`None`: evidence off).
    pub chain: Option<Chain>,
    /// The session's cancel key, removed when dropped.
    pub cancel: CancelGuard,
}

/// Encryption negotiation up to the startup message (or a cancel request,
/// served here). `None` when the connection ended.
async fn negotiate<D: DecisionPoint>(
    gw: &Gateway<D>,
    tcp: TcpStream,
) -> Option<(ClientStream, BytesMut, Startup)> {
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
    Some((stream, buf, startup))
}

/// Negotiation, startup, authentication and upstream connection. `None` when the
/// connection ended (an error was already sent, or a cancel request was served).
/// Cancel safety: meant to run under the authentication deadline; dropped
/// there, the connection closes with nothing of the session begun.
pub(super) async fn run<D: DecisionPoint>(
    gw: &Gateway<D>,
    tcp: TcpStream,
    id: Uuid,
    peer: SocketAddr,
    phase: &mut Phase,
) -> Option<Started> {
    let (mut stream, mut buf, startup) = negotiate(gw, tcp).await?;
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
            Some(Started {
                client: stream,
                pending: buf,
                upstream,
                role,
                identity: verified.identity,
                chain,
                cancel: guard,
            })
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
