//! The two protocols a caller can speak to the gateway, and everything the rest of the
//! scenario needs to know about them: where the call leg connects, how the call starts,
//! how a 20 ms frame of the caller's audio is sent, and how the audio played back (and
//! anything else the gateway says) is read.
//!
//! - **Native** (`/v1/voice`, SPEC §5.1): `session.start` with the media format, answered
//!   by `session.started` with the call's stream number (or an `error`); audio is binary
//!   frames both ways.
//! - **Twilio** (`/v1/voice/twilio/{workstream}`, §5.2): `connected`, then `start` with
//!   `streamSid`, µ-law 8 kHz and `customParameters`; audio is `media` events carrying
//!   base64 µ-law both ways (the caller's on the `inbound` track), plus `mark` and `clear`
//!   toward the caller. The gateway answers `start` with nothing at all, so the generator
//!   passes the caller's index as a custom parameter (`CallerRef`, a context variable of
//!   the bench configuration's voice workstream) and learns the call's stream from the
//!   bot's `conversation.assigned`, whose context carries it back.
//!
//! The caller's media messages are built once per call (8 of them, one per level mark) and
//! cloned for every frame, as the native caller clones its 8 binary frames: the client's
//! cost per frame stays a reference count. So Twilio's per-frame counters
//! (`sequenceNumber`, `chunk`, `timestamp`), which the gateway does not read, are left out.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::*;

/// The context variable of the bench configuration's voice workstream that carries a
/// Twilio caller's index from its `start` to the bot's `conversation.assigned`.
pub(super) const CALLER_REF: &str = "CallerRef";

/// Which protocol the callers speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dialect {
    Native,
    Twilio,
}

impl Dialect {
    pub const ALL: [Dialect; 2] = [Dialect::Native, Dialect::Twilio];

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Native => "native",
            Dialect::Twilio => "twilio",
        }
    }

    /// How the report and the progress lines name the sweep.
    pub fn title(self) -> &'static str {
        match self {
            Dialect::Native => "voice",
            Dialect::Twilio => "voice (Twilio)",
        }
    }

    /// The call leg's path on the gateway (the echo server answers any path).
    pub(super) fn path(self) -> String {
        match self {
            Dialect::Native => "/v1/voice".to_owned(),
            Dialect::Twilio => format!("/v1/voice/twilio/{WORKSTREAM}"),
        }
    }

    /// What the caller sends to start call `i`, in order.
    pub(super) fn start(self, i: usize) -> Vec<Message> {
        match self {
            Dialect::Native => vec![Message::text(format!(
                r#"{{"type":"event","name":"session.start","value":{{"workstream":"{WORKSTREAM}","media":{{"encoding":"pcmu","sampleRate":8000}}}}}}"#
            ))],
            Dialect::Twilio => {
                let sid = stream_sid(i);
                vec![
                    Message::text(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#),
                    Message::text(format!(
                        r#"{{"event":"start","sequenceNumber":"1","start":{{"accountSid":"AC{i:032x}","streamSid":"{sid}","callSid":"CA{i:032x}","tracks":["inbound"],"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"customParameters":{{"{CALLER_REF}":"{i}"}}}},"streamSid":"{sid}"}}"#
                    )),
                ]
            }
        }
    }

    /// Whether `text` is the echo server returning the caller's own start: the last
    /// message of [`Dialect::start`].
    pub(super) fn is_echoed_start(self, text: &str) -> bool {
        match self {
            Dialect::Native => Activity::parse(text).is_ok_and(|a| a.is_event("session.start")),
            Dialect::Twilio => serde_json::from_str::<TwilioIn<'_>>(text).is_ok_and(|m| m.event == "start"),
        }
    }

    /// Call `i`'s 8 media messages, one per level mark (see `audio.rs`).
    pub(super) fn media(self, i: usize, frames: &[Bytes]) -> Vec<Message> {
        match self {
            Dialect::Native => frames.iter().map(|f| Message::Binary(f.clone())).collect(),
            Dialect::Twilio => {
                let sid = stream_sid(i);
                frames
                    .iter()
                    .map(|f| {
                        Message::text(format!(
                            r#"{{"event":"media","streamSid":"{sid}","media":{{"track":"inbound","payload":"{}"}}}}"#,
                            B64.encode(f)
                        ))
                    })
                    .collect()
            }
        }
    }

    /// What a message from the gateway (or the echo server) is to the caller. Audio is
    /// left in `audio` (µ-law), replacing what was there.
    pub(super) fn hear(self, msg: &Message, audio: &mut Vec<u8>) -> Heard {
        match (self, msg) {
            (Dialect::Native, Message::Binary(b)) => {
                audio.clear();
                audio.extend_from_slice(b);
                Heard::Audio
            }
            (Dialect::Native, Message::Text(t)) => match Activity::parse(t.as_str()) {
                Ok(a) => a.error().map_or(Heard::Other, Heard::Error),
                Err(e) => Heard::Error(format!("{e:#}")),
            },
            (Dialect::Twilio, Message::Text(t)) => match serde_json::from_str::<TwilioIn<'_>>(t.as_str()) {
                Ok(m) if m.event == "media" => {
                    audio.clear();
                    let payload = m.media.map_or(Cow::Borrowed(""), |p| p.payload);
                    match B64.decode_vec(payload.as_bytes(), audio) {
                        Ok(()) => Heard::Audio,
                        Err(e) => Heard::Error(format!("media payload is not base64: {e}")),
                    }
                }
                // `mark` and `clear` come only when the bot sends marks or barges in,
                // which this bot does not; an echoed `connected` or `start` is the
                // caller's own.
                Ok(_) => Heard::Other,
                Err(e) => Heard::Error(format!("unreadable Twilio message: {e}")),
            },
            (Dialect::Twilio, Message::Binary(_)) => {
                Heard::Error("a binary frame on a Twilio stream (media comes in media events)".to_owned())
            }
            _ => Heard::Other,
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dialect {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dialect::ALL.into_iter().find(|d| d.name() == s).ok_or_else(|| {
            format!("unknown voice dialect {s:?}; one of {}", Dialect::ALL.map(Dialect::name).join(", "))
        })
    }
}

/// What a message read by a caller was.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Heard {
    /// 20 ms of µ-law, in the buffer passed to [`Dialect::hear`].
    Audio,
    /// An error the server reported, or a message the caller could not read.
    Error(String),
    /// Anything else: session events, marks, the caller's own messages echoed.
    Other,
}

/// Twilio's stream id for call `i`: `MZ` and 32 hex digits, as Twilio's.
fn stream_sid(i: usize) -> String {
    format!("MZ{i:032x}")
}

/// The fields of a Twilio Media Streams message the caller reads, borrowed from its text.
#[derive(serde::Deserialize)]
struct TwilioIn<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(default, borrow)]
    media: Option<TwilioPayload<'a>>,
}

#[derive(serde::Deserialize)]
struct TwilioPayload<'a> {
    #[serde(borrow)]
    payload: Cow<'a, str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Twilio caller's media decodes to the same µ-law and mark it was built from, as the
    /// gateway's own media messages (`streamSid` first, no track) do.
    #[test]
    fn twilio_media_round_trips_with_its_mark() {
        let frames = caller_frames();
        let sent = Dialect::Twilio.media(7, &frames);
        let mut audio = Vec::new();
        for (k, m) in sent.iter().enumerate() {
            let Message::Text(t) = m else { panic!("not text") };
            assert!(t.as_str().contains(r#""track":"inbound""#));
            assert_eq!(Dialect::Twilio.hear(m, &mut audio), Heard::Audio);
            assert_eq!(audio, frames[k].as_ref());
            assert_eq!(mark(Format::PCMU, &audio), Some(mark_of(k)));
        }
        let gateway =
            format!(r#"{{"event":"media","streamSid":"MZ1","media":{{"payload":"{}"}}}}"#, B64.encode(&frames[3]));
        assert_eq!(Dialect::Twilio.hear(&Message::text(gateway), &mut audio), Heard::Audio);
        assert_eq!(mark(Format::PCMU, &audio), Some(3));
        let mark = Message::text(r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"m1"}}"#);
        assert_eq!(Dialect::Twilio.hear(&mark, &mut audio), Heard::Other);
        assert!(matches!(Dialect::Twilio.hear(&Message::text("{"), &mut audio), Heard::Error(_)));
    }

    #[test]
    fn starts_carry_what_the_gateway_reads() {
        let start = Dialect::Twilio.start(12);
        let Message::Text(t) = &start[1] else { panic!("not text") };
        let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
        assert_eq!(v["event"], "start");
        assert_eq!(v["start"]["mediaFormat"]["encoding"], "audio/x-mulaw");
        assert_eq!(v["start"]["customParameters"][CALLER_REF], "12");
        assert_eq!(v["streamSid"], v["start"]["streamSid"]);
        assert!(Dialect::Twilio.is_echoed_start(t.as_str()));
        let Message::Text(n) = &Dialect::Native.start(0)[0] else { panic!("not text") };
        assert!(Dialect::Native.is_echoed_start(n.as_str()));
        assert!(!Dialect::Native.is_echoed_start(t.as_str()));
        assert_eq!("twilio".parse::<Dialect>(), Ok(Dialect::Twilio));
        assert!("sip".parse::<Dialect>().is_err());
    }
}
