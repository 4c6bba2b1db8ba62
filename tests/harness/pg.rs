//! A throwaway PostgreSQL cluster: copied from a cached `initdb` template, SCRAM
//! authentication, a free port on 127.0.0.1. Stopped when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// The superuser's password.
pub const ADMIN_PASSWORD: &str = "harness-admin-8d1f";
/// The upstream user Gatehouse connects as (SCRAM).
pub const APP_USER: &str = "app";
/// Its password: the credential that must never reach a client or a log.
pub const APP_PASSWORD: &str = "upstream-Secret-7c41e9";
/// A user whose pg_hba line asks for md5.
pub const MD5_USER: &str = "app_md5";
/// A user whose pg_hba line asks for a cleartext password.
pub const CLEAR_USER: &str = "app_clear";
/// A user whose pg_hba line is `trust`.
pub const TRUST_USER: &str = "app_trust";
/// The database the roles use.
pub const APP_DB: &str = "appdb";

/// Where PostgreSQL's server binaries live.
pub fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("GATEHOUSE_PG_BIN") {
        return dir.into();
    }
    for v in ["17", "16", "15"] {
        let p = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"));
        if p.join("postgres").exists() {
            return p;
        }
    }
    panic!("PostgreSQL server binaries not found; run deploy/test.sh, or set GATEHOUSE_PG_BIN")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// PostgreSQL refuses to run as root; the harness then uses this account.
fn pg_user() -> String {
    std::env::var("GATEHOUSE_TEST_PG_USER").unwrap_or_else(|_| "postgres".into())
}

fn pg_command(bin: &str) -> Command {
    let path = pg_bin().join(bin);
    if is_root() {
        let mut c = Command::new("runuser");
        c.arg("-u").arg(pg_user()).arg("--").arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn chown_to_pg(path: &Path) {
    if is_root() {
        let ok = Command::new("chown")
            .arg("-R")
            .arg(format!("{0}:{0}", pg_user()))
            .arg(path)
            .status()
            .expect("chown")
            .success();
        assert!(ok, "chown {}", path.display());
    }
}

fn check(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An initdb'd data directory shared by all tests of this machine, made once.
fn template() -> PathBuf {
    let version = check(
        pg_command("postgres")
            .arg("--version")
            .output()
            .expect("postgres"),
        "postgres --version",
    );
    let version: String = String::from_utf8_lossy(&version.stdout)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    let path = std::env::temp_dir().join(format!("gatehouse-pg-template-{version}"));
    if path.join("PG_VERSION").exists() {
        return path;
    }
    let work = tempfile::Builder::new()
        .prefix("gatehouse-pg-initdb")
        .tempdir()
        .unwrap()
        .keep();
    std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let pwfile = work.join("pw");
    std::fs::write(&pwfile, ADMIN_PASSWORD).unwrap();
    chown_to_pg(&work);
    let data = work.join("data");
    check(
        pg_command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-E", "UTF8", "--no-locale", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("initdb"),
        "initdb",
    );
    // Several test processes may race here: the first rename wins, the others
    // use the winner's template.
    if std::fs::rename(&data, &path).is_err() && !path.join("PG_VERSION").exists() {
        panic!(
            "could not install PostgreSQL template at {}",
            path.display()
        );
    }
    let _ = std::fs::remove_dir_all(&work);
    path
}

/// Options for [`Pg::start_with`].
#[derive(Default, Clone)]
pub struct PgOptions {
    /// Certificate and key (PEM) to serve TLS with.
    pub ssl: Option<(String, String)>,
}

/// A running cluster.
pub struct Pg {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Pg {
    /// Starts a cluster with the harness's users and database.
    pub fn start() -> Pg {
        Self::start_with(PgOptions::default())
    }

    /// Starts a cluster with options.
    pub fn start_with(opts: PgOptions) -> Pg {
        let template = template();
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-pg")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        check(
            Command::new("cp")
                .arg("-a")
                .arg(&template)
                .arg(&data)
                .output()
                .unwrap(),
            "copy template",
        );
        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all trust\n\
                 host all {MD5_USER} 127.0.0.1/32 md5\n\
                 host all {TRUST_USER} 127.0.0.1/32 trust\n\
                 host all {CLEAR_USER} 127.0.0.1/32 password\n\
                 host all all 127.0.0.1/32 scram-sha-256\n"
            ),
        )
        .unwrap();
        let mut settings = String::from(
            "listen_addresses = '127.0.0.1'\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nmax_connections = 200\nshared_buffers = 32MB\n",
        );
        if let Some((cert, key)) = &opts.ssl {
            std::fs::write(data.join("server.crt"), cert).unwrap();
            std::fs::write(data.join("server.key"), key).unwrap();
            std::fs::set_permissions(
                data.join("server.key"),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .unwrap();
            settings
                .push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        std::fs::write(data.join("postgresql.auto.conf"), &settings).unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        chown_to_pg(dir.path());

        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let out = pg_command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("log"))
                .arg("-o")
                .arg(format!(
                    "-c port={port} -c unix_socket_directories='{}'",
                    dir.path().display()
                ))
                .args(["-w", "-t", "60", "start"])
                .output()
                .unwrap();
            if out.status.success() {
                let pg = Pg { port, dir };
                pg.setup();
                return pg;
            }
            // Most likely another test took the port between bind and start.
            last_err = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        }
        panic!("PostgreSQL did not start: {last_err}");
    }

    fn setup(&self) {
        self.psql_admin(&format!(
            "SET password_encryption = 'scram-sha-256';
             CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}';
             CREATE ROLE {CLEAR_USER} LOGIN PASSWORD '{APP_PASSWORD}';
             CREATE ROLE {TRUST_USER} LOGIN;
             SET password_encryption = 'md5';
             CREATE ROLE {MD5_USER} LOGIN PASSWORD '{APP_PASSWORD}';"
        ));
        self.psql_admin(&format!("CREATE DATABASE {APP_DB} OWNER {APP_USER}"));
    }

    /// Runs SQL as the superuser over the Unix socket; panics on error.
    pub fn psql_admin(&self, sql: &str) -> String {
        self.psql_admin_db("postgres", sql)
    }

    /// Runs SQL as the superuser in `db`.
    pub fn psql_admin_db(&self, db: &str, sql: &str) -> String {
        let out = check(
            Command::new(pg_bin().join("psql"))
                .args([
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-U",
                    "postgres",
                ])
                .arg("-h")
                .arg(self.dir.path())
                .arg("-p")
                .arg(self.port.to_string())
                .arg("-d")
                .arg(db)
                .arg("-c")
                .arg(sql)
                .output()
                .unwrap(),
            "psql",
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// How many backends are running exactly `query` right now.
    pub fn active(&self, query: &str) -> usize {
        let sql = format!(
            "select count(*) from pg_stat_activity where query = '{}' and state = 'active'",
            query.replace('\'', "''")
        );
        self.psql_admin(&sql).parse().unwrap()
    }

    /// Waits until a backend is running exactly `query` (a bounded poll of
    /// pg_stat_activity: the condition itself, not a guess at timing).
    pub async fn wait_active(&self, query: &str) {
        for _ in 0..1500 {
            if self.active(query) == 1 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("no backend started running {query:?}");
    }

    /// Waits until `user` has no backend left but the gateway's catalog
    /// connection: every gateway session of that role has closed its upstream connection (a session records its end
    /// right after, without yielding), so a test that shuts the gateway down
    /// next does not cut a session whose client's Terminate is still in flight.
    #[allow(dead_code)]
    pub async fn wait_no_backends(&self, user: &str) {
        let sql = format!(
            "select count(*) from pg_stat_activity where usename = '{}' \
             and application_name is distinct from 'gatehouse-catalog'",
            user.replace('\'', "''")
        );
        for _ in 0..1500 {
            if self.psql_admin(&sql) == "0" {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("{user} still has backends after 30 s");
    }

    /// A libpq connection string straight to this cluster.
    pub fn direct_url(&self, user: &str, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={APP_DB} sslmode=disable",
            self.port
        )
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Stops the server (fast shutdown).
    pub fn stop(&self) {
        let _ = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.stop();
    }
}
