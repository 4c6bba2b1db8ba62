//! The pipeline, one protocol flow per test: what each backend message
//! becomes for the client, which statements complete how, and that every
//! entry is answered.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};

use super::*;
use crate::config::{Secret, UpstreamConfig, UpstreamTls};
use crate::evidence::capture::Note;
use crate::masking::objects::Probe;
use crate::masking::plan::MaskPlan;
use crate::masking::session::Masker;
use crate::upstream::UpstreamTarget;

fn catalog() -> Catalog {
    let target = UpstreamTarget {
        config: UpstreamConfig {
            host: "127.0.0.1".into(),
            port: 1,
            dbname: "db".into(),
            tls: UpstreamTls::Disable,
            ca_file: None,
            server_name: None,
        },
        user: "u".into(),
        password: Secret::new(String::new()),
        tls: None,
        server_name: "localhost".try_into().unwrap(),
    };
    Catalog::new(Arc::new(target), Duration::from_secs(60))
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn error(state: &str, text: &str) -> Vec<u8> {
    let mut b = b"SERROR\0C".to_vec();
    b.extend_from_slice(state.as_bytes());
    b.push(0);
    b.push(b'M');
    b.extend_from_slice(text.as_bytes());
    b.extend_from_slice(b"\0\0");
    b
}

/// A RowDescription of `n` text columns that are no table's.
fn row_description(n: i16) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i16(n);
    for i in 0..n {
        b.put_slice(format!("c{i}").as_bytes());
        b.put_u8(0);
        b.put_u32(0);
        b.put_i16(0);
        b.put_u32(25);
        b.put_i16(-1);
        b.put_i32(-1);
        b.put_i16(0);
    }
    b.to_vec()
}

fn statement(kind: Kind, stmt: u64) -> Entry {
    Entry::client(
        kind,
        Cause::None,
        Some(Completing::new(Some(stmt), Note::None)),
    )
}

fn other(kind: Kind) -> Entry {
    Entry::client(kind, Cause::None, Some(Completing::new(None, Note::None)))
}

/// What the client got of each message: `F`orward, `R`eplace, `S`wallow.
fn feed(p: &mut Pipeline, answers: &[(u8, &[u8])]) -> (String, Vec<Completion>) {
    let catalog = catalog();
    let mut got = String::new();
    let mut done = Vec::new();
    for (tag, body) in answers {
        let m = msg(*tag, body);
        got.push(match p.answer(&m, &catalog, b"k", &mut done) {
            Answer::Forward => 'F',
            Answer::Replace(_) => 'R',
            Answer::Swallow => 'S',
            Answer::Lookup(_) => 'L',
        });
    }
    (got, done)
}

fn summary(done: &[Completion]) -> Vec<(u64, &'static str, u64, Option<String>)> {
    done.iter()
        .map(|c| (c.stmt, c.outcome, c.rows, c.sqlstate.clone()))
        .collect()
}

#[test]
fn bodies_are_read_for_what_each_concern_needs() {
    let mut p = Pipeline::new(false, None);
    assert!(!p.reads_whole(b'C') && !p.reads_whole(b'E') && !p.reads_whole(b'D'));
    p.push(Vec::new(), substitute(Kind::Query, "m", "ours"));
    assert!(
        p.reads_whole(b'E'),
        "a substitute's error is checked for its marker"
    );
    let p = Pipeline::new(true, None);
    assert!(p.reads_whole(b'C') && p.reads_whole(b'E'));
    assert!(!p.reads_whole(b'D') && !p.reads_whole(b'T'));
}

#[test]
fn a_simple_query_collects_tags_rows_and_errors() {
    let mut p = Pipeline::new(true, None);
    assert!(p.push(Vec::new(), statement(Kind::Query, 3)));
    let (got, done) = feed(
        &mut p,
        &[
            (b'T', &row_description(1)),
            (b'D', b""),
            (b'D', b""),
            (b'C', b"SELECT 2\0"),
            (b'C', b"UPDATE 5\0"),
            (b'E', &error("23505", "duplicate")),
            (b'Z', b"I"),
        ],
    );
    assert_eq!(got, "FFFFFFF");
    assert_eq!(summary(&done), [(3, "error", 7, Some("23505".into()))]);
    assert_eq!(done[0].tags, ["SELECT 2", "UPDATE 5"]);
    assert!(p.is_empty());
}

#[test]
fn parse_bind_describe_execute_sync_complete_each_execute_and_skip_after_an_error() {
    let mut p = Pipeline::new(true, None);
    for e in [
        other(Kind::Parse),
        other(Kind::Bind),
        other(Kind::Describe),
        statement(Kind::Execute, 1),
        other(Kind::Bind),
        statement(Kind::Execute, 2),
        other(Kind::Bind),
        statement(Kind::Execute, 3),
        other(Kind::Sync),
    ] {
        assert!(p.push(Vec::new(), e));
    }
    let (got, done) = feed(
        &mut p,
        &[
            (b'1', b""),
            (b'2', b""),
            (b'T', &row_description(1)),
            (b'D', b""),
            (b'C', b"SELECT 1\0"),
            (b'2', b""),
            (b'E', &error("22012", "division by zero")),
            (b'Z', b"I"),
        ],
    );
    assert_eq!(got, "FFFFFFFF");
    assert_eq!(
        summary(&done),
        [
            (1, "ok", 1, None),
            (2, "error", 0, Some("22012".into())),
            (3, "skipped", 0, None)
        ]
    );
    assert!(p.is_empty());
}

#[test]
fn suspended_portals_and_empty_queries() {
    let mut p = Pipeline::new(true, None);
    for e in [
        statement(Kind::Execute, 1),
        statement(Kind::Execute, 2),
        other(Kind::Sync),
    ] {
        p.push(Vec::new(), e);
    }
    let (got, done) = feed(
        &mut p,
        &[(b'D', b""), (b's', b""), (b'I', b""), (b'Z', b"T")],
    );
    assert_eq!(got, "FFFF");
    let got: Vec<_> = done.iter().map(|c| (c.stmt, c.outcome, c.rows)).collect();
    assert_eq!(got, [(1, "suspended", 1), (2, "ok", 0)]);
    assert!(p.is_empty());
}

#[test]
fn copy_out_and_in_complete_with_their_tags() {
    let mut p = Pipeline::new(true, None);
    p.push(Vec::new(), statement(Kind::Query, 1));
    p.push(Vec::new(), statement(Kind::Query, 2));
    let (got, done) = feed(
        &mut p,
        &[
            (b'H', b"\0\0\x01\0\0"),
            (b'd', b"1\n"),
            (b'd', b"2\n"),
            (b'c', b""),
            (b'C', b"COPY 2\0"),
            (b'Z', b"I"),
            // COPY FROM STDIN: the client's CopyData has no answer of its own.
            (b'G', b"\0\0\x01\0\0"),
            (b'C', b"COPY 3\0"),
            (b'Z', b"I"),
        ],
    );
    assert_eq!(got, "FFFFFFFFF");
    assert_eq!(summary(&done), [(1, "ok", 2, None), (2, "ok", 3, None)]);
    assert!(p.is_empty());
}

fn substitute(kind: Kind, marker: &str, ours: &str) -> Entry {
    Entry {
        substitute: Some(Substitute {
            marker: marker.into(),
            error: BytesMut::from(ours.as_bytes()),
        }),
        ..other(kind)
    }
}

#[test]
fn a_refused_message_gets_our_error_and_a_skipped_one_nothing() {
    let mut p = Pipeline::new(true, None);
    for e in [
        other(Kind::Bind),
        statement(Kind::Execute, 4),
        other(Kind::Sync),
        // A refused Query: its substitute fails upstream with its marker.
        substitute(Kind::Query, "gatehouse_refused_ab_1", "ours"),
        // A refused Execute, skipped after the Bind before it failed.
        other(Kind::Bind),
        substitute(Kind::Parse, "gatehouse_refused_ab_2", "never"),
        other(Kind::Sync),
        other(Kind::Parse),
        other(Kind::Bind),
        statement(Kind::Execute, 6),
        other(Kind::Sync),
    ] {
        p.push(Vec::new(), e);
    }
    let catalog = catalog();
    let mut done = Vec::new();
    let mut answers = Vec::new();
    for (tag, body) in [
        (b'E', error("26000", "no such statement")),
        (b'Z', b"I".to_vec()),
        // Another marker (the second refusal's), at the first's place: not ours.
        (
            b'E',
            error("42601", "syntax error at \"gatehouse_refused_ab_12\""),
        ),
        (
            b'E',
            error("42601", "syntax error at \"gatehouse_refused_ab_1\""),
        ),
        (b'Z', b"I".to_vec()),
        (b'E', error("26000", "no such portal")),
        (b'Z', b"I".to_vec()),
        (b'1', Vec::new()),
        (b'2', Vec::new()),
        (b'C', b"INSERT 0 1\0".to_vec()),
        (b'Z', b"I".to_vec()),
    ] {
        answers.push(p.answer(&msg(tag, &body), &catalog, b"k", &mut done));
    }
    assert!(matches!(answers[2], Answer::Forward), "{:?}", answers[2]);
    match &answers[3] {
        Answer::Replace(b) => assert_eq!(&b[..], b"ours"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(answers[5], Answer::Forward));
    let got: Vec<_> = done.iter().map(|c| (c.stmt, c.outcome, c.rows)).collect();
    assert_eq!(got, [(4, "skipped", 0), (6, "ok", 1)]);
    assert!(p.is_empty());
}

#[test]
fn a_held_message_pairs_its_answers_once_released() {
    let mut p = Pipeline::new(true, None);
    // Parse goes; the Bind after it is held (nothing of it is queued).
    p.push(Vec::new(), other(Kind::Parse));
    let (got, _) = feed(&mut p, &[(b'1', b"")]);
    assert_eq!(got, "F");
    assert!(p.is_empty());
    // Approved: the Bind and what the client sent meanwhile go.
    for e in [
        other(Kind::Bind),
        statement(Kind::Execute, 2),
        other(Kind::Sync),
    ] {
        p.push(Vec::new(), e);
    }
    let (got, done) = feed(&mut p, &[(b'2', b""), (b'C', b"DELETE 9\0"), (b'Z', b"I")]);
    assert_eq!(got, "FFF");
    assert_eq!(summary(&done), [(2, "ok", 9, None)]);
    // Refused: a substitute stands in the held message's place.
    for e in [
        substitute(Kind::Parse, "gatehouse_refused_cd_0", "denied"),
        statement(Kind::Execute, 3),
        other(Kind::Sync),
    ] {
        p.push(Vec::new(), e);
    }
    let (got, done) = feed(
        &mut p,
        &[
            (b'E', &error("42601", "at gatehouse_refused_cd_0")),
            (b'Z', b"I"),
        ],
    );
    assert_eq!(got, "RF");
    assert_eq!(summary(&done), [(3, "skipped", 0, None)]);
    assert!(p.is_empty());
}

fn probe(sync: bool) -> Entry {
    Entry::own(
        Kind::Probe { sync },
        Cause::Probe {
            plan: MaskPlan::blind(),
            statement: 0,
            binary: false,
            probe: Arc::new(Probe::default()),
            failed: false,
        },
    )
}

#[test]
fn a_gateway_probe_is_swallowed_whole_and_its_failure_stands_for_the_next_message() {
    let mut p = Pipeline::new(true, None);
    // Ahead of a simple query: Parse, Describe, Close and Sync of its own.
    p.push(vec![probe(true)], statement(Kind::Query, 1));
    let (got, done) = feed(
        &mut p,
        &[
            (b'1', b""),
            (b't', b"\0\0"),
            (b'T', &row_description(2)),
            (b'3', b""),
            (b'Z', b"I"),
            (b'H', b"\0\0\x02\0\0\0\0"),
            (b'c', b""),
            (b'C', b"COPY 0\0"),
            (b'Z', b"I"),
        ],
    );
    assert_eq!(got, "SSSSSFFFF");
    assert_eq!(summary(&done), [(1, "ok", 0, None)]);
    // Ahead of a Parse, failing: the server skips the client's messages too.
    p.push(vec![probe(false)], other(Kind::Parse));
    p.push(Vec::new(), other(Kind::Bind));
    p.push(Vec::new(), statement(Kind::Execute, 2));
    p.push(Vec::new(), other(Kind::Sync));
    let (got, done) = feed(
        &mut p,
        &[
            (b'E', &error("42P01", "relation \"x\" does not exist")),
            (b'Z', b"I"),
        ],
    );
    assert_eq!(
        got, "RF",
        "the error scrubbed, then the client's ReadyForQuery"
    );
    assert_eq!(summary(&done), [(2, "skipped", 0, None)]);
    // Skipped after an earlier error: the client's ReadyForQuery still goes.
    p.push(Vec::new(), other(Kind::Bind));
    p.push(vec![probe(false)], other(Kind::Parse));
    p.push(Vec::new(), other(Kind::Sync));
    let (got, _) = feed(&mut p, &[(b'E', &error("26000", "x")), (b'Z', b"I")]);
    assert_eq!(got, "FF");
    assert!(p.is_empty());
}

#[test]
fn a_gateway_describe_ahead_of_an_execute_is_swallowed() {
    let mut p = Pipeline::new(true, None);
    p.push(Vec::new(), other(Kind::Bind));
    p.push(
        vec![Entry::own(Kind::Describe, Cause::DescribePortal(None))],
        statement(Kind::Execute, 5),
    );
    p.push(Vec::new(), other(Kind::Sync));
    let (got, done) = feed(
        &mut p,
        &[
            (b'2', b""),
            (b'T', &row_description(1)),
            (b'D', b""),
            (b'C', b"SELECT 1\0"),
            (b'Z', b"I"),
        ],
    );
    assert_eq!(got, "FSFFF");
    assert_eq!(summary(&done), [(5, "ok", 1, None)]);
}

#[test]
fn past_the_bound_pairing_is_lost_for_good() {
    let mut p = Pipeline::new(true, None);
    for _ in 0..MAX_PENDING {
        p.push(Vec::new(), other(Kind::Sync));
    }
    assert!(!p.push(Vec::new(), other(Kind::Sync)));
    // Answered meanwhile, it still is lost: one entry is missing somewhere.
    let (_, done) = feed(&mut p, &[(b'Z', b"I")]);
    assert!(done.is_empty());
    assert!(!p.push(Vec::new(), statement(Kind::Query, 1)));
    // Not masking: rows pass; masking: nothing of a row is shown.
    assert!(matches!(
        Masker::default().lost(&msg(b'D', b"\0\x01\0\0\0\x01x")),
        Action::Pass
    ));
}
