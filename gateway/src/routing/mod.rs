//! The routing and assignment core (SPEC §3): which queue a conversation goes to, which
//! member of that queue gets it, and who waits.
//!
//! **Invariant:** this module does no IO, never awaits and knows nothing of WebSockets or
//! clocks. Every operation is a plain method on [`Engine`] that takes the current time as a
//! number and returns the [`Effect`]s the outside world must carry out, in order. That keeps
//! it deterministic: the property tests drive it through millions of steps in seconds.
//!
//! The engine owns the state that routing decisions depend on (context variables, queue
//! membership, member load and presence); the server owns sockets and transcripts.

mod engine;
mod reconfigure;
mod snapshot;
mod views;

pub use engine::{ConvStatus, Effect, Engine, EngineError, MemberKind, Moved, Presence, RoutingRecord, Trigger};
pub use reconfigure::Reconfigured;
pub use snapshot::{ConvSnapshot, SnapshotRef};
pub use views::{ConvView, MemberView, QueueView, WaitingView};

/// A conversation's id as the engine knows it.
pub type ConvId = std::sync::Arc<str>;
