//! `gatehouse policy check | explain | test | suggest | replay`: tools for policy
//! authors, usable in their own CI.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Subcommand;
use gatehouse_decider::{Policy, Query};
use gatehouse_schemas::{Identity, ProtocolKind};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// Policy subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file; errors name the line.
    Check {
        /// The policy file.
        file: PathBuf,
    },
    /// Show the verdict for one SQL text, the rule behind it, and what the
    /// statement was found to be (class, objects, functions, risks).
    Explain {
        /// The policy file.
        #[arg(long)]
        policy: PathBuf,
        /// The Gatehouse role.
        #[arg(long)]
        role: String,
        /// A JSON file with the caller's claims.
        #[arg(long, conflicts_with = "token", required_unless_present = "token")]
        claims: Option<PathBuf>,
        /// A token whose claims to use (read, not verified: this is an offline tool).
        #[arg(long)]
        token: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// The SQL text.
        sql: String,
    },
    /// Run a table of cases (TOML) and fail on any mismatch.
    Test {
        /// The cases file.
        file: PathBuf,
    },
    /// Learn least-privilege rules from evidence: the rules that would have
    /// allowed what ROLE actually ran (default: the last 30 days), written as
    /// OUT/policy.toml with OUT/policy.tests.toml, a `policy test` file of
    /// real cases.
    Suggest {
        /// The Gatehouse role.
        #[arg(long)]
        role: String,
        /// What to read.
        #[command(flatten)]
        scope: crate::audit::Scope,
        /// The current policy: its search_path, mask rules and data classes are kept.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// The directory to write into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Decide every recorded statement again under another policy (default:
    /// the last 7 days) and print what would change, by identity and rule.
    Replay {
        /// The policy to try.
        #[arg(long)]
        policy: PathBuf,
        /// What to read.
        #[command(flatten)]
        scope: crate::audit::Scope,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Exit 1 when a statement that ran would now be blocked.
        #[arg(long)]
        strict: bool,
    },
}

/// Runs a subcommand; returns the process exit code.
pub fn run(cmd: PolicyCommand) -> Result<i32> {
    match cmd {
        PolicyCommand::Check { file } => match Policy::load(&file) {
            Ok(p) => {
                println!(
                    "{}: ok, {} rules, version {}",
                    file.display(),
                    p.rules.len(),
                    p.version
                );
                Ok(0)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(1)
            }
        },
        PolicyCommand::Explain {
            policy,
            role,
            claims,
            token,
            json,
            sql,
        } => {
            let policy = Policy::load(&policy)?;
            let claims = match (claims, token) {
                (Some(path), _) => read_claims(&path)?,
                (None, Some(token)) => token_claims(&token)?,
                (None, None) => bail!("give --claims or --token"),
            };
            let identity = identity(claims);
            let prepared = BTreeMap::new();
            let e = policy.explain(Query {
                role: &role,
                identity: &identity,
                protocol: ProtocolKind::SimpleQuery,
                sql: &sql,
                function_oid: None,
                prepared: &prepared,
                catalog: &gatehouse_decider::engine::NO_CATALOG,
            });
            if json {
                let statements: Vec<Value> = e
                    .statements
                    .iter()
                    .map(|s| {
                        json!({
                            "verdict": s.verdict,
                            "rule": s.rule,
                            "applied": s.applied,
                            "analysis": s.analysis,
                        })
                    })
                    .collect();
                let out = json!({
                    "decision": e.decision,
                    "statements": statements,
                    "parse_error": e.parse_error,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print!("{}", render(&e));
            }
            Ok(0)
        }
        PolicyCommand::Test { file } => test(&file),
        PolicyCommand::Suggest {
            role,
            scope,
            policy,
            out,
        } => crate::audit::cli::suggest(
            &role,
            scope,
            policy.as_deref(),
            &out,
            &mut std::io::stdout().lock(),
        ),
        PolicyCommand::Replay {
            policy,
            scope,
            json,
            strict,
        } => crate::audit::cli::replay(&policy, scope, json, strict, &mut std::io::stdout().lock()),
    }
}

fn identity(claims: Map<String, Value>) -> Identity {
    let text = |k: &str| {
        claims
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Identity {
        issuer: text("iss"),
        subject: text("sub"),
        key_id: None,
        algorithm: "none (offline)".into(),
        claims,
    }
}

fn read_claims(path: &Path) -> Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    match serde_json::from_str(&text)? {
        Value::Object(m) => Ok(m),
        _ => bail!("{}: claims must be a JSON object", path.display()),
    }
}

pub(crate) fn token_claims(token: &str) -> Result<Map<String, Value>> {
    let payload = token.split('.').nth(1).context("not a JWT")?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .context("JWT payload is not base64url")?;
    match serde_json::from_slice(&bytes)? {
        Value::Object(m) => Ok(m),
        _ => bail!("JWT payload is not a JSON object"),
    }
}

/// A mask method with its parameters, for people.
fn method_text(m: &gatehouse_schemas::decision::MaskMethod) -> String {
    match m {
        gatehouse_schemas::decision::MaskMethod::Partial {
            keep_first,
            keep_last,
        } => format!("partial, keep first {keep_first} and last {keep_last}"),
        gatehouse_schemas::decision::MaskMethod::Detect { detectors } => {
            format!("detectors {}", detector_names(detectors))
        }
        other => other.name().to_owned(),
    }
}

fn detector_names(d: &[gatehouse_schemas::decision::Detector]) -> String {
    d.iter().map(|d| d.name()).collect::<Vec<_>>().join(", ")
}

fn render(e: &gatehouse_decider::Explanation) -> String {
    let mut out = String::new();
    let d = &e.decision;
    out.push_str(&format!(
        "verdict: {}{}\npolicy:  {}\n",
        d.verdict.name(),
        d.rule
            .as_ref()
            .map(|r| format!(" (rule {r})"))
            .unwrap_or_else(|| " (no rule: default deny)".into()),
        d.policy_version
    ));
    if let gatehouse_schemas::decision::Verdict::Block { reason }
    | gatehouse_schemas::decision::Verdict::Approve { reason, .. } = &d.verdict
    {
        out.push_str(&format!("reason:  {reason}\n"));
    }
    // A statement held for approval is masked too once it runs.
    if let Some((columns, outputs)) = d.verdict.masks() {
        for c in columns {
            out.push_str(&format!(
                "mask:    {} ({}) by rule {}{}\n",
                c.column,
                method_text(&c.method),
                c.rule,
                c.class
                    .as_ref()
                    .map(|k| format!(", class {k}"))
                    .unwrap_or_default()
            ));
        }
        for o in outputs {
            out.push_str(&format!(
                "masked:  statement {} output column {}: reads {} -> {}\n",
                o.statement + 1,
                o.position + 1,
                o.source,
                method_text(&o.method)
            ));
        }
        out.push_str(
            "         (any other result column whose table column matches is masked too, found by its table OID at run time)\n",
        );
        let detect = d.verdict.detectors();
        if !detect.is_empty() {
            out.push_str(&format!(
                "detect:  {} in every text output column (what they find is starred out)\n",
                detector_names(detect)
            ));
        }
    }
    if let Some(v) = &d.values {
        let params: Vec<String> = v
            .params
            .iter()
            .map(|p| format!("${} -> {} ({})", p.index, p.column, method_text(&p.method)))
            .collect();
        if !params.is_empty() {
            out.push_str(&format!(
                "values:  parameters sent towards masked columns, recorded masked: {}\n",
                params.join(", ")
            ));
        }
    }
    if !matches!(
        d.verdict,
        gatehouse_schemas::decision::Verdict::Block { .. }
    ) {
        // What the gateway checks in the upstream catalog before it runs.
        if !d.relations.is_empty() {
            out.push_str(&format!(
                "catalog: relations read through when they are views: {}\n",
                d.relations.join(", ")
            ));
        }
    }
    if !d.functions.is_empty() {
        // Whoever the caller: a function not built into PostgreSQL needs a
        // rule that names it (the verdict above takes these names for
        // PostgreSQL's own).
        let names: Vec<String> = d.functions.iter().map(ToString::to_string).collect();
        out.push_str(&format!(
            "catalog: looked up in pg_proc before it runs (a rule must name any not built into PostgreSQL): {}\n",
            names.join(", ")
        ));
    }
    if let Some(err) = &e.parse_error {
        out.push_str(&format!("unparsed: {err}\n"));
    }
    for (i, s) in e.statements.iter().enumerate() {
        out.push_str(&format!("statement {}: {}", i + 1, s.verdict.name()));
        if let Some(r) = &s.rule {
            out.push_str(&format!(" by {r}"));
        }
        out.push('\n');
        if let Some(a) = &s.analysis {
            let list = |v: Vec<String>| {
                if v.is_empty() {
                    "-".to_owned()
                } else {
                    v.join(", ")
                }
            };
            out.push_str(&format!("  class:     {}\n", a.class_names().join(", ")));
            out.push_str(&format!(
                "  reads:     {}\n",
                list(a.reads.iter().map(|o| o.to_string()).collect())
            ));
            out.push_str(&format!(
                "  writes:    {}\n",
                list(a.writes.iter().map(|o| o.to_string()).collect())
            ));
            out.push_str(&format!(
                "  functions: {}\n",
                list(a.functions.iter().cloned().collect())
            ));
            out.push_str(&format!(
                "  risks:     {}\n",
                list(
                    a.risks
                        .iter()
                        .filter_map(|r| serde_json::to_value(r).ok()?.as_str().map(str::to_owned))
                        .collect()
                )
            ));
            out.push_str(&format!("  rules applied: {}\n", list(s.applied.clone())));
        }
    }
    for hit in &d.shadow {
        out.push_str(&format!(
            "shadow rule {} would have: {}\n",
            hit.rule,
            hit.verdict.name()
        ));
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    /// The policy under test, relative to the cases file.
    policy: PathBuf,
    #[serde(default)]
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: Option<String>,
    role: String,
    #[serde(default)]
    claims: Map<String, Value>,
    sql: String,
    expect: String,
    rule: Option<String>,
}

fn test(file: &Path) -> Result<i32> {
    let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    let cases: CaseFile =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let policy = Policy::load(&base.join(&cases.policy))?;
    let (mut passed, mut failed) = (0, 0);
    let prepared = BTreeMap::new();
    for (i, case) in cases.cases.iter().enumerate() {
        let identity = identity(case.claims.clone());
        let d = policy.decide(Query {
            role: &case.role,
            identity: &identity,
            protocol: ProtocolKind::SimpleQuery,
            sql: &case.sql,
            function_oid: None,
            prepared: &prepared,
            catalog: &gatehouse_decider::engine::NO_CATALOG,
        });
        let name = case
            .name
            .clone()
            .unwrap_or_else(|| format!("case {}", i + 1));
        let verdict_ok = d.verdict.name() == case.expect;
        let rule_ok = case.rule.is_none() || case.rule == d.rule;
        if verdict_ok && rule_ok {
            passed += 1;
            println!("PASS {name}");
        } else {
            failed += 1;
            println!(
                "FAIL {name}: expected {}{}, got {}{}",
                case.expect,
                case.rule
                    .as_ref()
                    .map(|r| format!(" by {r}"))
                    .unwrap_or_default(),
                d.verdict.name(),
                d.rule
                    .as_ref()
                    .map(|r| format!(" by {r}"))
                    .unwrap_or_default(),
            );
        }
    }
    println!("policy test: {passed} passed, {failed} failed");
    Ok(if failed == 0 { 0 } else { 1 })
}
