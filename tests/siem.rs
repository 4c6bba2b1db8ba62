//! SIEM records that validate: a real session through the gateway, written by
//! the all-in-one NDJSON output (`[evidence] siem`), every record checked
//! against the OCSF schema version it declares (deploy/siem/ocsf-validate.py,
//! with the schema PyPI's ocsf-json-schema carries), and each statement record
//! standing alone: caller, client, database, action, the class's own activity.

mod harness;

use std::collections::BTreeSet;
use std::sync::Arc;

use gatehouse_decider::PolicyHandle;
use gatehouse_ingress::decision::LocalPolicy;
use harness::*;
use serde_json::Value;

const POLICY: &str = r#"
version = "siem-e2e"

[[rules]]
id = "app-work"
roles = ["app"]
classes = ["read", "write", "transaction", "ddl", "copy-in", "copy-out"]
objects = ["public.*", "pg_catalog.*"]
verdict = "allow"

[[rules]]
id = "vault-off-limits"
objects = ["vault.*"]
verdict = "block"
reason = "the vault schema is off limits"
"#;

#[tokio::test]
async fn a_recorded_session_gives_ocsf_records_that_validate() {
    let pg = Pg::start();
    pg.psql_admin_db(
        APP_DB,
        "create schema vault authorization app; create table vault.keys (k text); \
         grant create on schema public to app",
    );
    let issuer = Issuer::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    let policy = LocalPolicy::new(Arc::new(
        PolicyHandle::load(&dir.path().join("policy.toml")).unwrap(),
    ));
    let ev = Evidence::new();
    let ndjson = dir.path().join("ocsf.ndjson");
    let toml = format!(
        "{}{}siem = {{ ndjson = \"{}\" }}\n",
        base_config(&pg, &issuer),
        ev.config(),
        ndjson.display()
    );
    let gw = start_gateway(&toml, policy).await;
    let client = connect(&gw.url("app", &issuer.token(&[]))).await.unwrap();
    for sql in [
        "create table s (a int)",
        "insert into s values (1), (2)",
        "update s set a = a + 1 where a = 1",
        "select * from s",
        "delete from s where a = 2",
    ] {
        client.batch_execute(sql).await.unwrap();
    }
    // Refused: the vault by rule, TRUNCATE as a risk no rule allows.
    for sql in ["select * from vault.keys", "truncate s"] {
        assert!(client.simple_query(sql).await.is_err(), "{sql} is refused");
    }
    // The client's Terminate ends the session; its end is on record (and so
    // in the NDJSON output) before the gateway stops.
    drop(client);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_to_string(&ndjson)
        .unwrap_or_default()
        .contains("\"gatehouse_event_type\":\"session_ended\"")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no session_ended record"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    gw.shutdown().await;

    let text = std::fs::read_to_string(&ndjson).unwrap();
    let out = std::process::Command::new(tools_python())
        .arg(repo_path("deploy/siem/ocsf-validate.py"))
        .arg(&ndjson)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "records do not validate:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds = |kind: &'static str| {
        records
            .iter()
            .filter(move |r| r["unmapped"]["gatehouse_event_type"] == kind)
    };
    assert_eq!(kinds("session_started").count(), 1, "{text}");
    assert_eq!(kinds("session_ended").count(), 1, "{text}");
    let seqs: Vec<u64> = records
        .iter()
        .map(|r| r["metadata"]["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=records.len() as u64).collect::<Vec<_>>(),
        "every event, once, in order"
    );
    for r in &records {
        assert_eq!(
            r["actor"]["user"]["uid"], "repo:acme/app:ref:refs/heads/main",
            "{r}"
        );
        assert_eq!(r["actor"]["app_name"], "app", "{r}");
        assert!(r["src_endpoint"]["ip"].as_str().is_some(), "{r}");
        assert_eq!(r["database"]["name"], APP_DB, "{r}");
        assert_eq!(
            r["metadata"]["profiles"],
            serde_json::json!(["security_control"])
        );
        if r.get("disposition_id").is_some() {
            assert!(r["action_id"].as_u64().is_some(), "{r}");
        }
    }
    let activities: BTreeSet<(String, String)> = kinds("statement")
        .map(|r| {
            let sql = r["query_info"]["query_string"].as_str().unwrap();
            (
                sql.split_whitespace().next().unwrap().to_owned(),
                r["activity_name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for want in [
        ("create", "Create"),
        ("insert", "Write"),
        ("update", "Update"),
        ("select", "Query"),
        ("delete", "Delete"),
        ("truncate", "Delete"),
    ] {
        assert!(
            activities.contains(&(want.0.to_owned(), want.1.to_owned())),
            "{want:?} not in {activities:?}"
        );
    }
    let refused: Vec<&Value> = kinds("statement")
        .filter(|r| r["status"] == "Failure")
        .collect();
    assert_eq!(refused.len(), 2, "{text}");
    for r in refused {
        assert_eq!(
            (r["action_id"].as_u64(), r["disposition"].as_str()),
            (Some(2), Some("Blocked")),
            "{r}"
        );
    }
}
