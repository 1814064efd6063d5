//! Connections carried between nodes over core NATS subjects.
//!
//! A node that does not lead accepts clients all the same; each accepted socket becomes a
//! *lane* to the leader: its bytes go up on `<s>.up.<leader>.<node>.<id>` and the leader's
//! come down on `<s>.down.<node>.<id>`. At the leader a lane ends in an in-process pipe that
//! the gateway serves exactly like a socket it accepted itself (HTTP, WebSocket upgrades,
//! every endpoint), with the client's own address. So a customer on one node, its bot on a
//! second and the agent on a third are three connections of one hub.
//!
//! Each message is `[kind][n][bytes]`: kind 0 opens a lane (the bytes are the client's
//! address), 1 carries data, 2 closes; `n` counts the messages of one direction of one
//! lane: the opening is 0, what follows it in either direction counts from 1. NATS keeps the order of one publisher's messages; a gap (a message dropped
//! by a slow subscriber) closes the lane rather than corrupt the stream, and the client
//! reconnects. A lane's queue is bounded: a side that does not keep up is closed, as the
//! gateway closes a slow consumer. What a client sends through a node that does not lead
//! is metered (a few MiB a second, far above any endpoint's own limits), so a flood waits
//! on its own TCP connection rather than filling NATS and the leader.
//!
//! Lanes are kept in a `DashMap` on each node (lane id → its queue), read once per message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::Client;
use bytes::{BufMut, Bytes, BytesMut};
use dashmap::DashMap;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::server::ws::TokenBucket;

const OPEN: u8 = 0;
const DATA: u8 = 1;
const CLOSE: u8 = 2;
/// Messages queued toward one lane's socket before the lane counts as slow and is closed
/// (at most 8 MiB of chunks).
const LANE_QUEUE: usize = 256;
/// What one client may send into the cluster through a node that does not lead, in bytes
/// a second and as a burst: far above any endpoint's own limits (a bot at its frame rate,
/// a caller's audio), so only a flood waits, on its own TCP connection, before the leader's
/// limits see it and NATS carries it.
const LANE_RATE: f64 = 4.0 * 1024.0 * 1024.0;
const LANE_BURST: u32 = 8 * 1024 * 1024;
/// The largest chunk read from a socket into one message.
const CHUNK: usize = 32 * 1024;
/// The pipe between a lane and the gateway at the leader.
const PIPE: usize = 64 * 1024;

fn message(kind: u8, n: u64, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(9 + data.len());
    b.put_u8(kind);
    b.put_u64(n);
    b.put_slice(data);
    b.freeze()
}

fn parse(p: &Bytes) -> Option<(u8, u64, Bytes)> {
    if p.len() < 9 {
        return None;
    }
    let n = u64::from_be_bytes(p[1..9].try_into().ok()?);
    Some((p[0], n, p.slice(9..)))
}

struct Lane {
    tx: mpsc::Sender<Option<Bytes>>,
    next: u64,
    cancel: CancellationToken,
}

/// One node's lanes, by id (`<node>.<n>` at the leader, `<n>` elsewhere).
#[derive(Default)]
pub struct Lanes {
    map: DashMap<String, Lane>,
}

impl Lanes {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn add(&self, key: String, cancel: CancellationToken) -> mpsc::Receiver<Option<Bytes>> {
        let (tx, rx) = mpsc::channel(LANE_QUEUE);
        self.map.insert(key, Lane { tx, next: 1, cancel });
        rx
    }

    /// Closes every lane whose id starts with `prefix` (all of them for "").
    pub fn close_matching(&self, prefix: &str) {
        self.map.retain(|k, lane| {
            let keep = !k.starts_with(prefix);
            if !keep {
                lane.cancel.cancel();
            }
            keep
        });
    }

    /// A data or close message for lane `key`: queued toward its socket, or the lane is
    /// closed (unknown, out of order, or not keeping up).
    fn deliver(&self, key: &str, kind: u8, n: u64, data: Bytes) {
        let Some(mut lane) = self.map.get_mut(key) else { return };
        let ok = n == lane.next
            && match kind {
                DATA => lane.tx.try_send(Some(data)).is_ok(),
                CLOSE => {
                    let _ = lane.tx.try_send(None);
                    false
                }
                _ => false,
            };
        lane.next += 1;
        if !ok {
            if kind != CLOSE {
                tracing::debug!(lane = key, "cluster: lane closed: message {n} out of order or not kept up with");
                lane.cancel.cancel();
            }
            drop(lane);
            self.map.remove(key);
        }
    }
}

/// Carries one lane: bytes from `rx` into `sock`, bytes read from `sock` out on `subject`
/// (numbered from `first`; metered at [`LANE_RATE`] when `limited`), until either side
/// closes or `cancel`.
async fn pump<S: AsyncRead + AsyncWrite + Send + 'static>(
    client: Client,
    sock: S,
    mut rx: mpsc::Receiver<Option<Bytes>>,
    subject: String,
    first: u64,
    limited: bool,
    cancel: CancellationToken,
) {
    let (mut r, mut w) = tokio::io::split(sock);
    let down = {
        let cancel = cancel.clone();
        async move {
            loop {
                let item = tokio::select! {
                    () = cancel.cancelled() => return,
                    item = rx.recv() => item,
                };
                match item {
                    Some(Some(b)) => {
                        if w.write_all(&b).await.is_err() {
                            cancel.cancel();
                            return;
                        }
                    }
                    _ => {
                        let _ = w.shutdown().await;
                        return;
                    }
                }
            }
        }
    };
    let up = {
        let cancel = cancel.clone();
        async move {
            let mut n = first;
            let mut buf = vec![0u8; CHUNK];
            let mut budget = TokenBucket::new(LANE_RATE, LANE_BURST);
            loop {
                let read = tokio::select! {
                    () = cancel.cancelled() => break,
                    r = r.read(&mut buf) => r,
                };
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(k) => {
                        if limited {
                            let wait = budget.debit(k as f64);
                            if !wait.is_zero() {
                                tokio::time::sleep(wait).await;
                            }
                        }
                        if client.publish(subject.clone(), message(DATA, n, &buf[..k])).await.is_err() {
                            break;
                        }
                        n += 1;
                    }
                }
            }
            let _ = client.publish(subject.clone(), message(CLOSE, n, &[])).await;
        }
    };
    tokio::join!(down, up);
}

/// The leader's end: every lane that opens on `sub` (`<prefix>.up.<me>.>`) becomes a
/// socket handed to the gateway.
pub async fn serve_leader(
    client: Client,
    mut sub: async_nats::Subscriber,
    prefix: String,
    me: String,
    lanes: Arc<Lanes>,
    handed: mpsc::Sender<(crate::server::listen::Socket, SocketAddr)>,
    stop: CancellationToken,
) {
    let head = format!("{prefix}.up.{me}.");
    loop {
        let m = tokio::select! {
            () = stop.cancelled() => break,
            m = sub.next() => match m { Some(m) => m, None => break },
        };
        let Some(key) = m.subject.as_str().strip_prefix(&head) else { continue };
        let Some((kind, n, data)) = parse(&m.payload) else { continue };
        if kind != OPEN {
            lanes.deliver(key, kind, n, data);
            continue;
        }
        let Some((node, id)) = key.split_once('.') else { continue };
        let peer: SocketAddr =
            std::str::from_utf8(&data).ok().and_then(|s| s.parse().ok()).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        let (near, far) = tokio::io::duplex(PIPE);
        let cancel = stop.child_token();
        let rx = lanes.add(key.to_owned(), cancel.clone());
        let down = format!("{prefix}.down.{node}.{id}");
        if handed.try_send((crate::server::listen::Socket::Tunnel(far), peer)).is_err() {
            // The gateway is not taking connections (stopping, or far behind): say so.
            lanes.map.remove(key);
            let _ = client.publish(down, message(CLOSE, 1, &[])).await;
            continue;
        }
        let (client, lanes, key) = (client.clone(), lanes.clone(), key.to_owned());
        tokio::spawn(async move {
            pump(client, near, rx, down, 1, false, cancel).await;
            lanes.map.remove(&key);
        });
    }
    lanes.close_matching("");
}

/// A node's end when it does not lead: its clients' lanes to the leader.
pub struct Follower {
    client: Client,
    prefix: String,
    me: String,
    pub lanes: Arc<Lanes>,
    next: AtomicU64,
}

impl Follower {
    pub fn new(client: Client, prefix: String, me: String, lanes: Arc<Lanes>) -> Arc<Follower> {
        Arc::new(Follower { client, prefix, me, lanes, next: AtomicU64::new(1) })
    }

    /// Receives what leaders send down to this node's lanes.
    pub async fn dispatch(self: Arc<Self>, stop: CancellationToken) {
        let mut sub = match self.client.subscribe(format!("{}.down.{}.>", self.prefix, self.me)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cluster: cannot subscribe to lanes: {e}");
                return;
            }
        };
        let head = format!("{}.down.{}.", self.prefix, self.me);
        loop {
            let m = tokio::select! {
                () = stop.cancelled() => break,
                m = sub.next() => match m { Some(m) => m, None => break },
            };
            let Some(key) = m.subject.as_str().strip_prefix(&head) else { continue };
            if let Some((kind, n, data)) = parse(&m.payload) {
                self.lanes.deliver(key, kind, n, data);
            }
        }
        self.lanes.close_matching("");
    }

    /// Carries a client's socket to `leader` until either end closes or `term` ends (the
    /// leader changed: the client reconnects and resumes).
    /// `permit` (the node's socket count) is held until the lane ends.
    pub fn carry<S: AsyncRead + AsyncWrite + Send + 'static>(
        self: &Arc<Self>,
        sock: S,
        peer: SocketAddr,
        leader: &str,
        term: &CancellationToken,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let key = id.to_string();
        let cancel = term.child_token();
        let rx = self.lanes.add(key.clone(), cancel.clone());
        let up = format!("{}.up.{leader}.{}.{id}", self.prefix, self.me);
        let this = self.clone();
        tokio::spawn(async move {
            if this.client.publish(up.clone(), message(OPEN, 0, peer.to_string().as_bytes())).await.is_ok() {
                pump(this.client.clone(), sock, rx, up, 1, true, cancel).await;
            }
            this.lanes.map.remove(&key);
            drop(permit);
        });
    }
}
