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

/// Appends `bytes` and syncs, `n` times (or until `limit` has passed), in a scratch file
/// under `dir`, which is removed afterwards.
pub fn probe(dir: &Path, n: usize, limit: Duration) -> Result<Disk> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("disk-probe.tmp");
    let mut file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let bytes = 4096 + 24;
    let block = vec![0x5a_u8; bytes];
    let mut samples = Samples::with_capacity(n);
    let end = Instant::now() + limit;
    for _ in 0..n {
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        samples.push(t.elapsed());
        if Instant::now() > end {
            break;
        }
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(Disk { bytes, sync: samples.summary() })
}
