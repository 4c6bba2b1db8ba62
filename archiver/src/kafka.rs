//! The SIEM sink: evidence events as OCSF records on a Kafka topic
//! ([`gatehouse_schemas::siem`]), and the read-back that keeps them exactly once.
//!
//! The producer is idempotent (`enable.idempotence`, `acks=all`): librdkafka's
//! own retries never duplicate or reorder a record. The key is the session id,
//! so a session's records share a partition; each record's Kafka timestamp is
//! its event's `ts`, and its event id `<session>/<seq>` travels in the
//! [`EVENT_ID_HEADER`] header (and in `metadata.uid`).
//!
//! What the producer cannot know is whether an *earlier* copy of a record was
//! written: by an archiver that died before acknowledging JetStream, or by a
//! send that timed out during an outage (it may have landed). For those the
//! service asks [`TailIndex`], which reads the topic's tail back from the
//! record's own timestamp (less a margin for clock skew) and collects the event
//! ids found there.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use gatehouse_schemas::siem::{EVENT_ID_HEADER, SiemRecord};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use uuid::Uuid;

use crate::archive::RecordId;

/// Kafka settings of the archiver.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `bootstrap.servers`: `host:port[,host:port…]`.
    pub brokers: String,
    /// The topic (it must exist).
    pub topic: String,
    /// A send not confirmed within this is failed (`message.timeout.ms`); the
    /// record is then looked up in the tail before it is sent again.
    pub delivery_timeout: Duration,
    /// How far before a record's own timestamp the tail is read back when
    /// looking for an earlier copy (clock skew between gateways and brokers).
    pub scan_margin: Duration,
    /// Extra librdkafka properties (`security.protocol`, `sasl.*`, `ssl.*` …).
    pub properties: Vec<(String, String)>,
}

/// A Kafka failure.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    /// librdkafka said so.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The topic is missing or has no partitions.
    #[error("kafka topic {0} does not exist (create it first)")]
    NoTopic(String),
    /// The tail could not be read to the end in time.
    #[error("kafka: reading the tail of {0} timed out")]
    ScanTimeout(String),
    /// A blocking task failed.
    #[error("kafka task: {0}")]
    Task(String),
}

/// The producer side.
#[derive(Clone)]
pub struct KafkaSink {
    producer: FutureProducer,
    settings: KafkaSettings,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("brokers", &self.settings.brokers)
            .field("topic", &self.settings.topic)
            .finish()
    }
}

fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.brokers);
    for (k, v) in &settings.properties {
        c.set(k, v);
    }
    c
}

impl KafkaSink {
    /// An idempotent producer (no connection is made yet).
    pub fn new(settings: KafkaSettings) -> Result<Self, KafkaSinkError> {
        let producer: FutureProducer = client_config(&settings)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                settings.delivery_timeout.as_millis().to_string(),
            )
            .set("linger.ms", "5")
            .set("compression.type", "none")
            .create()?;
        Ok(Self { producer, settings })
    }

    /// A fatal producer error (e.g. the idempotent producer was fenced after
    /// an outage): this producer can send nothing more and must be replaced.
    pub fn fatal_error(&self) -> Option<String> {
        self.producer
            .client()
            .fatal_error()
            .map(|(code, msg)| format!("{code:?}: {msg}"))
    }

    /// A fresh producer with the same settings (after a fatal error).
    pub fn renewed(&self) -> Result<Self, KafkaSinkError> {
        Self::new(self.settings.clone())
    }

    /// The settings.
    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }

    /// Checks that the topic exists (with a bounded wait for the broker).
    pub async fn check_topic(&self, timeout: Duration) -> Result<usize, KafkaSinkError> {
        let sink = self.clone();
        blocking(move || {
            let md = sink
                .producer
                .client()
                .fetch_metadata(Some(&sink.settings.topic), timeout)?;
            match md.topics().first() {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    Ok(t.partitions().len())
                }
                _ => Err(KafkaSinkError::NoTopic(sink.settings.topic.clone())),
            }
        })
        .await
    }

    /// Maps `record` (an event's exact JSON) and queues it. The returned future
    /// resolves when the broker confirmed it (`acks=all`) or the send failed.
    /// `Err` at once when the record is not an event, or librdkafka's queue is full.
    pub fn send(
        &self,
        id: RecordId,
        record: &[u8],
    ) -> Result<impl Future<Output = Result<(), KafkaSinkError>> + Send + 'static, SendError> {
        let text = std::str::from_utf8(record).map_err(|_| SendError::NotAnEvent)?;
        let siem = SiemRecord::from_record(text).map_err(|_| SendError::NotAnEvent)?;
        let value = serde_json::to_vec(&siem).expect("SIEM records serialize");
        let key = id.session.to_string();
        let event_id = format!("{}/{}", id.session, id.seq);
        let headers = OwnedHeaders::new().insert(Header {
            key: EVENT_ID_HEADER,
            value: Some(event_id.as_str()),
        });
        let rec = FutureRecord::to(&self.settings.topic)
            .key(&key)
            .payload(&value)
            .timestamp(siem.time)
            .headers(headers);
        match self.producer.send_result(rec) {
            Ok(delivery) => Ok(async move {
                match delivery.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(KafkaSinkError::Kafka(e)),
                    Err(_) => Err(KafkaSinkError::Task("producer dropped".into())),
                }
            }),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(SendError::QueueFull)
            }
            Err((e, _)) => Err(SendError::Kafka(e)),
        }
    }

    /// Waits (bounded) for queued records to be delivered: at shutdown.
    pub async fn flush(&self, timeout: Duration) {
        let producer = self.producer.clone();
        let _ = blocking(move || {
            producer.flush(timeout)?;
            Ok(())
        })
        .await;
    }
}

impl KafkaSinkError {
    /// Whether the producer that reported this can send nothing more (fenced,
    /// its epoch or sequence state lost, e.g. after a broker outage).
    pub fn is_producer_fatal(&self) -> bool {
        let code = match self {
            Self::Kafka(KafkaError::MessageProduction(code)) => *code,
            Self::Kafka(e) => match e.rdkafka_error_code() {
                Some(code) => code,
                None => return false,
            },
            _ => return false,
        };
        matches!(
            code,
            RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::Fatal
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::OutOfOrderSequenceNumber
                | RDKafkaErrorCode::UnknownProducerId
                | RDKafkaErrorCode::InvalidProducerIdMapping
        )
    }
}

/// Why a record was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Not an evidence event: it can never be sent.
    #[error("not an evidence event")]
    NotAnEvent,
    /// librdkafka's queue is full: try again shortly.
    #[error("kafka producer queue full")]
    QueueFull,
    /// Any other refusal (try again).
    #[error("kafka: {0}")]
    Kafka(KafkaError),
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KafkaSinkError> + Send + 'static,
) -> Result<T, KafkaSinkError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| KafkaSinkError::Task(e.to_string()))?
}

/// Event ids found in the tail of the topic, read incrementally.
///
/// Covers, on every partition, from the first record at or after `since` (a
/// timestamp, ms) up to where the last read stopped; a later call with an
/// earlier `since` reads again from there, one with the same or a later `since`
/// reads only what was written since.
#[derive(Debug, Default)]
pub struct TailIndex {
    ids: HashSet<RecordId>,
    since: Option<i64>,
    next: HashMap<i32, i64>,
}

impl TailIndex {
    /// Whether `id` was found.
    pub fn contains(&self, id: &RecordId) -> bool {
        self.ids.contains(id)
    }

    /// Records `id` as written (a confirmed send of ours).
    pub fn insert(&mut self, id: RecordId) {
        self.ids.insert(id);
    }

    /// How many ids it holds.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Forgets everything (when nothing needs it; the next check reads afresh).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Reads the tail so that it covers every record written with a timestamp
    /// of at least `since_ms - scan_margin`, up to the end of each partition now.
    pub async fn cover(&mut self, sink: &KafkaSink, since_ms: i64) -> Result<(), KafkaSinkError> {
        let margin = sink.settings.scan_margin.as_millis() as i64;
        let since = since_ms.saturating_sub(margin);
        let from = match self.since {
            Some(s) if s <= since && !self.next.is_empty() => Start::Offsets(self.next.clone()),
            _ => Start::Time(since),
        };
        let settings = sink.settings.clone();
        let (ids, next) = blocking(move || read_tail(&settings, from)).await?;
        if self.since.is_none_or(|s| s > since) || self.next.is_empty() {
            self.since = Some(since);
        }
        let found = ids.len();
        self.ids.extend(ids);
        self.next = next;
        tracing::debug!(found, held = self.ids.len(), "kafka_tail_read");
        Ok(())
    }
}

enum Start {
    Time(i64),
    Offsets(HashMap<i32, i64>),
}

/// The tail reader's librdkafka context: reaching the end of a partition is
/// what it waits for, not an error to log.
struct TailContext;

impl rdkafka::ClientContext for TailContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        tracing::error!(error = %error, reason, "librdkafka");
    }
}

impl rdkafka::consumer::ConsumerContext for TailContext {}

/// Reads every partition from `from` to its end as of the read.
///
/// The end is where a fetch reports the partition exhausted (`PartitionEOF`),
/// never the high watermark that `ListOffsets` returned beforehand: a broker may
/// report that one stale (tansu returns the last batch's base offset + 1, so a
/// whole batch written last, e.g. by an archiver killed right after, would go
/// unseen and be sent twice). Reading continues at least to that listed mark.
fn read_tail(
    settings: &KafkaSettings,
    from: Start,
) -> Result<(HashSet<RecordId>, HashMap<i32, i64>), KafkaSinkError> {
    const OP: Duration = Duration::from_secs(10);
    let consumer: BaseConsumer<TailContext> = client_config(settings)
        .set(
            "group.id",
            format!("gatehouse-archiver-tail-{}", Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        // At a partition's end the broker would hold each fetch this long for
        // data that is not coming: the look-up wants the end, at once.
        .set("fetch.wait.max.ms", "10")
        .set("auto.offset.reset", "earliest")
        .create_with_context(TailContext)?;
    let topic = settings.topic.as_str();
    let md = consumer.fetch_metadata(Some(topic), OP)?;
    let partitions: Vec<i32> = match md.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            t.partitions().iter().map(|p| p.id()).collect()
        }
        _ => return Err(KafkaSinkError::NoTopic(topic.to_owned())),
    };
    let mut listed_high = HashMap::new();
    for &p in &partitions {
        let (_, hi) = consumer.fetch_watermarks(topic, p, OP)?;
        listed_high.insert(p, hi);
    }
    let start: HashMap<i32, i64> = match from {
        Start::Offsets(next) => partitions
            .iter()
            .map(|p| (*p, next.get(p).copied().unwrap_or(0)))
            .collect(),
        Start::Time(ts) => {
            let mut tpl = TopicPartitionList::new();
            for &p in &partitions {
                tpl.add_partition_offset(topic, p, Offset::Offset(ts))?;
            }
            let found = consumer.offsets_for_times(tpl, OP)?;
            found
                .elements()
                .iter()
                .map(|e| {
                    let off = match e.offset() {
                        Offset::Offset(o) => o,
                        // No record at or after `ts` as listed: read from the
                        // listed end (what lies past it is still read).
                        _ => listed_high[&e.partition()],
                    };
                    (e.partition(), off)
                })
                .collect()
        }
    };
    let mut ids = HashSet::new();
    let mut assign = TopicPartitionList::new();
    let mut position: HashMap<i32, i64> = HashMap::new();
    for &p in &partitions {
        position.insert(p, start[&p]);
        assign.add_partition_offset(topic, p, Offset::Offset(start[&p]))?;
    }
    consumer.assign(&assign)?;
    let mut at_end: HashSet<i32> = HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while partitions
        .iter()
        .any(|p| !at_end.contains(p) || position[p] < listed_high[p])
    {
        if std::time::Instant::now() > deadline {
            return Err(KafkaSinkError::ScanTimeout(topic.to_owned()));
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                position.insert(m.partition(), m.offset() + 1);
                if let Some(id) = event_id_of(&m) {
                    ids.insert(id);
                }
            }
        }
    }
    Ok((ids, position))
}

/// The event id of a record: its header, else `metadata.uid` of its value.
pub fn event_id_of<M: Message>(m: &M) -> Option<RecordId> {
    if let Some(h) = m.headers() {
        for header in h.iter() {
            if header.key == EVENT_ID_HEADER
                && let Some(v) = header.value
            {
                return parse_event_id(std::str::from_utf8(v).ok()?);
            }
        }
    }
    let value: serde_json::Value = serde_json::from_slice(m.payload()?).ok()?;
    parse_event_id(value.get("metadata")?.get("uid")?.as_str()?)
}

/// `<session>/<seq>` as a [`RecordId`].
pub fn parse_event_id(s: &str) -> Option<RecordId> {
    let (session, seq) = s.split_once('/')?;
    Some(RecordId {
        session: session.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_parse() {
        let s = Uuid::now_v7();
        assert_eq!(
            parse_event_id(&format!("{s}/42")),
            Some(RecordId {
                session: s,
                seq: 42
            })
        );
        assert_eq!(parse_event_id("nope"), None);
        assert_eq!(parse_event_id(&format!("{s}/x")), None);
    }
}
