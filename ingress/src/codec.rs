//! Framing of the post-startup protocol, kept deliberately thin: Gatehouse reads
//! message headers and the few bodies it must inspect, and forwards the bytes
//! themselves untouched.
//!
//! pgwire's own decoders read strings with `from_utf8_lossy`; the decision point
//! must see exactly the bytes the server will execute, so statement texts are
//! taken from the raw frame here (see [`statement_text`]).
//! <https://www.postgresql.org/docs/current/protocol-message-formats.html>

use bytes::BytesMut;
use pgwire::messages::{DecodeContext, PgWireFrontendMessage};

use crate::error::ProtocolError;

/// `Query`.
pub const QUERY: u8 = b'Q';
/// `Parse`.
pub const PARSE: u8 = b'P';
/// `FunctionCall`.
pub const FUNCTION_CALL: u8 = b'F';
/// `Terminate`.
pub const TERMINATE: u8 = b'X';
/// `Bind`.
pub const BIND: u8 = b'B';
/// `Execute`.
pub const EXECUTE: u8 = b'E';
/// `Close`.
pub const CLOSE: u8 = b'C';
/// `Describe`.
pub const DESCRIBE: u8 = b'D';
/// `Sync`.
pub const SYNC: u8 = b'S';

/// The most a connection buffers while reading one startup-phase message:
/// PostgreSQL's `MAX_STARTUP_PACKET_LENGTH` (10000 bytes), which pgwire also
/// applies to the declared length, plus a message header.
pub const MAX_STARTUP_BUFFER: usize = 10_000 + 8;

/// Decodes the startup-phase message at the front of `buf`: what `ctx` expects
/// (an `SSLRequest` or `GSSENCRequest`, a `StartupMessage` or `CancelRequest`,
/// then the password message). `Ok(None)`: more bytes are needed, and the
/// buffer is still within [`MAX_STARTUP_BUFFER`], so the reader may read more.
pub fn startup_message(
    buf: &mut BytesMut,
    ctx: &DecodeContext,
) -> Result<Option<PgWireFrontendMessage>, ProtocolError> {
    // pgwire 0.42.1 takes a body of `length - 4` bytes without checking the
    // length first (a password message of length 0 panicked in it); lengths
    // PostgreSQL itself rejects are refused here: a startup packet holds at
    // least its length and a code, a typed message at least its length.
    let (offset, min) = if ctx.awaiting_frontend_ssl || ctx.awaiting_frontend_startup {
        (0, 8)
    } else {
        (1, 4)
    };
    // After the startup packet only the password message may come (as
    // PostgreSQL requires); any other type is refused unread, since pgwire's
    // decoders of the others panic on a malformed body (a `Parse` did).
    if offset == 1
        && let Some(&tag) = buf.first()
        && tag != b'p'
    {
        return Err(ProtocolError::BadType(char::from(tag)));
    }
    if let Some(len) = buf.get(offset..offset + 4) {
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len < min {
            return Err(ProtocolError::BadLength(len));
        }
    }
    match PgWireFrontendMessage::decode(buf, ctx)? {
        Some(m) => Ok(Some(m)),
        None if buf.len() > MAX_STARTUP_BUFFER => Err(ProtocolError::TooLarge {
            len: buf.len(),
            max: MAX_STARTUP_BUFFER,
        }),
        None => Ok(None),
    }
}

/// Whether `tag` is a message a client may send once the session is established.
fn is_frontend_tag(tag: u8) -> bool {
    matches!(
        tag,
        b'Q' | b'P' | b'B' | b'E' | b'D' | b'C' | b'H' | b'S' | b'X' | b'd' | b'c' | b'f' | b'F'
    )
}

/// A complete client message inside a read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Message type.
    pub tag: u8,
    /// Offset of the type byte in the buffer.
    pub start: usize,
    /// Offset one past the last byte.
    pub end: usize,
}

impl Frame {
    /// The body (after type and length).
    pub fn body<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start + 5..self.end]
    }
}

/// Finds the complete client message at `buf[at..]`, checking its type and bound.
/// `Ok(None)` means more bytes are needed.
pub fn next_frontend_frame(
    buf: &[u8],
    at: usize,
    max: usize,
) -> Result<Option<Frame>, ProtocolError> {
    let rest = &buf[at..];
    let Some(&tag) = rest.first() else {
        return Ok(None);
    };
    if !is_frontend_tag(tag) {
        return Err(ProtocolError::BadType(tag as char));
    }
    if rest.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
    if len < 4 {
        return Err(ProtocolError::BadLength(len));
    }
    if len > max {
        return Err(ProtocolError::TooLarge { len, max });
    }
    if rest.len() < 1 + len {
        return Ok(None);
    }
    Ok(Some(Frame {
        tag,
        start: at,
        end: at + 1 + len,
    }))
}

/// How many more bytes the incomplete frame at `buf[at..]` needs, so the reader
/// can reserve once instead of growing repeatedly.
pub fn missing_bytes(buf: &[u8], at: usize) -> usize {
    let rest = &buf[at..];
    if rest.len() < 5 {
        return 5 - rest.len();
    }
    let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
    (1 + len).saturating_sub(rest.len())
}

/// The text the server will read from a NUL-terminated string field: the bytes up
/// to the first NUL (PostgreSQL's `pq_getmsgstring`), and the rest of the body.
/// A missing terminator yields `None`; the server rejects that message itself.
fn cstring(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = body.iter().position(|&b| b == 0)?;
    Some((&body[..nul], &body[nul + 1..]))
}

/// A statement text ready for the decision point.
#[derive(Debug, PartialEq, Eq)]
pub enum StatementText<'a> {
    /// Valid UTF-8: decided.
    Text {
        /// Prepared statement name (`Parse` only; empty for the unnamed one).
        name: &'a str,
        /// The SQL.
        sql: &'a str,
    },
    /// Bytes the server cannot run: not NUL-terminated, or not valid in the
    /// server's UTF8 encoding. The session checked at startup that the server
    /// validates client text against UTF8 (server_encoding UTF8, client_encoding
    /// UTF8 or SQL_ASCII), so forwarding them yields PostgreSQL's own error and
    /// runs nothing; the session survives as it would without Gatehouse.
    Unreadable,
}

/// Extracts the SQL of a `Query` or `Parse` body.
pub fn statement_text(tag: u8, body: &[u8]) -> StatementText<'_> {
    let parsed = match tag {
        QUERY => cstring(body).map(|(sql, _)| (&b""[..], sql)),
        PARSE => cstring(body).and_then(|(name, rest)| cstring(rest).map(|(sql, _)| (name, sql))),
        _ => None,
    };
    match parsed {
        Some((name, sql)) => match (std::str::from_utf8(name), std::str::from_utf8(sql)) {
            (Ok(name), Ok(sql)) => StatementText::Text { name, sql },
            _ => StatementText::Unreadable,
        },
        None => StatementText::Unreadable,
    }
}

/// The function OID of a `FunctionCall` body.
pub fn function_oid(body: &[u8]) -> Option<u32> {
    body.get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// A `Bind` message's names and parameter values.
#[derive(Debug, PartialEq, Eq)]
pub struct Bind<'a> {
    /// Portal name (empty: the unnamed portal).
    pub portal: &'a [u8],
    /// Prepared statement name (empty: the unnamed statement).
    pub statement: &'a [u8],
    /// Each parameter: whether it is in binary format, and its bytes (`None`: NULL).
    pub params: Vec<(bool, Option<&'a [u8]>)>,
}

/// Reads a `Bind` body; `None` when malformed (the server rejects it itself).
pub fn bind(body: &[u8]) -> Option<Bind<'_>> {
    let (portal, rest) = cstring(body)?;
    let (statement, rest) = cstring(rest)?;
    // Capacities come from the bytes there are, never from a count the client
    // declares: a 10-byte `Bind` claiming 32767 parameters must not cost
    // 800 KB (each format takes 2 bytes, each parameter at least 4).
    let (nformats, mut rest) = take_i16(rest)?;
    let mut formats = Vec::with_capacity(usize::try_from(nformats).ok()?.min(rest.len() / 2));
    for _ in 0..nformats {
        let (f, r) = take_i16(rest)?;
        formats.push(f == 1);
        rest = r;
    }
    let (nparams, mut rest) = take_i16(rest)?;
    let nparams = usize::try_from(nparams).ok()?;
    let mut params = Vec::with_capacity(nparams.min(rest.len() / 4));
    for i in 0..nparams {
        let binary = match formats.len() {
            0 => false,
            1 => formats[0],
            _ => *formats.get(i)?,
        };
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = &rest[4..];
        if len < 0 {
            params.push((binary, None));
        } else {
            let len = usize::try_from(len).ok()?;
            params.push((binary, Some(rest.get(..len)?)));
            rest = &rest[len..];
        }
    }
    Some(Bind {
        portal,
        statement,
        params,
    })
}

fn take_i16(b: &[u8]) -> Option<(i16, &[u8])> {
    Some((i16::from_be_bytes(b.get(..2)?.try_into().ok()?), &b[2..]))
}

/// The portal an `Execute` runs.
pub fn execute_portal(body: &[u8]) -> Option<&[u8]> {
    cstring(body).map(|(portal, _)| portal)
}

/// What a `Close` closes: `b'S'` (statement) or `b'P'` (portal), and its name.
pub fn close_target(body: &[u8]) -> Option<(u8, &[u8])> {
    let (&kind, rest) = body.split_first()?;
    cstring(rest).map(|(name, _)| (kind, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn splits_pipelined_frames_and_waits_for_partial_ones() {
        let mut buf = frame(b'P', b"s1\0select 1\0\0\0");
        buf.extend(frame(b'S', b""));
        let whole = buf.len();
        buf.extend(&frame(b'Q', b"select 2\0")[..3]);
        let f1 = next_frontend_frame(&buf, 0, 1 << 20).unwrap().unwrap();
        assert_eq!(f1.tag, b'P');
        let f2 = next_frontend_frame(&buf, f1.end, 1 << 20).unwrap().unwrap();
        assert_eq!((f2.tag, f2.end), (b'S', whole));
        assert_eq!(next_frontend_frame(&buf, f2.end, 1 << 20).unwrap(), None);
        assert_eq!(missing_bytes(&buf, f2.end), 2);
    }

    #[test]
    fn rejects_bad_types_lengths_and_oversize() {
        assert!(matches!(
            next_frontend_frame(b"Z\0\0\0\x04", 0, 100),
            Err(ProtocolError::BadType('Z'))
        ));
        assert!(matches!(
            next_frontend_frame(b"p\0\0\0\x04", 0, 100),
            Err(ProtocolError::BadType('p'))
        ));
        assert!(matches!(
            next_frontend_frame(b"Q\0\0\0\x03", 0, 100),
            Err(ProtocolError::BadLength(3))
        ));
        assert!(matches!(
            next_frontend_frame(b"Q\x7f\0\0\0", 0, 100),
            Err(ProtocolError::TooLarge { .. })
        ));
    }

    #[test]
    fn bind_reads_names_formats_and_values() {
        let mut body = b"p1\0s1\0".to_vec();
        body.extend_from_slice(&2i16.to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&3i16.to_be_bytes());
        body.extend_from_slice(&2i32.to_be_bytes());
        body.extend_from_slice(b"42");
        body.extend_from_slice(&4i32.to_be_bytes());
        body.extend_from_slice(&[0, 0, 0, 7]);
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
        // Three parameters but only two format codes: malformed.
        assert_eq!(bind(&body), None);
        let mut ok = b"\0s\0".to_vec();
        ok.extend_from_slice(&1i16.to_be_bytes());
        ok.extend_from_slice(&1i16.to_be_bytes());
        ok.extend_from_slice(&2i16.to_be_bytes());
        ok.extend_from_slice(&1i32.to_be_bytes());
        ok.push(9);
        ok.extend_from_slice(&(-1i32).to_be_bytes());
        ok.extend_from_slice(&0i16.to_be_bytes());
        let b = bind(&ok).unwrap();
        assert_eq!((b.portal, b.statement), (&b""[..], &b"s"[..]));
        assert_eq!(b.params, vec![(true, Some(&[9u8][..])), (true, None)]);
        assert_eq!(bind(&ok[..ok.len() - 7]), None, "truncated");
        assert_eq!(execute_portal(b"p\0\0\0\0\0"), Some(&b"p"[..]));
        assert_eq!(close_target(b"Sname\0"), Some((b'S', &b"name"[..])));
    }

    #[test]
    fn bind_allocates_by_its_bytes_not_its_declared_counts() {
        // Found by the `frontend` fuzz target: 32767 formats and parameters
        // declared, a few bytes present.
        let mut body = b"\0\0".to_vec();
        body.extend_from_slice(&i16::MAX.to_be_bytes());
        body.extend_from_slice(&[0; 6]);
        let mut ok = b"\0\0".to_vec();
        ok.extend_from_slice(&0i16.to_be_bytes());
        ok.extend_from_slice(&i16::MAX.to_be_bytes());
        ok.extend_from_slice(&(-1i32).to_be_bytes());
        for body in [body, ok] {
            let info = allocation_counter::measure(|| {
                std::hint::black_box(bind(&body));
            });
            assert!(
                info.bytes_max <= 64 * body.len() as u64,
                "{} bytes held for a {}-byte Bind",
                info.bytes_max,
                body.len()
            );
        }
    }

    #[test]
    fn startup_lengths_below_the_minimum_and_other_types_are_refused() {
        // Found by the `frontend` fuzz target: a password message of length 0
        // made pgwire subtract 4 from 0.
        let mut password = DecodeContext::new(pgwire::messages::ProtocolVersion::PROTOCOL3_0);
        password.awaiting_frontend_ssl = false;
        password.awaiting_frontend_startup = false;
        for len in 0..4u32 {
            let mut buf = BytesMut::from(&b"p"[..]);
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(b"token\0");
            assert!(matches!(
                startup_message(&mut buf, &password),
                Err(ProtocolError::BadLength(_))
            ));
        }
        let fresh = DecodeContext::new(pgwire::messages::ProtocolVersion::PROTOCOL3_0);
        for len in 0..8u32 {
            let mut buf = BytesMut::from(&len.to_be_bytes()[..]);
            buf.extend_from_slice(&196_608u32.to_be_bytes());
            buf.extend_from_slice(b"user\0u\0\0");
            assert!(matches!(
                startup_message(&mut buf, &fresh),
                Err(ProtocolError::BadLength(_))
            ));
        }
        // Found by the `frontend` fuzz target: a malformed `Parse` instead of
        // the password panicked in pgwire's decoder.
        let mut buf = BytesMut::from(&b"P\0\0\0\x09\0s\0\0\x02"[..]);
        assert!(matches!(
            startup_message(&mut buf, &password),
            Err(ProtocolError::BadType('P'))
        ));
        let mut buf = BytesMut::from(&b"p\0\0\0\x0atoken\0"[..]);
        assert!(matches!(
            startup_message(&mut buf, &password),
            Ok(Some(PgWireFrontendMessage::PasswordMessageFamily(_)))
        ));
    }

    #[test]
    fn statement_text_reads_what_the_server_reads() {
        assert_eq!(
            statement_text(QUERY, b"select 1\0"),
            StatementText::Text {
                name: "",
                sql: "select 1"
            }
        );
        // PostgreSQL stops at the first NUL; trailing bytes are its own error.
        assert_eq!(
            statement_text(QUERY, b"select 1\0; drop table x\0"),
            StatementText::Text {
                name: "",
                sql: "select 1"
            }
        );
        assert_eq!(
            statement_text(PARSE, b"stmt\0select $1\0\0\x01\0\0\0\x17"),
            StatementText::Text {
                name: "stmt",
                sql: "select $1"
            }
        );
        assert_eq!(
            statement_text(QUERY, b"select 1"),
            StatementText::Unreadable
        );
        assert_eq!(
            statement_text(QUERY, b"select '\xff'\0"),
            StatementText::Unreadable
        );
        assert_eq!(
            statement_text(PARSE, b"only-a-name\0"),
            StatementText::Unreadable
        );
    }
}
