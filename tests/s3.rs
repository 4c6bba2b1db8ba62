//! Evidence in S3, against a real S3-compatible server (moto): the store,
//! pagination, Object Lock, an archive verified in a bucket, an outage ridden
//! out, and the auditor's commands reading a bucket.

mod harness;
// The archiver's own test helpers: real hash-chained sessions.
#[path = "../archiver/tests/common/mod.rs"]
mod chain;

use std::process::Output;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumMode, ObjectLockMode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chain::{ChainBuilder, at, complete_session, signing_key};
use ed25519_dalek::SigningKey;
use futures_util::StreamExt;
use gatehouse_archiver::keys::VERIFYING_KEY_FILE;
use gatehouse_archiver::segment::{manifest_key, segment_key};
use gatehouse_archiver::{
    Archive, BreakKind, S3Config, S3Store, SegmentStore, Segmenter, SegmenterConfig, SessionStatus,
    StoreError, verify,
};
use harness::s3::Moto;
use sha2::{Digest, Sha256};
use tokio::process::Command;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

fn archive(store: S3Store, max_events: usize, key: SigningKey) -> Archive<S3Store> {
    let config = SegmenterConfig {
        max_events,
        ..Default::default()
    };
    Archive::new(store, Segmenter::new(config, "w1", key))
}

async fn archive_sessions(store: &S3Store, sessions: &[&ChainBuilder], key: SigningKey) {
    let mut a = archive(store.clone(), 4, key);
    for s in sessions {
        for r in &s.records {
            a.ingest(r, at(0)).await.unwrap();
        }
    }
    let durable = a.flush().await.unwrap();
    let total: usize = sessions.iter().map(|s| s.records.len()).sum();
    assert_eq!(durable.len(), total);
}

async fn read_raw(moto: &Moto, bucket: &str, object: &str) -> Vec<u8> {
    let out = moto
        .client()
        .get_object()
        .bucket(bucket)
        .key(object)
        .send()
        .await
        .unwrap();
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

async fn write_raw(moto: &Moto, bucket: &str, object: &str, bytes: Vec<u8>) {
    moto.client()
        .put_object()
        .bucket(bucket)
        .key(object)
        .body(ByteStream::from(bytes))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn put_get_list_under_a_prefix() {
    let moto = Moto::start();
    moto.create_bucket("evidence").await;
    let config = S3Config {
        prefix: Some("/gh/prod/".into()),
        ..moto.config("evidence")
    };
    let store = moto.store(&config).await.unwrap();
    assert_eq!(store.prefix(), "gh/prod/");
    assert_eq!(store.list("sessions/").await.unwrap(), Vec::<String>::new());
    store.put("sessions/b/2.gz", b"two").await.unwrap();
    store.put("sessions/a/1.gz", b"one").await.unwrap();
    store.put("sessions/a/1.gz", b"uno").await.unwrap();
    store.put("other/x", b"x").await.unwrap();
    assert_eq!(store.get("sessions/a/1.gz").await.unwrap().unwrap(), b"uno");
    assert_eq!(store.get("sessions/a/none").await.unwrap(), None);
    assert_eq!(
        store.list("sessions/").await.unwrap(),
        vec!["sessions/a/1.gz", "sessions/b/2.gz"]
    );
    assert_eq!(
        store.list("sessions/a").await.unwrap(),
        vec!["sessions/a/1.gz"]
    );
    assert_eq!(store.list("").await.unwrap().len(), 3);

    // Every put carries a SHA-256 checksum, which S3 checked and kept.
    let head = moto
        .client()
        .head_object()
        .bucket("evidence")
        .key("gh/prod/sessions/a/1.gz")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.checksum_sha256(),
        Some(BASE64.encode(Sha256::digest(b"uno")).as_str())
    );

    // In the bucket, everything sits under the prefix.
    let listed = moto
        .client()
        .list_objects_v2()
        .bucket("evidence")
        .send()
        .await
        .unwrap();
    let objects: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(
        objects,
        [
            "gh/prod/other/x",
            "gh/prod/sessions/a/1.gz",
            "gh/prod/sessions/b/2.gz"
        ]
    );

    // Objects beside the archive are not in it: another prefix that starts the
    // same, and a name that is no archive key.
    write_raw(&moto, "evidence", "gh/prod2/sessions/c/3.gz", b"3".into()).await;
    write_raw(&moto, "evidence", "gh/prod/sessions/a/.part", b"p".into()).await;
    assert_eq!(
        store.list("sessions/").await.unwrap(),
        vec!["sessions/a/1.gz", "sessions/b/2.gz"]
    );

    // The same keys are refused as in a local directory.
    for key in ["", "/etc/passwd", "../x", "a//b", "a/./b", ".hidden"] {
        assert!(
            matches!(store.put(key, b"x").await, Err(StoreError::InvalidKey(_))),
            "{key:?}"
        );
        assert!(store.get(key).await.is_err(), "{key:?}");
    }
}

#[tokio::test]
async fn list_follows_pagination_past_1000_keys() {
    let moto = Moto::start();
    moto.create_bucket("evidence").await;
    let store = moto.store(&moto.config("evidence")).await.unwrap();
    let keys: Vec<String> = (0..1005).map(|i| format!("many/{i:05}")).collect();
    let puts: Vec<_> = futures_util::stream::iter(&keys)
        .map(|k| store.put(k, b"x"))
        .buffer_unordered(16)
        .collect()
        .await;
    assert!(puts.iter().all(Result::is_ok));
    // S3 answers at most 1000 keys a page.
    let first_page = moto
        .client()
        .list_objects_v2()
        .bucket("evidence")
        .send()
        .await
        .unwrap();
    assert_eq!(first_page.contents().len(), 1000);
    assert_eq!(first_page.is_truncated(), Some(true));

    assert_eq!(store.list("many/").await.unwrap(), keys);
}

#[tokio::test]
async fn an_archive_in_a_bucket_verifies_and_a_changed_byte_is_a_break() {
    let moto = Moto::start();
    moto.create_bucket("evidence").await;
    let config = S3Config {
        prefix: Some("gatehouse".into()),
        ..moto.config("evidence")
    };
    let store = moto.store(&config).await.unwrap();
    let done = complete_session(5);
    assert_eq!(done.records.len(), 12);
    archive_sessions(&store, &[&done], signing_key(1)).await;
    let trusted = [signing_key(1).verifying_key()];

    let report = verify(&store, &trusted, None, None).await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.sessions.len(), 1);
    assert_eq!(report.sessions[0].status, SessionStatus::Complete);

    // Someone with write access to the bucket changes one byte of the middle segment.
    let segment = segment_key(done.session, 5, 8, "w1");
    let object = store.object_key(&segment);
    assert_eq!(object, format!("gatehouse/{segment}"));
    let mut bytes = read_raw(&moto, "evidence", &object).await;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    write_raw(&moto, "evidence", &object, bytes).await;

    let report = verify(&store, &trusted, None, None).await.unwrap();
    assert!(!report.is_clean());
    assert!(
        report
            .breaks
            .iter()
            .any(|b| b.kind == BreakKind::SegmentChanged && b.key == segment),
        "{:?}",
        report.breaks
    );
}

#[tokio::test]
async fn object_lock_puts_carry_compliance_retention_and_the_version_cannot_be_deleted() {
    let moto = Moto::start();
    moto.create_locked_bucket("locked").await;
    let config = S3Config {
        object_lock_days: Some(7),
        ..moto.config("locked")
    };
    let store = moto.store(&config).await.unwrap();
    let key = "sessions/s/1-1-w1.ndjson.gz";
    let before = SystemTime::now();
    store.put(key, b"evidence").await.unwrap();
    let after = SystemTime::now();

    let raw = moto.client();
    let head = raw
        .head_object()
        .bucket("locked")
        .key(key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.object_lock_mode(), Some(&ObjectLockMode::Compliance));
    let until = SystemTime::try_from(*head.object_lock_retain_until_date().unwrap()).unwrap();
    let week = Duration::from_secs(7 * 86_400);
    assert!(
        until >= before + week && until <= after + week + Duration::from_secs(1),
        "retained until {until:?}"
    );
    // (HeadObject, not GetObjectRetention: moto answers GET ?retention with the
    // object itself.)

    // The version cannot be deleted, and is still there.
    let version = head
        .version_id()
        .expect("Object Lock buckets are versioned");
    let err = raw
        .delete_object()
        .bucket("locked")
        .key(key)
        .version_id(version)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("AccessDenied"), "{err:?}");
    assert_eq!(store.get(key).await.unwrap().unwrap(), b"evidence");

    // Control: the same bucket written without object_lock_days holds no
    // retention, and that version can be deleted.
    let unlocked = moto.store(&moto.config("locked")).await.unwrap();
    let other = "sessions/s/2-2-w1.ndjson.gz";
    unlocked.put(other, b"evidence").await.unwrap();
    let head = raw
        .head_object()
        .bucket("locked")
        .key(other)
        .send()
        .await
        .unwrap();
    assert_eq!(head.object_lock_mode(), None);
    raw.delete_object()
        .bucket("locked")
        .key(other)
        .version_id(head.version_id().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(unlocked.get(other).await.unwrap(), None);
}

#[tokio::test]
async fn connect_refuses_a_bucket_that_cannot_lock_or_is_not_there() {
    let mut moto = Moto::start();
    moto.create_bucket("plain").await;
    let locking = S3Config {
        object_lock_days: Some(7),
        ..moto.config("plain")
    };
    let err = moto.store(&locking).await.unwrap_err();
    assert!(matches!(err, StoreError::Unusable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("s3://plain/: ") && text.contains("does not have Object Lock enabled"),
        "{text}"
    );
    // The same bucket without object_lock_days is fine.
    moto.store(&moto.config("plain")).await.unwrap();

    let err = moto.store(&moto.config("nope")).await.unwrap_err();
    assert_eq!(err.to_string(), "s3://nope/: bucket nope does not exist");

    // Nothing listening: a sentence about reaching the bucket, no debug dump.
    moto.stop();
    let err = moto.store(&moto.config("plain")).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("s3://plain/: cannot reach bucket plain: ") && !text.contains('{'),
        "{text}"
    );
    // moto keeps its buckets in memory: restarted, it has none.
    moto.restart();
    let err = moto.store(&moto.config("plain")).await.unwrap_err();
    assert_eq!(err.to_string(), "s3://plain/: bucket plain does not exist");
}

#[tokio::test]
async fn an_archive_rides_out_an_unreachable_s3() {
    let moto = Moto::start();
    moto.create_bucket("evidence").await;
    let config = S3Config {
        timeout: Duration::from_secs(3),
        attempt_timeout: Duration::from_secs(1),
        ..moto.config("evidence")
    };
    let store = moto.store(&config).await.unwrap();
    let done = complete_session(1);
    let mut a = archive(store.clone(), 100, signing_key(1));
    for r in &done.records {
        a.ingest(r, at(0)).await.unwrap();
    }

    // S3 frozen: the put gives up within its timeout instead of hanging the archiver.
    moto.pause();
    let err = tokio::time::timeout(Duration::from_secs(30), a.flush())
        .await
        .expect("a put to an unanswering S3 ends by its timeout")
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("put sessions/{}/", done.session)) && text.contains("timeout"),
        "{text}"
    );

    // Back, with its data: the next call puts what is pending.
    moto.resume();
    let durable = a.tick(at(1)).await.unwrap();
    assert_eq!(durable.len(), done.records.len());
    let report = verify(&store, &[signing_key(1).verifying_key()], None, None)
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
}

async fn gatehouse(moto: &Moto, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .envs(moto.env())
        .env_remove("GATEHOUSE_EVIDENCE_DIR");
    for var in ["BUCKET", "PREFIX", "ENDPOINT", "REGION", "PATH_STYLE"] {
        cmd.env_remove(format!("GATEHOUSE_S3_{var}"));
    }
    cmd.output().await.expect("run gatehouse")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn cli_verifies_lists_and_replays_evidence_in_s3() {
    let moto = Moto::start();
    moto.create_bucket("audit").await;
    let dir = tempfile::tempdir().unwrap();
    let key = gatehouse_archiver::keygen(dir.path()).unwrap();
    let public = dir.path().join(VERIFYING_KEY_FILE);
    let public = public.to_str().unwrap();
    let store = moto
        .store(&S3Config {
            prefix: Some("gatehouse/prod".into()),
            ..moto.config("audit")
        })
        .await
        .unwrap();
    let done = complete_session(3);
    let mut open = ChainBuilder::new(Uuid::now_v7());
    open.started("etl", "repo:acme/etl:ref:refs/heads/main");
    open.statement("select 1", true);
    archive_sessions(&store, &[&done, &open], key).await;

    let endpoint = moto.endpoint();
    let s3 = [
        "--s3-bucket",
        "audit",
        "--s3-prefix",
        "gatehouse/prod",
        "--s3-endpoint",
        &endpoint,
        "--s3-path-style",
    ];
    let out = gatehouse(&moto, &[&["verify", "--key", public], &s3[..]].concat()).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        stdout(&out).lines().next(),
        Some("2 sessions: 1 complete, 1 open, 0 broken; 0 breaks")
    );

    let out = gatehouse(&moto, &[&["sessions", "list", "--json"], &s3[..]].concat()).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let listed: Vec<String> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["session"].to_string())
        .collect();
    assert_eq!(
        listed,
        [done.session, open.session].map(|s| format!("\"{s}\""))
    );

    let session = done.session.to_string();
    let out = gatehouse(&moto, &[&["replay", &session, "--json"], &s3[..]].concat()).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        out.stdout,
        [done.records.join(&b'\n'), b"\n".to_vec()].concat()
    );

    // The same store through the environment.
    let mut cmd = Command::new(BIN);
    cmd.args(["sessions", "list"])
        .envs(moto.env())
        .env_remove("GATEHOUSE_EVIDENCE_DIR")
        .env("GATEHOUSE_S3_BUCKET", "audit")
        .env("GATEHOUSE_S3_PREFIX", "gatehouse/prod")
        .env("GATEHOUSE_S3_ENDPOINT", &endpoint)
        .env("GATEHOUSE_S3_PATH_STYLE", "true");
    let out = cmd.output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout(&out).lines().count(), 3, "{}", stdout(&out));

    // A deleted manifest is a break, and verify exits 1.
    let manifest = store.object_key(&manifest_key(&segment_key(done.session, 5, 8, "w1")));
    moto.client()
        .delete_object()
        .bucket("audit")
        .key(&manifest)
        .send()
        .await
        .unwrap();
    let out = gatehouse(&moto, &[&["verify", "--key", public], &s3[..]].concat()).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stdout(&out).contains(&format!("BREAK session {} unsigned_records", done.session)),
        "{}",
        stdout(&out)
    );

    // Exactly one store: both, or neither, is a usage error.
    let out = gatehouse(
        &moto,
        &[&["verify", "--key", public, "--dir", "/tmp"], &s3[..]].concat(),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = gatehouse(&moto, &["sessions", "list"]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // A bucket that is not there is named, not taken for an empty archive.
    let out = gatehouse(
        &moto,
        &[
            "sessions",
            "list",
            "--s3-bucket",
            "typo",
            "--s3-endpoint",
            &endpoint,
            "--s3-path-style",
        ],
    )
    .await;
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bucket typo does not exist"), "{stderr}");
}
