//! Carrying out the routing engine's effects: releases, assignments (the notice and the
//! work item), queue positions; then saving every conversation they touched.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::*;
use crate::protocol::{self, Party};
use crate::routing::{ConvId, Effect, Engine, MemberKind, Trigger};

impl Hub {
    /// Carries out the engine's effects, in order, then saves every conversation they
    /// touched, and wakes the positions' task if a queue moved. Called with the engine
    /// locked, after every event.
    pub(super) fn apply(&self, engine: &mut Engine, fx: Vec<Effect>) {
        let mut touched: BTreeSet<ConvId> = BTreeSet::new();
        for e in fx {
            match e {
                Effect::Routed { conv, rule, queue, trigger } => {
                    if trigger == Trigger::Escalation {
                        crate::metrics::escalated(rule.as_deref());
                    }
                    tracing::debug!(conversation.id = %conv, ?trigger, rule = rule.as_deref().unwrap_or("(fallback)"), queue, "routed");
                    touched.insert(conv);
                }
                Effect::Released { conv, member } => {
                    if let Some(c) = self.conversation(&conv) {
                        let mut inner = c.inner.lock();
                        inner.release_holder(&member);
                        if let Some(call) = &c.call {
                            call.set_route(None);
                        }
                    }
                    touched.insert(conv);
                }
                Effect::Assigned { conv, member, kind, queue } => {
                    let Some(c) = self.conversation(&conv) else { continue };
                    self.assignment_metrics(engine, &conv, &queue, kind);
                    let party = self.member_party(&member);
                    let role = match kind {
                        MemberKind::Bot { .. } => "bot",
                        MemberKind::Agent => "agent",
                    };
                    let mut inner = c.inner.lock();
                    // The member's connection, and its name as that connection holds it: the
                    // route shares the allocation, so a call's audio from its holder is
                    // recognised by the pointer (`Call::holder_audio`), and the activity's
                    // author, the route and the holder share one name.
                    let conn = self.members.get(member.as_str()).map(|e| (e.key().clone(), e.value().clone()));
                    let name: Arc<str> = conn.as_ref().map_or_else(|| Arc::from(member.as_str()), |(k, _)| k.clone());
                    let conn = conn.map(|(_, c)| c);
                    // The notice of its arrival is for everyone else: the new holder gets
                    // its own `conversation.assigned`, the work item, below (one per
                    // assignment). Authored by it for delivery, so it is not sent to it.
                    let notice = Arrival { name: &party.name, queue: &queue, role };
                    let v = serde_json::value::to_raw_value(&notice).ok();
                    let value = v.as_deref().map_or(protocol::ValueRef::NULL, protocol::ValueRef::Raw);
                    inner.append(
                        &c,
                        &self.clock,
                        self.store.as_ref(),
                        NewActivity {
                            from: &Party::system(),
                            author: Author::Member(name.clone()),
                            body: Body::event_ref("conversation.assigned", value),
                            client_key: None,
                            ack: None,
                        },
                    );
                    let outbox = conn.as_ref().map(|c| c.outbox.clone());
                    if let Some(call) = &c.call {
                        let fmt = conn.as_ref().map(|c| c.audio).unwrap_or_default();
                        let route = super::call::Route::new(name.clone(), outbox.clone(), fmt, call.caller);
                        call.set_route(Some(route));
                    }
                    if matches!(kind, MemberKind::Agent)
                        && let Some(bot) = inner.handoff_from.take()
                    {
                        self.handoff_status(&bot, &conv, "completed", &format!("{} took the conversation", party.name));
                    }
                    // Out of the queue: a position not told yet is no longer true.
                    inner.position_due = None;
                    let gone = outbox.is_none().then(|| self.clock.now_ms());
                    // Its work item carries everything committed; a cursor left from an
                    // earlier release would repeat part of it.
                    inner.departing.retain(|d| *d.member != *member);
                    inner.holder =
                        Some(Holder { member: name, party, outbox: outbox.clone(), gone_since_ms: gone, work: None });
                    if outbox.is_some() {
                        let head = self.assigned_head(engine, &c, &inner, false);
                        inner.give_work(head, self.server.transcript_page_bytes);
                    } else {
                        inner.holder_sent = inner.committed;
                    }
                    tracing::debug!(conversation.id = %conv, member, queue, "assigned");
                    touched.insert(conv);
                }
            }
        }
        for id in touched {
            if let Some(c) = self.conversation(&id) {
                self.persist(engine, &c);
            }
        }
        // A queue moved: its positions are worked out and told by the positions' task.
        if engine.positions_pending() {
            self.positions.wake();
        }
    }

    /// The waiting time of an assignment, and for a conversation's first human agent the
    /// time since it started.
    fn assignment_metrics(&self, engine: &Engine, conv: &str, queue: &str, kind: MemberKind) {
        let now = self.clock.now_ms();
        if let Some(since) = engine.waiting_since_ms(conv) {
            crate::metrics::waited(queue, now.saturating_sub(since));
        }
        if kind == MemberKind::Agent {
            let history = engine.history(conv);
            let earlier = &history[..history.len().saturating_sub(1)];
            let first_agent = !earlier
                .iter()
                .any(|r| r.member.as_deref().is_some_and(|m| engine.member_kind(m) == Some(MemberKind::Agent)));
            if first_agent && let Some(start) = history.first() {
                crate::metrics::ASSIGNMENT_LATENCY.observe(now.saturating_sub(start.at_ms) as f64 / 1000.0);
            }
        }
    }
}

/// The `value` of the `conversation.assigned` notice the other participants see, serialised
/// from borrowed names (with the engine locked) rather than built as a JSON tree, whose map
/// was a tenth of a handoff's time under the lock. Keys in alphabetical order, as they
/// always were.
#[derive(serde::Serialize)]
struct Arrival<'a> {
    name: &'a str,
    queue: &'a str,
    role: &'a str,
}
