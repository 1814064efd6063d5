//! Time for the server shell: wall-clock milliseconds that follow tokio's clock.
//!
//! Token expiry and timestamps are computed from a wall-clock base taken at start plus
//! tokio's monotonic elapsed time, so tests can move time with `tokio::time::pause()` and
//! `advance()` instead of sleeping, and a wall-clock jump cannot expire every token at once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct Clock {
    base_ms: u64,
    base: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

impl Clock {
    pub fn new() -> Clock {
        let base_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Clock { base_ms, base: Instant::now() }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        self.base_ms + self.base.elapsed().as_millis() as u64
    }

    /// RFC 3339 UTC with milliseconds, as Bot Framework activities carry.
    pub fn timestamp(ms: u64) -> String {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
    }
}
