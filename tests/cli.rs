//! The `gatehouse` binary as a user runs it: keygen and mint with the dev issuer,
//! `serve --config` with an env override, psql through it, clean SIGTERM, and
//! logs that carry the session's identity but no token and no credential.

mod harness;

use std::process::Stdio;
use std::time::Duration;

use harness::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

#[tokio::test]
async fn serve_mint_connect_and_stop() {
    let pg = Pg::start();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let mut keygen = Command::new(BIN);
    keygen.args(["token", "keygen", "--dir"]).arg(&keys);
    run(keygen).await.unwrap();
    let mut keygen = Command::new(BIN);
    keygen.args(["evidence", "keygen", "--dir"]).arg(&keys);
    assert!(run(keygen).await.unwrap().contains("key id"));
    let evidence = dir.path().join("evidence");

    let config = format!(
        r#"
[evidence]
dir = "{evidence}"
signing_key = "{signing_key}"

[ingress]
listen = "127.0.0.1:1"   # overridden below through the environment
allow_cleartext_without_tls = true

[decider]
policy = "{policy}"

[[issuers]]
name = "dev"
issuer = "gatehouse-dev"
audiences = ["gatehouse"]
jwks_file = "{jwks}"
algorithms = ["EdDSA"]

[roles.reporting]
user = "{APP_USER}"
password_env = "TEST_UPSTREAM_PASSWORD"
upstream = {{ host = "127.0.0.1", port = {port}, dbname = "{APP_DB}", tls = "disable" }}
[[roles.reporting.allow]]
issuer = "dev"
claims = {{ repository = "acme/reports" }}
"#,
        jwks = keys.join("jwks.json").display(),
        port = pg.port,
        policy = dir.path().join("policy.toml").display(),
        evidence = evidence.display(),
        signing_key = keys.join("evidence-signing.pem").display(),
    );
    std::fs::write(
        dir.path().join("policy.toml"),
        "version = \"v1\"\n[[rules]]\nid = \"reads\"\nroles = [\"reporting\"]\nclasses = [\"read\"]\nverdict = \"allow\"\n",
    )
    .unwrap();
    let config_path = dir.path().join("gatehouse.toml");
    std::fs::write(&config_path, config).unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("GATEHOUSE__INGRESS__LISTEN", format!("127.0.0.1:{port}"))
        .env("GATEHOUSE__LOG__LEVEL", "debug")
        .env("TEST_UPSTREAM_PASSWORD", APP_PASSWORD)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    // Ready when it says it listens (on the overridden port).
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("gateway started")
            .unwrap()
            .expect("gateway exited early");
        log.push_str(&line);
        log.push('\n');
        if line.contains("ingress_listening") {
            assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
            break;
        }
    }

    let mut mint = Command::new(BIN);
    mint.args(["token", "mint", "--key"])
        .arg(keys.join("dev-issuer.pem"))
        .args([
            "--sub",
            "repo:acme/reports:ref:refs/heads/main",
            "--ttl",
            "10m",
        ])
        .args([
            "--claim",
            "repository=acme/reports",
            "--claim",
            "run_id:=\"77\"",
        ]);
    let token = run(mint).await.unwrap();
    let ci = format!("host=127.0.0.1 port={port} user=reporting dbname=appdb sslmode=disable");
    assert_eq!(
        psql(&ci, &token, "select current_user").await.unwrap(),
        APP_USER
    );

    // A token for another repository cannot assume the role.
    let mut mint = Command::new(BIN);
    mint.args(["token", "mint", "--key"])
        .arg(keys.join("dev-issuer.pem"))
        .args(["--sub", "x", "--claim", "repository=acme/other"]);
    let other = run(mint).await.unwrap();
    let err = psql(&ci, &other, "select 1").await.unwrap_err();
    assert!(
        err.contains("not allowed to assume role \"reporting\""),
        "{err}"
    );

    // SIGTERM stops it cleanly.
    let pid = child.id().unwrap() as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    while let Ok(Some(line)) = lines.next_line().await {
        log.push_str(&line);
        log.push('\n');
    }
    assert!(log.contains("session_started"), "{log}");
    assert!(
        log.contains("subject=\"repo:acme/reports:ref:refs/heads/main\""),
        "{log}"
    );
    assert!(log.contains("role_not_allowed"), "{log}");
    for secret in [token.as_str(), other.as_str(), APP_PASSWORD] {
        assert!(!log.contains(secret), "a secret reached the log");
    }

    // The stop sealed the session's evidence: it lists, verifies and replays.
    let mut list = Command::new(BIN);
    list.args(["sessions", "list", "--json", "--dir"])
        .arg(evidence.join("archive"));
    let listed = run(list).await.unwrap();
    let sessions: Vec<serde_json::Value> = listed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(sessions.len(), 1, "{listed}");
    let s = &sessions[0];
    assert_eq!(
        (
            s["role"].as_str(),
            s["repository"].as_str(),
            s["run_id"].as_str()
        ),
        (Some("reporting"), Some("acme/reports"), Some("77")),
        "{listed}"
    );
    let mut verify = Command::new(BIN);
    verify
        .args(["verify", "--dir"])
        .arg(evidence.join("archive"))
        .arg("--key")
        .arg(keys.join("evidence-signing.pub.pem"));
    let report = run(verify).await.unwrap();
    assert!(
        report.starts_with("1 sessions: 1 complete, 0 open, 0 broken; 0 breaks"),
        "{report}"
    );
    let mut replay = Command::new(BIN);
    replay
        .arg("replay")
        .arg(s["session"].as_str().unwrap())
        .arg("--dir")
        .arg(evidence.join("archive"));
    let transcript = run(replay).await.unwrap();
    assert!(transcript.contains("select current_user"), "{transcript}");
    assert!(
        !transcript.contains(&token),
        "the token reached the evidence"
    );
}

#[tokio::test]
async fn bad_configs_fail_at_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[issuers]]\nname = \"x\"\nissuer = \"x\"\naudiences = [\"a\"]\njwks_file = \"j\"\nalgorithms = [\"HS256\"]\n",
    )
    .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config"]).arg(&path);
    let err = run(cmd).await.unwrap_err();
    assert!(err.contains("HS256"), "{err}");
}

#[tokio::test]
async fn policy_check_explain_and_test() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let policy = format!("{repo}/deploy/policy.example.toml");
    let mut cmd = Command::new(BIN);
    cmd.args(["policy", "check", &policy]);
    assert!(run(cmd).await.unwrap().contains("ok, 7 rules"));

    // A broken policy names the line.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "version = \"x\"\n\n[[rules]]\nid = \"b\"\nverdict = \"block\"\n",
    )
    .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["policy", "check"]).arg(&bad);
    let err = run(cmd).await.unwrap_err();
    assert!(
        err.contains("line 4") && err.contains("needs a reason"),
        "{err}"
    );
    // The functions keys are checked too: a misspelt key, a bad pattern.
    for (text, want) in [
        ("trusted_function = [\"x\"]\n", "unknown field"),
        (
            "trusted_functions = [\"a.b.c\"]\n",
            "must be name or schema.name",
        ),
    ] {
        std::fs::write(
            &bad,
            format!("{text}[[rules]]\nid = \"a\"\nverdict = \"allow\"\n"),
        )
        .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["policy", "check"]).arg(&bad);
        let err = run(cmd).await.unwrap_err();
        assert!(err.contains(want), "{want} in: {err}");
    }

    // explain shows verdict, rule, class, objects and risks.
    let claims = dir.path().join("claims.json");
    std::fs::write(
        &claims,
        r#"{"repository": "acme/etl", "ref": "refs/heads/main"}"#,
    )
    .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "policy", "explain", "--policy", &policy, "--role", "etl", "--claims",
    ])
    .arg(&claims)
    .arg("delete from clinic.billing where true");
    let out = run(cmd).await.unwrap();
    for needle in [
        "verdict: approve (rule unbounded-change)",
        "class:     write",
        "writes:    clinic.billing",
        "risks:     delete_without_where",
    ] {
        assert!(out.contains(needle), "{needle} in:\n{out}");
    }
    // ... and the functions the gateway will look up, refusing one not built
    // in that no rule names.
    let mut cmd = Command::new(BIN);
    cmd.args([
        "policy", "explain", "--policy", &policy, "--role", "etl", "--claims",
    ])
    .arg(&claims)
    .arg("select clinic.purge(), lower(full_name) from clinic.patients");
    let out = run(cmd).await.unwrap();
    for needle in [
        "verdict: block (no rule: default deny)",
        "it calls clinic.purge, a function not built into PostgreSQL",
        "catalog: looked up in pg_proc before it runs (a rule must name any not built into PostgreSQL): lower, clinic.purge",
    ] {
        assert!(out.contains(needle), "{needle} in:\n{out}");
    }
    // explain shows which output columns would be masked and why, and why a
    // masked caller's statement is refused.
    let research = dir.path().join("research.json");
    std::fs::write(&research, r#"{"groups": []}"#).unwrap();
    let explain = |sql: &str| {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "policy", "explain", "--policy", &policy, "--role", "research", "--claims",
        ])
        .arg(&research)
        .arg(sql);
        run(cmd)
    };
    let out = explain("select id, upper(ssn), email from clinic.patients")
        .await
        .unwrap();
    for needle in [
        "verdict: mask (rule research-masked)",
        "mask:    clinic.patients.ssn (partial, keep first 0 and last 4) by rule research-masked, class pii.ssn",
        "masked:  statement 1 output column 2: reads clinic.patients.ssn -> partial",
        "masked:  statement 1 output column 3: reads clinic.*.email -> email",
        // The content detectors in force, and where they scan.
        "mask:    clinic.*.notes (detectors ssn, pan, email, phone) by rule research-masked",
        // What the gateway looks up in the catalog before it runs.
        "catalog: relations read through when they are views: clinic.patients",
        "catalog: looked up in pg_proc before it runs (a rule must name any not built into PostgreSQL): upper",
    ] {
        assert!(out.contains(needle), "{needle} in:\n{out}");
    }
    let out = explain("select id from clinic.patients where ssn like '123%'")
        .await
        .unwrap();
    assert!(
        out.contains("verdict: block (rule research-masked)")
            && out.contains("masking could not be guaranteed"),
        "{out}"
    );

    // --token reads the claims of a token (unverified: an offline tool).
    let mut cmd = Command::new(BIN);
    cmd.args(["token", "keygen", "--dir"])
        .arg(dir.path().join("k"));
    run(cmd).await.unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["token", "mint", "--key"])
        .arg(dir.path().join("k/dev-issuer.pem"))
        .args(["--sub", "x", "--claim", "repository=acme/reports"]);
    let token = run(cmd).await.unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "policy",
        "explain",
        "--json",
        "--policy",
        &policy,
        "--role",
        "reporting",
        "--token",
        &token,
    ])
    .arg("select * from clinic.patients");
    let v: serde_json::Value = serde_json::from_str(&run(cmd).await.unwrap()).unwrap();
    assert_eq!(v["decision"]["verdict"]["verdict"], "allow");
    assert_eq!(v["decision"]["rule"], "reporting-reads");
    assert_eq!(v["statements"][0]["analysis"]["class"], "read");

    // policy test passes the shipped cases and fails on a wrong expectation.
    let mut cmd = Command::new(BIN);
    cmd.args([
        "policy",
        "test",
        &format!("{repo}/deploy/policy.example.tests.toml"),
    ]);
    assert!(run(cmd).await.unwrap().contains("11 passed, 0 failed"));
    std::fs::copy(&policy, dir.path().join("policy.toml")).unwrap();
    let cases = dir.path().join("cases.toml");
    std::fs::write(
        &cases,
        "policy = \"policy.toml\"\n[[cases]]\nname = \"wrong\"\nrole = \"etl\"\nsql = \"select 1\"\nexpect = \"allow\"\n",
    )
    .unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["policy", "test"]).arg(&cases);
    let err = run(cmd).await.unwrap_err();
    assert!(
        err.contains("FAIL wrong: expected allow, got block"),
        "{err}"
    );
}

#[tokio::test]
async fn sighup_reloads_the_policy_of_a_running_gateway() {
    let pg = Pg::start();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let mut keygen = Command::new(BIN);
    keygen.args(["token", "keygen", "--dir"]).arg(&keys);
    run(keygen).await.unwrap();
    let policy_path = dir.path().join("policy.toml");
    let allow_reads =
        "version = \"v1\"\n[[rules]]\nid = \"reads\"\nclasses = [\"read\"]\nverdict = \"allow\"\n";
    std::fs::write(&policy_path, allow_reads).unwrap();
    let config = format!(
        "[ingress]\nlisten = \"127.0.0.1:0\"\nallow_cleartext_without_tls = true\n\
         [decider]\npolicy = \"{}\"\nwatch_interval = \"1h\"\n\
         [[issuers]]\nname = \"dev\"\nissuer = \"gatehouse-dev\"\naudiences = [\"gatehouse\"]\njwks_file = \"{}\"\n\
         [roles.app]\nuser = \"{APP_USER}\"\npassword = \"{APP_PASSWORD}\"\n\
         upstream = {{ host = \"127.0.0.1\", port = {}, dbname = \"{APP_DB}\", tls = \"disable\" }}\n\
         [[roles.app.allow]]\nclaims = {{ sub = \"ci\" }}\n\
         [evidence]\nmode = \"off\"\n",
        policy_path.display(),
        keys.join("jwks.json").display(),
        pg.port
    );
    std::fs::write(dir.path().join("g.toml"), config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.path().join("g.toml"))
        .env("GATEHOUSE__INGRESS__LISTEN", format!("127.0.0.1:{port}"))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut wait_for = async |needle: &str| loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("log line in time")
            .unwrap()
            .expect("gateway running");
        if line.contains(needle) {
            return line;
        }
    };
    wait_for("ingress_listening").await;
    let mut mint = Command::new(BIN);
    mint.args(["token", "mint", "--key"])
        .arg(keys.join("dev-issuer.pem"))
        .args(["--sub", "ci"]);
    let token = run(mint).await.unwrap();
    let ci = format!("host=127.0.0.1 port={port} user=app dbname={APP_DB} sslmode=disable");
    assert_eq!(psql(&ci, &token, "select 40 + 2").await.unwrap(), "42");

    // Tighten the policy and send SIGHUP (file watching is set to 1h here).
    std::fs::write(&policy_path, "version = \"v2\"\n").unwrap();
    let pid = child.id().unwrap() as i32;
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let line = wait_for("policy_reloaded").await;
    assert!(line.contains("v2-"), "{line}");
    let err = psql(&ci, &token, "select 40 + 2").await.unwrap_err();
    assert!(err.contains("default deny"), "{err}");
    // A broken file keeps v2 in force.
    std::fs::write(&policy_path, "[[rules]]\nid =").unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    wait_for("policy_reload_failed_keeping_previous").await;
    assert!(
        psql(&ci, &token, "select 1")
            .await
            .unwrap_err()
            .contains("default deny")
    );
}
