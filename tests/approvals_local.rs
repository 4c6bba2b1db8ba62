//! Just-in-time approvals in all-in-one mode: no NATS; the approver core runs in
//! the gateway's process over an in-memory store, approvers answer on the admin
//! endpoint (`gatehouse approvals --admin`), and webhooks are told of each new
//! request. Real PostgreSQL through the ingress; a real HTTP server for webhooks.

mod harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::token::{self, MintRequest};
use gatehouse_decider::PolicyHandle;
use gatehouse_ingress::decision::LocalPolicy;
use gatehouse_schemas::approval::{ApprovalList, ApprovalRecord, ApprovalState, DecisionReply};
use harness::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const POLICY: &str = r#"
version = "approvals-local"

[[rules]]
id = "app-work"
roles = ["app"]
claims = { repository = "acme/app" }
classes = ["read", "write", "transaction", "session", "utility"]
verdict = "allow"

[[rules]]
id = "unbounded-delete"
risks = ["delete_without_where", "update_without_where"]
verdict = "approve"
reason = "deletes every row"
approvers = "dba"
"#;

const APPROVER_ISSUER: &str = "https://approvers.test.invalid";
const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

struct Setup {
    pg: Pg,
    issuer: Issuer,
    approvers: Issuer,
    dir: tempfile::TempDir,
}

/// A gateway with in-process approvals and its admin endpoint.
struct Local {
    gw: Gw<LocalPolicy>,
    admin: String,
    _task: tokio::task::JoinHandle<()>,
}

impl Setup {
    fn new() -> Setup {
        let pg = Pg::start();
        pg.psql_admin_db(
            APP_DB,
            "create table public.t (x int); insert into public.t select generate_series(1, 5); grant all on public.t to app",
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
        Setup {
            pg,
            issuer: Issuer::new(),
            approvers: Issuer::new(),
            dir,
        }
    }

    fn config(&self, timeout: &str, webhooks: &str) -> String {
        base_config(&self.pg, &self.issuer)
            + &format!(
                r#"
[approvals]
timeout = "{timeout}"
sweep_interval = "200ms"
notice = "run gatehouse approvals list --admin"
admin_listen = "127.0.0.1:0"
[[approvals.issuers]]
name = "approvers"
issuer = "{APPROVER_ISSUER}"
audiences = ["gatehouse-approvals"]
jwks_file = "{jwks}"
algorithms = ["EdDSA"]
leeway = "0s"
{webhooks}
"#,
                jwks = self.approvers.jwks_path()
            )
    }

    /// The gateway, with the approver core in-process and its admin endpoint.
    async fn gateway(&self, timeout: &str, webhooks: &str) -> Local {
        let toml = self.config(timeout, webhooks);
        let cfg = gatehouse::config::Config::from_toml(&toml).unwrap();
        let local = gatehouse::services::in_process_approvals(&cfg.approvals).unwrap();
        let store = local.store();
        let admin = tokio::net::TcpListener::bind(cfg.approvals.admin_listen.unwrap())
            .await
            .unwrap();
        let url = format!("http://{}", admin.local_addr().unwrap());
        let task = tokio::spawn(async move {
            local.run(admin, std::future::pending()).await.unwrap();
        });
        let handle = Arc::new(PolicyHandle::load(&self.dir.path().join("policy.toml")).unwrap());
        let gw =
            start_gateway_with(&toml, LocalPolicy::new(handle), |g| g.with_approvals(store)).await;
        Local {
            gw,
            admin: url,
            _task: task,
        }
    }

    fn approver_token(&self, sub: &str, claims: Value, ttl: Duration) -> String {
        token::mint(
            &self.approvers.key,
            &MintRequest {
                issuer: APPROVER_ISSUER.into(),
                audience: "gatehouse-approvals".into(),
                subject: sub.into(),
                ttl,
                claims: claims.as_object().unwrap().clone(),
            },
        )
        .unwrap()
    }

    fn dba(&self, sub: &str) -> String {
        self.approver_token(sub, json!({"groups": ["dba"]}), Duration::from_secs(600))
    }

    fn count(&self) -> String {
        self.pg
            .psql_admin_db(APP_DB, "select count(*) from public.t")
    }
}

fn http() -> reqwest::Client {
    gatehouse_ingress::http_client(&[]).unwrap()
}

/// The admin endpoint's pending requests, as `token` sees them.
async fn pending(admin: &str, token: &str) -> (u16, ApprovalList) {
    let r = http()
        .get(format!("{admin}/v1/approvals"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Polls the admin endpoint until a request is pending (20 s at most).
async fn next_pending(admin: &str, token: &str, not: &[uuid::Uuid]) -> ApprovalRecord {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, list) = pending(admin, token).await;
        assert_eq!(status, 200, "{list:?}");
        if let Some(r) = list
            .records
            .into_iter()
            .find(|r| !not.contains(&r.request.id))
        {
            return r;
        }
        assert!(Instant::now() < deadline, "no request pending within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A decision POSTed to the admin endpoint: (HTTP status, body).
async fn decide(
    admin: &str,
    id: uuid::Uuid,
    hash: &str,
    token: Option<&str>,
    decision: &str,
) -> (u16, Value) {
    let mut req = http()
        .post(format!("{admin}/v1/approvals/{id}/decision"))
        .json(&json!({"statement_hash": hash, "decision": decision}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// `gatehouse approvals ARGS --admin URL` with `token` in the environment.
async fn cli(admin: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(BIN)
        .arg("approvals")
        .args(args)
        .args(["--admin", admin])
        .env("GATEHOUSE_APPROVER_TOKEN", token)
        .env_remove("GATEHOUSE_NATS_URL")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn hold(
    client: &Arc<tokio_postgres::Client>,
    sql: &'static str,
) -> tokio::task::JoinHandle<Result<(), tokio_postgres::Error>> {
    let c = Arc::clone(client);
    tokio::spawn(async move { c.batch_execute(sql).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_through_the_admin_endpoint_runs_once_and_denied_is_42501() {
    let s = Setup::new();
    let l = s.gateway("10m", "").await;
    let client = Arc::new(
        connect(
            &l.gw
                .url("app", &s.issuer.token(&[("actor", json!("carol"))])),
        )
        .await
        .unwrap(),
    );
    let held = hold(&client, "delete from public.t");
    let rec = next_pending(&l.admin, &s.dba("alice"), &[]).await;
    let id = rec.request.id.to_string();
    assert_eq!(rec.request.sql, "delete from public.t");
    assert_eq!(rec.request.ci.repository.as_deref(), Some("acme/app"));
    assert_eq!(s.count(), "5");
    assert!(!held.is_finished());

    let (code, out, _) = cli(&l.admin, &s.dba("alice"), &["show", &id]).await;
    assert_eq!(code, 0);
    assert!(out.contains("delete from public.t"), "{out}");
    assert!(out.contains("acme/app"), "{out}");
    let (code, out, err) = cli(
        &l.admin,
        &s.dba("alice"),
        &["approve", &id, "--comment", "ok"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("approved"), "{out}");
    held.await.unwrap().expect("the approved statement ran");
    assert_eq!(s.count(), "0");
    // Used once: approving it again is refused.
    let (code, out, _) = cli(&l.admin, &s.dba("alice"), &["approve", &id]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("refused"), "{out}");

    // The same statement again needs a new approval; denied this time.
    s.pg.psql_admin_db(APP_DB, "insert into public.t values (1)");
    let held = hold(&client, "delete from public.t");
    let rec2 = next_pending(&l.admin, &s.dba("bob"), &[rec.request.id]).await;
    assert_ne!(rec2.request.id, rec.request.id);
    let (code, out, err) = cli(
        &l.admin,
        &s.dba("bob"),
        &[
            "deny",
            &rec2.request.id.to_string(),
            "--comment",
            "not today",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let err = held.await.unwrap().unwrap_err();
    let (code, message) = db_error(&err);
    assert_eq!(code, "42501", "{message}");
    assert!(message.contains("denied by bob"), "{message}");
    assert!(message.contains("not today"), "{message}");
    assert_eq!(s.count(), "1");
    let rows = client
        .query("select count(*) from public.t", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_endpoint_refuses_what_does_not_qualify() {
    let s = Setup::new();
    let l = s.gateway("10m", "").await;
    let client = Arc::new(
        connect(
            &l.gw
                .url("app", &s.issuer.token(&[("actor", json!("carol"))])),
        )
        .await
        .unwrap(),
    );
    let held = hold(&client, "delete from public.t");
    let rec = next_pending(&l.admin, &s.dba("alice"), &[]).await;
    let (id, hash) = (rec.request.id, rec.request.statement_hash.clone());

    // No token, a malformed header, a forged token, an expired one, a CI token.
    let r = http()
        .get(format!("{}/v1/approvals", l.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http()
        .get(format!("{}/v1/approvals/{id}", l.admin))
        .header("authorization", "Basic YWxpY2U6eA==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (status, _) = decide(&l.admin, id, &hash, None, "approve").await;
    assert_eq!(status, 401);
    let forged = token::mint(
        &Issuer::new().key,
        &MintRequest {
            issuer: APPROVER_ISSUER.into(),
            audience: "gatehouse-approvals".into(),
            subject: "mallory".into(),
            ttl: Duration::from_secs(600),
            claims: json!({"groups": ["dba"]}).as_object().unwrap().clone(),
        },
    )
    .unwrap();
    let (status, list) = pending(&l.admin, &forged).await;
    assert_eq!(status, 401);
    assert!(list.records.is_empty());
    let (status, body) = decide(&l.admin, id, &hash, Some(&forged), "approve").await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("token rejected"),
        "{body}"
    );
    let expired = s.approver_token(
        "alice",
        json!({"groups": ["dba"], "exp": 1}),
        Duration::from_secs(600),
    );
    let (status, _) = decide(&l.admin, id, &hash, Some(&expired), "approve").await;
    assert_eq!(status, 401);
    let ci = s.issuer.token(&[("groups", json!(["dba"]))]);
    let (status, _) = decide(&l.admin, id, &hash, Some(&ci), "approve").await;
    assert_eq!(status, 401);
    let (code, _, err) = cli(&l.admin, &forged, &["approve", &id.to_string()]).await;
    assert_ne!(code, 0);
    assert!(err.contains("token rejected"), "{err}");

    // Valid tokens that do not qualify.
    let (status, body) = decide(&l.admin, id, &hash, Some(&s.dba("carol")), "approve").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("own statement"),
        "{body}"
    );
    let outsider = s.approver_token("dave", json!({"groups": ["ops"]}), Duration::from_secs(600));
    let (status, body) = decide(&l.admin, id, &hash, Some(&outsider), "approve").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not in group"),
        "{body}"
    );
    // An outsider does not even see the request.
    let (status, list) = pending(&l.admin, &outsider).await;
    assert_eq!(status, 200);
    assert!(list.records.is_empty(), "{list:?}");
    let other =
        gatehouse_schemas::approval::statement_hash(rec.request.session_id, "drop table t", None);
    let (status, body) = decide(&l.admin, id, &other, Some(&s.dba("alice")), "approve").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("statement hash"),
        "{body}"
    );

    // Nothing ran; the request is pending with the refusals recorded.
    assert_eq!(s.count(), "5");
    assert!(!held.is_finished());
    let shown = next_pending(&l.admin, &s.dba("alice"), &[]).await;
    assert_eq!(shown.state, ApprovalState::Pending);
    assert_eq!(shown.refused_total, 3, "{shown:?}");

    // A qualifying approver still can.
    let (status, body) = decide(&l.admin, id, &hash, Some(&s.dba("alice")), "approve").await;
    assert_eq!(status, 200, "{body}");
    let reply: DecisionReply = serde_json::from_value(body).unwrap();
    assert!(reply.accepted);
    held.await.unwrap().unwrap();
    assert_eq!(s.count(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_decision_in_time_expires_with_57014_and_a_late_one_is_refused() {
    let s = Setup::new();
    let l = s.gateway("1500ms", "").await;
    let client = Arc::new(
        connect(&l.gw.url("app", &s.issuer.token(&[])))
            .await
            .unwrap(),
    );
    let held = hold(&client, "delete from public.t");
    let rec = next_pending(&l.admin, &s.dba("alice"), &[]).await;
    let err = held.await.unwrap().unwrap_err();
    let (code, message) = db_error(&err);
    assert_eq!(code, "57014", "{message}");
    assert!(message.contains("expired"), "{message}");
    let (status, body) = decide(
        &l.admin,
        rec.request.id,
        &rec.request.statement_hash,
        Some(&s.dba("alice")),
        "approve",
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(s.count(), "5");
    // The session stays usable.
    client
        .batch_execute("delete from public.t where x = 1")
        .await
        .unwrap();
    assert_eq!(s.count(), "4");
}

/// A webhook receiver: a plain HTTP/1.1 server that answers `status` and hands
/// each body to the test.
async fn webhook_server(status: u16) -> (String, mpsc::UnboundedReceiver<Value>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, len) = loop {
                    let n = sock.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "the client closed before its request was complete");
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse::<usize>().unwrap())
                            .unwrap_or(0);
                        break (i + 4, len);
                    }
                };
                while buf.len() < head_end + len {
                    let n = sock.read(&mut chunk).await.unwrap();
                    assert!(n > 0);
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body: Value = serde_json::from_slice(&buf[head_end..head_end + len]).unwrap();
                let _ = tx.send(body);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                sock.write_all(reply.as_bytes()).await.unwrap();
            });
        }
    });
    (url, rx)
}

async fn next_body(rx: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a webhook call within 20 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_get_each_new_request_and_a_failing_one_blocks_nothing() {
    let s = Setup::new();
    let (slack_url, mut slack) = webhook_server(200).await;
    let (generic_url, mut generic) = webhook_server(200).await;
    let (failing_url, mut failing) = webhook_server(500).await;
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", l.local_addr().unwrap())
    };
    let hooks = format!(
        r#"
[[approvals.webhooks]]
url = "{failing_url}"
format = "generic"
attempts = 2
timeout = "2s"
[[approvals.webhooks]]
url = "{closed}"
format = "slack"
attempts = 2
[[approvals.webhooks]]
url = "{slack_url}"
format = "slack"
[[approvals.webhooks]]
url = "{generic_url}"
format = "generic"
"#
    );
    let l = s.gateway("10m", &hooks).await;
    let ci_token = s.issuer.token(&[("actor", json!("carol"))]);
    let client = Arc::new(connect(&l.gw.url("app", &ci_token)).await.unwrap());
    let held = hold(&client, "delete from public.t");

    let g = next_body(&mut generic).await;
    let rec = next_pending(&l.admin, &s.dba("alice"), &[]).await;
    let id = rec.request.id.to_string();
    assert_eq!(g["id"], json!(id));
    assert_eq!(g["sql"], json!("delete from public.t"));
    assert_eq!(g["statement_hash"], json!(rec.request.statement_hash));
    assert_eq!(g["approvers"], json!("dba"));
    assert_eq!(g["rule"], json!("unbounded-delete"));
    assert_eq!(
        g["requester"]["subject"],
        json!("repo:acme/app:ref:refs/heads/main")
    );
    assert_eq!(g["ci"]["repository"], json!("acme/app"));
    assert!(g.get("params").is_none_or(Value::is_null), "{g}");
    // The generic body is the bus's request message: it validates against its schema.
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("schemas/json/approval-request.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(validator.is_valid(&g), "{g}");

    let b = next_body(&mut slack).await;
    let text = b["text"].as_str().unwrap();
    assert!(text.contains("delete from public.t"), "{text}");
    assert!(text.contains(&id), "{text}");
    assert!(text.contains("repo:acme/app:ref:refs/heads/main"), "{text}");
    let blocks = b["blocks"].as_array().unwrap();
    assert!(blocks.iter().all(|bl| bl["type"].is_string()), "{b}");
    let all = b.to_string();
    assert!(all.contains("acme/app"), "{all}");
    assert!(all.contains("dba"), "{all}");
    // Never a token in a body.
    for body in [&g, &b] {
        let s = body.to_string();
        assert!(!s.contains(&ci_token), "a token in a webhook body");
        assert!(!s.contains("eyJ"), "a JWT in a webhook body: {s}");
    }

    // The failing webhook was tried its two attempts, then given up; meanwhile
    // the statement stayed held and is approved as usual.
    next_body(&mut failing).await;
    next_body(&mut failing).await;
    assert_eq!(s.count(), "5");
    let (status, body) = decide(
        &l.admin,
        rec.request.id,
        &rec.request.statement_hash,
        Some(&s.dba("alice")),
        "approve",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    held.await.unwrap().unwrap();
    assert_eq!(s.count(), "0");
    // No third attempt, and each request is posted once per webhook: the
    // decision's record changes announce nothing new.
    client.batch_execute("select 1").await.unwrap();
    assert!(failing.try_recv().is_err());
    assert!(slack.try_recv().is_err());
    assert!(generic.try_recv().is_err());
}

/// A tmux server of its own (its socket named after the test), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(name: &str) -> Tmux {
        Tmux {
            socket: format!("gatehouse-{name}-{}", std::process::id()),
        }
    }

    fn cmd(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux (apt-get install tmux)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.cmd(&["capture-pane", "-p", "-t", "watch"])
    }

    /// Polls the screen until `want` is on it (20 s at most).
    async fn wait_for(&self, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if screen.contains(want) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{want:?} not on the screen within 20 s:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_watch_approves_and_denies_with_a_key_press() {
    let s = Setup::new();
    let l = s.gateway("10m", "").await;
    let client = Arc::new(
        connect(&l.gw.url("app", &s.issuer.token(&[])))
            .await
            .unwrap(),
    );
    let held = hold(&client, "delete from public.t");
    let rec = next_pending(&l.admin, &s.dba("alice"), &[]).await;
    let short = rec.request.id.to_string()[..8].to_owned();

    let tmux = Tmux::new("watch");
    // The token goes in the session's environment, not on a command line.
    tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "watch",
        "-x",
        "160",
        "-y",
        "40",
        "-e",
        &format!("GATEHOUSE_APPROVER_TOKEN={}", s.dba("alice")),
        &format!("{BIN} approvals watch --admin {}", l.admin),
    ]);
    let screen = tmux.wait_for(&short).await;
    assert!(screen.contains("delete from public.t"), "{screen}");
    assert!(
        screen.contains("repo:acme/app:ref:refs/heads/main"),
        "{screen}"
    );
    assert!(screen.contains("acme/app run 4242"), "{screen}");
    assert!(screen.contains("pending approval requests: 1"), "{screen}");
    assert_eq!(s.count(), "5");
    assert!(!held.is_finished());

    tmux.cmd(&["send-keys", "-t", "watch", "a"]);
    held.await.unwrap().expect("the approved statement ran");
    assert_eq!(s.count(), "0");
    tmux.wait_for(&format!("{}: approved", rec.request.id))
        .await;
    tmux.wait_for("pending approval requests: 0").await;
    // Once: a key press with nothing pending runs nothing.
    s.pg.psql_admin_db(APP_DB, "insert into public.t values (1)");
    tmux.cmd(&["send-keys", "-t", "watch", "a"]);
    tmux.wait_for("no request selected").await;
    assert_eq!(s.count(), "1");

    // Denied, with a comment typed at the prompt.
    let held = hold(&client, "delete from public.t");
    let rec2 = next_pending(&l.admin, &s.dba("alice"), &[rec.request.id]).await;
    tmux.wait_for(&rec2.request.id.to_string()[..8]).await;
    tmux.cmd(&["send-keys", "-t", "watch", "D"]);
    tmux.wait_for("deny with comment").await;
    tmux.cmd(&["send-keys", "-t", "watch", "-l", "not now"]);
    tmux.cmd(&["send-keys", "-t", "watch", "Enter"]);
    let err = held.await.unwrap().unwrap_err();
    let (code, message) = db_error(&err);
    assert_eq!(code, "42501", "{message}");
    assert!(message.contains("denied by alice"), "{message}");
    assert!(message.contains("not now"), "{message}");
    assert_eq!(s.count(), "1");

    tmux.cmd(&["send-keys", "-t", "watch", "q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::process::Command::new("tmux")
        .args(["-L", &tmux.socket, "has-session", "-t", "watch"])
        .output()
        .unwrap()
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "watch did not quit on q");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_the_gateways_to_decide_not_the_approvers_clock() {
    let s = Setup::new();
    let toml = s.config("10m", "");
    let cfg = gatehouse::config::Config::from_toml(&toml).unwrap();
    let local = gatehouse::services::in_process_approvals(&cfg.approvals).unwrap();
    let store = local.store();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", admin.local_addr().unwrap());
    let _task = tokio::spawn(async move { local.run(admin, std::future::pending()).await });
    let handle = Arc::new(PolicyHandle::load(&s.dir.path().join("policy.toml")).unwrap());
    let store2 = store.clone();
    let gw = start_gateway_with(&toml, LocalPolicy::new(handle), |g| {
        g.with_approvals(store2)
    })
    .await;
    let client = Arc::new(connect(&gw.url("app", &s.issuer.token(&[]))).await.unwrap());
    let held = hold(&client, "delete from public.t");
    let rec = next_pending(&url, &s.dba("alice"), &[]).await;
    // As an approver whose clock runs ahead of the gateway's sees it: the
    // deadline has passed, while the gateway (which holds the statement and
    // decides expiry) still waits.
    store
        .transition(rec.request.id, |r| {
            r.request.deadline_ms = gatehouse_approver::store::now_ms() - 2_000;
            true
        })
        .await
        .unwrap();
    // A sweep (every 200 ms here) leaves it: its gateway is alive.
    let (status, body) = decide(
        &url,
        rec.request.id,
        &rec.request.statement_hash,
        Some(&s.dba("alice")),
        "approve",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    held.await
        .unwrap()
        .expect("approved in the gateway's time, it ran");
    assert_eq!(s.count(), "0");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatehouse_serve_all_in_one_holds_and_the_cli_approves_on_its_admin_endpoint() {
    use tokio::io::AsyncBufReadExt;
    let s = Setup::new();
    let config = s.dir.path().join("gatehouse.toml");
    let evidence = Evidence::new();
    std::fs::write(
        &config,
        s.config("10m", "")
            + &evidence.config()
            + &format!(
                "\n[decider]\npolicy = \"{}\"\n",
                s.dir.path().join("policy.toml").display()
            ),
    )
    .unwrap();
    let (port, admin_port) = (free_port(), free_port());
    let mut child = tokio::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("GATEHOUSE__INGRESS__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "GATEHOUSE__APPROVALS__ADMIN_LISTEN",
            format!("127.0.0.1:{admin_port}"),
        )
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("gateway started")
            .unwrap()
            .unwrap_or_else(|| panic!("gateway exited early:\n{log}"));
        log.push_str(&line);
        log.push('\n');
        if line.contains("ingress_listening") {
            break;
        }
    }
    // Keeps draining the log so the gateway never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let admin = format!("http://127.0.0.1:{admin_port}");
    let url = format!(
        "host=127.0.0.1 port={port} user=app password={} dbname={APP_DB} sslmode=disable",
        s.issuer.token(&[])
    );
    let client = Arc::new(connect(&url).await.unwrap());
    let held = hold(&client, "delete from public.t");
    let rec = next_pending(&admin, &s.dba("alice"), &[]).await;
    assert_eq!(s.count(), "5");
    let (code, out, err) = cli(&admin, &s.dba("alice"), &["list"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&rec.request.id.to_string()), "{out}");
    let (code, out, err) = cli(
        &admin,
        &s.dba("alice"),
        &["approve", &rec.request.id.to_string()],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    held.await.unwrap().expect("the approved statement ran");
    assert_eq!(s.count(), "0");
}
