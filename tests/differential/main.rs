//! PostgreSQL as the oracle: every statement of PostgreSQL's own regression
//! SQL, analysed by the decider and run in a scratch PostgreSQL 15 cluster as
//! a superuser. The property: the decider never under-classifies. When
//! PostgreSQL says a statement wrote, ran DDL, logged it as `ddl` or `mod`, or
//! changed a setting, the policy of a read-only job (`classes = ["read"]` on
//! every object) must not allow it, with the functions it calls resolved in
//! the cluster's catalog as the gateway resolves them (so that one the corpus
//! created is refused to that rule, which names none); a statement logged as
//! `ddl` carries `ddl` (or `dcl`, `admin`); one logged as `mod` carries
//! `write` or stricter. Every exception is a reviewed
//! entry of `exceptions.rs`; a new one, or one that no longer happens, fails.
//! It also measures parse coverage: the share of statements PostgreSQL ran
//! that the decider parses.
//!
//! The corpus comes from `GATEHOUSE_REGRESS_SQL`, else `../shared/corpus/
//! postgres-regress` beside the repository, else `deploy/test.sh`'s cache
//! (`~/.cache/gatehouse/corpus/postgres-regress`); none is a failure. CI runs
//! the scripts of [`CI_SCRIPTS`]; `GATEHOUSE_DIFFERENTIAL=all` (what
//! `deploy/differential.sh` sets) runs every script and writes the figures to
//! `GATEHOUSE_DIFFERENTIAL_REPORT` if set.

#[path = "../harness/mod.rs"]
mod harness;

mod exceptions;
mod oracle;
mod psql;
mod report;
mod script;

use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

use gatehouse_decider::Policy;
use gatehouse_ingress::config::{Secret, UpstreamConfig, UpstreamTls};
use gatehouse_ingress::masking::catalog::Catalog;
use gatehouse_ingress::upstream::UpstreamTarget;
use harness::{ADMIN_PASSWORD, Pg};

/// The scripts every scratch database starts from (PostgreSQL's own schedule:
/// "most test scripts can be run after running just test_setup and possibly
/// create_index").
const SETUP: [&str; 2] = ["test_setup", "create_index"];

/// The scripts CI runs: the set-up, and scripts chosen for the statement kinds
/// they cover (queries, DML and COPY, DDL of every sort, privileges, prepared
/// statements and cursors, transactions, functions and procedures, rules and
/// triggers, settings), about a third of the corpus's statements.
pub const CI_SCRIPTS: [&str; 40] = [
    "advisory_lock",
    "alter_table",
    "arrays",
    "case",
    "copy2",
    "copydml",
    "create_am",
    "create_function_sql",
    "create_procedure",
    "create_table",
    "create_view",
    "delete",
    "event_trigger",
    "foreign_key",
    "generated",
    "guc",
    "insert",
    "insert_conflict",
    "join",
    "matview",
    "merge",
    "plpgsql",
    "portals",
    "prepare",
    "privileges",
    "returning",
    "rules",
    "select",
    "select_into",
    "sequence",
    "subselect",
    "temp",
    "transactions",
    "triggers",
    "truncate",
    "update",
    "vacuum",
    "window",
    "with",
    "xml",
];

/// Where the corpus is.
fn corpus() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("GATEHOUSE_REGRESS_SQL") {
        candidates.push(PathBuf::from(dir));
    }
    candidates.push(repo.join("../shared/corpus/postgres-regress"));
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cache/gatehouse/corpus/postgres-regress"));
    }
    candidates
        .iter()
        .find(|d| d.join("test_setup.sql").is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL's regression SQL is not in any of {candidates:?}: run deploy/test.sh \
                 (it fetches it) or set GATEHOUSE_REGRESS_SQL"
            )
        })
}

fn read(dir: &Path, name: &str) -> String {
    let path = dir.join(format!("{name}.sql"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn session(pg: &Pg, db: &str) -> oracle::Session {
    oracle::Session::connect(&format!(
        "host=127.0.0.1 port={} user=postgres password={ADMIN_PASSWORD} dbname={db} sslmode=disable",
        pg.port
    ))
    .await
}

/// The gateway's catalog of `db`, reached as the superuser the scripts run as.
fn catalog(pg: &Pg, db: &str) -> Catalog {
    let config = UpstreamConfig {
        host: "127.0.0.1".into(),
        port: pg.port,
        dbname: db.into(),
        tls: UpstreamTls::Disable,
        ca_file: None,
        server_name: None,
    };
    let target = UpstreamTarget {
        server_name: gatehouse_ingress::tls::upstream_server_name(&config).unwrap(),
        config,
        user: "postgres".into(),
        password: Secret::new(ADMIN_PASSWORD.into()),
        tls: None,
    };
    // Entries are forgotten after DDL (see `script::run`), as the gateway does.
    Catalog::new(Arc::new(target), Duration::from_secs(3600))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decider_never_under_classifies_postgresql_regression_sql() {
    let dir = corpus();
    let choice = std::env::var("GATEHOUSE_DIFFERENTIAL").unwrap_or_default();
    let all = choice == "all";
    // A comma-separated list of scripts runs just those (for working on them).
    let chosen: Vec<&str> = choice
        .split(',')
        .filter(|c| !c.is_empty() && !all)
        .collect();
    let mut scripts: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".sql").map(str::to_owned)
        })
        .filter(|n| !SETUP.contains(&n.as_str()))
        .filter(|n| {
            all || chosen.contains(&n.as_str())
                || (chosen.is_empty() && CI_SCRIPTS.contains(&n.as_str()))
        })
        .collect();
    scripts.sort();
    let wanted = if chosen.is_empty() {
        CI_SCRIPTS.len()
    } else {
        chosen.len()
    };
    assert!(
        all || scripts.len() == wanted,
        "the corpus lacks some of the scripts asked for: {scripts:?}"
    );
    let policy = Policy::parse(script::READ_ONLY, "read-only.toml").unwrap();

    let pg = Pg::start();
    // Nothing but the scripts may change the cluster while they run.
    pg.psql_admin("ALTER SYSTEM SET autovacuum = off");
    // Two hundred databases come and go: keep the WAL they leave small.
    pg.psql_admin("ALTER SYSTEM SET max_wal_size = '64MB'");
    pg.psql_admin("ALTER SYSTEM SET min_wal_size = '32MB'");
    pg.psql_admin("SELECT pg_reload_conf()");
    pg.psql_admin("ALTER ROLE postgres SET statement_timeout = '120s'");
    pg.psql_admin("CREATE DATABASE regress_base");
    pg.psql_admin_db("regress_base", oracle::HELPERS);
    let started = std::time::Instant::now();
    let mut records = Vec::new();
    {
        let mut s = session(&pg, "regress_base").await;
        oracle::self_check(&mut s).await;
        // Dropped before the template is copied: its connection would stop that.
        let catalog = catalog(&pg, "regress_base");
        for name in SETUP {
            records.extend(script::run(name, &read(&dir, name), &mut s, &policy, &catalog).await);
        }
    }
    let admin = session(&pg, "postgres").await;
    for (i, name) in scripts.iter().enumerate() {
        let db = format!("regress_{i}");
        admin
            .simple(&format!("CREATE DATABASE {db} TEMPLATE regress_base"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {db}: {e}"));
        {
            let mut s = session(&pg, &db).await;
            let catalog = catalog(&pg, &db);
            records.extend(script::run(name, &read(&dir, name), &mut s, &policy, &catalog).await);
        }
        // To save disk; a script may leave what keeps its database (a
        // subscription, say): then it stays, in a throwaway cluster.
        let _ = admin
            .simple(&format!("DROP DATABASE {db} WITH (FORCE)"))
            .await;
    }
    let elapsed = started.elapsed();

    let figures = report::Figures::of(&records);
    let text = report::render(&figures, &records, elapsed, all);
    println!("{text}");
    if let Some(path) = std::env::var_os("GATEHOUSE_DIFFERENTIAL_REPORT") {
        std::fs::write(&path, &text).unwrap();
    }
    if let Some(path) = std::env::var_os("GATEHOUSE_DIFFERENTIAL_UNPARSED") {
        // Every statement PostgreSQL ran that the decider left unparsed, as JSON
        // lines, for working on coverage.
        let lines: Vec<String> = records
            .iter()
            .filter(|r| r.unparsed.is_some() && r.observed.outcome == oracle::Outcome::Ok)
            .map(|r| {
                serde_json::json!({
                    "file": r.file, "line": r.line, "kind": r.kind,
                    "query_or_dml": r.query_or_dml, "error": r.unparsed, "text": r.text,
                })
                .to_string()
            })
            .collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    }

    let ran: Vec<&str> = SETUP
        .iter()
        .copied()
        .chain(scripts.iter().map(String::as_str))
        .collect();
    let problems = exceptions::check(&report::violations(&records), &ran);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Jobs run queries and DML: the decider must read nearly all of them.
    assert!(
        figures.query_coverage() >= 0.97,
        "parse coverage of the queries and DML PostgreSQL ran: {:.2} % (want at least 97 %)",
        100.0 * figures.query_coverage()
    );
}
