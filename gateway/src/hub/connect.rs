//! Bots and agents connecting and disconnecting: a returning member gets its
//! conversations again (work items), a departed one keeps them for a grace period.

use std::sync::Arc;

use super::*;
use crate::routing::Engine;

impl Hub {
    /// A bot or agent connects: its earlier connection (if any) is replaced, the
    /// conversations it still holds are assigned to it again with their transcript, and it
    /// becomes eligible for new work.
    pub fn member_connected(&self, member: &Arc<str>, outbox: &Outbox, audio: switchboard_codecs::Format) {
        let conn = MemberConn { outbox: outbox.clone(), audio };
        if let Some(old) = self.members.insert(member.clone(), conn)
            && old.outbox.id() != outbox.id()
        {
            old.outbox.close(outbox::Reason::Replaced, "replaced by a newer connection");
        }
        let mut engine = self.engine.lock();
        // Under the engine lock only what is cheap: each held conversation gets its work
        // item's head; the transcripts are spliced in below, once routing can go on (a bot
        // holding a thousand conversations would otherwise stall all routing meanwhile).
        let mut resumed = Vec::new();
        for conv_id in engine.held_by(member) {
            if let Some(conv) = self.conversation(&conv_id) {
                let mut inner = conv.inner.lock();
                if let Some(h) = inner.holder.as_mut() {
                    h.outbox = Some(outbox.clone());
                    h.gone_since_ms = None;
                }
                if let Some(call) = &conv.call {
                    call.set_holder_outbox(member, Some(outbox.clone()), Some(audio));
                }
                let head = self.assigned_head(&engine, &conv, &inner, true);
                inner.set_work(head, self.server.transcript_page_bytes);
                drop(inner);
                resumed.push(conv);
            }
        }
        let fx = engine.set_online(member, true, self.clock.now_ms()).unwrap_or_default();
        tracing::info!(member = %member, "member connected");
        self.apply(&mut engine, fx);
        drop(engine);
        self.send_work(outbox, resumed);
    }

    /// Sends a returning member the work items of the conversations it holds, a step at a
    /// time as its connection drains. Each work item carries its transcript, so a bot that
    /// holds 100,000 conversations (every one of them after a restart) would otherwise have
    /// them all built and queued at once: close to a gigabyte of frames in its outbox, which
    /// the allocator keeps after they are written. A conversation with a live activity
    /// meanwhile sends its work item then (a flush always sends it first), so what each
    /// conversation's holder gets, and in what order, is unchanged.
    fn send_work(&self, outbox: &Outbox, resumed: Vec<Arc<Conversation>>) {
        const STEP: usize = 256;
        let runtime = tokio::runtime::Handle::try_current();
        if resumed.len() <= STEP || runtime.is_err() {
            for conv in resumed {
                conv.inner.lock().flush();
            }
            return;
        }
        let outbox = outbox.clone();
        self.tasks.spawn(async move {
            for step in resumed.chunks(STEP) {
                while outbox.queued() > STEP && !outbox.is_closed() {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                for conv in step {
                    conv.inner.lock().flush();
                }
            }
        });
    }

    /// A bot or agent's connection ended. Its conversations stay with it for a grace period
    /// (it may come back: see the sweeper); it gets no new work meanwhile.
    pub fn member_disconnected(&self, member: &Arc<str>, outbox: &Outbox) {
        let removed = self.members.remove_if(member, |_, c| c.outbox.id() == outbox.id()).is_some();
        if !removed {
            return; // A newer connection has taken over.
        }
        let now = self.clock.now_ms();
        let mut engine = self.engine.lock();
        let mut calls = Vec::new();
        for conv_id in engine.held_by(member) {
            if let Some(conv) = self.conversation(&conv_id) {
                if let Some(h) = conv.inner.lock().holder.as_mut() {
                    h.outbox = None;
                    h.gone_since_ms = Some(now);
                }
                if let Some(call) = &conv.call {
                    call.set_holder_outbox(member, None, None);
                    calls.push(conv);
                }
            }
        }
        // A caller cannot wait out a grace period in silence: a call whose holder is gone
        // is re-routed at once (a bot's to people, never back to that bot).
        if !self.is_shutting_down() {
            for conv in calls {
                self.holder_lost(&mut engine, &conv, member, now);
            }
        }
        let fx = engine.set_online(member, false, now).unwrap_or_default();
        tracing::info!(member = %member, "member disconnected");
        self.apply(&mut engine, fx);
    }

    /// The `conversation.assigned` event a holder gets, up to its transcript (spliced in
    /// when it is sent, see [`ConvInner::give_work`]): the context, the bot's summary, the
    /// media of a call, and then the transcript so far (with the bot's part of it, for an
    /// agent).
    pub(super) fn assigned_head(
        &self,
        engine: &Engine,
        conv: &Conversation,
        inner: &ConvInner,
        resumed: bool,
    ) -> String {
        let routing = engine.assignment(&conv.id);
        let media = conv.call.as_ref().map(|call| {
            let fmt =
                inner.holder.as_ref().and_then(|h| self.members.get(&h.member).map(|m| m.audio)).unwrap_or_default();
            AssignedMedia { stream: call.stream, encoding: fmt.encoding().as_str(), sample_rate: fmt.sample_rate() }
        });
        let value = AssignedValue {
            channel: routing.map(|r| r.1),
            context: routing.map(|r| r.2),
            customer: AssignedCustomer { id: &conv.customer.id, name: &conv.customer.name },
            media,
            queue: routing.map(|r| r.0),
            resumed: resumed.then_some(true),
            summary: inner.summary.as_deref(),
            workstream: &conv.workstream,
        };
        // The transcript's frames are already JSON: they are spliced in rather than parsed.
        let head = serde_json::to_string(&value).unwrap_or_else(|_| "{}".into());
        let id = serde_json::to_string(&*conv.id).unwrap_or_default();
        let mut v = String::with_capacity(96 + id.len() + head.len());
        v.push_str("{\"type\":\"event\",\"name\":\"conversation.assigned\",\"conversation\":{\"id\":");
        v.push_str(&id);
        v.push_str("},\"value\":");
        v.push_str(&head[..head.len() - 1]);
        v.push_str(if head.len() > 2 { ",\"transcript\":[" } else { "\"transcript\":[" });
        v
    }
}

/// The `value` of a holder's `conversation.assigned` before its transcript, serialised
/// straight from the engine and the conversation (built for every assignment, with the
/// engine locked). Keys in alphabetical order, as they always were.
#[derive(serde::Serialize)]
struct AssignedValue<'a> {
    channel: Option<crate::config::Channel>,
    context: Option<&'a crate::context::Context>,
    customer: AssignedCustomer<'a>,
    media: Option<AssignedMedia>,
    queue: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resumed: Option<bool>,
    summary: Option<&'a str>,
    workstream: &'a str,
}

#[derive(serde::Serialize)]
struct AssignedCustomer<'a> {
    id: &'a str,
    name: &'a str,
}

#[derive(serde::Serialize)]
struct AssignedMedia {
    stream: u32,
    encoding: &'static str,
    #[serde(rename = "sampleRate")]
    sample_rate: u32,
}
