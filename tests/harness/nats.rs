//! A real `nats-server` (Debian's package) on a free port, killed on drop, and
//! `gatehouse serve --role decider` processes attached to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::StreamExt;
use gatehouse_schemas::decision::{POLICY_SUBJECT, PolicyAnnouncement};

/// The server binary: `NATS_SERVER`, else on PATH, else where Debian puts it.
pub fn nats_server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return p.into();
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("nats-server");
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from("/usr/sbin/nats-server")
}

/// A running `nats-server` with JetStream (file storage in its own directory).
pub struct Nats {
    /// Its client port.
    pub port: u16,
    child: Option<Child>,
    store: tempfile::TempDir,
}

impl Nats {
    /// Starts a server on a port it picks itself (`-p -1`), read back from its log,
    /// so no other test can take the port between choosing and binding it.
    pub fn start() -> Nats {
        let store = tempfile::tempdir().unwrap();
        let (child, port) = spawn_server("-1", store.path());
        Nats {
            port,
            child: Some(child),
            store,
        }
    }

    /// Its client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A connected client.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url())
            .await
            .expect("connect to nats")
    }

    /// Stops the server (SIGKILL: nothing is flushed on the way out beyond what
    /// JetStream already synced).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same JetStream store.
    pub fn restart(&mut self) {
        self.stop();
        let (child, port) = spawn_server(&self.port.to_string(), self.store.path());
        assert_eq!(port, self.port);
        self.child = Some(child);
    }
}

fn spawn_server(port: &str, store: &Path) -> (Child, u16) {
    let mut child = Command::new(nats_server_bin())
        .args(["-a", "127.0.0.1", "-p", port, "-js", "-sd"])
        .arg(store)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nats-server (apt-get install nats-server)");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    // Keeps draining the log so the server never blocks on a full pipe. Ready
    // once it says so (JetStream is up by then).
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        let mut port = None;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("Listening for client connections on ").nth(1)
                && let Some(p) = rest.trim().rsplit(':').next()
            {
                port = p.parse::<u16>().ok();
            }
            if line.contains("Server is ready")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(port.expect("port before ready"));
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("nats-server did not become ready");
    (child, port)
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `gatehouse serve --role decider` as a child process, killed on drop.
pub struct DeciderProcess {
    child: Child,
}

impl DeciderProcess {
    /// Starts one with `policy`, on `nats`. The file is watched only on SIGHUP
    /// (a long watch interval), so tests decide when it reloads.
    pub fn spawn(nats: &Nats, dir: &Path, policy: &Path) -> DeciderProcess {
        let config = dir.join(format!("decider-{}.toml", uuid_like()));
        std::fs::write(
            &config,
            format!(
                "[log]\nlevel = \"info,gatehouse_decider=debug\"\n\n[decider]\npolicy = \"{}\"\nwatch_interval = \"1h\"\n\n[nats]\nurl = \"{}\"\n",
                policy.display(),
                nats.url()
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["serve", "--role", "decider", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start gatehouse serve --role decider");
        DeciderProcess { child }
    }

    /// Sends a signal (`libc::SIGTERM`, `SIGHUP`, `SIGKILL`).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits (bounded) for the process to exit.
    pub async fn wait_exit(&mut self) {
        for _ in 0..400 {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("decider did not exit");
    }
}

impl Drop for DeciderProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Policy announcements as a test sees them.
pub struct Announcements {
    sub: async_nats::Subscriber,
}

impl Announcements {
    /// Subscribes (before starting the deciders whose announcements it waits for).
    pub async fn subscribe(client: &async_nats::Client) -> Announcements {
        let sub = client.subscribe(POLICY_SUBJECT).await.unwrap();
        client.flush().await.unwrap();
        Announcements { sub }
    }

    /// The next announcement that satisfies `pred`, within 20 s.
    pub async fn wait_for(
        &mut self,
        mut pred: impl FnMut(&PolicyAnnouncement) -> bool,
    ) -> PolicyAnnouncement {
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let msg = self.sub.next().await.expect("subscription open");
                let a: PolicyAnnouncement = serde_json::from_slice(&msg.payload).unwrap();
                if pred(&a) {
                    return a;
                }
            }
        })
        .await
        .expect("announcement within 20 s")
    }
}
