//! `gatehouse doctor` against real services: a config whose every part works
//! passes line by line; one whose parts are broken (a wrong upstream password,
//! a missing key set, NATS not listening, a bucket that does not exist, a topic
//! nobody created) fails exactly those lines, with reasons, and never prints
//! the password it tried.

mod harness;

use std::path::Path;
use std::process::Command;

use harness::kafka::Kafka;
use harness::nats::Nats;
use harness::s3::{Moto, SECRET_KEY};
use harness::*;

/// Runs `gatehouse doctor`; exit code and stdout.
fn doctor(config: &Path, role: &str, env: &[(&'static str, String)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["doctor", "--role", role, "--config"])
        .arg(config)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let all = format!("{stdout}{stderr}");
    eprintln!(
        "gatehouse doctor --role {role} ({}):\n{all}",
        config.display()
    );
    (out.status.code().unwrap_or(-1), all)
}

/// The line of `out` about `what`.
fn line<'a>(out: &'a str, what: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no line about {what:?} in:\n{out}"))
}

fn role(name: &str, password: &str, port: u16) -> String {
    format!(
        r#"
[roles.{name}]
user = "{APP_USER}"
password = "{password}"
upstream = {{ host = "127.0.0.1", port = {port}, dbname = "{APP_DB}", tls = "disable" }}
[[roles.{name}.allow]]
issuer = "test"
claims = {{ repository = "acme/app" }}
"#
    )
}

#[test]
fn an_all_in_one_config_that_works_passes_and_a_broken_one_names_each_fault() {
    let pg = Pg::start();
    let issuer = Issuer::new();
    let dir = tempfile::tempdir().unwrap();
    let evidence = Evidence::new();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "version = \"doctor\"\n[[rules]]\nid = \"r\"\nclasses = [\"read\"]\nverdict = \"allow\"\n",
    )
    .unwrap();
    let issuer_section = |jwks: &str| {
        format!(
            "[[issuers]]\nname = \"test\"\nissuer = \"{ISSUER}\"\naudiences = [\"{AUDIENCE}\"]\njwks_file = \"{jwks}\"\nalgorithms = [\"EdDSA\"]\n"
        )
    };
    let good = format!(
        "[ingress]\nlisten = \"127.0.0.1:0\"\n[decider]\npolicy = \"{}\"\n{}{}{}",
        policy.display(),
        issuer_section(&issuer.jwks_path()),
        role("app", APP_PASSWORD, pg.port),
        evidence.config(),
    );
    let good_path = dir.path().join("good.toml");
    std::fs::write(&good_path, &good).unwrap();
    let (code, out) = doctor(&good_path, "all", &[]);
    assert_eq!(code, 0, "{out}");
    assert!(line(&out, "issuer test").starts_with("ok"), "{out}");
    let up = line(&out, "role app: upstream");
    assert!(
        up.starts_with("ok") && up.contains("authenticated as app") && up.contains("clocks within"),
        "{out}"
    );
    assert!(line(&out, "evidence directory").starts_with("ok"), "{out}");
    assert!(line(&out, "policy").starts_with("ok"), "{out}");
    assert!(out.contains("checks, 0 failed"), "{out}");

    // The same, broken: a wrong password for one role (the other still
    // works), a key set that is not there, an evidence directory under a file.
    let wrong = "not-the-Password-41d9";
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let bad = format!(
        "[ingress]\nlisten = \"127.0.0.1:0\"\n[decider]\npolicy = \"{}\"\n{}{}{}\n[evidence]\nmode = \"local\"\ndir = \"{}\"\nsigning_key = \"{}\"\n",
        policy.display(),
        issuer_section(&dir.path().join("missing-jwks.json").display().to_string()),
        role("app", APP_PASSWORD, pg.port),
        role("broken", wrong, pg.port),
        blocker.join("evidence").display(),
        evidence.signing_key().display(),
    );
    let bad_path = dir.path().join("bad.toml");
    std::fs::write(&bad_path, &bad).unwrap();
    let (code, out) = doctor(&bad_path, "all", &[]);
    assert_eq!(code, 1, "{out}");
    let iss = line(&out, "issuer test");
    assert!(
        iss.starts_with("FAIL")
            && iss.contains("missing-jwks.json")
            && iss.contains("No such file"),
        "{out}"
    );
    assert!(line(&out, "role app: upstream").starts_with("ok"), "{out}");
    let broken = line(&out, "role broken: upstream");
    assert!(
        broken.starts_with("FAIL") && broken.contains("password authentication failed"),
        "{out}"
    );
    assert!(
        line(&out, "evidence directory").starts_with("FAIL"),
        "{out}"
    );
    assert!(out.contains("checks, 3 failed"), "{out}");
    assert!(
        !out.contains(wrong) && !out.contains(APP_PASSWORD),
        "a password printed:\n{out}"
    );
}

const NATS_PASSWORD: &str = "nats-Pw-0c2e";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archiver_config_is_tried_against_nats_s3_and_kafka() {
    let nats = Nats::start();
    let moto = Moto::start();
    let kafka = Kafka::start_memory();
    moto.create_bucket("evidence").await;
    kafka.create_topic("gatehouse.evidence", 1).await;
    let evidence = Evidence::new();
    let dir = tempfile::tempdir().unwrap();
    let config = |nats_url: &str, bucket: &str, topic: &str| {
        format!(
            "[nats]\nurl = \"{nats_url}\"\n[archiver]\nsigning_key = \"{}\"\n[archiver.s3]\nbucket = \"{bucket}\"\nendpoint = \"{}\"\nforce_path_style = true\ntimeout = \"5s\"\nattempt_timeout = \"2s\"\n[archiver.kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\n",
            evidence.signing_key().display(),
            moto.endpoint(),
            kafka.brokers(),
        )
    };
    let good = dir.path().join("good.toml");
    std::fs::write(&good, config(&nats.url(), "evidence", "gatehouse.evidence")).unwrap();
    let (code, out) = doctor(&good, "archiver", &moto.env());
    assert_eq!(code, 0, "{out}");
    assert!(line(&out, "NATS").contains("JetStream"), "{out}");
    assert!(line(&out, "S3 bucket evidence").starts_with("ok"), "{out}");
    assert!(line(&out, "Kafka topic").starts_with("ok"), "{out}");

    // NATS on a port nobody listens on, a bucket and a topic that do not exist.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        config(
            &format!("nats://doctor:{NATS_PASSWORD}@127.0.0.1:{port}"),
            "no-such-bucket",
            "no.such.topic",
        ),
    )
    .unwrap();
    let (code, out) = doctor(&bad, "archiver", &moto.env());
    assert_eq!(code, 1, "{out}");
    assert!(line(&out, "NATS").starts_with("FAIL"), "{out}");
    assert!(
        line(&out, "S3 bucket no-such-bucket").starts_with("FAIL"),
        "{out}"
    );
    assert!(
        line(&out, "Kafka topic no.such.topic").starts_with("FAIL"),
        "{out}"
    );
    assert!(
        !out.contains(SECRET_KEY) && !out.contains(NATS_PASSWORD),
        "a secret printed:\n{out}"
    );
}
