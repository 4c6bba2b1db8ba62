//! Fuzz target: everything the ingress reads from a client before and after
//! startup. The input is a client's byte stream, delivered in reads of a size
//! the input chooses: first (when its first byte is odd) the startup phase
//! (`SSLRequest`/`GSSENCRequest`, `StartupMessage` or `CancelRequest`, the
//! password message) through `codec::startup_message`, as the session drives
//! it; then the rest framed by `codec::next_frontend_frame` under a configured
//! `max_message_size`, each frame's body read by every reader the session and
//! masking apply to it.
//!
//! Properties: nothing panics; frames lie within the buffer and the bound; the
//! reader is never told to wait for more than the bound; a `Bind`'s values lie
//! within its body, and the two `Bind` readers (evidence, masking) agree on
//! its names; and the heap held while decoding one message stays linear in
//! the configured bound, never in a count or length the client declares.
#![no_main]

use bytes::{Buf, BytesMut};
use gatehouse_fuzz::alloc::{Metered, peak_during};
use gatehouse_ingress::codec::{self, MAX_STARTUP_BUFFER, StatementText};
use gatehouse_ingress::masking::values::{ParamView, recorded_params};
use gatehouse_ingress::masking::wire;
use libfuzzer_sys::fuzz_target;
use pgwire::messages::{
    DecodeContext, PgWireFrontendMessage, ProtocolVersion, SslNegotiationMetaMessage,
};

#[global_allocator]
static ALLOC: Metered = Metered;

/// The `max_message_size` this target configures: small, so that any
/// allocation driven by a declared count instead of by the bytes shows.
const MAX: usize = 4096;

/// What decoding one message may hold on the heap: a small multiple of the
/// bytes it may span (a `Bind`'s parameter list costs 24 bytes for each
/// parameter of at least 4 bytes).
const fn heap_bound(bytes: usize) -> usize {
    8 * bytes + 1024
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some((&read, mut input)) = rest.split_first() else {
        return;
    };
    let read = usize::from(read) + 1;
    let mut feed = |buf: &mut BytesMut| -> bool {
        if input.is_empty() {
            return false;
        }
        let n = read.min(input.len());
        buf.extend_from_slice(&input[..n]);
        input = &input[n..];
        true
    };
    let mut buf = BytesMut::new();
    if mode & 1 == 1 && !startup(&mut buf, &mut feed) {
        return;
    }
    relay(&mut buf, &mut feed);
});

/// What the session does after one startup-phase message.
enum Step {
    /// Reads the next one.
    Next,
    /// Authenticated: relaying begins.
    Relay,
    /// The connection ends.
    End,
}

/// The startup phase, as `session::startup` and `authenticate` drive it.
/// `false` when the connection would end here.
fn startup(buf: &mut BytesMut, feed: &mut impl FnMut(&mut BytesMut) -> bool) -> bool {
    let mut ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    let mut requests = 0;
    loop {
        let (step, peak) = peak_during(|| match codec::startup_message(buf, &ctx) {
            Ok(Some(m)) => Some(step(m, &mut ctx, &mut requests)),
            Ok(None) => None,
            Err(_) => Some(Step::End),
        });
        assert!(
            peak <= heap_bound(MAX_STARTUP_BUFFER + 256),
            "startup decoding held {peak} bytes"
        );
        match step {
            Some(Step::Next) => {}
            Some(Step::Relay) => return true,
            Some(Step::End) => return false,
            None => {
                assert!(buf.len() <= MAX_STARTUP_BUFFER, "buffered past the bound");
                if !feed(buf) {
                    return false;
                }
            }
        }
    }
}

/// What the session does with one startup-phase message.
fn step(m: PgWireFrontendMessage, ctx: &mut DecodeContext, requests: &mut u32) -> Step {
    match m {
        PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::None) => {
            ctx.awaiting_frontend_ssl = false;
            Step::Next
        }
        PgWireFrontendMessage::SslNegotiation(_) if ctx.awaiting_frontend_ssl => {
            // The session answers `N` (no TLS configured here) once each.
            *requests += 1;
            if *requests <= 2 {
                Step::Next
            } else {
                Step::End
            }
        }
        PgWireFrontendMessage::Startup(_) if ctx.awaiting_frontend_startup => {
            // Then the password, decoded with a fresh context.
            ctx.awaiting_frontend_ssl = false;
            ctx.awaiting_frontend_startup = false;
            Step::Next
        }
        PgWireFrontendMessage::PasswordMessageFamily(p) if !ctx.awaiting_frontend_startup => {
            match p.into_password() {
                Ok(_) => Step::Relay,
                Err(_) => Step::End,
            }
        }
        _ => Step::End,
    }
}

/// After startup: framing and the body readers.
fn relay(buf: &mut BytesMut, feed: &mut impl FnMut(&mut BytesMut) -> bool) {
    loop {
        let mut at = 0;
        loop {
            match codec::next_frontend_frame(buf, at, MAX) {
                Ok(Some(f)) => {
                    assert_eq!(f.start, at);
                    assert!(f.end <= buf.len() && f.end >= f.start + 5);
                    assert!(f.end - f.start - 1 <= MAX, "frame over the bound");
                    let body = f.body(buf);
                    let ((), peak) = peak_during(|| read_body(f.tag, body));
                    assert!(
                        peak <= heap_bound(MAX),
                        "reading a {:?} body of {} bytes held {peak} bytes",
                        char::from(f.tag),
                        body.len()
                    );
                    at = f.end;
                }
                Ok(None) => {
                    let missing = codec::missing_bytes(buf, at);
                    assert!(missing <= MAX + 1, "told to wait for {missing} bytes");
                    break;
                }
                Err(_) => return,
            }
        }
        buf.advance(at);
        if !feed(buf) {
            return;
        }
    }
}

/// Every reader the session, evidence and masking apply to a client body.
fn read_body(tag: u8, body: &[u8]) {
    match tag {
        codec::QUERY | codec::PARSE => {
            if let StatementText::Text { name, sql } = codec::statement_text(tag, body) {
                assert!(!sql.contains('\0') && !name.contains('\0'));
                assert!(name.len() + sql.len() < body.len());
            }
        }
        codec::BIND => {
            let evidence = codec::bind(body);
            let masking = wire::bind_formats(body);
            if let Some(b) = &evidence {
                let values: usize = b
                    .params
                    .iter()
                    .filter_map(|(_, v)| v.map(<[u8]>::len))
                    .sum();
                assert!(values + b.portal.len() + b.statement.len() <= body.len());
                let _ = recorded_params(b, ParamView::Clear, 1024, b"k");
                let _ = recorded_params(b, ParamView::Withheld, 1024, b"k");
            }
            if let (Some(b), Some((portal, statement, _))) = (&evidence, &masking) {
                assert_eq!(String::from_utf8_lossy(b.portal), *portal);
                assert_eq!(String::from_utf8_lossy(b.statement), *statement);
            }
        }
        codec::EXECUTE => {
            let _ = codec::execute_portal(body);
        }
        codec::CLOSE | codec::DESCRIBE => {
            let _ = codec::close_target(body);
        }
        codec::FUNCTION_CALL => {
            let _ = codec::function_oid(body);
        }
        _ => {}
    }
}
