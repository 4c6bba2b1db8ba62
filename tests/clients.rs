//! Real clients through the gateway: psql, pgbench (its initialisation uses
//! COPY and DDL; `-S` in simple and prepared mode) and psycopg 3 from Python.

mod harness;

use harness::*;
use tokio::process::Command;

async fn setup() -> (Pg, Issuer, Gw<Recorder>, Recorder) {
    let pg = Pg::start();
    let issuer = Issuer::new();
    let rec = Recorder::default();
    let gw = start_gateway(&base_config(&pg, &issuer), rec.clone()).await;
    (pg, issuer, gw, rec)
}

fn conninfo<D: gatehouse_ingress::decision::DecisionPoint>(gw: &Gw<D>) -> String {
    format!(
        "host=127.0.0.1 port={} user=app dbname=appdb sslmode=disable",
        gw.addr.port()
    )
}

#[tokio::test]
async fn psql_queries_meta_commands_and_copy() {
    let (_pg, issuer, gw, rec) = setup().await;
    let token = issuer.token(&[]);
    let ci = conninfo(&gw);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("in.csv");
    std::fs::write(&csv, "1,alpha\n2,beta\n3,gamma\n").unwrap();
    let script = format!(
        "create table p (id int, name text);\n\
         \\copy p from '{}' with (format csv)\n\
         select string_agg(name, '|' order by id) from p;\n\
         \\d p\n\
         \\copy (select id from p order by id) to '{}'\n",
        csv.display(),
        dir.path().join("out.txt").display()
    );
    std::fs::write(dir.path().join("script.sql"), script).unwrap();
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(dir.path().join("script.sql"))
        .arg(&ci)
        .env("PGPASSWORD", &token);
    let out = run(cmd).await.unwrap();
    assert!(out.contains("alpha|beta|gamma"), "{out}");
    assert!(
        out.contains("name|text"),
        "\\d works through the gateway: {out}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "1\n2\n3\n"
    );
    // psql's \d runs catalog queries: they too met the decision point.
    assert!(
        rec.events()
            .iter()
            .any(|e| e.sql.contains("pg_catalog.pg_class"))
    );

    // A wrong token gives psql the gateway's message.
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-c", "select 1", &ci])
        .env("PGPASSWORD", "eyJhbGciOiJub25lIn0.e30.");
    let err = run(cmd).await.unwrap_err();
    assert!(err.contains("FATAL:  token rejected"), "{err}");
}

#[tokio::test]
async fn pgbench_initialises_and_runs_in_simple_and_prepared_mode() {
    let (_pg, issuer, gw, _rec) = setup().await;
    let token = issuer.token(&[]);
    let port = gw.addr.port().to_string();
    let pgbench = |args: &[&str]| {
        let mut cmd = Command::new(pg_bin().join("pgbench"));
        cmd.args(["-h", "127.0.0.1", "-p", &port, "-U", "app"])
            .args(args)
            .arg("appdb")
            .env("PGPASSWORD", &token)
            .env("PGSSLMODE", "disable");
        cmd
    };
    run(pgbench(&["-i", "-s", "1", "-q"]))
        .await
        .expect("pgbench -i");
    for mode in ["simple", "prepared", "extended"] {
        let out = run(pgbench(&[
            "-S", "-M", mode, "-c", "4", "-j", "2", "-t", "250", "-n",
        ]))
        .await
        .unwrap();
        assert!(
            out.contains("number of transactions actually processed: 1000/1000"),
            "{mode}: {out}"
        );
        assert!(
            out.contains("number of failed transactions: 0"),
            "{mode}: {out}"
        );
    }
    // A write workload too (BEGIN/UPDATE/INSERT/END, one session per client).
    let out = run(pgbench(&[
        "-M", "prepared", "-c", "2", "-j", "2", "-t", "100", "-n",
    ]))
    .await
    .unwrap();
    assert!(out.contains("actually processed: 200/200"), "{out}");
}

#[tokio::test]
async fn psycopg3_from_python() {
    let (_pg, issuer, gw, _rec) = setup().await;
    let dsn = format!("{} password={}", conninfo(&gw), issuer.token(&[]));
    let script = r#"
import json, os, psycopg
out = {}
with psycopg.connect(os.environ["DSN"]) as conn:
    conn.execute("create table py (id int primary key, v text)")
    with conn.cursor() as cur:
        cur.executemany("insert into py values (%s, %s)", [(i, f"v{i}") for i in range(100)])
        cur.execute("select count(*), max(v) from py where id > %s", (10,))
        out["filtered"] = list(cur.fetchone())
        cur.execute("select %s::int + 1", (41,), binary=True)
        out["binary"] = cur.fetchone()[0]
        for i in range(3):
            cur.execute("select v from py where id = %s", (i,), prepare=True)
        out["prepared"] = cur.fetchone()[0]
        with cur.copy("copy (select id from py order by id) to stdout") as copy:
            out["copied"] = sum(1 for _ in copy.rows())
        with cur.copy("copy py from stdin") as copy:
            for i in range(100, 150):
                copy.write_row((i, f"c{i}"))
    with conn.pipeline():
        cur1 = conn.execute("select count(*) from py")
        cur2 = conn.execute("select %s::text", ("pipelined",))
    out["count"] = cur1.fetchone()[0]
    out["pipeline"] = cur2.fetchone()[0]
    try:
        conn.execute("select 1/0")
    except psycopg.errors.DivisionByZero as e:
        out["error"] = e.sqlstate
    conn.rollback()
    out["after_error"] = conn.execute("select 'ok'").fetchone()[0]
print(json.dumps(out))
"#;
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script).env("DSN", dsn);
    let out = run(cmd)
        .await
        .expect("python3 with psycopg (deploy/test.sh installs it)");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["filtered"], serde_json::json!([89, "v99"]));
    assert_eq!(v["binary"], 42);
    assert_eq!(v["prepared"], "v2");
    assert_eq!(v["copied"], 100);
    assert_eq!(v["count"], 150);
    assert_eq!(v["pipeline"], "pipelined");
    assert_eq!(v["error"], "22012");
    assert_eq!(v["after_error"], "ok");
}

#[tokio::test]
async fn sessions_are_isolated_under_concurrency() {
    let pg = Pg::start();
    let issuer = Issuer::new();
    let gw = start_gateway(&base_config(&pg, &issuer), AllowAll).await;
    let token = issuer.token(&[]);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let url = gw.url("app", &token);
            tokio::spawn(async move {
                let c = connect(&url).await.unwrap();
                c.batch_execute(&format!("set application_name = 'worker-{i}'"))
                    .await
                    .unwrap();
                for _ in 0..20 {
                    let name: String = c
                        .query_one("show application_name", &[])
                        .await
                        .unwrap()
                        .get(0);
                    assert_eq!(name, format!("worker-{i}"));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}
