//! The Bot Connector REST API a bot calls back on (`serviceUrl`): `POST
//! /v3/conversations/{conversationId}/activities[/{activityId}]`, and the OpenID metadata
//! and JWKS a bot checks the gateway's tokens with.
//!
//! A call is the bot's activity in a conversation it holds, carried out by the same hub
//! calls as a `/v1/bot` frame (`Hub::bot_activity`). It is answered `{"id":…}` once the
//! activity is stored (committed), or with the error edge's Bot Connector error. The bot is
//! who its access token (from `/v1/token`) says; without a token only a bot with
//! `auth = "none"` that holds the conversation may call. Nothing here waits on the runner:
//! a bot may answer while the gateway's POST to it is still open.

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Connector;
use super::activity::{FromBot, from_bot};
use crate::auth::Principal;
use crate::config::BotAuth;
use crate::hub::outbox::Outgoing;
use crate::hub::{Hub, Outbox};
use crate::protocol::ProtocolError;
use crate::server::respond;

/// How long a call waits for its activity to be stored before it answers 503.
const STORE_WAIT: Duration = Duration::from_secs(10);

pub async fn openid_configuration(Extension(bc): Extension<Arc<Connector>>) -> Response {
    axum::Json(super::keys::openid_configuration(&bc.issuer)).into_response()
}

pub async fn jwks(Extension(bc): Extension<Arc<Connector>>) -> Response {
    let keys = bc.key.as_ref().map_or_else(|| json!({"keys": []}), |k| k.jwks());
    axum::Json(keys).into_response()
}

pub async fn send_to_conversation(
    State(hub): State<Arc<Hub>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let conv = path.map(|Path(c)| c).map_err(bad_path);
    answer(async { call(&hub, &conv?, &headers, body).await }.await)
}

pub async fn reply_to_activity(
    State(hub): State<Arc<Hub>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let conv = path.map(|Path((c, _reply_to))| c).map_err(bad_path);
    answer(async { call(&hub, &conv?, &headers, body).await }.await)
}

fn bad_path(e: PathRejection) -> ProtocolError {
    ProtocolError::bad_request(format!("bad path: {e}"))
}

fn answer(r: Result<String, ProtocolError>) -> Response {
    match r {
        Ok(id) => axum::Json(json!({"id": id})).into_response(),
        Err(e) => respond::connector_error(&e),
    }
}

/// The bot a call speaks for.
fn caller(hub: &Hub, conv: &str, headers: &HeaderMap) -> Result<Arc<str>, ProtocolError> {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
    });
    if let Some(token) = bearer {
        return Ok(hub.authenticate(&token, Principal::Bot)?);
    }
    let open = |b: &&crate::config::Bot| b.endpoint.is_some() && b.auth == BotAuth::None;
    let holder = hub.with_engine(|e| e.holder(conv).map(str::to_owned));
    let cfg = hub.cfg();
    match holder.and_then(|h| cfg.bots.iter().filter(open).find(|b| b.name == h)) {
        Some(b) => Ok(Arc::from(b.name.as_str())),
        None if !cfg.bots.iter().any(|b| open(&b)) => {
            Err(ProtocolError::unauthorized("missing bearer token (an access token from /v1/token)"))
        }
        None if hub.conversation(conv).is_none() => {
            Err(ProtocolError::not_found(format!("unknown conversation {conv:?}")))
        }
        None => Err(ProtocolError::unauthorized(
            "missing bearer token: this conversation is not held by a bot with auth = \"none\"",
        )),
    }
}

async fn call(hub: &Hub, conv: &str, headers: &HeaderMap, body: Body) -> Result<String, ProtocolError> {
    let bot = caller(hub, conv, headers)?;
    // Read no more than an activity may be (as on /v1/bot), however much is sent.
    let limit = hub.server.max_frame_bytes;
    let body = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if e.into_inner().is::<http_body_util::LengthLimitError>() {
            ProtocolError::new(
                crate::protocol::ErrorCode::TooLarge,
                format!("an activity is at most {limit} bytes of JSON"),
            )
        } else {
            ProtocolError::bad_request("the request body could not be read")
        }
    })?;
    let a = match from_bot(&body, conv)? {
        FromBot::Trace => return Ok(format!("trace.{}", hub.clock.now_ms())),
        FromBot::Activity(a) => a,
    };
    let (reply, mut rx) = Outbox::new(8);
    hub.bot_activity(&bot, &reply, &a)?;
    let stored = async {
        while let Some(m) = rx.recv().await {
            match m {
                Outgoing::Error(e) => return Err(ProtocolError::from(e.error)),
                Outgoing::Text(f) => {
                    let v: Value = serde_json::from_str(f.as_str()).unwrap_or_default();
                    if v["name"] == "ack"
                        && let Some(id) = v["value"]["id"].as_str()
                    {
                        return Ok(id.to_owned());
                    }
                }
                _ => {}
            }
        }
        Err(ProtocolError::unavailable("the activity was not stored; send it again"))
    };
    tokio::time::timeout(STORE_WAIT, stored)
        .await
        .unwrap_or_else(|_| Err(ProtocolError::unavailable("the activity was not stored in time; send it again")))
}
