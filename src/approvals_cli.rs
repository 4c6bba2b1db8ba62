//! `gatehouse approvals`: a command-line approver over NATS.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use gatehouse_schemas::SCHEMA_VERSION;
use gatehouse_schemas::approval::{
    ApprovalList, ApprovalQuery, ApprovalRecord, ApproverDecision, Choice, DECIDE_SUBJECT,
    DecisionReply, LIST_SUBJECT,
};
use uuid::Uuid;

/// How to reach the approver service, and who you are.
#[derive(Debug, Args)]
pub struct Connection {
    /// The NATS server of the approver service.
    #[arg(
        long,
        env = "GATEHOUSE_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats: String,
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

async fn request<T: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    subject: &'static str,
    body: &impl serde::Serialize,
) -> Result<T> {
    let reply = tokio::time::timeout(
        TIMEOUT,
        client.request(subject, serde_json::to_vec(body)?.into()),
    )
    .await
    .context("no approver service answered within 10 s")?
    .context("no approver service answered")?;
    serde_json::from_slice(&reply.payload).context("unreadable answer")
}

async fn query(
    client: &async_nats::Client,
    conn: &Connection,
    id: Option<Uuid>,
) -> Result<Vec<ApprovalRecord>> {
    let q = ApprovalQuery {
        v: SCHEMA_VERSION,
        token: conn.token.clone(),
        id,
    };
    let list: ApprovalList = request(client, LIST_SUBJECT, &q).await?;
    if let Some(e) = list.error {
        bail!("{e}");
    }
    Ok(list.records)
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
    let ci = &q.ci;
    writeln!(
        out,
        "ci        {} repository={} workflow={} run={} commit={}",
        ci.provider,
        ci.repository.as_deref().unwrap_or("-"),
        ci.workflow.as_deref().unwrap_or("-"),
        ci.run_id.as_deref().unwrap_or("-"),
        ci.commit.as_deref().unwrap_or("-")
    )?;
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
    rt.block_on(async {
        let conn = match &cmd {
            ApprovalsCommand::List { conn, .. }
            | ApprovalsCommand::Show { conn, .. }
            | ApprovalsCommand::Approve { conn, .. }
            | ApprovalsCommand::Deny { conn, .. } => conn,
        };
        let client = async_nats::connect(conn.nats.as_str())
            .await
            .with_context(|| format!("connect to NATS at {}", conn.nats))?;
        match &cmd {
            ApprovalsCommand::List { json, .. } => {
                let records = query(&client, conn, None).await?;
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
                let records = query(&client, conn, Some(*id)).await?;
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
            ApprovalsCommand::Approve { id, comment, .. }
            | ApprovalsCommand::Deny { id, comment, .. } => {
                let decision = if matches!(cmd, ApprovalsCommand::Approve { .. }) {
                    Choice::Approve
                } else {
                    Choice::Deny
                };
                // The decision names the statement as `show` prints it.
                let records = query(&client, conn, Some(*id)).await?;
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
                let reply: DecisionReply = request(&client, DECIDE_SUBJECT, &d).await?;
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
