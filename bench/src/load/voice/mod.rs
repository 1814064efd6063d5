//! `voice`: N concurrent calls, each streaming µ-law 8 kHz in 20 ms frames both ways
//! through the gateway to one voice bot that asks for L16 16 kHz (`/v1/bot?audio=l16/16000`;
//! `--voice-bot-audio` picks any format of SPEC §5.3: `pcmu/8000`, the callers' own, has
//! the gateway convert nothing, so the run measures the rest of its path).
//! The callers speak either protocol of the gateway's call legs (`dialect.rs`): the native
//! one (`/v1/voice`, binary audio) or Twilio's Media Streams
//! (`/v1/voice/twilio/VoiceWorkStream`, base64 µ-law in JSON `media` events); each dialect
//! is a sweep of its own, with the same bot, the same audio and the same figures.
//!
//! - **Caller → bot.** Every caller sends a 160-byte µ-law frame every 20 ms (callers are
//!   staggered evenly over the 20 ms); the gateway re-frames, transcodes and resamples it and
//!   the bot reads `[stream][640 bytes of L16 16 kHz]`. The clock runs from the instant the
//!   caller writes frame k to the instant the bot reads frame k of the same stream: the
//!   gateway keeps a stream's frames in order, so frames are matched by their index, and a
//!   lost frame shows as a shortfall at the end. Each frame also carries a coarse sequence
//!   mark that survives transcoding (its audio is a constant level, one of 8, k mod 8), so a
//!   lost or reordered frame in the middle of a stream is seen where it happens.
//! - **Bot → caller.** The bot sends every frame it reads straight back on the same stream;
//!   the gateway transcodes it to µ-law and plays it to the caller at 1×: one frame in
//!   answer to each 20 ms frame the caller sends (the caller's audio clocks its playout),
//!   or from the gateway's pacer while a caller sends none. Frames delivered against frames
//!   sent, and a latency that is mostly the wait for the caller's next frame (0–20 ms). The
//!   caller also times the gap between consecutive frames it receives: what a listener
//!   hears as smooth (20 ms) or broken-up audio.
//!
//! Against the echo baseline the same connections carry the same payloads: each caller's
//! frames come back to it (one hop there and back, where the gateway's is one hop through;
//! a Twilio caller's `media` messages come back as they are and are read as the audio
//! played to it), and the bot connection sends the same number of 644-byte frames, which
//! come back to it.
//!
//! The gateway may refuse a call at its start while its pacer falls behind (`unavailable`).
//! Refused calls are counted and the point runs with the calls that were taken; a native
//! leg is told, a Twilio leg is not (the gateway sends Twilio no errors), so for Twilio the
//! refusals are read from the gateway's `/metrics` and the callers that were never assigned
//! to the bot are the ones refused.
//!
//! The criterion for a call count to hold: no call refused, zero frames lost, reordered or
//! duplicated in either direction, no errors, and p99 caller → bot latency under 5 ms.
//!
//! Each sweep runs the listed call counts, then (up to `--voice-max-calls`) keeps doubling
//! the count while the echo baseline still holds: the machine's limit is where the echo
//! stops holding, and the gateway is measured up to it.
//!
//! The scenario's driver is here; `dialect.rs` speaks the two protocols, `audio.rs` makes
//! and reads the frames' marks, `caller.rs` runs the callers and `bot.rs` the voice bot.

mod audio;
mod bot;
mod caller;
mod dialect;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use switchboard_codecs::g711::{alaw, ulaw};
use switchboard_codecs::{Encoding, Format, l16};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::progress::{Progress, say};
use super::stats::{Samples, Summary};
use super::target::{Server, Target, own_cpu_secs};
use super::wire::{self, Activity, Sources, Ws};
use super::{Pair, Run, SERVERS, both};

pub use audio::format_title;
use audio::*;
use bot::*;
use caller::*;
pub use dialect::Dialect;
use dialect::{CALLER_REF, Heard};

/// The voice workstream of the bench configuration (`bench/gateway.toml`).
pub const WORKSTREAM: &str = "VoiceWorkStream";
/// The voice bot of the bench configuration.
const BOT_APP_ID: &str = "9a4e2b71-3c5d-4f86-a1b2-c3d4e5f60718";
const BOT_SECRET: &str = "voice-bot-bench-secret";

const FRAME: Duration = Duration::from_millis(20);
/// µ-law 8 kHz, 20 ms.
const CALLER_FRAME_BYTES: usize = 160;
/// The p99 caller → bot latency a call count must stay under to hold.
pub const P99_TARGET_MS: f64 = 5.0;
/// The target for the audio a caller hears: the p99 gap between consecutive
/// bot → caller frames at the largest count that holds (20 ms is perfect pacing).
pub const GAP_P99_TARGET_MS: f64 = 25.0;

/// The levels a frame's audio is held at, by frame index mod 8: far enough apart that
/// G.711 quantisation and the resamplers' ripple cannot move one onto its neighbour.
const LEVELS: [i16; 8] = [-14000, -10000, -6000, -2000, 2000, 6000, 10000, 14000];

/// One direction of the audio of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Direction {
    /// Frames written, in the whole run (warm-up included).
    pub sent: u64,
    /// Frames read at the other end.
    pub received: u64,
    /// Per stream, frames sent and never read (summed over streams).
    pub lost: u64,
    /// Per stream, frames read beyond those sent (summed over streams).
    pub extra: u64,
    /// Frames whose sequence mark was not the one due next on their stream: each loss or
    /// reordering in the middle of a stream shows here.
    pub out_of_sequence: u64,
    /// Frames sent in the measured window, from the sender's write to the receiver's read.
    pub latency: Summary,
}

impl Direction {
    pub fn intact(&self) -> bool {
        self.lost == 0 && self.extra == 0 && self.out_of_sequence == 0
    }
}

/// One call count, on one server.
#[derive(Debug, Clone, Serialize)]
pub struct VoicePoint {
    pub dialect: Dialect,
    /// The bot's audio format.
    #[serde(serialize_with = "as_text")]
    pub bot_audio: Format,
    /// Calls attempted.
    pub calls: usize,
    /// Calls the gateway refused at their start (`unavailable`); the point ran with the
    /// others.
    pub refused: usize,
    /// Seconds of streaming measured (after the warm-up).
    pub seconds: f64,
    /// Gateway: caller → bot. Echo: caller → echo → caller.
    pub up: Direction,
    /// Gateway: bot → caller (played at 1×). Echo: bot → echo → bot.
    pub down: Direction,
    /// The time between consecutive frames arriving at a caller, from the measured window
    /// on. Gateway: the bot's audio as the gateway plays it. Echo: the caller's own frames
    /// back (its 20 ms schedule, and whatever jitter the echo adds).
    pub caller_gap: Summary,
    /// How late callers sent against their 20 ms schedule: if this grows, the generator
    /// (not the server) fell behind.
    pub send_lag: Summary,
    pub server_cores: f64,
    pub client_cores: f64,
    pub errors: Vec<String>,
}

impl VoicePoint {
    /// No call refused, zero loss both ways, no errors, p99 caller → bot under the target.
    pub fn holds(&self) -> bool {
        self.refused == 0
            && self.up.intact()
            && self.down.intact()
            && self.errors.is_empty()
            && self.up.latency.p99_ms < P99_TARGET_MS
    }
}

/// A point at `calls` whose p99 caller → bot is `p99` ms, nothing lost (for tests).
#[cfg(test)]
pub(crate) fn test_point(calls: usize, p99: f64) -> VoicePoint {
    let summary = super::stats::Samples::with_capacity(1).summary();
    let latency = Summary { p99_ms: p99, ..summary };
    let direction = Direction { sent: 1, received: 1, lost: 0, extra: 0, out_of_sequence: 0, latency };
    VoicePoint {
        dialect: Dialect::Native,
        bot_audio: Format::L16_16K,
        calls,
        refused: 0,
        seconds: 1.0,
        up: direction.clone(),
        down: direction,
        caller_gap: summary,
        send_lag: summary,
        server_cores: 0.0,
        client_cores: 0.0,
        errors: Vec::new(),
    }
}

/// A value as its `Display` text (a bot's [`Format`] as `l16/16000`).
pub fn as_text<T: std::fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// The largest call count that holds (`None`: none did). Where one server has several
/// points at a count (the sweep's pair and the repeats of a split verdict), it holds there
/// if most of them do.
pub fn largest_holding<'a>(points: impl IntoIterator<Item = &'a VoicePoint>) -> Option<usize> {
    let mut by_count = std::collections::BTreeMap::<usize, (usize, usize)>::new();
    for p in points {
        let (held, all) = by_count.entry(p.calls).or_default();
        *held += usize::from(p.holds());
        *all += 1;
    }
    by_count.into_iter().filter(|(_, (held, all))| 2 * held > *all).map(|(n, _)| n).max()
}

// ---------------------------------------------------------------------------------------
// The sweep.

/// The count after `last` when a sweep goes on upward: double it, up to `max`.
pub fn next_count(last: usize, max: usize) -> Option<usize> {
    let next = last.saturating_mul(2).min(max);
    (next > last).then_some(next)
}

/// One dialect's sweep: the listed call counts against both servers, then doubling while
/// the echo baseline holds at the last count, up to `voice_max_calls`. Where one server
/// holds a count and the other does not, `voice_hold_repeats` more alternating pairs run
/// there at once (the second list), and each server holds it if most of its pairs did: on
/// a shared machine a 4 s pair near the limit can go either way.
pub async fn sweep(run: &Run, dialect: Dialect) -> (Vec<Pair<VoicePoint>>, Vec<Pair<VoicePoint>>) {
    let o = &run.opts;
    let began = Instant::now();
    let mut counts = o.voice_calls.clone();
    let mut points = Vec::new();
    let mut repeats = Vec::new();
    let mut i = 0;
    while let Some(&n) = counts.get(i) {
        let extended = i >= o.voice_calls.len();
        say(&format!(
            "{} sweep: {}point {} of {}{}, {n} calls ({:.0} s into the sweep)",
            dialect.title(),
            if extended { "extended, " } else { "" },
            i + 1,
            counts.len(),
            if counts.last().is_some_and(|&last| next_count(last, o.voice_max_calls).is_some()) {
                " or more"
            } else {
                ""
            },
            began.elapsed().as_secs_f64()
        ));
        let p = both(&format!("{}, {n} calls", dialect.title()), &SERVERS, |t| voice(run, t, dialect, n)).await;
        let split = p.both().is_some_and(|(g, e)| g.holds() != e.holds());
        let first_repeat = repeats.len();
        points.push(p);
        if split {
            for k in 0..o.voice_hold_repeats {
                say(&format!(
                    "  one server held {n} calls and the other did not: pair {} of {} more",
                    k + 1,
                    o.voice_hold_repeats
                ));
                let label = format!("{}, {n} calls, pair {}", dialect.title(), k + 2);
                repeats.push(both(&label, &SERVERS, |t| voice(run, t, dialect, n)).await);
            }
        }
        // The echo's pairs at this count: the sweep's, and the repeats just run.
        let at_n = points.last().into_iter().chain(&repeats[first_repeat..]);
        let echo_holds = largest_holding(at_n.filter_map(|p| p.echo.as_ref())) == Some(n);
        i += 1;
        if i == counts.len() {
            match next_count(n, o.voice_max_calls) {
                Some(next) if echo_holds => {
                    say(&format!("  the echo baseline holds {n} calls: going on to {next}"));
                    counts.push(next);
                }
                Some(_) => say(&format!("  the echo baseline does not hold {n} calls: the sweep ends there")),
                None if echo_holds => say(&format!(
                    "  the echo baseline still holds {n} calls, the most this run allows (--voice-max-calls, open files)"
                )),
                None => {}
            }
        }
    }
    say(&format!("{} sweep: {} points in {:.0} s", dialect.title(), points.len(), began.elapsed().as_secs_f64()));
    (points, repeats)
}

/// More alternating gateway/echo pairs at the CPU target's call count, after a sweep that
/// measured it (none otherwise: the count was left out, or `--voice-cpu-repeats 0`).
pub async fn cpu_repeats(run: &Run, dialect: Dialect, sweep: &[Pair<VoicePoint>]) -> Vec<Pair<VoicePoint>> {
    let (n, repeats) = (run.opts.voice_cpu_calls, run.opts.voice_cpu_repeats);
    if !sweep.iter().any(|p| p.gateway.as_ref().is_some_and(|g| g.calls == n)) {
        return Vec::new();
    }
    let mut pairs = Vec::with_capacity(repeats);
    for k in 0..repeats {
        say(&format!("{} CPU at {n} calls: pair {} of {repeats} more", dialect.title(), k + 1));
        let label = format!("{}, {n} calls, CPU pair {}", dialect.title(), k + 2);
        pairs.push(both(&label, &SERVERS, |t| voice(run, t, dialect, n)).await);
    }
    pairs
}

/// The CPU target's figure: each pair's gateway and echo cores at `calls`, the sweep's
/// first and the repeats after, and the median of their ratios.
pub fn cpu_pairs(
    calls: usize,
    sweep: &[Pair<VoicePoint>],
    repeats: &[Pair<VoicePoint>],
) -> (Vec<(f64, f64)>, Option<f64>) {
    let pairs: Vec<(f64, f64)> = sweep
        .iter()
        .chain(repeats)
        .filter_map(|p| p.both())
        .filter(|(g, _)| g.calls == calls)
        .map(|(g, e)| (g.server_cores, e.server_cores))
        .collect();
    let median = super::stats::median(pairs.iter().map(|(g, e)| g / e));
    (pairs, median)
}

/// The CPU target: the gateway's cores per call against the echo's.
pub const CPU_RATIO_TARGET: f64 = 1.3;

// ---------------------------------------------------------------------------------------
// Payloads and their sequence marks.

/// Counters every task of a run adds to, for the drain and the progress line.
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) up_sent: AtomicU64,
    pub(super) up_received: AtomicU64,
    pub(super) down_sent: AtomicU64,
    pub(super) down_received: AtomicU64,
}

impl Counts {
    fn settled(&self) -> bool {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        get(&self.up_received) >= get(&self.up_sent) && get(&self.down_received) >= get(&self.down_sent)
    }
}

/// When callers send, and what counts.
#[derive(Clone, Copy, Debug)]
pub(super) struct Schedule {
    pub(super) start: Instant,
    /// Frames sent from here on are measured.
    pub(super) window: Instant,
    /// No frame is sent from here on.
    pub(super) end: Instant,
}

/// `voice` at one call count against one server, the callers speaking `dialect`.
pub async fn voice(run: &Run, target: Target, dialect: Dialect, calls: usize) -> Result<VoicePoint> {
    let o = &run.opts;
    let label = format!("{} {target} {calls} calls", dialect.title());
    let server = Server::start(target, &run.launch, &format!("voice-{dialect}")).await?;
    let addr = server.addr;
    let counts = Arc::new(Counts::default());
    let (stop_tx, stop) = watch::channel(false);
    let assigned = Arc::new(Assignments::default());
    let path = format!("/v1/bot?audio={}", o.voice_bot_audio);
    let bot_ws = match target {
        Target::Gateway => {
            let token = wire::token(addr, BOT_APP_ID, BOT_SECRET).await?;
            wire::connect(addr, &path, Some(&token), None).await?
        }
        Target::Echo => wire::connect(addr, &path, None, None).await?,
        Target::Nats => bail!("{label}: the NATS peer runs chat-relay and open-loop only"),
    };
    let (bot_sink, bot_stream) = bot_ws.split();
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Bytes>();
    let writer = tokio::spawn(bot_writer(bot_sink, out_rx, counts.clone()));
    // Against the gateway the bot echoes what it reads; against the echo server its frames
    // are produced by a clock (below) and come back.
    let echo_back = (target == Target::Gateway).then(|| out_tx.clone());
    let reader = tokio::spawn(bot_reader(
        bot_stream,
        o.voice_bot_audio,
        echo_back,
        counts.clone(),
        assigned.clone(),
        stop.clone(),
    ));

    let (mut legs, mut refused) = open_callers(target, dialect, addr, calls, &label).await?;
    if target == Target::Gateway {
        refused += await_assignments(addr, dialect, &assigned, &mut legs, &label).await?;
    }
    if refused > 0 {
        say(&format!(
            "  {label}: the gateway refused {refused} calls at their start; running the other {}",
            legs.len()
        ));
    }
    // Any hold audio played before the assignments has been read by now.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let start = Instant::now() + Duration::from_millis(100);
    let sched = Schedule { start, window: start + o.voice_warmup, end: start + o.voice_warmup + o.voice_duration };
    let frames = caller_frames();
    let accepted = legs.len();
    let mut set = JoinSet::new();
    let mut streams = Vec::with_capacity(accepted);
    for (k, leg) in legs.into_iter().enumerate() {
        let stream = leg.stream.context("a call leg without a stream")?;
        streams.push(stream);
        let first = sched.start + FRAME.mul_f64(k as f64 / accepted as f64);
        let media = dialect.media(leg.index, &frames);
        set.spawn(caller((leg.ws, stream), dialect, media, first, sched, counts.clone(), stop.clone()));
    }
    // `out_tx` is held until the end: the bot's connection stays open through the drain.
    let ticker =
        (target == Target::Echo).then(|| tokio::spawn(bot_clock(out_tx.clone(), o.voice_bot_audio, streams, sched)));
    let shown = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(label.clone(), Some(sched.end - Instant::now()), shown.clone(), "frames in");
    let mirror = {
        let (counts, shown) = (counts.clone(), shown.clone());
        tokio::spawn(async move {
            loop {
                shown.store(counts.up_received.load(Ordering::Relaxed), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    tokio::time::sleep_until(sched.window.into()).await;
    let (s0, c0) = (server.cpu_secs()?, own_cpu_secs()?);
    tokio::time::sleep_until(sched.end.into()).await;
    let seconds = o.voice_duration.as_secs_f64();
    let (s1, c1) = (server.cpu_secs()?, own_cpu_secs()?);
    // Drain: what is in flight lands, and the pacer plays out what it has queued. The
    // counts must agree twice 100 ms apart (a frame read by the bot is sent back after).
    let drain_until = Instant::now() + Duration::from_secs(3);
    let mut agreed = 0;
    while agreed < 2 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        agreed = if counts.settled() { agreed + 1 } else { 0 };
    }
    if let Some(t) = ticker {
        t.abort();
    }
    let _ = stop_tx.send(true);
    drop(out_tx);
    mirror.abort();
    progress.finish();

    let mut errors = Vec::new();
    let mut callers = Vec::with_capacity(accepted);
    while let Some(r) = set.join_next().await {
        match r? {
            Ok(c) => callers.push(c),
            Err(e) if errors.len() < 10 => errors.push(format!("caller: {e:#}")),
            Err(_) => {}
        }
    }
    let bot_in = match tokio::time::timeout(Duration::from_secs(5), reader).await {
        Ok(r) => r??,
        Err(_) => bail!("{label}: the bot's reader did not stop"),
    };
    let bot_out = writer.await??;
    errors.extend(bot_in.errors.iter().cloned());
    for c in &mut callers {
        errors.append(&mut c.errors);
    }
    errors.truncate(10);
    if callers.len() < accepted {
        server.stop().await;
        bail!("{label}: {} callers failed: {}", accepted - callers.len(), errors.join("; "));
    }
    let p = tally(
        target,
        (dialect, o.voice_bot_audio, calls, refused),
        seconds,
        sched,
        &callers,
        &bot_in,
        &bot_out,
        errors,
        (s1 - s0, c1 - c0),
    );
    // Hang up, then stop the server.
    drop(callers);
    server.stop().await;
    say(&format!(
        "  {label}: {}up {}/{} frames, {} lost, {} out of sequence, p50 {:.2} ms, p99 {:.2} ms; \
         down {}/{} frames, p99 {:.2} ms, gap p99 {:.2} ms; server {:.2} cores, client {:.2}; send lag p99 {:.2} ms{}",
        if p.refused > 0 { format!("{} refused; ", p.refused) } else { String::new() },
        p.up.received,
        p.up.sent,
        p.up.lost,
        p.up.out_of_sequence,
        p.up.latency.p50_ms,
        p.up.latency.p99_ms,
        p.down.received,
        p.down.sent,
        p.down.latency.p99_ms,
        p.caller_gap.p99_ms,
        p.server_cores,
        p.client_cores,
        p.send_lag.p99_ms,
        if p.holds() { "" } else { "  (does not hold)" }
    ));
    Ok(p)
}

/// Waits until the bot has been assigned every call the gateway took, and returns how many
/// more it refused than the callers were told of. Native callers know their stream and
/// were told of a refusal. Twilio callers are told neither: each learns its stream from the
/// bot's assignments, and the calls never assigned are the ones refused, as many as the
/// gateway's `/metrics` counts (they are dropped from `legs`).
async fn await_assignments(
    addr: std::net::SocketAddr,
    dialect: Dialect,
    assigned: &Assignments,
    legs: &mut Vec<Leg>,
    label: &str,
) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = 0;
    loop {
        let missing = legs.len().saturating_sub(assigned.count());
        if missing == 0 {
            break;
        }
        if dialect == Dialect::Twilio {
            refused = wire::voice_calls_refused(addr).await?;
            if refused >= missing {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("{label}: the bot was assigned {} of {} calls ({refused} refused)", assigned.count(), legs.len());
        }
        tokio::time::sleep(Duration::from_millis(if dialect == Dialect::Twilio { 200 } else { 5 })).await;
    }
    if dialect == Dialect::Native {
        return Ok(0);
    }
    // Refused legs are hung up here (the gateway would close them at its handshake
    // timeout); the rest learn their stream.
    let before = legs.len();
    legs.retain_mut(|leg| {
        leg.stream = assigned.stream_of_caller(leg.index);
        leg.stream.is_some()
    });
    let dropped = before - legs.len();
    if dropped != refused {
        bail!("{label}: {dropped} calls were never assigned, and the gateway counts {refused} refused");
    }
    Ok(dropped)
}

/// Joins what every side logged into the two directions.
// Every side's log meets the schedule here, once; a struct would only name them again.
#[allow(clippy::too_many_arguments)]
fn tally(
    target: Target,
    (dialect, bot_audio, calls, refused): (Dialect, Format, usize, usize),
    seconds: f64,
    sched: Schedule,
    callers: &[CallerLog],
    bot_in: &BotIn,
    bot_out: &BotOut,
    errors: Vec<String>,
    cpu: (f64, f64),
) -> VoicePoint {
    let empty = Vec::new();
    let mut up = Tally::default();
    let mut down = Tally::default();
    let mut lag = Samples::with_capacity(calls * 300);
    let mut gap = Samples::with_capacity(calls * 300);
    for c in callers {
        lag.extend(c.lag.clone());
        gaps(&c.received, sched, &mut gap);
        let bot_read = bot_in.received.get(&c.stream).unwrap_or(&empty);
        let bot_wrote = bot_out.sent.get(&c.stream).unwrap_or(&empty);
        match target {
            Target::Gateway => {
                up.add(&c.sent, bot_read, sched);
                down.add(bot_wrote, &c.received, sched);
            }
            // (No NATS run gets this far: `voice` refuses the target.)
            Target::Echo | Target::Nats => {
                up.add(&c.sent, &c.received, sched);
                down.add(bot_wrote, bot_read, sched);
            }
        }
    }
    // The bot's out-of-sequence frames are on the up direction against the gateway (it
    // reads the callers' audio) and on the down direction against the echo (its own).
    let callers_oos: u64 = callers.iter().map(|c| c.out_of_sequence).sum();
    let (up_oos, down_oos) = match target {
        Target::Gateway => (bot_in.out_of_sequence, callers_oos),
        Target::Echo | Target::Nats => (callers_oos, bot_in.out_of_sequence),
    };
    VoicePoint {
        dialect,
        bot_audio,
        calls,
        refused,
        seconds,
        up: up.finish(up_oos),
        down: down.finish(down_oos),
        caller_gap: gap.summary(),
        send_lag: lag.summary(),
        server_cores: cpu.0 / seconds,
        client_cores: cpu.1 / seconds,
        errors,
    }
}

/// The gaps between consecutive frames arriving at a caller, each one timed from a frame
/// that arrived in the measured window or after (the drain, while the pacer plays out what
/// it has queued, is audio the caller hears too).
fn gaps(arrivals: &[Instant], sched: Schedule, out: &mut Samples) {
    for w in arrivals.windows(2) {
        if w[0] >= sched.window {
            out.push(w[1].saturating_duration_since(w[0]));
        }
    }
}

#[derive(Default)]
struct Tally {
    sent: u64,
    received: u64,
    lost: u64,
    extra: u64,
    latency: Samples,
}

impl Tally {
    /// One stream: the k-th frame read is the k-th written.
    fn add(&mut self, sent: &[Instant], received: &[Instant], sched: Schedule) {
        self.sent += sent.len() as u64;
        self.received += received.len() as u64;
        self.lost += sent.len().saturating_sub(received.len()) as u64;
        self.extra += received.len().saturating_sub(sent.len()) as u64;
        for (t0, t1) in sent.iter().zip(received) {
            if *t0 >= sched.window && *t0 < sched.end {
                self.latency.push(t1.saturating_duration_since(*t0));
            }
        }
    }

    fn finish(self, out_of_sequence: u64) -> Direction {
        Direction {
            sent: self.sent,
            received: self.received,
            lost: self.lost,
            extra: self.extra,
            out_of_sequence,
            latency: self.latency.summary(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Callers.
