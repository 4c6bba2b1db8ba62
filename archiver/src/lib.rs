//! Gatehouse's evidence archive: sessions' records sealed into signed segments,
//! and the tools that verify, list and replay them.
//!
//! This page is the format's specification: an auditor can check an archive
//! with `sha256sum`, `gunzip`, a JSON parser and any Ed25519 library, without
//! Gatehouse.
//!
//! # Records
//!
//! An evidence event's *record* is its JSON on one line, without a trailing
//! newline, written once by the ingress ([`gatehouse_schemas::evidence`]). Every
//! record has `session_id` (a UUIDv7), `seq` (1, 2, 3 … without gaps within a
//! session), `ts` (RFC 3339 UTC with microseconds), `type` and `prev`: the
//! lowercase hex SHA-256 of the exact bytes of the session's previous record, or
//! 64 zeros for seq 1, which is always a `session_started`. A session that ended
//! normally has a `session_ended` as its last record.
//!
//! # Objects
//!
//! Keys are relative to the store's root (a local directory) or prefix (an S3
//! bucket and prefix), and the same in both:
//!
//! ```text
//! sessions/<session-id>/<first_seq:020>-<last_seq:020>-<writer>.ndjson.gz
//! sessions/<session-id>/<first_seq:020>-<last_seq:020>-<writer>.manifest
//! ```
//!
//! `first_seq`/`last_seq` are the lowest and highest seq in the segment, as 20
//! zero-padded digits (so keys sort by position, and, as session ids are
//! UUIDv7, sessions sort by start time). `<writer>` is the random id of the
//! archiver instance (letters, digits, `-`, `_`), so two archivers never write
//! the same key.
//!
//! ## Segment (`.ndjson.gz`)
//!
//! A gzip stream of records of one session, each record's exact bytes followed
//! by `\n`, by ascending seq. A segment's seqs need not be contiguous: several
//! archivers may share a session's records, so its records can be spread over
//! interleaving segments. The same record may be in two segments (a redelivery
//! racing a restart); both copies are then identical.
//!
//! ## Manifest (`.manifest`)
//!
//! Two lines, each ending in `\n`. Line 1 is a JSON object ([`segment::Manifest`]):
//!
//! | field | meaning |
//! |---|---|
//! | `v` | 1 |
//! | `session_id` | the session |
//! | `first_seq`, `last_seq`, `count` | lowest and highest seq, number of records |
//! | `records` | `[[seq, "<hex SHA-256 of the record>"], …]`, one per record, in the segment's order |
//! | `first_ts`, `last_ts` | earliest and latest `ts` of the records |
//! | `segment` | the segment's key |
//! | `segment_sha256` | hex SHA-256 of the segment object's bytes, compressed, as stored |
//! | `created` | when it was sealed, RFC 3339 UTC |
//! | `writer` | the archiver instance |
//!
//! Line 2 is `{"key_id":"<id>","signature":"<sig>"}`: `<sig>` is standard
//! base64 (with padding) of the Ed25519 signature over the exact bytes of line
//! 1 (without its `\n`); `<id>` is the hex of the first 8 bytes of the SHA-256
//! of the raw 32-byte public key. No canonical JSON is involved: verify line 2
//! over line 1's bytes as stored, then read line 1. Keys are PEM: the private
//! key PKCS#8, the public key SPKI (`gatehouse evidence keygen`).
//!
//! The archiver writes the segment, then its manifest, each durably, and only
//! then acknowledges the records upstream: a manifest never names a segment
//! that was not written, and a crash between the two leaves a segment without
//! a manifest whose records are delivered again and sealed anew.
//!
//! # Verification ([`verify::verify`])
//!
//! Per session, for each manifest: its signature by a trusted key
//! (`bad_signature`); its place (`misplaced`); its segment exists
//! (`missing_segment_object`) with the listed SHA-256 (`segment_changed`) and
//! decompresses (`unreadable_segment`); its lines are exactly the listed
//! records (`record_changed` naming the seq, `extra_record`, `record_removed`,
//! `truncated` for records missing at the end, `reordered`). Then over the
//! session: two signed manifests never list different records for one seq
//! (`conflict`); every seq from 1 to the highest listed is in some segment
//! (`missing`, with the exact range: a deleted segment and manifest); a segment
//! without a manifest holds nothing unlisted (`unsigned_records`: a deleted
//! manifest); seq 1 is `session_started` (`bad_start`); each record's `prev` is
//! the hash of the record before (`chain_broken` at that seq); nothing follows
//! `session_ended` (`after_end`). A session without `session_ended` is
//! reported `open`: not a break, since it may be live or its gateway may have
//! stopped, but listed, so that "started, never completed" stays visible.
//!
//! What verification cannot see from the archive alone: a whole session
//! deleted, or the last segments of a session deleted (the session then shows
//! as `open`, ending early). The SIEM's copy of the stream (Kafka) and S3 Object
//! Lock are the defences there.
//!
//! # Parts
//!
//! - [`segment`]: keys, segment and manifest encoding, signing.
//! - [`store`]: the [`store::SegmentStore`] trait and [`store::LocalDir`].
//! - [`s3`]: [`s3::S3Store`], the same in an S3 bucket, with Object Lock.
//! - [`segmenter`]: buffering per session and sealing.
//! - [`archive`]: segmenter + store, with acknowledgement of durable records.
//! - [`verify`], [`replay`]: the auditor's tools; [`scan`]: verification in one
//!   streaming pass that hands each verified record on (what the reports read).
//! - [`kafka`], [`service`]: the distributed archiver (`serve --role archiver`):
//!   JetStream to Kafka (OCSF records for SIEMs) and to the store.

pub mod archive;
pub mod error;
pub mod kafka;
pub mod keys;
pub mod replay;
pub mod s3;
pub mod scan;
pub mod segment;
pub mod segmenter;
pub mod service;
pub mod store;
pub mod time;
pub mod verify;

pub use archive::{Archive, Ingested, RecordId};
pub use error::{ArchiveError, FormatError, KeyError, PushError, StoreError, TimeArgError};
pub use keys::{keygen, load_signing_key, load_verifying_key};
pub use replay::{
    SessionFilter, SessionSummary, render_transcript, replay, replay_records, sessions,
};
pub use s3::{S3Config, S3Store};
pub use scan::{NoVisitor, Visitor};
pub use segment::Manifest;
pub use segmenter::{Pushed, Sealed, Segmenter, SegmenterConfig, known_seqs, new_writer_id};
pub use store::{LocalDir, SegmentStore};
pub use time::parse_time_arg;
pub use verify::{Break, BreakKind, Report, SessionReport, SessionStatus, scan, verify};
