//! Direct Line 3.0 for customers (SPEC §6): the REST calls and the WebSocket stream under
//! `/v3/directline/`, so `botframework-directlinejs` and Web Chat work unchanged.
//!
//! A Direct Line conversation is an ordinary conversation of the `[directline]` workstream:
//! this module is an adapter over the hub's customer calls (start, post, end, the seat of
//! the customer's connection) and reads the transcript for everything it returns. The
//! Direct Line watermark is the conversation's `seq`: `GET …/activities?watermark=N` and
//! the stream send the committed activities after `N`, the customer's own among them (as
//! Direct Line does), translated into Bot Framework activities by `activity.rs`.
//!
//! Files by job: `auth.rs` (the secret, tokens, `tokens/generate` and `tokens/refresh`),
//! `conversations.rs` (start, reconnect, polling, posting), `upload.rs` (attachments sent
//! with an activity, and served back), `stream.rs` (the WebSocket), `activity.rs` (native
//! ⇄ Bot Framework), `rate.rs` (posts per conversation). Every refusal goes through
//! `respond::directline`.

mod activity;
mod auth;
mod conversations;
mod rate;
mod stream;
mod upload;

use std::sync::Arc;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::respond;
use super::throttle::{Failure, TokenThrottle};
use crate::hub::{Conversation, Hub};
use crate::protocol::ProtocolError;

/// The Direct Line routes. Without `[directline]` each answers 404 `NotFound`.
pub fn routes(server: &crate::config::ServerConfig) -> Router<Arc<Hub>> {
    let throttle = Arc::new(TokenThrottle::new(server));
    let posts = Arc::new(rate::PostRate::new(server.customer_rate, server.customer_burst));
    Router::new()
        .route("/v3/directline/tokens/generate", post(auth::generate))
        .route("/v3/directline/tokens/refresh", post(auth::refresh))
        .route("/v3/directline/conversations", post(conversations::start))
        .route("/v3/directline/conversations/{id}", get(conversations::reconnect))
        .route(
            "/v3/directline/conversations/{id}/activities",
            get(conversations::activities).post(conversations::post_activity),
        )
        .route("/v3/directline/conversations/{id}/upload", post(upload::upload))
        .route("/v3/directline/conversations/{id}/attachments/{seq}/{n}", get(upload::attachment))
        .route("/v3/directline/conversations/{id}/stream", get(stream::upgrade))
        .layer(axum::Extension(posts))
        .layer(axum::middleware::from_fn_with_state(throttle, throttled))
        .layer(axum::middleware::from_fn(cors))
}

/// Web Chat runs in a page of another origin and sends `Authorization`, so browsers ask
/// first (a preflight `OPTIONS`) and read answers only with `Access-Control-Allow-Origin`.
/// Any origin is allowed: the API takes bearer credentials only, never cookies, so a page
/// can do nothing here without a secret or token it was given.
async fn cors(req: Request, next: Next) -> Response {
    use axum::http::{HeaderValue, Method, StatusCode, header};
    let mut res = if req.method() == Method::OPTIONS {
        let mut res = StatusCode::NO_CONTENT.into_response();
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, x-ms-bot-agent, x-requested-with"),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        res
    } else {
        next.run(req).await
    };
    res.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    res
}

/// Wrong secrets and tokens are throttled per source address, as `/v1/token`'s are:
/// `token_failures` refused credentials within `token_lockout_secs`, counted under a key of
/// the address (so one client guessing cannot lock the others out), and the address is
/// refused 429 before its credential is looked at. A request without any credential is
/// refused but not counted.
async fn throttled(State(throttle): State<Arc<TokenThrottle>>, req: Request, next: Next) -> Response {
    let addr = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let key = format!("directline {}", addr.map_or_else(|| "?".to_owned(), |a| a.to_string()));
    if throttle.refused(&key, addr).is_some() {
        let e = ProtocolError::new(
            crate::protocol::ErrorCode::RateLimited,
            "too many failed attempts from this address; retry later",
        );
        return respond::directline(&e);
    }
    let presented = req.headers().contains_key(axum::http::header::AUTHORIZATION)
        || req.uri().query().is_some_and(|q| q.split('&').any(|kv| kv.starts_with("t=")));
    let res = next.run(req).await;
    if presented && res.status() == axum::http::StatusCode::UNAUTHORIZED {
        let (by_key, _) = throttle.failed(&key, addr);
        if by_key == Failure::LockedOut {
            tracing::warn!("direct line: too many failed attempts from {key}: refused for {:?}", throttle.window());
        }
    }
    res
}

/// Why a Direct Line call is refused.
#[derive(Debug)]
pub(super) enum Refusal {
    Error(ProtocolError),
    /// A token that was valid has expired (403 `TokenExpired`).
    TokenExpired,
}

impl From<ProtocolError> for Refusal {
    fn from(e: ProtocolError) -> Self {
        Refusal::Error(e)
    }
}

impl From<crate::hub::HubError> for Refusal {
    fn from(e: crate::hub::HubError) -> Self {
        Refusal::Error(e.into())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Error(e) => respond::directline(&e),
            Refusal::TokenExpired => respond::directline_token_expired(),
        }
    }
}

pub(super) type Answer = Result<Response, Refusal>;

/// The conversation `id`, if it is in memory (recovered ones are).
fn conversation(hub: &Hub, id: &str) -> Result<Arc<Conversation>, Refusal> {
    hub.conversation(id).ok_or_else(|| ProtocolError::not_found(format!("unknown conversation {id:?}")).into())
}

/// Where this gateway is, as the client reached it: for `streamUrl`, `serviceUrl` and the
/// URLs of uploaded attachments. Behind a TLS-terminating proxy `X-Forwarded-Proto:
/// https` makes them `https`/`wss`.
#[derive(Debug, Clone)]
pub(super) struct Base {
    /// `http(s)://host`
    pub http: String,
    /// `ws(s)://host`
    pub ws: String,
}

impl Base {
    pub fn of(headers: &HeaderMap) -> Base {
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b)))
            .unwrap_or("localhost");
        let https = headers
            .get("x-forwarded-proto")
            .and_then(|h| h.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"));
        let (h, w) = if https { ("https", "wss") } else { ("http", "ws") };
        Base { http: format!("{h}://{host}"), ws: format!("{w}://{host}") }
    }
}

/// What a stream's writer is sent when the transcript grew in a way the hub does not tell
/// the customer's connection (the customer's own activities): read it again.
pub(super) const WAKE: crate::protocol::Frame = crate::protocol::Frame::from_static("");

/// The committed activities after `watermark` (their frames) and the new watermark.
fn committed_after(conv: &Conversation, watermark: u64) -> (Vec<crate::protocol::Frame>, u64) {
    let inner = conv.inner.lock();
    let committed = inner.committed_frames();
    let from = usize::try_from(watermark).unwrap_or(usize::MAX).min(committed.len());
    (committed[from..].iter().map(|e| e.frame.clone()).collect(), inner.committed)
}

/// The frames as Bot Framework activities.
fn translate(
    frames: &[crate::protocol::Frame],
    conv: &Conversation,
    base: &Base,
    now_ms: u64,
) -> Vec<serde_json::Value> {
    frames
        .iter()
        .filter_map(|f| serde_json::from_str::<serde_json::Value>(f.as_str()).ok())
        .map(|v| activity::to_bot_framework(&v, conv, base, now_ms))
        .collect()
}

/// A `watermark` query value: empty or absent is 0.
fn parse_watermark(w: Option<&str>) -> Result<u64, Refusal> {
    match w.map(str::trim) {
        None | Some("") => Ok(0),
        Some(w) => w.parse().map_err(|_| ProtocolError::bad_request("watermark must be a whole number").into()),
    }
}
