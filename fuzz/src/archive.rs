//! Evidence archives for the `segment` target: an in-memory object store, and
//! valid sessions sealed by the archiver's own segmenter.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use ed25519_dalek::SigningKey;
use gatehouse_archiver::error::StoreError;
use gatehouse_archiver::segment::sha256_hex;
use gatehouse_archiver::{SegmentStore, Segmenter, SegmenterConfig};
use gatehouse_schemas::evidence::GENESIS;
use uuid::Uuid;

/// Objects in a map: the store `verify` reads.
#[derive(Debug, Default)]
pub struct MemStore(pub Mutex<BTreeMap<String, Vec<u8>>>);

impl MemStore {
    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SegmentStore for MemStore {
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.objects().insert(key.to_owned(), bytes.to_vec());
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.objects().get(key).cloned())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .objects()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }
}

/// The archiver's signing key in these archives (a fixed one: inputs must
/// reproduce).
pub fn trusted_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

/// A key no verifier trusts.
pub fn other_key() -> SigningKey {
    SigningKey::from_bytes(&[8u8; 32])
}

/// Session `n`'s id: a UUIDv7 (as the ingress mints), fixed.
pub fn session_id(n: u8) -> Uuid {
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, 1_780_000_000 + u64::from(n), 0);
    let mut id = *Uuid::new_v7(ts).as_bytes();
    id[15] = n;
    id[14] = 0;
    id[13] = 0;
    Uuid::from_bytes(id)
}

/// One segment as sealed: its objects' keys and bytes.
#[derive(Debug, Clone)]
pub struct Segment {
    /// The session.
    pub session: Uuid,
    /// Segment key and bytes.
    pub data: (String, Vec<u8>),
    /// Manifest key and bytes.
    pub manifest: (String, Vec<u8>),
    /// Whether this is its session's last segment.
    pub last: bool,
}

/// Records of `sessions` sessions, `len[i]` records each (the last a
/// `session_ended`), chained, sealed `per_segment` records at a time.
pub fn sessions(lens: &[u8], per_segment: usize, payload: &[u8]) -> Vec<Segment> {
    let config = SegmenterConfig {
        max_events: per_segment.max(1),
        ..SegmenterConfig::default()
    };
    let mut seg = Segmenter::new(config, "w1", trusted_key());
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000);
    let payload = String::from_utf8_lossy(payload);
    for (n, &len) in lens.iter().enumerate() {
        let session = session_id(n as u8);
        let len = u64::from(len.max(1));
        let mut prev = GENESIS.to_owned();
        for seq in 1..=len {
            let kind = match seq {
                1 => "session_started",
                s if s == len && len > 1 => "session_ended",
                _ => "statement",
            };
            let record = serde_json::json!({
                "session_id": session,
                "seq": seq,
                "ts": format!("2026-06-01T00:00:{:02}.{seq:06}Z", seq % 60),
                "type": kind,
                "prev": prev,
                "sql": payload,
            })
            .to_string();
            prev = sha256_hex(record.as_bytes());
            seg.push(record.as_bytes(), now).expect("a valid record");
        }
    }
    let sealed = seg.seal_all();
    let mut out: Vec<Segment> = sealed
        .into_iter()
        .map(|s| Segment {
            session: s.session,
            data: (s.key, s.data),
            manifest: (s.manifest_key, s.manifest_bytes),
            last: false,
        })
        .collect();
    for i in 0..out.len() {
        out[i].last = out.get(i + 1).is_none_or(|n| n.session != out[i].session);
    }
    out
}
