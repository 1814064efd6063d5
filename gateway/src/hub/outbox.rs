//! A connection's outbound queue, as the hub sees it.
//!
//! Each connection has one writer task draining a bounded channel. The hub never waits on
//! it: [`Outbox::send`] is `try_send`, and a full queue means the consumer stopped reading.
//! Policy: such a consumer is disconnected ([`Reason::SlowConsumer`], "slow consumer") rather than
//! slowing everyone else or silently dropping frames. Nothing is lost by this: every
//! activity is in the transcript before it is queued, and the client resumes from its
//! watermark (customers) or gets its conversations re-assigned with their transcript on
//! reconnect (bots, agents).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::signal::Signal;
use tokio::sync::mpsc;

use crate::protocol::Frame;
use crate::routing::ConvId;

/// Why a connection ends, as the hub and the sessions say it; `server::respond` alone
/// turns a reason into a close code (SPEC §4's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The conversation (a call) ended normally.
    Ended,
    /// The gateway is shutting down.
    ShuttingDown,
    /// Nothing was received for the idle timeout.
    Idle,
    /// A WebSocket protocol violation.
    ProtocolViolation,
    /// Invalid UTF-8 in a text frame.
    InvalidText,
    /// Not allowed: the handshake did not come in time.
    Policy,
    /// A frame over the size limit.
    TooLarge,
    /// Something went wrong on our side.
    Internal,
    /// The same conversation was resumed on another connection.
    ResumedElsewhere,
    /// The same bot or agent connected again elsewhere.
    Replaced,
    /// The outbound queue overflowed.
    SlowConsumer,
}

/// An error for the client, about a conversation and the client activity it answers.
#[derive(Debug)]
pub struct ErrorOut {
    pub error: super::HubError,
    pub conversation: Option<ConvId>,
    pub client_activity_id: Option<String>,
}

/// What a writer task can be asked to send.
#[derive(Debug)]
pub enum Outgoing {
    Text(Frame),
    /// An `error` event for the client: the server's error edge writes it. Boxed: every
    /// connection's queue is made of blocks of slots this enum's size, and errors are rare.
    Error(Box<ErrorOut>),
    /// Many frames in one queue slot, written in order with the socket's own backpressure:
    /// a resumed client's replay, however long, cannot overflow the queue.
    Batch(Vec<Frame>),
    /// A binary frame (voice media).
    Binary(bytes::Bytes),
    /// The pacer's turn to play the next 20 ms of a call leg's call: the leg takes the
    /// frame from the call's playout itself, so that only the leg ever takes from it and
    /// what the caller hears stays in order (see `hub/pacer.rs`). Others ignore it.
    Play,
    /// Close the connection for this reason (with a detail), after what is already queued.
    Close(Reason, String),
}

/// Why a connection was told to close at once (the writer sends it without draining).
#[derive(Debug, Clone)]
pub struct Kick {
    pub reason: Reason,
    pub detail: String,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Media frames dropped on a full outbound queue, since the process started (for
/// `/metrics`, and in the log).
pub static MEDIA_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Outbound queue slots a holder gets per call it can carry: 500 ms of 20 ms audio, so a
/// reader that stalls for a scheduling hiccup loses nothing, while one that stopped reading
/// still overflows (and is cut off) within a second.
pub const MEDIA_SLOTS_PER_CALL: usize = 25;

/// The receiving end of a connection's queue, which its writer task drains.
///
/// The channel carries boxed items: tokio allocates a channel's slots in blocks of 32 as
/// soon as it is made, so each slot's size is paid by every connection, idle or not
/// (32 × 40 bytes of `Outgoing` was 1.25 KiB per idle customer; 32 pointers are 256
/// bytes). The box costs one small allocation per item sent, next to the frame's own.
#[derive(Debug)]
pub struct Inbox(mpsc::Receiver<Box<Outgoing>>);

impl Inbox {
    /// The next item; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        self.0.recv().await.map(|b| *b)
    }

    /// The next item if one is queued now.
    pub fn try_recv(&mut self) -> Result<Outgoing, mpsc::error::TryRecvError> {
        self.0.try_recv().map(|b| *b)
    }
}

#[derive(Clone, Debug)]
pub struct Outbox {
    id: u64,
    tx: mpsc::Sender<Box<Outgoing>>,
    shared: Arc<Shared>,
}

/// What every handle on one connection's outbox shares.
#[derive(Debug, Default)]
struct Shared {
    kick_reason: parking_lot::Mutex<Option<Kick>>,
    /// Fired by [`Outbox::kick`]; a connection's loop asks on every wake-up.
    kick: Signal,
    /// Media frames this connection lost to a full queue.
    dropped: AtomicU64,
}

impl Outbox {
    /// A new outbox and the receiving end its writer task drains.
    pub fn new(capacity: usize) -> (Outbox, Inbox) {
        let (tx, rx) = mpsc::channel(capacity);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        (Outbox { id, tx, shared: Arc::default() }, Inbox(rx))
    }

    /// Identifies the connection, so a stale connection's teardown cannot detach a newer one.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Queues a frame. Returns false if the connection is gone or was kicked for falling
    /// behind.
    pub fn send(&self, frame: Frame) -> bool {
        match self.tx.try_send(Box::new(Outgoing::Text(frame))) {
            Ok(()) => {
                crate::metrics::ACTIVITIES_OUT.inc();
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.is_kicked() {
                    tracing::warn!(conn = self.id, "slow consumer: outbound queue full, disconnecting");
                }
                self.kick(Reason::SlowConsumer, "slow consumer: reconnect and resume from your watermark");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queues a binary frame (media). A full queue drops the frame instead of closing the
    /// connection: late audio is useless, and the next frame is 20 ms away. Every drop is
    /// counted, and logged (the first, then every 500th).
    pub fn send_binary(&self, data: bytes::Bytes) -> bool {
        match self.tx.try_send(Box::new(Outgoing::Binary(data))) {
            Ok(()) => {
                crate::metrics::MEDIA_OUT.inc();
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.media_dropped_now();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Asks a call leg to play its call's next 20 ms ([`Outgoing::Play`]). False if the
    /// queue is full (the caller is not reading) or the leg is gone.
    pub fn send_play(&self) -> bool {
        self.tx.try_send(Box::new(Outgoing::Play)).is_ok()
    }

    /// Counts (and logs: the first, then every 500th) a media frame this connection lost to
    /// a full queue.
    pub fn media_dropped_now(&self) {
        MEDIA_DROPPED.fetch_add(1, Ordering::Relaxed);
        let n = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if n % 500 == 1 {
            tracing::warn!(conn = self.id, dropped = n, "media frames dropped: the outbound queue is full");
        }
    }

    /// Media frames this connection lost to a full queue.
    pub fn media_dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Queues many frames as one item (see [`Outgoing::Batch`]).
    pub fn send_batch(&self, frames: Vec<Frame>) -> bool {
        if frames.is_empty() {
            return true;
        }
        let n = frames.len() as u64;
        match self.tx.try_send(Box::new(Outgoing::Batch(frames))) {
            Ok(()) => {
                crate::metrics::ACTIVITIES_OUT.add(n);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.is_kicked() {
                    tracing::warn!(conn = self.id, "slow consumer: a replay does not fit, disconnecting");
                }
                self.kick(Reason::SlowConsumer, "slow consumer: reconnect and resume from your watermark");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Queues an `error` event about `conversation` (and the client activity it answers).
    pub fn send_error(&self, err: impl Into<super::HubError>, conversation: Option<&str>, cid: Option<&str>) {
        let item = Outgoing::Error(Box::new(ErrorOut {
            error: err.into(),
            conversation: conversation.map(ConvId::from),
            client_activity_id: cid.map(str::to_owned),
        }));
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(Box::new(item)) {
            self.kick(Reason::SlowConsumer, "slow consumer: reconnect and resume from your watermark");
        }
    }

    /// Asks the writer to close after what is queued (or at once if the queue is full).
    pub fn close(&self, reason: Reason, detail: &str) {
        if self.tx.try_send(Box::new(Outgoing::Close(reason, detail.to_owned()))).is_err() {
            self.kick(reason, detail);
        }
    }

    /// Closes the connection at once, dropping what is queued.
    pub fn kick(&self, reason: Reason, detail: &str) {
        self.shared.kick_reason.lock().get_or_insert(Kick { reason, detail: detail.to_owned() });
        self.shared.kick.fire();
    }

    /// Completes when the connection is kicked.
    pub fn kicked(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.shared.kick.fired()
    }

    /// Whether the connection was kicked: an atomic load, for asking often.
    pub fn is_kicked(&self) -> bool {
        self.shared.kick.is_fired()
    }

    pub fn kick_reason(&self) -> Option<Kick> {
        self.shared.kick_reason.lock().clone()
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed() || self.is_kicked()
    }

    /// Items queued and not yet taken by the writer.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

#[cfg(test)]
mod tests {
    /// Every item sent is an allocation of one `Outgoing` (its slot in the queue is a box):
    /// a large rare variant would make every frame's allocation larger. And the queue's
    /// block of 32 slots is a pointer each, whatever `Outgoing` becomes.
    #[test]
    fn an_outgoing_slot_stays_small() {
        assert!(std::mem::size_of::<super::Outgoing>() <= 40, "{}", std::mem::size_of::<super::Outgoing>());
        assert_eq!(std::mem::size_of::<Box<super::Outgoing>>(), std::mem::size_of::<usize>());
    }
}
