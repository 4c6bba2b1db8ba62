//! The functions a statement may run, as the policy sees them. A permissive
//! rule must name (in `functions`), unless the policy trusts them
//! (`trusted_functions`), every function not built into PostgreSQL the
//! statement may run and every built-in that reads relations chosen at run
//! time ([`RELATION_READING_FUNCTIONS`]): what such a function does is not in
//! the statement's text. Built-in functions need no naming.
//!
//! What a name stands for comes from the upstream catalog when the ingress
//! looked it up ([`CatalogFacts::functions`]); before that, a name that is
//! unqualified or qualified with `pg_catalog` is taken for the built-in one,
//! and any other for a function not built in. That is the assumption a
//! verdict without the catalog's answer holds under, and the ingress asks
//! again whenever the catalog says otherwise (see [`Decision::functions`]).
//!
//! [`CatalogFacts::functions`]: gatehouse_schemas::decision::CatalogFacts::functions
//! [`Decision::functions`]: gatehouse_schemas::decision::Decision::functions

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use gatehouse_schemas::decision::{CallKind, CallName, Callee, Resolution};
use wildmatch::WildMatch;

use crate::analysis::StatementAnalysis;
use crate::classify::{RELATION_READING_FUNCTIONS, listed_function};

/// The catalog's answers for the names of one request.
#[derive(Debug, Default)]
pub struct Callees<'a> {
    resolved: BTreeMap<&'a CallName, &'a [Callee]>,
}

impl<'a> Callees<'a> {
    /// The answers the ingress sent.
    pub fn new(resolutions: &'a [Resolution]) -> Self {
        Self {
            resolved: resolutions
                .iter()
                .map(|r| (&r.call, r.callees.as_slice()))
                .collect(),
        }
    }

    /// The functions `call` may run: the catalog's answer, or the assumption
    /// (see the module doc).
    pub fn of(&self, call: &CallName) -> Cow<'a, [Callee]> {
        match self.resolved.get(call) {
            Some(callees) => Cow::Borrowed(callees),
            None => {
                let (schema, builtin) = match call.schema.as_deref() {
                    None | Some("pg_catalog") => ("pg_catalog", true),
                    Some(s) => (s, false),
                };
                Cow::Owned(vec![Callee {
                    schema: schema.to_owned(),
                    name: call.name.clone(),
                    builtin,
                }])
            }
        }
    }

    /// The functions of `a` a permissive rule must name, each with the name
    /// it is reached through.
    pub fn to_name(&self, a: &StatementAnalysis) -> Vec<(CallName, Callee)> {
        let mut out = Vec::new();
        for call in &a.calls {
            for callee in self.of(call).iter() {
                if must_be_named(callee) {
                    out.push((call.clone(), callee.clone()));
                }
            }
        }
        out
    }

    /// Every (schema, name) by which `a` calls a function: the names as
    /// written and what they may run. Restrictive rules fire on any.
    pub fn all_names(&self, a: &StatementAnalysis) -> Vec<(Option<String>, String)> {
        let written = a.functions.iter().map(|f| match f.rsplit_once('.') {
            Some((schema, name)) => (Some(schema.to_owned()), name.to_owned()),
            None => (None, f.clone()),
        });
        let run = a.calls.iter().flat_map(|call| {
            self.of(call)
                .iter()
                .map(|c| (Some(c.schema.clone()), c.name.clone()))
                .collect::<Vec<_>>()
        });
        written.chain(run).collect()
    }
}

impl Callees<'_> {
    /// The functions of `a` as rules see them; `trusted` need no naming, and
    /// nothing does for a masked caller (see [`Callees::masked_refusal`]).
    pub fn for_rules(
        &self,
        a: &StatementAnalysis,
        trusted: &[FunctionPattern],
        masked_caller: bool,
    ) -> RuleCalls {
        RuleCalls {
            unnamed: if masked_caller {
                Vec::new()
            } else {
                self.to_name(a)
                    .into_iter()
                    .filter(|(_, c)| !trusted.iter().any(|p| p.matches_callee(c)))
                    .collect()
            },
            all: self.all_names(a),
        }
    }

    /// Why a masked caller may not run what `calls` name: what a function
    /// not built into PostgreSQL does with the values it is given, or reads
    /// by itself, is out of the lineage's sight; so is what a built-in reads
    /// when told at run time which relation.
    pub fn masked_refusal(&self, calls: &BTreeSet<CallName>) -> Option<String> {
        for call in calls {
            let may_run = self.of(call);
            let user: Vec<String> = may_run
                .iter()
                .filter(|c| !c.builtin)
                .map(ToString::to_string)
                .collect();
            if !user.is_empty() {
                return Some(format!(
                    "it calls {call}, which may be {}, not built into PostgreSQL: what such a function does with the values it is given or reads cannot be known",
                    user.join(" or ")
                ));
            }
            if let Some(c) = may_run.iter().find(|c| reads_relations(c)) {
                return Some(format!(
                    "it calls {c}, which reads relations chosen at run time (query text, a table, schema or cursor name): masking cannot follow what it returns"
                ));
            }
        }
        None
    }
}

/// The functions of one statement as rules see them.
#[derive(Debug)]
pub struct RuleCalls {
    /// Those a permissive rule must name (not trusted by the policy), each
    /// with the name it is reached through.
    unnamed: Vec<(CallName, Callee)>,
    /// Every (schema, name) it calls a function by, as written or as run.
    all: Vec<(Option<String>, String)>,
}

impl RuleCalls {
    /// Whether a permissive rule's `functions` name every function that
    /// needs naming.
    pub fn covered_by(&self, patterns: &[FunctionPattern]) -> bool {
        self.unnamed
            .iter()
            .all(|(_, c)| patterns.iter().any(|p| p.matches_callee(c)))
    }

    /// Whether a restrictive rule's `functions` match any function called.
    pub fn caught_by(&self, patterns: &[FunctionPattern]) -> bool {
        self.all
            .iter()
            .any(|(s, n)| patterns.iter().any(|p| p.matches(s.as_deref(), n)))
    }

    /// Why no rule covers the statement, when a function needs naming.
    pub fn unnamed_reason(&self) -> Option<String> {
        let (call, callee) = self.unnamed.first()?;
        let through = match call.kind {
            CallKind::Function => String::new(),
            _ => format!(" (through {call})"),
        };
        let what = if callee.builtin {
            "a built-in that reads relations chosen at run time"
        } else {
            "a function not built into PostgreSQL"
        };
        Some(format!(
            "it calls {callee}{through}, {what}, which no rule for this caller names in `functions` (nor the policy in `trusted_functions`)"
        ))
    }
}

/// Whether the catalog's answer for a name is what the decider assumes
/// without it: a verdict decided without the answer holds.
pub fn as_assumed(r: &Resolution) -> bool {
    Callees::default().of(&r.call).as_ref() == r.callees.as_slice()
}

/// Whether a permissive rule must name `callee`: it is not built in, or it
/// reads relations chosen at run time.
pub fn must_be_named(callee: &Callee) -> bool {
    !callee.builtin || reads_relations(callee)
}

/// Whether `callee` reads relations chosen at run time (query text, a table,
/// schema or cursor name): see [`RELATION_READING_FUNCTIONS`].
pub fn reads_relations(callee: &Callee) -> bool {
    listed_function(
        RELATION_READING_FUNCTIONS,
        &[callee.schema.clone(), callee.name.clone()],
    )
}

/// A pattern on functions, from a rule's `functions` or the policy's
/// `trusted_functions`: `name` (in any schema) or `schema.name`, each part a
/// glob (`*`, `?`), compared case-insensitively; `oid:1234` names a function
/// for the legacy `FunctionCall` message.
#[derive(Debug, Clone)]
pub struct FunctionPattern {
    schema: Option<WildMatch>,
    name: WildMatch,
}

impl FunctionPattern {
    /// Compiles `pattern`, or says why it is not one.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let p = pattern.to_lowercase();
        let parts: Vec<&str> = if p.starts_with("oid:") {
            vec![p.as_str()]
        } else {
            p.split('.').collect()
        };
        match parts[..] {
            [name] if !name.is_empty() => Ok(Self {
                schema: None,
                name: WildMatch::new(name),
            }),
            [schema, name] if !schema.is_empty() && !name.is_empty() => Ok(Self {
                schema: Some(WildMatch::new(schema)),
                name: WildMatch::new(name),
            }),
            _ => Err(format!(
                "function pattern {pattern:?} must be name or schema.name (globs allowed: pgcrypto.*)"
            )),
        }
    }

    /// Whether the function `name` of `schema` (`None`: unqualified as
    /// written) is matched. A pattern with a schema never matches an
    /// unqualified name.
    pub fn matches(&self, schema: Option<&str>, name: &str) -> bool {
        self.name.matches(&name.to_lowercase())
            && match (&self.schema, schema) {
                (None, _) => true,
                (Some(p), Some(s)) => p.matches(&s.to_lowercase()),
                (Some(_), None) => false,
            }
    }

    /// Whether `callee` is matched.
    pub fn matches_callee(&self, callee: &Callee) -> bool {
        self.matches(Some(&callee.schema), &callee.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(kind: CallKind, schema: Option<&str>, name: &str) -> CallName {
        CallName {
            kind,
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    fn callee(schema: &str, name: &str, builtin: bool) -> Callee {
        Callee {
            schema: schema.into(),
            name: name.into(),
            builtin,
        }
    }

    #[test]
    fn unresolved_names_are_assumed_built_in_only_when_they_can_be() {
        let none = Callees::default();
        let lower = none.of(&call(CallKind::Function, None, "lower"));
        assert_eq!(&lower[..], &[callee("pg_catalog", "lower", true)]);
        let purge = none.of(&call(CallKind::Function, Some("etl"), "purge"));
        assert_eq!(&purge[..], &[callee("etl", "purge", false)]);
        let resolutions = vec![Resolution {
            call: call(CallKind::Function, None, "lower"),
            callees: vec![
                callee("pg_catalog", "lower", true),
                callee("public", "lower", false),
            ],
        }];
        let resolved = Callees::new(&resolutions);
        assert_eq!(
            resolved.of(&call(CallKind::Function, None, "lower")).len(),
            2
        );
        assert!(!as_assumed(&resolutions[0]));
        let builtin_only = Resolution {
            call: call(CallKind::Function, None, "lower"),
            callees: vec![callee("pg_catalog", "lower", true)],
        };
        assert!(as_assumed(&builtin_only));
        let nothing = Resolution {
            call: call(CallKind::Function, Some("etl"), "nosuch"),
            callees: vec![],
        };
        assert!(!as_assumed(&nothing));
    }

    #[test]
    fn relation_readers_and_user_functions_must_be_named() {
        assert!(must_be_named(&callee("etl", "purge", false)));
        assert!(must_be_named(&callee("pg_catalog", "query_to_xml", true)));
        assert!(must_be_named(&callee(
            "pg_catalog",
            "cursor_to_xmlschema",
            true
        )));
        assert!(!must_be_named(&callee("pg_catalog", "lower", true)));
    }

    #[test]
    fn patterns_match_a_name_in_any_schema_or_one_schema() {
        let p = |s: &str| FunctionPattern::parse(s).unwrap();
        assert!(p("purge").matches(Some("etl"), "purge"));
        assert!(p("purge").matches(None, "purge"));
        assert!(p("etl.purge").matches(Some("etl"), "purge"));
        assert!(!p("etl.purge").matches(Some("public"), "purge"));
        assert!(!p("etl.purge").matches(None, "purge"));
        assert!(p("pgcrypto.*").matches(Some("pgcrypto"), "digest"));
        assert!(p("ETL.Pur*").matches(Some("etl"), "purge_all"));
        assert!(p("oid:1598").matches(None, "oid:1598"));
        for bad in ["", "a.b.c", ".x", "x."] {
            assert!(FunctionPattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
