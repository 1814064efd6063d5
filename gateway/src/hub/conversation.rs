//! One conversation's live state: its transcript, its participants' outboxes, and how far
//! each has been sent. Guarded by one short mutex; the hot path (a message relayed between
//! customer and holder) takes only this lock, never the routing engine's.
//!
//! Delivery follows the store: an activity is appended (taking the next `seq`) and handed
//! to the store; only once the store has committed it is it sent to the participants and
//! acknowledged to its sender. `committed` moves forward in seq order (one writer commits
//! in order), and each participant has a cursor (`customer_sent`, `holder_sent`), so a
//! resumed or re-assigned participant continues exactly where it left off.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use super::outbox::Outbox;
use crate::clock::Clock;
use crate::protocol::{
    Activity, ConvRef, ErrorCode, Frame, Kind, Party, ProtocolError, ack_event, error_event, frame_sized,
};
use crate::routing::ConvId;
use crate::store::{Record, Store};

/// Who wrote a transcript entry, for delivery (nobody is sent their own activities).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Author {
    Customer,
    Member(Arc<str>),
    System,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub frame: Frame,
    pub author: Author,
}

/// The member holding the conversation, and its connection if it has one.
#[derive(Debug, Clone)]
pub struct Holder {
    pub member: Arc<str>,
    pub party: Party,
    pub outbox: Option<Outbox>,
    /// When its connection went away (it keeps the conversation for a grace period).
    pub gone_since_ms: Option<u64>,
}

#[derive(Debug)]
pub struct Conversation {
    pub id: ConvId,
    pub workstream: String,
    pub customer: Party,
    pub inner: Mutex<ConvInner>,
    /// The media side, for a voice conversation.
    pub call: Option<Arc<crate::voice::Call>>,
}

#[derive(Debug, Default)]
pub struct ConvInner {
    /// `transcript[i]` has `seq == i + 1`.
    pub transcript: Vec<Entry>,
    /// Every activity up to this seq is durable (and may be delivered).
    pub committed: u64,
    pub customer: Option<Outbox>,
    /// The customer's connection has been sent everything up to this seq.
    pub customer_sent: u64,
    pub holder: Option<Holder>,
    pub holder_sent: u64,
    /// (sender id, clientActivityId) → (id, seq): a repeat is acknowledged again, not delivered.
    pub seen: HashMap<(String, String), (String, u64)>,
    pub closed: bool,
    pub closed_at_ms: Option<u64>,
    pub survey_requested: bool,
    pub survey: Option<Value>,
    /// The bot's summary for the agent, from its last `handoff.initiate`.
    pub summary: Option<String>,
    pub last_activity_ms: u64,
    /// When the customer's connection went away (it may resume for a while).
    pub customer_left_ms: Option<u64>,
    /// A bot holder must answer by then.
    pub bot_deadline_ms: Option<u64>,
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

    pub fn message(text: &'a str) -> Body<'a> {
        Body {
            kind: Kind::Message,
            text: Some(text),
            name: None,
            value: &Value::Null,
            attachments: &[],
            channel_data: &Value::Null,
        }
    }
}

/// A stored activity's identity.
#[derive(Debug, Clone)]
pub struct Appended {
    pub id: String,
    pub seq: u64,
}

/// The acknowledgement to send once an activity is committed.
#[derive(Debug)]
pub struct Ack {
    pub to: Outbox,
    pub client_activity_id: Option<String>,
}

static EMPTY_OBJECT: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| Value::Object(serde_json::Map::new()));

impl Conversation {
    pub fn activity_id(&self, seq: u64) -> String {
        let suffix = self.id.strip_prefix("c_").unwrap_or(&self.id);
        format!("a_{suffix}_{seq}")
    }

    /// The store committed everything up to `seq`: deliver it.
    pub fn committed(&self, seq: u64) {
        let mut inner = self.inner.lock();
        if seq > inner.committed {
            inner.committed = seq.min(inner.transcript.len() as u64);
        }
        inner.flush();
    }
}

/// The parts of an activity the caller provides.
pub struct NewActivity<'a> {
    pub from: &'a Party,
    pub author: Author,
    pub body: Body<'a>,
    pub client_key: Option<String>,
    pub ack: Option<Ack>,
}

impl ConvInner {
    pub fn next_seq(&self) -> u64 {
        self.transcript.len() as u64 + 1
    }

    /// Stores an activity (next seq, no gaps). It is delivered to every participant but its
    /// author, and acknowledged, once the store commits it.
    pub fn append(
        &mut self,
        conv: &Arc<Conversation>,
        clock: &Clock,
        store: &dyn Store,
        new: NewActivity<'_>,
    ) -> Appended {
        let seq = self.next_seq();
        let id = conv.activity_id(seq);
        let now = clock.now_ms();
        let timestamp = Clock::timestamp(now);
        let body = new.body;
        // The fixed fields, ids and timestamp take about 330 bytes; text may need escaping.
        let size = 384 + body.text.map_or(0, |t| t.len() + t.len() / 8) + new.from.name.len();
        let f = frame_sized(
            &Activity {
                kind: body.kind.as_str(),
                id: &id,
                seq,
                timestamp: &timestamp,
                conversation: ConvRef { id: conv.id.to_string() },
                from: new.from,
                text: body.text,
                name: body.name,
                value: body.value,
                attachments: body.attachments,
                channel_data: if body.channel_data.is_null() { &EMPTY_OBJECT } else { body.channel_data },
            },
            size,
        );
        self.transcript.push(Entry { frame: f.clone(), author: new.author });
        self.last_activity_ms = now;
        let rec = Record::Activity { conversation: conv.id.clone(), seq, frame: f, client_key: new.client_key };
        if store.synchronous() {
            store.record(rec, None);
            self.committed = seq;
            self.flush();
            if let Some(ack) = new.ack {
                ack.to.send(ack_event(&conv.id, ack.client_activity_id.as_deref(), &id, seq));
            }
        } else {
            let c = conv.clone();
            let aid = id.clone();
            store.record(
                rec,
                Some(Box::new(move |result| match result {
                    Ok(()) => {
                        c.committed(seq);
                        if let Some(ack) = new.ack {
                            ack.to.send(ack_event(&c.id, ack.client_activity_id.as_deref(), &aid, seq));
                        }
                    }
                    Err(e) => {
                        if let Some(ack) = new.ack {
                            let err = ProtocolError::new(ErrorCode::Unavailable, format!("not stored: {e}"));
                            ack.to.send(error_event(&err, Some(&c.id), ack.client_activity_id.as_deref()));
                        }
                    }
                })),
            );
        }
        Appended { id, seq }
    }

    /// Sends each connected participant what is committed and not yet sent to it.
    pub fn flush(&mut self) {
        let committed = self.committed as usize;
        if let Some(c) = &self.customer {
            for e in &self.transcript[(self.customer_sent as usize).min(committed)..committed] {
                if e.author != Author::Customer {
                    c.send(e.frame.clone());
                }
            }
            self.customer_sent = self.committed;
        }
        if let Some(h) = &self.holder
            && let Some(o) = &h.outbox
        {
            for e in &self.transcript[(self.holder_sent as usize).min(committed)..committed] {
                if !matches!(&e.author, Author::Member(m) if *m == h.member) {
                    o.send(e.frame.clone());
                }
            }
            self.holder_sent = self.committed;
        }
    }

    /// Every committed activity, for a holder's `conversation.assigned`.
    pub fn committed_frames(&self) -> &[Entry] {
        &self.transcript[..self.committed as usize]
    }
}
