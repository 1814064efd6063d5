//! Property tests of the routing core's invariants (issue: core gateway, deliverable 3):
//! no member ever over capacity; no bot ever gets a conversation it handled before; never a
//! waiting conversation while an eligible member of its queue has free capacity; FIFO within
//! a queue; positions always 1..n without gaps, and every change of position reported.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use proptest::prelude::*;
use switchboard::context::{Context, Value};
use switchboard::routing::{ConvId, Effect, Engine, MemberKind, Moved, Presence};

const CONFIG: &str = r#"
[[workstreams]]
name = "Chat"
fallback_queue = "General"
context_variables = [ { name = "Topic", type = "text" } ]
  [[workstreams.rules]]
  name = "Bot"
  when = "Topic is empty"
  queue = "Bots"
  [[workstreams.rules]]
  name = "Card"
  when = 'Topic == "Card"'
  queue = "Card"

[[workstreams]]
name = "Voice"
channel = "voice"
fallback_queue = "General"
context_variables = [ { name = "Topic", type = "text" } ]
  [[workstreams.rules]]
  name = "Bot"
  when = "Topic is empty"
  queue = "Bots"

[[queues]]
name = "Bots"
members = ["b1", "b2", "a1"]
[[queues]]
name = "Card"
assignment = "round_robin"
members = ["a1", "a2", "a3"]
[[queues]]
name = "General"
members = ["a3", "b2"]

[[bots]]
name = "b1"
app_id = "1"
secret = "s"
capacity = 3
[[bots]]
name = "b2"
app_id = "2"
secret = "s"
capacity = 2
voice = true
[[agents]]
id = "a1"
secret = "s"
capacity = 1
[[agents]]
id = "a2"
secret = "s"
capacity = 2
[[agents]]
id = "a3"
secret = "s"
capacity = 1
"#;

const MEMBERS: [&str; 5] = ["b1", "b2", "a1", "a2", "a3"];
const TOPICS: [Option<&str>; 4] = [None, Some("Card"), Some("Loan"), Some("")];

#[derive(Clone, Debug)]
enum Op {
    Start { voice: bool, topic: usize },
    Escalate { conv: usize, topic: usize },
    Transfer { conv: usize, queue: Option<usize> },
    Requeue { conv: usize },
    Close { conv: usize },
    Online { member: usize, online: bool },
    Presence { member: usize, presence: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<bool>(), 0..TOPICS.len()).prop_map(|(voice, topic)| Op::Start { voice, topic }),
        2 => (0..40usize, 0..TOPICS.len()).prop_map(|(conv, topic)| Op::Escalate { conv, topic }),
        1 => (0..40usize, proptest::option::of(0..3usize)).prop_map(|(conv, queue)| Op::Transfer { conv, queue }),
        1 => (0..40usize).prop_map(|conv| Op::Requeue { conv }),
        2 => (0..40usize).prop_map(|conv| Op::Close { conv }),
        2 => (0..MEMBERS.len(), any::<bool>()).prop_map(|(member, online)| Op::Online { member, online }),
        1 => (2..MEMBERS.len(), 0..4usize).prop_map(|(member, presence)| Op::Presence { member, presence }),
    ]
}

fn topic_vars(t: usize) -> Vec<(String, Option<Value>)> {
    vec![("Topic".into(), TOPICS[t].map(|s| Value::Text(s.into())))]
}

/// What the effects told us, checked against the engine after every step.
#[derive(Default)]
struct Model {
    handled: HashMap<ConvId, HashSet<String>>,
    /// Per queue, conversations in the order they entered it (front requeues go first).
    order: HashMap<String, VecDeque<ConvId>>,
    position: HashMap<ConvId, usize>,
}

impl Model {
    /// Takes in an event's effects.
    fn apply(&mut self, fx: &[Effect], front: Option<&ConvId>) -> Result<(), String> {
        for e in fx {
            match e {
                Effect::Routed { conv, queue, .. } => {
                    let q = self.order.entry(queue.clone()).or_default();
                    if front == Some(conv) {
                        q.push_front(conv.clone());
                    } else {
                        q.push_back(conv.clone());
                    }
                    self.position.remove(conv);
                }
                Effect::Assigned { conv, member, kind, queue } => {
                    if matches!(kind, MemberKind::Bot { .. })
                        && !self.handled.entry(conv.clone()).or_default().insert(member.clone())
                    {
                        return Err(format!("bot {member} got {conv} again"));
                    }
                    let q = self.order.get_mut(queue).ok_or("assigned from an unknown queue")?;
                    let at = q.iter().position(|c| c == conv).ok_or("assigned but not waiting")?;
                    // FIFO: the Card queue has only agents, so nothing excludes anyone and the
                    // oldest waiting conversation must go first.
                    if queue == "Card" && at != 0 {
                        return Err(format!("{conv} assigned ahead of {} in Card", q[0]));
                    }
                    q.remove(at);
                    self.position.remove(conv);
                }
                Effect::Released { .. } => {}
            }
        }
        Ok(())
    }

    /// Takes in a flush's positions, each conversation's once, then compares every waiting
    /// conversation's place with the last position reported.
    fn moved(&mut self, engine: &Engine, moved: &[Moved]) -> Result<(), String> {
        let mut seen = HashSet::new();
        for m in moved {
            if !seen.insert(m.conv.clone()) {
                return Err(format!("the flush reported {} twice", m.conv));
            }
            self.position.insert(m.conv.clone(), m.position);
        }
        for q in self.order.values() {
            for c in q {
                let view = engine.conversation(c).ok_or("lost conversation")?;
                if view.position != self.position.get(c).copied() {
                    return Err(format!(
                        "{c}: position {:?} but last reported {:?}",
                        view.position,
                        self.position.get(c)
                    ));
                }
            }
        }
        Ok(())
    }

    fn closed(&mut self, conv: &ConvId) {
        for q in self.order.values_mut() {
            q.retain(|c| c != conv);
        }
        self.position.remove(conv);
    }
}

/// Runs `ops`, flushing the positions after every `batch` of them (as the hub does a few
/// times a second, however many events came meanwhile): each changed position is reported
/// once, and then every one is right.
fn run(ops: Vec<Op>, batch: usize) -> Result<(), TestCaseError> {
    let cfg = switchboard::load::config_text(CONFIG).unwrap().config;
    let mut engine = Engine::new(&cfg);
    let mut model = Model::default();
    let mut convs: Vec<ConvId> = Vec::new();
    for (now, op) in ops.into_iter().enumerate() {
        let now = now as u64;
        let pick = |i: usize| convs.get(i % convs.len().max(1)).cloned();
        let mut front = None;
        let fx = match op.clone() {
            Op::Start { voice, topic } => {
                let id: ConvId = Arc::from(format!("c{}", convs.len()));
                convs.push(id.clone());
                let mut ctx = Context::new();
                if let Some(t) = TOPICS[topic] {
                    ctx.insert("Topic".into(), Value::Text(t.into()));
                }
                engine.start(id, if voice { "Voice" } else { "Chat" }, ctx, now).unwrap()
            }
            Op::Escalate { conv, topic } => match pick(conv) {
                Some(c) => engine.escalate(&c, topic_vars(topic), now).unwrap_or_default(),
                None => vec![],
            },
            Op::Transfer { conv, queue } => match pick(conv) {
                Some(c) => engine.transfer(&c, queue.map(|q| ["Bots", "Card", "General"][q]), now).unwrap_or_default(),
                None => vec![],
            },
            Op::Requeue { conv } => match pick(conv) {
                Some(c) => {
                    front = Some(c.clone());
                    engine.requeue_front(&c, now).unwrap_or_default()
                }
                None => vec![],
            },
            Op::Close { conv } => match pick(conv) {
                Some(c) => {
                    model.closed(&c);
                    engine.close(&c)
                }
                None => vec![],
            },
            Op::Online { member, online } => engine.set_online(MEMBERS[member], online, now).unwrap(),
            Op::Presence { member, presence } => {
                let p = [Presence::Available, Presence::Busy, Presence::Away, Presence::Offline][presence];
                engine.set_presence(MEMBERS[member], p).unwrap()
            }
        };
        model.apply(&fx, front.as_ref()).map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
        engine.check_invariants().map_err(|e| TestCaseError::fail(format!("after {op:?}: {e}")))?;
        if (now as usize + 1).is_multiple_of(batch) {
            flush(&mut engine, &mut model)?;
        }
    }
    flush(&mut engine, &mut model)
}

/// The end of a run of events: each changed position reported once, and then every
/// waiting conversation's last reported position is its place.
fn flush(engine: &mut Engine, model: &mut Model) -> Result<(), TestCaseError> {
    let moved = engine.flush_positions();
    model.moved(engine, &moved).map_err(|e| TestCaseError::fail(format!("after the flush: {e}")))?;
    engine.check_invariants().map_err(|e| TestCaseError::fail(format!("after the flush: {e}")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops, 1)?;
    }

    #[test]
    fn invariants_hold_with_positions_flushed_after_runs_of_events(ops in proptest::collection::vec(op(), 1..120), batch in 2..20usize) {
        run(ops, batch)?;
    }
}
