//! What `gatehouse report` counts, in one pass: identities and roles,
//! statements by class and verdict, changes and what allowed them, refusals,
//! masked reads, approvals, and the exceptions among them. Counts and bounded
//! lists only.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use gatehouse_archiver::{Break, SessionReport};
use gatehouse_schemas::evidence::{ApprovalEvent, Statement, StatementCompleted};
use serde::Serialize;

use super::events::{
    Answer, SessionInfo, is_change, is_decision, is_privileged, is_run, shown_sql,
};
use super::listed::Listed;

/// Identities counted one by one; past this, they are counted together.
pub const IDENTITIES_MAX: usize = 10_000;
/// Approval requests followed one by one, at most.
pub const APPROVALS_MAX: usize = 10_000;

/// How a caller is named in every answer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Who {
    /// `sub`.
    pub subject: String,
    /// `iss`.
    pub issuer: String,
}

impl Who {
    /// The session's caller.
    pub fn of(s: &SessionInfo) -> Self {
        Self {
            subject: s.subject.clone(),
            issuer: s.issuer.clone(),
        }
    }
}

/// One identity's use of one role.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoleUse {
    /// Sessions.
    pub sessions: u64,
    /// The first session's start.
    pub first: String,
    /// The last session's start.
    pub last: String,
    /// Decided statements by class.
    pub classes: BTreeMap<String, u64>,
    /// Of which refused.
    pub refused: u64,
    /// Changes that ran.
    pub changes: u64,
    /// CI repositories seen (a few).
    pub repositories: BTreeSet<String>,
    /// Sessions without TLS.
    pub cleartext: u64,
}

/// A statement, as an answer lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// When it was recorded.
    pub ts: String,
    /// The session.
    pub session: String,
    /// Its seq.
    pub seq: u64,
    /// Who.
    pub subject: String,
    /// Which role.
    pub role: String,
    /// CI repository and run.
    pub ci: String,
    /// Its classes.
    pub classes: String,
    /// Its verdict.
    pub verdict: String,
    /// The deciding rule, or `default deny`.
    pub rule: String,
    /// What allowed it: `rule R`, or `approval A by X`.
    pub authority: String,
    /// Why (refusals).
    pub reason: String,
    /// `ok 3 rows`, `error 23505`, `never completed`.
    pub outcome: String,
    /// The SQL, shortened.
    pub sql: String,
}

/// One approval request, followed from request to use.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApprovalRow {
    /// The request id.
    pub request: String,
    /// When it was requested.
    pub requested: String,
    /// Who asked (the session's caller).
    pub requester: String,
    /// The approver group asked.
    pub approvers: String,
    /// `approved`, `denied`, `expired`, `withdrawn`, or `pending`.
    pub outcome: String,
    /// Who decided.
    pub decided_by: String,
    /// When.
    pub decided: String,
    /// Seconds from request to decision.
    pub seconds_to_decide: Option<f64>,
    /// Whether the statement then ran.
    pub executed: bool,
    /// The statement, shortened.
    pub sql: String,
    /// The rule that asked for approval.
    pub rule: String,
    /// Decisions the approver service refused (wrong group, self-approval, ...).
    pub refused_decisions: u64,
}

impl ApprovalRow {
    /// What an auditor must look at here, if anything.
    pub fn exception(&self) -> Option<&'static str> {
        if self.executed && self.outcome != "approved" {
            Some("ran without a recorded approval")
        } else if self.outcome == "approved" && self.decided_by == self.requester {
            Some("approved by its requester")
        } else if self.outcome == "approved" && !self.executed {
            Some("approved, never run")
        } else if self.refused_decisions > 0 {
            Some("a decision was refused")
        } else {
            None
        }
    }
}

/// A session without TLS.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRow {
    /// The session.
    pub session: String,
    /// When it started.
    pub started: String,
    /// Who.
    pub subject: String,
    /// Which role.
    pub role: String,
    /// From where.
    pub client: String,
}

/// Everything a report counts.
#[derive(Debug)]
pub struct Facts {
    /// Per identity and role.
    pub identities: BTreeMap<Who, BTreeMap<String, RoleUse>>,
    /// Identities past [`IDENTITIES_MAX`], counted together.
    pub other_identities: u64,
    /// Sessions read.
    pub sessions: u64,
    /// Decided statements by class and verdict.
    pub statements: BTreeMap<String, BTreeMap<String, u64>>,
    /// Decided statements in all.
    pub decided: u64,
    /// Decided statements by deciding rule and verdict.
    pub rules: BTreeMap<String, BTreeMap<String, u64>>,
    /// Changes that ran, by what allowed them.
    pub change_authority: BTreeMap<String, u64>,
    /// Rows the changes that completed reported.
    pub rows_changed: u64,
    /// Every change that ran.
    pub changes: Listed<Row>,
    /// Privileged changes (DDL, DCL, administration) that ran on a rule alone.
    pub unapproved_privileged: Listed<Row>,
    /// Changes that ended in an error.
    pub failed_changes: Listed<Row>,
    /// Runs with no completion in their session.
    pub never_completed: Listed<Row>,
    /// Refused statements (an approval's refusal is under approvals).
    pub refusals: Listed<Row>,
    /// Refusals by rule (or default deny).
    pub refusal_rules: BTreeMap<String, u64>,
    /// Refused because no verdict could be obtained (fail closed).
    pub decider_unavailable: u64,
    /// Masked reads.
    pub masked: Listed<Row>,
    /// Masked statements by rule and caller.
    pub masked_by: BTreeMap<(String, String), u64>,
    /// Approval requests, by id.
    pub approval_map: BTreeMap<String, ApprovalRow>,
    /// Approval requests past [`APPROVALS_MAX`].
    pub other_approvals: u64,
    /// Shadow rules' verdicts, by rule.
    pub shadow: BTreeMap<String, BTreeMap<String, u64>>,
    /// Sessions without TLS.
    pub cleartext: Listed<SessionRow>,
    /// Per session: held statements' text and rule, by seq.
    held: HashMap<u64, (String, String)>,
}

impl Facts {
    /// Empty, listing at most `rows` rows per list.
    pub fn new(rows: usize) -> Self {
        Self {
            identities: BTreeMap::new(),
            other_identities: 0,
            sessions: 0,
            statements: BTreeMap::new(),
            decided: 0,
            rules: BTreeMap::new(),
            change_authority: BTreeMap::new(),
            rows_changed: 0,
            changes: Listed::new(rows),
            unapproved_privileged: Listed::new(rows),
            failed_changes: Listed::new(rows),
            never_completed: Listed::new(rows),
            refusals: Listed::new(rows),
            refusal_rules: BTreeMap::new(),
            decider_unavailable: 0,
            masked: Listed::new(rows),
            masked_by: BTreeMap::new(),
            approval_map: BTreeMap::new(),
            other_approvals: 0,
            shadow: BTreeMap::new(),
            cleartext: Listed::new(rows),
            held: HashMap::new(),
        }
    }

    fn role_use(&mut self, s: &SessionInfo) -> Option<&mut RoleUse> {
        let who = Who::of(s);
        if !self.identities.contains_key(&who) && self.identities.len() >= IDENTITIES_MAX {
            return None;
        }
        Some(
            self.identities
                .entry(who)
                .or_default()
                .entry(s.role.clone())
                .or_default(),
        )
    }

    /// The approval requests, in request order.
    pub fn approvals(&self) -> Vec<&ApprovalRow> {
        let mut v: Vec<&ApprovalRow> = self.approval_map.values().collect();
        v.sort_by(|a, b| a.requested.cmp(&b.requested));
        v
    }

    fn authority(&self, st: &Statement) -> String {
        match &st.approval {
            Some(id) => {
                let by = self
                    .approval_map
                    .get(id)
                    .map(|a| a.decided_by.as_str())
                    .filter(|b| !b.is_empty())
                    .unwrap_or("?");
                format!("approval {id} by {by}")
            }
            None => format!("rule {}", st.rule.as_deref().unwrap_or("(none)")),
        }
    }

    fn row(&self, s: &SessionInfo, seq: u64, ts: &str, st: &Statement) -> Row {
        Row {
            ts: ts.to_owned(),
            session: s.id.to_string(),
            seq,
            subject: s.subject.clone(),
            role: s.role.clone(),
            ci: ci_text(s),
            classes: st.classes.join(", "),
            verdict: st.verdict.clone(),
            rule: st.rule.clone().unwrap_or_else(|| "default deny".into()),
            authority: self.authority(st),
            reason: st.reason.clone().unwrap_or_default(),
            outcome: String::new(),
            sql: shown_sql(&st.sql),
        }
    }
}

/// `owner/repo run 42 @abc1234`, as short as the context allows.
pub fn ci_text(s: &SessionInfo) -> String {
    let ci = &s.ci;
    let mut out = ci
        .repository
        .clone()
        .or_else(|| ci.service_account.clone())
        .unwrap_or_else(|| ci.provider.clone());
    if let Some(w) = &ci.workflow {
        out.push_str(&format!(" {w}"));
    }
    if let Some(r) = &ci.run_id {
        out.push_str(&format!(" run {r}"));
    }
    if let Some(c) = &ci.commit {
        out.push_str(&format!(" @{}", &c[..c.len().min(12)]));
    }
    out
}

/// `ok, 3 rows`, `error 23505`, `never completed`.
pub fn outcome_text(done: Option<&StatementCompleted>) -> String {
    match done {
        None => "never completed".into(),
        Some(c) => match &c.sqlstate {
            Some(state) => format!("{} {state}", c.outcome),
            None => format!("{}, {} rows", c.outcome, c.rows),
        },
    }
}

impl Answer for Facts {
    fn session(&mut self, s: &SessionInfo) {
        self.sessions += 1;
        self.held.clear();
        if !s.tls {
            self.cleartext.push(SessionRow {
                session: s.id.to_string(),
                started: s.started.clone(),
                subject: s.subject.clone(),
                role: s.role.clone(),
                client: s.client.clone(),
            });
        }
        let Some(u) = self.role_use(s) else {
            self.other_identities += 1;
            return;
        };
        u.sessions += 1;
        if u.first.is_empty() || s.started < u.first {
            u.first = s.started.clone();
        }
        if s.started > u.last {
            u.last = s.started.clone();
        }
        if let Some(r) = &s.ci.repository
            && u.repositories.len() < 10
        {
            u.repositories.insert(r.clone());
        }
        if !s.tls {
            u.cleartext += 1;
        }
    }

    fn statement(&mut self, s: &SessionInfo, seq: u64, ts: &str, st: &Statement) {
        for hit in &st.shadow {
            *self
                .shadow
                .entry(hit.rule.clone())
                .or_default()
                .entry(hit.verdict.name().to_owned())
                .or_default() += 1;
        }
        if !is_decision(st) {
            return;
        }
        self.decided += 1;
        let class = if st.classes.is_empty() {
            "unparsed".to_owned()
        } else {
            st.classes.join("+")
        };
        *self
            .statements
            .entry(class.clone())
            .or_default()
            .entry(st.verdict.clone())
            .or_default() += 1;
        let rule = st.rule.clone().unwrap_or_else(|| "default deny".into());
        *self
            .rules
            .entry(rule.clone())
            .or_default()
            .entry(st.verdict.clone())
            .or_default() += 1;
        let held = st.verdict == "approve" && st.approval.is_some();
        let refused = !st.forwarded && !held;
        if let Some(u) = self.role_use(s) {
            *u.classes.entry(class).or_default() += 1;
            if refused {
                u.refused += 1;
            }
        }
        if held {
            self.held.insert(seq, (shown_sql(&st.sql), rule.clone()));
        }
        if refused {
            if st.policy_version.is_none() {
                self.decider_unavailable += 1;
            }
            *self.refusal_rules.entry(rule.clone()).or_default() += 1;
            let row = self.row(s, seq, ts, st);
            self.refusals.push(row);
        }
        if st.verdict == "mask" && st.forwarded {
            *self.masked_by.entry((rule, s.subject.clone())).or_default() += 1;
            let row = self.row(s, seq, ts, st);
            self.masked.push(row);
        }
    }

    fn run(
        &mut self,
        s: &SessionInfo,
        seq: u64,
        ts: &str,
        st: &Statement,
        done: Option<&StatementCompleted>,
    ) {
        debug_assert!(is_run(st));
        let mut row = self.row(s, seq, ts, st);
        row.outcome = outcome_text(done);
        if done.is_none() {
            self.never_completed.push(row.clone());
        }
        if !is_change(st) {
            return;
        }
        if let Some(u) = self.role_use(s) {
            u.changes += 1;
        }
        let authority = match &st.approval {
            Some(_) => "approval".to_owned(),
            None => format!("rule {}", st.rule.as_deref().unwrap_or("(none)")),
        };
        *self.change_authority.entry(authority).or_default() += 1;
        if let Some(c) = done {
            self.rows_changed += c.rows;
            if c.sqlstate.is_some() || c.outcome == "error" {
                self.failed_changes.push(row.clone());
            }
        }
        if is_privileged(st) && st.approval.is_none() {
            self.unapproved_privileged.push(row.clone());
        }
        self.changes.push(row);
    }

    fn approval(&mut self, s: &SessionInfo, ts: &str, a: &ApprovalEvent) {
        if !self.approval_map.contains_key(&a.request) && self.approval_map.len() >= APPROVALS_MAX {
            if a.state == "requested" {
                self.other_approvals += 1;
            }
            return;
        }
        let (sql, rule) = self.held.get(&a.statement).cloned().unwrap_or_default();
        let row = self
            .approval_map
            .entry(a.request.clone())
            .or_insert_with(|| ApprovalRow {
                request: a.request.clone(),
                requester: a.requester.clone().unwrap_or_else(|| s.subject.clone()),
                approvers: a.approvers.clone(),
                outcome: "pending".into(),
                sql,
                rule,
                ..ApprovalRow::default()
            });
        match a.state.as_str() {
            "requested" => row.requested = ts.to_owned(),
            "approved" | "denied" | "expired" | "withdrawn" => {
                row.outcome = a.state.clone();
                row.decided = ts.to_owned();
                row.decided_by = a
                    .approver
                    .as_ref()
                    .map(|i| i.subject.clone())
                    .or_else(|| a.by.clone())
                    .unwrap_or_default();
                row.seconds_to_decide = seconds_between(&row.requested, ts);
            }
            "executed" => row.executed = true,
            "refused" => row.refused_decisions += 1,
            _ => {}
        }
    }

    fn session_done(&mut self, _s: &SessionInfo, _v: &SessionReport, _breaks: &[Break]) {
        self.held.clear();
    }
}

/// Seconds from one RFC 3339 time to another.
pub fn seconds_between(from: &str, to: &str) -> Option<f64> {
    let a = humantime::parse_rfc3339_weak(from).ok()?;
    let b = humantime::parse_rfc3339_weak(to).ok()?;
    Some(b.duration_since(a).ok()?.as_secs_f64())
}
