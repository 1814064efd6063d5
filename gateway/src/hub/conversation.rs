//! One conversation's live state: its transcript, its participants' outboxes, and the
//! sequence counter. Guarded by one short mutex; the hot path (a message relayed between
//! customer and holder) takes only this lock, never the routing engine's.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use super::outbox::Outbox;
use crate::clock::Clock;
use crate::protocol::{Activity, ConvRef, Frame, Kind, Party, Role, frame};
use crate::routing::ConvId;
use crate::store::{Commit, Record, Store};

/// The member holding the conversation, and its connection if it has one.
#[derive(Debug, Clone)]
pub struct Holder {
    pub member: Arc<str>,
    pub party: Party,
    pub outbox: Option<Outbox>,
}

#[derive(Debug)]
pub struct Conversation {
    pub id: ConvId,
    pub workstream: String,
    pub customer: Party,
    pub inner: Mutex<ConvInner>,
}

#[derive(Debug, Default)]
pub struct ConvInner {
    /// `transcript[i]` has `seq == i + 1`.
    pub transcript: Vec<Frame>,
    pub customer: Option<Outbox>,
    pub holder: Option<Holder>,
    /// (sender id, clientActivityId) → (id, seq): a repeat is acknowledged again, not delivered.
    pub seen: HashMap<(String, String), (String, u64)>,
    pub closed: bool,
    pub survey_requested: bool,
    pub survey: Option<Value>,
    /// The bot's summary for the agent, from its last `handoff.initiate`.
    pub summary: Option<String>,
}

/// What a new activity carries besides its sender.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    pub kind: Kind,
    pub text: Option<&'a str>,
    pub name: Option<&'a str>,
    pub value: &'a Value,
    pub attachments: &'a [Value],
    pub channel_data: &'a Value,
}

impl<'a> Body<'a> {
    pub fn event(name: &'a str, value: &'a Value) -> Body<'a> {
        Body { kind: Kind::Event, text: None, name: Some(name), value, attachments: &[], channel_data: &Value::Null }
    }
}

/// A stored activity's identity.
#[derive(Debug, Clone)]
pub struct Appended {
    pub id: String,
    pub seq: u64,
}

impl Conversation {
    pub fn activity_id(&self, seq: u64) -> String {
        let suffix = self.id.strip_prefix("c_").unwrap_or(&self.id);
        format!("a_{suffix}_{seq}")
    }
}

impl ConvInner {
    pub fn next_seq(&self) -> u64 {
        self.transcript.len() as u64 + 1
    }

    /// Stores an activity (next seq, no gaps) and delivers it to every participant but its
    /// sender. Runs under the conversation lock, so delivery order is seq order.
    pub fn append(
        &mut self,
        conv: &Conversation,
        clock: &Clock,
        store: &dyn Store,
        from: &Party,
        body: Body<'_>,
    ) -> (Appended, Commit) {
        let seq = self.next_seq();
        let id = conv.activity_id(seq);
        let timestamp = Clock::timestamp(clock.now_ms());
        let f = frame(&Activity {
            kind: body.kind.as_str(),
            id: &id,
            seq,
            timestamp: &timestamp,
            conversation: ConvRef { id: conv.id.to_string() },
            from,
            text: body.text,
            name: body.name,
            value: body.value,
            attachments: body.attachments,
            channel_data: if body.channel_data.is_null() { &EMPTY_OBJECT } else { body.channel_data },
        });
        let commit = store.record(Record::Activity { conversation: &conv.id, seq, frame: &f });
        self.transcript.push(f.clone());
        if from.role != Role::User
            && let Some(c) = &self.customer
        {
            c.send(f.clone());
        }
        if let Some(h) = &self.holder
            && h.member.as_ref() != from.id
            && let Some(o) = &h.outbox
        {
            o.send(f);
        }
        (Appended { id, seq }, commit)
    }
}

static EMPTY_OBJECT: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| Value::Object(serde_json::Map::new()));
