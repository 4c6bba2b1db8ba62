//! The archiver's loop body: ingest records, seal what is due, put it in the
//! store (segment, then manifest), and say which records are now durable.

use std::collections::VecDeque;
use std::time::SystemTime;

use uuid::Uuid;

use crate::error::{ArchiveError, PushError};
use crate::segment::Head;
use crate::segmenter::{Cut, Pushed, Sealed, Segmenter, known_seqs};
use crate::store::SegmentStore;

/// Segments put at once (each segment, then its manifest).
const PUT_CONCURRENCY: usize = 32;

/// Seals `cuts` on a blocking thread: gzip and signatures of a full segment
/// take milliseconds, which on a runtime worker would stall every task queued
/// behind them (in all-in-one mode, the sessions' statements).
async fn seal(cuts: Vec<Cut>) -> Vec<Sealed> {
    if cuts.is_empty() {
        return Vec::new();
    }
    match tokio::task::spawn_blocking(move || cuts.into_iter().map(Cut::seal).collect()).await {
        Ok(sealed) => sealed,
        // Sealing does not fail; a panic in it is a bug, raised here as it would
        // have been inline. (Cancellation only happens as the runtime shuts down.)
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Vec::new(),
    }
}

/// One record, by its place in its session's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId {
    /// The session.
    pub session: Uuid,
    /// The sequence number.
    pub seq: u64,
}

/// What became of an ingested record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// Buffered (or a copy of a record not yet durable): a later
    /// [`Archive::tick`] or [`Archive::flush`] names it once it is durable.
    Pending,
    /// Already durably archived (a redelivered copy): acknowledge it now.
    Archived,
}

/// A [`Segmenter`] writing into a [`SegmentStore`].
///
/// Upstream acknowledgement (JetStream ack, spool truncation) waits for the
/// [`RecordId`]s that `tick`/`flush` return: by then the segment and its manifest
/// are both durable. The first time it sees a session, `ingest` reads that
/// session's manifests from the store, so that an archiver restarted and re-fed
/// the same events writes none of them twice.
#[derive(Debug)]
pub struct Archive<S> {
    store: S,
    segmenter: Segmenter,
    /// Sealed, not yet (completely) put; in order.
    pending: VecDeque<Sealed>,
    /// Put successfully by a call that then failed: returned by the next call.
    durable: Vec<RecordId>,
}

impl<S: SegmentStore> Archive<S> {
    /// Ties a segmenter to a store.
    pub fn new(store: S, segmenter: Segmenter) -> Self {
        Self {
            store,
            segmenter,
            pending: VecDeque::new(),
            durable: Vec::new(),
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The segmenter.
    pub fn segmenter(&self) -> &Segmenter {
        &self.segmenter
    }

    /// Reads the archived seqs of every session of `sessions` not seen yet,
    /// several at once (what [`Archive::ingest`] would otherwise do one record
    /// at a time, on the first record of each session).
    pub async fn resume(
        &mut self,
        sessions: impl IntoIterator<Item = Uuid>,
    ) -> Result<(), ArchiveError> {
        let unknown: std::collections::BTreeSet<Uuid> = sessions
            .into_iter()
            .filter(|s| !self.segmenter.knows(*s))
            .collect();
        let unknown: Vec<Uuid> = unknown.into_iter().collect();
        for chunk in unknown.chunks(PUT_CONCURRENCY) {
            let store = &self.store;
            let found =
                futures_util::future::join_all(chunk.iter().map(|&s| known_seqs(store, s))).await;
            for (&session, seqs) in chunk.iter().zip(found) {
                let seqs = seqs?;
                if !seqs.is_empty() {
                    tracing::info!(session = %session, records = seqs.len(), "session_resumed_from_store");
                }
                // Known from now on, even with nothing archived yet.
                self.segmenter.mark_archived(session, seqs);
            }
        }
        Ok(())
    }

    /// Buffers one record. A record that is not an event, or that conflicts with
    /// a buffered one, is an error for the caller to log (and to drop or dead-letter).
    pub async fn ingest(
        &mut self,
        record: &[u8],
        now: SystemTime,
    ) -> Result<Ingested, ArchiveError> {
        let session = Head::parse(record)
            .map_err(PushError::NotAnEvent)?
            .session_id;
        if !self.segmenter.knows(session) {
            let seqs = known_seqs(&self.store, session).await?;
            if !seqs.is_empty() {
                tracing::info!(session = %session, records = seqs.len(), "session_resumed_from_store");
                self.segmenter.mark_archived(session, seqs);
            }
        }
        Ok(match self.segmenter.push(record, now)? {
            Pushed::Duplicate { archived: true } => Ingested::Archived,
            Pushed::Added | Pushed::Duplicate { archived: false } => Ingested::Pending,
        })
    }

    /// Seals what is due at `now` and puts everything sealed. Returns the records
    /// that became durable; on a store error the segments not yet put stay
    /// pending (retried by the next call) and what did become durable is
    /// returned by the next successful call.
    pub async fn tick(&mut self, now: SystemTime) -> Result<Vec<RecordId>, ArchiveError> {
        let cuts = self.segmenter.cut_due(now);
        self.pending.extend(seal(cuts).await);
        self.put_pending().await
    }

    /// Seals everything buffered and puts it: at shutdown.
    pub async fn flush(&mut self) -> Result<Vec<RecordId>, ArchiveError> {
        let cuts = self.segmenter.cut_all();
        self.pending.extend(seal(cuts).await);
        self.put_pending().await
    }

    async fn put_pending(&mut self) -> Result<Vec<RecordId>, ArchiveError> {
        let mut failure = None;
        while !self.pending.is_empty() && failure.is_none() {
            // Segments are independent objects: put several at once, so that
            // their fsyncs (LocalDir) or requests (S3) overlap. Within each,
            // segment first: a manifest never names a missing object.
            let n = self.pending.len().min(PUT_CONCURRENCY);
            let chunk: Vec<Sealed> = self.pending.drain(..n).collect();
            let store = &self.store;
            let results = futures_util::future::join_all(chunk.iter().map(|s| async move {
                store.put(&s.key, &s.data).await?;
                store.put(&s.manifest_key, &s.manifest_bytes).await
            }))
            .await;
            let mut failed = Vec::new();
            for (done, result) in chunk.into_iter().zip(results) {
                match result {
                    Ok(()) => {
                        tracing::debug!(session = %done.session, key = %done.key, records = done.seqs.len(), "segment_archived");
                        self.durable.extend(done.seqs.iter().map(|&seq| RecordId {
                            session: done.session,
                            seq,
                        }));
                        self.segmenter.mark_archived(done.session, done.seqs);
                    }
                    Err(e) => {
                        failure.get_or_insert(e);
                        failed.push(done);
                    }
                }
            }
            for s in failed.into_iter().rev() {
                self.pending.push_front(s);
            }
        }
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(std::mem::take(&mut self.durable)),
        }
    }
}
