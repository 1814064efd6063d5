//! Read-only views of the engine, for the hub (work items, positions) and the admin API:
//! a conversation, the members, the queues with who waits, and the invariants the
//! property tests check after every step.

use serde::Serialize;

use super::ConvId;
use super::engine::{ConvStatus, Engine, MemberKind, Presence, RoutingRecord};
use crate::config::{Assignment, Channel};
use crate::context::Context;

/// A read-only view of a conversation.
#[derive(Clone, Debug, Serialize)]
pub struct ConvView {
    pub workstream: String,
    pub channel: Channel,
    pub status: &'static str,
    pub queue: String,
    pub holder: Option<String>,
    pub position: Option<usize>,
    pub waiting_since_ms: Option<u64>,
    pub context: Context,
    pub routing: Vec<RoutingRecord>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MemberView {
    pub name: String,
    #[serde(flatten)]
    pub kind: MemberKind,
    pub online: bool,
    pub presence: Option<Presence>,
    pub disabled: bool,
    pub load: u32,
    pub capacity: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct WaitingView {
    pub conversation: String,
    pub position: usize,
    pub waiting_since_ms: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct QueueView {
    pub name: String,
    pub assignment: Assignment,
    pub waiting: Vec<WaitingView>,
    pub members: Vec<MemberView>,
}

fn state_name(s: ConvStatus) -> &'static str {
    match s {
        ConvStatus::Waiting => "waiting",
        ConvStatus::Active => "active",
        ConvStatus::Closed => "closed",
    }
}

impl Engine {
    pub fn status(&self, conv: &str) -> Option<ConvStatus> {
        self.convs.get(conv).map(|c| c.status)
    }

    /// The member holding an active conversation.
    pub fn holder(&self, conv: &str) -> Option<&str> {
        let c = self.convs.get(conv)?;
        c.holder.map(|h| self.members[h].name.as_str())
    }

    pub fn context(&self, conv: &str) -> Option<&Context> {
        self.convs.get(conv).map(|c| &c.context)
    }

    pub fn channel(&self, conv: &str) -> Option<Channel> {
        self.convs.get(conv).map(|c| c.channel)
    }

    pub fn workstream_of(&self, conv: &str) -> Option<&str> {
        self.convs.get(conv).map(|c| self.workstreams[c.workstream].name.as_str())
    }

    pub fn queue_of(&self, conv: &str) -> Option<&str> {
        self.convs.get(conv).map(|c| self.queues[c.queue].name.as_str())
    }

    pub fn member_kind(&self, member: &str) -> Option<MemberKind> {
        self.member_ix.get(member).map(|&m| self.members[m].kind)
    }

    /// `waiting`, `active` or `closed`.
    pub fn conversation_state(&self, conv: &str) -> Option<&'static str> {
        self.convs.get(conv).map(|c| state_name(c.status))
    }

    /// Since when the conversation has been waiting in its current queue (still set just
    /// after an assignment, for the waiting-time metric).
    pub fn waiting_since_ms(&self, conv: &str) -> Option<u64> {
        self.convs.get(conv).map(|c| c.waiting_since_ms)
    }

    /// Every routing decision about the conversation, oldest first.
    pub fn history(&self, conv: &str) -> &[RoutingRecord] {
        self.convs.get(conv).map_or(&[], |c| &c.history)
    }

    /// Every conversation the engine knows, open or recently closed, by id.
    pub fn conversation_ids(&self) -> Vec<ConvId> {
        let mut ids: Vec<ConvId> = self.convs.keys().cloned().collect();
        ids.sort_unstable();
        ids
    }

    /// Open and closed conversations counted by (state, workstream, queue).
    pub fn counts(&self) -> Vec<((&'static str, &str, &str), u64)> {
        let mut counts: std::collections::BTreeMap<(&'static str, &str, &str), u64> = Default::default();
        for c in self.convs.values() {
            *counts
                .entry((
                    state_name(c.status),
                    self.workstreams[c.workstream].name.as_str(),
                    self.queues[c.queue].name.as_str(),
                ))
                .or_default() += 1;
        }
        counts.into_iter().collect()
    }

    pub fn is_disabled(&self, member: &str) -> bool {
        self.member_ix.get(member).is_some_and(|&m| self.members[m].disabled)
    }

    /// Every active conversation `member` holds.
    pub fn held_by(&self, member: &str) -> Vec<ConvId> {
        let Some(&m) = self.member_ix.get(member) else { return Vec::new() };
        let mut held: Vec<(i64, ConvId)> =
            self.convs.iter().filter(|(_, c)| c.holder == Some(m)).map(|(id, c)| (c.stamp, id.clone())).collect();
        held.sort_unstable_by_key(|(s, _)| *s);
        held.into_iter().map(|(_, id)| id).collect()
    }

    /// What a holder's `conversation.assigned` says of the routing: the queue, the channel
    /// and the context, borrowed (built for every assignment, with the engine locked).
    pub fn assignment(&self, conv: &str) -> Option<(&str, Channel, &Context)> {
        let c = self.convs.get(conv)?;
        Some((&self.queues[c.queue].name, c.channel, &c.context))
    }

    /// A waiting conversation's queue and its place there now (1 is next), counted when
    /// asked: what the customer was last told may be a moment older.
    pub fn position(&self, conv: &str) -> Option<(&str, usize)> {
        let c = self.convs.get(conv).filter(|c| c.status == ConvStatus::Waiting)?;
        let queue = &self.queues[c.queue];
        Some((&queue.name, queue.waiting.range(..c.stamp).count() + 1))
    }

    pub fn conversation(&self, conv: &str) -> Option<ConvView> {
        let c = self.convs.get(conv)?;
        Some(ConvView {
            workstream: self.workstreams[c.workstream].name.clone(),
            channel: c.channel,
            status: state_name(c.status),
            queue: self.queues[c.queue].name.clone(),
            holder: c.holder.map(|h| self.members[h].name.clone()),
            position: self.position(conv).map(|(_, p)| p),
            waiting_since_ms: (c.status == ConvStatus::Waiting).then_some(c.waiting_since_ms),
            context: c.context.clone(),
            routing: c.history.clone(),
        })
    }

    fn member_view(&self, m: usize) -> MemberView {
        let ms = &self.members[m];
        MemberView {
            name: ms.name.clone(),
            kind: ms.kind,
            online: ms.online,
            presence: (ms.kind == MemberKind::Agent).then_some(ms.presence),
            disabled: ms.disabled,
            load: ms.load,
            capacity: ms.capacity,
        }
    }

    pub fn members_view(&self) -> Vec<MemberView> {
        (0..self.members.len()).map(|m| self.member_view(m)).collect()
    }

    pub fn queues_view(&self) -> Vec<QueueView> {
        self.queues
            .iter()
            .map(|q| QueueView {
                name: q.name.clone(),
                assignment: q.assignment,
                waiting: q
                    .waiting
                    .values()
                    .enumerate()
                    .map(|(i, id)| WaitingView {
                        conversation: id.to_string(),
                        position: i + 1,
                        waiting_since_ms: self.convs.get(id).map_or(0, |c| c.waiting_since_ms),
                    })
                    .collect(),
                members: q.members.iter().map(|&m| self.member_view(m)).collect(),
            })
            .collect()
    }

    /// Checks the engine's invariants; the property tests call it after every step.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut load = vec![0u32; self.members.len()];
        for (id, c) in &self.convs {
            match c.status {
                ConvStatus::Active => {
                    let h = c.holder.ok_or(format!("{id}: active without a holder"))?;
                    load[h] += 1;
                    if matches!(self.members[h].kind, MemberKind::Bot { .. }) && !c.handled_bots.contains(&h) {
                        return Err(format!("{id}: bot holder not recorded as having handled it"));
                    }
                }
                ConvStatus::Waiting => {
                    if self.queues[c.queue].waiting.get(&c.stamp) != Some(id) {
                        return Err(format!("{id}: waiting but not in its queue"));
                    }
                }
                ConvStatus::Closed => {}
            }
        }
        for (m, ms) in self.members.iter().enumerate() {
            if ms.load != load[m] {
                return Err(format!("{}: load {} but holds {}", ms.name, ms.load, load[m]));
            }
            if ms.load > ms.capacity {
                return Err(format!("{}: over capacity ({} > {})", ms.name, ms.load, ms.capacity));
            }
        }
        for q in &self.queues {
            for (i, (&stamp, id)) in q.waiting.iter().enumerate() {
                let c = self.convs.get(id).ok_or(format!("{}: unknown waiting {id}", q.name))?;
                if c.status != ConvStatus::Waiting || c.stamp != stamp {
                    return Err(format!("{}: {id} listed as waiting but is not", q.name));
                }
                // Reported positions are right up to the first place changed since the
                // last flush.
                if q.dirty_from.is_none_or(|d| stamp < d) && c.position != i + 1 {
                    return Err(format!("{}: {id} has position {} but is number {}", q.name, c.position, i + 1));
                }
                if let Some(&m) = q.members.iter().find(|&&m| self.eligible(m, c)) {
                    return Err(format!("{}: {id} waits while {} could take it", q.name, self.members[m].name));
                }
            }
        }
        Ok(())
    }
}
