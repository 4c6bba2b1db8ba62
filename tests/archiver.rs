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
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_ingress::evidence::{Chain, JetStream, Recorder, ensure_stream};
use gatehouse_schemas::Identity;
use gatehouse_schemas::evidence::{
    ARCHIVER_CONSUMER, CiContext, EVIDENCE_STREAM, EventBody, SessionEnded, SessionStarted,
    Statement, StatementPath,
};
use harness::kafka::*;
use harness::nats::*;
use harness::*;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");
const TOPIC: &str = "gatehouse.evidence.ocsf";

/// NATS, Kafka, keys and an archive directory for archivers to share.
struct Bus {
    nats: Nats,
    kafka: Kafka,
    dir: tempfile::TempDir,
    js: async_nats::jetstream::Context,
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
        let path = self.dir.path().join("archiver.toml");
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
dir = "{archive}"
segment_max_age = "300ms"
segment_max_events = 500
fetch_batch = 500
max_inflight = 5000
ack_wait = "4s"

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
                archive = self.archive().display(),
                brokers = self.kafka.brokers(),
            ),
        )
        .unwrap();
        path
    }

    fn archiver(&self) -> Archiver {
        let child = tokio::process::Command::new(BIN)
            .args(["serve", "--role", "archiver", "--config"])
            .arg(self.config())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start gatehouse serve --role archiver");
        Archiver { child }
    }

    /// Messages in the stream (work-queue: not yet acknowledged by an archiver).
    async fn unacked(&self) -> Option<u64> {
        let mut stream = self.js.get_stream(EVIDENCE_STREAM).await.ok()?;
        Some(stream.info().await.ok()?.state.messages)
    }

    /// Messages acknowledged so far (the consumer's ack floor), if it exists.
    async fn acked_floor(&self) -> u64 {
        let Ok(stream) = self.js.get_stream(EVIDENCE_STREAM).await else {
            return 0;
        };
        let Ok(mut c) = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(ARCHIVER_CONSUMER)
            .await
        else {
            return 0;
        };
        c.info()
            .await
            .map(|i| i.ack_floor.stream_sequence)
            .unwrap_or(0)
    }

    /// Waits until the stream is empty: every event acknowledged.
    async fn wait_all_acked(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.unacked().await == Some(0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{:?} events still unacknowledged after {within:?}",
                self.unacked().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
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
    async fn verify(&self, complete: usize) -> String {
        let out = tokio::process::Command::new(BIN)
            .args(["verify", "--dir"])
            .arg(self.archive())
            .arg("--key")
            .arg(self.public_key())
            .output()
            .await
            .unwrap();
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
}

impl Archiver {
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

    /// SIGTERM; waits (bounded) for a clean exit.
    async fn terminate(mut self) {
        self.signal(libc::SIGTERM);
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("archiver exits on SIGTERM")
            .unwrap();
        assert!(status.success(), "archiver exit: {status}");
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
}

impl Load {
    fn new(js: async_nats::jetstream::Context, sessions: usize) -> Load {
        let recorder = Recorder::start(JetStream::new(js), Duration::from_secs(120), 256 << 20);
        let mut load = Load {
            recorder,
            sessions: Vec::new(),
            ids: HashSet::new(),
            statements: BTreeMap::new(),
        };
        for _ in 0..sessions {
            let id = Uuid::now_v7();
            let mut chain = Chain::new(id);
            let (seq, _) = chain.record(&load.recorder, started()).unwrap();
            load.ids.insert(format!("{id}/{seq}"));
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
            last = Some(ticket);
        }
        if let Some(t) = last {
            self.recorder.durable(t).await.expect("published");
        }
    }

    /// Ends every session.
    async fn end(&mut self) {
        let mut last = None;
        for (id, chain) in &mut self.sessions {
            let (seq, ticket) = chain.record(&self.recorder, ended()).unwrap();
            self.ids.insert(format!("{id}/{seq}"));
            last = Some(ticket);
        }
        self.recorder
            .durable(last.unwrap())
            .await
            .expect("published");
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

fn statement(sql: &str, verdict: &str) -> EventBody {
    EventBody::Statement(Statement {
        path: StatementPath::SimpleQuery,
        statement_name: None,
        portal: None,
        sql: sql.into(),
        function_oid: None,
        params: None,
        verdict: verdict.into(),
        rule: Some("load".into()),
        reason: None,
        policy_version: Some("v1".into()),
        classes: vec!["read".into()],
        shadow: Vec::new(),
        forwarded: true,
        approval: None,
    })
}

fn ended() -> EventBody {
    EventBody::SessionEnded(SessionEnded {
        reason: "client_terminated".into(),
        statements: 0,
        refused: 0,
        duration_ms: 1,
    })
}

/// Waits until the consumer's ack floor reaches `n` (some of the load is through).
async fn wait_acked_at_least(bus: &Bus, n: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while bus.acked_floor().await < n {
        assert!(
            Instant::now() < deadline,
            "ack floor {} < {n} after {within:?}",
            bus.acked_floor().await
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
    load.statements(300).await;
    load.end().await;
    bus.wait_all_acked(Duration::from_secs(60)).await;
    archiver.terminate().await;
    let records = bus.kafka_exactly_once(&load.ids);
    assert_ordered_per_session(&records);
    bus.verify(3).await;
}
