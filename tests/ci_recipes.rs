//! The CI recipes under deploy/ci/ work as written: their shell steps run for
//! real against a gateway, with a token from a local stand-in for each CI
//! system (GitHub Actions' token endpoint, GitLab's `id_tokens` variable, a
//! Kubernetes projected token file); and `gatehouse connect --refresh` renews a
//! long job's token through its password file.

mod harness;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use harness::*;

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");
/// What GitHub puts in ACTIONS_ID_TOKEN_REQUEST_TOKEN.
const REQUEST_TOKEN: &str = "request-token-5b1f";

/// The audiences asked for, and the token handed out.
#[derive(Clone)]
struct Endpoint {
    asked: Arc<Mutex<Vec<String>>>,
    token: String,
}

/// Answers like `ACTIONS_ID_TOKEN_REQUEST_URL`: `{"value": TOKEN}` to a bearer
/// of the request token.
async fn github_token(
    State(e): State<Endpoint>,
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Result<axum::Json<serde_json::Value>, StatusCode> {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth.map(str::to_ascii_lowercase) != Some(format!("bearer {REQUEST_TOKEN}")) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    if !q.contains_key("api-version") {
        return Err(StatusCode::BAD_REQUEST);
    }
    e.asked
        .lock()
        .unwrap()
        .push(q.get("audience").cloned().unwrap_or_default());
    Ok(axum::Json(
        serde_json::json!({ "count": 1, "value": e.token }),
    ))
}

async fn token_endpoint(token: String) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/token", axum::routing::get(github_token))
        .with_state(Endpoint {
            asked: asked.clone(),
            token,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, asked)
}

/// The recipe's steps (recipe.py), run with bash; its stdout.
async fn run_recipe(
    kind: &str,
    file: &str,
    extra: &[&str],
    gw: SocketAddr,
    env: &[(&str, String)],
) -> String {
    let script = std::process::Command::new(tools_python())
        .arg(repo_path("deploy/ci/recipe.py"))
        .args([kind, &repo_path(file)])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        script.status.success(),
        "{}",
        String::from_utf8_lossy(&script.stderr)
    );
    let bin_dir = std::path::Path::new(BIN)
        .parent()
        .unwrap()
        .display()
        .to_string();
    let path = format!(
        "{bin_dir}:/usr/lib/postgresql/15/bin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    let port = gw.port().to_string();
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg("-c")
        .arg(String::from_utf8(script.stdout).unwrap())
        .env("PATH", path)
        .env("GATEHOUSE_HOST", "127.0.0.1")
        .env("GATEHOUSE_PORT", &port)
        .env("GATEHOUSE_ROLE", "app")
        .env("GATEHOUSE_DB", APP_DB)
        .env("GATEHOUSE_SSLMODE", "disable")
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", &port)
        .env("PGUSER", "app")
        .env("PGDATABASE", APP_DB)
        .env("PGSSLMODE", "disable")
        .env_remove("PGPASSWORD")
        .env_remove("PGPASSFILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{kind} recipe failed:\n{stdout}{stderr}"
    );
    for (k, v) in env {
        if k.contains("TOKEN") {
            assert!(
                !stdout.contains(v.as_str()) && !stderr.contains(v.as_str()),
                "{k} printed"
            );
        }
    }
    stdout
}

#[tokio::test]
async fn github_actions_recipe_requests_a_token_and_connects() {
    let pg = Pg::start();
    let issuer = Issuer::new();
    let gw = start_gateway(&base_config(&pg, &issuer), AllowAll).await;
    let token = issuer.token(&[]);
    let (endpoint, asked) = token_endpoint(token.clone()).await;
    let out = run_recipe(
        "github",
        "deploy/ci/github-actions.yml",
        &[],
        gw.addr,
        &[
            (
                "ACTIONS_ID_TOKEN_REQUEST_URL",
                format!("http://{endpoint}/token?api-version=2.0"),
            ),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN.into()),
            ("ISSUED_TOKEN", token),
        ],
    )
    .await;
    assert_eq!(out.lines().filter(|l| *l == APP_DB).count(), 2, "{out}");
    assert_eq!(*asked.lock().unwrap(), ["gatehouse", "gatehouse"]);
}

#[tokio::test]
async fn gitlab_recipe_connects_with_its_id_token() {
    let pg = Pg::start();
    let issuer = Issuer::new();
    let gw = start_gateway(&base_config(&pg, &issuer), AllowAll).await;
    let out = run_recipe(
        "gitlab",
        "deploy/ci/gitlab-ci.yml",
        &[],
        gw.addr,
        &[("GATEHOUSE_ID_TOKEN", issuer.token(&[]))],
    )
    .await;
    assert_eq!(out.trim(), APP_DB, "{out}");
}

#[tokio::test]
async fn kubernetes_job_recipe_connects_with_its_projected_token() {
    let pg = Pg::start();
    let issuer = Issuer::new();
    let gw = start_gateway(&base_config(&pg, &issuer), AllowAll).await;
    let dir = tempfile::tempdir().unwrap();
    let token = issuer.token(&[]);
    std::fs::write(dir.path().join("token"), &token).unwrap();
    let out = run_recipe(
        "kubernetes",
        "deploy/ci/kubernetes-job.yaml",
        &[&dir.path().display().to_string()],
        gw.addr,
        &[("PROJECTED_TOKEN", token)],
    )
    .await;
    assert_eq!(out.trim(), APP_DB, "{out}");
}

#[tokio::test]
async fn connect_refresh_renews_the_token_in_the_password_file() {
    let pg = Pg::start();
    let issuer = Issuer::new();
    let gw = start_gateway(&base_config(&pg, &issuer), AllowAll).await;
    let dir = tempfile::tempdir().unwrap();
    let mut claims = serde_json::Map::new();
    claims.insert("repository".into(), "acme/app".into());
    // The first token is within --refresh-before of its expiry at once; the
    // job swaps the file to the second and waits until the gateway's password
    // file holds it, then connects with it.
    let first = issuer.mint(claims.clone(), std::time::Duration::from_secs(120));
    let second = issuer.mint(claims, std::time::Duration::from_secs(3600));
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &first).unwrap();
    std::fs::write(dir.path().join("second"), &second).unwrap();
    let conn = format!(
        "host=127.0.0.1 port={} user=app dbname={APP_DB} sslmode=disable",
        gw.addr.port()
    );
    let job = format!(
        r#"set -e
test -z "$PGPASSWORD"
psql "{conn}" -Atc 'select 1'
first=$(cat "$PGPASSFILE")
cp "{dir}/second" "{dir}/token"
for _ in $(seq 200); do [ "$(cat "$PGPASSFILE")" != "$first" ] && break; sleep 0.05; done
[ "$(cat "$PGPASSFILE")" = "*:*:*:*:$(cat "{dir}/second")" ]
psql "{conn}" -Atc 'select 2'
"#,
        dir = dir.path().display()
    );
    let out = tokio::process::Command::new(BIN)
        .args([
            "connect",
            "--refresh",
            "--refresh-before",
            "119s",
            "--token-file",
        ])
        .arg(&token_file)
        .args(["--", "bash", "-c", &job])
        .env(
            "PATH",
            format!(
                "/usr/lib/postgresql/15/bin:{}",
                std::env::var("PATH").unwrap()
            ),
        )
        .env_remove("PGPASSWORD")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout, "1\n2\n");
    assert!(stderr.contains("token renewed"), "{stderr}");
    for t in [&first, &second] {
        assert!(!stdout.contains(t.as_str()) && !stderr.contains(t.as_str()));
    }
}

#[tokio::test]
async fn connect_without_a_token_source_says_where_it_looked() {
    let out = tokio::process::Command::new(BIN)
        .args(["connect", "--", "true"])
        .env_remove("ACTIONS_ID_TOKEN_REQUEST_URL")
        .env_remove("GATEHOUSE_ID_TOKEN")
        .env_remove("GATEHOUSE_TOKEN_FILE")
        .env_remove("GATEHOUSE_TOKEN_ENV")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("id-token: write") && stderr.contains("GATEHOUSE_ID_TOKEN"),
        "{stderr}"
    );
}
