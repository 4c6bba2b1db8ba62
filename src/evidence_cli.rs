//! `gatehouse verify | replay | sessions list | evidence keygen`: the auditor's
//! tools over an evidence archive.
//!
//! Times (`--since`, `--until`) are RFC 3339 in UTC (`2026-11-22T10:00:00Z`)
//! or a duration meaning that long ago (`2h`, `90min`, `7days`). A session is
//! in range when it started in `[since, until)`.
//!
//! The archive is a local directory (`--dir`) or an S3 bucket (`--s3-bucket`,
//! with `--s3-prefix`, and `--s3-endpoint` and `--s3-path-style` for an
//! S3-compatible store); credentials for S3 come from the standard AWS chain.

use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use clap::{ArgGroup, Args, Subcommand};
use gatehouse_archiver::keys::{self, SIGNING_KEY_FILE, VERIFYING_KEY_FILE};
use gatehouse_archiver::replay::{self, SessionFilter};
use gatehouse_archiver::verify::SessionStatus;
use gatehouse_archiver::{LocalDir, S3Config, S3Store, SegmentStore, StoreError, TimeArgError};
use uuid::Uuid;

/// The evidence subcommands (flattened into the top level of `gatehouse`).
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify archived evidence: manifest signatures, segment objects, records,
    /// order, gaps and hash chains. Exits 1 on any break; open sessions
    /// (started, never completed) are listed but are not breaks.
    Verify {
        /// Where the evidence is.
        #[command(flatten)]
        store: StoreArgs,
        /// A trusted public key (SPKI PEM, as `evidence keygen` writes). Repeatable,
        /// for archives signed by several keys over time.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Only sessions that started at or after this (RFC 3339, or e.g. `2h` ago).
        #[arg(long, value_parser = time_arg)]
        since: Option<SystemTime>,
        /// Only sessions that started before this (RFC 3339, or e.g. `30m` ago).
        #[arg(long, value_parser = time_arg)]
        until: Option<SystemTime>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print one session's events as a transcript (does not verify: run `verify`).
    Replay {
        /// The session id.
        session: Uuid,
        /// Where the evidence is.
        #[command(flatten)]
        store: StoreArgs,
        /// Print the records exactly as stored, one per line.
        #[arg(long)]
        json: bool,
    },
    /// Sessions in the archive.
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Evidence signing keys.
    Evidence {
        #[command(subcommand)]
        command: EvidenceCommand,
    },
}

/// `gatehouse sessions ...`
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List sessions, oldest first: who, which role, CI run, statements, refusals, open or ended.
    List {
        /// Where the evidence is.
        #[command(flatten)]
        store: StoreArgs,
        /// Only callers whose `sub` matches this glob (`*`, `?`).
        #[arg(long)]
        subject: Option<String>,
        /// Only this Gatehouse role.
        #[arg(long)]
        role: Option<String>,
        /// Only sessions that started at or after this (RFC 3339, or e.g. `2h` ago).
        #[arg(long, value_parser = time_arg)]
        since: Option<SystemTime>,
        /// Only sessions that started before this.
        #[arg(long, value_parser = time_arg)]
        until: Option<SystemTime>,
        /// One JSON object per session and line.
        #[arg(long)]
        json: bool,
    },
}

/// `gatehouse evidence ...`
#[derive(Debug, Subcommand)]
pub enum EvidenceCommand {
    /// Write a new signing key pair into DIR: evidence-signing.pem (private,
    /// mode 0600, for the archiver) and evidence-signing.pub.pem (for verifiers).
    Keygen {
        /// Directory for the key files.
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Where the evidence is read from: a local directory, or an S3 bucket.
#[derive(Debug, Clone, Args)]
#[group(skip)]
#[command(group(ArgGroup::new("store").required(true).args(["dir", "s3_bucket"])))]
pub struct StoreArgs {
    /// The evidence directory (all-in-one mode's local archive).
    #[arg(long, env = "GATEHOUSE_EVIDENCE_DIR")]
    pub dir: Option<PathBuf>,
    /// The S3 bucket of the archive. Credentials come from the standard AWS
    /// chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an
    /// instance or task role).
    #[arg(long, env = "GATEHOUSE_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// The key prefix the archive lives under in the bucket.
    #[arg(long, env = "GATEHOUSE_S3_PREFIX", requires = "s3_bucket")]
    pub s3_prefix: Option<String>,
    /// The endpoint of an S3-compatible store (default: AWS S3).
    #[arg(long, env = "GATEHOUSE_S3_ENDPOINT", requires = "s3_bucket")]
    pub s3_endpoint: Option<String>,
    /// The bucket's region.
    #[arg(long, env = "GATEHOUSE_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Path-style addressing (`<endpoint>/<bucket>/<key>`), which most
    /// S3-compatible stores need.
    #[arg(long, env = "GATEHOUSE_S3_PATH_STYLE", requires = "s3_bucket")]
    pub s3_path_style: bool,
}

/// The stores the CLI can read.
#[derive(Debug)]
pub enum Store {
    /// A local directory.
    Local(LocalDir),
    /// An S3 bucket (and prefix).
    S3(S3Store),
}

impl SegmentStore for Store {
    async fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        match self {
            Self::Local(s) => s.put(key, bytes).await,
            Self::S3(s) => s.put(key, bytes).await,
        }
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Self::Local(s) => s.get(key).await,
            Self::S3(s) => s.get(key).await,
        }
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        match self {
            Self::Local(s) => s.list(prefix).await,
            Self::S3(s) => s.list(prefix).await,
        }
    }
}

impl StoreArgs {
    /// A local directory.
    pub fn local(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: Some(dir.into()),
            s3_bucket: None,
            s3_prefix: None,
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_path_style: false,
        }
    }

    /// Opens the store; a directory or a bucket that is not there is an error,
    /// not an empty archive.
    pub async fn open(&self) -> Result<Store> {
        match (&self.dir, &self.s3_bucket) {
            (Some(dir), None) => {
                if !dir.is_dir() {
                    bail!("no evidence directory at {}", dir.display());
                }
                Ok(Store::Local(LocalDir::new(dir)))
            }
            (None, Some(bucket)) => {
                let config = S3Config {
                    prefix: self.s3_prefix.clone(),
                    endpoint: self.s3_endpoint.clone(),
                    region: self.s3_region.clone(),
                    force_path_style: self.s3_path_style,
                    ..S3Config::new(bucket)
                };
                Ok(Store::S3(S3Store::connect(&config).await?))
            }
            // clap's group makes the two exclusive and one required.
            _ => bail!("give exactly one of --dir and --s3-bucket"),
        }
    }
}

/// Reads a `--since`/`--until` argument (see the module doc).
pub fn time_arg(arg: &str) -> Result<SystemTime, TimeArgError> {
    gatehouse_archiver::parse_time_arg(arg, SystemTime::now())
}

/// Runs a subcommand, writing to `out`; returns the process exit code.
pub fn run(cmd: AuditCommand, out: &mut impl Write) -> Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(cmd, out))
}

async fn run_async(cmd: AuditCommand, out: &mut impl Write) -> Result<i32> {
    match cmd {
        AuditCommand::Verify {
            store,
            keys: key_paths,
            since,
            until,
            json,
        } => {
            let trusted = key_paths
                .iter()
                .map(|p| keys::load_verifying_key(p))
                .collect::<Result<Vec<_>, _>>()?;
            let store = store.open().await?;
            let report = gatehouse_archiver::verify(&store, &trusted, since, until).await?;
            if json {
                serde_json::to_writer_pretty(&mut *out, &report)?;
                writeln!(out)?;
            } else {
                let count =
                    |s: SessionStatus| report.sessions.iter().filter(|r| r.status == s).count();
                writeln!(
                    out,
                    "{} sessions: {} complete, {} open, {} broken; {} breaks",
                    report.sessions.len(),
                    count(SessionStatus::Complete),
                    count(SessionStatus::Open),
                    count(SessionStatus::Broken),
                    report.breaks.len()
                )?;
                writeln!(
                    out,
                    "read {} records in {} objects ({} bytes); digest sha256:{}",
                    report.records, report.objects, report.bytes, report.digest
                )?;
                for b in &report.breaks {
                    writeln!(out, "BREAK {b}")?;
                }
                for s in report.open_sessions() {
                    writeln!(
                        out,
                        "open (started, never completed): session {} started {} last seq {}",
                        s.session,
                        s.started.as_deref().unwrap_or("?"),
                        s.last_seq
                    )?;
                }
                for w in &report.warnings {
                    writeln!(out, "warning: {}: {}", w.key, w.detail)?;
                }
            }
            Ok(if report.is_clean() { 0 } else { 1 })
        }
        AuditCommand::Replay {
            session,
            store,
            json,
        } => {
            let store = store.open().await?;
            if json {
                for (_, record) in replay::replay_records(&store, session).await? {
                    out.write_all(&record)?;
                    out.write_all(b"\n")?;
                }
            } else {
                let events = replay::replay(&store, session).await?;
                writeln!(out, "session {session}")?;
                replay::render_transcript(&events, out)?;
            }
            Ok(0)
        }
        AuditCommand::Sessions {
            command:
                SessionsCommand::List {
                    store,
                    subject,
                    role,
                    since,
                    until,
                    json,
                },
        } => {
            let store = store.open().await?;
            let filter = SessionFilter {
                subject,
                role,
                since,
                until,
            };
            let list = replay::sessions(&store, &filter).await?;
            if json {
                for s in &list {
                    serde_json::to_writer(&mut *out, s)?;
                    writeln!(out)?;
                }
            } else {
                writeln!(
                    out,
                    "{:<36}  {:<27}  {:<6}  {:<12}  {:>5}  {:>7}  {:<24}  SUBJECT",
                    "SESSION", "STARTED", "STATE", "ROLE", "STMTS", "REFUSED", "CI"
                )?;
                for s in &list {
                    let ci = match (&s.repository, &s.run_id) {
                        (Some(r), Some(run)) => format!("{r}#{run}"),
                        (Some(r), None) => r.clone(),
                        _ => s.ci_provider.clone().unwrap_or_default(),
                    };
                    writeln!(
                        out,
                        "{:<36}  {:<27}  {:<6}  {:<12}  {:>5}  {:>7}  {:<24}  {}",
                        s.session,
                        s.started.as_deref().unwrap_or("?"),
                        if s.is_open() { "open" } else { "ended" },
                        s.role.as_deref().unwrap_or("?"),
                        s.statements,
                        s.refused,
                        ci,
                        s.subject.as_deref().unwrap_or("?"),
                    )?;
                }
            }
            Ok(0)
        }
        AuditCommand::Evidence {
            command: EvidenceCommand::Keygen { dir },
        } => {
            let key = keys::keygen(&dir).context("evidence keygen")?;
            writeln!(
                out,
                "wrote {} (the archiver's, keep it private) and {} (for verifiers), key id {}",
                dir.join(SIGNING_KEY_FILE).display(),
                dir.join(VERIFYING_KEY_FILE).display(),
                keys::key_id(&key.verifying_key())
            )?;
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_archiver::{Archive, Segmenter, SegmenterConfig, segment::sha256_hex};
    use gatehouse_schemas::Identity;
    use gatehouse_schemas::evidence::{
        CiContext, Event, EventBody, GENESIS, SessionEnded, SessionStarted,
    };

    fn records(session: Uuid) -> Vec<Vec<u8>> {
        let identity = Identity {
            issuer: "gatehouse-dev".into(),
            subject: "ci-bot".into(),
            key_id: None,
            algorithm: "EdDSA".into(),
            claims: Default::default(),
        };
        let bodies = [
            EventBody::SessionStarted(Box::new(SessionStarted {
                role: "etl".into(),
                ci: CiContext::from_claims(&identity.claims),
                identity,
                upstream: "db:5432/app".into(),
                upstream_user: "app".into(),
                client_addr: "127.0.0.1:1".into(),
                tls: None,
                gateway: "gw".into(),
            })),
            EventBody::SessionEnded(SessionEnded {
                reason: "client_terminated".into(),
                statements: 0,
                refused: 0,
                duration_ms: 1,
            }),
        ];
        let mut prev = GENESIS.to_owned();
        let mut out = Vec::new();
        for (i, body) in bodies.into_iter().enumerate() {
            let e = Event {
                v: 1,
                session_id: session,
                seq: i as u64 + 1,
                ts: "2027-01-15T08:00:00.000000Z".into(),
                prev: prev.clone(),
                ctx: None,
                body,
            };
            let r = serde_json::to_vec(&e).unwrap();
            prev = sha256_hex(&r);
            out.push(r);
        }
        out
    }

    fn run_to_string(cmd: AuditCommand) -> (i32, String) {
        let mut out = Vec::new();
        let code = run(cmd, &mut out).unwrap();
        (code, String::from_utf8(out).unwrap())
    }

    #[test]
    fn keygen_archive_verify_tamper_replay_list() {
        let dir = tempfile::tempdir().unwrap();
        let keys_dir = dir.path().join("keys");
        let evidence = dir.path().join("evidence");
        let (code, text) = run_to_string(AuditCommand::Evidence {
            command: EvidenceCommand::Keygen {
                dir: keys_dir.clone(),
            },
        });
        assert_eq!(code, 0);
        assert!(text.contains("key id"), "{text}");

        let key = keys::load_signing_key(&keys_dir.join(SIGNING_KEY_FILE)).unwrap();
        let session = Uuid::now_v7();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut a = Archive::new(
                LocalDir::new(&evidence),
                Segmenter::new(SegmenterConfig::default(), "w1", key),
            );
            for r in records(session) {
                a.ingest(&r, SystemTime::now()).await.unwrap();
            }
            a.flush().await.unwrap();
        });

        let store = StoreArgs::local(&evidence);
        let verify = |json| AuditCommand::Verify {
            store: store.clone(),
            keys: vec![keys_dir.join(VERIFYING_KEY_FILE)],
            since: Some(SystemTime::now() - std::time::Duration::from_secs(3600)),
            until: None,
            json,
        };
        let (code, text) = run_to_string(verify(false));
        assert_eq!(
            (code, text.lines().next().unwrap()),
            (0, "1 sessions: 1 complete, 0 open, 0 broken; 0 breaks")
        );

        let (code, text) = run_to_string(AuditCommand::Sessions {
            command: SessionsCommand::List {
                store: store.clone(),
                subject: Some("ci-*".into()),
                role: None,
                since: None,
                until: None,
                json: true,
            },
        });
        assert_eq!(code, 0);
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(
            (v["session"].as_str(), v["role"].as_str()),
            (Some(session.to_string().as_str()), Some("etl"))
        );

        let (code, text) = run_to_string(AuditCommand::Replay {
            session,
            store: store.clone(),
            json: true,
        });
        assert_eq!(code, 0);
        assert_eq!(
            text.into_bytes(),
            [records(session).join(&b'\n'), b"\n".to_vec()].concat()
        );

        // Tamper: delete the manifest. Non-zero exit, and the break is named.
        let manifest = std::fs::read_dir(evidence.join("sessions").join(session.to_string()))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "manifest"))
            .unwrap();
        std::fs::remove_file(manifest).unwrap();
        let (code, text) = run_to_string(verify(false));
        assert_eq!(code, 1, "{text}");
        assert!(
            text.contains("BREAK session") && text.contains("unsigned_records seq 1..=2"),
            "{text}"
        );
        let (code, text) = run_to_string(verify(true));
        assert_eq!(code, 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["breaks"][0]["kind"], "unsigned_records");

        let missing = StoreArgs::local(dir.path().join("typo"));
        assert!(
            run(
                AuditCommand::Replay {
                    session,
                    store: missing,
                    json: false
                },
                &mut Vec::new()
            )
            .is_err()
        );
    }
}
