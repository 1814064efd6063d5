//! How fast one conversation may post: a token bucket per conversation with the
//! customer's `customer_rate` and `customer_burst`, as a `/v1/chat` socket has, since a
//! Direct Line client posts over HTTP and has no connection to hold the bucket.
//!
//! The map is bounded: a full bucket is the same as none, so when it holds
//! [`MAX_CONVERSATIONS`] entries the full ones go, and if every one is still draining (a
//! flood from more conversations than that) the map starts over: a bound on memory is
//! worth more than a few extra posts let through.

use std::collections::HashMap;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::Refusal;
use crate::protocol::{ErrorCode, ProtocolError};

/// Conversations tracked at most.
pub const MAX_CONVERSATIONS: usize = 10_000;

#[derive(Debug)]
pub(super) struct PostRate {
    rate: f64,
    burst: f64,
    /// Conversation id → tokens left and when they were counted.
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl PostRate {
    pub fn new(rate: f64, burst: u32) -> PostRate {
        PostRate { rate, burst: f64::from(burst.max(1)), buckets: Mutex::default() }
    }

    fn level(&self, tokens: f64, at: Instant, now: Instant) -> f64 {
        (tokens + now.duration_since(at).as_secs_f64() * self.rate).min(self.burst)
    }

    /// Takes one post's token for `conversation`, or refuses it (429).
    pub fn take(&self, conversation: &str) -> Result<(), Refusal> {
        self.take_at(conversation, Instant::now())
    }

    fn take_at(&self, conversation: &str, now: Instant) -> Result<(), Refusal> {
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_CONVERSATIONS && !buckets.contains_key(conversation) {
            buckets.retain(|_, (t, at)| self.level(*t, *at, now) < self.burst);
            if buckets.len() >= MAX_CONVERSATIONS {
                buckets.clear();
            }
        }
        let (tokens, at) = buckets.entry(conversation.to_owned()).or_insert((self.burst, now));
        let level = self.level(*tokens, *at, now);
        *at = now;
        if level >= 1.0 {
            *tokens = level - 1.0;
            Ok(())
        } else {
            *tokens = level;
            Err(ProtocolError::new(
                ErrorCode::RateLimited,
                format!("more than {} posts per second in this conversation; this one was not taken", self.rate),
            )
            .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_and_the_map_stays_bounded() {
        let r = PostRate::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(r.take_at("c_1", t0).is_ok());
        }
        assert!(r.take_at("c_1", t0).is_err(), "the burst is spent");
        assert!(r.take_at("c_2", t0).is_ok(), "another conversation has its own bucket");
        let t1 = t0 + std::time::Duration::from_millis(500);
        assert!(r.take_at("c_1", t1).is_ok(), "one more after half a second at 2/s");
        assert!(r.take_at("c_1", t1).is_err());
        for i in 0..MAX_CONVERSATIONS + 10 {
            let _ = r.take_at(&format!("c_flood_{i}"), t1);
        }
        assert!(r.buckets.lock().len() <= MAX_CONVERSATIONS);
    }
}
