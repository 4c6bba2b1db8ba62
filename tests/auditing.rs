//! Answers for auditors, end to end: a CI workload through the real gateway
//! (two CI identities; allowed, blocked, masked and approved statements;
//! writes to a table) recorded as evidence, then each command asked about it
//! (`report` in every format, `who-changed`, `access review`, `policy suggest`
//! with `policy test` on what it wrote, `policy replay`), the HTML rendered by
//! headless Chromium and printed to PDF, and a tampered segment that the
//! report must call broken.

mod harness;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::token::{self, MintRequest};
use gatehouse_approver::local::InProcess;
use gatehouse_decider::PolicyHandle;
use gatehouse_ingress::decision::LocalPolicy;
use gatehouse_schemas::approval::ApprovalList;
use harness::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");
const APPROVER_ISSUER: &str = "https://approvers.test.invalid";

const POLICY: &str = r#"
version = "audit-e2e"

[[data_classes]]
name = "pii.ssn"
columns = ["clinic.patients.ssn"]

[[rules]]
id = "ci-reads"
roles = ["app"]
classes = ["read"]
objects = ["public.accounts", "clinic.patients"]
verdict = "allow"

[[rules]]
id = "etl-writes"
roles = ["app"]
claims = { repository = "acme/etl" }
classes = ["write"]
objects = ["public.accounts"]
verdict = "allow"

[[rules]]
id = "mask-ssn"
roles = ["app"]
claims = { repository = "acme/app" }
classes = ["read"]
objects = ["clinic.patients"]
verdict = "mask"
[[rules.mask]]
class = "pii.ssn"
method = "partial"
keep_last = 4

[[rules]]
id = "no-ddl"
classes = ["ddl"]
verdict = "block"
reason = "schema changes go through migrations"

[[rules]]
id = "bulk-delete"
risks = ["delete_without_where", "update_without_where"]
verdict = "approve"
reason = "deletes every row"
approvers = "dba"

[[rules]]
id = "never-used"
roles = ["app"]
classes = ["read"]
objects = ["public.archive"]
verdict = "allow"
"#;

const APP_SUB: &str = "repo:acme/app:ref:refs/heads/main";
const ETL_SUB: &str = "repo:acme/etl:ref:refs/heads/main";

struct Workload {
    _pg: Pg,
    dir: tempfile::TempDir,
    evidence: Evidence,
}

impl Workload {
    fn archive(&self) -> PathBuf {
        self.evidence.archive()
    }
    fn key(&self) -> PathBuf {
        self.evidence.verifying_key()
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// `--dir ARCHIVE --key PUB --since 1h`
    fn scope(&self) -> Vec<String> {
        vec![
            "--dir".into(),
            self.archive().display().to_string(),
            "--key".into(),
            self.key().display().to_string(),
            "--since".into(),
            "1h".into(),
        ]
    }
}

fn gatehouse(args: &[String]) -> (i32, String, String) {
    let out = std::process::Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn args(list: &[&str], more: &[String]) -> Vec<String> {
    list.iter()
        .map(|s| (*s).to_owned())
        .chain(more.iter().cloned())
        .collect()
}

fn ci_token(issuer: &Issuer, sub: &str, repo: &str, run: &str) -> String {
    let claims = json!({
        "repository": repo, "run_id": run, "workflow": "ci",
        "sha": "0123456789abcdef0123456789abcdef01234567", "ref": "refs/heads/main",
    });
    token::mint(
        &issuer.key,
        &MintRequest {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            subject: sub.into(),
            ttl: Duration::from_secs(600),
            claims: claims.as_object().unwrap().clone(),
        },
    )
    .unwrap()
}

/// Runs the workload through an all-in-one gateway with in-process approvals,
/// then shuts it down so that every session's end is archived.
async fn workload() -> Workload {
    let pg = Pg::start();
    pg.psql_admin_db(
        APP_DB,
        "create table public.accounts (id int primary key, owner text, balance int);
         insert into public.accounts values (1, 'ann', 10), (2, 'bob', 20);
         create schema clinic;
         create table clinic.patients (id int, name text, ssn text);
         insert into clinic.patients values (1, 'Ann', '123-45-6789');
         grant usage on schema clinic to app;
         grant all on public.accounts to app; grant select on clinic.patients to app;",
    );
    let issuer = Issuer::new();
    let approvers = Issuer::new();
    let dir = tempfile::tempdir().unwrap();
    let evidence = Evidence::new();
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    let config = format!(
        r#"
[ingress]
listen = "127.0.0.1:0"
allow_cleartext_without_tls = true

[[issuers]]
name = "test"
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
jwks_file = "{jwks}"
algorithms = ["EdDSA"]
leeway = "0s"

[roles.app]
user = "{APP_USER}"
password = "{APP_PASSWORD}"
upstream = {{ host = "127.0.0.1", port = {port}, dbname = "{APP_DB}", tls = "disable" }}
[[roles.app.allow]]
issuer = "test"
claims = {{ repository = {{ one_of = ["acme/app", "acme/etl"] }} }}

[roles.reporting]
user = "{APP_USER}"
password = "{APP_PASSWORD}"
upstream = {{ host = "127.0.0.1", port = {port}, dbname = "{APP_DB}", tls = "disable" }}
[[roles.reporting.allow]]
issuer = "test"
claims = {{ repository = "acme/reports" }}

[decider]
policy = "policy.toml"

[approvals]
timeout = "5m"
admin_listen = "127.0.0.1:0"
[[approvals.issuers]]
name = "approvers"
issuer = "{APPROVER_ISSUER}"
audiences = ["gatehouse-approvals"]
jwks_file = "{approver_jwks}"
algorithms = ["EdDSA"]
leeway = "0s"
{evidence}"#,
        jwks = issuer.jwks_path(),
        port = pg.port,
        approver_jwks = approvers.jwks_path(),
        evidence = evidence.config(),
    );
    // The config as an operator keeps it, beside its policy (for access review).
    std::fs::write(dir.path().join("gatehouse.toml"), &config).unwrap();
    let cfg = gatehouse_ingress::config::Config::from_toml(&config).unwrap();
    let local = InProcess::new(cfg.approvals.clone()).unwrap();
    let store = local.store();
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", admin_listener.local_addr().unwrap());
    tokio::spawn(async move {
        local
            .run(admin_listener, std::future::pending())
            .await
            .unwrap();
    });
    let handle = Arc::new(PolicyHandle::load(&dir.path().join("policy.toml")).unwrap());
    let gw = start_gateway_with(&config, LocalPolicy::new(handle), |g| {
        g.with_approvals(store)
    })
    .await;

    // The app's CI job: reads, a masked read, refused DDL and a refused write.
    let app = connect(&gw.url("app", &ci_token(&issuer, APP_SUB, "acme/app", "101")))
        .await
        .unwrap();
    app.simple_query("select count(*) from public.accounts")
        .await
        .unwrap();
    let rows = app
        .query("select name, ssn from clinic.patients", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, String>(1), "***-**-6789", "masked");
    let e = app
        .batch_execute("create table public.evil (x int)")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "42501");
    let e = app
        .batch_execute("update public.accounts set balance = 0 where id = 1")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "42501");
    drop(app);

    // The ETL job: an extended-protocol update, an insert, and a delete of
    // every row that waits for a DBA's approval.
    let etl = Arc::new(
        connect(&gw.url("app", &ci_token(&issuer, ETL_SUB, "acme/etl", "202")))
            .await
            .unwrap(),
    );
    let n = etl
        .execute(
            "update public.accounts set balance = balance + 10 where id <= $1",
            &[&2i32],
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    etl.batch_execute("insert into public.accounts values (3, 'carol', 5)")
        .await
        .unwrap();
    let c = Arc::clone(&etl);
    let held = tokio::spawn(async move { c.batch_execute("delete from public.accounts").await });
    let alice = token::mint(
        &approvers.key,
        &MintRequest {
            issuer: APPROVER_ISSUER.into(),
            audience: "gatehouse-approvals".into(),
            subject: "alice".into(),
            ttl: Duration::from_secs(600),
            claims: json!({"groups": ["dba"]}).as_object().unwrap().clone(),
        },
    )
    .unwrap();
    let http = gatehouse_ingress::http_client(&[]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let pending = loop {
        let list: ApprovalList = http
            .get(format!("{admin}/v1/approvals"))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(r) = list.records.into_iter().next() {
            break r;
        }
        assert!(Instant::now() < deadline, "no approval request within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let r = http
        .post(format!(
            "{admin}/v1/approvals/{}/decision",
            pending.request.id
        ))
        .bearer_auth(&alice)
        .json(&json!({"statement_hash": pending.request.statement_hash, "decision": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    held.await.unwrap().expect("the approved delete ran");
    drop(etl);
    // The sessions end (and record it) once their clients' Terminate arrives;
    // shutting down before that would cut the ETL session short.
    pg.wait_no_backends(APP_USER).await;
    gw.shutdown().await;
    Workload {
        _pg: pg,
        dir,
        evidence,
    }
}

/// Headless Chromium (Debian's `chromium`) with a fresh profile.
fn chromium(profile: &Path, args: &[String]) -> std::process::Output {
    std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium (Debian's package; deploy/test.sh installs it)")
}

fn figure<'a>(report: &'a Value, control: &str, name: &str) -> &'a Value {
    report["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["control"]["id"] == control)
        .unwrap_or_else(|| panic!("no control {control}"))
        .get("evidence")
        .and_then(|e| e.as_array())
        .and_then(|e| e.iter().find(|f| f["name"] == name))
        .or_else(|| {
            report["sections"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["control"]["id"] == control)
                .unwrap()["exceptions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == name)
        })
        .unwrap_or_else(|| panic!("no figure {name} in {control}"))
}

fn rows_with<'a>(fig: &'a Value, needle: &str) -> Vec<&'a Value> {
    fig["table"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r.to_string().contains(needle))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_get_answers_from_verified_evidence() {
    let w = workload().await;
    let scope = w.scope();

    // The report, as JSON: verified first, then the figures per control.
    let (code, out, err) = gatehouse(&args(
        &["report", "--framework", "soc2", "--format", "json"],
        &scope,
    ));
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let i = &report["integrity"];
    assert_eq!(
        (i["intact"].as_bool(), i["complete"].as_bool()),
        (Some(true), Some(true)),
        "{i}"
    );
    assert!(
        i["sentence"]
            .as_str()
            .unwrap()
            .starts_with("The evidence is complete and intact"),
        "{i}"
    );
    assert_eq!(i["sessions"], 2);
    assert!(i["digest"].as_str().unwrap().starts_with("sha256:"));
    let s = &report["summary"];
    assert_eq!(
        (
            s["sessions"].as_u64(),
            s["identities"].as_u64(),
            s["roles"].as_u64()
        ),
        (Some(2), Some(2), Some(1)),
        "{s}"
    );
    assert_eq!(s["approvals"], 1);
    assert_eq!(s["refused"], 2, "{s}");
    // Every statement of a caller a mask rule applies to runs masked.
    assert_eq!(s["masked"], 2, "{s}");

    // CC8.1: every change with what allowed it, and its outcome.
    let changes = figure(&report, "CC8.1", "changes");
    assert_eq!(changes["table"]["total"], 3, "{changes}");
    let update = rows_with(changes, "balance + 10");
    assert_eq!(update.len(), 1, "{changes}");
    assert!(
        update[0].to_string().contains("rule etl-writes")
            && update[0].to_string().contains("ok, 2 rows"),
        "{}",
        update[0]
    );
    let delete = rows_with(changes, "delete from public.accounts");
    assert!(
        delete[0].to_string().contains("by alice") && delete[0].to_string().contains("ok, 3 rows"),
        "{}",
        delete[0]
    );
    assert!(
        delete[0].to_string().contains("acme/etl ci run 202"),
        "{}",
        delete[0]
    );
    // CC6.2: the approval, its requester, approver and time to decide.
    let approvals = figure(&report, "CC6.2", "approvals");
    let a = &approvals["table"]["rows"][0];
    assert_eq!(
        (a[2].as_str(), a[4].as_str(), a[5].as_str(), a[7].as_str()),
        (Some(ETL_SUB), Some("approved"), Some("alice"), Some("yes")),
        "{a}"
    );
    assert!(a[6].as_str().unwrap().ends_with(" s"), "{a}");
    // CC6.1: the refusals, by rule, with their reasons.
    let refusals = figure(&report, "CC6.1", "refusals");
    assert_eq!(refusals["table"]["total"], 2, "{refusals}");
    assert_eq!(rows_with(refusals, "no-ddl").len(), 1);
    assert_eq!(rows_with(refusals, "create table public.evil").len(), 1);
    assert_eq!(rows_with(refusals, "default deny").len(), 1);
    // Each figure comes with the command that prints it again.
    let repro = changes["reproduce"].as_str().unwrap();
    assert!(
        repro.starts_with("gatehouse report --only changes --format json --since "),
        "{repro}"
    );
    let words: Vec<String> = repro.split(' ').skip(1).map(str::to_owned).collect();
    let (code, again, err) = gatehouse(&words);
    assert_eq!(code, 0, "{err}");
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["figure"]["table"], changes["table"]);
    // No masked value anywhere in any answer.
    assert!(!out.contains("123-45-6789"));

    // NIST and HIPAA and FFIEC map the same evidence to their controls.
    for (framework, control) in [
        ("nist-800-53", "AU-3"),
        ("hipaa", "164.312(b)"),
        ("ffiec", "II.C.22"),
    ] {
        let (code, out, err) = gatehouse(&args(
            &["report", "--framework", framework, "--format", "md"],
            &scope,
        ));
        assert_eq!(code, 0, "{framework}: {err}");
        assert!(
            out.contains(&format!("## {control} ")),
            "{framework}: {out}"
        );
        assert!(out.contains("**Complete and intact**"), "{out}");
    }

    // HTML, rendered by a real browser: the key figures are visible, and it prints.
    let html = w.path("report.html");
    let (code, _, err) = gatehouse(&args(
        &[
            "report",
            "--framework",
            "soc2",
            "--out",
            html.to_str().unwrap(),
        ],
        &scope,
    ));
    assert_eq!(code, 0, "{err}");
    let page = std::fs::read_to_string(&html).unwrap();
    for outside in [
        "<script",
        "<link",
        " src=",
        "href=\"http",
        "@import",
        "url(",
    ] {
        assert!(!page.contains(outside), "not self-contained: {outside}");
    }
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", html.display());
    let dom = chromium(profile.path(), &["--dump-dom".into(), url.clone()]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    for visible in [
        "The evidence is complete and intact",
        "CC8.1 Change management",
        "rule etl-writes",
        "approved",
        "schema changes go through migrations",
        ETL_SUB,
    ] {
        assert!(
            dom.contains(visible),
            "{visible:?} not in the rendered page"
        );
    }
    let pdf = w.path("report.pdf");
    let printed = chromium(
        profile.path(),
        &[
            format!("--print-to-pdf={}", pdf.display()),
            "--no-pdf-header-footer".into(),
            url.clone(),
        ],
    );
    let bytes = std::fs::read(&pdf)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&printed.stderr)));
    assert!(
        bytes.starts_with(b"%PDF") && bytes.len() > 10_000,
        "{} bytes",
        bytes.len()
    );
    if let Some(shot) = std::env::var_os("GATEHOUSE_REPORT_SCREENSHOT") {
        chromium(
            profile.path(),
            &[
                "--window-size=1200,1700".into(),
                format!("--screenshot={}", Path::new(&shot).display()),
                url,
            ],
        );
    }

    // who-changed: the writes to public.accounts, with CI context and authority.
    let (code, out, err) = gatehouse(&args(&["who-changed", "accounts", "--json"], &scope));
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["total"], 3, "{v}");
    let c = v["changes"].as_array().unwrap();
    assert!(
        c.iter()
            .all(|c| c["subject"] == ETL_SUB && c["objects_from"] == "recorded"),
        "{v}"
    );
    assert_eq!(
        (c[0]["rows"].as_u64(), c[0]["authority"]["rule"].as_str()),
        (Some(2), Some("etl-writes")),
        "{v}"
    );
    assert_eq!(c[0]["ci"]["run_id"], "202");
    assert_eq!(
        c[0]["ci"]["commit"],
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert_eq!(c[2]["authority"]["by"], "approval");
    assert_eq!(c[2]["authority"]["approver"], "alice");
    assert_eq!(c[2]["rows"], 3);
    let (code, out, _) = gatehouse(&args(&["who-changed", "clinic.patients"], &scope));
    assert_eq!(code, 0);
    assert!(
        out.contains("0 statements wrote to clinic.patients"),
        "{out}"
    );
    let (_, text, _) = gatehouse(&args(&["who-changed", "public.accounts"], &scope));
    assert!(
        text.contains("allowed: approval") && text.contains("by alice"),
        "{text}"
    );

    // access review: per identity and role, unused roles and rules.
    let cfg = w.path("gatehouse.toml");
    let (code, out, err) = gatehouse(&args(
        &[
            "access",
            "review",
            "--config",
            cfg.to_str().unwrap(),
            "--json",
        ],
        &scope,
    ));
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let access = v["access"].as_array().unwrap();
    assert_eq!(access.len(), 2, "{v}");
    let app = access.iter().find(|a| a["subject"] == APP_SUB).unwrap();
    assert_eq!(
        (
            app["role"].as_str(),
            app["sessions"].as_u64(),
            app["refused"].as_u64()
        ),
        (Some("app"), Some(1), Some(2)),
        "{app}"
    );
    assert_eq!(app["statements"]["read"], 2, "{app}");
    assert_eq!(v["roles_never_assumed"], json!(["reporting"]));
    let unused: Vec<&str> = v["rules_never_used"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(
        unused.contains(&"never-used") && !unused.contains(&"etl-writes"),
        "{unused:?}"
    );

    // policy suggest: least-privilege rules for what role app ran, and real cases.
    let suggested = w.path("suggested");
    let (code, out, err) = gatehouse(&args(
        &[
            "policy",
            "suggest",
            "--role",
            "app",
            "--policy",
            w.path("policy.toml").to_str().unwrap(),
            "--out",
            suggested.to_str().unwrap(),
        ],
        &scope,
    ));
    assert_eq!(code, 0, "{out}{err}");
    let policy = std::fs::read_to_string(suggested.join("policy.toml")).unwrap();
    assert!(
        policy.contains("\"public.accounts\"") && policy.contains("verdict = \"approve\""),
        "{policy}"
    );
    assert!(
        policy.contains("delete_without_where") && policy.contains("id = \"mask-ssn\""),
        "{policy}"
    );
    assert!(
        !policy.contains("public.evil"),
        "refused statements are not learnt: {policy}"
    );
    let (code, out, err) = gatehouse(&[
        "policy".into(),
        "test".into(),
        suggested.join("policy.tests.toml").display().to_string(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(" 0 failed") && !out.contains(": 0 passed"),
        "{out}"
    );

    // policy replay: without etl-writes, the ETL job's writes would be refused.
    let stricter = POLICY.replace(
        "id = \"etl-writes\"",
        "id = \"etl-writes\"\nenforce = false",
    );
    std::fs::write(w.path("stricter.toml"), stricter).unwrap();
    let (code, out, err) = gatehouse(&args(
        &[
            "policy",
            "replay",
            "--policy",
            w.path("stricter.toml").to_str().unwrap(),
            "--json",
            "--strict",
        ],
        &scope,
    ));
    assert_eq!(
        code, 1,
        "--strict: writes that ran would now be blocked: {out}{err}"
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["changes"]["would now be blocked"], 2, "{v}");
    let g = v["groups"].as_array().unwrap();
    assert!(
        g.iter().any(|g| g["subject"] == ETL_SUB
            && g["was_rule"] == "etl-writes"
            && g["now_rule"] == "default deny"),
        "{v}"
    );
    let (code, out, _) = gatehouse(&args(
        &[
            "policy",
            "replay",
            "--policy",
            w.path("policy.toml").to_str().unwrap(),
        ],
        &scope,
    ));
    assert_eq!(code, 0);
    assert!(out.contains(", 0 would change."), "{out}");

    // Tamper with one record of a segment: the report says BROKEN, names the
    // break, and never looks clean.
    let segment = walk(&w.archive())
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".ndjson.gz"))
        .unwrap();
    let lines =
        gatehouse_archiver::segment::decode_segment(&std::fs::read(&segment).unwrap()).unwrap();
    let mut lines: Vec<Vec<u8>> = lines;
    let text = String::from_utf8(lines[0].clone()).unwrap();
    lines[0] = text.replacen("\"ts\":\"2", "\"ts\":\"1", 1).into_bytes();
    assert_ne!(lines[0], text.as_bytes());
    std::fs::write(
        &segment,
        gatehouse_archiver::segment::encode_segment(lines.iter().map(Vec::as_slice)),
    )
    .unwrap();
    let (code, out, _) = gatehouse(&args(
        &["report", "--framework", "soc2", "--format", "json"],
        &scope,
    ));
    assert_eq!(code, 1, "a broken archive exits 1");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["integrity"]["intact"], false);
    assert!(
        v["integrity"]["sentence"]
            .as_str()
            .unwrap()
            .starts_with("The evidence is BROKEN"),
        "{}",
        v["integrity"]
    );
    let kinds: Vec<&str> = v["integrity"]["breaks"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"segment_changed") && kinds.contains(&"record_changed"),
        "{kinds:?}"
    );
    let (code, _, _) = gatehouse(&args(
        &[
            "report",
            "--framework",
            "soc2",
            "--out",
            html.to_str().unwrap(),
        ],
        &scope,
    ));
    assert_eq!(code, 1);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("class=\"verdict bad\"") && page.contains("The evidence is broken"),
        "broken banner"
    );
    assert!(
        !page.contains("complete and intact"),
        "a broken report never reads clean"
    );
    let (code, out, _) = gatehouse(&args(&["who-changed", "accounts"], &scope));
    assert_eq!(code, 1);
    assert!(out.starts_with("The evidence is BROKEN"), "{out}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}
