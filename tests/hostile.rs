//! Hostile and malformed input: each gets a clear error or a dropped connection,
//! and never affects another session.

mod harness;

use std::time::{Duration, Instant};

use harness::*;

async fn setup(extra: &str) -> (Pg, Issuer, Gw<AllowAll>) {
    let pg = Pg::start();
    let issuer = Issuer::new();
    let config = base_config(&pg, &issuer).replace(
        "auth_timeout = \"5s\"",
        &format!("auth_timeout = \"1s\"\nmax_message_size = 1048576\n{extra}"),
    );
    let gw = start_gateway(&config, AllowAll).await;
    (pg, issuer, gw)
}

fn fatal_code(msgs: &[Msg]) -> Option<String> {
    msgs.iter().find(|m| m.tag == b'E').and_then(|m| {
        assert_eq!(m.field(b'S').as_deref(), Some("FATAL"));
        m.field(b'C')
    })
}

#[tokio::test]
async fn oversized_and_malformed_messages_close_with_08p01() {
    let (_pg, issuer, gw) = setup("").await;
    let token = issuer.token(&[]);
    let witness = connect(&gw.url("app", &token)).await.unwrap();

    // Declared length over max_message_size: refused before it is buffered.
    let mut raw = Raw::login(gw.addr, "app", &token).await;
    raw.send(b"Q\x00\x20\x00\x00select").await;
    let msgs = raw.until_ready().await;
    assert_eq!(fatal_code(&msgs).as_deref(), Some("08P01"));
    assert!(msgs[0].field(b'M').unwrap().contains("exceeds the limit"));
    assert!(raw.closed().await);

    // A message type no client may send.
    let mut raw = Raw::login(gw.addr, "app", &token).await;
    raw.send(&message(b'Z', b"I")).await;
    assert_eq!(
        fatal_code(&raw.until_ready().await).as_deref(),
        Some("08P01")
    );
    assert!(raw.closed().await);

    // A length below the header's own size.
    let mut raw = Raw::login(gw.addr, "app", &token).await;
    raw.send(b"Q\x00\x00\x00\x02").await;
    assert_eq!(
        fatal_code(&raw.until_ready().await).as_deref(),
        Some("08P01")
    );

    // None of this touched the other session.
    assert_eq!(
        witness
            .query_one("select 41 + 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        42
    );
}

#[tokio::test]
async fn unreadable_sql_gets_the_servers_own_error_and_the_session_survives() {
    let (_pg, issuer, gw) = setup("").await;
    let mut raw = Raw::login(gw.addr, "app", &issuer.token(&[])).await;
    // Not UTF-8: the server refuses it with 22021 and runs nothing.
    let msgs = raw.query_bytes(b"select '\xff\xfe'").await;
    let err = msgs.iter().find(|m| m.tag == b'E').unwrap();
    assert_eq!(err.field(b'C').as_deref(), Some("22021"));
    assert_eq!(err.field(b'S').as_deref(), Some("ERROR"));
    let msgs = raw.query("select 'still here'").await;
    assert!(msgs.iter().any(|m| m.tag == b'D'));
}

#[tokio::test]
async fn oversized_startup_packet_is_dropped() {
    let (_pg, _issuer, gw) = setup("").await;
    let big = "x".repeat(11_000);
    let mut raw = Raw::open(gw.addr).await;
    raw.send(&startup_message(&[
        ("user", "app"),
        ("application_name", &big),
    ]))
    .await;
    assert!(
        raw.recv().await.is_none(),
        "dropped without an answer, as PostgreSQL does"
    );
    // A length field claiming more than 10 KB is dropped before the body arrives.
    let mut raw = Raw::open(gw.addr).await;
    raw.send(&[0, 1, 0, 0, 0, 3, 0, 0]).await;
    assert!(raw.recv().await.is_none());
}

#[tokio::test]
async fn a_client_that_never_authenticates_is_dropped() {
    let (_pg, issuer, gw) = setup("").await;
    let started = Instant::now();
    // Stalls before sending anything ...
    let mut silent = Raw::open(gw.addr).await;
    // ... and after being asked for its token.
    let mut stalled = Raw::open(gw.addr).await;
    stalled.send(&startup_message(&[("user", "app")])).await;
    assert_eq!(stalled.recv().await.unwrap().tag, b'R');
    // Meanwhile others log in fine.
    connect(&gw.url("app", &issuer.token(&[]))).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(10), silent.closed())
            .await
            .unwrap()
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(10), stalled.closed())
            .await
            .unwrap()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before the configured 1s"
    );
}

#[tokio::test]
async fn encryption_requests_without_tls_configured() {
    let (_pg, issuer, gw) = setup("").await;
    // GSSENCRequest is refused with 'N', then SSLRequest also 'N' (no TLS
    // configured), then a plain startup proceeds.
    let mut raw = Raw::open(gw.addr).await;
    raw.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]).await;
    let mut b = [0u8; 1];
    use tokio::io::AsyncReadExt;
    raw.stream.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"N");
    raw.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await;
    raw.stream.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"N");
    raw.send(&startup_message(&[("user", "app")])).await;
    assert_eq!(raw.recv().await.unwrap().tag, b'R');
    let mut pw = issuer.token(&[]).into_bytes();
    pw.push(0);
    raw.send(&message(b'p', &pw)).await;
    let msgs = raw.until_ready().await;
    assert_eq!(msgs.last().unwrap().tag, b'Z');
}

#[tokio::test]
async fn newer_protocol_minor_versions_are_negotiated_down() {
    let (_pg, issuer, gw) = setup("").await;
    let mut raw = Raw::open(gw.addr).await;
    let mut msg = startup_message(&[("user", "app"), ("_pq_.some_extension", "on")]);
    msg[4..8].copy_from_slice(&0x0003_0002u32.to_be_bytes());
    raw.send(&msg).await;
    let v = raw.recv().await.unwrap();
    assert_eq!(v.tag, b'v', "NegotiateProtocolVersion");
    assert_eq!(&v.body[..4], &0u32.to_be_bytes(), "newest minor version: 0");
    assert!(String::from_utf8_lossy(&v.body).contains("_pq_.some_extension"));
    assert_eq!(raw.recv().await.unwrap().tag, b'R');
    let mut pw = issuer.token(&[]).into_bytes();
    pw.push(0);
    raw.send(&message(b'p', &pw)).await;
    assert_eq!(raw.until_ready().await.last().unwrap().tag, b'Z');
}

#[tokio::test]
async fn startup_parameters_that_change_the_session_are_refused() {
    let (_pg, issuer, gw) = setup("").await;
    let token = issuer.token(&[]);
    let base = gw.url("app", &token);
    for (extra, code, needle) in [
        ("options='-c search_path=evil'", "42501", "\"options\""),
        ("options='-c role=postgres'", "42501", "\"options\""),
        ("dbname=postgres", "3D000", "\"postgres\""),
    ] {
        let url = base.replace("dbname=appdb", "") + " " + extra;
        let err = connect(&url)
            .await
            .err()
            .unwrap_or_else(|| panic!("{extra} accepted"));
        let (got, message) = db_error(&err);
        assert_eq!(got, code, "{extra}: {message}");
        assert!(message.contains(needle), "{extra}: {message}");
    }
    // Replication connections and encodings whose bytes Gatehouse cannot read as
    // UTF-8 are refused too (raw: tokio-postgres cannot send these).
    for (param, code) in [
        (("replication", "database"), "42501"),
        (("client_encoding", "SJIS"), "0A000"),
    ] {
        let mut raw = Raw::open(gw.addr).await;
        raw.send(&startup_message(&[("user", "app"), param])).await;
        let m = raw.recv().await.unwrap();
        assert_eq!(m.tag, b'E');
        assert_eq!(m.field(b'C').as_deref(), Some(code), "{param:?}");
    }
    // The harmless ones pass: application_name shows up upstream.
    let client = connect(&format!("{base} application_name=nightly-etl"))
        .await
        .unwrap();
    let name: String = client
        .query_one("show application_name", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "nightly-etl");
}

#[tokio::test]
async fn many_bad_clients_do_not_starve_good_ones() {
    let (_pg, issuer, gw) = setup("").await;
    let token = issuer.token(&[]);
    let mut bad = Vec::new();
    for i in 0..50 {
        let mut raw = Raw::open(gw.addr).await;
        match i % 3 {
            0 => raw.send(b"\x00\x00").await, // half a length, then silence
            1 => raw.send(&startup_message(&[("user", "app")])).await, // never answers R
            _ => raw.send(b"GET / HTTP/1.1\r\n\r\n").await, // not PostgreSQL at all
        }
        bad.push(raw);
    }
    for _ in 0..5 {
        let client = connect(&gw.url("app", &token)).await.unwrap();
        assert_eq!(
            client
                .query_one("select 1", &[])
                .await
                .unwrap()
                .get::<_, i32>(0),
            1
        );
    }
}

#[tokio::test]
async fn queries_pipelined_behind_the_password_are_served() {
    let (_pg, issuer, gw) = setup("").await;
    let mut raw = Raw::open(gw.addr).await;
    raw.send(&startup_message(&[("user", "app")])).await;
    assert_eq!(raw.recv().await.unwrap().tag, b'R');
    // Password and a query in one write, before AuthenticationOk arrives.
    let mut pw = issuer.token(&[]).into_bytes();
    pw.push(0);
    let mut both = message(b'p', &pw);
    both.extend(message(b'Q', b"select 'early bird'\0"));
    raw.send(&both).await;
    assert_eq!(
        raw.until_ready().await.last().unwrap().tag,
        b'Z',
        "startup completes"
    );
    let msgs = tokio::time::timeout(Duration::from_secs(10), raw.until_ready())
        .await
        .expect("the pipelined query was answered");
    let row = msgs
        .iter()
        .find(|m| m.tag == b'D')
        .expect("the pipelined query ran");
    assert!(String::from_utf8_lossy(&row.body).contains("early bird"));
}

#[tokio::test]
async fn health_probes_that_hang_up_are_not_warnings() {
    let (_pg, _issuer, gw) = setup("").await;
    let mut probe = Raw::open(gw.addr).await;
    probe.send(&startup_message(&[("user", "app")])).await;
    assert_eq!(probe.recv().await.unwrap().tag, b'R');
    drop(probe);
    // Wait for the gateway to notice the hang-up.
    while !captured_logs().contains("client_gone_during_startup") {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !captured_logs().contains("startup_refused"),
        "{}",
        captured_logs()
    );
}
