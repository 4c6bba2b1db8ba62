//! Tampering with an archive on disk, one way at a time: `verify` must name
//! each change precisely, and an untouched archive must verify clean.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use gatehouse_archiver::segment::{
    SignedManifest, decode_segment, encode_segment, manifest_key, segment_key, session_prefix,
    sha256_hex, sign_manifest,
};
use gatehouse_archiver::verify::SeqRange;
use gatehouse_archiver::{
    Break, BreakKind, Ingested, LocalDir, RecordId, Report, SegmentStore, SessionStatus,
    StoreError, verify,
};
use uuid::Uuid;

/// One complete session of 12 records in segments 1..=4, 5..=8, 9..=12, and one
/// open session of 3 records, archived by writer `w1` signing with key 1.
struct Fixture {
    _dir: tempfile::TempDir,
    store: LocalDir,
    done: ChainBuilder,
    open: ChainBuilder,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let done = complete_session(5);
        assert_eq!(done.records.len(), 12);
        let mut open = ChainBuilder::new(Uuid::now_v7());
        open.started("etl", "repo:acme/etl:ref:refs/heads/main");
        open.statement("select 1", true);
        let store = archived(dir.path(), &[&done, &open], 4).await;
        Self {
            _dir: dir,
            store,
            done,
            open,
        }
    }

    fn middle_segment(&self) -> String {
        segment_key(self.done.session, 5, 8, "w1")
    }

    fn path(&self, key: &str) -> PathBuf {
        self.store.path_of(key).unwrap()
    }

    async fn verify(&self) -> Report {
        verify(&self.store, &[signing_key(1).verifying_key()], None, None)
            .await
            .unwrap()
    }
}

fn rewrite_lines(path: &Path, f: impl FnOnce(&mut Vec<Vec<u8>>)) {
    let mut lines = decode_segment(&std::fs::read(path).unwrap()).unwrap();
    f(&mut lines);
    std::fs::write(path, encode_segment(lines.iter().map(Vec::as_slice))).unwrap();
}

/// The breaks as (kind, seqs, key), for exact comparison.
fn named(report: &Report) -> Vec<(BreakKind, Option<SeqRange>, String)> {
    report
        .breaks
        .iter()
        .map(|b: &Break| (b.kind, b.seqs, b.key.clone()))
        .collect()
}

fn range(first: u64, last: u64) -> Option<SeqRange> {
    Some(SeqRange { first, last })
}

fn status(report: &Report, session: Uuid) -> SessionStatus {
    report
        .sessions
        .iter()
        .find(|s| s.session == session)
        .unwrap()
        .status
}

#[tokio::test]
async fn an_untouched_archive_verifies_clean_and_lists_open_sessions() {
    let f = Fixture::new().await;
    let report = f.verify().await;
    assert!(report.is_clean(), "{:#?}", report.breaks);
    assert!(report.warnings.is_empty(), "{:#?}", report.warnings);
    assert_eq!(report.sessions.len(), 2);
    assert_eq!(status(&report, f.done.session), SessionStatus::Complete);
    assert_eq!(status(&report, f.open.session), SessionStatus::Open);
    let open: Vec<Uuid> = report.open_sessions().map(|s| s.session).collect();
    assert_eq!(
        open,
        vec![f.open.session],
        "started, never completed, and listed"
    );
    let done = report
        .sessions
        .iter()
        .find(|s| s.session == f.done.session)
        .unwrap();
    assert_eq!((done.records, done.last_seq, done.segments), (12, 12, 3));
    assert_eq!(done.started.as_deref(), Some("2027-01-15T08:00:01.000000Z"));
}

#[tokio::test]
async fn one_changed_byte_of_a_segment_object() {
    let f = Fixture::new().await;
    let key = f.middle_segment();
    let mut bytes = std::fs::read(f.path(&key)).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(f.path(&key), bytes).unwrap();
    let report = f.verify().await;
    let breaks = named(&report);
    assert_eq!(
        breaks[0],
        (BreakKind::SegmentChanged, range(5, 8), key.clone()),
        "{:#?}",
        report.breaks
    );
    // Whatever else is said is about that object (gzip's CRC usually makes it unreadable).
    for (kind, _, k) in &breaks {
        assert_eq!(k, &key);
        assert!(
            matches!(
                kind,
                BreakKind::SegmentChanged | BreakKind::UnreadableSegment | BreakKind::RecordChanged
            ),
            "{kind}"
        );
    }
    assert_eq!(status(&report, f.done.session), SessionStatus::Broken);
    assert_eq!(status(&report, f.open.session), SessionStatus::Open);
}

#[tokio::test]
async fn one_changed_record_recompressed() {
    let f = Fixture::new().await;
    let key = f.middle_segment();
    rewrite_lines(&f.path(&key), |lines| {
        let text = String::from_utf8(lines[1].clone()).unwrap();
        assert!(text.contains("\"seq\":6"));
        lines[1] = text.replace("select 2", "select 9").into_bytes();
    });
    let report = f.verify().await;
    assert_eq!(
        named(&report),
        vec![
            (BreakKind::SegmentChanged, range(5, 8), key.clone()),
            (BreakKind::RecordChanged, range(6, 6), key.clone()),
        ],
        "{:#?}",
        report.breaks
    );
}

#[tokio::test]
async fn a_deleted_segment_and_its_manifest_is_a_gap_with_its_exact_range() {
    let f = Fixture::new().await;
    let key = f.middle_segment();
    std::fs::remove_file(f.path(&key)).unwrap();
    std::fs::remove_file(f.path(&manifest_key(&key))).unwrap();
    let report = f.verify().await;
    assert_eq!(
        named(&report),
        vec![(
            BreakKind::Missing,
            range(5, 8),
            session_prefix(f.done.session)
        )],
        "{:#?}",
        report.breaks
    );
    assert!(report.breaks[0].to_string().contains("missing seq 5..=8"));
}

#[tokio::test]
async fn a_deleted_segment_object_alone() {
    let f = Fixture::new().await;
    let key = f.middle_segment();
    std::fs::remove_file(f.path(&key)).unwrap();
    let report = f.verify().await;
    assert_eq!(
        named(&report),
        vec![(BreakKind::MissingSegmentObject, range(5, 8), key)]
    );
}

#[tokio::test]
async fn a_deleted_manifest_leaves_unsigned_records() {
    let f = Fixture::new().await;
    let key = f.middle_segment();
    std::fs::remove_file(f.path(&manifest_key(&key))).unwrap();
    let report = f.verify().await;
    assert_eq!(
        named(&report),
        vec![(BreakKind::UnsignedRecords, range(5, 8), key)]
    );
}

#[tokio::test]
async fn two_swapped_records_recompressed() {
    let f = Fixture::new().await;
    let key = f.middle_segment();
    rewrite_lines(&f.path(&key), |lines| lines.swap(1, 2));
    let report = f.verify().await;
    assert_eq!(
        named(&report),
        vec![
            (BreakKind::SegmentChanged, range(5, 8), key.clone()),
            (BreakKind::Reordered, range(6, 7), key.clone()),
        ],
        "{:#?}",
        report.breaks
    );
    assert!(
        report.breaks[1].detail.contains("7, 6"),
        "{}",
        report.breaks[1]
    );
}

#[tokio::test]
async fn the_tail_of_a_segment_dropped() {
    let f = Fixture::new().await;
    let key = f.middle_segment();
    rewrite_lines(&f.path(&key), |lines| lines.truncate(2));
    let report = f.verify().await;
    assert_eq!(
        named(&report),
        vec![
            (BreakKind::SegmentChanged, range(5, 8), key.clone()),
            (BreakKind::Truncated, range(7, 8), key.clone()),
        ],
        "{:#?}",
        report.breaks
    );
}

#[tokio::test]
async fn a_manifest_replaced_by_one_signed_with_another_key() {
    let f = Fixture::new().await;
    let key = f.middle_segment();
    let mkey = manifest_key(&key);
    // The forger rewrites the segment and signs a matching manifest with their own key.
    rewrite_lines(&f.path(&key), |lines| lines.truncate(3));
    let data = std::fs::read(f.path(&key)).unwrap();
    let mut m = SignedManifest::parse(&std::fs::read(f.path(&mkey)).unwrap())
        .unwrap()
        .manifest;
    m.records.truncate(3);
    m.count = 3;
    m.last_seq = 7;
    m.segment_sha256 = sha256_hex(&data);
    std::fs::write(f.path(&mkey), sign_manifest(&m, &signing_key(9))).unwrap();
    let report = f.verify().await;
    assert_eq!(
        named(&report),
        vec![
            (BreakKind::BadSignature, range(5, 7), mkey.clone()),
            // Seq 8 is now listed by nothing: a gap before 9.
            (
                BreakKind::Missing,
                range(8, 8),
                session_prefix(f.done.session)
            ),
        ],
        "{:#?}",
        report.breaks
    );
    assert!(report.breaks[0].detail.contains("not trusted"));
    // With the forger's key trusted too, only the gap remains.
    let report = verify(
        &f.store,
        &[
            signing_key(1).verifying_key(),
            signing_key(9).verifying_key(),
        ],
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        named(&report),
        vec![(
            BreakKind::Missing,
            range(8, 8),
            session_prefix(f.done.session)
        )]
    );
}

#[tokio::test]
async fn a_chain_broken_before_sealing() {
    // A record altered before it reached the archiver (say, in a spool): the
    // manifest signs what it got, and the chain shows where it was changed.
    let dir = tempfile::tempdir().unwrap();
    let mut s = complete_session(2);
    let altered = String::from_utf8(s.records[1].clone())
        .unwrap()
        .replace("select 0", "select 7");
    assert_ne!(altered.as_bytes(), s.records[1]);
    s.records[1] = altered.into_bytes();
    let store = archived(dir.path(), &[&s], 100).await;
    let report = verify(&store, &[signing_key(1).verifying_key()], None, None)
        .await
        .unwrap();
    assert_eq!(
        named(&report),
        vec![(
            BreakKind::ChainBroken,
            range(3, 3),
            segment_key(s.session, 1, 6, "w1")
        )],
        "{:#?}",
        report.breaks
    );
}

#[tokio::test]
async fn different_records_for_one_seq_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let s = complete_session(1);
    let store = LocalDir::new(dir.path());
    let mut a = archive(store.clone(), "wa", 100);
    let mut b = archive(store.clone(), "wb", 100);
    for r in &s.records {
        a.ingest(r, at(0)).await.unwrap();
    }
    a.flush().await.unwrap();
    let mut forged = ChainBuilder::new(s.session);
    forged.started("admin", "someone-else");
    // `b` knows the session from the store: seq 1 is a duplicate to it...
    assert_eq!(
        b.ingest(&forged.records[0], at(0)).await.unwrap(),
        Ingested::Archived
    );
    // ...so the forged copy is written by a segmenter that never looked.
    let mut c = gatehouse_archiver::Segmenter::new(Default::default(), "wc", signing_key(1));
    c.push(&forged.records[0], at(0)).unwrap();
    for sealed in c.seal_all() {
        store.put(&sealed.key, &sealed.data).await.unwrap();
        store
            .put(&sealed.manifest_key, &sealed.manifest_bytes)
            .await
            .unwrap();
    }
    let report = verify(&store, &[signing_key(1).verifying_key()], None, None)
        .await
        .unwrap();
    let kinds: Vec<_> = named(&report).into_iter().map(|(k, s, _)| (k, s)).collect();
    assert_eq!(
        kinds,
        vec![(BreakKind::Conflict, range(1, 1))],
        "{:#?}",
        report.breaks
    );
}

#[tokio::test]
async fn interleaved_archivers_verify_clean() {
    let dir = tempfile::tempdir().unwrap();
    let s = complete_session(4);
    let store = LocalDir::new(dir.path());
    let mut a = archive(store.clone(), "wa", 100);
    let mut b = archive(store.clone(), "wb", 100);
    for (i, r) in s.records.iter().enumerate() {
        let which = if i % 2 == 0 { &mut a } else { &mut b };
        which.ingest(r, at(0)).await.unwrap();
    }
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    let keys = store.list(&session_prefix(s.session)).await.unwrap();
    assert_eq!(keys.len(), 4, "{keys:?}");
    let report = verify(&store, &[signing_key(1).verifying_key()], None, None)
        .await
        .unwrap();
    assert!(report.is_clean(), "{:#?}", report.breaks);
    assert_eq!(status(&report, s.session), SessionStatus::Complete);
}

#[tokio::test]
async fn a_restarted_archiver_refed_the_same_events_writes_no_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let s = complete_session(5);
    let store = LocalDir::new(dir.path());
    let mut first = archive(store.clone(), "first", 100);
    for r in &s.records[..6] {
        first.ingest(r, at(0)).await.unwrap();
    }
    let acked = first.flush().await.unwrap();
    assert_eq!(acked.len(), 6);
    drop(first); // "crash" after acknowledging 1..=6

    // Redelivery from the start (JetStream, or a spool replayed) to a new instance.
    let mut second = archive(store.clone(), "second", 100);
    let mut states = Vec::new();
    for r in &s.records {
        states.push(second.ingest(r, at(1)).await.unwrap());
    }
    assert_eq!(
        &states[..6],
        &[Ingested::Archived; 6],
        "ack redelivered copies at once"
    );
    assert_eq!(&states[6..], &[Ingested::Pending; 6]);
    let acked = second.flush().await.unwrap();
    let seqs: Vec<u64> = acked.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (7..=12).collect::<Vec<_>>());

    let mut listed = 0;
    for key in store.list(&session_prefix(s.session)).await.unwrap() {
        if key.ends_with(".manifest") {
            let m = SignedManifest::parse(&store.get(&key).await.unwrap().unwrap()).unwrap();
            listed += m.manifest.count;
        }
    }
    assert_eq!(listed, 12, "every record archived exactly once");
    let report = verify(&store, &[signing_key(1).verifying_key()], None, None)
        .await
        .unwrap();
    assert!(report.is_clean(), "{:#?}", report.breaks);
    assert!(report.warnings.is_empty());
    assert_eq!(status(&report, s.session), SessionStatus::Complete);
}

/// A store whose manifest writes fail on demand: the crash window between the
/// two writes of a segment.
struct FailingManifests {
    inner: LocalDir,
    fail: std::sync::atomic::AtomicBool,
}

impl SegmentStore for FailingManifests {
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        if key.ends_with(".manifest") && self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Io {
                op: "put",
                key: key.into(),
                source: std::io::Error::other("disk full"),
            });
        }
        self.inner.put(key, bytes).await
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix).await
    }
}

#[tokio::test]
async fn records_are_acknowledged_only_once_segment_and_manifest_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let s = complete_session(1);
    let store = std::sync::Arc::new(FailingManifests {
        inner: LocalDir::new(dir.path()),
        fail: true.into(),
    });
    let mut a = gatehouse_archiver::Archive::new(
        store.clone(),
        gatehouse_archiver::Segmenter::new(Default::default(), "w1", signing_key(1)),
    );
    for r in &s.records {
        assert_eq!(a.ingest(r, at(0)).await.unwrap(), Ingested::Pending);
    }
    assert!(a.tick(at(0)).await.is_err(), "the manifest write fails");
    // The segment is there, unsigned; nothing may be acknowledged yet.
    let report = verify(&store, &[signing_key(1).verifying_key()], None, None)
        .await
        .unwrap();
    assert_eq!(
        named(&report),
        vec![(
            BreakKind::UnsignedRecords,
            range(1, 4),
            segment_key(s.session, 1, 4, "w1")
        )]
    );
    store.fail.store(false, std::sync::atomic::Ordering::SeqCst);
    let acked = a.tick(at(1)).await.unwrap();
    let expected: Vec<RecordId> = (1..=4)
        .map(|seq| RecordId {
            session: s.session,
            seq,
        })
        .collect();
    assert_eq!(acked, expected);
    let report = verify(&store, &[signing_key(1).verifying_key()], None, None)
        .await
        .unwrap();
    assert!(report.is_clean(), "{:#?}", report.breaks);
}

#[tokio::test]
async fn verify_selects_sessions_by_start_time() {
    let f = Fixture::new().await;
    let started = gatehouse_archiver::verify::session_start(f.done.session).unwrap();
    let key = [signing_key(1).verifying_key()];
    let after = started + std::time::Duration::from_secs(3600);
    let report = verify(&f.store, &key, Some(after), None).await.unwrap();
    assert!(report.sessions.is_empty());
    let report = verify(&f.store, &key, Some(started), Some(after))
        .await
        .unwrap();
    assert_eq!(report.sessions.len(), 2);
    let report = verify(&f.store, &key, None, Some(started)).await.unwrap();
    assert!(report.sessions.is_empty(), "until is exclusive");
}
