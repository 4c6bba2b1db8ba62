//! `gatehouse approvals`: a command-line approver over NATS (distributed mode)
//! or the gateway's admin endpoint (all-in-one mode, `--admin`).

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use gatehouse_approver::admin::{AdminDecision, LIST_PATH};
use gatehouse_schemas::SCHEMA_VERSION;
use gatehouse_schemas::approval::{
    ApprovalList, ApprovalQuery, ApprovalRecord, ApproverDecision, Choice, DECIDE_SUBJECT,
    DecisionReply, LIST_SUBJECT,
};
use uuid::Uuid;

/// How to reach the approver service, and who you are.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The NATS server of the approver service.
    #[arg(
        long,
        env = "GATEHOUSE_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats: String,
    /// The admin endpoint of an all-in-one gateway (`[approvals] admin_listen`),
    /// e.g. `http://127.0.0.1:7433`; given, NATS is not used.
    #[arg(long, env = "GATEHOUSE_ADMIN_URL")]
    pub admin: Option<String>,
    /// Your approver token (a JWT from an `[[approvals.issuers]]` issuer).
    #[arg(long, env = "GATEHOUSE_APPROVER_TOKEN", hide_env_values = true)]
    pub token: String,
}

/// `gatehouse approvals ...`.
#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Pending requests of your groups.
    List {
        #[command(flatten)]
        conn: Connection,
        /// Print JSON (the records as stored).
        #[arg(long)]
        json: bool,
    },
    /// One request, in any state.
    Show {
        /// The request id.
        id: Uuid,
        #[command(flatten)]
        conn: Connection,
        /// Print JSON (the record as stored).
        #[arg(long)]
        json: bool,
    },
    /// Approve a request: the statement shown by `show` runs once.
    Approve {
        /// The request id.
        id: Uuid,
        /// A comment, recorded with the decision.
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
    /// A terminal view of pending requests: `a` approves, `d` denies the
    /// selected one (`A`, `D`: with a comment), arrows move, `q` quits.
    Watch {
        #[command(flatten)]
        conn: Connection,
    },
    /// Deny a request: the client gets 42501 naming you.
    Deny {
        /// The request id.
        id: Uuid,
        /// A comment, recorded and shown to the client.
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        conn: Connection,
    },
}

const TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts while no approver service is subscribed ("no responders", which
/// NATS says at once: nothing was delivered, so asking again is safe).
const NO_RESPONDER_ATTEMPTS: u32 = 20;

/// Where requests are listed and decided.
pub enum Backend {
    /// The approver service on NATS.
    Nats(async_nats::Client),
    /// The admin endpoint of an all-in-one gateway.
    Admin {
        /// The HTTP client.
        http: reqwest::Client,
        /// The endpoint's base URL.
        base: String,
    },
}

impl Backend {
    /// Connects as `conn` says.
    pub async fn connect(conn: &Connection) -> Result<Self> {
        match &conn.admin {
            Some(base) => Ok(Backend::Admin {
                http: gatehouse_ingress::http_client(&[])?,
                base: base.trim_end_matches('/').to_owned(),
            }),
            None => Ok(Backend::Nats(
                async_nats::connect(conn.nats.as_str())
                    .await
                    .with_context(|| format!("connect to NATS at {}", conn.nats))?,
            )),
        }
    }

    /// Pending requests of the token's groups, or request `id` in any state.
    pub async fn query(&self, token: &str, id: Option<Uuid>) -> Result<Vec<ApprovalRecord>> {
        let list: ApprovalList = match self {
            Backend::Nats(client) => {
                let q = ApprovalQuery {
                    v: SCHEMA_VERSION,
                    token: token.to_owned(),
                    id,
                };
                nats_request(client, LIST_SUBJECT, &q).await?
            }
            Backend::Admin { http, base } => {
                let url = match id {
                    Some(id) => format!("{base}{LIST_PATH}/{id}"),
                    None => format!("{base}{LIST_PATH}"),
                };
                let r = http
                    .get(url)
                    .bearer_auth(token)
                    .timeout(TIMEOUT)
                    .send()
                    .await
                    .map_err(|e| anyhow::anyhow!("admin endpoint {base}: {}", http_error(&e)))?;
                r.json().await.context("unreadable answer")?
            }
        };
        if let Some(e) = list.error {
            bail!("{e}");
        }
        Ok(list.records)
    }

    /// Sends a decision. A decision is sent once: after a timeout it may have
    /// been applied, so it is never sent again (only "no responders" is).
    pub async fn decide(&self, d: &ApproverDecision) -> Result<DecisionReply> {
        match self {
            Backend::Nats(client) => nats_request(client, DECIDE_SUBJECT, d).await,
            Backend::Admin { http, base } => {
                let body = AdminDecision {
                    statement_hash: d.statement_hash.clone(),
                    decision: d.decision,
                    comment: d.comment.clone(),
                };
                let r = http
                    .post(format!("{base}{LIST_PATH}/{}/decision", d.request))
                    .bearer_auth(&d.token)
                    .timeout(TIMEOUT)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| anyhow::anyhow!("admin endpoint {base}: {}", http_error(&e)))?;
                if r.status() == reqwest::StatusCode::UNAUTHORIZED {
                    let list: ApprovalList = r.json().await.context("unreadable answer")?;
                    bail!("{}", list.error.unwrap_or_else(|| "unauthorized".into()));
                }
                r.json().await.context("unreadable answer")
            }
        }
    }
}

/// What failed, without reqwest's message (which repeats the URL, and so any
/// credentials a user put in it).
fn http_error(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "no answer within 10 s"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    }
}

async fn nats_request<T: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    subject: &'static str,
    body: &impl serde::Serialize,
) -> Result<T> {
    let payload: bytes::Bytes = serde_json::to_vec(body)?.into();
    let mut attempt = 0;
    let reply = loop {
        attempt += 1;
        match tokio::time::timeout(TIMEOUT, client.request(subject, payload.clone())).await {
            Err(_) => bail!("no approver service answered within 10 s"),
            Ok(Ok(m)) => break m,
            Ok(Err(e))
                if e.kind() == async_nats::RequestErrorKind::NoResponders
                    && attempt < NO_RESPONDER_ATTEMPTS =>
            {
                // Nothing was delivered: pause, then ask again (bounded).
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::TimedOut => {
                bail!("no approver service answered within 10 s")
            }
            Ok(Err(e)) => bail!("no approver service answered: {e}"),
        }
    };
    serde_json::from_slice(&reply.payload).context("unreadable answer")
}

fn print(out: &mut impl Write, r: &ApprovalRecord) -> std::io::Result<()> {
    let q = &r.request;
    writeln!(out, "request   {}", q.id)?;
    writeln!(out, "state     {}", r.state.name())?;
    writeln!(out, "role      {}", q.role)?;
    writeln!(
        out,
        "requester {} ({})",
        q.requester.subject, q.requester.issuer
    )?;
    writeln!(out, "{}", ci_line(&q.ci))?;
    writeln!(
        out,
        "rule      {} ({})",
        q.rule.as_deref().unwrap_or("?"),
        q.reason
    )?;
    writeln!(out, "approvers {}", q.approvers)?;
    writeln!(out, "deadline  {}", q.deadline)?;
    writeln!(out, "hash      {}", q.statement_hash)?;
    if let Some(d) = &r.decided {
        writeln!(out, "decided   {:?} by {}", d.decision, d.identity.subject)?;
    }
    writeln!(out, "statement {}", q.sql)?;
    if let Some(p) = &q.params {
        writeln!(
            out,
            "params    {}",
            serde_json::to_string(p).unwrap_or_default()
        )?;
    }
    Ok(())
}

/// Runs a subcommand; the exit code (0, or 1 when a decision was refused).
pub fn run(cmd: ApprovalsCommand, out: &mut impl Write) -> Result<i32> {
    let rt = tokio::runtime::Runtime::new()?;
    if let ApprovalsCommand::Watch { conn } = &cmd {
        return crate::approvals_watch::run(&rt, conn);
    }
    rt.block_on(async {
        let conn = match &cmd {
            ApprovalsCommand::List { conn, .. }
            | ApprovalsCommand::Show { conn, .. }
            | ApprovalsCommand::Approve { conn, .. }
            | ApprovalsCommand::Deny { conn, .. }
            | ApprovalsCommand::Watch { conn } => conn,
        };
        let client = Backend::connect(conn).await?;
        match &cmd {
            ApprovalsCommand::List { json, .. } => {
                let records = client.query(&conn.token, None).await?;
                if *json {
                    writeln!(out, "{}", serde_json::to_string_pretty(&records)?)?;
                } else if records.is_empty() {
                    writeln!(out, "no pending requests")?;
                }
                if !*json {
                    for r in &records {
                        print(out, r)?;
                        writeln!(out)?;
                    }
                }
                Ok(0)
            }
            ApprovalsCommand::Show { id, json, .. } => {
                let records = client.query(&conn.token, Some(*id)).await?;
                let Some(r) = records.first() else {
                    bail!("request {id} is not one of your groups'");
                };
                if *json {
                    writeln!(out, "{}", serde_json::to_string_pretty(r)?)?;
                } else {
                    print(out, r)?;
                }
                Ok(0)
            }
            ApprovalsCommand::Watch { .. } => Ok(0),
            ApprovalsCommand::Approve { id, comment, .. }
            | ApprovalsCommand::Deny { id, comment, .. } => {
                let decision = if matches!(cmd, ApprovalsCommand::Approve { .. }) {
                    Choice::Approve
                } else {
                    Choice::Deny
                };
                // The decision names the statement as `show` prints it.
                let records = client.query(&conn.token, Some(*id)).await?;
                let Some(r) = records.first() else {
                    bail!("request {id} is not one of your groups'");
                };
                let d = ApproverDecision {
                    v: SCHEMA_VERSION,
                    request: *id,
                    statement_hash: r.request.statement_hash.clone(),
                    decision,
                    comment: comment.clone(),
                    token: conn.token.clone(),
                };
                let reply = client.decide(&d).await?;
                if reply.accepted {
                    writeln!(out, "{id}: {}", reply.state.map_or("decided", |s| s.name()))?;
                    Ok(0)
                } else {
                    writeln!(
                        out,
                        "{id}: refused: {}",
                        reply.error.as_deref().unwrap_or("?")
                    )?;
                    Ok(1)
                }
            }
        }
    })
}

/// The requester's CI context on one line (`show` and `watch`).
pub(crate) fn ci_line(ci: &gatehouse_schemas::evidence::CiContext) -> String {
    format!(
        "ci        {} repository={} workflow={} run={} commit={}",
        ci.provider,
        ci.repository.as_deref().unwrap_or("-"),
        ci.workflow.as_deref().unwrap_or("-"),
        ci.run_id.as_deref().unwrap_or("-"),
        ci.commit.as_deref().unwrap_or("-")
    )
}
