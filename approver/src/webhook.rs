//! The webhook notifier: each new request POSTed as JSON to `[[approvals.webhooks]]`,
//! as an incoming-webhook message (Slack, Teams) or as the request itself.
//!
//! Bodies carry neither tokens nor parameter values (which masking may cover):
//! a person reads the parameters with `gatehouse approvals show`, authenticated.
//! A webhook that fails is retried a bounded number of times and then logged;
//! it never holds up, approves or refuses anything.

use std::time::Duration;

use gatehouse_schemas::approval::ApprovalRequest;
use serde::Deserialize;
use serde_json::{Value, json};

/// One incoming webhook told of each new approval request
/// (`[[approvals.webhooks]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The URL the request is POSTed to (JSON).
    pub url: String,
    /// The body's shape.
    #[serde(default)]
    pub format: WebhookFormat,
    /// Attempts before the notification is given up (logged).
    #[serde(default = "default_webhook_attempts")]
    pub attempts: u32,
    /// Time allowed for one attempt.
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_webhook_attempts() -> u32 {
    3
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}

/// The body of a webhook notification.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// An incoming-webhook message (`text` and `blocks`) that Slack and
    /// Microsoft Teams accept.
    Slack,
    /// The approval request as on the bus (`approval-request.schema.json`).
    #[default]
    Generic,
}

/// Posts notifications to the configured webhooks.
#[derive(Clone)]
pub struct Webhooks {
    http: reqwest::Client,
    hooks: Vec<WebhookConfig>,
}

impl Webhooks {
    /// Notifies `hooks` with `http`.
    pub fn new(http: reqwest::Client, hooks: Vec<WebhookConfig>) -> Self {
        Self { http, hooks }
    }

    /// Posts `request` to every webhook, each in its own task: the caller
    /// never waits for a webhook.
    pub fn notify(&self, request: &ApprovalRequest) {
        for hook in &self.hooks {
            let body = body(hook.format, request);
            let http = self.http.clone();
            let hook = hook.clone();
            let id = request.id;
            tokio::spawn(async move {
                post(&http, &hook, &body, id).await;
            });
        }
    }
}

/// One webhook, up to `attempts` times with a growing pause between them.
async fn post(http: &reqwest::Client, hook: &WebhookConfig, body: &Value, id: uuid::Uuid) {
    // Logged without the URL: incoming-webhook URLs are themselves secrets.
    let attempts = hook.attempts.max(1);
    for attempt in 1..=attempts {
        let sent = http
            .post(&hook.url)
            .timeout(hook.timeout)
            .json(body)
            .send()
            .await;
        let error = match sent {
            Ok(r) if r.status().is_success() => {
                tracing::info!(request = %id, attempt, "approval_webhook_sent");
                return;
            }
            Ok(r) => format!("HTTP {}", r.status().as_u16()),
            Err(e) => kind(&e).to_owned(),
        };
        tracing::warn!(request = %id, attempt, attempts, error = %error, "approval_webhook_failed");
        if attempt < attempts {
            tokio::time::sleep(Duration::from_millis(500) * 2u32.saturating_pow(attempt - 1)).await;
        }
    }
    tracing::error!(request = %id, attempts, "approval_webhook_given_up");
}

/// What went wrong, without the URL that reqwest's messages include.
fn kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_request() {
        "request failed"
    } else {
        "error"
    }
}

/// The body for `format`.
pub fn body(format: WebhookFormat, r: &ApprovalRequest) -> Value {
    let public = ApprovalRequest {
        params: None,
        ..r.clone()
    };
    match format {
        WebhookFormat::Generic => serde_json::to_value(&public).unwrap_or(Value::Null),
        WebhookFormat::Slack => slack(&public, r.params.as_ref().is_some_and(|p| !p.is_empty())),
    }
}

/// An incoming-webhook message: `text` (what Teams and notifications show) and
/// Block Kit `blocks` (what Slack shows).
fn slack(r: &ApprovalRequest, has_params: bool) -> Value {
    let ci = &r.ci;
    let context = format!(
        "{} repository={} workflow={} run={} commit={}",
        ci.provider,
        ci.repository.as_deref().unwrap_or("-"),
        ci.workflow.as_deref().unwrap_or("-"),
        ci.run_id.as_deref().unwrap_or("-"),
        ci.commit.as_deref().unwrap_or("-"),
    );
    let rule = r.rule.as_deref().unwrap_or("?");
    let params = if has_params {
        " (bound parameters: `gatehouse approvals show`)"
    } else {
        ""
    };
    let text = format!(
        "Gatehouse: {} wants to run on role {} (rule {rule}: {}); approvers \"{}\" until {}; request {}\n{}",
        r.requester.subject, r.role, r.reason, r.approvers, r.deadline, r.id, r.sql
    );
    json!({
        "text": text,
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": "Statement held for approval"}
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": format!("```{}```", r.sql.replace("```", "'''"))}
            },
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": format!("*Requester*\n{}", r.requester.subject)},
                    {"type": "mrkdwn", "text": format!("*Role*\n{}", r.role)},
                    {"type": "mrkdwn", "text": format!("*Rule*\n{rule}: {}", r.reason)},
                    {"type": "mrkdwn", "text": format!("*Approvers*\n{}", r.approvers)},
                    {"type": "mrkdwn", "text": format!("*CI*\n{context}")},
                    {"type": "mrkdwn", "text": format!("*Deadline*\n{}", r.deadline)}
                ]
            },
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": format!(
                        "request `{}`{params}: `gatehouse approvals approve {}` or `deny`",
                        r.id, r.id
                    )}
                ]
            }
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_schemas::evidence::{CiContext, Param};

    fn request() -> ApprovalRequest {
        ApprovalRequest {
            v: gatehouse_schemas::SCHEMA_VERSION,
            id: uuid::Uuid::now_v7(),
            role: "app".into(),
            session_id: uuid::Uuid::now_v7(),
            statement_seq: 3,
            sql: "update t set ssn = $1".into(),
            params: Some(vec![Param::Text("123-45-6789".into())]),
            statement_hash: "abc".into(),
            requester: gatehouse_schemas::Identity {
                issuer: "https://token.actions.githubusercontent.com".into(),
                subject: "repo:acme/app:ref:refs/heads/main".into(),
                key_id: None,
                algorithm: "RS256".into(),
                claims: serde_json::Map::new(),
            },
            ci: CiContext {
                provider: "github".into(),
                repository: Some("acme/app".into()),
                ..Default::default()
            },
            rule: Some("unbounded".into()),
            reason: "deletes every row".into(),
            approvers: "dba".into(),
            requested_at: "2026-11-23T08:00:00.000Z".into(),
            deadline: "2026-11-23T08:10:00.000Z".into(),
            deadline_ms: 0,
            gateway: "g".into(),
        }
    }

    #[test]
    fn bodies_leave_the_parameters_out() {
        let r = request();
        for format in [WebhookFormat::Slack, WebhookFormat::Generic] {
            let b = body(format, &r).to_string();
            assert!(!b.contains("123-45-6789"), "{b}");
            assert!(b.contains("update t set ssn = $1"), "{b}");
        }
        let generic = body(WebhookFormat::Generic, &r);
        assert!(generic["params"].is_null());
        assert_eq!(generic["statement_hash"], "abc");
        let slack = body(WebhookFormat::Slack, &r);
        assert!(slack["text"].as_str().unwrap().contains(&r.id.to_string()));
        assert!(slack["blocks"].as_array().unwrap().len() >= 3);
        assert!(slack.to_string().contains("approvals show"), "{slack}");
    }
}
