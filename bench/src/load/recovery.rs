//! `recovery`: the gateway killed with a full store, and started again. How long until it
//! listens with every conversation back, what it then holds in memory against what it held
//! before the crash, and whether what it recovered is whole.
//!
//! The store is filled as users fill it: the real binary with the bench configuration's
//! durable SQLite store, the generator's echo bot connected, and N customers each starting
//! a conversation, sending M messages (each waiting for its `ack`, so each is committed) and
//! leaving. Customers come a few hundred at a time, so the run needs no N simultaneous
//! sockets; their conversations stay open for the resume window, which the scenario's copy
//! of the configuration makes longer than the run. Then the gateway's resident memory is
//! read, it is killed with SIGKILL, and the same binary is started on the same data
//! directory. There is no baseline: the figures are absolute, against the target.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::Run;
use super::peers::{self, EchoBot, Handler, Member};
use super::progress::{Progress, say};
use super::target::{self, Launch, READY_POLL_MS, Server, Target};
use super::wire::{self, Activity, Sources, Ws};

/// Customers filling the store at once.
const IN_FLIGHT: usize = 256;

/// The resume window and bot grace period of the scenario's copy of the configuration: a
/// day, so no conversation closes however long the fill takes (the default window is
/// 5 minutes; a 100,000-conversation fill takes about half that on 2 cores), and a minute,
/// so the bot's conversations stay with it even if a slow restart keeps it away for longer
/// than the default 5 s.
const LONG_WINDOW: &str = "86400";
const BOT_GRACE: &str = "60";

#[derive(Debug, Clone, Serialize)]
pub struct Recovery {
    pub conversations: usize,
    pub messages_per_conversation: usize,
    /// Customer messages acknowledged before the crash.
    pub customer_messages: u64,
    /// The bot's replies acknowledged before the crash.
    pub bot_replies: u64,
    /// Seconds to fill the store.
    pub fill_seconds: f64,
    /// The database and its WAL after the crash.
    pub store_bytes: u64,
    pub rss_before_crash_kib: u64,
    /// From the restart's spawn to its `listening on` line.
    pub ready_seconds: f64,
    /// From the spawn to the `store: …` line (the store open, its log read).
    pub store_read_seconds: Option<f64>,
    /// From the spawn to the `recovered …` line (the hub has every conversation back).
    pub recovered_seconds: Option<f64>,
    /// What the restarted gateway logged it recovered.
    pub recovered_conversations: Option<u64>,
    pub recovered_activities: Option<u64>,
    /// The `recovered` line comes before `listening on` in the log.
    pub recovered_before_listening: bool,
    /// Right after `listening on`.
    pub rss_ready_kib: u64,
    /// Conversations the returning bot got back with `"resumed": true`.
    pub bot_resumed: usize,
    /// From the bot's connect to its last `conversation.assigned`.
    pub bot_resume_seconds: f64,
    /// The shortest and longest transcript those carried.
    pub bot_transcript: (usize, usize),
    pub rss_after_bot_kib: u64,
    pub sample: Sample,
    pub errors: Vec<String>,
}

/// Customers that resumed after the restart with watermark 0.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    pub customers: usize,
    /// Got every `seq` from 1 up, no gap, no repeat, with all M of their messages and the
    /// bot's M replies.
    pub whole: usize,
    /// The shortest and longest replay.
    pub activities: (u64, u64),
    pub failures: Vec<String>,
}

impl Recovery {
    /// Activities a conversation holds: the bot's arrival notice, the M messages and the
    /// bot's M replies.
    pub fn activities_each(&self) -> usize {
        1 + 2 * self.messages_per_conversation
    }

    pub fn ready(&self) -> bool {
        self.recovered_before_listening && self.recovered_conversations == Some(self.conversations as u64)
    }
}

pub async fn recovery(run: &Run) -> Result<Recovery> {
    let o = &run.opts;
    let (n, m) = (o.recovery_conversations, o.recovery_messages);
    let launch = long_window(&run.launch)?;
    let server = Server::start(Target::Gateway, &launch, "recovery").await?;
    let addr = server.addr;
    let handler = EchoBot::default();
    let (assigned, acked) = (handler.assigned.clone(), handler.acked.clone());
    let bot = peers::sign_in(addr, Member::Bot, handler).await?;

    let t0 = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(format!("recovery: {n} conversations × {m}"), None, done.clone(), "messages");
    let sample_every = (n / o.recovery_sample.max(1)).max(1);
    let sources = Sources::for_connections(n);
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut set = JoinSet::new();
    let mut kept = Vec::new();
    let mut keep = |r: Result<Result<(usize, String, String)>, tokio::task::JoinError>| -> Result<()> {
        let (i, conv, token) = r?.context("filling the store")?;
        if i % sample_every == 0 && kept.len() < o.recovery_sample {
            kept.push((conv, token));
        }
        Ok(())
    };
    for i in 0..n {
        let permit = permits.clone().acquire_owned().await?;
        let (done, payload) = (done.clone(), o.payload);
        set.spawn(async move {
            let r = converse(addr, sources.pick(i), i, m, payload, &done).await;
            drop(permit);
            r.map(|(conv, token)| (i, conv, token))
        });
        while let Some(r) = set.try_join_next() {
            keep(r)?;
        }
    }
    while let Some(r) = set.join_next().await {
        keep(r)?;
    }
    progress.finish();
    let customer_messages = done.load(Ordering::Relaxed);
    // The bot answers every message; its replies are in the store once acknowledged.
    let want = n * m;
    if !assigned.wait_for(n, Duration::from_secs(60)).await || !acked.wait_for(want, Duration::from_secs(120)).await {
        bail!(
            "recovery: the bot was assigned {} of {n} conversations, {} of {want} replies stored",
            assigned.get(),
            acked.get()
        );
    }
    let fill_seconds = t0.elapsed().as_secs_f64();
    say(&format!(
        "  recovery: {n} conversations, {customer_messages} customer messages and {} replies stored in {fill_seconds:.1} s",
        acked.get()
    ));
    // Let the last frames settle before the reading the restart is held to.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before_crash_kib = server.rss_kib()?;
    let data = server.data_dir.clone().context("the gateway has a data directory")?;
    server.crash().await?;
    // Its connection was reset by the crash, as a real bot's would be: nothing to report.
    drop(bot);
    let mut errors = Vec::new();
    let store_bytes = dir_bytes(&data);
    say(&format!(
        "  recovery: killed (SIGKILL) at {:.1} MiB RSS; store {:.1} MiB; restarting",
        rss_before_crash_kib as f64 / 1024.0,
        store_bytes as f64 / (1024.0 * 1024.0)
    ));

    let server = Server::restart(&launch, "recovery", Duration::from_secs(600)).await?;
    let rss_ready_kib = server.rss_kib()?;
    let log = std::fs::read_to_string(&server.log).unwrap_or_default();
    let (recovered_conversations, recovered_activities) = recovered_counts(&log).unzip();
    let milestones = server.milestones.clone();
    let at = |line: &str| milestones.iter().find(|(l, _)| *l == line).map(|(_, d)| d.as_secs_f64());
    let r_ready = server.ready_after.as_secs_f64();
    say(&format!(
        "  recovery: listening {r_ready:.2} s after the spawn (store read by {:?} s, hub restored by {:?} s), RSS {:.1} MiB",
        at("store: "),
        at("recovered "),
        rss_ready_kib as f64 / 1024.0
    ));

    let returning = Returning::default();
    let resumed = returning.resumed.clone();
    let t1 = Instant::now();
    let bot = peers::sign_in(server.addr, Member::Bot, returning).await?;
    let progress =
        Progress::start("recovery: the bot takes its conversations back".into(), None, resumed.clone(), "resumed");
    let deadline = Instant::now() + Duration::from_secs(300);
    while (resumed.load(Ordering::Relaxed) as usize) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let bot_back = resumed.load(Ordering::Relaxed) as usize;
    let all_back = bot_back >= n;
    let bot_resume_seconds = t1.elapsed().as_secs_f64();
    progress.finish();
    if !all_back {
        errors.push(format!("the bot got {bot_back} of {n} conversations back within 300 s"));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_bot_kib = server.rss_kib()?;

    let sample = check_sample(server.addr, kept, m).await;
    let returning = match bot.finish().await {
        Ok((h, _)) => h,
        Err(e) => {
            errors.push(format!("bot: {e:#}"));
            Returning::default()
        }
    };
    errors.extend(returning.errors);
    server.stop().await;
    let r = Recovery {
        conversations: n,
        messages_per_conversation: m,
        customer_messages,
        bot_replies: acked.get() as u64,
        fill_seconds,
        store_bytes,
        rss_before_crash_kib,
        ready_seconds: r_ready,
        store_read_seconds: at("store: "),
        recovered_seconds: at("recovered "),
        recovered_conversations,
        recovered_activities,
        recovered_before_listening: recovered_before_listening(&log),
        rss_ready_kib,
        bot_resumed: resumed.load(Ordering::Relaxed) as usize,
        bot_resume_seconds,
        bot_transcript: returning.transcript,
        rss_after_bot_kib,
        sample,
        errors,
    };
    say(&format!(
        "  recovery: ready in {:.2} s (±{READY_POLL_MS} ms; recovered {:?} conversations, {:?} activities, before listening: {}); \
         RSS {:.1} → {:.1} MiB at ready, {:.1} MiB with the bot back ({} resumed in {:.1} s); sample {}/{} whole",
        r.ready_seconds,
        r.recovered_conversations,
        r.recovered_activities,
        r.recovered_before_listening,
        r.rss_before_crash_kib as f64 / 1024.0,
        r.rss_ready_kib as f64 / 1024.0,
        r.rss_after_bot_kib as f64 / 1024.0,
        r.bot_resumed,
        r.bot_resume_seconds,
        r.sample.whole,
        r.sample.customers
    ));
    Ok(r)
}

/// The bench configuration with the resume window and the bot's grace period made longer
/// than the run (see [`LONG_WINDOW`]), and nothing else changed.
fn long_window(launch: &Launch) -> Result<Launch> {
    let text =
        std::fs::read_to_string(&launch.config).with_context(|| format!("reading {}", launch.config.display()))?;
    let path = launch.run_dir.join("gateway-recovery.toml");
    let settings = [("customer_resume_secs", LONG_WINDOW), ("bot_grace_secs", BOT_GRACE)];
    std::fs::write(&path, target::with_server_settings(&text, &settings))?;
    Ok(Launch { config: path, ..launch.clone() })
}

/// One customer: starts a conversation, sends `m` messages (each with a `clientActivityId`,
/// as real clients send them), waiting for each one's `ack`, and leaves. Its conversation
/// and resume token.
async fn converse(
    addr: std::net::SocketAddr,
    source: Option<std::net::Ipv4Addr>,
    i: usize,
    m: usize,
    payload: usize,
    acked: &AtomicU64,
) -> Result<(String, String)> {
    let c = peers::open_customer(Target::Gateway, addr, i, source).await?;
    let mut ws = c.ws;
    let conv = c.conversation.context("no conversation id")?;
    let token = c.token.context("session.started without a token")?;
    for k in 0..m {
        ws.send(Message::Text(wire::customer_message_with_id(payload, &format!("r{i}.{k}")))).await?;
        loop {
            let Some(msg) = tokio::time::timeout(Duration::from_secs(30), ws.next()).await.context("no ack in 30 s")?
            else {
                bail!("{conv}: closed before the ack of message {k}");
            };
            if let Message::Text(t) = msg? {
                let a = Activity::parse(t.as_str())?;
                if let Some(e) = a.error() {
                    bail!("{conv}: message {k} refused: {e}");
                }
                if a.is_event("ack") {
                    acked.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    leave(ws).await;
    Ok((conv, token))
}

/// Closes a customer's socket the way a browser tab does, and waits for the server to
/// close its end first: the TIME_WAIT then stays on the server's side, and a fill of
/// 100,000 short connections does not run the generator out of ephemeral ports.
async fn leave(mut ws: Ws) {
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while let Some(Ok(_)) = ws.next().await {} }).await;
}

/// The returning bot: counts the conversations it gets back, and replies to nothing.
#[derive(Debug, Default)]
struct Returning {
    /// An atomic the progress line can show.
    resumed: Arc<AtomicU64>,
    transcript: (usize, usize),
    errors: Vec<String>,
}

#[derive(Deserialize)]
struct AssignedValue<'a> {
    #[serde(default)]
    resumed: bool,
    #[serde(default, borrow)]
    transcript: Vec<&'a RawValue>,
}

impl Handler for Returning {
    fn on_frame(&mut self, frame: &str, _at: Instant, _reply: &mut dyn FnMut(Utf8Bytes)) -> Result<()> {
        let a = Activity::parse(frame)?;
        // The holder's own assignment has no `from`; transcript notices do.
        if a.is_event("conversation.assigned") && a.from.is_none() {
            let v: AssignedValue<'_> = serde_json::from_str(a.value.context("assigned without value")?.get())?;
            if v.resumed {
                let len = v.transcript.len();
                self.transcript = if self.resumed.load(Ordering::Relaxed) == 0 {
                    (len, len)
                } else {
                    (self.transcript.0.min(len), self.transcript.1.max(len))
                };
                self.resumed.fetch_add(1, Ordering::Relaxed);
            } else if self.errors.len() < 10 {
                self.errors.push(format!("a conversation assigned anew, not resumed: {:?}", a.conversation_id()));
            }
        } else if let Some(e) = a.error()
            && self.errors.len() < 10
        {
            self.errors.push(e);
        }
        Ok(())
    }
}

/// The sampled customers resume with watermark 0, all at once; each must get its whole
/// transcript: `seq` 1, 2, 3… with no gap or repeat, its `m` messages and the bot's `m`
/// replies.
async fn check_sample(addr: std::net::SocketAddr, kept: Vec<(String, String)>, m: usize) -> Sample {
    let mut set = JoinSet::new();
    let customers = kept.len();
    for (conv, token) in kept {
        set.spawn(async move { replay(addr, &conv, &token, m).await.map_err(|e| format!("{conv}: {e:#}")) });
    }
    let mut s = Sample { customers, ..Sample::default() };
    let mut lengths = Vec::new();
    while let Some(r) = set.join_next().await {
        match r.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(len) => {
                s.whole += 1;
                lengths.push(len);
            }
            Err(e) if s.failures.len() < 10 => s.failures.push(e),
            Err(_) => {}
        }
    }
    s.activities = (lengths.iter().copied().min().unwrap_or(0), lengths.iter().copied().max().unwrap_or(0));
    s
}

/// One resume: the number of activities replayed, or what was wrong with them.
async fn replay(addr: std::net::SocketAddr, conv: &str, token: &str, m: usize) -> Result<u64> {
    let mut ws = wire::connect(addr, "/v1/chat", None, None).await?;
    ws.send(wire::session_resume(conv, token, 0)).await?;
    let (mut started, mut last, mut mine, mut bots) = (false, 0u64, 0, 0);
    // The replay is queued in one batch right after `session.started`; a quiet second
    // after it means it is over.
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(if started { 1 } else { 30 }), ws.next()).await {
        let Message::Text(t) = msg? else { continue };
        let a = Activity::parse(t.as_str())?;
        if let Some(e) = a.error() {
            bail!("resume refused: {e}");
        }
        if a.is_event("session.started") {
            started = true;
            continue;
        }
        let Some(seq) = a.seq else { continue };
        if seq != last + 1 {
            bail!("seq {seq} after {last}");
        }
        last = seq;
        match (a.kind.as_ref(), a.from.as_ref().map(|f| f.role.as_ref())) {
            ("message", Some("user")) => mine += 1,
            ("message", Some("bot")) => bots += 1,
            _ => {}
        }
    }
    leave(ws).await;
    if !started {
        bail!("no session.started");
    }
    if mine != m || bots != m {
        bail!("replayed {mine} of its {m} messages and {bots} of the bot's {m} replies ({last} activities)");
    }
    Ok(last)
}

/// `recovered 100000 open conversation(s), 2100000 activities` from the gateway's log.
fn recovered_counts(log: &str) -> Option<(u64, u64)> {
    let line = log.lines().find(|l| l.contains("recovered ") && l.contains("open conversation"))?;
    let rest = &line[line.find("recovered ")? + "recovered ".len()..];
    let conversations = rest.split_whitespace().next()?.parse().ok()?;
    let activities = rest.split(", ").nth(1)?.split_whitespace().next()?.parse().ok()?;
    Some((conversations, activities))
}

fn recovered_before_listening(log: &str) -> bool {
    match (log.find("recovered "), log.find("listening on ")) {
        (Some(r), Some(l)) => r < l,
        _ => false,
    }
}

/// Bytes of the files directly under `dir` (the database, its WAL and shared memory).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_recovered_line() {
        let log = "x INFO switchboard::server: store: d/switchboard.db\n\
                   x INFO switchboard::hub::recovery: recovered 100000 open conversation(s), 2100000 activities\n\
                   x INFO switchboard: listening on http://127.0.0.1:4000\n";
        assert_eq!(recovered_counts(log), Some((100_000, 2_100_000)));
        assert!(recovered_before_listening(log));
        assert_eq!(recovered_counts("listening on http://127.0.0.1:1\n"), None);
        assert!(!recovered_before_listening("listening on http://127.0.0.1:1\n"));
    }

    #[test]
    fn the_copy_changes_only_the_windows() {
        let text = target::with_server_settings(
            include_str!("../../gateway.toml"),
            &[("customer_resume_secs", LONG_WINDOW), ("bot_grace_secs", BOT_GRACE)],
        );
        let cfg = switchboard::load::config_text(&text).unwrap().config;
        assert_eq!(cfg.server.customer_resume_secs, 86_400);
        assert_eq!(cfg.server.bot_grace_secs, 60);
        assert_eq!(cfg.server.store, switchboard::config::StoreKind::Sqlite);
        assert_eq!(cfg.server.outbound_queue, 262_144);
    }
}
