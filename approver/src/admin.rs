//! The admin endpoint of all-in-one mode: the approver core over HTTP, for
//! `gatehouse approvals --admin URL`. Every call carries the approver's JWT
//! (`Authorization: Bearer ...`) and passes the same checks as on the bus.
//!
//! - `GET /v1/approvals`: pending requests of the caller's groups ([`ApprovalList`]).
//! - `GET /v1/approvals/{id}`: one request in any state ([`ApprovalList`]).
//! - `POST /v1/approvals/{id}/decision` with an [`AdminDecision`]: a
//!   [`DecisionReply`] (200 accepted, 409 refused).
//!
//! A missing or rejected token is 401 before anything is read.

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use gatehouse_schemas::SCHEMA_VERSION;
use gatehouse_schemas::approval::{ApprovalList, ApproverDecision, Choice, DecisionReply};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Approver, Refused};

/// Path of the list of pending requests.
pub const LIST_PATH: &str = "/v1/approvals";

/// A decision over the admin endpoint: an [`ApproverDecision`] whose token is
/// the request's bearer token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminDecision {
    /// The statement the approver saw (`statement_hash` of the request).
    pub statement_hash: String,
    /// Approve or deny.
    pub decision: Choice,
    /// Recorded with the decision; a denial's is shown to the client.
    #[serde(default)]
    pub comment: Option<String>,
}

/// The admin router over `approver`.
pub fn router(approver: Arc<Approver>) -> axum::Router {
    axum::Router::new()
        .route(LIST_PATH, get(list))
        .route("/v1/approvals/{id}", get(show))
        .route("/v1/approvals/{id}/decision", post(decide))
        .with_state(approver)
}

/// Serves the admin endpoint on `listener` until `shutdown` completes.
pub async fn serve(
    approver: Arc<Approver>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = ?listener.local_addr().ok(), "approvals_admin_serving");
    axum::serve(listener, router(approver))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The bearer token, if the request carries one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The 401 of a request without a bearer token.
fn no_token() -> Response {
    unauthorized("an approver token is required (Authorization: Bearer <JWT>)".into())
}

fn unauthorized(error: String) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(ApprovalList {
            v: SCHEMA_VERSION,
            records: Vec::new(),
            error: Some(error),
        }),
    )
        .into_response()
}

fn refused(e: Refused) -> Response {
    let status = match &e {
        Refused::Token(_) => return unauthorized(e.to_string()),
        Refused::Unknown(_) => StatusCode::NOT_FOUND,
        Refused::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    (
        status,
        Json(ApprovalList {
            v: SCHEMA_VERSION,
            records: Vec::new(),
            error: Some(e.to_string()),
        }),
    )
        .into_response()
}

async fn list(State(approver): State<Arc<Approver>>, headers: HeaderMap) -> Response {
    listed(&approver, &headers, None).await
}

async fn show(
    State(approver): State<Arc<Approver>>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Response {
    listed(&approver, &headers, Some(id)).await
}

/// The caller's visible records (one, with `id`), as `ApprovalList`.
async fn listed(approver: &Approver, headers: &HeaderMap, id: Option<Uuid>) -> Response {
    let Some(token) = bearer(headers) else {
        return no_token();
    };
    match approver.list(token, id).await {
        Ok(records) => Json(ApprovalList {
            v: SCHEMA_VERSION,
            records,
            error: None,
        })
        .into_response(),
        Err(e) => refused(e),
    }
}

async fn decide(
    State(approver): State<Arc<Approver>>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    Json(body): Json<AdminDecision>,
) -> Response {
    let Some(token) = bearer(&headers) else {
        return no_token();
    };
    // Checked here too so that a bad token is a 401, not a refused decision.
    if let Err(e) = approver.approver(token).await {
        return refused(e);
    }
    let reply: DecisionReply = approver
        .decide(&ApproverDecision {
            v: SCHEMA_VERSION,
            request: id,
            statement_hash: body.statement_hash,
            decision: body.decision,
            comment: body.comment,
            token: token.to_owned(),
        })
        .await;
    let status = if reply.accepted {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    (status, Json(reply)).into_response()
}
