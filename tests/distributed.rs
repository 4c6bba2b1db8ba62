//! Distributed mode with a real `nats-server`: an ingress asking `gatehouse serve
//! --role decider` processes over NATS. Blocks and allows as in all-in-one mode;
//! one decider of two can go; none left fails closed (57P03) within the timeout
//! and the session survives; a decider coming back serves the same session; a
//! policy reload is announced and empties the ingress's verdict cache.

mod harness;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gatehouse_ingress::remote::NatsDecisionPoint;
use gatehouse_schemas::decision::{DECIDE_SUBJECT, DecisionRequest, ERROR_HEADER};
use harness::nats::*;
use harness::*;

const POLICY_V1: &str = r#"
version = "dist-v1"

[[rules]]
id = "no-drop"
risks = ["drop", "drop_cascade", "truncate"]
verdict = "block"
reason = "dropping is not allowed for CI jobs"

[[rules]]
id = "app-work"
roles = ["app"]
claims = { repository = "acme/app" }
classes = ["read", "write", "ddl", "transaction", "utility", "session"]
verdict = "allow"
"#;

/// Version 2 closes table `secrets` to reads.
const POLICY_V2: &str = r#"
version = "dist-v2"

[[rules]]
id = "no-drop"
risks = ["drop", "drop_cascade", "truncate"]
verdict = "block"
reason = "dropping is not allowed for CI jobs"

[[rules]]
id = "secrets-closed"
objects = ["public.secrets"]
verdict = "block"
reason = "secrets are closed"

[[rules]]
id = "app-work"
roles = ["app"]
claims = { repository = "acme/app" }
classes = ["read", "write", "ddl", "transaction", "utility", "session"]
verdict = "allow"
"#;

/// Decider timeout of the ingress under test.
const TIMEOUT: Duration = Duration::from_secs(1);

struct Setup {
    pg: Pg,
    issuer: Issuer,
    nats: Nats,
    dir: tempfile::TempDir,
    bus: async_nats::Client,
}

impl Setup {
    async fn new() -> Setup {
        let pg = Pg::start();
        let nats = Nats::start();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.toml"), POLICY_V1).unwrap();
        let bus = nats.client().await;
        Setup {
            pg,
            issuer: Issuer::new(),
            nats,
            dir,
            bus,
        }
    }

    fn policy(&self) -> std::path::PathBuf {
        self.dir.path().join("policy.toml")
    }

    fn decider(&self) -> DeciderProcess {
        DeciderProcess::spawn(&self.nats, self.dir.path(), &self.policy())
    }

    /// An in-process ingress asking over NATS, configured as `--role ingress` is.
    async fn ingress(&self) -> Gw<NatsDecisionPoint> {
        let config = format!(
            "{}\n[decider]\ntimeout = \"{}ms\"\n\n[nats]\nurl = \"{}\"\n",
            base_config(&self.pg, &self.issuer),
            TIMEOUT.as_millis(),
            self.nats.url()
        );
        let cfg = gatehouse::config::Config::from_toml(&config).unwrap();
        let point = NatsDecisionPoint::connect(&cfg.nats.url).await.unwrap();
        start_gateway(&config, point).await
    }
}

fn assert_blocked(err: &tokio_postgres::Error, rule: &str) {
    let (code, message) = db_error(err);
    assert_eq!(code, "42501", "{message}");
    assert!(message.contains(&format!("rule \"{rule}\"")), "{message}");
}

fn assert_unavailable(err: &tokio_postgres::Error) {
    let (code, message) = db_error(err);
    assert_eq!(code, "57P03", "{message}");
    assert!(
        message.contains("policy service is unavailable"),
        "{message}"
    );
}

#[tokio::test]
async fn two_deciders_one_killed_then_none_then_one_back() {
    let s = Setup::new().await;
    let mut heard = Announcements::subscribe(&s.bus).await;
    let mut d1 = s.decider();
    let d2 = s.decider();
    // Both are in the queue group once both have announced (they announce after subscribing).
    let mut ids = HashSet::new();
    while ids.len() < 2 {
        ids.insert(
            heard
                .wait_for(|a| a.version.starts_with("dist-v1"))
                .await
                .decider,
        );
    }

    let gw = s.ingress().await;
    let client = connect(&gw.url("app", &s.issuer.token(&[]))).await.unwrap();
    client
        .batch_execute("create table t (id int); insert into t values (1), (2)")
        .await
        .unwrap();
    assert_blocked(
        &client.simple_query("drop table t").await.unwrap_err(),
        "no-drop",
    );
    assert_blocked(
        &client
            .query("DROP /* x */ TABLE \"t\"", &[])
            .await
            .unwrap_err(),
        "no-drop",
    );
    // Distinct texts (no cache hits), spread over both deciders by the queue group.
    for i in 0..20 {
        let row = client
            .query_one(&format!("select count(*) + {i} from t"), &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), 2 + i);
    }

    // One goes (SIGTERM: it leaves the queue group first): nothing fails.
    d1.signal(libc::SIGTERM);
    d1.wait_exit().await;
    for i in 0..20 {
        client
            .simple_query(&format!("select {i} + count(*) from t"))
            .await
            .unwrap();
    }
    assert_blocked(
        &client.simple_query("truncate t").await.unwrap_err(),
        "no-drop",
    );

    // The other crashes: refused within the timeout, fail closed, session alive.
    d2.signal(libc::SIGKILL);
    drop(d2);
    let started = Instant::now();
    let err = client
        .simple_query("select 'nobody decides this' from t")
        .await
        .unwrap_err();
    assert_unavailable(&err);
    assert!(
        started.elapsed() < TIMEOUT + Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let err = client.query("select 42 from t", &[]).await.unwrap_err();
    assert_unavailable(&err);
    assert!(!client.is_closed());
    // Nothing refused reached PostgreSQL.
    assert!(!s.pg.log().contains("nobody decides this"));

    // A decider comes back: the same session goes on, no reconnect.
    let _d3 = s.decider();
    let back = heard.wait_for(|a| !ids.contains(&a.decider)).await;
    assert!(back.version.starts_with("dist-v1"), "{}", back.version);
    let row = client
        .query_one("select 42 + count(*) from t", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 44);
    assert_blocked(
        &client.simple_query("drop table t").await.unwrap_err(),
        "no-drop",
    );
}

/// Every request the ingress sends, seen by a plain (non-queue) subscriber.
struct RequestTap(async_nats::Subscriber);

impl RequestTap {
    async fn next_sql(&mut self) -> String {
        let msg = tokio::time::timeout(Duration::from_secs(10), self.0.next())
            .await
            .expect("a decision request")
            .unwrap();
        serde_json::from_slice::<DecisionRequest>(&msg.payload)
            .unwrap()
            .sql
    }
}

#[tokio::test]
async fn a_reload_is_announced_and_empties_the_ingress_cache() {
    let s = Setup::new().await;
    let mut heard = Announcements::subscribe(&s.bus).await;
    let decider = s.decider();
    heard.wait_for(|a| a.version.starts_with("dist-v1")).await;
    let mut tap = RequestTap(s.bus.subscribe(DECIDE_SUBJECT).await.unwrap());
    s.bus.flush().await.unwrap();

    let gw = s.ingress().await;
    let client = connect(&gw.url("app", &s.issuer.token(&[]))).await.unwrap();
    client
        .batch_execute("create table secrets (s text); insert into secrets values ('k')")
        .await
        .unwrap();
    assert_eq!(
        tap.next_sql().await,
        "create table secrets (s text); insert into secrets values ('k')"
    );
    const READ: &str = "select s from secrets";
    client.simple_query(READ).await.unwrap();
    assert_eq!(tap.next_sql().await, READ);
    // Asked again: answered from the cache. The next request on the bus is the
    // marker, not the read (one connection's messages arrive in order).
    client.simple_query(READ).await.unwrap();
    client.simple_query("select 'marker'").await.unwrap();
    assert_eq!(tap.next_sql().await, "select 'marker'");

    // A new policy closes the table; SIGHUP reloads it and the decider announces it.
    std::fs::write(s.policy(), POLICY_V2).unwrap();
    decider.signal(libc::SIGHUP);
    let v2 = heard
        .wait_for(|a| a.version.starts_with("dist-v2"))
        .await
        .version;
    // The ingress heard it too (bounded wait on what it exposes).
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.gateway.decision.policy_version().as_deref() != Some(&*v2) {
        assert!(Instant::now() < deadline, "ingress never heard dist-v2");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The cached allow is gone: the same text is decided again, and blocked.
    assert_blocked(
        &client.simple_query(READ).await.unwrap_err(),
        "secrets-closed",
    );
    assert_eq!(tap.next_sql().await, READ);
    // Same session throughout.
    client.simple_query("select 1").await.unwrap();
}

#[tokio::test]
async fn malformed_requests_get_an_error_reply_not_a_verdict() {
    let s = Setup::new().await;
    let handle = std::sync::Arc::new(gatehouse_decider::PolicyHandle::load(&s.policy()).unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(gatehouse_decider::service::run(
        handle.clone(),
        s.nats.client().await,
        async {
            let _ = stopped.await;
        },
    ));
    let mut heard = Announcements::subscribe(&s.bus).await;
    // Wait until the in-process service answers (its start announcement may have
    // gone before we subscribed; a reload makes it announce again).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.bus.request(DECIDE_SUBJECT, "not json".into()).await;
        if let Ok(reply) = r {
            let headers = reply.headers.expect("error headers");
            assert!(
                headers
                    .get(ERROR_HEADER)
                    .unwrap()
                    .as_str()
                    .contains("not a decision request")
            );
            let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("not a decision request")
            );
            break;
        }
        assert!(Instant::now() < deadline, "service never answered: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An unknown message version is refused the same way.
    let reply = s
        .bus
        .request(
            DECIDE_SUBJECT,
            r#"{"v":99,"role":"app","identity":{"issuer":"i","subject":"s","algorithm":"EdDSA","claims":{}},"protocol":"simple_query","sql":"select 1"}"#.into(),
        )
        .await
        .unwrap();
    assert!(
        reply
            .headers
            .unwrap()
            .get(ERROR_HEADER)
            .unwrap()
            .as_str()
            .contains("version 99")
    );

    // handle.reload() (what SIGHUP does) is announced too.
    std::fs::write(s.policy(), POLICY_V2).unwrap();
    let v2 = handle.reload().unwrap().expect("a new version");
    assert!(v2.starts_with("dist-v2"), "{v2}");
    heard.wait_for(|a| a.version == v2).await;

    stop.send(()).unwrap();
    service.await.unwrap().unwrap();
}
