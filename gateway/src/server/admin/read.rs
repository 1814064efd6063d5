//! The admin API's read calls: conversations (filtered, paged), one conversation with its
//! context, transcript and routing history, queues with who waits, bots and agents.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::hub::Hub;
use crate::hub::admin::ConvFilter;
use crate::protocol::ProtocolError;
use crate::routing::{ConvView, MemberView};
use crate::server::respond;

/// Conversations per page when `limit` is not given, and the most a page holds.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    queue: Option<String>,
    holder: Option<String>,
    workstream: Option<String>,
    channel: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

fn summary(hub: &Hub, id: &str, v: &ConvView) -> Value {
    let now = hub.clock.now_ms();
    json!({
        "id": id,
        "workstream": v.workstream,
        "channel": v.channel,
        "state": v.status,
        "queue": v.queue,
        "holder": v.holder,
        "position": v.position,
        "waitingSinceMs": v.waiting_since_ms,
        "waitMs": v.waiting_since_ms.map(|t| now.saturating_sub(t)),
    })
}

pub async fn conversations(
    State(hub): State<Arc<Hub>>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return respond::refuse(ProtocolError::bad_request("limit must be a number from 1 to 1000"));
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return respond::refuse(ProtocolError::bad_request("limit must be a number from 1 to 1000"));
    }
    let f = ConvFilter {
        state: q.state,
        queue: q.queue,
        holder: q.holder,
        workstream: q.workstream,
        channel: q.channel,
        after: q.after,
        limit,
    };
    let page = hub.admin_conversations(&f);
    let list: Vec<Value> = page.conversations.iter().map(|(id, v)| summary(&hub, id, v)).collect();
    Json(json!({"conversations": list, "next": page.next})).into_response()
}

pub async fn conversation(State(hub): State<Arc<Hub>>, Path(id): Path<String>) -> Response {
    let d = match hub.admin_conversation(&id) {
        Ok(d) => d,
        Err(e) => return respond::refuse(e),
    };
    let mut v = summary(&hub, &d.id, &d.view);
    v["customer"] = json!({"id": d.customer.id, "name": d.customer.name});
    v["context"] = json!(d.view.context);
    v["summary"] = json!(d.summary);
    // Each activity on its own: one that cannot be read (stored before activities'
    // nesting was bounded, say) is a null in its place, not the whole transcript lost.
    v["transcript"] = d.transcript.iter().map(|f| serde_json::from_str(f.as_str()).unwrap_or(Value::Null)).collect();
    v["routing"] = d
        .view
        .routing
        .iter()
        .map(|r| {
            json!({
                "atMs": r.at_ms,
                "trigger": r.trigger,
                "rule": r.rule,
                "fallback": r.rule.is_none() && r.trigger != crate::routing::Trigger::Transfer && r.trigger != crate::routing::Trigger::Requeue,
                "queue": r.queue,
                "member": r.member,
                "reason": r.reason.clone().or_else(|| r.member.is_none().then(|| "waiting: no eligible member of the queue has free capacity".to_owned())),
            })
        })
        .collect();
    Json(v).into_response()
}

fn member(m: &MemberView) -> Value {
    let state = if m.disabled {
        "disconnected"
    } else if m.online {
        "connected"
    } else {
        "offline"
    };
    let mut v = json!(m);
    v["state"] = json!(state);
    v
}

/// `GET /v1/admin/cluster`: this gateway's nodes and which one leads.
pub async fn cluster(State(hub): State<Arc<Hub>>) -> Response {
    Json(hub.cluster_status()).into_response()
}

pub async fn queues(State(hub): State<Arc<Hub>>) -> Response {
    let now = hub.clock.now_ms();
    let queues: Vec<Value> = hub
        .with_engine(|e| e.queues_view())
        .into_iter()
        .map(|q| {
            json!({
                "name": q.name,
                "assignment": q.assignment,
                "waiting": q.waiting.iter().map(|w| json!({
                    "conversation": w.conversation,
                    "position": w.position,
                    "waitingSinceMs": w.waiting_since_ms,
                    "waitMs": now.saturating_sub(w.waiting_since_ms),
                })).collect::<Vec<_>>(),
                "members": q.members.iter().map(member).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({"queues": queues})).into_response()
}

pub async fn bots(State(hub): State<Arc<Hub>>) -> Response {
    let bots: Vec<Value> = hub.admin_members(true).iter().map(member).collect();
    Json(json!({"bots": bots})).into_response()
}

pub async fn agents(State(hub): State<Arc<Hub>>) -> Response {
    let agents: Vec<Value> = hub.admin_members(false).iter().map(member).collect();
    Json(json!({"agents": agents})).into_response()
}
