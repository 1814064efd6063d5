//! The conversation store: where conversations and their activities are journaled so that
//! nothing acknowledged is lost.
//!
//! The hub keeps every open conversation's transcript in memory and serves from there; a
//! [`Store`] is the journal behind it. An activity is delivered to the other participants
//! and acknowledged to its sender only once the store has committed it, so what anyone has
//! seen survives a crash. Two stores exist: [`SqliteStore`] (embedded, durable: the default
//! for `serve`) and [`MemoryStore`] (nothing outlives the process; every record is
//! "committed" at once, which keeps in-process tests and the in-memory benchmark path free
//! of IO).

mod sqlite;

use std::future::Future;
use std::pin::Pin;

pub use sqlite::{SqliteStore, WRITER_THREAD};

use crate::protocol::Frame;
use crate::routing::ConvId;

/// What is journaled. Records are applied in the order they are given.
#[derive(Debug)]
pub enum Record {
    /// A conversation's whole current state (replaces the previous one), as JSON the hub
    /// reads back at recovery. `open` is false once the conversation is closed.
    Conversation { id: ConvId, open: bool, state: String },
    /// One activity of a conversation's transcript.
    Activity { conversation: ConvId, seq: u64, frame: Frame, client_key: Option<String> },
    /// The Bot Framework channel's RSA key (PKCS#8 DER), kept so bots' cached keys stay
    /// valid across restarts.
    ChannelKey(Vec<u8>),
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// Called once a record is durable, or failed, in the order the records were given (by
/// the SQLite store, on the runtime's completion task).
pub type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Resolves when everything before it is durable.
pub enum Commit {
    Done,
    Pending(Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>),
}

impl std::fmt::Debug for Commit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Commit::Done => "Commit::Done",
            Commit::Pending(_) => "Commit::Pending",
        })
    }
}

impl Commit {
    pub async fn wait(self) -> Result<(), StoreError> {
        match self {
            Commit::Done => Ok(()),
            Commit::Pending(f) => f.await,
        }
    }
}

/// A conversation journal.
pub trait Store: Send + Sync + 'static {
    /// True when a record is durable as soon as [`Store::record`] returns; the hub then
    /// passes no `done` callback.
    fn synchronous(&self) -> bool;
    /// Journals a record; `done` is called once it is durable (or could not be stored).
    fn record(&self, rec: Record, done: Option<Done>);
    /// Resolves once everything recorded so far is durable (shutdown).
    fn flush(&self) -> Commit;
}

/// What a store held at startup.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Conversations that were open, oldest first.
    pub conversations: Vec<RecoveredConversation>,
    /// The token signing key, kept so customers' resume tokens survive a restart.
    pub signing_key: Option<[u8; 32]>,
    /// The Bot Framework channel's RSA key, once one was made (see [`Record::ChannelKey`]).
    pub channel_key: Option<Vec<u8>>,
}

#[derive(Debug)]
pub struct RecoveredConversation {
    pub id: String,
    pub state: String,
    /// (seq, frame JSON, client key), seq 1..n in order.
    pub activities: Vec<(u64, String, Option<String>)>,
}

/// The in-memory path: the hub's own transcripts are the only copy.
#[derive(Debug, Default)]
pub struct MemoryStore;

impl Store for MemoryStore {
    fn synchronous(&self) -> bool {
        true
    }

    fn record(&self, _rec: Record, _done: Option<Done>) {}

    fn flush(&self) -> Commit {
        Commit::Done
    }
}
