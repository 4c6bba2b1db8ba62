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
    };
    assert_eq!(policy.decide(query(typical)).verdict.name(), "allow");
    c.bench_function("analyze typical select", |b| {
        b.iter(|| analyze(black_box(typical)))
    });
    c.bench_function("decide typical select (uncached)", |b| {
        b.iter(|| policy.decide(query(black_box(typical))))
    });
    let short = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213";
    c.bench_function("decide pgbench -S statement (uncached)", |b| {
        b.iter(|| policy.decide(query(black_box(short))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
