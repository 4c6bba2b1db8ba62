//! `gatehouse connect -- COMMAND`: a CI job's identity token, obtained from the
//! environment the job runs in, handed to a PostgreSQL client as its password.
//!
//! Where the token comes from, first that applies: `--token-file`, `--token-env`,
//! GitHub Actions (`ACTIONS_ID_TOKEN_REQUEST_URL` and `_TOKEN`, asked for
//! `--audience`), the `GATEHOUSE_ID_TOKEN` variable (a GitLab `id_tokens` entry
//! of that name), the projected Kubernetes token at [`K8S_TOKEN`]. The command
//! gets it in `PGPASSWORD`; with `--refresh`, in a `PGPASSFILE` instead (libpq
//! reads it at every connection) that is rewritten before the token expires,
//! for jobs that outlive one token. The token is never printed.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Args;

/// The token file of the Kubernetes Job recipe (deploy/ci/kubernetes-job.yaml).
pub const K8S_TOKEN: &str = "/var/run/secrets/gatehouse/token";
/// The variable the GitLab recipe's `id_tokens` entry fills.
pub const GITLAB_VAR: &str = "GATEHOUSE_ID_TOKEN";

/// `gatehouse connect` options.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The audience asked for where the token is requested (GitHub Actions).
    #[arg(long, env = "GATEHOUSE_AUDIENCE", default_value = "gatehouse")]
    pub audience: String,
    /// Read the token from this file (again at each refresh).
    #[arg(long, env = "GATEHOUSE_TOKEN_FILE", conflicts_with = "token_env")]
    pub token_file: Option<PathBuf>,
    /// Read the token from this environment variable.
    #[arg(long, env = "GATEHOUSE_TOKEN_ENV")]
    pub token_env: Option<String>,
    /// Keep the token fresh for a long job: hand it over in a PGPASSFILE that is
    /// rewritten `--refresh-before` its expiry, instead of PGPASSWORD.
    #[arg(long)]
    pub refresh: bool,
    /// How long before expiry the token is renewed (`--refresh`).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub refresh_before: Duration,
    /// The command to run, e.g. `psql "host=gatehouse.internal user=etl"`.
    #[arg(trailing_var_arg = true, required = true, num_args = 1..)]
    pub command: Vec<OsString>,
}

/// Where the token comes from.
#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Env(String),
    GitHub { url: String, bearer: String },
}

impl Source {
    fn detect(a: &ConnectArgs) -> Result<Self> {
        if let Some(p) = &a.token_file {
            return Ok(Self::File(p.clone()));
        }
        if let Some(v) = &a.token_env {
            return Ok(Self::Env(v.clone()));
        }
        if let (Ok(url), Ok(bearer)) = (
            std::env::var("ACTIONS_ID_TOKEN_REQUEST_URL"),
            std::env::var("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
        ) {
            return Ok(Self::GitHub { url, bearer });
        }
        if std::env::var_os(GITLAB_VAR).is_some() {
            return Ok(Self::Env(GITLAB_VAR.into()));
        }
        if Path::new(K8S_TOKEN).is_file() {
            return Ok(Self::File(K8S_TOKEN.into()));
        }
        bail!(
            "no token found: not in GitHub Actions with `permissions: id-token: write` \
             (ACTIONS_ID_TOKEN_REQUEST_URL), no {GITLAB_VAR} (GitLab id_tokens), no {K8S_TOKEN} \
             (Kubernetes projected token); or give --token-file / --token-env"
        )
    }

    fn describe(&self) -> String {
        match self {
            Self::File(p) => format!("file {}", p.display()),
            Self::Env(v) => format!("${v}"),
            Self::GitHub { .. } => "GitHub Actions' token endpoint".into(),
        }
    }

    async fn token(&self, audience: &str) -> Result<String> {
        let token = match self {
            Self::File(p) => std::fs::read_to_string(p)
                .with_context(|| format!("read the token file {}", p.display()))?,
            Self::Env(v) => std::env::var(v).with_context(|| format!("${v} is not set"))?,
            Self::GitHub { url, bearer } => {
                let mut url = reqwest::Url::parse(url).context("ACTIONS_ID_TOKEN_REQUEST_URL")?;
                url.query_pairs_mut().append_pair("audience", audience);
                let http = gatehouse_ingress::http_client(&[])?;
                let resp = http
                    .get(url)
                    .bearer_auth(bearer)
                    .send()
                    .await
                    .context("ask GitHub Actions for a token")?;
                let status = resp.status();
                if !status.is_success() {
                    bail!("GitHub Actions' token endpoint answered {status}");
                }
                let body: serde_json::Value =
                    resp.json().await.context("the token endpoint's answer")?;
                body["value"]
                    .as_str()
                    .context("the token endpoint's answer has no `value`")?
                    .to_owned()
            }
        };
        let token = token.trim().to_owned();
        if token.is_empty() {
            bail!("the token from {} is empty", self.describe());
        }
        Ok(token)
    }
}

/// When the token expires (its `exp`, unverified: the gateway verifies it).
fn expiry(token: &str) -> Option<SystemTime> {
    let claims = crate::policy_cli::token_claims(token).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    Some(UNIX_EPOCH + Duration::from_secs(exp))
}

/// A libpq password file line matching every connection.
fn passfile_line(token: &str) -> String {
    let escaped = token.replace('\\', "\\\\").replace(':', "\\:");
    format!("*:*:*:*:{escaped}\n")
}

/// Replaces the password file in one rename: libpq never reads half a file.
fn write_passfile(path: &Path, token: &str) -> Result<()> {
    let tmp = path.with_extension("new");
    let mut f = open_private(&tmp)?;
    f.write_all(passfile_line(token).as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).context("replace the password file")?;
    Ok(())
}

fn open_private(path: &Path) -> Result<std::fs::File> {
    let _ = std::fs::remove_file(path);
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
        .with_context(|| format!("create {}", path.display()))
}

/// Runs the command with the token; returns its exit code.
pub fn run(a: ConnectArgs) -> Result<i32> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run_async(a))
}

async fn run_async(a: ConnectArgs) -> Result<i32> {
    let source = Source::detect(&a)?;
    let token = source.token(&a.audience).await?;
    let mut cmd = tokio::process::Command::new(&a.command[0]);
    cmd.args(&a.command[1..]);
    if !a.refresh {
        cmd.env("PGPASSWORD", &token);
        drop(token);
        let status = cmd.status().await.context("run the command")?;
        return Ok(exit_code(status));
    }
    // PGPASSWORD would win over the file: the command must not inherit one.
    cmd.env_remove("PGPASSWORD");
    let dir = tempfile::Builder::new()
        .prefix("gatehouse-connect-")
        .tempdir()
        .context("a private directory for the password file")?;
    let passfile = dir.path().join("pgpass");
    write_passfile(&passfile, &token)?;
    cmd.env("PGPASSFILE", &passfile);
    let mut child = cmd.spawn().context("run the command")?;
    let mut exp = expiry(&token);
    drop(token);
    loop {
        let wait = match exp {
            Some(at) => at
                .checked_sub(a.refresh_before)
                .and_then(|t| t.duration_since(SystemTime::now()).ok())
                .unwrap_or(Duration::from_secs(1)),
            None => Duration::from_secs(3600 * 24 * 365),
        };
        tokio::select! {
            status = child.wait() => return Ok(exit_code(status?)),
            _ = tokio::time::sleep(wait) => {}
        }
        match source.token(&a.audience).await {
            Ok(fresh) => {
                let next = expiry(&fresh);
                write_passfile(&passfile, &fresh)?;
                if next == exp {
                    // The source still has the old token (a file not yet
                    // rotated): look again in a while, not in a busy loop.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                exp = next;
                eprintln!(
                    "gatehouse connect: token renewed from {}",
                    source.describe()
                );
            }
            Err(e) => {
                eprintln!("gatehouse connect: renewing the token failed (will retry): {e:#}");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    #[cfg(unix)]
    if let Some(sig) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return 128 + sig;
    }
    status.code().unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passfile_escapes_and_matches_everything() {
        assert_eq!(passfile_line("a:b\\c"), "*:*:*:*:a\\:b\\\\c\n");
    }

    #[test]
    fn expiry_reads_exp_without_verifying() {
        use base64::Engine;
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!("{}.{}.sig", b("{}"), b(r#"{"exp":1700000000}"#));
        assert_eq!(
            expiry(&token),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(expiry("not-a-jwt"), None);
    }
}
