//! A call's media state: the re-framing of caller audio into 20 ms frames, in-band DTMF
//! detection, the route to the holder with its transcoder, and the playout buffer toward
//! the caller, drained at 1× speed (a bot that sends a whole prompt at once is played in
//! real time, not dumped): one frame for each frame the caller sends, or by the pacer while
//! it sends none. While the call waits in a queue it plays hold audio, so the caller is
//! never left in silence; when the holder changes, queued audio of the old holder is
//! dropped. Synchronous code under the call's mutex.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use switchboard_codecs::dtmf::Detector;
use switchboard_codecs::{Encoding, Format, Framer, Transcoder};

use super::Outbox;
use crate::routing::ConvId;
use crate::voice::HoldAudio;

/// Which protocol a call leg speaks, as far as the call's media is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegKind {
    /// The native IVR protocol: raw audio both ways; keys come in-band or as `dtmf` events.
    Native,
    /// Twilio Media Streams: Twilio signals keys itself and answers marks.
    Twilio,
}

impl LegKind {
    /// Whether the caller's audio is searched for DTMF tones.
    pub fn inband_dtmf(self) -> bool {
        self == LegKind::Native
    }

    /// Where the pacer sends the holder's marks.
    pub fn marks(self) -> super::pacer::Marks {
        match self {
            LegKind::Native => super::pacer::Marks::ToHolder,
            LegKind::Twilio => super::pacer::Marks::ToCaller,
        }
    }
}

/// The most audio queued toward a caller: a holder that sends more is told to wait.
const MAX_PLAYOUT_FRAMES: usize = 60 * 50; // 60 s

/// Why a holder's media or mark was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("you do not hold this call")]
    NotHolder,
    #[error("bad audio: {0}")]
    BadAudio(String),
    #[error("the playout buffer is full (60 s queued): wait for marks or send clear")]
    PlayoutFull,
}

/// The holder's end of the media path.
#[derive(Debug)]
pub struct Route {
    pub member: Arc<str>,
    pub outbox: Option<Outbox>,
    pub format: Format,
    /// Caller's format → holder's format.
    to_holder: Transcoder,
}

/// Whether two names are the same, by their pointers first: a holder's connection and
/// its route share the name's allocation (`hub/effects.rs`), so a call's audio (50 frames
/// a second) is recognised without reading the name, which is seldom in the cache.
fn same_name(a: &str, b: &str) -> bool {
    (std::ptr::eq(a.as_ptr(), b.as_ptr()) && a.len() == b.len()) || a == b
}

impl Route {
    pub fn new(member: Arc<str>, outbox: Option<Outbox>, format: Format, caller: Format) -> Route {
        Route { member, outbox, format, to_holder: Transcoder::new(caller, format) }
    }
}

/// What the playout buffer holds: 20 ms of audio in the caller's format, or a mark.
#[derive(Debug, Clone)]
pub enum Play {
    Audio(Bytes),
    Mark(String),
}

/// What one 20 ms tick of the pacer sends to the caller.
#[derive(Debug, Default)]
pub struct Tick {
    /// Marks reached before this tick's audio (in order).
    pub marks: Vec<String>,
    pub audio: Option<Bytes>,
}

#[derive(Debug)]
struct State {
    inbound: Framer,
    detector: Option<Detector>,
    linear: Vec<i16>,
    route: Option<Route>,
    /// Holder's format → caller's format, rebuilt when the holder's format changes.
    from_holder: Option<(Format, Transcoder)>,
    outbound: Framer,
    playout: VecDeque<Play>,
    playout_frames: usize,
    waiting: bool,
    hold: HoldAudio,
    hold_pos: usize,
}

/// A voice call's media state, shared by the hub and the call's connection.
#[derive(Debug)]
pub struct Call {
    pub stream: u32,
    pub conversation: ConvId,
    pub caller: Format,
    /// Whole 20 ms frames of caller audio received: the clock of the caller's playout
    /// (see [`Call::heard`]).
    heard: AtomicU32,
    state: Mutex<State>,
}

impl Call {
    pub fn new(stream: u32, conversation: ConvId, caller: Format, inband_dtmf: bool, hold: HoldAudio) -> Call {
        let detector = if inband_dtmf { Detector::new(caller.sample_rate()).ok() } else { None };
        Call {
            stream,
            conversation,
            caller,
            heard: AtomicU32::new(0),
            state: Mutex::new(State {
                inbound: Framer::new(caller),
                detector,
                linear: Vec::new(),
                route: None,
                from_holder: None,
                outbound: Framer::new(caller),
                playout: VecDeque::new(),
                playout_frames: 0,
                waiting: true,
                hold,
                hold_pos: 0,
            }),
        }
    }

    /// Caller audio in any length: re-framed to 20 ms, checked for in-band DTMF, and sent
    /// to the holder in its format. Returns the digits detected.
    pub fn caller_audio(&self, data: &[u8]) -> Vec<char> {
        crate::metrics::MEDIA_IN.inc();
        let mut digits = Vec::new();
        let mut st = self.state.lock();
        let State { inbound, detector, linear, route, .. } = &mut *st;
        // Whole frames are searched and transcoded where they lie in `data`.
        let mut frames = 0;
        inbound.for_each_frame(data, |frame| {
            frames += 1;
            if let Some(det) = detector.as_mut() {
                linear.clear();
                decode_linear(self.caller, frame, linear);
                let mut found = Vec::new();
                det.process(linear, &mut found);
                digits.extend(found.iter().map(|d| d.as_char()));
            }
            if let Some(route) = route.as_mut()
                && let Some(o) = &route.outbox
            {
                // The stream number, then the audio transcoded straight after it: the
                // frame's one allocation (20 ms in the holder's format), handed to the
                // holder's queue as it is.
                let mut out = Vec::with_capacity(4 + route.format.bytes_per_frame());
                out.extend_from_slice(&self.stream.to_be_bytes());
                if route.to_holder.process(frame, &mut out).is_ok() {
                    o.send_binary(Bytes::from(out));
                }
            }
        });
        self.heard.fetch_add(frames, Ordering::Relaxed);
        digits
    }

    /// How many whole 20 ms frames of audio the caller has sent (wrapping). The call leg
    /// answers each with the playout's next frame ([`Call::tick`]); the pacer ticks the call
    /// only while this stands still.
    pub fn heard(&self) -> u32 {
        self.heard.load(Ordering::Relaxed)
    }

    /// Sets (or clears) the holder. A new holder never hears the old one's queued audio.
    pub fn set_route(&self, route: Option<Route>) {
        let mut st = self.state.lock();
        st.waiting = route.is_none();
        st.route = route;
        clear_playout(&mut st);
    }

    /// The holder's connection changed (reconnected or gone).
    pub fn set_holder_outbox(&self, member: &str, outbox: Option<Outbox>, format: Option<Format>) {
        let mut st = self.state.lock();
        if let Some(r) = st.route.as_mut().filter(|r| same_name(&r.member, member)) {
            match format {
                Some(f) if f != r.format => *r = Route::new(r.member.clone(), outbox, f, self.caller),
                _ => r.outbox = outbox,
            }
        }
    }

    /// The holder of this call, if any.
    pub fn holder(&self) -> Option<Arc<str>> {
        self.state.lock().route.as_ref().map(|r| r.member.clone())
    }

    /// Audio from the holder, in its format: converted and queued for playout.
    pub fn holder_audio(&self, member: &str, data: &[u8]) -> Result<(), CallError> {
        crate::metrics::MEDIA_IN.inc();
        let mut st = self.state.lock();
        let st = &mut *st;
        let Some(route) = st.route.as_ref().filter(|r| same_name(&r.member, member)) else {
            return Err(CallError::NotHolder);
        };
        let from = route.format;
        if st.from_holder.as_ref().is_none_or(|(f, _)| *f != from) {
            st.from_holder = Some((from, Transcoder::new(from, self.caller)));
        }
        // Sized for what the audio converts to, so frames queued as slices of it (below)
        // hold no more memory than their bytes.
        let cap = (data.len() * self.caller.bytes_per_frame()).div_ceil(from.bytes_per_frame().max(1));
        let mut out = Vec::with_capacity(cap);
        if let Some((_, t)) = st.from_holder.as_mut() {
            t.process(data, &mut out).map_err(|e| CallError::BadAudio(e.to_string()))?;
        }
        let frames = st.outbound.frames_after(out.len());
        if st.playout_frames + frames > MAX_PLAYOUT_FRAMES {
            // Its whole frames are dropped; a remainder stays for the next audio, as ever.
            st.outbound.push_owned(out, drop);
            return Err(CallError::PlayoutFull);
        }
        st.playout_frames += frames;
        // Queued as slices of the converted audio where they line up with it (a holder
        // sending 20 ms frames): no copy through the framer.
        let State { outbound, playout, .. } = st;
        outbound.push_owned(out, |frame| playout.push_back(Play::Audio(frame)));
        Ok(())
    }

    /// A mark from the holder: reported once the audio queued before it has been played.
    pub fn mark(&self, member: &str, name: String) -> Result<(), CallError> {
        let mut st = self.state.lock();
        if st.route.as_ref().is_none_or(|r| !same_name(&r.member, member)) {
            return Err(CallError::NotHolder);
        }
        // Audio still in the framer (under 20 ms) goes out first, padded with silence.
        if let Some(last) = st.outbound.flush() {
            st.playout_frames += 1;
            st.playout.push_back(Play::Audio(last));
        }
        st.playout.push_back(Play::Mark(name));
        Ok(())
    }

    /// Barge-in: drop everything queued toward the caller.
    pub fn clear(&self) {
        clear_playout(&mut self.state.lock());
    }

    /// The next 20 ms for the caller: queued audio (with the marks before it), else hold
    /// audio while waiting, else nothing.
    pub fn tick(&self) -> Tick {
        let mut st = self.state.lock();
        let mut tick = Tick::default();
        while let Some(p) = st.playout.pop_front() {
            match p {
                Play::Mark(m) => tick.marks.push(m),
                Play::Audio(a) => {
                    st.playout_frames -= 1;
                    tick.audio = Some(a);
                    break;
                }
            }
        }
        if tick.audio.is_none() && st.waiting {
            let i = st.hold_pos;
            st.hold_pos += 1;
            tick.audio = st.hold.frame(i);
        }
        tick
    }
}

fn clear_playout(st: &mut State) {
    st.playout.clear();
    st.playout_frames = 0;
    st.outbound.clear();
}

fn decode_linear(format: Format, frame: &[u8], out: &mut Vec<i16>) {
    match format.encoding() {
        Encoding::Pcmu => switchboard_codecs::g711::ulaw::decode_into(frame, out),
        Encoding::Pcma => switchboard_codecs::g711::alaw::decode_into(frame, out),
        Encoding::L16 => {
            let _ = switchboard_codecs::l16::decode_le(frame, out);
        }
    }
}
