//! Decides: analyses a request's SQL and matches each statement against the
//! policy. Default deny: no applicable enforcing rule means block.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::rc::Rc;

use gatehouse_schemas::decision::{
    Decision, DecisionRequest, Detector, MaskColumn, MaskOutput, ShadowHit, StatementSummary,
    ValueMask, ValueMasks, Verdict, ViewDefinition,
};
use gatehouse_schemas::{Identity, ProtocolKind, SCHEMA_VERSION};
use wildmatch::WildMatch;

use crate::analysis::{Analysis, PreparedOp, StatementAnalysis, StatementClass};
use crate::claims::{all_match, lookup};
use crate::classify::{STATISTICS_FUNCTIONS, STATISTICS_RELATIONS, analyze, analyze_shaped};
use crate::lineage::{Item, Source, StatementLineage, Use, Views};
use crate::policy::{CompiledRule, MaskTarget, ObjectPattern, Policy, RuleVerdict};

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
    /// Definitions of the views the text reads, by schema-qualified name (see
    /// [`DecisionRequest::views`]); read only for a caller a mask rule
    /// applies to.
    pub views: &'a BTreeMap<String, ViewDefinition>,
}

/// No view definitions, for a [`Query`] that has none.
pub static NO_VIEWS: BTreeMap<String, ViewDefinition> = BTreeMap::new();

impl<'a> From<&'a DecisionRequest> for Query<'a> {
    fn from(r: &'a DecisionRequest) -> Self {
        Query {
            role: &r.role,
            identity: &r.identity,
            protocol: r.protocol,
            sql: &r.sql,
            function_oid: r.function_oid,
            prepared: &r.prepared,
            views: &r.views,
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

        let mut has_shape = false;
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
                    risks: BTreeSet::new(),
                    prepared: None,
                    fingerprint: String::new(),
                };
                (vec![a], None)
            }
            ProtocolKind::SimpleQuery | ProtocolKind::Parse => match analyze_shaped(req.sql) {
                (Analysis::Parsed { statements }, shaped) => {
                    has_shape = shaped;
                    (statements, None)
                }
                (Analysis::Unparsed { error }, _) => (Vec::new(), Some(error)),
            },
        };

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
                    values: masked_caller.then(|| self.value_masks(req.sql, None, &masking)),
                    relations: Vec::new(),
                    functions: Vec::new(),
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
            Views::new(req.views)
        } else {
            Views::default()
        });
        let lineages = if !masked_caller {
            None
        } else {
            Some(crate::lineage::lineage_with(req.sql, &views))
        };
        // The relations the text names (and those the views in it name), for
        // the ingress to tell views among them.
        let mut relations: BTreeSet<crate::ObjectRef> = BTreeSet::new();
        // And the functions they call, for the ingress to tell user-defined
        // ones among them.
        let mut functions: BTreeSet<crate::ObjectRef> = BTreeSet::new();
        if let Some(Ok(ls)) = &lineages {
            relations.extend(ls.iter().flat_map(|l| l.tables.iter().cloned()));
            functions.extend(ls.iter().flat_map(|l| l.functions.iter().cloned()));
        }
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
            let (verdict, rule, applied) = match &decided {
                Some(d) => {
                    let resolved = self.resolved(d);
                    self.decide_statement(
                        &candidates,
                        &resolved,
                        req.protocol,
                        req.identity,
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
                                functions
                                    .extend(v.iter().flat_map(|l| l.functions.iter().cloned()));
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
                    let (v, masked_by) =
                        self.mask_statement(index, verdict, &resolved, l, &masking, &detecting);
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
                values: masked_caller.then(|| {
                    self.value_masks(
                        req.sql,
                        lineages
                            .as_ref()
                            .filter(|_| req.protocol != ProtocolKind::FunctionCall),
                        &masking,
                    )
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
                functions: functions
                    .iter()
                    .map(|f| crate::lineage::relation_name(f.schema.as_deref(), &f.name))
                    .collect(),
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

    /// Masks a statement that runs: which output columns, or why it cannot be
    /// masked precisely (then it is refused). `verdict` is the statement's
    /// verdict before masking.
    fn mask_statement(
        &self,
        index: usize,
        verdict: Verdict,
        a: &StatementAnalysis,
        lineage: Result<&StatementLineage, &str>,
        masking: &[(&CompiledRule, &MaskTarget)],
        detecting: &[&CompiledRule],
    ) -> (Verdict, Option<String>) {
        // Every mask rule that applies to the caller masks every statement it
        // runs: a rule's `classes` and `objects` say what it allows, not what it
        // masks (a COPY or FETCH allowed by another rule is masked too).
        let applicable: Vec<&(&CompiledRule, &MaskTarget)> = masking.iter().collect();
        if (applicable.is_empty() && detecting.is_empty())
            || !matches!(
                verdict,
                Verdict::Allow | Verdict::Mask { .. } | Verdict::Approve { .. }
            )
        {
            return (
                match verdict {
                    // An exempt caller: the mask rule lets it through unmasked.
                    Verdict::Mask { .. } => Verdict::Allow,
                    v => v,
                },
                None,
            );
        }
        // A statement held for approval stays held, and once approved its
        // results are masked like any other's: the hold carries the masks.
        let hold = match verdict {
            Verdict::Approve {
                reason, approvers, ..
            } => Some((reason, approvers)),
            _ => None,
        };
        // Detectors of rules that name no columns for them scan every text
        // output column; the others scan theirs (as columns with the
        // `detect` method, which only masks what the detectors find).
        let detect: Vec<Detector> = detecting
            .iter()
            .filter(|r| r.detect.is_empty())
            .flat_map(|r| r.rule.detectors.iter().copied())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let masked = move |columns, outputs| match hold {
            Some((reason, approvers)) => Verdict::Approve {
                reason,
                approvers,
                columns,
                outputs,
                detect,
            },
            None => Verdict::Mask {
                columns,
                outputs,
                detect,
            },
        };
        let rule_of_first = applicable
            .first()
            .map(|(r, _)| r)
            .or(detecting.first())
            .map(|r| r.rule.id.clone())
            .unwrap_or_default();
        let columns: Vec<MaskColumn> = applicable
            .iter()
            .map(|p| (p.0, p.1))
            .chain(
                detecting
                    .iter()
                    .flat_map(|r| r.detect.iter().map(move |m| (*r, m))),
            )
            .map(|(r, m)| MaskColumn {
                column: m.pattern.clone(),
                method: m.method.clone(),
                class: m.class.clone(),
                rule: r.rule.id.clone(),
            })
            .collect();
        let refuse = |why: String, rule: &str| {
            (
                Verdict::Block {
                    reason: format!("masking could not be guaranteed: {why}"),
                },
                Some(rule.to_owned()),
            )
        };
        // Which targets a source may carry.
        let hits = |s: &Source| -> Vec<&(&CompiledRule, &MaskTarget)> {
            applicable
                .iter()
                .copied()
                .filter(|(_, m)| self.carries(m, s))
                .collect()
        };
        let touches = |tables: &std::collections::BTreeSet<crate::ObjectRef>| {
            tables
                .iter()
                .chain(a.reads.iter())
                .chain(a.writes.iter())
                .any(|t| {
                    applicable
                        .iter()
                        .any(|(_, m)| m.may_match_table(&self.resolve(t)))
                })
        };
        let lineage = match lineage {
            Ok(l) => l,
            Err(e) => {
                if touches(&Default::default()) {
                    return refuse(
                        format!("Gatehouse could not trace this statement's columns ({e})"),
                        &rule_of_first,
                    );
                }
                return (masked(columns, Vec::new()), None);
            }
        };
        if let Some(why) = &lineage.unreadable_view {
            return refuse(why.clone(), &rule_of_first);
        }
        // Statistics and other sessions' statements show column values that
        // no output column carries.
        let statistics = lineage
            .tables
            .iter()
            .find(|t| STATISTICS_RELATIONS.contains(&t.name.as_str()))
            .or_else(|| {
                lineage
                    .functions
                    .iter()
                    .find(|f| STATISTICS_FUNCTIONS.contains(&f.name.as_str()))
            });
        if let Some(what) = statistics {
            return refuse(
                format!(
                    "{what} shows values of table columns (statistics, or other sessions' statements) that Gatehouse cannot mask"
                ),
                &rule_of_first,
            );
        }
        if let Some(why) = &lineage.unsupported
            && touches(&lineage.tables)
        {
            return refuse(
                format!("{why} over a table with masked columns"),
                &rule_of_first,
            );
        }
        // A value sent out of the statement is named as such first.
        let uses = lineage
            .predicates
            .iter()
            .filter(|(_, u)| *u == Use::Effect)
            .chain(lineage.predicates.iter().filter(|(_, u)| *u != Use::Effect));
        for (src, u) in uses {
            for (r, m) in hits(src) {
                if *u == Use::Equality && m.allow_equality {
                    continue;
                }
                let what = match u {
                    Use::Effect => format!(
                        "passes masked column {} to a function with effects beyond its result (a setting, a notification, a lock, a large object)",
                        m.pattern
                    ),
                    _ => format!(
                        "filters, joins, groups, orders on or copies masked column {}",
                        m.pattern
                    ),
                };
                return refuse(
                    format!(
                        "the statement {what} (rule \"{}\"); a masked caller may only read it",
                        r.rule.id
                    ),
                    &r.rule.id,
                );
            }
        }
        let mut outputs = Vec::new();
        let mut position = Some(0u32);
        for item in &lineage.items {
            match item {
                Item::Star(_) => position = None,
                Item::Output(o) => {
                    let matched: Vec<_> = o.reads.iter().flat_map(&hits).collect();
                    if let Some(strictest) =
                        matched.iter().max_by_key(|(_, m)| m.method.strictness())
                    {
                        match position {
                            Some(p) => outputs.push(MaskOutput {
                                statement: u32::try_from(index).unwrap_or(u32::MAX),
                                position: p,
                                source: strictest.1.pattern.clone(),
                                // Several masked columns in one value: the
                                // strictest method shows the least of all.
                                method: strictest.1.method.clone(),
                            }),
                            // After a `*`, a direct column is still found by its
                            // table OID; a derived one cannot be placed.
                            None if o.direct => {}
                            None => {
                                return refuse(
                                    format!(
                                        "an output column derived from masked column {} follows a * whose width Gatehouse cannot know; list the columns",
                                        strictest.1.pattern
                                    ),
                                    &strictest.0.rule.id,
                                );
                            }
                        }
                    } else if let Some(p) = position {
                        // A value derived from a column whose text detectors
                        // scan is scanned too (not placeable after a `*`:
                        // detectors are defence in depth, not an exact mask).
                        for (r, m) in detecting
                            .iter()
                            .flat_map(|r| r.detect.iter().map(move |m| (r, m)))
                        {
                            if !o.direct && o.reads.iter().any(|s| self.carries(m, s)) {
                                outputs.push(MaskOutput {
                                    statement: u32::try_from(index).unwrap_or(u32::MAX),
                                    position: p,
                                    source: format!("{} (rule {})", m.pattern, r.rule.id),
                                    method: m.method.clone(),
                                });
                            }
                        }
                    }
                    position = position.map(|p| p + 1);
                }
            }
        }
        (masked(columns, outputs), Some(rule_of_first))
    }

    /// Whether values from (or towards) `s` may be masked by `m`.
    fn carries(&self, m: &MaskTarget, s: &Source) -> bool {
        match s {
            Source::Column { tables, column } => {
                tables.iter().any(|t| m.matches(&self.resolve(t), column))
            }
            Source::WholeRow(t) => m.may_match_table(&self.resolve(t)),
        }
    }

    /// What evidence may show of the text's values (see [`ValueMasks`]): a
    /// value the lineage places towards a masked column is masked with the
    /// strictest method there; one it places only towards other columns is
    /// clear; one it does not place (or a text it cannot read) is withheld.
    fn value_masks(
        &self,
        sql: &str,
        lineages: Option<&Result<Vec<StatementLineage>, String>>,
        masking: &[(&CompiledRule, &MaskTarget)],
    ) -> ValueMasks {
        let Ok(tokens) = crate::values::value_tokens(sql) else {
            return ValueMasks::default();
        };
        let mut out = ValueMasks {
            values: u32::try_from(tokens.len()).unwrap_or(u32::MAX),
            ..ValueMasks::default()
        };
        let Some(Ok(lineages)) = lineages else {
            return out;
        };
        let n = tokens.len();
        let mut seen = vec![false; n];
        let mut masked: Vec<Option<&MaskTarget>> = vec![None; n];
        for (sources, ordinals) in lineages.iter().flat_map(|l| &l.values) {
            let strictest = sources
                .iter()
                .flat_map(|s| {
                    masking
                        .iter()
                        .filter(move |(_, m)| self.carries(m, s))
                        .map(|(_, m)| *m)
                })
                .max_by_key(|m| m.method.strictness());
            for &o in ordinals {
                let Some(i) = usize::try_from(o).ok().filter(|i| *i < n) else {
                    continue;
                };
                seen[i] = true;
                if let Some(m) = strictest
                    && masked[i].is_none_or(|p| m.method.strictness() > p.method.strictness())
                {
                    masked[i] = Some(m);
                }
            }
        }
        let mask = |index: u32, m: &MaskTarget| ValueMask {
            index,
            column: m.pattern.clone(),
            method: m.method.clone(),
        };
        // Per parameter: clear only if every use of it is; masked if any is.
        let mut params: BTreeMap<u32, (bool, Option<&MaskTarget>)> = BTreeMap::new();
        for ((i, t), index) in tokens.iter().enumerate().zip(0u32..) {
            match t.param {
                Some(p) => {
                    let e = params.entry(p).or_insert((true, None));
                    e.0 &= seen[i] && masked[i].is_none();
                    if let Some(m) = masked[i]
                        && e.1
                            .is_none_or(|q| m.method.strictness() > q.method.strictness())
                    {
                        e.1 = Some(m);
                    }
                }
                None => match masked[i] {
                    Some(m) => out.literals.push(mask(index, m)),
                    None if seen[i] => out.clear_literals.push(index),
                    None => {}
                },
            }
        }
        for (p, (clear, m)) in params {
            match m {
                Some(m) => out.params.push(mask(p, m)),
                None if clear => out.clear_params.push(p),
                None => {}
            }
        }
        out
    }

    fn decide_statement(
        &self,
        candidates: &[&CompiledRule],
        a: &StatementAnalysis,
        protocol: ProtocolKind,
        identity: &Identity,
        shadow: &mut Vec<ShadowHit>,
    ) -> (Verdict, Option<String>, Vec<String>) {
        let mut best: Option<(Verdict, String)> = None;
        let mut applied = Vec::new();
        for r in candidates {
            if !statement_fits(r, a, protocol) {
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
            None => (default_deny(), None, applied),
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
fn statement_fits(r: &CompiledRule, a: &StatementAnalysis, protocol: ProtocolKind) -> bool {
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
    if protocol == ProtocolKind::FunctionCall && r.functions.is_empty() {
        // A FunctionCall is only ever allowed by naming its function.
        return false;
    }
    let fn_match = |f: &String, p: &WildMatch| p.matches(f);
    if r.functions.is_empty() {
        true
    } else if permissive {
        a.functions
            .iter()
            .all(|f| r.functions.iter().any(|p| fn_match(f, p)))
    } else {
        a.functions
            .iter()
            .any(|f| r.functions.iter().any(|p| fn_match(f, p)))
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
