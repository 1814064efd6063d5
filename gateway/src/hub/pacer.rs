//! The pacer: one timer for the audio of every call toward a caller that sends none.
//!
//! A caller hears the holder's audio in real time, however much the holder sends at once:
//! each call's playout buffer ([`Call::tick`]) gives one 20 ms frame per tick. While the
//! caller streams its own audio, as connectors do for the whole call, its call leg ticks
//! the call itself, one frame back for each frame heard, in the wake-up that read it
//! (`server/voice.rs`): the caller's clock paces the call, as in symmetric RTP media, and a
//! frame costs one wake-up, not a read and a timed write. The pacer ticks a call only once
//! the caller has sent no whole frame for two of its ticks (20–40 ms), so a caller that
//! mutes or sends nothing still hears the holder and the hold audio in time; the one gap
//! it hears is where it stops (40–60 ms from its last frame's answer to the pacer's
//! first). A rule on time instead (the pacer taking over 25 ms after the caller's last
//! frame, and lending the frame back when the caller's was only late) made that gap
//! 25–45 ms but cost the gateway a third more CPU at 500 calls on this shared machine,
//! where many frames arrive more than 5 ms late and went the pacer's way. Rather than a
//! timer per call (a thousand calls were a thousand timers, each waking its call leg's
//! writer fifty times a second whether or not there was audio), the calls are shared out
//! over a few shards, one per runtime worker. Each shard is a task that ticks every 4 ms and
//! serves a fifth of its calls (a phase) in one pass (a shard without calls sleeps until
//! one is added, so an idle gateway does not wake 500 times a second): it queues a turn to play
//! ([`Outgoing::Play`](super::outbox::Outgoing::Play)) on each call leg's outbox, and the
//! leg takes the call's next frame and sends it in its dialect. Only the leg takes from the
//! playout: a frame the pacer took and queued could be overtaken by one the leg took for
//! its caller's audio in between. Every
//! call is in one phase, so it still gets a frame every 20 ms; a shard's work and its legs'
//! writes come in five small bursts a frame instead of one large one (at 500 calls one
//! pass was some 250 frames transcoded, queued and written at once, and the callers' audio
//! toward the bot waited behind it). A native leg's
//! marks are reported to the holder here; a Twilio leg's go to the caller in order with
//! the audio, since Twilio itself says when the audio before a mark has been played.
//!
//! Each shard measures how late its ticks run. A pacer that falls behind is a gateway that
//! cannot carry more calls without every caller hearing gaps, so while any shard has run
//! a frame or more late in four ticks out of five (a moving average over about five
//! seconds: some eight seconds of running behind, so a passing stall does not count), a
//! new call is refused at `session.start` with `unavailable` instead of degrading the
//! calls already up.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::call::Tick;
use super::{Conversation, Hub, Outbox};
use crate::protocol;

/// Which way a call leg's marks go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marks {
    /// Reported to the holder when the pacer reaches them (the native IVR protocol).
    ToHolder,
    /// Sent to the caller after the audio before them (Twilio answers with its own `mark`
    /// once that audio has been played).
    ToCaller,
}

/// A call served by the pacer: its conversation (with the call's playout buffer) and the
/// call leg's outbox.
struct Paced {
    conv: Arc<Conversation>,
    /// The conversation's call, kept here: a tick reads its frame count and nothing else
    /// of a call whose caller is speaking.
    call: Arc<super::call::Call>,
    outbox: Outbox,
    marks: Marks,
    /// The caller's frame count ([`super::call::Call::heard`]) at the last tick.
    seen: u32,
    /// Ticks since that count last moved (saturating).
    quiet: u8,
}

/// How often a call gets a frame.
const FRAME: Duration = Duration::from_millis(20);

/// The phases of a shard, served one per `FRAME / PHASES`.
const PHASES: usize = 5;

struct Shard {
    phases: [parking_lot::Mutex<Vec<Paced>>; PHASES],
    late: Lateness,
    /// Told when a call is added: a shard with no calls sleeps until then rather than
    /// ticking 250 times a second for nothing.
    added: Arc<tokio::sync::Notify>,
}

impl Shard {
    fn is_empty(&self) -> bool {
        self.phases.iter().all(|p| p.lock().is_empty())
    }
}

/// How often a shard's ticks run a whole frame (20 ms) or more late: a moving average
/// over about 250 ticks (five seconds), in millionths. A stall of a few seconds, caught
/// up at once, leaves it well under four fifths (two seconds: a third); a pacer that
/// stays behind takes it over four fifths in about eight seconds, and new calls are
/// refused until it keeps time again.
#[derive(Debug, Default)]
struct Lateness {
    late_ppm: AtomicU64,
}

impl Lateness {
    const WINDOW: u64 = 250;

    fn record(&self, late: Duration) {
        let hit = if late >= Duration::from_millis(20) { 1_000_000 / Self::WINDOW } else { 0 };
        let avg = self.late_ppm.load(Ordering::Relaxed);
        self.late_ppm.store(avg - avg / Self::WINDOW + hit, Ordering::Relaxed);
    }

    fn overloaded(&self) -> bool {
        self.late_ppm.load(Ordering::Relaxed) > 800_000
    }
}

/// The shards, one per runtime worker.
pub struct Pacer {
    shards: Vec<Arc<Shard>>,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer").field("shards", &self.shards.len()).finish()
    }
}

impl Pacer {
    pub fn new(shards: usize) -> Pacer {
        Pacer {
            shards: (0..shards.max(1))
                .map(|_| {
                    Arc::new(Shard { phases: Default::default(), late: Lateness::default(), added: Default::default() })
                })
                .collect(),
        }
    }

    /// Paces `conv`'s call toward `outbox` from the next tick on, until the outbox closes
    /// (the call leg's writer ended).
    pub fn add(&self, conv: Arc<Conversation>, outbox: Outbox, marks: Marks) {
        let Some(call) = conv.call.clone() else { return };
        let shard = &self.shards[call.stream as usize % self.shards.len()];
        // The phase with the fewest calls (their counts may move meanwhile: it only
        // spreads the load).
        let phase = (0..PHASES).min_by_key(|&i| shard.phases[i].lock().len()).unwrap_or(0);
        shard.phases[phase].lock().push(Paced { conv, call, outbox, marks, seen: 0, quiet: 0 });
        // Kept as a permit when the shard is not waiting yet: it cannot go to sleep past it.
        shard.added.notify_one();
    }

    /// Whether the pacer is falling behind: new calls are refused meanwhile.
    pub fn overloaded(&self) -> bool {
        self.shards.iter().any(|s| s.late.overloaded())
    }
}

impl Hub {
    /// Starts the pacer's shards (with the sweeper, when the gateway starts). A shard
    /// without calls sleeps until one is added, so an idle gateway does not wake.
    pub fn spawn_pacer(self: &Arc<Self>) {
        for shard in &self.pacer.shards {
            let shard = shard.clone();
            let mut ticks = 0usize;
            // A stalled shard catches up rather than skipping (`Burst`): each call's audio
            // keeps its pace on average, and a gap is as short as the stall.
            let burst = tokio::time::MissedTickBehavior::Burst;
            self.spawn_every(FRAME / PHASES as u32, burst, Some(shard.added.clone()), move |hub, due| {
                let phase = ticks % PHASES;
                ticks = ticks.wrapping_add(1);
                if phase == 0 {
                    shard.late.record(tokio::time::Instant::now().saturating_duration_since(due));
                }
                hub.pace(&shard.phases[phase]);
                // It sleeps only at the end of a round, when it has no calls left.
                !(ticks.is_multiple_of(PHASES) && shard.is_empty())
            });
        }
    }

    /// One tick of a shard: the next 20 ms of every call in one of its phases whose caller
    /// is not clocking it, with the marks reached before it.
    ///
    /// A call whose caller is speaking costs one load (its frame count). Its outbox is
    /// asked whether it closed only once the caller has been quiet for two ticks, which
    /// a leg that ended is: it is let go of 40 ms later than it would be at once.
    fn pace(&self, calls: &parking_lot::Mutex<Vec<Paced>>) {
        calls.lock().retain_mut(|p| {
            let call = &p.call;
            let heard = call.heard();
            if heard != p.seen {
                (p.seen, p.quiet) = (heard, 0);
            } else {
                p.quiet = p.quiet.saturating_add(1);
            }
            if p.quiet < 2 {
                return true; // the caller's own frames are pacing it
            }
            if p.outbox.is_closed() {
                return false;
            }
            // The leg takes the frame from the playout itself, in turn with the frames its
            // caller's audio clocks: were the pacer to take it and queue it, a frame the leg
            // took meanwhile would overtake it.
            if !p.outbox.send_play() && !p.outbox.is_closed() {
                // A full queue (the caller is not reading): this tick's audio is dropped,
                // as late audio is useless, and the marks reached are reported as ever.
                self.play(&p.conv, call.tick(), p.marks, |out| match out {
                    ToCaller::Audio(_) => p.outbox.media_dropped_now(),
                    ToCaller::Mark(name) => {
                        p.outbox.send(protocol::event("mark", serde_json::json!({ "name": name }), Some(&p.conv.id)));
                    }
                });
            }
            true
        });
    }

    /// Plays one tick of `conv`'s call, from the pacer or from the call leg that the
    /// caller's frames clock: a mark reached goes to the holder or, in order with the
    /// audio, to the caller (`marks`); what goes to the caller is handed to `to_caller`.
    pub fn play(&self, conv: &Conversation, tick: Tick, marks: Marks, mut to_caller: impl FnMut(ToCaller)) {
        for name in tick.marks {
            match marks {
                Marks::ToHolder => self.mark_played(conv, &name),
                Marks::ToCaller => to_caller(ToCaller::Mark(name)),
            }
        }
        if let Some(audio) = tick.audio {
            to_caller(ToCaller::Audio(audio));
        }
    }
}

/// What a tick sends the caller.
#[derive(Debug)]
pub enum ToCaller {
    /// 20 ms of audio in the caller's format.
    Audio(bytes::Bytes),
    /// A holder's mark, after the audio before it (Twilio answers it once played).
    Mark(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A stall of two seconds, caught up at once (late 2 s, then 1.98 s, … 0), does not
    /// refuse calls; a pacer that stays a frame behind does, after some eight seconds; once
    /// it keeps time again, calls are taken again.
    #[test]
    fn only_a_pacer_that_stays_behind_refuses_calls() {
        let l = Lateness::default();
        for _ in 0..300 {
            l.record(ms(1));
        }
        for k in (0..=100).rev() {
            l.record(ms(20 * k));
        }
        assert!(!l.overloaded(), "a caught-up stall: {} ppm", l.late_ppm.load(Ordering::Relaxed));
        let mut ticks = 0;
        while !l.overloaded() {
            l.record(ms(25));
            ticks += 1;
            assert!(ticks < 500, "never overloaded");
        }
        assert!(ticks > 300, "overloaded after {ticks} late ticks");
        let mut ticks = 0;
        while l.overloaded() {
            l.record(ms(1));
            ticks += 1;
            assert!(ticks < 250, "still overloaded");
        }
    }
}
