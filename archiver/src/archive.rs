//! The archiver's loop body: ingest records, seal what is due, put it in the
//! store (segment, then manifest), and say which records are now durable.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::task::JoinSet;
use uuid::Uuid;

use crate::error::{ArchiveError, PushError, StoreError};
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
    store: Arc<S>,
    segmenter: Segmenter,
    /// Sealed, not yet being put; in order.
    pending: VecDeque<Sealed>,
    /// Being put, each by a task of its own: the segment, then its manifest.
    putting: JoinSet<(Sealed, Result<(), StoreError>)>,
    /// A put failed since the last seal: no new puts start before the next one
    /// (a store that is down is retried once per tick, not in a tight loop).
    held: bool,
    /// Put successfully, not yet returned to the caller.
    durable: Vec<RecordId>,
}

impl<S: SegmentStore + 'static> Archive<S> {
    /// Ties a segmenter to a store.
    pub fn new(store: S, segmenter: Segmenter) -> Self {
        Self {
            store: Arc::new(store),
            segmenter,
            pending: VecDeque::new(),
            putting: JoinSet::new(),
            held: false,
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
        self.seal_due(now).await;
        self.all_put().await
    }

    /// Seals everything buffered and puts it: at shutdown.
    pub async fn flush(&mut self) -> Result<Vec<RecordId>, ArchiveError> {
        let cuts = self.segmenter.cut_all();
        self.pending.extend(seal(cuts).await);
        self.held = false;
        self.all_put().await
    }

    /// [`Self::tick`] without waiting for the puts: seals what is due and starts
    /// putting it (and retrying what failed before). The caller collects what
    /// became durable with [`Self::next_put`] while it goes on ingesting.
    pub async fn seal_due(&mut self, now: SystemTime) {
        let cuts = self.segmenter.cut_due(now);
        self.pending.extend(seal(cuts).await);
        self.held = false;
        self.start_puts();
    }

    /// Records buffered in segments still open (see [`Segmenter::open_records`]).
    pub fn open_records(&self) -> usize {
        self.segmenter.open_records()
    }

    /// Seals open segments early, the longest open first, until at least
    /// `records` records are sealed, and starts putting them: for an archiver
    /// near its bound of unacknowledged records (see [`Segmenter::cut_oldest`]).
    pub async fn relieve(&mut self, records: usize, now: SystemTime) {
        let cuts = self.segmenter.cut_oldest(records, now);
        self.pending.extend(seal(cuts).await);
        self.held = false;
        self.start_puts();
    }

    /// Whether puts are under way (then [`Self::next_put`] resolves).
    pub fn putting(&self) -> bool {
        !self.putting.is_empty()
    }

    /// Waits for the next put under way to end (forever when none is), starts
    /// the next pending one, and returns the records now durable; a failed
    /// segment goes back to pending, retried after the next seal.
    pub async fn next_put(&mut self) -> Result<Vec<RecordId>, ArchiveError> {
        let Some(joined) = self.putting.join_next().await else {
            return std::future::pending().await;
        };
        let result = self.put_ended(joined);
        if !self.held {
            self.start_puts();
        }
        result.map(|()| std::mem::take(&mut self.durable))
    }

    /// Waits for every pending segment to be put, or for a failure.
    async fn all_put(&mut self) -> Result<Vec<RecordId>, ArchiveError> {
        self.start_puts();
        let mut failure = None;
        while let Some(joined) = self.putting.join_next().await {
            if let Err(e) = self.put_ended(joined) {
                failure.get_or_insert(e);
            }
            if !self.held {
                self.start_puts();
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(std::mem::take(&mut self.durable)),
        }
    }

    /// Starts putting pending segments, up to [`PUT_CONCURRENCY`] at once.
    /// Segments are independent objects: their fsyncs (LocalDir) or requests
    /// (S3) overlap. Within each, segment first: a manifest never names a
    /// missing object.
    fn start_puts(&mut self) {
        while self.putting.len() < PUT_CONCURRENCY {
            let Some(sealed) = self.pending.pop_front() else {
                break;
            };
            let store = Arc::clone(&self.store);
            self.putting.spawn(async move {
                let result = async {
                    store.put(&sealed.key, &sealed.data).await?;
                    store
                        .put(&sealed.manifest_key, &sealed.manifest_bytes)
                        .await
                }
                .await;
                (sealed, result)
            });
        }
    }

    fn put_ended(
        &mut self,
        joined: Result<(Sealed, Result<(), StoreError>), tokio::task::JoinError>,
    ) -> Result<(), ArchiveError> {
        let (done, result) = match joined {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only as the runtime shuts down; the records stay unacknowledged.
            Err(e) => return Err(StoreError::Task(e.to_string()).into()),
        };
        match result {
            Ok(()) => {
                tracing::debug!(session = %done.session, key = %done.key, records = done.seqs.len(), "segment_archived");
                self.durable.extend(done.seqs.iter().map(|&seq| RecordId {
                    session: done.session,
                    seq,
                }));
                self.segmenter.mark_archived(done.session, done.seqs);
                Ok(())
            }
            Err(e) => {
                self.held = true;
                self.pending.push_front(done);
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ed25519_dalek::SigningKey;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::segmenter::SegmenterConfig;
    use crate::store::LocalDir;

    /// A local directory whose puts wait for a permit: a store that hangs.
    struct Gated {
        dir: LocalDir,
        permits: Arc<Semaphore>,
    }

    impl SegmentStore for Gated {
        async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
            self.permits.acquire().await.expect("open").forget();
            self.dir.put(key, bytes).await
        }
        async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.dir.get(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
            self.dir.list(prefix).await
        }
    }

    fn rec(session: Uuid, seq: u64, kind: &str) -> Vec<u8> {
        format!(
            r#"{{"v":1,"session_id":"{session}","seq":{seq},"ts":"2027-01-15T08:00:{seq:02}.000000Z","prev":"x","type":"{kind}"}}"#
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn records_are_taken_while_a_segment_put_hangs() {
        let tmp = tempfile::tempdir().unwrap();
        let permits = Arc::new(Semaphore::new(0));
        let store = Gated {
            dir: LocalDir::new(tmp.path().to_owned()),
            permits: Arc::clone(&permits),
        };
        let config = SegmenterConfig {
            max_age: Duration::from_secs(3600),
            ..SegmenterConfig::default()
        };
        let key = SigningKey::from_bytes(&[3u8; 32]);
        let mut archive = Archive::new(store, Segmenter::new(config, "w1", key));
        let now = SystemTime::now();
        let first = Uuid::now_v7();
        archive
            .ingest(&rec(first, 1, "statement"), now)
            .await
            .unwrap();
        archive
            .ingest(&rec(first, 2, "session_ended"), now)
            .await
            .unwrap();

        // The ended session's segment is sealed and its put starts; it hangs,
        // and the archive goes on taking records meanwhile.
        archive.seal_due(now).await;
        assert!(archive.putting());
        let second = Uuid::now_v7();
        archive
            .ingest(&rec(second, 1, "statement"), now)
            .await
            .unwrap();
        archive
            .ingest(&rec(second, 2, "session_ended"), now)
            .await
            .unwrap();
        archive.seal_due(now).await;

        // Released (segment and manifest of each), both become durable.
        permits.add_permits(4);
        let mut durable = Vec::new();
        while archive.putting() {
            durable.extend(archive.next_put().await.unwrap());
        }
        durable.sort();
        let mut expected: Vec<RecordId> = [(first, 1), (first, 2), (second, 1), (second, 2)]
            .into_iter()
            .map(|(session, seq)| RecordId { session, seq })
            .collect();
        expected.sort();
        assert_eq!(durable, expected);
    }
}
