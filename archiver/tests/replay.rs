//! Listing and replaying archived sessions.

mod common;

use common::*;
use gatehouse_archiver::replay::{
    SessionFilter, render_transcript, replay, replay_records, sessions,
};
use gatehouse_archiver::verify::session_start;
use gatehouse_archiver::{ArchiveError, LocalDir};
use gatehouse_schemas::evidence::{EventBody, ResultData};
use uuid::Uuid;

struct Two {
    _dir: tempfile::TempDir,
    store: LocalDir,
    done: ChainBuilder,
    open: ChainBuilder,
}

async fn two_sessions() -> Two {
    let dir = tempfile::tempdir().unwrap();
    let mut done = ChainBuilder::new(Uuid::now_v7());
    done.started("etl", "repo:acme/etl:ref:refs/heads/main");
    done.statement("select id, email from users", true);
    done.push(EventBody::ResultData(ResultData {
        statement: 2,
        columns: vec!["id".into(), "email".into()],
        rows: vec![vec![Some("1".into()), None]],
        truncated: false,
        row_count: 1,
    }));
    done.statement("delete from users", false);
    done.ended(2, 1);
    let mut open = ChainBuilder::new(Uuid::now_v7());
    open.started("reporting", "system:serviceaccount:ci:runner");
    open.statement("select 1", true);
    open.statement("drop table t", false);
    let store = archived(dir.path(), &[&done, &open], 3).await;
    Two {
        _dir: dir,
        store,
        done,
        open,
    }
}

#[tokio::test]
async fn sessions_are_listed_with_identity_ci_and_counts() {
    let t = two_sessions().await;
    let all = sessions(&t.store, &SessionFilter::default()).await.unwrap();
    assert_eq!(all.len(), 2);
    let done = &all[0];
    assert_eq!(done.session, t.done.session, "oldest first");
    assert_eq!(done.role.as_deref(), Some("etl"));
    assert_eq!(
        done.subject.as_deref(),
        Some("repo:acme/etl:ref:refs/heads/main")
    );
    assert_eq!(done.repository.as_deref(), Some("acme/etl"));
    assert_eq!(done.run_id.as_deref(), Some("42"));
    assert_eq!(done.ci_provider.as_deref(), Some("github"));
    assert_eq!((done.statements, done.refused), (2, 1));
    assert_eq!(done.end_reason.as_deref(), Some("client_terminated"));
    assert!(!done.is_open());
    let open = &all[1];
    assert!(open.is_open(), "no session_ended: listed as open");
    assert_eq!(
        (open.statements, open.refused),
        (2, 1),
        "counted from the records"
    );

    let by_subject = SessionFilter {
        subject: Some("repo:acme/*".into()),
        ..Default::default()
    };
    let found = sessions(&t.store, &by_subject).await.unwrap();
    assert_eq!(
        found.iter().map(|s| s.session).collect::<Vec<_>>(),
        vec![t.done.session]
    );
    let by_role = SessionFilter {
        role: Some("reporting".into()),
        ..Default::default()
    };
    let found = sessions(&t.store, &by_role).await.unwrap();
    assert_eq!(
        found.iter().map(|s| s.session).collect::<Vec<_>>(),
        vec![t.open.session]
    );
    let later = SessionFilter {
        since: Some(session_start(t.open.session).unwrap() + std::time::Duration::from_secs(1)),
        ..Default::default()
    };
    assert!(sessions(&t.store, &later).await.unwrap().is_empty());
}

#[tokio::test]
async fn replay_returns_the_stored_records_in_order_and_renders_them() {
    let t = two_sessions().await;
    let records = replay_records(&t.store, t.done.session).await.unwrap();
    let bytes: Vec<Vec<u8>> = records.into_iter().map(|(_, r)| r).collect();
    assert_eq!(bytes, t.done.records, "exactly as stored, across segments");
    let events = replay(&t.store, t.done.session).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=6).collect::<Vec<_>>());
    let mut out = Vec::new();
    render_transcript(&events, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    for expected in [
        "session started: role etl as repo:acme/etl:ref:refs/heads/main",
        "ci: github repository=acme/etl run=42 commit=abc123",
        "statement (simple_query) ALLOW rule=r1 policy=v1 forwarded",
        "| select id, email from users",
        "completed #2: ok SELECT 1 rows 1 in 1.500 ms",
        "result of #2: 1 rows",
        "| id | email",
        "| 1 | NULL",
        "BLOCK rule=r1 policy=v1 REFUSED",
        "reason: writes are held",
        "session ended: client_terminated after 20 ms; 2 statements, 1 refused",
    ] {
        assert!(text.contains(expected), "{expected:?} not in\n{text}");
    }
    assert!(matches!(
        replay(&t.store, Uuid::now_v7()).await,
        Err(ArchiveError::NoSuchSession(_))
    ));
}
