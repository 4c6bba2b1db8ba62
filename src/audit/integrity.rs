//! The first thing every answer says: whether the evidence it read is complete
//! and intact, in one sentence, with the digest of what it read.

use ed25519_dalek::VerifyingKey;
use gatehouse_archiver::keys::key_id;
use gatehouse_archiver::{Report, SessionStatus};
use serde::Serialize;

use super::listed::Listed;
use super::{Scope, rfc3339};

/// Breaks and open sessions an answer names in full, at most.
pub const NAMED_MAX: usize = 50;

/// One break, for people.
#[derive(Debug, Clone, Serialize)]
pub struct BreakRow {
    /// The session.
    pub session: String,
    /// The kind (`record_changed`, `missing`, ...).
    pub kind: String,
    /// The seqs concerned.
    pub seqs: Option<String>,
    /// The object.
    pub key: String,
    /// What is wrong.
    pub detail: String,
}

/// A session without its end.
#[derive(Debug, Clone, Serialize)]
pub struct OpenRow {
    /// The session.
    pub session: String,
    /// When it started.
    pub started: String,
    /// Its last seq.
    pub last_seq: u64,
}

/// What verification found, for the top of an answer.
#[derive(Debug, Clone, Serialize)]
pub struct Integrity {
    /// The one sentence.
    pub sentence: String,
    /// No break anywhere.
    pub intact: bool,
    /// Intact, something was read, every session ended, and every verified
    /// record could be read.
    pub complete: bool,
    /// Where the evidence is.
    pub store: String,
    /// The period: sessions that started at or after this...
    pub since: Option<String>,
    /// ...and before this.
    pub until: Option<String>,
    /// Sessions in the period.
    pub sessions: u64,
    /// Of which ended and intact.
    pub complete_sessions: u64,
    /// Of which intact without an end.
    pub open_sessions: u64,
    /// Of which broken.
    pub broken_sessions: u64,
    /// Records that verify.
    pub records: u64,
    /// Signed segments read.
    pub segments: u64,
    /// Objects read.
    pub objects: u64,
    /// Bytes read.
    pub bytes: u64,
    /// `sha256:<hex>` of the `sha256sum` listing of the objects read.
    pub digest: String,
    /// Ids of the trusted keys.
    pub keys: Vec<String>,
    /// The breaks.
    pub breaks: Listed<BreakRow>,
    /// The open sessions.
    pub open: Listed<OpenRow>,
    /// Warnings (nothing lost or altered).
    pub warnings: u64,
    /// Verified records that are not events this version reads.
    pub unreadable: u64,
    /// The command that verifies the same again.
    pub reproduce: String,
}

/// `n` with `one` or `many` after it: `1 role`, `1,204 roles`.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Integrity {
    /// Sums up a scan.
    pub fn of(scope: &Scope, r: &Report, trusted: &[VerifyingKey], unreadable: u64) -> Self {
        let count = |s| r.sessions.iter().filter(|x| x.status == s).count() as u64;
        let mut breaks = Listed::new(NAMED_MAX);
        for b in &r.breaks {
            breaks.push(BreakRow {
                session: b.session.to_string(),
                kind: b.kind.to_string(),
                seqs: b.seqs.map(|s| s.to_string()),
                key: b.key.clone(),
                detail: b.detail.clone(),
            });
        }
        let mut open = Listed::new(NAMED_MAX);
        for s in r.open_sessions() {
            open.push(OpenRow {
                session: s.session.to_string(),
                started: s.started.clone().unwrap_or_default(),
                last_seq: s.last_seq,
            });
        }
        let keys: Vec<String> = trusted.iter().map(key_id).collect();
        let mut i = Self {
            sentence: String::new(),
            intact: r.is_clean(),
            complete: false,
            store: scope.store_name(),
            since: scope.since.map(rfc3339),
            until: scope.until.map(rfc3339),
            sessions: r.sessions.len() as u64,
            complete_sessions: count(SessionStatus::Complete),
            open_sessions: count(SessionStatus::Open),
            broken_sessions: count(SessionStatus::Broken),
            records: r.records,
            segments: r.segments,
            objects: r.objects,
            bytes: r.bytes,
            digest: format!("sha256:{}", r.digest),
            keys,
            breaks,
            open,
            warnings: r.warnings.len() as u64,
            unreadable,
            reproduce: scope.command("verify"),
        };
        i.complete = i.intact && i.sessions > 0 && i.open_sessions == 0 && unreadable == 0;
        i.sentence = i.sentence();
        i
    }

    fn period(&self) -> String {
        match (&self.since, &self.until) {
            (Some(s), Some(u)) => format!("from {s} to {u}"),
            (Some(s), None) => format!("from {s} on"),
            (None, Some(u)) => format!("before {u}"),
            (None, None) => "at any time".into(),
        }
    }

    fn sentence(&self) -> String {
        let read = format!(
            "{} in {} from {}, signed by key {}; digest of what was read: {}",
            plural(self.records, "record", "records"),
            plural(self.segments, "signed segment", "signed segments"),
            self.store,
            self.keys.join(" or "),
            self.digest
        );
        let sessions = plural(self.sessions, "session", "sessions");
        if !self.intact {
            let mut kinds: Vec<&str> = self.breaks.rows.iter().map(|b| b.kind.as_str()).collect();
            kinds.sort();
            kinds.dedup();
            return format!(
                "The evidence is BROKEN: {} in {} of the {sessions} that started {} ({}), so the figures below count only the records that verify ({read}).",
                plural(self.breaks.total, "break", "breaks"),
                plural(self.broken_sessions, "session", "sessions"),
                self.period(),
                kinds.join(", "),
            );
        }
        if self.sessions == 0 {
            return format!(
                "There is no evidence to verify: no session started {} in {} (a period without sessions, or one whose sessions were deleted whole, which only the SIEM's copy and Object Lock can tell apart); digest of what was read: {}.",
                self.period(),
                self.store,
                self.digest
            );
        }
        let unreadable = if self.unreadable > 0 {
            format!(
                ", though {} verify but are not events this version of Gatehouse reads",
                plural(self.unreadable, "record", "records")
            )
        } else {
            String::new()
        };
        if self.open_sessions > 0 {
            return format!(
                "The evidence is intact but not complete: of the {sessions} that started {}, {} never recorded an end (live, or its gateway stopped: \"started, never completed\"){unreadable} ({read}).",
                self.period(),
                plural(self.open_sessions, "session", "sessions"),
            );
        }
        if self.unreadable > 0 {
            return format!(
                "The evidence is intact but not complete: the {sessions} that started {} verify{unreadable} ({read}).",
                self.period()
            );
        }
        format!(
            "The evidence is complete and intact: every one of the {sessions} that started {} verifies from its start to its end ({read}).",
            self.period()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
