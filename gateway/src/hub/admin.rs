//! What the admin API reads and commands, in the hub's terms: conversation listings and
//! details (with the transcript), "Disconnect bot" and "connect", an agent's forced
//! presence and sign-out, and the routing dry run. The HTTP side (`server::admin`) parses,
//! checks the admin token and turns these answers and [`HubError`]s into responses.

use std::sync::Arc;

use serde_json::Value;

use super::error::{HubError, Thing};
use super::*;
use crate::config::RouteDecision;
use crate::context::{Context, Value as CtxValue};
use crate::routing::{ConvView, MemberKind, MemberView, Presence};

/// Which conversations a listing wants (every field optional: all of them).
#[derive(Debug, Default, Clone)]
pub struct ConvFilter {
    pub state: Option<String>,
    pub queue: Option<String>,
    pub holder: Option<String>,
    pub workstream: Option<String>,
    pub channel: Option<String>,
    /// Only ids after this one (the paging cursor: listings are in id order).
    pub after: Option<String>,
    pub limit: usize,
}

/// One page of a listing: conversations in id order, and the cursor of the next page.
#[derive(Debug)]
pub struct ConvPage {
    pub conversations: Vec<(ConvId, ConvView)>,
    pub next: Option<String>,
}

/// One conversation with its committed transcript (the activities as their frames).
#[derive(Debug)]
pub struct ConvDetail {
    pub id: ConvId,
    pub view: ConvView,
    pub customer: Party,
    pub summary: Option<String>,
    pub transcript: Vec<crate::protocol::Frame>,
}

impl Hub {
    /// A page of the conversations in memory (open ones and those closed a short while
    /// ago) that pass `f`.
    pub fn admin_conversations(&self, f: &ConvFilter) -> ConvPage {
        let engine = self.engine.lock();
        let mut conversations = Vec::new();
        let mut next = None;
        // The filters read the engine's fields in place; only the page's conversations are
        // copied out, so a listing of a busy gateway holds routing up for little.
        let status = |id: &str| engine.conversation_state(id);
        for id in engine.conversation_ids() {
            if f.after.as_deref().is_some_and(|a| *id <= *a) {
                continue;
            }
            let pass = f.state.as_deref().is_none_or(|s| status(&id) == Some(s))
                && f.queue.as_deref().is_none_or(|q| engine.queue_of(&id) == Some(q))
                && f.holder.as_deref().is_none_or(|h| engine.holder(&id) == Some(h))
                && f.workstream.as_deref().is_none_or(|w| engine.workstream_of(&id) == Some(w))
                && f.channel.as_deref().is_none_or(|c| engine.channel(&id).is_some_and(|ch| ch.to_string() == c));
            if !pass {
                continue;
            }
            if conversations.len() == f.limit {
                next = conversations.last().map(|(id, _): &(ConvId, ConvView)| id.to_string());
                break;
            }
            if let Some(v) = engine.conversation(&id) {
                conversations.push((id, v));
            }
        }
        ConvPage { conversations, next }
    }

    /// One conversation, with what its transcript holds so far (committed activities).
    pub fn admin_conversation(&self, id: &str) -> Result<ConvDetail, HubError> {
        let unknown = || HubError::Unknown(Thing::Conversation, id.to_owned());
        let conv = self.conversation(id).ok_or_else(unknown)?;
        let view = self.engine.lock().conversation(id).ok_or_else(unknown)?;
        let inner = conv.inner.lock();
        let committed = (inner.committed as usize).min(inner.transcript.len());
        let transcript = inner.transcript[..committed].iter().map(|e| e.frame.clone()).collect();
        Ok(ConvDetail {
            id: conv.id.clone(),
            view,
            customer: conv.customer.clone(),
            summary: inner.summary.clone(),
            transcript,
        })
    }

    /// Every configured bot or agent with its connection, presence and load.
    pub fn admin_members(&self, bots: bool) -> Vec<MemberView> {
        self.engine
            .lock()
            .members_view()
            .into_iter()
            .filter(|m| matches!(m.kind, MemberKind::Bot { .. }) == bots)
            .collect()
    }

    fn member_of_kind(&self, engine: &crate::routing::Engine, name: &str, bot: bool) -> Result<(), HubError> {
        match engine.member_kind(name) {
            Some(MemberKind::Bot { .. }) if bot => Ok(()),
            Some(MemberKind::Agent) if !bot => Ok(()),
            _ => Err(HubError::Unknown(if bot { Thing::Bot } else { Thing::Agent }, name.to_owned())),
        }
    }

    /// "Disconnect bot": it gets no new work and cannot sign in again until
    /// [`Hub::connect_bot`]; its connection closes and every conversation it holds goes to
    /// people by the rules (never back to it), each with a notice in the transcript.
    pub fn disconnect_bot(&self, name: &str) -> Result<(), HubError> {
        let now = self.clock.now_ms();
        let mut engine = self.engine.lock();
        self.member_of_kind(&engine, name, true)?;
        let fx = engine.set_disabled(name, true)?;
        self.apply(&mut engine, fx);
        for conv_id in engine.held_by(name) {
            let Some(conv) = self.conversation(&conv_id) else { continue };
            self.notice(
                &conv,
                &format!("The virtual assistant {name} was disconnected; handing you over to an agent."),
            );
            match engine.failover(&conv_id, now) {
                Ok(fx) => self.apply(&mut engine, fx),
                Err(e) => tracing::error!(conversation.id = %conv_id, "failover: {e}"),
            }
        }
        drop(engine);
        if let Some(conn) = self.members.get(name).map(|c| c.value().outbox.clone()) {
            conn.close(outbox::Reason::Policy, "this bot was disconnected by an administrator");
        }
        tracing::warn!(bot = name, "bot disconnected by an administrator");
        Ok(())
    }

    /// Connects a bot an administrator disconnected: it may sign in and get work again.
    pub fn connect_bot(&self, name: &str) -> Result<(), HubError> {
        let mut engine = self.engine.lock();
        self.member_of_kind(&engine, name, true)?;
        let fx = engine.set_disabled(name, false)?;
        self.apply(&mut engine, fx);
        drop(engine);
        self.bot_enabled.notify_waiters();
        tracing::info!(bot = name, "bot connected by an administrator");
        Ok(())
    }

    /// Sets an agent's presence as if it had sent `presence.set`.
    pub fn force_presence(&self, agent: &str, presence: &str) -> Result<(), HubError> {
        let p = Presence::parse(presence)
            .ok_or_else(|| HubError::invalid("presence must be available, busy, away or offline"))?;
        self.member_of_kind(&self.engine.lock(), agent, false)?;
        self.presence(agent, p)?;
        tracing::info!(agent, presence, "presence set by an administrator");
        Ok(())
    }

    /// Signs an agent out: its connection closes, it goes offline, and the conversations it
    /// held go back to the front of their queues at once (no grace period).
    pub fn sign_out(&self, agent: &str) -> Result<(), HubError> {
        let now = self.clock.now_ms();
        let mut engine = self.engine.lock();
        self.member_of_kind(&engine, agent, false)?;
        // Its connection's own teardown then finds nothing to do.
        let conn = self.members.remove(agent).map(|(_, c)| c.outbox);
        // Offline first, so the re-queued conversations cannot come straight back to it.
        let fx = engine.set_online(agent, false, now)?;
        self.apply(&mut engine, fx);
        for conv_id in engine.held_by(agent) {
            let Some(conv) = self.conversation(&conv_id) else { continue };
            self.notice(&conv, "Your agent was signed out; you are back at the front of the queue.");
            match engine.requeue_front(&conv_id, now) {
                Ok(fx) => self.apply(&mut engine, fx),
                Err(e) => tracing::error!(conversation.id = %conv_id, "requeue: {e}"),
            }
        }
        drop(engine);
        if let Some(o) = conn {
            o.close(outbox::Reason::Ended, "signed out by an administrator");
        }
        tracing::warn!(agent, "agent signed out by an administrator");
        Ok(())
    }

    /// The routing dry run (`switchboard route --json`): which rule matches `context` in
    /// `workstream` and which queue it gives. Context values are JSON, checked against the
    /// workstream's declarations.
    pub fn route_dry_run(&self, workstream: &str, context: &Value) -> Result<RouteDecision, HubError> {
        let cfg = self.cfg();
        let ws =
            cfg.workstream(workstream).ok_or_else(|| HubError::Unknown(Thing::Workstream, workstream.to_owned()))?;
        let mut ctx = Context::new();
        match context {
            Value::Null => {}
            Value::Object(o) => {
                for (k, v) in o {
                    let ty = ws.variable(k).ok_or_else(|| {
                        HubError::invalid(format!("workstream {workstream:?} declares no context variable {k:?}"))
                    })?;
                    match CtxValue::from_json(ty, v)
                        .map_err(|e| HubError::invalid(format!("context variable {k:?}: {e}")))?
                    {
                        Some(v) => ctx.insert(k.clone(), v),
                        None => None,
                    };
                }
            }
            _ => return Err(HubError::invalid("context must be an object of context variables")),
        }
        Ok(ws.route(&ctx))
    }

    /// Conversations by (state, workstream, queue), bots and agents connected, customers
    /// connected and calls in progress: what `/metrics` reads when it is scraped.
    pub fn gauges(&self) -> Gauges {
        let counts = self
            .engine
            .lock()
            .counts()
            .into_iter()
            .map(|((s, w, q), n)| ((s.to_owned(), w.to_owned(), q.to_owned()), n))
            .collect();
        let (mut bots, mut agents) = (0, 0);
        for m in self.members.iter() {
            if self.is_bot(m.key()) {
                bots += 1;
            } else {
                agents += 1;
            }
        }
        let convs: Vec<Arc<Conversation>> = self.convs.iter().map(|e| e.value().clone()).collect();
        let customers = convs.iter().filter(|c| c.call.is_none() && c.inner.lock().customer.is_some()).count() as u64;
        let calls = self.calls.len() as u64;
        Gauges { conversations: counts, bots, agents, customers, calls }
    }
}

/// What `/metrics` reads from the hub (see [`Hub::gauges`]).
#[derive(Debug)]
pub struct Gauges {
    pub conversations: Vec<((String, String, String), u64)>,
    pub bots: u64,
    pub agents: u64,
    pub customers: u64,
    /// Voice calls in progress (each a caller's connection).
    pub calls: u64,
}
