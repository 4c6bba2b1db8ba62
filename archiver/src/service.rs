//! The distributed archiver (`gatehouse serve --role archiver`): a durable
//! JetStream consumer that writes each evidence event to Kafka (for SIEMs) and
//! into signed segments (for auditors), and acknowledges JetStream only once
//! both hold it.
//!
//! # Acknowledgement
//!
//! A message carries many records (a batch, see
//! [`gatehouse_schemas::evidence`]), or one (as ingresses before batching
//! published them). Every record it carries becomes an [`Entry`] keyed by its
//! [`RecordId`], which is done when the record is durable in the store (named
//! by [`Archive::tick`]/[`Archive::flush`], or recognised as already archived
//! by [`Archive::ingest`]) *and* Kafka confirmed it (or holds it already). A
//! message is acknowledged once every record in it is done. Until then it
//! stays unacknowledged: a Kafka or store outage only delays it (retried with
//! backoff, the JetStream lease kept alive with progress acks), a crash hands
//! it to another archiver after `ack_wait`. A record the store cannot take now,
//! or that conflicts with an archived one, hands its whole message back (nak);
//! the rest of the message is archived meanwhile and recognised when it comes
//! back. Entries (records) are bounded by `max_inflight`: no more is fetched
//! while that many wait, and a fetch asks for no more bytes than the room left
//! could take (see `fetch_size`).
//!
//! # Exactly once in Kafka
//!
//! The event id `<session>/<seq>` is the deduplication key. A record is sent
//! without a look first only when nobody can have sent it before: its message
//! is on its first delivery, was published after this process connected
//! (or last reconnected) to NATS, and its record is not archived already.
//! Everything else is *suspect* — redelivered (its archiver died or let it go),
//! already in the stream when this process started or NATS came back (consumer
//! state may have been rolled back), a second copy in the stream of a record
//! archived before, or a send of ours that failed (it may have landed anyway) —
//! and is first looked
//! up in the topic's tail ([`TailIndex`]), read back from the record's own
//! timestamp, and sent only if absent. While a message is held, its lease is
//! renewed (progress acks), so JetStream does not hand it to a second archiver
//! while the first lives.
//!
//! What remains: two archivers holding the same message at once (JetStream
//! lost a lease, e.g. this process was cut off from NATS for longer than
//! `ack_wait` while still reaching Kafka), both finding no copy and both
//! sending. The reader's dedupe key (`metadata.uid` / the event-id header)
//! covers that case.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::{self, AckKind, consumer::pull, message::Acker};
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use gatehouse_schemas::evidence::{ARCHIVER_CONSUMER, EVIDENCE_STREAM, batch_records};

use crate::archive::{Archive, Ingested, RecordId};
use crate::error::{ArchiveError, PushError};
use crate::kafka::{KafkaSink, KafkaSinkError, SendError, TailIndex};
use crate::segment::Head;
use crate::store::SegmentStore;

/// How the service fetches and holds messages.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// At most this many messages asked for per fetch.
    pub fetch_batch: usize,
    /// At most this many records held unacknowledged by this process (give or
    /// take one message's worth).
    pub max_inflight: usize,
    /// The consumer's `ack_wait` (set when this process creates it): a message
    /// not acknowledged (nor renewed) within it goes to another archiver.
    pub ack_wait: Duration,
    /// The consumer's `max_ack_pending`, over all archivers (when this process creates it).
    pub max_ack_pending: i64,
    /// How often due segments are sealed and retries run.
    pub tick: Duration,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            fetch_batch: 1000,
            max_inflight: 20_000,
            ack_wait: Duration::from_secs(120),
            max_ack_pending: 100_000,
            tick: Duration::from_millis(100),
        }
    }
}

/// Counters, readable while the service runs.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages fetched.
    pub received: AtomicU64,
    /// Records fetched.
    pub records: AtomicU64,
    /// Records done (in both sinks); their messages are acknowledged once all
    /// of theirs are.
    pub acked: AtomicU64,
    /// Records sent to Kafka (confirmed).
    pub produced: AtomicU64,
    /// Suspect records found already in Kafka (not sent again).
    pub found_in_kafka: AtomicU64,
    /// Records that were not evidence events (dropped; a message of nothing
    /// else is terminated).
    pub garbage: AtomicU64,
}

/// A failure that stops the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// JetStream refused the stream or consumer.
    #[error("jetstream: {0}")]
    JetStream(String),
    /// Kafka (at start: the topic).
    #[error(transparent)]
    Kafka(#[from] KafkaSinkError),
}

/// Where a held record stands with Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KafkaState {
    /// Confirmed (or Kafka is off).
    Done,
    /// Sent, confirmation awaited.
    Sending,
    /// To be looked up in the tail, then sent if absent.
    Check,
    /// To be sent (queue was full).
    Send,
}

/// One held record and the messages that carried it.
struct Entry {
    /// Keys in [`Service::messages`] (a key no longer there: handed back).
    messages: Vec<u64>,
    archived: bool,
    kafka: KafkaState,
    /// The record, until Kafka has it.
    record: Option<Bytes>,
    /// The event's time, ms (where to look for an earlier copy).
    ts_ms: i64,
}

/// One held message.
struct Held {
    acker: Acker,
    /// Its records not done yet (acknowledged at zero).
    waiting: usize,
    renewed: Instant,
}

/// A pull request under way, as a task of its own so that it progresses while
/// the loop handles the previous batch.
type Fetch = tokio::task::JoinHandle<Vec<jetstream::Message>>;
/// A record's id and its event's time (ms).
type Located = (RecordId, i64);
type Delivery = Pin<Box<dyn Future<Output = (RecordId, Result<(), KafkaSinkError>)> + Send>>;

/// Notes NATS reconnections: the caller passes `on_event` to
/// `ConnectOptions::event_callback`.
#[derive(Debug, Default, Clone)]
pub struct Reconnects(Arc<AtomicBool>);

impl Reconnects {
    /// For `ConnectOptions::event_callback`.
    pub fn on_event(&self, event: &async_nats::Event) {
        if matches!(event, async_nats::Event::Connected) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

/// The running service's state.
struct Service<S> {
    archive: Archive<S>,
    kafka: Option<KafkaSink>,
    tail: TailIndex,
    /// Ordered by session and seq: sends go out in that order, so a session's
    /// records reach its partition in order.
    entries: BTreeMap<RecordId, Entry>,
    /// The messages that carried them, by a key of this process's own (a
    /// message redelivered while held is held twice).
    messages: HashMap<u64, Held>,
    next_message: u64,
    sends: FuturesUnordered<Delivery>,
    stats: Arc<Stats>,
    settings: ServiceSettings,
    /// Messages of the stream up to this sequence may have been delivered
    /// before (this process started, or NATS came back, after them).
    suspect_upto: u64,
    /// Backoff for Kafka lookups and resends.
    retry_at: Instant,
    backoff: Duration,
    /// Failed sends since the last success (logged once per outage).
    send_failures: u64,
    /// A send failed in a way that leaves the producer unusable.
    renew_producer: bool,
}

/// Runs until `shutdown` resolves: then stops fetching, seals and stores what it
/// holds, acknowledges what both sinks have, and hands the rest back (nak).
pub async fn run<S: SegmentStore + 'static>(
    js: jetstream::Context,
    archive: Archive<S>,
    kafka: Option<KafkaSink>,
    settings: ServiceSettings,
    reconnects: Reconnects,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    let stream = js
        .get_stream(EVIDENCE_STREAM)
        .await
        .map_err(|e| ServiceError::JetStream(format!("stream {EVIDENCE_STREAM}: {e}")))?;
    let consumer: jetstream::consumer::Consumer<pull::Config> = stream
        .get_or_create_consumer(
            ARCHIVER_CONSUMER,
            pull::Config {
                durable_name: Some(ARCHIVER_CONSUMER.to_owned()),
                description: Some("Gatehouse archivers: evidence to Kafka and segments".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: settings.ack_wait,
                max_ack_pending: settings.max_ack_pending,
                max_deliver: -1,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| ServiceError::JetStream(format!("consumer {ARCHIVER_CONSUMER}: {e}")))?;
    if let Some(k) = &kafka {
        let partitions = k.check_topic(Duration::from_secs(30)).await?;
        tracing::info!(topic = %k.settings().topic, partitions, "archiver_kafka_ready");
    }
    let mut svc = Service {
        archive,
        kafka,
        tail: TailIndex::default(),
        entries: BTreeMap::new(),
        messages: HashMap::new(),
        next_message: 0,
        sends: FuturesUnordered::new(),
        stats,
        settings: settings.clone(),
        suspect_upto: 0,
        retry_at: Instant::now(),
        backoff: Duration::from_millis(100),
        send_failures: 0,
        renew_producer: false,
    };
    // The connection made before this is no reconnection.
    reconnects.take();
    svc.suspect_upto = last_sequence(&js).await.unwrap_or(u64::MAX);
    tracing::info!(suspect_upto = svc.suspect_upto, "archiver_started");

    let client = js.client();
    let max_payload = || client.server_info().max_payload;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut stopping = false;
    let mut fetch: Option<Fetch> = None;
    let mut tick = tokio::time::interval(settings.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if reconnects.take() {
            // NATS came back (perhaps a restarted server with older consumer
            // state): whatever is in the stream now may have been delivered before.
            svc.suspect_upto = last_sequence(&js).await.unwrap_or(u64::MAX);
            tracing::info!(suspect_upto = svc.suspect_upto, "archiver_nats_reconnected");
        }
        let room = settings.max_inflight.saturating_sub(svc.entries.len());
        if fetch.is_none() && !stopping && room > 0 {
            fetch = Some(start_fetch(
                &consumer,
                fetch_size(&settings, room, max_payload()),
            ));
        }
        tokio::select! {
            // Cancel safety: the fetch future is kept across iterations and
            // only replaced once it completed; delivery futures live in `sends`.
            _ = &mut shutdown, if !stopping => {
                tracing::info!(held = svc.entries.len(), messages = svc.messages.len(), "archiver_stopping");
                stopping = true;
            }
            batch = async { fetch.as_mut().expect("guarded").await }, if fetch.is_some() => {
                // A fetch task that panicked got nothing (its messages are redelivered).
                let batch = batch.unwrap_or_default();
                // The next pull goes out before this batch is handled, so that
                // the server prepares it meanwhile.
                let records: usize = batch
                    .iter()
                    .map(|m| batch_records(&m.payload).count())
                    .sum();
                let room = settings
                    .max_inflight
                    .saturating_sub(svc.entries.len() + records);
                fetch = (!stopping && room > 0)
                    .then(|| start_fetch(&consumer, fetch_size(&settings, room, max_payload())));
                svc.on_batch(batch).await;
                svc.relieve_pressure().await;
            }
            Some((id, result)) = svc.sends.next(), if !svc.sends.is_empty() => {
                svc.on_delivery(id, result).await;
            }
            result = svc.archive.next_put(), if svc.archive.putting() => {
                svc.on_put(result).await;
            }
            _ = tick.tick() => {
                svc.on_tick().await;
            }
        }
        if stopping && fetch.is_none() {
            svc.finish().await;
            return Ok(());
        }
    }
}

/// The stream's last sequence now.
async fn last_sequence(js: &jetstream::Context) -> Option<u64> {
    let mut stream = js.get_stream(EVIDENCE_STREAM).await.ok()?;
    Some(stream.info().await.ok()?.state.last_sequence)
}

/// A record is at least this long (its session id alone takes 36 of them), so
/// a fetch of `room × MIN_RECORD_BYTES` bytes brings at most `room` records.
const MIN_RECORD_BYTES: usize = 64;

/// What to ask for with `room` records left: at most `fetch_batch` messages
/// and `room × MIN_RECORD_BYTES` bytes, but never fewer bytes than the largest
/// message the server takes (one larger than a pull's byte limit would never
/// be handed out), so past `max_inflight` by one fetch's worth at most.
fn fetch_size(settings: &ServiceSettings, room: usize, max_payload: usize) -> (usize, usize) {
    let messages = room.clamp(1, settings.fetch_batch);
    let floor = max_payload.max(1 << 20) + (64 << 10);
    (messages, room.saturating_mul(MIN_RECORD_BYTES).max(floor))
}

fn start_fetch(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    (n, bytes): (usize, usize),
) -> Fetch {
    let consumer = consumer.clone();
    tokio::spawn(async move {
        let mut out = Vec::new();
        let batch = consumer
            .batch()
            .max_messages(n)
            .max_bytes(bytes)
            .expires(Duration::from_millis(500))
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "archiver_fetch_failed");
                // Not a synchronisation sleep: back off while NATS is away.
                tokio::time::sleep(Duration::from_millis(500)).await;
                return out;
            }
        };
        // The server ends a pull request when it expires; a request lost with
        // a server that went away never ends, so the wait is bounded here too.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, batch.next()).await {
                Ok(Some(Ok(m))) => out.push(m),
                Ok(Some(Err(e))) => {
                    tracing::debug!(error = %e, "archiver_fetch_ended");
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(received = out.len(), "archiver_fetch_abandoned");
                    break;
                }
            }
        }
        out
    })
}

fn epoch_ms(ts: &str) -> i64 {
    humantime::parse_rfc3339(ts)
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

impl<S: SegmentStore + 'static> Service<S> {
    async fn on_batch(&mut self, batch: Vec<jetstream::Message>) {
        let now = SystemTime::now();
        self.stats
            .received
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        // Each message's records, each with its id and time if it reads as an event.
        let mut fetched = Vec::with_capacity(batch.len());
        let mut sessions = Vec::new();
        for msg in batch {
            let (delivered, stream_seq) = match msg.info() {
                Ok(i) => (i.delivered, i.stream_sequence),
                Err(_) => (i64::MAX, 0),
            };
            let (msg, acker) = msg.split();
            let payload = msg.payload;
            let records: Vec<(Bytes, Result<Located, String>)> = batch_records(&payload)
                .map(|line| {
                    let head = Head::parse(line).map(|h| {
                        let id = RecordId {
                            session: h.session_id,
                            seq: h.seq,
                        };
                        (id, epoch_ms(&h.ts))
                    });
                    if let Ok((id, _)) = &head {
                        sessions.push(id.session);
                    }
                    (payload.slice_ref(line), head)
                })
                .collect();
            fetched.push((acker, delivered, stream_seq, records));
        }
        if let Err(e) = self.archive.resume(sessions).await {
            // Each record's ingest reads its session again (and naks on failure).
            tracing::warn!(error = %e, "archiver_store_unavailable");
        }
        let mut touched = Vec::new();
        let mut found = 0u64;
        for (acker, delivered, stream_seq, records) in fetched {
            self.stats
                .records
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            let key = self.next_message;
            self.next_message += 1;
            let suspect = delivered > 1 || stream_seq <= self.suspect_upto;
            // Its records held, its records that are not events (the first
            // one's error), and whether it goes back (after how long).
            let mut waiting = 0usize;
            let mut garbage: (u64, Option<String>) = (0, None);
            let mut nak: Option<Duration> = None;
            for (record, head) in records {
                let (id, ts_ms) = match head {
                    Ok(h) => h,
                    Err(e) => {
                        garbage.0 += 1;
                        garbage.1.get_or_insert(e);
                        continue;
                    }
                };
                let ingested = match self.archive.ingest(&record, now).await {
                    Ok(i) => i,
                    Err(ArchiveError::Push(
                        e @ (PushError::NotAnEvent(_)
                        | PushError::LineBreak { .. }
                        | PushError::ZeroSeq { .. }),
                    )) => {
                        garbage.0 += 1;
                        garbage.1.get_or_insert(e.to_string());
                        continue;
                    }
                    Err(ArchiveError::Push(e)) => {
                        // A different record under an archived id: never acked
                        // blindly, never lost; kept in the stream for a person.
                        tracing::error!(session = %id.session, seq = id.seq, error = %e, "archiver_conflicting_record");
                        nak = nak.max(Some(Duration::from_secs(60)));
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(session = %id.session, seq = id.seq, error = %e, "archiver_store_unavailable");
                        nak = nak.max(Some(Duration::from_secs(2)));
                        continue;
                    }
                };
                waiting += 1;
                touched.push(id);
                if let Some(e) = self.entries.get_mut(&id) {
                    // The same record held twice (redelivered, or published twice):
                    // done for both messages at once.
                    e.messages.push(key);
                    e.archived |= ingested == Ingested::Archived;
                    continue;
                }
                let kafka = match &self.kafka {
                    None => KafkaState::Done,
                    Some(_) if self.tail.contains(&id) => {
                        found += 1;
                        KafkaState::Done
                    }
                    // A record this process archived before, carried by a message
                    // it has not seen (the stream holds it twice: a publish retried
                    // across a NATS restart that lost its de-duplication state),
                    // went to Kafka with its first copy: look before sending.
                    Some(_) if suspect || ingested == Ingested::Archived => KafkaState::Check,
                    Some(_) => KafkaState::Send,
                };
                self.entries.insert(
                    id,
                    Entry {
                        messages: vec![key],
                        archived: ingested == Ingested::Archived,
                        kafka,
                        record: (kafka != KafkaState::Done).then_some(record),
                        ts_ms,
                    },
                );
            }
            let dropped = garbage.0;
            if dropped > 0 {
                self.stats.garbage.fetch_add(dropped, Ordering::Relaxed);
            }
            let error = garbage.1.unwrap_or_default();
            if let Some(delay) = nak {
                // Comes back whole; what of it is held meanwhile is recognised then.
                let _ = acker.ack_with(AckKind::Nak(Some(delay))).await;
            } else if waiting == 0 {
                let terminated = self.stats.garbage.load(Ordering::Relaxed);
                tracing::error!(error, terminated, "archiver_not_an_event_terminated");
                let _ = acker.ack_with(AckKind::Term).await;
                continue;
            } else {
                self.messages.insert(
                    key,
                    Held {
                        acker,
                        waiting,
                        renewed: Instant::now(),
                    },
                );
            }
            if dropped > 0 {
                // Lines of a batch that are not events: logged, never archived.
                tracing::error!(error, dropped, "archiver_not_an_event_dropped");
            }
        }
        if found > 0 {
            self.stats
                .found_in_kafka
                .fetch_add(found, Ordering::Relaxed);
            tracing::info!(found, "archiver_already_in_kafka");
        }
        self.send_ready();
        // Segments due are put in the background; the loop takes the next
        // batch meanwhile and acknowledges their records in `on_put`.
        self.archive.seal_due(SystemTime::now()).await;
        self.ack_done(touched).await;
    }

    /// A segment put ended: acknowledges its records if Kafka has them too.
    async fn on_put(&mut self, result: Result<Vec<RecordId>, ArchiveError>) {
        match result {
            Ok(ids) => {
                let touched = self.mark_archived(ids);
                self.ack_done(touched).await;
            }
            Err(e) => tracing::warn!(error = %e, "archiver_store_failed"),
        }
    }

    /// Queues every record in state `Send`.
    fn send_ready(&mut self) {
        let Some(kafka) = &self.kafka else { return };
        // A session's records go out in seq order: none is sent while an
        // earlier one of its session still waits for its look-up.
        let mut blocked = None;
        for (id, e) in self.entries.iter_mut() {
            if e.kafka == KafkaState::Check {
                blocked = Some(id.session);
                continue;
            }
            if e.kafka != KafkaState::Send || blocked == Some(id.session) {
                continue;
            }
            let Some(record) = &e.record else {
                e.kafka = KafkaState::Done;
                continue;
            };
            match kafka.send(*id, record) {
                Ok(fut) => {
                    let id = *id;
                    e.kafka = KafkaState::Sending;
                    self.sends.push(Box::pin(fut.map(move |r| (id, r))));
                }
                Err(SendError::QueueFull) => break,
                Err(SendError::NotAnEvent) => {
                    // The archive took it as an event; the mapping could not.
                    tracing::error!(session = %id.session, seq = id.seq, "archiver_unmappable_record");
                    e.kafka = KafkaState::Check;
                }
                Err(SendError::Kafka(err)) => {
                    tracing::warn!(error = %err, "archiver_kafka_send_refused");
                    e.kafka = KafkaState::Check;
                }
            }
        }
    }

    async fn on_delivery(&mut self, id: RecordId, result: Result<(), KafkaSinkError>) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        match result {
            Ok(()) => {
                self.stats.produced.fetch_add(1, Ordering::Relaxed);
                e.kafka = KafkaState::Done;
                e.record = None;
                self.backoff = Duration::from_millis(100);
                if self.send_failures > 0 {
                    tracing::info!(failed = self.send_failures, "archiver_kafka_sending_again");
                    self.send_failures = 0;
                }
                self.ack_done(vec![id]).await;
            }
            Err(err) => {
                // It may have landed all the same: look before sending again.
                if self.send_failures == 0 {
                    tracing::warn!(session = %id.session, seq = id.seq, error = %err, "archiver_kafka_send_failed");
                } else {
                    tracing::debug!(session = %id.session, seq = id.seq, error = %err, "archiver_kafka_send_failed");
                }
                self.send_failures += 1;
                self.renew_producer |= err.is_producer_fatal();
                e.kafka = KafkaState::Check;
                self.retry_at = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
            }
        }
    }

    /// Near `max_inflight` with records in open segments (long-lived sessions
    /// whose segments would seal only by age), seals the longest open ones
    /// early so that their records can be acknowledged and fetching goes on:
    /// without this an archiver holding `max_inflight` records of sessions
    /// that keep going waits `segment_max_age` for each round, which caps it
    /// at `max_inflight / segment_max_age` records a second.
    async fn relieve_pressure(&mut self) {
        let max = self.settings.max_inflight;
        if self.entries.len().saturating_mul(4) < max.saturating_mul(3) {
            return;
        }
        let open = self.archive.open_records();
        if open == 0 {
            return;
        }
        tracing::debug!(held = self.entries.len(), open, "archiver_sealing_early");
        self.archive
            .relieve((max / 2).min(open), SystemTime::now())
            .await;
    }

    async fn on_tick(&mut self) {
        self.renew_producer_if_fatal();
        self.archive.seal_due(SystemTime::now()).await;
        self.relieve_pressure().await;
        let mut touched = Vec::new();
        self.check_suspects().await;
        self.send_ready();
        self.renew_leases().await;
        touched.extend(
            self.entries
                .iter()
                .filter(|(_, e)| e.is_done())
                .map(|(id, _)| *id),
        );
        self.ack_done(touched).await;
    }

    /// A producer with a fatal error (fenced after an outage) is replaced once
    /// its last sends have failed; what it had in flight is looked up first.
    fn renew_producer_if_fatal(&mut self) {
        let Some(kafka) = &self.kafka else { return };
        if !self.sends.is_empty() {
            return;
        }
        let Some(fatal) = kafka
            .fatal_error()
            .or_else(|| self.renew_producer.then(|| "producer fenced".to_owned()))
        else {
            return;
        };
        self.renew_producer = false;
        match kafka.renewed() {
            Ok(k) => {
                tracing::warn!(error = %fatal, "archiver_kafka_producer_renewed");
                self.kafka = Some(k);
            }
            Err(e) => tracing::error!(error = %e, "archiver_kafka_producer_renew_failed"),
        }
    }

    /// Looks suspect records up in the tail and sends those not there.
    async fn check_suspects(&mut self) {
        let Some(kafka) = &self.kafka else { return };
        let oldest = self
            .entries
            .values()
            .filter(|e| e.kafka == KafkaState::Check)
            .map(|e| e.ts_ms)
            .min();
        let Some(oldest) = oldest else {
            if self.entries.values().all(|e| e.kafka == KafkaState::Done) && !self.tail.is_empty() {
                self.tail.clear();
            }
            return;
        };
        if Instant::now() < self.retry_at {
            return;
        }
        match self.tail.cover(kafka, oldest).await {
            Ok(()) => {
                let mut found = 0u64;
                for (id, e) in self.entries.iter_mut() {
                    if e.kafka != KafkaState::Check {
                        continue;
                    }
                    if self.tail.contains(id) {
                        e.kafka = KafkaState::Done;
                        e.record = None;
                        found += 1;
                    } else {
                        e.kafka = KafkaState::Send;
                    }
                }
                self.stats
                    .found_in_kafka
                    .fetch_add(found, Ordering::Relaxed);
                if found > 0 {
                    tracing::info!(found, "archiver_already_in_kafka");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, backoff = ?self.backoff, "archiver_kafka_lookup_failed");
                self.retry_at = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
            }
        }
    }

    /// Progress acks for messages held long: JetStream keeps them leased here.
    async fn renew_leases(&mut self) {
        let every = self.settings.ack_wait / 3;
        let now = Instant::now();
        for m in self.messages.values_mut() {
            if now.duration_since(m.renewed) >= every {
                let _ = m.acker.ack_with(AckKind::Progress).await;
                m.renewed = now;
            }
        }
    }

    fn mark_archived(&mut self, ids: Vec<RecordId>) -> Vec<RecordId> {
        let mut touched = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(e) = self.entries.get_mut(&id) {
                e.archived = true;
                touched.push(id);
            }
        }
        touched
    }

    /// Lets go of those of `ids` that both sinks have, and acknowledges the
    /// messages all of whose records are now done.
    async fn ack_done(&mut self, ids: Vec<RecordId>) {
        for id in ids {
            if !self.entries.get(&id).is_some_and(Entry::is_done) {
                continue;
            }
            let e = self.entries.remove(&id).expect("present");
            if self.kafka.is_some() {
                // A copy redelivered later (JetStream state rolled back) is
                // then known without a read.
                self.tail.insert(id);
            }
            self.stats.acked.fetch_add(1, Ordering::Relaxed);
            for key in e.messages {
                // Absent: handed back (nak) when it was fetched.
                let Some(m) = self.messages.get_mut(&key) else {
                    continue;
                };
                m.waiting -= 1;
                if m.waiting > 0 {
                    continue;
                }
                let m = self.messages.remove(&key).expect("present");
                if let Err(err) = m.acker.ack().await {
                    tracing::warn!(error = %err, "archiver_ack_failed");
                }
            }
        }
    }

    /// Clean stop: waits (bounded) for Kafka confirmations, seals and stores
    /// everything, acknowledges what is complete and hands the rest back.
    async fn finish(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.sends.is_empty() {
            match tokio::time::timeout_at(deadline, self.sends.next()).await {
                Ok(Some((id, r))) => self.on_delivery(id, r).await,
                Ok(None) | Err(_) => break,
            }
        }
        match self.archive.flush().await {
            Ok(ids) => {
                let touched = self.mark_archived(ids);
                self.ack_done(touched).await;
            }
            Err(e) => tracing::error!(error = %e, "archiver_flush_failed"),
        }
        let rest: Vec<RecordId> = self.entries.keys().copied().collect();
        self.ack_done(rest).await;
        self.entries.clear();
        let handed_back = self.messages.len();
        for (_, m) in std::mem::take(&mut self.messages) {
            let _ = m.acker.ack_with(AckKind::Nak(None)).await;
        }
        tracing::info!(
            acked = self.stats.acked.load(Ordering::Relaxed),
            handed_back,
            "archiver_stopped"
        );
    }
}

impl Entry {
    fn is_done(&self) -> bool {
        self.archived && self.kafka == KafkaState::Done
    }
}
