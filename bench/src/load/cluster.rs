//! `cluster`: `chat-relay` and `handoff` (the burst, then the steady run at half the burst
//! rate of the slowest gateway run, the same for all) against the gateway alone, as
//! those scenarios run it (the bench configuration's durable SQLite store), then against
//! the gateway as a cluster (`target`'s `Launch::cluster`) of one node, every client on it
//! (the store is JetStream's, so this is what its acknowledgement costs against SQLite's
//! commit), and of three nodes on the same machine, customers spread over the two that
//! follow, each agent on one of those, the bot on the leader (so every customer message
//! and every assignment to an agent crosses nodes over NATS), all beside the echo baseline
//! of the same run. Each server is started fresh for each run, as everywhere else; this
//! scenario's files go to `cluster/` under the output directory.

use std::future::Future;

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::chat::{self, ClosedLoop};
use super::handoff::{self, Handoff};
use super::progress::say;
use super::target::{Launch, Target};
use super::{Pair, Run, SERVERS, both};

/// The sizes of the clusters, after the gateway alone.
pub const SIZES: [usize; 2] = [1, 3];

/// Everything `cluster` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    pub chat_relay: Clustered<ClosedLoop>,
    pub handoff: Clustered<Handoff>,
    /// At a steady rate, the same for every run: half the burst rate of the slowest of the
    /// gateway alone and the clusters (so that none is run past what it can handle), unless
    /// `--handoff-rate`.
    pub handoff_steady: Option<Clustered<Handoff>>,
}

/// One scenario against the gateway alone and the echo (as the scenario itself reports
/// it), then against the gateway as a cluster of each of [`SIZES`].
#[derive(Debug, Clone, Serialize)]
pub struct Clustered<T> {
    pub alone: Pair<T>,
    pub clusters: Vec<Nodes<T>>,
}

/// A run against the gateway as a cluster of `nodes`.
#[derive(Debug, Clone, Serialize)]
pub struct Nodes<T> {
    pub nodes: usize,
    pub result: Option<T>,
    pub error: Option<String>,
}

/// "1 node", "3 nodes".
pub fn nodes(n: usize) -> String {
    if n == 1 { "1 node".to_owned() } else { format!("{n} nodes") }
}

/// Runs `cluster`: its own output directory, then each scenario on every server.
pub async fn cluster(run: &Run) -> Result<Cluster> {
    let dir = run.launch.run_dir.join("cluster");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let alone = Run {
        opts: run.opts.clone(),
        launch: Launch { run_dir: dir, ..run.launch.clone() },
        machine: run.machine.clone(),
    };
    let sized: Vec<(usize, Run)> = SIZES
        .into_iter()
        .map(|nodes| {
            let launch =
                Launch { cluster: Some(nodes), variant: Some(format!("{nodes}-node")), ..alone.launch.clone() };
            (nodes, Run { opts: alone.opts.clone(), launch, machine: alone.machine.clone() })
        })
        .collect();
    let chat_relay = clustered("chat-relay", &alone, &sized, chat::chat_relay).await;
    let handoff = clustered("handoff", &alone, &sized, |r, t| handoff::handoff(r, t, None)).await;
    let bursts = handoff.alone.gateway.iter().chain(handoff.clusters.iter().filter_map(|n| n.result.as_ref()));
    let rate = handoff::steady_rate(run.opts.handoff_rate, bursts);
    let handoff_steady = match rate {
        Some(rate) => {
            say(&format!(
                "cluster handoff-steady: {rate:.0} escalations a second (half the slowest burst), for every run"
            ));
            Some(clustered("handoff-steady", &alone, &sized, |r, t| handoff::handoff(r, t, Some(rate))).await)
        }
        None => None,
    };
    Ok(Cluster { chat_relay, handoff, handoff_steady })
}

/// `f` against the gateway alone and the echo, then each cluster; a failure is recorded
/// and the run goes on.
async fn clustered<'a, T, F, Fut>(name: &str, alone: &'a Run, sized: &'a [(usize, Run)], mut f: F) -> Clustered<T>
where
    F: FnMut(&'a Run, Target) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let pair = both(&format!("cluster {name}"), &SERVERS, |t| f(alone, t)).await;
    let mut clusters = Vec::with_capacity(sized.len());
    for (size, run) in sized {
        say(&format!("cluster {name} · gateway as {}", nodes(*size)));
        let (result, error) = match f(run, Target::Gateway).await {
            Ok(r) => (Some(r), None),
            Err(e) => {
                say(&format!("  cluster {name} {} FAILED: {e:#}", nodes(*size)));
                (None, Some(format!("{e:#}")))
            }
        };
        clusters.push(Nodes { nodes: *size, result, error });
    }
    Clustered { alone: pair, clusters }
}
