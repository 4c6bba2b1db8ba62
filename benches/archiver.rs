//! Archiver throughput: one `gatehouse serve --role archiver` (this build's
//! binary, its default segment settings) consuming, then N chained evidence
//! events (by default sessions of 20 one after the other; BENCH_SESSIONS at
//! once, interleaved, each BENCH_SESSION_EVENTS long, for a pool's long-lived
//! connections) published to JetStream as fast as the recorder goes,
//! each written to Kafka (tansu, in memory) and into signed segments in a local
//! directory (BENCH_STORE=s3: in a bucket of moto's S3 server, under Object
//! Lock); prints events/s from the first publish until JetStream has every
//! event acknowledged.
//!
//! `cargo bench --bench archiver` (deploy/bench-archiver.sh installs what it
//! needs); BENCH_EVENTS sets N (default 200000), GATEHOUSE_BIN another binary,
//! BENCH_BACKLOG=1 publishes everything before the archiver starts (catch-up),
//! BENCH_FORMAT=records publishes one record per message on the session's
//! subject, as ingresses did before batch messages (the default, `batch`, is
//! the ingress's own publisher).

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::process::Stdio;
use std::time::{Duration, Instant};

use gatehouse_ingress::evidence::{
    Chain, Durable, JetStream, Persist, Record, Recorder, ensure_stream,
};
use gatehouse_schemas::evidence::{ARCHIVER_CONSUMER, EVIDENCE_STREAM, EventBody, SessionEnded};
use harness::evidence::statement;
use harness::kafka::Kafka;
use harness::nats::Nats;
use harness::s3::Moto;
use uuid::Uuid;

const TOPIC: &str = "gatehouse.evidence.ocsf";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo bench -- --list` / nextest discovery: nothing to list.
        return;
    }
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let nats = Nats::start();
    let kafka = Kafka::start_memory();
    kafka.create_topic(TOPIC, 3).await;
    let dir = tempfile::tempdir().unwrap();
    gatehouse_archiver::keys::keygen(&dir.path().join("keys")).unwrap();
    let js = async_nats::jetstream::new(nats.client().await);
    ensure_stream(&js).await.unwrap();

    // BENCH_BACKLOG=1: everything is in the stream before the archiver starts
    // (catching up after an outage: every event is suspect and looked up first).
    let backlog = std::env::var_os("BENCH_BACKLOG").is_some_and(|v| v == "1");
    if backlog {
        publish(&js, n).await;
    }

    // BENCH_STORE=s3: segments to a bucket of moto's S3 server (the tests' S3
    // server) with Object Lock, each put carrying compliance retention; else a
    // local directory.
    let s3 = std::env::var("BENCH_STORE")
        .is_ok_and(|v| v == "s3")
        .then(Moto::start);
    // A key of `[archiver]` itself (`dir`) goes before its sub-tables.
    let (dir_key, s3_table) = match &s3 {
        Some(moto) => {
            moto.create_locked_bucket("bench-evidence").await;
            (
                String::new(),
                format!(
                    "[archiver.s3]\nbucket = \"bench-evidence\"\nendpoint = \"{}\"\nforce_path_style = true\nobject_lock_days = 1\n",
                    moto.endpoint()
                ),
            )
        }
        None => (
            format!("dir = \"{}\"\n", dir.path().join("archive").display()),
            String::new(),
        ),
    };
    let config = dir.path().join("archiver.toml");
    std::fs::write(
        &config,
        format!(
            "[log]\nlevel = \"info\"\n[nats]\nurl = \"{}\"\n[archiver]\nsigning_key = \"{}\"\n{dir_key}[archiver.kafka]\nbrokers = \"{}\"\ntopic = \"{TOPIC}\"\n{s3_table}",
            nats.url(),
            dir.path().join("keys/evidence-signing.pem").display(),
            kafka.brokers()
        ),
    )
    .unwrap();
    // GATEHOUSE_BIN: a copy of the binary (a shared target directory may hold
    // another checkout's build by the time this runs).
    let bin =
        std::env::var_os("GATEHOUSE_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_gatehouse").into());
    let mut child = tokio::process::Command::new(bin)
        .args(["serve", "--role", "archiver", "--config"])
        .arg(&config)
        .envs(s3.iter().flat_map(|moto| moto.env()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Its log goes on to stderr; the events are published once it is consuming,
    // so they are fresh to it (sent without a look-up first, as in steady state).
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let stderr = child.stderr.take().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut started_tx = Some(started_tx);
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("{line}");
            if line.contains("archiver_started")
                && let Some(tx) = started_tx.take()
            {
                let _ = tx.send(());
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(60), started_rx)
        .await
        .expect("archiver started within 60 s")
        .expect("archiver log");
    let start = Instant::now();

    if !backlog {
        publish(&js, n).await;
    }

    let mut stream = js.get_stream(EVIDENCE_STREAM).await.unwrap();
    loop {
        let left = stream.info().await.unwrap().state.messages;
        if left == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "{left} events still unacknowledged after 10 minutes"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("archiver exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = start.elapsed();
    let _ = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(ARCHIVER_CONSUMER)
        .await;
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id().unwrap() as i32, libc::SIGTERM);
    }
    let _ = child.wait().await;
    println!(
        "archiver{}{} ({} session(s) at once, {} events each): {n} events to Kafka and signed segments {} in {:.2}s: {:.0} events/s",
        if backlog { " (backlog)" } else { "" },
        match std::env::var("BENCH_FORMAT") {
            Ok(f) if f == "records" => " (one record per message)",
            _ => "",
        },
        std::env::var("BENCH_SESSIONS").unwrap_or_else(|_| "1".into()),
        std::env::var("BENCH_SESSION_EVENTS").unwrap_or_else(|_| "20".into()),
        if s3.is_some() {
            "in an S3 bucket (moto, Object Lock)"
        } else {
            "in a local directory"
        },
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}

/// Publishes `n` events through the ingress's recorder; returns once all are in
/// JetStream. Sessions of 20 events: session_started is not needed for
/// throughput, but the chain, message ids and bytes are the ingress's own.
async fn publish(js: &async_nats::jetstream::Context, n: usize) {
    if std::env::var_os("BENCH_FORMAT").is_some_and(|f| f == "records") {
        let recorder =
            Recorder::start(OneRecordEach(js.clone()), Duration::from_secs(600), 1 << 30);
        publish_through(&recorder, n).await;
    } else {
        let recorder = Recorder::start(
            JetStream::new(js.clone()),
            Duration::from_secs(600),
            1 << 30,
        );
        publish_through(&recorder, n).await;
    }
}

/// Publishes each record as a message of its own on its session's subject,
/// with message id `<session>/<seq>`: what an ingress did before batch messages.
struct OneRecordEach(async_nats::jetstream::Context);

impl Persist for OneRecordEach {
    async fn submit(&mut self, batch: Vec<Record>) -> Durable {
        // Below async-nats's 5,000 unacknowledged publishes.
        for chunk in batch.chunks(1000) {
            let mut acks = Vec::with_capacity(chunk.len());
            for r in chunk {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    format!("{}/{}", r.session, r.seq).as_str(),
                );
                let subject = gatehouse_schemas::evidence::evidence_subject(r.session);
                acks.push(
                    self.0
                        .publish_with_headers(subject, headers, r.bytes.clone())
                        .await
                        .unwrap(),
                );
            }
            for a in acks {
                a.await.unwrap();
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

async fn publish_through(recorder: &Recorder, n: usize) {
    let published = Instant::now();
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|v| *v > 0)
            .unwrap_or(default)
    };
    // BENCH_SESSIONS sessions at once, their events interleaved (a pool's
    // connections), each BENCH_SESSION_EVENTS events long, then replaced.
    let length = env("BENCH_SESSION_EVENTS", 20).max(2);
    let mut chains: Vec<(Chain, usize)> = (0..env("BENCH_SESSIONS", 1))
        .map(|_| (Chain::new(Uuid::now_v7()), 0))
        .collect();
    let mut last = None;
    for i in 0..n {
        let slot = i % chains.len();
        let at_once = chains.len();
        let (chain, events) = &mut chains[slot];
        *events += 1;
        // The last events of the run end every session.
        if *events == length || i + at_once >= n {
            let ended = EventBody::SessionEnded(SessionEnded {
                reason: "client_terminated".into(),
                statements: *events as u64 - 1,
                refused: 0,
                duration_ms: 5,
            });
            last = Some(chain.record(recorder, ended).unwrap().1);
            *chain = Chain::new(Uuid::now_v7());
            *events = 0;
        } else {
            let sql = format!("select * from orders where id = {i}");
            last = Some(chain.record(recorder, statement(&sql, "allow")).unwrap().1);
        }
        if i % 10_000 == 9_999 {
            recorder.durable(last.unwrap()).await.unwrap();
        }
    }
    recorder.durable(last.unwrap()).await.unwrap();
    eprintln!(
        "published {n} events to JetStream in {:.1?}",
        published.elapsed()
    );
}
