//! The parties the generator plays: customers (one connection each), and the long-lived
//! bot and agent connections that carry many conversations at once; against the NATS peer,
//! the same customers and bot speaking NATS (`nats`) over the same connections.
//!
//! A long-lived connection is a [`Peer`]: a reader task that hands every text frame (and
//! nats-server's binary ones) to a [`Handler`] (which may answer), and a writer task that drains a queue and flushes once
//! per batch, as the gateway's own writer does. Frames sent with a tag have the instant
//! they were written logged, so a scenario can time from the moment a frame left.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};

use super::nats;
use super::progress::Progress;
use super::target::Target;
use super::wire::{self, Activity, Sources, Ws};

enum Out {
    Frame(Message, Option<u32>),
    Close,
}

/// What a long-lived connection does with the frames it receives.
pub trait Handler: Send + 'static {
    /// A text frame arrived at `at`; `reply` queues an answer on the same connection.
    fn on_frame(&mut self, frame: &str, at: Instant, reply: &mut dyn FnMut(Utf8Bytes)) -> Result<()>;

    /// A binary frame arrived (nats-server's; the gateway sends its bots and agents text);
    /// `reply` queues a binary answer.
    fn on_binary(&mut self, _frame: &[u8], _at: Instant, _reply: &mut dyn FnMut(Bytes)) -> Result<()> {
        Ok(())
    }
}

/// A long-lived connection (a bot or an agent).
#[derive(Debug)]
pub struct Peer<H> {
    tx: mpsc::UnboundedSender<Out>,
    reader: JoinHandle<Result<H>>,
    writer: JoinHandle<Result<Vec<(u32, Instant)>>>,
}

impl<H: Handler> Peer<H> {
    pub fn spawn(ws: Ws, mut handler: H) -> Peer<H> {
        let (mut sink, mut stream) = ws.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
        let writer = tokio::spawn(async move {
            let mut log = Vec::new();
            'run: while let Some(first) = rx.recv().await {
                let mut next = Some(first);
                let mut batch = 0;
                while let Some(out) = next.take() {
                    match out {
                        Out::Frame(f, tag) => {
                            if let Some(tag) = tag {
                                log.push((tag, Instant::now()));
                            }
                            sink.feed(f).await?;
                        }
                        Out::Close => break 'run,
                    }
                    batch += 1;
                    if batch < 256 {
                        next = rx.try_recv().ok();
                    }
                }
                sink.flush().await?;
            }
            let _ = sink.close().await;
            Ok(log)
        });
        let reply_tx = tx.clone();
        let reader = tokio::spawn(async move {
            let mut reply = |f: Utf8Bytes| {
                let _ = reply_tx.send(Out::Frame(Message::Text(f), None));
            };
            let mut reply_binary = |f: Bytes| {
                let _ = reply_tx.send(Out::Frame(Message::Binary(f), None));
            };
            while let Some(msg) = stream.next().await {
                match msg.context("peer connection")? {
                    Message::Text(t) => handler.on_frame(t.as_str(), Instant::now(), &mut reply)?,
                    Message::Binary(b) => handler.on_binary(&b, Instant::now(), &mut reply_binary)?,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            Ok(handler)
        });
        Peer { tx, reader, writer }
    }

    /// Queues a frame; with a tag, the instant it is written is logged.
    pub fn send(&self, frame: Utf8Bytes, tag: Option<u32>) {
        let _ = self.tx.send(Out::Frame(Message::Text(frame), tag));
    }

    /// Closes the connection: the handler back, and the log of tagged frames written.
    pub async fn finish(self) -> Result<(H, Vec<(u32, Instant)>)> {
        let _ = self.tx.send(Out::Close);
        drop(self.tx);
        let log = self.writer.await??;
        let handler = match tokio::time::timeout(Duration::from_secs(5), self.reader).await {
            Ok(r) => r??,
            Err(_) => bail!("peer did not close within 5 s"),
        };
        Ok((handler, log))
    }
}

/// Counts something several tasks wait on (assignments, echoes).
#[derive(Debug, Default)]
pub struct Counter(AtomicUsize);

impl Counter {
    pub fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Waits until the count reaches `n`; false on timeout.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.get() < n {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }
}

/// The generator's bot user: takes every conversation it is assigned, and answers each
/// customer message with the same text (an echo bot).
#[derive(Debug, Default)]
pub struct EchoBot {
    pub assigned: Arc<Counter>,
    /// Its own activities the gateway has acknowledged (stored).
    pub acked: Arc<Counter>,
    pub conversations: Arc<Mutex<Vec<String>>>,
    pub errors: Vec<String>,
}

impl Handler for EchoBot {
    fn on_frame(&mut self, frame: &str, _at: Instant, reply: &mut dyn FnMut(Utf8Bytes)) -> Result<()> {
        let a = Activity::parse(frame)?;
        match (a.kind.as_ref(), a.from.as_ref().map(|f| f.role.as_ref())) {
            ("message", Some("user")) => {
                let conv = a.conversation_id().context("customer message without conversation.id")?;
                reply(wire::bot_reply(conv, a.text.as_deref().unwrap_or_default()));
            }
            // The holder's own assignment notice has no `from`; transcript notices do.
            ("event", None) if a.is_event("conversation.assigned") => {
                let conv = a.conversation_id().context("conversation.assigned without conversation.id")?;
                if let Ok(mut c) = self.conversations.lock() {
                    c.push(conv.to_owned());
                }
                self.assigned.add();
            }
            ("event", None) if a.is_event("ack") => self.acked.add(),
            _ => {
                if let Some(e) = a.error()
                    && self.errors.len() < 10
                {
                    self.errors.push(e);
                }
            }
        }
        Ok(())
    }
}

/// The bot against the NATS peer: subscribed to every customer's subject, it answers each
/// message with the same payload on the message's reply subject (the customer's own), as
/// [`EchoBot`] answers each customer through the gateway.
#[derive(Debug, Default)]
pub struct NatsBot {
    reader: nats::Reader,
    pub errors: Vec<String>,
}

impl Handler for NatsBot {
    fn on_frame(&mut self, frame: &str, _at: Instant, _reply: &mut dyn FnMut(Utf8Bytes)) -> Result<()> {
        // nats-server writes binary frames only.
        bail!("a text frame from nats-server: {}", frame.chars().take(80).collect::<String>())
    }

    fn on_binary(&mut self, frame: &[u8], _at: Instant, reply: &mut dyn FnMut(Bytes)) -> Result<()> {
        let errors = &mut self.errors;
        self.reader.read(frame, |op| {
            match op {
                nats::Op::Msg(m) => {
                    let to = m.reply_to.with_context(|| format!("a message on {} with no reply subject", m.subject))?;
                    reply(nats::publish(to, None, m.payload));
                }
                nats::Op::Ping => reply(Bytes::from_static(nats::PONG)),
                nats::Op::Err(e) if errors.len() < 10 => errors.push(format!("nats-server: -ERR {e}")),
                _ => {}
            }
            Ok(())
        })
    }
}

/// The NATS peer's bot: one WebSocket, the same as the gateway's bot's, subscribed to every
/// customer's subject.
pub async fn nats_bot(addr: SocketAddr) -> Result<Peer<NatsBot>> {
    // nats-server serves every path alike; the bot's path gives the client the buffers of
    // the gateway's bot connection (`wire::connect`).
    let mut ws = wire::connect(addr, "/v1/bot", None, None).await?;
    nats::handshake(&mut ws, "switchboard-load bot", &[(nats::BOT_SUBSCRIPTION, 1)]).await?;
    Ok(Peer::spawn(ws, NatsBot::default()))
}

/// An agent: notes when each conversation is assigned to it.
#[derive(Debug)]
pub struct Agent {
    pub assigned: Arc<Counter>,
    pub log: Vec<(String, Instant)>,
    pub errors: Vec<String>,
}

impl Handler for Agent {
    fn on_frame(&mut self, frame: &str, at: Instant, _reply: &mut dyn FnMut(Utf8Bytes)) -> Result<()> {
        let a = Activity::parse(frame)?;
        if a.is_event("conversation.assigned") && a.from.is_none() {
            let conv = a.conversation_id().context("conversation.assigned without conversation.id")?;
            self.log.push((conv.to_owned(), at));
            self.assigned.add();
        } else if let Some(e) = a.error()
            && self.errors.len() < 10
        {
            self.errors.push(e);
        }
        Ok(())
    }
}

/// The echo baseline's stand-in for the agents: notes when each handoff frame comes back.
#[derive(Debug)]
pub struct EchoReceipts {
    pub received: Arc<Counter>,
    pub log: Vec<(String, Instant)>,
}

impl Handler for EchoReceipts {
    fn on_frame(&mut self, frame: &str, at: Instant, _reply: &mut dyn FnMut(Utf8Bytes)) -> Result<()> {
        let a = Activity::parse(frame)?;
        if a.is_event("handoff.initiate") {
            self.log.push((a.conversation_id().context("echoed handoff without id")?.to_owned(), at));
            self.received.add();
        }
        Ok(())
    }
}

/// Signs a bot or agent in and opens its connection.
pub async fn sign_in<H: Handler>(addr: SocketAddr, who: Member, handler: H) -> Result<Peer<H>> {
    let (path, id, secret) = match who {
        Member::Bot => ("/v1/bot", "5f1c8d9e-0b7a-4c3e-9d2f-6a8b1c0d2e3f", "contoso-bot-bench-secret"),
        Member::Alice => ("/v1/agent", "alice", "alice-bench-secret"),
        Member::Bob => ("/v1/agent", "bob", "bob-bench-secret"),
    };
    let token = wire::token(addr, id, secret).await?;
    let ws = wire::connect(addr, path, Some(&token), None).await?;
    Ok(Peer::spawn(ws, handler))
}

/// The members of the bench configuration (`bench/gateway.toml`).
#[derive(Clone, Copy, Debug)]
pub enum Member {
    Bot,
    Alice,
    Bob,
}

/// A customer with an open conversation.
#[derive(Debug)]
pub struct Customer {
    pub ws: Ws,
    pub conversation: Option<String>,
    /// The resume token of `session.started` (the gateway's only).
    pub token: Option<String>,
}

/// Opens `n` customer connections, customer `i` to the `i`th of `addrs` in turn, each with
/// its `session.start` answered: by `session.started` from the gateway, by its own echo
/// from the baseline; against the NATS peer, each subscribed to its own subject
/// ([`nats::customer_subject`] of its index).
pub async fn open_customers(
    target: Target,
    addrs: &[SocketAddr],
    n: usize,
    label: &str,
    sources: Sources,
) -> Result<Vec<Customer>> {
    let opened = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(format!("{label}: opening"), None, opened.clone(), "conversations");
    // Enough handshakes in flight to keep both sides busy, few enough for the listen backlog.
    let permits = Arc::new(Semaphore::new(256));
    let mut set = JoinSet::new();
    anyhow::ensure!(!addrs.is_empty(), "{label}: no address to open customers on");
    let mut customers: Vec<Option<Customer>> = (0..n).map(|_| None).collect();
    let mut keep = |done: Result<Result<(usize, Customer)>, tokio::task::JoinError>| -> Result<()> {
        let (i, c) = done?.context("opening customer connections")?;
        customers[i] = Some(c);
        Ok(())
    };
    for i in 0..n {
        let permit = permits.clone().acquire_owned().await?;
        let (opened, addr) = (opened.clone(), addrs[i % addrs.len()]);
        set.spawn(async move {
            let c = open_customer(target, addr, i, sources.pick(i)).await;
            drop(permit);
            opened.fetch_add(1, Ordering::Relaxed);
            c.map(|c| (i, c))
        });
        // Reap as we go, so that a failure stops the run early.
        while let Some(done) = set.try_join_next() {
            keep(done)?;
        }
    }
    while let Some(done) = set.join_next().await {
        keep(done)?;
    }
    progress.finish();
    Ok(customers.into_iter().flatten().collect())
}

/// Opens one customer connection and starts its session.
pub async fn open_customer(
    target: Target,
    addr: SocketAddr,
    i: usize,
    source: Option<std::net::Ipv4Addr>,
) -> Result<Customer> {
    let mut attempt = 0;
    let mut ws = loop {
        match wire::connect(addr, "/v1/chat", None, source).await {
            Ok(ws) => break ws,
            // A full listen backlog refuses a burst of connects now and then: try again.
            Err(_) if attempt < 3 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    };
    if target == Target::Nats {
        nats::handshake(&mut ws, "switchboard-load customer", &[(&nats::customer_subject(i), 1)]).await?;
        return Ok(Customer { ws, conversation: None, token: None });
    }
    ws.send(wire::session_start()).await?;
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg? {
            let a = Activity::parse(t.as_str())?;
            if let Some(e) = a.error() {
                bail!("session.start refused: {e}");
            }
            match target {
                Target::Gateway if a.is_event("session.started") => {
                    let id = a.value_str("conversationId").context("session.started without conversationId")?;
                    let token = a.value_str("token");
                    return Ok(Customer { ws, conversation: Some(id), token });
                }
                Target::Echo if a.is_event("session.start") => {
                    return Ok(Customer { ws, conversation: None, token: None });
                }
                _ => {}
            }
        }
    }
    bail!("connection closed before the session started")
}
