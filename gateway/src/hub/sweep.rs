//! The sweeper: once a second, the timed rules of failure handling.
//!
//! - A holder whose connection went away keeps the conversation for a grace period: a
//!   bot's (`bot_grace_secs`) then go to people by the rules, never back to that bot; an
//!   agent's (`agent_grace_secs`) are re-queued at the front of their queue.
//! - A bot that leaves a customer's message unanswered for `bot_reply_timeout_secs` loses
//!   the conversation to people.
//! - A customer who dropped and does not resume within `customer_resume_secs` has the
//!   conversation closed; so has any conversation idle for `idle_close_secs`.
//! - Closed conversations leave memory after `closed_retention_secs`.
//!
//! Each action leaves a `system` message in the transcript saying what happened and why.

use std::sync::Arc;
use std::time::Duration;

use super::{Conversation, Hub};
use crate::routing::ConvId;

enum Action {
    Close(String),
    /// The bot holder failed: with `true`, it stopped answering (a timeout); with `false`,
    /// its connection stayed gone.
    Failover(Arc<str>, String, bool),
    Requeue(Arc<str>, String),
    Forget,
}

impl Hub {
    /// Starts the once-a-second sweeper.
    pub fn spawn_sweeper(self: &Arc<Self>) {
        self.spawn_every(Duration::from_secs(1), tokio::time::MissedTickBehavior::Delay, None, |hub, _| {
            hub.sweep();
            true
        });
    }

    fn due(&self, c: &Conversation, now: u64) -> Option<Action> {
        let s = &self.server;
        let inner = c.inner.lock();
        if inner.closed {
            return inner
                .closed_at_ms
                .is_some_and(|t| now >= t + s.closed_retention_secs * 1000)
                .then_some(Action::Forget);
        }
        if let Some(h) = &inner.holder {
            let bot = self.is_bot(&h.member);
            if let Some(gone) = h.gone_since_ms {
                if bot && now >= gone + s.bot_grace_secs * 1000 {
                    let why =
                        format!("The virtual assistant {} disconnected; handing you over to an agent.", h.party.name);
                    return Some(Action::Failover(h.member.clone(), why, false));
                }
                if !bot && now >= gone + s.agent_grace_secs * 1000 {
                    let why =
                        format!("{} lost their connection; you are back at the front of the queue.", h.party.name);
                    return Some(Action::Requeue(h.member.clone(), why));
                }
            }
            if bot && inner.bot_deadline_ms.is_some_and(|d| now >= d) {
                let why =
                    format!("The virtual assistant {} did not answer; handing you over to an agent.", h.party.name);
                return Some(Action::Failover(h.member.clone(), why, true));
            }
        }
        if inner.customer.is_none() && inner.customer_left_ms.is_some_and(|t| now >= t + s.customer_resume_secs * 1000)
        {
            return Some(Action::Close(format!(
                "Closed: the customer did not come back within {} s.",
                s.customer_resume_secs
            )));
        }
        // A call in progress is never idle: its audio is the activity.
        let live_call = c.call.is_some() && inner.customer.is_some();
        if !live_call && now >= inner.last_activity_ms + s.idle_close_secs * 1000 {
            return Some(Action::Close(format!("Closed after {} s without activity.", s.idle_close_secs)));
        }
        None
    }

    /// One pass of the timed rules.
    pub fn sweep(&self) {
        let now = self.clock.now_ms();
        // Collect first: no map guard is held while conversations are locked and changed.
        let all: Vec<Arc<Conversation>> = self.convs.iter().map(|e| e.value().clone()).collect();
        let work: Vec<(Arc<Conversation>, Action)> =
            all.into_iter().filter_map(|c| self.due(&c, now).map(|a| (c, a))).collect();
        if work.is_empty() {
            return;
        }
        let mut engine = self.engine.lock();
        let engine: &mut crate::routing::Engine = &mut engine;
        for (conv, action) in work {
            match action {
                Action::Forget => {
                    let id: ConvId = conv.id.clone();
                    engine.forget(&id);
                    self.convs.remove(&id);
                }
                Action::Close(why) => {
                    tracing::info!(conversation.id = %conv.id, "{why}");
                    self.end_notice(&conv, &why);
                    self.close_locked(engine, &conv);
                }
                Action::Failover(member, why, _) | Action::Requeue(member, why)
                    if engine.holder(&conv.id) != Some(&*member) =>
                {
                    let _ = why; // Someone else holds it by now.
                }
                Action::Failover(_, why, timeout) => {
                    tracing::warn!(conversation.id = %conv.id, "{why}");
                    let counter = if timeout { &crate::metrics::BOT_TIMEOUTS } else { &crate::metrics::BOT_FAILURES };
                    counter.inc();
                    self.notice(&conv, &why);
                    match engine.failover(&conv.id, now) {
                        Ok(fx) => self.apply(engine, fx),
                        Err(e) => tracing::error!(conversation.id = %conv.id, "failover: {e}"),
                    }
                }
                Action::Requeue(_, why) => {
                    tracing::warn!(conversation.id = %conv.id, "{why}");
                    self.notice(&conv, &why);
                    match engine.requeue_front(&conv.id, now) {
                        Ok(fx) => self.apply(engine, fx),
                        Err(e) => tracing::error!(conversation.id = %conv.id, "requeue: {e}"),
                    }
                }
            }
        }
    }
}
