//! Refusing a statement exactly where it stood.
//!
//! A refused statement never reaches PostgreSQL, yet the upstream must end in the
//! state PostgreSQL itself would have left: a failed transaction inside a block,
//! the rest of an extended-protocol pipeline skipped until `Sync`. So the session
//! forwards a *substitute* in the refused message's place: the same message type
//! carrying text that cannot parse and names a per-session secret marker. The
//! server fails it at exactly that position (or skips it, if an earlier message
//! of the pipeline already failed, as it would have skipped the original), and
//! the backend stream swaps that one `ErrorResponse` for Gatehouse's own.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{BufMut, BytesMut};
use rand::RngCore;

use crate::codec;
use crate::tracker::Sent;

/// Marker prefix; the session nonce and a sequence number follow.
const PREFIX: &str = "gatehouse_refused_";

/// Refusals of one session, from the client direction to the backend direction.
pub struct Refusals {
    nonce: String,
    next_seq: AtomicUsize,
    pending: AtomicUsize,
    queue: Mutex<VecDeque<(usize, BytesMut)>>,
}

impl Default for Refusals {
    fn default() -> Self {
        let mut n = [0u8; 16];
        rand::rng().fill_bytes(&mut n);
        Self {
            nonce: n.iter().map(|b| format!("{b:02x}")).collect(),
            next_seq: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            queue: Mutex::new(VecDeque::new()),
        }
    }
}

impl Refusals {
    /// Queues `error` (an encoded ErrorResponse) and returns the substitute for a
    /// message of type `tag` (`Query`, `Parse`, `FunctionCall` or `Execute`;
    /// `name` is the `Parse` statement name, kept so later Binds fail as
    /// PostgreSQL's would), with what the substitute is to the response tracker.
    pub fn substitute(&self, tag: u8, name: &[u8], error: BytesMut) -> (BytesMut, Sent) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let text = format!("{PREFIX}{}_{seq}", self.nonce);
        self.lock().push_back((seq, error));
        self.pending.fetch_add(1, Ordering::Release);
        let mut body = BytesMut::new();
        let (out_tag, sent) = match tag {
            codec::PARSE | codec::EXECUTE | codec::BIND => {
                // A refused Execute (or held Bind) becomes a Parse of a statement
                // named by the marker: it fails in the same place of the pipeline,
                // and touches neither the unnamed statement nor any portal.
                let name = if tag == codec::PARSE {
                    name
                } else {
                    text.as_bytes()
                };
                body.put_slice(name);
                body.put_u8(0);
                body.put_slice(text.as_bytes());
                body.put_u8(0);
                body.put_u16(0);
                (codec::PARSE, Sent::Parse)
            }
            // A refused FunctionCall is replaced by a Query: both end in one
            // ErrorResponse and one ReadyForQuery.
            _ => {
                body.put_slice(text.as_bytes());
                body.put_u8(0);
                (codec::QUERY, Sent::Query { stmt: None })
            }
        };
        let mut frame = BytesMut::with_capacity(body.len() + 5);
        frame.put_u8(out_tag);
        frame.put_u32(body.len() as u32 + 4);
        frame.put_slice(&body);
        (frame, sent)
    }

    /// Whether refusals wait for their substitute's error (cheap; hot path).
    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire) > 0
    }

    /// If `frame` (a whole backend ErrorResponse) is a substitute's error, the
    /// client's error to send instead. Refusals whose substitutes the server
    /// skipped (an earlier error in the same pipeline) are dropped on the way, as
    /// their originals would have been skipped.
    pub fn replacement(&self, frame: &[u8]) -> Option<BytesMut> {
        let marker = format!("{PREFIX}{}_", self.nonce);
        let at = frame
            .windows(marker.len())
            .position(|w| w == marker.as_bytes())?;
        let digits: String = frame[at + marker.len()..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .map(|&b| b as char)
            .collect();
        let seq: usize = digits.parse().ok()?;
        let mut q = self.lock();
        while let Some((s, err)) = q.pop_front() {
            self.pending.fetch_sub(1, Ordering::Release);
            if s == seq {
                return Some(err);
            }
        }
        None
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(usize, BytesMut)>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_carry_a_marker_that_maps_back_in_order() {
        let r = Refusals::default();
        let (q, _) = r.substitute(codec::QUERY, b"", BytesMut::from(&b"first"[..]));
        assert_eq!(q[0], b'Q');
        let (p, sent) = r.substitute(codec::PARSE, b"stmt", BytesMut::from(&b"second"[..]));
        assert_eq!(sent, Sent::Parse);
        assert_eq!(p[0], b'P');
        assert!(
            p.windows(5).any(|w| w == b"stmt\0"),
            "the statement name is kept"
        );
        assert!(r.pending());
        // The server skipped the first substitute and failed the second.
        let server_error = p[5..].to_vec();
        assert_eq!(&r.replacement(&server_error).unwrap()[..], b"second");
        assert!(!r.pending());
        // Any other error passes through.
        assert!(
            r.replacement(b"syntax error at or near \"gatehouse_refused_00\"")
                .is_none()
        );
    }

    #[test]
    fn another_sessions_marker_does_not_match() {
        let a = Refusals::default();
        let b = Refusals::default();
        let (sub, _) = b.substitute(codec::QUERY, b"", BytesMut::new());
        a.substitute(codec::QUERY, b"", BytesMut::new());
        assert!(a.replacement(&sub).is_none());
    }
}
