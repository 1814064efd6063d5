//! The admin API (SPEC §7), `/v1/admin/…`: JSON over HTTP for the people who run the
//! contact centre. Every call needs `Authorization: Bearer <admin token>` ([`auth`]);
//! `read.rs` answers what is going on (conversations, queues, bots, agents), `command.rs`
//! changes it (disconnect and connect a bot, an agent's presence and sign-out, the routing
//! dry run), `config.rs` shows and replaces the running configuration. The hub does the
//! work (`hub::admin`); refusals go through the error edge, `server::respond`.
//! `docs/admin-openapi.json` describes every call; the tests check each answer against it.

mod auth;
mod command;
pub mod config;
mod read;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::hub::Hub;
use crate::protocol::ProtocolError;

/// The largest request body the admin API reads (a whole configuration for `PUT config`).
pub const MAX_BODY: usize = 1024 * 1024;

/// Every admin route, behind the admin token.
pub fn routes(hub: &Arc<Hub>) -> Router<Arc<Hub>> {
    Router::new()
        .route("/v1/admin/conversations", get(read::conversations))
        .route("/v1/admin/conversations/{id}", get(read::conversation))
        .route("/v1/admin/queues", get(read::queues))
        .route("/v1/admin/cluster", get(read::cluster))
        .route("/v1/admin/bots", get(read::bots))
        .route("/v1/admin/agents", get(read::agents))
        .route("/v1/admin/bots/{name}/disconnect", post(command::disconnect_bot))
        .route("/v1/admin/bots/{name}/connect", post(command::connect_bot))
        .route("/v1/admin/agents/{id}/presence", post(command::presence))
        .route("/v1/admin/agents/{id}/signout", post(command::sign_out))
        .route("/v1/admin/route", post(command::route))
        .route("/v1/admin/config", get(config::get_config).put(config::put_config))
        .layer(axum::middleware::from_fn_with_state(hub.clone(), auth::require_admin))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// The request body, or a refusal if it is over [`MAX_BODY`] or could not be read.
type Body = Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>;

fn body_bytes(body: Body) -> Result<axum::body::Bytes, ProtocolError> {
    body.map_err(|e| {
        ProtocolError::new(
            crate::protocol::ErrorCode::TooLarge,
            format!("the body cannot be read (at most {MAX_BODY} bytes): {e}"),
        )
    })
}

/// A JSON request body, or a `bad_request` naming what is wrong with it.
fn json_body(body: Body) -> Result<serde_json::Value, ProtocolError> {
    let body = body_bytes(body)?;
    if body.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&body).map_err(|e| ProtocolError::bad_request(format!("the body is not JSON: {e}")))
}
