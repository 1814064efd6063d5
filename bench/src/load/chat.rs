//! `chat-relay` and `open-loop`: customers messaging an echo bot through the gateway, and
//! the same customers, connections and payloads against the echo baseline and the NATS peer.
//!
//! Through the gateway a round trip is two hops (customer → gateway → bot → gateway →
//! customer, with an `ack` to each sender); against the echo server it is one. A customer
//! sends, skips its `ack`, and stops the clock at the first `message` that comes back.
//!
//! Against the NATS peer a round trip is two hops through the broker as well: customer `i`
//! publishes its message on `chat.bot.<i>` with its own `chat.cust.<i>` as the reply
//! subject, the bot (subscribed to `chat.bot.>` on one connection) publishes the same
//! payload there, and the clock stops at that `MSG`. The loops are the same for every
//! target; a [`Talker`] carries what differs (the frame sent, how answers are read).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};

use super::nats;
use super::peers::{self, EchoBot, Member, NatsBot, Peer};
use super::progress::{Progress, say};
use super::stats::{Samples, Summary};
use super::target::{Server, Target, own_cpu_secs};
use super::wire::{self, Activity, Sources, Ws};
use super::{Options, Run};

/// A closed-loop run: each customer keeps one message in flight.
#[derive(Debug, Clone, Serialize)]
pub struct ClosedLoop {
    pub conversations: usize,
    pub payload_bytes: usize,
    pub seconds: f64,
    pub round_trips: u64,
    pub round_trips_per_sec: f64,
    pub latency: Summary,
    /// CPU the server used per second of measurement (1.0 = one core; a cluster's summed
    /// over its processes).
    pub server_cores: f64,
    /// The server's resident memory at the end of the measurement (a cluster's summed).
    pub server_rss_kib: u64,
    pub client_cores: f64,
    pub errors: Vec<String>,
}

impl ClosedLoop {
    /// The server's CPU per round trip, in µs.
    pub fn cpu_per_trip_us(&self) -> f64 {
        self.server_cores / self.round_trips_per_sec * 1e6
    }
}

/// One offered rate of an open-loop run.
#[derive(Debug, Clone, Serialize)]
pub struct OpenPoint {
    pub offered_per_sec: f64,
    pub achieved_per_sec: f64,
    pub latency: Summary,
    /// How late the generator sent, against its schedule: if this grows, the client (not
    /// the server) was the bottleneck.
    pub send_lag: Summary,
    /// Messages sent in the measured window with no reply within 2 s of the end.
    pub unanswered: u64,
    pub server_cores: f64,
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const DONE: u8 = 2;

/// What a server and its clients for a chat scenario are.
struct Setup {
    server: Server,
    bot: Option<Bot>,
    talkers: Vec<Talker>,
}

/// The bot's connection: through the gateway, or to the NATS peer (the echo has none).
enum Bot {
    Gateway(Peer<EchoBot>),
    Nats(Peer<NatsBot>),
}

/// A customer's connection, with the frame it sends and how it reads what comes back.
struct Talker {
    ws: Ws,
    message: Message,
    replies: Replies,
}

/// How a customer reads the server's frames.
enum Replies {
    /// The gateway's and the echo's: an activity per text frame, a `message` the answer.
    Activities,
    /// nats-server's: a byte stream of operations in binary frames, a `MSG` the answer.
    Nats(nats::Reader),
}

/// What a frame from the server held for a customer.
#[derive(Default)]
struct Heard {
    replies: usize,
    /// A frame the protocol wants sent back (NATS: `PONG` to the server's `PING`).
    answer: Option<Message>,
}

impl Replies {
    fn read(&mut self, m: &Message) -> Result<Heard> {
        let mut heard = Heard::default();
        match self {
            Replies::Activities => {
                if let Message::Text(t) = m {
                    heard.replies = usize::from(is_message(t)?);
                }
            }
            Replies::Nats(reader) => {
                if let Some(data) = nats::frame_bytes(m) {
                    reader.read(data, |op| {
                        match op {
                            nats::Op::Msg(_) => heard.replies += 1,
                            nats::Op::Ping => heard.answer = Some(Message::Binary(Bytes::from_static(nats::PONG))),
                            nats::Op::Err(e) => bail!("nats-server: -ERR {e}"),
                            nats::Op::Info(_) | nats::Op::Pong | nats::Op::Ok => {}
                        }
                        Ok(())
                    })?;
                }
            }
        }
        Ok(heard)
    }
}

impl Talker {
    /// Customer `i`'s message of `payload` characters, to the target.
    fn new(target: Target, i: usize, ws: Ws, payload: &Utf8Bytes) -> Talker {
        match target {
            Target::Gateway | Target::Echo => {
                Talker { ws, message: Message::Text(payload.clone()), replies: Replies::Activities }
            }
            Target::Nats => {
                let publish =
                    nats::publish(&nats::bot_subject(i), Some(&nats::customer_subject(i)), payload.as_bytes());
                Talker { ws, message: Message::Binary(publish), replies: Replies::Nats(nats::Reader::default()) }
            }
        }
    }

    /// Reads until the answer to the message in flight (skipping acks and notices).
    async fn await_reply(&mut self) -> Result<()> {
        while let Some(m) = self.ws.next().await {
            let heard = self.replies.read(&m?)?;
            if let Some(answer) = heard.answer {
                self.ws.send(answer).await?;
            }
            if heard.replies > 0 {
                return Ok(());
            }
        }
        bail!("connection closed while waiting for a reply")
    }
}

async fn set_up(run: &Run, target: Target, scenario: &str, n: usize) -> Result<Setup> {
    let server = Server::start(target, &run.launch, scenario).await?;
    let label = format!("{scenario} {target}");
    let (bot, assigned) = match target {
        Target::Gateway => {
            let handler = EchoBot::default();
            let assigned = handler.assigned.clone();
            let bot = peers::sign_in(server.member_addr(Member::Bot), Member::Bot, handler).await?;
            (Some(Bot::Gateway(bot)), Some(assigned))
        }
        Target::Echo => (None, None),
        Target::Nats => (Some(Bot::Nats(peers::nats_bot(server.addr).await?)), None),
    };
    let sources = Sources::for_connections(n);
    let customers = peers::open_customers(target, server.customer_addrs(), n, &label, sources).await?;
    if let Some(assigned) = assigned
        && !assigned.wait_for(n, Duration::from_secs(30)).await
    {
        bail!("{label}: the bot was assigned {} of {n} conversations", assigned.get());
    }
    let payload = wire::customer_message(run.opts.payload);
    let talkers = customers.into_iter().enumerate().map(|(i, c)| Talker::new(target, i, c.ws, &payload)).collect();
    Ok(Setup { server, bot, talkers })
}

async fn tear_down(setup: Setup) -> Vec<String> {
    let mut errors = Vec::new();
    drop(setup.talkers);
    let finished = match setup.bot {
        Some(Bot::Gateway(bot)) => Some(bot.finish().await.map(|(h, _)| h.errors)),
        Some(Bot::Nats(bot)) => Some(bot.finish().await.map(|(h, _)| h.errors)),
        None => None,
    };
    match finished {
        Some(Ok(e)) => errors.extend(e),
        Some(Err(e)) => errors.push(format!("bot: {e:#}")),
        None => {}
    }
    setup.server.stop().await;
    errors
}

/// `chat-relay`: `n` customers, each waiting for the echo of its message before sending
/// the next; round trips per second and their latency.
pub async fn chat_relay(run: &Run, target: Target) -> Result<ClosedLoop> {
    chat_relay_as(run, target, "chat-relay").await
}

/// [`chat_relay`], its servers' logs and directories named after `label`.
pub async fn chat_relay_as(run: &Run, target: Target, label: &str) -> Result<ClosedLoop> {
    let o: &Options = &run.opts;
    let n = o.conversations;
    let Setup { server, bot, talkers } = set_up(run, target, label, n).await?;
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let done = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for t in talkers {
        set.spawn(closed_loop(t, phase.clone(), done.clone()));
    }
    let total = o.warmup + o.duration;
    let progress = Progress::start(format!("{label} {target}: {n} conv"), Some(total), done.clone(), "round trips");
    tokio::time::sleep(o.warmup).await;
    let (s0, c0) = (server.cpu_secs()?, own_cpu_secs()?);
    let t0 = Instant::now();
    phase.store(MEASURE, Ordering::SeqCst);
    tokio::time::sleep(o.duration).await;
    phase.store(DONE, Ordering::SeqCst);
    let seconds = t0.elapsed().as_secs_f64();
    let (s1, c1) = (server.cpu_secs()?, own_cpu_secs()?);
    let server_rss_kib = server.rss_kib()?;
    progress.finish();
    let mut samples = Samples::with_capacity(1 << 20);
    let mut errors = Vec::new();
    let mut talkers = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        match r? {
            Ok((t, s)) => {
                samples.extend(s);
                talkers.push(t);
            }
            Err(e) if errors.len() < 10 => errors.push(format!("{e:#}")),
            Err(_) => {}
        }
    }
    errors.extend(tear_down(Setup { server, bot, talkers }).await);
    let round_trips = samples.len() as u64;
    let r = ClosedLoop {
        conversations: n,
        payload_bytes: o.payload,
        seconds,
        round_trips,
        round_trips_per_sec: round_trips as f64 / seconds,
        latency: samples.summary(),
        server_cores: (s1 - s0) / seconds,
        server_rss_kib,
        client_cores: (c1 - c0) / seconds,
        errors,
    };
    say(&format!(
        "  {label} {target}: {:.0} round trips/s, p50 {:.2} ms, p99 {:.2} ms (server {:.2} cores, client {:.2})",
        r.round_trips_per_sec, r.latency.p50_ms, r.latency.p99_ms, r.server_cores, r.client_cores
    ));
    Ok(r)
}

fn is_message(t: &Utf8Bytes) -> Result<bool> {
    let a = Activity::parse(t.as_str())?;
    if let Some(e) = a.error() {
        bail!("error event: {e}");
    }
    Ok(a.kind == "message")
}

async fn closed_loop(mut t: Talker, phase: Arc<AtomicU8>, done: Arc<AtomicU64>) -> Result<(Talker, Samples)> {
    let mut samples = Samples::with_capacity(1024);
    while phase.load(Ordering::Relaxed) != DONE {
        let t0 = Instant::now();
        t.ws.send(t.message.clone()).await?;
        t.await_reply().await?;
        let elapsed = t0.elapsed();
        done.fetch_add(1, Ordering::Relaxed);
        // A round trip counts if it completed inside the measured window.
        if phase.load(Ordering::Relaxed) == MEASURE {
            samples.push(elapsed);
        }
    }
    Ok((t, samples))
}

/// `open-loop`: the same customers send on a fixed schedule whatever the replies do;
/// latency at each offered rate.
pub async fn open_loop(run: &Run, target: Target, rates: &[f64]) -> Result<Vec<OpenPoint>> {
    let o = &run.opts;
    let n = o.conversations;
    let Setup { server, bot, talkers: mut conns } = set_up(run, target, "open-loop", n).await?;
    let mut points = Vec::new();
    let mut errors = Vec::new();
    for &rate in rates {
        let sent = Arc::new(AtomicU64::new(0));
        let label = format!("open-loop {target}: {rate:.0}/s");
        let total = o.point_warmup + o.point_duration;
        let progress = Progress::start(label, Some(total), sent.clone(), "sent");
        // Start a little ahead so every task is waiting before the first send is due.
        let start = Instant::now() + Duration::from_millis(100);
        let window = (start + o.point_warmup, start + total);
        let period = Duration::from_secs_f64(n as f64 / rate);
        let mut set = JoinSet::new();
        for (i, t) in conns.drain(..).enumerate() {
            let first = start + Duration::from_secs_f64(i as f64 / rate);
            set.spawn(open_loop_conn(t, first, period, window, sent.clone()));
        }
        tokio::time::sleep_until((start + o.point_warmup).into()).await;
        let s0 = server.cpu_secs()?;
        tokio::time::sleep_until(window.1.into()).await;
        let server_cores = (server.cpu_secs()? - s0) / o.point_duration.as_secs_f64();
        let mut lat = Samples::with_capacity(1 << 20);
        let mut lag = Samples::with_capacity(1 << 20);
        let mut unanswered = 0;
        while let Some(r) = set.join_next().await {
            match r? {
                Ok(c) => {
                    lat.extend(c.latency);
                    lag.extend(c.lag);
                    unanswered += c.unanswered;
                    conns.push(c.talker);
                }
                Err(e) if errors.len() < 10 => errors.push(format!("{e:#}")),
                Err(_) => {}
            }
        }
        progress.finish();
        let p = OpenPoint {
            offered_per_sec: rate,
            achieved_per_sec: lat.len() as f64 / o.point_duration.as_secs_f64(),
            latency: lat.summary(),
            send_lag: lag.summary(),
            unanswered,
            server_cores,
        };
        say(&format!(
            "  open-loop {target} at {rate:.0}/s: p50 {:.2} ms, p99 {:.2} ms, achieved {:.0}/s, send lag p99 {:.2} ms",
            p.latency.p50_ms, p.latency.p99_ms, p.achieved_per_sec, p.send_lag.p99_ms
        ));
        points.push(p);
        if conns.len() < n {
            bail!("open-loop {target}: {} connections failed: {}", n - conns.len(), errors.join("; "));
        }
    }
    let more = tear_down(Setup { server, bot, talkers: conns }).await;
    if !more.is_empty() {
        say(&format!("  open-loop {target}: errors: {}", more.join("; ")));
    }
    Ok(points)
}

struct OpenConn {
    talker: Talker,
    latency: Samples,
    lag: Samples,
    unanswered: u64,
}

async fn open_loop_conn(
    talker: Talker,
    first: Instant,
    period: Duration,
    window: (Instant, Instant),
    sent: Arc<AtomicU64>,
) -> Result<OpenConn> {
    let Talker { ws, message, mut replies } = talker;
    let (mut sink, mut stream) = ws.split();
    let mut latency = Samples::with_capacity(256);
    let mut lag = Samples::with_capacity(256);
    // Send instants of the messages in flight; replies come back in order.
    let mut inflight: std::collections::VecDeque<(Instant, bool)> = std::collections::VecDeque::new();
    let mut due = first;
    let give_up = window.1 + Duration::from_secs(2);
    loop {
        let sending = due < window.1;
        if !sending && inflight.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            m = stream.next() => {
                let heard = replies.read(&m.context("connection closed")??)?;
                for _ in 0..heard.replies {
                    let (t0, measured) = inflight.pop_front().context("a reply nobody asked for")?;
                    if measured {
                        latency.push(t0.elapsed());
                    }
                }
                if let Some(answer) = heard.answer {
                    sink.send(answer).await?;
                }
            }
            _ = tokio::time::sleep_until(due.into()), if sending => {
                let now = Instant::now();
                let measured = due >= window.0 && due < window.1;
                if measured {
                    lag.push(now - due);
                }
                inflight.push_back((now, measured));
                sink.send(message.clone()).await?;
                sent.fetch_add(1, Ordering::Relaxed);
                due += period;
            }
            _ = tokio::time::sleep_until(give_up.into()), if !sending => break,
        }
    }
    let unanswered = inflight.iter().filter(|(_, m)| *m).count() as u64;
    let ws = sink.reunite(stream).map_err(|_| anyhow::anyhow!("reunite"))?;
    Ok(OpenConn { talker: Talker { ws, message, replies }, latency, lag, unanswered })
}

/// Offered rates: fractions (`loads`) of the highest rate measured.
pub fn rates_from(max: f64, loads: &[f64]) -> Vec<f64> {
    loads.iter().map(|f| (f * max).max(1.0)).collect()
}
