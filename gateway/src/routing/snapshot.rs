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

impl Engine {
    /// What to save of a conversation.
    pub fn snapshot(&self, conv: &str) -> Option<ConvSnapshot> {
        let c = self.convs.get(conv)?;
        Some(ConvSnapshot {
            status: match c.status {
                ConvStatus::Waiting => "waiting",
                ConvStatus::Active => "active",
                ConvStatus::Closed => "closed",
            }
            .to_owned(),
            queue: self.queues[c.queue].name.clone(),
            holder: c.holder.map(|h| self.members[h].name.clone()),
            handled_bots: c.handled_bots.iter().map(|&m| self.members[m].name.clone()).collect(),
            context: c.context.clone(),
            stamp: c.stamp,
            waiting_since_ms: c.waiting_since_ms,
            history: c.history.clone(),
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
                self.queues[queue].waiting.insert(snap.stamp, conv.clone());
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
