//! What `/metrics` counts, kept where it happens at the cost of an atomic add.
//!
//! The hot path (an activity relayed, a media frame forwarded) only bumps a process-wide
//! [`Count`]: no lock, no map lookup, no label, and no cache line shared between the
//! threads that count. What is a *state* rather than an event
//! (connections by role, conversations by state, workstream and queue, calls in progress)
//! is not counted at all: `server::metrics` reads it from the hub when it is scraped. The
//! few labelled event counters and the histograms (escalations by rule, queue waiting time,
//! store commits) are touched once per routing decision or store batch, never per activity.
//!
//! The counters are process-wide, like the process's own CPU time: a test process that
//! runs several gateways sees their sum (tests compare before and after).

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Client activities accepted into a transcript (customers, bots and agents).
pub static ACTIVITIES_IN: Count = Count::new();
/// Text frames queued toward connections (activities, events, acks).
pub static ACTIVITIES_OUT: Count = Count::new();
/// Audio frames received from callers and holders.
pub static MEDIA_IN: Count = Count::new();
/// Audio frames queued toward holders' connections (callers' legs count in `MEDIA_IN`'s
/// other direction: every holder frame is played out).
pub static MEDIA_OUT: Count = Count::new();
/// Voice calls started.
pub static VOICE_CALLS: Count = Count::new();
/// Voice calls refused at `session.start` because the pacer was falling behind.
pub static VOICE_REFUSED: Count = Count::new();
/// Chats refused at `session.start` because their address held `chat_conversations_per_address`.
pub static CHATS_REFUSED: Count = Count::new();
/// Chats refused a way to people (a bot's handoff, or a start routed straight to agents)
/// because their address had `chat_agent_conversations_per_address` with people already.
pub static AGENT_CHATS_REFUSED: Count = Count::new();
/// Bots whose connection went away and stayed away for the grace period.
pub static BOT_FAILURES: Count = Count::new();
/// Bots that left a customer's message unanswered for `bot_reply_timeout_secs`.
pub static BOT_TIMEOUTS: Count = Count::new();
/// Configuration changes applied (admin API or SIGHUP).
pub static CONFIG_RELOADS: Count = Count::new();
/// Times the routing engine's lock was taken (`hub/locks.rs`), the nanoseconds it was held
/// in all, and the nanoseconds threads waited for it. Held time per second is how busy the
/// routing core is: everything it decides is serialised behind this one lock, so routing
/// events cannot go faster than one per (held time ÷ events), however many cores there are.
pub static ENGINE_LOCKS: Count = Count::new();
pub static ENGINE_HELD_NS: Count = Count::new();
pub static ENGINE_WAIT_NS: Count = Count::new();

/// A process-wide count that threads add to without sharing a cache line: each thread
/// adds to a stripe of its own (threads beyond [`STRIPES`] share), and reading sums them.
/// One plain atomic counted every media frame on both cores: with four counts a frame (in
/// and out, each way), the line bounced between the cores 100,000 times a second at 500
/// calls.
pub struct Count {
    stripes: [Stripe; STRIPES],
}

/// Stripes per counter: more than the threads that count on a small machine.
const STRIPES: usize = 8;

/// One stripe, alone on its cache lines (128 bytes: two lines, as x86's adjacent-line
/// prefetcher pulls pairs).
#[repr(align(128))]
struct Stripe(AtomicU64);

impl Count {
    pub const fn new() -> Count {
        Count { stripes: [const { Stripe(AtomicU64::new(0)) }; STRIPES] }
    }

    pub fn add(&self, n: u64) {
        self.stripes[stripe()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// One more.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `d` to a counter of nanoseconds.
    pub fn add_nanos(&self, d: std::time::Duration) {
        self.add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn get(&self) -> u64 {
        self.stripes.iter().fold(0u64, |sum, s| sum.wrapping_add(s.0.load(Ordering::Relaxed)))
    }
}

impl Default for Count {
    fn default() -> Count {
        Count::new()
    }
}

/// This thread's stripe, handed out in turn as threads first count.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    /// The rule that matched, or `(fallback)`.
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: String,
}

/// Escalations by the rule that routed them.
pub static ESCALATIONS: LazyLock<Family<RuleLabel, Counter>> = LazyLock::new(Family::default);

/// Seconds a conversation waited in its queue before a member took it, by queue.
pub static QUEUE_WAIT: LazyLock<Family<QueueLabel, Histogram>> =
    LazyLock::new(|| Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 2.0, 18))));

/// Seconds from a conversation's start until a human agent first took it (bot part
/// included): what a customer who asked for a person waited.
pub static ASSIGNMENT_LATENCY: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(exponential_buckets(0.005, 2.0, 18)));

/// Seconds one store transaction took to commit (including its fsync).
pub static STORE_COMMIT: LazyLock<Histogram> = LazyLock::new(|| Histogram::new(exponential_buckets(0.0001, 2.0, 16)));

/// Seconds one checkpoint of the store's write-ahead log into its database took (SQLite;
/// commits wait while it runs). A cluster's JetStream store has none.
pub static STORE_CHECKPOINT: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(exponential_buckets(0.0001, 2.0, 16)));

/// Records in one store transaction (group commit).
pub static STORE_BATCH: LazyLock<Histogram> = LazyLock::new(|| Histogram::new(exponential_buckets(1.0, 2.0, 13)));

/// An escalation routed by `rule` (`None`: the fallback queue).
pub fn escalated(rule: Option<&str>) {
    ESCALATIONS.get_or_create(&RuleLabel { rule: rule.unwrap_or("(fallback)").to_owned() }).inc();
}

/// A member took a conversation that had waited `waited_ms` in `queue`.
pub fn waited(queue: &str, waited_ms: u64) {
    QUEUE_WAIT.get_or_create(&QueueLabel { queue: queue.to_owned() }).observe(waited_ms as f64 / 1000.0);
}
