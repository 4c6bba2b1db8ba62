//! Policy files: versioned TOML, a list of rules, each yielding one verdict.
//!
//! How a rule applies to a statement depends on what it yields. A permissive
//! rule (`allow`, `mask`) must cover *everything* the statement is and touches:
//! its class, every object it reads or writes, every risk feature it has, and
//! every function it may run that is not built into PostgreSQL or reads
//! relations chosen at run time (see [`crate::callees`]), unless the policy
//! trusts that function. A restrictive rule (`block`, `approve`) fires on *any*
//! match. So "allow reads of clinic.*" never lets a statement through that also
//! touches `hr.salaries`, and "block writes to hr.*" catches a CTE that deletes
//! from `hr.salaries` inside a SELECT.

use std::collections::BTreeSet;
use std::path::Path;

use gatehouse_schemas::decision::{Detector, MaskMethod};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use wildmatch::WildMatch;

use crate::analysis::{ObjectRef, Risk, StatementClass};
use crate::callees::FunctionPattern;
use crate::claims::ClaimConditions;

/// A policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    /// A label for people (`clinic-2026-11-22`); the version id adds a content hash.
    version: Option<String>,
    /// The schemas unqualified names resolve to, in order (see [`Policy::resolve`]).
    #[serde(default = "default_search_path")]
    search_path: Vec<String>,
    #[serde(default)]
    rules: Vec<Rule>,
    /// Data classes attached to columns, for mask rules that name a class.
    #[serde(default)]
    data_classes: Vec<DataClass>,
    /// Functions any rule may let a statement run without naming them
    /// (`pgcrypto.*`, `public.my_fn`): see [`Rule::functions`].
    #[serde(default)]
    trusted_functions: Vec<String>,
}

/// A data class (`pii.ssn`, `pci.pan`) and the columns that hold it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DataClass {
    /// The class name, dotted (`phi.diagnosis`).
    pub name: String,
    /// `schema.table.column` patterns (globs).
    pub columns: Vec<String>,
}

/// What a rule yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleVerdict {
    /// Let it through.
    Allow,
    /// Let it through with result columns masked.
    Mask,
    /// Hold it for a human.
    Approve,
    /// Refuse it.
    Block,
}

impl RuleVerdict {
    /// Whether the rule must cover the whole statement (see the module doc).
    pub fn is_permissive(self) -> bool {
        matches!(self, Self::Allow | Self::Mask)
    }
}

/// One masked column (or data class) of a `mask` rule.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MaskSpec {
    /// `schema.table.column` pattern (globs: `*.*.card_number`).
    pub column: Option<String>,
    /// A data class (globs: `phi.*`) from the policy's `[[data_classes]]`.
    pub class: Option<String>,
    /// `redact`, `null`, `partial`, `hash`, `email`.
    pub method: String,
    /// `partial`: characters kept at the start.
    #[serde(default)]
    pub keep_first: u32,
    /// `partial`: characters kept at the end.
    #[serde(default)]
    pub keep_last: u32,
    /// `hash` only: the column may be compared for equality with another column
    /// (equality joins, `GROUP BY`, `DISTINCT`): equal hashes already show that.
    #[serde(default)]
    pub allow_equality: bool,
}

impl MaskSpec {
    /// The method with its parameters, or why it is not one.
    pub fn method(&self) -> Result<MaskMethod, String> {
        let m = match self.method.as_str() {
            "redact" => MaskMethod::Redact,
            "null" => MaskMethod::Null,
            "partial" => MaskMethod::Partial {
                keep_first: self.keep_first,
                keep_last: self.keep_last,
            },
            "hash" => MaskMethod::Hash,
            "email" => MaskMethod::Email,
            other => {
                return Err(format!(
                    "unknown mask method {other:?} (redact, null, partial, hash, email)"
                ));
            }
        };
        if !matches!(m, MaskMethod::Partial { .. }) && (self.keep_first > 0 || self.keep_last > 0) {
            return Err("keep_first/keep_last only make sense with method = \"partial\"".into());
        }
        if self.allow_equality && m != MaskMethod::Hash {
            return Err("allow_equality only makes sense with method = \"hash\"".into());
        }
        Ok(m)
    }
}

/// A masked column pattern, compiled: what a mask rule masks once its data
/// classes are expanded.
#[derive(Debug, Clone)]
pub struct MaskTarget {
    /// The `schema.table.column` pattern as written (or from the class).
    pub pattern: String,
    pub(crate) table: ObjectPattern,
    pub(crate) column: WildMatch,
    /// How.
    pub method: MaskMethod,
    /// The class the rule named.
    pub class: Option<String>,
    /// See [`MaskSpec::allow_equality`].
    pub allow_equality: bool,
}

impl MaskTarget {
    /// Whether the column `column` of table `table` is masked by this target.
    pub(crate) fn matches(&self, table: &ObjectRef, column: &str) -> bool {
        self.column.matches(column) && self.table.matches(table)
    }

    /// Whether some column of `table` may be masked by this target.
    pub(crate) fn may_match_table(&self, table: &ObjectRef) -> bool {
        self.table.matches(table)
    }
}

/// A rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique id, named in verdicts, errors and evidence.
    pub id: String,
    /// For people.
    pub description: Option<String>,
    /// Gatehouse roles it applies to (globs); empty: every role.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Conditions on the caller's claims; all must hold.
    #[serde(default)]
    pub claims: ClaimConditions,
    /// Statement classes; empty: any class.
    #[serde(default)]
    pub classes: Vec<StatementClass>,
    /// Patterns (`schema.table`, globs; `patients` means `*.patients`) for the
    /// objects read or written.
    #[serde(default)]
    pub objects: Vec<String>,
    /// Patterns for the objects read.
    #[serde(default)]
    pub reads: Vec<String>,
    /// Patterns for the objects written.
    #[serde(default)]
    pub writes: Vec<String>,
    /// Functions (`name` in any schema, or `schema.name`; globs). Permissive
    /// rules: the functions the rule lets a statement run that are not built
    /// into PostgreSQL, or read relations chosen at run time; a statement
    /// that may run one no pattern (nor the policy's `trusted_functions`)
    /// matches is not covered. Built-in functions need no naming.
    /// Restrictive rules: any function the statement calls. `oid:1234` names
    /// a function for the legacy `FunctionCall` message.
    #[serde(default)]
    pub functions: Vec<String>,
    /// Risk features. Permissive rules: the statement's risks must all be listed
    /// (none listed: the rule covers no risky statement). Restrictive rules: any.
    #[serde(default)]
    pub risks: Vec<Risk>,
    /// What the rule yields.
    pub verdict: RuleVerdict,
    /// Why (required for `block` and `approve`; shown to the client).
    pub reason: Option<String>,
    /// Approver group (required for `approve`).
    pub approvers: Option<String>,
    /// Masked columns (`mask` rules need these or `detectors`).
    #[serde(default)]
    pub mask: Vec<MaskSpec>,
    /// `mask` rules: content detectors (`ssn`, `pan`, `email`, `phone`) that
    /// star out what they find inside text output values, as defence in depth
    /// beside the masked columns.
    #[serde(default)]
    pub detectors: Vec<Detector>,
    /// `schema.table.column` patterns (globs) whose text values the detectors
    /// scan; empty: every text output column of the statements the rule masks.
    #[serde(default)]
    pub detect_columns: Vec<String>,
    /// `mask` rules: callers whose claims meet all of these (a need-to-know
    /// group) see the values; the rule then yields `allow`.
    #[serde(default)]
    pub exempt: ClaimConditions,
    /// `false`: a shadow rule, recorded but not enforced.
    #[serde(default = "yes")]
    pub enforce: bool,
    /// This rule may allow SQL the parser cannot read (role and claims still apply).
    #[serde(default)]
    pub allow_unparsed: bool,
}

fn yes() -> bool {
    true
}

fn default_search_path() -> Vec<String> {
    vec!["public".into()]
}

/// A policy failed to load.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Reading the file failed.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax or shape, with line and column.
    #[error("{origin}: {message}")]
    Parse {
        /// The file.
        origin: String,
        /// The parser's message (it carries line and column).
        message: String,
    },
    /// A rule that cannot work as written.
    #[error("{origin}: rule {rule:?} (line {line}): {message}")]
    Invalid {
        /// The file.
        origin: String,
        /// The rule id.
        rule: String,
        /// Line of the rule's `id`.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// A compiled pattern on `schema.name`.
#[derive(Debug, Clone)]
pub(crate) struct ObjectPattern {
    schema: WildMatch,
    /// `*.name`: also matches a name whose schema could not be resolved.
    schema_is_any: bool,
    name: WildMatch,
}

impl ObjectPattern {
    fn new(p: &str) -> Self {
        let (schema, name) = p.rsplit_once('.').unwrap_or(("*", p));
        Self {
            schema: WildMatch::new(schema),
            schema_is_any: schema == "*",
            name: WildMatch::new(name),
        }
    }

    /// Whether `obj` (resolved: see [`Policy::resolve`]) is matched.
    pub(crate) fn matches(&self, obj: &ObjectRef) -> bool {
        self.name.matches(&obj.name)
            && match &obj.schema {
                Some(s) => self.schema.matches(s),
                None => self.schema_is_any,
            }
    }
}

/// A rule ready for matching.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// As written.
    pub rule: Rule,
    pub(crate) roles: Vec<WildMatch>,
    pub(crate) objects: Vec<ObjectPattern>,
    pub(crate) reads: Vec<ObjectPattern>,
    pub(crate) writes: Vec<ObjectPattern>,
    pub(crate) functions: Vec<FunctionPattern>,
    /// `mask` rules: the columns masked, data classes expanded.
    pub masks: Vec<MaskTarget>,
    /// `mask` rules: the columns its detectors scan (`detect_columns`), each
    /// with method [`MaskMethod::Detect`].
    pub detect: Vec<MaskTarget>,
}

/// A loaded policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `label-hash`: appears in every verdict.
    pub version: String,
    /// Rules in file order.
    pub rules: Vec<CompiledRule>,
    /// Claim paths any rule looks at: an identity's values for these are its class.
    pub claim_paths: BTreeSet<String>,
    /// Where unqualified names resolve.
    pub search_path: Vec<String>,
    /// Functions no rule needs to name (`trusted_functions`).
    pub trusted_functions: Vec<FunctionPattern>,
}

impl Policy {
    /// Loads a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses policy text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Parse {
            origin: origin.into(),
            message: e.to_string(),
        })?;
        let digest = Sha256::digest(text.as_bytes());
        let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        let version = format!("{}-{hash}", file.version.as_deref().unwrap_or("policy"));
        let mut seen = BTreeSet::new();
        let mut rules = Vec::with_capacity(file.rules.len());
        let mut claim_paths = BTreeSet::new();
        for rule in file.rules {
            let invalid = |message: &str| PolicyError::Invalid {
                origin: origin.into(),
                rule: rule.id.clone(),
                line: line_of(text, &rule.id),
                message: message.into(),
            };
            if rule.id.is_empty() {
                return Err(invalid("id must not be empty"));
            }
            if !seen.insert(rule.id.clone()) {
                return Err(invalid("duplicate rule id"));
            }
            match rule.verdict {
                RuleVerdict::Block if rule.reason.is_none() => {
                    return Err(invalid("a block rule needs a reason (the client reads it)"));
                }
                RuleVerdict::Approve if rule.reason.is_none() || rule.approvers.is_none() => {
                    return Err(invalid("an approve rule needs a reason and approvers"));
                }
                RuleVerdict::Mask if rule.mask.is_empty() && rule.detectors.is_empty() => {
                    return Err(invalid(
                        "a mask rule needs at least one [[rules.mask]] column or detectors",
                    ));
                }
                _ => {}
            }
            if rule.verdict != RuleVerdict::Mask && !rule.mask.is_empty() {
                return Err(invalid(
                    "mask columns only make sense with verdict = \"mask\"",
                ));
            }
            if (!rule.detectors.is_empty() || !rule.detect_columns.is_empty())
                && rule.verdict != RuleVerdict::Mask
            {
                return Err(invalid("detectors only make sense with verdict = \"mask\""));
            }
            if !rule.detect_columns.is_empty() && rule.detectors.is_empty() {
                return Err(invalid("detect_columns needs detectors"));
            }
            if rule.allow_unparsed && rule.verdict != RuleVerdict::Allow {
                return Err(invalid("allow_unparsed needs verdict = \"allow\""));
            }
            if !rule.exempt.is_empty() && rule.verdict != RuleVerdict::Mask {
                return Err(invalid("exempt only makes sense with verdict = \"mask\""));
            }
            let masks = mask_targets(&rule.mask, &file.data_classes).map_err(|m| invalid(&m))?;
            let mut detectors = rule.detectors.clone();
            detectors.sort();
            detectors.dedup();
            let detect = rule
                .detect_columns
                .iter()
                .map(|c| {
                    column_target(
                        c,
                        None,
                        MaskMethod::Detect {
                            detectors: detectors.clone(),
                        },
                        false,
                    )
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|m| invalid(&m))?;
            claim_paths.extend(rule.claims.keys().cloned());
            claim_paths.extend(rule.exempt.keys().cloned());
            let pats = |v: &[String]| v.iter().map(|p| ObjectPattern::new(p)).collect();
            let functions = rule
                .functions
                .iter()
                .map(|f| FunctionPattern::parse(f))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|m| invalid(&m))?;
            rules.push(CompiledRule {
                roles: rule.roles.iter().map(|r| WildMatch::new(r)).collect(),
                objects: pats(&rule.objects),
                reads: pats(&rule.reads),
                writes: pats(&rule.writes),
                functions,
                masks,
                detect,
                rule,
            });
        }
        if file.search_path.is_empty() {
            return Err(PolicyError::Parse {
                origin: origin.into(),
                message: "search_path must name at least one schema".into(),
            });
        }
        let trusted_functions = file
            .trusted_functions
            .iter()
            .map(|f| FunctionPattern::parse(f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| PolicyError::Parse {
                origin: origin.into(),
                message: format!("trusted_functions: {message}"),
            })?;
        Ok(Policy {
            version,
            rules,
            claim_paths,
            search_path: file.search_path,
            trusted_functions,
        })
    }

    /// Resolves an unqualified name the way the session does: `pg_catalog` is
    /// searched first (PostgreSQL puts it there implicitly), so a `pg_` name is a
    /// catalog's; anything else lands in the first schema of the policy's
    /// `search_path`. This holds because changing the search_path is itself a
    /// risk feature (`search_path_change`) that permissive rules must name, and
    /// the policy's `search_path` must match the upstream role's setting.
    pub fn resolve(&self, obj: &ObjectRef) -> ObjectRef {
        match &obj.schema {
            Some(_) => obj.clone(),
            None if obj.name.starts_with("pg_") => ObjectRef {
                schema: Some("pg_catalog".into()),
                name: obj.name.clone(),
            },
            None => ObjectRef {
                schema: self.search_path.first().cloned(),
                name: obj.name.clone(),
            },
        }
    }
}

/// A mask rule's columns, data classes expanded into their column patterns.
fn mask_targets(specs: &[MaskSpec], classes: &[DataClass]) -> Result<Vec<MaskTarget>, String> {
    let mut out = Vec::new();
    for spec in specs {
        let method = spec.method()?;
        let mut patterns: Vec<(String, Option<String>)> = Vec::new();
        match (&spec.column, &spec.class) {
            (Some(c), None) => patterns.push((c.clone(), None)),
            (None, Some(class)) => {
                let glob = WildMatch::new(class);
                for dc in classes.iter().filter(|dc| glob.matches(&dc.name)) {
                    patterns.extend(
                        dc.columns
                            .iter()
                            .map(|c| (c.clone(), Some(dc.name.clone()))),
                    );
                }
                if patterns.is_empty() {
                    return Err(format!(
                        "mask class {class:?} names no [[data_classes]] entry with columns"
                    ));
                }
            }
            _ => return Err("a [[rules.mask]] entry names exactly one of column or class".into()),
        }
        for (pattern, class) in patterns {
            out.push(column_target(
                &pattern,
                class,
                method.clone(),
                spec.allow_equality,
            )?);
        }
    }
    Ok(out)
}

/// One `schema.table.column` pattern, compiled.
fn column_target(
    pattern: &str,
    class: Option<String>,
    method: MaskMethod,
    allow_equality: bool,
) -> Result<MaskTarget, String> {
    let parts: Vec<&str> = pattern.split('.').collect();
    let [schema, table, column] = parts[..] else {
        return Err(format!(
            "mask column {pattern:?} must be schema.table.column (globs allowed: *.*.ssn)"
        ));
    };
    Ok(MaskTarget {
        table: ObjectPattern::new(&format!("{schema}.{table}")),
        column: WildMatch::new(&column.to_lowercase()),
        pattern: pattern.to_owned(),
        method,
        class,
        allow_equality,
    })
}

/// The line where `id = "<id>"` appears, for error messages.
fn line_of(text: &str, id: &str) -> usize {
    let needle = format!("\"{id}\"");
    text.lines()
        .position(|l| l.trim_start().starts_with("id") && l.contains(&needle))
        .map_or(0, |i| i + 1)
}
