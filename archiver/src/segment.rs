//! The segment format: object keys, gzip NDJSON segments, and signed manifests.

use std::borrow::Cow;
use std::io::{Read, Write};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::FormatError;
use crate::keys::{hex, key_id};

/// Version of the manifest shape (its `v` field).
pub const MANIFEST_VERSION: u32 = 1;
/// Every archived object lives under this folder (relative to the store's prefix).
pub const SESSIONS_PREFIX: &str = "sessions/";
/// Suffix of a segment object.
pub const SEGMENT_SUFFIX: &str = ".ndjson.gz";
/// Suffix of a manifest object.
pub const MANIFEST_SUFFIX: &str = ".manifest";
/// The most a segment may decompress to when read back (a guard against a
/// planted gzip bomb; the segmenter writes at most `max_bytes` plus one record).
pub const MAX_SEGMENT_DECOMPRESSED: u64 = 256 * 1024 * 1024;

/// Hex SHA-256: the hash of a record, and of a segment object.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The folder of one session: `sessions/<session-id>/`.
pub fn session_prefix(session: Uuid) -> String {
    format!("{SESSIONS_PREFIX}{session}/")
}

/// The key of a segment:
/// `sessions/<session-id>/<first_seq:020>-<last_seq:020>-<writer>.ndjson.gz`.
pub fn segment_key(session: Uuid, first_seq: u64, last_seq: u64, writer: &str) -> String {
    format!(
        "{}{first_seq:020}-{last_seq:020}-{writer}{SEGMENT_SUFFIX}",
        session_prefix(session)
    )
}

/// The key of the manifest beside a segment: the same stem, `.manifest`.
pub fn manifest_key(segment_key: &str) -> String {
    let stem = segment_key
        .strip_suffix(SEGMENT_SUFFIX)
        .unwrap_or(segment_key);
    format!("{stem}{MANIFEST_SUFFIX}")
}

/// What an object key under `sessions/` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectName {
    /// The session folder.
    pub session: Uuid,
    /// From the file name.
    pub first_seq: u64,
    /// From the file name.
    pub last_seq: u64,
    /// The writer id.
    pub writer: String,
    /// Segment or manifest.
    pub kind: ObjectKind,
}

/// The two kinds of archived object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// `.ndjson.gz`: records.
    Segment,
    /// `.manifest`: the signed list of a segment's records.
    Manifest,
}

/// Reads a key written by [`segment_key`] or [`manifest_key`]; `None` for anything else.
pub fn parse_key(key: &str) -> Option<ObjectName> {
    let rest = key.strip_prefix(SESSIONS_PREFIX)?;
    let (session, file) = rest.split_once('/')?;
    let session = Uuid::parse_str(session).ok()?;
    let (stem, kind) = if let Some(s) = file.strip_suffix(SEGMENT_SUFFIX) {
        (s, ObjectKind::Segment)
    } else if let Some(s) = file.strip_suffix(MANIFEST_SUFFIX) {
        (s, ObjectKind::Manifest)
    } else {
        return None;
    };
    let mut parts = stem.splitn(3, '-');
    let first = parts.next()?;
    let last = parts.next()?;
    let writer = parts.next()?;
    if first.len() != 20 || last.len() != 20 || writer.is_empty() || writer.contains('/') {
        return None;
    }
    Some(ObjectName {
        session,
        first_seq: first.parse().ok()?,
        last_seq: last.parse().ok()?,
        writer: writer.to_owned(),
        kind,
    })
}

/// Line 1 of a manifest: what a segment holds. See the crate docs for the format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub v: u32,
    /// The session of every record in the segment.
    pub session_id: Uuid,
    /// The lowest seq in the segment.
    pub first_seq: u64,
    /// The highest seq in the segment.
    pub last_seq: u64,
    /// How many records the segment holds.
    pub count: u64,
    /// `[seq, hex SHA-256 of the record]` for each record, in the segment's order (ascending seq).
    pub records: Vec<(u64, String)>,
    /// The earliest `ts` of the records.
    pub first_ts: String,
    /// The latest `ts` of the records.
    pub last_ts: String,
    /// The segment's object key.
    pub segment: String,
    /// Hex SHA-256 of the segment object's bytes (compressed, as stored).
    pub segment_sha256: String,
    /// When the segment was sealed, RFC 3339 UTC.
    pub created: String,
    /// The archiver instance that wrote it.
    pub writer: String,
}

/// Line 2 of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSignature {
    /// [`key_id`] of the signing key's public half.
    pub key_id: String,
    /// Standard base64 (with padding) of the Ed25519 signature over line 1's bytes.
    pub signature: String,
}

/// Serializes and signs a manifest: line 1, `\n`, line 2, `\n`.
pub fn sign_manifest(manifest: &Manifest, key: &SigningKey) -> Vec<u8> {
    let mut out = serde_json::to_vec(manifest).expect("a manifest always serializes");
    let signature = key.sign(&out);
    let line2 = ManifestSignature {
        key_id: key_id(&key.verifying_key()),
        signature: STANDARD.encode(signature.to_bytes()),
    };
    out.push(b'\n');
    out.extend(serde_json::to_vec(&line2).expect("a signature always serializes"));
    out.push(b'\n');
    out
}

/// A manifest as read back, its signature not yet checked.
#[derive(Debug, Clone)]
pub struct SignedManifest {
    /// Line 1, parsed.
    pub manifest: Manifest,
    /// Line 1's exact bytes: what the signature covers.
    pub signed_bytes: Vec<u8>,
    /// Line 2, parsed.
    pub signature: ManifestSignature,
}

/// Why a manifest's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureProblem {
    /// No trusted key has this id.
    UnknownKey(String),
    /// The signature is not base64 of 64 bytes.
    Malformed,
    /// The trusted key with this id did not sign these bytes.
    Invalid(String),
}

impl std::fmt::Display for SignatureProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownKey(id) => write!(f, "signed by key {id}, which is not trusted"),
            Self::Malformed => write!(f, "signature is not base64 of 64 bytes"),
            Self::Invalid(id) => write!(f, "signature does not verify with trusted key {id}"),
        }
    }
}

impl SignedManifest {
    /// Reads a manifest object: exactly two `\n`-terminated lines of JSON.
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        let bad = |m: &str| FormatError::Manifest(m.to_owned());
        let body = bytes
            .strip_suffix(b"\n")
            .ok_or_else(|| bad("does not end with a newline"))?;
        let nl = body
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad("has one line, expected two"))?;
        let (line1, line2) = (&body[..nl], &body[nl + 1..]);
        if line2.contains(&b'\n') {
            return Err(bad("has more than two lines"));
        }
        let manifest: Manifest = serde_json::from_slice(line1)
            .map_err(|e| FormatError::Manifest(format!("line 1: {e}")))?;
        let signature: ManifestSignature = serde_json::from_slice(line2)
            .map_err(|e| FormatError::Manifest(format!("line 2: {e}")))?;
        Ok(Self {
            manifest,
            signed_bytes: line1.to_vec(),
            signature,
        })
    }

    /// Checks line 2 over line 1's bytes with the trusted key of that id (strict
    /// Ed25519 verification: no malleable or small-order signatures).
    pub fn verify(&self, trusted: &[VerifyingKey]) -> Result<(), SignatureProblem> {
        let id = &self.signature.key_id;
        let key = trusted
            .iter()
            .find(|k| &key_id(k) == id)
            .ok_or_else(|| SignatureProblem::UnknownKey(id.clone()))?;
        let raw = STANDARD
            .decode(&self.signature.signature)
            .map_err(|_| SignatureProblem::Malformed)?;
        let raw: [u8; 64] = raw.try_into().map_err(|_| SignatureProblem::Malformed)?;
        key.verify_strict(&self.signed_bytes, &Signature::from_bytes(&raw))
            .map_err(|_| SignatureProblem::Invalid(id.clone()))
    }
}

/// Gzips records as NDJSON: each record's bytes, then `\n`.
pub fn encode_segment<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    // Default GzBuilder header: no file name, mtime 0, so the same records
    // always compress to the same bytes.
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    for r in records {
        enc.write_all(r).expect("writing to a Vec cannot fail");
        enc.write_all(b"\n").expect("writing to a Vec cannot fail");
    }
    enc.finish().expect("writing to a Vec cannot fail")
}

/// Gunzips a segment into its lines (without the `\n`). A last line without its
/// `\n` is returned as is: its hash will not match, which is how a record cut
/// short shows.
pub fn decode_segment(bytes: &[u8]) -> Result<Vec<Vec<u8>>, FormatError> {
    let mut out = Vec::new();
    GzDecoder::new(bytes)
        .take(MAX_SEGMENT_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| FormatError::Segment(format!("not gzip: {e}")))?;
    if out.len() as u64 > MAX_SEGMENT_DECOMPRESSED {
        return Err(FormatError::Segment(format!(
            "decompresses to more than {MAX_SEGMENT_DECOMPRESSED} bytes"
        )));
    }
    let mut lines: Vec<Vec<u8>> = out.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    if lines.last().is_some_and(Vec::is_empty) {
        lines.pop();
    }
    Ok(lines)
}

/// The fields of a record the archiver reads; the rest stays opaque bytes.
#[derive(Debug, Deserialize)]
pub(crate) struct Head<'a> {
    pub session_id: Uuid,
    pub seq: u64,
    #[serde(borrow)]
    pub ts: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub prev: Option<Cow<'a, str>>,
}

impl<'a> Head<'a> {
    pub(crate) fn parse(record: &'a [u8]) -> Result<Self, String> {
        serde_json::from_slice(record).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            v: MANIFEST_VERSION,
            session_id: Uuid::nil(),
            first_seq: 1,
            last_seq: 2,
            count: 2,
            records: vec![(1, sha256_hex(b"a")), (2, sha256_hex(b"b"))],
            first_ts: "2026-01-01T00:00:00.000000Z".into(),
            last_ts: "2026-01-01T00:00:01.000000Z".into(),
            segment: segment_key(Uuid::nil(), 1, 2, "w1"),
            segment_sha256: sha256_hex(b"x"),
            created: "2026-01-01T00:00:02.000000Z".into(),
            writer: "w1".into(),
        }
    }

    #[test]
    fn keys_sort_by_first_seq_and_parse_back() {
        let s = Uuid::now_v7();
        let a = segment_key(s, 2, 10, "abc");
        let b = segment_key(s, 11, 11, "abc");
        assert!(a < b, "zero-padded seqs sort numerically");
        assert_eq!(
            a,
            format!("sessions/{s}/00000000000000000002-00000000000000000010-abc.ndjson.gz")
        );
        let m = manifest_key(&a);
        assert!(m.ends_with("-abc.manifest"));
        let parsed = parse_key(&m).unwrap();
        assert_eq!(
            (
                parsed.session,
                parsed.first_seq,
                parsed.last_seq,
                parsed.kind
            ),
            (s, 2, 10, ObjectKind::Manifest)
        );
        assert_eq!(parse_key(&a).unwrap().kind, ObjectKind::Segment);
        assert_eq!(parse_key(&format!("sessions/{s}/notes.txt")), None);
        assert_eq!(parse_key("sessions/not-a-uuid/x.manifest"), None);
    }

    #[test]
    fn manifests_roundtrip_and_verify_over_line_one() {
        let key = SigningKey::from_bytes(&[1u8; 32]);
        let other = SigningKey::from_bytes(&[2u8; 32]);
        let bytes = sign_manifest(&manifest(), &key);
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 2);
        let parsed = SignedManifest::parse(&bytes).unwrap();
        assert_eq!(parsed.manifest, manifest());
        assert_eq!(
            parsed.verify(&[other.verifying_key(), key.verifying_key()]),
            Ok(())
        );
        assert_eq!(
            parsed.verify(&[other.verifying_key()]),
            Err(SignatureProblem::UnknownKey(key_id(&key.verifying_key())))
        );
        // The wire shape other languages rely on.
        let v: serde_json::Value = serde_json::from_slice(&parsed.signed_bytes).unwrap();
        assert_eq!(v["records"][1][0], 2);
        assert_eq!(v["records"][1][1], sha256_hex(b"b"));
        // One changed byte of line 1 breaks the signature.
        let mut forged = bytes.clone();
        let pos = forged.windows(4).position(|w| w == b"\"w1\"").unwrap();
        forged[pos + 2] = b'2';
        let parsed = SignedManifest::parse(&forged).unwrap();
        assert_eq!(
            parsed.verify(&[key.verifying_key()]),
            Err(SignatureProblem::Invalid(key_id(&key.verifying_key())))
        );
        assert!(SignedManifest::parse(&bytes[..bytes.len() - 1]).is_err());
        assert!(SignedManifest::parse(b"{}\n").is_err());
    }

    #[test]
    fn segments_roundtrip_as_ndjson() {
        let data = encode_segment([&b"{\"a\":1}"[..], b"{\"b\":2}"]);
        assert_eq!(
            encode_segment([&b"{\"a\":1}"[..], b"{\"b\":2}"]),
            data,
            "deterministic"
        );
        let lines = decode_segment(&data).unwrap();
        assert_eq!(lines, vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]);
        let mut plain = Vec::new();
        GzDecoder::new(&data[..]).read_to_end(&mut plain).unwrap();
        assert_eq!(plain, b"{\"a\":1}\n{\"b\":2}\n");
        assert!(decode_segment(b"not gzip").is_err());
    }
}
