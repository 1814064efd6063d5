//! `POST /v1/token`: OAuth2 client credentials (RFC 6749 §4.4), form- or JSON-encoded, with
//! the credentials in the body or in HTTP Basic auth.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use crate::hub::Hub;

#[derive(Debug, Default, Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, axum::Json(json!({"error": error, "error_description": description}))).into_response()
}

pub async fn token(State(hub): State<Arc<Hub>>, headers: HeaderMap, body: Bytes) -> Response {
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
    match hub.issue_token(&id, &secret) {
        Some((token, ttl)) => {
            let mut res =
                axum::Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": ttl})).into_response();
            res.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
            res
        }
        None => oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client or wrong secret"),
    }
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
