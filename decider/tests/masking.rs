//! Mask verdicts: which output columns are masked and how, exemptions, data
//! classes, and the statements refused because masking could not be guaranteed.

mod common;

use gatehouse_decider::Policy;
use gatehouse_schemas::decision::{DecisionRequest, MaskMethod, Verdict};
use serde_json::json;

const POLICY: &str = r#"
version = "mask-test"

[[data_classes]]
name = "pii.ssn"
columns = ["clinic.patients.ssn"]

[[data_classes]]
name = "pii.email"
columns = ["clinic.*.email"]

[[rules]]
id = "nightly-read"
roles = ["etl"]
classes = ["read", "write", "cursor", "copy-out", "transaction", "prepared"]
objects = ["clinic.*"]
verdict = "allow"

[[rules]]
id = "mask-pii"
roles = ["etl"]
verdict = "mask"
exempt = { groups = { contains = "phi-readers" } }

[[rules.mask]]
class = "pii.ssn"
method = "partial"
keep_last = 4

[[rules.mask]]
class = "pii.email"
method = "email"

[[rules.mask]]
column = "*.*.card_number"
method = "hash"
allow_equality = true
"#;

fn req(sql: &str, groups: &[&str]) -> DecisionRequest {
    let mut claims = serde_json::Map::new();
    claims.insert("repository".into(), json!("acme/etl"));
    claims.insert("groups".into(), json!(groups));
    common::request("etl", "job", claims, sql)
}

fn policy() -> Policy {
    Policy::parse(POLICY, "test").unwrap()
}

fn verdict(sql: &str) -> Verdict {
    policy().decide(&req(sql, &[])).verdict
}

/// Masked output positions and method names.
fn outputs(sql: &str) -> Vec<(u32, &'static str)> {
    match verdict(sql) {
        Verdict::Mask {
            outputs, columns, ..
        } => {
            assert!(!columns.is_empty());
            outputs
                .iter()
                .map(|o| (o.position, o.method.name()))
                .collect()
        }
        other => panic!("{sql}: {other:?}"),
    }
}

fn refused(sql: &str) -> String {
    match verdict(sql) {
        Verdict::Block { reason } => {
            assert!(
                reason.starts_with("masking could not be guaranteed"),
                "{sql}: {reason}"
            );
            reason
        }
        other => panic!("{sql}: expected a refusal, got {other:?}"),
    }
}

#[test]
fn masked_callers_get_mask_verdicts_with_columns_from_classes_and_patterns() {
    match verdict("select id, ssn, email from clinic.patients") {
        Verdict::Mask {
            columns, outputs, ..
        } => {
            let ssn = columns
                .iter()
                .find(|c| c.column == "clinic.patients.ssn")
                .unwrap();
            assert_eq!(
                ssn.method,
                MaskMethod::Partial {
                    keep_first: 0,
                    keep_last: 4
                }
            );
            assert_eq!(ssn.class.as_deref(), Some("pii.ssn"));
            assert!(columns.iter().any(|c| c.column == "clinic.*.email"));
            assert!(columns.iter().any(|c| c.column == "*.*.card_number"));
            // Direct columns are masked by position too when the list is known.
            let pos: Vec<u32> = outputs.iter().map(|o| o.position).collect();
            assert_eq!(pos, [1, 2]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn exempt_callers_read_unmasked() {
    let d = policy().decide(&req("select ssn from clinic.patients", &["phi-readers"]));
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.rule.as_deref(), Some("nightly-read"));
}

#[test]
fn derived_outputs_are_masked_by_position() {
    for sql in [
        "select id, upper(ssn) from clinic.patients",
        "select id, ssn || '' from clinic.patients",
        "select id, ssn::int from clinic.patients",
        "select id, substr(ssn, 1, 3) from clinic.patients",
        "select id, string_agg(ssn, ',') from clinic.patients group by id",
        "select id, case when ssn like '1%' then 'a' end from clinic.patients",
        "select id, json_build_object('s', ssn) from clinic.patients",
        "select id, first_value(ssn) over (partition by id) from clinic.patients",
        "select id, s from (select id, lower(ssn) s from clinic.patients) x",
        "with c as (select id, ssn as s from clinic.patients) select id, s from c",
        "select id, name from clinic.visits union all select id, ssn from clinic.patients",
    ] {
        assert_eq!(outputs(sql), [(1, "partial")], "{sql}");
    }
    // A whole row may hold every masked column of its table: the strictest.
    assert_eq!(
        outputs("select id, row_to_json(p) from clinic.patients p"),
        [(1, "hash")]
    );
    // A data class pattern with a glob over tables.
    assert_eq!(
        outputs("select lower(email) from clinic.staff"),
        [(0, "email")]
    );
    // Several masked columns in one value: the strictest method.
    assert_eq!(
        outputs("select ssn || card_number from clinic.patients"),
        [(0, "hash")]
    );
    // Nothing masked read: no outputs.
    assert_eq!(outputs("select id, name from clinic.patients"), []);
}

#[test]
fn predicates_on_masked_columns_are_refused() {
    for sql in [
        "select id from clinic.patients where ssn like '123%'",
        "select id from clinic.patients where ssn = '123-45-6789'",
        "select id from clinic.patients order by ssn",
        "select count(*) from clinic.patients group by ssn",
        "select id from clinic.patients p join clinic.visits v on p.ssn = v.ssn",
        "select id from clinic.patients where substr(ssn, 1, 3) = '123'",
        "select distinct ssn from clinic.patients",
        "insert into clinic.visits (note) select ssn from clinic.patients",
        "select ssn from clinic.patients intersect select '123-45-6789'",
    ] {
        let reason = refused(sql);
        assert!(reason.contains("clinic.patients.ssn"), "{sql}: {reason}");
    }
    // A hash rule that allows equality: equality joins and group-bys pass,
    // comparisons with a value do not.
    assert!(matches!(
        verdict(
            "select c.id from clinic.cards c join clinic.payments p on c.card_number = p.card_number"
        ),
        Verdict::Mask { .. }
    ));
    assert!(matches!(
        verdict("select card_number, count(*) from clinic.cards group by card_number"),
        Verdict::Mask { .. }
    ));
    refused("select id from clinic.cards where card_number = '4111111111111111'");
}

#[test]
fn outputs_that_cannot_be_placed_are_refused() {
    refused("select *, upper(ssn) from clinic.patients");
    refused("select * from clinic.patients p, lateral generate_series(1, 2) g");
    // A direct column after * is found by its table OID: allowed.
    assert!(matches!(
        verdict("select *, ssn from clinic.patients"),
        Verdict::Mask { .. }
    ));
    // COPY TO STDOUT and cursors are masked by position like their query;
    // what their query cannot mask exactly is refused.
    assert_eq!(
        outputs("copy (select id, upper(ssn) from clinic.patients) to stdout"),
        [(1, "partial")]
    );
    assert_eq!(
        outputs("copy clinic.patients (id, ssn) to stdout with (format csv)"),
        [(1, "partial")]
    );
    assert_eq!(
        outputs("declare c cursor for select id, upper(ssn) from clinic.patients"),
        [(1, "partial")]
    );
    refused("declare c cursor for select id from clinic.patients where ssn like '1%'");
    refused("copy (select id from clinic.patients order by ssn) to stdout");
    refused("copy clinic.patients to stdout with (encoding 'latin1')");
}

#[test]
fn returning_is_masked() {
    assert_eq!(
        outputs("update clinic.patients set name = 'x' where id = 1 returning id, ssn, upper(ssn)"),
        [(1, "partial"), (2, "partial")]
    );
}

#[test]
fn a_statement_held_for_approval_carries_its_masks() {
    // The same policy, with deletes of every row held for a DBA.
    let policy = Policy::parse(
        &format!(
            "{POLICY}\n[[rules]]\nid = \"unbounded-delete\"\nrisks = [\"delete_without_where\"]\n\
             verdict = \"approve\"\nreason = \"deletes every row\"\napprovers = \"dba\"\n"
        ),
        "test",
    )
    .unwrap();
    let sql = "delete from clinic.patients returning id, ssn, upper(ssn)";
    match policy.decide(&req(sql, &[])).verdict {
        Verdict::Approve {
            approvers,
            columns,
            outputs,
            ..
        } => {
            assert_eq!(approvers, "dba");
            assert!(
                columns.iter().any(|c| c.column == "clinic.patients.ssn"),
                "{columns:?}"
            );
            let placed: Vec<_> = outputs
                .iter()
                .map(|o| (o.position, o.method.name()))
                .collect();
            assert_eq!(placed, [(1, "partial"), (2, "partial")]);
        }
        other => panic!("{sql}: {other:?}"),
    }
    // An exempt caller's held statement carries none.
    match policy.decide(&req(sql, &["phi-readers"])).verdict {
        v @ Verdict::Approve { .. } => assert!(v.masks().is_none(), "{v:?}"),
        other => panic!("{sql}: {other:?}"),
    }
    // What cannot be masked exactly is refused, held or not.
    assert!(matches!(
        policy
            .decide(&req(
                "delete from clinic.patients returning *, upper(ssn)",
                &[]
            ))
            .verdict,
        Verdict::Block { .. }
    ));
}

#[test]
fn a_mask_rules_classes_do_not_limit_what_it_masks() {
    // The mask rule allows reads only; another rule allows COPY and cursors.
    let policy = Policy::parse(
        r#"
version = "classes"

[[rules]]
id = "exports"
roles = ["etl"]
classes = ["copy-out", "cursor", "write"]
objects = ["clinic.*"]
verdict = "allow"

[[rules]]
id = "mask-ssn"
roles = ["etl"]
classes = ["read"]
objects = ["clinic.*"]
verdict = "mask"

[[rules.mask]]
column = "clinic.patients.ssn"
method = "null"
"#,
        "test",
    )
    .unwrap();
    for sql in [
        "copy (select id, upper(ssn) from clinic.patients) to stdout",
        "declare c cursor for select id, upper(ssn) from clinic.patients",
        "update clinic.patients set name = 'x' where id = 1 returning id, upper(ssn)",
    ] {
        match policy.decide(&req(sql, &[])).verdict {
            Verdict::Mask { outputs, .. } => {
                let placed: Vec<_> = outputs.iter().map(|o| o.position).collect();
                assert_eq!(placed, [1], "{sql}");
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
}

/// The value tokens of `sql` each decision lists (masked, clear), by text.
fn placed(
    sql: &str,
) -> (
    Vec<(String, String)>,
    Vec<String>,
    gatehouse_schemas::decision::ValueMasks,
) {
    let d = policy().decide(&req(sql, &[]));
    let v = d
        .values
        .expect("a masked caller's decision places its values");
    let tokens = gatehouse_decider::values::value_tokens(sql).unwrap();
    let text = |i: u32| {
        let t = &tokens[i as usize];
        sql[t.start..t.end].to_owned()
    };
    let masked = v
        .literals
        .iter()
        .map(|m| (text(m.index), m.method.name().to_owned()))
        .collect();
    let clear = v.clear_literals.iter().map(|i| text(*i)).collect();
    (masked, clear, v)
}

#[test]
fn values_sent_towards_masked_columns_are_placed() {
    let s = |v: &str| v.to_owned();
    let p = |v: &str, m: &str| (v.to_owned(), m.to_owned());
    // INSERT: by the column list; several rows.
    let (masked, clear, _) = placed(
        "insert into clinic.patients (id, name, ssn) values (1, 'ann', '123-45-6789'), (2, 'bob', '987-65-4321')",
    );
    assert_eq!(
        masked,
        [p("'123-45-6789'", "partial"), p("'987-65-4321'", "partial")]
    );
    assert_eq!(clear, [s("1"), s("'ann'"), s("2"), s("'bob'")]);
    // No column list: any column of a table with masked ones (the strictest).
    let (masked, clear, _) = placed("insert into clinic.patients values (3, 'cy', '111-22-3333')");
    assert_eq!(masked.len(), 3, "{masked:?}");
    assert!(clear.is_empty());
    // UPDATE SET, and a WHERE on an unmasked column.
    let (masked, clear, v) =
        placed("update clinic.patients set ssn = $1, name = 'x' where id = $2");
    assert!(masked.is_empty());
    assert_eq!(clear, [s("'x'")]);
    assert_eq!(v.params.len(), 1);
    assert_eq!(v.params[0].index, 1);
    assert_eq!(v.params[0].column, "clinic.patients.ssn");
    assert_eq!(v.clear_params, [2]);
    // ON CONFLICT ... excluded: the caller's own values, into the same column.
    let sql = "insert into clinic.patients (id, ssn) values (4, '222-33-4444') \
               on conflict (id) do update set ssn = excluded.ssn, email = 'a@b.org'";
    let (masked, clear, _) = placed(sql);
    assert_eq!(
        masked,
        [p("'222-33-4444'", "partial"), p("'a@b.org'", "email")]
    );
    assert_eq!(clear, [s("4")]);
    assert!(matches!(
        policy().decide(&req(sql, &[])).verdict,
        Verdict::Mask { .. }
    ));
    // Copying a stored masked value on conflict is still refused.
    assert!(matches!(
        verdict(
            "insert into clinic.patients (id) values (5) on conflict (id) do update set name = clinic.patients.ssn"
        ),
        Verdict::Block { .. }
    ));
    // Whether a row conflicts on a masked column tells whether a value is
    // stored: refused.
    assert!(matches!(
        verdict(
            "insert into clinic.patients (id, ssn) values (6, '1') on conflict (ssn) do nothing"
        ),
        Verdict::Block { .. }
    ));
    // A refused comparison: its value is masked in the record of the refusal.
    let (masked, clear, _) =
        placed("select id from clinic.patients where ssn = '123-45-6789' and id > 7");
    assert_eq!(masked, [p("'123-45-6789'", "partial")]);
    assert_eq!(clear, [s("7")]);
    // A value passed to a function Gatehouse does not know is withheld.
    let (masked, clear, v) =
        placed("select set_ssn(1, '123-45-6789'), upper('x') from clinic.visits");
    assert!(masked.is_empty());
    assert_eq!(clear, [s("'x'")]);
    assert_eq!(v.values, 3);
    // Unparsed text: nothing placed, everything withheld.
    let d = policy().decide(&req(
        "insert into clinic.patients values ('123-45-6789' ,,",
        &[],
    ));
    let v = d.values.unwrap();
    assert!(v.literals.is_empty() && v.clear_literals.is_empty());
}

#[test]
fn an_exempt_or_unmasked_caller_gets_no_value_placement() {
    let d = policy().decide(&req(
        "insert into clinic.patients (ssn) values ('1')",
        &["phi-readers"],
    ));
    assert!(d.values.is_none());
    let mut claims = serde_json::Map::new();
    claims.insert("repository".into(), json!("acme/etl"));
    let d = policy().decide(&common::request("other", "job", claims, "select 1"));
    assert!(d.values.is_none());
}

#[test]
fn detectors_scan_named_columns_or_every_text_column() {
    let policy = Policy::parse(
        r#"
version = "detect"

[[rules]]
id = "reads"
roles = ["etl"]
classes = ["read"]
objects = ["clinic.*"]
verdict = "allow"

[[rules]]
id = "scan-notes"
roles = ["etl"]
verdict = "mask"
detectors = ["ssn", "pan"]
detect_columns = ["clinic.*.notes"]

[[rules]]
id = "scan-all"
roles = ["etl"]
verdict = "mask"
detectors = ["phone", "email", "phone"]
"#,
        "test",
    )
    .unwrap();
    match policy
        .decide(&req("select id, notes from clinic.patients", &[]))
        .verdict
    {
        Verdict::Mask {
            columns, detect, ..
        } => {
            use gatehouse_schemas::decision::Detector;
            assert_eq!(detect, [Detector::Email, Detector::Phone]);
            assert_eq!(columns.len(), 1);
            assert_eq!(columns[0].column, "clinic.*.notes");
            assert_eq!(
                columns[0].method,
                MaskMethod::Detect {
                    detectors: vec![Detector::Ssn, Detector::Pan]
                }
            );
        }
        other => panic!("{other:?}"),
    }
    // A value derived from a scanned column is scanned by position.
    match policy
        .decide(&req("select id, upper(notes) from clinic.patients", &[]))
        .verdict
    {
        Verdict::Mask { outputs, .. } => {
            assert_eq!(outputs.len(), 1);
            assert_eq!(outputs[0].position, 1);
            assert!(matches!(outputs[0].method, MaskMethod::Detect { .. }));
        }
        other => panic!("{other:?}"),
    }
    // Detectors are no exact mask: no statement is refused for them.
    assert!(matches!(
        policy
            .decide(&req(
                "select id from clinic.patients where notes like '%1%'",
                &[]
            ))
            .verdict,
        Verdict::Mask { .. }
    ));
}

#[test]
fn detector_names_are_checked_with_their_line() {
    let err = Policy::parse(
        r#"
[[rules]]
id = "scan"
verdict = "mask"
detectors = ["ssn", "iban"]
"#,
        "p.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 5"), "{err}");
    assert!(err.contains("iban") && err.contains("pan"), "{err}");
    for (body, want) in [
        (
            "verdict = \"allow\"\ndetectors = [\"ssn\"]",
            "detectors only make sense",
        ),
        (
            "verdict = \"mask\"\ndetect_columns = [\"a.b.c\"]",
            "column or detectors",
        ),
        (
            "verdict = \"mask\"\ndetectors = [\"ssn\"]\ndetect_columns = [\"notes\"]",
            "schema.table.column",
        ),
    ] {
        let err = Policy::parse(&format!("[[rules]]\nid = \"r\"\n{body}\n"), "p.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{body}: {err}");
    }
}

/// A masked caller's decision names the relations it reads, for the ingress
/// to look views up; decided again with their definitions, a value derived
/// from a view's masked column is masked, a filter on it refused, and a
/// definition that cannot be read refuses the statement.
#[test]
fn views_are_decided_through_their_definitions() {
    use gatehouse_schemas::decision::ViewDefinition;
    let p = policy();
    let sql = "select id, upper(ssn) from clinic.v2";
    let d = p.decide(&req(sql, &[]));
    assert_eq!(d.relations, ["clinic.v2"]);
    // Not knowing the view, the decider sees no masked column.
    match &d.verdict {
        Verdict::Mask { outputs, .. } => assert!(outputs.is_empty(), "{outputs:?}"),
        other => panic!("{other:?}"),
    }
    // An exempt caller: no relations, nothing to look up.
    assert!(p.decide(&req(sql, &["phi-readers"])).relations.is_empty());

    let view = |columns: &[&str], query: &str| ViewDefinition {
        columns: columns.iter().map(|c| (*c).to_owned()).collect(),
        query: query.into(),
    };
    let mut r = req(sql, &[]);
    r.catalog.views.insert(
        "clinic.v2".into(),
        view(&["id", "ssn"], " SELECT v.id, v.ssn FROM clinic.v;"),
    );
    // One level known: the view inside it is named for the next look-up.
    let d = p.decide(&r);
    assert!(
        d.relations.contains(&"clinic.v".to_owned()),
        "{:?}",
        d.relations
    );
    r.catalog.views.insert(
        "clinic.v".into(),
        view(
            &["id", "ssn"],
            " SELECT patients.id, patients.ssn FROM clinic.patients;",
        ),
    );
    let d = p.decide(&r);
    match &d.verdict {
        Verdict::Mask { outputs, .. } => {
            assert_eq!(outputs.len(), 1, "{outputs:?}");
            assert_eq!(outputs[0].position, 1);
            assert_eq!(outputs[0].source, "clinic.patients.ssn");
        }
        other => panic!("{other:?}"),
    }
    // A filter through the views is refused; its value masked in evidence.
    r.sql = "select id from clinic.v2 where ssn = '123-45-6789'".into();
    let d = p.decide(&r);
    match &d.verdict {
        Verdict::Block { reason } => assert!(reason.contains("masking could not be guaranteed")),
        other => panic!("{other:?}"),
    }
    assert_eq!(d.values.unwrap().literals.len(), 1);
    // A definition the decider cannot read: refused, naming the view.
    r.sql = sql.into();
    r.catalog
        .views
        .insert("clinic.v".into(), view(&["id", "ssn"], "SELECT FROM WHERE"));
    match p.decide(&r).verdict {
        Verdict::Block { reason } => assert!(reason.contains("clinic.v"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn masked_values_passed_to_functions_with_effects_are_refused() {
    // A role allowed to call functions with effects.
    let p = Policy::parse(
        &POLICY.replacen(
            "verdict = \"allow\"",
            "risks = [\"side_effect_function\"]\nverdict = \"allow\"",
            1,
        ),
        "test",
    )
    .unwrap();
    let verdict = |sql: &str| p.decide(&req(sql, &[])).verdict;
    // Each would carry the value out of the statement: into a setting read
    // back later, to a listener, into a large object, as a lock key.
    for sql in [
        "select set_config('app.x', ssn, false) from clinic.patients",
        "select id from clinic.patients where pg_notify('c', ssn) is null",
        "select lo_from_bytea(0, convert_to(ssn, 'UTF8')) from clinic.patients",
        "select pg_advisory_lock(hashtext(ssn)) from clinic.patients",
        "select upper(set_config('app.x', (select ssn from clinic.patients limit 1), false))",
    ] {
        match verdict(sql) {
            Verdict::Block { reason } => assert!(
                reason.starts_with("masking could not be guaranteed")
                    && reason.contains("clinic.patients.ssn")
                    && reason.contains("effects"),
                "{sql}: {reason}"
            ),
            other => panic!("{sql}: {other:?}"),
        }
    }
    // The same functions given only unmasked values are the allow rule's business.
    assert!(
        matches!(
            verdict("select set_config('app.x', name, false) from clinic.patients"),
            Verdict::Mask { .. }
        ),
        "an unmasked column is no reason to refuse"
    );
}

#[test]
fn statistics_and_other_sessions_statements_are_refused_to_masked_callers() {
    for sql in [
        "select most_common_vals from pg_stats where attname = 'ssn'",
        "select * from pg_catalog.pg_stats_ext",
        "select * from pg_stats_ext_exprs",
        "select query from pg_stat_activity",
        "select query from public.pg_stat_statements",
        "select * from pg_stat_get_activity(null)",
        "select pg_stat_get_backend_activity(1)",
    ] {
        let reason = refused(sql);
        assert!(reason.contains("pg_st"), "{sql}: {reason}");
    }
    // An exempt caller is not refused for masking.
    let d = policy().decide(&req("select query from pg_stat_activity", &["phi-readers"]));
    assert!(
        !matches!(&d.verdict, Verdict::Block { reason } if reason.contains("masking")),
        "{:?}",
        d.verdict
    );
}

#[test]
fn masked_callers_decisions_name_the_functions_called() {
    use gatehouse_schemas::decision::CallKind;
    let p = policy();
    let names = |d: &gatehouse_schemas::decision::Decision| -> Vec<String> {
        d.functions.iter().map(ToString::to_string).collect()
    };
    let d = p.decide(&req(
        "select upper(ssn), clinic.f(id), \"Odd\"(1) from clinic.patients, lateral g(id) x",
        &[],
    ));
    for f in ["upper", "clinic.f", "Odd", "g"] {
        assert!(names(&d).contains(&f.to_owned()), "{f}: {:?}", d.functions);
    }
    assert!(d.functions.iter().all(|c| c.kind == CallKind::Function));
    let d = p.decide(&req("call clinic.archive(1)", &[]));
    assert_eq!(names(&d), ["clinic.archive"]);
    // Functions inside the views read through are named too.
    let mut r = req("select id from clinic.v", &[]);
    r.catalog.views.insert(
        "clinic.v".into(),
        gatehouse_schemas::decision::ViewDefinition {
            columns: vec!["id".into()],
            query: " SELECT clinic.leak(patients.ssn) AS id FROM clinic.patients;".into(),
        },
    );
    assert!(
        names(&p.decide(&r)).contains(&"clinic.leak".to_owned()),
        "{:?}",
        p.decide(&r).functions
    );
    // A caller no mask rule applies to has its functions looked up too (not
    // those of views: it does not read through them).
    assert_eq!(
        names(&p.decide(&req("select clinic.f(1)", &["phi-readers"]))),
        ["clinic.f"]
    );
}
