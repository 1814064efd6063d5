//! One conversation's live state: its transcript, its participants' outboxes, and how far
//! each has been sent. Guarded by one short mutex; the hot path (a message relayed between
//! customer and holder) takes only this lock, never the routing engine's.
//!
//! Delivery follows the store: an activity is appended (taking the next `seq`) and handed
//! to the store; only once the store has committed it is it sent to the participants and
//! acknowledged to its sender. `committed` moves forward in seq order (one writer commits
//! in order), and each participant has a cursor (`customer_sent`, `holder_sent`), so a
//! resumed or re-assigned participant continues exactly where it left off.
//!
//! A holder that is released (escalation, transfer, the end of the conversation) keeps a
//! *departing* cursor up to the last activity appended before its release: what it was
//! entitled to see (the customer's `endOfConversation`, the last message before a
//! transfer) still reaches it once committed, however slow the store.
//!
//! A failed commit rewinds the conversation to its last committed activity: that activity
//! and every later one (all still unacknowledged and undelivered) are dropped from the
//! transcript, their senders get an `unavailable` error instead of an ack, and the next
//! activity takes the failed one's `seq`. A store callback from before the rewind is
//! recognised by its epoch and ignored. The dedup map only answers for what is still in
//! the transcript, so a resend after a failure is stored again, not acknowledged blindly.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use serde_json::value::RawValue;

use super::outbox::Outbox;
use crate::clock::Clock;
use crate::protocol::{
    Activity, ActivityId, ConvRef, Frame, Kind, Party, ValueRef, ack_event, empty_array, empty_object, frame_sized,
};
use crate::routing::ConvId;
use crate::store::{Record, Store, StoreError};

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
    /// Its `conversation.assigned`, waiting for the transcript up to the assignment to be
    /// committed: the work item then carries all of it, and delivery goes on from there.
    pub work: Option<WorkItem>,
}

/// A holder's `conversation.assigned` without its transcript: sent once the transcript up
/// to `at` is committed, with (the newest page of) those frames spliced in.
#[derive(Debug, Clone)]
pub struct WorkItem {
    pub at: u64,
    /// The frame up to the transcript's opening bracket.
    pub head: String,
    /// The most transcript it carries; older activities come with `transcript.request`.
    pub page_bytes: usize,
}

/// The newest entries of `entries` that fit in `page_bytes` (at least one), as the index
/// of the first.
pub fn page_start(entries: &[Entry], page_bytes: usize) -> usize {
    let mut size = 0;
    let mut start = entries.len();
    while start > 0 {
        size += entries[start - 1].frame.len() + 1;
        if size > page_bytes && start < entries.len() {
            break;
        }
        start -= 1;
    }
    start
}

/// `head` (ending in an open `[`), `frames` spliced in, then the page's bounds: the seq of
/// its first activity and whether it starts at the beginning.
pub fn splice_page(head: &str, frames: &[Entry], first_seq: u64) -> Frame {
    let size = head.len() + 64 + frames.iter().map(|e| e.frame.len() + 1).sum::<usize>();
    let mut v = String::with_capacity(size);
    v.push_str(head);
    for (i, e) in frames.iter().enumerate() {
        if i > 0 {
            v.push(',');
        }
        v.push_str(e.frame.as_str());
    }
    v.push_str("],\"transcriptFrom\":");
    v.push_str(&first_seq.to_string());
    v.push_str(",\"transcriptComplete\":");
    v.push_str(if first_seq <= 1 { "true" } else { "false" });
    v.push_str("}}");
    Frame::from(v)
}

impl WorkItem {
    /// The whole frame, with the newest page of `frames` as its transcript.
    pub fn frame(&self, frames: &[Entry]) -> Frame {
        let start = page_start(frames, self.page_bytes);
        splice_page(&self.head, &frames[start..], start as u64 + 1)
    }
}

#[derive(Debug)]
pub struct Conversation {
    pub id: ConvId,
    pub workstream: String,
    pub customer: Party,
    pub inner: super::locks::ConvLock<ConvInner>,
    /// The media side, for a voice conversation.
    pub call: Option<Arc<super::call::Call>>,
    /// Its span (`conversation.id`, `workstream`): the hub enters it while it works on the
    /// conversation, so its log lines carry them; it ends when the conversation leaves memory.
    pub span: tracing::Span,
}

impl Conversation {
    /// The span of the conversation `id` in `workstream`, a root of its own (not inside the
    /// connection that happened to start it).
    pub fn span_for(id: &str, workstream: &str) -> tracing::Span {
        tracing::info_span!(parent: None, "conversation", conversation.id = %id, workstream = %workstream)
    }
}

#[derive(Debug, Default)]
pub struct ConvInner {
    /// `transcript[i]` has `seq == i + 1`.
    pub transcript: Vec<Entry>,
    /// The bytes of the transcript's frames (bounded by `max_conversation_bytes`).
    pub bytes: usize,
    /// Every activity up to this seq is durable (and may be delivered).
    pub committed: u64,
    pub customer: Option<Outbox>,
    /// The customer's connection has been sent everything up to this seq.
    pub customer_sent: u64,
    pub holder: Option<Holder>,
    pub holder_sent: u64,
    /// Released holders still owed what was appended before their release.
    pub departing: Vec<Departing>,
    /// Acknowledgements waiting for their activity's commit, in seq order.
    pub acks: VecDeque<PendingAck>,
    /// Bumped by every rewind after a failed commit; store callbacks carry the epoch of
    /// their append, so one from before a rewind is recognised and ignored.
    pub epoch: u64,
    /// `hub::client_key(sender, clientActivityId)` → seq: a repeat is acknowledged again, not
    /// delivered twice.
    pub seen: HashMap<String, u64>,
    pub closed: bool,
    pub closed_at_ms: Option<u64>,
    pub survey_requested: bool,
    pub survey: Option<Value>,
    /// The bot's summary for the agent, from its last `handoff.initiate`.
    pub summary: Option<String>,
    pub last_activity_ms: u64,
    /// When the customer's connection went away (it may resume for a while).
    pub customer_left_ms: Option<u64>,
    /// The generation of the customer token that may resume it (see `auth::Claims::generation`).
    pub token_gen: u64,
    /// Until then the generation before `token_gen` also resumes, while no connection holds
    /// the customer's seat: the answer carrying the newer token may have been lost.
    pub prev_token_until_ms: u64,
    /// A bot holder must answer by then.
    pub bot_deadline_ms: Option<u64>,
    /// The bot whose handoff is waiting for an agent: it is told `handoff.status`
    /// `completed` when one takes the conversation, `failed` if it ends first.
    pub handoff_from: Option<Arc<str>>,
    /// When the customer was last told its queue position (`queue.position`), and the
    /// latest position not told yet: a customer is told at most once a second
    /// (`hub/positions.rs`).
    pub position_told_ms: u64,
    pub position_due: Option<(String, usize)>,
    /// The address a `/v1/chat` customer started it from, as `chat_conversations_per_address`
    /// counts it; given back when it closes (`None` once given back, and for every other
    /// channel and for a conversation recovered after a restart).
    pub origin: Option<std::net::IpAddr>,
    /// The same address while this conversation counts against its
    /// `chat_agent_conversations_per_address` (it went to people); given back when it closes.
    pub agent_origin: Option<std::net::IpAddr>,
}

/// What a new activity carries besides its sender.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    pub kind: Kind,
    pub text: Option<&'a str>,
    pub name: Option<&'a str>,
    pub value: ValueRef<'a>,
    pub attachments: Option<&'a RawValue>,
    pub channel_data: Option<&'a RawValue>,
}

impl<'a> Body<'a> {
    pub fn event(name: &'a str, value: &'a Value) -> Body<'a> {
        Body::event_ref(name, ValueRef::Tree(value))
    }

    /// An event whose value is already JSON, or a tree.
    pub fn event_ref(name: &'a str, value: ValueRef<'a>) -> Body<'a> {
        Body { kind: Kind::Event, text: None, name: Some(name), value, attachments: None, channel_data: None }
    }

    pub fn message(text: &'a str) -> Body<'a> {
        Body {
            kind: Kind::Message,
            text: Some(text),
            name: None,
            value: ValueRef::NULL,
            attachments: None,
            channel_data: None,
        }
    }
}

/// A stored activity's identity.
#[derive(Debug, Clone)]
pub struct Appended {
    pub seq: u64,
}

/// The acknowledgement to send once an activity is committed.
#[derive(Debug)]
pub struct Ack {
    pub to: Outbox,
    pub client_activity_id: Option<String>,
}

/// An acknowledgement owed once `seq` is committed.
#[derive(Debug)]
pub struct PendingAck {
    pub seq: u64,
    pub ack: Ack,
}

/// A holder that was released but is still owed the activities up to `until`.
#[derive(Debug)]
pub struct Departing {
    pub member: Arc<str>,
    pub outbox: Outbox,
    pub sent: u64,
    pub until: u64,
}

impl Conversation {
    pub fn activity_id(&self, seq: u64) -> ActivityId<'_> {
        ActivityId { conversation: &self.id, seq }
    }

    /// The store answered for the activity `seq` appended in `epoch`: deliver and
    /// acknowledge what is committed, or rewind after a failure.
    pub fn stored(&self, epoch: u64, seq: u64, result: Result<(), StoreError>) {
        let mut inner = self.inner.lock();
        if epoch != inner.epoch {
            return; // Rewound since: its sender was told it was not stored.
        }
        match result {
            Ok(()) => {
                if seq > inner.committed {
                    inner.committed = seq.min(inner.transcript.len() as u64);
                }
                inner.flush();
                inner.send_acks(self);
            }
            Err(e) => inner.rewind(self, seq, &e),
        }
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
        let now = clock.now_ms();
        let timestamp = Clock::timestamp(now);
        let body = new.body;
        // The fixed fields, ids and timestamp take about 330 bytes; text may need escaping.
        let size = 384 + body.text.map_or(0, |t| t.len() + t.len() / 8) + new.from.name.len();
        let f = frame_sized(
            &Activity {
                kind: body.kind.as_str(),
                id: conv.activity_id(seq),
                seq,
                timestamp: &timestamp,
                conversation: ConvRef { id: conv.id.to_string() },
                from: new.from,
                text: body.text,
                name: body.name,
                value: body.value,
                attachments: body.attachments.unwrap_or(empty_array()),
                channel_data: body.channel_data.unwrap_or(empty_object()),
            },
            size,
        );
        self.bytes += f.len();
        self.transcript.push(Entry { frame: f.clone(), author: new.author });
        self.last_activity_ms = now;
        if let Some(ack) = new.ack {
            self.acks.push_back(PendingAck { seq, ack });
        }
        let rec = Record::Activity { conversation: conv.id.clone(), seq, frame: f, client_key: new.client_key };
        if store.synchronous() {
            store.record(rec, None);
            self.committed = seq;
            self.flush();
            self.send_acks(conv);
        } else {
            let c = conv.clone();
            let epoch = self.epoch;
            store.record(rec, Some(Box::new(move |result| c.stored(epoch, seq, result))));
        }
        Appended { seq }
    }

    /// Owes `ack` to its sender once `seq` is committed (at once if it is).
    pub fn ack_when_stored(&mut self, conv: &Conversation, seq: u64, ack: Ack) {
        let at = self.acks.partition_point(|p| p.seq <= seq);
        self.acks.insert(at, PendingAck { seq, ack });
        self.send_acks(conv);
    }

    /// Sends the acknowledgements whose activities are committed.
    pub fn send_acks(&mut self, conv: &Conversation) {
        while let Some(p) = self.acks.front()
            && p.seq <= self.committed
        {
            let p = self.acks.pop_front().expect("front exists");
            p.ack.to.send(ack_event(&conv.id, p.ack.client_activity_id.as_deref(), p.seq));
        }
    }

    /// The commit of `seq` failed: drop it and everything after it (none of it was
    /// delivered or acknowledged), tell the senders, and let the next activity take `seq`.
    fn rewind(&mut self, conv: &Conversation, seq: u64, e: &StoreError) {
        let keep = seq.saturating_sub(1).min(self.transcript.len() as u64);
        tracing::error!(conversation.id = %conv.id, seq, "{e}: activities from seq {seq} on were not stored");
        self.transcript.truncate(keep as usize);
        self.bytes = self.transcript.iter().map(|e| e.frame.len()).sum();
        self.committed = self.committed.min(keep);
        self.customer_sent = self.customer_sent.min(keep);
        self.holder_sent = self.holder_sent.min(keep);
        for d in &mut self.departing {
            d.until = d.until.min(keep);
        }
        self.departing.retain(|d| d.sent < d.until);
        self.epoch += 1;
        self.seen.retain(|_, s| *s <= keep);
        self.send_acks(conv);
        let err = super::HubError::Store(e.to_string());
        for p in self.acks.drain(..) {
            p.ack.to.send_error(err.clone(), Some(&conv.id), p.ack.client_activity_id.as_deref());
        }
    }

    /// Releases the holder `member` (escalation, transfer, close). A connected holder keeps
    /// a departing cursor up to what has been appended so far, so what it was entitled to
    /// see still reaches it once committed.
    pub fn release_holder(&mut self, member: &str) {
        let Some(h) = self.holder.take_if(|h| *h.member == *member) else { return };
        self.bot_deadline_ms = None;
        let until = self.transcript.len() as u64;
        // One whose work item never went out never knew it had the conversation.
        if let Some(outbox) = h.outbox
            && h.work.is_none()
            && self.holder_sent < until
        {
            self.departing.push(Departing { member: h.member, outbox, sent: self.holder_sent, until });
        }
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
        if let Some(h) = &mut self.holder
            && let Some(o) = &h.outbox
        {
            if let Some(w) = &h.work {
                if (w.at as usize) > committed {
                    return self.flush_departing();
                }
                let at = w.at as usize;
                o.send(w.frame(&self.transcript[..at]));
                h.work = None;
                self.holder_sent = at as u64;
            }
            for e in &self.transcript[(self.holder_sent as usize).min(committed)..committed] {
                if !matches!(&e.author, Author::Member(m) if *m == h.member) {
                    o.send(e.frame.clone());
                }
            }
            self.holder_sent = self.committed;
        }
        self.flush_departing();
    }

    /// Sends released holders what they are still owed.
    fn flush_departing(&mut self) {
        if !self.departing.is_empty() {
            for d in &mut self.departing {
                let to = d.until.min(self.committed);
                for e in &self.transcript[(d.sent as usize).min(to as usize)..to as usize] {
                    if !matches!(&e.author, Author::Member(m) if *m == d.member) {
                        d.outbox.send(e.frame.clone());
                    }
                }
                d.sent = d.sent.max(to);
            }
            self.departing.retain(|d| d.sent < d.until);
        }
    }

    /// Every committed activity.
    pub fn committed_frames(&self) -> &[Entry] {
        &self.transcript[..self.committed as usize]
    }

    /// Gives the holder its work item: sent with the transcript so far once all of it is
    /// committed (at once when it is).
    pub fn give_work(&mut self, head: String, page_bytes: usize) {
        self.set_work(head, page_bytes);
        self.flush();
    }

    /// [`ConvInner::give_work`] without sending it yet: nothing reaches the holder before
    /// its work item, which the next [`ConvInner::flush`] sends.
    pub fn set_work(&mut self, head: String, page_bytes: usize) {
        let at = self.transcript.len() as u64;
        if let Some(h) = &mut self.holder {
            h.work = Some(WorkItem { at, head, page_bytes });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_activity_id_names_its_conversation_and_seq() {
        let conv = Conversation {
            id: ConvId::from("c_0123abcd"),
            workstream: "ChatWorkStream".into(),
            customer: Party::system(),
            inner: super::super::locks::ConvLock::new(ConvInner::default()),
            call: None,
            span: tracing::Span::none(),
        };
        assert_eq!(conv.activity_id(1).to_string(), "a_0123abcd_1");
        assert_eq!(conv.activity_id(u64::MAX).to_string(), format!("a_0123abcd_{}", u64::MAX));
        let ack = ack_event(&conv.id, Some("c1"), 7);
        assert!(ack.as_str().contains(r#""id":"a_0123abcd_7""#), "{ack}");
    }
}
