//! The customer's side of a conversation: its context checked against the workstream,
//! starting, resuming (the replay after a watermark), leaving, ending, and the survey.

use std::sync::Arc;

use serde_json::{Value, json};

use super::error::{HubError, Thing};
use super::*;
use crate::auth::Principal;
use crate::context::{Context, Value as CtxValue};
use crate::protocol::{self, Inbound, Party, Role};
use crate::routing::ConvId;

/// How long the token before the current one still resumes a conversation no connection
/// holds (a resume whose answer, with the new token, was lost on the way): from that
/// resume, or from recovery after a restart.
pub(super) const PREVIOUS_TOKEN_GRACE_MS: u64 = 60_000;

/// What a conversation opens for: a chat (with the address it counts against, for a
/// `/v1/chat` customer under `chat_conversations_per_address`), or a call.
pub(super) enum Opening {
    Chat { origin: Option<std::net::IpAddr> },
    Call(Arc<super::call::Call>),
}

impl Hub {
    /// Checks a customer's `session.start` context against the workstream's declarations.
    pub fn customer_context(&self, workstream: &str, raw: &Value) -> Result<Context, HubError> {
        let cfg = self.cfg();
        let ws =
            cfg.workstream(workstream).ok_or_else(|| HubError::Unknown(Thing::Workstream, workstream.to_owned()))?;
        let mut ctx = Context::new();
        let obj = match raw {
            Value::Null => return Ok(ctx),
            Value::Object(o) => o,
            _ => return Err(HubError::invalid("context must be an object")),
        };
        for (k, v) in obj {
            let ty = ws.variable(k).ok_or_else(|| {
                HubError::invalid(format!("context variable {k:?} is not declared by workstream {workstream:?}"))
            })?;
            if let Some(v) =
                CtxValue::from_json(ty, v).map_err(|e| HubError::invalid(format!("context variable {k:?}: {e}")))?
            {
                ctx.insert(k.clone(), v);
            }
        }
        Ok(ctx)
    }

    /// A customer starts a conversation: `session.started` goes out first, then the engine
    /// routes it and its effects (position, assignment) follow. `id` is a fresh random one,
    /// unless one was chosen beforehand (a Direct Line token names its conversation before
    /// the conversation starts). `origin`: the address a `/v1/chat` customer connected
    /// from (an IPv6 address by its /64), which may hold at most
    /// `chat_conversations_per_address` open conversations.
    pub fn start_conversation(
        &self,
        id: Option<ConvId>,
        workstream: &str,
        user_name: &str,
        context: Context,
        outbox: &Outbox,
        origin: Option<std::net::IpAddr>,
    ) -> Result<Arc<Conversation>, HubError> {
        let id = id.unwrap_or_else(super::new_conversation_id);
        if self.convs.contains_key(&id) {
            return Err(HubError::invalid("this conversation has already started"));
        }
        let origin = origin.filter(|_| self.server.chat_conversations_per_address > 0);
        if let Some(addr) = origin {
            self.take_origin(addr)?;
        }
        let opened = self.open_conversation(id, workstream, user_name, context, outbox, Opening::Chat { origin });
        if let (Err(_), Some(addr)) = (&opened, origin) {
            self.give_back_origin(addr);
        }
        opened
    }

    /// Counts one more open conversation from `addr`, or refuses it: one address may not
    /// take every seat of the bots and agents, however many chats it opens and drops (a
    /// dropped customer's conversation is kept for `customer_resume_secs`).
    fn take_origin(&self, addr: std::net::IpAddr) -> Result<(), HubError> {
        let max = self.server.chat_conversations_per_address;
        let mut open = self.origins.entry(addr).or_insert(0);
        if *open >= max {
            crate::metrics::CHATS_REFUSED.inc();
            return Err(HubError::TooMany(
                format!(
                    "{max} conversations from your address are open already (chat_conversations_per_address); \
                     end one, or try again when one has ended"
                )
                .into(),
            ));
        }
        *open += 1;
        Ok(())
    }

    /// A conversation counted against `addr` has closed (or never opened).
    pub(super) fn give_back_origin(&self, addr: std::net::IpAddr) {
        give_back(&self.origins, addr);
    }

    /// Counts `conv` as gone to people (a bot's handoff, or rules that send it straight to
    /// agents) against the address its customer started it from, or refuses: one address
    /// may not take every agent's seat, or put every other customer behind its own, by
    /// asking for a person in chat after chat. A conversation counted already (handed on
    /// before, or back to a bot since) is not counted again; one from no address (Direct
    /// Line, calls, recovered after a restart) is not counted. Whether it was counted now.
    pub(super) fn take_agent_chat(&self, conv: &Conversation) -> Result<bool, HubError> {
        let max = self.server.chat_agent_conversations_per_address;
        let mut inner = conv.inner.lock();
        let Some(addr) = inner.origin.filter(|_| max > 0 && inner.agent_origin.is_none()) else { return Ok(false) };
        let mut with_people = self.agent_chats.entry(addr).or_insert(0);
        if *with_people >= max {
            crate::metrics::AGENT_CHATS_REFUSED.inc();
            // At debug: a client asking again and again would otherwise write the log (the
            // metric counts every refusal).
            tracing::debug!(conversation.id = %conv.id, "refused a way to people: {max} conversations from {addr} are with people already");
            return Err(HubError::TooMany(
                format!(
                    "{max} conversations from this customer's address are with people already \
                     (chat_agent_conversations_per_address); try again once one of them has ended"
                )
                .into(),
            ));
        }
        *with_people += 1;
        inner.agent_origin = Some(addr);
        Ok(true)
    }

    /// `conv` no longer counts against its address's conversations with people (it closed,
    /// or what counted it failed).
    pub(super) fn give_back_agent_chat(&self, inner: &mut ConvInner) {
        if let Some(addr) = inner.agent_origin.take() {
            give_back(&self.agent_chats, addr);
        }
    }

    pub(super) fn open_conversation(
        &self,
        id: ConvId,
        workstream: &str,
        user_name: &str,
        context: Context,
        outbox: &Outbox,
        opening: Opening,
    ) -> Result<Arc<Conversation>, HubError> {
        let (call, origin) = match opening {
            Opening::Chat { origin } => (None, origin),
            Opening::Call(call) => (Some(call), None),
        };
        let now = self.clock.now_ms();
        let channel = if call.is_some() { "voice" } else { "chat" };
        let token = self.customer_token(&id, 1);
        let conv = Arc::new(Conversation {
            id: id.clone(),
            workstream: workstream.to_owned(),
            customer: Party { id: format!("u_{}", &id[2..14]), name: user_name.to_owned(), role: Role::User },
            inner: super::locks::ConvLock::new(ConvInner {
                customer: Some(outbox.clone()),
                last_activity_ms: now,
                token_gen: 1,
                origin,
                ..ConvInner::default()
            }),
            call: call.clone(),
            span: Conversation::span_for(&id, workstream),
        });
        let mut engine = self.engine.lock();
        if engine.status(&id).is_some() {
            return Err(HubError::Retry("conversation id collision; try again".into()));
        }
        // Calls come and go under the engine lock only (here and when a conversation
        // closes), so the cap is exact however many calls start at once.
        if call.is_some()
            && let Some(max) = self.server.max_calls
            && self.calls.len() >= max
        {
            crate::metrics::VOICE_REFUSED.inc();
            return Err(HubError::Retry(
                format!("the gateway is carrying its max_calls ({max}) calls; try again shortly").into(),
            ));
        }
        // A chat its rules send straight to people (its context may) counts as a bot's
        // handoff would, and is refused likewise.
        let to_people = conv.inner.lock().origin.is_some()
            && self.server.chat_agent_conversations_per_address > 0
            && engine.routes_to_people(workstream, &context)?;
        if to_people {
            self.take_agent_chat(&conv)?;
        }
        let mut started =
            json!({"conversationId": &*id, "token": token, "user": {"id": conv.customer.id, "name": user_name}});
        if let Some(c) = &call {
            started["stream"] = json!(c.stream);
        }
        outbox.send(protocol::event("session.started", started, Some(&id)));
        let fx = engine.start(id.clone(), workstream, context, now).inspect_err(|_| {
            self.give_back_agent_chat(&mut conv.inner.lock());
        })?;
        self.convs.insert(id.clone(), conv.clone());
        if let Some(c) = call {
            self.calls.insert(c.stream, c);
        }
        tracing::info!(parent: &conv.span, channel, "conversation started");
        self.persist(&engine, &conv);
        self.apply(&mut engine, fx);
        Ok(conv)
    }

    /// A customer resumes after a drop: `session.started`, then every committed activity
    /// after the watermark, in order, then the current queue position if waiting. Done
    /// under the conversation lock, so nothing live can slip between the replay and what
    /// follows.
    pub fn resume_conversation(
        &self,
        conv_id: &str,
        token: &str,
        watermark: u64,
        outbox: &Outbox,
    ) -> Result<Arc<Conversation>, HubError> {
        let claims = self
            .signer
            .verify(token, self.clock.now_ms())
            .map_err(|e| HubError::credentials(format!("cannot resume: {e}")))?;
        if claims.kind != Principal::Customer || claims.sub != conv_id {
            return Err(HubError::credentials("cannot resume: the token is not for this conversation"));
        }
        let conv =
            self.conversation(conv_id).ok_or_else(|| HubError::Unknown(Thing::Conversation, conv_id.to_owned()))?;
        let engine = self.engine.lock();
        let position = engine.position(conv_id);
        let mut inner = conv.inner.lock();
        // A token resumes once: each resume issues the next generation, so a copied or
        // replayed token cannot take the conversation over after the rightful client came
        // back. An ended conversation is resumed only to answer the survey it asked for.
        // A generation newer than the one on record was issued by this gateway (it is
        // signed) to a resume whose saved state did not reach the store before a crash or a
        // change of cluster leader: it is the rightful client's, and becomes the record.
        // The generation before the current one still resumes for a while, but only while
        // no connection holds the seat: the connection that carried the newer token may
        // have dropped before the client read it, and that must not lock the customer out.
        let now = self.clock.now_ms();
        let answer_lost = claims.generation + 1 == inner.token_gen
            && inner.customer.as_ref().is_none_or(Outbox::is_closed)
            && now <= inner.prev_token_until_ms;
        if claims.generation < inner.token_gen && !answer_lost {
            return Err(HubError::credentials(
                "cannot resume: this token was replaced by a newer one (each session.started issues a new token)",
            ));
        }
        if inner.closed && !(inner.survey_requested && inner.survey.is_none()) {
            return Err(HubError::credentials("cannot resume: the conversation has ended"));
        }
        // After a lost answer the same generation is issued again: the client still holds
        // only the one before it.
        inner.token_gen = inner.token_gen.max(claims.generation + 1);
        inner.prev_token_until_ms = now + PREVIOUS_TOKEN_GRACE_MS;
        let token = self.customer_token(conv_id, inner.token_gen);
        take_seat(&mut inner, outbox);
        outbox.send(protocol::event(
            "session.started",
            json!({"conversationId": conv_id, "token": &token, "resumed": true,
                   "user": {"id": conv.customer.id, "name": conv.customer.name}}),
            Some(conv_id),
        ));
        let from = usize::try_from(watermark).unwrap_or(usize::MAX).min(inner.committed as usize);
        outbox.send_batch(inner.committed_frames()[from..].iter().map(|e| e.frame.clone()).collect());
        inner.customer_sent = inner.committed;
        if let Some((queue, p)) = position
            && !inner.closed
        {
            inner.tell_position(conv_id, queue, p, now);
        }
        drop(inner);
        self.persist(&engine, &conv);
        Ok(conv)
    }

    /// A customer's stream that reads the transcript itself (Direct Line) takes the
    /// customer's seat: an older connection is closed, live activities and queue positions
    /// come to `outbox` from now on (the current position at once), and nothing is replayed.
    pub fn attach_customer(&self, conv: &Conversation, outbox: &Outbox) {
        let engine = self.engine.lock();
        let position = engine.position(&conv.id);
        let mut inner = conv.inner.lock();
        take_seat(&mut inner, outbox);
        inner.customer_sent = inner.committed;
        if let Some((queue, p)) = position
            && !inner.closed
        {
            inner.tell_position(&conv.id, queue, p, self.clock.now_ms());
        }
    }

    /// A customer without a connection showed it is still there (a Direct Line client
    /// polling): the resume window starts again from now.
    pub fn customer_seen(&self, conv: &Conversation) {
        let mut inner = conv.inner.lock();
        if inner.customer.as_ref().is_none_or(Outbox::is_closed) {
            inner.customer = None;
            inner.customer_left_ms = Some(self.clock.now_ms());
        }
    }

    /// Detaches a customer's connection (it can resume for a while).
    pub fn customer_left(&self, conv: &Conversation, outbox: &Outbox) {
        let mut inner = conv.inner.lock();
        if inner.customer.as_ref().is_some_and(|o| o.id() == outbox.id()) {
            inner.customer = None;
            inner.customer_left_ms = Some(self.clock.now_ms());
        }
    }

    /// The customer ends the conversation.
    pub fn customer_end(&self, conv: &Arc<Conversation>, reply: &Outbox, a: &Inbound) -> Result<(), HubError> {
        let _span = conv.span.enter();
        let mut engine = self.engine.lock();
        self.post(conv, &Sender::Customer, reply, a, |inner| if inner.closed { Err(closed_error()) } else { Ok(()) })?;
        self.close_locked(&mut engine, conv);
        Ok(())
    }

    /// A customer's survey answer, kept on the conversation.
    pub fn survey_response(&self, conv: &Arc<Conversation>, reply: &Outbox, a: &Inbound) -> Result<(), HubError> {
        let _span = conv.span.enter();
        let rating = a.value.get("rating").and_then(Value::as_u64).filter(|r| (1..=5).contains(r));
        if rating.is_none() {
            return Err(HubError::invalid("survey.response needs value.rating, a whole number from 1 to 5"));
        }
        if a.value.get("comment").is_some_and(|c| !c.is_string() && !c.is_null()) {
            return Err(HubError::invalid("survey.response comment must be text"));
        }
        let engine = self.engine.lock();
        self.post(conv, &Sender::Customer, reply, a, |inner| {
            if !inner.survey_requested {
                Err(HubError::invalid("no survey was requested in this conversation"))
            } else if inner.survey.is_some() {
                Err(HubError::invalid("the survey has already been answered"))
            } else {
                Ok(())
            }
        })?;
        conv.inner.lock().survey = Some(a.value.clone());
        self.persist(&engine, conv);
        Ok(())
    }
}

/// `outbox` becomes the customer's connection; an older one is closed (4001).
fn take_seat(inner: &mut ConvInner, outbox: &Outbox) {
    if let Some(old) = inner.customer.replace(outbox.clone())
        && old.id() != outbox.id()
    {
        old.close(outbox::Reason::ResumedElsewhere, "resumed on another connection");
    }
    inner.customer_left_ms = None;
}

/// One less under `addr` in a per-address count; an address at zero has no entry.
fn give_back(counts: &DashMap<std::net::IpAddr, u32>, addr: std::net::IpAddr) {
    if let dashmap::Entry::Occupied(mut n) = counts.entry(addr) {
        *n.get_mut() -= 1;
        if *n.get() == 0 {
            n.remove();
        }
    }
}
