//! The hub's two kinds of lock — the routing engine's, and each conversation's — and the
//! order they are taken in: the engine first, then a conversation, never the other way.
//!
//! In debug builds (every test) each thread counts the conversation locks it holds, and
//! taking the engine's lock while holding one panics, naming the order: an inversion that
//! could deadlock two threads under load fails a test instead. Release builds keep only the
//! plain mutexes.
//!
//! The engine's lock also counts, in every build, how long it is held and waited for
//! (`/metrics`: `switchboard_engine_lock_held_seconds`, `…_wait_seconds`): two clock reads
//! per routing event, none on the hot path, which takes only a conversation's lock.

use std::cell::Cell;
use std::ops::{Deref, DerefMut};
use std::time::Instant;

use parking_lot::{Mutex, MutexGuard};

thread_local! {
    static CONVERSATIONS_HELD: Cell<usize> = const { Cell::new(0) };
}

fn held(taken: bool) {
    if cfg!(debug_assertions) {
        CONVERSATIONS_HELD.with(|c| c.set(if taken { c.get() + 1 } else { c.get().saturating_sub(1) }));
    }
}

/// A conversation's lock (the hot path takes only this one).
#[derive(Debug, Default)]
pub struct ConvLock<T>(Mutex<T>);

/// A held conversation lock; it may not be held across an `.await` (clippy.toml).
pub struct ConvGuard<'a, T>(MutexGuard<'a, T>);

impl<T> ConvLock<T> {
    pub fn new(value: T) -> ConvLock<T> {
        ConvLock(Mutex::new(value))
    }

    pub fn lock(&self) -> ConvGuard<'_, T> {
        let guard = self.0.lock();
        held(true);
        ConvGuard(guard)
    }
}

impl<T> Drop for ConvGuard<'_, T> {
    fn drop(&mut self) {
        held(false);
    }
}

impl<T> Deref for ConvGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for ConvGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// The routing engine's lock, taken for routing events only.
#[derive(Debug)]
pub struct EngineLock<T>(Mutex<T>);

impl<T> EngineLock<T> {
    pub fn new(value: T) -> EngineLock<T> {
        EngineLock(Mutex::new(value))
    }

    #[track_caller]
    pub fn lock(&self) -> EngineGuard<'_, T> {
        if cfg!(debug_assertions) {
            let n = CONVERSATIONS_HELD.with(Cell::get);
            assert!(
                n == 0,
                "lock order: the engine's lock was taken while this thread holds {n} conversation lock(s); \
                 take the engine's first"
            );
        }
        crate::metrics::ENGINE_LOCKS.inc();
        // Uncontended (nearly always), the lock is taken at once and only its hold is timed.
        if let Some(guard) = self.0.try_lock() {
            return EngineGuard { guard, since: Instant::now() };
        }
        let asked = Instant::now();
        let guard = self.0.lock();
        let since = Instant::now();
        crate::metrics::ENGINE_WAIT_NS.add_nanos(since - asked);
        EngineGuard { guard, since }
    }
}

/// The held engine lock; it may not be held across an `.await` (clippy.toml). Dropping it
/// adds the time it was held to `/metrics`.
pub struct EngineGuard<'a, T> {
    guard: MutexGuard<'a, T>,
    since: Instant,
}

impl<T> Drop for EngineGuard<'_, T> {
    fn drop(&mut self) {
        crate::metrics::ENGINE_HELD_NS.add_nanos(self.since.elapsed());
    }
}

impl<T> Deref for EngineGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for EngineGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_then_a_conversation_is_the_order() {
        let engine = EngineLock::new(0u8);
        let conv = ConvLock::new(0u8);
        {
            let _e = engine.lock();
            let _c = conv.lock();
        }
        // Released conversation locks no longer count.
        drop(conv.lock());
        let _e = engine.lock();
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "lock order")]
    fn a_conversation_then_the_engine_panics_in_debug_builds() {
        let engine = EngineLock::new(0u8);
        let conv = ConvLock::new(0u8);
        let _c = conv.lock();
        let _e = engine.lock();
    }
}
