//! The distributed archiver (`gatehouse serve --role archiver`) with real
//! processes: nats-server with JetStream, tansu (Kafka-compatible), the
//! `gatehouse` binary, and PostgreSQL where a gateway or a durable broker is
//! involved. Every event must end up in Kafka exactly once (each record valid
//! against `schemas/json/siem-record.schema.json`) and in a signed archive that
//! `gatehouse verify` passes — also across an archiver killed mid-stream, a
//! Kafka outage and a NATS restart.

mod harness;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse_ingress::evidence::{Chain, JetStream, Recorder, ensure_stream};
use gatehouse_schemas::Identity;
use gatehouse_schemas::evidence::{
    ARCHIVER_CONSUMER, CiContext, EVIDENCE_BATCH_SUBJECT, EVIDENCE_STREAM, EventBody, SessionEnded,
    SessionStarted, batch_records,
};
use harness::evidence::statement;
use harness::kafka::*;
use harness::nats::*;
use harness::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");
const TOPIC: &str = "gatehouse.evidence.ocsf";

/// NATS, Kafka, keys and an archive directory for archivers to share.
struct Bus {
    nats: Nats,
    kafka: Kafka,
    dir: tempfile::TempDir,
    js: async_nats::jetstream::Context,
    /// Segments go to this bucket instead of the directory.
    s3: Option<(harness::s3::Moto, String)>,
}

impl Bus {
    async fn new(kafka: Kafka) -> Bus {
        let nats = Nats::start();
        kafka.create_topic(TOPIC, 3).await;
        let dir = tempfile::tempdir().unwrap();
        gatehouse_archiver::keys::keygen(&dir.path().join("keys")).unwrap();
        let js = async_nats::jetstream::new(nats.client().await);
        ensure_stream(&js).await.unwrap();
        Bus {
            nats,
            kafka,
            dir,
            js,
            s3: None,
        }
    }

    /// The store section of the archiver's config.
    fn store_config(&self) -> String {
        match &self.s3 {
            None => format!("dir = \"{}\"\n", self.archive().display()),
            Some((moto, bucket)) => format!(
                "\n[archiver.s3]\nbucket = \"{bucket}\"\nendpoint = \"{}\"\nforce_path_style = true\nobject_lock_days = 1\ntimeout = \"10s\"\nattempt_timeout = \"3s\"\n",
                moto.endpoint()
            ),
        }
    }

    fn archive(&self) -> PathBuf {
        self.dir.path().join("archive")
    }

    fn public_key(&self) -> PathBuf {
        self.dir
            .path()
            .join("keys")
            .join(gatehouse_archiver::keys::VERIFYING_KEY_FILE)
    }

    /// An archiver's config: short segments and a short lease, so that tests
    /// see acknowledgements and redeliveries quickly.
    fn config(&self) -> PathBuf {
        self.config_with("300ms")
    }

    /// The config with segments sealed after `segment_max_age`.
    fn config_with(&self, segment_max_age: &str) -> PathBuf {
        self.config_tuned(segment_max_age, 5000)
    }

    /// [`Self::config_with`], holding at most `max_inflight` records.
    fn config_tuned(&self, segment_max_age: &str, max_inflight: usize) -> PathBuf {
        let path = self
            .dir
            .path()
            .join(format!("archiver-{segment_max_age}-{max_inflight}.toml"));
        std::fs::write(
            &path,
            format!(
                r#"
[log]
level = "info,gatehouse_archiver=debug"

[nats]
url = "{nats}"

[archiver]
signing_key = "{key}"
segment_max_age = "{segment_max_age}"
segment_max_events = 500
fetch_batch = 500
max_inflight = {max_inflight}
ack_wait = "4s"
{store}

[archiver.kafka]
brokers = "{brokers}"
topic = "{TOPIC}"
delivery_timeout = "5s"
scan_margin = "5s"
"#,
                nats = self.nats.url(),
                key = self
                    .dir
                    .path()
                    .join("keys")
                    .join(gatehouse_archiver::keys::SIGNING_KEY_FILE)
                    .display(),
                store = self.store_config(),
                brokers = self.kafka.brokers(),
            ),
        )
        .unwrap();
        path
    }

    fn archiver(&self) -> Archiver {
        self.archiver_with(self.config())
    }

    /// An archiver on `config`.
    fn archiver_with(&self, config: PathBuf) -> Archiver {
        let mut child = tokio::process::Command::new(BIN)
            .args(["serve", "--role", "archiver", "--config"])
            .arg(config)
            .envs(self.s3.iter().flat_map(|(moto, _)| moto.env()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start gatehouse serve --role archiver");
        // The log is echoed for the test output and kept for assertions.
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let keep = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[archiver] {line}");
                let mut l = keep.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Archiver { child, log }
    }

    /// Records in the stream (work-queue: in messages not yet acknowledged by
    /// an archiver). A message acknowledged while they are counted is skipped.
    async fn unacked_records(&self) -> u64 {
        let Ok(mut stream) = self.js.get_stream(EVIDENCE_STREAM).await else {
            return 0;
        };
        let Ok(info) = stream.info().await else {
            return 0;
        };
        let (first, last) = (info.state.first_sequence, info.state.last_sequence);
        let mut n = 0;
        for seq in first..=last {
            if let Ok(m) = stream.get_raw_message(seq).await {
                n += batch_records(&m.payload).count() as u64;
            }
        }
        n
    }

    /// Whether the consumer has acknowledged everything in the stream: nothing
    /// pending or awaiting an ack, the ack floor at the stream's last message.
    /// (Not "the stream is empty": a nats-server killed with SIGKILL can come
    /// back with work-queue messages whose acks it had taken but whose
    /// deletion it had not written; the consumer never hands those out again.)
    async fn all_acked(&self) -> Result<(), String> {
        let mut stream = self
            .js
            .get_stream(EVIDENCE_STREAM)
            .await
            .map_err(|e| e.to_string())?;
        let state = stream
            .info()
            .await
            .map_err(|e| e.to_string())?
            .state
            .clone();
        let mut c = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(ARCHIVER_CONSUMER)
            .await
            .map_err(|e| e.to_string())?;
        let info = c.info().await.map_err(|e| e.to_string())?.clone();
        if state.messages == 0
            || (info.num_pending == 0
                && info.num_ack_pending == 0
                && info.ack_floor.stream_sequence >= state.last_sequence)
        {
            Ok(())
        } else {
            Err(format!(
                "stream {} messages (last {}); consumer ack floor {}, pending {}, awaiting ack {}",
                state.messages,
                state.last_sequence,
                info.ack_floor.stream_sequence,
                info.num_pending,
                info.num_ack_pending
            ))
        }
    }

    /// Waits until every event is acknowledged.
    async fn wait_all_acked(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            match self.all_acked().await {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("not all acknowledged after {within:?}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Reads the topic until every id of `expected` is there; then checks that
    /// each is there exactly once and nothing else is, that each record is
    /// valid against the checked-in schema, and returns them by event id.
    fn kafka_exactly_once(&self, expected: &HashSet<String>) -> HashMap<String, Read> {
        let brokers = self.kafka.brokers();
        let records = read_topic(&brokers, TOPIC, Duration::from_secs(60), |rs| {
            let seen: HashSet<&str> = rs.iter().filter_map(|r| r.event_id.as_deref()).collect();
            expected.iter().all(|id| seen.contains(id.as_str()))
        });
        let schema = siem_schema();
        let mut by_id: HashMap<String, Read> = HashMap::new();
        let mut duplicates = Vec::new();
        for r in records {
            assert!(schema.is_valid(&r.value), "invalid record: {}", r.value);
            let id = r.value["metadata"]["uid"].as_str().unwrap().to_owned();
            assert_eq!(
                r.event_id.as_deref(),
                Some(id.as_str()),
                "header and uid agree"
            );
            assert_eq!(
                r.key,
                r.value["metadata"]["correlation_uid"].as_str().unwrap(),
                "keyed by session"
            );
            assert!(expected.contains(&id), "unexpected record {id}");
            if let Some(first) = by_id.insert(id.clone(), r) {
                duplicates.push((id, first.partition, first.offset));
            }
        }
        assert!(
            duplicates.is_empty(),
            "{} events are in Kafka more than once, e.g. {:?}",
            duplicates.len(),
            &duplicates[..duplicates.len().min(5)]
        );
        assert_eq!(by_id.len(), expected.len());
        by_id
    }

    /// `gatehouse verify` over the archive: clean, with `complete` sessions.
    /// `gatehouse verify` over the archive: the directory, or the bucket.
    async fn verify(&self, complete: usize) -> String {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("verify").arg("--key").arg(self.public_key());
        match &self.s3 {
            None => {
                cmd.arg("--dir").arg(self.archive());
            }
            Some((moto, bucket)) => {
                cmd.args(["--s3-bucket", bucket, "--s3-path-style", "--s3-endpoint"])
                    .arg(moto.endpoint())
                    .envs(moto.env());
            }
        }
        let out = cmd.output().await.unwrap();
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "verify failed:\n{report}");
        assert!(
            report.starts_with(&format!(
                "{complete} sessions: {complete} complete, 0 open, 0 broken; 0 breaks"
            )),
            "{report}"
        );
        report
    }
}

fn siem_schema() -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/json/siem-record.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

/// A running `gatehouse serve --role archiver`, killed on drop.
struct Archiver {
    child: tokio::process::Child,
    log: Arc<Mutex<String>>,
}

impl Archiver {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits (bounded) until the archiver has logged `what`.
    async fn wait_log(&self, what: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.log().contains(what) {
            assert!(Instant::now() < deadline, "archiver never logged {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id().expect("running") as i32, sig);
        }
    }

    /// SIGKILL, and reaps it.
    async fn kill9(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait().await;
    }

    /// SIGTERM; waits (bounded) for a clean exit; returns its log.
    async fn terminate(mut self) -> String {
        self.signal(libc::SIGTERM);
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("archiver exits on SIGTERM")
            .unwrap();
        assert!(status.success(), "archiver exit: {status}");
        self.log()
    }
}

/// Sessions of chained events published through the ingress's own JetStream
/// recorder (the same code path, message ids and chain a gateway uses).
struct Load {
    recorder: Arc<Recorder>,
    sessions: Vec<(Uuid, Chain)>,
    /// Every event id published, `<session>/<seq>`.
    ids: HashSet<String>,
    /// Statement SQL per session, in order.
    statements: BTreeMap<Uuid, Vec<String>>,
    /// Shared with whoever watches the load while it runs.
    progress: Arc<Progress>,
}

/// How far a [`Load`] is.
#[derive(Debug, Default)]
struct Progress {
    /// Records queued on the recorder.
    queued: AtomicU64,
    /// Records JetStream has acknowledged.
    durable: AtomicU64,
}

impl Load {
    fn new(js: async_nats::jetstream::Context, sessions: usize) -> Load {
        let recorder = Recorder::start(JetStream::new(js), Duration::from_secs(120), 256 << 20);
        let mut load = Load {
            recorder,
            sessions: Vec::new(),
            ids: HashSet::new(),
            statements: BTreeMap::new(),
            progress: Arc::default(),
        };
        for _ in 0..sessions {
            let id = Uuid::now_v7();
            let mut chain = Chain::new(id);
            let (seq, _) = chain.record(&load.recorder, started()).unwrap();
            load.ids.insert(format!("{id}/{seq}"));
            load.progress.queued.fetch_add(1, Ordering::SeqCst);
            load.sessions.push((id, chain));
        }
        load
    }

    /// Records `n` statements round-robin over the sessions, waits until
    /// JetStream holds them.
    async fn statements(&mut self, n: usize) {
        let mut last = None;
        for i in 0..n {
            let k = i % self.sessions.len();
            let (id, chain) = &mut self.sessions[k];
            let sql = format!("select {} from t where k = {k}", chain.len());
            let (seq, ticket) = chain
                .record(&self.recorder, statement(&sql, "allow"))
                .unwrap();
            self.ids.insert(format!("{id}/{seq}"));
            self.statements.entry(*id).or_default().push(sql);
            self.progress.queued.fetch_add(1, Ordering::SeqCst);
            last = Some(ticket);
        }
        if let Some(t) = last {
            self.recorder.durable(t).await.expect("published");
        }
        let queued = self.progress.queued.load(Ordering::SeqCst);
        self.progress.durable.store(queued, Ordering::SeqCst);
    }

    /// Ends every session.
    async fn end(&mut self) {
        let mut last = None;
        for (id, chain) in &mut self.sessions {
            let (seq, ticket) = chain.record(&self.recorder, ended()).unwrap();
            self.ids.insert(format!("{id}/{seq}"));
            self.progress.queued.fetch_add(1, Ordering::SeqCst);
            last = Some(ticket);
        }
        self.recorder
            .durable(last.unwrap())
            .await
            .expect("published");
        let queued = self.progress.queued.load(Ordering::SeqCst);
        self.progress.durable.store(queued, Ordering::SeqCst);
    }
}

fn started() -> EventBody {
    let mut claims = serde_json::Map::new();
    claims.insert("repository".into(), "acme/load".into());
    claims.insert("run_id".into(), "1".into());
    EventBody::SessionStarted(Box::new(SessionStarted {
        role: "app".into(),
        identity: Identity {
            issuer: ISSUER.into(),
            subject: "repo:acme/load:ref:refs/heads/main".into(),
            key_id: None,
            algorithm: "EdDSA".into(),
            claims: claims.clone(),
        },
        ci: CiContext::from_claims(&claims),
        upstream: "127.0.0.1:5432/appdb".into(),
        upstream_user: "app".into(),
        client_addr: "127.0.0.1:40000".into(),
        tls: None,
        gateway: "load".into(),
    }))
}

fn ended() -> EventBody {
    EventBody::SessionEnded(SessionEnded {
        reason: "client_terminated".into(),
        statements: 0,
        refused: 0,
        duration_ms: 1,
    })
}

/// Records of `load` acknowledged by an archiver, at least: every record
/// durable before the stream was read is either still in it or acknowledged.
async fn acked_at_least(bus: &Bus, load: &Progress) -> u64 {
    let durable = load.durable.load(Ordering::SeqCst);
    durable.saturating_sub(bus.unacked_records().await)
}

/// Waits until at least `n` records of `load` are acknowledged (some of the
/// load is through).
async fn wait_acked_at_least(bus: &Bus, load: &Progress, n: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let acked = acked_at_least(bus, load).await;
        if acked >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{acked} < {n} records acknowledged after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Within each session, Kafka holds the records in seq order.
fn assert_ordered_per_session(records: &HashMap<String, Read>) {
    let mut by_session: HashMap<String, Vec<(i64, u64)>> = HashMap::new();
    for r in records.values() {
        let session = r.value["metadata"]["correlation_uid"].as_str().unwrap();
        let seq = r.value["metadata"]["sequence"].as_u64().unwrap();
        by_session
            .entry(session.to_owned())
            .or_default()
            .push((r.offset, seq));
    }
    for (session, mut v) in by_session {
        v.sort();
        let seqs: Vec<u64> = v.iter().map(|(_, s)| *s).collect();
        let mut sorted = seqs.clone();
        sorted.sort();
        assert_eq!(seqs, sorted, "session {session} out of order in Kafka");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_acknowledges_everything_both_sinks_hold() {
    let bus = Bus::new(Kafka::start_memory()).await;
    let archiver = bus.archiver();
    let mut load = Load::new(bus.js.clone(), 3);
    load.statements(150).await;
    // Garbage on an evidence subject: terminated, counted, never redelivered,
    // and it holds nothing else up.
    for junk in [&b"not an event"[..], br#"{"session_id":"x"}"#] {
        bus.js
            .publish(
                gatehouse_schemas::evidence::evidence_subject(Uuid::nil()),
                junk.into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    load.statements(150).await;
    load.end().await;
    bus.wait_all_acked(Duration::from_secs(60)).await;
    let log = archiver.terminate().await;
    assert!(log.contains("archiver_not_an_event_terminated"), "{log}");
    assert!(log.contains("terminated=2"), "{log}");
    let records = bus.kafka_exactly_once(&load.ids);
    assert_ordered_per_session(&records);
    bus.verify(3).await;
}

/// Records in the topic (the sum of the partitions' high watermarks).
fn kafka_count(bus: &Bus) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bus.kafka.brokers())
        .create()
        .unwrap();
    (0..3)
        .map(|p| {
            consumer
                .fetch_watermarks(TOPIC, p, Duration::from_secs(5))
                .unwrap()
                .1
        })
        .sum()
}

/// Waits until Kafka holds at least `n` more records of `load` than JetStream
/// has had acknowledged.
async fn wait_sent_not_acked(bus: &Bus, load: &Progress, n: i64, within: Duration) {
    let deadline = Instant::now() + within;
    while sent_not_acked(bus, load).await < n {
        assert!(
            Instant::now() < deadline,
            "never {n} records sent and unacknowledged"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Records in Kafka that the stream still holds unacknowledged (at most).
async fn sent_not_acked(bus: &Bus, load: &Progress) -> i64 {
    // In this order, so that the difference is never more than the truth:
    // Kafka's count only grows, and records queued after the stream was
    // read (counted by the stream or not) can only make `acked` larger.
    let in_kafka = kafka_count(bus);
    let unacked = bus.unacked_records().await as i64;
    let queued = load.queued.load(Ordering::SeqCst) as i64;
    let acked = queued - unacked;
    in_kafka - acked
}

/// Waits until the stream holds at least `n` unacknowledged events.
async fn wait_unacked_at_least(bus: &Bus, n: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while bus.unacked_records().await < n {
        assert!(
            Instant::now() < deadline,
            "fewer than {n} events waiting after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The writers (archiver instances) that wrote segments.
fn writers(archive: &Path) -> HashSet<String> {
    let mut out = HashSet::new();
    for session in std::fs::read_dir(archive.join("sessions")).unwrap() {
        for f in std::fs::read_dir(session.unwrap().path()).unwrap() {
            let name = f.unwrap().file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".manifest") {
                out.insert(stem.rsplit('-').next().unwrap().to_owned());
            }
        }
    }
    out
}

const POLICY: &str = r#"
version = "archiver-v1"

[[rules]]
id = "no-drop"
risks = ["drop", "drop_cascade", "truncate"]
verdict = "block"
reason = "dropping is not allowed for CI jobs"

[[rules]]
id = "app-work"
roles = ["app"]
claims = { repository = "acme/app" }
classes = ["read", "write", "ddl", "transaction", "utility", "session", "prepared"]
verdict = "allow"
"#;

/// A gateway in distributed evidence mode (JetStream) with its decider
/// in-process runs a session: simple and extended queries and a refused
/// statement. The archiver process delivers every record to Kafka exactly once,
/// in order, schema-valid, carrying the SQL, the verdicts and the caller; the
/// archive verifies and replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_sessions_reach_kafka_and_the_archive() {
    use gatehouse_decider::PolicyHandle;
    use gatehouse_ingress::decision::LocalPolicy;
    let pg = Pg::start();
    let issuer = Issuer::new();
    let bus = Bus::new(Kafka::start_memory()).await;
    std::fs::write(bus.dir.path().join("policy.toml"), POLICY).unwrap();
    let handle = Arc::new(PolicyHandle::load(&bus.dir.path().join("policy.toml")).unwrap());
    let config = format!(
        "{}\n[evidence]\nmode = \"jetstream\"\n\n[nats]\nurl = \"{}\"\n",
        base_config(&pg, &issuer),
        bus.nats.url()
    );
    let gw = start_gateway(&config, LocalPolicy::new(handle)).await;
    let archiver = bus.archiver();

    let token = issuer.token(&[]);
    let client = connect(&gw.url("app", &token)).await.unwrap();
    client.simple_query("select 1 as one").await.unwrap();
    let row = client
        .query_one("select $1::int + 1 as n", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    let err = client
        .simple_query("drop table if exists t")
        .await
        .unwrap_err();
    assert_eq!(db_error(&err).0, "42501");
    drop(client);
    // The session's end is recorded once the gateway saw the client go: wait
    // for it to come through (it is the last record of the session).
    let topic = read_topic(&bus.kafka.brokers(), TOPIC, Duration::from_secs(60), |rs| {
        rs.iter()
            .any(|r| r.value["unmapped"]["gatehouse_event_type"] == "session_ended")
    });
    gw.shutdown().await;

    // Every record the gateway published: up to the session's end.
    let published = topic
        .iter()
        .find(|r| r.value["unmapped"]["gatehouse_event_type"] == "session_ended")
        .and_then(|r| r.value["metadata"]["sequence"].as_u64())
        .expect("the session's end has a sequence");
    bus.wait_all_acked(Duration::from_secs(60)).await;
    let log = archiver.terminate().await;
    assert!(log.contains("archiver_stopped"), "{log}");

    let stored = std::fs::read_dir(bus.archive().join("sessions"))
        .unwrap()
        .count();
    assert_eq!(stored, 1, "one session archived");
    let session = std::fs::read_dir(bus.archive().join("sessions"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name()
        .to_string_lossy()
        .into_owned();
    let expected: HashSet<String> = (1..=published).map(|s| format!("{session}/{s}")).collect();
    let records = bus.kafka_exactly_once(&expected);
    assert_ordered_per_session(&records);
    let all: Vec<&serde_json::Value> = records.values().map(|r| &r.value).collect();
    let start = all
        .iter()
        .find(|v| v["activity_id"] == 3)
        .expect("a Connect record");
    assert_eq!(start["actor"]["user"]["name"], "acme/app");
    assert_eq!(
        start["actor"]["user"]["uid"],
        "repo:acme/app:ref:refs/heads/main"
    );
    assert_eq!(start["database"]["name"], APP_DB);
    let queries: Vec<(&str, &str)> = all
        .iter()
        .filter(|v| v["unmapped"]["gatehouse_event_type"] == "statement")
        .map(|v| {
            (
                v["query_info"]["query_string"].as_str().unwrap(),
                v["disposition"].as_str().unwrap(),
            )
        })
        .collect();
    for (sql, disposition) in [
        ("select 1 as one", "Allowed"),
        ("select $1::int + 1 as n", "Allowed"),
        ("drop table if exists t", "Blocked"),
    ] {
        assert!(queries.contains(&(sql, disposition)), "{sql}: {queries:?}");
    }
    // The raw record is the archived record, byte for byte.
    for v in &all {
        let raw = v["raw_data"].as_str().unwrap();
        let event: serde_json::Value = serde_json::from_str(raw).unwrap();
        assert_eq!(
            format!("{}/{}", event["session_id"].as_str().unwrap(), event["seq"]),
            v["metadata"]["uid"].as_str().unwrap()
        );
    }
    assert!(
        !serde_json::to_string(&all).unwrap().contains(&token),
        "the token reached Kafka"
    );
    assert!(!serde_json::to_string(&all).unwrap().contains(APP_PASSWORD));

    bus.verify(1).await;
    let out = tokio::process::Command::new(BIN)
        .arg("replay")
        .arg(&session)
        .arg("--dir")
        .arg(bus.archive())
        .output()
        .await
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{transcript}");
    for sql in [
        "select 1 as one",
        "select $1::int + 1 as n",
        "drop table if exists t",
    ] {
        assert!(transcript.contains(sql), "{transcript}");
    }
}

/// Two archivers share the durable consumer; one is killed (SIGKILL) mid-stream.
/// What it held comes back to the other after the lease expires, is found in
/// Kafka where it got that far, and every event lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_archivers_share_the_work_and_survive_one_killed() {
    let bus = Bus::new(Kafka::start_memory()).await;
    let a = bus.archiver();
    let b = bus.archiver();
    let mut load = Load::new(bus.js.clone(), 8);
    let progress = load.progress.clone();
    // Many small publishes (a message or two each): messages enough for both
    // archivers' fetches to get some.
    let producer = tokio::spawn(async move {
        for _ in 0..150 {
            load.statements(20).await;
        }
        load.end().await;
        load
    });
    wait_acked_at_least(&bus, &progress, 800, Duration::from_secs(60)).await;
    // Both have archived some (with a few large messages, one can be ahead).
    let deadline = Instant::now() + Duration::from_secs(60);
    while writers(&bus.archive()).len() < 2 {
        assert!(Instant::now() < deadline, "one archiver did all the work");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.kill9().await;
    let load = producer.await.unwrap();
    bus.wait_all_acked(Duration::from_secs(90)).await;
    let log = b.terminate().await;
    bus.kafka_exactly_once(&load.ids);
    bus.verify(8).await;
    assert_eq!(
        writers(&bus.archive()).len(),
        2,
        "both archivers wrote segments"
    );
    assert!(log.contains("archiver_started"), "{log}");
}

/// What goes wrong while 10,000 statements stream in.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The archiver is killed (SIGKILL) and started again.
    KillArchiver,
    /// Kafka is unreachable for a while (connections cut and refused), then back.
    KafkaOutage,
    /// nats-server is killed and restarted on the same store.
    NatsRestart,
    /// The S3 server stops answering for a while (frozen, data kept), then is back.
    S3Outage,
}

/// 10,000 statements over 20 sessions, published straight to JetStream through
/// the ingress's recorder (a gateway in a debug build would make this test
/// several times slower without exercising the archiver more), with `fault`
/// injected mid-stream. Afterwards every event is in Kafka exactly once and in
/// the archive, which verifies.
async fn under_load(fault: Fault) {
    let mut bus = Bus::new(Kafka::start_memory()).await;
    if let Fault::S3Outage = fault {
        let moto = harness::s3::Moto::start();
        moto.create_locked_bucket("evidence").await;
        bus.s3 = Some((moto, "evidence".into()));
    }
    let mut archiver = bus.archiver();
    let mut load = Load::new(bus.js.clone(), 20);
    let progress = load.progress.clone();
    // A steady stream: 200 statements every 100 ms (pacing, not synchronisation).
    let producer = tokio::spawn(async move {
        let mut pace = tokio::time::interval(Duration::from_millis(100));
        for _ in 0..50 {
            pace.tick().await;
            load.statements(200).await;
        }
        load.end().await;
        load
    });
    wait_acked_at_least(&bus, &progress, 2000, Duration::from_secs(60)).await;
    match fault {
        Fault::KillArchiver => {
            // Killed while it holds records that Kafka has and JetStream has
            // not been told about (sent, their segment not yet sealed).
            // Frozen first and counted again: a running archiver may
            // acknowledge them all between the count and the kill.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                wait_sent_not_acked(&bus, &progress, 100, Duration::from_secs(60)).await;
                archiver.signal(libc::SIGSTOP);
                if sent_not_acked(&bus, &progress).await >= 100 {
                    break;
                }
                archiver.signal(libc::SIGCONT);
                assert!(
                    Instant::now() < deadline,
                    "never 100 records sent and unacknowledged at a stop"
                );
            }
            archiver.kill9().await;
            archiver = bus.archiver();
            // What the dead one sent but never acknowledged comes back and is
            // recognised in Kafka rather than sent twice.
            archiver
                .wait_log("archiver_already_in_kafka", Duration::from_secs(60))
                .await;
        }
        Fault::KafkaOutage => {
            bus.kafka.cut();
            // Nothing is acknowledged while Kafka is away; sends time out.
            archiver
                .wait_log("archiver_kafka_send_failed", Duration::from_secs(60))
                .await;
            wait_unacked_at_least(&bus, 1000, Duration::from_secs(60)).await;
            bus.kafka.restore();
        }
        Fault::S3Outage => {
            let (moto, _) = bus.s3.as_ref().unwrap();
            moto.pause();
            // Nothing is acknowledged while segments cannot be stored.
            archiver
                .wait_log("archiver_store_failed", Duration::from_secs(60))
                .await;
            wait_unacked_at_least(&bus, 1000, Duration::from_secs(60)).await;
            moto.resume();
        }
        Fault::NatsRestart => {
            bus.nats.restart();
            archiver
                .wait_log(
                    "archiver_nats_reconnected suspect_upto",
                    Duration::from_secs(60),
                )
                .await;
        }
    }
    let load = producer.await.unwrap();
    assert_eq!(load.ids.len(), 10_000 + 2 * 20);
    bus.wait_all_acked(Duration::from_secs(120)).await;
    archiver.terminate().await;
    bus.kafka_exactly_once(&load.ids);
    bus.verify(20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_with_the_archiver_killed_and_restarted() {
    under_load(Fault::KillArchiver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_with_a_kafka_outage() {
    under_load(Fault::KafkaOutage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_with_an_s3_outage() {
    under_load(Fault::S3Outage).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_with_a_nats_restart() {
    under_load(Fault::NatsRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_go_to_an_s3_bucket_under_object_lock() {
    let mut bus = Bus::new(Kafka::start_memory()).await;
    let moto = harness::s3::Moto::start();
    moto.create_locked_bucket("evidence").await;
    bus.s3 = Some((moto, "evidence".into()));
    let archiver = bus.archiver();
    let mut load = Load::new(bus.js.clone(), 2);
    load.statements(40).await;
    load.end().await;
    bus.wait_all_acked(Duration::from_secs(60)).await;
    let log = archiver.terminate().await;
    assert!(log.contains("archiver_store_s3"), "{log}");
    bus.kafka_exactly_once(&load.ids);
    // Acknowledged means in the bucket: it verifies, with nothing on local disk.
    let (moto, bucket) = bus.s3.as_ref().unwrap();
    let store = moto.store(&moto.config(bucket)).await.unwrap();
    let key = gatehouse_archiver::load_verifying_key(&bus.public_key()).unwrap();
    let report = gatehouse_archiver::verify(&store, &[key], None, None)
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.sessions.len(), 2, "{report:?}");
    assert!(!bus.archive().exists());
    // Every object is under COMPLIANCE retention.
    let keys = gatehouse_archiver::SegmentStore::list(&store, "sessions/")
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let head = moto
        .client()
        .head_object()
        .bucket(bucket.as_str())
        .key(store.object_key(&keys[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.object_lock_mode().map(|m| m.as_str()),
        Some("COMPLIANCE")
    );
}

/// A burst larger than async-nats's window of unacknowledged publishes (5,000)
/// reaches the recorder as one batch: it is published in chunks (one batch of
/// it all used to wait forever for acks it never collected), and archived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_publish_window_is_recorded_and_archived() {
    let bus = Bus::new(Kafka::start_memory()).await;
    let mut load = Load::new(bus.js.clone(), 4);
    tokio::time::timeout(Duration::from_secs(60), load.statements(6000))
        .await
        .expect("6,000 records published within a minute");
    load.end().await;
    let archiver = bus.archiver();
    bus.wait_all_acked(Duration::from_secs(90)).await;
    archiver.terminate().await;
    bus.kafka_exactly_once(&load.ids);
    bus.verify(4).await;
}

/// A batch written last to a partition is found by the tail look-up. Regression:
/// tansu lists a partition's high watermark as its last batch's base offset + 1,
/// so reading up to the listed mark missed that batch, and an archiver taking
/// over a killed one's messages sent them all again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_lookup_sees_the_last_batch_of_a_partition() {
    use gatehouse_archiver::archive::RecordId;
    use gatehouse_archiver::kafka::{KafkaSettings, KafkaSink, TailIndex};
    let kafka = Kafka::start_memory();
    kafka.create_topic(TOPIC, 3).await;
    let sink = KafkaSink::new(KafkaSettings {
        brokers: kafka.brokers(),
        topic: TOPIC.into(),
        delivery_timeout: Duration::from_secs(30),
        scan_margin: Duration::from_secs(60),
        properties: Vec::new(),
    })
    .unwrap();
    let session = Uuid::now_v7();
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // One session: one partition. Queued at once, so librdkafka sends them as
    // one batch (or a few); every one is confirmed before the look-up.
    let mut prev = gatehouse_schemas::evidence::GENESIS.to_owned();
    let mut sends = Vec::new();
    let mut ids = Vec::new();
    for seq in 1..=60u64 {
        let event = gatehouse_schemas::evidence::Event {
            v: gatehouse_schemas::SCHEMA_VERSION,
            session_id: session,
            seq,
            ts: humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            prev: prev.clone(),
            ctx: None,
            body: if seq == 1 {
                started()
            } else {
                statement("select 1", "allow")
            },
        };
        let bytes = serde_json::to_vec(&event).unwrap();
        prev = gatehouse_ingress::evidence::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        let id = RecordId { session, seq };
        sends.push(sink.send(id, &bytes).unwrap());
        ids.push(id);
    }
    for s in sends {
        s.await.expect("confirmed");
    }
    let mut tail = TailIndex::default();
    tail.cover(&sink, started_ms).await.unwrap();
    let missing: Vec<u64> = ids
        .iter()
        .filter(|id| !tail.contains(id))
        .map(|id| id.seq)
        .collect();
    assert!(missing.is_empty(), "not seen in the tail: seqs {missing:?}");
}

/// The stream holding a record twice (a publish retried across a NATS restart
/// whose de-duplication state was lost stores a second copy under a new stream
/// sequence, on its first delivery): the second copy is recognised as archived
/// and found in Kafka, not sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_copy_in_the_stream_is_not_sent_twice() {
    let bus = Bus::new(Kafka::start_memory()).await;
    let archiver = bus.archiver();
    let mut load = Load::new(bus.js.clone(), 2);
    load.statements(20).await;
    load.end().await;
    bus.wait_all_acked(Duration::from_secs(60)).await;
    let first = bus.kafka_exactly_once(&load.ids);
    // The same records again, exactly as the ingress wrote them (Kafka's
    // raw_data carries them verbatim), under message ids JetStream has not seen.
    let mut again: Vec<&Read> = first.values().collect();
    again.sort_by_key(|r| r.offset);
    for r in again.iter().take(10) {
        let raw = r.value["raw_data"].as_str().unwrap().to_owned();
        let session: Uuid = r.key.parse().unwrap();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("copy-{}", Uuid::now_v7()).as_str(),
        );
        bus.js
            .publish_with_headers(
                gatehouse_schemas::evidence::evidence_subject(session),
                headers,
                raw.into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    bus.wait_all_acked(Duration::from_secs(60)).await;
    let log = archiver.terminate().await;
    assert!(log.contains("archiver_already_in_kafka"), "{log}");
    bus.kafka_exactly_once(&load.ids);
    bus.verify(2).await;
}

/// The records of one session (started, `statements` statements, ended),
/// chained and serialized exactly as the ingress does.
fn session_records(session: Uuid, statements: usize) -> Vec<Vec<u8>> {
    let mut prev = gatehouse_schemas::evidence::GENESIS.to_owned();
    let last = statements as u64 + 2;
    (1..=last)
        .map(|seq| {
            let body = match seq {
                1 => started(),
                s if s == last => ended(),
                s => statement(&format!("select {s}"), "allow"),
            };
            let event = gatehouse_schemas::evidence::Event {
                v: gatehouse_schemas::SCHEMA_VERSION,
                session_id: session,
                seq,
                ts: humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
                prev: prev.clone(),
                ctx: None,
                body,
            };
            let bytes = serde_json::to_vec(&event).unwrap();
            prev =
                gatehouse_ingress::evidence::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
            bytes
        })
        .collect()
}

/// Publishes `records` as one batch message, as the ingress does.
async fn publish_batch(bus: &Bus, records: &[Vec<u8>]) {
    let first: serde_json::Value = serde_json::from_slice(&records[0]).unwrap();
    let id = gatehouse_schemas::evidence::batch_message_id(
        first["session_id"].as_str().unwrap().parse().unwrap(),
        first["seq"].as_u64().unwrap(),
        records.len(),
    );
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
    let payload = gatehouse_schemas::evidence::encode_batch(records.iter().map(Vec::as_slice));
    bus.js
        .publish_with_headers(EVIDENCE_BATCH_SUBJECT, headers, payload.into())
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Every event id of `records`.
fn ids_of(records: &[Vec<u8>]) -> HashSet<String> {
    records
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(r).unwrap();
            format!("{}/{}", v["session_id"].as_str().unwrap(), v["seq"])
        })
        .collect()
}

/// One batch message carrying the records of three sessions, interleaved. The
/// first archiver sends every record to Kafka but, its segments not sealed yet
/// (the sessions go on), must not acknowledge the message; it is killed. The
/// message comes back to a second archiver, which finds every record in Kafka
/// (none is sent twice), archives them and acknowledges it; a second batch
/// ends the sessions: three sessions that verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_several_sessions_is_archived_once_across_a_redelivery() {
    let bus = Bus::new(Kafka::start_memory()).await;
    let sessions: Vec<Vec<Vec<u8>>> = (0..3)
        .map(|_| session_records(Uuid::now_v7(), 20))
        .collect();
    // Round-robin: s1/1, s2/1, s3/1, s1/2, ... (each session's in order),
    // all but the sessions' ends (an end seals its session's segment).
    let mut batch = Vec::new();
    for i in 0..21 {
        for s in &sessions {
            batch.push(s[i].clone());
        }
    }
    let ends: Vec<Vec<u8>> = sessions.iter().map(|s| s[21].clone()).collect();
    let mut ids = ids_of(&batch);
    assert_eq!(ids.len(), 63);

    // Segments sealed only after an hour: this one holds everything.
    let first = bus.archiver_with(bus.config_with("1h"));
    first
        .wait_log("archiver_started", Duration::from_secs(60))
        .await;
    publish_batch(&bus, &batch).await;
    read_topic(&bus.kafka.brokers(), TOPIC, Duration::from_secs(60), |rs| {
        rs.len() >= ids.len()
    });
    // In Kafka, not in the store: the message stays unacknowledged.
    assert!(
        bus.all_acked().await.is_err(),
        "acknowledged before archived"
    );
    first.kill9().await;

    let second = bus.archiver();
    publish_batch(&bus, &ends).await;
    ids.extend(ids_of(&ends));
    bus.wait_all_acked(Duration::from_secs(60)).await;
    let log = second.terminate().await;
    assert!(log.contains("archiver_already_in_kafka found=63"), "{log}");
    let records = bus.kafka_exactly_once(&ids);
    assert_ordered_per_session(&records);
    bus.verify(3).await;
}

/// A stream written by an ingress from before batching (one record per
/// message, on the session's subject, message id `<session>/<seq>`) next to a
/// batch message of an upgraded one: both archive, exactly once. A line of the
/// batch that is no event is dropped (logged), not the records around it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_record_messages_of_an_older_ingress_still_archive() {
    let bus = Bus::new(Kafka::start_memory()).await;
    let old = Uuid::now_v7();
    let old_records = session_records(old, 10);
    for (i, r) in old_records.iter().enumerate() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{old}/{}", i + 1).as_str(),
        );
        bus.js
            .publish_with_headers(
                gatehouse_schemas::evidence::evidence_subject(old),
                headers,
                r.clone().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let new_records = session_records(Uuid::now_v7(), 10);
    let mut with_junk = new_records.clone();
    with_junk.insert(3, b"not an event".to_vec());
    publish_batch(&bus, &with_junk).await;
    let archiver = bus.archiver();
    bus.wait_all_acked(Duration::from_secs(60)).await;
    let log = archiver.terminate().await;
    assert!(log.contains("archiver_not_an_event_dropped"), "{log}");
    let mut ids = ids_of(&old_records);
    ids.extend(ids_of(&new_records));
    let records = bus.kafka_exactly_once(&ids);
    assert_ordered_per_session(&records);
    bus.verify(2).await;
}

/// A batch whose publish fails (JetStream gone) refuses what waits on it once
/// the evidence timeout passes, and is published again when JetStream is back,
/// as the same batch messages under the same ids (JetStream drops the copies
/// of what it had): every record once, each message's id naming its first
/// record and its count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_cannot_be_published_is_refused_then_published_again() {
    let mut nats = Nats::start();
    let js = async_nats::jetstream::new(nats.client().await);
    ensure_stream(&js).await.unwrap();
    let recorder = Recorder::start(
        JetStream::new(js.clone()),
        Duration::from_millis(500),
        1 << 20,
    );
    let mut chains: Vec<Chain> = (0..3).map(|_| Chain::new(Uuid::now_v7())).collect();
    let mut last = None;
    for c in &mut chains {
        last = Some(c.record(&recorder, started()).unwrap().1);
    }
    recorder.durable(last.unwrap()).await.expect("published");

    nats.stop();
    let mut waiting = Vec::new();
    for c in &mut chains {
        for i in 0..5 {
            let sql = format!("select {i}");
            waiting.push(c.record(&recorder, statement(&sql, "allow")).unwrap().1);
        }
    }
    // Refused, as a statement waiting on it would be (the first one: the
    // rest are durable only after it).
    assert!(
        recorder.durable(waiting[0]).await.is_err(),
        "durable without NATS"
    );

    nats.restart();
    let last = *waiting.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while recorder.durable(last).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "never published after NATS came back"
        );
    }

    let js = async_nats::jetstream::new(nats.client().await);
    let mut stream = js.get_stream(EVIDENCE_STREAM).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let mut seen: HashMap<Uuid, Vec<u64>> = HashMap::new();
    for seq in state.first_sequence..=state.last_sequence {
        let m = stream.get_raw_message(seq).await.unwrap();
        assert_eq!(m.subject.as_str(), EVIDENCE_BATCH_SUBJECT);
        let records: Vec<serde_json::Value> = batch_records(&m.payload)
            .map(|r| serde_json::from_slice(r).unwrap())
            .collect();
        let id = m
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .unwrap()
            .to_string();
        assert_eq!(
            id,
            gatehouse_schemas::evidence::batch_message_id(
                records[0]["session_id"].as_str().unwrap().parse().unwrap(),
                records[0]["seq"].as_u64().unwrap(),
                records.len()
            )
        );
        for r in records {
            let session = r["session_id"].as_str().unwrap().parse().unwrap();
            seen.entry(session)
                .or_default()
                .push(r["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(seen.len(), 3);
    for (session, mut seqs) in seen {
        // Batches retried side by side may land in either order; each once.
        seqs.sort();
        assert_eq!(seqs, (1..=6).collect::<Vec<u64>>(), "session {session}");
    }
}

/// Long-lived sessions (a connection pool's, a long job's) whose segments seal
/// only by age (an hour here) and far more of their records than one archiver
/// may hold unacknowledged (`max_inflight` 200). Holding 200 records of open
/// segments, the archiver could fetch nothing more until the hour was up; it
/// seals the longest open segments early instead, so everything is archived
/// and acknowledged while the sessions go on, exactly once, and verifies once
/// they end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_sessions_beyond_the_inflight_bound_do_not_wait_for_their_segments_age() {
    let bus = Bus::new(Kafka::start_memory()).await;
    let archiver = bus.archiver_with(bus.config_tuned("1h", 200));
    archiver
        .wait_log("archiver_started", Duration::from_secs(60))
        .await;
    let sessions: Vec<Vec<Vec<u8>>> = (0..3)
        .map(|_| session_records(Uuid::now_v7(), 400))
        .collect();
    // Everything but the sessions' ends, 50 records of one session a message.
    let mut ids = HashSet::new();
    for s in &sessions {
        let going_on = &s[..s.len() - 1];
        ids.extend(ids_of(going_on));
        for chunk in going_on.chunks(50) {
            publish_batch(&bus, chunk).await;
        }
    }
    assert_eq!(ids.len(), 3 * 401);
    bus.wait_all_acked(Duration::from_secs(60)).await;
    let ends: Vec<Vec<u8>> = sessions.iter().map(|s| s[s.len() - 1].clone()).collect();
    publish_batch(&bus, &ends).await;
    ids.extend(ids_of(&ends));
    bus.wait_all_acked(Duration::from_secs(60)).await;
    let log = archiver.terminate().await;
    assert!(log.contains("archiver_sealing_early"), "{log}");
    let records = bus.kafka_exactly_once(&ids);
    assert_ordered_per_session(&records);
    bus.verify(3).await;
}
