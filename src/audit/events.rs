//! Verified records read back as events, with their session's context: the
//! layer every answer (report, who-changed, access review, policy suggest and
//! replay) stands on.
//!
//! A statement's record comes in up to three shapes (see `ingress`): a
//! decision (`simple_query`, `parse`, `function_call`); a run (anything
//! forwarded but a `parse`, which runs nothing), whose `statement_completed`
//! names its seq; and, for a statement held for approval, the held record (not
//! forwarded) followed, once approved, by the same statement recorded again,
//! forwarded, naming the approval. [`Reader`] pairs runs with their
//! completions and hands on the runs a session never completed.

use std::collections::HashMap;

use gatehouse_archiver::{Break, SessionReport, Visitor};
use gatehouse_schemas::evidence::{
    ApprovalEvent, CiContext, Event, EventBody, SessionStarted, Statement, StatementCompleted,
    StatementPath,
};
use serde::Serialize;
use uuid::Uuid;

/// Statement classes that change data, schema, privileges or the server.
pub const CHANGE_CLASSES: &[&str] = &[
    "write",
    "ddl",
    "dcl",
    "copy-in",
    "admin",
    "procedural",
    "function-call",
];

/// Of the change classes, those an auditor calls privileged.
pub const PRIVILEGED_CLASSES: &[&str] = &["ddl", "dcl", "admin"];

/// The most characters of SQL text an answer shows.
pub const SQL_SHOWN: usize = 240;

/// Who ran a session, and how.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// The session.
    pub id: Uuid,
    /// When it started.
    pub started: String,
    /// The Gatehouse role assumed.
    pub role: String,
    /// The caller's `iss`.
    pub issuer: String,
    /// The caller's `sub`.
    pub subject: String,
    /// The CI context of its token.
    pub ci: CiContext,
    /// Whether the client connected over TLS.
    pub tls: bool,
    /// The client's address.
    pub client: String,
    /// Every claim of the token (for deciding again; never printed whole).
    #[serde(skip)]
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl SessionInfo {
    fn of(id: Uuid, ts: &str, s: &SessionStarted) -> Self {
        Self {
            id,
            started: ts.to_owned(),
            role: s.role.clone(),
            issuer: s.identity.issuer.clone(),
            subject: s.identity.subject.clone(),
            ci: s.ci.clone(),
            tls: s.tls.is_some(),
            client: s.client_addr.clone(),
            claims: s.identity.claims.clone(),
        }
    }

    /// A session whose `session_started` did not verify.
    fn unknown(id: Uuid) -> Self {
        Self {
            id,
            started: String::new(),
            role: "?".into(),
            issuer: "?".into(),
            subject: "? (session start not verified)".into(),
            ci: CiContext::default(),
            tls: false,
            client: String::new(),
            claims: Default::default(),
        }
    }
}

/// What an answer is told, in each session's seq order.
pub trait Answer {
    /// A session started.
    fn session(&mut self, _s: &SessionInfo) {}
    /// A statement record (any shape).
    fn statement(&mut self, _s: &SessionInfo, _seq: u64, _ts: &str, _st: &Statement) {}
    /// A run ended: its statement record and its completion; `None` when the
    /// session was read to its end without one ("started, never completed").
    fn run(
        &mut self,
        _s: &SessionInfo,
        _seq: u64,
        _ts: &str,
        _st: &Statement,
        _done: Option<&StatementCompleted>,
    ) {
    }
    /// A step of an approval.
    fn approval(&mut self, _s: &SessionInfo, _ts: &str, _a: &ApprovalEvent) {}
    /// The session was read whole: its verdict and breaks.
    fn session_done(&mut self, _s: &SessionInfo, _v: &SessionReport, _breaks: &[Break]) {}
}

/// Whether a statement record is a decision (counted once per statement): not
/// an `Execute` of one, nor an approved statement recorded again to run.
pub fn is_decision(st: &Statement) -> bool {
    st.path != StatementPath::Execute && !(st.forwarded && st.approval.is_some())
}

/// Whether a statement record is something that ran (and gets a completion).
pub fn is_run(st: &Statement) -> bool {
    st.forwarded && st.path != StatementPath::Parse
}

/// Whether it changes anything, by its classes.
pub fn is_change(st: &Statement) -> bool {
    st.classes
        .iter()
        .any(|c| CHANGE_CLASSES.contains(&c.as_str()))
}

/// Whether it is a privileged change (DDL, DCL, administration).
pub fn is_privileged(st: &Statement) -> bool {
    st.classes
        .iter()
        .any(|c| PRIVILEGED_CLASSES.contains(&c.as_str()))
}

/// SQL text cut to [`SQL_SHOWN`] characters, on one line.
pub fn shown_sql(sql: &str) -> String {
    let one_line: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(SQL_SHOWN) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

/// Parses verified records into events for an [`Answer`].
pub struct Reader<A> {
    /// The answer being built.
    pub answer: A,
    session: Option<SessionInfo>,
    /// Runs waiting for their completion, by seq.
    pending: HashMap<u64, (String, Statement)>,
    /// Verified records that are not events of this version (none expected).
    pub unreadable: u64,
    /// Verified records read.
    pub records: u64,
}

impl<A: Answer> Reader<A> {
    /// A reader feeding `answer`.
    pub fn new(answer: A) -> Self {
        Self {
            answer,
            session: None,
            pending: HashMap::new(),
            unreadable: 0,
            records: 0,
        }
    }

    /// Makes sure the current session is `id` (one whose start did not verify
    /// is named as unknown).
    fn enter(&mut self, id: Uuid) {
        if self.session.as_ref().is_none_or(|s| s.id != id) {
            self.session = Some(SessionInfo::unknown(id));
        }
    }
}

impl<A: Answer> Visitor for Reader<A> {
    fn record(&mut self, session: Uuid, _seq: u64, record: &[u8]) {
        self.records += 1;
        let Ok(e) = serde_json::from_slice::<Event>(record) else {
            self.unreadable += 1;
            return;
        };
        match &e.body {
            EventBody::SessionStarted(s) => {
                let info = SessionInfo::of(session, &e.ts, s);
                self.answer.session(&info);
                self.session = Some(info);
            }
            EventBody::Statement(st) => {
                self.enter(session);
                let info = self.session.as_ref().expect("entered");
                self.answer.statement(info, e.seq, &e.ts, st);
                if is_run(st) {
                    self.pending.insert(e.seq, (e.ts.clone(), st.clone()));
                }
            }
            EventBody::StatementCompleted(c) => {
                if let Some((ts, st)) = self.pending.remove(&c.statement) {
                    self.enter(session);
                    let info = self.session.as_ref().expect("entered");
                    self.answer.run(info, c.statement, &ts, &st, Some(c));
                }
            }
            EventBody::Approval(a) => {
                self.enter(session);
                let info = self.session.as_ref().expect("entered");
                self.answer.approval(info, &e.ts, a);
            }
            EventBody::ResultData(_) | EventBody::SessionEnded(_) => {}
        }
    }

    fn session_done(&mut self, v: &SessionReport, breaks: &[Break]) {
        self.enter(v.session);
        let info = self.session.take().expect("entered");
        let mut left: Vec<(u64, (String, Statement))> = self.pending.drain().collect();
        left.sort_by_key(|(seq, _)| *seq);
        for (seq, (ts, st)) in left {
            self.answer.run(&info, seq, &ts, &st, None);
        }
        self.answer.session_done(&info, v, breaks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(path: StatementPath, forwarded: bool, approval: bool, class: &str) -> Statement {
        Statement {
            path,
            statement_name: None,
            portal: None,
            sql: "x".into(),
            function_oid: None,
            params: None,
            verdict: "allow".into(),
            rule: None,
            reason: None,
            policy_version: None,
            classes: vec![class.into()],
            shadow: Vec::new(),
            forwarded,
            approval: approval.then(|| "a".into()),
            objects: None,
        }
    }

    #[test]
    fn decisions_runs_and_changes_by_shape() {
        use StatementPath::*;
        let q = st(SimpleQuery, true, false, "write");
        assert!(is_decision(&q) && is_run(&q) && is_change(&q) && !is_privileged(&q));
        let p = st(Parse, true, false, "read");
        assert!(is_decision(&p) && !is_run(&p) && !is_change(&p));
        let x = st(Execute, true, false, "ddl");
        assert!(!is_decision(&x) && is_run(&x) && is_privileged(&x));
        let held = st(SimpleQuery, false, true, "write");
        assert!(is_decision(&held) && !is_run(&held));
        let released = st(SimpleQuery, true, true, "write");
        assert!(!is_decision(&released) && is_run(&released));
        assert_eq!(shown_sql("select\n  1"), "select 1");
        assert_eq!(shown_sql(&"x".repeat(300)).chars().count(), SQL_SHOWN + 1);
    }
}
