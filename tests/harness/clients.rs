//! Real client programs (psql, pgbench, Python) run as child processes without
//! blocking the runtime that serves the gateway.

use std::process::Output;

use tokio::process::Command;

/// Runs a command; `Ok(stdout)` on success, `Err(stderr + stdout)` otherwise.
pub async fn run(mut cmd: Command) -> Result<String, String> {
    let out: Output = cmd.kill_on_drop(true).output().await.unwrap_or_else(|e| {
        panic!("{cmd:?} could not start ({e}); deploy/test.sh installs the client programs")
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout.trim().to_owned())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            stdout
        ))
    }
}

/// `psql -c SQL` against a connection string, with the token in PGPASSWORD.
pub async fn psql(conninfo: &str, password: &str, sql: &str) -> Result<String, String> {
    let mut cmd = Command::new("psql");
    cmd.args([
        "-X",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-c",
        sql,
        conninfo,
    ])
    .env("PGPASSWORD", password)
    .env("PGCONNECT_TIMEOUT", "10");
    run(cmd).await
}
