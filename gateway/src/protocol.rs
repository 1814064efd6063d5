//! The native wire protocol (SPEC §4): JSON activities shaped after the Bot Framework
//! Activity schema, and the error codes every edge maps failures to.
//!
//! Inbound frames are parsed once into [`Inbound`]; outbound activities are serialised
//! once into a shared buffer ([`Frame`]) that every recipient's queue and the transcript
//! hold without copying.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
/// A serialised text frame: UTF-8 JSON, cheap to clone (reference counted). The project's
/// own type, so the hub, the store and the bots know nothing of WebSockets; `server/` turns
/// it into a WebSocket message (checking it is UTF-8, which every `Frame` is by
/// construction: it is only ever made from a `String` or a `&'static str`).
#[derive(Clone, PartialEq, Eq)]
pub struct Frame(bytes::Bytes);

impl Frame {
    pub const fn from_static(s: &'static str) -> Frame {
        Frame(bytes::Bytes::from_static(s.as_bytes()))
    }

    pub fn as_str(&self) -> &str {
        // Made from a `String` or a `str` only: always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The text's bytes, without checking them again (the store binds them as text).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes, for the transport.
    pub fn into_bytes(self) -> bytes::Bytes {
        self.0
    }
}

impl From<String> for Frame {
    fn from(s: String) -> Frame {
        Frame(bytes::Bytes::from(s))
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The SPEC's error codes. Each names whose fault it is: the first six are the client's,
/// `unavailable` is ours (retry later).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    TooLarge,
    RateLimited,
    Unavailable,
}

impl ErrorCode {
    /// Whether the same request may succeed later: after a pause (`rate_limited`), or once
    /// we have recovered (`unavailable`). The others need the client to change something.
    pub fn retry_helps(self) -> bool {
        matches!(self, ErrorCode::RateLimited | ErrorCode::Unavailable)
    }
}

/// Whose fault a failure is: the client's (a customer, bot or agent sent something the
/// contract does not allow), a member's (a bot or agent acted on what it does not hold),
/// the store's, or ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Client,
    Member,
    Store,
    Internal,
}

/// A failure to report to the client as an `error` event; the connection stays open.
/// `server::respond` is the one place that turns it into a frame or an HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
    pub fault: Fault,
}

impl ProtocolError {
    /// A failure of `code`: the client's, except `unavailable`, which is ours.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let fault = if code == ErrorCode::Unavailable { Fault::Internal } else { Fault::Client };
        ProtocolError { code, message: message.into(), fault }
    }
    /// The store could not keep something: `unavailable`, and a retry helps.
    pub fn store(m: impl Into<String>) -> Self {
        ProtocolError { code: ErrorCode::Unavailable, message: m.into(), fault: Fault::Store }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, m)
    }
}

/// The four activity types of SPEC §4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Message,
    Typing,
    Event,
    EndOfConversation,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Message => "message",
            Kind::Typing => "typing",
            Kind::Event => "event",
            Kind::EndOfConversation => "endOfConversation",
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct ConvRef {
    pub id: String,
}

/// A frame from a client, as parsed. Fields the gateway assigns (`id`, `seq`, `from`,
/// `timestamp`) are ignored if a client sends them.
#[derive(Clone, Debug, Deserialize)]
pub struct Inbound {
    #[serde(rename = "type")]
    pub kind_raw: Option<String>,
    #[serde(skip)]
    pub kind: Option<Kind>,
    pub name: Option<String>,
    /// `value` as the client wrote it, passed through untouched on `message` and `typing`
    /// (a card's submitted data, say): never parsed into a tree. An event's or an
    /// `endOfConversation`'s value is for the gateway to read: `parse` moves it into
    /// [`Inbound::value`].
    #[serde(rename = "value", default)]
    pub value_raw: Option<Box<RawValue>>,
    /// The parsed value of an `event` or `endOfConversation` (`Null` otherwise).
    #[serde(skip)]
    pub value: Value,
    pub text: Option<String>,
    pub conversation: Option<ConvRef>,
    /// Passed through to the stored activity as the client wrote it (an object).
    #[serde(rename = "channelData", default)]
    pub channel_data: Option<Box<RawValue>>,
    /// Passed through as the client wrote them (an array); not parsed into a tree.
    #[serde(default)]
    pub attachments: Option<Box<RawValue>>,
    /// `channelData.clientActivityId`, read once at parse time.
    #[serde(skip)]
    pub client_activity_id: Option<String>,
}

/// `channelData`'s one field the gateway reads.
#[derive(Deserialize)]
struct ChannelData {
    #[serde(rename = "clientActivityId")]
    client_activity_id: Option<String>,
}

/// How deep a client's activity may nest objects and arrays, itself counted. What it
/// carries through untouched (`value`, `channelData`, `attachments`) reaches bots, agents
/// and the admin API inside what the gateway wraps around it (a work item's transcript:
/// three levels more), and must stay readable there: .NET's JSON readers, the Bot
/// Framework's, stop at 64 levels by default, and serde_json's at 128. An Adaptive Card
/// nests a few levels per container; 48 leaves room for a deep one.
pub const MAX_DEPTH: usize = 48;

/// How deeply `json` nests objects and arrays (0 for a scalar). `json` is JSON serde_json
/// has read already, so only strings need skipping.
fn nesting(json: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in json.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

impl Inbound {
    /// Parses a text frame, naming what is wrong when it cannot.
    pub fn parse(text: &str) -> Result<Inbound, ProtocolError> {
        let mut a: Inbound = serde_json::from_str(text)
            .map_err(|e| ProtocolError::bad_request(format!("malformed JSON activity: {e}")))?;
        // serde_json bounds what it parses into a tree (128 levels), not what it keeps as
        // written: the fields carried through are measured here.
        for (field, raw) in [("value", &a.value_raw), ("channelData", &a.channel_data), ("attachments", &a.attachments)]
        {
            if raw.as_ref().is_some_and(|r| 1 + nesting(r.get()) > MAX_DEPTH) {
                return Err(ProtocolError::bad_request(format!(
                    "{field} nests deeper than an activity may ({MAX_DEPTH} levels of objects and arrays)"
                )));
            }
        }
        let kind = match a.kind_raw.as_deref() {
            Some("message") => Kind::Message,
            Some("typing") => Kind::Typing,
            Some("event") => Kind::Event,
            Some("endOfConversation") => Kind::EndOfConversation,
            Some(other) => {
                return Err(ProtocolError::bad_request(format!(
                    "unknown activity type {other:?} (expected message, typing, event or endOfConversation)"
                )));
            }
            None => return Err(ProtocolError::bad_request("activity has no \"type\"")),
        };
        if kind == Kind::Event && a.name.as_deref().is_none_or(str::is_empty) {
            return Err(ProtocolError::bad_request("event activity has no \"name\""));
        }
        if matches!(kind, Kind::Event | Kind::EndOfConversation)
            && let Some(raw) = a.value_raw.take()
        {
            a.value = serde_json::from_str(raw.get())
                .map_err(|e| ProtocolError::bad_request(format!("malformed value: {e}")))?;
        }
        if let Some(raw) = &a.channel_data {
            let cd: ChannelData = match serde_json::from_str(raw.get()) {
                Ok(cd) if raw.get().trim_start().starts_with('{') => cd,
                _ => {
                    return Err(ProtocolError::bad_request(
                        "channelData must be an object, with clientActivityId text",
                    ));
                }
            };
            a.client_activity_id = cd.client_activity_id;
        }
        if let Some(raw) = &a.attachments {
            let r = raw.get().trim();
            if !r.starts_with('[') {
                return Err(ProtocolError::bad_request("attachments must be an array"));
            }
            if r[1..].trim_start().starts_with(']') {
                a.attachments = None;
            }
        }
        a.kind = Some(kind);
        Ok(a)
    }

    /// Whether it carries at least one attachment.
    pub fn has_attachments(&self) -> bool {
        self.attachments.is_some()
    }

    /// Sets `channelData.clientActivityId` (an activity the gateway makes for a client).
    pub fn set_client_activity_id(&mut self, cid: &str) {
        self.channel_data = serde_json::value::to_raw_value(&json!({"clientActivityId": cid})).ok();
        self.client_activity_id = Some(cid.to_owned());
    }

    pub fn kind(&self) -> Kind {
        self.kind.unwrap_or(Kind::Event)
    }

    /// The value to store: the client's own text where it was passed through, else the tree.
    pub fn value_ref(&self) -> ValueRef<'_> {
        match &self.value_raw {
            Some(raw) => ValueRef::Raw(raw),
            None => ValueRef::Tree(&self.value),
        }
    }

    /// The event name, for `event` activities.
    pub fn event_name(&self) -> Option<&str> {
        (self.kind() == Kind::Event).then_some(self.name.as_deref()).flatten()
    }

    pub fn client_activity_id(&self) -> Option<&str> {
        self.client_activity_id.as_deref()
    }

    pub fn conversation_id(&self) -> Option<&str> {
        self.conversation.as_ref().map(|c| c.id.as_str())
    }
}

/// A signal in Omnichannel's dialect: a bot message whose `channelData.tags` is the JSON
/// text `{"type":"Escalate","context":{…}}` (hand off, setting those context variables) or
/// `{"type":"EndConversation"}`.
#[derive(Clone, Debug, PartialEq)]
pub enum OmnichannelTag {
    Escalate(Value),
    End,
}

/// The Omnichannel signal in a message's `channelData`, if any. Tags that are not one of
/// the two signals (Omnichannel passes other tags through) are none; a signal whose
/// `context` is not an object is refused.
pub fn omnichannel_tag(channel_data: Option<&RawValue>) -> Result<Option<OmnichannelTag>, ProtocolError> {
    #[derive(Deserialize)]
    struct Tags {
        tags: Option<Value>,
    }
    let Some(raw) = channel_data else { return Ok(None) };
    let Ok(Tags { tags: Some(Value::String(tags)) }) = serde_json::from_str::<Tags>(raw.get()) else {
        return Ok(None);
    };
    let Ok(tag) = serde_json::from_str::<Value>(&tags) else { return Ok(None) };
    match tag["type"].as_str() {
        Some("Escalate") => match &tag["context"] {
            Value::Null => Ok(Some(OmnichannelTag::Escalate(Value::Null))),
            Value::Object(_) => Ok(Some(OmnichannelTag::Escalate(tag["context"].clone()))),
            _ => Err(ProtocolError::bad_request("channelData.tags: an Escalate context must be an object")),
        },
        Some("EndConversation") => Ok(Some(OmnichannelTag::End)),
        _ => Ok(None),
    }
}

/// Who an activity is from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Bot,
    Agent,
    System,
}

#[derive(Clone, Debug, Serialize)]
pub struct Party {
    pub id: String,
    pub name: String,
    pub role: Role,
}

impl Party {
    pub fn system() -> Party {
        Party { id: "switchboard".into(), name: "Switchboard".into(), role: Role::System }
    }
}

/// An activity as the gateway stores and sends it.
#[derive(Debug, Serialize)]
pub struct Activity<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: ActivityId<'a>,
    pub seq: u64,
    pub timestamp: &'a str,
    pub conversation: ConvRef,
    pub from: &'a Party,
    pub text: Option<&'a str>,
    pub name: Option<&'a str>,
    pub value: ValueRef<'a>,
    pub attachments: &'a RawValue,
    #[serde(rename = "channelData")]
    pub channel_data: &'a RawValue,
}

/// An activity's `value` on its way into a frame: the client's JSON text as it came, or a
/// tree the gateway read or built.
#[derive(Clone, Copy, Debug)]
pub enum ValueRef<'a> {
    Raw(&'a RawValue),
    Tree(&'a Value),
}

impl ValueRef<'static> {
    pub const NULL: ValueRef<'static> = ValueRef::Tree(&Value::Null);
}

impl Serialize for ValueRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ValueRef::Raw(r) => r.serialize(s),
            ValueRef::Tree(v) => v.serialize(s),
        }
    }
}

/// `[]` and `{}` as raw JSON, for activities without attachments or channel data.
pub fn empty_array() -> &'static RawValue {
    static EMPTY: std::sync::LazyLock<Box<RawValue>> =
        std::sync::LazyLock::new(|| RawValue::from_string("[]".into()).unwrap_or_else(|_| unreachable!()));
    &EMPTY
}

pub fn empty_object() -> &'static RawValue {
    static EMPTY: std::sync::LazyLock<Box<RawValue>> =
        std::sync::LazyLock::new(|| RawValue::from_string("{}".into()).unwrap_or_else(|_| unreachable!()));
    &EMPTY
}

/// Serialises any value to a frame.
pub fn frame(v: &impl Serialize) -> Frame {
    frame_sized(v, 192)
}

/// [`frame`] into a buffer of `capacity` bytes to start with: an activity that fits is
/// written without the buffer growing (and being copied) two or three times on the way.
pub fn frame_sized(v: &impl Serialize, capacity: usize) -> Frame {
    let mut buf = Vec::with_capacity(capacity);
    // Our own types always serialise (to UTF-8); an empty object is a safe fallback all the same.
    match serde_json::to_writer(&mut buf, v).ok().and_then(|()| String::from_utf8(buf).ok()) {
        Some(s) => Frame::from(s),
        None => Frame::from_static("{}"),
    }
}

#[derive(Serialize)]
struct ConvId<'a> {
    id: &'a str,
}

#[derive(Serialize)]
struct Event<'a, V: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    value: V,
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation: Option<ConvId<'a>>,
}

/// An event that is not part of the transcript (ack, error, queue.position, …).
pub fn event(name: &str, value: impl Serialize, conversation: Option<&str>) -> Frame {
    frame(&Event { kind: "event", name, value, conversation: conversation.map(|id| ConvId { id }) })
}

/// The clientActivityId of a frame we will not otherwise parse (a rate-limited one), so the
/// client can tell which frame to send again.
pub fn peek_client_activity_id(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(rename = "channelData")]
        channel_data: Option<PeekData>,
    }
    #[derive(Deserialize)]
    struct PeekData {
        #[serde(rename = "clientActivityId")]
        client_activity_id: Option<String>,
    }
    serde_json::from_str::<Peek>(text).ok()?.channel_data?.client_activity_id
}

/// An activity's id, `a_<conversation id without its c_>_<seq>`: derived from the two, and
/// written straight into the frame that carries it (the activity, its `ack`) rather than
/// built as a string first.
#[derive(Clone, Copy, Debug)]
pub struct ActivityId<'a> {
    pub conversation: &'a str,
    pub seq: u64,
}

impl fmt::Display for ActivityId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let suffix = self.conversation.strip_prefix("c_").unwrap_or(self.conversation);
        write!(f, "a_{suffix}_{}", self.seq)
    }
}

impl Serialize for ActivityId<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Serialize)]
struct AckValue<'a> {
    #[serde(rename = "clientActivityId")]
    client_activity_id: Option<&'a str>,
    id: ActivityId<'a>,
    seq: u64,
}

/// The `ack` of a client activity that changes state but is not in the transcript (an
/// agent's `presence`): no `id` or `seq`.
pub fn ack_state(client_activity_id: Option<&str>) -> Frame {
    event("ack", json!({"clientActivityId": client_activity_id}), None)
}

/// The `ack` event for a stored client activity (on the hot path: no JSON tree built).
pub fn ack_event(conversation: &str, client_activity_id: Option<&str>, seq: u64) -> Frame {
    event("ack", AckValue { client_activity_id, id: ActivityId { conversation, seq }, seq }, Some(conversation))
}

impl Inbound {
    /// An activity a bot sends in a conversation.
    pub fn new(kind: Kind, conversation: &str) -> Inbound {
        Inbound {
            kind_raw: Some(kind.as_str().to_owned()),
            kind: Some(kind),
            name: None,
            value_raw: None,
            value: Value::Null,
            text: None,
            conversation: Some(ConvRef { id: conversation.to_owned() }),
            channel_data: None,
            attachments: None,
            client_activity_id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_counts_objects_and_arrays_but_not_brackets_in_strings() {
        assert_eq!(nesting("1"), 0);
        assert_eq!(nesting(r#""[{""#), 0);
        assert_eq!(nesting(r#"{"a":[1,{"b":"]}\"{["}],"c":{}}"#), 3);
        assert_eq!(nesting("[[],[[]],[]]"), 3);
    }

    #[test]
    fn an_activity_may_nest_48_levels_and_no_more() {
        let nested = |levels: usize| format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
        for field in ["value", "attachments"] {
            // The activity is one level, the field's array the rest.
            let at_limit = format!(r#"{{"type":"message","{field}":{}}}"#, nested(MAX_DEPTH - 1));
            assert!(Inbound::parse(&at_limit).is_ok(), "{field} at the limit");
            let over = format!(r#"{{"type":"message","{field}":{}}}"#, nested(MAX_DEPTH));
            let e = Inbound::parse(&over).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.starts_with(&format!("{field} nests deeper")), "{}", e.message);
        }
        // Far beyond serde_json's own limit of 128, where only the raw text was kept.
        let deep = format!(r#"{{"type":"message","channelData":{{"x":{}}}}}"#, nested(5_000));
        assert!(Inbound::parse(&deep).unwrap_err().message.starts_with("channelData nests deeper"));
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let cases = [
            ("{", "malformed JSON"),
            ("[]", "malformed JSON"),
            (r#"{"text":"hi"}"#, "no \"type\""),
            (r#"{"type":"poke"}"#, "unknown activity type \"poke\""),
            (r#"{"type":"event"}"#, "no \"name\""),
            (r#"{"type":"message","channelData":5}"#, "channelData must be an object"),
            (r#"{"type":"message","channelData":{"clientActivityId":5}}"#, "clientActivityId text"),
            (r#"{"type":"message","attachments":{}}"#, "attachments must be an array"),
            (r#"{"type":"message","text":5}"#, "malformed JSON"),
        ];
        for (input, want) in cases {
            let e = Inbound::parse(input).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.contains(want), "{input}: {}", e.message);
        }
        let ok = Inbound::parse(r#"{"type":"message","text":"hé","channelData":{"clientActivityId":"x1"}}"#).unwrap();
        assert_eq!(ok.kind(), Kind::Message);
        assert_eq!(ok.client_activity_id(), Some("x1"));
    }

    /// A message's value is the client's text, untouched (its spacing and key order too);
    /// an event's is parsed for the gateway to read, and stored as the tree it read.
    #[test]
    fn message_values_pass_through_and_event_values_are_read() {
        let value = r#"{ "b": [1, 2.50],  "a": "x" }"#;
        let m = Inbound::parse(&format!(r#"{{"type":"message","text":"card","value":{value}}}"#)).unwrap();
        assert_eq!(m.value, Value::Null);
        let stored = serde_json::to_string(&m.value_ref()).unwrap();
        assert_eq!(stored, value);

        let e = Inbound::parse(r#"{"type":"event","name":"presence","value":"busy"}"#).unwrap();
        assert!(e.value_raw.is_none());
        assert_eq!(e.value, Value::String("busy".into()));
        assert_eq!(serde_json::to_string(&e.value_ref()).unwrap(), r#""busy""#);

        let end = Inbound::parse(r#"{"type":"endOfConversation","value":{"survey":true}}"#).unwrap();
        assert_eq!(end.value["survey"], Value::Bool(true));
        let none = Inbound::parse(r#"{"type":"typing"}"#).unwrap();
        assert_eq!(serde_json::to_string(&none.value_ref()).unwrap(), "null");
    }

    #[test]
    fn omnichannel_tags_are_read_from_channel_data() {
        let raw = |s: &str| serde_json::value::RawValue::from_string(s.to_owned()).unwrap();
        let esc = raw(r#"{"tags":"{\"type\":\"Escalate\",\"context\":{\"BotHandoffTopic\":\"CreditCard\"}}"}"#);
        assert_eq!(
            omnichannel_tag(Some(&esc)).unwrap(),
            Some(OmnichannelTag::Escalate(json!({"BotHandoffTopic": "CreditCard"})))
        );
        let end = raw(r#"{"tags":"{\"type\":\"EndConversation\"}"}"#);
        assert_eq!(omnichannel_tag(Some(&end)).unwrap(), Some(OmnichannelTag::End));
        for none in [r#"{}"#, r#"{"tags":"ChannelId-lcw,FPISV"}"#, r#"{"tags":{"type":"Escalate"}}"#] {
            assert_eq!(omnichannel_tag(Some(&raw(none))).unwrap(), None, "{none}");
        }
        let bad = raw(r#"{"tags":"{\"type\":\"Escalate\",\"context\":[1]}"}"#);
        assert!(omnichannel_tag(Some(&bad)).is_err());
    }
}
