//! `switchboard-load`: benchmarked throughput runs of the gateway against an echo baseline
//! measured in the same run. See BENCHMARKS.md and `scripts/bench.sh`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use switchboard_bench::load::target::{Launch, write_default_config};
use switchboard_bench::load::{self, Options, Scenario};

/// Load generator for Switchboard: starts the gateway and the echo baseline on loopback and
/// reports every figure as gateway, baseline and ratio (chat-relay and open-loop also against
/// nats-server as a peer; `--scenarios cluster` runs chat-relay and handoff against the
/// gateway alone and as clusters of one and three nodes on nats-server with JetStream).
#[derive(Debug, Parser)]
#[command(name = "switchboard-load", version, args_override_self = true)]
struct Args {
    /// Scenarios to run, comma-separated: chat-relay, open-loop, idle, handoff, voice;
    /// recovery (not in the default run: the gateway only, and long); cluster (not in the
    /// default run: chat-relay and handoff against the gateway alone, as a one-node cluster
    /// and as three nodes, on nats-server with JetStream).
    #[arg(long, value_delimiter = ',', default_value = "chat-relay,open-loop,idle,handoff,voice")]
    scenarios: Vec<Scenario>,
    /// The `switchboard` binary (default: next to this one).
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// The `switchboard-echo` binary (default: next to this one).
    #[arg(long)]
    echo: Option<PathBuf>,
    /// `nats-server`, the peer of chat-relay and open-loop and the JetStream server of cluster
    /// (default: `nats-server` on PATH; Debian's package `nats-server`).
    #[arg(long, default_value = "nats-server")]
    nats: PathBuf,
    /// The NATS peer's clients ask for an acknowledgement (`+OK`) of every message they
    /// publish (`verbose`), as the gateway acknowledges every activity; off by default, as
    /// NATS clients run in production (chat-relay then runs the peer once more with it on).
    #[arg(long)]
    nats_verbose: bool,
    /// Gateway configuration (default: the bench configuration built into this binary).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where results.json, throughput.md, latency.svg and the servers' logs go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Conversations in chat-relay (cluster's too) and open-loop.
    #[arg(long, default_value_t = 1000)]
    conversations: usize,
    /// Characters of text per customer message.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// chat-relay: seconds of warm-up, then of measurement.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// open-loop: seconds of warm-up, then of measurement, at each offered load.
    #[arg(long, default_value_t = 1.0)]
    point_warmup: f64,
    #[arg(long, default_value_t = 5.0)]
    point_duration: f64,
    /// open-loop: offered loads as fractions of the gateway's chat-relay maximum.
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.25,0.5,0.75,0.9")]
    loads: Vec<f64>,
    /// open-loop without chat-relay: the maximum (round trips per second) loads scale by.
    #[arg(long)]
    max_rate: Option<f64>,
    /// Open conversations in idle (100000 for the 2 GiB target: needs ~100,300 open files).
    #[arg(long, default_value_t = 10_000)]
    idle_conversations: usize,
    /// Escalations in the handoff burst (cluster's too).
    #[arg(long, default_value_t = 10_000)]
    handoffs: usize,
    /// Escalations a second in handoff's steady run (default: half the gateway's burst rate;
    /// in cluster, half the slowest burst rate of the gateway alone and the clusters).
    #[arg(long)]
    handoff_rate: Option<f64>,
    /// chat-relay: skip the second gateway run with `store = "memory"`.
    #[arg(long)]
    no_memory_store: bool,
    /// voice: the call counts of the sweep, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,250,500,1000")]
    voice_calls: Vec<usize>,
    /// voice: the callers' protocols, one sweep each, comma-separated: native (/v1/voice),
    /// twilio (Twilio Media Streams, /v1/voice/twilio/VoiceWorkStream).
    #[arg(long, value_delimiter = ',', default_value = "native,twilio")]
    voice_dialects: Vec<load::voice::Dialect>,
    /// voice: the bot's audio format, any of SPEC §5.3's: l16/16000 (what a speech
    /// recogniser takes; the gateway transcodes and resamples both ways) or pcmu/8000 (the
    /// callers' own format: no conversion, the cost of the rest of the path), …
    #[arg(long, default_value = "l16/16000")]
    voice_bot_audio: switchboard_codecs::Format,
    /// voice: after the listed counts, keep doubling the call count while the echo baseline
    /// holds, up to this many calls (and the open-file limit); 0 runs the listed counts only.
    #[arg(long, default_value_t = 4000)]
    voice_max_calls: usize,
    /// voice: seconds of streaming before the measurement, then measured, at each call count.
    #[arg(long, default_value_t = 1.0)]
    voice_warmup: f64,
    #[arg(long, default_value_t = 4.0)]
    voice_duration: f64,
    /// voice: the call count at which the server CPU is held to its target (≤ 1.3× the
    /// echo's).
    #[arg(long, default_value_t = 500)]
    voice_cpu_calls: usize,
    /// voice: alternating gateway/echo pairs run at --voice-cpu-calls after each sweep, on
    /// top of the sweep's own: the CPU ratio is their median, as one 4 s pair on a shared
    /// machine moves by a tenth between runs. 0: the sweep's pair alone.
    #[arg(long, default_value_t = 2)]
    voice_cpu_repeats: usize,
    /// voice: alternating gateway/echo pairs run again at a call count where the sweep's
    /// pair had one server hold and the other not: each server then holds there if it did
    /// in most of the pairs. 0: the sweep's pair alone decides.
    #[arg(long, default_value_t = 2)]
    voice_hold_repeats: usize,
    /// recovery: open conversations in the store when the gateway is killed.
    #[arg(long, default_value_t = 100_000)]
    recovery_conversations: usize,
    /// recovery: customer messages in each (each acknowledged; the bot answers each one).
    #[arg(long, default_value_t = 10)]
    recovery_messages: usize,
    /// recovery: customers that resume after the restart to check their whole transcript.
    #[arg(long, default_value_t = 100)]
    recovery_sample: usize,
    /// RUST_LOG for the gateway (default: info, and debug for the store, which logs each
    /// commit slower than 50 ms: open-loop counts them)
    #[arg(long)]
    gateway_log: Option<String>,
    /// Worker threads of the generator's runtime (default: one per core).
    #[arg(long)]
    client_threads: Option<usize>,
    /// Free text for the report, such as the commit measured.
    #[arg(long)]
    label: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    load::nats::set_verbose(args.nats_verbose);
    // The command as a reader would type it: the program by name, not by its path here.
    let command = std::iter::once("switchboard-load".to_owned())
        .chain(std::env::args().skip(1).map(|a| if a.contains(' ') { format!("'{a}'") } else { a }))
        .collect::<Vec<_>>();
    let here = std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from)).unwrap_or_default();
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("cannot create {}: {e}", args.out.display());
        return ExitCode::from(1);
    }
    let config = match &args.config {
        Some(c) => c.clone(),
        None => match write_default_config(&args.out) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cannot write the bench configuration: {e}");
                return ExitCode::from(1);
            }
        },
    };
    let launch = Launch {
        gateway: args.gateway.clone().unwrap_or_else(|| here.join("switchboard")),
        echo: args.echo.clone().unwrap_or_else(|| here.join("switchboard-echo")),
        nats: args.nats.clone(),
        config,
        run_dir: args.out.clone(),
        gateway_log: Some(args.gateway_log.clone().unwrap_or_else(|| "info,switchboard::store=debug".to_owned())),
        variant: None,
        cluster: None,
    };
    let opts = Options {
        scenarios: args.scenarios,
        conversations: args.conversations,
        payload: args.payload,
        warmup: Duration::from_secs_f64(args.warmup),
        duration: Duration::from_secs_f64(args.duration),
        point_warmup: Duration::from_secs_f64(args.point_warmup),
        point_duration: Duration::from_secs_f64(args.point_duration),
        loads: args.loads,
        max_rate: args.max_rate,
        idle_conversations: args.idle_conversations,
        handoffs: args.handoffs,
        handoff_rate: args.handoff_rate,
        memory_store: !args.no_memory_store,
        voice_calls: args.voice_calls,
        voice_dialects: args.voice_dialects,
        voice_bot_audio: args.voice_bot_audio,
        voice_max_calls: args.voice_max_calls,
        voice_warmup: Duration::from_secs_f64(args.voice_warmup),
        voice_duration: Duration::from_secs_f64(args.voice_duration),
        voice_cpu_calls: args.voice_cpu_calls,
        voice_cpu_repeats: args.voice_cpu_repeats,
        voice_hold_repeats: args.voice_hold_repeats,
        recovery_conversations: args.recovery_conversations,
        recovery_messages: args.recovery_messages,
        recovery_sample: args.recovery_sample,
        label: args.label,
        command: command.join(" "),
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.client_threads {
        rt.worker_threads(n);
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(load::run(opts, launch, args.out)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard-load: {e:#}");
            ExitCode::from(1)
        }
    }
}
