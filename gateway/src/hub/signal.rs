//! A one-way signal: a connection's kick, the hub's shutdown.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// Fired once, never cleared: an atomic flag for asking often, and a cancellation token
/// for waiting. tokio-util 0.7's token takes a lock to say whether it is cancelled, and
/// two on every poll of a wait; connections ask on every wake-up. [`Signal::fire`] sets
/// the flag before it cancels the token, and it is the only way to cancel it, which
/// `server::ws::Armed` relies on: a wait that has registered its task is polled again
/// only once the flag is up.
#[derive(Debug, Default)]
pub struct Signal {
    fired: AtomicBool,
    token: CancellationToken,
}

impl Signal {
    pub fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// An atomic load.
    pub fn is_fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// Completes when the signal fires.
    pub fn fired(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// A token of the caller's own, cancelled when the signal fires (and by the caller, for
    /// its own end, without touching the signal).
    pub fn child(&self) -> CancellationToken {
        self.token.child_token()
    }
}
