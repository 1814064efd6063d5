//! The conversation store: where conversations and their activities are journaled so that
//! nothing acknowledged is lost.
//!
//! The hub keeps every open conversation's transcript in memory and serves from there; a
//! [`Store`] is the journal behind it. An activity is acknowledged to its sender only when
//! its [`Commit`] resolves, so a durable store (SQLite with group commit, the durability
//! issue) slots in here without touching the hub's hot path. [`MemoryStore`] is the
//! in-memory path: nothing outlives the process, and every commit resolves at once.

use std::future::Future;
use std::pin::Pin;

use crate::protocol::Frame;

/// What is journaled.
#[derive(Debug)]
pub enum Record<'a> {
    Started { conversation: &'a str, workstream: &'a str, customer: &'a str },
    Activity { conversation: &'a str, seq: u64, frame: &'a Frame },
    Closed { conversation: &'a str },
}

#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// Resolves when a record is durable.
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
    /// Journals a record; the returned commit resolves once it is durable.
    fn record(&self, rec: Record<'_>) -> Commit;
    /// Resolves once everything recorded so far is durable (shutdown).
    fn flush(&self) -> Commit;
}

/// The in-memory path: the hub's own transcripts are the only copy.
#[derive(Debug, Default)]
pub struct MemoryStore;

impl Store for MemoryStore {
    fn record(&self, _rec: Record<'_>) -> Commit {
        Commit::Done
    }

    fn flush(&self) -> Commit {
        Commit::Done
    }
}
