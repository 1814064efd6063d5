//! A new configuration for a running engine: the same conversations, new queues, rules,
//! bots and agents. Built beside the old engine, so the caller swaps it in whole or not at
//! all; nothing open is dropped: a conversation whose queue is gone is routed again by its
//! rules, one whose holder is gone goes back to (the front of) its queue.

use super::ConvId;
use super::engine::{ConvState, ConvStatus, Effect, Engine, Place, Trigger};
use crate::config::Config;

/// What a new configuration does to the running conversations.
#[derive(Debug)]
pub struct Reconfigured {
    pub engine: Engine,
    /// Releases, routings, assignments and positions, in order, for the hub to carry out.
    pub effects: Vec<Effect>,
    /// One line per conversation the change moved, for the log.
    pub moved: Vec<String>,
}

impl Engine {
    /// The engine for `cfg` with every conversation of this one. Refused (one line per
    /// problem) if `cfg` removes a workstream that still has open conversations.
    pub fn reconfigured(&self, cfg: &Config, now_ms: u64) -> Result<Reconfigured, Vec<String>> {
        let mut new = Engine::new(cfg);
        for (name, &m) in &self.member_ix {
            if let Some(&n) = new.member_ix.get(name)
                && new.members[n].kind == self.members[m].kind
            {
                let (old, nm) = (&self.members[m], &mut new.members[n]);
                nm.online = old.online;
                nm.presence = old.presence;
                nm.disabled = old.disabled;
                nm.last_assigned = old.last_assigned;
            }
        }
        new.tick = self.tick;
        new.next_stamp = self.next_stamp;
        new.front_stamp = self.front_stamp;
        let same_member = |old: usize| {
            let o = &self.members[old];
            new.member_ix.get(&o.name).copied().filter(|&n| new.members[n].kind == o.kind)
        };
        let mut problems = Vec::new();
        let mut effects = Vec::new();
        let mut moved = Vec::new();
        let mut reroute: Vec<(ConvId, Place)> = Vec::new();
        let mut convs: Vec<(&ConvId, &ConvState)> = self.convs.iter().collect();
        convs.sort_unstable_by_key(|(_, c)| c.stamp);
        let mut states = Vec::new();
        for (id, c) in convs {
            let ws_name = &self.workstreams[c.workstream].name;
            let Some(wi) = new.workstreams.iter().position(|w| w.name == *ws_name) else {
                if c.status != ConvStatus::Closed {
                    problems.push(format!(
                        "workstream {ws_name:?} cannot be removed while conversation {id} is open in it"
                    ));
                }
                continue;
            };
            let queue_name = &self.queues[c.queue].name;
            let queue = new.queue_ix.get(queue_name).copied();
            let holder = c.holder.and_then(same_member);
            let handled_bots = c.handled_bots.iter().filter_map(|&b| same_member(b)).collect();
            // A kept conversation whose queue is gone is filed under the queue its rules
            // give now, so a later re-queue goes somewhere that exists.
            let fallback_queue = || {
                let d = new.workstreams[wi].route(&c.context);
                new.queue_ix.get(&d.queue).copied().unwrap_or(0)
            };
            let mut st = ConvState {
                workstream: wi,
                channel: new.workstreams[wi].channel,
                context: c.context.clone(),
                status: c.status,
                queue: queue.unwrap_or_else(fallback_queue),
                holder: None,
                handled_bots,
                stamp: c.stamp,
                position: 0,
                waiting_since_ms: c.waiting_since_ms,
                history: c.history.clone(),
            };
            match (c.status, holder, queue) {
                (ConvStatus::Closed, ..) => {}
                (ConvStatus::Active, Some(h), _) => {
                    st.holder = Some(h);
                }
                (ConvStatus::Active, None, q) => {
                    let old = c.holder.map(|h| self.members[h].name.clone()).unwrap_or_default();
                    moved.push(format!("conversation {id}: its holder {old:?} was removed; back to its queue"));
                    effects.push(Effect::Released { conv: id.clone(), member: old });
                    st.status = ConvStatus::Waiting;
                    reroute.push((id.clone(), q.map_or(Place::ByRules, Place::Front)));
                }
                (ConvStatus::Waiting, _, Some(q)) => {
                    new.queues[q].waiting.insert(c.stamp, id.clone());
                }
                (ConvStatus::Waiting, _, None) => {
                    moved.push(format!("conversation {id}: its queue {queue_name:?} was removed; routed again"));
                    reroute.push((id.clone(), Place::ByRules));
                }
            }
            states.push((id.clone(), st));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        for (id, st) in states {
            if let Some(h) = st.holder {
                new.members[h].load += 1;
            }
            new.convs.insert(id, st);
        }
        for (id, place) in reroute {
            if let Err(e) = new.route_and_enqueue(&id, Trigger::Reconfigure, place, &[], now_ms, &mut effects) {
                return Err(vec![format!("conversation {id}: {e}")]);
            }
        }
        let all: Vec<usize> = (0..new.queues.len()).collect();
        new.pump(&all, &mut effects);
        Ok(Reconfigured { engine: new, effects, moved })
    }
}
