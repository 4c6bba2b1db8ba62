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

    let config = format!(
        r#"
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
