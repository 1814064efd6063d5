//! `switchboard-load`: the load generator. It starts the gateway and the echo baseline as
//! processes on loopback, plays customers, the bot and agents against each with the same
//! connections and payloads, and reports every figure as gateway, baseline and ratio, so a
//! number measured on a shared, noisy machine still means something.
//!
//! Scenarios (each on a freshly started server):
//! - `chat-relay`: closed loop, N customers each with one message in flight (`chat`);
//! - `open-loop`: the same customers on a fixed schedule at fractions of the gateway's
//!   `chat-relay` maximum (`chat`), plotted as latency against offered load (`chart`);
//! - `idle`: N open conversations, resident memory per conversation (`idle`);
//! - `handoff`: N escalations in one burst, time to the agent's assignment, then the same
//!   escalations at a steady rate of half the gateway's burst rate (`handoff`);
//! - `voice`: a sweep of call counts, each call streaming 20 ms µ-law frames both ways
//!   through the gateway to a bot that takes L16 16 kHz, once with callers speaking the
//!   native protocol and once Twilio's Media Streams; frames lost, latency, the gaps in the
//!   audio a caller hears and calls refused, continued upward while the echo baseline
//!   holds (`voice`);
//! - `recovery`: the gateway killed with N open conversations and their activities in its
//!   store, and started again: time to listen with all of them back, memory before and
//!   after, and a sample of customers resuming with their whole transcript (`recovery`).
//!   The gateway only: there is nothing to compare it with, so it is not in a default run.
//! - `cluster`: `chat-relay` and `handoff` (the burst, then the steady run at half the
//!   slowest server's burst rate) against the gateway alone
//!   (its SQLite store), the gateway as a one-node cluster (nats-server with JetStream, every
//!   client on the node: JetStream's acknowledgement against SQLite's commit) and as three
//!   nodes on the same machine (customers on the two that follow, each agent on one of
//!   them, the bot on the leader: the hop between nodes), beside the echo baseline; server
//!   CPU and memory summed over every process (`cluster`). Needs `nats-server` (2.9 or
//!   later, JetStream); opt-in, like `recovery`.
//!
//! `chat-relay` runs the gateway twice, with the configured store (the bench configuration's
//! durable SQLite store) and with a copy of the configuration differing only in
//! `store = "memory"`, both against the same echo baseline; `open-loop` runs that copy again
//! at half the maximum, and first times the disk's `fdatasync` under the data directory
//! (`disk`), the floor under the durable store's latency.
//!
//! `chat-relay` and `open-loop` also run against a peer: `nats-server` (core NATS, started
//! per scenario with its WebSocket listener on loopback), with the same number of
//! WebSocket connections and the same payloads. Each customer has its own connection and
//! the bot one connection subscribed to every customer's subject, so a round trip is two
//! hops through the broker, as through the gateway (`chat`); the generator speaks NATS
//! itself (`nats`) over the same client code. Its figures are reported beside the
//! gateway's and as gateway / NATS ratios; a missing `nats-server` fails that run only.

pub mod chart;
pub mod chat;
pub mod cluster;
pub mod disk;
pub mod handoff;
pub mod idle;
pub mod nats;
pub mod peers;
pub mod progress;
pub mod recovery;
pub mod report;
pub mod stats;
pub mod target;
pub mod voice;
pub mod wire;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde::Serialize;

use progress::say;
use target::{Launch, Machine, Target};

/// The scenarios, in the order a full run does them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    ChatRelay,
    OpenLoop,
    Idle,
    Handoff,
    Voice,
    Recovery,
    Cluster,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::ChatRelay,
        Scenario::OpenLoop,
        Scenario::Idle,
        Scenario::Handoff,
        Scenario::Voice,
        Scenario::Recovery,
        Scenario::Cluster,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::ChatRelay => "chat-relay",
            Scenario::OpenLoop => "open-loop",
            Scenario::Idle => "idle",
            Scenario::Handoff => "handoff",
            Scenario::Voice => "voice",
            Scenario::Recovery => "recovery",
            Scenario::Cluster => "cluster",
        }
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| format!("unknown scenario {s:?}; one of {}", Scenario::ALL.map(Scenario::name).join(", ")))
    }
}

/// What to run, and how big.
#[derive(Clone, Debug, Serialize)]
pub struct Options {
    pub scenarios: Vec<Scenario>,
    /// Conversations (customer connections) in `chat-relay` and `open-loop`.
    pub conversations: usize,
    /// Characters of text in each customer message.
    pub payload: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub point_warmup: Duration,
    pub point_duration: Duration,
    /// Offered loads of `open-loop`, as fractions of the gateway's `chat-relay` maximum.
    pub loads: Vec<f64>,
    /// The maximum `open-loop` scales by, when `chat-relay` is not run.
    pub max_rate: Option<f64>,
    pub idle_conversations: usize,
    pub handoffs: usize,
    /// `handoff`'s steady run: escalations a second (default: half the gateway's burst rate).
    pub handoff_rate: Option<f64>,
    /// `chat-relay`: also run the gateway with `store = "memory"`.
    pub memory_store: bool,
    /// `voice`: the call counts of the sweep.
    pub voice_calls: Vec<usize>,
    /// `voice`: the callers' protocols, one sweep each.
    pub voice_dialects: Vec<voice::Dialect>,
    /// `voice`: the bot's audio format (the callers' is µ-law 8 kHz).
    #[serde(serialize_with = "voice::as_text")]
    pub voice_bot_audio: switchboard_codecs::Format,
    /// `voice`: after the listed counts, each sweep doubles the count while the echo
    /// baseline holds, up to this many calls (no more than the listed counts' largest: no
    /// extension).
    pub voice_max_calls: usize,
    pub voice_warmup: Duration,
    pub voice_duration: Duration,
    /// `voice`: the call count of the CPU target (500), and how many more alternating
    /// gateway/echo pairs run there after each sweep: the target's ratio is the median of
    /// the sweep's pair and these.
    pub voice_cpu_calls: usize,
    pub voice_cpu_repeats: usize,
    /// `voice`: more alternating pairs at a count where the sweep's pair had one server
    /// hold and the other not; each server holds there if it did in most of its pairs.
    pub voice_hold_repeats: usize,
    /// `recovery`: open conversations in the store at the crash, customer messages in each,
    /// and customers that resume afterwards to check their transcripts.
    pub recovery_conversations: usize,
    pub recovery_messages: usize,
    pub recovery_sample: usize,
    /// Free text for the report (the script passes the commit).
    pub label: Option<String>,
    /// The command line, for the report.
    pub command: String,
}

/// A run in progress: its options, how to start the servers, and the machine.
#[derive(Debug)]
pub struct Run {
    pub opts: Options,
    pub launch: Launch,
    pub machine: Machine,
}

/// A figure measured on both servers (and, in the chat scenarios, on the NATS peer).
#[derive(Debug, Clone, Serialize)]
pub struct Pair<T> {
    pub gateway: Option<T>,
    pub echo: Option<T>,
    /// The NATS peer's figure, in `chat-relay` and `open-loop`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats: Option<T>,
    pub errors: Vec<String>,
}

impl<T> Pair<T> {
    fn both(&self) -> Option<(&T, &T)> {
        Some((self.gateway.as_ref()?, self.echo.as_ref()?))
    }
}

/// The servers every scenario runs against.
pub(crate) const SERVERS: [Target; 2] = [Target::Gateway, Target::Echo];
/// The chat scenarios' servers: those and the NATS peer.
const WITH_NATS: [Target; 3] = [Target::Gateway, Target::Echo, Target::Nats];

#[derive(Debug, Clone, Serialize)]
pub struct OpenLoop {
    pub conversations: usize,
    /// The gateway's `chat-relay` round trips per second the loads are fractions of.
    pub max_per_sec: f64,
    pub loads: Vec<f64>,
    pub points: Pair<Vec<chat::OpenPoint>>,
    /// The gateway with `store = "memory"` at half the same maximum: the relay without
    /// the store's fsyncs, against the same echo point.
    pub memory_half: Option<chat::OpenPoint>,
    /// The disk under the data directory, measured just before.
    pub disk: Option<disk::Disk>,
    /// Store commits slower than 50 ms in the durable gateway's open-loop run, from its log.
    pub slow_commits: Option<disk::SlowCommits>,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub machine: Machine,
    pub options: Options,
    pub unix_time: u64,
    pub chat_relay: Option<Pair<chat::ClosedLoop>>,
    /// `chat-relay` with `store = "memory"`; its `echo` is the same run as `chat_relay`'s.
    pub chat_relay_memory: Option<Pair<chat::ClosedLoop>>,
    /// `chat-relay` against the NATS peer once more, its clients asking nats-server to
    /// acknowledge every message (`verbose`, its `+OK`), as the gateway acknowledges every
    /// activity: the same frames per hop as the gateway's. In its `nats`; not run when
    /// `--nats-verbose` makes every NATS run so, or without the in-memory run.
    pub chat_relay_nats_acked: Option<Pair<chat::ClosedLoop>>,
    pub open_loop: Option<OpenLoop>,
    pub idle: Option<Pair<idle::Idle>>,
    pub handoff: Option<Pair<handoff::Handoff>>,
    /// The same escalations at a steady rate (half the gateway's burst rate).
    pub handoff_steady: Option<Pair<handoff::Handoff>>,
    /// One entry per call count of the sweep, callers speaking the native protocol.
    pub voice: Option<Vec<Pair<voice::VoicePoint>>>,
    /// The same with callers speaking Twilio's Media Streams.
    pub voice_twilio: Option<Vec<Pair<voice::VoicePoint>>>,
    /// More pairs at the CPU target's call count, after each sweep (`--voice-cpu-repeats`).
    pub voice_cpu: Option<Vec<Pair<voice::VoicePoint>>>,
    pub voice_twilio_cpu: Option<Vec<Pair<voice::VoicePoint>>>,
    /// More pairs at the counts where a sweep's pair had one server hold and the other not
    /// (`--voice-hold-repeats`).
    pub voice_hold: Option<Vec<Pair<voice::VoicePoint>>>,
    pub voice_twilio_hold: Option<Vec<Pair<voice::VoicePoint>>>,
    /// The gateway alone (no baseline).
    pub recovery: Option<recovery::Recovery>,
    /// Why `recovery` has no figures, when it failed.
    pub recovery_error: Option<String>,
    /// `chat-relay` and `handoff` against the gateway alone and as clusters.
    pub cluster: Option<cluster::Cluster>,
    /// Why `cluster` has no figures, when it failed.
    pub cluster_error: Option<String>,
}

/// Runs a scenario against each of `targets` in turn: the gateway first, then the
/// baseline (and the peer). A failure is recorded and the run goes on.
pub(crate) async fn both<T, F, Fut>(name: &str, targets: &[Target], mut f: F) -> Pair<T>
where
    F: FnMut(Target) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut pair = Pair { gateway: None, echo: None, nats: None, errors: Vec::new() };
    for &target in targets {
        say(&format!("{name} · {target}"));
        match f(target).await {
            Ok(r) => match target {
                Target::Gateway => pair.gateway = Some(r),
                Target::Echo => pair.echo = Some(r),
                Target::Nats => pair.nats = Some(r),
            },
            Err(e) => {
                say(&format!("  {name} {target} FAILED: {e:#}"));
                pair.errors.push(format!("{target}: {e:#}"));
            }
        }
    }
    pair
}

/// `chat-relay` against the NATS peer with acknowledgements on, under a label of its own
/// (`chat-relay-acked-nats.log`).
async fn nats_acked(run: &Run) -> Pair<chat::ClosedLoop> {
    nats::set_verbose(true);
    let pair =
        both("chat-relay, acknowledged", &[Target::Nats], |t| chat::chat_relay_as(run, t, "chat-relay-acked")).await;
    nats::set_verbose(false);
    pair
}

/// Runs the chosen scenarios and writes `results.json`, `throughput.md` and
/// `latency.svg` to the output directory.
pub async fn run(opts: Options, launch: Launch, out: PathBuf) -> Result<Results> {
    let machine = Machine::detect();
    let opts = fit_open_files(opts)?;
    say(&format!("machine: {machine}"));
    let run = Run { opts, launch, machine };
    let o = &run.opts;
    let want = |s| o.scenarios.contains(&s);
    let mut results = Results {
        machine: run.machine.clone(),
        options: o.clone(),
        unix_time: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        chat_relay: None,
        chat_relay_memory: None,
        chat_relay_nats_acked: None,
        open_loop: None,
        idle: None,
        handoff: None,
        handoff_steady: None,
        voice: None,
        voice_twilio: None,
        voice_cpu: None,
        voice_twilio_cpu: None,
        voice_hold: None,
        voice_twilio_hold: None,
        recovery: None,
        recovery_error: None,
        cluster: None,
        cluster_error: None,
    };
    if want(Scenario::ChatRelay) {
        let durable = both("chat-relay", &WITH_NATS, |t| chat::chat_relay(&run, t)).await;
        if o.memory_store {
            let (echo, nats) = (durable.echo.clone(), durable.nats.clone());
            let memory = match memory_run(&run) {
                Ok(m) => {
                    say("chat-relay · gateway with store = \"memory\"");
                    match chat::chat_relay(&m, Target::Gateway).await {
                        Ok(g) => Pair { gateway: Some(g), echo, nats, errors: Vec::new() },
                        Err(e) => {
                            say(&format!("  chat-relay memory FAILED: {e:#}"));
                            Pair { gateway: None, echo, nats, errors: vec![format!("gateway: {e:#}")] }
                        }
                    }
                }
                Err(e) => Pair { gateway: None, echo, nats, errors: vec![format!("{e:#}")] },
            };
            results.chat_relay_memory = Some(memory);
            if !nats::verbose() {
                results.chat_relay_nats_acked = Some(nats_acked(&run).await);
            }
        }
        results.chat_relay = Some(durable);
    }
    if want(Scenario::OpenLoop) {
        let measured = results.chat_relay.as_ref().and_then(|p| p.gateway.as_ref()).map(|g| g.round_trips_per_sec);
        let max = o.max_rate.or(measured).context("open-loop needs chat-relay in the same run, or --max-rate")?;
        let rates = chat::rates_from(max, &o.loads);
        say("disk: append + fdatasync under the data directory, 5 s");
        let disk = match disk::probe(&run.launch.run_dir, Duration::from_secs(5)) {
            Ok(d) => {
                say(&format!(
                    "  disk: {} syncs, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                    d.sync.count, d.sync.p50_ms, d.sync.p99_ms, d.sync.max_ms
                ));
                Some(d)
            }
            Err(e) => {
                say(&format!("  disk probe FAILED: {e:#}"));
                None
            }
        };
        let points = both("open-loop", &WITH_NATS, |t| chat::open_loop(&run, t, &rates)).await;
        let slow_commits = disk::slow_commits(&run.launch.run_dir.join("open-loop-gateway.log"));
        let memory_half = if o.memory_store && o.loads.iter().any(|&f| (f - 0.5).abs() < 1e-9) {
            say("open-loop · gateway with store = \"memory\", at ½ max");
            match memory_run(&run) {
                Ok(m) => match chat::open_loop(&m, Target::Gateway, &chat::rates_from(max, &[0.5])).await {
                    Ok(mut p) => p.pop(),
                    Err(e) => {
                        say(&format!("  open-loop memory FAILED: {e:#}"));
                        None
                    }
                },
                Err(e) => {
                    say(&format!("  open-loop memory FAILED: {e:#}"));
                    None
                }
            }
        } else {
            None
        };
        results.open_loop = Some(OpenLoop {
            conversations: o.conversations,
            max_per_sec: max,
            loads: o.loads.clone(),
            points,
            memory_half,
            disk,
            slow_commits,
        });
    }
    if want(Scenario::Idle) {
        results.idle = Some(both("idle", &SERVERS, |t| idle::idle(&run, t)).await);
    }
    if want(Scenario::Handoff) {
        let burst = both("handoff", &SERVERS, |t| handoff::handoff(&run, t, None)).await;
        let rate = handoff::steady_rate(o.handoff_rate, burst.gateway.as_ref());
        results.handoff = Some(burst);
        if let Some(rate) = rate {
            say(&format!(
                "handoff-steady: {rate:.0} escalations a second (half the gateway's burst rate unless --handoff-rate)"
            ));
            results.handoff_steady =
                Some(both("handoff-steady", &SERVERS, |t| handoff::handoff(&run, t, Some(rate))).await);
        }
    }
    if want(Scenario::Voice) {
        for &dialect in &o.voice_dialects {
            let (sweep, hold) = voice::sweep(&run, dialect).await;
            let repeats = Some(voice::cpu_repeats(&run, dialect, &sweep).await);
            let (sweep, hold) = (Some(sweep), Some(hold));
            match dialect {
                voice::Dialect::Native => {
                    (results.voice, results.voice_cpu, results.voice_hold) = (sweep, repeats, hold)
                }
                voice::Dialect::Twilio => {
                    (results.voice_twilio, results.voice_twilio_cpu, results.voice_twilio_hold) = (sweep, repeats, hold)
                }
            }
        }
    }
    if want(Scenario::Recovery) {
        say("recovery · gateway (no baseline)");
        match recovery::recovery(&run).await {
            Ok(r) => results.recovery = Some(r),
            Err(e) => {
                say(&format!("  recovery FAILED: {e:#}"));
                results.recovery_error = Some(format!("{e:#}"));
            }
        }
    }
    if want(Scenario::Cluster) {
        match cluster::cluster(&run).await {
            Ok(c) => results.cluster = Some(c),
            Err(e) => {
                say(&format!("  cluster FAILED: {e:#}"));
                results.cluster_error = Some(format!("{e:#}"));
            }
        }
    }
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("results.json"), serde_json::to_string_pretty(&results)?)?;
    if let Some(ol) = &results.open_loop {
        std::fs::write(out.join("latency.svg"), chart::latency_svg(ol, &results.machine))?;
    }
    let md = report::markdown(&results);
    std::fs::write(out.join("throughput.md"), &md)?;
    println!("{md}");
    let chart = if results.open_loop.is_some() { format!(" and {}/latency.svg", out.display()) } else { String::new() };
    say(&format!("wrote {0}/results.json, {0}/throughput.md{chart}", out.display()));
    Ok(results)
}

/// The same run against the gateway with `store = "memory"`: a copy of its configuration
/// differing only in that, and its own log and data directory.
fn memory_run(run: &Run) -> Result<Run> {
    let text = std::fs::read_to_string(&run.launch.config)
        .with_context(|| format!("reading {}", run.launch.config.display()))?;
    let path = run.launch.run_dir.join("gateway-memory.toml");
    std::fs::write(&path, target::with_memory_store(&text))?;
    let launch = Launch { config: path, variant: Some("memory".to_owned()), ..run.launch.clone() };
    Ok(Run { opts: run.opts.clone(), launch, machine: run.machine.clone() })
}

/// Each side of a connection is a file descriptor in its process: the generator and the
/// server each need one per connection, plus a few. A run the open-file limit cannot hold
/// is scaled down to what it can (the report says so), so the one command runs on any
/// machine; a limit too small for even a hundred connections is an error.
fn fit_open_files(mut o: Options) -> Result<Options> {
    let Some(limit) = target::open_files_limit() else { return Ok(o) };
    let room = usize::try_from(limit.saturating_sub(256)).unwrap_or(usize::MAX);
    if room < 100 {
        bail!("the open-file limit is {limit}; a run needs a few hundred (`ulimit -n 4096`)");
    }
    let want = |s: Scenario| o.scenarios.contains(&s);
    let mut notes = Vec::new();
    let mut fit = |name: &str, n: &mut usize| {
        if *n > room {
            notes.push(format!("{name} {} → {room}", *n));
            *n = room;
        }
    };
    if want(Scenario::ChatRelay) || want(Scenario::OpenLoop) || want(Scenario::Cluster) {
        fit("conversations", &mut o.conversations);
    }
    if want(Scenario::Idle) {
        fit("idle conversations", &mut o.idle_conversations);
    }
    if want(Scenario::Handoff) || want(Scenario::Cluster) {
        fit("handoffs", &mut o.handoffs);
    }
    if want(Scenario::Voice) && o.voice_calls.iter().any(|&n| n > room) {
        notes.push(format!("voice calls above {room} left out"));
        o.voice_calls.retain(|&n| n <= room);
    }
    if want(Scenario::Voice) && o.voice_max_calls > room {
        // Not a note for the report: the extension of a sweep stops where the echo stops
        // holding, usually well below; the progress line says if it stops here instead.
        o.voice_max_calls = room;
    }
    if !notes.is_empty() {
        let note = format!(
            "scaled to the open-file limit of {limit} (`ulimit -n`; scripts/bench.sh raises it as far as the hard limit allows): {}",
            notes.join(", ")
        );
        say(&format!("warning: {note}"));
        o.label = Some(match o.label.take() {
            Some(l) => format!("{l}; {note}"),
            None => note,
        });
    }
    Ok(o)
}
