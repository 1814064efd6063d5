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
                    new.queues[q].enqueue(c.stamp, id.clone());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Nothing};
    use crate::context::{Context, Value};

    const SAMPLE: &str = include_str!("../../../examples/external-bot.toml");

    fn config(text: &str) -> Config {
        Config::from_toml_with(text, &Nothing).expect("valid test configuration").config
    }

    fn card() -> Context {
        let mut ctx = Context::new();
        ctx.insert("BotHandoffTopic".into(), Value::Text("CreditCard".into()));
        ctx
    }

    fn without_card_queue() -> String {
        SAMPLE
            .replace("[[queues]]\nname = \"CreditCardQueue\"\nmembers = [\"alice\", \"bob\"]\n", "")
            .replace("queue = \"CreditCardQueue\"", "queue = \"GeneralQueue\"")
    }

    /// A waiting conversation whose queue goes is routed again by the new rules; one whose
    /// holder goes returns to the front of its queue; the others keep their place and
    /// holder; the invariants hold throughout.
    #[test]
    fn conversations_survive_a_new_configuration() {
        let mut e = Engine::new(&config(SAMPLE));
        e.set_online("carol", true, 0).unwrap();
        let (waiting, held): (ConvId, ConvId) = ("c_wait".into(), "c_held".into());
        e.start(waiting.clone(), "ChatWorkStream", card(), 1).unwrap();
        let mut loan = Context::new();
        loan.insert("BotHandoffTopic".into(), Value::Text("HomeLoan".into()));
        e.start(held.clone(), "ChatWorkStream", loan, 2).unwrap();
        assert_eq!(e.holder(&held), Some("carol"));
        assert_eq!(e.queue_of(&waiting), Some("CreditCardQueue"));

        let r = e.reconfigured(&config(&without_card_queue()), 10).unwrap();
        let e2 = r.engine;
        e2.check_invariants().unwrap();
        // carol is in GeneralQueue too, with room: the re-routed conversation reaches her.
        assert_eq!(e2.queue_of(&waiting), Some("GeneralQueue"));
        assert_eq!(e2.holder(&waiting), Some("carol"));
        let last = e2.history(&waiting).last().unwrap();
        assert_eq!((last.trigger, last.rule.as_deref()), (Trigger::Reconfigure, Some("CreditCardRule")));
        assert_eq!(e2.holder(&held), Some("carol"));
        assert_eq!(r.moved.len(), 1, "{:?}", r.moved);

        // carol removed: both of hers go back to their queues, waiting (nobody else is on).
        let no_carol = without_card_queue()
            .replace(
                "[[queues]]\nname = \"HomeLoanQueue\"\nmembers = [\"carol\"]\n",
                "[[queues]]\nname = \"HomeLoanQueue\"\nmembers = [\"bob\"]\n",
            )
            .replace("members = [\"alice\", \"bob\", \"carol\"]", "members = [\"alice\", \"bob\"]")
            .replace(
                "[[agents]]\nid = \"carol\"\nname = \"Carol\"\nsecret = \"carol-demo-secret\"\ncapacity = 3\n",
                "",
            );
        let r = e2.reconfigured(&config(&no_carol), 20).unwrap();
        r.engine.check_invariants().unwrap();
        assert_eq!(r.engine.status(&held), Some(ConvStatus::Waiting));
        assert_eq!(r.engine.queue_of(&held), Some("HomeLoanQueue"));
        assert_eq!(r.engine.status(&waiting), Some(ConvStatus::Waiting));
        let released =
            r.effects.iter().filter(|f| matches!(f, Effect::Released { member, .. } if member == "carol")).count();
        assert_eq!(released, 2);
        assert!(r.engine.member_kind("carol").is_none());
    }

    /// Removing a workstream with open conversations is refused, and names one.
    #[test]
    fn a_workstream_with_open_conversations_cannot_go() {
        let mut e = Engine::new(&config(SAMPLE));
        e.start("c_1".into(), "ChatWorkStream", Context::new(), 1).unwrap();
        let renamed = SAMPLE.replace("name = \"ChatWorkStream\"", "name = \"OtherWorkStream\"");
        let problems = e.reconfigured(&config(&renamed), 2).unwrap_err();
        assert_eq!(
            problems,
            vec!["workstream \"ChatWorkStream\" cannot be removed while conversation c_1 is open in it"]
        );
        e.close(&"c_1".into());
        assert!(e.reconfigured(&config(&renamed), 3).is_ok(), "a closed conversation does not hold it");
    }
}
