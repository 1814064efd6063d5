//! Native activities (SPEC §4) as Bot Framework activities, the way a Direct Line client
//! reads them: `channelId` "directline", `serviceUrl`, `conversation`, `from` and
//! `recipient` with the Bot Framework roles (`user`, or `bot` for the bot, agents and the
//! gateway), the id and timestamp the gateway gave, and the native `seq` and role under
//! `channelData.switchboard`. An attachment uploaded through Direct Line is stored in the
//! transcript as a `data:` URL and handed to the client as a URL it can fetch.

use serde_json::{Map, Value, json};

use super::Base;
use crate::hub::Conversation;

/// A stored (or live) native activity as a Bot Framework activity.
/// `now_ms` stamps what the gateway did not (a live `queue.position`).
pub(super) fn to_bot_framework(native: &Value, conv: &Conversation, base: &Base, now_ms: u64) -> Value {
    let role = native["from"]["role"].as_str().unwrap_or("system");
    let from_user = role == "user";
    let party = |id: &Value, name: &Value, role: &str| json!({"id": id, "name": name, "role": role});
    let from = party(&native["from"]["id"], &native["from"]["name"], if from_user { "user" } else { "bot" });
    let recipient = if from_user {
        party(&json!("switchboard"), &json!(conv.workstream), "bot")
    } else {
        party(&json!(conv.customer.id), &json!(conv.customer.name), "user")
    };
    let mut out = Map::new();
    out.insert("type".into(), native["type"].clone());
    if let Some(id) = native.get("id") {
        out.insert("id".into(), id.clone());
    }
    let timestamp = match native.get("timestamp") {
        Some(t) => t.clone(),
        None => json!(crate::clock::Clock::timestamp(now_ms)),
    };
    out.insert("timestamp".into(), timestamp);
    out.insert("channelId".into(), json!("directline"));
    out.insert("serviceUrl".into(), json!(base.http));
    out.insert("conversation".into(), json!({"id": &*conv.id}));
    out.insert("from".into(), from);
    out.insert("recipient".into(), recipient);
    for key in ["text", "name", "value"] {
        if let Some(v) = native.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    if let (Some(Value::Array(list)), Some(seq)) = (native.get("attachments"), native["seq"].as_u64()) {
        let list = list.iter().enumerate().map(|(n, a)| attachment_out(a, conv, base, seq, n)).collect();
        out.insert("attachments".into(), Value::Array(list));
    }
    let mut channel_data = match native.get("channelData") {
        Some(Value::Object(o)) => o.clone(),
        _ => Map::new(),
    };
    let mut ours = json!({"role": role});
    if let Some(seq) = native.get("seq") {
        ours["seq"] = seq.clone();
    }
    channel_data.insert("switchboard".into(), ours);
    out.insert("channelData".into(), Value::Object(channel_data));
    Value::Object(out)
}

/// An attachment as the client sees it: one stored as a `data:` URL is served back at
/// `…/attachments/{seq}/{n}`.
fn attachment_out(a: &Value, conv: &Conversation, base: &Base, seq: u64, n: usize) -> Value {
    let mut a = a.clone();
    if a["contentUrl"].as_str().is_some_and(|u| u.starts_with("data:")) {
        a["contentUrl"] = json!(attachment_url(base, &conv.id, seq, n));
    }
    a
}

/// Where attachment `n` of activity `seq` is served.
pub(super) fn attachment_url(base: &Base, conversation: &str, seq: u64, n: usize) -> String {
    format!("{}/v3/directline/conversations/{conversation}/attachments/{seq}/{n}", base.http)
}

/// `{"activities":[…],"watermark":"N"}`.
pub(super) fn activity_set(activities: Vec<Value>, watermark: u64) -> Value {
    json!({"activities": activities, "watermark": watermark.to_string()})
}
