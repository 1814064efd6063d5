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
