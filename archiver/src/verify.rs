//! `gatehouse verify`: checks signatures, objects, records, order and hash chains
//! of archived sessions, and names every break.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, SystemTime};

use ed25519_dalek::VerifyingKey;
use gatehouse_schemas::evidence::GENESIS;
use serde::Serialize;
use uuid::Uuid;

use crate::error::ArchiveError;
use crate::keys::hex;
use crate::scan::{Emitter, Fetched, Gate, Line, NoVisitor, Prefetch, ReadDigest, Visitor};
use crate::segment::{
    Head, Manifest, ObjectKind, SESSIONS_PREFIX, SignedManifest, decode_segment, manifest_key,
    parse_key, session_prefix, sha256_hex,
};
use crate::store::SegmentStore;
use records::{Finding, check_records, hash32, parse_hex32, ranges};

mod records;

/// What is wrong. The wire names (snake_case) are part of `verify --json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// A manifest object is not two lines of the manifest JSON.
    BadManifest,
    /// A manifest is signed by no trusted key, or its signature does not verify.
    BadSignature,
    /// A signed manifest sits in another session's folder or under another name
    /// than its segment's, or a record names another session.
    Misplaced,
    /// A manifest names a segment object that is not there.
    MissingSegmentObject,
    /// A segment object's SHA-256 differs from its manifest's.
    SegmentChanged,
    /// A segment object is not gzip NDJSON.
    UnreadableSegment,
    /// A record's bytes differ from the hash its manifest lists for that seq.
    RecordChanged,
    /// A segment holds a record its manifest does not list (or one twice).
    ExtraRecord,
    /// Records its manifest lists are missing from the middle of a segment.
    RecordRemoved,
    /// Records its manifest lists are missing from the end of a segment.
    Truncated,
    /// A segment's records are not in its manifest's (ascending) order.
    Reordered,
    /// Two signed manifests list different records for the same seq.
    Conflict,
    /// No manifest or segment holds these seqs: a gap in the chain (a deleted segment).
    Missing,
    /// A segment without a manifest holds records no manifest lists (a deleted
    /// manifest, or an archiver caught between its two writes).
    UnsignedRecords,
    /// Seq 1 is not a `session_started` event.
    BadStart,
    /// A record's `prev` is not the hash of the record before it (`GENESIS` for seq 1).
    ChainBroken,
    /// Records follow the session's `session_ended`.
    AfterEnd,
}

impl BreakKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadManifest => "bad_manifest",
            Self::BadSignature => "bad_signature",
            Self::Misplaced => "misplaced",
            Self::MissingSegmentObject => "missing_segment_object",
            Self::SegmentChanged => "segment_changed",
            Self::UnreadableSegment => "unreadable_segment",
            Self::RecordChanged => "record_changed",
            Self::ExtraRecord => "extra_record",
            Self::RecordRemoved => "record_removed",
            Self::Truncated => "truncated",
            Self::Reordered => "reordered",
            Self::Conflict => "conflict",
            Self::Missing => "missing",
            Self::UnsignedRecords => "unsigned_records",
            Self::BadStart => "bad_start",
            Self::ChainBroken => "chain_broken",
            Self::AfterEnd => "after_end",
        }
    }
}

impl std::fmt::Display for BreakKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An inclusive range of seqs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SeqRange {
    /// First seq.
    pub first: u64,
    /// Last seq (equal to `first` for one record).
    pub last: u64,
}

impl SeqRange {
    /// One seq.
    pub fn one(seq: u64) -> Self {
        Self {
            first: seq,
            last: seq,
        }
    }
}

impl std::fmt::Display for SeqRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}..={}", self.first, self.last)
        }
    }
}

/// One break of the evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    /// The session.
    pub session: Uuid,
    /// What is wrong.
    pub kind: BreakKind,
    /// The seqs concerned, when known.
    pub seqs: Option<SeqRange>,
    /// The object concerned (for `missing`, the session's folder).
    pub key: String,
    /// A sentence for people.
    pub detail: String,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "session {} {}", self.session, self.kind)?;
        if let Some(s) = self.seqs {
            write!(f, " seq {s}")?;
        }
        write!(f, " at {}: {}", self.key, self.detail)
    }
}

/// Something odd that is not a break (nothing is lost or altered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The session, when the object is in a session's folder.
    pub session: Option<Uuid>,
    /// The object.
    pub key: String,
    /// A sentence for people.
    pub detail: String,
}

/// The state of a verified session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Intact from `session_started` to `session_ended`.
    Complete,
    /// Intact, but no `session_ended`: live, or its gateway stopped without
    /// recording the end ("started, never completed"). Not a break.
    Open,
    /// At least one break.
    Broken,
}

/// One session's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionReport {
    /// The session.
    pub session: Uuid,
    /// When it started: the `ts` of its seq 1, else the UUIDv7 time.
    pub started: Option<String>,
    /// The verdict.
    pub status: SessionStatus,
    /// Distinct records verified.
    pub records: u64,
    /// The highest seq any object lists.
    pub last_seq: u64,
    /// Manifests read.
    pub segments: u64,
}

/// The result of [`verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Every session in range, by session id (so by start time).
    pub sessions: Vec<SessionReport>,
    /// Every break found, by session.
    pub breaks: Vec<Break>,
    /// Oddities that lose or alter nothing.
    pub warnings: Vec<Warning>,
    /// Distinct records verified, over all sessions.
    pub records: u64,
    /// Manifests read.
    pub segments: u64,
    /// Objects read (manifests and segments).
    pub objects: u64,
    /// Bytes read, as stored.
    pub bytes: u64,
    /// Hex SHA-256 over `sha256sum`'s listing of the objects read, sorted by
    /// key (`<hex>  <key>` lines): what the reader read, named in one value.
    pub digest: String,
}

impl Report {
    /// No break anywhere (open sessions and warnings allowed).
    pub fn is_clean(&self) -> bool {
        self.breaks.is_empty()
    }

    /// Sessions without a `session_ended` and without a break.
    pub fn open_sessions(&self) -> impl Iterator<Item = &SessionReport> {
        self.sessions
            .iter()
            .filter(|s| s.status == SessionStatus::Open)
    }
}

/// The UUIDv7 time of a session id; `None` for other versions.
pub fn session_start(session: Uuid) -> Option<SystemTime> {
    if session.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = session.get_timestamp()?.to_unix();
    Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Whether `start` is in `[since, until)`.
pub(crate) fn in_range(
    start: SystemTime,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
) -> bool {
    since.is_none_or(|s| start >= s) && until.is_none_or(|u| start < u)
}

/// The keys under `sessions/`, by session; stray objects become warnings.
pub(crate) async fn sessions_in_store<S: SegmentStore>(
    store: &S,
    warnings: &mut Vec<Warning>,
) -> Result<BTreeMap<Uuid, Vec<String>>, ArchiveError> {
    let mut by_session: BTreeMap<Uuid, Vec<String>> = BTreeMap::new();
    for key in store.list(SESSIONS_PREFIX).await? {
        match parse_key(&key) {
            Some(name) => by_session.entry(name.session).or_default().push(key),
            None => warnings.push(Warning {
                session: key
                    .strip_prefix(SESSIONS_PREFIX)
                    .and_then(|r| r.split('/').next())
                    .and_then(|s| Uuid::parse_str(s).ok()),
                key,
                detail: "not a segment or manifest; ignored".into(),
            }),
        }
    }
    Ok(by_session)
}

/// Verifies every session whose start is in `[since, until)`, trusting manifests
/// signed by `keys`.
///
/// A session's start is the time in its UUIDv7 id (the ingress mints v7 ids),
/// so sessions out of range are skipped without reading them; a session whose
/// id is not v7 is read, and placed by the `ts` of its seq 1 (or its earliest
/// manifest `first_ts`).
pub async fn verify<S: SegmentStore>(
    store: &S,
    keys: &[VerifyingKey],
    since: Option<SystemTime>,
    until: Option<SystemTime>,
) -> Result<Report, ArchiveError> {
    scan(store, keys, since, until, &mut NoVisitor).await
}

/// [`verify`], handing every record that verifies to `visitor` as it goes (see
/// [`crate::scan`]): one pass over the objects, each fetched once, memory
/// bounded by a few objects and one session's record hashes.
///
/// A record is handed on once its bytes match a manifest signed by a trusted
/// key, before the session's cross-segment checks (chain, gaps, conflicts)
/// are done: those breaks are in the report, and a caller that counts records
/// must say that its figures stand on broken evidence when the report is not
/// clean.
pub async fn scan<S: SegmentStore>(
    store: &S,
    keys: &[VerifyingKey],
    since: Option<SystemTime>,
    until: Option<SystemTime>,
    visitor: &mut dyn Visitor,
) -> Result<Report, ArchiveError> {
    let mut report = Report::default();
    let by_session = sessions_in_store(store, &mut report.warnings).await?;
    let selected: Vec<(Uuid, Vec<String>)> = by_session
        .into_iter()
        .filter(|(s, _)| session_start(*s).is_none_or(|t| in_range(t, since, until)))
        .collect();
    let order = selected
        .iter()
        .flat_map(|(_, k)| k.iter().cloned())
        .collect();
    let mut fetch = Prefetch::new(store, order);
    let mut digest = ReadDigest::default();
    for (session, keys_of) in selected {
        let start = session_start(session);
        let gate = match start {
            Some(_) => Gate::Open,
            None if since.is_none() && until.is_none() => Gate::Open,
            None => Gate::ByFirstTs(since, until),
        };
        let mut breaks = Vec::new();
        let mut warnings = Vec::new();
        let mut emit = Emitter::new(visitor, session, gate);
        let mut s = verify_session(
            &mut fetch,
            keys,
            session,
            &keys_of,
            &mut breaks,
            &mut warnings,
            &mut emit,
        )
        .await?;
        if start.is_none() && (since.is_some() || until.is_some()) {
            let placed = s
                .started
                .as_deref()
                .or(s.earliest_ts.as_deref())
                .and_then(|ts| humantime::parse_rfc3339_weak(ts).ok());
            if !placed.is_some_and(|t| in_range(t, since, until)) {
                fetch.read.clear();
                continue;
            }
        }
        if s.started.is_none() {
            s.started = start.map(|t| humantime::format_rfc3339_micros(t).to_string());
        }
        let status = if !breaks.is_empty() {
            SessionStatus::Broken
        } else if s.ended {
            SessionStatus::Complete
        } else {
            SessionStatus::Open
        };
        let verdict = SessionReport {
            session,
            started: s.started,
            status,
            records: s.records,
            last_seq: s.last_seq,
            segments: s.segments,
        };
        emit.finish(&verdict, &breaks);
        report.objects += fetch.read.len() as u64;
        digest.add(&mut fetch.read);
        report.records += verdict.records;
        report.segments += verdict.segments;
        report.sessions.push(verdict);
        report.breaks.extend(breaks);
        report.warnings.extend(warnings);
    }
    report.bytes = fetch.bytes;
    report.digest = digest.finish();
    Ok(report)
}

/// What `verify_session` learnt besides breaks.
struct Outcome {
    started: Option<String>,
    earliest_ts: Option<String>,
    ended: bool,
    records: u64,
    last_seq: u64,
    segments: u64,
}

/// What a record is, for the session's checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Started,
    Ended,
    Other,
}

/// A record whose bytes match a signed manifest: what the session's checks
/// need of it (not its bytes, which went to the visitor).
struct Verified {
    hash: [u8; 32],
    /// `None`: no `prev`, or not 64 hex digits.
    prev: Option<[u8; 32]>,
    kind: Kind,
    /// Index into the session's segment keys.
    segment: usize,
}

/// The seqs from 1 to the highest in `present` that it lacks, as ranges: by
/// walking what is there, never what is not (a forged manifest may list seq
/// 2^64 - 1, and counting up to it never ended).
fn gaps(present: &BTreeSet<u64>) -> Vec<SeqRange> {
    let mut out = Vec::new();
    let mut next = 1u64;
    for &seq in present {
        if seq > next {
            out.push(SeqRange {
                first: next,
                last: seq - 1,
            });
        }
        next = next.max(seq.saturating_add(1));
    }
    out
}

fn range_of(m: &Manifest) -> Option<SeqRange> {
    Some(SeqRange {
        first: m.first_seq,
        last: m.last_seq,
    })
}

async fn verify_session<S: SegmentStore>(
    fetch: &mut Prefetch<'_, S>,
    trusted: &[VerifyingKey],
    session: Uuid,
    keys: &[String],
    breaks: &mut Vec<Break>,
    warnings: &mut Vec<Warning>,
    emit: &mut Emitter<'_>,
) -> Result<Outcome, ArchiveError> {
    let mut brk = |kind, seqs, key: &str, detail: String| {
        breaks.push(Break {
            session,
            kind,
            seqs,
            key: key.to_owned(),
            detail,
        })
    };
    let named: Vec<_> = keys
        .iter()
        .filter_map(|k| parse_key(k).map(|n| (k, n)))
        .collect();
    let mut referenced = HashSet::new();
    // Every seq some manifest (signed or not) lists: what the gap check is over.
    let mut covered = BTreeSet::new();
    // Hashes of seqs as signed manifests list them.
    let mut signed_hash: BTreeMap<u64, [u8; 32]> = BTreeMap::new();
    let mut conflicts = BTreeSet::new();
    let mut verified: BTreeMap<u64, Verified> = BTreeMap::new();
    let mut segment_keys: Vec<String> = Vec::new();
    let mut started: Option<String> = None;
    let mut first_kind = String::new();
    let mut earliest_ts: Option<String> = None;
    let mut segments = 0;

    for (mkey, name) in named.iter().filter(|(_, n)| n.kind == ObjectKind::Manifest) {
        let bytes = match fetch.get(mkey).await? {
            Fetched::Bytes { bytes, .. } => bytes,
            Fetched::Missing | Fetched::Segment { .. } => continue,
        };
        segments += 1;
        let parsed = match SignedManifest::parse(&bytes) {
            Ok(p) => p,
            Err(e) => {
                let seqs = Some(SeqRange {
                    first: name.first_seq,
                    last: name.last_seq,
                });
                brk(BreakKind::BadManifest, seqs, mkey, e.to_string());
                continue;
            }
        };
        let m = &parsed.manifest;
        referenced.insert(m.segment.clone());
        covered.extend(m.records.iter().map(|(s, _)| *s));
        let mut trusted_here = true;
        if let Err(problem) = parsed.verify(trusted) {
            brk(
                BreakKind::BadSignature,
                range_of(m),
                mkey,
                problem.to_string(),
            );
            trusted_here = false;
        }
        let seg_session = parse_key(&m.segment).map(|n| n.session);
        if m.session_id != session
            || seg_session != Some(session)
            || manifest_key(&m.segment) != **mkey
        {
            brk(
                BreakKind::Misplaced,
                range_of(m),
                mkey,
                format!(
                    "manifest of session {} for segment {} found at this key",
                    m.session_id, m.segment
                ),
            );
            trusted_here = false;
        }
        if trusted_here {
            if earliest_ts.as_ref().is_none_or(|t| m.first_ts < *t) {
                earliest_ts = Some(m.first_ts.clone());
            }
            for (seq, hash) in &m.records {
                let hash = hash32(hash);
                match signed_hash.get(seq) {
                    Some(h) if *h != hash => {
                        if conflicts.insert(*seq) {
                            brk(
                                BreakKind::Conflict,
                                Some(SeqRange::one(*seq)),
                                mkey,
                                format!(
                                    "lists record {} for seq {seq}; another manifest lists {}",
                                    hex(&hash),
                                    hex(h)
                                ),
                            );
                        }
                    }
                    Some(_) => {}
                    None => {
                        signed_hash.insert(*seq, hash);
                    }
                }
            }
        }
        let (digest, lines) = match fetch.get(&m.segment).await? {
            Fetched::Segment { sha256, lines, .. } => (sha256, lines),
            // Named as no segment is: read it as one all the same.
            Fetched::Bytes { sha256, bytes } => (
                sha256,
                decode_segment(&bytes).map(|l| {
                    l.into_iter()
                        .map(|bytes| Line {
                            hash: sha256_hex(&bytes),
                            bytes,
                        })
                        .collect()
                }),
            ),
            Fetched::Missing => {
                brk(
                    BreakKind::MissingSegmentObject,
                    range_of(m),
                    &m.segment,
                    "the manifest names this segment; it is not in the store".into(),
                );
                continue;
            }
        };
        if digest != m.segment_sha256 {
            brk(
                BreakKind::SegmentChanged,
                range_of(m),
                &m.segment,
                format!(
                    "SHA-256 is {digest}, the manifest says {}",
                    m.segment_sha256
                ),
            );
        }
        let lines = match lines {
            Ok(l) => l,
            Err(e) => {
                brk(
                    BreakKind::UnreadableSegment,
                    range_of(m),
                    &m.segment,
                    e.to_string(),
                );
                continue;
            }
        };
        let segment = segment_keys.len();
        segment_keys.push(m.segment.clone());
        for found in check_records(m, &lines) {
            match found {
                Finding::Intact { seq, line } => {
                    let line = &lines[line];
                    let Ok(head) = Head::parse(&line.bytes) else {
                        continue;
                    };
                    if head.session_id != session {
                        brk(
                            BreakKind::Misplaced,
                            Some(SeqRange::one(seq)),
                            &m.segment,
                            format!("record names session {}", head.session_id),
                        );
                        continue;
                    }
                    if trusted_here && !conflicts.contains(&seq) && !verified.contains_key(&seq) {
                        let kind = match &*head.kind {
                            "session_started" => Kind::Started,
                            "session_ended" => Kind::Ended,
                            _ => Kind::Other,
                        };
                        if seq == 1 {
                            started = Some(head.ts.to_string());
                            first_kind = head.kind.to_string();
                        }
                        verified.insert(
                            seq,
                            Verified {
                                hash: hash32(&line.hash),
                                prev: head.prev.as_deref().and_then(parse_hex32),
                                kind,
                                segment,
                            },
                        );
                        emit.emit(seq, &line.bytes);
                    }
                }
                Finding::Break(kind, seqs, detail) => brk(kind, Some(seqs), &m.segment, detail),
            }
        }
    }

    // Segments no manifest names: left by an archiver between its two writes
    // (harmless once their records are re-sealed elsewhere), or by a deleted manifest.
    let mut unsigned = BTreeSet::new();
    for (skey, _) in named.iter().filter(|(_, n)| n.kind == ObjectKind::Segment) {
        if referenced.contains(*skey) {
            continue;
        }
        let seqs: BTreeSet<u64> = match fetch.get(skey).await? {
            Fetched::Segment { lines, .. } => lines
                .map(|lines| {
                    lines
                        .iter()
                        .filter_map(|l| Head::parse(&l.bytes).ok().map(|h| h.seq))
                        .collect()
                })
                .unwrap_or_default(),
            Fetched::Missing | Fetched::Bytes { .. } => continue,
        };
        let uncovered: Vec<u64> = seqs.difference(&covered).copied().collect();
        if uncovered.is_empty() {
            warnings.push(Warning {
                session: Some(session),
                key: (*skey).clone(),
                detail:
                    "segment without a manifest; every record in it is signed in another segment"
                        .into(),
            });
        } else {
            for r in ranges(uncovered.iter().copied()) {
                brk(
                    BreakKind::UnsignedRecords,
                    Some(r),
                    skey,
                    "no manifest lists these records (manifest deleted, or a write in progress)"
                        .into(),
                );
            }
            unsigned.extend(uncovered);
        }
    }

    let present: BTreeSet<u64> = covered.union(&unsigned).copied().collect();
    let last_seq = present.last().copied().unwrap_or(0);
    let prefix = session_prefix(session);
    for r in gaps(&present) {
        brk(
            BreakKind::Missing,
            Some(r),
            &prefix,
            "no segment holds these records (a segment and its manifest were deleted)".into(),
        );
    }

    // Neither copy of a conflicting seq is evidence of anything.
    for seq in &conflicts {
        verified.remove(seq);
        signed_hash.remove(seq);
    }
    if !verified.contains_key(&1) {
        started = None;
    }
    let mut ended_at = None;
    for (&seq, v) in &verified {
        if seq == 1 && v.kind != Kind::Started {
            brk(
                BreakKind::BadStart,
                Some(SeqRange::one(1)),
                &segment_keys[v.segment],
                format!("seq 1 is {first_kind:?}, not session_started"),
            );
        }
        if v.kind == Kind::Ended && ended_at.is_none() {
            ended_at = Some(seq);
        }
        let expected = match seq.checked_sub(1) {
            Some(0) => Some([0u8; 32]),
            Some(before) => verified
                .get(&before)
                .map(|p| p.hash)
                .or_else(|| signed_hash.get(&before).copied()),
            // Seq 0 is no record of a chain; nothing comes before it.
            None => None,
        };
        if let Some(expected) = expected
            && v.prev != Some(expected)
        {
            let shown = if seq == 1 {
                GENESIS.to_owned()
            } else {
                hex(&expected)
            };
            brk(
                BreakKind::ChainBroken,
                Some(SeqRange::one(seq)),
                &segment_keys[v.segment],
                format!(
                    "prev is {:?}; the record before hashes to {shown}",
                    v.prev.map(|p| hex(&p)).unwrap_or_default()
                ),
            );
        }
    }
    if let Some(end) = ended_at
        && last_seq > end
    {
        brk(
            BreakKind::AfterEnd,
            Some(SeqRange {
                first: end + 1,
                last: last_seq,
            }),
            &prefix,
            format!("session_ended is seq {end}"),
        );
    }
    Ok(Outcome {
        started,
        earliest_ts,
        ended: ended_at.is_some(),
        records: verified.len() as u64,
        last_seq,
        segments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_walk_the_seqs_present_not_the_range() {
        // Found by reasoning about the `segment` fuzz target's raw mode: a
        // manifest (signed or not) listing seq 2^64 - 1 made verify count to it.
        let present: BTreeSet<u64> = [0, 1, 2, 5, 9, u64::MAX].into();
        assert_eq!(
            gaps(&present),
            vec![
                SeqRange { first: 3, last: 4 },
                SeqRange { first: 6, last: 8 },
                SeqRange {
                    first: 10,
                    last: u64::MAX - 1
                },
            ]
        );
        assert_eq!(gaps(&[2, 3].into()), vec![SeqRange::one(1)]);
        assert_eq!(gaps(&BTreeSet::new()), vec![]);
        assert_eq!(gaps(&[1, 2].into()), vec![]);
    }
}
