//! Telling waiting customers their queue position (`queue.position`), at most once a
//! second each.
//!
//! Every conversation taken from the front of a queue moves everyone behind it, so with
//! thousands waiting, each assignment changed thousands of positions, and each change was
//! a frame to its customer at once: 4,000 frames per assignment with 4,000 waiting, 50 ms
//! of the gateway's CPU (`bench/backlog.py`; the frames built with the routing engine
//! locked), so an agent floor taking ten conversations a second from a backlog of 10,000
//! would have kept more than a core busy telling positions (4.9 ms now). Now a customer
//! told its position less than [`EVERY_MS`] ago is told the latest one when that second
//! is up, and the positions in between, which it could not have read anyway, are
//! skipped: at most one frame a second per waiting customer, however fast the queue
//! moves. A position that changes after a quiet second is told at once, as before, and so
//! is the current one on a resume. A customer assigned (which drops the position due,
//! `Hub::apply`), closed or gone before its turn is not told at all.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{ConvInner, Conversation, Hub};
use crate::protocol;

/// A customer hears its position at most once in this time.
pub const EVERY_MS: u64 = 1000;

/// How often the deferred positions are looked at while there are any.
const TICK: Duration = Duration::from_millis(100);

/// Conversations with a position to tell when their second is up.
#[derive(Debug, Default)]
pub(super) struct Due {
    convs: parking_lot::Mutex<Vec<Arc<Conversation>>>,
    /// Told when the list gains its first conversation: the task waits on it otherwise.
    added: tokio::sync::Notify,
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
    /// The engine moved a waiting conversation to `position` at `now` (called with the
    /// engine locked, from [`Hub::apply`]): told now, or at the end of the second since
    /// the last.
    pub(super) fn position_changed(&self, conv: &Arc<Conversation>, queue: String, position: usize, now: u64) {
        let mut inner = conv.inner.lock();
        if inner.customer.is_none() {
            return; // a resume tells the current one
        }
        if now >= inner.position_told_ms + EVERY_MS {
            return inner.tell_position(&conv.id, &queue, position, now);
        }
        let first = inner.position_due.is_none();
        inner.position_due = Some((queue, position));
        drop(inner);
        if first {
            let mut due = self.positions.convs.lock();
            if due.is_empty() {
                self.positions.added.notify_one();
            }
            due.push(conv.clone());
        }
    }

    /// Tells the deferred positions whose second is up; whether any are left.
    fn tell_due_positions(&self) -> bool {
        let now = self.clock.now_ms();
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

    /// Starts the task that tells deferred positions (with the sweeper). It sleeps while
    /// there are none.
    pub fn spawn_positions(self: &Arc<Self>) {
        let hub = self.clone();
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = hub.shutdown.cancelled() => return,
                    _ = hub.positions.added.notified() => {}
                }
                loop {
                    tokio::select! {
                        _ = hub.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(TICK) => {}
                    }
                    if !hub.tell_due_positions() {
                        break;
                    }
                }
            }
        });
    }
}
