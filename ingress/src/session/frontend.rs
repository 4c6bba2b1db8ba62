//! The client direction: each message framed and handed to its handler
//! (`on_query`, `on_parse`, `on_bind`, ...), which says what becomes of it; a
//! round of messages then goes upstream in one write, statements once their
//! records are durable, refused ones replaced by their substitutes.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::refusal::{Refusal, Substituted};
use super::{End, RelayError, SessionCtx, extended, hold, text};
use crate::Gateway;
use crate::decision::DecisionPoint;
use crate::evidence::{EvidenceError, Ticket};
use crate::gather;
use crate::protocol::codec::{self, Frame};
use crate::protocol::pipeline::Entry;

/// What becomes of one client message.
pub(super) enum Outcome {
    /// Forward it as it came; `entry`: what the pipeline awaits of it
    /// (`None`: no answer of its own); `ticket`: only once that record is
    /// durable.
    Forward {
        /// Its pipeline entry, and the gateway's own messages ahead of it.
        entry: Option<Pending>,
        /// The statement's evidence record, for texts that run.
        ticket: Option<Ticket>,
    },
    /// Hold it for approval (see [`hold`]); nothing goes upstream before the
    /// request is approved.
    Hold(Box<hold::Held>),
    /// Replace it with a substitute; the client gets the refusal.
    Refuse {
        /// Why.
        refusal: Refusal,
        /// A `Parse`'s statement name, kept in the substitute.
        name: String,
    },
    /// `Terminate`: the session ends.
    Terminate,
}

impl Outcome {
    /// Forward a message whose entry has nothing ahead of it.
    pub fn forward(entry: Entry, ticket: Option<Ticket>) -> Self {
        Self::Forward {
            entry: Some(Pending::new(entry)),
            ticket,
        }
    }

    /// Refuse a message (`name`: a `Parse`'s statement name).
    pub fn refuse(refusal: Refusal, name: &str) -> Self {
        Self::Refuse {
            refusal,
            name: name.to_owned(),
        }
    }
}

/// A pipeline entry not queued yet: its message's, and the gateway's own
/// messages (bytes and entries) to send just ahead of it.
pub(super) struct Pending {
    /// The message's entry.
    pub entry: Entry,
    /// The gateway's own messages ahead of it.
    pub ahead: Vec<(BytesMut, Entry)>,
}

impl Pending {
    /// An entry with nothing ahead.
    pub fn new(entry: Entry) -> Self {
        Self {
            entry,
            ahead: Vec::new(),
        }
    }

    /// An entry with masking's probes ahead (`sync`: each ends with its own
    /// `Sync`, ahead of a simple query).
    pub fn with_probes(
        entry: Entry,
        probes: Vec<(BytesMut, crate::masking::session::Cause)>,
        sync: bool,
    ) -> Self {
        use crate::protocol::pipeline::Kind;
        Self {
            entry,
            ahead: probes
                .into_iter()
                .map(|(bytes, cause)| (bytes, Entry::own(Kind::Probe { sync }, cause)))
                .collect(),
        }
    }
}

/// Hands one message to its handler. Cancel safety: not cancel safe (a
/// decision or a hold request in flight is lost); the relay drops it only
/// when the session ends.
async fn dispatch<D: DecisionPoint>(
    gw: &Gateway<D>,
    ctx: &mut SessionCtx,
    frame: Frame,
    buf: &[u8],
) -> Outcome {
    let body = frame.body(buf);
    match frame.tag {
        codec::QUERY => text::on_query(gw, ctx, body).await,
        codec::PARSE => text::on_parse(gw, ctx, frame, buf).await,
        codec::FUNCTION_CALL => text::on_function_call(gw, ctx, body).await,
        codec::BIND => extended::on_bind(gw, ctx, body).await,
        codec::EXECUTE => extended::on_execute(gw, ctx, body),
        codec::DESCRIBE => extended::on_describe(ctx, body),
        codec::CLOSE => extended::on_close(ctx, body),
        codec::SYNC => extended::on_sync(ctx),
        codec::TERMINATE => Outcome::Terminate,
        // CopyData, CopyDone, CopyFail; Flush.
        _ => extended::on_copy_data(),
    }
}

/// One part of what a round of client bytes becomes upstream.
enum Piece {
    /// `buf[from..to]`, as it came.
    Raw(usize, usize),
    /// A statement that runs: forwarded once its record is durable, else
    /// replaced; `pending` indexes its entry.
    Stmt { frame: Frame, pending: usize },
    /// A refused message's substitute, standing where the message started.
    Sub(usize, BytesMut),
}

/// One round: the messages of one read, planned.
#[derive(Default)]
struct Round {
    plan: Vec<Piece>,
    /// Entries the round queues, by the offset of their message (where the
    /// gateway's own bytes for it go).
    pending: Vec<(usize, Pending)>,
    /// The last record the round must see durable before it is forwarded.
    needs: Option<Ticket>,
    /// `buf` is planned up to here.
    planned: usize,
}

impl Round {
    fn forward(&mut self, frame: Frame, entry: Option<Pending>, ticket: Option<Ticket>) {
        if ticket.is_some() {
            self.needs = ticket;
            self.plan.push(Piece::Raw(self.planned, frame.start));
            self.plan.push(Piece::Stmt {
                frame,
                pending: self.pending.len(),
            });
            self.planned = frame.end;
        }
        if let Some(p) = entry {
            self.pending.push((frame.start, p));
        }
    }

    /// Everything before the refused message goes as it came; the message
    /// itself is replaced.
    fn substitute(&mut self, ctx: &mut SessionCtx, frame: Frame, s: Substituted) {
        self.plan.push(Piece::Raw(self.planned, frame.start));
        self.plan.push(Piece::Sub(frame.start, s.bytes));
        let entry = Entry {
            substitute: Some(s.substitute),
            ..Entry::client(s.kind, s.cause, None)
        };
        ctx.shared.pipeline().sending(&entry);
        self.pending.push((frame.start, Pending::new(entry)));
        self.planned = frame.end;
    }

    /// A held message: nothing of it goes now.
    fn hold(&mut self, frame: Frame) {
        self.plan.push(Piece::Raw(self.planned, frame.start));
        self.planned = frame.end;
    }

    /// The round's records could not be made durable: each statement that
    /// would have run is replaced by a refusal, and its evidence says so.
    fn refuse_unrecorded<D: DecisionPoint>(
        &mut self,
        gw: &Gateway<D>,
        ctx: &mut SessionCtx,
        e: &EvidenceError,
    ) {
        tracing::warn!(error = %e, "statements_refused_evidence_not_durable");
        let refusal = Refusal::Unrecorded(e.clone());
        for piece in &mut self.plan {
            let &mut Piece::Stmt { frame, pending } = piece else {
                continue;
            };
            let s = ctx.substitutes.substitute(frame.tag, b"", &refusal);
            let (_, old) = &mut self.pending[pending];
            let entry = Entry {
                substitute: Some(s.substitute),
                ..Entry::client(s.kind, s.cause, None)
            };
            let old = std::mem::replace(old, Pending::new(entry));
            {
                let mut p = ctx.shared.pipeline();
                p.unsent(&old.entry, &ctx.catalog);
                p.sending(&self.pending[pending].1.entry);
            }
            ctx.not_run(gw, old.entry.completing.and_then(|c| c.stmt()));
            *piece = Piece::Sub(frame.start, s.bytes);
        }
    }

    /// Queues the round's entries and sends it upstream in one (vectored)
    /// write, the gateway's own bytes ahead of the messages they precede.
    /// Cancel safety: not cancel safe (a write may be cut short); dropped only
    /// when the session ends.
    async fn send<W: AsyncWrite + Unpin>(
        &mut self,
        ctx: &SessionCtx,
        buf: &[u8],
        up: &mut W,
    ) -> std::io::Result<()> {
        // The pipeline learns what was sent before any answer can arrive.
        let mut ahead: Vec<(usize, Vec<u8>)> = Vec::new();
        {
            let mut p = ctx.shared.pipeline();
            for (start, pending) in self.pending.drain(..) {
                let (bytes, own): (Vec<BytesMut>, Vec<Entry>) = pending.ahead.into_iter().unzip();
                if p.push(own, pending.entry) && !bytes.is_empty() {
                    ahead.push((start, bytes.concat()));
                }
            }
        }
        let mut parts: Vec<&[u8]> = Vec::with_capacity(self.plan.len() + 2 * ahead.len());
        let mut ahead = ahead.iter().peekable();
        for piece in &self.plan {
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
                    while let Some((_, b)) = ahead.next_if(|(s, _)| s <= start) {
                        parts.push(b);
                    }
                    parts.push(bytes);
                }
            }
        }
        gather::write_all_parts(up, &parts).await
    }
}

/// Reads, decides and forwards client messages until the client ends the
/// session. Cancel safety: not cancel safe; the relay drops it only when the
/// session ends (the other direction ended it).
pub(super) async fn run<D, R, W>(
    gw: &Gateway<D>,
    ctx: &mut SessionCtx,
    client: &mut R,
    up: &mut W,
    mut buf: BytesMut,
) -> Result<End, RelayError>
where
    D: DecisionPoint,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let max = gw.config.ingress.max_message_size;
    let recorder = gw.evidence.as_deref();
    loop {
        let mut round = Round::default();
        let mut at = 0;
        let mut end = None;
        // A statement held for approval ends the round; the bytes after it
        // wait in `buf` until it is released.
        let mut held = None;
        while let Some(frame) = codec::next_frontend_frame(&buf, at, max)? {
            at = frame.end;
            match dispatch(gw, ctx, frame, &buf).await {
                Outcome::Forward { entry, ticket } => round.forward(frame, entry, ticket),
                Outcome::Hold(h) => {
                    round.hold(frame);
                    held = Some((h, frame));
                    break;
                }
                Outcome::Refuse { refusal, name } => {
                    let s = ctx
                        .substitutes
                        .substitute(frame.tag, name.as_bytes(), &refusal);
                    round.substitute(ctx, frame, s);
                }
                Outcome::Terminate => {
                    end = Some(End::ClientTerminated);
                    break;
                }
            }
        }
        round.plan.push(Piece::Raw(round.planned, at));
        if let Some(ticket) = round.needs
            && let Some(recorder) = recorder
            && let Err(e) = recorder.durable(ticket).await
        {
            round.refuse_unrecorded(gw, ctx, &e);
        }
        round.send(ctx, &buf, up).await?;
        let released = held.is_some();
        if let Some((h, frame)) = held {
            up.flush().await?;
            let _ = ctx.notices.send(hold::notice(&h, &gw.config.hold.notice));
            let limit = buf.len() + hold::HOLD_BUFFER;
            let Some((bytes, pending)) =
                hold::release(gw, ctx, *h, frame, client, &mut buf, limit).await
            else {
                return Ok(End::ClientClosed);
            };
            // The released message, with the gateway's own bytes ahead of it.
            let (ahead, own): (Vec<BytesMut>, Vec<Entry>) = pending.ahead.into_iter().unzip();
            let queued = ctx.shared.pipeline().push(own, pending.entry);
            let ahead = queued.then(|| ahead.concat());
            if let Some(ahead) = ahead.filter(|a| !a.is_empty()) {
                up.write_all(&ahead).await?;
            }
            up.write_all(&bytes).await?;
        }
        if at > 0 {
            up.flush().await?;
            buf.advance(at);
        }
        if released {
            // Bytes the client sent while it waited are framed now.
            continue;
        }
        if let Some(end) = end {
            return Ok(end);
        }
        // Grow toward a large declared message as its bytes arrive rather than
        // reserving all of it on the client's word.
        buf.reserve(codec::missing_bytes(&buf, 0).clamp(4096, 1 << 20));
        if client.read_buf(&mut buf).await? == 0 {
            return Ok(End::ClientClosed);
        }
    }
}
