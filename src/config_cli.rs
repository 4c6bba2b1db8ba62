//! `gatehouse config check FILE`: the whole gateway config checked offline, for
//! the role that will run it, before a restart or a rollout.
//!
//! A thin layer over the loaders `serve` uses (`Config::load`, the archiver's
//! `store()`, the evidence `local_paths()`, `Policy::load`): what passes here is
//! what `serve` accepts, so the check cannot drift from the service. Parse errors
//! name the line and column (the `toml` crate reports them; the `config` crate,
//! which adds the environment overrides, does not).

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Subcommand, ValueEnum};
use gatehouse_decider::Policy;
use gatehouse_ingress::config::{Config, EvidenceMode};

/// Config subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a gateway config for the role that runs it: every section that role
    /// reads, and (unless --skip-files) the files it names: the policy (parsed),
    /// JWKS files (parsed), keys, certificates and password files (readable).
    Check {
        /// The config file (TOML). GATEHOUSE__SECTION__KEY variables apply, as in `serve`.
        file: PathBuf,
        /// The role that runs it (`serve --role`).
        #[arg(long, value_enum, default_value = "all")]
        role: CheckRole,
        /// Look up absolute paths the config names under this directory (e.g. a
        /// container's files laid out by a test, or a mounted image).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Check the config alone, not the files it names.
        #[arg(long)]
        skip_files: bool,
    },
}

/// The roles of `serve --role`, as `config check` knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckRole {
    /// Ingress and decider in one process, local evidence.
    All,
    /// The wire proxy of distributed mode.
    Ingress,
    /// The policy service.
    Decider,
    /// The evidence archiver.
    Archiver,
    /// The approvals service.
    Approver,
}

/// Runs a subcommand; returns the process exit code.
pub fn run(cmd: ConfigCommand, out: &mut impl std::io::Write) -> Result<i32> {
    let ConfigCommand::Check {
        file,
        role,
        root,
        skip_files,
    } = cmd;
    let files = (!skip_files).then_some(Files { root });
    match check(&file, role, files.as_ref()) {
        Ok(summary) => {
            writeln!(out, "{}: ok ({summary})", file.display())?;
            Ok(0)
        }
        Err(problems) => {
            for p in &problems {
                eprintln!("{}: {p}", file.display());
            }
            writeln!(
                out,
                "{}: {} problem{}",
                file.display(),
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            )?;
            Ok(1)
        }
    }
}

/// Where the files a config names are looked up.
struct Files {
    root: Option<PathBuf>,
}

impl Files {
    fn path(&self, p: &Path) -> PathBuf {
        match &self.root {
            Some(root) if p.is_absolute() => root.join(p.strip_prefix("/").unwrap_or(p)),
            _ => p.to_path_buf(),
        }
    }

    /// A file that must be readable (a key, a certificate, a password).
    fn readable(&self, what: &str, p: &Path, problems: &mut Vec<String>) {
        if let Err(e) = std::fs::File::open(self.path(p)) {
            problems.push(format!("{what} {}: {e}", p.display()));
        }
    }
}

/// Checks `file` for `role`; the summary, or every problem found.
fn check(file: &Path, role: CheckRole, files: Option<&Files>) -> Result<String, Vec<String>> {
    let text = std::fs::read_to_string(file).map_err(|e| vec![format!("cannot read: {e}")])?;
    // The toml crate names the line and column of a syntax error, an unknown
    // key or a wrong type; `Config::load` below adds the environment overrides
    // and the cross-field checks.
    if let Err(e) = toml::from_str::<Config>(&text) {
        return Err(vec![e.to_string().trim_end().to_owned()]);
    }
    let cfg = Config::load(file).map_err(|e| vec![e.to_string()])?;
    let mut problems = Vec::new();
    let mut summary = Vec::new();
    let front = matches!(role, CheckRole::All | CheckRole::Ingress);
    if front {
        check_front(&cfg, files, &mut problems);
        summary.push(format!(
            "{} roles, {} issuers, evidence {:?}",
            cfg.roles.len(),
            cfg.issuers.len(),
            cfg.evidence.mode
        ));
    }
    if matches!(role, CheckRole::All | CheckRole::Decider) {
        match &cfg.decider.policy {
            None => problems.push(
                "[decider] policy is required for this role (see deploy/policy.example.toml)"
                    .into(),
            ),
            Some(p) => {
                if let Some(f) = files {
                    match Policy::load(&f.path(p)) {
                        Ok(policy) => summary.push(format!(
                            "policy {} ({} rules)",
                            policy.version,
                            policy.rules.len()
                        )),
                        Err(e) => problems.push(format!("[decider] policy {}: {e}", p.display())),
                    }
                }
            }
        }
    }
    if role == CheckRole::Archiver {
        match cfg.archiver.store() {
            Ok((key, store)) => {
                if let Some(f) = files {
                    f.readable("[archiver] signing_key", key, &mut problems);
                }
                summary.push(format!("archive {store:?}"));
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    let approvals_served = role == CheckRole::Approver
        || (role == CheckRole::All && cfg.approvals.admin_listen.is_some());
    if approvals_served {
        if cfg.approvals.issuers.is_empty() {
            problems.push(
                "[approvals] has no [[approvals.issuers]]: no approver could authenticate".into(),
            );
        }
        if let Some(f) = files {
            for iss in &cfg.approvals.issuers {
                check_jwks(f, "[[approvals.issuers]]", iss, &mut problems);
            }
        }
        summary.push(format!("{} approver issuers", cfg.approvals.issuers.len()));
    }
    if problems.is_empty() {
        Ok(format!("role {role:?}: {}", summary.join(", ")).to_lowercase())
    } else {
        Err(problems)
    }
}

/// What the client-facing side reads: evidence, roles, issuers, masking, TLS.
fn check_front(cfg: &Config, files: Option<&Files>, problems: &mut Vec<String>) {
    match cfg.evidence.mode {
        EvidenceMode::Local => match cfg.evidence.local_paths() {
            Ok((_, key)) => {
                if let Some(f) = files {
                    f.readable("[evidence] signing_key", key, problems);
                }
            }
            Err(e) => problems.push(e.to_string()),
        },
        EvidenceMode::Jetstream | EvidenceMode::Off => {}
    }
    if cfg.issuers.is_empty() {
        problems.push("no [[issuers]]: no client could authenticate".into());
    }
    if cfg.roles.is_empty() {
        problems.push("no [roles.NAME]: no client could connect".into());
    }
    for (name, r) in &cfg.roles {
        let sources = [
            r.password.is_some(),
            r.password_env.is_some(),
            r.password_file.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            problems.push(format!(
                "role {name}: give only one of password, password_env, password_file"
            ));
        }
        if let Some(f) = files {
            if let Some(p) = &r.password_file {
                f.readable(&format!("role {name}: password_file"), p, problems);
            }
            if let Some(p) = &r.upstream.ca_file {
                f.readable(&format!("role {name}: upstream ca_file"), p, problems);
            }
        }
    }
    if cfg.masking.hash_key_env.is_some() && cfg.masking.hash_key_file.is_some() {
        problems.push("[masking]: give only one of hash_key_env, hash_key_file".into());
    }
    let Some(f) = files else { return };
    for iss in &cfg.issuers {
        check_jwks(f, "[[issuers]]", iss, problems);
    }
    if let Some(tls) = &cfg.ingress.tls {
        f.readable("[ingress.tls] cert", &tls.cert, problems);
        f.readable("[ingress.tls] key", &tls.key, problems);
    }
    if let Some(p) = &cfg.masking.hash_key_file {
        f.readable("[masking] hash_key_file", p, problems);
    }
}

/// An issuer's local JWKS must parse as a key set; its CA file must be readable.
fn check_jwks(
    f: &Files,
    section: &str,
    iss: &gatehouse_ingress::config::IssuerConfig,
    problems: &mut Vec<String>,
) {
    if let Some(p) = &iss.jwks_file {
        let parsed = std::fs::read_to_string(f.path(p))
            .map_err(|e| e.to_string())
            .and_then(|t| {
                serde_json::from_str::<jsonwebtoken::jwk::JwkSet>(&t).map_err(|e| e.to_string())
            });
        if let Err(e) = parsed {
            problems.push(format!(
                "{section} {}: jwks_file {}: {e}",
                iss.name,
                p.display()
            ));
        }
    }
    if let Some(p) = &iss.jwks_ca_file {
        f.readable(
            &format!("{section} {}: jwks_ca_file", iss.name),
            p,
            problems,
        );
    }
}
