//! The archiver's errors, one enum per concern.

use std::path::PathBuf;

use uuid::Uuid;

/// Loading or writing the evidence signing keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a key of the expected kind.
    #[error("{path}: not an Ed25519 {expected} PEM: {reason}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// `PKCS#8 private key` or `SPKI public key`.
        expected: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// `keygen` found a key already there.
    #[error("{0} exists; remove it to generate a new key")]
    Exists(PathBuf),
    /// Encoding a fresh key failed.
    #[error("encode key: {0}")]
    Encode(String),
}

/// A [`crate::store::SegmentStore`] operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key is not a relative `/`-separated path without `.`/`..` parts.
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
    /// The backing storage failed.
    #[error("{op} {key}: {source}")]
    Io {
        /// `put`, `get` or `list`.
        op: &'static str,
        /// The object key or prefix.
        key: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A blocking task was cancelled or panicked.
    #[error("store task failed: {0}")]
    Task(String),
    /// An object store service failed or refused a request (S3).
    #[error("{op} {key}: {message}")]
    Remote {
        /// `put`, `get` or `list`.
        op: &'static str,
        /// The object key or prefix, as the store names it (with its prefix).
        key: String,
        /// What went wrong: the service's error code and message and the HTTP
        /// status, or why it could not be reached.
        message: String,
    },
    /// The store cannot be used as configured: a missing bucket, no access, or
    /// Object Lock asked for on a bucket without it.
    #[error("{store}: {reason}")]
    Unusable {
        /// The store, e.g. `s3://bucket/prefix/`.
        store: String,
        /// Why, and what to check.
        reason: String,
    },
}

/// A record handed to the [`crate::segmenter::Segmenter`] was refused.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Not a JSON evidence event with `session_id`, `seq`, `ts` and `type`.
    #[error("not an evidence event: {0}")]
    NotAnEvent(String),
    /// A record holds a line break, which would split it in the NDJSON segment.
    #[error("record of session {session} seq {seq} contains a line break")]
    LineBreak {
        /// The session.
        session: Uuid,
        /// The sequence number.
        seq: u64,
    },
    /// `seq` 0 is not a position in a chain.
    #[error("record of session {session} has seq 0 (sequences start at 1)")]
    ZeroSeq {
        /// The session.
        session: Uuid,
    },
    /// A different record with the same session and seq is already buffered.
    #[error("session {session} seq {seq}: a different record with this seq is already buffered")]
    Conflict {
        /// The session.
        session: Uuid,
        /// The sequence number.
        seq: u64,
    },
}

/// Reading a segment or a manifest.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The manifest is not two lines of JSON.
    #[error("manifest: {0}")]
    Manifest(String),
    /// The segment is not gzip or not UTF-8 NDJSON.
    #[error("segment: {0}")]
    Segment(String),
}

/// [`crate::archive::Archive`] and the read paths (verify, replay, listing).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A record was refused.
    #[error(transparent)]
    Push(#[from] PushError),
    /// A stored object could not be read.
    #[error("{key}: {source}")]
    Format {
        /// The object key.
        key: String,
        /// The cause.
        #[source]
        source: FormatError,
    },
    /// A stored record is not an evidence event.
    #[error("{key}: record seq {seq}: {reason}")]
    Event {
        /// The object key.
        key: String,
        /// Its sequence number, as far as it could be read.
        seq: u64,
        /// What the parser said.
        reason: String,
    },
    /// Nothing is archived under this session.
    #[error("no evidence for session {0}")]
    NoSuchSession(Uuid),
}

/// A `--since`/`--until` argument that is neither a time nor a duration.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0:?} is neither an RFC 3339 time (2026-11-22T10:00:00Z) nor a duration ago (2h, 30m, 7days)"
)]
pub struct TimeArgError(pub String);
