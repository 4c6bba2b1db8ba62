//! Functions as the policy sees them: every name through which a statement
//! may run a function (calls anywhere, table functions, CALL, defaults it
//! writes, custom operators, casts to types not built in) is named for the
//! ingress to resolve, for every caller; a function not built into
//! PostgreSQL, or a built-in that reads relations chosen at run time, needs a
//! rule that names it or the policy's trust; the catalog's answer decides
//! what an unqualified name stands for.

mod common;

use std::collections::BTreeSet;

use gatehouse_decider::{Analysis, Policy, analyze};
use gatehouse_schemas::decision::{
    CallKind, CallName, Callee, Decision, DecisionRequest, Resolution, Verdict,
};
use serde_json::json;

/// The call names of a one-statement text, as `kind:schema.name`.
fn calls(sql: &str) -> BTreeSet<String> {
    match analyze(sql) {
        Analysis::Parsed { statements } => statements
            .iter()
            .flat_map(|s| s.calls.iter().map(label))
            .collect(),
        Analysis::Unparsed { error } => panic!("{sql}: {error}"),
    }
}

fn label(c: &CallName) -> String {
    let kind = match c.kind {
        CallKind::Function => "f",
        CallKind::Operator => "o",
        CallKind::Type => "t",
    };
    match &c.schema {
        Some(s) => format!("{kind}:{s}.{}", c.name),
        None => format!("{kind}:{}", c.name),
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn every_place_a_statement_runs_a_function_is_named() {
    for (sql, want) in [
        // Select list, FROM (both spellings of a table function), WHERE,
        // subqueries, CTEs, LATERAL, aggregates and window functions.
        ("select etl.purge()", &["f:etl.purge"][..]),
        ("select * from etl.purge()", &["f:etl.purge"]),
        ("select * from purge() as p", &["f:purge"]),
        ("select * from etl.t where etl.ok(a)", &["f:etl.ok"]),
        ("select (select etl.purge())", &["f:etl.purge"]),
        (
            "with x as (select etl.purge()) select * from x",
            &["f:etl.purge"],
        ),
        (
            "select * from etl.t, lateral etl.rows(t.a) r",
            &["f:etl.rows"],
        ),
        (
            "select etl.agg(a), count(*) over () from etl.t",
            &["f:etl.agg", "f:count"],
        ),
        ("values (etl.purge())", &["f:etl.purge"]),
        // Writes, DECLARE, COPY, EXPLAIN (planning may evaluate a function),
        // PREPARE, CALL.
        ("update etl.t set a = etl.f(a)", &["f:etl.f"]),
        ("insert into etl.t select etl.f(1)", &["f:etl.f"]),
        ("delete from etl.t where etl.f(a)", &["f:etl.f"]),
        ("declare c cursor for select etl.f()", &["f:etl.f"]),
        ("copy (select etl.f()) to stdout", &["f:etl.f"]),
        ("explain select etl.f()", &["f:etl.f"]),
        ("prepare q as select etl.f()", &["f:etl.f"]),
        ("call etl.archive(1)", &["f:etl.archive"]),
        // DEFAULT and CHECK expressions a statement writes (ADD COLUMN runs
        // the default for every row).
        (
            "alter table etl.t add column c int default etl.next_id()",
            &["f:etl.next_id"],
        ),
        (
            "create table etl.t2 (x int default etl.next_id(), check (etl.ok(x)))",
            &["f:etl.next_id", "f:etl.ok"],
        ),
        // SQL text a built-in runs, when the text is a literal.
        (
            "select query_to_xml('select etl.purge()', true, false, '')",
            &["f:query_to_xml", "f:etl.purge"],
        ),
        // Operators PostgreSQL does not spell, and OPERATOR(...).
        ("select 1 #=# 2", &["o:#=#"]),
        ("select 1 operator(etl.#=#) 2", &["o:etl.#=#"]),
        ("select 1 <=> 2", &["o:<=>"]),
        // Casts to types not built in (arrays by element).
        ("select '1'::etl.checked", &["t:etl.checked"]),
        (
            "select cast(a as etl.checked) from etl.t",
            &["t:etl.checked"],
        ),
        ("select a::mytype[] from etl.t", &["t:mytype"]),
        // A call by a grammar keyword's name is a call when quoted or qualified.
        ("select \"coalesce\"(1)", &["f:coalesce"]),
        ("select public.coalesce(1)", &["f:public.coalesce"]),
    ] {
        assert_eq!(calls(sql), set(want), "{sql}");
    }
    // Nothing to look up: built-in types, PostgreSQL's own operators, the
    // grammar's constructs, a DEFAULT the table defines.
    for sql in [
        "select abalance from pgbench_accounts where aid = 42",
        "select a::int, 'x'::text, 'pg_class'::regclass, b::pg_catalog.int4, c::varchar(3)[] from t",
        "select a + 1, a || 'x', j -> 'k', j @> '{}' from t where a <> 2 and b like 'x%'",
        "select current_timestamp, current_user, coalesce(a, 1), greatest(1, 2), nullif(1, 1) from t",
        "insert into pgbench_history (tid, bid, aid, delta, mtime) values (1, 2, 3, 4, current_timestamp)",
        "update pgbench_accounts set abalance = abalance + 5 where aid = 1",
        "insert into etl.t values (default)",
        "table etl.t",
    ] {
        assert_eq!(calls(sql), set(&[]), "{sql}");
    }
}

const POLICY: &str = r#"
version = "functions"
trusted_functions = ["trusted.*", "public.my_fn"]

[[rules]]
id = "etl-rows"
roles = ["etl"]
classes = ["read", "write", "transaction"]
objects = ["etl.*", "pg_catalog.*"]
verdict = "allow"

[[rules]]
id = "etl-purge"
roles = ["etl"]
classes = ["read"]
objects = ["etl.*"]
functions = ["etl.purge", "refresh", "pg_catalog.query_to_xml"]
verdict = "allow"

[[rules]]
id = "no-sleep"
functions = ["pg_sleep*", "evil.*"]
verdict = "block"
reason = "no sleeping, nothing evil"

[[rules]]
id = "research-masked"
roles = ["research"]
classes = ["read"]
objects = ["etl.*"]
functions = ["etl.purge"]
verdict = "mask"

[[rules.mask]]
column = "etl.t.secret"
method = "redact"
"#;

fn policy() -> Policy {
    Policy::parse(POLICY, "functions.toml").unwrap()
}

fn req(role: &str, sql: &str) -> DecisionRequest {
    let mut claims = serde_json::Map::new();
    claims.insert("repository".into(), json!("acme/etl"));
    common::request(role, "job", claims, sql)
}

/// `req` with the catalog's answer for one function name.
fn resolved(
    role: &str,
    sql: &str,
    call: CallName,
    callees: &[(&str, &str, bool)],
) -> DecisionRequest {
    let mut r = req(role, sql);
    r.catalog.functions.push(Resolution {
        call,
        callees: callees
            .iter()
            .map(|(schema, name, builtin)| Callee {
                schema: (*schema).into(),
                name: (*name).into(),
                builtin: *builtin,
            })
            .collect(),
    });
    r
}

fn function(schema: Option<&str>, name: &str) -> CallName {
    CallName {
        kind: CallKind::Function,
        schema: schema.map(str::to_owned),
        name: name.into(),
    }
}

fn blocked(d: &Decision) -> String {
    match &d.verdict {
        Verdict::Block { reason } => reason.clone(),
        other => panic!("expected a block, got {other:?}"),
    }
}

#[test]
fn a_function_not_built_in_needs_a_rule_that_names_it() {
    let p = policy();
    // Qualified outside pg_catalog: not built in, known without the catalog.
    let d = p.decide(&req("etl", "select etl.wipe()"));
    let why = blocked(&d);
    assert!(
        why.contains("etl.wipe") && why.contains("not built into PostgreSQL"),
        "{why}"
    );
    assert_eq!(d.rule, None);
    assert_eq!(d.functions, [function(Some("etl"), "wipe")]);
    // Named by a rule (schema-qualified, or by its name in any schema).
    let d = p.decide(&req("etl", "select etl.purge()"));
    assert_eq!(
        (d.verdict.name(), d.rule.as_deref()),
        ("allow", Some("etl-purge"))
    );
    let d = p.decide(&req("etl", "select * from other.refresh()"));
    assert_eq!(d.verdict.name(), "allow", "{:?}", d.verdict);
    // The naming rule must cover the rest too: it allows reads only.
    let d = p.decide(&req("etl", "insert into etl.t select etl.purge()"));
    assert!(blocked(&d).contains("etl.purge"));
    // Trusted by the policy: any rule that covers the rest allows it.
    for sql in [
        "select trusted.digest('x')",
        "insert into etl.t select public.my_fn()",
    ] {
        let d = p.decide(&req("etl", sql));
        assert_eq!(
            (d.verdict.name(), d.rule.as_deref()),
            ("allow", Some("etl-rows")),
            "{sql}"
        );
    }
    // Another role's rule names nothing for this caller.
    assert!(blocked(&p.decide(&req("other", "select etl.purge()"))).contains("default deny"));
}

#[test]
fn the_catalog_says_what_an_unqualified_name_runs() {
    let p = policy();
    // Without the catalog's answer an unqualified name is taken for the
    // built-in one, and named for the ingress to look up.
    let d = p.decide(&req("etl", "select wipe() from etl.t"));
    assert_eq!(
        (d.verdict.name(), d.rule.as_deref()),
        ("allow", Some("etl-rows"))
    );
    assert_eq!(d.functions, [function(None, "wipe")]);
    // The catalog says it may be a user's function: refused, naming it.
    let r = resolved(
        "etl",
        "select wipe() from etl.t",
        function(None, "wipe"),
        &[("etl", "wipe", false)],
    );
    let why = blocked(&p.decide(&r));
    assert!(why.contains("etl.wipe"), "{why}");
    // A user's function shadowing a built-in's name in another schema.
    let r = resolved(
        "etl",
        "select lower(a) from etl.t",
        function(None, "lower"),
        &[("pg_catalog", "lower", true), ("public", "lower", false)],
    );
    assert!(blocked(&p.decide(&r)).contains("public.lower"));
    // ... which a rule may name.
    let r = resolved(
        "etl",
        "select refresh() from etl.t",
        function(None, "refresh"),
        &[("etl", "refresh", false)],
    );
    assert_eq!(p.decide(&r).verdict.name(), "allow");
    // No such function: left to the server, which reports it.
    let r = resolved(
        "etl",
        "select etl.nosuch()",
        function(Some("etl"), "nosuch"),
        &[],
    );
    assert_eq!(p.decide(&r).verdict.name(), "allow");
}

#[test]
fn operators_and_casts_run_the_functions_behind_them() {
    let p = policy();
    let op = CallName {
        kind: CallKind::Operator,
        schema: None,
        name: "#=#".into(),
    };
    let r = resolved(
        "etl",
        "select a #=# 1 from etl.t",
        op.clone(),
        &[("etl", "evil_eq", false)],
    );
    let why = blocked(&p.decide(&r));
    assert!(
        why.contains("etl.evil_eq") && why.contains("operator #=#"),
        "{why}"
    );
    let r = resolved(
        "etl",
        "select a #=# 1 from etl.t",
        op,
        &[("pg_catalog", "int4eq", true)],
    );
    assert_eq!(p.decide(&r).verdict.name(), "allow");
    let ty = CallName {
        kind: CallKind::Type,
        schema: Some("etl".into()),
        name: "checked".into(),
    };
    let r = resolved(
        "etl",
        "select '1'::etl.checked",
        ty.clone(),
        &[("etl", "ok", false)],
    );
    let why = blocked(&p.decide(&r));
    assert!(
        why.contains("etl.ok") && why.contains("type etl.checked"),
        "{why}"
    );
    // A domain whose constraints and casts are all built in runs nothing else.
    let r = resolved(
        "etl",
        "select '1'::etl.checked",
        ty,
        &[("pg_catalog", "domain_in", true)],
    );
    assert_eq!(p.decide(&r).verdict.name(), "allow");
}

#[test]
fn built_ins_that_read_relations_chosen_at_run_time_need_naming_too() {
    let p = policy();
    for sql in [
        "select cursor_to_xml('c', 10, false, false, '')",
        "select table_to_xml('etl.t', true, false, '')",
        "select * from ts_stat('select v from etl.docs')",
        "select database_to_xml(true, false, '')",
    ] {
        let why = blocked(&p.decide(&req("etl", sql)));
        assert!(
            why.contains("reads relations chosen at run time"),
            "{sql}: {why}"
        );
    }
    // query_to_xml is named by etl-purge (reads only, of etl.* as its text says).
    let d = p.decide(&req(
        "etl",
        "select query_to_xml('select a from etl.t', true, false, '')",
    ));
    assert_eq!(d.rule.as_deref(), Some("etl-purge"), "{:?}", d.verdict);
    let d = p.decide(&req(
        "etl",
        "select query_to_xml('select * from hr.pay', true, false, '')",
    ));
    assert_eq!(
        d.verdict.name(),
        "block",
        "the text's own reads must be covered too"
    );
}

#[test]
fn restrictive_rules_fire_on_any_function_as_written_or_as_run() {
    let p = policy();
    for sql in [
        "select pg_sleep(1)",
        "select pg_catalog.pg_sleep(1) from etl.t",
    ] {
        assert_eq!(
            p.decide(&req("etl", sql)).rule.as_deref(),
            Some("no-sleep"),
            "{sql}"
        );
    }
    // An unqualified name the catalog resolves into a blocked schema.
    let r = resolved(
        "etl",
        "select boom()",
        function(None, "boom"),
        &[("evil", "boom", false)],
    );
    assert_eq!(p.decide(&r).rule.as_deref(), Some("no-sleep"));
}

#[test]
fn masked_callers_are_refused_what_masking_cannot_follow_even_when_named() {
    let p = policy();
    for sql in [
        "select etl.purge()",
        "select query_to_xml('select secret from etl.t', true, false, '')",
        "select cursor_to_xml('c', 1, false, false, '')",
    ] {
        let why = blocked(&p.decide(&req("research", sql)));
        assert!(
            why.starts_with("masking could not be guaranteed"),
            "{sql}: {why}"
        );
    }
    // The catalog's answer for an unqualified name counts the same way.
    let r = resolved(
        "research",
        "select id, initcap(secret) from etl.t",
        function(None, "initcap"),
        &[
            ("pg_catalog", "initcap", true),
            ("public", "initcap", false),
        ],
    );
    assert!(blocked(&p.decide(&r)).contains("public.initcap"));
}

#[test]
fn statements_that_call_nothing_ask_nothing_of_the_catalog() {
    let p = policy();
    for sql in [
        "select abalance from etl.accounts where aid = 7",
        "update etl.accounts set abalance = abalance + 1 where aid = 7",
        "insert into etl.history (aid, mtime) values (7, current_timestamp)",
    ] {
        let d = p.decide(&req("etl", sql));
        assert!(d.functions.is_empty(), "{sql}: {:?}", d.functions);
        assert!(d.relations.is_empty(), "{sql}");
    }
}

#[test]
fn policy_check_rejects_bad_function_patterns_and_unknown_keys() {
    let with = |line: &str| {
        POLICY.replacen(
            "trusted_functions = [\"trusted.*\", \"public.my_fn\"]",
            line,
            1,
        )
    };
    for (text, want) in [
        (with("trusted_functions = [\"a.b.c\"]"), "trusted_functions"),
        (with("trusted_function = [\"x\"]"), "unknown field"),
        (
            POLICY.replacen("\"refresh\"", "\"\"", 1),
            "must be name or schema.name",
        ),
    ] {
        let err = Policy::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
}
