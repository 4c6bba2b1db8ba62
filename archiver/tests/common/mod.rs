//! Helpers for the archiver's tests: real hash-chained sessions, a real store.

#![allow(dead_code)]

use std::time::{Duration, SystemTime};

use ed25519_dalek::SigningKey;
use gatehouse_archiver::segment::sha256_hex;
use gatehouse_archiver::{Archive, LocalDir, Segmenter, SegmenterConfig};
use gatehouse_schemas::Identity;
use gatehouse_schemas::evidence::{
    CiContext, Event, EventBody, GENESIS, SessionEnded, SessionStarted, Statement,
    StatementCompleted, StatementPath,
};
use uuid::Uuid;

pub fn signing_key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

pub fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn identity(subject: &str) -> Identity {
    let claims = serde_json::json!({"repository": "acme/etl", "run_id": "42", "sha": "abc123"});
    Identity {
        issuer: "https://token.actions.githubusercontent.com".into(),
        subject: subject.into(),
        key_id: None,
        algorithm: "RS256".into(),
        claims: claims.as_object().unwrap().clone(),
    }
}

/// Builds a session's records the way the ingress does: each serialized once,
/// `prev` the hash of the previous record's bytes.
pub struct ChainBuilder {
    pub session: Uuid,
    pub records: Vec<Vec<u8>>,
    prev: String,
}

impl ChainBuilder {
    pub fn new(session: Uuid) -> Self {
        Self {
            session,
            records: Vec::new(),
            prev: GENESIS.into(),
        }
    }

    pub fn push(&mut self, body: EventBody) -> u64 {
        let seq = self.records.len() as u64 + 1;
        let event = Event {
            v: 1,
            session_id: self.session,
            seq,
            ts: format!("2027-01-15T08:{:02}:{:02}.000000Z", seq / 60, seq % 60),
            prev: self.prev.clone(),
            ctx: None,
            body,
        };
        let record = serde_json::to_vec(&event).unwrap();
        self.prev = sha256_hex(&record);
        self.records.push(record);
        seq
    }

    pub fn started(&mut self, role: &str, subject: &str) -> u64 {
        let id = identity(subject);
        self.push(EventBody::SessionStarted(Box::new(SessionStarted {
            role: role.into(),
            ci: CiContext::from_claims(&id.claims),
            identity: id,
            upstream: "db:5432/app".into(),
            upstream_user: "app".into(),
            client_addr: "127.0.0.1:50000".into(),
            tls: None,
            gateway: "gw-1".into(),
        })))
    }

    /// A statement and, when forwarded, its completion.
    pub fn statement(&mut self, sql: &str, forwarded: bool) {
        let seq = self.push(EventBody::Statement(Statement {
            path: StatementPath::SimpleQuery,
            statement_name: None,
            portal: None,
            sql: sql.into(),
            function_oid: None,
            params: None,
            verdict: if forwarded { "allow" } else { "block" }.into(),
            rule: Some("r1".into()),
            reason: (!forwarded).then(|| "writes are held".into()),
            policy_version: Some("v1".into()),
            classes: vec!["read".into()],
            shadow: vec![],
            forwarded,
            approval: None,
            objects: None,
        }));
        if forwarded {
            self.push(EventBody::StatementCompleted(StatementCompleted {
                statement: seq,
                outcome: "ok".into(),
                tags: vec!["SELECT 1".into()],
                rows: 1,
                duration_us: 1500,
                sqlstate: None,
            }));
        }
    }

    pub fn ended(&mut self, statements: u64, refused: u64) -> u64 {
        self.push(EventBody::SessionEnded(SessionEnded {
            reason: "client_terminated".into(),
            statements,
            refused,
            duration_ms: 20,
        }))
    }
}

/// A complete session: started, `n` forwarded statements (2 records each), ended.
pub fn complete_session(n: usize) -> ChainBuilder {
    let mut c = ChainBuilder::new(Uuid::now_v7());
    c.started("etl", "repo:acme/etl:ref:refs/heads/main");
    for i in 0..n {
        c.statement(&format!("select {i}"), true);
    }
    c.ended(n as u64, 0);
    c
}

pub fn archive(store: LocalDir, writer: &str, max_events: usize) -> Archive<LocalDir> {
    let config = SegmenterConfig {
        max_events,
        ..Default::default()
    };
    Archive::new(store, Segmenter::new(config, writer, signing_key(1)))
}

/// Archives all the records with one archiver and returns the store.
pub async fn archived(
    dir: &std::path::Path,
    sessions: &[&ChainBuilder],
    max_events: usize,
) -> LocalDir {
    let store = LocalDir::new(dir);
    let mut a = archive(store.clone(), "w1", max_events);
    for s in sessions {
        for r in &s.records {
            a.ingest(r, at(0)).await.unwrap();
        }
    }
    a.flush().await.unwrap();
    store
}
