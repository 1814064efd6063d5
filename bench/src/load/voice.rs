//! `voice`: N concurrent calls, each streaming µ-law 8 kHz in 20 ms frames both ways
//! through the gateway to one voice bot that asks for L16 16 kHz (`/v1/bot?audio=l16/16000`).
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
//!   the gateway transcodes it to µ-law and its pacer plays it to the caller at 1×, one
//!   frame per 20 ms tick. Frames delivered against frames sent, and a latency that is
//!   mostly the wait for the pacer's next tick (0–20 ms).
//!
//! Against the echo baseline the same connections carry the same payloads: each caller's
//! frames come back to it (one hop there and back, where the gateway's is one hop through),
//! and the bot connection sends the same number of 644-byte frames, which come back to it.
//!
//! The criterion for a call count to hold: zero frames lost, reordered or duplicated in
//! either direction, no errors, and p99 caller → bot latency under 5 ms.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use switchboard_codecs::g711::ulaw;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::Run;
use super::progress::{Progress, say};
use super::stats::{Samples, Summary};
use super::target::{Server, Target, own_cpu_secs};
use super::wire::{self, Activity, Sources, Ws};

/// The voice workstream of the bench configuration (`bench/gateway.toml`).
pub const WORKSTREAM: &str = "VoiceWorkStream";
/// The voice bot of the bench configuration.
const BOT_APP_ID: &str = "9a4e2b71-3c5d-4f86-a1b2-c3d4e5f60718";
const BOT_SECRET: &str = "voice-bot-bench-secret";
/// The bot's audio format, as it asks for it.
const BOT_AUDIO: &str = "l16/16000";

const FRAME: Duration = Duration::from_millis(20);
/// µ-law 8 kHz, 20 ms.
const CALLER_FRAME_BYTES: usize = 160;
/// L16 16 kHz, 20 ms.
const BOT_FRAME_BYTES: usize = 640;
/// The p99 caller → bot latency a call count must stay under to hold.
pub const P99_TARGET_MS: f64 = 5.0;

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
    pub calls: usize,
    /// Seconds of streaming measured (after the warm-up).
    pub seconds: f64,
    /// Gateway: caller → bot. Echo: caller → echo → caller.
    pub up: Direction,
    /// Gateway: bot → caller (through the pacer). Echo: bot → echo → bot.
    pub down: Direction,
    /// How late callers sent against their 20 ms schedule: if this grows, the generator
    /// (not the server) fell behind.
    pub send_lag: Summary,
    pub server_cores: f64,
    pub client_cores: f64,
    pub errors: Vec<String>,
}

impl VoicePoint {
    /// Zero loss both ways, no errors, p99 caller → bot under the target.
    pub fn holds(&self) -> bool {
        self.up.intact() && self.down.intact() && self.errors.is_empty() && self.up.latency.p99_ms < P99_TARGET_MS
    }
}

/// The largest call count that holds (`None`: none did).
pub fn largest_holding<'a>(points: impl IntoIterator<Item = &'a VoicePoint>) -> Option<usize> {
    points.into_iter().filter(|p| p.holds()).map(|p| p.calls).max()
}

// ---------------------------------------------------------------------------------------
// Payloads and their sequence marks.

fn mark_of(k: usize) -> u8 {
    (k % LEVELS.len()) as u8
}

/// The nearest level's index to the mean of `samples`.
fn nearest_level(samples: impl Iterator<Item = i16>) -> Option<u8> {
    let (mut sum, mut n) = (0i64, 0i64);
    for s in samples {
        sum += i64::from(s);
        n += 1;
    }
    if n == 0 {
        return None;
    }
    let mean = sum / n;
    (0..LEVELS.len()).min_by_key(|&i| (i64::from(LEVELS[i]) - mean).abs()).map(|i| i as u8)
}

/// The mark of a µ-law frame: the level of its last 2 ms, where the resamplers' step
/// response from the previous frame's level has settled.
fn mark_ulaw(audio: &[u8]) -> Option<u8> {
    let tail = &audio[audio.len().saturating_sub(16)..];
    nearest_level(tail.iter().map(|&c| ulaw::decode(c)))
}

/// The mark of an L16 (little-endian) frame, from its last 2 ms.
fn mark_l16(audio: &[u8]) -> Option<u8> {
    let tail = &audio[audio.len().saturating_sub(64) & !1..];
    nearest_level(tail.chunks_exact(2).map(|s| i16::from_le_bytes([s[0], s[1]])))
}

/// The caller's 8 frames: 20 ms of µ-law at each level.
fn caller_frames() -> Vec<Bytes> {
    LEVELS.iter().map(|&l| Bytes::from(vec![ulaw::encode(l); CALLER_FRAME_BYTES])).collect()
}

/// The echo baseline's bot frame: `[stream][20 ms of L16 16 kHz at the level of k]`.
fn bot_frame(stream: u32, k: usize) -> Bytes {
    let mut v = Vec::with_capacity(4 + BOT_FRAME_BYTES);
    v.extend_from_slice(&stream.to_be_bytes());
    let sample = LEVELS[usize::from(mark_of(k))].to_le_bytes();
    for _ in 0..BOT_FRAME_BYTES / 2 {
        v.extend_from_slice(&sample);
    }
    Bytes::from(v)
}

fn session_start() -> Message {
    Message::text(format!(
        r#"{{"type":"event","name":"session.start","value":{{"workstream":"{WORKSTREAM}","media":{{"encoding":"pcmu","sampleRate":8000}}}}}}"#
    ))
}

fn stream_of(frame: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(frame.get(..4)?.try_into().ok()?))
}

fn stream_in_value(a: &Activity<'_>, path: &[&str]) -> Option<u32> {
    let mut v: serde_json::Value = serde_json::from_str(a.value?.get()).ok()?;
    for key in path {
        v = v.get_mut(*key)?.take();
    }
    u32::try_from(v.as_u64()?).ok()
}

// ---------------------------------------------------------------------------------------
// The run.

/// Counters every task of a run adds to, for the drain and the progress line.
#[derive(Debug, Default)]
struct Counts {
    up_sent: AtomicU64,
    up_received: AtomicU64,
    down_sent: AtomicU64,
    down_received: AtomicU64,
}

impl Counts {
    fn settled(&self) -> bool {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        get(&self.up_received) >= get(&self.up_sent) && get(&self.down_received) >= get(&self.down_sent)
    }
}

/// When callers send, and what counts.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    start: Instant,
    /// Frames sent from here on are measured.
    window: Instant,
    /// No frame is sent from here on.
    end: Instant,
}

/// `voice` at one call count against one server.
pub async fn voice(run: &Run, target: Target, calls: usize) -> Result<VoicePoint> {
    let o = &run.opts;
    let label = format!("voice {target} {calls} calls");
    let server = Server::start(target, &run.launch, "voice").await?;
    let addr = server.addr;
    let counts = Arc::new(Counts::default());
    let (stop_tx, stop) = watch::channel(false);
    let assigned = Arc::new(AtomicUsize::new(0));
    let path = format!("/v1/bot?audio={BOT_AUDIO}");
    let bot_ws = match target {
        Target::Gateway => {
            let token = wire::token(addr, BOT_APP_ID, BOT_SECRET).await?;
            wire::connect(addr, &path, Some(&token), None).await?
        }
        Target::Echo => wire::connect(addr, &path, None, None).await?,
    };
    let (bot_sink, bot_stream) = bot_ws.split();
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Bytes>();
    let writer = tokio::spawn(bot_writer(bot_sink, out_rx, counts.clone()));
    // Against the gateway the bot echoes what it reads; against the echo server its frames
    // are produced by a clock (below) and come back.
    let echo_back = (target == Target::Gateway).then(|| out_tx.clone());
    let reader = tokio::spawn(bot_reader(bot_stream, echo_back, counts.clone(), assigned.clone(), stop.clone()));

    let opened = open_callers(target, addr, calls, &label).await?;
    if target == Target::Gateway {
        let deadline = Instant::now() + Duration::from_secs(30);
        while assigned.load(Ordering::Relaxed) < calls {
            if Instant::now() > deadline {
                bail!("{label}: the bot was assigned {} of {calls} calls", assigned.load(Ordering::Relaxed));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // Any hold audio played before the assignments has been read by now.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let start = Instant::now() + Duration::from_millis(100);
    let sched = Schedule { start, window: start + o.voice_warmup, end: start + o.voice_warmup + o.voice_duration };
    let frames = Arc::new(caller_frames());
    let mut set = JoinSet::new();
    let streams: Vec<u32> = opened.iter().map(|c| c.1).collect();
    for (i, leg) in opened.into_iter().enumerate() {
        let first = sched.start + FRAME.mul_f64(i as f64 / calls as f64);
        set.spawn(caller(leg, frames.clone(), first, sched, counts.clone(), stop.clone()));
    }
    // `out_tx` is held until the end: the bot's connection stays open through the drain.
    let ticker = (target == Target::Echo).then(|| tokio::spawn(bot_clock(out_tx.clone(), streams.clone(), sched)));
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
    let mut callers = Vec::with_capacity(calls);
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
    if callers.len() < calls {
        server.stop().await;
        bail!("{label}: {} callers failed: {}", calls - callers.len(), errors.join("; "));
    }
    let p = tally(target, calls, seconds, sched, &callers, &bot_in, &bot_out, errors, (s1 - s0, c1 - c0));
    // Hang up, then stop the server.
    drop(callers);
    server.stop().await;
    say(&format!(
        "  {label}: up {}/{} frames, {} lost, {} out of sequence, p50 {:.2} ms, p99 {:.2} ms; \
         down {}/{} frames, p99 {:.2} ms; server {:.2} cores, client {:.2}; send lag p99 {:.2} ms{}",
        p.up.received,
        p.up.sent,
        p.up.lost,
        p.up.out_of_sequence,
        p.up.latency.p50_ms,
        p.up.latency.p99_ms,
        p.down.received,
        p.down.sent,
        p.down.latency.p99_ms,
        p.server_cores,
        p.client_cores,
        p.send_lag.p99_ms,
        if p.holds() { "" } else { "  (does not hold)" }
    ));
    Ok(p)
}

/// Joins what every side logged into the two directions.
#[allow(clippy::too_many_arguments)]
fn tally(
    target: Target,
    calls: usize,
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
    for c in callers {
        lag.extend(c.lag.clone());
        let bot_read = bot_in.received.get(&c.stream).unwrap_or(&empty);
        let bot_wrote = bot_out.sent.get(&c.stream).unwrap_or(&empty);
        match target {
            Target::Gateway => {
                up.add(&c.sent, bot_read, sched);
                down.add(bot_wrote, &c.received, sched);
            }
            Target::Echo => {
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
        Target::Echo => (callers_oos, bot_in.out_of_sequence),
    };
    VoicePoint {
        calls,
        seconds,
        up: up.finish(up_oos),
        down: down.finish(down_oos),
        send_lag: lag.summary(),
        server_cores: cpu.0 / seconds,
        client_cores: cpu.1 / seconds,
        errors,
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

/// Opens `n` call legs, each started: `(socket, stream)`. Against the echo server the
/// stream is the caller's index (its `session.start` comes back as is).
async fn open_callers(target: Target, addr: std::net::SocketAddr, n: usize, label: &str) -> Result<Vec<(Ws, u32)>> {
    let opened = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(format!("{label}: calling"), None, opened.clone(), "calls");
    let permits = Arc::new(Semaphore::new(256));
    let sources = Sources::for_connections(n + 1);
    let mut set = JoinSet::new();
    for i in 0..n {
        let permit = permits.clone().acquire_owned().await?;
        let opened = opened.clone();
        set.spawn(async move {
            let r = open_caller(target, addr, sources.pick(i), i).await;
            drop(permit);
            opened.fetch_add(1, Ordering::Relaxed);
            r.map(|c| (i, c))
        });
    }
    let mut legs: Vec<Option<(Ws, u32)>> = (0..n).map(|_| None).collect();
    while let Some(done) = set.join_next().await {
        let (i, leg) = done?.context("opening call legs")?;
        legs[i] = Some(leg);
    }
    progress.finish();
    Ok(legs.into_iter().flatten().collect())
}

async fn open_caller(
    target: Target,
    addr: std::net::SocketAddr,
    source: Option<std::net::Ipv4Addr>,
    i: usize,
) -> Result<(Ws, u32)> {
    let mut attempt = 0;
    let mut ws = loop {
        match wire::connect(addr, "/v1/voice", None, source).await {
            Ok(ws) => break ws,
            Err(_) if attempt < 3 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    };
    ws.send(session_start()).await?;
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg? {
            let a = Activity::parse(t.as_str())?;
            if let Some(e) = a.error() {
                bail!("session.start refused: {e}");
            }
            match target {
                Target::Gateway if a.is_event("session.started") => {
                    let stream = stream_in_value(&a, &["stream"]).context("session.started without value.stream")?;
                    return Ok((ws, stream));
                }
                Target::Echo if a.is_event("session.start") => {
                    return Ok((ws, u32::try_from(i).unwrap_or(u32::MAX)));
                }
                _ => {}
            }
        }
    }
    bail!("connection closed before the call started")
}

/// What one caller saw.
#[derive(Debug)]
struct CallerLog {
    ws: Option<Ws>,
    stream: u32,
    /// When each frame was written.
    sent: Vec<Instant>,
    /// When each audio frame was read.
    received: Vec<Instant>,
    out_of_sequence: u64,
    lag: Samples,
    errors: Vec<String>,
}

async fn caller(
    (ws, stream): (Ws, u32),
    frames: Arc<Vec<Bytes>>,
    first: Instant,
    sched: Schedule,
    counts: Arc<Counts>,
    mut stop: watch::Receiver<bool>,
) -> Result<CallerLog> {
    let (mut sink, mut source) = ws.split();
    let expected = ((sched.end - sched.start).as_millis() / FRAME.as_millis() + 2) as usize;
    let mut log = CallerLog {
        ws: None,
        stream,
        sent: Vec::with_capacity(expected),
        received: Vec::with_capacity(expected),
        out_of_sequence: 0,
        lag: Samples::with_capacity(expected),
        errors: Vec::new(),
    };
    let mut due = first;
    // One timer for the whole call, moved on after each frame (not one per loop turn).
    let timer = tokio::time::sleep_until(due.into());
    tokio::pin!(timer);
    loop {
        let sending = due < sched.end;
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            m = source.next() => match m.context("call leg closed")?? {
                // Nothing comes back before the caller's first frame; hold audio played
                // before the call was assigned does not count.
                Message::Binary(audio) if !log.sent.is_empty() => {
                    let k = log.received.len();
                    log.received.push(Instant::now());
                    if audio.len() != CALLER_FRAME_BYTES || mark_ulaw(&audio) != Some(mark_of(k)) {
                        log.out_of_sequence += 1;
                    }
                    counts.down_received.fetch_add(1, Ordering::Relaxed);
                }
                Message::Text(t) => {
                    if let Ok(a) = Activity::parse(t.as_str())
                        && let Some(e) = a.error()
                        && log.errors.len() < 3
                    {
                        log.errors.push(e);
                    }
                }
                Message::Close(c) => bail!("call leg closed by the server: {c:?}"),
                _ => {}
            },
            _ = &mut timer, if sending => {
                let now = Instant::now();
                if due >= sched.window {
                    log.lag.push(now - due);
                }
                let k = log.sent.len();
                log.sent.push(now);
                counts.up_sent.fetch_add(1, Ordering::Relaxed);
                sink.send(Message::Binary(frames[k % frames.len()].clone())).await?;
                due += FRAME;
                timer.as_mut().reset(due.into());
            }
        }
    }
    log.ws = sink.reunite(source).ok();
    Ok(log)
}

// ---------------------------------------------------------------------------------------
// The bot.

/// What the bot's connection read.
#[derive(Debug, Default)]
struct BotIn {
    received: HashMap<u32, Vec<Instant>>,
    out_of_sequence: u64,
    errors: Vec<String>,
}

/// What the bot's connection wrote: per stream, when each frame was written.
#[derive(Debug, Default)]
struct BotOut {
    sent: HashMap<u32, Vec<Instant>>,
}

type Sink = futures_util::stream::SplitSink<Ws, Message>;
type Source = futures_util::stream::SplitStream<Ws>;

/// Reads the bot's connection until stopped. With `echo_back`, sends every audio frame
/// straight back (the gateway run); the assignments are counted.
async fn bot_reader(
    mut source: Source,
    echo_back: Option<mpsc::UnboundedSender<Bytes>>,
    counts: Arc<Counts>,
    assigned: Arc<AtomicUsize>,
    mut stop: watch::Receiver<bool>,
) -> Result<BotIn> {
    let mut r = BotIn::default();
    loop {
        let m = tokio::select! {
            biased;
            _ = stop.changed() => break,
            m = source.next() => m,
        };
        match m.context("bot connection closed")?? {
            Message::Binary(frame) => {
                let now = Instant::now();
                let Some(stream) = stream_of(&frame) else {
                    r.out_of_sequence += 1;
                    continue;
                };
                let log = r.received.entry(stream).or_default();
                let k = log.len();
                log.push(now);
                if frame.len() != 4 + BOT_FRAME_BYTES || mark_l16(&frame[4..]) != Some(mark_of(k)) {
                    r.out_of_sequence += 1;
                }
                counts.up_received.fetch_add(1, Ordering::Relaxed);
                if let Some(tx) = &echo_back {
                    let _ = tx.send(frame);
                }
            }
            Message::Text(t) => {
                let a = Activity::parse(t.as_str())?;
                if a.is_event("conversation.assigned") && a.from.is_none() {
                    if stream_in_value(&a, &["media", "stream"]).is_none() && r.errors.len() < 10 {
                        r.errors.push("bot: conversation.assigned without value.media.stream".to_owned());
                    }
                    assigned.fetch_add(1, Ordering::Relaxed);
                } else if let Some(e) = a.error()
                    && r.errors.len() < 10
                {
                    r.errors.push(format!("bot: {e}"));
                }
            }
            Message::Close(c) => bail!("bot connection closed by the server: {c:?}"),
            _ => {}
        }
    }
    Ok(r)
}

/// Writes the bot's frames as they are queued, flushing once per batch, and logs when
/// each frame of each stream was written.
async fn bot_writer(mut sink: Sink, mut rx: mpsc::UnboundedReceiver<Bytes>, counts: Arc<Counts>) -> Result<BotOut> {
    let mut out = BotOut::default();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut batch = 0;
        while let Some(frame) = next.take() {
            if let Some(stream) = stream_of(&frame) {
                out.sent.entry(stream).or_default().push(Instant::now());
            }
            counts.down_sent.fetch_add(1, Ordering::Relaxed);
            sink.feed(Message::Binary(frame)).await?;
            batch += 1;
            if batch < 256 {
                next = rx.try_recv().ok();
            }
        }
        sink.flush().await?;
    }
    let _ = sink.close().await;
    Ok(out)
}

/// The echo baseline's bot: the frames the gateway run's bot would send (one per call
/// every 20 ms, spread evenly), on a 1 ms clock.
async fn bot_clock(tx: mpsc::UnboundedSender<Bytes>, streams: Vec<u32>, sched: Schedule) {
    if streams.is_empty() {
        return;
    }
    let per_sec = streams.len() as f64 / FRAME.as_secs_f64();
    tokio::time::sleep_until(sched.start.into()).await;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut sent = 0usize;
    loop {
        tick.tick().await;
        let now = Instant::now().min(sched.end);
        let due = ((now - sched.start).as_secs_f64() * per_sec) as usize;
        while sent < due {
            let (k, i) = (sent / streams.len(), sent % streams.len());
            if tx.send(bot_frame(streams[i], k)).is_err() {
                return;
            }
            sent += 1;
        }
        if now >= sched.end {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use switchboard_codecs::{Format, Framer, Transcoder};

    use super::*;

    /// The marks survive the gateway's path both ways: µ-law 8 kHz → L16 16 kHz to the bot,
    /// and the bot's L16 16 kHz → µ-law 8 kHz re-framed for the caller.
    #[test]
    fn marks_survive_transcoding_both_ways() {
        let frames = caller_frames();
        let mut up = Transcoder::new(Format::PCMU, Format::L16_16K);
        let mut down = Transcoder::new(Format::L16_16K, Format::PCMU);
        let mut framer = Framer::new(Format::PCMU);
        for k in 0..400 {
            assert_eq!(mark_ulaw(&frames[k % 8]), Some(mark_of(k)));
            let mut l16 = Vec::new();
            up.process(&frames[k % 8], &mut l16).unwrap();
            assert_eq!(l16.len(), BOT_FRAME_BYTES);
            assert_eq!(mark_l16(&l16), Some(mark_of(k)), "to the bot, frame {k}");
            let mut back = Vec::new();
            down.process(&l16, &mut back).unwrap();
            framer.push(&back);
            let out: Vec<Bytes> = framer.frames().collect();
            assert_eq!(out.len(), 1);
            assert_eq!(mark_ulaw(&out[0]), Some(mark_of(k)), "back to the caller, frame {k}");
        }
        // A frame out of place is seen.
        let mut l16 = Vec::new();
        up.process(&frames[3], &mut l16).unwrap();
        assert_ne!(mark_l16(&l16), Some(mark_of(400)));
    }

    #[test]
    fn baseline_bot_frames_carry_stream_and_mark() {
        let f = bot_frame(7, 13);
        assert_eq!(f.len(), 4 + BOT_FRAME_BYTES);
        assert_eq!(stream_of(&f), Some(7));
        assert_eq!(mark_l16(&f[4..]), Some(mark_of(13)));
    }

    #[test]
    fn matching_by_order_counts_losses() {
        let t = Instant::now();
        let sched = Schedule { start: t, window: t, end: t + Duration::from_secs(1) };
        let sent: Vec<Instant> = (0..5).map(|i| t + FRAME * i).collect();
        let got: Vec<Instant> = sent.iter().take(4).map(|s| *s + Duration::from_millis(1)).collect();
        let mut x = Tally::default();
        x.add(&sent, &got, sched);
        let d = x.finish(0);
        assert_eq!((d.sent, d.received, d.lost, d.extra), (5, 4, 1, 0));
        assert!(!d.intact());
        assert_eq!(d.latency.count, 4);
        assert_eq!(d.latency.p99_ms, 1.0);
    }
}
