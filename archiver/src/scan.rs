//! One streaming pass over an archive: [`crate::verify::scan`] verifies each
//! session and hands every record that verifies to a [`Visitor`], in seq
//! order, without holding more than a few objects and one session's hashes.
//!
//! Objects are fetched ahead, in the order the verifier reads them (key
//! order), a bounded number at a time; each is hashed and, for a segment,
//! gunzipped and its lines hashed on the blocking pool, so that a second core
//! decodes while the first verifies and aggregates.

use std::collections::BTreeMap;
use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{ArchiveError, FormatError, StoreError};
use crate::segment::{Head, ObjectKind, decode_segment, parse_key, sha256_hex};
use crate::store::SegmentStore;
use crate::verify::{Break, SessionReport};

/// How many objects are fetched and decoded ahead of the verifier.
pub const FETCH_AHEAD: usize = 8;

/// What a scan hands on.
pub trait Visitor {
    /// A record whose bytes match a trusted manifest, in seq order within its
    /// session (each seq once); sessions come one after another, by id (so by
    /// start time).
    fn record(&mut self, session: Uuid, seq: u64, record: &[u8]);

    /// The session has been read whole: its verdict and its breaks.
    fn session_done(&mut self, session: &SessionReport, breaks: &[Break]) {
        let _ = (session, breaks);
    }
}

/// A visitor that takes nothing: `verify` alone.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoVisitor;

impl Visitor for NoVisitor {
    fn record(&mut self, _: Uuid, _: u64, _: &[u8]) {}
}

/// A segment line and the hex SHA-256 of its bytes.
#[derive(Debug)]
pub(crate) struct Line {
    pub bytes: Vec<u8>,
    pub hash: String,
}

/// An object as fetched: absent, or its bytes' hash and its content.
#[derive(Debug)]
pub(crate) enum Fetched {
    /// Nothing under the key.
    Missing,
    /// A manifest (or any other object): its bytes.
    Bytes { sha256: String, bytes: Vec<u8> },
    /// A segment: its hash, its size as stored, and its lines (or why they
    /// cannot be read).
    Segment {
        sha256: String,
        len: u64,
        lines: Result<Vec<Line>, FormatError>,
    },
}

impl Fetched {
    /// Hashes and decodes an object's bytes (CPU-bound: run it off the runtime).
    fn decode(key: &str, data: Option<Vec<u8>>) -> Self {
        let Some(bytes) = data else {
            return Self::Missing;
        };
        let sha256 = sha256_hex(&bytes);
        let len = bytes.len() as u64;
        if parse_key(key).is_some_and(|n| n.kind == ObjectKind::Segment) {
            let lines = decode_segment(&bytes).map(|lines| {
                lines
                    .into_iter()
                    .map(|bytes| Line {
                        hash: sha256_hex(&bytes),
                        bytes,
                    })
                    .collect()
            });
            Self::Segment { sha256, len, lines }
        } else {
            Self::Bytes { sha256, bytes }
        }
    }

    /// The object's hash, when there is an object.
    pub fn sha256(&self) -> Option<&str> {
        match self {
            Self::Missing => None,
            Self::Bytes { sha256, .. } | Self::Segment { sha256, .. } => Some(sha256),
        }
    }
}

type Ahead<'a> = Pin<Box<dyn Stream<Item = (String, Result<Fetched, StoreError>)> + Send + 'a>>;

/// Fetches keys in a given order ahead of their use; a key asked for out of
/// that order is fetched on its own.
pub(crate) struct Prefetch<'a, S> {
    store: &'a S,
    ahead: Ahead<'a>,
    peeked: Option<(String, Result<Fetched, StoreError>)>,
    /// Every object read, and its hash, for the digest.
    pub read: Vec<(String, String)>,
    /// Bytes read (as stored).
    pub bytes: u64,
}

async fn fetch<S: SegmentStore>(store: &S, key: String) -> (String, Result<Fetched, StoreError>) {
    let got = store.get(&key).await;
    let result = match got {
        Ok(data) => {
            let k = key.clone();
            tokio::task::spawn_blocking(move || Fetched::decode(&k, data))
                .await
                .map_err(|e| StoreError::Task(e.to_string()))
        }
        Err(e) => Err(e),
    };
    (key, result)
}

impl<'a, S: SegmentStore> Prefetch<'a, S> {
    /// Fetches `order` ahead, [`FETCH_AHEAD`] at a time.
    pub fn new(store: &'a S, order: Vec<String>) -> Self {
        let ahead = futures_util::stream::iter(order)
            .map(move |key| fetch(store, key))
            .buffered(FETCH_AHEAD);
        Self {
            store,
            ahead: Box::pin(ahead),
            peeked: None,
            read: Vec::new(),
            bytes: 0,
        }
    }

    /// The object under `key`.
    pub async fn get(&mut self, key: &str) -> Result<Fetched, ArchiveError> {
        let found = loop {
            if self.peeked.is_none() {
                self.peeked = self.ahead.next().await;
            }
            match &self.peeked {
                Some((k, _)) if k == key => break self.peeked.take().map(|(_, r)| r),
                // Passed over: the verifier read past it (it is fetched again if asked).
                Some((k, _)) if k.as_str() < key => self.peeked = None,
                _ => break None,
            }
        };
        let fetched = match found {
            Some(r) => r?,
            None => fetch(self.store, key.to_owned()).await.1?,
        };
        if let Some(sha) = fetched.sha256() {
            self.read.push((key.to_owned(), sha.to_owned()));
        }
        self.bytes += match &fetched {
            Fetched::Bytes { bytes, .. } => bytes.len() as u64,
            Fetched::Segment { len, .. } => *len,
            Fetched::Missing => 0,
        };
        Ok(fetched)
    }
}

/// The digest of what a scan read: SHA-256 over `sha256sum`'s output for
/// the objects, sorted by key (`<hex>  <key>\n` each), so that for a whole
/// local archive `(cd DIR && find sessions -type f ! -name '.*' | LC_ALL=C
/// sort | xargs sha256sum) | sha256sum` gives the same.
#[derive(Default, Clone)]
pub(crate) struct ReadDigest {
    hasher: Sha256,
}

impl ReadDigest {
    /// Adds one session's objects (in any order; each key once).
    pub fn add(&mut self, read: &mut Vec<(String, String)>) {
        read.sort();
        read.dedup_by(|a, b| a.0 == b.0);
        for (key, sha) in read.drain(..) {
            self.hasher.update(sha.as_bytes());
            self.hasher.update(b"  ");
            self.hasher.update(key.as_bytes());
            self.hasher.update(b"\n");
        }
    }

    /// The hex digest.
    pub fn finish(self) -> String {
        crate::keys::hex(&self.hasher.finalize())
    }
}

/// Whether a session's records go to the visitor: decided up front for a
/// UUIDv7 session, at its first record (by its `ts`) for any other.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Gate {
    /// Hand records on.
    Open,
    /// Hand nothing on.
    Closed,
    /// Decide by the first record's `ts`: in `[since, until)`.
    ByFirstTs(Option<std::time::SystemTime>, Option<std::time::SystemTime>),
}

/// Hands a session's records to the visitor in seq order, holding those that
/// come early (interleaved segments of several archivers) until their turn.
pub(crate) struct Emitter<'v> {
    visitor: &'v mut dyn Visitor,
    session: Uuid,
    next: u64,
    waiting: BTreeMap<u64, Vec<u8>>,
    gate: Gate,
}

impl<'v> Emitter<'v> {
    /// For one session.
    pub fn new(visitor: &'v mut dyn Visitor, session: Uuid, gate: Gate) -> Self {
        Self {
            visitor,
            session,
            next: 1,
            waiting: BTreeMap::new(),
            gate,
        }
    }

    fn deliver(&mut self, seq: u64, record: &[u8]) {
        if let Gate::ByFirstTs(since, until) = self.gate {
            let placed = Head::parse(record)
                .ok()
                .and_then(|h| humantime::parse_rfc3339_weak(&h.ts).ok());
            self.gate = if placed.is_some_and(|t| crate::verify::in_range(t, since, until)) {
                Gate::Open
            } else {
                Gate::Closed
            };
        }
        if matches!(self.gate, Gate::Open) {
            self.visitor.record(self.session, seq, record);
        }
    }

    /// A verified record; each seq is handed on once.
    pub fn emit(&mut self, seq: u64, record: &[u8]) {
        if seq < self.next || self.waiting.contains_key(&seq) {
            return;
        }
        if seq > self.next {
            self.waiting.insert(seq, record.to_vec());
            return;
        }
        self.deliver(seq, record);
        self.next += 1;
        while let Some(r) = self.waiting.remove(&self.next) {
            self.deliver(self.next, &r);
            self.next += 1;
        }
    }

    /// Hands on what still waits (past a gap), in order; then the verdict.
    pub fn finish(mut self, report: &SessionReport, breaks: &[Break]) {
        for (seq, r) in std::mem::take(&mut self.waiting) {
            self.deliver(seq, &r);
        }
        if matches!(self.gate, Gate::Open) {
            self.visitor.session_done(report, breaks);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect(Vec<u64>);
    impl Visitor for Collect {
        fn record(&mut self, _: Uuid, seq: u64, _: &[u8]) {
            self.0.push(seq);
        }
    }

    #[test]
    fn records_are_handed_on_in_seq_order_once() {
        let mut c = Collect::default();
        let mut e = Emitter::new(&mut c, Uuid::nil(), Gate::Open);
        for seq in [1, 2, 5, 6, 3, 3, 4, 2, 9] {
            e.emit(seq, b"{}");
        }
        let report = SessionReport {
            session: Uuid::nil(),
            started: None,
            status: crate::verify::SessionStatus::Open,
            records: 0,
            last_seq: 9,
            segments: 0,
        };
        e.finish(&report, &[]);
        assert_eq!(c.0, vec![1, 2, 3, 4, 5, 6, 9]);
    }

    #[test]
    fn the_digest_is_sha256sum_of_sha256sums_output() {
        let mut d = ReadDigest::default();
        let mut read = vec![
            ("sessions/b/2".to_owned(), sha256_hex(b"two")),
            ("sessions/a/1".to_owned(), sha256_hex(b"one")),
        ];
        d.add(&mut read);
        let listing = format!(
            "{}  sessions/a/1\n{}  sessions/b/2\n",
            sha256_hex(b"one"),
            sha256_hex(b"two")
        );
        assert_eq!(d.finish(), sha256_hex(listing.as_bytes()));
    }
}
