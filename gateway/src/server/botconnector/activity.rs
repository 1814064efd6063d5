//! Activities between the native protocol and the Bot Framework schema, both ways.
//!
//! Outbound, a transcript activity (the native JSON) becomes the Activity a Bot Framework
//! bot expects from a channel: `serviceUrl` back at the gateway, `channelId`, `from` (the
//! customer), `recipient` (the bot, by its app ID), `conversation`, the gateway's `id` and
//! `timestamp`, and the conversation's workstream, queue and context variables in
//! `channelData`. Inbound, a bot's Activity becomes a native [`Inbound`], parsed by the
//! same code as a `/v1/bot` frame, so every check is the same; its `id`, when it has one,
//! is the dedup key (`clientActivityId`).

use serde_json::{Map, Value, json};

use crate::protocol::{Inbound, ProtocolError};

/// The `channelId` of every activity the gateway posts.
pub const CHANNEL_ID: &str = "switchboard";

/// What an outbound activity needs besides itself: who the bot is, where the gateway is,
/// and the conversation's routing context.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub service_url: String,
    pub app_id: String,
    pub bot_name: String,
    /// `{"workstream", "queue", "context"}` from the conversation's work item.
    pub routing: Value,
    pub customer: Value,
}

impl Envelope {
    fn base(&self, kind: &str, id: &str, conv: &str, timestamp: &Value) -> Map<String, Value> {
        let mut channel_data = Map::new();
        if let Value::Object(r) = &self.routing {
            channel_data.extend(r.clone());
        }
        let v = json!({
            "type": kind,
            "id": id,
            "timestamp": timestamp,
            "channelId": CHANNEL_ID,
            "serviceUrl": self.service_url,
            "from": self.customer,
            "recipient": {"id": self.app_id, "name": self.bot_name, "role": "bot"},
            "conversation": {"id": conv},
            "channelData": channel_data,
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// The `conversationUpdate` a bot gets when a conversation is assigned to it: the bot
    /// and the customer in `membersAdded`, so its welcome logic runs.
    /// Its id names the transcript's length at the assignment, so a second assignment of the
    /// same conversation (back from an agent) is a new activity.
    pub fn conversation_update(&self, conv: &str, at_seq: u64, now: &str) -> Value {
        let mut m = self.base("conversationUpdate", &format!("{conv}.joined.{at_seq}"), conv, &json!(now));
        m.insert(
            "membersAdded".into(),
            json!([{"id": self.app_id, "name": self.bot_name, "role": "bot"}, self.customer]),
        );
        Value::Object(m)
    }

    /// A transcript activity for the bot, or `None` for what is not the bot's business (its
    /// own activities, the gateway's notices, other holders' events).
    pub fn to_bot(&self, v: &Value, bot: &str) -> Option<Value> {
        let kind = v["type"].as_str()?;
        let role = v["from"]["role"].as_str().unwrap_or("");
        let forwarded = match kind {
            "message" | "typing" => role == "user",
            "endOfConversation" => v["from"]["id"] != bot,
            "event" => role == "user" && v["name"] != "survey.response",
            _ => false,
        };
        if !forwarded {
            return None;
        }
        let conv = v["conversation"]["id"].as_str()?;
        let id = v["id"].as_str()?;
        let mut m = self.base(kind, id, conv, &v["timestamp"]);
        if role != "user" {
            m.insert("from".into(), json!({"id": v["from"]["id"], "name": v["from"]["name"], "role": "bot"}));
        }
        for field in ["text", "name", "value"] {
            if !v[field].is_null() {
                m.insert(field.into(), v[field].clone());
            }
        }
        if v["attachments"].as_array().is_some_and(|a| !a.is_empty()) {
            m.insert("attachments".into(), v["attachments"].clone());
        }
        if let (Some(Value::Object(cd)), Value::Object(theirs)) = (m.get_mut("channelData"), &v["channelData"]) {
            for (k, x) in theirs {
                cd.entry(k.clone()).or_insert_with(|| x.clone());
            }
        }
        Some(Value::Object(m))
    }

    /// A `handoff.status` event (Bot Framework's handoff protocol) for the bot.
    pub fn handoff_status(&self, conv: &str, id: &str, value: &Value, now: &str) -> Value {
        let mut m = self.base("event", id, conv, &json!(now));
        m.insert("name".into(), json!("handoff.status"));
        m.insert("value".into(), value.clone());
        m.insert("from".into(), json!({"id": "switchboard", "name": "Switchboard", "role": "bot"}));
        Value::Object(m)
    }
}

/// What a bot's posted Activity asks for.
#[derive(Debug)]
pub enum FromBot {
    /// An activity for the conversation.
    Activity(Box<Inbound>),
    /// A `trace` activity: debugging output for the Emulator, accepted and dropped.
    Trace,
}

/// A bot's Activity (the body of `POST /v3/conversations/{id}/activities`) as a native
/// activity of conversation `conv` (the path's, whatever the body says).
pub fn from_bot(body: &[u8], conv: &str) -> Result<FromBot, ProtocolError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ProtocolError::bad_request(format!("the body is not a JSON Activity: {e}")))?;
    let Value::Object(a) = v else { return Err(ProtocolError::bad_request("the body is not a JSON Activity")) };
    match a.get("type").and_then(Value::as_str) {
        Some("trace") => return Ok(FromBot::Trace),
        Some("message" | "typing" | "event" | "endOfConversation") => {}
        Some(other) => {
            return Err(ProtocolError::bad_request(format!(
                "activity type {other:?} is not supported here (message, typing, event, endOfConversation, trace)"
            )));
        }
        None => return Err(ProtocolError::bad_request("the activity has no type")),
    }
    let mut native = Map::new();
    for field in ["type", "text", "name", "value", "attachments"] {
        if let Some(x) = a.get(field).filter(|x| !x.is_null()) {
            native.insert(field.into(), x.clone());
        }
    }
    native.insert("conversation".into(), json!({"id": conv}));
    let mut cd = match a.get("channelData") {
        Some(Value::Object(cd)) => cd.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err(ProtocolError::bad_request("channelData must be an object")),
    };
    // The bot's own id for its activity is its dedup key; otherwise no dedup.
    match a.get("id") {
        Some(Value::String(id)) if !id.is_empty() => {
            cd.insert("clientActivityId".into(), json!(id));
        }
        _ => {
            cd.remove("clientActivityId");
        }
    }
    if !cd.is_empty() {
        native.insert("channelData".into(), Value::Object(cd));
    }
    let text = Value::Object(native).to_string();
    Ok(FromBot::Activity(Box::new(Inbound::parse(&text)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope {
        Envelope {
            service_url: "http://gw/".into(),
            app_id: "app".into(),
            bot_name: "bot".into(),
            routing: json!({"workstream": "W", "queue": "Q", "context": {"Region": "EU"}}),
            customer: json!({"id": "u_1", "name": "Ann", "role": "user"}),
        }
    }

    #[test]
    fn a_customer_message_goes_to_the_bot_as_a_channel_activity() {
        let v = json!({"type": "message", "id": "c_1.5", "seq": 5, "timestamp": "2026-01-01T00:00:00.000Z",
            "conversation": {"id": "c_1"}, "from": {"id": "u_1", "name": "Ann", "role": "user"},
            "text": "hi", "name": null, "value": null, "attachments": [], "channelData": {"clientActivityId": "x"}});
        let a = env().to_bot(&v, "bot").unwrap();
        assert_eq!(a["serviceUrl"], "http://gw/");
        assert_eq!(a["channelId"], CHANNEL_ID);
        assert_eq!(a["recipient"]["id"], "app");
        assert_eq!(a["from"]["id"], "u_1");
        assert_eq!(a["id"], "c_1.5");
        assert_eq!(a["text"], "hi");
        assert_eq!(a["channelData"]["context"]["Region"], "EU");
        assert_eq!(a["channelData"]["clientActivityId"], "x");
        assert!(a.get("attachments").is_none());
        let notice = json!({"type": "message", "from": {"id": "switchboard", "role": "system"}, "conversation": {"id": "c_1"}, "id": "c_1.6"});
        assert!(env().to_bot(&notice, "bot").is_none());
        let own = json!({"type": "endOfConversation", "from": {"id": "bot", "role": "bot"}, "conversation": {"id": "c_1"}, "id": "c_1.7"});
        assert!(env().to_bot(&own, "bot").is_none());
    }

    #[test]
    fn a_bot_activity_becomes_a_native_one() {
        let body = br#"{"type":"event","name":"handoff.initiate","id":"b1","value":{"va_Topic":"x"},
            "attachments":[{"contentType":"application/json","name":"Transcript","content":{"activities":[]}}],
            "conversation":{"id":"other"},"from":{"id":"app"}}"#;
        let FromBot::Activity(a) = from_bot(body, "c_1").unwrap() else { panic!("not an activity") };
        assert_eq!(a.conversation_id(), Some("c_1"));
        assert_eq!(a.client_activity_id(), Some("b1"));
        assert_eq!(a.value["va_Topic"], "x");
        assert!(a.has_attachments());
        assert!(matches!(from_bot(br#"{"type":"trace"}"#, "c"), Ok(FromBot::Trace)));
        assert!(from_bot(br#"{"type":"invoke"}"#, "c").is_err());
        assert!(from_bot(b"[1]", "c").is_err());
        assert!(from_bot(br#"{"type":"message","channelData":3}"#, "c").is_err());
    }
}
