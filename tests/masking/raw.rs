//! Masking seen in raw protocol bytes: SQL-prepared statements bound by the
//! protocol, SQL cursors executed as portals, psycopg's COPY and server-side
//! cursors.

use super::*;

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
    let v = psycopg_json(&s.gw, &token, script).await;
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
