//! Evidence on the statement path (invariant 2): every statement is recorded
//! durably before it runs, in a hash chain per session that `verify` accepts and
//! `replay` reads back; when evidence cannot be stored, statements are refused
//! and nothing runs unrecorded; a crash leaves a spool the next start archives.

mod harness;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_archiver::{LocalDir, SessionStatus, load_verifying_key};
use gatehouse_decider::PolicyHandle;
use gatehouse_ingress::decision::LocalPolicy;
use gatehouse_schemas::evidence::{
    EVIDENCE_BATCH_SUBJECT, EVIDENCE_STREAM, GENESIS, batch_records,
};
use harness::nats::Nats;
use harness::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

const POLICY: &str = r#"
version = "evidence-e2e"

[[rules]]
id = "app-work"
roles = ["app"]
classes = ["read", "write", "transaction", "ddl"]
verdict = "allow"

[[rules]]
id = "vault-off-limits"
objects = ["vault.*"]
verdict = "block"
reason = "the vault schema is off limits"
"#;

fn policy(dir: &std::path::Path) -> LocalPolicy {
    std::fs::write(dir.join("policy.toml"), POLICY).unwrap();
    LocalPolicy::new(Arc::new(
        PolicyHandle::load(&dir.join("policy.toml")).unwrap(),
    ))
}

fn setup_db(pg: &Pg) {
    pg.psql_admin_db(
        APP_DB,
        "create schema vault authorization app; create table vault.keys (k text); \
         create table public.t (v int); alter table public.t owner to app",
    );
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks that records form one unbroken chain from seq 1, and parses them.
fn chained(records: &[Vec<u8>]) -> Vec<Value> {
    let mut prev = GENESIS.to_owned();
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let v: Value = serde_json::from_slice(r).unwrap();
            assert_eq!(v["seq"], i as u64 + 1, "{v}");
            assert_eq!(v["prev"], prev.as_str(), "chain broken at {v}");
            prev = hex_sha256(r);
            v
        })
        .collect()
}

/// The statement events (and the completion of each) of a session's records.
fn statements(events: &[Value]) -> Vec<(&Value, Option<&Value>)> {
    events
        .iter()
        .filter(|e| e["type"] == "statement")
        .map(|s| {
            let done = events
                .iter()
                .find(|c| c["type"] == "statement_completed" && c["statement"] == s["seq"]);
            if let Some(c) = done {
                assert!(
                    c["seq"].as_u64() > s["seq"].as_u64(),
                    "completion first: {c}"
                );
            }
            (s, done)
        })
        .collect()
}

/// Waits until a spool file under `dir` holds `needle` (the gateway writes
/// session ends without waiting for them).
async fn wait_for_spool(dir: &std::path::Path, needle: &str) {
    for _ in 0..400 {
        let files = gatehouse_ingress::evidence::spool_files(&dir.join("spool")).unwrap();
        if files.iter().any(|(_, p)| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .contains(needle)
        }) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no {needle} in the spool under {}", dir.display());
}

#[tokio::test]
async fn every_statement_is_recorded_and_the_archive_verifies() {
    let pg = Pg::start();
    setup_db(&pg);
    let issuer = Issuer::new();
    let dir = tempfile::tempdir().unwrap();
    let gw = start_gateway(&base_config(&pg, &issuer), policy(dir.path())).await;
    let token = issuer.token(&[("workflow", "nightly".into())]);
    let client = connect(&gw.url("app", &token)).await.unwrap();

    client.simple_query("select 1; select 2").await.unwrap();
    let secret = "a-parameter-value";
    let row = client
        .query_one("select length($1::text) as n", &[&secret])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>("n"), secret.len() as i32);
    client
        .execute("insert into t values (7)", &[])
        .await
        .unwrap();
    let err = client.simple_query("select 1/0").await.unwrap_err();
    assert_eq!(db_error(&err).0, "22012");
    client
        .simple_query("create table t2 as select * from t")
        .await
        .unwrap();
    let err = client
        .simple_query("select * from vault.keys")
        .await
        .unwrap_err();
    assert_eq!(db_error(&err).0, "42501");
    drop(client);

    let mut gw = gw;
    // Kept past the gateway's shutdown (it owns the directory).
    let ev = gw.evidence.take().unwrap();
    let ev_dir = ev.dir.path().to_owned();
    let key = load_verifying_key(&ev.verifying_key()).unwrap();
    let archive = ev.archive();
    wait_for_spool(&ev_dir, "\"type\":\"session_ended\"").await;
    // A clean stop seals the open segments.
    gw.shutdown().await;

    let store = LocalDir::new(&archive);
    let report = gatehouse_archiver::verify(&store, &[key], None, None)
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.sessions.len(), 1);
    assert_eq!(report.sessions[0].status, SessionStatus::Complete);
    let session = report.sessions[0].session;

    let records: Vec<Vec<u8>> = gatehouse_archiver::replay::replay_records(&store, session)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    for r in &records {
        let text = String::from_utf8_lossy(r);
        assert!(!text.contains(&token), "the token reached the evidence");
        assert!(
            !text.contains(APP_PASSWORD),
            "the credential reached the evidence"
        );
    }
    let events = chained(&records);
    let started = &events[0];
    assert_eq!(started["type"], "session_started");
    assert_eq!(started["role"], "app");
    assert_eq!(started["upstream_user"], APP_USER);
    assert_eq!(started["ci"]["repository"], "acme/app");
    assert_eq!(started["ci"]["run_id"], "4242");
    assert_eq!(started["identity"]["claims"]["workflow"], "nightly");
    assert_eq!(events.last().unwrap()["type"], "session_ended");
    assert_eq!(events.last().unwrap()["refused"], 1);

    let stmts = statements(&events);
    let find = |path: &str, sql: &str| {
        stmts
            .iter()
            .find(|(s, _)| s["path"] == path && s["sql"].as_str().unwrap().contains(sql))
            .unwrap_or_else(|| panic!("no {path} statement {sql:?} in {events:#?}"))
    };
    let (simple, done) = find("simple_query", "select 1; select 2");
    assert_eq!(
        (&simple["verdict"], &simple["rule"], &simple["forwarded"]),
        (&"allow".into(), &"app-work".into(), &true.into())
    );
    assert_eq!(
        simple["policy_version"]
            .as_str()
            .map(|v| v.starts_with("evidence-e2e")),
        Some(true)
    );
    assert_eq!(simple["classes"], serde_json::json!(["read", "read"]));
    let done = done.expect("completion of the simple query");
    assert_eq!(done["outcome"], "ok");
    // A statement of several classes records them all, its primary one first.
    let (ctas, _) = find("simple_query", "create table t2 as");
    assert_eq!(
        ctas["classes"],
        serde_json::json!(["ddl", "read"]),
        "{ctas}"
    );
    assert_eq!(done["tags"], serde_json::json!(["SELECT 1", "SELECT 1"]));

    // Extended protocol: decided at Parse, run (with its parameters) at Execute.
    find("parse", "length($1::text)");
    let (exec, done) = find("execute", "length($1::text)");
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        exec["params"],
        serde_json::json!([{ "binary": hex }]),
        "{exec}"
    );
    assert_eq!(
        done.expect("completion")["tags"],
        serde_json::json!(["SELECT 1"])
    );
    let (_, done) = find("execute", "insert into t values (7)");
    assert_eq!(
        done.expect("completion")["tags"],
        serde_json::json!(["INSERT 0 1"])
    );

    let (_, failed) = find("simple_query", "select 1/0");
    let failed = failed.expect("completion of the failed query");
    assert_eq!(
        (&failed["outcome"], &failed["sqlstate"]),
        (&"error".into(), &"22012".into())
    );

    let (blocked, done) = find("simple_query", "vault.keys");
    assert_eq!(
        (&blocked["verdict"], &blocked["rule"], &blocked["forwarded"]),
        (&"block".into(), &"vault-off-limits".into(), &false.into())
    );
    assert!(
        done.is_none(),
        "a refused statement has no completion: {done:?}"
    );

    // `replay` renders it for people.
    let mut out = Vec::new();
    let events = gatehouse_archiver::replay::replay(&store, session)
        .await
        .unwrap();
    gatehouse_archiver::replay::render_transcript(&events, &mut out).unwrap();
    let transcript = String::from_utf8(out).unwrap();
    assert!(transcript.contains("vault-off-limits"), "{transcript}");
    assert!(transcript.contains("select 1/0"), "{transcript}");
}

fn jetstream_config(pg: &Pg, issuer: &Issuer, nats: &Nats) -> String {
    format!(
        "{}\n[evidence]\nmode = \"jetstream\"\ntimeout = \"500ms\"\n\n[nats]\nurl = \"{}\"\n",
        base_config(pg, issuer),
        nats.url()
    )
}

/// Every record in the evidence stream, in stream order (batch messages, each
/// carrying many records).
async fn stream_records(nats: &Nats) -> Vec<Vec<u8>> {
    let js = async_nats::jetstream::new(nats.client().await);
    let mut stream = js.get_stream(EVIDENCE_STREAM).await.unwrap();
    // One snapshot: records still arriving (completions ride with later
    // publishes) are after its last sequence and not counted in it.
    let state = stream.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    let mut messages = 0;
    for seq in 1..=state.last_sequence {
        if let Ok(m) = stream.get_raw_message(seq).await {
            assert_eq!(m.subject.as_str(), EVIDENCE_BATCH_SUBJECT);
            out.extend(batch_records(&m.payload).map(<[u8]>::to_vec));
            messages += 1;
        }
    }
    assert_eq!(messages, state.messages);
    out
}

#[tokio::test]
async fn jetstream_evidence_is_acknowledged_before_forwarding_and_fails_closed() {
    let pg = Pg::start();
    setup_db(&pg);
    let issuer = Issuer::new();
    let mut nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = start_gateway(&jetstream_config(&pg, &issuer, &nats), policy(dir.path())).await;
    assert!(
        gw.evidence.is_none(),
        "JetStream mode keeps no local evidence"
    );
    let client = connect(&gw.url("app", &issuer.token(&[]))).await.unwrap();
    client
        .simple_query("insert into t values (1)")
        .await
        .unwrap();

    // The record was acknowledged before the statement ran: it is in the stream.
    let events = chained(&stream_records(&nats).await);
    assert_eq!(events[0]["type"], "session_started");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "statement" && e["sql"] == "insert into t values (1)"),
        "{events:#?}"
    );

    // JetStream gone: refused with 57P03, nothing runs, the session survives.
    nats.stop();
    let err = client
        .simple_query("insert into t values (2)")
        .await
        .unwrap_err();
    let (code, message) = db_error(&err);
    assert_eq!(code, "57P03", "{message}");
    assert!(
        message.contains("evidence could not be recorded"),
        "{message}"
    );
    let direct = connect(&pg.direct_url(APP_USER, APP_PASSWORD))
        .await
        .unwrap();
    let ran = |v: i32| {
        let direct = &direct;
        async move {
            direct
                .query_one("select count(*) from t where v = $1", &[&v])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(ran(2).await, 0, "a statement ran unrecorded");

    // Back: statements flow again on the same session once the client reconnected.
    nats.restart();
    let mut ok = false;
    for _ in 0..200 {
        match client.simple_query("insert into t values (3)").await {
            Ok(_) => {
                ok = true;
                break;
            }
            Err(e) => {
                assert_eq!(db_error(&e).0, "57P03");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(
        ok,
        "statements did not flow again after JetStream came back"
    );
    assert_eq!(ran(3).await, 1);
    assert_eq!(ran(2).await, 0);

    // One unbroken chain: the refused statement's record (queued while JetStream
    // was away) arrived in order, with a completion saying it did not run.
    // Completions are written with the next statement or within 20 ms: wait
    // for the last one.
    let mut events = Vec::new();
    for _ in 0..200 {
        events = chained(&stream_records(&nats).await);
        if events
            .last()
            .is_some_and(|e| e["type"] == "statement_completed")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let stmts = statements(&events);
    let (_, refused) = stmts
        .iter()
        .find(|(s, _)| s["sql"] == "insert into t values (2)")
        .expect("the refused statement is recorded");
    assert_eq!(refused.expect("its completion")["outcome"], "not_run");
    let ran_three = stmts
        .iter()
        .filter(|(s, c)| {
            s["sql"] == "insert into t values (3)" && c.is_some_and(|c| c["outcome"] == "ok")
        })
        .count();
    assert_eq!(ran_three, 1);
}

#[tokio::test]
async fn a_gateway_that_cannot_record_starts_no_session() {
    let pg = Pg::start();
    let issuer = Issuer::new();
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = start_gateway(&jetstream_config(&pg, &issuer, &nats), policy(dir.path())).await;
    drop(nats);
    let Err(err) = connect(&gw.url("app", &issuer.token(&[]))).await else {
        panic!("a session started without evidence");
    };
    let (code, message) = db_error(&err);
    assert_eq!(code, "57P03", "{message}");
    assert_eq!(pg.active("select 1"), 0);
}

/// `gatehouse serve` as a process, until killed.
struct Served {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
}

async fn serve(config: &std::path::Path, port: u16) -> Served {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("GATEHOUSE__INGRESS__LISTEN", format!("127.0.0.1:{port}"))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("gateway started")
            .unwrap()
            .expect("gateway exited early");
        if line.contains("ingress_listening") {
            return Served { child, lines };
        }
    }
}

#[tokio::test]
async fn a_crashed_gateways_spool_is_archived_at_the_next_start() {
    let pg = Pg::start();
    setup_db(&pg);
    let issuer = Issuer::new();
    let dir = tempfile::tempdir().unwrap();
    let ev = Evidence::new();
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    let config = format!(
        "{}{}\n[decider]\npolicy = \"{}\"\n",
        base_config(&pg, &issuer),
        ev.config(),
        dir.path().join("policy.toml").display()
    );
    let config_path = dir.path().join("gatehouse.toml");
    std::fs::write(&config_path, config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut served = serve(&config_path, port).await;
    let url = format!(
        "host=127.0.0.1 port={port} user=app password={} dbname={APP_DB} sslmode=disable",
        issuer.token(&[])
    );
    let client = connect(&url).await.unwrap();
    client
        .simple_query("insert into t values (42)")
        .await
        .unwrap();

    // kill -9 mid-session: the statement's record is in the spool (it ran only
    // after the fsync), not yet in a sealed segment (they seal after 60 s).
    served.child.start_kill().unwrap();
    served.child.wait().await.unwrap();
    drop(client);
    let spooled = gatehouse_ingress::evidence::spool_files(&ev.dir.path().join("spool")).unwrap();
    assert!(
        spooled
            .iter()
            .any(|(_, p)| std::fs::read_to_string(p).unwrap().contains("values (42)")),
        "the statement is not in the spool"
    );

    // The next start archives the spool; the session shows as started, never
    // completed, with its statement.
    let mut served = serve(&config_path, port).await;
    // SAFETY: signalling our own child.
    assert_eq!(
        unsafe { libc::kill(served.child.id().unwrap() as i32, libc::SIGTERM) },
        0
    );
    assert!(served.child.wait().await.unwrap().success());
    while let Ok(Some(_)) = served.lines.next_line().await {}
    let store = LocalDir::new(ev.archive());
    let key = load_verifying_key(&ev.verifying_key()).unwrap();
    let report = gatehouse_archiver::verify(&store, &[key], None, None)
        .await
        .unwrap();
    assert!(report.breaks.is_empty(), "{report:?}");
    assert_eq!(report.sessions.len(), 1, "{report:?}");
    assert_eq!(report.sessions[0].status, SessionStatus::Open);
    let records: Vec<Vec<u8>> =
        gatehouse_archiver::replay::replay_records(&store, report.sessions[0].session)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, r)| r)
            .collect();
    let events = chained(&records);
    // The statement's record was durable before it ran; its completion may or
    // may not have reached the spool before the kill.
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "statement" && e["sql"] == "insert into t values (42)"),
        "{events:#?}"
    );
    // Recovered spool files are gone once archived.
    let left = gatehouse_ingress::evidence::spool_files(&ev.dir.path().join("spool")).unwrap();
    assert!(
        left.iter()
            .all(|(_, p)| !std::fs::read_to_string(p).unwrap().contains("values (42)")),
        "{left:?}"
    );
}

#[tokio::test]
async fn result_rows_are_kept_masked_and_bounded_for_replay() {
    let pg = Pg::start();
    pg.psql_admin_db(
        APP_DB,
        "create table public.p (id int, ssn text); alter table public.p owner to app; \
         insert into public.p select g, '123-45-678' || g from generate_series(1, 5) g",
    );
    let issuer = Issuer::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        format!(
            "{POLICY}\n[[rules]]\nid = \"mask-ssn\"\nroles = [\"app\"]\nverdict = \"mask\"\n\
             [[rules.mask]]\ncolumn = \"public.p.ssn\"\nmethod = \"partial\"\nkeep_last = 2\n"
        ),
    )
    .unwrap();
    let policy = LocalPolicy::new(Arc::new(
        PolicyHandle::load(&dir.path().join("policy.toml")).unwrap(),
    ));
    let config =
        base_config(&pg, &issuer) + "[roles.app.results]\nrecord = \"rows\"\nmax_rows = 3\n";
    let mut gw = start_gateway(&config, policy).await;
    let client = connect(&gw.url("app", &issuer.token(&[]))).await.unwrap();

    // Simple query, two result sets: the bound (3 rows) is per statement.
    client
        .simple_query("select id, ssn from public.p where id <= 2 order by id; select 42 as answer, null as nothing, 'x' as more, 'y' as yet")
        .await
        .unwrap();
    // Extended: a described statement, binary results (tokio-postgres asks for
    // binary), more rows than kept.
    let rows = client
        .query(
            "select id, ssn from public.p where id > $1 order by id",
            &[&0i32],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 5);
    drop(client);

    let ev = gw.evidence.take().unwrap();
    wait_for_spool(ev.dir.path(), "\"type\":\"session_ended\"").await;
    let mut records = Vec::new();
    for (_, path) in gatehouse_ingress::evidence::spool_files(&ev.dir.path().join("spool")).unwrap()
    {
        let text = std::fs::read_to_string(path).unwrap();
        for n in 1..=5 {
            assert!(
                !text.contains(&format!("123-45-678{n}")),
                "a raw masked value reached evidence"
            );
        }
        records.extend(text.lines().map(|l| l.as_bytes().to_vec()));
    }
    let events = chained(&records);
    let results: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "result_data")
        .collect();
    assert_eq!(results.len(), 3, "{results:#?}");
    let stmts = statements(&events);
    // Texts under a mask are recorded with their literals placed: those
    // compared with unmasked columns as written.
    let seq_of = |path: &str| {
        stmts
            .iter()
            .find(|(s, _)| {
                s["sql"]
                    .as_str()
                    .unwrap()
                    .contains("from public.p where id")
                    && s["path"] == path
            })
            .map(|(s, _)| s["seq"].clone())
            .unwrap()
    };
    let simple = seq_of("simple_query");
    assert_eq!(results[0]["statement"], simple);
    assert_eq!(results[0]["columns"], serde_json::json!(["id", "ssn"]));
    assert_eq!(
        results[0]["rows"],
        serde_json::json!([["1", "***-**-**81"], ["2", "***-**-**82"]])
    );
    assert_eq!(
        (&results[0]["row_count"], &results[0]["truncated"]),
        (&2.into(), &false.into())
    );
    // The second set of the same text: one more row fits the bound of 3.
    assert_eq!(results[1]["statement"], simple);
    assert_eq!(
        results[1]["columns"],
        serde_json::json!(["answer", "nothing", "more", "yet"])
    );
    assert_eq!(
        results[1]["rows"],
        serde_json::json!([["42", null, "x", "y"]])
    );
    // Extended: named by the Describe, binary int4 and text decoded, masked
    // text, 3 of 5.
    assert_eq!(results[2]["statement"], seq_of("execute"));
    assert_eq!(results[2]["columns"], serde_json::json!(["id", "ssn"]));
    assert_eq!(
        results[2]["rows"],
        serde_json::json!([
            ["1", "***-**-**81"],
            ["2", "***-**-**82"],
            ["3", "***-**-**83"]
        ])
    );
    assert_eq!(
        (&results[2]["row_count"], &results[2]["truncated"]),
        (&5.into(), &true.into())
    );
    // Each result precedes its statement's completion.
    for r in &results {
        let done = events
            .iter()
            .find(|e| e["type"] == "statement_completed" && e["statement"] == r["statement"])
            .unwrap();
        assert!(r["seq"].as_u64() < done["seq"].as_u64());
    }

    // Replay shows them.
    let archive = ev.archive();
    gw.shutdown().await;
    let store = LocalDir::new(&archive);
    let key = load_verifying_key(&ev.verifying_key()).unwrap();
    let report = gatehouse_archiver::verify(&store, &[key], None, None)
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    let replayed = gatehouse_archiver::replay::replay(&store, report.sessions[0].session)
        .await
        .unwrap();
    let mut out = Vec::new();
    gatehouse_archiver::replay::render_transcript(&replayed, &mut out).unwrap();
    let transcript = String::from_utf8(out).unwrap();
    assert!(transcript.contains("5 rows (3 kept)"), "{transcript}");
    assert!(transcript.contains("| 3 | ***-**-**83"), "{transcript}");
}
