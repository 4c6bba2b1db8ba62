//! The whole protocol through the gateway with tokio-postgres: simple and extended
//! queries, pipelining, COPY both ways, cancel, LISTEN/NOTIFY, and the decision
//! point seeing every runnable SQL text.

mod harness;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, TryStreamExt, future::join_all};
use gatehouse_schemas::ProtocolKind;
use harness::*;

async fn setup() -> (Pg, Issuer, Gw<Recorder>, Recorder) {
    let pg = Pg::start();
    let issuer = Issuer::new();
    let rec = Recorder::default();
    let gw = start_gateway(&base_config(&pg, &issuer), rec.clone()).await;
    (pg, issuer, gw, rec)
}

#[tokio::test]
async fn simple_and_extended_queries_with_parameters() {
    let (_pg, issuer, gw, rec) = setup().await;
    let client = connect(&gw.url("app", &issuer.token(&[]))).await.unwrap();

    let rows = client
        .simple_query("select 1 as one; select 'two'")
        .await
        .unwrap();
    let values: Vec<_> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(values, ["1", "two"]);

    client
        .batch_execute("create table t (id int primary key, name text)")
        .await
        .unwrap();
    let insert = client
        .prepare("insert into t values ($1, $2)")
        .await
        .unwrap();
    for i in 0..5 {
        client
            .execute(&insert, &[&i, &format!("n{i}")])
            .await
            .unwrap();
    }
    let row = client
        .query_one("select count(*), max(name) from t where id >= $1", &[&1i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 4);
    assert_eq!(row.get::<_, String>(1), "n4");
    // Binary results pass through untouched.
    let row = client
        .query_one("select $1::float8 * 2, now() is not null", &[&1.25f64])
        .await
        .unwrap();
    assert_eq!(row.get::<_, f64>(0), 2.5);
    assert!(row.get::<_, bool>(1));

    // Errors come back as the server's, and the session goes on.
    let err = client.query_one("select 1/0", &[]).await.unwrap_err();
    assert_eq!(db_error(&err).0, "22012");
    assert_eq!(
        client
            .query_one("select 7", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        7
    );

    // The decision point saw every SQL text, in order, with who sent it.
    let events = rec.events();
    let sqls: Vec<_> = events
        .iter()
        .map(|e| (e.protocol, e.sql.as_ref()))
        .collect();
    assert_eq!(
        sqls[0],
        (ProtocolKind::SimpleQuery, "select 1 as one; select 'two'")
    );
    assert!(sqls.contains(&(ProtocolKind::Parse, "insert into t values ($1, $2)")));
    assert!(sqls.contains(&(ProtocolKind::Parse, "select 1/0")));
    let session = events[0].session_id;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.session_id, session);
        assert_eq!(e.seq, i as u64 + 1);
        assert_eq!(e.role, "app");
        assert_eq!(e.identity.subject, "repo:acme/app:ref:refs/heads/main");
        assert_eq!(e.identity.claims["run_id"], "4242");
        assert_eq!(e.identity.issuer, ISSUER);
    }
    // Prepared once, executed five times: one Parse event.
    assert_eq!(
        sqls.iter()
            .filter(|(_, s)| *s == "insert into t values ($1, $2)")
            .count(),
        1
    );
}

#[tokio::test]
async fn pipelined_queries_keep_their_order() {
    let (_pg, issuer, gw, rec) = setup().await;
    let client = connect(&gw.url("app", &issuer.token(&[]))).await.unwrap();
    // tokio-postgres pipelines concurrent queries on one connection.
    let futures = (0..50).map(|i| {
        let client = &client;
        async move {
            let row = client
                .query_one(&format!("select {i}::int, pg_backend_pid()"), &[])
                .await
                .unwrap();
            (row.get::<_, i32>(0), row.get::<_, i32>(1))
        }
    });
    let results = join_all(futures).await;
    for (i, (v, _)) in results.iter().enumerate() {
        assert_eq!(*v, i as i32);
    }
    // All on one upstream backend.
    assert!(results.windows(2).all(|w| w[0].1 == w[1].1));
    let parses = rec
        .events()
        .iter()
        .filter(|e| e.protocol == ProtocolKind::Parse)
        .count();
    assert_eq!(parses, 50);
}

#[tokio::test]
async fn copy_in_and_out() {
    let (_pg, issuer, gw, _rec) = setup().await;
    let client = connect(&gw.url("app", &issuer.token(&[]))).await.unwrap();
    client
        .batch_execute("create table c (id int, note text)")
        .await
        .unwrap();
    let sink = client.copy_in("copy c from stdin").await.unwrap();
    futures_util::pin_mut!(sink);
    let mut payload = String::new();
    for i in 0..10_000 {
        payload.push_str(&format!("{i}\tnote {i}\n"));
    }
    for chunk in payload.as_bytes().chunks(7_000) {
        sink.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 10_000);

    let stream = client
        .copy_out("copy (select * from c order by id) to stdout")
        .await
        .unwrap();
    let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
    let out: Vec<u8> = chunks.concat();
    assert_eq!(String::from_utf8(out).unwrap(), payload);

    // A failed COPY leaves the session usable.
    let sink = client
        .copy_in::<_, Bytes>("copy c from stdin")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"not-a-number\tx\n"))
        .await
        .unwrap();
    let err = sink.finish().await.unwrap_err();
    assert_eq!(db_error(&err).0, "22P02");
    let n: i64 = client
        .query_one("select count(*) from c", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 10_000);
}

#[tokio::test]
async fn cancel_reaches_the_upstream_backend() {
    let (pg, issuer, gw, _rec) = setup().await;
    let client = connect(&gw.url("app", &issuer.token(&[]))).await.unwrap();
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move {
        let r = client.simple_query("select pg_sleep(30)").await;
        (r, client)
    });
    // Wait until the upstream backend is really sleeping, then cancel.
    pg.wait_active("select pg_sleep(30)").await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (result, client) = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(db_error(&result.unwrap_err()).0, "57014");
    // The session survives a cancel.
    assert_eq!(
        client
            .query_one("select 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
}

#[tokio::test]
async fn cancel_needs_the_sessions_own_secret() {
    let (pg, issuer, gw, _rec) = setup().await;
    let mut raw = Raw::login(gw.addr, "app", &issuer.token(&[])).await;
    let (pid, secret) = raw.key.unwrap();
    raw.send(&message(b'Q', b"select pg_sleep(20)\0")).await;
    pg.wait_active("select pg_sleep(20)").await;
    let upstream_pid: i32 = pg
        .psql_admin("select pid from pg_stat_activity where query = 'select pg_sleep(20)'")
        .parse()
        .unwrap();
    // Wrong secret for our pid, and the upstream's own pid: both ignored.
    for (p, s) in [(pid, secret.wrapping_add(1)), (upstream_pid, secret)] {
        let mut c = Raw::open(gw.addr).await;
        c.send(&cancel_message(p, s)).await;
        assert!(
            c.closed().await,
            "the gateway closes without an answer, as PostgreSQL does"
        );
    }
    // The statement is still running: nobody cancelled it.
    assert_eq!(pg.active("select pg_sleep(20)"), 1);
    // The right key cancels it.
    let mut c = Raw::open(gw.addr).await;
    c.send(&cancel_message(pid, secret)).await;
    assert!(c.closed().await);
    let msgs = tokio::time::timeout(Duration::from_secs(10), raw.until_ready())
        .await
        .unwrap();
    let err = msgs.iter().find(|m| m.tag == b'E').expect("error");
    assert_eq!(err.field(b'C').as_deref(), Some("57014"));
}

#[tokio::test]
async fn listen_notify_and_notices_reach_the_client() {
    let (_pg, issuer, gw, _rec) = setup().await;
    let url = gw.url("app", &issuer.token(&[]));
    let (listener, mut conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(msg)) = stream.next().await {
            let _ = tx.send(msg);
        }
    });
    listener.batch_execute("listen jobs").await.unwrap();
    listener
        .batch_execute("do $$ begin raise notice 'hello from %', 'plpgsql'; end $$")
        .await
        .unwrap();

    let notifier = connect(&url).await.unwrap();
    notifier
        .batch_execute("notify jobs, 'payload-1'")
        .await
        .unwrap();

    let mut saw_notice = false;
    let mut saw_notification = false;
    while !(saw_notice && saw_notification) {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap()
        {
            tokio_postgres::AsyncMessage::Notice(n) => {
                assert_eq!(n.message(), "hello from plpgsql");
                saw_notice = true;
            }
            tokio_postgres::AsyncMessage::Notification(n) => {
                assert_eq!((n.channel(), n.payload()), ("jobs", "payload-1"));
                saw_notification = true;
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn parameter_status_and_transactions_pass_through() {
    let (_pg, issuer, gw, _rec) = setup().await;
    let mut client = connect(&gw.url("app", &issuer.token(&[]))).await.unwrap();
    client
        .batch_execute("create table tx (v int)")
        .await
        .unwrap();
    {
        let tx = client.transaction().await.unwrap();
        tx.execute("insert into tx values (1)", &[]).await.unwrap();
        tx.rollback().await.unwrap();
    }
    {
        let tx = client.transaction().await.unwrap();
        tx.execute("insert into tx values (2)", &[]).await.unwrap();
        let err = tx
            .execute("insert into tx values ('x')", &[])
            .await
            .unwrap_err();
        assert_eq!(db_error(&err).0, "22P02");
        // The failed transaction refuses further statements until rollback.
        let err = tx
            .execute("insert into tx values (3)", &[])
            .await
            .unwrap_err();
        assert_eq!(db_error(&err).0, "25P02");
    }
    let n: i64 = client
        .query_one("select count(*) from tx", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // SET reports the new value; tokio-postgres would fail to decode timestamps
    // if DateStyle/TimeZone reports went missing.
    client
        .batch_execute("set timezone = 'Asia/Tokyo'")
        .await
        .unwrap();
    let tz: String = client.query_one("show timezone", &[]).await.unwrap().get(0);
    assert_eq!(tz, "Asia/Tokyo");
}
