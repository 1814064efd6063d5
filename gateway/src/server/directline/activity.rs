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
    // A live event has no `from`: the gateway sends it.
    let system = crate::protocol::Party::system();
    let (id, name) = match &native["from"] {
        Value::Null => (json!(system.id), json!(system.name)),
        f => (f["id"].clone(), f["name"].clone()),
    };
    let from = party(&id, &name, if from_user { "user" } else { "bot" });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Party, Role};

    fn conv() -> Conversation {
        Conversation {
            id: "c_1".into(),
            workstream: "W".into(),
            customer: Party { id: "u_1".into(), name: "Ann".into(), role: Role::User },
            inner: Default::default(),
            call: None,
            span: tracing::Span::none(),
        }
    }

    fn base() -> Base {
        Base { http: "https://sb.example".into(), ws: "wss://sb.example".into() }
    }

    #[test]
    fn roles_ids_and_seq_as_direct_line_has_them() {
        let agent = json!({"type":"message","id":"a_1_5","seq":5,"timestamp":"2026-01-01T00:00:00.000Z",
            "conversation":{"id":"c_1"},"from":{"id":"alice","name":"Alice","role":"agent"},"text":"hi",
            "name":null,"value":null,"attachments":[],"channelData":{"x":1}});
        let a = to_bot_framework(&agent, &conv(), &base(), 0);
        assert_eq!(a["from"], json!({"id":"alice","name":"Alice","role":"bot"}));
        assert_eq!(a["recipient"], json!({"id":"u_1","name":"Ann","role":"user"}));
        assert_eq!(a["channelId"], "directline");
        assert_eq!(a["serviceUrl"], "https://sb.example");
        assert_eq!(a["channelData"], json!({"x":1,"switchboard":{"role":"agent","seq":5}}));
        assert_eq!((a["id"].as_str(), a["text"].as_str()), (Some("a_1_5"), Some("hi")));
        assert!(a.get("name").is_none() && a.get("value").is_none(), "nulls are left out: {a}");

        let own = json!({"type":"message","id":"a_1_6","seq":6,"from":{"id":"u_1","name":"Ann","role":"user"},
            "attachments":[{"contentType":"image/png","contentUrl":"data:image/png;base64,AAAA"},{"contentUrl":"https://x"}]});
        let a = to_bot_framework(&own, &conv(), &base(), 0);
        assert_eq!(a["from"]["role"], "user");
        assert_eq!(a["recipient"]["role"], "bot");
        assert_eq!(
            a["attachments"][0]["contentUrl"],
            "https://sb.example/v3/directline/conversations/c_1/attachments/6/0"
        );
        assert_eq!(a["attachments"][1]["contentUrl"], "https://x", "links are left as they are");

        let live = json!({"type":"event","name":"queue.position","value":{"queue":"Q","position":2}});
        let a = to_bot_framework(&live, &conv(), &base(), 1_000);
        assert_eq!(a["timestamp"], "1970-01-01T00:00:01.000Z");
        assert_eq!(a["channelData"]["switchboard"], json!({"role":"system"}));
        assert_eq!(a["from"], json!({"id":"switchboard","name":"Switchboard","role":"bot"}));
    }

    #[test]
    fn the_base_comes_from_host_and_forwarded_proto() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("host", "gw.example:8443".parse().unwrap());
        assert_eq!(Base::of(&h).ws, "ws://gw.example:8443");
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        let b = Base::of(&h);
        assert_eq!((b.http.as_str(), b.ws.as_str()), ("https://gw.example:8443", "wss://gw.example:8443"));
        h.insert("host", "evil\"/x".parse().unwrap());
        assert_eq!(Base::of(&h).http, "https://localhost", "an odd host is not echoed into URLs");
    }
}
