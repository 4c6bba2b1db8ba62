//! The approval records of held statements: JetStream key-value (distributed
//! mode), or process memory (all-in-one mode). The gateway holding a statement
//! creates its record and watches it; approvers' decisions change it.
//!
//! In distributed mode the record of a request lives in [`APPROVAL_BUCKET`] under
//! its id. Every change is a compare-and-set on the entry's revision
//! ([`ApprovalStore::transition`]), so the first of a decision, an expiry and a
//! withdrawal wins and the others see the state it left. Nothing about a request
//! lives only in a process: an approver service may restart, or several may run,
//! while a statement is held. In all-in-one mode ([`ApprovalStore::memory`]) the
//! records live in the one process that also holds the sessions waiting on them
//! (its restart ends those sessions anyway); a change is applied under a lock,
//! with the same first-change-wins rule.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use gatehouse_schemas::Identity;
use gatehouse_schemas::approval::{APPROVAL_BUCKET, ApprovalRecord, ApprovalState};
use gatehouse_schemas::evidence::ApprovalEvent;
use tokio::sync::broadcast;
use uuid::Uuid;

/// Records are kept this long after their last change (for `approvals show`).
const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Attempts of one compare-and-set before giving up (each conflict means
/// someone else changed the record; re-read and re-check).
const CAS_ATTEMPTS: usize = 16;

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// NATS or JetStream failed.
    #[error("approval store: {0}")]
    Store(String),
    /// No such request.
    #[error("no approval request {0}")]
    Unknown(Uuid),
    /// The record in the bucket is not one this version reads.
    #[error("unreadable approval record {0}: {1}")]
    Unreadable(Uuid, String),
}

fn store_err(e: impl std::fmt::Display) -> ApprovalError {
    ApprovalError::Store(e.to_string())
}

/// Records kept in memory (all-in-one mode) beyond which the oldest closed ones
/// are forgotten.
const MEMORY_RECORDS: usize = 10_000;

/// Approval records: JetStream key-value (distributed) or process memory
/// (all-in-one).
#[derive(Clone)]
pub struct ApprovalStore {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Kv(Arc<LazyKv>),
    Memory(Arc<Memory>),
}

/// The bucket, opened at first use and again after a failure: a gateway starts
/// while NATS is down and refuses held statements (fail closed) until it is back.
struct LazyKv {
    client: async_nats::Client,
    kv: tokio::sync::OnceCell<kv::Store>,
}

/// How long opening the bucket may take before the statement is refused.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

impl LazyKv {
    async fn get(&self) -> Result<&kv::Store, ApprovalError> {
        self.kv
            .get_or_try_init(|| async {
                tokio::time::timeout(OPEN_TIMEOUT, open_bucket(self.client.clone()))
                    .await
                    .map_err(|_| ApprovalError::Store("NATS did not answer in time".into()))?
            })
            .await
    }
}

/// The all-in-one store: records and their revisions, and a feed of changes.
struct Memory {
    records: Mutex<HashMap<Uuid, (ApprovalRecord, u64)>>,
    changes: broadcast::Sender<(ApprovalRecord, u64)>,
}

impl Memory {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, (ApprovalRecord, u64)>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `record` at the next revision and announces it, under the lock
    /// (so watchers see changes in revision order).
    fn put(
        &self,
        map: &mut HashMap<Uuid, (ApprovalRecord, u64)>,
        record: ApprovalRecord,
        revision: u64,
    ) {
        map.insert(record.request.id, (record.clone(), revision));
        // No receiver is not an error: nobody watches.
        let _ = self.changes.send((record, revision));
    }

    /// Forgets the oldest closed records past [`MEMORY_RECORDS`].
    fn prune(map: &mut HashMap<Uuid, (ApprovalRecord, u64)>) {
        if map.len() < MEMORY_RECORDS {
            return;
        }
        let mut closed: Vec<(String, Uuid)> = map
            .values()
            .filter(|(r, _)| !r.state.is_pending() && r.state != ApprovalState::Approved)
            .map(|(r, _)| (r.request.requested_at.clone(), r.request.id))
            .collect();
        closed.sort();
        let excess = map.len() + 1 - MEMORY_RECORDS;
        for (_, id) in closed.into_iter().take(excess) {
            map.remove(&id);
        }
    }
}

impl ApprovalStore {
    /// A store in this process's memory (all-in-one mode).
    pub fn memory() -> Self {
        let (changes, _) = broadcast::channel(1024);
        Self {
            backend: Backend::Memory(Arc::new(Memory {
                records: Mutex::new(HashMap::new()),
                changes,
            })),
        }
    }

    /// Whether records live in this process only.
    pub fn is_memory(&self) -> bool {
        matches!(self.backend, Backend::Memory(_))
    }

    /// Opens the bucket, creating it if it does not exist.
    pub async fn open(client: async_nats::Client) -> Result<Self, ApprovalError> {
        let store = Self::connect_lazily(client);
        if let Backend::Kv(k) = &store.backend {
            k.get().await?;
        }
        Ok(store)
    }

    /// The bucket on `client`, opened at first use (and retried at each use
    /// until it opens): the ingress starts without NATS and refuses held
    /// statements until the bucket can be reached.
    pub fn connect_lazily(client: async_nats::Client) -> Self {
        Self {
            backend: Backend::Kv(Arc::new(LazyKv {
                client,
                kv: tokio::sync::OnceCell::new(),
            })),
        }
    }

    /// Stores a new pending record.
    pub async fn create(&self, record: &ApprovalRecord) -> Result<(), ApprovalError> {
        let kv = match &self.backend {
            Backend::Kv(k) => k.get().await?,
            Backend::Memory(m) => {
                let mut map = m.lock();
                if map.contains_key(&record.request.id) {
                    return Err(ApprovalError::Store(format!(
                        "request {} exists",
                        record.request.id
                    )));
                }
                Memory::prune(&mut map);
                m.put(&mut map, record.clone(), 1);
                return Ok(());
            }
        };
        let body = serde_json::to_vec(record).map_err(store_err)?;
        kv.create(record.request.id.to_string(), Bytes::from(body))
            .await
            .map_err(store_err)?;
        Ok(())
    }

    /// The record and its revision.
    pub async fn get(&self, id: Uuid) -> Result<(ApprovalRecord, u64), ApprovalError> {
        let kv = match &self.backend {
            Backend::Kv(k) => k.get().await?,
            Backend::Memory(m) => {
                return m.lock().get(&id).cloned().ok_or(ApprovalError::Unknown(id));
            }
        };
        let entry = kv
            .entry(id.to_string())
            .await
            .map_err(store_err)?
            .filter(|e| e.operation == kv::Operation::Put)
            .ok_or(ApprovalError::Unknown(id))?;
        Ok((decode(id, &entry.value)?, entry.revision))
    }

    /// Every record in the bucket (bounded by its retention).
    pub async fn all(&self) -> Result<Vec<ApprovalRecord>, ApprovalError> {
        let kv = match &self.backend {
            Backend::Kv(k) => k.get().await?,
            Backend::Memory(m) => {
                let mut out: Vec<_> = m.lock().values().map(|(r, _)| r.clone()).collect();
                out.sort_by(|a, b| a.request.requested_at.cmp(&b.request.requested_at));
                return Ok(out);
            }
        };
        let mut keys = kv.keys().await.map_err(store_err)?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(store_err)?;
            let Ok(id) = key.parse::<Uuid>() else {
                continue;
            };
            match self.get(id).await {
                Ok((r, _)) => out.push(r),
                Err(ApprovalError::Unknown(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.request.requested_at.cmp(&b.request.requested_at));
        Ok(out)
    }

    /// Applies `change` with compare-and-set, re-reading on conflict. `change`
    /// returns `false` to leave the record as it is (e.g. no longer pending).
    /// Returns the record as it stands afterwards and whether `change` applied.
    pub async fn transition(
        &self,
        id: Uuid,
        mut change: impl FnMut(&mut ApprovalRecord) -> bool,
    ) -> Result<(ApprovalRecord, bool), ApprovalError> {
        let kv = match &self.backend {
            Backend::Kv(k) => k.get().await?,
            Backend::Memory(m) => {
                // Under the lock: nobody changes the record between read and write.
                let mut map = m.lock();
                let (mut record, revision) =
                    map.get(&id).cloned().ok_or(ApprovalError::Unknown(id))?;
                if !change(&mut record) {
                    return Ok((record, false));
                }
                m.put(&mut map, record.clone(), revision + 1);
                return Ok((record, true));
            }
        };
        for _ in 0..CAS_ATTEMPTS {
            let (mut record, revision) = self.get(id).await?;
            if !change(&mut record) {
                return Ok((record, false));
            }
            let body = serde_json::to_vec(&record).map_err(store_err)?;
            match kv.update(id.to_string(), Bytes::from(body), revision).await {
                Ok(_) => return Ok((record, true)),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(store_err(e)),
            }
        }
        Err(ApprovalError::Store(format!(
            "request {id}: too many concurrent changes"
        )))
    }

    /// Closes a pending request as `state` (`Expired`, `Withdrawn`) for `reason`.
    /// A request already decided keeps its decision, which is returned.
    pub async fn close(
        &self,
        id: Uuid,
        state: ApprovalState,
        reason: &str,
    ) -> Result<ApprovalRecord, ApprovalError> {
        let (record, _) = self
            .transition(id, |r| {
                if !r.state.is_pending() {
                    return false;
                }
                r.state = state;
                r.closed_reason = Some(reason.to_owned());
                true
            })
            .await?;
        Ok(record)
    }

    /// Marks an approved request as run. `false`: it was not in `Approved`
    /// (already executed: an approval is used once).
    pub async fn executed(&self, id: Uuid) -> Result<bool, ApprovalError> {
        let (_, applied) = self
            .transition(id, |r| {
                if r.state != ApprovalState::Approved {
                    return false;
                }
                r.state = ApprovalState::Executed;
                true
            })
            .await?;
        Ok(applied)
    }

    /// The record now and after each change. Ends when the bus does.
    pub async fn watch(
        &self,
        id: Uuid,
    ) -> Result<impl Stream<Item = ApprovalRecord> + Send + use<>, ApprovalError> {
        let kv = match &self.backend {
            Backend::Kv(k) => k.get().await?,
            Backend::Memory(m) => {
                let changes = m.clone().feed(Some(id), true);
                return Ok(changes.map(|(r, _)| r).left_stream());
            }
        };
        let watch = kv
            .watch_with_history(id.to_string())
            .await
            .map_err(store_err)?;
        Ok(watch
            .filter_map(move |e| async move {
                let e = e.ok()?;
                if e.operation != kv::Operation::Put {
                    return None;
                }
                match decode(id, &e.value) {
                    Ok(r) => Some(r),
                    Err(err) => {
                        tracing::warn!(error = %err, "approval_record_unreadable");
                        None
                    }
                }
            })
            .right_stream())
    }

    /// Every change from now on (the approver's notifier; what was stored
    /// before, it reads with [`ApprovalStore::all`] after starting this watch).
    pub async fn watch_new(
        &self,
    ) -> Result<impl Stream<Item = (ApprovalRecord, u64)> + Send + use<>, ApprovalError> {
        let kv = match &self.backend {
            Backend::Kv(k) => k.get().await?,
            Backend::Memory(m) => {
                let changes = m.clone().feed(None, false);
                return Ok(changes.left_stream());
            }
        };
        let watch = kv.watch(">").await.map_err(store_err)?;
        Ok(watch
            .filter_map(|e| async move {
                let e = e.ok()?;
                if e.operation != kv::Operation::Put {
                    return None;
                }
                let id = e.key.parse().ok()?;
                decode(id, &e.value).ok().map(|r| (r, e.revision))
            })
            .right_stream())
    }
}

impl Memory {
    /// The records (one, or all) as they are (`snapshot_first`), then each change. A watcher that
    /// falls behind the feed re-reads the records it may have missed.
    fn feed(
        self: Arc<Self>,
        only: Option<Uuid>,
        snapshot_first: bool,
    ) -> impl Stream<Item = (ApprovalRecord, u64)> + Send + use<> {
        // Subscribed before the snapshot: a change between the two is seen twice
        // at worst (revisions tell), never missed.
        let rx = self.changes.subscribe();
        let snapshot = if snapshot_first {
            self.snapshot(only)
        } else {
            Vec::new()
        };
        futures_util::stream::unfold(
            (self, rx, snapshot, HashMap::<Uuid, u64>::new()),
            move |(m, mut rx, mut pending, mut seen)| async move {
                loop {
                    let (r, rev) = match pending.pop() {
                        Some(x) => x,
                        None => match rx.recv().await {
                            Ok(x) => x,
                            Err(broadcast::error::RecvError::Lagged(_)) => {
                                pending = m.snapshot(only);
                                continue;
                            }
                            Err(broadcast::error::RecvError::Closed) => return None,
                        },
                    };
                    if only.is_some_and(|id| id != r.request.id) {
                        continue;
                    }
                    if seen.get(&r.request.id).is_some_and(|s| *s >= rev) {
                        continue;
                    }
                    seen.insert(r.request.id, rev);
                    return Some(((r, rev), (m, rx, pending, seen)));
                }
            },
        )
    }

    /// The records now, in reverse order (popped from the end).
    fn snapshot(&self, only: Option<Uuid>) -> Vec<(ApprovalRecord, u64)> {
        let map = self.lock();
        let mut v: Vec<_> = match only {
            Some(id) => map.get(&id).cloned().into_iter().collect(),
            None => map.values().cloned().collect(),
        };
        v.sort_by(|a, b| b.0.request.requested_at.cmp(&a.0.request.requested_at));
        v
    }
}

/// Opens the bucket, creating it if it does not exist.
async fn open_bucket(client: async_nats::Client) -> Result<kv::Store, ApprovalError> {
    let js = jetstream::new(client);
    // The bucket's stream is created by hand, as the key-value convention
    // names it: the client's own `create_key_value` sends settings that
    // nats-server 2.9 (Debian 12's) does not answer in a shape it reads.
    let created = js
        .get_or_create_stream(jetstream::stream::Config {
            name: format!("KV_{APPROVAL_BUCKET}"),
            description: Some("Gatehouse approval requests".into()),
            subjects: vec![format!("$KV.{APPROVAL_BUCKET}.>")],
            max_messages_per_subject: 1,
            max_age: RETENTION,
            storage: jetstream::stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await;
    let kv = match (created, js.get_key_value(APPROVAL_BUCKET).await) {
        (_, Ok(kv)) => kv,
        // Created by another instance starting at the same time, or not at all.
        (Err(e), Err(_)) => return Err(store_err(e)),
        (Ok(_), Err(e)) => return Err(store_err(e)),
    };
    Ok(kv)
}

fn decode(id: Uuid, bytes: &[u8]) -> Result<ApprovalRecord, ApprovalError> {
    serde_json::from_slice(bytes).map_err(|e| ApprovalError::Unreadable(id, e.to_string()))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// How an approver names themselves to the client and in evidence.
pub fn display_name(identity: &gatehouse_schemas::Identity) -> String {
    for claim in ["preferred_username", "email", "name"] {
        if let Some(v) = identity.claims.get(claim).and_then(|v| v.as_str()) {
            return format!("{v} ({})", identity.subject);
        }
    }
    identity.subject.clone()
}

/// One step of the hold for the session's evidence.
pub fn event(
    record: &ApprovalRecord,
    state: &str,
    by: Option<String>,
    reason: Option<String>,
    approver: Option<Identity>,
) -> ApprovalEvent {
    ApprovalEvent {
        statement: record.request.statement_seq,
        request: record.request.id.to_string(),
        state: state.to_owned(),
        approvers: record.request.approvers.clone(),
        by,
        reason,
        statement_hash: Some(record.request.statement_hash.clone()),
        requester: Some(record.request.requester.subject.clone()),
        approver,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_schemas::approval::ApprovalRequest;
    use gatehouse_schemas::evidence::CiContext;

    fn record() -> ApprovalRecord {
        ApprovalRecord::new(ApprovalRequest {
            v: gatehouse_schemas::SCHEMA_VERSION,
            id: Uuid::now_v7(),
            role: "app".into(),
            session_id: Uuid::now_v7(),
            statement_seq: 1,
            sql: "delete from t".into(),
            params: None,
            statement_hash: "h".into(),
            requester: Identity {
                issuer: "i".into(),
                subject: "s".into(),
                key_id: None,
                algorithm: "EdDSA".into(),
                claims: serde_json::Map::new(),
            },
            ci: CiContext::default(),
            rule: None,
            reason: "r".into(),
            approvers: "dba".into(),
            requested_at: rfc3339(SystemTime::now()),
            deadline: rfc3339(SystemTime::now()),
            deadline_ms: now_ms() + 60_000,
            gateway: "g".into(),
        })
    }

    #[tokio::test]
    async fn in_memory_the_first_change_wins_and_watchers_see_each_one() {
        let store = ApprovalStore::memory();
        let r = record();
        let id = r.request.id;
        store.create(&r).await.unwrap();
        assert!(store.create(&r).await.is_err(), "created twice");
        let mut watch = Box::pin(store.watch(id).await.unwrap());
        let mut new = Box::pin(store.watch_new().await.unwrap());
        assert_eq!(watch.next().await.unwrap().state, ApprovalState::Pending);

        let (after, applied) = store
            .transition(id, |r| {
                r.state = ApprovalState::Denied;
                true
            })
            .await
            .unwrap();
        assert!(applied);
        assert_eq!(after.state, ApprovalState::Denied);
        // A later expiry leaves the decision as it is.
        let closed = store
            .close(id, ApprovalState::Expired, "late")
            .await
            .unwrap();
        assert_eq!(closed.state, ApprovalState::Denied);
        assert!(!store.executed(id).await.unwrap());
        assert_eq!(watch.next().await.unwrap().state, ApprovalState::Denied);
        let (changed, revision) = new.next().await.unwrap();
        assert_eq!((changed.state, revision), (ApprovalState::Denied, 2));
        assert!(matches!(
            store.get(Uuid::now_v7()).await,
            Err(ApprovalError::Unknown(_))
        ));
        assert_eq!(store.all().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn in_memory_closed_records_are_forgotten_past_the_bound() {
        let store = ApprovalStore::memory();
        let first = record();
        store.create(&first).await.unwrap();
        store
            .close(first.request.id, ApprovalState::Expired, "x")
            .await
            .unwrap();
        for _ in 0..MEMORY_RECORDS {
            store.create(&record()).await.unwrap();
        }
        // Pending records are never forgotten; the closed one goes first.
        assert!(matches!(
            store.get(first.request.id).await,
            Err(ApprovalError::Unknown(_))
        ));
        assert_eq!(store.all().await.unwrap().len(), MEMORY_RECORDS);
    }
}
