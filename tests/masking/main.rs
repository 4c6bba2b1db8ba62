//! Inline masking through the ingress with real clients: tokio-postgres in text
//! (simple query) and binary (extended, prepared, executed many times) mode,
//! raw protocol bytes, psql and psycopg. Each case asserts that the raw value is
//! nowhere in what the client received, nor in evidence, nor in the logs. The
//! policy, the data and what every case shares are here; the cases by path in
//! [`paths`] (clients and free text), [`raw`] (protocol bytes: SQL prepared
//! statements, cursors, COPY) and [`views`] (views, functions).

#[path = "../harness/mod.rs"]
mod harness;
mod paths;
mod raw;
mod views;

use std::sync::Arc;

use futures_util::TryStreamExt;
use gatehouse_archiver::LocalDir;
use gatehouse_decider::PolicyHandle;
use gatehouse_ingress::decision::LocalPolicy;
use harness::*;
use tokio::process::Command;

/// The raw values that must never leave.
const SSN1: &str = "123-45-6789";
const SSN2: &str = "987-65-4321";
const EMAIL: &str = "ann.secret@example.org";
const CARD: &str = "4111111111111111";
/// A value written through the gateway (a bind parameter, a literal).
const SSN_NEW: &str = "555-12-3456";
const SSN_LIT: &str = "555-99-0000";
/// Free text holding identifiers only content detectors find.
const VISIT1: &str = "called 415-555-2671 re SSN 123-45-6789; paid 4111 1111 1111 1111; mail visit.secret@example.net";
const VISIT1_SCRUBBED: &str = "called ***-***-**** re SSN ***-**-****; paid **** **** **** ****; mail *****.******@*******.***";
const VISIT2: &str = "no identifiers here: room 12, 3 visits, card ending 1111";
/// The raw identifiers of `VISIT1`.
const VISIT1_RAW: [&str; 4] = [
    "415-555-2671",
    "123-45-6789",
    "4111 1111 1111 1111",
    "visit.secret@example.net",
];

/// [`POLICY`] with content detectors: SSN and card numbers in the visits'
/// summaries (and what is derived from them), e-mail addresses and phone
/// numbers in every text column.
fn detector_policy() -> String {
    format!(
        r#"{POLICY}
[[rules]]
id = "scan-summaries"
roles = ["app"]
verdict = "mask"
detectors = ["ssn", "pan"]
detect_columns = ["clinic.visits.summary"]

[[rules]]
id = "scan-all-text"
roles = ["app"]
verdict = "mask"
detectors = ["email", "phone"]
"#
    )
}

const POLICY: &str = r#"
version = "mask-e2e"

[[data_classes]]
name = "pii.ssn"
columns = ["clinic.patients.ssn"]

[[rules]]
id = "app-work"
roles = ["app"]
classes = ["read", "write", "transaction", "prepared", "cursor", "copy-out", "copy-in", "session", "utility"]
objects = ["clinic.*", "pg_catalog.*"]
verdict = "allow"

[[rules]]
id = "mask-pii"
roles = ["app"]
verdict = "mask"
exempt = { groups = { contains = "phi-readers" } }

[[rules.mask]]
class = "pii.ssn"
method = "partial"
keep_last = 4

[[rules.mask]]
column = "clinic.*.email"
method = "email"

[[rules.mask]]
column = "*.*.card_number"
method = "hash"

[[rules.mask]]
column = "clinic.patients.birth_year"
method = "redact"
"#;

fn setup_db(pg: &Pg) {
    pg.psql_admin_db(
        APP_DB,
        &format!(
            "create schema clinic authorization app; \
             create table clinic.patients (id int primary key, name text, ssn text, email text, card_number varchar(19), birth_year int, notes jsonb); \
             insert into clinic.patients values \
               (1, 'Ann', '{SSN1}', '{EMAIL}', '{CARD}', 1970, '{{\"k\": 1}}'), \
               (2, 'Bob', '{SSN2}', 'bob@example.com', '{CARD}', 1980, null), \
               (3, 'Cy', null, null, null, null, null); \
             create view clinic.patient_view as select id, ssn from clinic.patients; \
             create table clinic.visits (id int primary key, summary text, code int); \
             insert into clinic.visits values \
               (1, '{VISIT1}', 4111), (2, '{VISIT2}', 2671), (3, null, null); \
             alter table clinic.patients owner to app; alter view clinic.patient_view owner to app; \
             alter table clinic.visits owner to app"
        ),
    );
}

struct Setup {
    _pg: Pg,
    issuer: Issuer,
    gw: Gw<LocalPolicy>,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    setup_with(POLICY).await
}

async fn setup_with(policy: &str) -> Setup {
    let pg = Pg::start();
    setup_db(&pg);
    let issuer = Issuer::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
    let policy = LocalPolicy::new(Arc::new(
        PolicyHandle::load(&dir.path().join("policy.toml")).unwrap(),
    ));
    let config = format!(
        "{}\n[masking]\nhash_key_env = \"GATEHOUSE_TEST_MASK_KEY\"\n",
        base_config(&pg, &issuer)
    );
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("GATEHOUSE_TEST_MASK_KEY", "test-hash-key") };
    let gw = start_gateway(&config, policy).await;
    Setup {
        _pg: pg,
        issuer,
        gw,
        _dir: dir,
    }
}

fn assert_clean(what: &str, text: &str) {
    for raw in [SSN1, SSN2, EMAIL, CARD, "123-45", "987-65", "ann.secret"] {
        assert!(!text.contains(raw), "{raw} reached {what}: {text}");
    }
}

/// Every text value of simple-query rows, joined.
fn simple_text(msgs: &[tokio_postgres::SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect()
}

/// Everything the gateway's evidence holds, spool and archive (it is stopped).
async fn evidence_text(mut gw: Gw<LocalPolicy>) -> String {
    let ev = gw.evidence.take().unwrap();
    let mut evidence = String::new();
    for (_, p) in gatehouse_ingress::evidence::spool_files(&ev.dir.path().join("spool")).unwrap() {
        evidence.push_str(&String::from_utf8_lossy(&std::fs::read(p).unwrap()));
    }
    gw.shutdown().await;
    let key = gatehouse_archiver::load_verifying_key(&ev.verifying_key()).unwrap();
    let store = LocalDir::new(ev.archive());
    let report = gatehouse_archiver::verify(&store, &[key], None, None)
        .await
        .unwrap();
    for session in &report.sessions {
        for (_, r) in gatehouse_archiver::replay::replay_records(&store, session.session)
            .await
            .unwrap()
        {
            evidence.push_str(&String::from_utf8_lossy(&r));
        }
    }
    evidence
}

/// Gatehouse's own log lines (the test's tokio-postgres client logs its
/// parameters in the same process).
fn gatehouse_logs() -> String {
    captured_logs()
        .lines()
        .filter(|l| l.contains(" gatehouse"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Stops the gateway; asserts its evidence was read and holds no raw value,
/// nor do its logs.
async fn assert_evidence_and_logs_clean(s: Setup) {
    let evidence = evidence_text(s.gw).await;
    assert!(evidence.contains("clinic.patients"), "evidence was read");
    assert_clean("evidence", &evidence);
    assert_clean("logs", &gatehouse_logs());
}

/// The libpq connection string of the masked caller `app` through `gw` (its
/// token goes as the password).
fn app_dsn(gw: &Gw<LocalPolicy>) -> String {
    format!(
        "host=127.0.0.1 port={} user=app dbname={APP_DB} sslmode=disable",
        gw.addr.port()
    )
}

/// Runs a psycopg `script` (it connects to `$DSN`) as the masked caller;
/// asserts no raw value reached its output, and reads the JSON it prints.
async fn psycopg_json(gw: &Gw<LocalPolicy>, token: &str, script: &str) -> serde_json::Value {
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(script)
        .env("DSN", format!("{} password={token}", app_dsn(gw)));
    let out = run(cmd).await.expect("python3 with psycopg");
    assert_clean("psycopg", &out);
    serde_json::from_str(&out).unwrap()
}
