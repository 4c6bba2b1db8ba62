//! `gatehouse report`: the facts of a period arranged by control: what each
//! control asks, what the evidence shows, the exceptions, and the command that
//! reproduces each figure. Rendered as JSON, Markdown or HTML.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Scope;
use super::controls::Control;
use super::facts::{ApprovalRow, Facts, Row};
use super::integrity::{Integrity, plural, thousands};
use super::listed::Listed;

/// A small table: column names and rows of text, and how many rows were left out.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, each as many cells as columns.
    pub rows: Vec<Vec<String>>,
    /// Rows in all (more than `rows` when the list was bounded).
    pub total: u64,
}

impl Table {
    fn new(columns: &[&str]) -> Self {
        Self {
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: Vec::new(),
            total: 0,
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.total += 1;
        self.rows.push(cells);
    }

    /// Rows left out.
    pub fn more(&self) -> u64 {
        self.total.saturating_sub(self.rows.len() as u64)
    }
}

/// One figure of a control section.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// Its name in the controls file (`changes`).
    pub name: String,
    /// Its title.
    pub title: String,
    /// A line on what it shows.
    pub summary: String,
    /// The figures.
    pub table: Table,
    /// The command that prints the same figure.
    pub reproduce: String,
}

/// One control's section.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    /// The control.
    pub control: Control,
    /// What the evidence shows.
    pub evidence: Vec<Figure>,
    /// What an auditor must look at (empty figures are kept: "none" is an answer).
    pub exceptions: Vec<Figure>,
    /// Exceptions in all.
    pub exception_count: u64,
}

/// Headline numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Sessions.
    pub sessions: u64,
    /// Distinct identities.
    pub identities: u64,
    /// Distinct roles assumed.
    pub roles: u64,
    /// Decided statements.
    pub statements: u64,
    /// Refused statements.
    pub refused: u64,
    /// Changes that ran.
    pub changes: u64,
    /// Rows they changed.
    pub rows_changed: u64,
    /// Masked reads.
    pub masked: u64,
    /// Approval requests.
    pub approvals: u64,
}

impl Summary {
    /// The headline numbers as a reader sees them, each with its noun in the
    /// right number (`1 role`, `2 roles`).
    pub fn tiles(&self) -> [(u64, String); 8] {
        let t = |n: u64, one: &str, many: &str| (n, plural(n, one, many));
        [
            t(self.sessions, "session", "sessions"),
            t(self.identities, "identity", "identities"),
            t(self.roles, "role", "roles"),
            t(self.statements, "statement", "statements"),
            t(self.refused, "refused", "refused"),
            t(self.changes, "change", "changes"),
            t(self.masked, "masked read", "masked reads"),
            t(self.approvals, "approval", "approvals"),
        ]
    }
}

/// A report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The framework's id.
    pub framework: String,
    /// Its full name.
    pub framework_name: String,
    /// When the report was made.
    pub generated: String,
    /// The Gatehouse version that made it.
    pub gatehouse: String,
    /// Whether the evidence is complete and intact.
    pub integrity: Integrity,
    /// Headline numbers.
    pub summary: Summary,
    /// One section per control.
    pub sections: Vec<Section>,
    /// The command that makes this report again.
    pub reproduce: String,
}

/// Builds figures from the facts of one scope.
pub struct Builder<'a> {
    /// The facts.
    pub facts: &'a Facts,
    /// What verification found.
    pub integrity: &'a Integrity,
    /// The scope, for commands.
    pub scope: &'a Scope,
}

fn n(v: u64) -> String {
    thousands(v)
}

fn verdict_table(first: &str, map: &BTreeMap<String, BTreeMap<String, u64>>) -> Table {
    let mut t = Table::new(&[first, "allow", "mask", "approve", "block", "total"]);
    for (k, by) in map {
        let get = |v: &str| by.get(v).copied().unwrap_or(0);
        let total: u64 = by.values().sum();
        t.row(vec![
            k.clone(),
            n(get("allow")),
            n(get("mask")),
            n(get("approve")),
            n(get("block")),
            n(total),
        ]);
    }
    t
}

fn rows_table(list: &Listed<Row>, columns: &[&str], cells: impl Fn(&Row) -> Vec<String>) -> Table {
    let mut t = Table::new(columns);
    for r in &list.rows {
        t.row(cells(r));
    }
    t.total = list.total;
    t
}

fn change_cells(r: &Row) -> Vec<String> {
    vec![
        r.ts.clone(),
        r.subject.clone(),
        r.role.clone(),
        r.ci.clone(),
        r.classes.clone(),
        r.authority.clone(),
        r.outcome.clone(),
        r.sql.clone(),
    ]
}

const CHANGE_COLUMNS: &[&str] = &[
    "Time",
    "Identity",
    "Role",
    "CI",
    "Class",
    "Allowed by",
    "Outcome",
    "SQL",
];

fn refusal_cells(r: &Row) -> Vec<String> {
    vec![
        r.ts.clone(),
        r.subject.clone(),
        r.role.clone(),
        r.classes.clone(),
        r.rule.clone(),
        r.reason.clone(),
        r.sql.clone(),
    ]
}

const REFUSAL_COLUMNS: &[&str] = &["Time", "Identity", "Role", "Class", "Rule", "Reason", "SQL"];

fn approval_table(rows: &[&ApprovalRow]) -> Table {
    let mut t = Table::new(&[
        "Requested",
        "Request",
        "Requester",
        "Approvers",
        "Outcome",
        "Decided by",
        "Time to decide",
        "Ran",
        "SQL",
    ]);
    for a in rows {
        t.row(vec![
            a.requested.clone(),
            a.request.clone(),
            a.requester.clone(),
            a.approvers.clone(),
            a.outcome.clone(),
            a.decided_by.clone(),
            a.seconds_to_decide
                .map(|s| format!("{s:.1} s"))
                .unwrap_or_else(|| "-".into()),
            if a.executed { "yes" } else { "no" }.into(),
            a.sql.clone(),
        ]);
    }
    t
}

impl Builder<'_> {
    fn only(&self, name: &str) -> String {
        self.scope
            .command(&format!("report --only {name} --format json"))
    }

    fn figure(&self, name: &str, title: &str, summary: String, table: Table) -> Figure {
        Figure {
            name: name.into(),
            title: title.into(),
            summary,
            table,
            reproduce: self.only(name),
        }
    }

    /// One evidence figure by its name in the controls file.
    pub fn evidence(&self, name: &str) -> Figure {
        let f = self.facts;
        let i = self.integrity;
        match name {
            "integrity" => {
                let mut t = Table::new(&["Measure", "Value"]);
                for (k, v) in [
                    ("Sessions", n(i.sessions)),
                    ("Complete (start to end, intact)", n(i.complete_sessions)),
                    ("Open (started, never completed)", n(i.open_sessions)),
                    ("Broken", n(i.broken_sessions)),
                    ("Records that verify", n(i.records)),
                    ("Signed segments", n(i.segments)),
                    ("Objects read", n(i.objects)),
                    ("Bytes read", n(i.bytes)),
                    ("Breaks", n(i.breaks.total)),
                    ("Trusted keys", i.keys.join(", ")),
                    ("Digest of what was read", i.digest.clone()),
                ] {
                    t.row(vec![k.into(), v]);
                }
                Figure {
                    name: name.into(),
                    title: "Integrity of the evidence".into(),
                    summary: i.sentence.clone(),
                    table: t,
                    reproduce: i.reproduce.clone(),
                }
            }
            "identities" => {
                let mut t = Table::new(&[
                    "Identity",
                    "Issuer",
                    "Role",
                    "Sessions",
                    "First use",
                    "Last use",
                    "Statements",
                    "Refused",
                    "Changes",
                    "CI repositories",
                ]);
                for (who, roles) in &f.identities {
                    for (role, u) in roles {
                        t.row(vec![
                            who.subject.clone(),
                            who.issuer.clone(),
                            role.clone(),
                            n(u.sessions),
                            u.first.clone(),
                            u.last.clone(),
                            n(u.classes.values().sum()),
                            n(u.refused),
                            n(u.changes),
                            u.repositories.iter().cloned().collect::<Vec<_>>().join(", "),
                        ]);
                    }
                }
                let roles: std::collections::BTreeSet<&String> =
                    f.identities.values().flat_map(|r| r.keys()).collect();
                let mut fig = self.figure(
                    name,
                    "Identities and the roles they assumed",
                    format!(
                        "{} assumed {} in {}{}.",
                        plural(f.identities.len() as u64, "identity", "identities"),
                        plural(roles.len() as u64, "role", "roles"),
                        plural(f.sessions, "session", "sessions"),
                        if f.other_identities > 0 {
                            format!(
                                " ({} sessions of further identities counted together)",
                                n(f.other_identities)
                            )
                        } else {
                            String::new()
                        }
                    ),
                    t,
                );
                fig.reproduce = self.scope.command("access review");
                fig
            }
            "statements" => self.figure(
                name,
                "Statements by class and verdict",
                format!(
                    "{} statements decided; each is counted once, whatever protocol carried it.",
                    n(f.decided)
                ),
                verdict_table("Class", &f.statements),
            ),
            "rules" => self.figure(
                name,
                "Statements by the rule that decided them",
                format!(
                    "{} rules decided statements; \"default deny\" is no rule allowing them.",
                    n(f.rules.len() as u64)
                ),
                verdict_table("Rule", &f.rules),
            ),
            "changes" => self.figure(
                name,
                "Changes that ran",
                format!(
                    "{} changes ran (writes, DDL, DCL, COPY FROM, procedures, administration), reporting {} rows.",
                    n(f.changes.total),
                    n(f.rows_changed)
                ),
                rows_table(&f.changes, CHANGE_COLUMNS, change_cells),
            ),
            "change_authority" => {
                let mut t = Table::new(&["Allowed by", "Changes"]);
                for (k, v) in &f.change_authority {
                    t.row(vec![k.clone(), n(*v)]);
                }
                self.figure(
                    name,
                    "What allowed each change",
                    format!(
                        "{} changes: {} under an approval, the rest under a policy rule.",
                        n(f.changes.total),
                        n(f.change_authority.get("approval").copied().unwrap_or(0))
                    ),
                    t,
                )
            }
            "refusals" => {
                let mut t = Table::new(&["Rule", "Refused"]);
                for (k, v) in &f.refusal_rules {
                    t.row(vec![k.clone(), n(*v)]);
                }
                self.figure(
                    name,
                    "Refused statements by rule",
                    format!(
                        "{} statements were refused before they reached the database.",
                        n(f.refusals.total)
                    ),
                    t,
                )
            }
            "masked" => {
                let mut t = Table::new(&["Mask rule", "Identity", "Statements"]);
                for ((rule, who), v) in &f.masked_by {
                    t.row(vec![rule.clone(), who.clone(), n(*v)]);
                }
                self.figure(
                    name,
                    "Masked reads",
                    format!(
                        "{} statements ran with masked results; the values never left the gateway.",
                        n(f.masked.total)
                    ),
                    t,
                )
            }
            "approvals" => {
                let all = f.approvals();
                let decided: Vec<f64> = all.iter().filter_map(|a| a.seconds_to_decide).collect();
                let median = median(&decided);
                self.figure(
                    name,
                    "Approvals",
                    format!(
                        "{} approval requests, {} approved{}.",
                        n(all.len() as u64 + f.other_approvals),
                        n(all.iter().filter(|a| a.outcome == "approved").count() as u64),
                        median
                            .map(|m| format!(", decided in {m:.1} s (median)"))
                            .unwrap_or_default()
                    ),
                    approval_table(&all),
                )
            }
            "shadow" => {
                let total: u64 = f.shadow.values().flat_map(|v| v.values()).sum();
                self.figure(
                    name,
                    "Shadow rules (recorded, not enforced)",
                    format!(
                        "{} statements matched shadow rules: what those rules would do if enforced.",
                        n(total)
                    ),
                    verdict_table("Shadow rule", &f.shadow),
                )
            }
            "transport" => {
                let mut t = Table::new(&["Transport", "Sessions"]);
                let clear = f.cleartext.total;
                t.row(vec!["TLS".into(), n(f.sessions - clear.min(f.sessions))]);
                t.row(vec!["cleartext".into(), n(clear)]);
                self.figure(
                    name,
                    "Sessions by transport",
                    format!(
                        "{} of {} sessions used TLS.",
                        n(f.sessions - clear.min(f.sessions)),
                        n(f.sessions)
                    ),
                    t,
                )
            }
            other => unreachable!("controls are checked on load: {other}"),
        }
    }

    /// One exception figure by its name in the controls file.
    pub fn exception(&self, name: &str) -> Figure {
        let f = self.facts;
        let i = self.integrity;
        match name {
            "broken_evidence" => {
                let mut t = Table::new(&["Session", "Break", "Seqs", "Object", "Detail"]);
                for b in &i.breaks.rows {
                    t.row(vec![
                        b.session.clone(),
                        b.kind.clone(),
                        b.seqs.clone().unwrap_or_default(),
                        b.key.clone(),
                        b.detail.clone(),
                    ]);
                }
                t.total = i.breaks.total;
                Figure {
                    name: name.into(),
                    title: "Breaks in the evidence".into(),
                    summary: format!("{} breaks.", n(i.breaks.total)),
                    table: t,
                    reproduce: i.reproduce.clone(),
                }
            }
            "open_sessions" => {
                let mut t = Table::new(&["Session", "Started", "Last seq"]);
                for o in &i.open.rows {
                    t.row(vec![o.session.clone(), o.started.clone(), n(o.last_seq)]);
                }
                t.total = i.open.total;
                Figure {
                    name: name.into(),
                    title: "Sessions that started and never recorded an end".into(),
                    summary: format!(
                        "{} open sessions (live, or their gateway stopped).",
                        n(i.open.total)
                    ),
                    table: t,
                    reproduce: i.reproduce.clone(),
                }
            }
            "never_completed" => self.figure(
                name,
                "Statements forwarded that never recorded a result",
                format!("{} statements.", n(f.never_completed.total)),
                rows_table(&f.never_completed, CHANGE_COLUMNS, change_cells),
            ),
            "refusals" => self.figure(
                name,
                "Refused statements",
                format!("{} refused statements.", n(f.refusals.total)),
                rows_table(&f.refusals, REFUSAL_COLUMNS, refusal_cells),
            ),
            "decider_unavailable" => {
                let mut t = Table::new(&["Refused without a verdict"]);
                t.row(vec![n(f.decider_unavailable)]);
                t.total = f.decider_unavailable;
                self.figure(
                    name,
                    "Statements refused because no verdict was had (fail closed)",
                    format!("{} statements.", n(f.decider_unavailable)),
                    t,
                )
            }
            "unapproved_privileged" => self.figure(
                name,
                "Privileged changes allowed by a rule without an approval",
                format!(
                    "{} DDL, DCL or administration statements ran on a policy rule alone.",
                    n(f.unapproved_privileged.total)
                ),
                rows_table(&f.unapproved_privileged, CHANGE_COLUMNS, change_cells),
            ),
            "failed_changes" => self.figure(
                name,
                "Changes that ended in an error",
                format!("{} changes failed.", n(f.failed_changes.total)),
                rows_table(&f.failed_changes, CHANGE_COLUMNS, change_cells),
            ),
            "approval_exceptions" => {
                let rows: Vec<&ApprovalRow> = f
                    .approvals()
                    .into_iter()
                    .filter(|a| a.exception().is_some())
                    .collect();
                let mut t = approval_table(&rows);
                t.columns.push("Exception".into());
                for (cells, a) in t.rows.iter_mut().zip(&rows) {
                    cells.push(a.exception().unwrap_or_default().into());
                }
                self.figure(
                    name,
                    "Approvals an auditor must look at",
                    format!(
                        "{} approvals by their requester, approved and never run, run without approval, or with a refused decision.",
                        n(rows.len() as u64)
                    ),
                    t,
                )
            }
            "pending_approvals" => {
                let rows: Vec<&ApprovalRow> = f
                    .approvals()
                    .into_iter()
                    .filter(|a| a.outcome != "approved")
                    .collect();
                self.figure(
                    name,
                    "Approval requests not approved",
                    format!(
                        "{} requests denied, expired, withdrawn or undecided: their statements did not run.",
                        n(rows.len() as u64)
                    ),
                    approval_table(&rows),
                )
            }
            "cleartext_sessions" => {
                let mut t = Table::new(&["Session", "Started", "Identity", "Role", "Client"]);
                for s in &f.cleartext.rows {
                    t.row(vec![
                        s.session.clone(),
                        s.started.clone(),
                        s.subject.clone(),
                        s.role.clone(),
                        s.client.clone(),
                    ]);
                }
                t.total = f.cleartext.total;
                self.figure(
                    name,
                    "Sessions without TLS",
                    format!("{} sessions connected in cleartext.", n(f.cleartext.total)),
                    t,
                )
            }
            "shadow_blocks" => {
                let mut t = Table::new(&["Shadow rule", "Would refuse"]);
                for (rule, by) in &f.shadow {
                    if let Some(v) = by.get("block") {
                        t.row(vec![rule.clone(), n(*v)]);
                    }
                }
                let total: u64 = f.shadow.values().filter_map(|b| b.get("block")).sum();
                let mut fig = self.figure(
                    name,
                    "Statements a shadow rule would have refused",
                    format!("{} statements.", n(total)),
                    t,
                );
                fig.table.total = total;
                fig
            }
            other => unreachable!("controls are checked on load: {other}"),
        }
    }

    /// A control's section.
    pub fn section(&self, c: &Control) -> Section {
        let evidence: Vec<Figure> = c.evidence.iter().map(|e| self.evidence(e)).collect();
        let exceptions: Vec<Figure> = c.exceptions.iter().map(|e| self.exception(e)).collect();
        Section {
            control: c.clone(),
            exception_count: exceptions.iter().map(|e| e.table.total).sum(),
            evidence,
            exceptions,
        }
    }

    /// Headline numbers.
    pub fn summary(&self) -> Summary {
        let f = self.facts;
        let roles: std::collections::BTreeSet<&String> =
            f.identities.values().flat_map(|r| r.keys()).collect();
        Summary {
            sessions: f.sessions,
            identities: f.identities.len() as u64,
            roles: roles.len() as u64,
            statements: f.decided,
            refused: f.refusals.total,
            changes: f.changes.total,
            rows_changed: f.rows_changed,
            masked: f.masked.total,
            approvals: f.approval_map.len() as u64 + f.other_approvals,
        }
    }
}

/// The median of some values.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    Some(if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
