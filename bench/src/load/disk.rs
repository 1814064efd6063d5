//! The disk under the gateway's data directory, measured in the same run: how long one small
//! append plus `fdatasync` takes. With `sync = "full"` every store commit waits for one, and
//! a chat round trip waits for two commits (the customer's message, then the bot's reply),
//! so the tail of this distribution is a floor under the durable gateway's latency tail
//! that no server code can go below.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::stats::{Samples, Summary};

#[derive(Debug, Clone, Serialize)]
pub struct Disk {
    /// Bytes appended before each sync (one WAL frame and its header, about).
    pub bytes: usize,
    /// One append + `fdatasync`.
    pub sync: Summary,
}

/// Appends `bytes` and syncs, again and again for `time`, in a scratch file under `dir`,
/// which is removed afterwards. Seconds, not a count: the rare long stalls are what matter
/// (one 100 ms stall in a 5 s open-loop point holds up 2 % of its round trips).
pub fn probe(dir: &Path, time: Duration) -> Result<Disk> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("disk-probe.tmp");
    let mut file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let bytes = 4096 + 24;
    let block = vec![0x5a_u8; bytes];
    let mut samples = Samples::with_capacity(16_384);
    let end = Instant::now() + time;
    while Instant::now() < end {
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        samples.push(t.elapsed());
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(Disk { bytes, sync: samples.summary() })
}

/// The durable store's slow commits, as the gateway logged them (at debug level, over 50 ms).
#[derive(Debug, Clone, Serialize)]
pub struct SlowCommits {
    pub count: usize,
    pub max_ms: f64,
    pub total_ms: f64,
}

/// Reads `slow store commit: 86.12ms records=14` lines from a gateway log; `None` if the
/// log cannot be read.
pub fn slow_commits(log: &Path) -> Option<SlowCommits> {
    let text = std::fs::read_to_string(log).ok()?;
    let mut r = SlowCommits { count: 0, max_ms: 0.0, total_ms: 0.0 };
    for line in text.lines() {
        let Some((_, rest)) = line.split_once("slow store commit: ") else { continue };
        let Some(ms) = rest.split_whitespace().next().and_then(parse_duration_ms) else { continue };
        r.count += 1;
        r.max_ms = r.max_ms.max(ms);
        r.total_ms += ms;
    }
    Some(r)
}

/// `86.124713ms`, `1.2s`, `950µs` (Rust's `Debug` of a `Duration`) in milliseconds.
fn parse_duration_ms(s: &str) -> Option<f64> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    match unit {
        "s" => Some(n * 1000.0),
        "ms" => Some(n),
        "µs" | "us" => Some(n / 1000.0),
        "ns" => Some(n / 1e6),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_commits_are_read_from_the_log() {
        let dir = std::env::temp_dir().join(format!("switchboard-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("gateway.log");
        std::fs::write(
            &log,
            "x DEBUG switchboard::store::sqlite: slow store commit: 86.5ms records=14\n\
             x INFO other line\n\
             x DEBUG switchboard::store::sqlite: slow store commit: 1.25s records=2\n",
        )
        .unwrap();
        let r = slow_commits(&log).unwrap();
        assert_eq!(r.count, 2);
        assert!((r.max_ms - 1250.0).abs() < 1e-9);
        assert!((r.total_ms - 1336.5).abs() < 1e-9);
        assert!(slow_commits(&dir.join("missing.log")).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
