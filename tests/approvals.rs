//! Just-in-time approvals with a real PostgreSQL and nats-server: a statement
//! whose verdict is `approve` is held (nothing reaches PostgreSQL), announced to
//! bots, and runs once when an authorized approver approves it in time; denial,
//! expiry and withdrawal by cancel refuse it and leave the session usable; the
//! checks of invariant 5 refuse decisions that do not qualify.

mod harness;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use gatehouse::token::{self, MintRequest};
use gatehouse_approver::store::ApprovalStore;
use gatehouse_decider::PolicyHandle;
use gatehouse_ingress::decision::LocalPolicy;
use gatehouse_schemas::SCHEMA_VERSION;
use gatehouse_schemas::approval::{
    ApprovalRequest, ApprovalState, ApproverDecision, Choice, DECIDE_SUBJECT, DecisionReply,
    request_subject,
};
use harness::nats::Nats;
use harness::*;
use serde_json::{Value, json};

const POLICY: &str = r#"
version = "approvals"

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

struct Setup {
    pg: Pg,
    nats: Nats,
    issuer: Issuer,
    approvers: Issuer,
    dir: tempfile::TempDir,
    bus: async_nats::Client,
}

impl Setup {
    async fn new() -> Setup {
        let pg = Pg::start();
        pg.psql_admin_db(
            APP_DB,
            "create table public.t (x int); insert into public.t select generate_series(1, 5); grant all on public.t to app; \
             create table public.c (n int); insert into public.c values (0); grant all on public.c to app",
        );
        let nats = Nats::start();
        let bus = nats.client().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
        Setup {
            pg,
            nats,
            issuer: Issuer::new(),
            approvers: Issuer::new(),
            dir,
            bus,
        }
    }

    fn approvals_config(&self, timeout: &str) -> String {
        format!(
            r#"
[approvals]
timeout = "{timeout}"
sweep_interval = "200ms"
notice = "ask in #db-approvals"
[[approvals.issuers]]
name = "approvers"
issuer = "{APPROVER_ISSUER}"
audiences = ["gatehouse-approvals"]
jwks_file = "{jwks}"
algorithms = ["EdDSA"]
leeway = "0s"
"#,
            jwks = self.approvers.jwks_path()
        )
    }

    fn config(&self, timeout: &str) -> String {
        base_config(&self.pg, &self.issuer) + &self.approvals_config(timeout)
    }

    /// The ingress, in-process, holding statements in the bus's approval bucket.
    async fn gateway(&self, timeout: &str) -> Gw<LocalPolicy> {
        let handle = Arc::new(PolicyHandle::load(&self.dir.path().join("policy.toml")).unwrap());
        let store = ApprovalStore::open(self.bus.clone()).await.unwrap();
        start_gateway_with(&self.config(timeout), LocalPolicy::new(handle), |g| {
            g.with_approvals(store)
        })
        .await
    }

    /// An approver service, in-process, until the handle is aborted.
    async fn approver(&self) -> tokio::task::JoinHandle<()> {
        let cfg = gatehouse::config::Config::from_toml(&self.config("10m")).unwrap();
        let client = self.nats.client().await;
        let store = ApprovalStore::open(client.clone()).await.unwrap();
        let approver = Arc::new(gatehouse::services::approver(store, &cfg.approvals).unwrap());
        tokio::spawn(async move {
            gatehouse_approver::service::run(approver, client, std::future::pending())
                .await
                .unwrap();
        })
    }

    /// An approver's token.
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

    async fn decide(
        &self,
        req: &ApprovalRequest,
        token: &str,
        decision: Choice,
        comment: Option<&str>,
    ) -> DecisionReply {
        self.decide_hash(req, &req.statement_hash, token, decision, comment)
            .await
    }

    async fn decide_hash(
        &self,
        req: &ApprovalRequest,
        hash: &str,
        token: &str,
        decision: Choice,
        comment: Option<&str>,
    ) -> DecisionReply {
        let d = ApproverDecision {
            v: SCHEMA_VERSION,
            request: req.id,
            statement_hash: hash.into(),
            decision,
            comment: comment.map(str::to_owned),
            token: token.into(),
        };
        // An approver service just started may not have subscribed yet ("no
        // responders"): asked again, bounded.
        let body: bytes::Bytes = serde_json::to_vec(&d).unwrap().into();
        let mut reply = None;
        for _ in 0..40 {
            // Only "no responders" is asked again: a request that timed out may
            // have been decided, and asking again would be refused as decided.
            match self.bus.request(DECIDE_SUBJECT, body.clone()).await {
                Ok(m) => {
                    reply = Some(m);
                    break;
                }
                Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    // Comes back at once: poll, bounded.
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => panic!("decision request failed: {e}"),
            }
        }
        let reply = reply.expect("an approver service answered");
        serde_json::from_slice(&reply.payload).unwrap()
    }

    fn count(&self) -> String {
        self.pg
            .psql_admin_db(APP_DB, "select count(*) from public.t")
    }

    /// Sessions upstream whose current or last query is the held text.
    fn upstream_deletes(&self) -> String {
        self.pg.psql_admin_db(
            APP_DB,
            "select count(*) from pg_stat_activity where query ilike 'delete from public.t%'",
        )
    }
}

/// New requests as bots see them.
async fn requests(bus: &async_nats::Client) -> async_nats::Subscriber {
    let sub = bus.subscribe(request_subject("app")).await.unwrap();
    bus.flush().await.unwrap();
    sub
}

async fn next_request(sub: &mut async_nats::Subscriber) -> ApprovalRequest {
    let msg = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("a request announced within 20 s")
        .unwrap();
    serde_json::from_slice(&msg.payload).unwrap()
}

/// Runs `sql` on `client` in a task of its own: it is held until decided.
fn hold(
    client: &Arc<tokio_postgres::Client>,
    sql: &'static str,
) -> tokio::task::JoinHandle<Result<(), tokio_postgres::Error>> {
    let c = Arc::clone(client);
    tokio::spawn(async move { c.batch_execute(sql).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_statement_runs_once_and_nothing_goes_upstream_before() {
    let s = Setup::new().await;
    let gw = s.gateway("10m").await;
    let _approver = s.approver().await;
    let mut announced = requests(&s.bus).await;
    let client = connect(&gw.url("app", &s.issuer.token(&[("actor", json!("carol"))])))
        .await
        .unwrap();
    let client = Arc::new(client);
    let held = hold(&client, "delete from public.t");
    let req = next_request(&mut announced).await;
    assert_eq!(req.sql, "delete from public.t");
    assert_eq!(req.approvers, "dba");
    assert_eq!(req.rule.as_deref(), Some("unbounded-delete"));
    assert_eq!(req.ci.repository.as_deref(), Some("acme/app"));
    assert_eq!(req.ci.run_id.as_deref(), Some("4242"));
    // Held: nothing reached PostgreSQL, no lock is taken on the table.
    assert_eq!(s.upstream_deletes(), "0");
    assert_eq!(
        s.pg.psql_admin_db(
            APP_DB,
            "select count(*) from pg_locks l join pg_class c on c.oid = l.relation where c.relname = 't'"
        ),
        "0"
    );
    assert_eq!(s.count(), "5");
    assert!(!held.is_finished());

    let reply = s
        .decide(&req, &s.dba("alice"), Choice::Approve, Some("ok"))
        .await;
    assert!(reply.accepted, "{reply:?}");
    held.await.unwrap().expect("the approved statement ran");
    assert_eq!(s.count(), "0");
    let store = ApprovalStore::open(s.bus.clone()).await.unwrap();
    assert_eq!(
        store.get(req.id).await.unwrap().0.state,
        ApprovalState::Executed
    );
    // A second approval of the same request is refused: it was used.
    let again = s.decide(&req, &s.dba("alice"), Choice::Approve, None).await;
    assert!(!again.accepted);

    // The same statement again needs a new approval.
    s.pg.psql_admin_db(APP_DB, "insert into public.t values (1)");
    let held = hold(&client, "delete from public.t");
    let req2 = next_request(&mut announced).await;
    assert_ne!(req2.id, req.id);
    let reply = s
        .decide(&req2, &s.dba("bob"), Choice::Deny, Some("not today"))
        .await;
    assert!(reply.accepted, "{reply:?}");
    let err = held.await.unwrap().unwrap_err();
    let (code, message) = db_error(&err);
    assert_eq!(code, "42501", "{message}");
    assert!(message.contains("denied by bob"), "{message}");
    assert!(message.contains("not today"), "{message}");
    assert_eq!(s.count(), "1");
    // The session stays usable.
    let rows = client
        .query("select count(*) from public.t", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_that_do_not_qualify_are_refused_and_recorded() {
    let s = Setup::new().await;
    let gw = s.gateway("10m").await;
    let _approver = s.approver().await;
    let mut announced = requests(&s.bus).await;
    let client = Arc::new(
        connect(&gw.url("app", &s.issuer.token(&[("actor", json!("carol"))])))
            .await
            .unwrap(),
    );
    let held = hold(&client, "delete from public.t");
    let req = next_request(&mut announced).await;

    // The requester (the person behind the CI job) approving their own statement.
    let r = s.decide(&req, &s.dba("carol"), Choice::Approve, None).await;
    assert!(!r.accepted);
    assert!(
        r.error.as_deref().unwrap().contains("own statement"),
        "{r:?}"
    );
    // An approver outside the group.
    let outsider = s.approver_token("dave", json!({"groups": ["ops"]}), Duration::from_secs(600));
    let r = s.decide(&req, &outsider, Choice::Approve, None).await;
    assert!(
        r.error.as_deref().unwrap().contains("not in group"),
        "{r:?}"
    );
    // A forged token: signed by another key.
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
    let r = s.decide(&req, &forged, Choice::Approve, None).await;
    assert!(
        r.error.as_deref().unwrap().contains("token rejected"),
        "{r:?}"
    );
    // An expired token.
    let expired = s.approver_token(
        "alice",
        json!({"groups": ["dba"], "exp": 1}),
        Duration::from_secs(600),
    );
    let r = s.decide(&req, &expired, Choice::Approve, None).await;
    assert!(
        r.error.as_deref().unwrap().contains("token rejected"),
        "{r:?}"
    );
    // A CI token is not an approver's token.
    let ci = s.issuer.token(&[("groups", json!(["dba"]))]);
    let r = s.decide(&req, &ci, Choice::Approve, None).await;
    assert!(
        r.error.as_deref().unwrap().contains("token rejected"),
        "{r:?}"
    );
    // A decision for another statement.
    let other = gatehouse_schemas::approval::statement_hash(req.session_id, "drop table t", None);
    let r = s
        .decide_hash(&req, &other, &s.dba("alice"), Choice::Approve, None)
        .await;
    assert!(
        r.error.as_deref().unwrap().contains("statement hash"),
        "{r:?}"
    );

    // None of it ran anything; the request is pending and its record says why.
    assert_eq!(s.count(), "5");
    assert!(!held.is_finished());
    let store = ApprovalStore::open(s.bus.clone()).await.unwrap();
    let (rec, _) = store.get(req.id).await.unwrap();
    assert_eq!(rec.state, ApprovalState::Pending);
    assert_eq!(rec.refused_total, 6, "{rec:?}");
    assert_eq!(rec.refusals[0].subject.as_deref(), Some("carol"));

    // A qualifying approver still can.
    let r = s.decide(&req, &s.dba("alice"), Choice::Approve, None).await;
    assert!(r.accepted, "{r:?}");
    held.await.unwrap().unwrap();
    assert_eq!(s.count(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_and_cancel_refuse_with_57014_and_the_session_survives() {
    let s = Setup::new().await;
    let gw = s.gateway("1500ms").await;
    let mut announced = requests(&s.bus).await;
    let _approver = s.approver().await;
    let client = Arc::new(connect(&gw.url("app", &s.issuer.token(&[]))).await.unwrap());

    // Nobody decides: expired at the deadline.
    let err = client
        .batch_execute("delete from public.t")
        .await
        .unwrap_err();
    let (code, message) = db_error(&err);
    assert_eq!(code, "57014", "{message}");
    assert!(message.contains("expired"), "{message}");
    let req = next_request(&mut announced).await;
    let late = s.decide(&req, &s.dba("alice"), Choice::Approve, None).await;
    assert!(!late.accepted, "a decision after expiry is refused");
    assert_eq!(s.count(), "5");

    // Cancelled by the client: withdrawn.
    let held = hold(&client, "delete from public.t");
    let req = next_request(&mut announced).await;
    client
        .cancel_token()
        .cancel_query(tokio_postgres::NoTls)
        .await
        .unwrap();
    let err = held.await.unwrap().unwrap_err();
    let (code, message) = db_error(&err);
    assert_eq!(code, "57014", "{message}");
    assert!(message.contains("withdrawn"), "{message}");
    let store = ApprovalStore::open(s.bus.clone()).await.unwrap();
    assert_eq!(
        store.get(req.id).await.unwrap().0.state,
        ApprovalState::Withdrawn
    );
    assert_eq!(s.count(), "5");
    let rows = client.query("select 1", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_inside_a_transaction_and_across_an_approver_restart() {
    let s = Setup::new().await;
    let gw = s.gateway("10m").await;
    let mut announced = requests(&s.bus).await;
    let first = s.approver().await;
    let client = Arc::new(connect(&gw.url("app", &s.issuer.token(&[]))).await.unwrap());
    client
        .batch_execute("begin; insert into public.t values (6)")
        .await
        .unwrap();
    let held = hold(&client, "delete from public.t");
    let req = next_request(&mut announced).await;
    // The approver service goes away and another starts: the request is in the
    // bucket, not in its memory.
    first.abort();
    let _ = first.await;
    let _second = s.approver().await;
    let r = s.decide(&req, &s.dba("alice"), Choice::Approve, None).await;
    assert!(r.accepted, "{r:?}");
    held.await.unwrap().unwrap();
    client.batch_execute("commit").await.unwrap();
    assert_eq!(s.count(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_parse_in_an_extended_protocol_pipeline_runs_once() {
    let s = Setup::new().await;
    let gw = s.gateway("10m").await;
    let mut announced = requests(&s.bus).await;
    let _approver = s.approver().await;
    let client = Arc::new(connect(&gw.url("app", &s.issuer.token(&[]))).await.unwrap());
    let c = client.clone();
    // Parse/Describe/Sync, then Bind/Execute/Sync: held at the Parse.
    let held = tokio::spawn(async move { c.execute("delete from public.t", &[]).await });
    let req = next_request(&mut announced).await;
    assert_eq!(s.count(), "5");
    let r = s.decide(&req, &s.dba("alice"), Choice::Approve, None).await;
    assert!(r.accepted, "{r:?}");
    assert_eq!(held.await.unwrap().unwrap(), 5);
    assert_eq!(s.count(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_held_client_gets_a_notice_naming_the_request() {
    let s = Setup::new().await;
    let gw = s.gateway("10m").await;
    let mut announced = requests(&s.bus).await;
    let _approver = s.approver().await;
    let mut raw = Raw::login(gw.addr, "app", &s.issuer.token(&[])).await;
    let mut body = b"delete from public.t".to_vec();
    body.push(0);
    raw.send(&message(b'Q', &body)).await;
    let notice = raw.recv().await.expect("a notice");
    assert_eq!(notice.tag, b'N', "{notice:?}");
    let text = notice.field(b'M').unwrap();
    let req = next_request(&mut announced).await;
    assert!(text.contains(&req.id.to_string()), "{text}");
    assert!(text.contains("ask in #db-approvals"), "{text}");
    assert!(text.contains("\"dba\""), "{text}");
    let r = s.decide(&req, &s.dba("alice"), Choice::Approve, None).await;
    assert!(r.accepted, "{r:?}");
    let rest = raw.until_ready().await;
    assert!(rest.iter().any(|m| m.tag == b'C'), "{rest:?}");
    assert_eq!(s.count(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_held_sessions_with_decisions_out_of_order() {
    const N: usize = 50;
    let s = Setup::new().await;
    let gw = s.gateway("10m").await;
    let mut announced = requests(&s.bus).await;
    let _approver = s.approver().await;
    let mut held = Vec::new();
    for _ in 0..N {
        let client = connect(&gw.url("app", &s.issuer.token(&[]))).await.unwrap();
        held.push(tokio::spawn(async move {
            let r = client.batch_execute("update public.c set n = n + 1").await;
            // The session stays usable either way.
            client.query("select 1", &[]).await.unwrap();
            r
        }));
    }
    // Distinct requests: an approver announces each once, but one that starts
    // while requests are stored announces those again.
    let mut reqs: Vec<ApprovalRequest> = Vec::new();
    while reqs.len() < N {
        let req = next_request(&mut announced).await;
        if !reqs.iter().any(|r| r.id == req.id) {
            reqs.push(req);
        }
    }
    // Decided in reverse order of arrival: every other one approved.
    reqs.sort_by_key(|r| r.id);
    reqs.reverse();
    let alice = s.dba("alice");
    let mut approved = std::collections::HashSet::new();
    for (i, req) in reqs.iter().enumerate() {
        let choice = if i % 2 == 0 {
            Choice::Approve
        } else {
            Choice::Deny
        };
        let r = s.decide(req, &alice, choice, None).await;
        assert!(r.accepted, "{r:?}");
        if choice == Choice::Approve {
            approved.insert(req.session_id);
        }
    }
    let mut ok = 0;
    for h in held {
        match h.await.unwrap() {
            Ok(()) => ok += 1,
            Err(e) => assert_eq!(db_error(&e).0, "42501"),
        }
    }
    assert_eq!(ok, N / 2);
    assert_eq!(
        s.pg.psql_admin_db(APP_DB, "select n from public.c"),
        (N / 2).to_string(),
        "each approved statement ran exactly once"
    );
}

/// `gatehouse serve --role approver` as a child process, killed on drop.
struct ApproverProcess(std::process::Child);

impl ApproverProcess {
    fn spawn(s: &Setup) -> ApproverProcess {
        let config = s
            .dir
            .path()
            .join(format!("approver-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(
            &config,
            format!(
                "[log]\nlevel = \"info\"\n\n[nats]\nurl = \"{}\"\n{}",
                s.nats.url(),
                s.approvals_config("10m")
            ),
        )
        .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["serve", "--role", "approver", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start gatehouse serve --role approver");
        ApproverProcess(child)
    }
}

impl Drop for ApproverProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_approver_processes_one_killed() {
    let s = Setup::new().await;
    let gw = s.gateway("10m").await;
    let mut announced = requests(&s.bus).await;
    let mut first = ApproverProcess::spawn(&s);
    let _second = ApproverProcess::spawn(&s);
    let client = Arc::new(connect(&gw.url("app", &s.issuer.token(&[]))).await.unwrap());
    let held = hold(&client, "delete from public.t");
    // Announced once, by one of the two.
    let req = next_request(&mut announced).await;
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    // Until the second has subscribed, a request finds no responder: asked
    // again, bounded. Until the server has seen the first go, a request may
    // reach the dead one and time out: asked again too, and then the answer
    // may be that an earlier attempt was applied after all.
    let d = ApproverDecision {
        v: SCHEMA_VERSION,
        request: req.id,
        statement_hash: req.statement_hash.clone(),
        decision: Choice::Approve,
        comment: None,
        token: s.dba("alice"),
    };
    let body: bytes::Bytes = serde_json::to_vec(&d).unwrap().into();
    let mut reply = None;
    let mut timed_out = false;
    for _ in 0..40 {
        match s.bus.request(DECIDE_SUBJECT, body.clone()).await {
            Ok(m) => {
                let r: DecisionReply = serde_json::from_slice(&m.payload).unwrap();
                let applied_before = timed_out
                    && !r.accepted
                    && matches!(
                        r.state,
                        Some(ApprovalState::Approved | ApprovalState::Executed)
                    );
                reply = Some((r, applied_before));
                break;
            }
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                // "No responders" comes back at once: poll, bounded.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) if e.kind() == async_nats::RequestErrorKind::TimedOut => timed_out = true,
            Err(e) => panic!("decision request failed: {e}"),
        }
    }
    let (r, applied_before) = reply.expect("the remaining approver answered");
    assert!(r.accepted || applied_before, "{r:?}");
    held.await.unwrap().unwrap();
    assert_eq!(s.count(), "0");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), announced.next())
            .await
            .is_err(),
        "the request was announced twice"
    );
}

/// Every record the gateway spooled, parsed.
fn spooled(gw: &Gw<LocalPolicy>) -> Vec<Value> {
    let dir = gw.evidence.as_ref().unwrap().dir.path().join("spool");
    let mut out = Vec::new();
    for (_, path) in gatehouse_ingress::evidence::spool_files(&dir).unwrap() {
        for line in std::fs::read_to_string(path).unwrap().lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                out.push(v);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_is_evidence_with_both_identities() {
    let s = Setup::new().await;
    let gw = s.gateway("10m").await;
    let mut announced = requests(&s.bus).await;
    let _approver = s.approver().await;
    let client = Arc::new(connect(&gw.url("app", &s.issuer.token(&[]))).await.unwrap());
    let held = hold(&client, "delete from public.t");
    let req = next_request(&mut announced).await;
    let outsider = s.approver_token("dave", json!({"groups": ["ops"]}), Duration::from_secs(600));
    assert!(
        !s.decide(&req, &outsider, Choice::Approve, None)
            .await
            .accepted
    );
    let r = s
        .decide(&req, &s.dba("alice"), Choice::Approve, Some("OPS-42"))
        .await;
    assert!(r.accepted, "{r:?}");
    held.await.unwrap().unwrap();

    // Recorded before the statement was forwarded, so spooled by now.
    let events = spooled(&gw);
    let id = req.id.to_string();
    let steps: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "approval" && e["request"] == id.as_str())
        .collect();
    let states: Vec<&str> = steps.iter().map(|e| e["state"].as_str().unwrap()).collect();
    assert_eq!(
        states,
        ["requested", "notified", "refused", "approved", "executed"],
        "{steps:?}"
    );
    for e in &steps {
        assert_eq!(e["requester"], req.requester.subject.as_str());
        assert_eq!(e["statement_hash"], req.statement_hash.as_str());
    }
    assert_eq!(steps[2]["by"], "dave");
    assert_eq!(steps[3]["approver"]["subject"], "alice");
    assert_eq!(steps[3]["approver"]["issuer"], APPROVER_ISSUER);
    assert_eq!(steps[3]["reason"], "OPS-42");
    let statements: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "statement" && e["approval"] == id.as_str())
        .collect();
    assert_eq!(statements.len(), 2, "held, then run: {statements:?}");
    assert_eq!(statements[0]["forwarded"], false);
    assert_eq!(statements[1]["forwarded"], true);
    assert_eq!(statements[0]["seq"], steps[0]["statement"]);

    // The session's count has the held statement once, and it was not refused.
    drop(client);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let ended = loop {
        if let Some(e) = spooled(&gw)
            .into_iter()
            .find(|e| e["type"] == "session_ended")
        {
            break e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no session_ended within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ended["statements"], 1, "{ended}");
    assert_eq!(ended["refused"], 0, "{ended}");
}

/// `gatehouse approvals ARGS` with the approver's token in the environment.
async fn cli(s: &Setup, token: &str, args: &[&str]) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    cmd.arg("approvals")
        .args(args)
        .env("GATEHOUSE_NATS_URL", s.nats.url())
        .env("GATEHOUSE_APPROVER_TOKEN", token);
    run(cmd).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_shows_and_approves() {
    let s = Setup::new().await;
    let gw = s.gateway("10m").await;
    let mut announced = requests(&s.bus).await;
    let _approver = s.approver().await;
    let client = Arc::new(connect(&gw.url("app", &s.issuer.token(&[]))).await.unwrap());
    let held = hold(&client, "delete from public.t");
    let req = next_request(&mut announced).await;
    let id = req.id.to_string();
    let alice = s.dba("alice");

    let list = cli(&s, &alice, &["list"]).await.unwrap();
    assert!(
        list.contains(&id) && list.contains("delete from public.t"),
        "{list}"
    );
    // Another group's approver does not see it.
    let ops = s.approver_token("dave", json!({"groups": ["ops"]}), Duration::from_secs(600));
    assert_eq!(
        cli(&s, &ops, &["list"]).await.unwrap(),
        "no pending requests"
    );
    let show = cli(&s, &alice, &["show", &id]).await.unwrap();
    assert!(show.contains("repository=acme/app"), "{show}");
    assert!(show.contains(&req.statement_hash), "{show}");
    // A refused decision exits 1 and says why.
    let err = cli(&s, &s.dba(&req.requester.subject), &["approve", &id])
        .await
        .unwrap_err();
    assert!(err.contains("own statement"), "{err}");
    let ok = cli(&s, &alice, &["approve", &id, "--comment", "OPS-42"])
        .await
        .unwrap();
    assert_eq!(ok, format!("{id}: approved"));
    held.await.unwrap().unwrap();
    assert_eq!(s.count(), "0");
    let bad = cli(&s, "not-a-token", &["list"]).await.unwrap_err();
    assert!(bad.contains("token rejected"), "{bad}");
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// Parse (unnamed) + Bind (one text parameter) + Execute + Sync, in one write.
fn exec_params(sql: &str, param: &str) -> Vec<u8> {
    let mut parse = Vec::new();
    cstr(&mut parse, "");
    cstr(&mut parse, sql);
    parse.extend_from_slice(&0i16.to_be_bytes());
    let mut out = message(b'P', &parse);
    out.extend(bind_execute_sync(param));
    out
}

fn bind_execute_sync(param: &str) -> Vec<u8> {
    let mut bind = Vec::new();
    cstr(&mut bind, "");
    cstr(&mut bind, "");
    bind.extend_from_slice(&0i16.to_be_bytes());
    bind.extend_from_slice(&1i16.to_be_bytes());
    bind.extend_from_slice(&(param.len() as i32).to_be_bytes());
    bind.extend_from_slice(param.as_bytes());
    bind.extend_from_slice(&0i16.to_be_bytes());
    let mut out = message(b'B', &bind);
    let mut exec = Vec::new();
    cstr(&mut exec, "");
    exec.extend_from_slice(&0i32.to_be_bytes());
    out.extend(message(b'E', &exec));
    out.extend(message(b'S', &[]));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_bind_binds_the_approval_to_its_parameters() {
    let s = Setup::new().await;
    let gw = s.gateway("10m").await;
    let mut announced = requests(&s.bus).await;
    let _approver = s.approver().await;
    let mut raw = Raw::login(gw.addr, "app", &s.issuer.token(&[])).await;
    raw.send(&exec_params("update public.c set n = $1::int", "7"))
        .await;
    let req = next_request(&mut announced).await;
    assert_eq!(
        req.params,
        Some(vec![gatehouse_schemas::evidence::Param::Text("7".into())])
    );
    assert_eq!(
        req.statement_hash,
        gatehouse_schemas::approval::statement_hash(
            req.session_id,
            &req.sql,
            req.params.as_deref()
        )
    );
    let r = s.decide(&req, &s.dba("alice"), Choice::Approve, None).await;
    assert!(r.accepted, "{r:?}");
    let msgs = raw.until_ready().await;
    assert!(msgs.iter().any(|m| m.tag == b'C'), "{msgs:?}");
    assert_eq!(s.pg.psql_admin_db(APP_DB, "select n from public.c"), "7");
    // The approved statement with other parameters: refused, nothing runs.
    raw.send(&bind_execute_sync("8")).await;
    let msgs = raw.until_ready().await;
    let err = msgs.iter().find(|m| m.tag == b'E').expect("an error");
    assert_eq!(err.field(b'C').as_deref(), Some("42501"), "{msgs:?}");
    assert_eq!(s.pg.psql_admin_db(APP_DB, "select n from public.c"), "7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_statement_runs_with_its_results_masked() {
    let s = Setup::new().await;
    s.pg.psql_admin_db(
        APP_DB,
        "create table public.p (id int, ssn text); \
         insert into public.p values (1, '123-45-6789'), (2, '987-65-4321'); \
         grant all on public.p to app",
    );
    // The approvals policy, with the caller's SSNs masked.
    std::fs::write(
        s.dir.path().join("policy.toml"),
        format!(
            "{POLICY}\n[[rules]]\nid = \"mask-ssn\"\nroles = [\"app\"]\nverdict = \"mask\"\n\
             [[rules.mask]]\ncolumn = \"public.p.ssn\"\nmethod = \"partial\"\nkeep_last = 4\n"
        ),
    )
    .unwrap();
    // Result rows are kept for replay too: they must be the masked ones.
    let handle = Arc::new(PolicyHandle::load(&s.dir.path().join("policy.toml")).unwrap());
    let store = ApprovalStore::open(s.bus.clone()).await.unwrap();
    let config = s.config("10m") + "[roles.app.results]\nrecord = \"rows\"\n";
    let gw = start_gateway_with(&config, LocalPolicy::new(handle), |g| {
        g.with_approvals(store)
    })
    .await;
    let _approver = s.approver().await;
    let mut announced = requests(&s.bus).await;
    let client = Arc::new(
        connect(&gw.url("app", &s.issuer.token(&[("actor", json!("carol"))])))
            .await
            .unwrap(),
    );
    let c = Arc::clone(&client);
    let held = tokio::spawn(async move {
        c.query("delete from public.p returning id, ssn, upper(ssn)", &[])
            .await
    });
    let req = next_request(&mut announced).await;
    assert_eq!(req.rule.as_deref(), Some("unbounded-delete"));
    let reply = s.decide(&req, &s.dba("alice"), Choice::Approve, None).await;
    assert!(reply.accepted, "{reply:?}");
    let rows = held.await.unwrap().expect("the approved statement ran");
    let got: Vec<(i32, Option<String>, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got.len(), 2, "{got:?}");
    for (_, ssn, upper) in &got {
        for v in [ssn, upper] {
            let v = v.as_deref().unwrap_or("");
            assert!(v.starts_with("***"), "{got:?}");
            assert!(!v.contains("123-45") && !v.contains("987-65"), "{got:?}");
        }
    }
    assert_eq!(
        s.pg.psql_admin_db(APP_DB, "select count(*) from public.p"),
        "0"
    );
    // The simple query protocol, likewise.
    s.pg.psql_admin_db(APP_DB, "insert into public.p values (3, '123-45-6789')");
    let c = Arc::clone(&client);
    let held =
        tokio::spawn(async move { c.simple_query("delete from public.p returning ssn").await });
    let req = next_request(&mut announced).await;
    let reply = s.decide(&req, &s.dba("alice"), Choice::Approve, None).await;
    assert!(reply.accepted, "{reply:?}");
    let messages = held.await.unwrap().expect("the approved statement ran");
    let rows: Vec<Option<String>> = messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_owned)),
            _ => None,
        })
        .collect();
    assert_eq!(rows, [Some("***-**-6789".to_owned())]);
    // Parameters bound with a held statement under a mask are shown to the
    // approver masked (this one goes to the masked column), and the approval
    // still binds their values.
    let mut raw = Raw::login(gw.addr, "app", &s.issuer.token(&[])).await;
    raw.send(&exec_params("update public.p set ssn = $1", "555-55-5555"))
        .await;
    let req = next_request(&mut announced).await;
    assert_eq!(
        req.params,
        Some(vec![gatehouse_schemas::evidence::Param::Masked(
            "***-**-5555".into()
        )])
    );
    let r = s.decide(&req, &s.dba("alice"), Choice::Approve, None).await;
    assert!(r.accepted, "{r:?}");
    let msgs = raw.until_ready().await;
    assert!(msgs.iter().any(|m| m.tag == b'C'), "{msgs:?}");
    // Another value of the same length: not what was approved.
    raw.send(&bind_execute_sync("666-66-6666")).await;
    let msgs = raw.until_ready().await;
    let err = msgs.iter().find(|m| m.tag == b'E').expect("an error");
    assert_eq!(err.field(b'C').as_deref(), Some("42501"), "{msgs:?}");
    assert_eq!(
        s.pg.psql_admin_db(
            APP_DB,
            "select count(*) from public.p where ssn = '666-66-6666'"
        ),
        "0"
    );
    // The released statements' rows, as kept for replay: masked.
    let events = spooled(&gw);
    let kept: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "result_data")
        .map(|e| &e["rows"])
        .collect();
    assert!(
        kept.contains(&&json!([["***-**-6789"]])),
        "the released simple query's rows: {kept:?}"
    );
    // Nor did the raw values reach evidence.
    let evidence = serde_json::to_string(&events).unwrap();
    for raw in ["123-45-6789", "987-65-4321", "555-55-5555", "666-66-6666"] {
        assert!(!evidence.contains(raw), "{raw} in evidence");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_started_without_nats_refuses_held_statements_until_it_is_back() {
    let mut s = Setup::new().await;
    s.nats.stop();
    // As `serve --role ingress` connects: retried in the background.
    let bus = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(s.nats.url())
        .await
        .unwrap();
    let store = ApprovalStore::connect_lazily(bus.clone());
    let handle = Arc::new(PolicyHandle::load(&s.dir.path().join("policy.toml")).unwrap());
    let gw = start_gateway_with(&s.config("10m"), LocalPolicy::new(handle), |g| {
        g.with_approvals(store)
    })
    .await;
    let client = Arc::new(connect(&gw.url("app", &s.issuer.token(&[]))).await.unwrap());
    let err = client
        .batch_execute("delete from public.t")
        .await
        .unwrap_err();
    let (code, message) = db_error(&err);
    assert_eq!(code, "57014", "{message}");
    assert!(message.contains("unavailable"), "{message}");
    assert_eq!(s.count(), "5");
    client.batch_execute("select 1").await.unwrap();

    // NATS back: the bucket opens at the next held statement.
    s.nats.restart();
    s.bus = s.nats.client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while bus.connection_state() != async_nats::connection::State::Connected {
        assert!(
            std::time::Instant::now() < deadline,
            "no reconnect within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _approver = s.approver().await;
    let mut announced = requests(&s.bus).await;
    let held = hold(&client, "delete from public.t");
    let req = next_request(&mut announced).await;
    let r = s.decide(&req, &s.dba("alice"), Choice::Approve, None).await;
    assert!(r.accepted, "{r:?}");
    held.await.unwrap().unwrap();
    assert_eq!(s.count(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_after_the_parse_round_trip_is_approved_with_its_parameters() {
    let s = Setup::new().await;
    let gw = s.gateway("10m").await;
    let mut announced = requests(&s.bus).await;
    let _approver = s.approver().await;
    let client = Arc::new(connect(&gw.url("app", &s.issuer.token(&[]))).await.unwrap());
    // tokio-postgres: Parse/Describe/Sync, then Bind/Execute/Sync.
    let c = client.clone();
    let held =
        tokio::spawn(async move { c.execute("update public.c set n = $1::int", &[&7i32]).await });
    // The text, held at its Parse (the parameters are not known yet).
    let text = next_request(&mut announced).await;
    assert_eq!(text.params, None);
    let r = s
        .decide(&text, &s.dba("alice"), Choice::Approve, None)
        .await;
    assert!(r.accepted, "{r:?}");
    // Then the Bind, held with the parameters that would run: nothing ran yet.
    let bound = next_request(&mut announced).await;
    assert_ne!(bound.id, text.id);
    assert_eq!(bound.sql, text.sql);
    let params = bound.params.clone().expect("the bound parameters");
    assert_eq!(params.len(), 1, "{params:?}");
    assert_eq!(
        bound.statement_hash,
        gatehouse_schemas::approval::statement_hash(bound.session_id, &bound.sql, Some(&params))
    );
    assert_eq!(s.pg.psql_admin_db(APP_DB, "select n from public.c"), "0");
    assert!(!held.is_finished());
    let r = s
        .decide(&bound, &s.dba("alice"), Choice::Approve, None)
        .await;
    assert!(r.accepted, "{r:?}");
    assert_eq!(held.await.unwrap().unwrap(), 1);
    assert_eq!(s.pg.psql_admin_db(APP_DB, "select n from public.c"), "7");

    // Denied at the Bind: 42501, nothing runs, the session stays usable.
    let c = client.clone();
    let held =
        tokio::spawn(async move { c.execute("update public.c set n = $1::int", &[&8i32]).await });
    let text = next_request(&mut announced).await;
    assert!(
        s.decide(&text, &s.dba("alice"), Choice::Approve, None)
            .await
            .accepted
    );
    let bound = next_request(&mut announced).await;
    assert!(bound.params.is_some());
    assert!(
        s.decide(&bound, &s.dba("bob"), Choice::Deny, Some("no"))
            .await
            .accepted
    );
    let err = held.await.unwrap().unwrap_err();
    let (code, message) = db_error(&err);
    assert_eq!(code, "42501", "{message}");
    assert!(message.contains("denied by bob"), "{message}");
    assert_eq!(s.pg.psql_admin_db(APP_DB, "select n from public.c"), "7");
    let rows = client.query("select n from public.c", &[]).await.unwrap();
    assert_eq!(rows[0].get::<_, i32>(0), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_starting_announces_only_what_is_pending() {
    let s = Setup::new().await;
    let gw = s.gateway("10m").await;
    let mut announced = requests(&s.bus).await;
    let first = s.approver().await;
    let client = Arc::new(connect(&gw.url("app", &s.issuer.token(&[]))).await.unwrap());
    // One request decided and run: its record is closed.
    let held = hold(&client, "delete from public.t");
    let old = next_request(&mut announced).await;
    assert!(
        s.decide(&old, &s.dba("alice"), Choice::Approve, None)
            .await
            .accepted
    );
    held.await.unwrap().unwrap();
    first.abort();
    let _ = first.await;

    let mut updates = s
        .bus
        .subscribe(format!(
            "{}.>",
            gatehouse_schemas::approval::UPDATE_SUBJECT_PREFIX
        ))
        .await
        .unwrap();
    s.bus.flush().await.unwrap();
    let _second = s.approver().await;
    s.pg.psql_admin_db(APP_DB, "insert into public.t values (1)");
    let held = hold(&client, "delete from public.t");
    let new = next_request(&mut announced).await;
    assert_ne!(new.id, old.id);
    // Every update up to the new request's: none is the closed one's again.
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), updates.next())
            .await
            .expect("an update within 20 s")
            .unwrap();
        let r: gatehouse_schemas::approval::ApprovalRecord =
            serde_json::from_slice(&msg.payload).unwrap();
        assert_ne!(
            r.request.id, old.id,
            "a closed record was published again: {r:?}"
        );
        if r.request.id == new.id {
            break;
        }
    }
    assert!(
        s.decide(&new, &s.dba("alice"), Choice::Deny, None)
            .await
            .accepted
    );
    assert!(held.await.unwrap().is_err());
}
