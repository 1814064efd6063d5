//! `handoff`: every conversation escalates at once. The bot sends `handoff.initiate` for
//! each of its conversations in one burst (written as fast as the connection takes them);
//! the clock runs from the instant each frame is written to the instant the agent that gets
//! the conversation reads its `conversation.assigned`.
//!
//! Against the echo baseline the same bot connection sends the same frames in the same
//! burst, and the clock stops when each comes back: one hop of the same bytes, with the
//! same customer connections open alongside.
//!
//! The steady variant sends the same escalations at a fixed rate instead (half of what
//! the gateway handled in its burst, unless given), each frame at its time on the
//! schedule, so the latency is that of an escalation under load rather than its place in
//! a queue of ten thousand. It runs [`STEADY_RUNS`] times, each on a fresh server, and its
//! figures pool them (each run's own p99 is kept too).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::Serialize;

use super::Run;
use super::peers::{self, Agent, Counter, EchoBot, EchoReceipts, Member, Peer};
use super::progress::{Progress, say};
use super::stats::{Samples, Summary};
use super::target::{CpuWait, MachineCpu, Server, Target, own_cpu_secs};
use super::wire::{self, Sources};

#[derive(Debug, Clone, Serialize)]
pub struct Handoff {
    /// Escalations over all runs.
    pub escalations: usize,
    pub assigned: usize,
    /// Over every run's escalations together.
    pub latency: Summary,
    /// Each run's own p99 (ms), in order: one per run pooled into these figures, each on a
    /// fresh server with its own conversations (1 for the burst, [`STEADY_RUNS`] steady).
    pub run_p99_ms: Vec<f64>,
    /// From the first frame written to the last assignment read (summed over runs).
    pub burst_seconds: f64,
    /// Escalations sent per second on a fixed schedule; `None` for the burst.
    pub rate: Option<f64>,
    /// CPU the server used (a cluster's summed over its processes) from the first frame
    /// sent until the last assignment landed, in seconds.
    pub server_cpu_secs: f64,
    /// CPU the generator itself used over the same span: with the server's, how much of the
    /// machine's cores the run kept busy.
    pub client_cpu_secs: f64,
    /// The gateway's routing-engine lock over the same span (`/metrics`); `None` for the
    /// echo, and for a cluster (each node has its own).
    pub engine_lock: Option<wire::EngineLock>,
    /// Each run's store commits and checkpoints, and those slower than 3.2 ms (`/metrics`),
    /// in order; empty for the echo and a cluster. A commit waits for a checkpoint, and an
    /// escalation's assignment for its commit: where a run's tail comes from.
    pub run_store: Vec<wire::StoreStalls>,
    /// Each run's share of the machine's CPU time the hypervisor gave to other guests
    /// (`steal` in `/proc/stat`, 0 to 1), in order.
    pub run_stolen: Vec<f64>,
    /// Each run's time its threads were ready to run but waited for a CPU (`schedstat`), in
    /// order: the server's, the generator's; for the echo as for the gateway, not a cluster.
    pub run_cpu_wait: Vec<RunCpuWait>,
    pub errors: Vec<String>,
}

/// How long a run's threads waited for a CPU while ready to run, in ms.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RunCpuWait {
    /// The server's threads together.
    pub server_ms: f64,
    /// The gateway's store writer among them, on which each commit runs (0 for the echo).
    pub store_ms: f64,
    /// The generator's threads together.
    pub generator_ms: f64,
}

/// Runs of the steady variant, pooled. One run sends each of its 10,000 escalations once, so
/// at 20,000 a second it lasts half a second, and one stall of this shared machine of 5 ms
/// or more (the echo baseline sees them too) takes 1 % of a run's escalations with it: its
/// p99 is then the stall. Three runs on fresh servers, their latencies pooled, measure the
/// escalations three times as long.
pub const STEADY_RUNS: usize = 3;

/// Escalations of every held conversation: in one burst (`rate` `None`), or at `rate` a
/// second ([`STEADY_RUNS`] runs, pooled).
pub async fn handoff(run: &Run, target: Target, rate: Option<f64>) -> Result<Handoff> {
    let (mut all, mut every) = handoff_once(run, target, rate).await?;
    for _ in 1..if rate.is_some() { STEADY_RUNS } else { 1 } {
        let (r, samples) = handoff_once(run, target, rate).await?;
        all.absorb(r);
        every.extend(samples);
    }
    all.latency = every.summary();
    Ok(all)
}

/// One run: a fresh server, its conversations, their escalations; with the latencies.
async fn handoff_once(run: &Run, target: Target, rate: Option<f64>) -> Result<(Handoff, Samples)> {
    let n = run.opts.handoffs;
    let name = if rate.is_some() { "handoff-steady" } else { "handoff" };
    let server = Server::start(target, &run.launch, name).await?;
    let label = format!("{name} {target}");
    let done = Arc::new(Counter::default());
    let sources = Sources::for_connections(n);
    let (sent, received, errors, span) = match target {
        Target::Gateway => {
            let alice = peers::sign_in(server.member_addr(Member::Alice), Member::Alice, agent(&done)).await?;
            let bob = peers::sign_in(server.member_addr(Member::Bob), Member::Bob, agent(&done)).await?;
            let bot_handler = EchoBot::default();
            let (assigned, convs) = (bot_handler.assigned.clone(), bot_handler.conversations.clone());
            let bot = peers::sign_in(server.member_addr(Member::Bot), Member::Bot, bot_handler).await?;
            let customers = peers::open_customers(target, server.customer_addrs(), n, &label, sources).await?;
            if !assigned.wait_for(n, Duration::from_secs(60)).await {
                bail!("{label}: the bot was assigned {} of {n} conversations", assigned.get());
            }
            let ids: Vec<String> = convs.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
            let cpu = burst(&label, &server, &bot, &ids, &done, rate, run.launch.cluster.is_none()).await?;
            let (bot_handler, sent) = bot.finish().await?;
            let (a, _) = alice.finish().await?;
            let (b, _) = bob.finish().await?;
            drop(customers);
            let mut errors = bot_handler.errors;
            errors.extend(a.errors);
            errors.extend(b.errors);
            let mut received = a.log;
            received.extend(b.log);
            (by_conversation(&ids, &sent), received, errors, cpu)
        }
        Target::Echo => {
            let receipts = EchoReceipts { received: done.clone(), log: Vec::with_capacity(n) };
            let ws = wire::connect(server.addr, "/v1/bot", None, None).await?;
            let bot = Peer::spawn(ws, receipts);
            let customers = peers::open_customers(target, server.customer_addrs(), n, &label, sources).await?;
            let ids: Vec<String> = (0..n).map(wire::synthetic_conversation_id).collect();
            let cpu = burst(&label, &server, &bot, &ids, &done, rate, false).await?;
            let (receipts, sent) = bot.finish().await?;
            drop(customers);
            (by_conversation(&ids, &sent), receipts.log, Vec::new(), cpu)
        }
        Target::Nats => bail!("{label}: the NATS peer runs chat-relay and open-loop only"),
    };
    server.stop().await;
    let mut samples = Samples::with_capacity(n);
    let mut last = None::<Instant>;
    let first = sent.values().min().copied();
    for (conv, at) in &received {
        if let Some(t0) = sent.get(conv.as_str()) {
            samples.push(at.saturating_duration_since(*t0));
            last = Some(last.map_or(*at, |l| l.max(*at)));
        }
    }
    let latency = samples.clone().summary();
    let r = Handoff {
        escalations: n,
        assigned: samples.len(),
        latency,
        run_p99_ms: vec![latency.p99_ms],
        burst_seconds: match (first, last) {
            (Some(f), Some(l)) => l.saturating_duration_since(f).as_secs_f64(),
            _ => f64::NAN,
        },
        errors,
        rate,
        server_cpu_secs: span.server_cpu_secs,
        client_cpu_secs: span.client_cpu_secs,
        engine_lock: span.engine_lock,
        run_store: span.store.into_iter().collect(),
        run_stolen: vec![span.stolen],
        run_cpu_wait: span.cpu_wait.into_iter().collect(),
    };
    say(&format!(
        "  {name} {target}: {} of {n} assigned, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, in {:.3} s",
        r.assigned, r.latency.p50_ms, r.latency.p99_ms, r.latency.max_ms, r.burst_seconds
    ));
    Ok((r, samples))
}

impl Handoff {
    /// Runs pooled into these figures.
    pub fn runs(&self) -> usize {
        self.run_p99_ms.len()
    }

    /// Adds another run's figures to these (the pooled latency is the caller's to set).
    fn absorb(&mut self, r: Handoff) {
        self.escalations += r.escalations;
        self.assigned += r.assigned;
        self.run_p99_ms.extend(r.run_p99_ms);
        self.burst_seconds += r.burst_seconds;
        self.server_cpu_secs += r.server_cpu_secs;
        self.client_cpu_secs += r.client_cpu_secs;
        self.engine_lock = self.engine_lock.zip(r.engine_lock).map(|(a, b)| a.plus(b));
        self.run_store.extend(r.run_store);
        self.run_stolen.extend(r.run_stolen);
        self.run_cpu_wait.extend(r.run_cpu_wait);
        self.errors.extend(r.errors);
    }

    /// Escalations handled a second in the burst.
    pub fn per_sec(&self) -> f64 {
        self.escalations as f64 / self.burst_seconds
    }

    /// Cores the server and the generator kept busy, on average, from the first escalation
    /// sent to the last assignment read.
    pub fn cores(&self) -> (f64, f64) {
        (self.server_cpu_secs / self.burst_seconds, self.client_cpu_secs / self.burst_seconds)
    }
}

/// The rate of the steady run: `given`, else half of what the slowest of `bursts` handled.
pub fn steady_rate<'a>(given: Option<f64>, bursts: impl IntoIterator<Item = &'a Handoff>) -> Option<f64> {
    given.or_else(|| {
        let slowest = bursts.into_iter().filter(|g| g.burst_seconds > 0.0).map(Handoff::per_sec).reduce(f64::min)?;
        Some(0.5 * slowest)
    })
}

fn agent(done: &Arc<Counter>) -> Agent {
    Agent { assigned: done.clone(), log: Vec::new(), errors: Vec::new() }
}

/// What a run's span of time cost, and what else happened in it.
struct Span {
    server_cpu_secs: f64,
    client_cpu_secs: f64,
    engine_lock: Option<wire::EngineLock>,
    store: Option<wire::StoreStalls>,
    stolen: f64,
    cpu_wait: Option<RunCpuWait>,
}

/// Sends one frame per conversation, at once or at `rate` a second, and waits (up to
/// 60 s after the last) for every one to land; the CPU seconds the server and the generator
/// used meanwhile, the machine's CPU time stolen, how long the server's and the generator's
/// threads waited for a core (a lone server's), and with `engine` what the gateway's
/// routing-engine lock and its store did.
async fn burst<H: peers::Handler>(
    label: &str,
    server: &Server,
    bot: &Peer<H>,
    ids: &[String],
    done: &Arc<Counter>,
    rate: Option<f64>,
    engine: bool,
) -> Result<Span> {
    let internals = if engine { Some(wire::engine_and_store(server.addr).await?) } else { None };
    let machine = MachineCpu::read()?;
    // A cluster's processes are several; its runs say nothing of their waits.
    let waits = if server.is_lone() { Some((CpuWait::read(Some(server.pid))?, CpuWait::read(None)?)) } else { None };
    let (cpu, own) = (server.cpu_secs()?, own_cpu_secs()?);
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let progress = Progress::start(format!("{label}: burst of {}", ids.len()), None, count.clone(), "landed");
    let watcher = {
        let (done, count) = (done.clone(), count.clone());
        tokio::spawn(async move {
            loop {
                count.store(done.get() as u64, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let start = tokio::time::Instant::now();
    for (i, id) in ids.iter().enumerate() {
        if let Some(rate) = rate {
            tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        }
        bot.send(wire::handoff(id), Some(u32::try_from(i).unwrap_or(u32::MAX)));
    }
    let _ = done.wait_for(ids.len(), Duration::from_secs(60)).await;
    let used = server.cpu_secs().map(|now| now - cpu)?;
    let used_here = own_cpu_secs()? - own;
    let stolen = MachineCpu::read()?.stolen_since(machine);
    let cpu_wait = match waits {
        Some((server_then, own_then)) => {
            let (server_ms, store_ms) = CpuWait::read(Some(server.pid))?.ms_since(server_then);
            let (generator_ms, _) = CpuWait::read(None)?.ms_since(own_then);
            Some(RunCpuWait { server_ms, store_ms, generator_ms })
        }
        None => None,
    };
    let (engine_lock, store) = match internals {
        Some((lock, store)) => {
            let (lock_now, store_now) = wire::engine_and_store(server.addr).await?;
            (Some(lock_now.since(lock)), Some(store_now.since(store)))
        }
        None => (None, None),
    };
    watcher.abort();
    progress.finish();
    Ok(Span { server_cpu_secs: used, client_cpu_secs: used_here, engine_lock, store, stolen, cpu_wait })
}

fn by_conversation(ids: &[String], sent: &[(u32, Instant)]) -> HashMap<String, Instant> {
    sent.iter().filter_map(|&(i, at)| Some((ids.get(i as usize)?.clone(), at))).collect()
}
