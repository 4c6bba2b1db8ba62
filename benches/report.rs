//! `gatehouse report` at scale: generates an evidence set of BENCH_STATEMENTS
//! (default 1,000,000) recorded statements as the gateway records them (CI
//! sessions of BENCH_SESSION_STATEMENTS, default 500: reads, writes, masked
//! reads, refusals, approvals; each run with its completion), chained and
//! sealed into signed segments by the archiver's own segmenter with its
//! default settings, in a local directory and in a bucket of moto's S3 server;
//! then runs this build's `gatehouse report --framework soc2` over each under
//! `/usr/bin/time -v` and prints wall time and peak RSS.
//!
//! `cargo bench --bench report` (deploy/bench-report.sh installs what it needs);
//! GATEHOUSE_BIN runs another binary; BENCH_STORE=dir or s3 measures one store.

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use gatehouse_archiver::segment::sha256_hex;
use gatehouse_archiver::{Archive, LocalDir, SegmentStore, Segmenter, SegmenterConfig};
use gatehouse_schemas::Identity;
use gatehouse_schemas::evidence::{
    ApprovalEvent, CiContext, Event, EventBody, GENESIS, SessionEnded, SessionStarted, Statement,
    StatementCompleted, StatementObjects, StatementPath,
};
use harness::s3::Moto;
use uuid::Uuid;

/// One session's records, chained.
struct Chain {
    session: Uuid,
    seq: u64,
    prev: String,
    ts: SystemTime,
    out: Vec<Vec<u8>>,
}

impl Chain {
    fn push(&mut self, body: EventBody) -> u64 {
        self.seq += 1;
        self.ts += Duration::from_millis(3);
        let e = Event {
            v: 1,
            session_id: self.session,
            seq: self.seq,
            ts: humantime::format_rfc3339_micros(self.ts).to_string(),
            prev: std::mem::take(&mut self.prev),
            ctx: None,
            body,
        };
        let r = serde_json::to_vec(&e).unwrap();
        self.prev = sha256_hex(&r);
        self.out.push(r);
        self.seq
    }
}

fn statement(
    sql: &str,
    verdict: &str,
    rule: &str,
    class: &str,
    objects: StatementObjects,
) -> Statement {
    Statement {
        path: StatementPath::SimpleQuery,
        statement_name: None,
        portal: None,
        sql: sql.into(),
        function_oid: None,
        params: None,
        verdict: verdict.into(),
        rule: Some(rule.into()),
        reason: (verdict == "block" || verdict == "approve").then(|| format!("{rule} says no")),
        policy_version: Some("prod-3f2a9c".into()),
        classes: vec![class.into()],
        shadow: Vec::new(),
        forwarded: verdict != "block" && verdict != "approve",
        approval: None,
        objects: Some(objects),
    }
}

fn objects(reads: &[&str], writes: &[&str]) -> StatementObjects {
    StatementObjects {
        reads: reads.iter().map(|s| (*s).into()).collect(),
        writes: writes.iter().map(|s| (*s).into()).collect(),
        calls: Vec::new(),
    }
}

fn completed(chain: &mut Chain, stmt: u64, tag: &str, rows: u64) {
    chain.push(EventBody::StatementCompleted(StatementCompleted {
        statement: stmt,
        outcome: "ok".into(),
        tags: vec![tag.into()],
        rows,
        duration_us: 420,
        sqlstate: None,
    }));
}

/// One CI job's session of `n` statements.
fn session(i: usize, n: usize) -> Vec<Vec<u8>> {
    let repo = format!("acme/service-{}", i % 40);
    let mut claims = serde_json::Map::new();
    for (k, v) in [
        ("repository", repo.clone()),
        ("run_id", (100_000 + i).to_string()),
        ("sha", format!("{:040x}", i * 7919)),
        ("workflow", "deploy".into()),
        ("ref", "refs/heads/main".into()),
    ] {
        claims.insert(k.into(), v.into());
    }
    let identity = Identity {
        issuer: "https://token.actions.githubusercontent.com".into(),
        subject: format!("repo:{repo}:ref:refs/heads/main"),
        key_id: Some("k1".into()),
        algorithm: "RS256".into(),
        claims,
    };
    let mut c = Chain {
        session: Uuid::now_v7(),
        seq: 0,
        prev: GENESIS.into(),
        ts: SystemTime::now(),
        out: Vec::with_capacity(2 * n + 2),
    };
    c.push(EventBody::SessionStarted(Box::new(SessionStarted {
        role: if i.is_multiple_of(10) {
            "migrations"
        } else {
            "app"
        }
        .into(),
        ci: CiContext::from_claims(&identity.claims),
        identity,
        upstream: "db.internal:5432/app".into(),
        upstream_user: "app".into(),
        client_addr: format!("10.1.{}.{}:51234", i % 250, i % 200),
        tls: Some(gatehouse_schemas::evidence::TlsInfo {
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_256_GCM_SHA384".into(),
            sni: None,
        }),
        gateway: "gw-1".into(),
    })));
    let mut refused = 0;
    for k in 0..n {
        match k % 100 {
            0..=69 => {
                let s = c.push(EventBody::Statement(statement(
                    &format!("select id, status, total from public.orders where customer_id = {k} order by id limit 50"),
                    "allow",
                    "app-reads",
                    "read",
                    objects(&["public.orders"], &[]),
                )));
                completed(&mut c, s, "SELECT 12", 12);
            }
            70..=84 => {
                let s = c.push(EventBody::Statement(statement(
                    &format!("update public.orders set status = 'shipped' where id = {k}"),
                    "allow",
                    "app-writes",
                    "write",
                    objects(&["public.orders"], &["public.orders"]),
                )));
                completed(&mut c, s, "UPDATE 1", 1);
            }
            85..=93 => {
                let s = c.push(EventBody::Statement(statement(
                    &format!("select name, ssn from clinic.patients where id = {k}"),
                    "mask",
                    "mask-ssn",
                    "read",
                    objects(&["clinic.patients"], &[]),
                )));
                completed(&mut c, s, "SELECT 1", 1);
            }
            94..=98 => {
                refused += 1;
                c.push(EventBody::Statement(statement(
                    "drop table public.orders",
                    "block",
                    "no-ddl",
                    "ddl",
                    objects(&[], &["public.orders"]),
                )));
            }
            _ => {
                let request = Uuid::now_v7().to_string();
                let mut held = statement(
                    "delete from public.orders",
                    "approve",
                    "bulk-delete",
                    "write",
                    objects(&["public.orders"], &["public.orders"]),
                );
                held.approval = Some(request.clone());
                let seq = c.push(EventBody::Statement(held.clone()));
                let step = |state: &str, by: Option<&str>| {
                    EventBody::Approval(ApprovalEvent {
                        statement: seq,
                        request: request.clone(),
                        state: state.into(),
                        approvers: "dba".into(),
                        by: by.map(str::to_owned),
                        reason: None,
                        statement_hash: None,
                        requester: None,
                        approver: None,
                    })
                };
                c.push(step("requested", None));
                c.push(step("approved", Some("alice@acme.example")));
                c.push(step("executed", Some("alice@acme.example")));
                let s = c.push(EventBody::Statement(Statement {
                    forwarded: true,
                    ..held
                }));
                completed(&mut c, s, "DELETE 0", 0);
            }
        }
    }
    c.push(EventBody::SessionEnded(SessionEnded {
        reason: "client_terminated".into(),
        statements: n as u64,
        refused,
        duration_ms: 3 * (2 * n as u64 + 2),
    }));
    c.out
}

/// Runs the report under `/usr/bin/time -v`: (seconds, peak RSS in MiB, its first line).
fn measure(bin: &Path, args: &[String], env: &[(&'static str, String)]) -> (f64, f64, String) {
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(bin)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("/usr/bin/time (Debian's `time` package)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let field = |name: &str| {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {name} in:\n{stderr}"))
    };
    let wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss):");
    let secs = wall
        .split(':')
        .fold(0.0, |acc, part| acc * 60.0 + part.parse::<f64>().unwrap());
    let rss_kib: f64 = field("Maximum resident set size (kbytes):")
        .parse()
        .unwrap();
    assert!(
        out.status.code() == Some(0),
        "report failed ({:?}):\n{stderr}",
        out.status
    );
    (
        secs,
        rss_kib / 1024.0,
        stderr.lines().next().unwrap_or_default().to_owned(),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("BENCH_STATEMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let per: usize = std::env::var("BENCH_SESSION_STATEMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let which = std::env::var("BENCH_STORE").unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    let key = gatehouse_archiver::keys::keygen(&dir.path().join("keys")).unwrap();
    let archive_dir = dir.path().join("archive");
    let started = Instant::now();
    let mut archive = Archive::new(
        LocalDir::new(&archive_dir),
        Segmenter::new(SegmenterConfig::default(), "bench", key),
    );
    let sessions = n.div_ceil(per);
    let mut records = 0;
    for i in 0..sessions {
        let take = per.min(n - i * per);
        for r in session(i, take) {
            records += 1;
            archive.ingest(&r, SystemTime::now()).await.unwrap();
        }
        archive.flush().await.unwrap();
    }
    let keys = archive.store().list("sessions/").await.unwrap();
    let mut bytes = 0u64;
    for k in &keys {
        bytes += std::fs::metadata(archive.store().path_of(k).unwrap())
            .unwrap()
            .len();
    }
    eprintln!(
        "generated {n} statements ({records} records) in {sessions} sessions: {} objects, {:.1} MiB, in {:.1} s",
        keys.len(),
        bytes as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );
    let bin = std::env::var_os("GATEHOUSE_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_gatehouse").into());
    let pubkey = dir.path().join("keys/evidence-signing.pub.pem");
    let common = |store: &[String]| -> Vec<String> {
        let mut a: Vec<String> = [
            "report",
            "--framework",
            "soc2",
            "--since",
            "1day",
            "--format",
            "html",
            "--out",
        ]
        .map(String::from)
        .to_vec();
        a.push(dir.path().join("report.html").display().to_string());
        a.extend(["--key".into(), pubkey.display().to_string()]);
        a.extend(store.iter().cloned());
        a
    };
    let shape = format!(
        "{n} statements, {records} records, {sessions} sessions, {} objects, {:.0} MiB",
        keys.len(),
        bytes as f64 / 1048576.0
    );
    if which.is_empty() || which == "dir" {
        let (secs, rss, line) = measure(
            &bin,
            &common(&["--dir".into(), archive_dir.display().to_string()]),
            &[],
        );
        eprintln!("{line}");
        println!("report, local directory ({shape}): {secs:.1} s, peak RSS {rss:.0} MiB");
    }
    if which.is_empty() || which == "s3" {
        let moto = Moto::start();
        moto.create_bucket("bench-evidence").await;
        let store = moto.store(&moto.config("bench-evidence")).await.unwrap();
        let local = archive.store();
        let put = Instant::now();
        for chunk in keys.chunks(16) {
            futures_util::future::join_all(chunk.iter().map(|k| async {
                let data = local.get(k).await.unwrap().unwrap();
                store.put(k, &data).await.unwrap();
            }))
            .await;
        }
        eprintln!(
            "copied {} objects into moto in {:.1} s",
            keys.len(),
            put.elapsed().as_secs_f64()
        );
        let (secs, rss, line) = measure(
            &bin,
            &common(&[
                "--s3-bucket".into(),
                "bench-evidence".into(),
                "--s3-endpoint".into(),
                moto.endpoint(),
                "--s3-path-style".into(),
            ]),
            &moto.env(),
        );
        eprintln!("{line}");
        println!("report, S3 (moto) ({shape}): {secs:.1} s, peak RSS {rss:.0} MiB");
    }
}
