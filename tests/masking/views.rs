//! Views masked like their tables, and what a masked caller may not call.

use super::*;

/// [`POLICY`] with the upstream role's search_path, and DDL allowed in the
/// clinic's schemas (so that views are redefined through the gateway).
fn views_policy() -> String {
    format!(
        r#"search_path = ["clinic", "public"]
{POLICY}
[[rules]]
id = "app-ddl"
roles = ["app"]
classes = ["ddl"]
objects = ["clinic.*", "other.*"]
verdict = "allow"
"#
    )
}

/// Views read a masked table's values as the table does: derived values, whole
/// rows and rows of a view, of a view over a view and of a materialized view
/// are masked, and filtering or ordering on a view's masked column is refused,
/// in the simple and the extended protocol; a write through a view is recorded
/// like one into the table; a view redefined through the gateway is seen at
/// once; a name two schemas' views share is refused.
#[tokio::test]
async fn views_are_masked_like_their_tables() {
    let Setup {
        _pg,
        issuer,
        gw,
        _dir,
    } = setup_with(&views_policy()).await;
    _pg.psql_admin_db(
        APP_DB,
        "create schema other authorization app; \
         alter role app set search_path = clinic, public; \
         set role app; \
         create view clinic.v as select id, name, ssn from clinic.patients; \
         create view clinic.v2 as select id, ssn from clinic.v; \
         create materialized view clinic.mv as select id, ssn, upper(ssn) as u from clinic.patients; \
         create view clinic.dup as select id, ssn from clinic.patients; \
         create view other.dup as select 1 as id, 'x'::text as ssn",
    );
    // Values written through the gateway.
    const SSN_VIEW: &str = "555-30-0030";
    const SSN_CMP: &str = "555-31-0031";
    let token = issuer.token(&[]);
    let client = connect(&gw.url("app", &token)).await.unwrap();

    // Simple protocol: derived values, through one and two views.
    for (sql, want) in [
        (
            "select id, upper(ssn) from v order by id",
            Some("***-**-6789"),
        ),
        (
            "select id, ssn || '' from v2 order by id",
            Some("***-**-6789"),
        ),
        (
            "select id, lower(s) from (select id, ssn s from v2) x order by id",
            Some("***-**-6789"),
        ),
        ("select id, row_to_json(v) from v order by id", None),
        ("select id, v2::text from v2 order by id", None),
        ("select * from mv order by id", Some("***-**-6789")),
        (
            "select id, u || '' from mv order by id",
            Some("***-**-6789"),
        ),
        ("select * from v order by id", Some("***-**-6789")),
    ] {
        let rows = simple_text(
            &client
                .simple_query(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}")),
        );
        assert_eq!(rows.len(), 3, "{sql}: {rows:?}");
        if let Some(want) = want {
            assert!(
                rows[0].iter().any(|v| v.as_deref() == Some(want)),
                "{sql}: {rows:?}"
            );
        }
        assert_clean(sql, &format!("{rows:?}"));
    }
    // Predicates and copies through views are refused.
    for sql in [
        "select id from v where ssn like '123%'".to_owned(),
        "select id from v order by ssn".to_owned(),
        "select id from v2 where ssn like '9%'".to_owned(),
        "select count(*) from mv group by substr(ssn, 1, 3)".to_owned(),
        format!("select id from v2 where ssn = '{SSN_CMP}'"),
        "insert into clinic.visits (id, summary) select id, ssn from v".to_owned(),
    ] {
        let err = client.simple_query(&sql).await.unwrap_err();
        let (code, message) = db_error(&err);
        assert_eq!(code, "42501", "{sql}: {message}");
        assert!(
            message.contains("masking could not be guaranteed"),
            "{sql}: {message}"
        );
    }

    // Extended protocol (binary results), a prepared statement executed
    // several times.
    let stmt = client
        .prepare("select upper(ssn), ssn || '', row_to_json(v)::text from v where id = $1")
        .await
        .unwrap();
    for id in [1i32, 2, 1] {
        let row = client.query_one(&stmt, &[&id]).await.unwrap();
        let (a, b, c): (Option<String>, Option<String>, Option<String>) =
            (row.get(0), row.get(1), row.get(2));
        assert!(a.as_deref().unwrap().starts_with("***-**-"), "{a:?}");
        assert_clean("extended view rows", &format!("{a:?} {b:?} {c:?}"));
    }
    let rows = client
        .query("select id, ssn || '' from v2 order by id", &[])
        .await
        .unwrap();
    let got: Vec<Option<String>> = rows.iter().map(|r| r.get(1)).collect();
    assert_eq!(got[0].as_deref(), Some("***-**-6789"));
    assert_clean("extended v2 rows", &format!("{got:?}"));
    let err = client
        .query("select id from v where ssn like $1", &[&"123%"])
        .await
        .unwrap_err();
    assert_eq!(db_error(&err).0, "42501");

    // A write through a view: its value is masked in evidence like one
    // written into the table.
    client
        .simple_query(&format!(
            "insert into v (id, name, ssn) values (30, 'n30', '{SSN_VIEW}')"
        ))
        .await
        .unwrap();

    // One name, views in two schemas: which one the session means is not
    // known to the gateway.
    let err = client
        .simple_query("select ssn from dup")
        .await
        .unwrap_err();
    let (code, message) = db_error(&err);
    assert_eq!(code, "42501", "{message}");
    assert!(
        message.contains("clinic.dup") && message.contains("other.dup"),
        "{message}"
    );
    let rows = simple_text(
        &client
            .simple_query("select upper(ssn) from clinic.dup where id = 1")
            .await
            .unwrap(),
    );
    assert_eq!(rows[0][0].as_deref(), Some("***-**-6789"));
    let rows = simple_text(
        &client
            .simple_query("select upper(ssn) from other.dup")
            .await
            .unwrap(),
    );
    assert_eq!(rows[0][0].as_deref(), Some("X"));

    // A view redefined through the gateway: the next statement sees it,
    // though its verdict was cached.
    client
        .simple_query("create view clinic.v3 as select id, name as ssn from clinic.patients")
        .await
        .unwrap();
    for _ in 0..2 {
        let rows = simple_text(
            &client
                .simple_query("select upper(ssn) from v3 where id = 1")
                .await
                .unwrap(),
        );
        assert_eq!(
            rows[0][0].as_deref(),
            Some("ANN"),
            "not a masked column yet"
        );
    }
    client
        .simple_query("create or replace view clinic.v3 as select id, ssn from clinic.patients")
        .await
        .unwrap();
    let rows = simple_text(
        &client
            .simple_query("select upper(ssn) from v3 where id = 1")
            .await
            .unwrap(),
    );
    assert_eq!(rows[0][0].as_deref(), Some("***-**-6789"));
    let row = client
        .query_one("select upper(ssn) from v3 where id = 2", &[])
        .await
        .unwrap();
    let v: String = row.get(0);
    assert_eq!(v, "***-**-4321");

    // An exempt caller reads through the views unmasked, with no look-up.
    let exempt = issuer.token(&[("groups", serde_json::json!(["phi-readers"]))]);
    let c2 = connect(&gw.url("app", &exempt)).await.unwrap();
    let rows = simple_text(
        &c2.simple_query("select upper(ssn) from v2 where id = 1")
            .await
            .unwrap(),
    );
    assert_eq!(rows[0][0].as_deref(), Some(SSN1));
    let rows = simple_text(
        &c2.simple_query("select ssn from v where id = 30")
            .await
            .unwrap(),
    );
    assert_eq!(rows[0][0].as_deref(), Some(SSN_VIEW), "the write arrived");
    drop(c2);
    drop(client);

    let evidence = evidence_text(gw).await;
    assert!(evidence.contains("from v2"), "evidence was read");
    assert!(
        evidence.contains("'***-**-0030'"),
        "the written value, masked"
    );
    let logs = gatehouse_logs();
    for (what, text) in [("evidence", &evidence), ("logs", &logs)] {
        assert_clean(what, text);
        for raw in [SSN_VIEW, SSN_CMP] {
            assert!(!text.contains(raw), "{raw} reached the {what}");
        }
    }
}

/// Functions masking cannot see into, and places that show column values
/// outside any output column, are refused to a masked caller (42501) before
/// anything runs: a function not built into PostgreSQL (given a masked value,
/// reading the masked table itself, in FROM, or shadowing a built-in's name;
/// one created through the gateway is seen at once), a masked value passed to
/// a function with effects beyond the statement (a setting read back later, a
/// notification), and the planner's statistics and other sessions'
/// statements. Built-in functions of masked values stay masked, and an exempt
/// caller reads statistics unhindered.
#[tokio::test]
async fn functions_effects_and_statistics_are_refused_to_masked_callers() {
    let policy = views_policy().replacen(
        "objects = [\"clinic.*\", \"pg_catalog.*\"]\nverdict = \"allow\"",
        "objects = [\"clinic.*\", \"pg_catalog.*\"]\nrisks = [\"side_effect_function\"]\nverdict = \"allow\"",
        1,
    );
    assert!(policy.contains("side_effect_function"));
    let s = setup_with(&policy).await;
    s._pg.psql_admin_db(
        APP_DB,
        "set role app; \
         create table clinic.sink (v text); \
         create function clinic.leak(t text) returns int language sql as \
           $$ insert into clinic.sink values (t); select 1 $$; \
         create function clinic.reveal() returns text language sql as \
           $$ select ssn from clinic.patients where id = 1 $$; \
         reset role; \
         create function public.initcap(t text) returns text language sql as $$ select t $$; \
         analyze clinic.patients",
    );
    let token = s.issuer.token(&[]);
    let client = connect(&s.gw.url("app", &token)).await.unwrap();
    let mut received = String::new();

    // Built-in functions of masked values are masked, not refused.
    let rows = simple_text(
        &client
            .simple_query("select id, upper(ssn) from clinic.patients order by id")
            .await
            .unwrap(),
    );
    assert_eq!(rows[0][1].as_deref(), Some("***-**-6789"), "{rows:?}");
    received.push_str(&format!("{rows:?}"));

    let refused = |sql: &str, e: &tokio_postgres::Error, why: &str| {
        let (code, message) = db_error(e);
        assert_eq!(code, "42501", "{sql}: {message}");
        assert!(
            message.contains("masking could not be guaranteed") && message.contains(why),
            "{sql}: {message}"
        );
        message
    };
    for (sql, why) in [
        (
            "select clinic.leak(ssn) from clinic.patients",
            "clinic.leak, which may be clinic.leak, not built into PostgreSQL",
        ),
        ("select clinic.reveal()", "clinic.reveal"),
        ("select * from clinic.reveal()", "clinic.reveal"),
        (
            "select id, initcap(ssn) from clinic.patients",
            "may be public.initcap",
        ),
        (
            "select set_config('app.x', ssn, false) from clinic.patients where id = 1",
            "effects beyond its result",
        ),
        (
            "select pg_notify('ch', ssn) from clinic.patients",
            "effects beyond its result",
        ),
        (
            "select most_common_vals::text from pg_stats where tablename = 'patients'",
            "pg_stats",
        ),
        (
            "select query from pg_catalog.pg_stat_activity",
            "pg_stat_activity",
        ),
    ] {
        let err = client.simple_query(sql).await.unwrap_err();
        received.push_str(&refused(sql, &err, why));
    }
    // The extended protocol: refused at Parse.
    let err = client.prepare("select clinic.reveal()").await.unwrap_err();
    received.push_str(&refused("prepared reveal", &err, "clinic.reveal"));
    let err = client
        .query(
            "select clinic.leak(ssn) from clinic.patients where id = $1",
            &[&1i32],
        )
        .await
        .unwrap_err();
    received.push_str(&refused("extended leak", &err, "clinic.leak"));

    // None of it ran: nothing reached the sink or the setting, and the session
    // goes on.
    let rows = simple_text(
        &client
            .simple_query("select current_setting('app.x', true)")
            .await
            .unwrap(),
    );
    assert!(rows[0][0].as_deref().unwrap_or("").is_empty(), "{rows:?}");
    assert_eq!(
        s._pg
            .psql_admin_db(APP_DB, "select count(*) from clinic.sink")
            .trim(),
        "0"
    );

    // A function created through the gateway is known at once: the same text
    // that found no function of that name is refused after the DDL.
    let sql = "select id, clinic.later(ssn) from clinic.patients";
    let err = client.simple_query(sql).await.unwrap_err();
    assert_eq!(db_error(&err).0, "42883", "{err:?}");
    client
        .simple_query(
            "create function clinic.later(t text) returns text language sql as $$ select t $$",
        )
        .await
        .unwrap();
    let err = client.simple_query(sql).await.unwrap_err();
    received.push_str(&refused(sql, &err, "clinic.later"));

    // An exempt caller reads the statistics (which do hold the raw values).
    let exempt = s
        .issuer
        .token(&[("groups", serde_json::json!(["phi-readers"]))]);
    let other = connect(&s.gw.url("app", &exempt)).await.unwrap();
    let rows = simple_text(
        &other
            .simple_query(
                "select most_common_vals::text from pg_stats \
                 where schemaname = 'clinic' and tablename = 'patients' and attname = 'card_number'",
            )
            .await
            .unwrap(),
    );
    assert!(
        rows.iter().flatten().flatten().any(|v| v.contains(CARD)),
        "the statistics hold the value masking keeps from masked callers: {rows:?}"
    );
    drop(other);

    assert_clean("what the masked client received", &received);
    drop(client);
    assert_evidence_and_logs_clean(s).await;
}
