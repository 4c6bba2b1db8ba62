//! Connects to a role's upstream PostgreSQL and authenticates with the gateway's
//! credential (SCRAM-SHA-256, md5, cleartext or trust, as the server asks).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pgwire::messages::response::ErrorResponse;
use pgwire::messages::startup::{
    Authentication, Password, PasswordMessageFamily, SASLInitialResponse, SASLResponse, Startup,
};
use pgwire::messages::{DecodeContext, Message, PgWireBackendMessage, ProtocolVersion};
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{Secret, UpstreamConfig};
use crate::error::UpstreamError;
use crate::tls::{MaybeTls, UpstreamStream};

/// `SSLRequest` code. <https://www.postgresql.org/docs/current/protocol-message-formats.html>
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Everything needed to reach one role's upstream; built once per role.
#[derive(Clone)]
pub struct UpstreamTarget {
    /// Host, port, database.
    pub config: UpstreamConfig,
    /// Upstream user.
    pub user: String,
    /// Upstream password.
    pub password: Secret,
    /// TLS client config (`None`: plain TCP).
    pub tls: Option<Arc<ClientConfig>>,
    /// Name checked against the certificate.
    pub server_name: ServerName<'static>,
}

impl UpstreamTarget {
    /// Role `name`'s upstream as its config gives it: password resolved from
    /// wherever the config keeps it, TLS material loaded.
    pub fn for_role(
        name: &str,
        rc: &crate::config::RoleConfig,
    ) -> Result<Self, crate::error::ConfigError> {
        Ok(Self {
            config: rc.upstream.clone(),
            user: rc.user.clone(),
            password: rc.resolve_password(name)?,
            tls: crate::tls::upstream_config(&rc.upstream)?,
            server_name: crate::tls::upstream_server_name(&rc.upstream)?,
        })
    }

    /// `host:port`, for logs.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.config.host, self.config.port)
    }

    /// Opens a TCP connection, with TLS when configured.
    pub async fn open(&self) -> Result<UpstreamStream, UpstreamError> {
        let addr = self.addr();
        let tcp = TcpStream::connect((self.config.host.as_str(), self.config.port))
            .await
            .map_err(|source| UpstreamError::Connect { addr, source })?;
        tcp.set_nodelay(true)?;
        let Some(tls) = &self.tls else {
            return Ok(MaybeTls::Plain(tcp));
        };
        let mut tcp = tcp;
        tcp.write_all(&SSL_REQUEST).await?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await?;
        if answer[0] != b'S' {
            return Err(UpstreamError::TlsRefused);
        }
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(UpstreamError::Tls)?;
        Ok(MaybeTls::Tls(Box::new(stream)))
    }
}

/// An authenticated upstream session, ready for queries.
pub struct Upstream {
    /// The connection.
    pub stream: UpstreamStream,
    /// `ParameterStatus` values reported at startup, in order.
    pub parameters: Vec<(String, String)>,
    /// The upstream's cancel key: pid and secret.
    pub backend_key: (i32, i32),
    /// Bytes the upstream sent after its first `ReadyForQuery` (normally none).
    pub leftover: BytesMut,
}

/// Connects and authenticates; `params` are the client's startup parameters that
/// Gatehouse passes on.
pub async fn connect(
    target: &UpstreamTarget,
    params: &BTreeMap<String, String>,
) -> Result<Upstream, UpstreamError> {
    let mut stream = target.open().await?;
    let mut startup = Startup::new();
    startup.parameters = params.clone();
    startup
        .parameters
        .insert("user".into(), target.user.clone());
    startup
        .parameters
        .insert("database".into(), target.config.dbname.clone());
    send(&mut stream, &startup).await?;

    let ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    let mut buf = BytesMut::with_capacity(4096);
    let mut scram: Option<ScramSha256> = None;
    let mut parameters = Vec::new();
    let mut backend_key = None;
    loop {
        let msg = recv(&mut stream, &mut buf, &ctx).await?;
        match msg {
            PgWireBackendMessage::Authentication(auth) => match auth {
                Authentication::Ok => {}
                Authentication::CleartextPassword => {
                    let pw = Password::new(target.password.expose().to_owned());
                    send(&mut stream, &PasswordMessageFamily::Password(pw)).await?;
                }
                Authentication::MD5Password(salt) => {
                    let salt: [u8; 4] = salt
                        .as_slice()
                        .try_into()
                        .map_err(|_| UpstreamError::Protocol("md5 salt".into()))?;
                    let hash = postgres_protocol::authentication::md5_hash(
                        target.user.as_bytes(),
                        target.password.expose().as_bytes(),
                        salt,
                    );
                    send(
                        &mut stream,
                        &PasswordMessageFamily::Password(Password::new(hash)),
                    )
                    .await?;
                }
                Authentication::SASL(mechanisms) => {
                    if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
                        return Err(UpstreamError::UnsupportedAuth("SASL without SCRAM-SHA-256"));
                    }
                    // Channel binding is not negotiated (flag 'n'): the upstream is
                    // authenticated by TLS certificate verification instead.
                    let s = ScramSha256::new(
                        target.password.expose().as_bytes(),
                        ChannelBinding::unsupported(),
                    );
                    let init = SASLInitialResponse::new(
                        SCRAM_SHA_256.to_owned(),
                        Some(Bytes::copy_from_slice(s.message())),
                    );
                    send(
                        &mut stream,
                        &PasswordMessageFamily::SASLInitialResponse(init),
                    )
                    .await?;
                    scram = Some(s);
                }
                Authentication::SASLContinue(data) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| UpstreamError::Protocol("unexpected SASLContinue".into()))?;
                    s.update(&data)
                        .map_err(|e| UpstreamError::AuthRejected(e.to_string()))?;
                    let resp = SASLResponse::new(Bytes::copy_from_slice(s.message()));
                    send(&mut stream, &PasswordMessageFamily::SASLResponse(resp)).await?;
                }
                Authentication::SASLFinal(data) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| UpstreamError::Protocol("unexpected SASLFinal".into()))?;
                    // Verifies the server's signature: the server proved it knows
                    // the credential too.
                    s.finish(&data)
                        .map_err(|e| UpstreamError::AuthRejected(e.to_string()))?;
                }
                Authentication::KerberosV5 => {
                    return Err(UpstreamError::UnsupportedAuth("KerberosV5"));
                }
                _ => return Err(UpstreamError::UnsupportedAuth("unknown")),
            },
            PgWireBackendMessage::ParameterStatus(p) => parameters.push((p.name, p.value)),
            PgWireBackendMessage::BackendKeyData(k) => {
                let secret = k.secret_key.as_i32().ok_or_else(|| {
                    UpstreamError::Protocol("cancel key longer than 4 bytes".into())
                })?;
                backend_key = Some((k.pid, secret));
            }
            PgWireBackendMessage::NoticeResponse(_) => {}
            PgWireBackendMessage::ErrorResponse(e) => return Err(refused(e)),
            PgWireBackendMessage::ReadyForQuery(_) => break,
            other => {
                return Err(UpstreamError::Protocol(format!(
                    "unexpected {other:?} during startup"
                )));
            }
        }
    }
    if let Some((_, enc)) = parameters.iter().find(|(k, _)| k == "server_encoding")
        && !enc.eq_ignore_ascii_case("UTF8")
    {
        return Err(UpstreamError::Encoding(enc.clone()));
    }
    let backend_key =
        backend_key.ok_or_else(|| UpstreamError::Protocol("no BackendKeyData".into()))?;
    Ok(Upstream {
        stream,
        parameters,
        backend_key,
        leftover: buf,
    })
}

fn refused(e: ErrorResponse) -> UpstreamError {
    let field = |t: u8| {
        e.fields
            .iter()
            .find(|(k, _)| *k == t)
            .map(|(_, v)| v.clone())
    };
    let code = field(b'C').unwrap_or_else(|| "08006".into());
    let message = field(b'M').unwrap_or_default();
    if code.starts_with("28") {
        UpstreamError::AuthRejected(message)
    } else {
        UpstreamError::Refused { code, message }
    }
}

async fn send<M: Message>(stream: &mut UpstreamStream, msg: &M) -> Result<(), UpstreamError> {
    let mut out = BytesMut::new();
    msg.encode(&mut out)
        .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
    stream.write_all(&out).await?;
    Ok(())
}

async fn recv(
    stream: &mut UpstreamStream,
    buf: &mut BytesMut,
    ctx: &DecodeContext,
) -> Result<PgWireBackendMessage, UpstreamError> {
    loop {
        if let Some(msg) = PgWireBackendMessage::decode(buf, ctx)
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?
        {
            return Ok(msg);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(UpstreamError::Protocol(
                "connection closed during startup".into(),
            ));
        }
    }
}

/// Sends a `CancelRequest` for the upstream backend `(pid, secret)`.
pub async fn cancel(target: &UpstreamTarget, key: (i32, i32)) -> Result<(), UpstreamError> {
    let mut stream = target.open().await?;
    let mut msg = Vec::with_capacity(16);
    msg.extend_from_slice(&16u32.to_be_bytes());
    msg.extend_from_slice(&80877102u32.to_be_bytes());
    msg.extend_from_slice(&key.0.to_be_bytes());
    msg.extend_from_slice(&key.1.to_be_bytes());
    stream.write_all(&msg).await?;
    stream.flush().await?;
    // The server closes the connection without an answer once it has acted.
    let mut sink = [0u8; 1];
    let _ = stream.read(&mut sink).await;
    Ok(())
}
