//! `POST /v1/token`: OAuth2 client credentials (RFC 6749 §4.4), form- or JSON-encoded, with
//! the credentials in the body or in HTTP Basic auth.
//!
//! Wrong secrets are throttled ([`TokenThrottle`]): a client id or source address with too
//! many recent failures gets 429 with `Retry-After` and `{"error":"slow_down"}` (the
//! registered OAuth error for "back off", RFC 8628 §3.5) until its lockout passes, whatever
//! the secret. Not `invalid_client`: a client with the right secret must not be told its
//! secret is wrong.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use super::throttle::{Failure, TokenThrottle};
use crate::hub::Hub;

/// Longest client id a log line repeats.
const LOGGED_ID_CHARS: usize = 64;

#[derive(Debug, Default, Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, axum::Json(json!({"error": error, "error_description": description}))).into_response()
}

pub async fn token(
    State(hub): State<Arc<Hub>>,
    Extension(throttle): Extension<Arc<TokenThrottle>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(a))| a);
    let addr = peer.map(|a| a.ip());
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
    let parsed: Result<TokenRequest, String> = if is_json {
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    } else {
        serde_urlencoded::from_bytes(&body).map_err(|e| e.to_string())
    };
    let mut req = match parsed {
        Ok(r) => r,
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &format!("cannot parse body: {e}")),
    };
    if let Some((id, secret)) = basic_auth(&headers) {
        req.client_id.get_or_insert(id);
        req.client_secret.get_or_insert(secret);
    }
    if req.grant_type.as_deref() != Some("client_credentials") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "grant_type must be client_credentials");
    }
    let (Some(id), Some(secret)) = (req.client_id, req.client_secret) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "client_id and client_secret are required");
    };
    let shown = super::clipped(&id, LOGGED_ID_CHARS);
    let from = peer.map_or_else(|| "an unknown address".to_owned(), |a| a.to_string());
    if let Some(wait) = throttle.refused(&id, addr) {
        tracing::debug!("token: refused client_id {shown:?} from {from}: locked out after failed attempts");
        return slow_down(wait);
    }
    match hub.issue_token(&id, &secret) {
        Some((token, ttl)) => {
            throttle.succeeded(&id);
            let mut res =
                axum::Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": ttl})).into_response();
            res.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
            res
        }
        None => {
            tracing::info!("token: wrong credentials for client_id {shown:?} from {from}");
            let window = throttle.window().as_secs();
            let (by_client, by_addr) = throttle.failed(&id, addr);
            if by_client == Failure::LockedOut {
                tracing::warn!(
                    "token: too many failed attempts for client_id {shown:?} (last from {from}): refused for {window} s"
                );
            }
            if by_addr == Some(Failure::LockedOut) {
                tracing::warn!("token: too many failed attempts from {from}: refused for {window} s");
            }
            oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client or wrong secret")
        }
    }
}

/// 429 with `Retry-After` in whole seconds, rounded up.
fn slow_down(wait: std::time::Duration) -> Response {
    let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let mut res = oauth_error(
        StatusCode::TOO_MANY_REQUESTS,
        "slow_down",
        &format!("too many failed attempts for this client or from this address; retry in {secs} s"),
    );
    res.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    res
}

fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}
