//! Conversations: starting one (`POST conversations`, 201, or 200 when the token's
//! conversation has already started), reconnecting (`GET conversations/{id}`: a fresh
//! `streamUrl` and token), polling (`GET …/activities?watermark=`) and posting
//! (`POST …/activities`, answered `{"id":…}` once the activity is stored).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::auth::{self, Caller};
use super::rate::PostRate;
use super::{Answer, Base, Refusal, WAKE, committed_after, conversation, parse_watermark, translate};
use crate::context::Context;
use crate::hub::outbox::Outgoing;
use crate::hub::{Conversation, Hub, Outbox, Sender};
use crate::protocol::{ErrorCode, Inbound, Kind, ProtocolError};

/// How long a post waits for its activity to be stored before answering 503.
const STORE_WAIT: Duration = Duration::from_secs(10);

/// Reads a request body of at most `limit` bytes.
pub(super) async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, Refusal> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ProtocolError::new(ErrorCode::TooLarge, format!("the request body is over {limit} bytes (or was cut off)"))
            .into()
    })
}

/// `{conversationId, token, expires_in, streamUrl}` for conversation `id`.
fn conversation_answer(hub: &Hub, base: &Base, id: &str, watermark: u64) -> Value {
    let (token, ttl) = auth::token(hub, id, true);
    let stream = auth::stream_token(hub, id);
    json!({
        "conversationId": id,
        "token": token,
        "expires_in": ttl,
        "streamUrl": format!("{}/v3/directline/conversations/{id}/stream?watermark={watermark}&t={stream}", base.ws),
    })
}

/// `POST /v3/directline/conversations`: with the secret, a new conversation; with a token
/// from `tokens/generate`, that token's conversation (200 if it is already going).
pub(super) async fn start(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Body) -> Answer {
    let caller = auth::caller(&hub, &headers)?;
    let workstream = auth::config(&hub)?.workstream.clone();
    let body = read_body(body, hub.server.max_frame_bytes).await?;
    let name = user_name(&body)?;
    let base = Base::of(&headers);
    let id = match caller {
        Caller::Secret => None,
        Caller::Token { conversation, started } => {
            if hub.conversation(&conversation).is_some() {
                return Ok(axum::Json(conversation_answer(&hub, &base, &conversation, 0)).into_response());
            }
            if started {
                return Err(ProtocolError::not_found(format!("conversation {conversation:?} is over")).into());
            }
            Some(Arc::from(conversation))
        }
    };
    // The customer has no connection yet: what the hub would tell it now is read from the
    // transcript later (or, for the queue position, sent on the stream once it opens).
    let (outbox, rx) = Outbox::new(1);
    drop(rx);
    let conv = hub.start_conversation(id, &workstream, &name, Context::new(), &outbox, None)?;
    hub.customer_seen(&conv);
    Ok((StatusCode::CREATED, axum::Json(conversation_answer(&hub, &base, &conv.id, 0))).into_response())
}

/// The customer's name from a start body `{"user":{"id":…,"name":…}}` (optional).
fn user_name(body: &[u8]) -> Result<String, Refusal> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok("Customer".into());
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|e| ProtocolError::bad_request(format!("the body is not JSON: {e}")))?;
    let name = match &v["user"]["name"] {
        Value::Null => "Customer",
        Value::String(s) if !s.trim().is_empty() => s,
        Value::String(_) => "Customer",
        _ => return Err(ProtocolError::bad_request("user.name must be text").into()),
    };
    if name.chars().count() > crate::server::chat::MAX_NAME_CHARS {
        return Err(ProtocolError::bad_request(format!(
            "user.name is longer than {} characters",
            crate::server::chat::MAX_NAME_CHARS
        ))
        .into());
    }
    Ok(name.to_owned())
}

/// A client looking at conversation `id` (reconnecting or polling): allowed, known, its
/// watermark, and seen (the resume window starts again).
fn visit(
    hub: &Hub,
    headers: &HeaderMap,
    id: &str,
    q: &HashMap<String, String>,
) -> Result<(Arc<Conversation>, u64), Refusal> {
    auth::for_conversation(hub, headers, id)?;
    let conv = conversation(hub, id)?;
    let watermark = parse_watermark(q.get("watermark").map(String::as_str))?;
    hub.customer_seen(&conv);
    Ok((conv, watermark))
}

/// `GET /v3/directline/conversations/{id}?watermark=`: reconnecting, a fresh `streamUrl`
/// that resumes after the watermark.
pub(super) async fn reconnect(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Answer {
    let (_, watermark) = visit(&hub, &headers, &id, &q)?;
    Ok(axum::Json(conversation_answer(&hub, &Base::of(&headers), &id, watermark)).into_response())
}

/// `GET /v3/directline/conversations/{id}/activities?watermark=`: the activities after the
/// watermark, and the new watermark.
pub(super) async fn activities(
    State(hub): State<Arc<Hub>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Answer {
    let (conv, watermark) = visit(&hub, &headers, &id, &q)?;
    let (frames, committed) = committed_after(&conv, watermark);
    let list = translate(&frames, &conv, &Base::of(&headers), hub.clock.now_ms());
    Ok(axum::Json(super::activity::activity_set(list, committed)).into_response())
}

/// `POST /v3/directline/conversations/{id}/activities`: the customer sends an activity;
/// answered with its id once stored.
pub(super) async fn post_activity(
    State(hub): State<Arc<Hub>>,
    Extension(rate): Extension<Arc<PostRate>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    auth::for_conversation(&hub, &headers, &id)?;
    let conv = conversation(&hub, &id)?;
    rate.take(&conv.id)?;
    let body = read_body(body, hub.server.max_frame_bytes).await?;
    let text = std::str::from_utf8(&body).map_err(|_| ProtocolError::bad_request("the body is not UTF-8"))?;
    let a = Inbound::parse(text)?;
    let id = post_customer(&hub, &conv, &a).await?;
    Ok(axum::Json(json!({"id": id})).into_response())
}

/// Posts a customer's activity as `/v1/chat` would and waits until it is stored: its id.
/// The stream (if one is open) is woken to send it back to the customer.
pub(super) async fn post_customer(hub: &Hub, conv: &Arc<Conversation>, a: &Inbound) -> Result<String, Refusal> {
    hub.customer_seen(conv);
    let (reply, mut rx) = Outbox::new(4);
    match a.kind() {
        Kind::Message | Kind::Typing => {
            hub.post(conv, &Sender::Customer, &reply, a, |inner| {
                if inner.closed { Err(crate::hub::closed_error()) } else { Ok(()) }
            })?;
        }
        Kind::EndOfConversation => hub.customer_end(conv, &reply, a)?,
        Kind::Event => match a.event_name() {
            Some("survey.response") => hub.survey_response(conv, &reply, a)?,
            Some(other) => {
                return Err(ProtocolError::bad_request(format!(
                    "event {other:?} is not taken here (only survey.response)"
                ))
                .into());
            }
            None => return Err(ProtocolError::bad_request("event activity has no \"name\"").into()),
        },
    }
    let answer = tokio::time::timeout(STORE_WAIT, rx.recv()).await;
    let id = match answer {
        Ok(Some(Outgoing::Text(f))) => serde_json::from_str::<Value>(f.as_str())
            .ok()
            .and_then(|v| v["value"]["id"].as_str().map(str::to_owned))
            .ok_or_else(|| ProtocolError::unavailable("the activity was not acknowledged"))?,
        Ok(Some(Outgoing::Error(e))) => return Err(e.error.into()),
        _ => return Err(ProtocolError::unavailable("the activity was not stored in time; send it again").into()),
    };
    if let Some(o) = &conv.inner.lock().customer {
        o.send(WAKE);
    }
    Ok(id)
}
