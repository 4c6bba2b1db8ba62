//! A real S3-compatible server, moto's (`moto_server`, PyPI `moto[server]`), on a
//! port of its own choosing, killed on drop; buckets with and without Object Lock,
//! and a raw client for what an operator or an attacker does behind our back.
//!
//! moto keeps everything in memory: [`Moto::restart`] comes back on the same
//! port, empty. For "S3 unreachable for a while, then back with its data" use
//! [`Moto::pause`] (SIGSTOP) and [`Moto::resume`] (SIGCONT): a paused server's
//! port still accepts connections (the kernel does that) but nothing answers,
//! so clients time out, as they do in a real outage.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use gatehouse_archiver::{S3Config, S3Store, StoreError};

/// The access key the tests use (moto accepts any).
pub const ACCESS_KEY: &str = "AKIAGATEHOUSETEST";
/// Its secret.
pub const SECRET_KEY: &str = "gatehouse-test-secret-2f9c";
/// The region.
pub const REGION: &str = "us-east-1";

/// How to run moto's server: `MOTO_SERVER` (set by deploy/test.sh), else
/// `moto_server` on PATH, else in deploy/test.sh's venv, else `python3 -m moto.server`.
pub fn moto_command() -> Command {
    if let Some(p) = std::env::var_os("MOTO_SERVER") {
        return Command::new(p);
    }
    let on_path = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| Path::new(dir).join("moto_server"))
        .find(|p| p.is_file());
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")));
    let venv = cache.map(|c| c.join("gatehouse/venv/bin/moto_server"));
    match on_path.or(venv.filter(|p| p.is_file())) {
        Some(p) => Command::new(p),
        None => {
            let mut c = Command::new("python3");
            c.args(["-m", "moto.server"]);
            c
        }
    }
}

/// A running moto server.
pub struct Moto {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
}

impl Moto {
    /// Starts a server on a port it picks itself (`-p 0`), read back from its
    /// log, so no other test can take the port between choosing and binding it.
    pub fn start() -> Moto {
        let (child, port) = spawn_server(0);
        Moto {
            port,
            child: Some(child),
        }
    }

    /// Its endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its data goes with it).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port. moto keeps its data in memory: the new
    /// server has no buckets (for an outage that keeps data, see [`Moto::pause`]).
    pub fn restart(&mut self) {
        self.stop();
        let (child, port) = spawn_server(self.port);
        assert_eq!(port, self.port);
        self.child = Some(child);
    }

    /// Freezes the server (SIGSTOP): connections are accepted, nothing answers,
    /// the data stays.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused server go on (SIGCONT), with its data.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
        wait_answering(self.port);
    }

    fn signal(&self, sig: i32) {
        let child = self.child.as_ref().expect("moto is running");
        // SAFETY: kill(2) on our own child's pid, which we have not waited for.
        let rc = unsafe { libc::kill(child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", child.id());
    }

    /// The store's configuration for `bucket` on this server: path-style
    /// addressing, and timeouts short enough for a test to see a paused server fail.
    pub fn config(&self, bucket: &str) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint()),
            force_path_style: true,
            region: REGION.into(),
            timeout: Duration::from_secs(20),
            attempt_timeout: Duration::from_secs(5),
            ..S3Config::new(bucket)
        }
    }

    /// The test credentials.
    pub fn credentials() -> Credentials {
        Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "gatehouse-test")
    }

    /// Connects an [`S3Store`] with the test credentials.
    pub async fn store(&self, config: &S3Config) -> Result<S3Store, StoreError> {
        S3Store::connect_with_credentials(config, Self::credentials()).await
    }

    /// The environment a `gatehouse` child process needs to reach this server
    /// through the standard AWS credential chain (and nothing else of the
    /// machine's: no profile, no instance metadata).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", "/nonexistent/gatehouse-test".into()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/gatehouse-test".into(),
            ),
        ]
    }

    /// A plain SDK client of this server, independent of [`S3Store`].
    pub fn client(&self) -> Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .region(Region::new(REGION))
            .credentials_provider(Self::credentials())
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .build();
        Client::from_conf(config)
    }

    /// Creates a bucket without Object Lock.
    pub async fn create_bucket(&self, name: &str) {
        self.client()
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
    }

    /// Creates a bucket with Object Lock enabled (and so versioning), without a
    /// default retention: only what a put asks for is locked.
    pub async fn create_locked_bucket(&self, name: &str) {
        self.client()
            .create_bucket()
            .bucket(name)
            .object_lock_enabled_for_bucket(true)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create locked bucket {name}: {e:?}"));
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_server(port: u16) -> (Child, u16) {
    let mut child = moto_command()
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start moto_server (deploy/test.sh installs moto[server]; or set MOTO_SERVER)");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    // Keeps draining the log (a request line each) so the server never blocks on
    // a full pipe. It prints the address once it is listening.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("Running on http://127.0.0.1:").nth(1)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(rest.trim().parse::<u16>().expect("moto's port"));
            }
        }
    });
    let port = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(port) => port,
        Err(e) => {
            let _ = child.kill();
            let status = child.wait();
            panic!("moto_server did not start listening ({e}; exit {status:?})");
        }
    };
    wait_answering(port);
    (child, port)
}

/// Waits (bounded) until the server answers an HTTP request.
fn wait_answering(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if answers(port) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "moto on port {port} does not answer"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 8];
    matches!(s.read_exact(&mut head), Ok(())) && head.starts_with(b"HTTP/1.")
}
