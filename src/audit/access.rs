//! `gatehouse access review` (AC-2): per identity and role, first and last use,
//! sessions, statements by class and refusals; roles nobody assumed,
//! identities not seen lately, and rules that allowed nothing (least-privilege
//! candidates).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use gatehouse_decider::Policy;
use serde::Serialize;

use super::facts::Facts;
use super::integrity::{Integrity, thousands};

/// One identity's use of one role.
#[derive(Debug, Clone, Serialize)]
pub struct Access {
    /// `sub`.
    pub subject: String,
    /// `iss`.
    pub issuer: String,
    /// The role.
    pub role: String,
    /// Sessions.
    pub sessions: u64,
    /// First session.
    pub first_use: String,
    /// Last session.
    pub last_use: String,
    /// Decided statements by class.
    pub statements: BTreeMap<String, u64>,
    /// Of which refused.
    pub refused: u64,
    /// Changes that ran.
    pub changes: u64,
    /// CI repositories.
    pub repositories: Vec<String>,
    /// Not seen in the last `--inactive` days of the period.
    pub inactive: bool,
}

/// A rule that decided nothing.
#[derive(Debug, Clone, Serialize)]
pub struct UnusedRule {
    /// Its id.
    pub id: String,
    /// What it yields.
    pub verdict: String,
    /// The roles it names (empty: all).
    pub roles: Vec<String>,
    /// Its description.
    pub description: Option<String>,
}

/// The review.
#[derive(Debug, Serialize)]
pub struct Review {
    /// Verification first.
    pub evidence: Integrity,
    /// Per identity and role.
    pub access: Vec<Access>,
    /// Roles the gateway config defines that nobody assumed (with `--config`).
    pub roles_never_assumed: Option<Vec<String>>,
    /// The inactivity bound, days.
    pub inactive_days: u64,
    /// Enforced rules of the policy (with `--policy` or `--config`) that decided no statement.
    pub rules_never_used: Option<Vec<UnusedRule>>,
    /// The policy read.
    pub policy: Option<String>,
}

/// Roles and policy path of a gateway config, read without validating the rest.
pub fn config_roles(path: &Path) -> Result<(Vec<String>, Option<PathBuf>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let v: toml::Table = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let roles = v
        .get("roles")
        .and_then(|r| r.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default();
    let policy = v
        .get("decider")
        .and_then(|d| d.get("policy"))
        .and_then(|p| p.as_str())
        .map(|p| {
            let p = PathBuf::from(p);
            if p.is_relative() {
                path.parent().unwrap_or(Path::new(".")).join(p)
            } else {
                p
            }
        });
    Ok((roles, policy))
}

/// Builds the review from what a scan counted.
pub fn review(
    evidence: Integrity,
    facts: &Facts,
    until: SystemTime,
    inactive: Duration,
    config: Option<&Path>,
    policy: Option<&Path>,
) -> Result<Review> {
    let cutoff = humantime::format_rfc3339_micros(until - inactive).to_string();
    let mut access = Vec::new();
    for (who, roles) in &facts.identities {
        for (role, u) in roles {
            access.push(Access {
                subject: who.subject.clone(),
                issuer: who.issuer.clone(),
                role: role.clone(),
                sessions: u.sessions,
                first_use: u.first.clone(),
                last_use: u.last.clone(),
                statements: u.classes.clone(),
                refused: u.refused,
                changes: u.changes,
                repositories: u.repositories.iter().cloned().collect(),
                inactive: u.last < cutoff,
            });
        }
    }
    let seen: BTreeSet<&str> = access.iter().map(|a| a.role.as_str()).collect();
    let (roles_never_assumed, config_policy) = match config {
        Some(c) => {
            let (roles, p) = config_roles(c)?;
            (
                Some(
                    roles
                        .into_iter()
                        .filter(|r| !seen.contains(r.as_str()))
                        .collect(),
                ),
                p,
            )
        }
        None => (None, None),
    };
    let policy_path = policy.map(Path::to_owned).or(config_policy);
    let rules_never_used = match &policy_path {
        Some(p) => {
            let policy = Policy::load(p)?;
            Some(
                policy
                    .rules
                    .iter()
                    .filter(|r| r.rule.enforce && !facts.rules.contains_key(&r.rule.id))
                    .map(|r| UnusedRule {
                        id: r.rule.id.clone(),
                        verdict: format!("{:?}", r.rule.verdict).to_lowercase(),
                        roles: r.rule.roles.clone(),
                        description: r.rule.description.clone(),
                    })
                    .collect(),
            )
        }
        None => None,
    };
    Ok(Review {
        evidence,
        access,
        roles_never_assumed,
        inactive_days: inactive.as_secs() / 86_400,
        rules_never_used,
        policy: policy_path.map(|p| p.display().to_string()),
    })
}

/// Prints the review.
pub fn print(out: &mut impl Write, r: &Review, json: bool) -> Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, r)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "{}\n", r.evidence.sentence)?;
    writeln!(
        out,
        "{:<44} {:<14} {:>8} {:<27} {:<27} {:>8} {:>7}  STATEMENTS BY CLASS",
        "IDENTITY", "ROLE", "SESSIONS", "FIRST USE", "LAST USE", "REFUSED", "CHANGES"
    )?;
    for a in &r.access {
        let classes: Vec<String> = a
            .statements
            .iter()
            .map(|(k, v)| format!("{k} {}", thousands(*v)))
            .collect();
        writeln!(
            out,
            "{:<44} {:<14} {:>8} {:<27} {:<27} {:>8} {:>7}  {}{}",
            a.subject,
            a.role,
            thousands(a.sessions),
            a.first_use,
            a.last_use,
            thousands(a.refused),
            thousands(a.changes),
            classes.join(", "),
            if a.inactive { "  (inactive)" } else { "" }
        )?;
    }
    let inactive: Vec<&Access> = r.access.iter().filter(|a| a.inactive).collect();
    writeln!(
        out,
        "\nIdentities not seen in the last {} days: {}",
        r.inactive_days,
        if inactive.is_empty() {
            "none".to_owned()
        } else {
            inactive
                .iter()
                .map(|a| format!("{} (role {}, last {})", a.subject, a.role, a.last_use))
                .collect::<Vec<_>>()
                .join("; ")
        }
    )?;
    match &r.roles_never_assumed {
        Some(v) if v.is_empty() => writeln!(out, "Roles nobody assumed: none")?,
        Some(v) => writeln!(out, "Roles nobody assumed: {}", v.join(", "))?,
        None => writeln!(
            out,
            "Roles nobody assumed: (give --config to compare with the roles defined)"
        )?,
    }
    match &r.rules_never_used {
        Some(v) if v.is_empty() => writeln!(out, "Rules that decided nothing: none")?,
        Some(v) => {
            writeln!(
                out,
                "Rules that decided nothing (least-privilege candidates):"
            )?;
            for u in v {
                writeln!(
                    out,
                    "  {} ({}{}){}",
                    u.id,
                    u.verdict,
                    if u.roles.is_empty() {
                        String::new()
                    } else {
                        format!(", roles {}", u.roles.join(", "))
                    },
                    u.description
                        .as_ref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                )?;
            }
        }
        None => writeln!(
            out,
            "Rules that decided nothing: (give --policy or --config)"
        )?,
    }
    Ok(())
}
