//! Evidence on the statement path (invariant 2: no unrecorded execution).
//!
//! Each session chains its events ([`Chain`]) and queues their records on the
//! gateway's [`Recorder`]. One worker persists whatever has queued — an fsync'd
//! append to the local spool, or JetStream publishes and their acks — and then
//! moves the durable mark. A session forwards a statement only once the mark has
//! passed the statement's record, so sessions that arrive together share one
//! fsync or one round of acks (group commit).
//!
//! Failure is closed: a record that is not durable within the configured time
//! refuses its statement; a spool that failed to write or fsync is never trusted
//! again (every later statement is refused until restart); a JetStream outage
//! queues records (bounded) and retries them in order, as the same messages
//! under the same ids so JetStream drops any duplicate, and statements flow
//! again once it is back.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use gatehouse_schemas::SCHEMA_VERSION;
use gatehouse_schemas::evidence::{
    EVIDENCE_BATCH_SUBJECT, Event, EventBody, GENESIS, SessionContext, batch_message_id,
    encode_batch, split_batches,
};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc, watch};
use uuid::Uuid;

/// Evidence could not be made durable; the statement is refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EvidenceError {
    /// The store failed or is too slow.
    #[error("evidence store unavailable: {0}")]
    Unavailable(String),
}

/// One queued record.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its session.
    pub session: Uuid,
    /// Its `seq`.
    pub seq: u64,
    /// The exact bytes (one JSON line, no newline).
    pub bytes: Bytes,
}

/// The rest of making a submitted batch durable (see [`Persist::submit`]).
pub type Durable = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Where records become durable. Called by the recorder's single worker with
/// batches in the order they were queued.
pub trait Persist: Send + 'static {
    /// Starts making `batch` durable and returns what finishes the job. The
    /// worker submits the next batch as soon as this returns, so a store whose
    /// acknowledgements come back later (JetStream) has several batches in
    /// flight; one that is done when this returns (the spool's fsync) returns a
    /// ready future. `Err` is permanent: the recorder stops accepting records.
    /// Transient trouble is retried inside (or waited out).
    fn submit(&mut self, batch: Vec<Record>) -> impl Future<Output = Durable> + Send;
}

/// Batches a recorder has submitted and not yet seen durable…
///
/// Two: one being acknowledged while the next is published. Records that
/// arrive meanwhile wait and go together in the batch after, which is what
/// makes group commit: with 64 in flight each batch held about one record, and
/// every statement paid a publish and an acknowledgement of its own.
const MAX_IN_FLIGHT: usize = 2;
/// …and their records: past this the next batch waits for an acknowledgement
/// (and then carries more records at once).
const MAX_IN_FLIGHT_RECORDS: usize = 3000;

/// A position in the recorder's queue; durable once the mark reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

#[derive(Debug, Clone, Default)]
struct Mark {
    durable: u64,
    failed: Option<String>,
}

struct Queue {
    records: Vec<Record>,
    bytes: usize,
    next: u64,
    /// Whether a queued record has someone waiting on it.
    urgent: bool,
    /// When the oldest queued record was queued.
    since: Option<tokio::time::Instant>,
}

/// How long records nobody waits on (completions, session ends) may wait for a
/// record someone does wait on, to share its write: one fsync or round of acks
/// per statement, not two.
const LINGER: Duration = Duration::from_millis(20);

/// The gateway's evidence queue.
pub struct Recorder {
    queue: Mutex<Queue>,
    wake: std::sync::Arc<Notify>,
    mark: watch::Sender<Mark>,
    max_backlog: usize,
    timeout: Duration,
}

impl Recorder {
    /// A recorder whose worker persists with `persist`; records not durable within
    /// `timeout` refuse their statement; at most `max_backlog` bytes wait.
    pub fn start<P: Persist>(
        persist: P,
        timeout: Duration,
        max_backlog: usize,
    ) -> std::sync::Arc<Self> {
        let (mark, _) = watch::channel(Mark::default());
        let recorder = std::sync::Arc::new(Self {
            queue: Mutex::new(Queue {
                records: Vec::new(),
                bytes: 0,
                next: 0,
                urgent: false,
                since: None,
            }),
            wake: std::sync::Arc::new(Notify::new()),
            mark,
            max_backlog,
            timeout,
        });
        tokio::spawn(worker(
            std::sync::Arc::downgrade(&recorder),
            recorder.wake.clone(),
            persist,
        ));
        recorder
    }

    /// Queues one record that a statement (or a session start) waits on. Fails
    /// at once when the recorder has failed or the backlog is full; the caller
    /// then must not run the statement.
    pub fn append(&self, record: Record) -> Result<Ticket, EvidenceError> {
        self.queue_record(record, true)
    }

    /// Queues one record nobody waits on (a completion, a session end): it is
    /// written with the next urgent one, or after [`LINGER`] at the latest.
    pub fn append_later(&self, record: Record) -> Result<Ticket, EvidenceError> {
        self.queue_record(record, false)
    }

    fn queue_record(&self, record: Record, urgent: bool) -> Result<Ticket, EvidenceError> {
        if let Some(e) = &self.mark.borrow().failed {
            return Err(EvidenceError::Unavailable(e.clone()));
        }
        let mut q = self.lock();
        if q.bytes + record.bytes.len() > self.max_backlog {
            return Err(EvidenceError::Unavailable(format!(
                "{} bytes of evidence wait to be stored",
                q.bytes
            )));
        }
        q.bytes += record.bytes.len();
        q.records.push(record);
        q.next += 1;
        q.urgent |= urgent;
        q.since.get_or_insert_with(tokio::time::Instant::now);
        let ticket = Ticket(q.next);
        drop(q);
        self.wake.notify_one();
        Ok(ticket)
    }

    /// Waits until the record of `ticket` (and every one before it) is durable.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), EvidenceError> {
        let mut rx = self.mark.subscribe();
        let wait = rx.wait_for(|m| m.durable >= ticket.0 || m.failed.is_some());
        match tokio::time::timeout(self.timeout, wait).await {
            Ok(Ok(m)) if m.durable >= ticket.0 => Ok(()),
            Ok(Ok(m)) => Err(EvidenceError::Unavailable(
                m.failed.clone().unwrap_or_default(),
            )),
            Ok(Err(_)) => Err(EvidenceError::Unavailable("recorder stopped".into())),
            Err(_) => Err(EvidenceError::Unavailable(format!(
                "not stored within {:?}",
                self.timeout
            ))),
        }
    }

    /// Waits until everything queued so far is durable (or the store failed, or
    /// `timeout` passed): the last step of a clean shutdown.
    pub async fn drain(&self) -> Result<(), EvidenceError> {
        let upto = {
            let mut q = self.lock();
            q.urgent = true;
            q.next
        };
        self.wake.notify_one();
        self.durable(Ticket(upto)).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn worker<P: Persist>(
    recorder: std::sync::Weak<Recorder>,
    wake: std::sync::Arc<Notify>,
    mut persist: P,
) {
    use futures_util::StreamExt;
    // Durable in order: a batch's mark moves only once every batch before it is.
    let mut in_flight = futures_util::stream::FuturesOrdered::new();
    let mut in_flight_records = 0usize;
    loop {
        let notified = wake.notified();
        let room = in_flight.len() < MAX_IN_FLIGHT && in_flight_records < MAX_IN_FLIGHT_RECORDS;
        // Records to submit now, or the time the lingering ones are due.
        let mut due = None;
        let batch = if room {
            let Some(r) = recorder.upgrade() else { return };
            let mut q = r.lock();
            match q.since {
                Some(since) if !q.urgent && since.elapsed() < LINGER => {
                    due = Some(since + LINGER);
                    None
                }
                _ => {
                    q.bytes = 0;
                    q.urgent = false;
                    q.since = None;
                    let upto = q.next;
                    Some((std::mem::take(&mut q.records), upto))
                }
            }
        } else {
            None
        };
        match batch {
            Some((records, upto)) if !records.is_empty() => {
                let n = records.len();
                let durable = persist.submit(records).await;
                in_flight_records += n;
                in_flight.push_back(async move { (upto, n, durable.await) });
                continue;
            }
            _ => {}
        }
        // Nothing to submit (or enough in flight): wait for new records, for
        // lingering ones to be due, or for the oldest batch in flight.
        let linger = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let done = tokio::select! {
            _ = notified, if room => continue,
            _ = linger => continue,
            done = in_flight.next(), if !in_flight.is_empty() => done,
        };
        let Some((upto, n, result)) = done else {
            continue;
        };
        in_flight_records -= n;
        let Some(r) = recorder.upgrade() else { return };
        r.mark.send_modify(|m| match result {
            Ok(()) => m.durable = upto,
            Err(e) => {
                tracing::error!(error = %e, "evidence_store_failed");
                m.failed = Some(e);
            }
        });
        if r.mark.borrow().failed.is_some() {
            return;
        }
    }
}

/// A session's hash chain: stamps, serializes and queues its events in order.
pub struct Chain {
    session: Uuid,
    seq: u64,
    prev: String,
    /// Taken from the session's start, stamped on every later event.
    ctx: Option<SessionContext>,
}

impl Chain {
    /// The chain of a new session.
    pub fn new(session: Uuid) -> Self {
        Self {
            session,
            seq: 0,
            prev: GENESIS.to_owned(),
            ctx: None,
        }
    }

    /// Records `body` as the session's next event. The chain only advances when
    /// the record was queued, so a refused append leaves no gap.
    pub fn record(
        &mut self,
        recorder: &Recorder,
        body: EventBody,
    ) -> Result<(u64, Ticket), EvidenceError> {
        let seq = self.seq + 1;
        let started = match &body {
            EventBody::SessionStarted(s) => Some(SessionContext::of(s)),
            _ => None,
        };
        let event = Event {
            v: SCHEMA_VERSION,
            session_id: self.session,
            seq,
            ts: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
            prev: std::mem::take(&mut self.prev),
            ctx: if started.is_some() {
                None
            } else {
                self.ctx.clone()
            },
            body,
        };
        let bytes = serde_json::to_vec(&event).expect("events serialize");
        let hash = hex(&Sha256::digest(&bytes));
        let record = Record {
            session: self.session,
            seq,
            bytes: Bytes::from(bytes),
        };
        // Statements and session starts are waited on; the rest rides along.
        let queued = match event.body {
            EventBody::Statement(_) | EventBody::SessionStarted(_) | EventBody::Approval(_) => {
                recorder.append(record)
            }
            _ => recorder.append_later(record),
        };
        match queued {
            Ok(ticket) => {
                self.seq = seq;
                self.prev = hash;
                if started.is_some() {
                    self.ctx = started;
                }
                Ok((seq, ticket))
            }
            Err(e) => {
                self.prev = event.prev;
                Err(e)
            }
        }
    }

    /// Events recorded so far.
    pub fn len(&self) -> u64 {
        self.seq
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.seq == 0
    }
}

pub use gatehouse_schemas::hex;

/// All-in-one mode: an append-only spool of NDJSON records under `dir/spool`,
/// fdatasync'd per batch. Durable records are handed on (to the local archiver)
/// through `sink`.
pub struct Spool {
    file: Option<SpoolFile>,
    sink: Option<mpsc::UnboundedSender<SpoolBatch>>,
}

struct SpoolFile {
    dir: PathBuf,
    file: std::fs::File,
    index: u64,
    written: u64,
    rotate_at: u64,
}

/// Records just made durable in spool file `file`.
#[derive(Debug)]
pub struct SpoolBatch {
    /// The spool file's index.
    pub file: u64,
    /// The records.
    pub records: Vec<Record>,
}

impl Spool {
    /// Opens a new spool file after any existing ones (older files are left for
    /// the archiver's recovery to read).
    pub fn open(
        dir: &Path,
        rotate_at: u64,
        sink: Option<mpsc::UnboundedSender<SpoolBatch>>,
    ) -> std::io::Result<Self> {
        let dir = dir.join("spool");
        std::fs::create_dir_all(&dir)?;
        let index = spool_files(&dir)?.last().map_or(1, |(i, _)| i + 1);
        let file = create_spool_file(&dir, index)?;
        Ok(Self {
            file: Some(SpoolFile {
                dir,
                file,
                index,
                written: 0,
                rotate_at,
            }),
            sink,
        })
    }
}

impl SpoolFile {
    fn write_batch(&mut self, batch: &[Record]) -> std::io::Result<()> {
        if self.written >= self.rotate_at {
            self.index += 1;
            self.file = create_spool_file(&self.dir, self.index)?;
            self.written = 0;
        }
        let mut buf = Vec::with_capacity(batch.iter().map(|r| r.bytes.len() + 1).sum());
        for r in batch {
            buf.extend_from_slice(&r.bytes);
            buf.push(b'\n');
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.written += buf.len() as u64;
        Ok(())
    }
}

impl Persist for Spool {
    async fn submit(&mut self, batch: Vec<Record>) -> Durable {
        // Written and fsync'd before the next batch is taken.
        let result = self.write(batch).await;
        Box::pin(std::future::ready(result))
    }
}

impl Spool {
    async fn write(&mut self, records: Vec<Record>) -> Result<(), String> {
        let mut file = self.file.take().ok_or("spool failed earlier")?;
        // Blocking file I/O runs off the runtime's threads.
        let (file, records, result) = tokio::task::spawn_blocking(move || {
            let result = file.write_batch(&records);
            (file, records, result)
        })
        .await
        .map_err(|e| format!("spool writer: {e}"))?;
        result.map_err(|e| format!("spool {}: {e}", file.dir.display()))?;
        let index = file.index;
        self.file = Some(file);
        if let Some(sink) = &self.sink {
            let _ = sink.send(SpoolBatch {
                file: index,
                records,
            });
        }
        Ok(())
    }
}

/// Spool files in `dir`, by index.
pub fn spool_files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    if !dir.exists() {
        return Ok(files);
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let index = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".ndjson"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(i) = index {
            files.push((i, path));
        }
    }
    files.sort();
    Ok(files)
}

/// The spool file with this index.
pub fn spool_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{index:016}.ndjson"))
}

fn create_spool_file(dir: &Path, index: u64) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(spool_path(dir, index))?;
    // The new name must survive a crash too.
    std::fs::File::open(dir)?.sync_all()?;
    Ok(file)
}

/// Distributed mode: each submitted batch published to JetStream as batch
/// messages (`gatehouse.v1.evidence.batch`, NDJSON records of many sessions,
/// see [`gatehouse_schemas::evidence`]), durable once the stream acknowledged
/// every one of them.
pub struct JetStream {
    js: async_nats::jetstream::Context,
}

impl JetStream {
    /// Publishes through `js`.
    pub fn new(js: async_nats::jetstream::Context) -> Self {
        Self { js }
    }
}

/// One batch message, built once and published again as it is after a failure:
/// same payload, same `Nats-Msg-Id`, so JetStream drops a copy it already holds.
#[derive(Clone)]
struct BatchMessage {
    id: String,
    payload: Bytes,
}

/// The messages that carry `batch`, in order.
fn batch_messages(batch: &[Record]) -> Vec<BatchMessage> {
    split_batches(batch, |r| r.bytes.len())
        .into_iter()
        .map(|run| BatchMessage {
            id: batch_message_id(run[0].session, run[0].seq, run.len()),
            payload: Bytes::from(encode_batch(run.iter().map(|r| &r.bytes[..]))),
        })
        .collect()
}

/// Publishes per chunk whose acknowledgements are collected together: async-nats
/// allows 5,000 unacknowledged publishes per context and then waits for one to
/// be acknowledged, so a larger chunk (a very large backlog after an outage)
/// would wait forever.
const CHUNK: usize = 1000;

async fn publish_chunked(
    js: &async_nats::jetstream::Context,
    messages: &[BatchMessage],
) -> Result<(), String> {
    for chunk in messages.chunks(CHUNK) {
        await_acks(publish_all(js, chunk).await?).await?;
    }
    Ok(())
}

impl Persist for JetStream {
    async fn submit(&mut self, batch: Vec<Record>) -> Durable {
        let records = batch.len();
        let messages = batch_messages(&batch);
        drop(batch);
        if messages.len() > CHUNK {
            // A backlog: chunk by chunk, before the next batch (retried inside).
            let mut backoff = Duration::from_millis(50);
            while let Err(e) = publish_chunked(&self.js, &messages).await {
                tracing::warn!(error = %e, records, "evidence_publish_retry");
                // A production retry backoff while JetStream is away.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            return Box::pin(std::future::ready(Ok(())));
        }
        // Published now; the acknowledgements are awaited by the returned
        // future, while the worker publishes the next batches.
        let first = publish_all(&self.js, &messages).await;
        let js = self.js.clone();
        Box::pin(async move {
            let mut attempt = match first {
                Ok(acks) => await_acks(acks).await,
                Err(e) => Err(e),
            };
            let mut backoff = Duration::from_millis(50);
            loop {
                match attempt {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        tracing::warn!(error = %e, records, "evidence_publish_retry");
                        // Not a test sleep: a production retry backoff while
                        // JetStream is away; statements waiting meanwhile time
                        // out and are refused. Republished under the same ids,
                        // so JetStream drops what it already has.
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        attempt = publish_chunked(&js, &messages).await;
                    }
                }
            }
        })
    }
}

async fn publish_all(
    js: &async_nats::jetstream::Context,
    messages: &[BatchMessage],
) -> Result<Vec<async_nats::jetstream::context::PublishAckFuture>, String> {
    let mut acks = Vec::with_capacity(messages.len());
    for m in messages {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, m.id.as_str());
        let ack = js
            .publish_with_headers(EVIDENCE_BATCH_SUBJECT, headers, m.payload.clone())
            .await
            .map_err(|e| e.to_string())?;
        acks.push(ack);
    }
    Ok(acks)
}

async fn await_acks(
    acks: Vec<async_nats::jetstream::context::PublishAckFuture>,
) -> Result<(), String> {
    for ack in acks {
        ack.await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Creates the evidence stream if it does not exist: file storage, work-queue
/// retention (an event leaves the stream once an archiver acknowledged it), and
/// a duplicate window that covers publish retries.
pub async fn ensure_stream(
    js: &async_nats::jetstream::Context,
) -> Result<(), async_nats::jetstream::context::CreateStreamError> {
    use async_nats::jetstream::stream::{Config, RetentionPolicy, StorageType};
    js.get_or_create_stream(Config {
        name: gatehouse_schemas::evidence::EVIDENCE_STREAM.to_owned(),
        subjects: vec![format!(
            "{}.>",
            gatehouse_schemas::evidence::EVIDENCE_SUBJECT_PREFIX
        )],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_schemas::evidence::SessionEnded;

    fn ended() -> EventBody {
        EventBody::SessionEnded(SessionEnded {
            reason: "client_terminated".into(),
            statements: 0,
            refused: 0,
            duration_ms: 1,
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spooled_records_are_chained_and_durable_before_the_ticket_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let spool = Spool::open(dir.path(), 1 << 20, Some(tx)).unwrap();
        let recorder = Recorder::start(spool, Duration::from_secs(5), 1 << 20);
        let mut chain = Chain::new(Uuid::now_v7());
        let (s1, _) = chain.record(&recorder, ended()).unwrap();
        let (s2, t2) = chain.record(&recorder, ended()).unwrap();
        assert_eq!((s1, s2), (1, 2));
        recorder.durable(t2).await.unwrap();
        // Durable means on disk: read the spool file back.
        let files = spool_files(&dir.path().join("spool")).unwrap();
        let text = std::fs::read_to_string(&files[0].1).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let first: Event = serde_json::from_str(lines[0]).unwrap();
        let second: Event = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(first.prev, GENESIS);
        assert_eq!(second.prev, hex(&Sha256::digest(lines[0].as_bytes())));
        let mut handed = 0;
        while handed < 2 {
            handed += rx.recv().await.unwrap().records.len();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_spool_refuses_everything_after() {
        let dir = tempfile::tempdir().unwrap();
        // A disk that is full: every write fails with ENOSPC.
        let spool = Spool {
            file: Some(SpoolFile {
                dir: dir.path().to_owned(),
                file: std::fs::OpenOptions::new()
                    .append(true)
                    .open("/dev/full")
                    .unwrap(),
                index: 1,
                written: 0,
                rotate_at: 1 << 20,
            }),
            sink: None,
        };
        let recorder = Recorder::start(spool, Duration::from_secs(5), 1 << 20);
        let mut chain = Chain::new(Uuid::now_v7());
        let (_, t) = chain.record(&recorder, ended()).unwrap();
        let err = recorder.durable(t).await.unwrap_err();
        assert!(err.to_string().contains("No space left"), "{err}");
        // Never trusted again.
        assert!(chain.record(&recorder, ended()).is_err());
        assert_eq!(chain.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_backlog_refuses_at_once_and_leaves_no_gap() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20, None).unwrap();
        let small = Recorder::start(spool, Duration::from_secs(5), 10);
        let mut chain = Chain::new(Uuid::now_v7());
        assert!(chain.record(&small, ended()).is_err());
        assert!(
            chain.is_empty(),
            "a refused record does not advance the chain"
        );
        let spool = Spool::open(dir.path(), 1 << 20, None).unwrap();
        let roomy = Recorder::start(spool, Duration::from_secs(5), 1 << 20);
        let (seq, t) = chain.record(&roomy, ended()).unwrap();
        assert_eq!(seq, 1);
        roomy.durable(t).await.unwrap();
    }
}
