//! Conditions on token claims, shared by role allow rules and policy rules.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use wildmatch::WildMatch;

/// A condition on one claim. Non-string claim values are compared by their JSON
/// text (`true`, `42`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ClaimMatch {
    /// The claim equals this string.
    Equals(String),
    /// A spelled-out condition.
    Op(ClaimOp),
}

/// The spelled-out claim conditions; exactly one must be given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum ClaimOp {
    /// The claim equals this string.
    Equals(String),
    /// The claim equals one of these.
    OneOf(Vec<String>),
    /// The claim matches this pattern (`*` any run, `?` one character).
    Glob(String),
    /// The claim is an array containing this string (a group, a scope), or a
    /// space-separated string containing it as a word (OAuth `scope`).
    Contains(String),
}

/// Conditions on several claims, by claim name or JSON pointer; all must hold.
pub type ClaimConditions = BTreeMap<String, ClaimMatch>;

/// Looks a claim up by name, or by JSON pointer when it starts with `/`
/// (`/kubernetes.io/serviceaccount/name`), since claim names may contain dots.
pub fn lookup<'a>(claims: &'a serde_json::Map<String, Value>, path: &str) -> Option<&'a Value> {
    if path.starts_with('/') {
        let (first, rest) = split_pointer(path);
        let top = claims.get(&first)?;
        if rest.is_empty() {
            Some(top)
        } else {
            top.pointer(rest)
        }
    } else {
        claims.get(path)
    }
}

fn split_pointer(path: &str) -> (String, &str) {
    let body = &path[1..];
    let end = body.find('/').unwrap_or(body.len());
    // JSON pointer escapes: ~1 is '/', ~0 is '~'.
    let first = body[..end].replace("~1", "/").replace("~0", "~");
    (first, &body[end..])
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(_) | Value::Number(_) => Some(v.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Whether one claim value satisfies one condition.
pub fn matches(value: Option<&Value>, cond: &ClaimMatch) -> bool {
    let Some(value) = value else { return false };
    match cond {
        ClaimMatch::Equals(want) => scalar_text(value).is_some_and(|v| &v == want),
        ClaimMatch::Op(op) => match op {
            ClaimOp::Equals(want) => scalar_text(value).is_some_and(|v| &v == want),
            ClaimOp::OneOf(set) => scalar_text(value).is_some_and(|v| set.contains(&v)),
            ClaimOp::Glob(pattern) => {
                scalar_text(value).is_some_and(|v| WildMatch::new(pattern).matches(&v))
            }
            ClaimOp::Contains(item) => match value {
                Value::Array(items) => items
                    .iter()
                    .any(|i| scalar_text(i).is_some_and(|v| &v == item)),
                Value::String(s) => s.split_whitespace().any(|w| w == item),
                Value::Null | Value::Bool(_) | Value::Number(_) | Value::Object(_) => false,
            },
        },
    }
}

/// Whether every condition holds for these claims.
pub fn all_match(conditions: &ClaimConditions, claims: &serde_json::Map<String, Value>) -> bool {
    conditions
        .iter()
        .all(|(path, cond)| matches(lookup(claims, path), cond))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// Parses conditions from TOML, so the tests cover the shape users write.
    fn rule(toml_claims: &str) -> ClaimConditions {
        #[derive(Deserialize)]
        struct W {
            claims: ClaimConditions,
        }
        let w: W = toml::from_str(&format!("claims = {{ {toml_claims} }}")).unwrap();
        w.claims
    }

    fn rule_allows(
        rule: &ClaimConditions,
        _issuer: &str,
        claims: &serde_json::Map<String, Value>,
    ) -> bool {
        all_match(rule, claims)
    }

    #[test]
    fn github_actions_claims() {
        let c = claims(json!({
            "sub": "repo:acme/etl:ref:refs/heads/main",
            "repository": "acme/etl",
            "repository_owner": "acme",
            "ref": "refs/heads/main",
            "workflow": "nightly",
            "job_workflow_ref": "acme/etl/.github/workflows/nightly.yml@refs/heads/main",
            "run_id": "123456",
        }));
        assert!(rule_allows(
            &rule(r#"repository = "acme/etl", ref = "refs/heads/main""#),
            "gh",
            &c
        ));
        assert!(!rule_allows(
            &rule(r#"repository = "acme/etl", ref = "refs/heads/dev""#),
            "gh",
            &c
        ));
        assert!(rule_allows(
            &rule(
                r#"job_workflow_ref = { glob = "acme/etl/.github/workflows/*@refs/heads/main" }"#
            ),
            "gh",
            &c
        ));
        assert!(!rule_allows(
            &rule(r#"repository = { glob = "acme/e?" }"#),
            "gh",
            &c
        ));
        assert!(rule_allows(
            &rule(r#"repository_owner = { one_of = ["acme", "acme-labs"] }"#),
            "gh",
            &c
        ));
        assert!(
            !rule_allows(&rule(r#"environment = "production""#), "gh", &c),
            "absent claim never matches"
        );
    }

    #[test]
    fn gitlab_claims_with_non_string_values() {
        let c = claims(json!({
            "project_path": "acme/etl", "ref_protected": "true", "pipeline_id": 991, "namespace_path": "acme"
        }));
        assert!(rule_allows(
            &rule(r#"project_path = "acme/etl", ref_protected = "true", pipeline_id = "991""#),
            "gl",
            &c
        ));
    }

    #[test]
    fn kubernetes_nested_claims_via_json_pointer() {
        let c = claims(json!({
            "sub": "system:serviceaccount:ci:etl",
            "kubernetes.io": { "namespace": "ci", "serviceaccount": { "name": "etl", "uid": "u-1" } }
        }));
        assert!(rule_allows(
            &rule(
                r#""/kubernetes.io/namespace" = "ci", "/kubernetes.io/serviceaccount/name" = "etl""#
            ),
            "k8s",
            &c
        ));
        assert!(!rule_allows(
            &rule(r#""/kubernetes.io/namespace" = "prod""#),
            "k8s",
            &c
        ));
        assert!(
            !rule_allows(&rule(r#""kubernetes.io" = "ci""#), "k8s", &c),
            "objects never equal strings"
        );
    }

    #[test]
    fn groups_and_scopes() {
        let c = claims(json!({ "groups": ["dev", "dba"], "scope": "read write" }));
        assert!(rule_allows(
            &rule(r#"groups = { contains = "dba" }"#),
            "x",
            &c
        ));
        assert!(!rule_allows(
            &rule(r#"groups = { contains = "admin" }"#),
            "x",
            &c
        ));
        assert!(rule_allows(
            &rule(r#"scope = { contains = "write" }"#),
            "x",
            &c
        ));
        assert!(
            !rule_allows(&rule(r#"groups = "dba""#), "x", &c),
            "arrays never equal strings"
        );
    }
}
