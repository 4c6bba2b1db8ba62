//! Functions through the real gateway and PostgreSQL: a function not built
//! into PostgreSQL (called from a SELECT's list or FROM, hidden behind an
//! operator or a domain's cast, or behind a STABLE function) runs only when a
//! rule names it; the built-ins that run SQL text or read a relation named at
//! run time are refused to a masked caller; the same holds over NATS; and a
//! statement that calls no function never touches the catalog.

mod harness;

use std::sync::Arc;

use gatehouse_decider::PolicyHandle;
use gatehouse_ingress::decision::LocalPolicy;
use gatehouse_ingress::masking::catalog::CATALOG_APPLICATION_NAME;
use harness::nats::*;
use harness::*;
use serde_json::json;

/// The ETL job reads and changes rows of `etl`, and nothing else: no DDL, no
/// risk feature. Jobs whose token says `job = "purge"` may also run
/// `etl.purge`; everyone may run the trusted `etl.tally_*` functions.
const POLICY: &str = r#"
version = "functions-e2e"
trusted_functions = ["etl.tally_*"]

[[rules]]
id = "etl-rows"
roles = ["app"]
classes = ["read", "write", "transaction"]
objects = ["etl.*", "pg_catalog.*"]
verdict = "allow"

[[rules]]
id = "etl-purge"
roles = ["app"]
claims = { job = "purge" }
classes = ["read"]
functions = ["etl.purge"]
verdict = "allow"

[[rules]]
id = "no-schema-changes"
classes = ["ddl", "dcl", "admin"]
verdict = "block"
reason = "schema changes go through migrations"

[[rules]]
id = "no-risks"
risks = ["update_without_where", "delete_without_where", "truncate", "drop", "drop_cascade",
         "alter_type", "role_change", "privilege_change", "side_effect_function",
         "data_modifying_cte", "search_path_change", "client_encoding_change"]
verdict = "block"
reason = "risky statements are not for CI"
"#;

/// Rows of `etl.items`, and functions that delete them: called directly,
/// unqualified (`public.wipe`), behind a STABLE function, an operator and a
/// domain's CHECK; and a harmless one the policy trusts.
fn setup_db(pg: &Pg) {
    pg.psql_admin_db(
        APP_DB,
        "set role app; \
         create schema etl; \
         create table etl.items (id int primary key); \
         insert into etl.items select generate_series(1, 5); \
         create function etl.purge() returns bigint language sql as \
           $$ with d as (delete from etl.items returning 1) select count(*) from d $$; \
         create function public.wipe() returns bigint language sql as \
           $$ with d as (delete from etl.items returning 1) select count(*) from d $$; \
         create function etl.stable_purge() returns bigint stable language plpgsql as \
           $$ begin return etl.purge(); end $$; \
         create function etl.stable_delete() returns int stable language plpgsql as \
           $$ begin delete from etl.items; return 1; end $$; \
         create function etl.evil_eq(int, int) returns bool language plpgsql as \
           $$ begin delete from etl.items; return $1 = $2; end $$; \
         create operator etl.#=# (leftarg = int, rightarg = int, function = etl.evil_eq); \
         create function etl.evil_check(int) returns bool language plpgsql as \
           $$ begin delete from etl.items; return true; end $$; \
         create domain etl.checked as int check (etl.evil_check(value)); \
         create function etl.tally_items() returns bigint stable language sql as \
           $$ select count(*) from etl.items $$",
    );
}

fn count(pg: &Pg) -> String {
    pg.psql_admin_db(APP_DB, "select count(*) from etl.items")
}

fn refused_naming(sql: &str, err: &tokio_postgres::Error, function: &str) {
    let (code, message) = db_error(err);
    assert_eq!(code, "42501", "{sql}: {message}");
    assert!(
        message.contains(function) && message.contains("not built into PostgreSQL"),
        "{sql}: {message}"
    );
}

async fn local_gateway(
    pg: &Pg,
    issuer: &Issuer,
    policy: &str,
) -> (Gw<LocalPolicy>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
    let point = LocalPolicy::new(Arc::new(
        PolicyHandle::load(&dir.path().join("policy.toml")).unwrap(),
    ));
    (start_gateway(&base_config(pg, issuer), point).await, dir)
}

/// The attack of issue 17: a rule lets the ETL job read and change rows of
/// one schema, blocks DDL and every risk; a function that deletes rows,
/// called from a SELECT, is refused (42501, naming it) and the rows stay;
/// a rule naming it lets it run.
#[tokio::test]
async fn user_functions_with_effects_run_only_when_a_rule_names_them() {
    let pg = Pg::start();
    setup_db(&pg);
    let issuer = Issuer::new();
    let (gw, _dir) = local_gateway(&pg, &issuer, POLICY).await;
    let client = connect(&gw.url("app", &issuer.token(&[]))).await.unwrap();

    for (sql, function) in [
        ("select etl.purge()", "etl.purge"),
        ("select * from etl.purge()", "etl.purge"),
        ("select n from etl.purge() as n where n > 0", "etl.purge"),
        ("select id, etl.purge() from etl.items", "etl.purge"),
        // Unqualified: the catalog says which function the name may run.
        ("select wipe()", "public.wipe"),
        // STABLE is a promise, not a fence: this one calls a volatile one.
        ("select etl.stable_purge()", "etl.stable_purge"),
        // Behind an operator and a domain's constraint.
        ("select 1 operator(etl.#=#) 1", "etl.evil_eq"),
        ("select 1::etl.checked", "etl.evil_check"),
    ] {
        let err = client.simple_query(sql).await.unwrap_err();
        refused_naming(sql, &err, function);
        assert_eq!(count(&pg), "5", "{sql} ran");
    }
    // The extended protocol: refused at Parse.
    let err = client.prepare("select etl.purge()").await.unwrap_err();
    refused_naming("prepare", &err, "etl.purge");
    assert_eq!(count(&pg), "5");

    // The session goes on; built-in functions and the trusted one run.
    let rows = client
        .query(
            "select count(*), max(id)::text, etl.tally_items() from etl.items",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 5);
    assert_eq!(rows[0].get::<_, i64>(2), 5);

    // A job the naming rule is about runs it.
    let purger = connect(&gw.url("app", &issuer.token(&[("job", json!("purge"))])))
        .await
        .unwrap();
    let rows = purger.query("select etl.purge()", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 5);
    assert_eq!(count(&pg), "0");
}

/// What PostgreSQL itself enforces of a volatility marker: a STABLE function
/// may not write directly, but may call a volatile function that does; the
/// gateway therefore treats every function not built in alike, whatever its
/// marker.
#[tokio::test]
async fn volatility_markers_do_not_stop_writes_and_are_not_trusted() {
    let pg = Pg::start();
    setup_db(&pg);
    let direct = connect(&pg.direct_url(APP_USER, APP_PASSWORD))
        .await
        .unwrap();
    let err = direct
        .simple_query("select etl.stable_delete()")
        .await
        .unwrap_err();
    assert!(
        db_error(&err)
            .1
            .contains("not allowed in a non-volatile function"),
        "{err:?}"
    );
    assert_eq!(count(&pg), "5");
    direct
        .simple_query("select etl.stable_purge()")
        .await
        .unwrap();
    assert_eq!(
        count(&pg),
        "0",
        "the STABLE function's callee deleted the rows"
    );
    // Even a plain EXPLAIN runs it: the planner evaluates a STABLE function
    // to estimate a condition's selectivity.
    pg.psql_admin_db(APP_DB, "insert into etl.items select generate_series(1, 5)");
    direct
        .simple_query("explain select * from etl.items where id = etl.stable_purge()")
        .await
        .unwrap();
    assert_eq!(count(&pg), "0", "planning ran the STABLE function");

    pg.psql_admin_db(APP_DB, "insert into etl.items select generate_series(1, 5)");
    let issuer = Issuer::new();
    let (gw, _dir) = local_gateway(&pg, &issuer, POLICY).await;
    let client = connect(&gw.url("app", &issuer.token(&[]))).await.unwrap();
    for (sql, function) in [
        ("select etl.stable_purge()", "etl.stable_purge"),
        ("select etl.stable_delete()", "etl.stable_delete"),
        (
            "explain select * from etl.items where id = etl.stable_purge()",
            "etl.stable_purge",
        ),
    ] {
        let err = client.simple_query(sql).await.unwrap_err();
        refused_naming(sql, &err, function);
    }
    assert_eq!(count(&pg), "5");
}

/// A function created through the gateway is seen by the next statement (the
/// DDL empties the catalog cache), and a statement that calls no function
/// never opens the catalog connection: pgbench's read-only and TPC-B-like
/// statements stay on the fast path.
#[tokio::test]
async fn only_statements_that_call_functions_look_them_up() {
    let pg = Pg::start();
    setup_db(&pg);
    let issuer = Issuer::new();
    let policy = POLICY
        .replace(
            "classes = [\"ddl\", \"dcl\", \"admin\"]",
            "classes = [\"dcl\", \"admin\"]",
        )
        .replace(
            "classes = [\"read\", \"write\", \"transaction\"]",
            "classes = [\"read\", \"write\", \"transaction\", \"ddl\"]",
        );
    let (gw, _dir) = local_gateway(&pg, &issuer, &policy).await;
    let client = connect(&gw.url("app", &issuer.token(&[]))).await.unwrap();
    let catalog_connections = || {
        pg.psql_admin(&format!(
            "select count(*) from pg_stat_activity where application_name = '{CATALOG_APPLICATION_NAME}'"
        ))
    };
    client
        .batch_execute(
            "create table etl.accounts (aid int primary key, abalance int); \
             create table etl.history (aid int, delta int, mtime timestamp); \
             insert into etl.accounts values (1, 0), (2, 0)",
        )
        .await
        .unwrap();
    let select = client
        .prepare("select abalance from etl.accounts where aid = $1")
        .await
        .unwrap();
    for aid in [1i32, 2, 1] {
        client.query(&select, &[&aid]).await.unwrap();
        client
            .simple_query(&format!(
                "select abalance from etl.accounts where aid = {aid}"
            ))
            .await
            .unwrap();
        client
            .batch_execute(&format!(
                "begin; update etl.accounts set abalance = abalance + 1 where aid = {aid}; \
                 insert into etl.history values ({aid}, 1, current_timestamp); end"
            ))
            .await
            .unwrap();
    }
    assert_eq!(
        catalog_connections(),
        "0",
        "no statement above calls a function"
    );

    // A function call: looked up, on the catalog's own connection.
    client.simple_query("select lower('X')").await.unwrap();
    assert_eq!(catalog_connections(), "1");

    // Created through the gateway, known at once: the text that found no
    // function is refused after the DDL.
    let sql = "select etl.later()";
    let err = client.simple_query(sql).await.unwrap_err();
    assert_eq!(db_error(&err).0, "42883", "{err:?}");
    client
        .simple_query("create function etl.later() returns int language sql as $$ select 1 $$")
        .await
        .unwrap();
    let err = client.simple_query(sql).await.unwrap_err();
    refused_naming(sql, &err, "etl.later");
}

const MASK_POLICY: &str = r#"
version = "functions-mask-e2e"

[[rules]]
id = "clinic-reads"
roles = ["app"]
classes = ["read", "transaction", "cursor"]
objects = ["clinic.*", "pg_catalog.*"]
functions = ["query_to_xml*", "table_to_xml*", "schema_to_xml*", "database_to_xml*", "cursor_to_xml*", "ts_stat"]
verdict = "allow"

[[rules]]
id = "mask-ssn"
roles = ["app"]
verdict = "mask"

[[rules.mask]]
column = "clinic.patients.ssn"
method = "partial"
keep_last = 4
"#;

const SSN: &str = "123-45-6789";

/// Built-ins that run SQL text, read a table or schema named by a string, or
/// fetch from a cursor return what masking cannot follow: refused to a masked
/// caller even when a rule names them, and no raw value reaches the client,
/// the evidence or the logs.
#[tokio::test]
async fn built_ins_that_run_sql_text_are_refused_to_masked_callers() {
    let pg = Pg::start();
    pg.psql_admin_db(
        APP_DB,
        &format!(
            "set role app; create schema clinic; \
             create table clinic.patients (id int primary key, ssn text); \
             insert into clinic.patients values (1, '{SSN}')"
        ),
    );
    let issuer = Issuer::new();
    let (mut gw, _dir) = local_gateway(&pg, &issuer, MASK_POLICY).await;
    let client = connect(&gw.url("app", &issuer.token(&[]))).await.unwrap();
    let mut received = String::new();
    // Masked as a column, for a start.
    for m in client
        .simple_query("select ssn from clinic.patients")
        .await
        .unwrap()
    {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            received.push_str(r.get(0).unwrap_or_default());
        }
    }
    assert_eq!(received, "***-**-6789");
    for sql in [
        "select query_to_xml('select ssn from clinic.patients', true, false, '')",
        "select query_to_xml_and_xmlschema('select ssn from clinic.patients', true, false, '')",
        "select table_to_xml('clinic.patients', true, false, '')",
        "select schema_to_xml('clinic', true, false, '')",
        "select * from ts_stat('select to_tsvector(''simple'', ssn) from clinic.patients')",
        // A whole-database dump is `admin` too, which no rule here allows.
        "select database_to_xml(true, false, '')",
    ] {
        let err = client.simple_query(sql).await.unwrap_err();
        let (code, message) = db_error(&err);
        assert_eq!(code, "42501", "{sql}: {message}");
        assert!(
            (message.contains("masking could not be guaranteed")
                && message.contains("reads relations chosen at run time"))
                || sql.contains("database_to_xml"),
            "{sql}: {message}"
        );
        received.push_str(&message);
    }
    // A cursor the caller declared is masked when fetched, but not when a
    // built-in fetches from it.
    client
        .batch_execute("begin; declare c cursor for select ssn from clinic.patients")
        .await
        .unwrap();
    let err = client
        .simple_query("select cursor_to_xml('c', 10, false, false, '')")
        .await
        .unwrap_err();
    assert_eq!(db_error(&err).0, "42501");
    received.push_str(&db_error(&err).1);
    client.batch_execute("rollback").await.unwrap();
    assert!(
        !received.contains(SSN) && !received.contains("123-45"),
        "{received}"
    );

    let ev = gw.evidence.take().unwrap();
    let mut evidence = String::new();
    for (_, p) in gatehouse_ingress::evidence::spool_files(&ev.dir.path().join("spool")).unwrap() {
        evidence.push_str(&String::from_utf8_lossy(&std::fs::read(p).unwrap()));
    }
    gw.shutdown().await;
    assert!(evidence.contains("query_to_xml"), "evidence was read");
    assert!(!evidence.contains(SSN), "raw value in evidence");
    let logs: String = captured_logs()
        .lines()
        .filter(|l| l.contains(" gatehouse"))
        .collect();
    assert!(!logs.contains(SSN), "raw value in the logs");
}

/// Distributed mode: the ingress looks the names up, the decider (a
/// `gatehouse serve --role decider` process over NATS) decides with the
/// catalog's answer.
#[tokio::test]
async fn distributed_mode_resolves_functions_at_the_ingress_and_decides_at_the_decider() {
    let pg = Pg::start();
    setup_db(&pg);
    let issuer = Issuer::new();
    let nats = Nats::start();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let bus = nats.client().await;
    let mut heard = Announcements::subscribe(&bus).await;
    let _decider = DeciderProcess::spawn(&nats, dir.path(), &policy);
    heard
        .wait_for(|a| a.version.starts_with("functions-e2e"))
        .await;
    let config = format!(
        "{}\n[nats]\nurl = \"{}\"\n",
        base_config(&pg, &issuer),
        nats.url()
    );
    let cfg = gatehouse_ingress::config::Config::from_toml(&config).unwrap();
    let point = gatehouse_ingress::remote::NatsDecisionPoint::connect(&cfg.nats)
        .await
        .unwrap();
    let gw = start_gateway(&config, point).await;
    let client = connect(&gw.url("app", &issuer.token(&[]))).await.unwrap();
    // The decider's first answer takes `wipe` for a built-in; the ingress's
    // look-up says otherwise and asks again.
    for (sql, function) in [
        ("select wipe()", "public.wipe"),
        ("select etl.purge()", "etl.purge"),
    ] {
        let err = client.simple_query(sql).await.unwrap_err();
        refused_naming(sql, &err, function);
    }
    assert_eq!(count(&pg), "5");
    let purger = connect(&gw.url("app", &issuer.token(&[("job", json!("purge"))])))
        .await
        .unwrap();
    purger.simple_query("select etl.purge()").await.unwrap();
    assert_eq!(count(&pg), "0");
}
