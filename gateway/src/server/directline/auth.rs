//! Who is calling: the Direct Line secret of `[directline]` (held by a site's back end, or
//! by a client in development) or a token made from it, and the token calls
//! `tokens/generate` and `tokens/refresh`.
//!
//! Tokens are the gateway's own signed tokens (`auth::Signer`), so they survive a restart
//! with the signing key in the store. A conversation token names its conversation
//! (`sub`); generation 0 means "generated, not started yet", 1 "started". The credential in
//! a `streamUrl` is a separate, short-lived kind that opens only the stream.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::{Answer, Refusal};
use crate::auth::{Claims, Principal, TokenError};
use crate::config::DirectLine;
use crate::hub::Hub;
use crate::protocol::ProtocolError;

/// How long a `streamUrl` may be used to connect.
const STREAM_TOKEN_SECS: u64 = 120;

/// How long a token from `tokens/generate` may start its conversation (Direct Line's own
/// `expires_in`). Kept short: once its conversation has ended and left memory, the gateway
/// cannot tell that token from an unused one, and would start the conversation again.
const GENERATED_TOKEN_SECS: u64 = 1800;

/// A caller that proved who it is.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Caller {
    /// The Direct Line secret: any conversation.
    Secret,
    /// A token for one conversation (`started`: generation 1).
    Token { conversation: String, started: bool },
}

/// `[directline]` of the running configuration (a copy: a reload may replace it), or 404
/// when this gateway serves no Direct Line.
pub(super) fn config(hub: &Hub) -> Result<DirectLine, Refusal> {
    hub.cfg()
        .directline
        .clone()
        .ok_or_else(|| ProtocolError::not_found("Direct Line is not configured on this gateway ([directline])").into())
}

/// The bearer credential of a request.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim()).filter(|t| !t.is_empty())
}

/// Checks the request's `Authorization: Bearer <secret or token>`.
pub(super) fn caller(hub: &Hub, headers: &HeaderMap) -> Result<Caller, Refusal> {
    let dl = config(hub)?;
    let presented = bearer(headers).ok_or_else(|| {
        ProtocolError::unauthorized("send Authorization: Bearer <the Direct Line secret or a token made from it>")
    })?;
    if dl.secret.matches(presented) {
        return Ok(Caller::Secret);
    }
    verify(hub, presented, Principal::DirectLine)
        .map(|c| Caller::Token { conversation: c.sub, started: c.generation >= 1 })
}

fn verify(hub: &Hub, token: &str, kind: Principal) -> Result<Claims, Refusal> {
    match hub.signer.verify(token, hub.clock.now_ms()) {
        Ok(c) if c.kind == kind => Ok(c),
        Ok(_) => Err(ProtocolError::unauthorized("this is not a Direct Line token").into()),
        Err(TokenError::Expired) => Err(Refusal::TokenExpired),
        Err(_) => Err(ProtocolError::unauthorized("the Direct Line secret or token is not valid").into()),
    }
}

/// The caller may act on conversation `id`: it holds the secret or that conversation's token.
pub(super) fn for_conversation(hub: &Hub, headers: &HeaderMap, id: &str) -> Result<(), Refusal> {
    match caller(hub, headers)? {
        Caller::Secret => Ok(()),
        Caller::Token { conversation, .. } if conversation == id => Ok(()),
        Caller::Token { .. } => Err(ProtocolError::forbidden("this token is for another conversation").into()),
    }
}

/// A conversation token and its lifetime in seconds.
/// A started conversation's token lives `customer_token_ttl_secs`, a generated one
/// [`GENERATED_TOKEN_SECS`] at most.
pub(super) fn token(hub: &Hub, conversation: &str, started: bool) -> (String, u64) {
    let ttl = hub.server.customer_token_ttl_secs;
    let ttl = if started { ttl } else { ttl.min(GENERATED_TOKEN_SECS) };
    let exp = hub.clock.now_ms() + ttl * 1000;
    let claims =
        Claims { sub: conversation.to_owned(), kind: Principal::DirectLine, exp, generation: u64::from(started) };
    (hub.signer.issue(&claims), ttl)
}

/// The credential a `streamUrl` carries.
pub(super) fn stream_token(hub: &Hub, conversation: &str) -> String {
    let exp = hub.clock.now_ms() + STREAM_TOKEN_SECS * 1000;
    hub.signer.issue(&Claims { sub: conversation.to_owned(), kind: Principal::DirectLineStream, exp, generation: 0 })
}

/// Checks a `streamUrl`'s credential for conversation `id`.
pub(super) fn check_stream(hub: &Hub, token: Option<&str>, id: &str) -> Result<(), Refusal> {
    config(hub)?;
    let t = token.ok_or_else(|| ProtocolError::unauthorized("the stream URL carries its credential in t="))?;
    let claims = verify(hub, t, Principal::DirectLineStream)?;
    if claims.sub != id {
        return Err(ProtocolError::forbidden("this stream URL is for another conversation").into());
    }
    Ok(())
}

/// `POST /v3/directline/tokens/generate` (Bearer the secret): a token for a new
/// conversation, which `POST conversations` with that token starts.
pub(super) async fn generate(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Answer {
    if caller(&hub, &headers)? != Caller::Secret {
        return Err(ProtocolError::forbidden("tokens are generated with the Direct Line secret").into());
    }
    let id = crate::hub::new_conversation_id();
    let (token, ttl) = token(&hub, &id, false);
    Ok((StatusCode::OK, axum::Json(json!({"conversationId": &*id, "token": token, "expires_in": ttl}))).into_response())
}

/// `POST /v3/directline/tokens/refresh` (Bearer a token): the same conversation, a later
/// expiry (a generated token whose conversation has started becomes that conversation's).
pub(super) async fn refresh(State(hub): State<Arc<Hub>>, headers: HeaderMap) -> Answer {
    let Caller::Token { conversation, started } = caller(&hub, &headers)? else {
        return Err(ProtocolError::bad_request("refresh a token, not the secret").into());
    };
    let started = started || hub.conversation(&conversation).is_some();
    let (token, ttl) = token(&hub, &conversation, started);
    Ok(axum::Json(json!({"conversationId": conversation, "token": token, "expires_in": ttl})).into_response())
}
