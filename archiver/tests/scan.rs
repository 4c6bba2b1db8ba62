//! `scan`: verification in one pass that hands every verified record on in
//! seq order (interleaved archivers included), never a changed one, and names
//! what it read with a digest an auditor can recompute with `sha256sum`.

mod common;

use std::collections::BTreeMap;

use common::*;
use gatehouse_archiver::segment::{decode_segment, encode_segment, sha256_hex};
use gatehouse_archiver::{
    Break, LocalDir, SegmentStore, SessionReport, SessionStatus, Visitor, scan, verify,
};
use uuid::Uuid;

#[derive(Default)]
struct Collect {
    records: BTreeMap<Uuid, Vec<(u64, Vec<u8>)>>,
    done: Vec<(Uuid, SessionStatus, usize)>,
}

impl Visitor for Collect {
    fn record(&mut self, session: Uuid, seq: u64, record: &[u8]) {
        self.records
            .entry(session)
            .or_default()
            .push((seq, record.to_vec()));
    }
    fn session_done(&mut self, s: &SessionReport, breaks: &[Break]) {
        self.done.push((s.session, s.status, breaks.len()));
    }
}

fn sha256sum_listing(store: &LocalDir, keys: &[String]) -> String {
    let mut listing = String::new();
    for k in keys {
        let bytes = std::fs::read(store.path_of(k).unwrap()).unwrap();
        listing.push_str(&format!("{}  {k}\n", sha256_hex(&bytes)));
    }
    sha256_hex(listing.as_bytes())
}

#[tokio::test]
async fn records_come_in_seq_order_and_the_digest_is_sha256sums() {
    let dir = tempfile::tempdir().unwrap();
    let done = complete_session(5);
    let store = LocalDir::new(dir.path());
    // Two archivers share the session: their segments interleave.
    let mut a = archive(store.clone(), "wa", 3);
    let mut b = archive(store.clone(), "wb", 3);
    for (i, r) in done.records.iter().enumerate() {
        let which = if (i / 2) % 2 == 0 { &mut a } else { &mut b };
        which.ingest(r, at(0)).await.unwrap();
    }
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    let mut open = ChainBuilder::new(Uuid::now_v7());
    open.started("etl", "repo:acme/etl:ref:refs/heads/main");
    open.statement("select 1", true);
    let mut c = archive(store.clone(), "wc", 100);
    for r in &open.records {
        c.ingest(r, at(0)).await.unwrap();
    }
    c.flush().await.unwrap();

    let mut got = Collect::default();
    let keys = [signing_key(1).verifying_key()];
    let report = scan(&store, &keys, None, None, &mut got).await.unwrap();
    assert!(report.is_clean(), "{:#?}", report.breaks);
    let expect = |s: &ChainBuilder| -> Vec<(u64, Vec<u8>)> {
        (1..).zip(s.records.iter().cloned()).collect()
    };
    assert_eq!(got.records[&done.session], expect(&done));
    assert_eq!(got.records[&open.session], expect(&open));
    assert_eq!(
        got.done,
        vec![
            (done.session, SessionStatus::Complete, 0),
            (open.session, SessionStatus::Open, 0)
        ]
    );
    assert_eq!(
        report.records,
        (done.records.len() + open.records.len()) as u64
    );
    let all = store.list("sessions/").await.unwrap();
    assert_eq!(report.objects, all.len() as u64);
    assert_eq!(report.digest, sha256sum_listing(&store, &all));
    // `verify` is the same pass without a visitor.
    assert_eq!(
        verify(&store, &keys, None, None).await.unwrap(),
        report,
        "verify and scan agree"
    );
}

#[tokio::test]
async fn a_changed_record_is_never_handed_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = complete_session(3);
    let store = archived(dir.path(), &[&s], 100).await;
    let key = store
        .list("sessions/")
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.ends_with(".ndjson.gz"))
        .unwrap();
    let path = store.path_of(&key).unwrap();
    let mut lines = decode_segment(&std::fs::read(&path).unwrap()).unwrap();
    lines[1] = String::from_utf8(lines[1].clone())
        .unwrap()
        .replace("select 0", "select 9")
        .into_bytes();
    std::fs::write(&path, encode_segment(lines.iter().map(Vec::as_slice))).unwrap();

    let mut got = Collect::default();
    let report = scan(
        &store,
        &[signing_key(1).verifying_key()],
        None,
        None,
        &mut got,
    )
    .await
    .unwrap();
    assert!(!report.is_clean());
    let seqs: Vec<u64> = got.records[&s.session].iter().map(|(q, _)| *q).collect();
    assert!(
        !seqs.contains(&2),
        "the changed record was handed on: {seqs:?}"
    );
    assert_eq!(seqs.len(), s.records.len() - 1);
    assert_eq!(got.done[0].1, SessionStatus::Broken);
    assert!(got.done[0].2 >= 1);
    assert!(
        got.records[&s.session]
            .iter()
            .all(|(_, r)| !String::from_utf8_lossy(r).contains("select 9"))
    );
}
