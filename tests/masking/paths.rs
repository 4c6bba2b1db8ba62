//! Masked rows by every client path (simple and extended, text and binary,
//! cursors, psql, psycopg), values sent towards masked columns, and content
//! detectors on free text.

use super::*;

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
    let ci = app_dsn(&gw);
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
    let ci = app_dsn(&s.gw);
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
    let v = psycopg_json(&s.gw, &token, script).await;
    assert_eq!(v["text"][1], "***-**-6789");
    assert_eq!(v["binary"][1], "***-**-4321");
    assert_eq!(v["prepared"], "***-**-6789");
    assert_eq!(v["error"][0], "22P02");
}
