//! Writing the transcript: a client's activity (dedup by `clientActivityId`, the size
//! bound, the bot's reply clock), the gateway's own notices, and closing a conversation.

use std::sync::Arc;

use serde_json::Value;

use super::error::HubError;
use super::*;
use crate::protocol::{self, Inbound, Party};
use crate::routing::Engine;

impl Hub {
    /// Stores a client's activity, delivers it, and acknowledges it once committed. A repeated
    /// `clientActivityId` from the same sender is acknowledged again and not delivered twice.
    /// `check` runs under the conversation lock, atomically with the append.
    pub fn post(
        &self,
        conv: &Arc<Conversation>,
        sender: &Sender,
        reply: &Outbox,
        a: &Inbound,
        check: impl FnOnce(&ConvInner) -> Result<(), HubError>,
    ) -> Result<Appended, HubError> {
        let _span = conv.span.enter();
        // The member table (a reload may replace it) is read only for a member's activity:
        // a customer's, the most common, takes no lock for it.
        let (parties, unknown);
        let (from, author) = match sender {
            Sender::Customer => (&conv.customer, Author::Customer),
            Sender::Member(m) => {
                parties = self.parties();
                match parties.get(&**m) {
                    Some(p) => (p, Author::Member(m.clone())),
                    None => {
                        unknown = self.member_party(m);
                        (&unknown, Author::Member(m.clone()))
                    }
                }
            }
        };
        if a.kind() == protocol::Kind::Message && a.text.as_deref().is_none_or(str::is_empty) && !a.has_attachments() {
            return Err(HubError::invalid("a message needs text or attachments"));
        }
        let mut inner = conv.inner.lock();
        check(&inner)?;
        // A conversation holds a bounded transcript; its end and a survey answer always fit.
        let limit = self.server.max_conversation_bytes;
        if !matches!(a.kind(), protocol::Kind::EndOfConversation)
            && a.event_name() != Some("survey.response")
            && inner.bytes + a.text.as_ref().map_or(0, String::len) > limit
        {
            return Err(HubError::ConversationFull(limit));
        }
        let cid = a.client_activity_id();
        // One string per client activity id: the dedup map's key and the store's.
        let key = cid.map(|c| client_key(&from.id, c));
        let ack = Ack { to: reply.clone(), client_activity_id: cid.map(str::to_owned) };
        if let Some(k) = &key
            && let Some(&seq) = inner.seen.get(k)
        {
            // Acknowledge again once it is durable (it may still be in flight), on the
            // connection that asked this time: the first one may be gone.
            inner.ack_when_stored(conv, seq, ack);
            return Ok(Appended { seq });
        }
        let body = Body {
            kind: a.kind(),
            text: a.text.as_deref(),
            name: a.name.as_deref(),
            value: a.value_ref(),
            attachments: a.attachments.as_deref(),
            channel_data: a.channel_data.as_deref(),
        };
        let appended = inner.append(
            conv,
            &self.clock,
            self.store.as_ref(),
            NewActivity { from, author, body, client_key: key.clone(), ack: Some(ack) },
        );
        crate::metrics::ACTIVITIES_IN.inc();
        if let Some(k) = key {
            inner.seen.insert(k, appended.seq);
        }
        // A customer's message starts the bot's clock; anything from the bot stops it.
        match sender {
            Sender::Customer if a.kind() == protocol::Kind::Message => {
                if let Some(h) = &inner.holder
                    && self.is_bot(&h.member)
                    && inner.bot_deadline_ms.is_none()
                {
                    inner.bot_deadline_ms = Some(self.clock.now_ms() + self.server.bot_reply_timeout_secs * 1000);
                }
            }
            Sender::Member(_) => inner.bot_deadline_ms = None,
            Sender::Customer => {}
        }
        Ok(appended)
    }

    /// Appends a gateway-made activity (notices, survey requests).
    pub(super) fn append_system(&self, conv: &Arc<Conversation>, inner: &mut ConvInner, body: Body<'_>) -> Appended {
        let from = Party::system();
        inner.append(
            conv,
            &self.clock,
            self.store.as_ref(),
            NewActivity { from: &from, author: Author::System, body, client_key: None, ack: None },
        )
    }

    /// A `system` message in the transcript explaining what the gateway did and why.
    pub(super) fn notice(&self, conv: &Arc<Conversation>, text: &str) {
        let mut inner = conv.inner.lock();
        self.append_system(conv, &mut inner, Body::message(text));
    }

    /// The gateway ends the conversation: an `endOfConversation` from `system` saying why,
    /// so the customer and the holder both learn of it.
    pub(super) fn end_notice(&self, conv: &Arc<Conversation>, why: &str) {
        let mut inner = conv.inner.lock();
        let v = Value::Null;
        let body = Body { kind: protocol::Kind::EndOfConversation, text: Some(why), ..Body::event("", &v) };
        self.append_system(conv, &mut inner, Body { name: None, ..body });
    }

    pub(super) fn close_locked(&self, engine: &mut Engine, conv: &Arc<Conversation>) {
        {
            let mut inner = conv.inner.lock();
            if let Some(addr) = inner.origin.take() {
                self.give_back_origin(addr);
            }
            self.give_back_agent_chat(&mut inner);
            inner.closed = true;
            inner.closed_at_ms = Some(self.clock.now_ms());
            inner.bot_deadline_ms = None;
            if let Some(bot) = inner.handoff_from.take() {
                self.handoff_status(&bot, &conv.id, "failed", "the conversation ended before an agent took it");
            }
        }
        let fx = engine.close(&conv.id);
        if let Some(call) = &conv.call {
            call.set_route(None);
            self.calls.remove(&call.stream);
        }
        tracing::info!(parent: &conv.span, "conversation closed");
        self.persist(engine, conv);
        self.apply(engine, fx);
    }
}
