//! Answers for auditors, from verified evidence: `gatehouse report`,
//! `who-changed`, `access review`, `policy suggest` and `policy replay`.
//!
//! Every answer reads the archive in one streaming pass
//! ([`gatehouse_archiver::scan`]): it verifies as it reads, counts only records
//! that verify, and says first whether the evidence it stands on is complete
//! and intact, naming the digest of what it read. Memory holds counts and
//! bounded lists (each says how many rows it left out), never every statement.

pub mod access;
#[cfg(test)]
mod answers_tests;
pub mod cli;
pub mod controls;
pub mod events;
pub mod facts;
pub mod html;
pub mod integrity;
pub mod listed;
pub mod markdown;
pub mod replay;
pub mod report;
pub mod suggest;
pub mod who_changed;

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, Result};
use clap::Args;
use gatehouse_archiver::keys;

use crate::evidence_cli::{StoreArgs, time_arg};
use events::{Answer, Reader};
use integrity::Integrity;

/// What an answer reads: the archive, the keys that vouch for it, the period.
#[derive(Debug, Clone, Args)]
#[group(skip)]
pub struct Scope {
    /// Where the evidence is.
    #[command(flatten)]
    pub store: StoreArgs,
    /// A trusted public key of the archive (SPKI PEM, as `evidence keygen`
    /// writes). Repeatable. Every answer verifies what it reads.
    #[arg(long = "key", required = true)]
    pub keys: Vec<PathBuf>,
    /// Sessions that started at or after this (RFC 3339, or e.g. `30d` ago).
    #[arg(long, value_parser = time_arg)]
    pub since: Option<SystemTime>,
    /// Sessions that started before this (RFC 3339, or e.g. `1h` ago; default: now).
    #[arg(long, value_parser = time_arg)]
    pub until: Option<SystemTime>,
}

/// An RFC 3339 time, to the microsecond: a period printed to be read again
/// must name exactly the same sessions (rounding `until` down to the second
/// would drop those that started in its last second).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

/// A word for a shell: quoted when it holds anything but safe characters.
pub fn shell_word(w: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c);
    if !w.is_empty() && w.chars().all(safe) {
        w.to_owned()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

impl Scope {
    /// The same scope with `until` fixed (to now when not given), so that
    /// every figure and every command printed names the same period.
    pub fn fixed(mut self, default_since: Option<SystemTime>) -> Self {
        self.until = Some(self.until.unwrap_or_else(SystemTime::now));
        self.since = self.since.or(default_since);
        self
    }

    /// The arguments that name this scope again: `--since ... --until ...
    /// --dir ... --key ...`.
    pub fn args(&self) -> String {
        let mut a: Vec<String> = Vec::new();
        if let Some(s) = self.since {
            a.extend(["--since".into(), rfc3339(s)]);
        }
        if let Some(u) = self.until {
            a.extend(["--until".into(), rfc3339(u)]);
        }
        let s = &self.store;
        if let Some(d) = &s.dir {
            a.extend(["--dir".into(), shell_word(&d.display().to_string())]);
        }
        if let Some(b) = &s.s3_bucket {
            a.extend(["--s3-bucket".into(), shell_word(b)]);
            if let Some(p) = &s.s3_prefix {
                a.extend(["--s3-prefix".into(), shell_word(p)]);
            }
            if let Some(e) = &s.s3_endpoint {
                a.extend(["--s3-endpoint".into(), shell_word(e)]);
            }
            if s.s3_region != "us-east-1" {
                a.extend(["--s3-region".into(), shell_word(&s.s3_region)]);
            }
            if s.s3_path_style {
                a.push("--s3-path-style".into());
            }
        }
        for k in &self.keys {
            a.extend(["--key".into(), shell_word(&k.display().to_string())]);
        }
        a.join(" ")
    }

    /// `gatehouse <what> <this scope's arguments>`.
    pub fn command(&self, what: &str) -> String {
        format!("gatehouse {what} {}", self.args())
    }

    /// Where the evidence is, for people.
    pub fn store_name(&self) -> String {
        match (&self.store.dir, &self.store.s3_bucket) {
            (Some(d), _) => format!("directory {}", d.display()),
            (_, Some(b)) => format!(
                "s3://{b}/{}",
                self.store.s3_prefix.as_deref().unwrap_or_default()
            ),
            _ => "?".into(),
        }
    }

    /// Reads the scope once, verifying, and feeds `answer`.
    pub async fn read<A: Answer>(&self, answer: A) -> Result<(Integrity, A)> {
        let trusted = self
            .keys
            .iter()
            .map(|p| keys::load_verifying_key(p))
            .collect::<Result<Vec<_>, _>>()?;
        let store = self.store.open().await?;
        let mut reader = Reader::new(answer);
        let report =
            gatehouse_archiver::scan(&store, &trusted, self.since, self.until, &mut reader)
                .await
                .with_context(|| format!("read the evidence in {}", self.store_name()))?;
        let integrity = Integrity::of(self, &report, &trusted, reader.unreadable);
        Ok((integrity, reader.answer))
    }
}

/// Runs `f` on a single-threaded runtime with a blocking pool (the scan
/// decodes segments there).
pub fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("/tmp/ev-1"), "/tmp/ev-1");
        assert_eq!(shell_word("my dir"), "'my dir'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }
}
