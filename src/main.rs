//! `gatehouse`: one binary whose subcommands run the gateway and its tools.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use gatehouse::config::{Config, LogFormat};
use gatehouse::{services, token};
use gatehouse_approver::store::ApprovalStore;
use gatehouse_decider::PolicyHandle;
use gatehouse_ingress::decision::LocalPolicy;
use gatehouse_ingress::remote::NatsDecisionPoint;
use gatehouse_ingress::{Gateway, run};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "An access gateway for machine identities on PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: all-in-one, or one side of distributed mode.
    Serve {
        /// Configuration file (TOML); GATEHOUSE__SECTION__KEY variables override it.
        #[arg(long, short, env = "GATEHOUSE_CONFIG")]
        config: PathBuf,
        /// `all`: ingress and decider in one process. `ingress`: asks deciders over
        /// NATS (`[nats] url`), needs no policy. `decider`: answers over NATS.
        /// `archiver`: JetStream evidence into Kafka and signed segments (`[archiver]`).
        /// `approver`: approvers' decisions on held statements (`[approvals]`).
        #[arg(long, value_enum, env = "GATEHOUSE_ROLE", default_value = "all")]
        role: ServeRole,
    },
    /// Development issuer: keys and tokens for demos and tests. Not for production.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Run a command (psql, a migration tool) with this CI job's token as its
    /// PostgreSQL password, taken from the environment the job runs in.
    Connect(gatehouse::connect::ConnectArgs),
    /// Try what a config names (issuers' keys, upstreams with the gateway's
    /// credential, clocks, NATS, evidence directory, S3, Kafka): one line per check.
    Doctor(gatehouse::doctor::DoctorArgs),
    /// Check a whole gateway config, for the role that runs it.
    Config {
        #[command(subcommand)]
        command: gatehouse::config_cli::ConfigCommand,
    },
    /// Check, explain and test policies.
    Policy {
        #[command(subcommand)]
        command: gatehouse::policy_cli::PolicyCommand,
    },
    /// Approve or deny held statements: over NATS, or the all-in-one gateway's
    /// admin endpoint (`--admin`).
    Approvals {
        #[command(subcommand)]
        command: gatehouse::approvals_cli::ApprovalsCommand,
    },
    /// Evidence: verify, replay, sessions list, evidence keygen.
    #[command(flatten)]
    Audit(gatehouse::evidence_cli::AuditCommand),
    /// Answers for auditors: report, who-changed, access review.
    #[command(flatten)]
    Answer(gatehouse::audit::cli::AnswerCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Write a new Ed25519 key pair (dev-issuer.pem) and its JWKS (jwks.json) into DIR.
    Keygen {
        /// Directory for the key files.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print a token signed by the development issuer.
    Mint {
        /// The private key written by `token keygen`.
        #[arg(
            long,
            env = "GATEHOUSE_DEV_KEY",
            default_value = ".gatehouse/quickstart/issuer/dev-issuer.pem"
        )]
        key: PathBuf,
        /// `sub` claim.
        #[arg(long)]
        sub: String,
        /// `iss` claim; must match an [[issuers]] entry of the gateway.
        #[arg(long, default_value = "gatehouse-dev")]
        issuer: String,
        /// `aud` claim.
        #[arg(long, default_value = "gatehouse")]
        aud: String,
        /// Lifetime, e.g. 10m, 1h.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Extra claim: KEY=VALUE (string) or KEY:=JSON (any JSON value). Repeatable.
        #[arg(long = "claim", value_parser = token::parse_claim)]
        claims: Vec<(String, serde_json::Value)>,
    },
}

fn init_logging(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal; log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when first polled: a signal that arrives as soon as the process
/// says it listens must not find the default action (exit) still in place.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
        async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Reloads the policy on SIGHUP and when its file changes; a policy that fails
/// to load leaves the previous one in force, and sessions never notice either way.
/// The SIGHUP handler is installed when this is called (see [`shutdown_signal`]).
fn watch_policy(handle: Arc<PolicyHandle>, every: Duration) -> impl Future<Output = ()> {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .expect("install SIGHUP handler");
    async move {
        let mut tick = tokio::time::interval(every);
        loop {
            #[cfg(unix)]
            let forced = tokio::select! {
                _ = tick.tick() => false,
                _ = hup.recv() => true,
            };
            #[cfg(not(unix))]
            let forced = {
                tick.tick().await;
                false
            };
            if !forced && !handle.changed_on_disk() {
                continue;
            }
            match handle.reload() {
                Ok(Some(version)) => tracing::info!(version = %version, "policy_reloaded"),
                Ok(None) => tracing::debug!("policy_unchanged"),
                Err(e) => tracing::error!(error = %e, "policy_reload_failed_keeping_previous"),
            }
        }
    }
}

/// SIGHUP in a role that has nothing to reload yet (systemd's `ExecReload=`
/// sends it to every unit): noted, instead of the default action, which would
/// end the process. The handler is installed when this is called.
fn note_hangups(role: &'static str) -> impl Future<Output = ()> {
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .expect("install SIGHUP handler");
    async move {
        #[cfg(unix)]
        while hup.recv().await.is_some() {
            tracing::info!(role, "sighup_nothing_to_reload");
        }
    }
}

/// Which services `gatehouse serve` runs.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ServeRole {
    /// Ingress with the decider in-process (no bus).
    All,
    /// The wire proxy, deciding over NATS.
    Ingress,
    /// The policy service on NATS, in the `gatehouse-decider` queue group.
    Decider,
    /// The evidence archiver: a durable JetStream consumer writing to Kafka and
    /// signed segments.
    Archiver,
    /// The approver: approvers' decisions on held statements over NATS
    /// (`[approvals]`), in the `gatehouse-approver` queue group.
    Approver,
}

/// A client of the bus (`[nats] url`) named `name`, connecting again in the
/// background while the bus is away.
async fn connect_nats(cfg: &Config, name: &str) -> Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connect(cfg.nats.url.as_str())
        .await
        .with_context(|| format!("connect to NATS at {}", cfg.nats.shown_url()))
}

/// `serve --role approver`: takes approvers' decisions over NATS until SIGTERM.
async fn serve_approver(cfg: Config) -> Result<()> {
    tokio::spawn(note_hangups("approver"));
    let client = connect_nats(&cfg, "gatehouse-approver").await?;
    let store = ApprovalStore::open(client.clone()).await?;
    let approver = Arc::new(services::approver(store, &cfg.approvals)?);
    gatehouse_approver::service::run(approver, client, shutdown_signal()).await?;
    Ok(())
}

/// `serve --role decider`: loads and watches the policy, answers over NATS until
/// SIGTERM; the service announces the version at start and after every reload.
async fn serve_decider(cfg: Config) -> Result<()> {
    let policy_path = cfg
        .decider
        .policy
        .clone()
        .context("no [decider] policy in the config (see deploy/policy.example.toml)")?;
    let handle = Arc::new(PolicyHandle::load(&policy_path)?);
    tracing::info!(version = %handle.current().version, path = %policy_path.display(), "policy_loaded");
    let client = connect_nats(&cfg, "gatehouse-decider").await?;
    tokio::spawn(watch_policy(handle.clone(), cfg.decider.watch_interval));
    gatehouse_decider::service::run(handle, client, shutdown_signal()).await?;
    Ok(())
}

/// `serve --role ingress`: the wire proxy, asking the deciders over NATS.
async fn serve_ingress(cfg: Config) -> Result<()> {
    tokio::spawn(note_hangups("ingress"));
    let decision = NatsDecisionPoint::connect(&cfg.nats.url)
        .await
        .map_err(|e| anyhow::anyhow!("connect to NATS at {}: {e}", cfg.nats.shown_url()))?;
    let listen = cfg.ingress.listen;
    let evidence = gatehouse::local_evidence::recorder(&cfg).await?;
    // Statements needing approval are held in the approval bucket on the same bus.
    let bus = connect_nats(&cfg, "gatehouse-ingress-approvals").await?;
    // Opened at first use: the ingress starts while NATS is down, and refuses held
    // statements (fail closed) until the bucket can be reached.
    let approvals = ApprovalStore::connect_lazily(bus);
    let gateway = Gateway::new(cfg.gateway(), decision)?.with_approvals(approvals);
    serve_gateway(gateway, listen, evidence).await
}

/// Serves `gateway` on `listen`, recording into `evidence`, until SIGTERM.
async fn serve_gateway<D: gatehouse_ingress::decision::DecisionPoint>(
    gateway: Gateway<D>,
    listen: std::net::SocketAddr,
    evidence: gatehouse::local_evidence::Evidence,
) -> Result<()> {
    let gateway = Arc::new(match &evidence.recorder {
        Some(r) => gateway.with_evidence(r.clone()),
        None => gateway,
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listen on {listen}"))?;
    run(gateway, listener, shutdown_signal()).await;
    evidence.close().await;
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, role } => {
            let cfg = Config::load(&config)
                .with_context(|| format!("load config {}", config.display()))?;
            init_logging(&cfg.log.level, cfg.log.format);
            let rt = tokio::runtime::Runtime::new()?;
            match role {
                ServeRole::Decider => return rt.block_on(serve_decider(cfg)),
                ServeRole::Ingress => return rt.block_on(serve_ingress(cfg)),
                ServeRole::Approver => return rt.block_on(serve_approver(cfg)),
                ServeRole::Archiver => {
                    return rt.block_on(async {
                        tokio::spawn(note_hangups("archiver"));
                        gatehouse::archiver::serve(cfg, shutdown_signal()).await
                    });
                }
                ServeRole::All => {}
            }
            let policy_path = cfg.decider.policy.clone().context(
                "no [decider] policy in the config: every statement would be refused; \
                 write a policy (see deploy/policy.example.toml)",
            )?;
            let handle = Arc::new(PolicyHandle::load(&policy_path)?);
            tracing::info!(version = %handle.current().version, path = %policy_path.display(), "policy_loaded");
            rt.block_on(async {
                let listen = cfg.ingress.listen;
                tokio::spawn(watch_policy(handle.clone(), cfg.decider.watch_interval));
                let evidence = gatehouse::local_evidence::recorder(&cfg).await?;
                // Approvals in-process: only with an admin endpoint for approvers to
                // answer on; without one, `approve` verdicts are refused.
                let approvals = match cfg.approvals.admin_listen {
                    Some(addr) => {
                        let local = services::in_process_approvals(&cfg.approvals)?;
                        let admin =
                            tokio::net::TcpListener::bind(addr).await.with_context(|| {
                                format!("listen on {addr} ([approvals] admin_listen)")
                            })?;
                        let store = local.store();
                        tokio::spawn(async move {
                            if let Err(e) = local.run(admin, shutdown_signal()).await {
                                tracing::error!(error = %e, "approvals_admin_failed");
                            }
                        });
                        Some(store)
                    }
                    None => None,
                };
                let gateway = Gateway::new(cfg.gateway(), LocalPolicy::new(handle))?;
                let gateway = match approvals {
                    Some(store) => gateway.with_approvals(store),
                    None => gateway,
                };
                serve_gateway(gateway, listen, evidence).await
            })
        }
        Command::Connect(args) => {
            let code = gatehouse::connect::run(args)?;
            std::process::exit(code);
        }
        Command::Doctor(args) => {
            let code = gatehouse::doctor::run(args, &mut std::io::stdout().lock())?;
            std::process::exit(code);
        }
        Command::Config { command } => {
            let code = gatehouse::config_cli::run(command, &mut std::io::stdout().lock())?;
            std::process::exit(code);
        }
        Command::Policy { command } => {
            let code = gatehouse::policy_cli::run(command)?;
            std::process::exit(code);
        }
        Command::Approvals { command } => {
            let code = gatehouse::approvals_cli::run(command, &mut std::io::stdout().lock())?;
            std::process::exit(code);
        }
        Command::Audit(command) => {
            let code = gatehouse::evidence_cli::run(command, &mut std::io::stdout().lock())?;
            std::process::exit(code);
        }
        Command::Answer(command) => {
            let code = gatehouse::audit::cli::run(command, &mut std::io::stdout().lock())?;
            std::process::exit(code);
        }
        Command::Token {
            command: TokenCommand::Keygen { dir },
        } => {
            let key = token::keygen(&dir)?;
            println!(
                "wrote {} and {} (kid {})",
                dir.join(token::KEY_FILE).display(),
                dir.join(token::JWKS_FILE).display(),
                token::key_id(&key)
            );
            Ok(())
        }
        Command::Token {
            command:
                TokenCommand::Mint {
                    key,
                    sub,
                    issuer,
                    aud,
                    ttl,
                    claims,
                },
        } => {
            let key = token::load_key(&key)?;
            let req = token::MintRequest {
                issuer,
                audience: aud,
                subject: sub,
                ttl,
                claims: claims.into_iter().collect(),
            };
            println!("{}", token::mint(&key, &req)?);
            Ok(())
        }
    }
}
