//! Telling waiting customers their queue position (`queue.position`): within [`TICK`] of
//! a change, and at most once a second each.
//!
//! Every conversation taken from the front of a queue moves everyone behind it. Worked
//! out and told by every event, with thousands waiting each assignment was thousands of
//! positions and frames with the routing engine locked: 4,000 frames and 50 ms of the
//! gateway's CPU per assignment with 4,000 waiting (`bench/backlog.py`). So:
//!
//! - **Worked out once a tick.** Events only mark the queues they move; this task, woken
//!   by the first, asks the engine for the positions that changed
//!   ([`Engine::flush_positions`](crate::routing::Engine::flush_positions)) at once, then
//!   every [`TICK`] while queues keep moving: one walk per queue per tick, however many
//!   assignments came meanwhile, and the engine's lock is held for the walk alone (the
//!   customers are told after it is let go). `bench/backlog.py`, 4,000 waiting: the lock
//!   held 1.1–1.8 ms per assignment by every event, 0.10–0.11 ms this way.
//! - **Told at most once a second.** A customer told its position less than [`EVERY_MS`]
//!   ago is told the latest one when that second is up; the positions in between, which
//!   it could not have read anyway, are skipped. After a quiet second a change is told at
//!   the tick that finds it, and the current position on a resume at once.
//!
//! A customer assigned (which drops the position due, `Hub::apply`), closed or gone before
//! its turn is not told at all. The task sleeps while no queue moves and nothing is due.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{ConvInner, Conversation, Hub};
use crate::protocol;
use crate::routing::Moved;

/// A customer hears its position at most once in this time.
pub const EVERY_MS: u64 = 1000;

/// How often positions are worked out and told while queues move.
const TICK: Duration = Duration::from_millis(100);

/// Conversations with a position to tell when their second is up, and the task's wake-up.
#[derive(Debug, Default)]
pub(super) struct Due {
    convs: parking_lot::Mutex<Vec<Arc<Conversation>>>,
    /// Told when a queue moves: the task sleeps on it while it has nothing to do.
    moved: Arc<tokio::sync::Notify>,
}

impl Due {
    /// A queue moved (kept as a permit if the task is busy: it cannot sleep past it).
    pub(super) fn wake(&self) {
        self.moved.notify_one();
    }
}

impl ConvInner {
    /// Tells the customer its position now, if connected.
    pub(super) fn tell_position(&mut self, conv_id: &str, queue: &str, position: usize, now_ms: u64) {
        self.position_due = None;
        if let Some(o) = &self.customer {
            o.send(protocol::event("queue.position", json!({"queue": queue, "position": position}), Some(conv_id)));
            self.position_told_ms = now_ms;
        }
    }
}

impl Hub {
    /// The engine moved a waiting conversation to `position` at `now` (from a flush,
    /// after the engine's lock was let go): told now, or at the end of the second since
    /// the last.
    fn position_changed(&self, conv: &Arc<Conversation>, queue: String, position: usize, now: u64) {
        let mut inner = conv.inner.lock();
        if inner.customer.is_none() {
            return; // a resume tells the current one
        }
        if inner.holder.is_some() || inner.closed {
            // Assigned (its `Hub::apply` took the holder in under this lock, before this)
            // or closed since the flush: out of the queue, so nothing about it is told.
            return;
        }
        if now >= inner.position_told_ms + EVERY_MS {
            return inner.tell_position(&conv.id, &queue, position, now);
        }
        let first = inner.position_due.is_none();
        inner.position_due = Some((queue, position));
        drop(inner);
        if first {
            self.positions.convs.lock().push(conv.clone());
        }
    }

    /// One tick: the positions changed since the last, then the deferred ones whose
    /// second is up. Whether to tick again: while queues move, or positions wait for
    /// their second (woken for every event that moves a queue, the task would cost a
    /// wake-up and a hold of the engine's lock per assignment).
    ///
    /// The engine's lock is held for the walk only: the positions are told after it is let
    /// go, so a routing event waits for at most one walk over the queues that moved, not
    /// for thousands of customers' locks and frames.
    fn tell_positions(&self) -> bool {
        let (moved, changes) = {
            let mut engine = self.engine.lock();
            let moved = engine.positions_pending();
            (moved, if moved { engine.flush_positions() } else { Vec::new() })
        };
        let now = self.clock.now_ms();
        for Moved { conv, queue, position } in changes {
            if let Some(c) = self.conversation(&conv) {
                self.position_changed(&c, queue, position, now);
            }
        }
        self.tell_due_positions(now) || moved
    }

    /// Tells the deferred positions whose second is up at `now`; whether any are left.
    fn tell_due_positions(&self, now: u64) -> bool {
        let due = std::mem::take(&mut *self.positions.convs.lock());
        let mut later = Vec::new();
        for conv in due {
            let mut inner = conv.inner.lock();
            if inner.position_due.is_none() {
                continue;
            }
            if inner.closed || inner.customer.is_none() {
                inner.position_due = None;
            } else if now >= inner.position_told_ms + EVERY_MS {
                if let Some((queue, position)) = inner.position_due.take() {
                    inner.tell_position(&conv.id, &queue, position, now);
                }
            } else {
                drop(inner);
                later.push(conv);
            }
        }
        let mut due = self.positions.convs.lock();
        due.extend(later);
        !due.is_empty()
    }

    /// Starts the task that works out and tells positions (with the sweeper).
    pub fn spawn_positions(self: &Arc<Self>) {
        let wake = Some(self.positions.moved.clone());
        self.spawn_every(TICK, tokio::time::MissedTickBehavior::Delay, wake, |hub, _| hub.tell_positions());
    }
}
