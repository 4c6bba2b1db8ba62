//! Reading sessions back: `gatehouse sessions list` and `gatehouse replay`.
//!
//! These read what is stored without checking signatures or chains: run
//! [`crate::verify::verify`] for that.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::SystemTime;

use gatehouse_schemas::evidence::{Event, EventBody, Param};
use serde::Serialize;
use uuid::Uuid;
use wildmatch::WildMatch;

use crate::error::ArchiveError;
use crate::segment::{Head, ObjectKind, decode_segment, parse_key, session_prefix};
use crate::store::SegmentStore;
use crate::verify::{in_range, session_start, sessions_in_store};

/// Which sessions [`sessions`] lists. Empty: all of them.
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    /// A glob (`*`, `?`) on the caller's `sub`.
    pub subject: Option<String>,
    /// The Gatehouse role, exactly.
    pub role: Option<String>,
    /// Sessions that started at or after this.
    pub since: Option<SystemTime>,
    /// Sessions that started before this.
    pub until: Option<SystemTime>,
}

/// One line of `gatehouse sessions list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionSummary {
    /// The session.
    pub session: Uuid,
    /// `ts` of its `session_started` (else the UUIDv7 time).
    pub started: Option<String>,
    /// `ts` of its `session_ended`; `None`: open (live, or never completed).
    pub ended: Option<String>,
    /// Why it ended.
    pub end_reason: Option<String>,
    /// The Gatehouse role.
    pub role: Option<String>,
    /// The caller's `sub`.
    pub subject: Option<String>,
    /// The caller's `iss`.
    pub issuer: Option<String>,
    /// CI provider (`github`, `gitlab`, `kubernetes`, `oidc`).
    pub ci_provider: Option<String>,
    /// CI repository or project.
    pub repository: Option<String>,
    /// CI run or pipeline.
    pub run_id: Option<String>,
    /// Statements recorded.
    pub statements: u64,
    /// Of which refused.
    pub refused: u64,
}

impl SessionSummary {
    /// No `session_ended` recorded.
    pub fn is_open(&self) -> bool {
        self.ended.is_none()
    }
}

async fn read_segment<S: SegmentStore>(store: &S, key: &str) -> Result<Vec<Vec<u8>>, ArchiveError> {
    let Some(data) = store.get(key).await? else {
        return Ok(Vec::new());
    };
    decode_segment(&data).map_err(|source| ArchiveError::Format {
        key: key.to_owned(),
        source,
    })
}

fn parse_event(key: &str, line: &[u8]) -> Result<Event, ArchiveError> {
    serde_json::from_slice(line).map_err(|e| ArchiveError::Event {
        key: key.to_owned(),
        seq: Head::parse(line).map(|h| h.seq).unwrap_or(0),
        reason: e.to_string(),
    })
}

/// Lists sessions, oldest first, reading each session's first segment (for
/// `session_started`) and its last (for `session_ended`); open sessions are
/// counted by reading all their segments.
pub async fn sessions<S: SegmentStore>(
    store: &S,
    filter: &SessionFilter,
) -> Result<Vec<SessionSummary>, ArchiveError> {
    let subject_glob = filter.subject.as_deref().map(WildMatch::new);
    let mut out = Vec::new();
    for (session, keys) in sessions_in_store(store, &mut Vec::new()).await? {
        let start = session_start(session);
        if start.is_some_and(|t| !in_range(t, filter.since, filter.until)) {
            continue;
        }
        // Keys sort by first seq; the last segment is the one reaching furthest.
        let mut segs: Vec<(String, u64, u64)> = keys
            .iter()
            .filter_map(|k| parse_key(k).map(|n| (k, n)))
            .filter(|(_, n)| n.kind == ObjectKind::Segment)
            .map(|(k, n)| (k.clone(), n.first_seq, n.last_seq))
            .collect();
        if segs.is_empty() {
            continue;
        }
        segs.sort_by_key(|(_, first, _)| *first);
        let mut summary = SessionSummary {
            session,
            started: None,
            ended: None,
            end_reason: None,
            role: None,
            subject: None,
            issuer: None,
            ci_provider: None,
            repository: None,
            run_id: None,
            statements: 0,
            refused: 0,
        };
        let first = &segs[0].0;
        for line in read_segment(store, first).await? {
            if Head::parse(&line).is_ok_and(|h| h.seq == 1) {
                let e = parse_event(first, &line)?;
                summary.started = Some(e.ts);
                if let EventBody::SessionStarted(s) = e.body {
                    summary.role = Some(s.role);
                    summary.subject = Some(s.identity.subject);
                    summary.issuer = Some(s.identity.issuer);
                    summary.ci_provider = Some(s.ci.provider);
                    summary.repository = s.ci.repository;
                    summary.run_id = s.ci.run_id;
                }
            }
        }
        let placed = summary
            .started
            .as_deref()
            .and_then(|ts| humantime::parse_rfc3339_weak(ts).ok())
            .or(start);
        if start.is_none()
            && (filter.since.is_some() || filter.until.is_some())
            && !placed.is_some_and(|t| in_range(t, filter.since, filter.until))
        {
            continue;
        }
        if summary.started.is_none() {
            summary.started = start.map(|t| humantime::format_rfc3339_micros(t).to_string());
        }
        if filter
            .role
            .as_ref()
            .is_some_and(|r| summary.role.as_ref() != Some(r))
        {
            continue;
        }
        if let Some(glob) = &subject_glob
            && !summary.subject.as_deref().is_some_and(|s| glob.matches(s))
        {
            continue;
        }
        let last = segs
            .iter()
            .max_by_key(|(_, _, last)| *last)
            .expect("non-empty");
        let mut found_end = false;
        for line in read_segment(store, &last.0).await? {
            if Head::parse(&line).is_ok_and(|h| h.kind == "session_ended") {
                let e = parse_event(&last.0, &line)?;
                if let EventBody::SessionEnded(end) = e.body {
                    summary.ended = Some(e.ts);
                    summary.end_reason = Some(end.reason);
                    summary.statements = end.statements;
                    summary.refused = end.refused;
                    found_end = true;
                }
            }
        }
        if !found_end {
            // Open (or its end is in another segment): count what is there.
            let mut seen = BTreeMap::new();
            for (key, _, _) in &segs {
                for line in read_segment(store, key).await? {
                    if let Ok(h) = Head::parse(&line) {
                        let kind = h.kind.to_string();
                        seen.entry(h.seq).or_insert((key.clone(), kind, line));
                    }
                }
            }
            for (key, kind, line) in seen.values() {
                match kind.as_str() {
                    "statement" => {
                        summary.statements += 1;
                        if let EventBody::Statement(s) = parse_event(key, line)?.body
                            && !s.forwarded
                        {
                            summary.refused += 1;
                        }
                    }
                    "session_ended" => {
                        let e = parse_event(key, line)?;
                        if let EventBody::SessionEnded(end) = e.body {
                            summary.ended = Some(e.ts);
                            summary.end_reason = Some(end.reason);
                        }
                    }
                    _ => {}
                }
            }
        }
        out.push(summary);
    }
    Ok(out)
}

/// A session's records, as stored, one per seq, in seq order (the first copy of
/// a seq found wins; `verify` is what says whether copies agree).
pub async fn replay_records<S: SegmentStore>(
    store: &S,
    session: Uuid,
) -> Result<Vec<(u64, Vec<u8>)>, ArchiveError> {
    let keys = store.list(&session_prefix(session)).await?;
    let mut records = BTreeMap::new();
    let mut any = false;
    for key in keys {
        if !parse_key(&key).is_some_and(|n| n.kind == ObjectKind::Segment) {
            continue;
        }
        any = true;
        for line in read_segment(store, &key).await? {
            let seq = Head::parse(&line)
                .map_err(|reason| ArchiveError::Event {
                    key: key.clone(),
                    seq: 0,
                    reason,
                })?
                .seq;
            records.entry(seq).or_insert(line);
        }
    }
    if !any {
        return Err(ArchiveError::NoSuchSession(session));
    }
    Ok(records.into_iter().collect())
}

/// A session's events in seq order.
pub async fn replay<S: SegmentStore>(store: &S, session: Uuid) -> Result<Vec<Event>, ArchiveError> {
    let prefix = session_prefix(session);
    replay_records(store, session)
        .await?
        .iter()
        .map(|(_, line)| parse_event(&prefix, line))
        .collect()
}

fn opt(label: &str, v: &Option<String>) -> String {
    v.as_ref()
        .map(|v| format!(" {label}={v}"))
        .unwrap_or_default()
}

/// Writes a readable transcript of a session's events.
pub fn render_transcript(events: &[Event], out: &mut impl Write) -> std::io::Result<()> {
    for e in events {
        write!(out, "{}  #{:<5} ", e.ts, e.seq)?;
        match &e.body {
            EventBody::SessionStarted(s) => {
                writeln!(
                    out,
                    "session started: role {} as {} (issuer {})",
                    s.role, s.identity.subject, s.identity.issuer
                )?;
                let ci = &s.ci;
                writeln!(
                    out,
                    "        ci: {}{}{}{}{}{}{}",
                    ci.provider,
                    opt("repository", &ci.repository),
                    opt("workflow", &ci.workflow),
                    opt("run", &ci.run_id),
                    opt("commit", &ci.commit),
                    opt("ref", &ci.git_ref),
                    opt("service_account", &ci.service_account),
                )?;
                let tls = s
                    .tls
                    .as_ref()
                    .map(|t| format!("{} {}", t.version, t.cipher))
                    .unwrap_or_else(|| "none".into());
                writeln!(
                    out,
                    "        upstream {} as {}; client {} (tls {}); gateway {}",
                    s.upstream, s.upstream_user, s.client_addr, tls, s.gateway
                )?;
            }
            EventBody::Statement(s) => {
                let path = serde_json::to_value(s.path)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                write!(
                    out,
                    "statement ({path}) {}{}{}{}{}",
                    s.verdict.to_uppercase(),
                    opt("rule", &s.rule),
                    opt("policy", &s.policy_version),
                    opt("approval", &s.approval),
                    opt("name", &s.statement_name),
                )?;
                writeln!(
                    out,
                    " {}",
                    if s.forwarded { "forwarded" } else { "REFUSED" }
                )?;
                if let Some(r) = &s.reason {
                    writeln!(out, "        reason: {r}")?;
                }
                if !s.classes.is_empty() {
                    writeln!(out, "        classes: {}", s.classes.join(", "))?;
                }
                for hit in &s.shadow {
                    writeln!(
                        out,
                        "        shadow rule {} would say {:?}",
                        hit.rule, hit.verdict
                    )?;
                }
                if let Some(oid) = s.function_oid {
                    writeln!(out, "        function call, oid {oid}")?;
                }
                for line in s.sql.lines() {
                    writeln!(out, "        | {line}")?;
                }
                if let Some(params) = &s.params {
                    let shown: Vec<String> = params
                        .iter()
                        .enumerate()
                        .map(|(i, p)| match p {
                            Param::Null => format!("${}=NULL", i + 1),
                            Param::Text(t) => format!("${}={t:?}", i + 1),
                            Param::Binary(h) => format!("${}=\\x{h}", i + 1),
                            Param::Withheld(n) => format!("${}=<withheld, {n} bytes>", i + 1),
                            Param::Masked(m) => format!("${}=<masked {m:?}>", i + 1),
                        })
                        .collect();
                    writeln!(out, "        params: {}", shown.join(" "))?;
                }
            }
            EventBody::StatementCompleted(c) => {
                write!(
                    out,
                    "completed #{}: {} {} rows {} in {:.3} ms",
                    c.statement,
                    c.outcome,
                    c.tags.join("; "),
                    c.rows,
                    c.duration_us as f64 / 1000.0
                )?;
                writeln!(out, "{}", opt("sqlstate", &c.sqlstate))?;
            }
            EventBody::ResultData(r) => {
                // Events written before `row_count` existed carry 0 there.
                let count = r.row_count.max(r.rows.len() as u64);
                writeln!(
                    out,
                    "result of #{}: {} rows{}",
                    r.statement,
                    count,
                    if r.truncated {
                        format!(" ({} kept)", r.rows.len())
                    } else {
                        String::new()
                    }
                )?;
                writeln!(out, "        | {}", r.columns.join(" | "))?;
                for row in &r.rows {
                    let cells: Vec<&str> =
                        row.iter().map(|c| c.as_deref().unwrap_or("NULL")).collect();
                    writeln!(out, "        | {}", cells.join(" | "))?;
                }
            }
            EventBody::Approval(a) => {
                writeln!(
                    out,
                    "approval of #{}: {} (request {}, approvers {}){}{}",
                    a.statement,
                    a.state,
                    a.request,
                    a.approvers,
                    opt("by", &a.by),
                    opt("reason", &a.reason)
                )?;
            }
            EventBody::SessionEnded(s) => {
                writeln!(
                    out,
                    "session ended: {} after {} ms; {} statements, {} refused",
                    s.reason, s.duration_ms, s.statements, s.refused
                )?;
            }
        }
    }
    Ok(())
}
