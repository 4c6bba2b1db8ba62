//! Sealing: buffers records per session and cuts them into signed segments.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use ed25519_dalek::SigningKey;
use uuid::Uuid;

use crate::error::{ArchiveError, PushError};
use crate::segment::{
    Head, MANIFEST_VERSION, Manifest, ObjectKind, SignedManifest, encode_segment, manifest_key,
    parse_key, segment_key, session_prefix, sha256_hex, sign_manifest,
};
use crate::store::SegmentStore;

/// When a session's open segment is sealed, and how long dedupe state is kept.
#[derive(Debug, Clone)]
pub struct SegmenterConfig {
    /// Seal at this many records.
    pub max_events: usize,
    /// Seal before the uncompressed records (with their newlines) would exceed
    /// this; a single larger record gets a segment of its own.
    pub max_bytes: usize,
    /// Seal when the first buffered record has waited this long.
    pub max_age: Duration,
    /// How many ended sessions' dedupe state to keep (least recently ended go first).
    pub remember_ended: usize,
    /// Forget a session with nothing buffered or in flight after this long without a record.
    pub forget_idle: Duration,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        Self {
            max_events: 10_000,
            max_bytes: 8 * 1024 * 1024,
            max_age: Duration::from_secs(60),
            remember_ended: 4096,
            forget_idle: Duration::from_secs(3600),
        }
    }
}

/// What [`Segmenter::push`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Buffered; it is archived once the segment holding it is put.
    Added,
    /// This session and seq was seen before. `archived`: it is already durably
    /// archived (acknowledge it now); otherwise it is buffered or sealed and not
    /// yet confirmed (acknowledge it with the first copy).
    Duplicate {
        /// Whether the first copy is confirmed archived.
        archived: bool,
    },
}

/// A sealed segment and its signed manifest, ready to be put (segment first).
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The segment's object key.
    pub key: String,
    /// The gzip NDJSON bytes.
    pub data: Vec<u8>,
    /// The manifest's object key.
    pub manifest_key: String,
    /// The two-line signed manifest.
    pub manifest_bytes: Vec<u8>,
    /// The session.
    pub session: Uuid,
    /// The seqs it holds, ascending.
    pub seqs: Vec<u64>,
}

/// Sets of seqs as inclusive ranges: a session's archived seqs are nearly
/// always one range, whatever its length.
#[derive(Debug, Default, Clone)]
struct SeqRanges(BTreeMap<u64, u64>);

impl SeqRanges {
    fn contains(&self, seq: u64) -> bool {
        self.0
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &end)| end >= seq)
    }

    fn insert(&mut self, seq: u64) {
        if self.contains(seq) {
            return;
        }
        let mut start = seq;
        let mut end = seq;
        if let Some((&s, &e)) = self.0.range(..seq).next_back()
            && e + 1 == seq
        {
            start = s;
        }
        if let Some(&e) = self.0.get(&(seq + 1)) {
            self.0.remove(&(seq + 1));
            end = e;
        }
        self.0.insert(start, end);
    }
}

/// Records waiting to be sealed into one segment.
#[derive(Debug)]
struct Buffer {
    records: BTreeMap<u64, Vec<u8>>,
    bytes: usize,
    opened: SystemTime,
    first_ts: String,
    last_ts: String,
}

impl Buffer {
    fn new(opened: SystemTime) -> Self {
        Self {
            records: BTreeMap::new(),
            bytes: 0,
            opened,
            first_ts: String::new(),
            last_ts: String::new(),
        }
    }

    fn insert(&mut self, seq: u64, record: &[u8], ts: &str) {
        if self.records.is_empty() || ts < self.first_ts.as_str() {
            self.first_ts = ts.to_owned();
        }
        if self.records.is_empty() || ts > self.last_ts.as_str() {
            self.last_ts = ts.to_owned();
        }
        self.bytes += record.len() + 1;
        self.records.insert(seq, record.to_vec());
    }
}

/// What the segmenter knows of one session.
#[derive(Debug)]
struct SessionState {
    /// The segment being filled.
    open: Option<Buffer>,
    /// Cut, waiting for the next `seal_due`.
    ready: Vec<Buffer>,
    /// Sealed and handed out, not yet confirmed by `mark_archived`.
    in_flight: BTreeSet<u64>,
    /// Confirmed archived (by this segmenter's caller or found in the store).
    archived: SeqRanges,
    ended: bool,
    last_activity: SystemTime,
}

impl SessionState {
    fn new(now: SystemTime) -> Self {
        Self {
            open: None,
            ready: Vec::new(),
            in_flight: BTreeSet::new(),
            archived: SeqRanges::default(),
            ended: false,
            last_activity: now,
        }
    }

    fn buffered(&self, seq: u64) -> Option<&Vec<u8>> {
        self.open
            .iter()
            .chain(&self.ready)
            .find_map(|b| b.records.get(&seq))
    }

    fn idle(&self) -> bool {
        self.open.is_none() && self.ready.is_empty() && self.in_flight.is_empty()
    }

    fn cut(&mut self) {
        if let Some(b) = self.open.take() {
            self.ready.push(b);
        }
    }
}

/// Buffers evidence records per session and seals them into signed segments.
///
/// Not thread-safe by itself: one task owns it (see [`crate::archive::Archive`]).
#[derive(Debug)]
pub struct Segmenter {
    config: SegmenterConfig,
    writer: String,
    key: SigningKey,
    sessions: HashMap<Uuid, SessionState>,
    /// Ended sessions, least recently ended first.
    ended: VecDeque<Uuid>,
}

/// A short random id for an archiver instance: 12 hex digits.
pub fn new_writer_id() -> String {
    let mut b = [0u8; 6];
    rand::fill(&mut b);
    crate::keys::hex(&b)
}

impl Segmenter {
    /// A segmenter writing as `writer` (see [`new_writer_id`]; letters, digits,
    /// `_` and `-` only) and signing with `key`.
    ///
    /// # Panics
    /// When `writer` is empty or has other characters: it is part of object keys.
    pub fn new(config: SegmenterConfig, writer: impl Into<String>, key: SigningKey) -> Self {
        let writer = writer.into();
        assert!(
            !writer.is_empty()
                && writer
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "writer id {writer:?} must be letters, digits, '_' or '-'"
        );
        Self {
            config,
            writer,
            key,
            sessions: HashMap::new(),
            ended: VecDeque::new(),
        }
    }

    /// This instance's writer id.
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// Whether this segmenter holds state for `session` (so a restart lookup is not needed).
    pub fn knows(&self, session: Uuid) -> bool {
        self.sessions.contains_key(&session)
    }

    /// Records buffered and not yet sealed, over all sessions.
    pub fn buffered(&self) -> usize {
        self.sessions
            .values()
            .flat_map(|s| s.open.iter().chain(&s.ready))
            .map(|b| b.records.len())
            .sum()
    }

    /// Buffers one record (its exact bytes, without a trailing newline).
    pub fn push(&mut self, record: &[u8], now: SystemTime) -> Result<Pushed, PushError> {
        let head = Head::parse(record).map_err(PushError::NotAnEvent)?;
        let (session, seq) = (head.session_id, head.seq);
        if seq == 0 {
            return Err(PushError::ZeroSeq { session });
        }
        if record.contains(&b'\n') {
            return Err(PushError::LineBreak { session, seq });
        }
        let state = self
            .sessions
            .entry(session)
            .or_insert_with(|| SessionState::new(now));
        state.last_activity = now;
        if state.archived.contains(seq) {
            return Ok(Pushed::Duplicate { archived: true });
        }
        if state.in_flight.contains(&seq) {
            return Ok(Pushed::Duplicate { archived: false });
        }
        if let Some(existing) = state.buffered(seq) {
            return if existing.as_slice() == record {
                Ok(Pushed::Duplicate { archived: false })
            } else {
                Err(PushError::Conflict { session, seq })
            };
        }
        if state
            .open
            .as_ref()
            .is_some_and(|b| b.bytes + record.len() + 1 > self.config.max_bytes)
        {
            state.cut();
        }
        let buffer = state.open.get_or_insert_with(|| Buffer::new(now));
        buffer.insert(seq, record, &head.ts);
        if head.kind == "session_ended" {
            state.cut();
            if !state.ended {
                state.ended = true;
                self.ended.push_back(session);
            }
        } else if buffer.records.len() >= self.config.max_events {
            state.cut();
        }
        Ok(Pushed::Added)
    }

    /// Tells the segmenter these seqs of `session` are durably archived: by its
    /// own caller after a put, or found in the store by [`known_seqs`] after a
    /// restart. Re-fed copies of them are then [`Pushed::Duplicate`] and are
    /// never written again; copies already buffered are dropped.
    pub fn mark_archived(&mut self, session: Uuid, seqs: impl IntoIterator<Item = u64>) {
        let now = SystemTime::now();
        let state = self
            .sessions
            .entry(session)
            .or_insert_with(|| SessionState::new(now));
        for seq in seqs {
            state.in_flight.remove(&seq);
            state.archived.insert(seq);
            for b in state.open.iter_mut().chain(state.ready.iter_mut()) {
                if let Some(r) = b.records.remove(&seq) {
                    b.bytes -= r.len() + 1;
                }
            }
        }
        if state.open.as_ref().is_some_and(|b| b.records.is_empty()) {
            state.open = None;
        }
        state.ready.retain(|b| !b.records.is_empty());
    }

    /// Seals what is due at `now`: cut segments (session ended, full) and open
    /// segments whose first record has waited `max_age`. Also forgets idle state.
    pub fn seal_due(&mut self, now: SystemTime) -> Vec<Sealed> {
        self.cut_due(now).into_iter().map(Cut::seal).collect()
    }

    /// What [`Self::seal_due`] would seal, not yet compressed and signed: the
    /// caller seals each [`Cut`] where CPU-heavy work belongs (off an async
    /// runtime's worker threads). Their records count as handed out either way.
    pub fn cut_due(&mut self, now: SystemTime) -> Vec<Cut> {
        for state in self.sessions.values_mut() {
            let aged = state.open.as_ref().is_some_and(|b| {
                now.duration_since(b.opened).unwrap_or_default() >= self.config.max_age
            });
            if aged {
                state.cut();
            }
        }
        let cuts = self.take_ready(now);
        self.forget(now);
        cuts
    }

    /// Records in open segments (still filling), over all sessions.
    pub fn open_records(&self) -> usize {
        self.sessions
            .values()
            .filter_map(|s| s.open.as_ref())
            .map(|b| b.records.len())
            .sum()
    }

    /// Cuts open segments early, the longest open first, until at least
    /// `records` records are cut (or none is left open), and returns what is
    /// then ready, like [`Self::cut_due`]. For an archiver near its bound of
    /// unacknowledged records: a long-lived session's segment that seals only
    /// by age would otherwise hold its records, and the archiver would stop
    /// fetching, until `max_age`.
    pub fn cut_oldest(&mut self, records: usize, now: SystemTime) -> Vec<Cut> {
        let mut open: Vec<(SystemTime, Uuid)> = self
            .sessions
            .iter()
            .filter_map(|(id, s)| Some((s.open.as_ref()?.opened, *id)))
            .collect();
        open.sort();
        let mut cut = 0;
        for (_, id) in open {
            if cut >= records {
                break;
            }
            if let Some(state) = self.sessions.get_mut(&id) {
                cut += state.open.as_ref().map_or(0, |b| b.records.len());
                state.cut();
            }
        }
        self.take_ready(now)
    }

    /// Seals everything buffered (at shutdown).
    pub fn seal_all(&mut self) -> Vec<Sealed> {
        self.cut_all().into_iter().map(Cut::seal).collect()
    }

    /// [`Self::seal_all`]'s cuts, unsealed (see [`Self::cut_due`]).
    pub fn cut_all(&mut self) -> Vec<Cut> {
        for state in self.sessions.values_mut() {
            state.cut();
        }
        self.take_ready(SystemTime::now())
    }

    /// Segments cut and handed out (their records in flight), in key order.
    fn take_ready(&mut self, now: SystemTime) -> Vec<Cut> {
        let mut out = Vec::new();
        for (&session, state) in &mut self.sessions {
            for buffer in state.ready.drain(..) {
                state.in_flight.extend(buffer.records.keys().copied());
                out.push(Cut::new(session, buffer, &self.writer, &self.key, now));
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    fn forget(&mut self, now: SystemTime) {
        let idle_for = |s: &SessionState| now.duration_since(s.last_activity).unwrap_or_default();
        let forget_idle = self.config.forget_idle;
        self.sessions
            .retain(|_, s| !(s.idle() && idle_for(s) >= forget_idle));
        // Ended sessions beyond the bound go, oldest first, once nothing of theirs is pending.
        let mut keep = VecDeque::new();
        while self.ended.len() + keep.len() > self.config.remember_ended {
            let Some(session) = self.ended.pop_front() else {
                break;
            };
            match self.sessions.get(&session) {
                Some(s) if !s.idle() => keep.push_back(session),
                _ => {
                    self.sessions.remove(&session);
                }
            }
        }
        while let Some(s) = keep.pop_back() {
            self.ended.push_front(s);
        }
        let sessions = &self.sessions;
        self.ended.retain(|s| sessions.contains_key(s));
    }
}

/// A segment cut from a session's buffer, to be sealed: gzipped, hashed and its
/// manifest signed ([`Cut::seal`], milliseconds of CPU for a full segment).
#[derive(Debug)]
pub struct Cut {
    session: Uuid,
    buffer: Buffer,
    first: u64,
    last: u64,
    key: String,
    writer: String,
    signing_key: SigningKey,
    now: SystemTime,
}

impl Cut {
    fn new(session: Uuid, buffer: Buffer, writer: &str, key: &SigningKey, now: SystemTime) -> Self {
        let first = *buffer
            .records
            .keys()
            .next()
            .expect("a cut buffer is never empty");
        let last = *buffer
            .records
            .keys()
            .next_back()
            .expect("a cut buffer is never empty");
        Self {
            session,
            first,
            last,
            key: segment_key(session, first, last, writer),
            buffer,
            writer: writer.to_owned(),
            signing_key: key.clone(),
            now,
        }
    }

    /// Compresses, hashes and signs.
    pub fn seal(self) -> Sealed {
        let Self {
            session,
            buffer,
            first,
            last,
            key: seg_key,
            writer,
            signing_key: key,
            now,
        } = self;
        let data = encode_segment(buffer.records.values().map(Vec::as_slice));
        let manifest = Manifest {
            v: MANIFEST_VERSION,
            session_id: session,
            first_seq: first,
            last_seq: last,
            count: buffer.records.len() as u64,
            records: buffer
                .records
                .iter()
                .map(|(&seq, r)| (seq, sha256_hex(r)))
                .collect(),
            first_ts: buffer.first_ts,
            last_ts: buffer.last_ts,
            segment: seg_key.clone(),
            segment_sha256: sha256_hex(&data),
            created: humantime::format_rfc3339_micros(now).to_string(),
            writer,
        };
        Sealed {
            manifest_key: manifest_key(&seg_key),
            manifest_bytes: sign_manifest(&manifest, &key),
            key: seg_key,
            data,
            session,
            seqs: buffer.records.into_keys().collect(),
        }
    }
}

/// The seqs of `session` that manifests in `store` already list, for
/// [`Segmenter::mark_archived`] after a restart. Signatures are not checked
/// here (the archiver trusts its own store; `verify` is what checks).
pub async fn known_seqs<S: SegmentStore>(
    store: &S,
    session: Uuid,
) -> Result<BTreeSet<u64>, ArchiveError> {
    let mut seqs = BTreeSet::new();
    for key in store.list(&session_prefix(session)).await? {
        if !parse_key(&key).is_some_and(|n| n.kind == ObjectKind::Manifest) {
            continue;
        }
        let Some(bytes) = store.get(&key).await? else {
            continue;
        };
        let m = SignedManifest::parse(&bytes).map_err(|source| ArchiveError::Format {
            key: key.clone(),
            source,
        })?;
        seqs.extend(m.manifest.records.iter().map(|(seq, _)| *seq));
    }
    Ok(seqs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::decode_segment;

    const T0: Duration = Duration::from_secs(1_800_000_000);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(secs)
    }

    fn rec(session: Uuid, seq: u64, kind: &str) -> Vec<u8> {
        format!(
            r#"{{"v":1,"session_id":"{session}","seq":{seq},"ts":"2027-01-15T08:00:{:02}.000000Z","prev":"x","type":"{kind}"}}"#,
            seq % 60
        )
        .into_bytes()
    }

    fn segmenter(config: SegmenterConfig) -> Segmenter {
        Segmenter::new(config, "w1", SigningKey::from_bytes(&[3u8; 32]))
    }

    #[test]
    fn seals_on_session_end_with_a_manifest_of_its_records() {
        let mut s = segmenter(SegmenterConfig::default());
        let id = Uuid::now_v7();
        let records = [
            rec(id, 1, "session_started"),
            rec(id, 2, "statement"),
            rec(id, 3, "session_ended"),
        ];
        // Out of order on the way in, sorted in the segment.
        for r in [&records[1], &records[0]] {
            assert_eq!(s.push(r, at(0)).unwrap(), Pushed::Added);
        }
        assert!(s.seal_due(at(1)).is_empty(), "nothing due yet");
        s.push(&records[2], at(1)).unwrap();
        let sealed = s.seal_due(at(1));
        assert_eq!(sealed.len(), 1);
        let seg = &sealed[0];
        assert_eq!(seg.seqs, vec![1, 2, 3]);
        assert_eq!(seg.key, segment_key(id, 1, 3, "w1"));
        assert_eq!(decode_segment(&seg.data).unwrap(), records.to_vec());
        let m = SignedManifest::parse(&seg.manifest_bytes).unwrap();
        m.verify(&[SigningKey::from_bytes(&[3u8; 32]).verifying_key()])
            .unwrap();
        assert_eq!(m.manifest.count, 3);
        assert_eq!(m.manifest.records[1], (2, sha256_hex(&records[1])));
        assert_eq!(m.manifest.segment_sha256, sha256_hex(&seg.data));
        assert_eq!(m.manifest.first_ts, "2027-01-15T08:00:01.000000Z");
        assert_eq!(m.manifest.last_ts, "2027-01-15T08:00:03.000000Z");
        assert_eq!(s.buffered(), 0);
    }

    #[test]
    fn under_pressure_the_longest_open_segments_are_cut_first() {
        let mut s = segmenter(SegmenterConfig::default());
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        for (i, session) in [a, b, c].into_iter().enumerate() {
            for seq in 1..=10 {
                s.push(&rec(session, seq, "statement"), at(i as u64))
                    .unwrap();
            }
        }
        assert_eq!(s.open_records(), 30);
        assert!(s.cut_due(at(3)).is_empty(), "nothing due by age or count");
        // Enough for 15 records: the two opened first, 20 records.
        let cuts = s.cut_oldest(15, at(3));
        let mut sessions: Vec<Uuid> = cuts.iter().map(|c| c.session).collect();
        sessions.sort();
        let mut expected = vec![a, b];
        expected.sort();
        assert_eq!(sessions, expected);
        assert_eq!(s.open_records(), 10);
        // The cut records count as handed out: pushed again, they are not new.
        assert!(matches!(
            s.push(&rec(a, 3, "statement"), at(3)).unwrap(),
            Pushed::Duplicate { archived: false }
        ));
        assert_eq!(s.cut_oldest(usize::MAX, at(3)).len(), 1, "the rest");
        assert_eq!(s.open_records(), 0);
    }

    #[test]
    fn seals_on_count_bytes_and_age() {
        let id = Uuid::now_v7();
        let mut s = segmenter(SegmenterConfig {
            max_events: 2,
            ..Default::default()
        });
        for seq in 1..=5 {
            s.push(&rec(id, seq, "statement"), at(0)).unwrap();
        }
        let sealed = s.seal_due(at(0));
        let seqs: Vec<_> = sealed.iter().map(|x| x.seqs.clone()).collect();
        assert_eq!(seqs, vec![vec![1, 2], vec![3, 4]]);
        assert!(s.seal_due(at(59)).is_empty());
        assert_eq!(s.seal_due(at(60))[0].seqs, vec![5], "max_age");

        let one = rec(id, 10, "statement").len() + 1;
        let mut s = segmenter(SegmenterConfig {
            max_bytes: 2 * one,
            ..Default::default()
        });
        for seq in 10..=14 {
            s.push(&rec(id, seq, "statement"), at(0)).unwrap();
        }
        let seqs: Vec<_> = s.seal_all().into_iter().map(|x| x.seqs).collect();
        assert_eq!(seqs, vec![vec![10, 11], vec![12, 13], vec![14]]);
    }

    #[test]
    fn duplicates_and_conflicts() {
        let id = Uuid::now_v7();
        let mut s = segmenter(SegmenterConfig::default());
        let r = rec(id, 1, "session_started");
        assert_eq!(s.push(&r, at(0)).unwrap(), Pushed::Added);
        assert_eq!(
            s.push(&r, at(0)).unwrap(),
            Pushed::Duplicate { archived: false }
        );
        let mut other = r.clone();
        other.extend_from_slice(b" ");
        assert!(matches!(
            s.push(&other, at(0)),
            Err(PushError::Conflict { seq: 1, .. })
        ));
        let sealed = s.seal_all();
        assert_eq!(
            s.push(&r, at(0)).unwrap(),
            Pushed::Duplicate { archived: false },
            "sealed, not yet confirmed"
        );
        s.mark_archived(id, sealed[0].seqs.iter().copied());
        assert_eq!(
            s.push(&r, at(0)).unwrap(),
            Pushed::Duplicate { archived: true }
        );
        assert!(s.seal_all().is_empty(), "nothing written twice");
        assert!(matches!(
            s.push(b"{\"a\":1}", at(0)),
            Err(PushError::NotAnEvent(_))
        ));
        assert!(matches!(
            s.push(b"not json", at(0)),
            Err(PushError::NotAnEvent(_))
        ));
        assert!(matches!(
            s.push(&rec(id, 0, "statement"), at(0)),
            Err(PushError::ZeroSeq { .. })
        ));
    }

    #[test]
    fn marking_archived_drops_buffered_copies() {
        let id = Uuid::now_v7();
        let mut s = segmenter(SegmenterConfig::default());
        for seq in 1..=4 {
            s.push(&rec(id, seq, "statement"), at(0)).unwrap();
        }
        s.mark_archived(id, [1, 2]);
        let sealed = s.seal_all();
        assert_eq!(sealed[0].seqs, vec![3, 4]);
        assert_eq!(sealed[0].key, segment_key(id, 3, 4, "w1"));
    }

    #[test]
    fn forgets_ended_sessions_beyond_the_bound_and_idle_ones() {
        let mut s = segmenter(SegmenterConfig {
            remember_ended: 2,
            forget_idle: Duration::from_secs(600),
            ..Default::default()
        });
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        for id in &ids {
            s.push(&rec(*id, 1, "session_ended"), at(0)).unwrap();
        }
        for sealed in s.seal_due(at(0)) {
            s.mark_archived(sealed.session, sealed.seqs);
        }
        s.seal_due(at(1));
        assert!(!s.knows(ids[0]), "least recently ended is forgotten");
        assert!(s.knows(ids[1]) && s.knows(ids[2]));
        let open = Uuid::now_v7();
        s.push(&rec(open, 1, "statement"), at(1)).unwrap();
        for sealed in s.seal_due(at(100)) {
            s.mark_archived(sealed.session, sealed.seqs);
        }
        assert!(s.knows(open));
        s.seal_due(at(700));
        assert!(!s.knows(open), "idle sessions are forgotten");
    }

    #[test]
    fn seq_ranges() {
        let mut r = SeqRanges::default();
        for seq in [5, 3, 4, 1, 9, 2] {
            r.insert(seq);
        }
        assert_eq!(r.0, BTreeMap::from([(1, 5), (9, 9)]));
        assert!(r.contains(1) && r.contains(5) && r.contains(9));
        assert!(!r.contains(6) && !r.contains(0) && !r.contains(10));
    }
}
