//! `gatehouse doctor --config FILE`: tries everything the config names that can
//! be reached from here, the way the role that runs it would, and prints one line
//! per check (`ok` or `FAIL`, and why).
//!
//! `config check` says whether a config is well-formed; `doctor` says whether it
//! works: issuers' key sets fetched, each role's upstream reached and
//! authenticated with the gateway's own credential (and its clock compared with
//! ours), NATS and JetStream answering, the evidence directory writable, the
//! archive's bucket and the Kafka topic reachable. It uses the services' own
//! code paths (`UpstreamTarget`, `Jwks`, `S3Store::connect`,
//! `KafkaSink::check_topic`), so a pass here is a pass there. No secret is
//! printed: a failure names what failed, never a password, token or key.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::GetStreamErrorKind;
use clap::Args;
use gatehouse_archiver::config::ArchiverStore;
use gatehouse_ingress::auth::jwks::{Jwks, JwksSource};
use gatehouse_ingress::config::RoleConfig;
use gatehouse_ingress::upstream::{self, UpstreamTarget};

use crate::config::{Config, EvidenceMode};
use crate::config_cli::CheckRole;

/// Each check gives up after this long.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// A clock further than this from the upstream's fails its check: token expiry
/// and evidence timestamps are read against it.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5);

/// `gatehouse doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The config file (TOML); GATEHOUSE__SECTION__KEY variables apply, as in `serve`.
    #[arg(long, short, env = "GATEHOUSE_CONFIG")]
    config: PathBuf,
    /// The role that runs it (`serve --role`): which of the config's services
    /// it uses, and so which are tried.
    #[arg(long, value_enum, default_value = "all")]
    role: CheckRole,
}

/// One line of the report.
struct Line {
    what: String,
    outcome: Result<String, String>,
}

/// Runs the checks; the exit code is 1 when any failed.
pub fn run(args: DoctorArgs, out: &mut impl std::io::Write) -> Result<i32> {
    let cfg = Config::load(&args.config)
        .with_context(|| format!("load config {}", args.config.display()))?;
    let rt = tokio::runtime::Runtime::new()?;
    let lines = rt.block_on(checks(&cfg, args.role));
    let failed = lines.iter().filter(|l| l.outcome.is_err()).count();
    for l in &lines {
        match &l.outcome {
            Ok(detail) => writeln!(out, "ok    {}: {detail}", l.what)?,
            Err(why) => writeln!(out, "FAIL  {}: {why}", l.what)?,
        }
    }
    writeln!(out, "{} checks, {failed} failed", lines.len(),)?;
    Ok(i32::from(failed > 0))
}

/// Every check that applies to `role`, run one after the other (each bounded).
async fn checks(cfg: &Config, role: CheckRole) -> Vec<Line> {
    let mut lines = Vec::new();
    let front = matches!(role, CheckRole::All | CheckRole::Ingress);
    if front {
        let http = gatehouse_ingress::http_client(&cfg.issuers);
        for iss in &cfg.issuers {
            let what = format!("issuer {}", iss.name);
            let outcome = match &http {
                Ok(http) => bounded(jwks(iss, http.clone())).await,
                Err(e) => Err(e.to_string()),
            };
            lines.push(Line { what, outcome });
        }
        for (name, rc) in &cfg.roles {
            let what = format!(
                "role {name}: upstream {}:{}",
                rc.upstream.host, rc.upstream.port
            );
            lines.push(Line {
                what,
                outcome: bounded(upstream(name, rc)).await,
            });
        }
        if cfg.evidence.mode == EvidenceMode::Local {
            let outcome = match cfg.evidence.local_paths() {
                Ok((dir, _)) => writable(dir),
                Err(e) => Err(e.to_string()),
            };
            lines.push(Line {
                what: "evidence directory".into(),
                outcome,
            });
        }
    }
    if matches!(role, CheckRole::All | CheckRole::Decider)
        && let Some(p) = &cfg.decider.policy
    {
        lines.push(Line {
            what: format!("policy {}", p.display()),
            outcome: gatehouse_decider::Policy::load(p)
                .map(|p| format!("version {}, {} rules", p.version, p.rules.len()))
                .map_err(|e| e.to_string()),
        });
    }
    let uses_nats = match role {
        CheckRole::All => cfg.evidence.mode == EvidenceMode::Jetstream,
        _ => true,
    };
    if uses_nats {
        let jetstream =
            role == CheckRole::Archiver || (front && cfg.evidence.mode == EvidenceMode::Jetstream);
        lines.push(Line {
            what: format!("NATS {}", cfg.nats.shown_url()),
            outcome: bounded(nats(&cfg.nats.url, jetstream)).await,
        });
    }
    if role == CheckRole::Archiver {
        match cfg.archiver.store() {
            Ok((_, ArchiverStore::Local(dir))) => lines.push(Line {
                what: "archive directory".into(),
                outcome: writable(&dir),
            }),
            Ok((_, ArchiverStore::S3(s3))) => lines.push(Line {
                what: format!("S3 bucket {}", s3.bucket),
                outcome: bounded(async {
                    gatehouse_archiver::S3Store::connect(&s3)
                        .await
                        .map(|store| format!("reachable ({store})"))
                        .map_err(|e| e.to_string())
                })
                .await,
            }),
            Err(e) => lines.push(Line {
                what: "archive".into(),
                outcome: Err(e.to_string()),
            }),
        }
        let k = &cfg.archiver.kafka;
        if k.enabled {
            lines.push(Line {
                what: format!("Kafka topic {} on {}", k.topic, k.brokers),
                outcome: kafka(cfg).await,
            });
        }
    }
    lines
}

/// `f`, or a failure once [`CHECK_TIMEOUT`] has passed.
async fn bounded(f: impl Future<Output = Result<String, String>>) -> Result<String, String> {
    tokio::time::timeout(CHECK_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {CHECK_TIMEOUT:?}")))
}

/// The issuer's key set, fetched (or read) as the authenticator does.
async fn jwks(
    iss: &gatehouse_ingress::config::IssuerConfig,
    http: reqwest::Client,
) -> Result<String, String> {
    let source = match (&iss.jwks_url, &iss.jwks_file) {
        (Some(url), _) => JwksSource::Url(url.clone()),
        (None, Some(file)) => JwksSource::File(file.clone()),
        (None, None) => return Err("no jwks_url or jwks_file".into()),
    };
    let what = format!("{source:?}");
    let keys = Jwks::new(source, http, Duration::ZERO, Duration::ZERO);
    match keys.fetch().await {
        Ok(set) if set.keys.is_empty() => Err(format!("{what}: the key set is empty")),
        Ok(set) => Ok(format!("{} keys from {what}", set.keys.len())),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// Connects with the gateway's credential for the role (password resolved
/// from wherever the config keeps it), and compares the upstream's clock.
async fn upstream(name: &str, rc: &RoleConfig) -> Result<String, String> {
    let target = UpstreamTarget::for_role(name, rc).map_err(|e| e.to_string())?;
    let params = [("application_name".to_owned(), "gatehouse-doctor".to_owned())].into();
    let mut conn = upstream::connect(&target, &params)
        .await
        .map_err(|e| e.to_string())?;
    let rows = gatehouse_ingress::masking::catalog::simple_query(
        &mut conn,
        "select extract(epoch from clock_timestamp())::text, current_user, version()",
    )
    .await
    .map_err(|e| e.to_string())?;
    let row = rows.first().ok_or("no answer to a select")?;
    let theirs: f64 = row[0]
        .parse()
        .map_err(|_| "an unreadable clock".to_owned())?;
    let ours = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs_f64();
    let skew = (ours - theirs).abs();
    let server = row[2].split(" on ").next().unwrap_or(&row[2]);
    if skew > MAX_CLOCK_SKEW.as_secs_f64() {
        return Err(format!(
            "authenticated as {}, but the clocks differ by {skew:.1} s (more than {:?}): \
             token expiry and evidence times would be wrong",
            row[1], MAX_CLOCK_SKEW
        ));
    }
    Ok(format!(
        "authenticated as {} ({server}), clocks within {skew:.3} s",
        row[1]
    ))
}

/// A file can be created (and removed) in `dir`, which is created if missing,
/// as the service would.
fn writable(dir: &Path) -> Result<String, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let probe = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| format!("{} is not writable: {e}", dir.display()))?;
    probe
        .as_file()
        .sync_all()
        .map_err(|e| format!("{}: fsync: {e}", dir.display()))?;
    Ok(format!("{} writable", dir.display()))
}

/// NATS answers a round trip; with `jetstream`, JetStream answers too.
async fn nats(url: &str, jetstream: bool) -> Result<String, String> {
    let client = async_nats::ConnectOptions::new()
        .name("gatehouse-doctor")
        .connect(url)
        .await
        .map_err(|e| e.to_string())?;
    client.flush().await.map_err(|e| e.to_string())?;
    let server = client.server_info();
    if !jetstream {
        return Ok(format!("connected (nats-server {})", server.version));
    }
    // The evidence stream: its state if it exists; "not yet" is an answer too
    // (the first archiver or ingress creates it).
    let js = async_nats::jetstream::new(client);
    let stream = gatehouse_schemas::evidence::EVIDENCE_STREAM;
    match js.get_stream(stream).await {
        Ok(mut s) => {
            let info = s
                .info()
                .await
                .map_err(|e| format!("connected, but JetStream does not answer: {e}"))?;
            Ok(format!(
                "connected (nats-server {}), JetStream stream {stream}: {} messages waiting",
                server.version, info.state.messages
            ))
        }
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                Ok(format!(
                    "connected (nats-server {}), JetStream answers (stream {stream} not created yet)",
                    server.version
                ))
            }
            _ => Err(format!("connected, but JetStream does not answer: {e}")),
        },
    }
}

/// The archiver's topic exists and its brokers answer.
async fn kafka(cfg: &Config) -> Result<String, String> {
    let k = &cfg.archiver.kafka;
    let sink =
        gatehouse_archiver::kafka::KafkaSink::new(gatehouse_archiver::kafka::KafkaSettings {
            brokers: k.brokers.clone(),
            topic: k.topic.clone(),
            delivery_timeout: k.delivery_timeout,
            scan_margin: k.scan_margin,
            properties: k.properties.clone().into_iter().collect(),
        })
        .map_err(|e| e.to_string())?;
    sink.check_topic(CHECK_TIMEOUT)
        .await
        .map(|partitions| format!("{partitions} partitions"))
        .map_err(|e| e.to_string())
}
