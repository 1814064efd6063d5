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
    /// Every activity carries one, so the date and time of day are formatted once per second
    /// per thread and only the milliseconds per call.
    pub fn timestamp(ms: u64) -> String {
        thread_local! {
            static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
        }
        let (secs, millis) = (ms / 1000, ms % 1000);
        SECOND.with(|cell| {
            let mut cell = cell.borrow_mut();
            if cell.0 != secs {
                let full = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string();
                // "YYYY-MM-DDTHH:MM:SSZ" without the zone.
                *cell = (secs, full.trim_end_matches('Z').to_owned());
            }
            let mut out = String::with_capacity(cell.1.len() + 5);
            out.push_str(&cell.1);
            out.push('.');
            out.push(char::from(b'0' + (millis / 100) as u8));
            out.push(char::from(b'0' + (millis / 10 % 10) as u8));
            out.push(char::from(b'0' + (millis % 10) as u8));
            out.push('Z');
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_rfc3339_with_milliseconds() {
        for ms in [0, 999, 1_000, 1_001, 1_795_867_200_123, 1_795_867_200_999, 1_795_867_201_000, 4_102_444_799_999] {
            let want = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string();
            assert_eq!(Clock::timestamp(ms), want, "{ms}");
        }
    }
}
