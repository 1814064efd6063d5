//! The admin API's commands: "Disconnect bot" and connect it again, an agent's presence
//! and sign-out, and the routing dry run (the answer of `switchboard route --json`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::json_body;
use crate::hub::{Hub, HubError};
use crate::protocol::ProtocolError;
use crate::server::respond;

fn done(r: Result<Value, HubError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => respond::refuse(e),
    }
}

pub async fn disconnect_bot(State(hub): State<Arc<Hub>>, Path(name): Path<String>) -> Response {
    done(hub.disconnect_bot(&name).map(|()| json!({"bot": name, "state": "disconnected"})))
}

pub async fn connect_bot(State(hub): State<Arc<Hub>>, Path(name): Path<String>) -> Response {
    done(hub.connect_bot(&name).map(|()| json!({"bot": name, "state": "enabled"})))
}

pub async fn presence(State(hub): State<Arc<Hub>>, Path(id): Path<String>, body: super::Body) -> Response {
    let v = match json_body(body) {
        Ok(v) => v,
        Err(e) => return respond::refuse(e),
    };
    let Some(p) = v.get("presence").and_then(Value::as_str) else {
        return respond::refuse(ProtocolError::bad_request(
            "the body must be {\"presence\": \"available\"|\"busy\"|\"away\"|\"offline\"}",
        ));
    };
    done(hub.force_presence(&id, p).map(|()| json!({"agent": id, "presence": p})))
}

pub async fn sign_out(State(hub): State<Arc<Hub>>, Path(id): Path<String>) -> Response {
    done(hub.sign_out(&id).map(|()| json!({"agent": id, "presence": "offline"})))
}

pub async fn route(State(hub): State<Arc<Hub>>, body: super::Body) -> Response {
    let v = match json_body(body) {
        Ok(v) => v,
        Err(e) => return respond::refuse(e),
    };
    let Some(ws) = v.get("workstream").and_then(Value::as_str) else {
        return respond::refuse(ProtocolError::bad_request("the body must be {\"workstream\": …, \"context\": {…}}"));
    };
    let ctx = v.get("context").cloned().unwrap_or(Value::Null);
    done(
        hub.route_dry_run(ws, &ctx).and_then(|d| serde_json::to_value(d).map_err(|e| HubError::invalid(e.to_string()))),
    )
}
