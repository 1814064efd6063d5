//! Voice call legs: `GET /v1/voice` (the native IVR protocol, SPEC §5.1) and
//! `GET /v1/voice/twilio/{workstream}` (Twilio's bidirectional Media Streams, §5.2).
//!
//! A call leg is one task ([`ws::run_inline`]) that reads the caller's frames and writes
//! toward the caller. The caller's audio clocks what it hears: for every 20 ms of audio
//! read, the next 20 ms of the call's playout buffer (or hold audio while the call waits)
//! goes back in the same wake-up, with the marks reached before it, as symmetric RTP
//! media does. A caller that sends no audio for a while is served by the pacer
//! (`hub/pacer.rs`) instead, through the leg's outbox. Text the hub queues for the caller
//! (session events, `clear`, the end of the conversation) is translated into the dialect
//! here; transcript messages are not sent to a call leg, which has no use for them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use base64_simd::STANDARD as B64;
use serde_json::Value;
use switchboard_codecs::{Encoding, Format};
use tokio_tungstenite::tungstenite::{Bytes, Message};

use super::clipped;
use super::ws::{self, Session, WsStream};
use crate::context::{Context, Value as CtxValue};
use crate::hub::call::LegKind;
use crate::hub::outbox::Outgoing;
use crate::hub::outbox::Reason;
use crate::hub::pacer::ToCaller;
use crate::hub::{Conversation, Hub, HubError, Outbox};
use crate::protocol::{Inbound, Kind};

#[derive(Clone, Debug)]
enum Dialect {
    Native,
    Twilio { workstream: String },
}

impl Dialect {
    /// What the call's media makes of this dialect (in-band DTMF, where marks go).
    fn kind(&self) -> LegKind {
        match self {
            Dialect::Native => LegKind::Native,
            Dialect::Twilio { .. } => LegKind::Twilio,
        }
    }
}

pub async fn native_upgrade(State(hub): State<Arc<Hub>>, req: Request) -> Response {
    let h = hub.clone();
    ws::upgrade(&hub, req, ws::CALLER, move |ws| run(h, ws, Dialect::Native))
}

pub async fn twilio_upgrade(State(hub): State<Arc<Hub>>, Path(workstream): Path<String>, req: Request) -> Response {
    let h = hub.clone();
    ws::upgrade(&hub, req, ws::CALLER, move |ws| run(h, ws, Dialect::Twilio { workstream }))
}

/// Not an `async fn`: see [`ws::run`].
fn run(hub: Arc<Hub>, socket: WsStream, dialect: Dialect) -> impl Future<Output = ()> + Send + 'static {
    let (outbox, rx) = Outbox::new(hub.server.outbound_queue);
    let handshake = Duration::from_secs(hub.server.handshake_timeout_secs);
    let session = VoiceSession {
        hub: hub.clone(),
        outbox: outbox.clone(),
        leg: Leg::default(),
        dialect,
        hung_up: false,
        played: 0,
        refused: 0,
    };
    ws::run_inline(hub, socket, outbox, rx, session, Some(handshake))
}

/// The call, once started.
#[derive(Default)]
struct Leg {
    conv: Option<Arc<Conversation>>,
    /// Twilio's `streamSid` as JSON, echoed on everything we send.
    stream_sid: Option<String>,
}

/// A call leg: the caller's frames, on the connection loop every endpoint shares (size
/// limits, rate limits, the handshake and idle timeouts, pings, shutdown), and what goes
/// back to the caller, in its dialect.
struct VoiceSession {
    hub: Arc<Hub>,
    outbox: Outbox,
    leg: Leg,
    dialect: Dialect,
    hung_up: bool,
    /// How many of the caller's 20 ms frames have been answered with the playout's next.
    played: u32,
    /// On a Twilio leg, the caller's messages refused so far. Twilio has no error event,
    /// so a refusal there is logged instead of sent (a native leg gets an `error` event):
    /// only the first of a leg at warn, and the count when the leg ends, so a client
    /// sending nothing but bad messages (60 a second, each up to the frame limit) cannot
    /// fill the gateway's log.
    refused: u32,
}

impl Session for VoiceSession {
    fn on_text(&mut self, text: &str) {
        let (hub, outbox, leg) = (&self.hub, &self.outbox, &mut self.leg);
        let result = match &self.dialect {
            Dialect::Native => native_text(hub, outbox, leg, text),
            Dialect::Twilio { workstream } => twilio_text(hub, outbox, leg, workstream, text),
        };
        match result {
            Ok(true) => {}
            Ok(false) => self.hung_up = true,
            Err(e) => {
                let conv = leg.conv.as_ref().map(|c| c.id.clone());
                // Twilio has no error event: a stream whose start is refused would stream
                // on, unheard, until the handshake timeout. It is closed at once instead:
                // 1011 (try again later) when a retry can help, as when the gateway is
                // carrying all the calls it can, else 1008. A message refused once the
                // call is on is logged (`twilio_refused`).
                match (&self.dialect, conv) {
                    (Dialect::Twilio { .. }, None) => {
                        let reason = if e.retry_helps() { Reason::Internal } else { Reason::Policy };
                        tracing::info!("twilio stream refused: {}", clipped(&e.to_string(), 200));
                        outbox.close(reason, &e.to_string());
                    }
                    (Dialect::Twilio { .. }, Some(_)) => self.twilio_refused(&e),
                    (Dialect::Native, conv) => outbox.send_error(e, conv.as_deref(), None),
                }
            }
        }
    }

    fn on_binary(&mut self, data: Bytes) -> Result<(), HubError> {
        match &self.leg.conv {
            Some(c) if matches!(self.dialect, Dialect::Native) => {
                self.hub.caller_audio(c, &self.outbox, &data);
                Ok(())
            }
            Some(_) => Err(HubError::invalid("Twilio media comes in media events")),
            None => Err(HubError::invalid("send session.start before audio")),
        }
    }

    fn started(&self) -> bool {
        self.leg.conv.is_some()
    }

    fn ended(&self) -> bool {
        self.hung_up
    }

    /// A caller's text: `session.start`, DTMF, marks, the hang-up; on Twilio legs every
    /// media frame is text too (50 a second), so the media rate applies on top.
    fn role(&self) -> &'static str {
        "caller"
    }

    fn rate(&self) -> (f64, u32) {
        match self.dialect {
            Dialect::Native => (self.hub.server.customer_rate, self.hub.server.customer_burst),
            Dialect::Twilio { .. } => {
                (MEDIA_RATE + self.hub.server.customer_rate, MEDIA_BURST + self.hub.server.customer_burst)
            }
        }
    }

    fn binary_rate(&self) -> (f64, u32) {
        (MEDIA_RATE, MEDIA_BURST)
    }

    /// A caller's audio comes in 20 ms frames; one over the text frame limit is no audio.
    fn max_binary(&self) -> usize {
        self.hub.server.max_frame_bytes
    }

    /// The caller's side is gone: that is a hang-up, everywhere.
    fn on_close(&mut self) {
        if self.refused > 1 {
            tracing::warn!("twilio call leg: {} of the caller's messages were refused in all", self.refused);
        }
        if let Some(c) = &self.leg.conv
            && !self.hub.is_shutting_down()
            && !c.inner.lock().closed
        {
            self.hub.hang_up(c, &self.outbox);
        }
    }
}

/// Media frames a call leg may send a second: 20 ms audio is 50, with room for jitter.
pub const MEDIA_RATE: f64 = 60.0;
/// A burst of two seconds of audio (a connector catching up after a network stall).
pub const MEDIA_BURST: u32 = 100;

fn context_from(hub: &Hub, workstream: &str, raw: &Value, strict: bool) -> Result<Context, HubError> {
    if strict {
        return hub.customer_context(workstream, raw);
    }
    // Twilio's customParameters carry strings and often more than routing needs (auth,
    // ids): declared variables are taken with their types, the rest ignored.
    let mut ctx = Context::new();
    let cfg = hub.cfg();
    let Some(ws) = cfg.workstream(workstream) else { return Ok(ctx) };
    for (k, v) in raw.as_object().into_iter().flatten() {
        if let Some(ty) = ws.variable(k)
            && let Some(val) =
                CtxValue::from_json(ty, v).map_err(|e| HubError::invalid(format!("parameter {k:?}: {e}")))?
        {
            ctx.insert(k.clone(), val);
        }
    }
    Ok(ctx)
}

/// One text frame of the native protocol. `Ok(false)`: the caller hung up.
fn native_text(hub: &Hub, outbox: &Outbox, leg: &mut Leg, text: &str) -> Result<bool, HubError> {
    let a = Inbound::parse(text)?;
    let conv = leg.conv.clone();
    let Some(conv) = conv else {
        if a.event_name() != Some("session.start") {
            return Err(HubError::invalid("start the call with a session.start event"));
        }
        let workstream =
            a.value["workstream"].as_str().ok_or_else(|| HubError::invalid("session.start needs value.workstream"))?;
        let media = &a.value["media"];
        let encoding: Encoding = media["encoding"]
            .as_str()
            .unwrap_or("")
            .parse()
            .map_err(|_| HubError::invalid("value.media.encoding must be pcmu, pcma or l16"))?;
        // Absent means 8000 (the telephone rate); anything else must be a whole number of Hz
        // that the encoding supports: "8000", -1 or 1e20 are refused, not guessed at.
        let rate = match &media["sampleRate"] {
            Value::Null => 8000,
            v => v
                .as_u64()
                .and_then(|r| u32::try_from(r).ok())
                .ok_or_else(|| HubError::invalid(format!("value.media.sampleRate {v} must be a whole number of Hz")))?,
        };
        let format = Format::new(encoding, rate).map_err(|e| {
            HubError::invalid(format!(
                "value.media: {e} is not supported (pcmu/8000, pcma/8000, l16/8000|16000|24000|48000)"
            ))
        })?;
        let ctx = context_from(hub, workstream, a.value.get("context").unwrap_or(&Value::Null), true)?;
        let c = hub.start_call(workstream, format, ctx, outbox, LegKind::Native)?;
        leg.conv = Some(c);
        return Ok(true);
    };
    match (a.kind(), a.event_name()) {
        (Kind::EndOfConversation, _) => {
            hub.hang_up(&conv, outbox);
            Ok(false)
        }
        (Kind::Event, Some("dtmf")) => {
            let d = a.value.as_str().ok_or_else(|| HubError::invalid("dtmf value must be a digit"))?;
            hub.caller_dtmf(&conv, outbox, d, a.client_activity_id())?;
            Ok(true)
        }
        (Kind::Event, Some(other)) => Err(HubError::invalid(format!("unknown event {other:?}"))),
        _ => Err(HubError::invalid("a call leg sends audio, dtmf events and endOfConversation")),
    }
}

/// One Twilio Media Streams message. `Ok(false)`: the stream stopped.
fn twilio_text(hub: &Hub, outbox: &Outbox, leg: &mut Leg, workstream: &str, text: &str) -> Result<bool, HubError> {
    let conv = leg.conv.clone();
    // Media is 50 messages a second per call: read without building a JSON tree, the
    // payload decoded into one reused buffer.
    if let Some(c) = &conv
        && let Ok(m) = serde_json::from_str::<TwilioMedia<'_>>(text)
        && m.event == "media"
    {
        // Only the caller's track: an outbound track would be our own audio.
        if m.media.track.as_deref().is_some_and(|t| t != "inbound") {
            return Ok(true);
        }
        return AUDIO.with_borrow_mut(|audio| {
            audio.clear();
            B64.decode_append(m.media.payload.as_bytes(), audio)
                .map_err(|_| HubError::invalid("media payload is not base64"))?;
            hub.caller_audio(c, outbox, audio);
            Ok(true)
        });
    }
    let v: Value = serde_json::from_str(text).map_err(|e| HubError::invalid(format!("malformed JSON: {e}")))?;
    match (v["event"].as_str(), conv) {
        (Some("connected"), _) => Ok(true),
        (Some("start"), None) => {
            let start = &v["start"];
            let encoding = start["mediaFormat"]["encoding"].as_str().unwrap_or("audio/x-mulaw");
            if encoding != "audio/x-mulaw" {
                return Err(HubError::invalid(format!("media format {encoding:?}: Twilio streams are µ-law 8 kHz")));
            }
            let ctx = context_from(hub, workstream, &start["customParameters"], false)?;
            let c = hub.start_call(workstream, Format::PCMU, ctx, outbox, LegKind::Twilio)?;
            let sid = v["streamSid"].as_str().or(start["streamSid"].as_str());
            leg.stream_sid = sid.map(|s| serde_json::to_string(s).unwrap_or_default());
            leg.conv = Some(c);
            Ok(true)
        }
        (Some("start"), Some(_)) => Err(HubError::invalid("the stream has already started")),
        (Some(_), None) => Err(HubError::invalid("the stream has not started")),
        (Some("media"), Some(_)) => Err(HubError::invalid("media needs media.payload, a base64 string")),
        (Some("dtmf"), Some(c)) => {
            let d = v["dtmf"]["digit"].as_str().ok_or_else(|| HubError::invalid("dtmf.digit missing"))?;
            hub.caller_dtmf(&c, outbox, d, None)?;
            Ok(true)
        }
        (Some("mark"), Some(c)) => {
            // Twilio echoes our mark once the audio before it has been played.
            if let Some(name) = v["mark"]["name"].as_str() {
                hub.mark_played(&c, name);
            }
            Ok(true)
        }
        (Some("stop"), Some(c)) => {
            hub.hang_up(&c, outbox);
            Ok(false)
        }
        (Some(other), _) => Err(HubError::invalid(format!("unknown event {other:?}"))),
        (None, _) => Err(HubError::invalid("message has no \"event\"")),
    }
}

/// A Twilio `media` message, borrowed from its text.
#[derive(serde::Deserialize)]
struct TwilioMedia<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    media: TwilioPayload<'a>,
}

#[derive(serde::Deserialize)]
struct TwilioPayload<'a> {
    #[serde(borrow)]
    track: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    payload: std::borrow::Cow<'a, str>,
}

thread_local! {
    /// Decoded Twilio media, reused: the hub copies what it keeps.
    static AUDIO: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl ws::Speaker for VoiceSession {
    /// What the hub queued for the caller, in the leg's dialect: the pacer's audio and
    /// marks (for a caller that sends none), session events, the end of the call.
    fn speak(&mut self, item: Outgoing, out: &mut Vec<Message>) -> Option<(Reason, String)> {
        let sid = self.leg.stream_sid.as_deref();
        let frames = match item {
            Outgoing::Text(f) => vec![f],
            Outgoing::Batch(fs) => fs,
            Outgoing::Error(e) => match self.dialect {
                Dialect::Native => vec![super::respond::error_out(&e)],
                Dialect::Twilio { .. } => {
                    self.twilio_refused(&e.error);
                    return None;
                }
            },
            Outgoing::Binary(audio) => {
                out.push(audio_message(&self.dialect, sid, audio));
                return None;
            }
            Outgoing::Play => {
                self.play_next(out);
                return None;
            }
            Outgoing::Close(reason, detail) => return Some((reason, detail)),
        };
        let mut ended = false;
        for f in frames {
            let (m, end) = translate(&self.dialect, f, sid);
            out.extend(m);
            ended |= end;
        }
        ended.then(|| (Reason::Ended, "call ended".to_owned()))
    }

    /// The caller's audio clocks its playout: as many 20 ms frames go back as whole frames
    /// came in since the last read. The pacer serves the call only while this is not so.
    fn after_read(&mut self, out: &mut Vec<Message>) {
        let Some(conv) = &self.leg.conv else { return };
        let Some(call) = &conv.call else { return };
        let heard = call.heard();
        // At most a second at once (a caller that sends its audio in large messages); a
        // larger step is let go of rather than played back at once.
        let due = heard.wrapping_sub(self.played).min(50);
        self.played = heard;
        for _ in 0..due {
            self.play_next(out);
        }
    }
}

impl VoiceSession {
    /// A Twilio caller's message refused: logged, since Twilio has no error event to send
    /// it in. The first of a leg at warn, the rest at debug (see `refused`), each cut to
    /// its first 200 characters ([`clipped`]), since a refusal may quote what the caller
    /// sent.
    fn twilio_refused(&mut self, e: &HubError) {
        self.refused += 1;
        // Formatted inside the macros: only when the line is logged.
        if self.refused == 1 {
            tracing::warn!(
                "twilio call leg: message refused: {} (more on this leg: at debug)",
                clipped(&e.to_string(), 200)
            );
        } else {
            tracing::debug!("twilio call leg: message refused: {}", clipped(&e.to_string(), 200));
        }
    }

    /// The call's next 20 ms (and the marks reached before it), for the caller. The leg is
    /// the only one that takes from the call's playout (the pacer asks it to, with
    /// [`Outgoing::Play`]), so the caller hears it in order.
    fn play_next(&self, out: &mut Vec<Message>) {
        let Some(conv) = &self.leg.conv else { return };
        let Some(call) = &conv.call else { return };
        let sid = self.leg.stream_sid.as_deref();
        self.hub.play(conv, call.tick(), self.dialect.kind().marks(), |m| match m {
            ToCaller::Audio(audio) => {
                crate::metrics::MEDIA_OUT.inc();
                out.push(audio_message(&self.dialect, sid, audio));
            }
            ToCaller::Mark(name) => out.push(twilio_mark(sid, &serde_json::json!({ "name": name }).to_string())),
        });
    }
}

/// 20 ms of audio for the caller, in the leg's dialect.
fn audio_message(dialect: &Dialect, sid: Option<&str>, audio: Bytes) -> Message {
    match dialect {
        Dialect::Native => Message::Binary(audio),
        Dialect::Twilio { .. } => twilio_media(sid, &audio),
    }
}

/// A Twilio `mark` message (`mark`: its JSON object): Twilio answers it once the audio
/// before it has been played.
fn twilio_mark(sid: Option<&str>, mark: &str) -> Message {
    Message::text(format!(r#"{{"event":"mark","streamSid":{},"mark":{mark}}}"#, sid.unwrap_or("null")))
}

/// A Twilio `media` message carrying `audio` (µ-law) to the caller, written directly (the
/// payload encoded in place, not through an intermediate buffer): one goes out every 20 ms
/// per call.
fn twilio_media(sid: Option<&str>, audio: &[u8]) -> Message {
    let sid = sid.unwrap_or("null");
    let mut s = String::with_capacity(64 + sid.len() + audio.len().div_ceil(3) * 4);
    s.push_str("{\"event\":\"media\",\"streamSid\":");
    s.push_str(sid);
    s.push_str(",\"media\":{\"payload\":\"");
    B64.encode_append(audio, &mut s);
    s.push_str("\"}}");
    Message::text(s)
}

/// The few fields of a hub frame a call leg looks at: read without building a JSON tree
/// (most frames toward a caller are transcript messages it drops).
#[derive(serde::Deserialize)]
struct Peek<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<std::borrow::Cow<'a, str>>,
    from: Option<PeekFrom<'a>>,
    #[serde(borrow)]
    value: Option<&'a serde_json::value::RawValue>,
}

#[derive(serde::Deserialize)]
struct PeekFrom<'a> {
    #[serde(borrow)]
    role: Option<std::borrow::Cow<'a, str>>,
}

/// What a hub frame becomes on this dialect, and whether it ends the call. `sid` is
/// Twilio's `streamSid`, already as JSON.
fn translate(dialect: &Dialect, raw: crate::protocol::Frame, sid: Option<&str>) -> (Option<Message>, bool) {
    let sid = sid.unwrap_or("null");
    let Ok(v) = serde_json::from_str::<Peek<'_>>(raw.as_str()) else { return (None, false) };
    let ended = v.kind.as_deref() == Some("endOfConversation")
        && v.from.as_ref().and_then(|f| f.role.as_deref()) != Some("user");
    let name = v.name.as_deref();
    match dialect {
        Dialect::Native => {
            let keep = ended || matches!(name, Some("session.started" | "clear" | "error" | "ack"));
            drop(v); // it borrows `raw`, which is sent as it is
            (keep.then(|| ws::text(raw)), ended)
        }
        Dialect::Twilio { .. } => match name {
            Some("clear") => (Some(Message::text(format!(r#"{{"event":"clear","streamSid":{sid}}}"#))), false),
            // A holder's mark the pacer reached: Twilio answers it once the audio before it
            // has been played.
            Some("mark") => (Some(twilio_mark(Some(sid), v.value.map_or("null", |r| r.get()))), false),
            _ => (None, ended),
        },
    }
}
