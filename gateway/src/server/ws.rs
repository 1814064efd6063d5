//! WebSocket plumbing: the HTTP upgrade, and the life of one connection.
//!
//! **Invariant:** only the `server` module knows about WebSockets. A connection is a reader
//! (this task) and a writer task that owns the sink and drains the connection's bounded
//! [`Outbox`] queue, batching whatever is queued into one flush ([`run`], [`run_with`]); a
//! call leg is both in one task ([`run_inline`]). Every read goes through one [`Reader`]
//! and races the shutdown signal and the connection's own kick (slow consumer, oversized
//! frame).

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use super::respond;
use crate::hub::outbox::Outgoing;
use crate::hub::outbox::Reason;
use crate::hub::{Hub, HubError, Outbox};
use crate::protocol::{Frame, ProtocolError};

pub type WsStream = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// A frame of ours as a WebSocket text message. Every `Frame` is UTF-8 (it is made from
/// strings only); the check is a fast scan, and a frame that failed it would be sent as
/// an empty object rather than as invalid text.
pub fn text(f: Frame) -> Message {
    Message::Text(Utf8Bytes::try_from(f.into_bytes()).unwrap_or_else(|_| Utf8Bytes::from_static("{}")))
}

/// What a protocol (customer, bot, agent, …) does with a connection's frames.
pub trait Session: Send + 'static {
    fn on_text(&mut self, text: &str);
    fn on_binary(&mut self, _data: Bytes) -> Result<(), HubError> {
        Err(HubError::invalid("binary frames are not used on this endpoint"))
    }
    /// A text frame was received (the handshake deadline no longer applies).
    fn started(&self) -> bool {
        true
    }
    /// Frames per second this connection may send (sustained) and its burst.
    fn rate(&self) -> (f64, u32);
    /// Binary (media) frames per second and burst; audio comes 50 frames a second per call.
    fn binary_rate(&self) -> (f64, u32) {
        (0.0, 0)
    }
    /// The largest binary frame it may send (beyond, close 1009); the WebSocket layer's
    /// own cap (1 MiB) applies to all. Members send prompts of seconds at once.
    fn max_binary(&self) -> usize {
        usize::MAX
    }
    /// True once the session has ended its side (a caller hung up): the connection closes.
    fn ended(&self) -> bool {
        false
    }
    fn on_close(&mut self);
    /// Who is at the other end, for the connection's tracing span (`peer.role`).
    fn role(&self) -> &'static str;
    /// The bot's or agent's name, or `-` for a customer or caller (`peer.id`).
    fn peer(&self) -> &str {
        "-"
    }
}

/// What owns a connection's sink: drains its outbox until `done` (the reader ended).
pub type Writer = Box<
    dyn FnOnce(
            Sink,
            crate::hub::outbox::Inbox,
            Outbox,
            CancellationToken,
        ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
        + Send,
>;

/// A connection's buffers, by who is at the other end.
#[derive(Clone, Copy, Debug)]
pub struct Buffers {
    /// tungstenite's read buffer, allocated when the connection opens and kept for its
    /// life, so for the many idle customers it is most of what a conversation costs (8 →
    /// 4 KiB took the `idle` benchmark from 17.1 to 13.1 KiB per conversation). A larger
    /// frame still fits, as the buffer grows to the frame's length.
    pub read: usize,
    /// The socket's kernel send buffer, or `None` for the kernel's autotuning (which
    /// grows it to 4 MiB on loopback, minutes of a call's audio).
    pub send: Option<usize>,
}

/// The kernel send buffer of a customer's or caller's socket: 64 KiB (the kernel doubles
/// it for its bookkeeping) is over a second of the richest audio a leg carries (L16 at
/// 48 kHz, 96 KB/s) and far more than a chat customer needs in flight. One that stops
/// reading holds no more of the kernel's memory than this, and its writes stall soon
/// enough for the slow-consumer rule to find it.
pub const PEER_SEND_BUFFER: usize = 64 * 1024;

/// A customer sends one small frame at a time (a typed message is a few hundred bytes).
pub const CUSTOMER: Buffers = Buffers { read: 512, send: Some(PEER_SEND_BUFFER) };
/// A call leg's frame is 20 ms of audio (160 bytes of µ-law, 640 of L16 at 16 kHz).
pub const CALLER: Buffers = Buffers { read: 1024, send: Some(PEER_SEND_BUFFER) };
/// A bot or agent carries many conversations on one connection: a larger read buffer, so
/// a busy one reads many frames per system call, and the kernel's autotuned send buffer.
pub const MEMBER: Buffers = Buffers { read: 16 * 1024, send: None };

/// Buffer and size settings for a connection (tungstenite's defaults are 128 KiB buffers).
/// The write buffer only sets when buffered frames are written out; it grows with what is
/// queued and starts empty.
pub fn ws_config(max_text: usize, read_buffer: usize) -> WebSocketConfig {
    let max = (max_text * 4).max(1 << 20);
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(4 << 20)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Answers a WebSocket upgrade and runs `on_ws` on the connection once upgraded, with the
/// [`Buffers`] of who is at the other end.
pub fn upgrade<F, Fut>(hub: &Arc<Hub>, mut req: Request, buffers: Buffers, on_ws: F) -> Response
where
    F: FnOnce(WsStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let headers = req.headers();
    if !header_has(headers, header::CONNECTION, "upgrade") || !header_has(headers, header::UPGRADE, "websocket") {
        return (StatusCode::UPGRADE_REQUIRED, [(header::UPGRADE, "websocket")], "this endpoint speaks WebSocket\n")
            .into_response();
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok()) != Some("13") {
        return (StatusCode::BAD_REQUEST, "Sec-WebSocket-Version must be 13\n").into_response();
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return (StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n").into_response();
    };
    let Ok(permit) = hub.connections.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "too many connections; try again later\n",
        )
            .into_response();
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    let config = ws_config(hub.server.max_frame_bytes, buffers.read);
    if let Some(send) = req.extensions().get::<super::listen::SendBuffer>() {
        send.limit(buffers.send);
    }
    hub.tasks.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
                on_ws(ws).await;
                drop(permit);
            }
            Err(e) => tracing::debug!("upgrade failed: {e}"),
        }
    });
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    res
}

/// Runs a connection until either side closes it, the gateway shuts down, or it is kicked.
/// `handshake` bounds the wait for the first text frame.
///
/// `run` and [`run_with`] (and the endpoints' own `run`s) are plain functions that do
/// their setup at once and return the connection's loop as one future: an `async fn`
/// layer would keep its arguments (the 328-byte socket among them) in the task for the
/// connection's whole life, next to the copies the inner layer moved them into.
pub fn run<S: Session>(
    hub: Arc<Hub>,
    ws: WsStream,
    outbox: Outbox,
    rx: crate::hub::outbox::Inbox,
    session: S,
    handshake: Option<Duration>,
) -> impl Future<Output = ()> + Send + 'static {
    let ping_every = Duration::from_secs((hub.server.idle_timeout_secs / 3).max(1));
    let stall = Duration::from_secs(hub.server.idle_timeout_secs.max(1));
    let shut_down = hub.clone();
    let writer: Writer = Box::new(move |sink, rx, outbox, done| {
        Box::pin(write_loop(sink, rx, outbox, shut_down, done, Timing { ping_every, stall }))
    });
    run_with(hub, ws, outbox, rx, session, handshake, writer)
}

/// [`run`] with a writer of the caller's own (the Direct Line stream speaks its own
/// format); the reader, its guards and the shutdown are the same for every connection.
pub fn run_with<S: Session>(
    hub: Arc<Hub>,
    ws: WsStream,
    outbox: Outbox,
    rx: crate::hub::outbox::Inbox,
    session: S,
    handshake: Option<Duration>,
    writer: Writer,
) -> impl Future<Output = ()> + Send + 'static {
    let writer_stall = Duration::from_secs(hub.server.idle_timeout_secs.max(1));
    let (sink, mut stream) = ws.split();
    // Cancelled when the reader ends, and with the hub's shutdown (it is its child): the
    // connection's loops poll this token of their own, not the one every connection shares
    // (its locks were taken on every wake-up of every connection, on both cores).
    let done = hub.shutdown_child();
    let writer = tokio::spawn(writer(sink, rx, outbox.clone(), done.clone()));
    let span = span(&outbox, &session);
    let mut reader = Reader::new(&hub, session, outbox.clone(), handshake);
    tracing::Instrument::instrument(
        async move {
            // One timer for the handshake and then the idle timeout, re-armed only when it fires:
            // no timer is registered per frame.
            let timer = tokio::time::sleep_until(reader.next_deadline());
            tokio::pin!(timer);
            // Made once and kept pinned: a fresh `cancelled()` future per frame registered with,
            // and dropped from, the token's waiter list every time (several % of a chat-relay
            // profile).
            let kicked = outbox.kicked();
            // Only the shutdown cancels `done` while the reader runs.
            let stopping = done.cancelled();
            tokio::pin!(kicked, stopping);
            let mut kicked = Armed::new(kicked.as_mut(), || outbox.is_kicked());
            let mut stopping = Armed::new(stopping.as_mut(), || hub.is_shutting_down());
            loop {
                tokio::select! {
                    _ = &mut kicked => break,
                    _ = &mut stopping => break,
                    _ = &mut timer => match reader.deadline() {
                        ControlFlow::Continue(due) => timer.as_mut().reset(due),
                        ControlFlow::Break(()) => break,
                    },
                    msg = stream.next() => if reader.frame(msg).is_break() { break },
                }
            }
            reader.session.on_close();
            done.cancel();
            // The writer ends by its own bounds (a kicked one's closing frame may wait for
            // the peer as long as a stalled write: the idle timeout); this one is a backstop.
            // Then what the peer still sends is read, so that closing does not reset the
            // connection and throw away the closing frame it has not read yet.
            let backstop = Duration::from_secs(writer_stall.as_secs().max(10) + 5);
            if tokio::time::timeout(backstop, writer).await.is_ok() {
                drain(&mut stream).await;
            }
        },
        span,
    )
}

/// One connection's tracing span: every log line of its reader (and the hub calls it
/// makes) carries who it is.
fn span(outbox: &Outbox, session: &impl Session) -> tracing::Span {
    tracing::info_span!("connection", conn.id = outbox.id(), peer.role = session.role(), peer.id = session.peer())
}

/// What a connection that writes in its own task ([`run_inline`]) says, and when.
pub trait Speaker: Session {
    /// Turns an item the hub queued into the messages to send (none, for what this peer
    /// has no use for); `Some` ends the connection with that close. By default, the
    /// hub's frames as they are, as [`run`]'s writer sends them.
    fn speak(&mut self, item: Outgoing, out: &mut Vec<Message>) -> Option<(Reason, String)> {
        plain(item, out)
    }
    /// Messages due right after a frame was read and handled (a call leg's playout, which
    /// the caller's own audio clocks).
    fn after_read(&mut self, _out: &mut Vec<Message>) {}
}

/// What the hub queued, as it goes on the wire: its frames as they are, audio as binary;
/// `Some` for a close.
fn plain(item: Outgoing, out: &mut Vec<Message>) -> Option<(Reason, String)> {
    match item {
        Outgoing::Text(f) => out.push(text(f)),
        Outgoing::Batch(fs) => out.extend(fs.into_iter().map(text)),
        Outgoing::Error(e) => out.push(text(respond::error_out(&e))),
        Outgoing::Binary(b) => out.push(Message::Binary(b)),
        Outgoing::Play => {}
        Outgoing::Close(reason, detail) => return Some((reason, detail)),
    }
    None
}

/// Runs a connection in one task: the reader of [`run_with`], and the writer in the same
/// loop, so what a frame read makes due (a customer's `ack`, a call leg's next 20 ms
/// toward the caller) goes out in the same wake-up, as an echo server's reply does. For
/// connections of many peers with little traffic each (customers, call legs): one task
/// and one wake-up per frame instead of two, and no lock between the socket's halves. A
/// write that stalls (the peer does not read) still races the kick, the shutdown and the
/// idle timeout.
pub fn run_inline<S: Speaker>(
    hub: Arc<Hub>,
    mut ws: WsStream,
    outbox: Outbox,
    mut rx: crate::hub::outbox::Inbox,
    session: S,
    handshake: Option<Duration>,
) -> impl Future<Output = ()> + Send + 'static {
    let ping_every = Duration::from_secs((hub.server.idle_timeout_secs / 3).max(1));
    let span = span(&outbox, &session);
    let mut reader = Reader::new(&hub, session, outbox.clone(), handshake);
    tracing::Instrument::instrument(
        async move {
            // One timer for the handshake or idle deadline and the next ping, whichever
            // comes first.
            let mut next_ping = tokio::time::Instant::now() + ping_every;
            let timer = tokio::time::sleep_until(reader.next_deadline().min(next_ping));
            // The hub's own shutdown wait, not a child token per connection: armed, it is
            // polled once, to register the task.
            let kicked = outbox.kicked();
            let stopping = hub.stopping();
            tokio::pin!(timer, kicked, stopping);
            let mut kicked = Armed::new(kicked.as_mut(), || outbox.is_kicked());
            let mut stopping = Armed::new(stopping.as_mut(), || hub.is_shutting_down());
            let mut out: Vec<Message> = Vec::new();
            let mut close: Option<(Reason, String)> = None;
            'run: loop {
                // The cheap checks (atomic loads): the select below reaches the waits for
                // the kick and the shutdown only when nothing else is ready, so a peer that
                // keeps sending would never reach them.
                if outbox.is_kicked() || hub.is_shutting_down() {
                    break;
                }
                let mut read = false;
                tokio::select! {
                    biased;
                    // Reads first; what is queued is drained after every read, below.
                    msg = ws.next() => {
                        if reader.frame(msg).is_break() {
                            break;
                        }
                        read = true;
                    }
                    m = rx.recv() => match m {
                        Some(item) => if let Some(c) = reader.session.speak(item, &mut out) {
                            close = Some(c);
                            break;
                        },
                        None => break,
                    },
                    _ = &mut timer => {
                        let now = tokio::time::Instant::now();
                        if now >= next_ping {
                            out.push(Message::Ping(Bytes::new()));
                            next_ping = now + ping_every;
                        }
                        if now >= reader.next_deadline() && reader.deadline().is_break() {
                            break;
                        }
                        timer.as_mut().reset(reader.next_deadline().min(next_ping));
                    }
                    _ = &mut kicked => break,
                    _ = &mut stopping => break,
                }
                // What is queued goes first (in the order queued), then what the read made due.
                for _ in 0..64 {
                    let Ok(item) = rx.try_recv() else { break };
                    if let Some(c) = reader.session.speak(item, &mut out) {
                        close = Some(c);
                        break 'run;
                    }
                }
                if read {
                    reader.session.after_read(&mut out);
                }
                if !out.is_empty() {
                    // Pinned where it is made: moved into `bounded_write`, the write's state
                    // was copied on every write (0.9 % of the gateway's samples with 500
                    // calls).
                    let write = std::pin::pin!(async {
                        for m in out.drain(..) {
                            ws.feed(m).await?;
                        }
                        ws.flush().await
                    });
                    if !bounded_write(write, &outbox, kicked.wait.as_mut(), Some(stopping.wait.as_mut()), reader.idle)
                        .await
                    {
                        break;
                    }
                }
            }
            reader.session.on_close();
            if outbox.is_kicked() {
                close_kicked(&mut ws, &hub, &outbox, reader.idle).await;
                drain(&mut ws).await;
                return;
            }
            let close = match close {
                None if hub.is_shutting_down() => Some((Reason::ShuttingDown, "server shutting down".to_owned())),
                close => close,
            };
            match close {
                Some((reason, detail)) => {
                    if reason == Reason::ShuttingDown {
                        // What is already queued goes out before the goodbye.
                        while let Ok(item) = rx.try_recv() {
                            if reader.session.speak(item, &mut out).is_some() {
                                break;
                            }
                        }
                    }
                    for m in out.drain(..) {
                        if tokio::time::timeout(Duration::from_secs(1), ws.feed(m)).await.is_err() {
                            break;
                        }
                    }
                    close_with(&mut ws, reason, &detail).await;
                    drain(&mut ws).await;
                }
                None => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                }
            }
        },
        span,
    )
}

/// Why a peer whose writes stall is closed.
pub const SLOW_CONSUMER: &str = "slow consumer: not reading what is sent";

/// A pinned wait for a cancellation token (a connection's kick, the shutdown).
pub(crate) type Cancelled<'a, 'b> = std::pin::Pin<&'a mut tokio_util::sync::WaitForCancellationFuture<'b>>;

/// A pinned cancellation wait that is cheap to poll again. tokio-util 0.7's wait takes two
/// locks on every poll (the token's, then its waiters'), and [`run_inline`]'s loop polls
/// its two on every wake-up of every call leg and customer. Once the wait has registered
/// the task's waker it stays registered until the token is cancelled, so a later poll only
/// asks `fired` (the flag of a `hub::signal::Signal`, set before its token is cancelled:
/// [`Outbox::is_kicked`], [`Hub::is_shutting_down`]) and reaches the wait again only when that says yes or the
/// waker is another.
pub(crate) struct Armed<'a, 'b, F> {
    pub wait: Cancelled<'a, 'b>,
    fired: F,
    registered: Option<std::task::Waker>,
}

impl<'a, 'b, F: Fn() -> bool> Armed<'a, 'b, F> {
    pub fn new(wait: Cancelled<'a, 'b>, fired: F) -> Self {
        Armed { wait, fired, registered: None }
    }
}

impl<F: Fn() -> bool + Unpin> Future for Armed<'_, '_, F> {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let this = self.get_mut();
        if !(this.fired)() && this.registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return std::task::Poll::Pending;
        }
        let polled = this.wait.as_mut().poll(cx);
        if polled.is_pending() {
            this.registered = Some(cx.waker().clone());
        }
        polled
    }
}

/// Runs one write (frames fed and flushed) toward a peer, whether it succeeded. Most go
/// out at once; one that cannot races the kick, `stopping` (the shutdown, where the
/// caller does not watch it itself) and `stall`, and its timer is armed only then. Past
/// `stall` the peer, which has stopped reading, is kicked as a slow consumer (4008),
/// however little is queued toward it. Every writer's writes go through here.
pub(crate) async fn bounded_write<E>(
    write: impl Future<Output = Result<(), E>>,
    outbox: &Outbox,
    kicked: Cancelled<'_, '_>,
    stopping: Option<Cancelled<'_, '_>>,
    stall: Duration,
) -> bool {
    tokio::pin!(write);
    if let Some(r) = futures_util::FutureExt::now_or_never(write.as_mut()) {
        return r.is_ok();
    }
    let stopping = async move {
        match stopping {
            Some(s) => s.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        r = &mut write => r.is_ok(),
        _ = kicked => false,
        _ = stopping => false,
        _ = tokio::time::sleep(stall) => {
            outbox.kick(Reason::SlowConsumer, SLOW_CONSUMER);
            false
        }
    }
}

/// A connection's reader: the checks every frame read passes (size, rate limits) before
/// its session sees it, and the handshake and idle deadlines, whichever loop runs it.
struct Reader<S> {
    session: S,
    outbox: Outbox,
    limit: usize,
    rate: f64,
    bucket: TokenBucket,
    media_rate: f64,
    media_bucket: TokenBucket,
    media_refused: u64,
    idle: Duration,
    /// The first text frame is still awaited, within the handshake timeout.
    handshake: Option<Duration>,
    last_frame: tokio::time::Instant,
}

impl<S: Session> Reader<S> {
    fn new(hub: &Hub, session: S, outbox: Outbox, handshake: Option<Duration>) -> Reader<S> {
        let (rate, burst) = session.rate();
        let (media_rate, media_burst) = session.binary_rate();
        Reader {
            session,
            outbox,
            limit: hub.server.max_frame_bytes,
            rate,
            bucket: TokenBucket::new(rate, burst),
            media_rate,
            media_bucket: TokenBucket::new(media_rate, media_burst),
            media_refused: 0,
            idle: Duration::from_secs(hub.server.idle_timeout_secs.max(1)),
            handshake,
            last_frame: tokio::time::Instant::now(),
        }
    }

    /// When the timer fires next: the handshake's deadline while the first text frame is
    /// awaited, else the idle timeout's.
    fn next_deadline(&self) -> tokio::time::Instant {
        self.last_frame + self.handshake.unwrap_or(self.idle)
    }

    /// The timer fired: the connection is kicked (no `session.start` in time, or idle for
    /// too long), or the timer is re-armed for when it could be idle next.
    fn deadline(&mut self) -> ControlFlow<(), tokio::time::Instant> {
        if self.handshake.take().is_some() && !self.session.started() {
            self.outbox.kick(Reason::Policy, "no session.start in time");
            return ControlFlow::Break(());
        }
        let due = self.last_frame + self.idle;
        if tokio::time::Instant::now() >= due {
            self.outbox.kick(Reason::Idle, "idle for too long");
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(due)
    }

    /// One read from the socket (`None`: it ended). `Break`: the connection ends.
    fn frame(&mut self, msg: Option<Result<Message, WsError>>) -> ControlFlow<()> {
        self.last_frame = tokio::time::Instant::now();
        let outbox = &self.outbox;
        match msg {
            Some(Ok(Message::Text(t))) => {
                if t.len() > self.limit {
                    outbox.kick(Reason::TooLarge, &format!("text frame over {} bytes", self.limit));
                    return ControlFlow::Break(());
                }
                if !self.bucket.take() {
                    let e = ProtocolError::new(
                        crate::protocol::ErrorCode::RateLimited,
                        format!("more than {} frames per second; this frame was not processed", self.rate),
                    );
                    outbox.send_error(e, None, crate::protocol::peek_client_activity_id(t.as_str()).as_deref());
                    return ControlFlow::Continue(());
                }
                self.session.on_text(t.as_str());
                if self.session.ended() {
                    return ControlFlow::Break(());
                }
            }
            Some(Ok(Message::Binary(b))) => {
                let max = self.session.max_binary();
                if b.len() > max {
                    outbox.kick(Reason::TooLarge, &format!("binary frame over {max} bytes"));
                    return ControlFlow::Break(());
                }
                if self.media_rate > 0.0 && !self.media_bucket.take() {
                    // Told once a second at most: audio comes 50 frames a second.
                    self.media_refused += 1;
                    if self.media_refused % 50 == 1 {
                        let e = ProtocolError::new(
                            crate::protocol::ErrorCode::RateLimited,
                            format!(
                                "more than {} media frames per second; {} dropped so far",
                                self.media_rate, self.media_refused
                            ),
                        );
                        outbox.send_error(e, None, None);
                    }
                    return ControlFlow::Continue(());
                }
                if let Err(e) = self.session.on_binary(b) {
                    outbox.send_error(e, None, None);
                }
            }
            Some(Ok(Message::Close(_))) | None => return ControlFlow::Break(()),
            Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
            Some(Err(WsError::Capacity(e))) => {
                outbox.kick(Reason::TooLarge, &format!("frame too large: {e}"));
                return ControlFlow::Break(());
            }
            // Protocol violations close with the SPEC's code, logged once at debug.
            Some(Err(WsError::Utf8(e))) => {
                tracing::debug!(conn = outbox.id(), "invalid UTF-8 in a text frame: {e}");
                outbox.kick(Reason::InvalidText, "invalid UTF-8 in a text frame");
                return ControlFlow::Break(());
            }
            Some(Err(WsError::Protocol(e))) => {
                tracing::debug!(conn = outbox.id(), "WebSocket protocol violation: {e}");
                outbox.kick(Reason::ProtocolViolation, &format!("protocol violation: {e}"));
                return ControlFlow::Break(());
            }
            Some(Err(e)) => {
                tracing::debug!(conn = outbox.id(), "read error: {e}");
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}

pub type Sink = futures_util::stream::SplitSink<WsStream, Message>;

/// Sends the closing frame for `reason`, its code chosen by the error edge, if its write
/// completes within two seconds: the gateway's own goodbyes (the shutdown, a failed write,
/// a close the hub asked for), to a peer that reads or is gone.
pub async fn close_with<K: futures_util::Sink<Message> + Unpin>(sink: &mut K, reason: Reason, detail: &str) {
    close_within(sink, reason, detail, Duration::from_secs(2)).await;
}

async fn close_within<K: futures_util::Sink<Message> + Unpin>(
    sink: &mut K,
    reason: Reason,
    detail: &str,
    within: Duration,
) {
    let frame = CloseFrame { code: respond::close_code(reason).into(), reason: detail.into() };
    let _ = tokio::time::timeout(within, sink.send(Message::Close(Some(frame)))).await;
}

/// Sends the closing frame of a kicked connection (`outbox`'s kick). The frame is behind
/// everything already written, and a peer cut off as a slow consumer has that backlog to
/// read first: the frame waits for it as long as a stalled write may (`stall`), or until
/// the shutdown, so that the peer coming back to read learns why (4008: resume from the
/// watermark) rather than finding its connection gone without a word.
pub async fn close_kicked<K: futures_util::Sink<Message> + Unpin>(
    sink: &mut K,
    hub: &Hub,
    outbox: &Outbox,
    stall: Duration,
) {
    let Some(kick) = outbox.kick_reason() else { return };
    tokio::select! {
        _ = close_within(sink, kick.reason, &kick.detail, stall) => {}
        _ = hub.stopping() => {}
    }
}

/// After our closing frame: reads (and drops) what the peer still sends until its own
/// closing frame or the end of the stream, for at most two seconds. Closing a socket
/// with unread bytes in its receive queue makes the kernel reset the connection, and a
/// reset throws away what the peer had not read yet, our closing frame with its code
/// among it: a caller that kept sending while it did not read would never learn it was
/// cut off as a slow consumer.
pub async fn drain<R, E>(stream: &mut R)
where
    R: futures_util::Stream<Item = Result<Message, E>> + Unpin,
{
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(m)) = stream.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
}

/// A bot's or agent's writer gathers audio: an audio frame queued within this time of
/// the writer's last write waits for the timer's next tick (it counts in whole
/// milliseconds: 0–1 ms) and goes out with what else came meanwhile. One voice bot's
/// connection carries every call's audio, which arrives one frame at a time from each
/// call's leg: written as it came, 500 calls' audio toward their bot took a `sendto` per
/// 1.6 frames, and the gateway used 1.67–1.82× the echo baseline's CPU; gathered,
/// 1.38–1.59×, for 0.5–1 ms more from caller to bot (p99 3.0–3.3 ms against 1.6–2.6).
/// Audio after a quiet millisecond goes out at once, and text (activities, work items)
/// never waits.
const COALESCE: Duration = Duration::from_millis(1);

/// A writer's clocks: how often it pings an idle peer, and how long one of its writes may
/// make no progress before the peer counts as a slow consumer.
struct Timing {
    ping_every: Duration,
    stall: Duration,
}

/// Owns the sink: sends what the outbox queues, batching, and the closing frame. Its
/// writes are bounded by `timing.stall` (the idle timeout, as for customers in
/// [`run_inline`]; [`bounded_write`]): a bot or agent that stops reading lets go of the
/// conversations it holds (they come back to it when it connects again).
async fn write_loop(
    mut sink: Sink,
    mut rx: crate::hub::outbox::Inbox,
    outbox: Outbox,
    hub: Arc<Hub>,
    done: CancellationToken,
    timing: Timing,
) {
    let Timing { ping_every, stall } = timing;
    // Pings keep healthy idle clients (and NATs) alive; their pongs reset our idle timer.
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    // Pinned once, as in `run`. `done` also fires at shutdown (it is the shutdown's child),
    // which the hub's flag then tells apart from the reader's end.
    let kicked = outbox.kicked();
    let finished = done.cancelled();
    tokio::pin!(kicked, finished);
    let mut last_write: Option<tokio::time::Instant> = None;
    loop {
        let first = tokio::select! {
            biased;
            _ = &mut kicked => break,
            _ = &mut finished => {
                if !hub.is_shutting_down() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
                    return;
                }
                // Shutting down: flush what is already queued, then say goodbye.
                let mut msgs = Vec::new();
                'drain: while let Ok(out) = rx.try_recv() {
                    if matches!(out, Outgoing::Binary(_)) {
                        continue;
                    }
                    if plain(out, &mut msgs).is_some() {
                        break;
                    }
                    for m in msgs.drain(..) {
                        if tokio::time::timeout(Duration::from_secs(1), sink.feed(m)).await.is_err() {
                            break 'drain;
                        }
                    }
                }
                close_with(&mut sink, Reason::ShuttingDown, "server shutting down").await;
                return;
            }
            _ = ping.tick() => {
                let ping = sink.send(Message::Ping(Bytes::new()));
                if !bounded_write(ping, &outbox, kicked.as_mut(), None, stall).await {
                    break;
                }
                continue;
            }
            m = rx.recv() => m,
        };
        let Some(first) = first else { break };
        // Audio coming faster than one write a COALESCE waits for the timer's next tick,
        // and what comes meanwhile goes out in the same write. Text (an activity, a work
        // item) goes out as soon as the writer gets it.
        if matches!(first, Outgoing::Binary(_))
            && last_write.is_some_and(|t| t + COALESCE > tokio::time::Instant::now())
        {
            tokio::select! {
                biased;
                _ = &mut kicked => break,
                _ = tokio::time::sleep(Duration::from_micros(1)) => {}
            }
        }
        let mut close = None;
        // Whatever else is queued goes out in the same flush (up to 64 frames a flush),
        // fed to the sink as it is taken: the batch's list lives for the batch only (an idle
        // connection would carry a kept one for its whole life).
        let write = async {
            let mut next = Some(first);
            let mut fed = 0usize;
            let mut msgs = Vec::new();
            while let Some(out) = next.take() {
                close = plain(out, &mut msgs);
                for m in msgs.drain(..) {
                    sink.feed(m).await?;
                }
                if close.is_some() {
                    break;
                }
                fed += 1;
                if fed.is_multiple_of(64) {
                    sink.flush().await?;
                }
                next = rx.try_recv().ok();
            }
            sink.flush().await
        };
        let ok = bounded_write(write, &outbox, kicked.as_mut(), None, stall).await;
        last_write = Some(tokio::time::Instant::now());
        if let Some((reason, detail)) = close {
            close_with(&mut sink, reason, &detail).await;
            return;
        }
        if !ok {
            break;
        }
    }
    // Kicked: close with the kick's code at once. A write failed: most often because the
    // peer's close frame arrived while a batch was going out, and nothing may be sent after
    // it but the reply tungstenite has queued; flush that, so the peer sees its closing
    // handshake completed (the close below is then refused, harmlessly).
    if outbox.is_kicked() {
        close_kicked(&mut sink, &hub, &outbox, stall).await;
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), sink.flush()).await;
    close_with(&mut sink, Reason::Internal, "write failed").await;
}

/// A token bucket: `rate` frames per second sustained, `burst` at once.
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: tokio::time::Instant,
}

impl TokenBucket {
    /// `rate` tokens a second, at most `burst` saved up (it starts full).
    pub fn new(rate: f64, burst: u32) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket { rate, burst, tokens: burst, at: tokio::time::Instant::now() }
    }

    fn refill(&mut self) {
        let now = tokio::time::Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
    }

    /// One token, if there is one.
    fn take(&mut self) -> bool {
        self.refill();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens even when there are not that many, and says how long to wait before
    /// going on (zero while the bucket holds them): a meter that slows rather than refuses.
    pub fn debit(&mut self, n: f64) -> Duration {
        self.refill();
        self.tokens -= n;
        if self.tokens < 0.0 && self.rate > 0.0 {
            Duration::from_secs_f64(-self.tokens / self.rate)
        } else {
            Duration::ZERO
        }
    }
}
