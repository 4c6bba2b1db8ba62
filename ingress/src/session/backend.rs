//! The backend direction: upstream messages streamed to the client, each
//! paired with what caused it in the pipeline, which says whether it passes
//! as it came, is rewritten (masked rows, a refused statement's error) or is
//! swallowed (the answers to the gateway's own messages); finished
//! statements' completions are recorded on the way.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{End, RelayError, Shared};
use crate::Gateway;
use crate::decision::DecisionPoint;
use crate::evidence::completion::Completion;
use crate::gather;
use crate::masking::catalog::Catalog;
use crate::protocol::pipeline::Answer;

/// Relays upstream messages to the client until the upstream closes; writes
/// `notices` (a held statement's) between two backend messages. Cancel
/// safety: not cancel safe (a write may be cut short); the relay drops it only
/// when the session ends.
pub(super) async fn run<D, R, W>(
    gw: &Gateway<D>,
    shared: &Shared,
    catalog: &Catalog,
    up: &mut R,
    client: &mut W,
    mut buf: BytesMut,
    mut notices: mpsc::UnboundedReceiver<BytesMut>,
) -> Result<End, RelayError>
where
    D: DecisionPoint,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let recorder = gw.evidence.as_deref();
    let key = gw.masking.key();
    // Bytes of the current message still to pass through (header included).
    let mut passing = 0usize;
    let mut done: Vec<Completion> = Vec::new();
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
            let len = u32::from_be_bytes([buf[i + 1], buf[i + 2], buf[i + 3], buf[i + 4]]) as usize;
            if len < 4 {
                return Err(RelayError::Io(std::io::Error::other(
                    "upstream sent a bad message length",
                )));
            }
            let tag = buf[i];
            let mut answer = {
                let mut p = shared.pipeline();
                // Every wait for more bytes comes before anything is told of
                // this message.
                let whole = p.reads_whole(tag);
                if whole && buf.len() - i < 1 + len {
                    break;
                }
                let end = if whole { i + 1 + len } else { i + 5 };
                p.answer(&buf[i..end], catalog, key, &mut done)
            };
            while let Answer::Lookup(oids) = answer {
                // Masking needs these relations' columns first; nothing
                // changed meanwhile, so the same message is handed again.
                if let Err(e) = catalog.load(&oids).await {
                    // Fail closed: columns of relations not found are NULL.
                    tracing::warn!(error = %e, "masking_catalog_lookup_failed");
                    catalog.mark_unknown(&oids);
                }
                let mut p = shared.pipeline();
                let end = if p.reads_whole(tag) {
                    i + 1 + len
                } else {
                    i + 5
                };
                answer = p.answer(&buf[i..end], catalog, key, &mut done);
            }
            if !done.is_empty() {
                shared
                    .evidence()
                    .complete(recorder, std::mem::take(&mut done));
            }
            match answer {
                Answer::Forward | Answer::Lookup(_) => passing = 1 + len,
                Answer::Replace(ours) => {
                    out.buf(from, i);
                    out.own(ours);
                    i += 1 + len;
                    from = i;
                }
                Answer::Swallow => {
                    // The answer to the gateway's own message: the client
                    // and evidence never asked for it.
                    out.buf(from, i);
                    i += 1 + len;
                    from = i;
                }
            }
        }
        out.buf(from, i);
        if !out.is_empty() {
            out.write_to(client, &buf).await?;
        }
        buf.advance(i);
        client.flush().await?;
        buf.reserve(16384);
        tokio::select! {
            // Cancel safe: read_buf either read into buf or did nothing.
            n = up.read_buf(&mut buf) => {
                if n? == 0 {
                    return Ok(End::UpstreamClosed);
                }
            }
            // Only between two backend messages (`passing == 0`: everything
            // written so far ends on a message boundary). Cancel safe: a
            // notice not taken stays in the channel.
            Some(notice) = notices.recv(), if passing == 0 => {
                client.write_all(&notice).await?;
                client.flush().await?;
            }
        }
    }
}
