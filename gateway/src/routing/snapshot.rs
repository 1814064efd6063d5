//! A conversation's routing state as the store saves it, and putting it back after a
//! restart.

use serde::Serialize;

use super::ConvId;
use super::engine::{ConvState, ConvStatus, Effect, Engine, EngineError, RoutingRecord};
use crate::context::Context;

/// A conversation's routing state as saved by the store and restored after a restart.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct ConvSnapshot {
    pub status: String,
    pub queue: String,
    pub holder: Option<String>,
    pub handled_bots: Vec<String>,
    pub context: Context,
    pub stamp: i64,
    pub waiting_since_ms: u64,
    pub history: Vec<RoutingRecord>,
}

/// [`ConvSnapshot`] borrowed from the engine: what [`Engine::snapshot`] gives to be
/// serialised at once. It writes exactly the JSON a `ConvSnapshot` reads back, without
/// copying the context and the routing history for every save (one per routing change).
#[derive(Debug, Serialize)]
pub struct SnapshotRef<'a> {
    pub status: &'static str,
    pub queue: &'a str,
    pub holder: Option<&'a str>,
    pub handled_bots: Vec<&'a str>,
    pub context: &'a Context,
    pub stamp: i64,
    pub waiting_since_ms: u64,
    pub history: &'a [RoutingRecord],
}

impl Engine {
    /// What to save of a conversation.
    pub fn snapshot(&self, conv: &str) -> Option<SnapshotRef<'_>> {
        let c = self.convs.get(conv)?;
        Some(SnapshotRef {
            status: match c.status {
                ConvStatus::Waiting => "waiting",
                ConvStatus::Active => "active",
                ConvStatus::Closed => "closed",
            },
            queue: &self.queues[c.queue].name,
            holder: c.holder.map(|h| self.members[h].name.as_str()),
            handled_bots: c.handled_bots.iter().map(|&m| self.members[m].name.as_str()).collect(),
            context: &c.context,
            stamp: c.stamp,
            waiting_since_ms: c.waiting_since_ms,
            history: &c.history,
        })
    }

    /// Puts back a saved conversation (at startup, before anyone connects). A holder
    /// keeps the conversation and its capacity; a waiting conversation keeps its place.
    pub fn restore(&mut self, conv: ConvId, workstream: &str, snap: ConvSnapshot) -> Result<(), EngineError> {
        let (wi, ws) = self.workstream(workstream)?;
        let channel = ws.channel;
        let queue = *self.queue_ix.get(&snap.queue).ok_or_else(|| EngineError::UnknownQueue(snap.queue.clone()))?;
        let status = match snap.status.as_str() {
            "active" => ConvStatus::Active,
            "closed" => ConvStatus::Closed,
            _ => ConvStatus::Waiting,
        };
        let holder = snap.holder.as_deref().and_then(|h| self.member_ix.get(h).copied());
        let status = if status == ConvStatus::Active && holder.is_none() { ConvStatus::Waiting } else { status };
        let handled_bots = snap.handled_bots.iter().filter_map(|b| self.member_ix.get(b).copied()).collect();
        match status {
            ConvStatus::Waiting => {
                self.queues[queue].enqueue(snap.stamp, conv.clone());
            }
            ConvStatus::Active => {
                if let Some(h) = holder {
                    self.members[h].load += 1;
                }
            }
            ConvStatus::Closed => {}
        }
        self.next_stamp = self.next_stamp.max(snap.stamp);
        self.front_stamp = self.front_stamp.min(snap.stamp);
        self.convs.insert(
            conv,
            ConvState {
                workstream: wi,
                channel,
                context: snap.context,
                status,
                queue,
                holder: if status == ConvStatus::Active { holder } else { None },
                handled_bots,
                stamp: snap.stamp,
                position: 0,
                waiting_since_ms: snap.waiting_since_ms,
                history: snap.history,
            },
        );
        Ok(())
    }

    /// Recomputes every queue's positions (after restoring).
    pub fn restored(&mut self) -> Vec<Effect> {
        let mut fx = Vec::new();
        let all: Vec<usize> = (0..self.queues.len()).collect();
        self.pump(&all, &mut fx);
        fx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Nothing};
    use crate::context::Value;

    const SAMPLE: &str = include_str!("../../../examples/external-bot.toml");

    /// What `snapshot` writes is what `restore` reads: a conversation escalated from the bot
    /// to an agent comes back in a second engine with its holder, queue, context, handled
    /// bots and history.
    #[test]
    fn a_saved_snapshot_restores_the_same_conversation() {
        let cfg = Config::from_toml_with(SAMPLE, &Nothing).expect("valid test configuration").config;
        let mut e = Engine::new(&cfg);
        e.set_online("contoso-bot", true, 0).unwrap();
        e.set_online("alice", true, 0).unwrap();
        let conv: ConvId = "c_1".into();
        e.start(conv.clone(), "ChatWorkStream", Context::new(), 1).unwrap();
        assert_eq!(e.holder(&conv), Some("contoso-bot"));
        e.escalate(&conv, vec![("BotHandoffTopic".into(), Some(Value::Text("CreditCard".into())))], 2).unwrap();
        assert_eq!(e.holder(&conv), Some("alice"));

        let json = serde_json::to_string(&e.snapshot(&conv).unwrap()).unwrap();
        let snap: ConvSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(snap.status, "active");
        assert_eq!(snap.handled_bots, ["contoso-bot"]);
        assert_eq!(snap.history.len(), 2);

        let mut again = Engine::new(&cfg);
        again.restore(conv.clone(), "ChatWorkStream", snap).unwrap();
        assert_eq!(again.holder(&conv), Some("alice"));
        assert_eq!(again.queue_of(&conv), Some("CreditCardQueue"));
        assert_eq!(again.history(&conv), e.history(&conv));
        assert_eq!(serde_json::to_string(&again.snapshot(&conv).unwrap()).unwrap(), json);
    }
}
