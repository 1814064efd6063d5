//! `GET /metrics`: Prometheus text (OpenMetrics) written by the `prometheus-client` crate.
//!
//! A fresh registry per scrape: the process-wide counters and histograms of
//! `crate::metrics` (shared handles, nothing copied), plus what is state rather than an
//! event, read from the hub now (connections by role, conversations by state, workstream
//! and queue, calls in progress). Scraping costs one pass over the conversations; the hot
//! path pays nothing for it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::hub::Hub;
use crate::metrics as m;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConvLabels {
    state: String,
    workstream: String,
    queue: String,
}

fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    r.register(name, help, ConstCounter::new(v));
}

pub fn registry(hub: &Hub) -> Registry {
    let mut r = Registry::with_prefix("switchboard");
    let g = hub.gauges();
    let connections = Family::<RoleLabel, Gauge>::default();
    for (role, n) in [("customer", g.customers), ("caller", g.calls), ("bot", g.bots), ("agent", g.agents)] {
        connections.get_or_create(&RoleLabel { role }).set(n as i64);
    }
    r.register("connections", "Open connections by role", connections);
    let convs = Family::<ConvLabels, Gauge>::default();
    for ((state, workstream, queue), n) in g.conversations {
        convs.get_or_create(&ConvLabels { state, workstream, queue }).set(n as i64);
    }
    r.register("conversations", "Conversations in memory by state, workstream and queue", convs);
    let calls = Gauge::<i64>::default();
    calls.set(g.calls as i64);
    r.register("voice_calls_active", "Voice calls in progress", calls);
    // Cluster mode: this node leads, so these are the whole cluster's figures; the nodes
    // heard from (itself included) and the connections other nodes carry to it.
    let cluster = hub.cluster_status();
    let nodes = Gauge::<i64>::default();
    nodes.set(cluster["nodes"].as_array().map_or(1, |n| n.len().max(1)) as i64);
    r.register("cluster_nodes", "Nodes of the cluster heard from in the last seconds (1 alone)", nodes);
    let tunnelled = Gauge::<i64>::default();
    tunnelled.set(cluster["tunnelledConnections"].as_i64().unwrap_or(0));
    r.register("cluster_tunnelled_connections", "Connections other nodes carry to this one, the leader", tunnelled);
    counter(&mut r, "voice_calls", "Voice calls started", m::VOICE_CALLS.get());
    counter(
        &mut r,
        "voice_calls_refused",
        "Voice calls refused because the pacer was falling behind (the gateway was carrying all it could)",
        m::VOICE_REFUSED.get(),
    );
    counter(
        &mut r,
        "chats_refused",
        "Chats refused at session.start: their address held chat_conversations_per_address open already",
        m::CHATS_REFUSED.get(),
    );
    counter(
        &mut r,
        "agent_chats_refused",
        "Chats refused a way to people (a bot's handoff, or a start routed straight to agents): their address had chat_agent_conversations_per_address conversations with people already",
        m::AGENT_CHATS_REFUSED.get(),
    );
    counter(&mut r, "activities_in", "Client activities accepted into transcripts", m::ACTIVITIES_IN.get());
    counter(&mut r, "activities_out", "Text frames queued toward connections", m::ACTIVITIES_OUT.get());
    counter(&mut r, "media_frames_in", "Audio frames received (callers and holders)", m::MEDIA_IN.get());
    counter(&mut r, "media_frames_out", "Audio frames queued toward holders", m::MEDIA_OUT.get());
    counter(
        &mut r,
        "media_frames_dropped",
        "Audio frames dropped at a full outbound queue",
        crate::hub::outbox::MEDIA_DROPPED.load(std::sync::atomic::Ordering::Relaxed),
    );
    counter(&mut r, "bot_failures", "Bots whose connection stayed away past the grace period", m::BOT_FAILURES.get());
    counter(&mut r, "bot_timeouts", "Bots that left a customer's message unanswered too long", m::BOT_TIMEOUTS.get());
    counter(&mut r, "config_reloads", "Configurations applied while running", m::CONFIG_RELOADS.get());
    counter(
        &mut r,
        "engine_lock_acquisitions",
        "Times the routing engine's lock was taken (every routing event takes it once or more)",
        m::ENGINE_LOCKS.get(),
    );
    let seconds = |ns: &m::Count| ConstCounter::new(ns.get() as f64 / 1e9);
    r.register(
        "engine_lock_held_seconds",
        "Time the routing engine's lock was held: its rate is the share of one core the routing core keeps busy",
        seconds(&m::ENGINE_HELD_NS),
    );
    r.register(
        "engine_lock_wait_seconds",
        "Time threads waited for the routing engine's lock",
        seconds(&m::ENGINE_WAIT_NS),
    );
    r.register("escalations", "Bot escalations by the rule that routed them", m::ESCALATIONS.clone());
    r.register("queue_wait_seconds", "Time in the queue before a member took the conversation", m::QUEUE_WAIT.clone());
    r.register(
        "assignment_latency_seconds",
        "Time from a conversation's start until its first human agent",
        m::ASSIGNMENT_LATENCY.clone(),
    );
    r.register("store_commit_seconds", "Time one store transaction took to commit", m::STORE_COMMIT.clone());
    r.register("store_batch_records", "Records in one store transaction", m::STORE_BATCH.clone());
    r.register(
        "store_checkpoint_seconds",
        "Time one checkpoint of the store's log into its database took (commits wait meanwhile)",
        m::STORE_CHECKPOINT.clone(),
    );
    r
}

pub async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &registry(&hub)).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics\n").into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}
