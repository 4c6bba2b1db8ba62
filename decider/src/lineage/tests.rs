//! Lineage unit tests: which table columns each output and value comes from.

use super::*;

fn col(t: &str, c: &str) -> Source {
    Source::Column {
        tables: vec![crate::classify::names::from_parts(
            t.split('.').map(str::to_owned).collect(),
        )],
        column: c.into(),
    }
}

fn one(sql: &str) -> StatementLineage {
    let mut v = lineage(sql).unwrap();
    assert_eq!(v.len(), 1, "{sql}");
    v.remove(0)
}

fn out(l: &StatementLineage, i: usize) -> &Output {
    match &l.items[i] {
        Item::Output(o) => o,
        Item::Star(t) => panic!("item {i} is {t}.*"),
    }
}

#[test]
fn derived_outputs_name_their_sources() {
    let l = one("select id, upper(p.ssn) as u, ssn::int from clinic.patients p");
    assert_eq!(l.items.len(), 3);
    assert!(out(&l, 0).direct);
    assert!(!out(&l, 1).direct);
    assert!(out(&l, 1).reads.contains(&col("clinic.patients", "ssn")));
    assert!(out(&l, 2).reads.contains(&col("clinic.patients", "ssn")));
    assert!(l.predicates.is_empty());
}

#[test]
fn whole_rows_stars_and_subqueries() {
    let l = one("select row_to_json(p), count(p.*) from patients p group by p.id");
    assert!(out(&l, 0).reads.contains(&Source::WholeRow(ObjectRef {
        schema: None,
        name: "patients".into()
    })));
    assert!(!out(&l, 1).reads.is_empty());
    let l = one("select s.u, s.* from (select upper(ssn) u, name from patients) s");
    assert_eq!(l.items.len(), 3, "{:?}", l.items);
    assert!(out(&l, 0).reads.contains(&col("patients", "ssn")));
    assert!(out(&l, 1).reads.contains(&col("patients", "ssn")));
    let l = one("select *, upper(ssn) from patients");
    assert!(matches!(l.items[0], Item::Star(_)));
}

#[test]
fn ctes_set_operations_windows_and_aggregates() {
    let l = one("with x as (select ssn || '' s from patients) select s from x");
    assert!(out(&l, 0).reads.contains(&col("patients", "ssn")));
    let l = one("select name from a union all select ssn from patients");
    assert!(out(&l, 0).reads.contains(&col("patients", "ssn")));
    assert!(l.predicates.is_empty());
    let l = one("select name from a intersect select ssn from patients");
    assert!(
        l.predicates
            .contains(&(col("patients", "ssn"), Use::Equality))
    );
    let l = one("select string_agg(ssn, ','), rank() over (order by ssn) from patients");
    assert!(out(&l, 0).reads.contains(&col("patients", "ssn")));
    assert!(out(&l, 1).reads.contains(&col("patients", "ssn")));
    let l = one(
        "select case when ssn like '1%' then 'a' else 'b' end, json_build_object('s', ssn), substr(ssn,1,3) from patients",
    );
    for i in 0..3 {
        assert!(out(&l, i).reads.contains(&col("patients", "ssn")), "{i}");
    }
    let l = one("select (select ssn from patients q where q.id = p.id) from patients p");
    assert!(out(&l, 0).reads.contains(&col("patients", "ssn")));
}

#[test]
fn predicates_are_found_wherever_they_hide() {
    for sql in [
        "select id from patients where ssn like '123%'",
        "select id from patients order by ssn",
        "select upper(ssn) u from patients order by u",
        "select ssn from patients order by 1",
        "select id from patients where exists (select 1 from patients q where q.ssn = '1')",
        "select count(*) from patients group by substr(ssn, 1, 3)",
        "select id from patients having max(ssn) > '5'",
        "select distinct on (ssn) id from patients",
        "insert into other select ssn from patients",
        "update other set x = (select ssn from patients limit 1)",
        "create table other as select ssn from patients",
        "select ssn into other from patients",
    ] {
        let l = one(sql);
        assert!(
            l.predicates.contains(&(col("patients", "ssn"), Use::Other)),
            "{sql}: {:?}",
            l.predicates
        );
    }
    let l = one("select p.id from patients p join visits v on p.ssn = v.ssn");
    assert!(
        l.predicates
            .contains(&(col("patients", "ssn"), Use::Equality))
    );
    assert!(!l.predicates.contains(&(col("patients", "ssn"), Use::Other)));
    let l = one("select ssn, count(*) from patients group by ssn");
    assert!(
        l.predicates
            .contains(&(col("patients", "ssn"), Use::Equality))
    );
}

#[test]
fn returning_params_and_unsupported() {
    let l = one("update patients set name = $1 where id = $2 returning ssn, upper(ssn)");
    assert!(l.has_params);
    assert_eq!(l.items.len(), 2);
    assert!(out(&l, 1).reads.contains(&col("patients", "ssn")));
    let l = one("delete from patients where id = 1 returning *");
    assert!(matches!(l.items[0], Item::Star(_)));
    let l = one("copy patients to stdout");
    assert!(l.unsupported.is_none());
    assert!(matches!(l.items[..], [Item::Star(_)]));
    // To a server file: the values are copied where no mask follows.
    assert!(!one("copy patients to '/tmp/x'").predicates.is_empty());
    let l = one("declare c cursor for select upper(ssn) from patients");
    assert!(l.unsupported.is_none());
    assert!(out(&l, 0).reads.contains(&col("patients", "ssn")));
    assert!(
        one("select * from generate_series(1, 3)")
            .unsupported
            .is_some()
    );
    assert!(one("select 1").unsupported.is_none());
}

#[test]
fn prepare_has_the_lineage_of_what_it_prepares() {
    // A protocol-level Bind of the name runs it without an EXECUTE.
    let l = one("prepare p (int) as select id, upper(ssn) from patients where id = $1");
    assert_eq!(l.items.len(), 2);
    assert!(out(&l, 1).reads.contains(&col("patients", "ssn")));
    assert!(l.has_params);
    let l = one("prepare q as select id from patients where ssn like '1%'");
    assert!(l.predicates.contains(&(col("patients", "ssn"), Use::Other)));
}

fn views(defs: &[(&str, &[&str], &str)]) -> Rc<Views> {
    Rc::new(Views::new(
        &defs
            .iter()
            .map(|(name, columns, query)| {
                (
                    (*name).to_owned(),
                    gatehouse_schemas::decision::ViewDefinition {
                        columns: columns.iter().map(|c| (*c).to_owned()).collect(),
                        query: (*query).to_owned(),
                    },
                )
            })
            .collect(),
    ))
}

/// What `pg_get_viewdef` prints under a search_path of `pg_catalog`.
fn clinic_views() -> Rc<Views> {
    views(&[
        (
            "clinic.v",
            &["id", "ssn"],
            " SELECT patients.id, patients.ssn FROM clinic.patients;",
        ),
        (
            "clinic.v2",
            &["id", "s"],
            " SELECT v.id, v.ssn AS s FROM clinic.v;",
        ),
        (
            "clinic.u",
            &["x"],
            " SELECT patients.ssn AS x FROM clinic.patients UNION ALL SELECT visits.summary FROM clinic.visits;",
        ),
        (
            "clinic.renamed",
            &["a", "b"],
            " SELECT patients.id, upper(patients.ssn) AS upper FROM clinic.patients;",
        ),
    ])
}

fn one_with(sql: &str, views: &Rc<Views>) -> StatementLineage {
    let mut v = lineage_with(sql, views).unwrap();
    assert_eq!(v.len(), 1, "{sql}");
    v.remove(0)
}

#[test]
fn views_are_read_as_their_definitions() {
    let vs = clinic_views();
    let ssn = col("clinic.patients", "ssn");
    // Derived outputs, qualified or not, aliased or not, nested, through
    // a set operation, through renamed columns.
    for sql in [
        "select upper(ssn) from v",
        "select x.ssn || '' from clinic.v x",
        "select lower(s) from v2",
        "select substr(x, 1, 3) from u",
        "select b from renamed",
        "select ssn from (select * from v) t",
    ] {
        let l = one_with(sql, &vs);
        assert!(out(&l, 0).reads.contains(&ssn), "{sql}: {:?}", l.items);
        assert!(
            l.unreadable_view.is_none() && l.unsupported.is_none(),
            "{sql}"
        );
    }
    // The view's own columns are kept beside.
    let l = one_with("select upper(ssn) from v", &vs);
    assert!(out(&l, 0).reads.contains(&col("v", "ssn")));
    assert!(
        !out(&one_with("select id from v2", &vs), 0)
            .reads
            .contains(&ssn)
    );
    // `*` over a view: its columns, positions known.
    let l = one_with("select *, upper(s) from v2", &vs);
    assert_eq!(l.items.len(), 3);
    assert!(out(&l, 1).reads.contains(&ssn));
    // A whole row of a view holds what its columns read.
    let l = one_with("select row_to_json(v) from v", &vs);
    assert!(out(&l, 0).reads.contains(&ssn));
    // The relations inside the views are named, for the ingress.
    let l = one_with("select 1 from v2", &vs);
    for t in ["v2", "clinic.v", "clinic.patients"] {
        assert!(
            l.tables.iter().any(|o| o.to_string() == t),
            "{t}: {:?}",
            l.tables
        );
    }
    // Without the definitions, nothing is known (what the ingress is
    // told to look up).
    let l = one("select upper(ssn) from v");
    assert!(!out(&l, 0).reads.contains(&ssn));
}

#[test]
fn predicates_and_copies_through_views_are_found() {
    let vs = clinic_views();
    let ssn = col("clinic.patients", "ssn");
    for sql in [
        "select id from v where ssn like '123%'",
        "select id from v order by ssn",
        "select id from v2 where s = '1'",
        "select count(*) from u group by substr(x, 1, 3)",
        "select id from v where ssn in (select x from u)",
        "insert into other select ssn from v",
        "create table other as select * from v2",
    ] {
        let l = one_with(sql, &vs);
        assert!(
            l.predicates.contains(&(ssn.clone(), Use::Other)),
            "{sql}: {:?}",
            l.predicates
        );
    }
    // A view that filters on a masked column filters for its reader.
    let vs = views(&[(
        "clinic.f",
        &["id"],
        " SELECT patients.id FROM clinic.patients WHERE (patients.ssn ~~ '123%'::text);",
    )]);
    let l = one_with("select id from clinic.f", &vs);
    assert!(
        l.predicates.contains(&(ssn, Use::Other)),
        "{:?}",
        l.predicates
    );
}

#[test]
fn writes_through_views_reach_the_tables_they_show() {
    let vs = clinic_views();
    let ssn = col("clinic.patients", "ssn");
    let l = one_with("insert into v (id, ssn) values (1, '555-12-3456')", &vs);
    assert!(
        l.values
            .iter()
            .any(|(s, o)| s.contains(&ssn) && o == &vec![1]),
        "{:?}",
        l.values
    );
    let l = one_with(
        "update clinic.v2 set s = $1 where id = $2 returning upper(s)",
        &vs,
    );
    assert!(
        l.values.iter().any(|(s, _)| s.contains(&ssn)),
        "{:?}",
        l.values
    );
    assert!(out(&l, 0).reads.contains(&ssn));
    // No column list: any column the view shows.
    let l = one_with("insert into v values (1, '555-12-3456')", &vs);
    assert!(
        l.values
            .iter()
            .any(|(s, o)| s.contains(&ssn) && o == &vec![1]),
        "{:?}",
        l.values
    );
    let l = one_with("update v set id = ssn::int", &vs);
    assert!(l.predicates.contains(&(ssn, Use::Other)));
}

#[test]
fn views_that_cannot_be_read_through_are_flagged() {
    // A definition that does not parse.
    let vs = views(&[("clinic.bad", &["a"], "SELEC nonsense FROM")]);
    let why = one_with("select a from bad", &vs).unreadable_view.unwrap();
    assert!(why.contains("clinic.bad"), "{why}");
    // Columns that do not pair with the definition's outputs.
    let vs = views(&[(
        "clinic.w",
        &["a"],
        " SELECT patients.id, patients.ssn FROM clinic.patients;",
    )]);
    assert!(one_with("select a from w", &vs).unreadable_view.is_some());
    // One name, views in two schemas.
    let vs = views(&[
        (
            "clinic.v",
            &["ssn"],
            " SELECT patients.ssn FROM clinic.patients;",
        ),
        ("other.v", &["ssn"], " SELECT 'x'::text AS ssn;"),
    ]);
    let why = one_with("select ssn from v", &vs).unreadable_view.unwrap();
    assert!(why.contains("clinic.v") && why.contains("other.v"), "{why}");
    assert!(
        one_with("select ssn from other.v", &vs)
            .unreadable_view
            .is_none()
    );
    // Views nested past the bound (a cycle, which PostgreSQL never has).
    let vs = views(&[("clinic.loop", &["x"], " SELECT loop.x FROM clinic.loop;")]);
    let why = one_with("select x from clinic.loop", &vs)
        .unreadable_view
        .unwrap();
    assert!(why.contains("deep"), "{why}");
    // A construct the lineage does not follow, inside a view: unsupported
    // (refused only over tables with masked columns), and named.
    let vs = views(&[(
        "clinic.g",
        &["n"],
        " SELECT g.n FROM generate_series(1, 3) g(n);",
    )]);
    let l = one_with("select n from g", &vs);
    assert!(l.unsupported.unwrap().contains("clinic.g"));
    // A CTE of the statement hides a view of the same name, and a view
    // does not see the statement's CTEs.
    let vs = clinic_views();
    let l = one_with(
        "with v as (select 'x' as ssn) select upper(ssn) from v",
        &vs,
    );
    assert!(!out(&l, 0).reads.contains(&col("clinic.patients", "ssn")));
    let l = one_with("with patients as (select 1 as ssn) select ssn from v2", &vs);
    assert!(l.tables.iter().any(|t| t.to_string() == "clinic.patients"));
}

#[test]
fn relation_names_read_back_exactly() {
    for (schema, name, written) in [
        (Some("clinic"), "v", "clinic.v"),
        (None, "v_2$", "v_2$"),
        (Some("My Schema"), "V.x", "\"My Schema\".\"V.x\""),
        (None, "a\"b", "\"a\"\"b\""),
    ] {
        assert_eq!(relation_name(schema, name), written);
        let back = names::regclass(written).unwrap();
        assert_eq!((back.schema.as_deref(), back.name.as_str()), (schema, name));
    }
}
