//! What a holder (bot or agent) does in a conversation it holds: messages, the bot's
//! handoff, the end, transcript pages, transfer, and an agent's presence.

use std::sync::Arc;

use serde_json::{Value, json};

use super::error::{HubError, Thing};
use super::*;
use crate::context::Value as CtxValue;
use crate::protocol::Inbound;
use crate::routing::Engine;

impl Hub {
    /// Checks that `member` holds the conversation (under the engine lock).
    pub(super) fn held(&self, engine: &Engine, conv_id: &str, member: &str) -> Result<(), HubError> {
        match engine.holder(conv_id) {
            Some(h) if h == member => Ok(()),
            _ if engine.status(conv_id).is_none() => Err(HubError::Unknown(Thing::Conversation, conv_id.to_owned())),
            _ => Err(HubError::NotHolder(format!("conversation {conv_id:?}"))),
        }
    }

    /// The conversation a bot or agent frame names.
    pub fn named_conversation(&self, a: &Inbound) -> Result<Arc<Conversation>, HubError> {
        let id = a.conversation_id().ok_or_else(|| HubError::invalid("activity has no conversation.id"))?;
        self.conversation(id).ok_or_else(|| HubError::Unknown(Thing::Conversation, id.to_owned()))
    }

    /// A message or typing from the holder.
    pub fn member_post(&self, member: &Arc<str>, reply: &Outbox, a: &Inbound) -> Result<(), HubError> {
        let conv = self.named_conversation(a)?;
        self.post(&conv, &Sender::Member(member.clone()), reply, a, |inner| holds(inner, member, &conv.id))?;
        Ok(())
    }

    /// The holder bot transfers to an agent (`handoff.initiate`, the Escalate topic): the
    /// context variables in `value` are merged and the rules run again.
    pub fn handoff(&self, member: &Arc<str>, reply: &Outbox, a: &Inbound) -> Result<(), HubError> {
        let conv = self.named_conversation(a)?;
        let _span = conv.span.enter();
        let vars = self.handoff_vars(&conv.workstream, &a.value)?;
        let counted = self.take_agent_chat(&conv)?;
        let escalated = self.escalate(member, reply, a, &conv, vars);
        if counted && escalated.is_err() {
            self.give_back_agent_chat(&mut conv.inner.lock());
        }
        escalated
    }

    fn escalate(
        &self,
        member: &Arc<str>,
        reply: &Outbox,
        a: &Inbound,
        conv: &Arc<Conversation>,
        vars: Vec<(String, Option<CtxValue>)>,
    ) -> Result<(), HubError> {
        // The bot's own activity goes into the transcript under the conversation's lock
        // alone, checked as any of its messages is; the engine's lock, which every routing
        // event of every connection waits for, is taken only for the escalation. Should the
        // conversation move on in between (the customer leaves), the escalation is refused
        // after the activity was stored, as when no rule routes it.
        self.post(conv, &Sender::Member(member.clone()), reply, a, |inner| holds(inner, member, &conv.id))?;
        if let Some(s) = &a.text {
            conv.inner.lock().summary = Some(s.clone());
        }
        let mut engine = self.engine.lock();
        self.held(&engine, &conv.id, member)?;
        let fx = engine.escalate(&conv.id, vars, self.clock.now_ms())?;
        tracing::debug!(conversation.id = %conv.id, bot = %member, "escalated");
        conv.inner.lock().handoff_from = Some(member.clone());
        self.handoff_status(member, &conv.id, "accepted", "the conversation is waiting for an agent");
        self.apply(&mut engine, fx);
        Ok(())
    }

    /// Checks the variables a bot sets: declared ones must have their type; undeclared ones
    /// (Copilot Studio's `va_*`, say) are kept for the agent but cannot drive routing.
    pub(super) fn handoff_vars(
        &self,
        workstream: &str,
        value: &Value,
    ) -> Result<Vec<(String, Option<CtxValue>)>, HubError> {
        let cfg = self.cfg();
        let ws = cfg.workstream(workstream);
        let obj = match value {
            Value::Null => return Ok(Vec::new()),
            Value::Object(o) => o,
            _ => {
                return Err(HubError::invalid("handoff.initiate value must be an object of context variables"));
            }
        };
        obj.iter()
            .map(|(k, v)| {
                let parsed = match ws.and_then(|w| w.variable(k)) {
                    Some(ty) => CtxValue::from_json(ty, v)
                        .map_err(|e| HubError::invalid(format!("context variable {k:?}: {e}")))?,
                    None => CtxValue::from_json_untyped(v),
                };
                Ok((k.clone(), parsed))
            })
            .collect()
    }

    /// The holder ends the conversation ("End the conversation"); with `value.survey` the
    /// customer gets `survey.request` first.
    pub fn member_end(&self, member: &Arc<str>, reply: &Outbox, a: &Inbound) -> Result<(), HubError> {
        let conv = self.named_conversation(a)?;
        let _span = conv.span.enter();
        let survey = match a.value.get("survey") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(HubError::invalid("value.survey must be true or false")),
        };
        let mut engine = self.engine.lock();
        self.held(&engine, &conv.id, member)?;
        if survey {
            let mut inner = conv.inner.lock();
            inner.survey_requested = true;
            let v = json!({"rating": {"min": 1, "max": 5}, "comment": true});
            self.append_system(&conv, &mut inner, Body::event("survey.request", &v));
        }
        self.post(&conv, &Sender::Member(member.clone()), reply, a, |_| Ok(()))?;
        self.close_locked(&mut engine, &conv);
        Ok(())
    }

    /// `transcript.request` from the holder: the page of the transcript before
    /// `value.before` (a seq; absent: the newest page), newest first within the page limit,
    /// answered with a `transcript.page` event (`transcriptFrom`, `transcriptComplete`).
    pub fn transcript_page(&self, member: &Arc<str>, reply: &Outbox, a: &Inbound) -> Result<(), HubError> {
        let conv = self.named_conversation(a)?;
        let before = match a.value.get("before") {
            None | Some(Value::Null) => u64::MAX,
            Some(v) => v.as_u64().ok_or_else(|| HubError::invalid("transcript.request value.before must be a seq"))?,
        };
        let inner = conv.inner.lock();
        holds(&inner, member, &conv.id)?;
        let end = before.saturating_sub(1).min(inner.committed) as usize;
        let frames = &inner.transcript[..end];
        let start = conversation::page_start(frames, self.server.transcript_page_bytes);
        let id = serde_json::to_string(&*conv.id).unwrap_or_default();
        let head = format!(
            "{{\"type\":\"event\",\"name\":\"transcript.page\",\"conversation\":{{\"id\":{id}}},\"value\":{{\"before\":{},\"transcript\":[",
            end + 1
        );
        reply.send(conversation::splice_page(&head, &frames[start..], start as u64 + 1));
        Ok(())
    }

    /// The holder transfers to a named queue, or back through the rules.
    pub fn transfer(&self, member: &Arc<str>, reply: &Outbox, a: &Inbound) -> Result<(), HubError> {
        let conv = self.named_conversation(a)?;
        let _span = conv.span.enter();
        let queue = match a.value.get("queue") {
            None | Some(Value::Null) => None,
            Some(Value::String(q)) => Some(q.clone()),
            Some(_) => return Err(HubError::invalid("transfer value.queue must be a queue name")),
        };
        if let Some(q) = &queue
            && self.cfg().queue(q).is_none()
        {
            return Err(HubError::Unknown(Thing::Queue, q.to_string()));
        }
        let mut engine = self.engine.lock();
        self.held(&engine, &conv.id, member)?;
        // Refused before it is stored: a refused transfer leaves no trace in the transcript.
        engine.check_transfer(&conv.id, queue.as_deref())?;
        self.post(&conv, &Sender::Member(member.clone()), reply, a, |_| Ok(()))?;
        let fx = engine.transfer(&conv.id, queue.as_deref(), self.clock.now_ms())?;
        self.apply(&mut engine, fx);
        Ok(())
    }

    /// An agent's presence.
    pub fn presence(&self, member: &str, presence: crate::routing::Presence) -> Result<(), HubError> {
        let mut engine = self.engine.lock();
        let fx = engine.set_presence(member, presence)?;
        self.apply(&mut engine, fx);
        Ok(())
    }
}

/// Checks, under the conversation's lock, that `member` holds it: the conversation's copy
/// of the engine's holder, which a holder's activities are checked against.
fn holds(inner: &ConvInner, member: &str, conv_id: &str) -> Result<(), HubError> {
    match &inner.holder {
        Some(h) if *h.member == *member => Ok(()),
        _ => Err(HubError::NotHolder(format!("conversation {conv_id:?}"))),
    }
}
