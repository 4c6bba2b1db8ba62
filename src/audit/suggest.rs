//! `gatehouse policy suggest --role R`: the least-privilege rules that would
//! have allowed what a role actually ran (classes, objects, functions, risks,
//! and who ran it), as a policy file and a `policy test` file of real cases.
//!
//! What ran under an approval is suggested as an `approve` rule for the same
//! approvers. Masked reads keep their masks: the current policy's mask rules
//! and data classes are carried over (`--policy`), and without it a role with
//! masked reads gets no suggestion (an allow rule alone would unmask them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use gatehouse_decider::{Analysis, ObjectRef, Policy, PreparedOp, Query, StatementClass};
use gatehouse_schemas::evidence::{ApprovalEvent, Statement, StatementCompleted};
use gatehouse_schemas::{Identity, ProtocolKind};
use serde_json::{Map, Value};

use super::events::{Answer, SessionInfo};

/// Real cases kept per suggested rule.
pub const CASES_PER_RULE: usize = 5;

/// Statements grouped by what a rule must say about them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    class: StatementClass,
    risks: Vec<String>,
    /// The approver group, for what ran under an approval.
    approvers: Option<String>,
}

#[derive(Debug, Default)]
struct Group {
    statements: u64,
    reads: BTreeSet<String>,
    writes: BTreeSet<String>,
    functions: BTreeSet<String>,
    subjects: BTreeSet<String>,
    /// Distinct fingerprints: the text and its caller's claims.
    cases: BTreeMap<String, (String, Map<String, Value>)>,
}

/// The answer: what one role ran.
#[derive(Debug)]
pub struct Suggest {
    role: String,
    search_path: Vec<String>,
    groups: BTreeMap<Key, Group>,
    /// Runs of the role read.
    pub runs: u64,
    /// Of which ran with masked results.
    pub masked: u64,
    /// Texts the analyser could not read (an unparsed statement needs a rule of its own).
    pub unparsed: Vec<String>,
    /// Approval request to approver group, per session.
    approvers: BTreeMap<String, String>,
    sessions: BTreeSet<String>,
}

impl Suggest {
    /// For `role`, resolving unqualified names through `search_path`.
    pub fn new(role: &str, search_path: Vec<String>) -> Self {
        Self {
            role: role.to_owned(),
            search_path,
            groups: BTreeMap::new(),
            runs: 0,
            masked: 0,
            unparsed: Vec::new(),
            approvers: BTreeMap::new(),
            sessions: BTreeSet::new(),
        }
    }

    fn resolve(&self, o: &ObjectRef) -> String {
        match &o.schema {
            Some(s) => format!("{s}.{}", o.name),
            None if o.name.starts_with("pg_") => format!("pg_catalog.{}", o.name),
            None => format!(
                "{}.{}",
                self.search_path.first().map_or("public", String::as_str),
                o.name
            ),
        }
    }
}

impl Answer for Suggest {
    fn approval(&mut self, _s: &SessionInfo, _ts: &str, a: &ApprovalEvent) {
        self.approvers
            .insert(a.request.clone(), a.approvers.clone());
    }

    fn run(
        &mut self,
        s: &SessionInfo,
        _seq: u64,
        _ts: &str,
        st: &Statement,
        _done: Option<&StatementCompleted>,
    ) {
        if s.role != self.role || st.function_oid.is_some() {
            return;
        }
        self.runs += 1;
        self.sessions.insert(s.id.to_string());
        if st.verdict == "mask" {
            self.masked += 1;
        }
        let approvers = st.approval.as_ref().map(|id| {
            self.approvers
                .get(id)
                .cloned()
                .unwrap_or_else(|| "?".into())
        });
        let statements = match gatehouse_decider::analyze(&st.sql) {
            Analysis::Parsed { statements } => statements,
            Analysis::Unparsed { .. } => {
                if self.unparsed.len() < 20 {
                    self.unparsed.push(st.sql.clone());
                }
                return;
            }
        };
        for a in statements {
            if matches!(a.prepared, Some(PreparedOp::Execute { .. })) {
                // Decided as the statement it runs, suggested from its PREPARE.
                continue;
            }
            let key = Key {
                class: a.class,
                risks: a
                    .risks
                    .iter()
                    .filter_map(|r| serde_json::to_value(r).ok()?.as_str().map(str::to_owned))
                    .collect(),
                approvers: approvers.clone(),
            };
            let reads: Vec<String> = a.reads.iter().map(|o| self.resolve(o)).collect();
            let writes: Vec<String> = a.writes.iter().map(|o| self.resolve(o)).collect();
            let g = self.groups.entry(key).or_default();
            g.statements += 1;
            g.reads.extend(reads);
            g.writes.extend(writes);
            g.functions.extend(a.functions.iter().cloned());
            g.subjects.insert(s.subject.clone());
            if g.cases.len() < CASES_PER_RULE && !g.cases.contains_key(&a.fingerprint) {
                let mut claims = s.claims.clone();
                claims.insert("sub".into(), Value::String(s.subject.clone()));
                claims.insert("iss".into(), Value::String(s.issuer.clone()));
                g.cases
                    .insert(a.fingerprint.clone(), (st.sql.clone(), claims));
            }
        }
    }
}

fn toml_list(v: &BTreeSet<String>) -> String {
    let items: Vec<String> = v.iter().map(|s| toml_str(s)).collect();
    format!("[{}]", items.join(", "))
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn class_name(c: StatementClass) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// What `policy suggest` writes.
#[derive(Debug)]
pub struct Suggestion {
    /// The policy file.
    pub policy: String,
    /// The `policy test` file (its `policy` is `policy_name`, beside it).
    pub tests: String,
    /// Rules suggested.
    pub rules: usize,
    /// Cases written, and how many of them the suggested policy decides as recorded.
    pub cases: usize,
    /// Cases the suggested policy does not decide as expected (should be none).
    pub failing: Vec<String>,
}

/// Mask rules and data classes of the current policy, as TOML text.
fn carried_over(current: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(current).with_context(|| format!("read {}", current.display()))?;
    let v: toml::Table = toml::from_str(&text).with_context(|| current.display().to_string())?;
    let mut out = toml::Table::new();
    if let Some(classes) = v.get("data_classes") {
        out.insert("data_classes".into(), classes.clone());
    }
    let masks: Vec<toml::Value> = v
        .get("rules")
        .and_then(|r| r.as_array())
        .map(|rules| {
            rules
                .iter()
                .filter(|r| r.get("verdict").and_then(|v| v.as_str()) == Some("mask"))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if !masks.is_empty() {
        out.insert("rules".into(), toml::Value::Array(masks));
    }
    Ok(toml::to_string(&out)?)
}

impl Suggest {
    /// Writes the suggestion; `header` says where it was learnt from.
    pub fn finish(
        &self,
        header: &str,
        current: Option<&Path>,
        policy_name: &str,
    ) -> Result<Suggestion> {
        if self.masked > 0 && current.is_none() {
            bail!(
                "{} statements of role {} ran with masked results: give --policy with the current policy, so that the suggestion keeps its mask rules (allow rules alone would unmask them)",
                self.masked,
                self.role
            );
        }
        let mut p = String::new();
        for line in header.lines() {
            p.push_str(&format!("# {line}\n"));
        }
        p.push_str(&format!(
            "version = {}\nsearch_path = {}\n\n",
            toml_str(&format!("suggested-{}", self.role)),
            toml_list(&self.search_path.iter().cloned().collect())
        ));
        let mut t = format!(
            "# Real cases from the evidence: `gatehouse policy test` on this file.\npolicy = {}\n\n",
            toml_str(policy_name)
        );
        let mut cases = Vec::new();
        let mut per_class: BTreeMap<String, usize> = BTreeMap::new();
        for (key, g) in &self.groups {
            let class = class_name(key.class);
            let n = per_class.entry(class.clone()).or_default();
            *n += 1;
            let id = format!(
                "{}-{class}{}{}",
                self.role,
                if key.approvers.is_some() {
                    "-approved"
                } else {
                    ""
                },
                if *n > 1 {
                    format!("-{n}")
                } else {
                    String::new()
                }
            );
            let objects: BTreeSet<String> = g.reads.union(&g.writes).cloned().collect();
            p.push_str(&format!(
                "# {} statements by {} identities.\n[[rules]]\nid = {}\nroles = [{}]\nclaims = {{ sub = {{ one_of = {} }} }}\nclasses = [{}]\n",
                g.statements,
                g.subjects.len(),
                toml_str(&id),
                toml_str(&self.role),
                toml_list(&g.subjects),
                toml_str(&class)
            ));
            if objects.is_empty() {
                p.push_str("# They touch no table: \"(none)\" names no object, so the rule allows only statements that touch none.\nobjects = [\"(none)\"]\n");
            } else {
                p.push_str(&format!("objects = {}\n", toml_list(&objects)));
                if !g.reads.is_empty() {
                    p.push_str(&format!("reads = {}\n", toml_list(&g.reads)));
                }
                if !g.writes.is_empty() {
                    p.push_str(&format!("writes = {}\n", toml_list(&g.writes)));
                }
            }
            if !g.functions.is_empty() {
                p.push_str(&format!("functions = {}\n", toml_list(&g.functions)));
            }
            if !key.risks.is_empty() {
                p.push_str(&format!(
                    "risks = {}\n",
                    toml_list(&key.risks.iter().cloned().collect())
                ));
            }
            let expect = match &key.approvers {
                Some(group) => {
                    p.push_str(&format!(
                        "verdict = \"approve\"\nreason = {}\napprovers = {}\n\n",
                        toml_str(&format!(
                            "{class} statements of role {} ran only under an approval",
                            self.role
                        )),
                        toml_str(group)
                    ));
                    "approve"
                }
                None => {
                    p.push_str("verdict = \"allow\"\n\n");
                    "allow"
                }
            };
            for (sql, claims) in g.cases.values() {
                cases.push((id.clone(), expect, sql.clone(), claims.clone()));
            }
        }
        if let Some(current) = current {
            let carried = carried_over(current)?;
            if !carried.trim().is_empty() {
                p.push_str(&format!(
                    "# Carried over from {}: its mask rules and data classes.\n{carried}",
                    current.display()
                ));
            }
        }
        let policy = Policy::parse(&p, "the suggested policy")
            .context("the suggested policy does not load (a bug: please report it)")?;
        let mut failing = Vec::new();
        let prepared = BTreeMap::new();
        for (i, (rule, expect, sql, all_claims)) in cases.iter().enumerate() {
            // The claims the policy looks at, and who the caller is.
            let claims: Map<String, Value> = all_claims
                .iter()
                .filter(|(k, v)| {
                    !v.is_null()
                        && (k.as_str() == "sub"
                            || k.as_str() == "iss"
                            || policy.claim_paths.contains(*k))
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let text = |k: &str| {
                claims
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let identity = Identity {
                issuer: text("iss"),
                subject: text("sub"),
                key_id: None,
                algorithm: "none (offline)".into(),
                claims: claims.clone(),
            };
            let d = policy.decide(Query {
                role: &self.role,
                identity: &identity,
                protocol: ProtocolKind::SimpleQuery,
                sql,
                function_oid: None,
                prepared: &prepared,
                catalog: &gatehouse_decider::engine::NO_CATALOG,
            });
            // A masked caller's allowed statement is masked: that is the case's verdict.
            let expect = if *expect == "allow" && d.verdict.name() == "mask" {
                "mask"
            } else {
                expect
            };
            let expected_rule = (expect != "mask").then_some(rule.as_str());
            if d.verdict.name() != expect
                || (expected_rule.is_some() && d.rule.as_deref() != expected_rule)
            {
                failing.push(format!(
                    "{sql}: expected {expect} by {rule}, the suggested policy says {} by {}",
                    d.verdict.name(),
                    d.rule.as_deref().unwrap_or("default deny")
                ));
                continue;
            }
            let claims_toml =
                toml::Value::try_from(Value::Object(claims)).context("claims as TOML")?;
            t.push_str(&format!(
                "[[cases]]\nname = {}\nrole = {}\nclaims = {claims_toml}\nsql = {}\nexpect = {}\n",
                toml_str(&format!("{rule} #{}", i + 1)),
                toml_str(&self.role),
                toml_str(sql),
                toml_str(expect)
            ));
            if let Some(r) = expected_rule {
                t.push_str(&format!("rule = {}\n", toml_str(r)));
            }
            t.push('\n');
        }
        Ok(Suggestion {
            policy: p,
            tests: t,
            rules: self.groups.len(),
            cases: cases.len() - failing.len(),
            failing,
        })
    }

    /// Sessions of the role read.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }
}
