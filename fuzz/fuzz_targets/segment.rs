//! Fuzz target: the evidence reader behind `gatehouse verify`
//! (`archiver::segment`, `archiver::verify`), over an in-memory store.
//!
//! - Arbitrary objects under segment and manifest keys (optionally gzipped,
//!   optionally signed by the trusted key, so the fuzzer reaches the record
//!   and chain checks behind the signature and the gzip layer): `verify` never
//!   panics nor hangs.
//! - Valid archives sealed by the archiver's own segmenter verify clean; then
//!   one change (a segment's or a manifest's bytes edited, objects swapped or
//!   deleted, a manifest signed by another key, or a segment's records edited
//!   and re-sealed under a manifest re-signed by the trusted key) must be
//!   reported broken whenever it changed anything `verify` can know of.
#![no_main]

use std::io::Write;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, SigningKey};
use flate2::write::GzEncoder;
use gatehouse_archiver::segment::{
    Manifest, ManifestSignature, SignedManifest, decode_segment, sha256_hex, sign_manifest,
};
use gatehouse_archiver::{Report, verify};
use gatehouse_fuzz::archive::{MemStore, Segment, other_key, session_id, sessions, trusted_key};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Input {
    /// Objects of any content.
    Raw(Vec<RawObject>),
    /// A valid archive, then one change.
    Changed {
        lens: Vec<u8>,
        per_segment: u8,
        payload: Vec<u8>,
        which: u8,
        change: Change,
    },
}

#[derive(Debug, Arbitrary)]
struct RawObject {
    session: u8,
    first: u64,
    last: u64,
    manifest: bool,
    /// Segments: gzip the bytes. Manifests: the bytes are line 1, signed.
    wrap: bool,
    bytes: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
enum Edit {
    Set(u16, u8),
    Insert(u16, u8),
    Remove(u16),
    Truncate(u16),
}

#[derive(Debug, Arbitrary)]
enum Change {
    SegmentBytes(Vec<Edit>),
    ManifestBytes(Vec<Edit>),
    /// The decompressed records edited, the segment re-gzipped, its manifest's
    /// digest updated and signed again by the trusted key.
    Records(Vec<Edit>),
    SwapSegments(u8),
    DeleteSegment,
    DeleteManifest,
    /// Segment and manifest both, of a segment that is not its session's last.
    DeleteBoth,
    SignedByOther,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

fn run(store: &MemStore) -> Report {
    let keys = [trusted_key().verifying_key()];
    runtime()
        .block_on(verify(store, &keys, None, None))
        .expect("an in-memory store never fails")
}

fuzz_target!(|input: Input| match input {
    Input::Raw(objects) => raw(objects),
    Input::Changed {
        lens,
        per_segment,
        payload,
        which,
        change,
    } => changed(&lens, per_segment, &payload, which, change),
});

fn raw(objects: Vec<RawObject>) {
    let store = MemStore::default();
    for o in objects.into_iter().take(16) {
        let stem = format!(
            "sessions/{}/{:020}-{:020}-w1",
            session_id(o.session % 3),
            o.first,
            o.last
        );
        let (key, bytes) = match (o.manifest, o.wrap) {
            (false, false) => (format!("{stem}.ndjson.gz"), o.bytes),
            (false, true) => (format!("{stem}.ndjson.gz"), gzip(&o.bytes)),
            (true, false) => (format!("{stem}.manifest"), o.bytes),
            (true, true) => (format!("{stem}.manifest"), signed(&o.bytes, &trusted_key())),
        };
        store.0.lock().unwrap().insert(key, bytes);
    }
    let _ = run(&store);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("a Vec");
    enc.finish().expect("a Vec")
}

/// A manifest whose line 1 is `line1` (newlines taken out), signed by `key`.
fn signed(line1: &[u8], key: &SigningKey) -> Vec<u8> {
    let mut out: Vec<u8> = line1.iter().copied().filter(|&b| b != b'\n').collect();
    let sig = ManifestSignature {
        key_id: gatehouse_archiver::keys::key_id(&key.verifying_key()),
        signature: STANDARD.encode(key.sign(&out).to_bytes()),
    };
    out.push(b'\n');
    out.extend(serde_json::to_vec(&sig).expect("serializes"));
    out.push(b'\n');
    out
}

fn apply(bytes: &mut Vec<u8>, edits: &[Edit]) {
    for e in edits.iter().take(8) {
        let at = |p: u16, len: usize| usize::from(p) % len.max(1);
        match *e {
            Edit::Set(p, b) if !bytes.is_empty() => {
                let i = at(p, bytes.len());
                bytes[i] = b;
            }
            Edit::Insert(p, b) => {
                let i = at(p, bytes.len() + 1);
                bytes.insert(i, b);
            }
            Edit::Remove(p) if !bytes.is_empty() => {
                let i = at(p, bytes.len());
                bytes.remove(i);
            }
            Edit::Truncate(p) => bytes.truncate(at(p, bytes.len() + 1)),
            _ => {}
        }
    }
}

fn changed(lens: &[u8], per_segment: u8, payload: &[u8], which: u8, change: Change) {
    let lens: Vec<u8> = lens.iter().take(3).map(|l| l % 12).collect();
    if lens.is_empty() {
        return;
    }
    let payload = &payload[..payload.len().min(64)];
    let segments = sessions(&lens, usize::from(per_segment % 5), payload);
    let store = MemStore::default();
    for s in &segments {
        let mut o = store.0.lock().unwrap();
        o.insert(s.data.0.clone(), s.data.1.clone());
        o.insert(s.manifest.0.clone(), s.manifest.1.clone());
    }
    let clean = run(&store);
    assert!(
        clean.is_clean(),
        "a valid archive has breaks: {:?}",
        clean.breaks
    );
    let target: &Segment = &segments[usize::from(which) % segments.len()];
    let (seg_key, seg_bytes) = &target.data;
    let (man_key, man_bytes) = &target.manifest;
    let mut objects = store.0.lock().unwrap();
    let changed = match change {
        Change::SegmentBytes(edits) => {
            let mut b = seg_bytes.clone();
            apply(&mut b, &edits);
            let changed = b != *seg_bytes;
            objects.insert(seg_key.clone(), b);
            changed
        }
        Change::ManifestBytes(edits) => {
            // Line 1 only: line 2 may be re-spelled (JSON escapes) and mean the
            // same, which is no change of the evidence.
            let nl = man_bytes
                .iter()
                .position(|&b| b == b'\n')
                .expect("two lines");
            let mut line1 = man_bytes[..nl].to_vec();
            apply(&mut line1, &edits);
            let changed = line1 != man_bytes[..nl];
            line1.extend_from_slice(&man_bytes[nl..]);
            objects.insert(man_key.clone(), line1);
            changed
        }
        Change::Records(edits) => {
            let lines = decode_segment(seg_bytes).expect("a sealed segment reads");
            let mut plain: Vec<u8> = lines
                .iter()
                .flat_map(|l| l.iter().copied().chain([b'\n']))
                .collect();
            apply(&mut plain, &edits);
            let data = gzip(&plain);
            let mut m: Manifest = SignedManifest::parse(man_bytes)
                .expect("a sealed manifest reads")
                .manifest;
            m.segment_sha256 = sha256_hex(&data);
            objects.insert(seg_key.clone(), data.clone());
            objects.insert(man_key.clone(), sign_manifest(&m, &trusted_key()));
            // What verify can know of: the records as lines.
            decode_segment(&data).map_or(true, |now| now != lines)
        }
        Change::SwapSegments(other) => {
            let o = &segments[usize::from(other) % segments.len()];
            let changed = o.data.1 != *seg_bytes;
            objects.insert(seg_key.clone(), o.data.1.clone());
            objects.insert(o.data.0.clone(), seg_bytes.clone());
            changed
        }
        Change::DeleteSegment => objects.remove(seg_key).is_some(),
        Change::DeleteManifest => objects.remove(man_key).is_some(),
        Change::DeleteBoth => {
            // Deleting a session's last segments is what verify cannot see
            // (the archive's documented limit).
            if target.last {
                return;
            }
            objects.remove(seg_key);
            objects.remove(man_key).is_some()
        }
        Change::SignedByOther => {
            let nl = man_bytes
                .iter()
                .position(|&b| b == b'\n')
                .expect("two lines");
            objects.insert(man_key.clone(), signed(&man_bytes[..nl], &other_key()));
            true
        }
    };
    drop(objects);
    let report = run(&store);
    if changed {
        assert!(!report.is_clean(), "a changed archive verifies clean");
    }
}
