//! Inline masking through the ingress with real clients: tokio-postgres in text
//! (simple query) and binary (extended, prepared, executed many times) mode,
//! raw protocol bytes, psql and psycopg. Each case asserts that the raw value is
//! nowhere in what the client received, nor in evidence, nor in the logs.

mod harness;

use std::sync::Arc;

use futures_util::TryStreamExt;
use gatehouse_archiver::LocalDir;
use gatehouse_decider::PolicyHandle;
use gatehouse_ingress::decision::LocalPolicy;
use harness::*;
use tokio::process::Command;

/// The raw values that must never leave.
const SSN1: &str = "123-45-6789";
const SSN2: &str = "987-65-4321";
const EMAIL: &str = "ann.secret@example.org";
const CARD: &str = "4111111111111111";
/// A value written through the gateway (a bind parameter, a literal).
const SSN_NEW: &str = "555-12-3456";
const SSN_LIT: &str = "555-99-0000";
/// Free text holding identifiers only content detectors find.
const VISIT1: &str = "called 415-555-2671 re SSN 123-45-6789; paid 4111 1111 1111 1111; mail visit.secret@example.net";
const VISIT1_SCRUBBED: &str = "called ***-***-**** re SSN ***-**-****; paid **** **** **** ****; mail *****.******@*******.***";
const VISIT2: &str = "no identifiers here: room 12, 3 visits, card ending 1111";
/// The raw identifiers of `VISIT1`.
const VISIT1_RAW: [&str; 4] = [
    "415-555-2671",
    "123-45-6789",
    "4111 1111 1111 1111",
    "visit.secret@example.net",
];

/// [`POLICY`] with content detectors: SSN and card numbers in the visits'
/// summaries (and what is derived from them), e-mail addresses and phone
/// numbers in every text column.
fn detector_policy() -> String {
    format!(
        r#"{POLICY}
[[rules]]
id = "scan-summaries"
roles = ["app"]
verdict = "mask"
detectors = ["ssn", "pan"]
detect_columns = ["clinic.visits.summary"]

[[rules]]
id = "scan-all-text"
roles = ["app"]
verdict = "mask"
detectors = ["email", "phone"]
"#
    )
}

const POLICY: &str = r#"
version = "mask-e2e"

[[data_classes]]
name = "pii.ssn"
columns = ["clinic.patients.ssn"]

[[rules]]
id = "app-work"
roles = ["app"]
classes = ["read", "write", "transaction", "prepared", "cursor", "copy-out", "copy-in", "session", "utility"]
objects = ["clinic.*", "pg_catalog.*"]
verdict = "allow"

[[rules]]
id = "mask-pii"
roles = ["app"]
verdict = "mask"
exempt = { groups = { contains = "phi-readers" } }

[[rules.mask]]
class = "pii.ssn"
method = "partial"
keep_last = 4

[[rules.mask]]
column = "clinic.*.email"
method = "email"

[[rules.mask]]
column = "*.*.card_number"
method = "hash"

[[rules.mask]]
column = "clinic.patients.birth_year"
method = "redact"
"#;

fn setup_db(pg: &Pg) {
    pg.psql_admin_db(
        APP_DB,
        &format!(
            "create schema clinic authorization app; \
             create table clinic.patients (id int primary key, name text, ssn text, email text, card_number varchar(19), birth_year int, notes jsonb); \
             insert into clinic.patients values \
               (1, 'Ann', '{SSN1}', '{EMAIL}', '{CARD}', 1970, '{{\"k\": 1}}'), \
               (2, 'Bob', '{SSN2}', 'bob@example.com', '{CARD}', 1980, null), \
               (3, 'Cy', null, null, null, null, null); \
             create view clinic.patient_view as select id, ssn from clinic.patients; \
             create table clinic.visits (id int primary key, summary text, code int); \
             insert into clinic.visits values \
               (1, '{VISIT1}', 4111), (2, '{VISIT2}', 2671), (3, null, null); \
             alter table clinic.patients owner to app; alter view clinic.patient_view owner to app; \
             alter table clinic.visits owner to app"
        ),
    );
}

struct Setup {
    _pg: Pg,
    issuer: Issuer,
    gw: Gw<LocalPolicy>,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    setup_with(POLICY).await
}

async fn setup_with(policy: &str) -> Setup {
    let pg = Pg::start();
    setup_db(&pg);
    let issuer = Issuer::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
    let policy = LocalPolicy::new(Arc::new(
        PolicyHandle::load(&dir.path().join("policy.toml")).unwrap(),
    ));
    let config = format!(
        "{}\n[masking]\nhash_key_env = \"GATEHOUSE_TEST_MASK_KEY\"\n",
        base_config(&pg, &issuer)
    );
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("GATEHOUSE_TEST_MASK_KEY", "test-hash-key") };
    let gw = start_gateway(&config, policy).await;
    Setup {
        _pg: pg,
        issuer,
        gw,
        _dir: dir,
    }
}

fn assert_clean(what: &str, text: &str) {
    for raw in [SSN1, SSN2, EMAIL, CARD, "123-45", "987-65", "ann.secret"] {
        assert!(!text.contains(raw), "{raw} reached {what}: {text}");
    }
}

/// Every text value of simple-query rows, joined.
fn simple_text(msgs: &[tokio_postgres::SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn masked_in_every_path_and_nowhere_in_evidence_or_logs() {
    let Setup {
        _pg,
        issuer,
        gw,
        _dir,
    } = setup().await;
    let token = issuer.token(&[]);
    let client = connect(&gw.url("app", &token)).await.unwrap();

    // Text format, simple query: direct columns through the catalog.
    let rows = simple_text(
        &client
            .simple_query(
                "select id, name, ssn, email, card_number, birth_year from clinic.patients order by id",
            )
            .await
            .unwrap(),
    );
    assert_eq!(rows[0][2].as_deref(), Some("***-**-6789"));
    assert_eq!(rows[1][2].as_deref(), Some("***-**-4321"));
    assert_eq!(rows[0][3].as_deref(), Some("****@example.org"));
    // Hash: stable across rows with the same value, 64 hex characters.
    let hash = rows[0][4].clone().unwrap();
    assert_eq!(hash.len(), 64);
    assert_eq!(rows[1][4].as_deref(), Some(hash.as_str()));
    // A masked non-text column is NULL.
    assert_eq!(rows[0][5], None);
    // Untouched columns and NULLs stay.
    assert_eq!(rows[0][1].as_deref(), Some("Ann"));
    assert_eq!(rows[2][2], None);
    assert_clean("simple query rows", &format!("{rows:?}"));

    // `*`, views, subqueries, CTEs, derived values.
    for sql in [
        "select * from clinic.patients order by id",
        "select * from clinic.patient_view order by id",
        "select s from (select ssn as s, id from clinic.patients) x order by id",
        "with c as (select id, ssn from clinic.patients) select ssn from c order by id",
        "select upper(ssn), ssn || '', substr(ssn, 1, 7), lower(email) from clinic.patients order by id",
        "select row_to_json(p) from clinic.patients p order by id",
        "select string_agg(ssn, ',') from clinic.patients",
        "select case when ssn is not null then ssn end from clinic.patients order by id",
        "select json_build_object('s', ssn) from clinic.patients order by id",
        "select id, ssn from clinic.patients union all select 9, 'x' order by 1",
    ] {
        let rows = simple_text(&client.simple_query(sql).await.unwrap());
        assert!(!rows.is_empty(), "{sql}");
        assert_clean(sql, &format!("{rows:?}"));
    }

    // Binary format, extended protocol, one prepared statement executed many
    // times.
    let stmt = client
        .prepare("select id, ssn, email, card_number, birth_year, notes from clinic.patients where id = $1")
        .await
        .unwrap();
    for id in [1i32, 2, 1] {
        let row = client.query_one(&stmt, &[&id]).await.unwrap();
        let ssn: Option<String> = row.get(1);
        let email: Option<String> = row.get(2);
        let card: Option<String> = row.get(3);
        let year: Option<i32> = row.get(4);
        assert!(ssn.as_deref().unwrap().starts_with("***-**-"), "{ssn:?}");
        assert_clean("binary rows", &format!("{ssn:?} {email:?} {card:?}"));
        assert_eq!(
            card.as_deref(),
            Some(hash.as_str()),
            "binary and text hash alike"
        );
        assert_eq!(year, None);
    }
    // Derived values in binary.
    let row = client
        .query_one(
            "select upper(ssn), ssn::text || '' from clinic.patients where id = 1",
            &[],
        )
        .await
        .unwrap();
    let a: String = row.get(0);
    let b: String = row.get(1);
    assert_clean("binary derived", &format!("{a} {b}"));

    // RETURNING of a write.
    let rows = simple_text(
        &client
            .simple_query(
                "update clinic.patients set name = name where id = 1 returning ssn, upper(ssn)",
            )
            .await
            .unwrap(),
    );
    assert_eq!(rows[0][0].as_deref(), Some("***-**-6789"));
    assert_clean("returning", &format!("{rows:?}"));

    // Predicates on a masked column are refused.
    for sql in [
        "select id from clinic.patients where ssn like '123%'",
        "select id from clinic.patients order by ssn",
        "select count(*) from clinic.patients group by ssn",
        "select *, upper(ssn) from clinic.patients",
    ] {
        let err = client.simple_query(sql).await.unwrap_err();
        let (code, message) = db_error(&err);
        assert_eq!(code, "42501", "{sql}");
        assert!(
            message.contains("masking could not be guaranteed"),
            "{sql}: {message}"
        );
    }
    // COPY TO STDOUT (extended protocol) in text, CSV and binary, of a table
    // and of a query: masked, the rows otherwise intact.
    for (sql, want) in [
        (
            "copy clinic.patients (id, ssn) to stdout",
            "1\t***-**-6789\n",
        ),
        (
            "copy clinic.patients to stdout with (format csv, header)",
            "\"***-**-6789\"",
        ),
        (
            "copy (select id, upper(ssn), email from clinic.patients order by id) to stdout csv",
            "****@example.org",
        ),
        (
            "copy (select id, ssn from clinic.patients order by id) to stdout with (format binary)",
            "***-**-4321",
        ),
    ] {
        let stream = client.copy_out(sql).await.unwrap();
        let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
        let out: Vec<u8> = chunks.concat();
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains(want), "{sql}: {text}");
        assert_clean(sql, &text);
    }
    // A cursor: FETCH results masked with the DECLARE's lineage (simple
    // protocol; psql covers simple-protocol COPY).
    let rows = simple_text(
        &client
            .simple_query(
                "begin; declare c cursor for select id, upper(ssn), ssn from clinic.patients order by id; \
                 fetch 2 from c; fetch all from c; close c; commit",
            )
            .await
            .unwrap(),
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0][2].as_deref(), Some("***-**-6789"));
    assert_clean("cursor rows", &format!("{rows:?}"));
    // A cursor over what cannot be masked exactly is refused at DECLARE.
    let err = client
        .simple_query(
            "begin; declare d cursor for select id from clinic.patients where ssn like '1%'",
        )
        .await
        .unwrap_err();
    assert_eq!(db_error(&err).0, "42501");
    client.simple_query("rollback").await.unwrap();

    // An error that would echo the value is scrubbed, its SQLSTATE kept.
    let err = client
        .simple_query("select ssn::int from clinic.patients where id = 1")
        .await
        .unwrap_err();
    let (code, message) = db_error(&err);
    assert_eq!(code, "22P02");
    assert_clean("error message", &format!("{message} {err:?}"));
    let err = client
        .query("select ssn::int from clinic.patients where id = 1", &[])
        .await
        .unwrap_err();
    assert_eq!(db_error(&err).0, "22P02");
    assert_clean("extended error", &format!("{err:?}"));

    // Values written through the gateway stay out of evidence: a bind
    // parameter and a literal.
    client
        .execute(
            "insert into clinic.patients (id, ssn) values ($1, $2)",
            &[&10i32, &SSN_NEW],
        )
        .await
        .unwrap();
    client
        .simple_query(&format!(
            "insert into clinic.patients (id, ssn) values (11, '{SSN_LIT}')"
        ))
        .await
        .unwrap();

    // Raw bytes of the simple and extended protocol.
    let mut raw = Raw::login(gw.addr, "app", &token).await;
    let msgs = raw
        .query("select ssn, email, card_number, notes, row_to_json(p) from clinic.patients p")
        .await;
    assert!(msgs.iter().any(|m| m.tag == b'D'));
    let bytes: Vec<u8> = msgs.iter().flat_map(|m| m.body.clone()).collect();
    assert_clean("raw bytes", &String::from_utf8_lossy(&bytes));
    // Parse/Bind/Execute with no Describe: Gatehouse describes the portal
    // itself; the client sees no RowDescription it did not ask for.
    let mut ext = Vec::new();
    ext.extend(harness::message(
        b'P',
        b"\0select id, upper(ssn), ssn from clinic.patients where id = 1\0\0\0",
    ));
    ext.extend(harness::message(b'B', b"\0\0\0\0\0\0\0\0"));
    ext.extend(harness::message(b'E', b"\0\0\0\0\0"));
    ext.extend(harness::message(b'S', b""));
    raw.send(&ext).await;
    let msgs = raw.until_ready().await;
    let tags: Vec<u8> = msgs.iter().map(|m| m.tag).collect();
    assert_eq!(tags, b"12DCZ", "{msgs:?}");
    let row = String::from_utf8_lossy(&msgs[2].body).into_owned();
    assert!(row.contains("***-**-6789"), "{row}");
    assert_clean("undescribed execute", &row);

    // An exempt caller sees the values: the masks above were real.
    let exempt = issuer.token(&[("groups", serde_json::json!(["phi-readers"]))]);
    let c2 = connect(&gw.url("app", &exempt)).await.unwrap();
    let rows = simple_text(
        &c2.simple_query("select ssn from clinic.patients where id = 1")
            .await
            .unwrap(),
    );
    assert_eq!(rows[0][0].as_deref(), Some(SSN1));
    drop(c2);
    drop(client);
    drop(raw);

    // Evidence and logs: statement records are durable before their
    // statements run, so the spool holds them all now; the archive after a stop.
    let evidence = evidence_text(gw).await;
    assert!(evidence.contains("clinic.patients"), "evidence was read");
    for raw in [SSN_NEW, SSN_LIT] {
        assert!(!evidence.contains(raw), "{raw} reached the evidence");
    }
    assert_clean("evidence", &evidence);
    let logs = gatehouse_logs();
    assert!(logs.contains("statement"), "logs were read");
    for raw in [SSN_NEW, SSN_LIT] {
        assert!(!logs.contains(raw), "{raw} reached the logs");
    }
    assert_clean("logs", &logs);
}

/// Everything the gateway's evidence holds, spool and archive (it is stopped).
async fn evidence_text(mut gw: Gw<LocalPolicy>) -> String {
    let ev = gw.evidence.take().unwrap();
    let mut evidence = String::new();
    for (_, p) in gatehouse_ingress::evidence::spool_files(&ev.dir.path().join("spool")).unwrap() {
        evidence.push_str(&String::from_utf8_lossy(&std::fs::read(p).unwrap()));
    }
    gw.shutdown().await;
    let key = gatehouse_archiver::load_verifying_key(&ev.verifying_key()).unwrap();
    let store = LocalDir::new(ev.archive());
    let report = gatehouse_archiver::verify(&store, &[key], None, None)
        .await
        .unwrap();
    for session in &report.sessions {
        for (_, r) in gatehouse_archiver::replay::replay_records(&store, session.session)
            .await
            .unwrap()
        {
            evidence.push_str(&String::from_utf8_lossy(&r));
        }
    }
    evidence
}

/// Gatehouse's own log lines (the test's tokio-postgres client logs its
/// parameters in the same process).
fn gatehouse_logs() -> String {
    captured_logs()
        .lines()
        .filter(|l| l.contains(" gatehouse"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Values a masked caller sends towards a masked column, by every path that
/// writes one (and by a statement refused for comparing with one): none reaches
/// the evidence or the logs, while the values bound for unmasked columns are
/// recorded as they are.
#[tokio::test]
async fn values_sent_to_masked_columns_are_masked_in_evidence() {
    let Setup {
        _pg,
        issuer,
        gw,
        _dir,
    } = setup().await;
    let token = issuer.token(&[]);
    let client = connect(&gw.url("app", &token)).await.unwrap();
    // Each value a distinct SSN, so that each path is told apart.
    let ssn = |i: u32| format!("555-{i:02}-{:04}", 7000 + i);

    // A literal, simple protocol.
    client
        .simple_query(&format!(
            "insert into clinic.patients (id, name, ssn) values (20, 'name-twenty', '{}')",
            ssn(1)
        ))
        .await
        .unwrap();
    // Bound parameters, extended protocol.
    client
        .execute(
            "insert into clinic.patients (id, name, ssn) values ($1, $2, $3)",
            &[&21i32, &"name-twenty-one", &ssn(2)],
        )
        .await
        .unwrap();
    client
        .execute(
            "update clinic.patients set ssn = $1 where id = $2",
            &[&ssn(3), &21i32],
        )
        .await
        .unwrap();
    // The caller's own value copied on conflict, into the same column.
    client
        .simple_query(&format!(
            "insert into clinic.patients (id, ssn) values (20, '{}') \
             on conflict (id) do update set ssn = excluded.ssn",
            ssn(4)
        ))
        .await
        .unwrap();
    // Several rows; no column list (the table's own order).
    client
        .simple_query(&format!(
            "insert into clinic.patients (id, ssn, name) values (22, '{}', 'n22'), (23, '{}', 'n23')",
            ssn(5),
            ssn(6)
        ))
        .await
        .unwrap();
    client
        .simple_query(&format!(
            "insert into clinic.patients values (24, 'n24', '{}', null, null, null, null)",
            ssn(7)
        ))
        .await
        .unwrap();
    // Text-format parameters (tokio-postgres binds in binary, whose values
    // are withheld: their type is not known here): shown masked or as sent.
    let mut raw = Raw::login(gw.addr, "app", &token).await;
    let mut bind = b"\0\0\0\0\0\x02".to_vec();
    for v in [ssn(12), "22".to_owned()] {
        bind.extend((v.len() as i32).to_be_bytes());
        bind.extend(v.as_bytes());
    }
    bind.extend(b"\0\0");
    let mut ext = Vec::new();
    ext.extend(harness::message(
        b'P',
        b"\0update clinic.patients set ssn = $1 where id = $2\0\0\0",
    ));
    ext.extend(harness::message(b'B', &bind));
    ext.extend(harness::message(b'E', b"\0\0\0\0\0"));
    ext.extend(harness::message(b'S', b""));
    raw.send(&ext).await;
    let tags: Vec<u8> = raw.until_ready().await.iter().map(|m| m.tag).collect();
    assert_eq!(tags, b"12CZ");
    drop(raw);
    // COPY FROM STDIN: its rows are not recorded; a row the server rejects
    // is not echoed back in the error's context.
    let sink = client
        .copy_in::<_, bytes::Bytes>("copy clinic.patients (id, ssn) from stdin")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    futures_util::SinkExt::send(&mut sink, bytes::Bytes::from(format!("25\t{}\n", ssn(8))))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 1);
    let sink = client
        .copy_in::<_, bytes::Bytes>("copy clinic.patients (id, ssn, birth_year) from stdin")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    futures_util::SinkExt::send(
        &mut sink,
        bytes::Bytes::from(format!("26\t{}\tnot-a-year\n", ssn(9))),
    )
    .await
    .unwrap();
    let err = sink.finish().await.unwrap_err();
    assert_eq!(db_error(&err).0, "22P02");
    assert!(!format!("{err:?}").contains(&ssn(9)), "{err:?}");
    // A comparison with a masked column is refused, and its value is not
    // recorded with the refusal.
    let err = client
        .simple_query(&format!(
            "select id from clinic.patients where ssn = '{}'",
            ssn(10)
        ))
        .await
        .unwrap_err();
    assert_eq!(db_error(&err).0, "42501");
    let err = client
        .query("select id from clinic.patients where ssn = $1", &[&ssn(11)])
        .await
        .unwrap_err();
    assert_eq!(db_error(&err).0, "42501");
    // The values did arrive (an exempt caller reads them).
    let exempt = issuer.token(&[("groups", serde_json::json!(["phi-readers"]))]);
    let c2 = connect(&gw.url("app", &exempt)).await.unwrap();
    let rows = c2
        .query(
            "select id, ssn from clinic.patients where id >= 20 order by id",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        vec![
            (20, ssn(4)),
            (21, ssn(3)),
            (22, ssn(12)),
            (23, ssn(6)),
            (24, ssn(7)),
            (25, ssn(8))
        ]
    );
    drop(c2);
    drop(client);

    let evidence = evidence_text(gw).await;
    let logs = gatehouse_logs();
    assert!(evidence.contains("clinic.patients"), "evidence was read");
    let leaks: Vec<String> = (1..=12)
        .flat_map(|i| {
            [("evidence", &evidence), ("logs", &logs)]
                .into_iter()
                .filter(move |(_, text)| text.contains(&ssn(i)))
                .map(move |(what, _)| format!("value {i} reached the {what}"))
        })
        .collect();
    assert!(leaks.is_empty(), "{leaks:?}");
    // Exactly those values are masked: the others are recorded as sent, the
    // masked ones as the rule's method shows them.
    for shown in [
        "values (20, 'name-twenty', '***-**-7001')",
        // Binary: the unmasked column's value in hex, the masked one withheld.
        r#"[{"binary":"00000015"},{"binary":"6e616d652d7477656e74792d6f6e65"},{"withheld":11}]"#,
        r#"[{"masked":"***-**-7012"},{"text":"22"}]"#,
        "where ssn = '***-**-7010'",
    ] {
        assert!(
            evidence.contains(shown),
            "{shown} not in the evidence: {}",
            evidence
                .lines()
                .filter(|l| l.contains("name-twenty") || l.contains("7010"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Cursors: FETCH through the extended protocol (tokio-postgres, binary
/// results), a `BINARY` cursor fetched with a simple query, and a `WITH HOLD`
/// cursor fetched after its transaction committed: all masked.
#[tokio::test]
async fn cursors_stay_masked_in_every_mode() {
    let Setup {
        _pg,
        issuer,
        gw,
        _dir,
    } = setup().await;
    let token = issuer.token(&[]);
    let mut client = connect(&gw.url("app", &token)).await.unwrap();

    // Extended protocol: FETCH prepared, described and executed; binary rows.
    let tx = client.transaction().await.unwrap();
    tx.batch_execute(
        "declare c cursor for select id, ssn, upper(ssn), email from clinic.patients order by id",
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        for row in tx.query("fetch 2 from c", &[]).await.unwrap() {
            let id: i32 = row.get(0);
            let values: (Option<String>, Option<String>, Option<String>) =
                (row.get(1), row.get(2), row.get(3));
            seen.push((id, values));
        }
    }
    tx.commit().await.unwrap();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0].1.0.as_deref(), Some("***-**-6789"));
    assert_eq!(seen[1].1.0.as_deref(), Some("***-**-4321"));
    assert_eq!(seen[0].1.2.as_deref(), Some("****@example.org"));
    assert_clean("extended FETCH", &format!("{seen:?}"));

    // A BINARY cursor: rows in binary format through the simple protocol.
    let mut raw = Raw::login(gw.addr, "app", &token).await;
    let msgs = raw
        .query(
            "begin; declare b binary cursor for select id, ssn, card_number from clinic.patients order by id; \
             fetch all from b; close b; commit",
        )
        .await;
    let rows: Vec<&Msg> = msgs.iter().filter(|m| m.tag == b'D').collect();
    assert_eq!(rows.len(), 3, "{msgs:?}");
    let first = String::from_utf8_lossy(&rows[0].body).into_owned();
    assert!(first.contains("***-**-6789"), "{first}");
    let bytes: Vec<u8> = msgs.iter().flat_map(|m| m.body.clone()).collect();
    assert_clean("binary cursor", &String::from_utf8_lossy(&bytes));

    // WITH HOLD: the cursor outlives its transaction, still masked.
    let msgs = raw
        .query(
            "begin; declare h cursor with hold for select id, ssn, upper(ssn) from clinic.patients order by id; commit",
        )
        .await;
    assert!(!msgs.iter().any(|m| m.tag == b'E'), "{msgs:?}");
    let msgs = raw.query("fetch all from h").await;
    let rows: Vec<&Msg> = msgs.iter().filter(|m| m.tag == b'D').collect();
    assert_eq!(rows.len(), 3, "{msgs:?}");
    assert!(
        String::from_utf8_lossy(&rows[1].body).contains("***-**-4321"),
        "{:?}",
        rows[1]
    );
    let bytes: Vec<u8> = msgs.iter().flat_map(|m| m.body.clone()).collect();
    assert_clean("held cursor", &String::from_utf8_lossy(&bytes));
    let msgs = raw.query("close h").await;
    assert!(!msgs.iter().any(|m| m.tag == b'E'), "{msgs:?}");
    drop(raw);
    drop(client);

    let evidence = evidence_text(gw).await;
    assert_clean("evidence", &evidence);
    assert_clean("logs", &gatehouse_logs());
}

fn assert_no_visit_raw(what: &str, text: &str) {
    for raw in VISIT1_RAW {
        assert!(!text.contains(raw), "{raw} reached {what}: {text}");
    }
}

#[tokio::test]
async fn content_detectors_rewrite_free_text_in_every_path() {
    let Setup {
        _pg,
        issuer,
        gw,
        _dir,
    } = setup_with(&detector_policy()).await;
    // The values are really there.
    let direct = _pg.psql_admin_db(APP_DB, "select summary from clinic.visits where id = 1");
    assert!(direct.contains("123-45-6789"), "{direct}");
    let token = issuer.token(&[]);
    let client = connect(&gw.url("app", &token)).await.unwrap();

    // Simple query, text format: the matches starred, the rest as it was; a
    // row with nothing to find comes back as it is.
    let rows = simple_text(
        &client
            .simple_query("select id, summary, code from clinic.visits order by id")
            .await
            .unwrap(),
    );
    assert_eq!(rows[0][1].as_deref(), Some(VISIT1_SCRUBBED));
    assert_eq!(rows[0][2].as_deref(), Some("4111"), "a number is no text");
    assert_eq!(rows[1][1].as_deref(), Some(VISIT2));
    assert_eq!(rows[2][1], None);
    // Extended protocol, binary format, a derived value.
    let stmt = client
        .prepare("select summary, upper(summary), summary || '' from clinic.visits where id = $1")
        .await
        .unwrap();
    for id in [1i32, 1, 2] {
        let row = client.query_one(&stmt, &[&id]).await.unwrap();
        let (a, b, c): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        if id == 1 {
            assert_eq!(a, VISIT1_SCRUBBED);
            assert!(b.contains("***-**-****"), "{b}");
        } else {
            assert_eq!(a, VISIT2);
            assert_eq!(c, VISIT2);
        }
        assert_no_visit_raw("binary rows", &format!("{a} {b} {c}"));
    }
    // COPY TO STDOUT, CSV and text.
    for sql in [
        "copy (select id, summary from clinic.visits order by id) to stdout csv",
        "copy clinic.visits to stdout",
    ] {
        let stream = client.copy_out(sql).await.unwrap();
        let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
        let text = String::from_utf8_lossy(&chunks.concat()).into_owned();
        assert!(text.contains("SSN ***-**-****"), "{sql}: {text}");
        assert!(text.contains(VISIT2), "{sql}: {text}");
        assert_no_visit_raw(sql, &text);
    }
    // Raw protocol bytes.
    let mut raw = Raw::login(gw.addr, "app", &token).await;
    let msgs = raw
        .query("select summary, lower(summary) from clinic.visits")
        .await;
    assert!(msgs.iter().any(|m| m.tag == b'D'));
    let bytes: Vec<u8> = msgs.iter().flat_map(|m| m.body.clone()).collect();
    assert_no_visit_raw("raw bytes", &String::from_utf8_lossy(&bytes));
    drop(raw);
    // psql.
    let ci = format!(
        "host=127.0.0.1 port={} user=app dbname={APP_DB} sslmode=disable",
        gw.addr.port()
    );
    let out = psql(
        &ci,
        &token,
        "select id, summary from clinic.visits order by id",
    )
    .await
    .unwrap();
    assert!(out.contains(VISIT1_SCRUBBED), "{out}");
    assert!(out.contains(VISIT2), "{out}");
    assert_no_visit_raw("psql", &out);
    drop(client);

    let evidence = evidence_text(gw).await;
    assert!(evidence.contains("clinic.visits"), "evidence was read");
    assert_no_visit_raw("evidence", &evidence);
    assert_no_visit_raw("logs", &gatehouse_logs());
}

#[tokio::test]
async fn psql_and_psycopg_get_masked_rows() {
    let s = setup().await;
    let token = s.issuer.token(&[]);
    let ci = format!(
        "host=127.0.0.1 port={} user=app dbname={APP_DB} sslmode=disable",
        s.gw.addr.port()
    );
    let out = psql(
        &ci,
        &token,
        "select id, ssn, email, upper(ssn), row_to_json(p) from clinic.patients p order by id",
    )
    .await
    .unwrap();
    assert!(out.contains("***-**-6789"), "{out}");
    assert_clean("psql", &out);
    let err = psql(
        &ci,
        &token,
        "select id from clinic.patients where ssn = '123-45-6789'",
    )
    .await
    .unwrap_err();
    assert!(err.contains("masking could not be guaranteed"), "{err}");
    for copy in [
        "\\copy clinic.patients to stdout",
        "\\copy clinic.patients to stdout csv",
        "\\copy (select id, ssn, upper(ssn) from clinic.patients) to stdout with (format csv, header)",
    ] {
        let out = psql(&ci, &token, copy).await.unwrap();
        assert!(out.contains("***-**-6789"), "{copy}: {out}");
        assert_clean(copy, &out);
    }

    let script = r#"
import json, os, psycopg
out = {}
with psycopg.connect(os.environ["DSN"]) as conn:
    with conn.cursor() as cur:
        cur.execute("select id, ssn, email from clinic.patients where id = %s", (1,))
        out["text"] = list(cur.fetchone())
        cur.execute("select id, ssn, upper(ssn) from clinic.patients where id = %s", (2,), binary=True)
        out["binary"] = list(cur.fetchone())
        for i in range(3):
            cur.execute("select ssn from clinic.patients where id = %s", (1,), prepare=True)
        out["prepared"] = cur.fetchone()[0]
        try:
            cur.execute("select ssn::int from clinic.patients where id = 1")
        except psycopg.Error as e:
            out["error"] = [e.sqlstate, str(e)]
print(json.dumps(out))
"#;
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(script)
        .env("DSN", format!("{ci} password={token}"));
    let out = run(cmd).await.expect("python3 with psycopg");
    assert_clean("psycopg", &out);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["text"][1], "***-**-6789");
    assert_eq!(v["binary"][1], "***-**-4321");
    assert_eq!(v["prepared"], "***-**-6789");
    assert_eq!(v["error"][0], "22P02");
}

/// A `DataRow`'s values.
fn row_values(m: &Msg) -> Vec<Option<Vec<u8>>> {
    assert_eq!(m.tag, b'D', "{m:?}");
    let n = i16::from_be_bytes([m.body[0], m.body[1]]);
    let mut at = 2;
    (0..n)
        .map(|_| {
            let len = i32::from_be_bytes(m.body[at..at + 4].try_into().unwrap());
            at += 4;
            (len >= 0).then(|| {
                let v = m.body[at..at + len as usize].to_vec();
                at += len as usize;
                v
            })
        })
        .collect()
}

/// The `DataRow`s among `msgs`, each value as text (a binary `int4` as its
/// number, anything else as its bytes read as UTF-8).
fn rows_of(msgs: &[Msg], binary: bool) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter(|m| m.tag == b'D')
        .map(|m| {
            row_values(m)
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    v.map(|v| match (binary, i) {
                        (true, 0) => {
                            i32::from_be_bytes(v[..].try_into().expect("binary int4")).to_string()
                        }
                        _ => String::from_utf8_lossy(&v).into_owned(),
                    })
                })
                .collect()
        })
        .collect()
}

/// Extended-protocol messages a driver sends, by hand: `Parse` of `sql` as
/// `name` (no parameter types).
fn parse_msg(name: &str, sql: &str) -> Vec<u8> {
    harness::message(
        b'P',
        &[name.as_bytes(), b"\0", sql.as_bytes(), b"\0\0\0"].concat(),
    )
}

/// `Bind` of `statement` to `portal` with text parameters, results in one
/// format (`None`: the default, text).
fn bind_msg(portal: &str, statement: &str, params: &[&str], format: Option<i16>) -> Vec<u8> {
    let mut b = [portal.as_bytes(), b"\0", statement.as_bytes(), b"\0"].concat();
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        b.extend_from_slice(&(p.len() as i32).to_be_bytes());
        b.extend_from_slice(p.as_bytes());
    }
    match format {
        Some(f) => {
            b.extend_from_slice(&1i16.to_be_bytes());
            b.extend_from_slice(&f.to_be_bytes());
        }
        None => b.extend_from_slice(&0i16.to_be_bytes()),
    }
    harness::message(b'B', &b)
}

fn describe_portal_msg(portal: &str) -> Vec<u8> {
    harness::message(b'D', &[b"P", portal.as_bytes(), b"\0"].concat())
}

fn execute_msg(portal: &str, max_rows: i32) -> Vec<u8> {
    harness::message(
        b'E',
        &[portal.as_bytes(), b"\0", &max_rows.to_be_bytes()].concat(),
    )
}

fn sync_msg() -> Vec<u8> {
    harness::message(b'S', b"")
}

/// Sends `msgs` at once and reads through the `ReadyForQuery` of each `Sync`.
async fn exchange(raw: &mut Raw, msgs: &[Vec<u8>]) -> Vec<Msg> {
    raw.send(&msgs.concat()).await;
    // Each Sync, and each simple Query among them, ends with ReadyForQuery.
    let syncs = msgs.iter().filter(|m| m[0] == b'S' || m[0] == b'Q').count();
    let mut out = Vec::new();
    for _ in 0..syncs {
        out.extend(raw.until_ready().await);
    }
    out
}

fn all_bytes(msgs: &[Msg]) -> String {
    String::from_utf8_lossy(&msgs.iter().flat_map(|m| m.body.clone()).collect::<Vec<_>>())
        .into_owned()
}

/// Asserts the masked row of patient 1 as `select id, name, ssn, upper(ssn),
/// email, card_number` returns it.
fn assert_patient_one(what: &str, row: &[Option<String>]) {
    assert_eq!(row[0].as_deref(), Some("1"), "{what}: {row:?}");
    assert_eq!(
        row[1].as_deref(),
        Some("Ann"),
        "{what}: clear column: {row:?}"
    );
    assert_eq!(row[2].as_deref(), Some("***-**-6789"), "{what}: {row:?}");
    // Derived: masked by position, as the decider's lineage said.
    assert_eq!(row[3].as_deref(), Some("***-**-6789"), "{what}: {row:?}");
    assert_eq!(
        row[4].as_deref(),
        Some("****@example.org"),
        "{what}: {row:?}"
    );
    assert_eq!(
        row[5].as_ref().map(String::len),
        Some(64),
        "{what}: {row:?}"
    );
}

/// Asserts the three masked patients of `msgs` (rows as `assert_patient_one`
/// reads them), and no raw value anywhere in `msgs`.
fn assert_patients(what: &str, msgs: &[Msg], binary: bool) {
    let rows = rows_of(msgs, binary);
    assert_eq!(rows.len(), 3, "{what}: {msgs:?}");
    assert_patient_one(what, &rows[0]);
    assert_eq!(rows[1][2].as_deref(), Some("***-**-4321"), "{what}");
    assert_eq!(rows[1][3].as_deref(), Some("***-**-4321"), "{what}");
    assert_eq!(rows[2][2], None, "{what}");
    assert_clean(what, &all_bytes(msgs));
}

/// A gateway with the masking policy, and a raw client session of a masked
/// caller.
async fn raw_session() -> (Setup, Raw) {
    let s = setup().await;
    let raw = Raw::login(s.gw.addr, "app", &s.issuer.token(&[])).await;
    (s, raw)
}

/// Stops the gateway; asserts its evidence was read and holds no raw value,
/// nor do its logs.
async fn assert_evidence_and_logs_clean(s: Setup) {
    let evidence = evidence_text(s.gw).await;
    assert!(evidence.contains("clinic.patients"), "evidence was read");
    assert_clean("evidence", &evidence);
    assert_clean("logs", &gatehouse_logs());
}

/// A statement prepared with SQL `PREPARE` and run through the extended
/// protocol (`Bind` of its name): rows masked with the plan of the `PREPARE`,
/// in text and binary, described by the client or not; and a stale plan never
/// applied when a name is reused.
#[tokio::test]
async fn sql_prepared_statements_bound_by_the_protocol_are_masked() {
    let (s, mut raw) = raw_session().await;
    let msgs = raw
        .query(
            "prepare p (int) as select id, name, ssn, upper(ssn), email, card_number \
             from clinic.patients where id >= $1 order by id",
        )
        .await;
    assert!(!msgs.iter().any(|m| m.tag == b'E'), "{msgs:?}");

    // Text results, no Describe: Gatehouse describes the portal itself.
    let msgs = exchange(
        &mut raw,
        &[
            bind_msg("", "p", &["1"], None),
            execute_msg("", 0),
            sync_msg(),
        ],
    )
    .await;
    let tags: Vec<u8> = msgs.iter().map(|m| m.tag).collect();
    assert_eq!(tags, b"2DDDCZ", "{msgs:?}");
    assert_patients("bound SQL-prepared statement, text", &msgs, false);

    // Binary results, a named portal the client describes, fetched in two
    // Executes.
    let msgs = exchange(
        &mut raw,
        &[
            raw_begin(),
            bind_msg("bp", "p", &["1"], Some(1)),
            describe_portal_msg("bp"),
            execute_msg("bp", 1),
            execute_msg("bp", 0),
            sync_msg(),
        ],
    )
    .await;
    assert!(msgs.iter().any(|m| m.tag == b'T'), "{msgs:?}");
    assert_patients("bound SQL-prepared statement, binary", &msgs, true);
    raw.query("commit").await;

    // DEALLOCATE and PREPARE again under the same name: the new plan (a
    // derived value at another position) applies.
    let msgs = raw
        .query("deallocate p; prepare p as select lower(ssn), id from clinic.patients where id = 2")
        .await;
    assert!(!msgs.iter().any(|m| m.tag == b'E'), "{msgs:?}");
    let msgs = exchange(
        &mut raw,
        &[bind_msg("", "p", &[], None), execute_msg("", 0), sync_msg()],
    )
    .await;
    let rows = rows_of(&msgs, false);
    assert_eq!(rows.len(), 1, "{msgs:?}");
    assert_eq!(rows[0][0].as_deref(), Some("***-**-4321"), "{msgs:?}");
    assert_eq!(rows[0][1].as_deref(), Some("2"));
    assert_clean("re-prepared", &all_bytes(&msgs));

    // A PREPARE that fails (the name is taken by a protocol statement) leaves
    // that statement's rows masked, never shown by the failed plan.
    let msgs = exchange(
        &mut raw,
        &[
            parse_msg("q", "select upper(ssn) from clinic.patients where id = 1"),
            sync_msg(),
        ],
    )
    .await;
    assert!(!msgs.iter().any(|m| m.tag == b'E'), "{msgs:?}");
    let msgs = raw
        .query("prepare q as select name from clinic.patients")
        .await;
    assert!(msgs.iter().any(|m| m.tag == b'E'), "{msgs:?}");
    let msgs = exchange(
        &mut raw,
        &[bind_msg("", "q", &[], None), execute_msg("", 0), sync_msg()],
    )
    .await;
    assert_eq!(rows_of(&msgs, false).len(), 1, "{msgs:?}");
    assert_clean(
        "failed PREPARE over a protocol statement",
        &all_bytes(&msgs),
    );

    // A protocol statement name reused in one pipeline: the second Parse
    // fails (the name is taken), and a Bind after the next Sync runs the
    // first statement; its rows are never shown with the second's plan.
    let msgs = exchange(
        &mut raw,
        &[
            parse_msg(
                "r",
                "select upper(ssn), id from clinic.patients where id = 1",
            ),
            sync_msg(),
            parse_msg("r", "select name, id from clinic.patients where id = 1"),
            sync_msg(),
            bind_msg("", "r", &[], None),
            execute_msg("", 0),
            sync_msg(),
        ],
    )
    .await;
    assert_eq!(rows_of(&msgs, false).len(), 1, "{msgs:?}");
    assert_clean("reused protocol statement name", &all_bytes(&msgs));

    // A masked caller's PREPARE is decided as what it prepares: one that
    // filters on a masked column is refused before any Bind can run it.
    let msgs = raw
        .query("prepare w as select id from clinic.patients where ssn like '123%'")
        .await;
    let err = msgs.iter().find(|m| m.tag == b'E').expect("refused");
    assert_eq!(err.field(b'C').as_deref(), Some("42501"), "{err:?}");
    drop(raw);
    assert_evidence_and_logs_clean(s).await;
}

/// A `Query` of `begin` sent as a simple query inside an extended batch.
fn raw_begin() -> Vec<u8> {
    harness::message(b'Q', b"begin\0")
}

/// SQL cursors fetched through the extended protocol (`Execute` of the portal
/// a `DECLARE` creates): rows masked with the cursor's plan, plain, `BINARY`
/// and `WITH HOLD` cursors, with and without the client's own `Describe`; a
/// cursor declared under the name of an earlier transaction's portal is not
/// masked with that portal's plan.
#[tokio::test]
async fn sql_cursors_executed_as_portals_are_masked() {
    let (s, mut raw) = raw_session().await;
    let msgs = raw
        .query(
            "begin; declare c cursor for select id, name, ssn, upper(ssn), email, card_number \
             from clinic.patients order by id",
        )
        .await;
    assert!(!msgs.iter().any(|m| m.tag == b'E'), "{msgs:?}");
    // Two rows, suspended; then the rest.
    let msgs = exchange(
        &mut raw,
        &[
            execute_msg("c", 2),
            sync_msg(),
            execute_msg("c", 0),
            sync_msg(),
        ],
    )
    .await;
    let tags: Vec<u8> = msgs.iter().map(|m| m.tag).collect();
    assert_eq!(tags, b"DDsZDCZ", "{msgs:?}");
    assert_patients("cursor portal", &msgs, false);
    raw.query("close c").await;

    // A BINARY cursor, described by the client.
    raw.query(
        "declare b binary cursor for select id, name, ssn, upper(ssn), email, card_number \
         from clinic.patients order by id",
    )
    .await;
    let msgs = exchange(
        &mut raw,
        &[describe_portal_msg("b"), execute_msg("b", 0), sync_msg()],
    )
    .await;
    // PostgreSQL sends text here (BINARY applies to FETCH); Gatehouse masks
    // by the format the description gives.
    let formats = msgs.iter().find(|m| m.tag == b'T').expect("described");
    let binary = *formats.body.last().unwrap() == 1;
    assert_patients("BINARY cursor portal", &msgs, binary);
    raw.query("commit").await;

    // A WITH HOLD cursor, after its transaction committed.
    raw.query(
        "begin; declare h cursor with hold for select id, name, ssn, upper(ssn), email, card_number \
         from clinic.patients order by id; commit",
    )
    .await;
    let msgs = exchange(&mut raw, &[execute_msg("h", 1), sync_msg()]).await;
    let rows = rows_of(&msgs, false);
    assert_eq!(rows.len(), 1, "{msgs:?}");
    assert_patient_one("held cursor portal", &rows[0]);
    raw.query("close h").await;

    // A portal bound in one transaction, then a cursor of the same name in
    // the next: the cursor's plan, not the portal's.
    let msgs = exchange(
        &mut raw,
        &[
            raw_begin(),
            parse_msg("one", "select 'a' as x, 1 as y"),
            bind_msg("k", "one", &[], None),
            execute_msg("k", 0),
            sync_msg(),
        ],
    )
    .await;
    assert!(!msgs.iter().any(|m| m.tag == b'E'), "{msgs:?}");
    raw.query("commit").await;
    raw.query(
        "begin; declare k cursor for select upper(ssn), id from clinic.patients where id = 1",
    )
    .await;
    let msgs = exchange(&mut raw, &[execute_msg("k", 0), sync_msg()]).await;
    let rows = rows_of(&msgs, false);
    assert_eq!(rows.len(), 1, "{msgs:?}");
    assert_eq!(rows[0][0].as_deref(), Some("***-**-6789"), "{msgs:?}");
    assert_clean("cursor named after an old portal", &all_bytes(&msgs));
    raw.query("commit").await;
    // Gone with its transaction: nothing to fetch.
    let msgs = exchange(&mut raw, &[execute_msg("k", 0), sync_msg()]).await;
    assert!(msgs.iter().any(|m| m.tag == b'E'), "{msgs:?}");
    drop(raw);
    assert_evidence_and_logs_clean(s).await;
}

/// psycopg's `COPY ... TO STDOUT` (raw blocks in text and CSV, parsed rows in
/// text and binary) and its server-side cursors (`DECLARE`, `Describe` of the
/// cursor's portal, `FETCH`): plain, binary, `WITH HOLD` after the commit, and
/// scrollable (`scroll()` issues a `MOVE`).
#[tokio::test]
async fn psycopg_copy_and_server_side_cursors_are_masked() {
    let s = setup().await;
    let token = s.issuer.token(&[]);
    let script = r#"
import json, os, psycopg
out = {}
def rows(rs):
    return [list(r) for r in rs]
with psycopg.connect(os.environ["DSN"]) as conn:
    conn.autocommit = True
    with conn.cursor() as cur:
        for key, sql in [
            ("copy_text", "copy clinic.patients to stdout"),
            ("copy_csv", "copy clinic.patients to stdout (format csv)"),
        ]:
            with cur.copy(sql) as copy:
                out[key] = b"".join(bytes(b) for b in copy).decode()
        with cur.copy("copy (select id, ssn, upper(ssn) from clinic.patients order by id) to stdout") as copy:
            out["copy_rows"] = rows(copy.rows())
        with cur.copy("copy clinic.patients to stdout (format binary)") as copy:
            copy.set_types(["int4", "text", "text", "text", "varchar", "int4", "jsonb"])
            out["copy_binary"] = rows(copy.rows())
    conn.autocommit = False
    q = "select id, ssn, upper(ssn), email from clinic.patients where id >= %s order by id"
    with conn.transaction():
        with conn.cursor(name="c") as cur:
            cur.execute(q, (1,))
            out["named"] = rows(cur.fetchmany(2)) + rows(cur.fetchall())
    with conn.transaction():
        with conn.cursor(name="cb", binary=True) as cur:
            cur.execute(q, (1,))
            out["named_binary"] = rows(cur.fetchmany(5))
    with conn.cursor(name="h", withhold=True) as cur:
        cur.execute(q, (1,))
        conn.commit()
        out["withhold"] = rows(cur.fetchall())
    conn.commit()
    try:
        with conn.transaction():
            with conn.cursor(name="s", scrollable=True) as cur:
                cur.execute(q, (1,))
                out["scroll_first"] = list(cur.fetchone())
                cur.scroll(0, mode="absolute")
                out["scroll"] = rows(cur.fetchall())
    except psycopg.Error as e:
        out["scroll_error"] = [e.sqlstate, str(e)]
print(json.dumps(out))
"#;
    let ci = format!(
        "host=127.0.0.1 port={} user=app dbname={APP_DB} sslmode=disable",
        s.gw.addr.port()
    );
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(script)
        .env("DSN", format!("{ci} password={token}"));
    let out = run(cmd).await.expect("python3 with psycopg");
    assert_clean("psycopg", &out);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for key in ["copy_text", "copy_csv"] {
        let text = v[key].as_str().unwrap();
        assert!(text.contains("***-**-6789"), "{key}: {text}");
        assert!(text.contains("****@example.org"), "{key}: {text}");
    }
    assert_eq!(
        v["copy_rows"][0],
        serde_json::json!(["1", "***-**-6789", "***-**-6789"])
    );
    let ann = &v["copy_binary"][0];
    assert_eq!(ann[1], "Ann", "{ann}");
    assert_eq!(ann[2], "***-**-6789", "{ann}");
    assert_eq!(ann[5], serde_json::Value::Null, "masked int: {ann}");
    assert_eq!(ann[6], serde_json::json!({"k": 1}), "{ann}");
    // scroll() is a MOVE (no rows, allowed), then a FETCH masked as any.
    assert!(v.get("scroll_error").is_none(), "{v}");
    assert_eq!(v["scroll_first"][1], "***-**-6789");
    for key in ["named", "named_binary", "withhold", "scroll"] {
        let rows = &v[key];
        assert_eq!(rows.as_array().map(Vec::len), Some(3), "{key}: {rows}");
        assert_eq!(
            rows[0],
            serde_json::json!([1, "***-**-6789", "***-**-6789", "****@example.org"]),
            "{key}"
        );
        assert_eq!(rows[1][2], "***-**-4321", "{key}: {rows}");
    }
    assert_evidence_and_logs_clean(s).await;
}

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
