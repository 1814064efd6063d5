//! The engine: queues, members and conversations, and the assignment pump.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Bound::{Excluded, Unbounded};

use serde::Serialize;

use super::ConvId;
use crate::config::{Assignment, Channel, Config, RouteDecision, Workstream};
use crate::context::{Context, Value};

/// Whether a member is a bot user or a human agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum MemberKind {
    Bot { voice: bool },
    Agent,
}

/// An agent's presence. Bots have none: a connected bot is available.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Available,
    Busy,
    Away,
    Offline,
}

impl Presence {
    pub fn parse(s: &str) -> Option<Presence> {
        match s {
            "available" => Some(Presence::Available),
            "busy" => Some(Presence::Busy),
            "away" => Some(Presence::Away),
            "offline" => Some(Presence::Offline),
            _ => None,
        }
    }
}

/// What the outside world must do after an engine operation, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// The rules ran (or a transfer named a queue): the conversation now waits in `queue`.
    Routed { conv: ConvId, rule: Option<String>, queue: String, trigger: Trigger },
    /// `member` no longer holds the conversation (escalation, transfer or close).
    Released { conv: ConvId, member: String },
    /// `member` now holds the conversation.
    Assigned { conv: ConvId, member: String, kind: MemberKind, queue: String },
}

/// A waiting conversation's new place in its queue (1 is next), as
/// [`Engine::flush_positions`] reports it: no event does.
#[derive(Clone, Debug, PartialEq)]
pub struct Moved {
    pub conv: ConvId,
    pub queue: String,
    pub position: usize,
}

/// Why routing ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Start,
    Escalation,
    Transfer,
    Requeue,
    /// The holder bot failed (disconnected or stopped answering).
    Failover,
    /// A new configuration removed its queue or its holder.
    Reconfigure,
}

/// One routing decision, for the admin API's `routing` history.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct RoutingRecord {
    pub at_ms: u64,
    pub trigger: Trigger,
    /// The rule that matched; `None` for the fallback queue or a transfer to a named queue.
    pub rule: Option<String>,
    pub queue: String,
    pub member: Option<String>,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("unknown workstream {0:?}")]
    UnknownWorkstream(String),
    #[error("unknown queue {0:?}")]
    UnknownQueue(String),
    #[error("unknown conversation {0:?}")]
    UnknownConversation(String),
    #[error("conversation {0:?} already exists")]
    Duplicate(String),
    #[error("conversation {0:?} is not active")]
    NotActive(String),
    #[error("unknown member {0:?}")]
    UnknownMember(String),
    #[error(
        "queue {0:?}: none of its members can ever take this conversation (a bot never gets a conversation it has handled, and only voice-enabled bots get calls)"
    )]
    NoMemberCanTake(String),
}

/// Where a (re-)routed conversation goes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Place {
    /// Run the workstream's rules; join the back of the queue they give.
    ByRules,
    /// The back of a named queue.
    Back(usize),
    /// The front of a queue: the customer has already waited once.
    Front(usize),
    /// Run the rules, but if they give a queue with no human agents, use the workstream's
    /// fallback queue: a failed bot's customers go to people.
    Humans,
}

/// A conversation's routing state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvStatus {
    Waiting,
    Active,
    Closed,
}

pub(super) struct MemberState {
    pub(super) name: String,
    pub(super) kind: MemberKind,
    pub(super) capacity: u32,
    pub(super) load: u32,
    pub(super) online: bool,
    pub(super) presence: Presence,
    /// Set by "Disconnect bot": gets no work until connected again by an admin.
    pub(super) disabled: bool,
    /// Logical time of the last assignment (0: never).
    pub(super) last_assigned: u64,
    pub(super) queues: Vec<usize>,
}

impl MemberState {
    pub(super) fn free(&self) -> u32 {
        self.capacity.saturating_sub(self.load)
    }

    pub(super) fn can_work(&self) -> bool {
        self.online
            && !self.disabled
            && self.free() > 0
            && match self.kind {
                MemberKind::Bot { .. } => true,
                MemberKind::Agent => matches!(self.presence, Presence::Available | Presence::Busy),
            }
    }
}

pub(super) struct QueueState {
    pub(super) name: String,
    pub(super) assignment: Assignment,
    pub(super) members: Vec<usize>,
    /// Waiting conversations by stamp: oldest (smallest) first.
    pub(super) waiting: BTreeMap<i64, ConvId>,
    /// Index into `members` of the last round-robin assignment.
    pub(super) rr_last: Option<usize>,
    /// The oldest stamp at which `waiting` changed since positions were last reported:
    /// the waiting conversations before it kept their places, so only those from it on
    /// are looked at (a conversation joining the back of a long queue costs one).
    pub(super) dirty_from: Option<i64>,
}

impl QueueState {
    pub(super) fn new(name: String, assignment: Assignment, members: Vec<usize>) -> QueueState {
        QueueState { name, assignment, members, waiting: BTreeMap::new(), rr_last: None, dirty_from: None }
    }

    /// Puts a conversation in the queue at `stamp`.
    pub(super) fn enqueue(&mut self, stamp: i64, conv: ConvId) {
        self.waiting.insert(stamp, conv);
        self.touch(stamp);
    }

    /// Takes the conversation at `stamp` out of the queue.
    pub(super) fn dequeue(&mut self, stamp: i64) {
        if self.waiting.remove(&stamp).is_some() {
            self.touch(stamp);
        }
    }

    fn touch(&mut self, stamp: i64) {
        self.dirty_from = Some(self.dirty_from.map_or(stamp, |d| d.min(stamp)));
    }
}

pub(super) struct ConvState {
    pub(super) workstream: usize,
    pub(super) channel: Channel,
    pub(super) context: Context,
    pub(super) status: ConvStatus,
    pub(super) queue: usize,
    pub(super) holder: Option<usize>,
    pub(super) handled_bots: Vec<usize>,
    /// Key in the queue's `waiting` map while waiting.
    pub(super) stamp: i64,
    pub(super) position: usize,
    pub(super) waiting_since_ms: u64,
    pub(super) history: Vec<RoutingRecord>,
}

/// The routing and assignment state machine.
pub struct Engine {
    pub(super) workstreams: Vec<Workstream>,
    pub(super) queues: Vec<QueueState>,
    pub(super) queue_ix: HashMap<String, usize>,
    pub(super) members: Vec<MemberState>,
    pub(super) member_ix: HashMap<String, usize>,
    pub(super) convs: HashMap<ConvId, ConvState>,
    pub(super) tick: u64,
    pub(super) next_stamp: i64,
    pub(super) front_stamp: i64,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("queues", &self.queues.len())
            .field("members", &self.members.len())
            .field("conversations", &self.convs.len())
            .finish()
    }
}

impl Engine {
    pub fn new(cfg: &Config) -> Engine {
        let mut members = Vec::new();
        let mut member_ix = HashMap::new();
        for b in &cfg.bots {
            member_ix.insert(b.name.clone(), members.len());
            members.push(MemberState {
                name: b.name.clone(),
                kind: MemberKind::Bot { voice: b.voice },
                capacity: b.capacity,
                load: 0,
                online: false,
                presence: Presence::Available,
                disabled: false,
                last_assigned: 0,
                queues: Vec::new(),
            });
        }
        for a in &cfg.agents {
            member_ix.insert(a.id.clone(), members.len());
            members.push(MemberState {
                name: a.id.clone(),
                kind: MemberKind::Agent,
                capacity: a.capacity,
                load: 0,
                online: false,
                presence: Presence::Offline,
                disabled: false,
                last_assigned: 0,
                queues: Vec::new(),
            });
        }
        let mut queues = Vec::new();
        let mut queue_ix = HashMap::new();
        for q in &cfg.queues {
            let qi = queues.len();
            queue_ix.insert(q.name.clone(), qi);
            let ms: Vec<usize> = q.members.iter().filter_map(|m| member_ix.get(m).copied()).collect();
            for &m in &ms {
                members[m].queues.push(qi);
            }
            queues.push(QueueState::new(q.name.clone(), q.assignment, ms));
        }
        Engine {
            workstreams: cfg.workstreams.clone(),
            queues,
            queue_ix,
            members,
            member_ix,
            convs: HashMap::new(),
            tick: 0,
            next_stamp: 0,
            front_stamp: 0,
        }
    }

    /// Whether a queue changed since [`Engine::flush_positions`] last ran.
    pub fn positions_pending(&self) -> bool {
        self.queues.iter().any(|q| q.dirty_from.is_some())
    }

    /// The positions that changed since the last call, each conversation's once. No
    /// event works them out itself: each would walk its queue behind the
    /// place it changed, and a conversation taken from the front of a queue moves every
    /// one waiting there, so with thousands waiting each assignment was thousands of
    /// steps and effects with the lock held (`bench/backlog.py`, 4,000 waiting: 2.7–4.0 ms
    /// of the gateway's CPU per assignment, against 1.2–1.6 ms flushed once a tick). The
    /// hub flushes them ten times a second at most (`hub/positions.rs`), once for however
    /// many events came meanwhile.
    pub fn flush_positions(&mut self) -> Vec<Moved> {
        let mut moved = Vec::new();
        for queue in &mut self.queues {
            let Some(from) = queue.dirty_from.take() else { continue };
            // Counted from the back: what changed is, as a rule, near it (a conversation
            // joining a queue of thousands costs one step, not a walk over all of them).
            let before = queue.waiting.len() - queue.waiting.range(from..).count();
            for (i, conv) in queue.waiting.range(from..).map(|(_, c)| c).enumerate() {
                let position = before + i + 1;
                if let Some(c) = self.convs.get_mut(conv)
                    && c.position != position
                {
                    c.position = position;
                    moved.push(Moved { conv: conv.clone(), queue: queue.name.clone(), position });
                }
            }
        }
        moved
    }

    /// Runs a workstream's rules without touching any state (the `route` dry run).
    pub fn route(&self, workstream: &str, ctx: &Context) -> Result<RouteDecision, EngineError> {
        self.workstream(workstream).map(|(_, w)| w.route(ctx))
    }

    /// Whether a new conversation in `workstream` with `ctx` goes straight to people: the
    /// queue its rules give has members, agents all (a customer's context may route it so,
    /// and it then counts as a bot's handoff to people does).
    pub fn routes_to_people(&self, workstream: &str, ctx: &Context) -> Result<bool, EngineError> {
        let queue = self.route(workstream, ctx)?.queue;
        let Some(&q) = self.queue_ix.get(queue.as_str()) else { return Ok(false) };
        let members = &self.queues[q].members;
        Ok(!members.is_empty() && members.iter().all(|m| self.members[*m].kind == MemberKind::Agent))
    }

    pub(super) fn workstream(&self, name: &str) -> Result<(usize, &Workstream), EngineError> {
        self.workstreams
            .iter()
            .enumerate()
            .find(|(_, w)| w.name == name)
            .ok_or_else(|| EngineError::UnknownWorkstream(name.to_owned()))
    }

    /// A new conversation: route it by its workstream's rules and assign it if it can be.
    pub fn start(
        &mut self,
        conv: ConvId,
        workstream: &str,
        context: Context,
        now_ms: u64,
    ) -> Result<Vec<Effect>, EngineError> {
        if self.convs.contains_key(&conv) {
            return Err(EngineError::Duplicate(conv.to_string()));
        }
        let (wi, ws) = self.workstream(workstream)?;
        let channel = ws.channel;
        self.convs.insert(
            conv.clone(),
            ConvState {
                workstream: wi,
                channel,
                context,
                status: ConvStatus::Waiting,
                queue: 0,
                holder: None,
                handled_bots: Vec::new(),
                stamp: 0,
                position: 0,
                waiting_since_ms: now_ms,
                history: Vec::new(),
            },
        );
        let mut fx = Vec::new();
        self.route_and_enqueue(&conv, Trigger::Start, Place::ByRules, &[], now_ms, &mut fx)?;
        Ok(fx)
    }

    /// The holder bot escalates ("Transfer to agent"): merge `vars` into the context and run
    /// the rules again. `None` values unset a variable.
    pub fn escalate(
        &mut self,
        conv: &ConvId,
        vars: Vec<(String, Option<Value>)>,
        now_ms: u64,
    ) -> Result<Vec<Effect>, EngineError> {
        let c = self.active(conv)?;
        for (k, v) in vars {
            match v {
                Some(v) => c.context.insert(k, v),
                None => c.context.remove(&k),
            };
        }
        let mut fx = Vec::new();
        let freed = self.release(conv, &mut fx);
        self.route_and_enqueue(conv, Trigger::Escalation, Place::ByRules, &freed, now_ms, &mut fx)?;
        Ok(fx)
    }

    /// Whether the holder may transfer the conversation to `queue` (`None`: back through the
    /// rules). A named queue whose members are all bots that may never take it ("the chat
    /// cannot be transferred to the same bot") is refused: the customer would wait there
    /// for ever. A queue with agents, or with no members yet, is not.
    pub fn check_transfer(&self, conv: &ConvId, queue: Option<&str>) -> Result<Option<usize>, EngineError> {
        let target = match queue {
            Some(q) => Some(*self.queue_ix.get(q).ok_or_else(|| EngineError::UnknownQueue(q.to_owned()))?),
            None => None,
        };
        let c = self.convs.get(conv).ok_or_else(|| EngineError::UnknownConversation(conv.to_string()))?;
        if c.status != ConvStatus::Active {
            return Err(EngineError::NotActive(conv.to_string()));
        }
        if let Some(q) = target {
            let members = &self.queues[q].members;
            let never = |m: &usize| match self.members[*m].kind {
                MemberKind::Agent => false,
                MemberKind::Bot { voice } => c.handled_bots.contains(m) || (!voice && c.channel == Channel::Voice),
            };
            if !members.is_empty() && members.iter().all(never) {
                return Err(EngineError::NoMemberCanTake(self.queues[q].name.clone()));
            }
        }
        Ok(target)
    }

    /// The holder transfers the conversation to a named queue, or (with `None`) back through
    /// the rules.
    pub fn transfer(&mut self, conv: &ConvId, queue: Option<&str>, now_ms: u64) -> Result<Vec<Effect>, EngineError> {
        let target = self.check_transfer(conv, queue)?;
        let mut fx = Vec::new();
        let freed = self.release(conv, &mut fx);
        let place = target.map_or(Place::ByRules, Place::Back);
        self.route_and_enqueue(conv, Trigger::Transfer, place, &freed, now_ms, &mut fx)?;
        Ok(fx)
    }

    /// The holder bot failed: the conversation goes to people by the rules (the fallback
    /// queue if the rules give a queue without agents), never back to that bot.
    pub fn failover(&mut self, conv: &ConvId, now_ms: u64) -> Result<Vec<Effect>, EngineError> {
        self.active(conv)?;
        let mut fx = Vec::new();
        let freed = self.release(conv, &mut fx);
        self.route_and_enqueue(conv, Trigger::Failover, Place::Humans, &freed, now_ms, &mut fx)?;
        Ok(fx)
    }

    /// Puts an active conversation back at the *front* of its current queue (the holder was
    /// lost through no fault of the customer's, who has already waited once).
    pub fn requeue_front(&mut self, conv: &ConvId, now_ms: u64) -> Result<Vec<Effect>, EngineError> {
        let c = self.active(conv)?;
        let queue = c.queue;
        let mut fx = Vec::new();
        let freed = self.release(conv, &mut fx);
        self.route_and_enqueue(conv, Trigger::Requeue, Place::Front(queue), &freed, now_ms, &mut fx)?;
        Ok(fx)
    }

    /// Ends a conversation, freeing its holder's capacity or its place in the queue.
    pub fn close(&mut self, conv: &ConvId) -> Vec<Effect> {
        let mut fx = Vec::new();
        let Some(c) = self.convs.get(conv) else { return fx };
        let touched = match c.status {
            ConvStatus::Closed => return fx,
            ConvStatus::Active => self.release(conv, &mut fx),
            ConvStatus::Waiting => {
                let (q, stamp) = (c.queue, c.stamp);
                self.queues[q].dequeue(stamp);
                vec![q]
            }
        };
        if let Some(c) = self.convs.get_mut(conv) {
            c.status = ConvStatus::Closed;
            c.position = 0;
        }
        self.pump(&touched, &mut fx);
        fx
    }

    /// Forgets a closed conversation (memory is bounded by open conversations).
    pub fn forget(&mut self, conv: &ConvId) {
        if self.convs.get(conv).is_some_and(|c| c.status == ConvStatus::Closed) {
            self.convs.remove(conv);
        }
    }

    /// A bot connects or disconnects; an agent signs in (as `available`) or out.
    pub fn set_online(&mut self, member: &str, online: bool, _now_ms: u64) -> Result<Vec<Effect>, EngineError> {
        let m = self.member(member)?;
        let ms = &mut self.members[m];
        ms.online = online;
        if ms.kind == MemberKind::Agent {
            ms.presence = if online { Presence::Available } else { Presence::Offline };
        }
        Ok(self.after_capacity_change(m))
    }

    /// An agent changes presence.
    pub fn set_presence(&mut self, member: &str, presence: Presence) -> Result<Vec<Effect>, EngineError> {
        let m = self.member(member)?;
        self.members[m].presence = presence;
        Ok(self.after_capacity_change(m))
    }

    /// "Disconnect bot" (disabled) and "connect" again.
    pub fn set_disabled(&mut self, member: &str, disabled: bool) -> Result<Vec<Effect>, EngineError> {
        let m = self.member(member)?;
        self.members[m].disabled = disabled;
        Ok(self.after_capacity_change(m))
    }

    pub(super) fn after_capacity_change(&mut self, m: usize) -> Vec<Effect> {
        let mut fx = Vec::new();
        let qs = self.members[m].queues.clone();
        self.pump(&qs, &mut fx);
        fx
    }

    pub(super) fn member(&self, name: &str) -> Result<usize, EngineError> {
        self.member_ix.get(name).copied().ok_or_else(|| EngineError::UnknownMember(name.to_owned()))
    }

    pub(super) fn active(&mut self, conv: &ConvId) -> Result<&mut ConvState, EngineError> {
        let c = self.convs.get_mut(conv).ok_or_else(|| EngineError::UnknownConversation(conv.to_string()))?;
        if c.status != ConvStatus::Active {
            return Err(EngineError::NotActive(conv.to_string()));
        }
        Ok(c)
    }

    /// Takes the conversation from its holder, freeing capacity, and offers that capacity
    /// to the holder's queues.
    pub(super) fn release(&mut self, conv: &ConvId, fx: &mut Vec<Effect>) -> Vec<usize> {
        let Some(c) = self.convs.get_mut(conv) else { return Vec::new() };
        let Some(h) = c.holder.take() else { return Vec::new() };
        c.status = ConvStatus::Waiting;
        let m = &mut self.members[h];
        m.load = m.load.saturating_sub(1);
        fx.push(Effect::Released { conv: conv.clone(), member: m.name.clone() });
        // The caller offers the freed capacity to these queues once the conversation itself
        // has been re-routed, so one pump sees both changes.
        self.members[h].queues.clone()
    }

    pub(super) fn route_and_enqueue(
        &mut self,
        conv: &ConvId,
        trigger: Trigger,
        place: Place,
        also_pump: &[usize],
        now_ms: u64,
        fx: &mut Vec<Effect>,
    ) -> Result<(), EngineError> {
        let c = self.convs.get(conv).ok_or_else(|| EngineError::UnknownConversation(conv.to_string()))?;
        let (qi, rule) = match place {
            Place::Back(q) | Place::Front(q) => (q, None),
            Place::ByRules | Place::Humans => {
                let ws = &self.workstreams[c.workstream];
                let d = ws.route(&c.context);
                let qi = *self.queue_ix.get(&d.queue).ok_or(EngineError::UnknownQueue(d.queue))?;
                let has_agents = self.queues[qi].members.iter().any(|&m| self.members[m].kind == MemberKind::Agent);
                match self.queue_ix.get(&ws.fallback_queue) {
                    Some(&fb) if matches!(place, Place::Humans) && !has_agents => (fb, None),
                    _ => (qi, d.rule),
                }
            }
        };
        let stamp = if matches!(place, Place::Front(_)) {
            self.front_stamp -= 1;
            self.front_stamp
        } else {
            self.next_stamp += 1;
            self.next_stamp
        };
        let queue_name = self.queues[qi].name.clone();
        let c = self.convs.get_mut(conv).ok_or_else(|| EngineError::UnknownConversation(conv.to_string()))?;
        c.status = ConvStatus::Waiting;
        c.queue = qi;
        c.stamp = stamp;
        c.position = 0;
        c.waiting_since_ms = now_ms;
        // Most conversations are routed once or twice: grow from one record, not the
        // four a first push reserves (three unused records in every idle conversation).
        if c.history.len() == c.history.capacity() {
            c.history.reserve_exact(c.history.len().max(1));
        }
        c.history.push(RoutingRecord {
            at_ms: now_ms,
            trigger,
            rule: rule.clone(),
            queue: queue_name.clone(),
            member: None,
            reason: None,
        });
        self.queues[qi].enqueue(stamp, conv.clone());
        fx.push(Effect::Routed { conv: conv.clone(), rule, queue: queue_name, trigger });
        let mut qs = also_pump.to_vec();
        qs.push(qi);
        self.pump(&qs, fx);
        Ok(())
    }

    /// Assigns waiting conversations in `queues` to eligible members with free capacity,
    /// oldest first across the queues (the positions that changed are left for
    /// [`Engine::flush_positions`]).
    ///
    /// It walks the queues' waiting maps in stamp order without copying them, and leaves
    /// a queue as soon as none of its members can take work: an event in a queue where
    /// thousands wait for a busy team costs a look at its members, not at every waiting
    /// conversation.
    pub(super) fn pump(&mut self, queues: &[usize], fx: &mut Vec<Effect>) {
        let mut qs = queues.to_vec();
        qs.sort_unstable();
        qs.dedup();
        // Per queue: the stamp of the last conversation tried (the next is after it), and
        // whether the queue has nothing more to offer.
        let mut after: Vec<Option<i64>> = vec![None; qs.len()];
        let mut done = vec![false; qs.len()];
        loop {
            let mut oldest: Option<(i64, usize)> = None;
            for (k, &q) in qs.iter().enumerate() {
                if done[k] {
                    continue;
                }
                let queue = &self.queues[q];
                if !queue.members.iter().any(|&m| self.members[m].can_work()) {
                    done[k] = true;
                    continue;
                }
                let next = match after[k] {
                    None => queue.waiting.keys().next(),
                    Some(s) => queue.waiting.range((Excluded(s), Unbounded)).map(|(s, _)| s).next(),
                };
                match next {
                    Some(&s) if oldest.is_none_or(|(o, _)| s < o) => oldest = Some((s, k)),
                    Some(_) => {}
                    None => done[k] = true,
                }
            }
            let Some((stamp, k)) = oldest else { break };
            after[k] = Some(stamp);
            let q = qs[k];
            let Some(conv) = self.queues[q].waiting.get(&stamp).cloned() else { continue };
            if let Some((mi, reason)) = self.pick(q, &conv) {
                self.assign(&conv, q, mi, reason, fx);
            }
        }
    }

    pub(super) fn eligible(&self, m: usize, conv: &ConvState) -> bool {
        let ms = &self.members[m];
        ms.can_work()
            && match ms.kind {
                MemberKind::Agent => true,
                MemberKind::Bot { voice } => {
                    !conv.handled_bots.contains(&m) && (voice || conv.channel != Channel::Voice)
                }
            }
    }

    fn pick(&self, q: usize, conv: &ConvId) -> Option<(usize, String)> {
        let c = self.convs.get(conv)?;
        let queue = &self.queues[q];
        match queue.assignment {
            Assignment::HighestCapacity => {
                // Most free capacity; ties to the oldest last assignment, then members order.
                let (_, &m) = queue.members.iter().enumerate().filter(|(_, m)| self.eligible(**m, c)).max_by_key(
                    |(pos, m)| {
                        let ms = &self.members[**m];
                        (ms.free(), std::cmp::Reverse(ms.last_assigned), std::cmp::Reverse(*pos))
                    },
                )?;
                let ms = &self.members[m];
                Some((m, format!("highest free capacity ({} of {})", ms.free(), ms.capacity)))
            }
            Assignment::RoundRobin => {
                let n = queue.members.len();
                let start = queue.rr_last.map_or(0, |i| i + 1);
                (0..n).map(|k| (start + k) % n).find(|&i| self.eligible(queue.members[i], c)).map(|i| {
                    let reason = match queue.rr_last {
                        Some(last) => format!("round robin: next after {}", self.members[queue.members[last]].name),
                        None => "round robin: first".to_owned(),
                    };
                    (queue.members[i], reason)
                })
            }
        }
    }

    fn assign(&mut self, conv: &ConvId, q: usize, m: usize, reason: String, fx: &mut Vec<Effect>) {
        self.tick += 1;
        let Some(c) = self.convs.get_mut(conv) else { return };
        self.queues[q].dequeue(c.stamp);
        if self.queues[q].assignment == Assignment::RoundRobin {
            self.queues[q].rr_last = self.queues[q].members.iter().position(|&x| x == m);
        }
        let ms = &mut self.members[m];
        ms.load += 1;
        ms.last_assigned = self.tick;
        c.status = ConvStatus::Active;
        c.holder = Some(m);
        c.position = 0;
        if matches!(ms.kind, MemberKind::Bot { .. }) && !c.handled_bots.contains(&m) {
            c.handled_bots.push(m);
        }
        if let Some(last) = c.history.last_mut() {
            last.member = Some(ms.name.clone());
            last.reason = Some(reason);
        }
        fx.push(Effect::Assigned {
            conv: conv.clone(),
            member: ms.name.clone(),
            kind: ms.kind,
            queue: self.queues[q].name.clone(),
        });
    }
}
