//! The hub: the live state of the gateway between the routing core and the connections.
//!
//! It owns the routing [`Engine`] (behind one mutex, taken for routing events only), the
//! conversation map (a `DashMap` of conversation id → [`Conversation`], read on every
//! activity: the hot path), and the map of connected bots and agents. Connections call the
//! hub; the hub carries out the engine's [`Effect`]s by appending to transcripts and
//! queueing frames on outboxes, and saves each conversation's state to the store when it
//! changes. Nothing here awaits while holding a lock.
//!
//! Lock order: engine, then a conversation. The hot path takes only the conversation lock.
//!
//! The files follow what flows through them: `customer.rs` (start, resume, leave, end,
//! survey), `activity.rs` (a client's activity into the transcript, the gateway's notices,
//! closing), `member.rs` (a holder's commands), `handoff.rs` (a bot's handoff signals in
//! every dialect, and `handoff.status` back), `connect.rs` (members coming and going),
//! `effects.rs` (the engine's effects carried out), `persist.rs` (the saved state),
//! `tokens.rs`, `voice.rs` (calls), `pacer.rs` (every call's audio toward its caller, at 1×), `recovery.rs`, `sweep.rs` (timed rules),
//! `conversation.rs` (one conversation's transcript and delivery cursors), `outbox.rs` (a
//! connection's queue) and `builtin_bot.rs` (the built-in bot's runner).

mod activity;
pub mod admin;
pub mod builtin_bot;
pub mod call;
mod connect;
mod conversation;
mod customer;
mod effects;
pub mod error;
mod handoff;
mod locks;
mod member;
pub mod outbox;
pub mod pacer;
mod persist;
mod positions;
mod reconfigure;
mod recovery;
pub mod signal;
mod sweep;
mod tokens;
mod voice;

use std::sync::Arc;

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use conversation::{Ack, Appended, Author, Body, ConvInner, Conversation, Entry, Holder, NewActivity};
pub use error::{HubError, Thing};
pub use outbox::Outbox;

use crate::auth::Signer;
use crate::clock::Clock;
use crate::config::Config;
use crate::protocol::{Party, Role};
use crate::routing::{ConvId, ConvStatus, Engine};
use crate::store::Store;

/// Shared state of a running gateway.
pub struct Hub {
    /// `[server]`: read on every activity, and not live (a change needs a restart).
    pub server: crate::config::ServerConfig,
    /// The running configuration; replaced whole by [`Hub::reconfigure`].
    cfg: parking_lot::RwLock<Arc<Config>>,
    pub clock: Clock,
    pub signer: Signer,
    engine: locks::EngineLock<Engine>,
    convs: DashMap<ConvId, Arc<Conversation>>,
    members: DashMap<Arc<str>, MemberConn>,
    /// Every configured member as it appears in activities (`from`); replaced with the
    /// configuration.
    parties: parking_lot::RwLock<Arc<Parties>>,
    /// Voice calls by stream number (the prefix of every binary media frame).
    calls: DashMap<u32, Arc<call::Call>>,
    /// Open `/v1/chat` conversations by the address they were started from
    /// (`chat_conversations_per_address`); an address with none has no entry.
    origins: DashMap<std::net::IpAddr, u32>,
    /// Of those, the ones gone to people (a bot handed them on, or their rules sent them
    /// straight to agents), by address (`chat_agent_conversations_per_address`).
    agent_chats: DashMap<std::net::IpAddr, u32>,
    /// Paces every call's audio toward its caller (one task per runtime worker).
    pacer: pacer::Pacer,
    /// Queue positions: the positions' task's wake-up, and the customers whose position
    /// changed within a second of the last they were told (`hub/positions.rs`).
    positions: positions::Due,
    next_stream: std::sync::atomic::AtomicU32,
    store: Arc<dyn Store>,
    /// Fired on SIGTERM/SIGINT ([`Hub::shut_down`]): every connection says goodbye and
    /// ends. Others wait for it through [`Hub::stopping`] or a child ([`Hub::shutdown_child`]).
    shutdown: signal::Signal,
    /// Every connection task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Woken when an administrator connects a bot again (the built-in bots wait on it).
    pub bot_enabled: tokio::sync::Notify,
    /// One permit per open WebSocket (`max_connections`).
    pub connections: Arc<tokio::sync::Semaphore>,
    /// In cluster mode, what `GET /v1/admin/cluster` shows (set by the cluster layer).
    cluster: parking_lot::RwLock<Option<ClusterStatus>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("conversations", &self.convs.len()).finish()
    }
}

type Parties = std::collections::HashMap<String, Party>;

fn parties(cfg: &Config) -> Parties {
    cfg.bots
        .iter()
        .map(|b| (b.name.clone(), Party { id: b.name.clone(), name: b.name.clone(), role: Role::Bot }))
        .chain(
            cfg.agents
                .iter()
                .map(|a| (a.id.clone(), Party { id: a.id.clone(), name: a.name.clone(), role: Role::Agent })),
        )
        .collect()
}

/// A connected bot or agent: its outbox and the audio format it asked for.
#[derive(Debug, Clone)]
pub struct MemberConn {
    pub outbox: Outbox,
    pub audio: switchboard_codecs::Format,
}

/// Who is sending a client activity.
#[derive(Debug, Clone)]
pub enum Sender {
    Customer,
    Member(Arc<str>),
}

/// The dedup key of a client activity id from `sender`, as kept in memory and in the store.
pub(crate) fn client_key(sender: &str, client_activity_id: &str) -> String {
    let mut k = String::with_capacity(sender.len() + 1 + client_activity_id.len());
    k.push_str(sender);
    k.push('\u{1}');
    k.push_str(client_activity_id);
    k
}

/// A fresh conversation id: `c_` and 128 random bits in hex.
pub fn new_conversation_id() -> ConvId {
    Arc::from(format!("c_{:032x}", rand::random::<u128>()))
}

pub(crate) fn closed_error() -> HubError {
    HubError::invalid("the conversation has ended")
}

/// The cluster's state as the admin API shows it (nodes, leader), computed when asked.
pub type ClusterStatus = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

impl Hub {
    /// Installs what `GET /v1/admin/cluster` answers (cluster mode only).
    pub fn set_cluster_status(&self, status: ClusterStatus) {
        *self.cluster.write() = Some(status);
    }

    /// The cluster's state, or `{"mode":"single"}` for a gateway alone.
    pub fn cluster_status(&self) -> serde_json::Value {
        match self.cluster.read().clone() {
            Some(f) => f(),
            None => serde_json::json!({"mode": "single", "nodes": []}),
        }
    }

    pub fn new(cfg: Config, store: Arc<dyn Store>, signer: Signer) -> Arc<Hub> {
        let engine = Engine::new(&cfg);
        let connections = Arc::new(tokio::sync::Semaphore::new(cfg.server.max_connections));
        let parties = parking_lot::RwLock::new(Arc::new(parties(&cfg)));
        Arc::new(Hub {
            server: cfg.server.clone(),
            cfg: parking_lot::RwLock::new(Arc::new(cfg)),
            clock: Clock::new(),
            signer,
            engine: locks::EngineLock::new(engine),
            convs: DashMap::new(),
            members: DashMap::new(),
            parties,
            calls: DashMap::new(),
            origins: DashMap::new(),
            agent_chats: DashMap::new(),
            pacer: pacer::Pacer::new(tokio::runtime::Handle::try_current().map_or(1, |h| h.metrics().num_workers())),
            positions: positions::Due::default(),
            next_stream: std::sync::atomic::AtomicU32::new(1),
            store,
            shutdown: signal::Signal::default(),
            tasks: TaskTracker::new(),
            bot_enabled: tokio::sync::Notify::new(),
            cluster: parking_lot::RwLock::new(None),
            connections,
        })
    }

    /// Starts the shutdown: every connection says goodbye and ends.
    pub fn shut_down(&self) {
        self.shutdown.fire();
    }

    /// Whether the shutdown has started: an atomic load.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_fired()
    }

    /// Completes when the shutdown starts.
    pub fn stopping(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.shutdown.fired()
    }

    /// A token of the caller's own, cancelled when the shutdown starts (and by the caller,
    /// for its own end, without touching anyone else's).
    pub fn shutdown_child(&self) -> CancellationToken {
        self.shutdown.child()
    }

    /// Runs `f` every `period` on the hub's tasks until shutdown. `f` is given the instant
    /// the tick was due (for lateness) and says whether it has more to do; `missed` says
    /// what a stalled timer does. With a `wake`, the task starts asleep and sleeps again
    /// whenever `f` has nothing more to do, until `wake` is told (its next tick is then at
    /// once): an idle gateway does not wake for it. Without, it ticks for the gateway's life.
    pub(crate) fn spawn_every(
        self: &Arc<Self>,
        period: std::time::Duration,
        missed: tokio::time::MissedTickBehavior,
        wake: Option<Arc<tokio::sync::Notify>>,
        mut f: impl FnMut(&Hub, tokio::time::Instant) -> bool + Send + 'static,
    ) {
        let hub = self.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(missed);
            let mut busy = false;
            loop {
                if !busy && let Some(wake) = &wake {
                    tokio::select! {
                        _ = hub.stopping() => break,
                        _ = wake.notified() => {}
                    }
                    // Time asleep is not time behind.
                    tick.reset_immediately();
                }
                tokio::select! {
                    _ = hub.stopping() => break,
                    due = tick.tick() => busy = f(&hub, due),
                }
            }
        });
    }

    /// The running configuration (a snapshot: a reload replaces it, never changes it).
    pub fn cfg(&self) -> Arc<Config> {
        self.cfg.read().clone()
    }

    pub(crate) fn parties(&self) -> Arc<Parties> {
        self.parties.read().clone()
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub fn conversation(&self, id: &str) -> Option<Arc<Conversation>> {
        self.convs.get(id).map(|c| c.value().clone())
    }

    /// Runs `f` with the engine locked (read-only views for the admin API and tests).
    pub fn with_engine<T>(&self, f: impl FnOnce(&Engine) -> T) -> T {
        f(&self.engine.lock())
    }

    /// Number of conversations in memory.
    pub fn conversation_count(&self) -> usize {
        self.convs.len()
    }

    fn member_party(&self, member: &str) -> Party {
        self.parties().get(member).cloned().unwrap_or_else(|| Party {
            id: member.to_owned(),
            name: member.to_owned(),
            role: Role::Agent,
        })
    }

    fn is_bot(&self, member: &str) -> bool {
        self.parties().get(member).is_some_and(|p| p.role == Role::Bot)
    }

    /// Whether the conversation is still open (not closed).
    pub fn is_open(&self, conv: &str) -> bool {
        self.engine.lock().status(conv).is_some_and(|s| s != ConvStatus::Closed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// Ticks of a task given `wake`, whose work has two ticks to do each time it is told.
    async fn ticks_after(wake: Option<Arc<tokio::sync::Notify>>, tell: usize) -> usize {
        let hub = Hub::new(Config::builtin_default(), Arc::new(crate::store::MemoryStore), Signer::random());
        let ticks = Arc::new(AtomicUsize::new(0));
        let counted = ticks.clone();
        let mut left = 0;
        let told = wake.clone();
        hub.spawn_every(Duration::from_millis(10), tokio::time::MissedTickBehavior::Delay, wake, move |_, _| {
            counted.fetch_add(1, Ordering::Relaxed);
            if left == 0 {
                left = 2;
            }
            left -= 1;
            left > 0
        });
        for _ in 0..tell {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Some(w) = &told {
                w.notify_one();
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        hub.shut_down();
        ticks.load(Ordering::Relaxed)
    }

    /// With a wake-up, the hub's ticking task starts asleep, ticks at once when told and
    /// for as long as its work says it has more, then sleeps again: an idle gateway's
    /// timers do not wake it (the pacer's shards and the positions' task are built so).
    #[tokio::test(start_paused = true)]
    async fn a_ticking_task_with_a_wake_up_sleeps_while_it_has_nothing_to_do() {
        let wake = Some(Arc::new(tokio::sync::Notify::new()));
        assert_eq!(ticks_after(wake.clone(), 0).await, 0, "asleep from the start");
        assert_eq!(ticks_after(wake.clone(), 1).await, 2, "two ticks of work, then asleep");
        assert_eq!(ticks_after(wake, 3).await, 6, "two each time it is told");
        // Without one, it ticks every 10 ms for the gateway's life, whatever the work says.
        let always = ticks_after(None, 0).await;
        assert!((100..=102).contains(&always), "{always} ticks in 1 s");
    }
}
