//! The gateway in-process, a development issuer, and a statement recorder.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use gatehouse::token::{self, MintRequest};
use gatehouse_ingress::config::Config;
use gatehouse_ingress::decision::{DecisionError, DecisionPoint};
use gatehouse_ingress::{Gateway, run};
use gatehouse_schemas::StatementEvent;
use gatehouse_schemas::decision::{Decision, Verdict};
use serde_json::{Map, Value};
use tempfile::TempDir;
use tokio::sync::oneshot;

use super::pg::{APP_DB, APP_PASSWORD, APP_USER, Pg};

/// The issuer name tokens carry.
pub const ISSUER: &str = "https://issuer.test.invalid";
/// The audience the gateway accepts.
pub const AUDIENCE: &str = "gatehouse-test";

/// A development issuer whose JWKS file the gateway reads.
pub struct Issuer {
    /// Holds the key files.
    pub dir: TempDir,
    /// The signing key.
    pub key: SigningKey,
}

impl Issuer {
    /// A fresh key pair.
    pub fn new() -> Issuer {
        let dir = tempfile::tempdir().unwrap();
        let key = token::keygen(dir.path()).unwrap();
        Issuer { dir, key }
    }

    /// Path of the JWKS.
    pub fn jwks_path(&self) -> String {
        self.dir.path().join(token::JWKS_FILE).display().to_string()
    }

    /// Path of the private key.
    pub fn key_path(&self) -> String {
        self.dir.path().join(token::KEY_FILE).display().to_string()
    }

    /// A valid token for the `app` role (repository acme/app), with extra claims.
    pub fn token(&self, extra: &[(&str, Value)]) -> String {
        let mut claims = Map::new();
        claims.insert("repository".into(), "acme/app".into());
        claims.insert("run_id".into(), "4242".into());
        for (k, v) in extra {
            claims.insert((*k).into(), v.clone());
        }
        self.mint(claims, Duration::from_secs(600))
    }

    /// A token with exactly these claims over the standard ones.
    pub fn mint(&self, claims: Map<String, Value>, ttl: Duration) -> String {
        token::mint(
            &self.key,
            &MintRequest {
                issuer: ISSUER.into(),
                audience: AUDIENCE.into(),
                subject: "repo:acme/app:ref:refs/heads/main".into(),
                ttl,
                claims,
            },
        )
        .unwrap()
    }
}

impl Default for Issuer {
    fn default() -> Self {
        Self::new()
    }
}

/// A config with role `app` (upstream user `app`, SCRAM) for repository acme/app.
pub fn base_config(pg: &Pg, issuer: &Issuer) -> String {
    format!(
        r#"
[ingress]
listen = "127.0.0.1:0"
allow_cleartext_without_tls = true
auth_timeout = "5s"

[log]
level = "debug"

[[issuers]]
name = "test"
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
jwks_file = "{jwks}"
algorithms = ["EdDSA", "RS256", "ES256"]
leeway = "0s"

[roles.app]
user = "{APP_USER}"
password = "{APP_PASSWORD}"
upstream = {{ host = "127.0.0.1", port = {port}, dbname = "{APP_DB}", tls = "disable" }}
[[roles.app.allow]]
issuer = "test"
claims = {{ repository = "acme/app" }}
"#,
        jwks = issuer.jwks_path(),
        port = pg.port,
    )
}

/// A gateway serving on a free port until dropped.
pub struct Gw<D: DecisionPoint> {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its shared state.
    pub gateway: Arc<Gateway<D>>,
    /// Where the gateway records evidence (local mode), if the harness set it up.
    pub evidence: Option<Evidence>,
    pipeline: Option<gatehouse::local_evidence::Evidence>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A local evidence directory and the key pair that signs it.
pub struct Evidence {
    /// Holds `spool/`, `archive/` and `keys/`.
    pub dir: TempDir,
}

impl Evidence {
    /// A fresh directory with a signing key pair in `keys/`.
    pub fn new() -> Evidence {
        let dir = tempfile::tempdir().unwrap();
        gatehouse_archiver::keys::keygen(&dir.path().join("keys")).unwrap();
        Evidence { dir }
    }

    /// The `[evidence]` section recording into this directory.
    pub fn config(&self) -> String {
        format!(
            "\n[evidence]\nmode = \"local\"\ndir = \"{}\"\nsigning_key = \"{}\"\n",
            self.dir.path().display(),
            self.signing_key().display()
        )
    }

    /// The private key.
    pub fn signing_key(&self) -> std::path::PathBuf {
        self.dir
            .path()
            .join("keys")
            .join(gatehouse_archiver::keys::SIGNING_KEY_FILE)
    }

    /// The public key, for `gatehouse verify --key`.
    pub fn verifying_key(&self) -> std::path::PathBuf {
        self.dir
            .path()
            .join("keys")
            .join(gatehouse_archiver::keys::VERIFYING_KEY_FILE)
    }

    /// Where the archiver writes sealed segments.
    pub fn archive(&self) -> std::path::PathBuf {
        self.dir.path().join("archive")
    }
}

impl Default for Evidence {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: DecisionPoint> Gw<D> {
    /// A libpq connection string through the gateway.
    pub fn url(&self, role: &str, token: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={role} password={token} dbname={APP_DB} sslmode=disable",
            self.addr.port()
        )
    }

    /// Stops accepting and ends all sessions.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
        if let Some(pipeline) = self.pipeline.take() {
            pipeline.close().await;
        }
    }
}

impl<D: DecisionPoint> Drop for Gw<D> {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Starts a gateway from TOML. Without an `[evidence]` section the gateway
/// records into a fresh local evidence directory (`Gw::evidence`), as a
/// deployment would: every test then also runs with evidence on.
pub async fn start_gateway<D: DecisionPoint>(toml: &str, decision: D) -> Gw<D> {
    start_gateway_with(toml, decision, |g| g).await
}

/// [`start_gateway`], with `extend` applied to the gateway before it serves
/// (e.g. `Gateway::with_approvals`).
pub async fn start_gateway_with<D: DecisionPoint>(
    toml: &str,
    decision: D,
    extend: impl FnOnce(Gateway<D>) -> Gateway<D>,
) -> Gw<D> {
    init_tracing();
    let (toml, evidence) = if toml.contains("[evidence]") {
        (toml.to_owned(), None)
    } else {
        let ev = Evidence::new();
        (format!("{toml}{}", ev.config()), Some(ev))
    };
    let config = Config::from_toml(&toml).expect("config");
    let pipeline = gatehouse::local_evidence::recorder(&config)
        .await
        .expect("evidence");
    let gateway = extend(Gateway::new(config, decision).expect("gateway"));
    let gateway = Arc::new(match &pipeline.recorder {
        Some(r) => gateway.with_evidence(r.clone()),
        None => gateway,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(run(gateway.clone(), listener, async {
        let _ = rx.await;
    }));
    Gw {
        addr,
        gateway,
        evidence,
        pipeline: Some(pipeline),
        stop: Some(tx),
        task: Some(task),
    }
}

/// Logs go to a buffer the tests can search (for secrets that must not be there).
pub fn init_tracing() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_writer(LogCapture)
            .with_ansi(false)
            .init();
    });
}

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Everything logged so far in this test process.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

#[derive(Clone, Copy)]
struct LogCapture;

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

/// An allow-everything decision, as the ingress tests before policy need.
pub fn allow() -> Arc<Decision> {
    Arc::new(Decision {
        v: 1,
        verdict: Verdict::Allow,
        rule: Some("test-allow-all".into()),
        policy_version: "test".into(),
        statements: Vec::new(),
        shadow: Vec::new(),
        cacheable: false,
        shape_cacheable: false,
        values: None,
        relations: Vec::new(),
        functions: Vec::new(),
    })
}

/// A decision point that allows everything: for tests of the wire path itself.
#[derive(Default, Clone, Copy)]
pub struct AllowAll;

impl DecisionPoint for AllowAll {
    async fn decide(
        &self,
        _event: &StatementEvent<'_>,
        _prepared: &std::collections::BTreeMap<String, String>,
        _catalog: &gatehouse_schemas::decision::CatalogFacts,
    ) -> Result<Arc<Decision>, DecisionError> {
        Ok(allow())
    }
}

/// A decision point that records every event and allows it.
#[derive(Default, Clone)]
pub struct Recorder {
    /// Events in arrival order.
    pub events: Arc<Mutex<Vec<StatementEvent<'static>>>>,
}

impl Recorder {
    /// A snapshot of the events.
    pub fn events(&self) -> Vec<StatementEvent<'static>> {
        self.events.lock().unwrap().clone()
    }
}

impl DecisionPoint for Recorder {
    async fn decide(
        &self,
        event: &StatementEvent<'_>,
        _prepared: &std::collections::BTreeMap<String, String>,
        _catalog: &gatehouse_schemas::decision::CatalogFacts,
    ) -> Result<Arc<Decision>, DecisionError> {
        self.events.lock().unwrap().push(event.clone().into_owned());
        Ok(allow())
    }
}

/// Connects with tokio-postgres and drives the connection in the background.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The SQLSTATE and message of a failed connection or query.
pub fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e:?}"));
    (db.code().code().to_owned(), db.message().to_owned())
}
