//! Policy enforced in the ingress: blocked statements never reach PostgreSQL, the
//! client gets 42501 naming the rule, and the session ends up in the state
//! PostgreSQL itself would leave it in (transactions, pipelines). Fail closed
//! when the decider is late; hot reload without reconnecting.

mod harness;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use gatehouse_decider::PolicyHandle;
use gatehouse_ingress::decision::{DecisionError, DecisionPoint, LocalPolicy};
use gatehouse_schemas::StatementEvent;
use gatehouse_schemas::decision::Decision;
use harness::*;

const POLICY: &str = r#"
version = "e2e"

[[rules]]
id = "app-work"
roles = ["app"]
claims = { repository = "acme/app" }
classes = ["read", "write", "transaction", "ddl", "prepared", "cursor", "session", "utility", "copy-in", "copy-out"]
verdict = "allow"

[[rules]]
id = "no-drop"
risks = ["drop", "drop_cascade", "truncate"]
verdict = "block"
reason = "dropping or truncating is not allowed for CI jobs"

[[rules]]
id = "unbounded-delete"
risks = ["delete_without_where"]
verdict = "approve"
reason = "deletes every row"
approvers = "dba"

[[rules]]
id = "vault-off-limits"
objects = ["vault.*"]
verdict = "block"
reason = "the vault schema is off limits"

[[rules]]
id = "watch-inserts"
classes = ["write"]
verdict = "block"
reason = "would block writes"
enforce = false
"#;

struct Setup {
    pg: Pg,
    issuer: Issuer,
    dir: tempfile::TempDir,
    handle: Arc<PolicyHandle>,
}

fn setup() -> Setup {
    let pg = Pg::start();
    pg.psql_admin_db(APP_DB, "create schema vault authorization app; create table vault.keys (k text); insert into vault.keys values ('k1')");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    let handle = Arc::new(PolicyHandle::load(&dir.path().join("policy.toml")).unwrap());
    Setup {
        pg,
        issuer: Issuer::new(),
        dir,
        handle,
    }
}

async fn gateway<D: DecisionPoint>(s: &Setup, decision: D) -> Gw<D> {
    let config = base_config(&s.pg, &s.issuer) + "\n[decider]\ntimeout = \"300ms\"\n";
    start_gateway(&config, decision).await
}

#[tokio::test]
async fn blocked_statements_never_run_and_the_session_goes_on() {
    let s = setup();
    let gw = gateway(&s, LocalPolicy::new(s.handle.clone())).await;
    let client = connect(&gw.url("app", &s.issuer.token(&[]))).await.unwrap();
    client
        .batch_execute("create table t (id int); insert into t values (1), (2)")
        .await
        .unwrap();

    for (sql, rule) in [
        ("drop table t", "no-drop"),
        ("DrOp /* sneaky */ TABLE \"t\"", "no-drop"),
        ("truncate t", "no-drop"),
        ("select * from vault.keys", "vault-off-limits"),
        (
            "with x as (select 1) select k from vault.keys, x",
            "vault-off-limits",
        ),
    ] {
        let err = client.simple_query(sql).await.unwrap_err();
        let (code, message) = db_error(&err);
        assert_eq!(code, "42501", "{sql}");
        assert!(
            message.contains(&format!("rule \"{rule}\"")),
            "{sql}: {message}"
        );
        // The same through the extended protocol.
        let err = client.query(sql, &[]).await.unwrap_err();
        assert_eq!(db_error(&err).0, "42501", "{sql} (extended)");
    }
    // Approval is not executed by this gateway: refused, saying so.
    let err = client.simple_query("delete from t").await.unwrap_err();
    let (code, message) = db_error(&err);
    assert_eq!(code, "42501");
    assert!(
        message.contains("requires approval by \"dba\""),
        "{message}"
    );
    // Default deny for what no rule covers.
    let err = client
        .simple_query("alter system set work_mem = '1GB'")
        .await
        .unwrap_err();
    assert!(db_error(&err).1.contains("default deny"));

    // Nothing of it ran.
    let n: i64 = client
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    assert_eq!(
        s.pg.psql_admin_db(APP_DB, "select count(*) from vault.keys"),
        "1"
    );
    assert!(!s.pg.log().contains("drop table t"));
}

#[tokio::test]
async fn a_block_inside_a_transaction_fails_it_as_postgresql_would() {
    let s = setup();
    let gw = gateway(&s, LocalPolicy::new(s.handle.clone())).await;
    let mut raw = Raw::login(gw.addr, "app", &s.issuer.token(&[])).await;
    raw.query("create table tx (v int)").await;
    let status = |msgs: &[Msg]| msgs.last().map(|m| m.body[0]);
    assert_eq!(status(&raw.query("begin").await), Some(b'T'));
    assert_eq!(
        status(&raw.query("insert into tx values (1)").await),
        Some(b'T')
    );
    let msgs = raw.query("drop table tx").await;
    let err = msgs.iter().find(|m| m.tag == b'E').unwrap();
    assert_eq!(err.field(b'C').as_deref(), Some("42501"));
    assert!(err.field(b'M').unwrap().contains("no-drop"));
    assert_eq!(err.field(b'S').as_deref(), Some("ERROR"));
    assert_eq!(
        status(&msgs),
        Some(b'E'),
        "failed transaction, like PostgreSQL"
    );
    // Upstream agrees: the transaction is aborted.
    let msgs = raw.query("select 1").await;
    let err = msgs.iter().find(|m| m.tag == b'E').unwrap();
    assert_eq!(err.field(b'C').as_deref(), Some("25P02"));
    // COMMIT of a failed transaction rolls back.
    let msgs = raw.query("commit").await;
    let tag = msgs.iter().find(|m| m.tag == b'C').unwrap();
    assert_eq!(String::from_utf8_lossy(&tag.body), "ROLLBACK\0");
    assert_eq!(status(&msgs), Some(b'I'));
    let msgs = raw.query("select count(*) from tx").await;
    let row = msgs.iter().find(|m| m.tag == b'D').unwrap();
    assert!(row.body.ends_with(b"0"), "the insert was rolled back");
    // Outside a transaction a block leaves the session idle.
    assert_eq!(status(&raw.query("truncate tx").await), Some(b'I'));
}

/// Encodes Parse/Bind/Describe/Execute for an unnamed statement.
fn extended(sql: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut parse = vec![0u8];
    parse.extend_from_slice(sql.as_bytes());
    parse.extend_from_slice(&[0, 0, 0]);
    out.extend(message(b'P', &parse));
    // portal "", statement "", no parameter formats, no parameters, no result formats
    out.extend(message(b'B', &[0, 0, 0, 0, 0, 0, 0, 0]));
    out.extend(message(b'D', b"P\0"));
    out.extend(message(b'E', &[0, 0, 0, 0, 0]));
    out
}

#[tokio::test]
async fn a_block_inside_a_pipeline_skips_to_sync_as_postgresql_would() {
    let s = setup();
    let gw = gateway(&s, LocalPolicy::new(s.handle.clone())).await;
    let mut raw = Raw::login(gw.addr, "app", &s.issuer.token(&[])).await;
    raw.query("create table p (v int)").await;
    // One pipeline: insert, a blocked drop, another insert, then Sync.
    let mut batch = extended("insert into p values (1)");
    batch.extend(extended("drop table p"));
    batch.extend(extended("insert into p values (2)"));
    batch.extend(message(b'S', b""));
    // A second pipeline after the Sync runs normally.
    batch.extend(extended("select count(*) from p"));
    batch.extend(message(b'S', b""));
    raw.send(&batch).await;
    let first = raw.until_ready().await;
    let tags: String = first.iter().map(|m| m.tag as char).collect();
    assert_eq!(
        tags, "12nCEZ",
        "parse, bind, no data, complete, then one error and ready"
    );
    let err = first.iter().find(|m| m.tag == b'E').unwrap();
    assert_eq!(err.field(b'C').as_deref(), Some("42501"));
    assert!(err.field(b'M').unwrap().contains("no-drop"));
    let second = raw.until_ready().await;
    let row = second
        .iter()
        .find(|m| m.tag == b'D')
        .expect("the next pipeline runs");
    // The implicit transaction of the failed pipeline rolled the first insert back.
    assert!(row.body.ends_with(b"0"), "{:?}", row.body);
    // And the table is still there.
    assert_eq!(s.pg.psql_admin_db(APP_DB, "select count(*) from p"), "0");
}

#[tokio::test]
async fn prepared_statements_and_function_calls_are_decided_too() {
    let s = setup();
    let gw = gateway(&s, LocalPolicy::new(s.handle.clone())).await;
    let mut raw = Raw::login(gw.addr, "app", &s.issuer.token(&[])).await;
    raw.query("create table w (v int); insert into w values (1)")
        .await;
    // PREPARE of a DELETE without WHERE is decided as the DELETE.
    let msgs = raw.query("prepare wipe as delete from w").await;
    assert!(
        msgs.iter()
            .any(|m| m.tag == b'E' && m.field(b'M').unwrap().contains("unbounded-delete"))
    );
    // EXECUTE of a name the gateway never allowed to be prepared.
    let msgs = raw.query("execute wipe").await;
    assert_eq!(
        msgs.iter()
            .find(|m| m.tag == b'E')
            .unwrap()
            .field(b'C')
            .as_deref(),
        Some("42501")
    );
    // A harmless prepared statement works and its EXECUTE is decided as its body.
    raw.query("prepare one as select v from w").await;
    let msgs = raw.query("execute one").await;
    assert!(msgs.iter().any(|m| m.tag == b'D'), "{msgs:?}");
    // The legacy FunctionCall message: no rule names it, so it is refused and
    // the session goes on. (OID 1598 is random(); args: none; result text.)
    let mut call = 1598u32.to_be_bytes().to_vec();
    call.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    raw.send(&message(b'F', &call)).await;
    let msgs = raw.until_ready().await;
    let err = msgs.iter().find(|m| m.tag == b'E').unwrap();
    assert_eq!(err.field(b'C').as_deref(), Some("42501"));
    let msgs = raw.query("select count(*) from w").await;
    assert!(msgs.iter().any(|m| m.tag == b'D'));
    assert_eq!(s.pg.psql_admin_db(APP_DB, "select count(*) from w"), "1");
}

#[tokio::test]
async fn shadow_rules_log_but_let_through_and_reload_needs_no_reconnect() {
    let s = setup();
    let gw = gateway(&s, LocalPolicy::new(s.handle.clone())).await;
    let client = connect(&gw.url("app", &s.issuer.token(&[]))).await.unwrap();
    client
        .batch_execute("create table r (v int)")
        .await
        .unwrap();
    client
        .batch_execute("insert into r values (1)")
        .await
        .unwrap();
    assert!(captured_logs().contains("shadow_rule_matched"));
    assert!(captured_logs().contains("watch-inserts"));

    // The shadow rule is switched on: the same session is blocked at once.
    let path = s.dir.path().join("policy.toml");
    std::fs::write(&path, POLICY.replace("enforce = false", "enforce = true")).unwrap();
    let version = s.handle.reload().unwrap().expect("a new version");
    assert!(version.starts_with("e2e-"));
    let err = client
        .batch_execute("insert into r values (2)")
        .await
        .unwrap_err();
    assert!(db_error(&err).1.contains("watch-inserts"));
    // A broken policy file leaves the last good one in force.
    std::fs::write(&path, "[[rules]]\nid = ").unwrap();
    assert!(s.handle.reload().is_err());
    let err = client
        .batch_execute("insert into r values (3)")
        .await
        .unwrap_err();
    assert!(db_error(&err).1.contains("watch-inserts"));
    let n: i64 = client
        .query_one("select count(*) from r", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

/// A decider that can be made unresponsive, counting what reaches it.
struct Flaky {
    inner: LocalPolicy,
    down: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl Flaky {
    /// A flaky decider over the setup's policy, and its call counter.
    fn new(s: &Setup, down: Arc<AtomicBool>) -> (Flaky, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let inner = LocalPolicy::new(s.handle.clone());
        (
            Flaky {
                inner,
                down,
                calls: calls.clone(),
            },
            calls,
        )
    }
}

impl DecisionPoint for Flaky {
    async fn decide(
        &self,
        event: &StatementEvent<'_>,
        prepared: &BTreeMap<String, String>,
        catalog: &gatehouse_schemas::decision::CatalogFacts,
    ) -> Result<Arc<Decision>, DecisionError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            // Never answers: only the ingress's timeout ends the wait.
            std::future::pending::<()>().await;
        }
        self.inner.decide(event, prepared, catalog).await
    }
    fn epoch(&self) -> u64 {
        self.inner.epoch()
    }
}

#[tokio::test]
async fn a_silent_decider_fails_closed_and_recovery_needs_no_reconnect() {
    let s = setup();
    let down = Arc::new(AtomicBool::new(false));
    let (flaky, calls) = Flaky::new(&s, down.clone());
    let gw = gateway(&s, flaky).await;
    let client = connect(&gw.url("app", &s.issuer.token(&[]))).await.unwrap();
    client
        .batch_execute("create table f (v int)")
        .await
        .unwrap();

    down.store(true, Ordering::SeqCst);
    let asked = calls.load(Ordering::SeqCst);
    let err = client
        .batch_execute("insert into f values (1)")
        .await
        .unwrap_err();
    let (code, message) = db_error(&err);
    assert_eq!(code, "57P03");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        asked + 1,
        "asked, never answered"
    );
    assert!(
        message.contains("policy service is unavailable"),
        "{message}"
    );
    down.store(false, Ordering::SeqCst);
    client
        .batch_execute("insert into f values (2)")
        .await
        .unwrap();
    let v: i32 = client
        .query_one("select v from f", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 2, "the refused insert never ran");
}

#[tokio::test]
async fn cacheable_verdicts_are_reused_until_the_policy_changes() {
    let s = setup();
    let (flaky, calls) = Flaky::new(&s, Arc::new(AtomicBool::new(false)));
    let gw = gateway(&s, flaky).await;
    let client = connect(&gw.url("app", &s.issuer.token(&[]))).await.unwrap();
    client
        .batch_execute("create table c (v int)")
        .await
        .unwrap();
    let before = calls.load(Ordering::SeqCst);
    for i in 0..20 {
        // tokio-postgres sends the same Parse text each time.
        client
            .query("select v from c where v = $1", &[&i])
            .await
            .unwrap();
    }
    assert_eq!(
        calls.load(Ordering::SeqCst) - before,
        1,
        "decided once, then cached"
    );
    // Risky statements are never cached: each is decided.
    for _ in 0..3 {
        let _ = client.simple_query("delete from c").await;
    }
    assert_eq!(calls.load(Ordering::SeqCst) - before, 4);
    // A new policy version empties the cache.
    std::fs::write(
        s.dir.path().join("policy.toml"),
        format!("{POLICY}\n# v2\n"),
    )
    .unwrap();
    s.handle.reload().unwrap().expect("new version");
    client
        .query("select v from c where v = $1", &[&1])
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst) - before, 5);
}

#[tokio::test]
async fn plain_reads_share_a_verdict_across_literals_and_nothing_else_does() {
    let s = setup();
    let (flaky, calls) = Flaky::new(&s, Arc::new(AtomicBool::new(false)));
    let gw = gateway(&s, flaky).await;
    let client = connect(&gw.url("app", &s.issuer.token(&[]))).await.unwrap();
    client
        .batch_execute("create table sc (v int, name text)")
        .await
        .unwrap();
    let count = || calls.load(Ordering::SeqCst);

    let before = count();
    for i in 0..20 {
        client
            .simple_query(&format!(
                "select v from sc where v = {i} and name <> 'n{i}'"
            ))
            .await
            .unwrap();
    }
    assert_eq!(count() - before, 1, "one shape, decided once");

    // Texts whose meaning to the policy depends on a literal are decided every time.
    let before = count();
    for i in 0..3 {
        let _ = client
            .simple_query(&format!("select nextval('seq_{i}')"))
            .await;
        let _ = client
            .simple_query(&format!("delete from sc where {i} = {i}"))
            .await;
        let _ = client
            .simple_query(&format!("explain (analyze {i}) delete from sc where v = 1"))
            .await;
    }
    assert_eq!(count() - before, 9);
    // And the verdicts differ by literal where they must: `where 0 = 1` is bounded,
    // `where 1 = 1` is not.
    client
        .simple_query("delete from sc where 0 = 1")
        .await
        .unwrap();
    let err = client
        .simple_query("delete from sc where 1 = 1")
        .await
        .unwrap_err();
    assert!(db_error(&err).1.contains("unbounded-delete"));
}

/// PostgreSQL logs CREATE TABLE AS, SELECT INTO and materialized views as DDL:
/// under a rule that allows reads and writes and a rule that blocks DDL, they
/// are refused and create nothing (they were once decided as plain writes).
#[tokio::test]
async fn statements_postgresql_calls_ddl_are_refused_by_a_no_ddl_policy() {
    const NO_DDL: &str = r#"
version = "no-ddl"

[[rules]]
id = "etl-dml"
roles = ["app"]
classes = ["read", "write", "transaction"]
verdict = "allow"

[[rules]]
id = "no-ddl"
classes = ["ddl"]
verdict = "block"
reason = "CI jobs change no schema"
"#;
    let pg = Pg::start();
    pg.psql_admin_db(
        APP_DB,
        "create table public.src (id int, v text); alter table public.src owner to app; \
         insert into public.src values (1, 'a'), (2, 'b')",
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), NO_DDL).unwrap();
    let handle = Arc::new(PolicyHandle::load(&dir.path().join("policy.toml")).unwrap());
    let issuer = Issuer::new();
    let config = base_config(&pg, &issuer);
    let gw = start_gateway(&config, LocalPolicy::new(handle)).await;
    let client = connect(&gw.url("app", &issuer.token(&[]))).await.unwrap();

    // What the rules do allow still runs.
    client
        .batch_execute("insert into src select id + 10, v from src; select * from src")
        .await
        .unwrap();
    let made = [
        ("create table copy1 as select * from src", "copy1"),
        ("CREATE UNLOGGED TABLE copy2 AS TABLE src", "copy2"),
        ("select * into copy3 from src", "copy3"),
        (
            "select id, v into temp table copy4 from src where id > 1",
            "copy4",
        ),
        (
            "create materialized view copy5 as select * from src",
            "copy5",
        ),
        (
            "explain analyze create table copy6 as select * from src",
            "copy6",
        ),
    ];
    for (sql, table) in made {
        let err = client.simple_query(sql).await.unwrap_err();
        let (code, message) = db_error(&err);
        assert_eq!(code, "42501", "{sql}: {message}");
        assert!(
            message.contains("CI jobs change no schema"),
            "{sql}: {message}"
        );
        // The same through the extended protocol.
        let err = client.query(sql, &[]).await.unwrap_err();
        assert_eq!(db_error(&err).0, "42501", "{sql} (extended)");
        // Inside a transaction block too; the session stays usable.
        client.batch_execute("begin").await.unwrap();
        let err = client.simple_query(sql).await.unwrap_err();
        assert_eq!(db_error(&err).0, "42501", "{sql} (in a block)");
        client.batch_execute("rollback").await.unwrap();
        let exists = pg.psql_admin_db(
            APP_DB,
            &format!("select count(*) from pg_class where relname = '{table}'"),
        );
        assert_eq!(exists, "0", "{sql} created {table}");
    }
    let rows = client
        .query_one("select count(*) from src", &[])
        .await
        .unwrap();
    assert_eq!(rows.get::<_, i64>(0), 4);
}
