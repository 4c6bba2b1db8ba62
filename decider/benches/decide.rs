//! The decider's hot path: analysing and deciding one typical statement.
//! `cargo bench -p gatehouse-decider` prints the time per decision.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_decider::{Policy, Query, analyze};
use gatehouse_schemas::{Identity, ProtocolKind};

// The allocator the `gatehouse` binary runs with, so the figures are its figures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const POLICY: &str = include_str!("../../deploy/policy.example.toml");

fn identity() -> Identity {
    let mut claims = serde_json::Map::new();
    claims.insert("repository".into(), "acme/etl".into());
    claims.insert("ref".into(), "refs/heads/main".into());
    Identity {
        issuer: "gatehouse-dev".into(),
        subject: "repo:acme/etl:ref:refs/heads/main".into(),
        key_id: None,
        algorithm: "EdDSA".into(),
        claims,
    }
}

fn bench(c: &mut Criterion) {
    let policy = Policy::parse(POLICY, "example").unwrap();
    let id = identity();
    let prepared = BTreeMap::new();
    let typical = "SELECT p.full_name, b.amount_cents FROM clinic.patients p \
                   JOIN clinic.billing b ON b.patient_id = p.id WHERE p.id = $1";
    let query = |sql| Query {
        role: "etl",
        identity: &id,
        protocol: ProtocolKind::Parse,
        sql,
        function_oid: None,
        prepared: &prepared,
        catalog: &gatehouse_decider::engine::NO_CATALOG,
    };
    assert_eq!(policy.decide(query(typical)).verdict.name(), "allow");
    c.bench_function("analyze typical select", |b| {
        b.iter(|| analyze(black_box(typical)))
    });
    // The parser alone, for reference: the floor under any uncached decision.
    c.bench_function("sqlparser tokenize+parse typical", |b| {
        b.iter(|| {
            sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
                .try_with_sql(black_box(typical))
                .unwrap()
                .parse_statements()
                .unwrap()
        })
    });
    c.bench_function("sqlparser tokenize typical", |b| {
        b.iter(|| {
            sqlparser::tokenizer::Tokenizer::new(
                &sqlparser::dialect::PostgreSqlDialect {},
                black_box(typical),
            )
            .tokenize_with_location()
            .unwrap()
        })
    });
    c.bench_function("decide typical select (uncached)", |b| {
        b.iter(|| policy.decide(query(black_box(typical))))
    });
    let short = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213";
    c.bench_function("decide pgbench -S statement (uncached)", |b| {
        b.iter(|| policy.decide(query(black_box(short))))
    });
    // A statement that calls a function: the first question (without the
    // catalog), and the second one when the catalog names a user's function.
    let called =
        "SELECT lower(p.full_name), clinic.score(p.id) FROM clinic.patients p WHERE p.id = $1";
    c.bench_function("decide select calling functions (uncached, first)", |b| {
        b.iter(|| policy.decide(query(black_box(called))))
    });
    let facts = gatehouse_schemas::decision::CatalogFacts {
        views: BTreeMap::new(),
        functions: policy
            .decide(query(called))
            .functions
            .into_iter()
            .map(|call| gatehouse_schemas::decision::Resolution {
                callees: vec![gatehouse_schemas::decision::Callee {
                    schema: call.schema.clone().unwrap_or_else(|| "pg_catalog".into()),
                    name: call.name.clone(),
                    builtin: call.schema.is_none(),
                }],
                call,
            })
            .collect(),
    };
    c.bench_function("decide select calling functions (with the catalog)", |b| {
        b.iter(|| {
            policy.decide(Query {
                catalog: &facts,
                ..query(black_box(called))
            })
        })
    });
    // The ingress's verdict-cache key for a text it has not seen: the scanner,
    // and the tokenizer it replaced.
    c.bench_function("shape pgbench -S statement", |b| {
        b.iter(|| gatehouse_decider::shape(black_box(short)))
    });
    c.bench_function("tokenizer shape pgbench -S statement", |b| {
        b.iter(|| gatehouse_decider::shape::tokenizer_shape(black_box(short)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
