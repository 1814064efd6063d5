//! The admin token: `Authorization: Bearer <token>`, compared in constant time with
//! `[server] admin_token` (or the variable `admin_token_env` names). Without one
//! configured the admin API is closed to everyone (403), so a gateway started with the
//! defaults never exposes it by accident.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use crate::hub::Hub;
use crate::protocol::ProtocolError;
use crate::server::respond;

pub async fn require_admin(State(hub): State<Arc<Hub>>, req: Request, next: Next) -> Response {
    let cfg = hub.cfg();
    let Some(token) = cfg.admin_token.as_ref() else {
        return respond::refuse(ProtocolError::forbidden(
            "the admin API is off: no admin token is configured ([server] admin_token_env or admin_token)",
        ));
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match bearer {
        Some(t) if token.matches(t) => next.run(req).await,
        Some(_) => respond::refuse(ProtocolError::unauthorized("wrong admin token")),
        None => respond::refuse(ProtocolError::unauthorized("missing Authorization: Bearer <admin token>")),
    }
}
