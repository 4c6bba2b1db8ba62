//! `gatehouse policy replay --policy NEW.toml`: every recorded statement
//! decided again under NEW, and what would change (would now be blocked,
//! newly allowed, newly masked, ...) by identity and rule: the path from
//! shadow rules to enforcement without breaking a job.
//!
//! The replay sees what the gateway saw but the upstream catalog: views are
//! not read through their definitions, and functions are not looked up, so a
//! masked caller's statement over a view may be decided differently at run
//! time (the gateway then refuses rather than guess).

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Result;
use gatehouse_decider::{Policy, Query};
use gatehouse_schemas::evidence::{Statement, StatementPath};
use gatehouse_schemas::{Identity, ProtocolKind};
use serde::Serialize;

use super::events::{Answer, SessionInfo, is_decision, shown_sql};
use super::integrity::{Integrity, thousands};

/// Groups of changes kept, at most.
pub const GROUPS_MAX: usize = 1000;

/// How a statement's verdict would change.
pub fn change_kind(old: &str, new: &str) -> Option<&'static str> {
    let refused = |v: &str| v == "block";
    Some(match (old, new) {
        (o, n) if o == n => return None,
        (o, "block") if !refused(o) => "would now be blocked",
        ("block", "approve") => "newly allowed with approval",
        ("block", _) => "newly allowed",
        ("allow", "mask") => "newly masked",
        ("mask", "allow") => "no longer masked",
        (_, "approve") => "would now need approval",
        ("approve", _) => "no longer needs approval",
        _ => "changed",
    })
}

/// One group of statements whose verdict changes the same way.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// e.g. `would now be blocked`.
    pub change: String,
    /// The caller's `sub`.
    pub subject: String,
    /// The role.
    pub role: String,
    /// The verdict recorded, and its rule.
    pub was: String,
    /// The rule recorded.
    pub was_rule: String,
    /// The verdict under the new policy.
    pub now: String,
    /// The rule under the new policy.
    pub now_rule: String,
    /// Statements.
    pub statements: u64,
    /// The first one's text, shortened.
    pub example: String,
    /// When the first one was recorded.
    pub first: String,
}

/// The replay.
#[derive(Debug, Serialize)]
pub struct Replay {
    /// The new policy's version.
    pub policy: String,
    /// Statements decided again.
    pub decided: u64,
    /// Of which decided the same.
    pub unchanged: u64,
    /// Statements by kind of change.
    pub changes: BTreeMap<String, u64>,
    /// By kind, identity, role and rules.
    pub groups: Vec<Group>,
    /// Changes past [`GROUPS_MAX`] groups, counted only.
    pub other: u64,
    /// Statements recorded without a verdict (the decider was unavailable): not compared.
    pub without_verdict: u64,
    #[serde(skip)]
    policy_obj: Policy,
    #[serde(skip)]
    index: BTreeMap<(String, String, String, String, String, String), usize>,
    /// The session's SQL-prepared statements, as the new policy sees them.
    #[serde(skip)]
    prepared: BTreeMap<String, String>,
}

impl Replay {
    /// Decides again under `policy`.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy: policy.version.clone(),
            decided: 0,
            unchanged: 0,
            changes: BTreeMap::new(),
            groups: Vec::new(),
            other: 0,
            without_verdict: 0,
            policy_obj: policy,
            index: BTreeMap::new(),
            prepared: BTreeMap::new(),
        }
    }

    /// Statements whose verdict would change.
    pub fn changed(&self) -> u64 {
        self.changes.values().sum()
    }

    /// Statements that ran and would now be refused.
    pub fn newly_blocked(&self) -> u64 {
        self.changes
            .get("would now be blocked")
            .copied()
            .unwrap_or(0)
    }
}

impl Answer for Replay {
    fn session(&mut self, _s: &SessionInfo) {
        self.prepared.clear();
    }

    fn statement(&mut self, s: &SessionInfo, _seq: u64, ts: &str, st: &Statement) {
        if !is_decision(st) {
            return;
        }
        let protocol = match st.path {
            StatementPath::SimpleQuery => ProtocolKind::SimpleQuery,
            StatementPath::Parse => ProtocolKind::Parse,
            StatementPath::FunctionCall => ProtocolKind::FunctionCall,
            StatementPath::Execute => return,
        };
        let identity = Identity {
            issuer: s.issuer.clone(),
            subject: s.subject.clone(),
            key_id: None,
            algorithm: String::new(),
            claims: s.claims.clone(),
        };
        let d = self.policy_obj.decide(Query {
            role: &s.role,
            identity: &identity,
            protocol,
            sql: &st.sql,
            function_oid: st.function_oid,
            prepared: &self.prepared,
            catalog: &gatehouse_decider::engine::NO_CATALOG,
        });
        for summary in &d.statements {
            if let Some((name, inner)) = &summary.prepares {
                self.prepared.insert(name.clone(), inner.clone());
            }
            match &summary.deallocates {
                Some(Some(name)) => {
                    self.prepared.remove(name);
                }
                Some(None) => self.prepared.clear(),
                None => {}
            }
        }
        if st.policy_version.is_none() {
            self.without_verdict += 1;
            return;
        }
        self.decided += 1;
        let now = d.verdict.name();
        let Some(kind) = change_kind(&st.verdict, now) else {
            self.unchanged += 1;
            return;
        };
        *self.changes.entry(kind.to_owned()).or_default() += 1;
        let was_rule = st.rule.clone().unwrap_or_else(|| "default deny".into());
        let now_rule = d.rule.clone().unwrap_or_else(|| "default deny".into());
        let key = (
            kind.to_owned(),
            s.subject.clone(),
            s.role.clone(),
            st.verdict.clone(),
            was_rule.clone(),
            now_rule.clone(),
        );
        match self.index.get(&key) {
            Some(&i) => self.groups[i].statements += 1,
            None if self.groups.len() < GROUPS_MAX => {
                self.index.insert(key, self.groups.len());
                self.groups.push(Group {
                    change: kind.to_owned(),
                    subject: s.subject.clone(),
                    role: s.role.clone(),
                    was: st.verdict.clone(),
                    was_rule,
                    now: now.to_owned(),
                    now_rule,
                    statements: 1,
                    example: shown_sql(&st.sql),
                    first: ts.to_owned(),
                });
            }
            None => self.other += 1,
        }
    }
}

#[derive(Serialize)]
struct Out<'a> {
    evidence: &'a Integrity,
    #[serde(flatten)]
    replay: &'a Replay,
}

/// Prints the replay.
pub fn print(out: &mut impl Write, i: &Integrity, r: &Replay, json: bool) -> Result<()> {
    if json {
        serde_json::to_writer_pretty(
            &mut *out,
            &Out {
                evidence: i,
                replay: r,
            },
        )?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "{}\n", i.sentence)?;
    writeln!(
        out,
        "Under policy {}: {} statements decided again, {} unchanged, {} would change.",
        r.policy,
        thousands(r.decided),
        thousands(r.unchanged),
        thousands(r.changed())
    )?;
    for (kind, n) in &r.changes {
        writeln!(out, "  {kind}: {}", thousands(*n))?;
    }
    if r.without_verdict > 0 {
        writeln!(
            out,
            "  ({} statements were recorded without a verdict and are not compared)",
            thousands(r.without_verdict)
        )?;
    }
    let mut groups: Vec<&Group> = r.groups.iter().collect();
    groups.sort_by(|a, b| (&a.change, &a.subject, &a.role).cmp(&(&b.change, &b.subject, &b.role)));
    let mut last = "";
    for g in groups {
        if g.change != last {
            writeln!(out, "\n{}:", g.change.to_uppercase())?;
            last = &g.change;
        }
        writeln!(
            out,
            "  {:>6}  {} as {}: {} ({}) -> {} ({}); e.g. {}",
            thousands(g.statements),
            g.subject,
            g.role,
            g.was,
            g.was_rule,
            g.now,
            g.now_rule,
            g.example
        )?;
    }
    if r.other > 0 {
        writeln!(
            out,
            "\n{} more changed statements in further groups",
            thousands(r.other)
        )?;
    }
    writeln!(
        out,
        "\nViews and functions are not looked up in the database here: a masked caller's statement over a view can be decided differently at run time."
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_change() {
        assert_eq!(change_kind("allow", "allow"), None);
        assert_eq!(change_kind("allow", "block"), Some("would now be blocked"));
        assert_eq!(change_kind("mask", "block"), Some("would now be blocked"));
        assert_eq!(change_kind("block", "allow"), Some("newly allowed"));
        assert_eq!(
            change_kind("block", "approve"),
            Some("newly allowed with approval")
        );
        assert_eq!(change_kind("allow", "mask"), Some("newly masked"));
        assert_eq!(change_kind("mask", "allow"), Some("no longer masked"));
        assert_eq!(
            change_kind("allow", "approve"),
            Some("would now need approval")
        );
        assert_eq!(
            change_kind("approve", "allow"),
            Some("no longer needs approval")
        );
    }
}
