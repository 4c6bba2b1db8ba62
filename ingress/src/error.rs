//! Errors of the ingress, and the one place where each becomes what a client reads.
//!
//! What a client may see is an allowlist: every error implements [`UserFacing`],
//! whose message is written for the client and never carries a token, a key, a
//! credential or an upstream address. The full cause goes to the log.

use bytes::BytesMut;
use pgwire::messages::Message;
use pgwire::messages::response::{ErrorResponse, NoticeResponse};

/// SQLSTATE codes Gatehouse sends itself.
/// <https://www.postgresql.org/docs/current/errcodes-appendix.html>
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlState {
    /// 08006: the upstream could not be reached or refused the gateway.
    ConnectionFailure,
    /// 08P01: the client broke the wire protocol.
    ProtocolViolation,
    /// 0A000: something the gateway does not support.
    FeatureNotSupported,
    /// 28000: the caller's identity was not accepted.
    InvalidAuthorization,
    /// 28P01: the password (token) was not accepted.
    InvalidPassword,
    /// 3D000: the requested database is not served by the role.
    InvalidCatalogName,
    /// 42501: not permitted.
    InsufficientPrivilege,
    /// 57P01: the gateway is shutting down.
    AdminShutdown,
    /// 57P03: a service the gateway depends on is unavailable.
    CannotConnectNow,
    /// 53400: a per-session limit was reached.
    ConfigurationLimitExceeded,
    /// 57014: a held statement's approval expired or was withdrawn.
    QueryCanceled,
}

impl SqlState {
    /// The five-character code.
    pub fn code(self) -> &'static str {
        match self {
            Self::ConnectionFailure => "08006",
            Self::ProtocolViolation => "08P01",
            Self::FeatureNotSupported => "0A000",
            Self::InvalidAuthorization => "28000",
            Self::InvalidPassword => "28P01",
            Self::InvalidCatalogName => "3D000",
            Self::InsufficientPrivilege => "42501",
            Self::AdminShutdown => "57P01",
            Self::CannotConnectNow => "57P03",
            Self::ConfigurationLimitExceeded => "53400",
            Self::QueryCanceled => "57014",
        }
    }
}

/// Severity of a message to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The session ends.
    Fatal,
}

/// An error a client may read.
pub trait UserFacing {
    /// The SQLSTATE the client gets.
    fn sqlstate(&self) -> SqlState;
    /// The message the client gets.
    fn client_message(&self) -> String;
    /// A short, stable name of the error kind: the log field and metric label.
    fn kind(&self) -> &'static str;
}

/// Builds an `ErrorResponse` frame.
pub fn error_response(severity: Severity, state: SqlState, message: &str) -> BytesMut {
    let sev = match severity {
        Severity::Error => "ERROR",
        Severity::Fatal => "FATAL",
    };
    let msg = ErrorResponse::new(vec![
        (b'S', sev.to_owned()),
        (b'V', sev.to_owned()),
        (b'C', state.code().to_owned()),
        (b'M', message.to_owned()),
    ]);
    let mut buf = BytesMut::with_capacity(msg.message_length() + 1);
    // Encoding a message we built ourselves cannot exceed pgwire's limits.
    msg.encode(&mut buf).expect("ErrorResponse within limits");
    buf
}

/// Builds a `NoticeResponse` frame.
pub fn notice_response(message: &str) -> BytesMut {
    let msg = NoticeResponse::new(vec![
        (b'S', "NOTICE".to_owned()),
        (b'V', "NOTICE".to_owned()),
        (b'C', "00000".to_owned()),
        (b'M', message.to_owned()),
    ]);
    let mut buf = BytesMut::new();
    msg.encode(&mut buf).expect("NoticeResponse within limits");
    buf
}

/// Builds the FATAL `ErrorResponse` for an error.
pub fn fatal(err: &dyn UserFacing) -> BytesMut {
    error_response(Severity::Fatal, err.sqlstate(), &err.client_message())
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Not three base64url parts with JSON inside.
    #[error("token is not a well-formed JWT")]
    Malformed,
    /// `iss` names no configured issuer.
    #[error("token issuer is not trusted")]
    UnknownIssuer,
    /// The header's `alg` is not on the issuer's allowlist.
    #[error("token algorithm {0} is not allowed")]
    AlgorithmNotAllowed(String),
    /// No key with the token's `kid`, even after refreshing the issuer's keys.
    #[error("token signing key is unknown")]
    UnknownKey,
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` is in the past.
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token is not valid yet")]
    NotYetValid,
    /// No accepted audience in `aud`.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// A claim Gatehouse needs is absent or of the wrong type.
    #[error("token lacks a valid {0} claim")]
    MissingClaim(String),
    /// The issuer's keys could not be loaded.
    #[error("signing keys of the token issuer are unavailable")]
    KeysUnavailable,
}

impl UserFacing for AuthError {
    fn sqlstate(&self) -> SqlState {
        match self {
            Self::Malformed
            | Self::UnknownIssuer
            | Self::AlgorithmNotAllowed(_)
            | Self::UnknownKey
            | Self::BadSignature
            | Self::Expired
            | Self::NotYetValid
            | Self::WrongAudience
            | Self::MissingClaim(_) => SqlState::InvalidPassword,
            Self::KeysUnavailable => SqlState::InvalidAuthorization,
        }
    }
    fn client_message(&self) -> String {
        format!("token rejected: {self}")
    }
    fn kind(&self) -> &'static str {
        match self {
            Self::Malformed => "token_malformed",
            Self::UnknownIssuer => "token_unknown_issuer",
            Self::AlgorithmNotAllowed(_) => "token_algorithm_not_allowed",
            Self::UnknownKey => "token_unknown_key",
            Self::BadSignature => "token_bad_signature",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::WrongAudience => "token_wrong_audience",
            Self::MissingClaim(_) => "token_missing_claim",
            Self::KeysUnavailable => "token_keys_unavailable",
        }
    }
}

/// Why the upstream connection failed. Details stay in the log.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed or timed out.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// host:port, for the log only.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The upstream refused TLS while the role requires it.
    #[error("upstream does not support TLS")]
    TlsRefused,
    /// TLS handshake or certificate verification failed.
    #[error("TLS to upstream: {0}")]
    Tls(std::io::Error),
    /// The upstream rejected the gateway's credential.
    #[error("upstream rejected the gateway credential: {0}")]
    AuthRejected(String),
    /// The upstream sent an error during startup other than an authentication one.
    #[error("upstream refused the connection: {message}")]
    Refused {
        /// The upstream's SQLSTATE, passed on to the client.
        code: String,
        /// The upstream's message.
        message: String,
    },
    /// The upstream asked for an authentication method Gatehouse does not speak.
    #[error("upstream asked for unsupported authentication method {0}")]
    UnsupportedAuth(&'static str),
    /// The upstream's database does not use UTF8, which the statement path relies on.
    #[error("upstream server_encoding is {0}, Gatehouse requires UTF8")]
    Encoding(String),
    /// The upstream broke the protocol or closed the connection.
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    /// Reading or writing the upstream socket failed.
    #[error("upstream i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Connecting and authenticating took longer than allowed.
    #[error("upstream did not finish startup in time")]
    Timeout,
}

/// Why a client's startup ended before the session began.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The startup `user` names no role.
    #[error("unknown role {0:?}")]
    UnknownRole(String),
    /// The startup message had no `user`.
    #[error("no user in startup message")]
    NoUser,
    /// The identity may not assume the role.
    #[error("identity {subject:?} may not assume role {role:?}")]
    RoleNotAllowed {
        /// The role asked for.
        role: String,
        /// The caller's `sub`.
        subject: String,
    },
    /// The token would travel without TLS and the config does not allow that.
    #[error("token sent without TLS")]
    CleartextWithoutTls,
    /// A startup parameter Gatehouse does not pass on.
    #[error("startup parameter {0:?} is not allowed")]
    ParameterRefused(String),
    /// A client encoding whose byte sequences Gatehouse cannot read safely.
    #[error("client_encoding {0:?} is not supported")]
    EncodingRefused(String),
    /// The client asked for a database the role does not serve.
    #[error("database {asked:?} is not served by role {role:?}")]
    DatabaseMismatch {
        /// The database asked for.
        asked: String,
        /// The role.
        role: String,
    },
    /// A major protocol version other than 3.
    #[error("unsupported frontend protocol {0}.{1}")]
    UnsupportedProtocol(u16, u16),
    /// The client sent something else than the phase allows.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The client hung up before authenticating (health probes such as
    /// `pg_isready` do this on purpose).
    #[error("client disconnected during startup")]
    ClientGone,
    /// Token validation failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The upstream side failed.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The session's start could not be recorded (nothing may run unrecorded).
    #[error("evidence unavailable: {0}")]
    EvidenceUnavailable(String),
}

impl UserFacing for StartupError {
    fn sqlstate(&self) -> SqlState {
        match self {
            Self::UnknownRole(_) | Self::NoUser | Self::RoleNotAllowed { .. } => {
                SqlState::InvalidAuthorization
            }
            Self::CleartextWithoutTls => SqlState::InvalidAuthorization,
            Self::ParameterRefused(_) => SqlState::InsufficientPrivilege,
            Self::EncodingRefused(_) => SqlState::FeatureNotSupported,
            Self::DatabaseMismatch { .. } => SqlState::InvalidCatalogName,
            Self::UnsupportedProtocol(..) => SqlState::FeatureNotSupported,
            Self::Protocol(_) | Self::ClientGone => SqlState::ProtocolViolation,
            Self::Auth(e) => e.sqlstate(),
            Self::EvidenceUnavailable(_) => SqlState::CannotConnectNow,
            Self::Upstream(e) => match e {
                UpstreamError::Connect { .. }
                | UpstreamError::TlsRefused
                | UpstreamError::Tls(_)
                | UpstreamError::AuthRejected(_)
                | UpstreamError::UnsupportedAuth(_)
                | UpstreamError::Encoding(_)
                | UpstreamError::Protocol(_)
                | UpstreamError::Io(_)
                | UpstreamError::Timeout
                | UpstreamError::Refused { .. } => SqlState::ConnectionFailure,
            },
        }
    }

    fn client_message(&self) -> String {
        match self {
            Self::UnknownRole(role) => format!("role \"{role}\" is not configured in Gatehouse"),
            Self::NoUser => "no user (Gatehouse role) in startup message".into(),
            Self::RoleNotAllowed { role, .. } => {
                format!("token rejected: this identity is not allowed to assume role \"{role}\"")
            }
            Self::CleartextWithoutTls => {
                "token rejected: connect with TLS (sslmode=require or stronger); this gateway does not accept tokens over unencrypted connections".into()
            }
            Self::ParameterRefused(p) => {
                format!("startup parameter \"{p}\" is not allowed through Gatehouse")
            }
            Self::EncodingRefused(e) => {
                format!("client_encoding \"{e}\" is not supported by Gatehouse; use UTF8")
            }
            Self::DatabaseMismatch { asked, role } => {
                format!("database \"{asked}\" is not served by role \"{role}\"")
            }
            Self::UnsupportedProtocol(major, minor) => {
                format!("unsupported frontend protocol {major}.{minor}: Gatehouse speaks 3.0")
            }
            Self::Protocol(what) => format!("protocol violation: {what}"),
            Self::ClientGone => "client disconnected".into(),
            Self::Auth(e) => e.client_message(),
            Self::EvidenceUnavailable(_) => {
                "Gatehouse cannot record evidence right now, and nothing runs unrecorded; retry later".into()
            }
            Self::Upstream(e) => match e {
                UpstreamError::Refused { message, .. } => {
                    format!("upstream database refused the connection: {message}")
                }
                UpstreamError::AuthRejected(_) => {
                    "upstream database rejected the gateway's credential for this role".into()
                }
                UpstreamError::Encoding(enc) => {
                    format!("upstream database uses encoding {enc}; Gatehouse requires UTF8")
                }
                UpstreamError::Connect { .. }
                | UpstreamError::TlsRefused
                | UpstreamError::Tls(_)
                | UpstreamError::UnsupportedAuth(_)
                | UpstreamError::Protocol(_)
                | UpstreamError::Io(_)
                | UpstreamError::Timeout => {
                    "could not connect to the upstream database for this role".into()
                }
            },
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::UnknownRole(_) => "unknown_role",
            Self::NoUser => "no_user",
            Self::RoleNotAllowed { .. } => "role_not_allowed",
            Self::CleartextWithoutTls => "cleartext_without_tls",
            Self::ParameterRefused(_) => "parameter_refused",
            Self::EncodingRefused(_) => "encoding_refused",
            Self::DatabaseMismatch { .. } => "database_mismatch",
            Self::UnsupportedProtocol(..) => "unsupported_protocol",
            Self::Protocol(_) => "protocol_violation",
            Self::ClientGone => "client_gone",
            Self::EvidenceUnavailable(_) => "evidence_unavailable",
            Self::Auth(e) => e.kind(),
            Self::Upstream(UpstreamError::Connect { .. }) => "upstream_unreachable",
            Self::Upstream(UpstreamError::TlsRefused | UpstreamError::Tls(_)) => "upstream_tls",
            Self::Upstream(UpstreamError::AuthRejected(_)) => "upstream_auth_rejected",
            Self::Upstream(UpstreamError::Refused { .. }) => "upstream_refused",
            Self::Upstream(UpstreamError::UnsupportedAuth(_)) => "upstream_unsupported_auth",
            Self::Upstream(UpstreamError::Encoding(_)) => "upstream_encoding",
            Self::Upstream(UpstreamError::Protocol(_) | UpstreamError::Io(_)) => {
                "upstream_protocol"
            }
            Self::Upstream(UpstreamError::Timeout) => "upstream_timeout",
        }
    }
}

/// A client broke the protocol; the connection closes.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A startup-phase message (`SSLRequest`, `StartupMessage`, the password,
    /// ...) that pgwire could not decode.
    #[error("invalid startup packet: {0}")]
    Startup(#[from] pgwire::error::PgWireError),
    /// A message longer than `max_message_size`.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A length field below 4.
    #[error("invalid message length {0}")]
    BadLength(usize),
    /// A message type that is not valid after startup.
    #[error("invalid frontend message type {0:?}")]
    BadType(char),
    /// A message that does not hold what its type requires.
    #[error("invalid {0} message format")]
    BadFormat(&'static str),
}

impl UserFacing for ProtocolError {
    fn sqlstate(&self) -> SqlState {
        match self {
            Self::Startup(_)
            | Self::TooLarge { .. }
            | Self::BadLength(_)
            | Self::BadType(_)
            | Self::BadFormat(_) => SqlState::ProtocolViolation,
        }
    }
    fn client_message(&self) -> String {
        self.to_string()
    }
    fn kind(&self) -> &'static str {
        match self {
            Self::Startup(_) => "bad_startup_packet",
            Self::TooLarge { .. } => "message_too_large",
            Self::BadLength(_) => "bad_length",
            Self::BadType(_) => "bad_message_type",
            Self::BadFormat(_) => "bad_message_format",
        }
    }
}

/// The configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading or parsing failed.
    #[error(transparent)]
    Load(#[from] config::ConfigError),
    /// Values that do not fit together.
    #[error("{0}")]
    Invalid(String),
    /// A TLS file could not be used.
    #[error("{0}")]
    Tls(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgwire::messages::{DecodeContext, PgWireBackendMessage};

    #[test]
    fn error_response_roundtrips() {
        let mut buf = error_response(Severity::Fatal, SqlState::InvalidPassword, "token rejected");
        let ctx = DecodeContext::default();
        match PgWireBackendMessage::decode(&mut buf, &ctx).unwrap() {
            Some(PgWireBackendMessage::ErrorResponse(e)) => {
                assert!(e.fields.contains(&(b'C', "28P01".into())));
                assert!(e.fields.contains(&(b'S', "FATAL".into())));
                assert!(e.fields.contains(&(b'M', "token rejected".into())));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn auth_errors_name_the_check_and_use_28p01() {
        let cases = [
            (AuthError::Expired, "expired"),
            (AuthError::WrongAudience, "audience"),
            (AuthError::UnknownIssuer, "issuer"),
            (AuthError::UnknownKey, "key is unknown"),
            (AuthError::BadSignature, "signature"),
            (AuthError::AlgorithmNotAllowed("HS256".into()), "HS256"),
        ];
        for (err, needle) in cases {
            assert_eq!(err.sqlstate(), SqlState::InvalidPassword);
            assert!(
                err.client_message().contains(needle),
                "{}",
                err.client_message()
            );
        }
    }
}
