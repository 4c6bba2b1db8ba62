//! Decides: analyses a request's SQL and matches each statement against the
//! policy. Default deny: no applicable enforcing rule means block.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::rc::Rc;

use gatehouse_schemas::decision::{
    CallName, CatalogFacts, Decision, DecisionRequest, Detector, MaskColumn, MaskOutput, ShadowHit,
    StatementSummary, ValueMasks, Verdict,
};
use gatehouse_schemas::{Identity, ProtocolKind, SCHEMA_VERSION};

use crate::analysis::{Analysis, PreparedOp, StatementAnalysis, StatementClass};
use crate::callees::{Callees, RuleCalls};
use crate::claims::{all_match, lookup};
use crate::classify::{analyze, analyze_parsed};
use crate::lineage::Views;
use crate::parsed::Parsed;
use crate::policy::{CompiledRule, MaskTarget, ObjectPattern, Policy, RuleVerdict};

mod mask;

/// A statement to decide, borrowed from the session that holds it.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// The session's Gatehouse role.
    pub role: &'a str,
    /// The caller.
    pub identity: &'a Identity,
    /// Which message carried the SQL.
    pub protocol: ProtocolKind,
    /// The SQL text.
    pub sql: &'a str,
    /// The OID of a `FunctionCall`.
    pub function_oid: Option<u32>,
    /// The session's SQL-prepared statements: name to inner SQL.
    pub prepared: &'a BTreeMap<String, String>,
    /// What the ingress looked up in the upstream catalog (see
    /// [`CatalogFacts`]): view definitions (read only for a caller a mask
    /// rule applies to) and what the names the text calls through may run.
    pub catalog: &'a CatalogFacts,
}

/// Nothing looked up, for a [`Query`] decided without the catalog (`policy
/// explain`, the first question about a text).
pub static NO_CATALOG: CatalogFacts = CatalogFacts {
    views: BTreeMap::new(),
    functions: Vec::new(),
};

impl<'a> From<&'a DecisionRequest> for Query<'a> {
    fn from(r: &'a DecisionRequest) -> Self {
        Query {
            role: &r.role,
            identity: &r.identity,
            protocol: r.protocol,
            sql: &r.sql,
            function_oid: r.function_oid,
            prepared: &r.prepared,
            catalog: &r.catalog,
        }
    }
}

/// Why a statement got its verdict, for `policy explain` and the log.
#[derive(Debug, Clone)]
pub struct StatementExplanation {
    /// The analysis (absent for unparsed text).
    pub analysis: Option<StatementAnalysis>,
    /// The verdict for this statement.
    pub verdict: Verdict,
    /// The deciding rule (`None`: default deny or unparsed).
    pub rule: Option<String>,
    /// Every enforcing rule that applied.
    pub applied: Vec<String>,
}

/// A decision with its reasons.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The decision.
    pub decision: Decision,
    /// Per statement.
    pub statements: Vec<StatementExplanation>,
    /// The parser's error, for unparsed text.
    pub parse_error: Option<String>,
}

fn default_deny() -> Verdict {
    Verdict::Block {
        reason: "no policy rule allows this statement (default deny)".into(),
    }
}

impl Policy {
    /// Decides a request.
    pub fn decide<'a>(&self, req: impl Into<Query<'a>>) -> Decision {
        self.explain(req).decision
    }

    /// Decides a request and says why.
    pub fn explain<'a>(&self, req: impl Into<Query<'a>>) -> Explanation {
        let req: Query<'a> = req.into();
        let req = &req;
        let applicable = |r: &&CompiledRule| self.identity_fits(r, req);
        let candidates: Vec<&CompiledRule> = self.rules.iter().filter(applicable).collect();

        // Mask rules that apply to this caller (not exempt), whatever
        // the statement turns out to be.
        let masking: Vec<(&CompiledRule, &MaskTarget)> = candidates
            .iter()
            .filter(|r| {
                r.rule.verdict == RuleVerdict::Mask
                    && r.rule.enforce
                    && (r.rule.exempt.is_empty()
                        || !all_match(&r.rule.exempt, &req.identity.claims))
            })
            .flat_map(|r| r.masks.iter().map(move |m| (*r, m)))
            .collect();
        // Mask rules with content detectors that apply to this caller.
        let detecting: Vec<&CompiledRule> = candidates
            .iter()
            .copied()
            .filter(|r| {
                r.rule.verdict == RuleVerdict::Mask
                    && r.rule.enforce
                    && !r.rule.detectors.is_empty()
                    && (r.rule.exempt.is_empty()
                        || !all_match(&r.rule.exempt, &req.identity.claims))
            })
            .collect();
        let masked_caller = !masking.is_empty() || !detecting.is_empty();

        // The text, read once: everything below is read from it.
        let mut parsed: Option<Parsed<'_>> = None;
        let (analyses, parse_error) = match req.protocol {
            ProtocolKind::FunctionCall => {
                // The legacy fast-path call runs a function by OID: only a rule
                // naming that OID in `functions` can allow it.
                let mut functions = BTreeSet::new();
                functions.insert(format!("oid:{}", req.function_oid.unwrap_or(0)));
                let a = StatementAnalysis {
                    class: StatementClass::FunctionCall,
                    classes: BTreeSet::from([StatementClass::FunctionCall]),
                    reads: BTreeSet::new(),
                    writes: BTreeSet::new(),
                    functions,
                    calls: BTreeSet::new(),
                    risks: BTreeSet::new(),
                    prepared: None,
                    fingerprint: String::new(),
                };
                (vec![a], None)
            }
            ProtocolKind::SimpleQuery | ProtocolKind::Parse => {
                match Parsed::read(req.sql, masked_caller) {
                    Ok(p) => {
                        let analysis = analyze_parsed(&p, 0);
                        parsed = Some(p);
                        match analysis {
                            Analysis::Parsed { statements } => (statements, None),
                            Analysis::Unparsed { error } => (Vec::new(), Some(error)),
                        }
                    }
                    Err(error) => (Vec::new(), Some(error)),
                }
            }
        };
        let has_shape = parsed.as_ref().is_some_and(|p| p.shaped);

        if let Some(error) = parse_error {
            let rule = candidates
                .iter()
                .find(|r| r.rule.allow_unparsed && r.rule.enforce);
            let (verdict, rule) = match rule {
                Some(r) => (Verdict::Allow, Some(r.rule.id.clone())),
                None => (
                    Verdict::Block {
                        reason: "Gatehouse could not parse this statement, and no rule allows unparsed SQL for this role".into(),
                    },
                    None,
                ),
            };
            return Explanation {
                decision: Decision {
                    v: SCHEMA_VERSION,
                    verdict: verdict.clone(),
                    rule: rule.clone(),
                    policy_version: self.version.clone(),
                    statements: Vec::new(),
                    shadow: Vec::new(),
                    cacheable: false,
                    shape_cacheable: false,
                    // Nothing of an unread text is known: every value withheld.
                    values: masked_caller
                        .then(|| self.value_masks(parsed.as_ref(), None, &masking)),
                    relations: Vec::new(),
                    functions: Vec::new(),
                    results: Vec::new(),
                },
                statements: vec![StatementExplanation {
                    analysis: None,
                    verdict,
                    rule,
                    applied: Vec::new(),
                }],
                parse_error: Some(error),
            };
        }

        // The lineage of the text, when a mask rule applies to the caller,
        // reading views through the definitions the ingress looked up.
        let views = Rc::new(if masked_caller {
            Views::new(&req.catalog.views)
        } else {
            Views::default()
        });
        let lineages = if !masked_caller {
            None
        } else {
            Some(match &parsed {
                Some(p) => crate::lineage::lineage_of(p, &views),
                None => Ok(Vec::new()),
            })
        };
        // The relations the text names (and those the views in it name), for
        // the ingress to tell views among them.
        let mut relations: BTreeSet<crate::ObjectRef> = BTreeSet::new();
        // And the names through which it (and they) may run functions, for
        // the ingress to resolve in the catalog.
        let mut functions: BTreeSet<CallName> = BTreeSet::new();
        if let Some(Ok(ls)) = &lineages {
            relations.extend(ls.iter().flat_map(|l| l.tables.iter().cloned()));
            functions.extend(ls.iter().flat_map(|l| l.calls.iter().cloned()));
        }
        let callees = Callees::new(&req.catalog.functions);
        let analyses_len = analyses.len();
        let mut explained = Vec::with_capacity(analyses.len());
        let mut shadow = Vec::new();
        let mut summaries = Vec::with_capacity(analyses.len());
        let mut cacheable = req.protocol != ProtocolKind::FunctionCall;
        // See `crate::shape`: one plain read whose analysis no literal can change.
        let shape_cacheable = req.protocol != ProtocolKind::FunctionCall
            && analyses.len() == 1
            && crate::shape::literal_invariant(&analyses[0])
            && has_shape;
        for a in analyses {
            // EXECUTE is decided as the statement it runs.
            let decided = match &a.prepared {
                Some(PreparedOp::Execute { name }) => {
                    cacheable = false;
                    match req.prepared.get(name).map(|sql| analyze(sql)) {
                        Some(Analysis::Parsed { statements }) if statements.len() == 1 => {
                            statements.into_iter().next()
                        }
                        _ => None,
                    }
                }
                _ => Some(a.clone()),
            };
            if let Some(d) = &decided {
                functions.extend(d.calls.iter().cloned());
            }
            let (verdict, rule, applied) = match &decided {
                Some(d) => {
                    let resolved = self.resolved(d);
                    self.decide_statement(
                        &candidates,
                        &resolved,
                        req.protocol,
                        req.identity,
                        &callees,
                        masked_caller,
                        &mut shadow,
                    )
                }
                None => (
                    Verdict::Block {
                        reason:
                            "EXECUTE of a statement Gatehouse did not see prepared in this session"
                                .into(),
                    },
                    None,
                    Vec::new(),
                ),
            };
            let (verdict, rule) = match (&lineages, &decided) {
                (Some(lineages), Some(d)) => {
                    let index = explained.len();
                    let inner;
                    let l = match (&a.prepared, lineages) {
                        // EXECUTE: the lineage of what it runs.
                        (Some(PreparedOp::Execute { name }), _) => {
                            inner = req
                                .prepared
                                .get(name)
                                .map(|sql| crate::lineage::lineage_with(sql, &views))
                                .unwrap_or_else(|| Err("unknown prepared statement".into()));
                            if let Ok(v) = &inner {
                                relations.extend(v.iter().flat_map(|l| l.tables.iter().cloned()));
                                functions.extend(v.iter().flat_map(|l| l.calls.iter().cloned()));
                            }
                            match &inner {
                                Ok(v) if v.len() == 1 => Ok(&v[0]),
                                Ok(_) => Err("not one statement"),
                                Err(e) => Err(e.as_str()),
                            }
                        }
                        (_, Ok(v)) if v.len() == analyses_len => Ok(&v[index]),
                        (_, Ok(_)) => Err("its statements could not be told apart"),
                        (_, Err(e)) => Err(e.as_str()),
                    };
                    relations.extend(d.reads.iter().chain(&d.writes).cloned());
                    let resolved = self.resolved(d);
                    let (v, masked_by) = self.mask_statement(
                        index, verdict, &resolved, l, &callees, &masking, &detecting,
                    );
                    let rule = match (&v, masked_by) {
                        (Verdict::Block { .. }, Some(r)) => Some(r),
                        (Verdict::Mask { .. }, Some(r))
                            if rule.is_none()
                                || matches!(
                                    rule_kind(&rule, &self.rules),
                                    Some(RuleVerdict::Allow)
                                ) =>
                        {
                            Some(r)
                        }
                        _ => rule,
                    };
                    (v, rule)
                }
                _ => (verdict, rule),
            };
            if !a.risks.is_empty() || a.prepared.is_some() {
                // A literal can change what such a statement means to the policy.
                cacheable = false;
            }
            summaries.push(StatementSummary {
                class: a.class.name().to_owned(),
                classes: a.class_names(),
                fingerprint: a.fingerprint.clone(),
                prepares: match &a.prepared {
                    Some(PreparedOp::Prepare { name, inner_sql }) => {
                        Some((name.clone(), inner_sql.clone()))
                    }
                    _ => None,
                },
                deallocates: match &a.prepared {
                    Some(PreparedOp::Deallocate { name }) => Some(name.clone()),
                    _ => None,
                },
                // What evidence records: the statement that runs (an EXECUTE's
                // prepared one), its names resolved as the rules saw them.
                reads: decided
                    .iter()
                    .flat_map(|d| &d.reads)
                    .map(|o| self.resolve(o).to_string())
                    .collect(),
                writes: decided
                    .iter()
                    .flat_map(|d| &d.writes)
                    .map(|o| self.resolve(o).to_string())
                    .collect(),
                calls: decided
                    .iter()
                    .flat_map(|d| d.functions.iter().cloned())
                    .collect(),
            });
            explained.push(StatementExplanation {
                analysis: Some(a),
                verdict,
                rule,
                applied,
            });
        }

        // The strictest statement decides the text; the first one of that rank
        // names the rule. Masks of every statement are combined.
        let mut verdict = Verdict::Allow;
        let mut rule = None;
        let mut masks: Vec<MaskColumn> = Vec::new();
        let mut masked_outputs: Vec<MaskOutput> = Vec::new();
        let mut detectors: BTreeSet<Detector> = BTreeSet::new();
        for e in &explained {
            if let Some((columns, outputs)) = e.verdict.masks() {
                for c in columns {
                    if !masks.contains(c) {
                        masks.push(c.clone());
                    }
                }
                masked_outputs.extend(outputs.iter().cloned());
            }
            detectors.extend(e.verdict.detectors());
            if e.verdict.rank() > verdict.rank() {
                verdict = e.verdict.clone();
                rule = e.rule.clone();
            } else if rule.is_none() && e.verdict.rank() == verdict.rank() {
                rule = e.rule.clone();
            }
        }
        // The masks of every statement go with the text's verdict: a text held
        // for approval runs masked once approved.
        if let Verdict::Mask {
            columns,
            outputs,
            detect,
        }
        | Verdict::Approve {
            columns,
            outputs,
            detect,
            ..
        } = &mut verdict
        {
            *columns = masks;
            *outputs = masked_outputs;
            *detect = detectors.into_iter().collect();
        }
        Explanation {
            decision: Decision {
                v: SCHEMA_VERSION,
                verdict,
                rule,
                policy_version: self.version.clone(),
                statements: summaries,
                shadow,
                cacheable,
                shape_cacheable: shape_cacheable && cacheable,
                values: masked_caller.then(|| match req.protocol {
                    // No text: nothing to show or withhold.
                    ProtocolKind::FunctionCall => ValueMasks {
                        spans: Some(Vec::new()),
                        ..ValueMasks::default()
                    },
                    _ => self.value_masks(parsed.as_ref(), lineages.as_ref(), &masking),
                }),
                // The catalog's own schemas hold no view over a user's table.
                relations: relations
                    .iter()
                    .filter(|r| {
                        r.name != "*"
                            && !matches!(
                                r.schema.as_deref(),
                                Some("pg_catalog" | "information_schema")
                            )
                    })
                    .map(|r| crate::lineage::relation_name(r.schema.as_deref(), &r.name))
                    .collect(),
                functions: functions.into_iter().collect(),
                results: parsed
                    .as_ref()
                    .and_then(|p| p.statements.as_ref().ok())
                    .map(|s| crate::results::result_ops(s))
                    .unwrap_or_default(),
            },
            statements: explained,
            parse_error: None,
        }
    }

    /// The analysis with unqualified names resolved through the search_path.
    fn resolved(&self, a: &StatementAnalysis) -> StatementAnalysis {
        let mut r = a.clone();
        r.reads = a.reads.iter().map(|o| self.resolve(o)).collect();
        r.writes = a.writes.iter().map(|o| self.resolve(o)).collect();
        r
    }

    /// Role and claims: whether the rule is about this caller at all.
    fn identity_fits(&self, r: &CompiledRule, req: &Query<'_>) -> bool {
        (r.roles.is_empty() || r.roles.iter().any(|p| p.matches(req.role)))
            && all_match(&r.rule.claims, &req.identity.claims)
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_statement(
        &self,
        candidates: &[&CompiledRule],
        a: &StatementAnalysis,
        protocol: ProtocolKind,
        identity: &Identity,
        callees: &Callees<'_>,
        masked_caller: bool,
        shadow: &mut Vec<ShadowHit>,
    ) -> (Verdict, Option<String>, Vec<String>) {
        let mut best: Option<(Verdict, String)> = None;
        let mut applied = Vec::new();
        // A masked caller is refused every function that would need naming,
        // whoever names it (see `mask_statement`), which says why better.
        let calls = callees.for_rules(a, &self.trusted_functions, masked_caller);
        for r in candidates {
            if !statement_fits(r, a, protocol, &calls) {
                continue;
            }
            let exempt = r.rule.verdict == RuleVerdict::Mask
                && !r.rule.exempt.is_empty()
                && all_match(&r.rule.exempt, &identity.claims);
            // An exempt caller: the mask rule lets it through unmasked.
            let v = if exempt {
                Verdict::Allow
            } else {
                rule_verdict(r)
            };
            if !r.rule.enforce {
                shadow.push(ShadowHit {
                    rule: r.rule.id.clone(),
                    verdict: v,
                });
                continue;
            }
            applied.push(r.rule.id.clone());
            if best.as_ref().is_none_or(|(b, _)| v.rank() > b.rank()) {
                best = Some((v, r.rule.id.clone()));
            }
        }
        match best {
            Some((v, id)) => (v, Some(id), applied),
            None => match calls.unnamed_reason() {
                Some(why) => (
                    Verdict::Block {
                        reason: format!(
                            "no policy rule allows this statement (default deny): {why}"
                        ),
                    },
                    None,
                    applied,
                ),
                None => (default_deny(), None, applied),
            },
        }
    }

    /// A hash of what this policy can tell apart about a caller: its role and its
    /// values for every claim a rule looks at. Two callers with the same class get
    /// the same verdict for the same statement.
    pub fn identity_class(&self, role: &str, identity: &Identity) -> u64 {
        let mut h = DefaultHasher::new();
        role.hash(&mut h);
        for path in &self.claim_paths {
            path.hash(&mut h);
            lookup(&identity.claims, path)
                .map(|v| v.to_string())
                .hash(&mut h);
        }
        h.finish()
    }
}

fn rule_verdict(r: &CompiledRule) -> Verdict {
    let reason = || r.rule.reason.clone().unwrap_or_default();
    match r.rule.verdict {
        RuleVerdict::Allow => Verdict::Allow,
        RuleVerdict::Block => Verdict::Block { reason: reason() },
        RuleVerdict::Approve => Verdict::Approve {
            reason: reason(),
            approvers: r.rule.approvers.clone().unwrap_or_default(),
            columns: Vec::new(),
            outputs: Vec::new(),
            detect: Vec::new(),
        },
        // The columns are filled in by `mask_statement`, from every mask rule
        // that applies to the caller.
        RuleVerdict::Mask => Verdict::Mask {
            columns: Vec::new(),
            outputs: Vec::new(),
            detect: Vec::new(),
        },
    }
}

/// Whether the rule's statement conditions hold (see `policy` for the
/// permissive/restrictive semantics).
fn statement_fits(
    r: &CompiledRule,
    a: &StatementAnalysis,
    protocol: ProtocolKind,
    calls: &RuleCalls,
) -> bool {
    let permissive = r.rule.verdict.is_permissive();
    if !r.rule.classes.is_empty() && !classes_fit(&r.rule.classes, a, permissive) {
        return false;
    }
    let risks_ok = if permissive {
        a.risks.iter().all(|k| r.rule.risks.contains(k))
    } else {
        r.rule.risks.is_empty() || a.risks.iter().any(|k| r.rule.risks.contains(k))
    };
    if !risks_ok {
        return false;
    }
    let all: BTreeSet<_> = a.reads.union(&a.writes).cloned().collect();
    let fits = |pats: &[ObjectPattern], objs: &BTreeSet<crate::ObjectRef>| {
        if pats.is_empty() {
            return true;
        }
        if permissive {
            objs.iter().all(|o| pats.iter().any(|p| p.matches(o)))
        } else {
            objs.iter().any(|o| pats.iter().any(|p| p.matches(o)))
        }
    };
    if !fits(&r.objects, &all) || !fits(&r.reads, &a.reads) || !fits(&r.writes, &a.writes) {
        return false;
    }
    if protocol == ProtocolKind::FunctionCall {
        // A FunctionCall runs a function by OID: only ever allowed (or
        // caught) by naming it.
        let named = |f: &String| r.functions.iter().any(|p| p.matches(None, f));
        return !r.functions.is_empty()
            && if permissive {
                a.functions.iter().all(named)
            } else {
                a.functions.iter().any(named)
            };
    }
    if permissive {
        calls.covered_by(&r.functions)
    } else {
        r.functions.is_empty() || calls.caught_by(&r.functions)
    }
}

/// Whether a rule's `classes` fit a statement's. A permissive rule must list
/// every class the statement has, except that any class it lists covers the
/// statement's reading too (`classes = ["write"]` allows `INSERT ... SELECT`):
/// what it may read is for `objects` and `reads` to say. A restrictive rule
/// fires when it lists any of the statement's classes.
fn classes_fit(listed: &[StatementClass], a: &StatementAnalysis, permissive: bool) -> bool {
    if !permissive {
        return a.classes.iter().any(|c| listed.contains(c));
    }
    let only_reads = a.classes.iter().all(|c| *c == StatementClass::Read);
    a.classes
        .iter()
        .filter(|c| only_reads || **c != StatementClass::Read)
        .all(|c| listed.contains(c))
}

/// What the rule named `rule` yields.
fn rule_kind(rule: &Option<String>, rules: &[CompiledRule]) -> Option<RuleVerdict> {
    let id = rule.as_deref()?;
    rules
        .iter()
        .find(|r| r.rule.id == id)
        .map(|r| r.rule.verdict)
}
