//! Cluster mode (`[cluster]`, SPEC §8): several nodes serving one contact centre over NATS
//! JetStream. See "Cluster" in ARCHITECTURE.md for the design and its promises.
//!
//! In short: one node at a time leads. It holds a lease in a JetStream key-value bucket
//! (`create`, then `update` with the revision it last wrote, so only one node can hold it),
//! runs the hub (routing engine, conversations, bots) with the conversation log in a
//! JetStream stream (`log.rs`), and serves every client of the cluster. The other nodes
//! accept clients too and carry each connection to the leader over NATS subjects
//! (`tunnel.rs`). When the leader dies its lease runs out, another node takes it, reads
//! the log and serves; clients reconnect (to any node) and resume from their watermarks.

pub mod log;
pub mod tunnel;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use dashmap::DashMap;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{ClusterConfig, Config};
use crate::server::listen::Socket;

/// How often a node says it is alive, and how long a silent one is given.
const HEARTBEAT: Duration = Duration::from_secs(1);
const NODE_TIMEOUT: Duration = Duration::from_secs(4);
/// The lease's key in the bucket.
const LEASE_KEY: &str = "leader";
/// The lease's value is "<node> <term>", then "<node> <term> ready" once the leader serves:
/// the others send it clients only then.
const READY: &str = "ready";

/// Who serves this node's clients right now.
#[derive(Clone, Debug)]
enum Role {
    /// No leader known yet: hold new connections a moment.
    Electing,
    /// This node leads: accepted sockets go straight to its gateway.
    Leader(mpsc::Sender<(Socket, SocketAddr)>),
    /// Another node leads (its name, and the term, which ends its lanes when it changes).
    Follower { leader: String, term: CancellationToken },
}

/// What a node needs to reach the cluster.
struct Node {
    cfg: ClusterConfig,
    name: String,
    client: async_nats::Client,
    js: jetstream::Context,
    lease: kv::Store,
    role: watch::Sender<Role>,
    follower: Arc<tunnel::Follower>,
    /// The other nodes' last heartbeats (the leader closes the lanes of a node gone silent).
    seen: DashMap<String, Instant>,
    /// The lanes of the current leadership term, while this node leads.
    leader_lanes: parking_lot::Mutex<Option<Arc<tunnel::Lanes>>>,
}

fn refuse(msg: String) -> ExitCode {
    tracing::error!("{msg}");
    eprintln!("{msg}");
    ExitCode::from(1)
}

/// The node's name: `SWITCHBOARD_NODE` (so nodes can share one file), `[cluster] node`,
/// else the host name.
fn node_name(c: &ClusterConfig) -> String {
    let from_env = std::env::var("SWITCHBOARD_NODE")
        .ok()
        .filter(|n| !n.is_empty() && n.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'));
    from_env.or_else(|| c.node.clone()).unwrap_or_else(|| {
        let h = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "node".into());
        h.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
    })
}

/// `switchboard serve` with `[cluster]`: connects to JetStream (or refuses to start),
/// listens, and takes part in the election until `stop`.
pub async fn serve(
    cfg: Config,
    listen: SocketAddr,
    stop: CancellationToken,
    ready: impl FnOnce(SocketAddr),
) -> ExitCode {
    let Some(cc) = cfg.cluster.clone() else { return refuse("cluster: no [cluster] section".into()) };
    let name = node_name(&cc);
    let urls = cc.nats.list();
    // A node cut off from NATS cannot carry its clients: close their lanes at once, so they
    // reconnect (through the load balancer, to a node that can) instead of waiting.
    let lanes = Arc::new(tunnel::Lanes::default());
    let cut = lanes.clone();
    let opts = async_nats::ConnectOptions::new()
        .name(format!("switchboard {name}"))
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .event_callback(move |e| {
            let cut = cut.clone();
            async move {
                if matches!(e, async_nats::Event::Disconnected) {
                    tracing::warn!("cluster: disconnected from NATS: closing the connections carried to the leader");
                    cut.close_matching("");
                }
            }
        });
    let client =
        match tokio::time::timeout(Duration::from_secs(10), async_nats::connect_with_options(urls.clone(), opts)).await
        {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return refuse(format!("cluster: cannot reach NATS at {}: {e}", urls.join(", "))),
            Err(_) => return refuse(format!("cluster: cannot reach NATS at {}: timed out", urls.join(", "))),
        };
    let js = jetstream::new(client.clone());
    let checked = async {
        ensure_stream(&js, log::stream_config(&cc.stream, cc.replicas)).await.map_err(|e| {
            format!(
                "cluster: JetStream on {} refused the stream {:?} ({e}): is nats-server running with JetStream on (-js)?",
                urls.join(", "),
                cc.stream
            )
        })?;
        // The bucket's stream is made here rather than by `create_key_value`, whose account
        // query does not parse the answer of nats-server 2.9 (Debian's). Both streams are
        // updated to the configuration when they exist (a changed `lease_secs` or `replicas`
        // applies; a change JetStream cannot make refuses the start, saying why).
        ensure_stream(
            &js,
            jetstream::stream::Config {
                name: format!("KV_{}", cc.bucket),
                subjects: vec![format!("$KV.{}.>", cc.bucket)],
                max_messages_per_subject: 1,
                max_age: Duration::from_secs(cc.lease_secs),
                storage: jetstream::stream::StorageType::File,
                num_replicas: cc.replicas,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: jetstream::stream::DiscardPolicy::New,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("cluster: JetStream key-value bucket {:?}: {e}", cc.bucket))?;
        let lease = js
            .get_key_value(&cc.bucket)
            .await
            .map_err(|e| format!("cluster: JetStream key-value bucket {:?}: {e}", cc.bucket))?;
        Ok::<_, String>(lease)
    };
    let lease = match tokio::time::timeout(Duration::from_secs(10), checked).await {
        Ok(Ok(l)) => l,
        Ok(Err(msg)) => return refuse(msg),
        Err(_) => return refuse(format!("cluster: JetStream on {} does not answer", urls.join(", "))),
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => return refuse(format!("cannot listen on {listen}: {e}")),
    };
    let addr = listener.local_addr().unwrap_or(listen);
    let (role, _) = watch::channel(Role::Electing);
    let follower = tunnel::Follower::new(client.clone(), cc.stream.clone(), name.clone(), lanes);
    let node = Arc::new(Node {
        cfg: cc,
        name,
        client,
        js,
        lease,
        role,
        follower,
        seen: DashMap::new(),
        leader_lanes: Default::default(),
    });
    tracing::info!(node = %node.name, "cluster: node {} joined through {}", node.name, urls.join(", "));
    ready(addr);
    // A second process under the same name would receive this one's lanes: the one that
    // hears the other first stops.
    let twin = CancellationToken::new();
    let stop_all = stop.child_token();
    tokio::spawn(node.follower.clone().dispatch(stop_all.clone()));
    tokio::spawn(node.clone().heartbeats(stop_all.clone(), twin.clone()));
    tokio::spawn(node.clone().accept(listener, cfg.server.max_sockets, stop_all.clone()));
    node.elect(cfg, addr, stop_all).await;
    if twin.is_cancelled() { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

impl Node {
    /// Accepts clients and sends each where the current role says.
    /// At most `max_sockets` at once (`[server]`), as a gateway alone: one more is closed as
    /// soon as it is accepted. The leader's gateway also counts the lanes it serves.
    async fn accept(self: Arc<Self>, listener: TcpListener, max_sockets: usize, stop: CancellationToken) {
        let sockets = Arc::new(tokio::sync::Semaphore::new(max_sockets));
        loop {
            let (tcp, peer) = tokio::select! {
                () = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let Ok(permit) = sockets.clone().try_acquire_owned() else { continue };
            let node = self.clone();
            tokio::spawn(async move {
                let mut rx = node.role.subscribe();
                // Wait for a leader (an election takes up to a lease).
                let wait = Duration::from_secs(node.cfg.lease_secs * 2 + 2);
                let role = match tokio::time::timeout(wait, rx.wait_for(|r| !matches!(r, Role::Electing))).await {
                    Ok(Ok(r)) => Role::clone(&r),
                    _ => return,
                };
                match role {
                    Role::Leader(tx) => {
                        let _ = tx.send((Socket::Tcp(tcp), peer)).await;
                    }
                    Role::Follower { leader, term } => node.follower.carry(tcp, peer, &leader, &term, permit),
                    Role::Electing => {}
                }
            });
        }
    }

    /// Says this node is alive every second; the leader listens and closes the lanes of
    /// nodes that fall silent.
    async fn heartbeats(self: Arc<Self>, stop: CancellationToken, twin: CancellationToken) {
        let subject = format!("{}.alive.{}", self.cfg.stream, self.name);
        // Says which process this is, so a second one under the same name is noticed.
        let instance = Bytes::from(rand::random::<u64>().to_be_bytes().to_vec());
        let mut tick = tokio::time::interval(HEARTBEAT);
        let mut sub = self.client.subscribe(format!("{}.alive.*", self.cfg.stream)).await.ok();
        let head = format!("{}.alive.", self.cfg.stream);
        let mut last_tick = Instant::now();
        loop {
            // Heartbeats already received are taken before a tick judges silence.
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                m = async { match sub.as_mut() { Some(s) => futures_util::StreamExt::next(s).await, None => std::future::pending().await } } => {
                    let Some(m) = m else { continue };
                    let Some(n) = m.subject.as_str().strip_prefix(&head) else { continue };
                    if n != self.name {
                        self.seen.insert(n.to_owned(), Instant::now());
                    } else if m.payload != instance {
                        let msg = format!(
                            "cluster: another node runs as {n:?}: give each node its own name ([cluster] node, or SWITCHBOARD_NODE); stopping"
                        );
                        tracing::error!("{msg}");
                        eprintln!("{msg}");
                        twin.cancel();
                        stop.cancel();
                        return;
                    }
                }
                _ = tick.tick() => {
                    let _ = self.client.publish(subject.clone(), instance.clone()).await;
                    let now = Instant::now();
                    // A node that was itself stalled (a tick late) cannot tell who fell
                    // silent: everyone gets the benefit of the doubt.
                    if now.duration_since(std::mem::replace(&mut last_tick, now)) > HEARTBEAT * 2 {
                        for mut e in self.seen.iter_mut() {
                            *e.value_mut() = now;
                        }
                        continue;
                    }
                    let gone: Vec<String> = self
                        .seen
                        .iter()
                        .filter(|e| now.duration_since(*e.value()) > NODE_TIMEOUT)
                        .map(|e| e.key().clone())
                        .collect();
                    for n in gone {
                        self.seen.remove(&n);
                        let lanes = self.leader_lanes.lock().clone();
                        if let Some(l) = lanes {
                            tracing::warn!("cluster: node {n} is silent: closing its connections");
                            l.close_matching(&format!("{n}."));
                        }
                    }
                }
            }
        }
    }

    /// Takes part in the election until `stop`: follows whoever holds the lease, leads when
    /// this node wins it, and steps down when it loses it or its log breaks.
    async fn elect(self: Arc<Self>, cfg: Config, addr: SocketAddr, stop: CancellationToken) {
        let period = Duration::from_millis(self.cfg.lease_secs * 1000 / 5);
        let mut followed: Option<(String, CancellationToken)> = None;
        loop {
            if stop.is_cancelled() {
                break;
            }
            let term = format!("{} {}", self.name, rand::random::<u64>());
            match self.lease.create(LEASE_KEY, Bytes::from(term.clone())).await {
                Ok(rev) => {
                    if let Some((_, t)) = followed.take() {
                        t.cancel();
                    }
                    tracing::info!(node = %self.name, "cluster: leading (lease revision {rev})");
                    self.lead(&cfg, addr, rev, &term, &stop).await;
                    self.role.send_replace(Role::Electing);
                    continue;
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => tracing::debug!("cluster: lease: {e}"),
            }
            // Someone else leads (or NATS is away): follow it.
            let holder = match self.lease.get(LEASE_KEY).await {
                Ok(Some(v)) => String::from_utf8_lossy(&v).into_owned(),
                _ => String::new(),
            };
            let mut words = holder.split(' ');
            let leader = words.next().unwrap_or_default().to_owned();
            let ready = words.nth(1) == Some(READY);
            if followed.as_ref().map(|(t, _)| t.as_str()) != Some(holder.as_str()) {
                if let Some((_, t)) = followed.take() {
                    t.cancel();
                }
                if leader.is_empty() || leader == self.name || !ready {
                    self.role.send_replace(Role::Electing);
                } else {
                    tracing::info!(node = %self.name, "cluster: following {leader}");
                    let t = CancellationToken::new();
                    self.role.send_replace(Role::Follower { leader, term: t.clone() });
                    followed = Some((holder, t));
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(period) => {}
            }
        }
        if let Some((_, t)) = followed.take() {
            t.cancel();
        }
    }

    /// One term as leader: read the log, fence it, run the gateway, renew the lease; ends
    /// (closing every connection) when the lease is lost, the log breaks, or at `stop`.
    async fn lead(
        self: &Arc<Self>,
        cfg: &Config,
        addr: SocketAddr,
        mut rev: u64,
        term: &str,
        stop: &CancellationToken,
    ) {
        let started = Instant::now();
        // Fence the log first (a deposed leader can write nothing after the marker), then
        // read it up to the marker.
        let fence = loop {
            match log::fence(&self.js, &self.cfg.stream, &self.name).await {
                Ok(seq) => break seq,
                // Someone wrote between our look at the stream and the marker: a deposed
                // leader's last words. Fence again.
                Err(e) if started.elapsed() < Duration::from_secs(self.cfg.lease_secs) => {
                    tracing::warn!("cluster: {e}: fencing the log again");
                }
                Err(e) => {
                    tracing::error!("cluster: {e}");
                    return self.release(rev).await;
                }
            }
        };
        let mut recovered = match log::read(&self.js, &self.cfg.stream, fence).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cluster: cannot read the log: {e}");
                return self.release(rev).await;
            }
        };
        let store =
            match log::JetStreamStore::start(self.js.clone(), &self.cfg.stream, fence, recovered.signing_key).await {
                Ok((store, key)) => {
                    recovered.signing_key = Some(key);
                    store
                }
                Err(e) => {
                    tracing::error!("cluster: {e}");
                    return self.release(rev).await;
                }
            };
        tracing::info!(
            "cluster: log read: {} open conversation(s) in {} ms",
            recovered.conversations.len(),
            started.elapsed().as_millis()
        );
        let (store, broken) = log::shared(store);
        let (tx, rx) = mpsc::channel(1024);
        let running = match crate::server::start_on(
            cfg.clone(),
            addr,
            crate::server::listen::Source::Handed(rx),
            store,
            recovered,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cluster: cannot start the gateway: {e}");
                return self.release(rev).await;
            }
        };
        let lanes = Arc::new(tunnel::Lanes::default());
        let (me, l) = (self.clone(), lanes.clone());
        running.hub.set_cluster_status(Arc::new(move || me.status(&l)));
        *self.leader_lanes.lock() = Some(lanes.clone());
        let lane_stop = CancellationToken::new();
        let sub = match self.client.subscribe(format!("{}.up.{}.>", self.cfg.stream, self.name)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cluster: cannot subscribe to carried connections: {e}");
                running.shutdown().await;
                return self.release(rev).await;
            }
        };
        tokio::spawn(tunnel::serve_leader(
            self.client.clone(),
            sub,
            self.cfg.stream.clone(),
            self.name.clone(),
            lanes.clone(),
            tx.clone(),
            lane_stop.clone(),
        ));
        self.role.send_replace(Role::Leader(tx));
        // Now that it serves (its lanes' subject is subscribed, on the connection the lease
        // is written through), the others may send clients: the lease says "ready".
        let ready = Bytes::from(format!("{term} {READY}"));
        let period = Duration::from_millis(self.cfg.lease_secs * 1000 / 5);
        let lease_for = Duration::from_secs(self.cfg.lease_secs);
        let mut renewed = Instant::now();
        let mut first = true;
        let graceful = loop {
            if std::mem::take(&mut first) {
                match self.lease.update(LEASE_KEY, ready.clone(), rev).await {
                    Ok(r) => {
                        rev = r;
                        renewed = Instant::now();
                        tracing::info!(node = %self.name, "cluster: serving as leader");
                        continue;
                    }
                    Err(e) => {
                        tracing::error!("cluster: cannot mark the lease ready ({e}): stepping down");
                        break false;
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => break true,
                () = broken.cancelled() => break false,
                () = tokio::time::sleep(period) => {}
            }
            match self.lease.update(LEASE_KEY, ready.clone(), rev).await {
                Ok(r) => {
                    rev = r;
                    renewed = Instant::now();
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    tracing::error!("cluster: the lease was taken over: stepping down");
                    break false;
                }
                Err(e) => {
                    // Past about four fifths of the lease another node may take it: stop
                    // before it can.
                    if renewed.elapsed() + period >= lease_for {
                        tracing::error!("cluster: cannot renew the lease ({e}): stepping down");
                        break false;
                    }
                    tracing::warn!("cluster: lease renewal failed ({e}); retrying");
                }
            }
        };
        self.role.send_replace(Role::Electing);
        lane_stop.cancel();
        *self.leader_lanes.lock() = None;
        running.shutdown().await;
        if graceful {
            // Hand over at once rather than after the lease runs out.
            let _ = self.lease.delete_expect_revision(LEASE_KEY, Some(rev)).await;
        } else {
            tracing::warn!("cluster: stepped down; clients reconnect to the new leader");
        }
    }

    /// What `GET /v1/admin/cluster` shows: every node heard from, and the leader (this one).
    fn status(&self, lanes: &tunnel::Lanes) -> serde_json::Value {
        let now = Instant::now();
        let mut nodes = vec![serde_json::json!({"name": self.name, "role": "leader", "lastSeenMs": 0})];
        let mut others: Vec<(String, u64)> =
            self.seen.iter().map(|e| (e.key().clone(), now.duration_since(*e.value()).as_millis() as u64)).collect();
        others.sort();
        for (name, ms) in others {
            nodes.push(serde_json::json!({"name": name, "role": "follower", "lastSeenMs": ms}));
        }
        serde_json::json!({
            "mode": "cluster",
            "leader": self.name,
            "stream": self.cfg.stream,
            "bucket": self.cfg.bucket,
            "tunnelledConnections": lanes.len(),
            "nodes": nodes,
        })
    }

    async fn release(&self, rev: u64) {
        let _ = self.lease.delete_expect_revision(LEASE_KEY, Some(rev)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `create_or_update_stream`, tried once more if it fails: nodes that start together may both
/// find no stream and both create it, and JetStream refuses the later create ("subjects
/// overlap with an existing stream"); the second try finds the stream and updates it. A
/// stream JetStream truly refuses is refused twice, with the same error.
async fn ensure_stream(
    js: &jetstream::Context,
    config: jetstream::stream::Config,
) -> Result<jetstream::stream::Info, jetstream::context::CreateStreamError> {
    match js.create_or_update_stream(config.clone()).await {
        Ok(info) => Ok(info),
        Err(e) => {
            tracing::debug!("cluster: creating stream {:?} ({e}); trying again", config.name);
            js.create_or_update_stream(config).await
        }
    }
}
