//! `gatehouse who-changed TABLE`: every statement that ran and wrote to a
//! table, from the objects recorded with each statement: who, from which CI
//! run, under which rule or approval (and who approved), how many rows, when.

use std::collections::HashMap;
use std::io::Write;

use anyhow::Result;
use gatehouse_decider::Analysis;
use gatehouse_schemas::evidence::{ApprovalEvent, CiContext, Statement, StatementCompleted};
use serde::Serialize;
use wildmatch::WildMatch;

use super::events::{Answer, SessionInfo, shown_sql};
use super::integrity::{Integrity, thousands};
use super::listed::Listed;

/// A table name or glob: `accounts` (any schema), `public.accounts`, `hr.*`.
#[derive(Debug)]
pub struct TablePattern {
    schema: Option<WildMatch>,
    name: WildMatch,
}

impl TablePattern {
    /// Compiles a pattern (names are compared lower-cased, as unquoted).
    pub fn new(p: &str) -> Self {
        let p = p.to_lowercase();
        match p.rsplit_once('.') {
            Some((s, n)) => Self {
                schema: Some(WildMatch::new(s)),
                name: WildMatch::new(n),
            },
            None => Self {
                schema: None,
                name: WildMatch::new(&p),
            },
        }
    }

    /// Whether `schema.name` (or an unqualified `name`) is matched.
    pub fn matches(&self, object: &str) -> bool {
        let (schema, name) = match object.rsplit_once('.') {
            Some((s, n)) => (Some(s), n),
            None => (None, object),
        };
        self.name.matches(name)
            && match (&self.schema, schema) {
                (None, _) => true,
                (Some(p), Some(s)) => p.matches(s),
                // Recorded without a schema (an old record read again): by name.
                (Some(_), None) => true,
            }
    }
}

/// What allowed a change.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Authority {
    /// A policy rule.
    Rule {
        /// The rule id (`None`: no rule, which no change should show).
        rule: Option<String>,
    },
    /// An approval.
    Approval {
        /// The request.
        request: String,
        /// Who approved.
        approver: Option<String>,
        /// When.
        approved_at: Option<String>,
        /// The rule that asked for it.
        rule: Option<String>,
    },
}

/// One change.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// When it was recorded (before it ran).
    pub ts: String,
    /// The session.
    pub session: String,
    /// The statement's seq.
    pub seq: u64,
    /// The caller's `sub`.
    pub subject: String,
    /// The caller's `iss`.
    pub issuer: String,
    /// The Gatehouse role.
    pub role: String,
    /// The CI context.
    pub ci: CiContext,
    /// What allowed it.
    pub authority: Authority,
    /// The tables it wrote that the pattern matches.
    pub tables: Vec<String>,
    /// `ok`, `error`, ... or `never completed`.
    pub outcome: String,
    /// Rows affected, as PostgreSQL reported them.
    pub rows: Option<u64>,
    /// The error's SQLSTATE.
    pub sqlstate: Option<String>,
    /// The statement (values under a mask shown masked).
    pub sql: String,
    /// `recorded`, or `sql` when the record predates recorded objects and the
    /// text was read again.
    pub objects_from: &'static str,
}

/// The answer: changes, in session order.
#[derive(Debug)]
pub struct WhoChanged {
    pattern: TablePattern,
    /// The changes found (at most the limit).
    pub changes: Listed<Change>,
    /// Per session: approval request to (approver, when).
    approvals: HashMap<String, (Option<String>, String)>,
}

impl WhoChanged {
    /// Changes to tables matching `table`, listing at most `limit`.
    pub fn new(table: &str, limit: usize) -> Self {
        Self {
            pattern: TablePattern::new(table),
            changes: Listed::new(limit),
            approvals: HashMap::new(),
        }
    }
}

/// The objects a statement writes: as recorded, else read again from its text.
pub fn written(st: &Statement) -> (Vec<String>, &'static str) {
    if let Some(o) = &st.objects {
        return (o.writes.clone(), "recorded");
    }
    let mut out = Vec::new();
    if let Analysis::Parsed { statements } = gatehouse_decider::analyze(&st.sql) {
        for s in statements {
            out.extend(s.writes.iter().map(|o| o.to_string()));
        }
    }
    (out, "sql")
}

impl Answer for WhoChanged {
    fn session(&mut self, _s: &SessionInfo) {
        self.approvals.clear();
    }

    fn approval(&mut self, _s: &SessionInfo, ts: &str, a: &ApprovalEvent) {
        if a.state == "approved" {
            let who = a
                .approver
                .as_ref()
                .map(|i| i.subject.clone())
                .or(a.by.clone());
            self.approvals
                .insert(a.request.clone(), (who, ts.to_owned()));
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
        let (writes, from) = written(st);
        let tables: Vec<String> = writes
            .into_iter()
            .filter(|w| self.pattern.matches(w))
            .collect();
        if tables.is_empty() {
            return;
        }
        let authority = match &st.approval {
            Some(id) => {
                let (approver, at) = self.approvals.get(id).cloned().unwrap_or_default();
                Authority::Approval {
                    request: id.clone(),
                    approver,
                    approved_at: (!at.is_empty()).then_some(at),
                    rule: st.rule.clone(),
                }
            }
            None => Authority::Rule {
                rule: st.rule.clone(),
            },
        };
        self.changes.push(Change {
            ts: ts.to_owned(),
            session: s.id.to_string(),
            seq,
            subject: s.subject.clone(),
            issuer: s.issuer.clone(),
            role: s.role.clone(),
            ci: s.ci.clone(),
            authority,
            tables,
            outcome: done.map_or("never completed".into(), |c| c.outcome.clone()),
            rows: done.map(|c| c.rows),
            sqlstate: done.and_then(|c| c.sqlstate.clone()),
            sql: st.sql.clone(),
            objects_from: from,
        });
    }
}

/// JSON output.
#[derive(Serialize)]
struct Out<'a> {
    evidence: &'a Integrity,
    table: &'a str,
    total: u64,
    changes: &'a [Change],
}

/// Prints the answer.
pub fn print(
    out: &mut impl Write,
    table: &str,
    i: &Integrity,
    w: &WhoChanged,
    json: bool,
) -> Result<()> {
    if json {
        serde_json::to_writer_pretty(
            &mut *out,
            &Out {
                evidence: i,
                table,
                total: w.changes.total,
                changes: &w.changes.rows,
            },
        )?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "{}\n", i.sentence)?;
    writeln!(
        out,
        "{} statements wrote to {table}:",
        thousands(w.changes.total)
    )?;
    for c in &w.changes.rows {
        let by = match &c.authority {
            Authority::Rule { rule } => format!("rule {}", rule.as_deref().unwrap_or("(none)")),
            Authority::Approval {
                request,
                approver,
                approved_at,
                ..
            } => format!(
                "approval {request} by {} at {}",
                approver.as_deref().unwrap_or("?"),
                approved_at.as_deref().unwrap_or("?")
            ),
        };
        let result = match (&c.sqlstate, c.rows) {
            (Some(state), _) => format!("{} (SQLSTATE {state})", c.outcome),
            (None, Some(rows)) => format!("{}, {} rows", c.outcome, thousands(rows)),
            (None, None) => c.outcome.clone(),
        };
        let ci = &c.ci;
        writeln!(
            out,
            "\n{}  {}  session {} #{}",
            c.ts,
            c.tables.join(", "),
            c.session,
            c.seq
        )?;
        writeln!(
            out,
            "  who:     {} ({}) as role {}",
            c.subject, c.issuer, c.role
        )?;
        writeln!(
            out,
            "  ci:      {} repository {} workflow {} run {} commit {}",
            ci.provider,
            ci.repository.as_deref().unwrap_or("-"),
            ci.workflow.as_deref().unwrap_or("-"),
            ci.run_id.as_deref().unwrap_or("-"),
            ci.commit.as_deref().unwrap_or("-")
        )?;
        writeln!(out, "  allowed: {by}")?;
        writeln!(out, "  result:  {result}")?;
        writeln!(out, "  sql:     {}", shown_sql(&c.sql))?;
    }
    if w.changes.more() > 0 {
        writeln!(
            out,
            "\n{} more not shown (raise --limit, or narrow --since/--until)",
            thousands(w.changes.more())
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_patterns() {
        let p = TablePattern::new("accounts");
        assert!(p.matches("public.accounts") && p.matches("accounts") && !p.matches("public.acc"));
        let p = TablePattern::new("Public.Accounts");
        assert!(p.matches("public.accounts") && !p.matches("hr.accounts"));
        let p = TablePattern::new("hr.*");
        assert!(p.matches("hr.salaries") && !p.matches("public.salaries"));
    }
}
