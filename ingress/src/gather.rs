//! Outgoing bytes of one relay round, gathered and written with as few
//! (vectored) writes as the stream allows.
//!
//! Every write to a loopback or LAN socket is a system call and wakes the
//! reader on the other end: a round that went out in three writes (the
//! messages before a rewritten row, the row, the rest) cost the client three
//! wake-ups where one would do. Pieces are borrowed, never copied: rows that
//! pass unchanged are sent straight from the receive buffer.

use std::io::{self, IoSlice};

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// One piece of a round's output.
#[derive(Debug, Clone, Copy)]
pub enum Piece {
    /// Bytes `from..to` of the round's receive buffer.
    Buf(usize, usize),
    /// The `n`th of the round's own buffers (a rewritten message).
    Own(usize),
}

/// A round's output: ranges of the receive buffer and buffers of its own, in
/// the order they go out.
#[derive(Debug, Default)]
pub struct Gather {
    pieces: Vec<Piece>,
    own: Vec<BytesMut>,
}

impl Gather {
    /// Appends bytes `from..to` of the receive buffer (nothing when empty).
    pub fn buf(&mut self, from: usize, to: usize) {
        if from < to {
            // Adjacent ranges merge, so a run of passed messages is one slice.
            if let Some(Piece::Buf(_, end)) = self.pieces.last_mut()
                && *end == from
            {
                *end = to;
                return;
            }
            self.pieces.push(Piece::Buf(from, to));
        }
    }

    /// Appends a buffer of its own.
    pub fn own(&mut self, bytes: BytesMut) {
        if !bytes.is_empty() {
            self.pieces.push(Piece::Own(self.own.len()));
            self.own.push(bytes);
        }
    }

    /// Whether nothing was appended.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Writes everything appended, `buf` being the receive buffer the ranges
    /// are in, and empties the gather for the next round. Cancel safety: not
    /// cancel safe (a write may be cut short); the relay only drops it when the
    /// session ends.
    pub async fn write_to<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
        buf: &[u8],
    ) -> io::Result<()> {
        let parts: Vec<&[u8]> = self
            .pieces
            .iter()
            .map(|p| match *p {
                Piece::Buf(from, to) => &buf[from..to],
                Piece::Own(i) => &self.own[i][..],
            })
            .collect();
        let result = write_all_parts(w, &parts).await;
        self.pieces.clear();
        self.own.clear();
        result
    }
}

/// Writes all of `parts`, in order, with vectored writes.
pub async fn write_all_parts<W: AsyncWrite + Unpin>(w: &mut W, parts: &[&[u8]]) -> io::Result<()> {
    match parts {
        [] => return Ok(()),
        [one] => return w.write_all(one).await,
        _ => {}
    }
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = w.write_vectored(rest).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A writer that takes at most `max` bytes per call and counts the calls.
    struct Trickle {
        out: Vec<u8>,
        max: usize,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.max);
            self.out.extend_from_slice(&buf[..n]);
            self.calls += 1;
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.max - n);
                self.out.extend_from_slice(&b[..take]);
                n += take;
                if n == self.max {
                    break;
                }
            }
            self.calls += 1;
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn pieces_go_out_in_order_in_one_write_when_the_stream_takes_them() {
        let buf = b"aaabbbcccddd";
        let mut g = Gather::default();
        g.buf(0, 3);
        g.buf(3, 6); // merges with the range before
        g.own(BytesMut::from(&b"XY"[..]));
        g.buf(9, 9); // empty: nothing
        g.buf(9, 12);
        assert_eq!(g.pieces.len(), 3);
        let mut w = Trickle {
            out: Vec::new(),
            max: usize::MAX,
            calls: 0,
        };
        g.write_to(&mut w, buf).await.unwrap();
        assert_eq!(w.out, b"aaabbbXYddd");
        assert_eq!(w.calls, 1);
        assert!(g.is_empty(), "emptied for the next round");
    }

    #[tokio::test]
    async fn short_writes_resume_where_they_stopped() {
        let parts: [&[u8]; 4] = [b"12345", b"", b"678", b"9abcdef"];
        let mut w = Trickle {
            out: Vec::new(),
            max: 4,
            calls: 0,
        };
        write_all_parts(&mut w, &parts).await.unwrap();
        assert_eq!(w.out, b"123456789abcdef");
        assert_eq!(w.calls, 4);
    }
}
