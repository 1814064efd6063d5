//! `GET /v1/bot` and `GET /v1/agent`: bot users and human agents (SPEC §4.3, §4.4).
//!
//! Both authenticate with a bearer token before the upgrade, and one connection carries
//! every conversation the member holds. Every activity names its conversation, and the
//! hub checks that the member holds it (`forbidden` otherwise).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::Response;

use super::ws::{self, Session, WsStream};
use crate::auth::Principal;
use crate::hub::{Hub, HubError, Outbox};
use crate::protocol::{Inbound, Kind};
use crate::routing::Presence;
use switchboard_codecs::Format;
use tokio_tungstenite::tungstenite::Bytes;

pub async fn bot_upgrade(State(hub): State<Arc<Hub>>, req: Request) -> Response {
    upgrade(hub, req, Principal::Bot)
}

pub async fn agent_upgrade(State(hub): State<Arc<Hub>>, req: Request) -> Response {
    upgrade(hub, req, Principal::Agent)
}

/// The bearer token from `Authorization` or, for browsers, `?access_token=`.
pub fn bearer(req: &Request) -> Option<String> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, token) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned());
    }
    let query = req.uri().query()?;
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v)
}

fn upgrade(hub: Arc<Hub>, req: Request, kind: Principal) -> Response {
    let member = match bearer(&req) {
        None => Err(HubError::credentials("missing bearer token (Authorization header or access_token)")),
        Some(t) => hub.authenticate(&t, kind),
    };
    let member = match member {
        Ok(m) => m,
        Err(e) => return super::respond::refuse(e),
    };
    let audio = match audio_format(&req) {
        Ok(f) => f,
        Err(e) => return super::respond::refuse(e),
    };
    let h = hub.clone();
    ws::upgrade(&hub, req, ws::MEMBER, move |ws| run(h, ws, member, kind, audio))
}

/// `?audio=pcmu/8000|pcma/8000|l16/8000|l16/16000|l16/24000|l16/48000` (default l16/16000).
fn audio_format(req: &Request) -> Result<Format, HubError> {
    let query = req.uri().query().unwrap_or("");
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    match pairs.into_iter().find(|(k, _)| k == "audio") {
        None => Ok(Format::default()),
        Some((_, v)) => v.parse().map_err(|_| {
            HubError::invalid(format!(
                "audio {v:?} is not one of pcmu/8000, pcma/8000, l16/8000, l16/16000, l16/24000, l16/48000"
            ))
        }),
    }
}

/// Not an `async fn`: see [`ws::run`].
fn run(
    hub: Arc<Hub>,
    ws: WsStream,
    member: Arc<str>,
    kind: Principal,
    audio: Format,
) -> impl Future<Output = ()> + Send + 'static {
    // A holder's queue is sized by what it carries: each call it can hold streams 50
    // frames a second into it.
    let calls = match kind {
        Principal::Bot => hub.cfg().bots.iter().find(|b| *b.name == *member && b.voice).map_or(0, |b| b.capacity),
        _ => hub.cfg().agents.iter().find(|a| *a.id == *member).map_or(0, |a| a.capacity),
    };
    let queue = hub.server.outbound_queue + calls as usize * crate::hub::outbox::MEDIA_SLOTS_PER_CALL;
    let (outbox, rx) = Outbox::new(queue);
    hub.member_connected(&member, &outbox, audio);
    let media = crate::server::voice::MEDIA_RATE * f64::from(calls.max(1));
    let session = StaffSession { hub: hub.clone(), outbox: outbox.clone(), member, kind, media };
    ws::run(hub, ws, outbox, rx, session, None)
}

struct StaffSession {
    hub: Arc<Hub>,
    outbox: Outbox,
    member: Arc<str>,
    kind: Principal,
    /// Media frames a second it may send: 20 ms audio for every call it can hold.
    media: f64,
}

impl Session for StaffSession {
    fn on_text(&mut self, text: &str) {
        let a = match Inbound::parse(text) {
            Ok(a) => a,
            Err(e) => {
                self.outbox.send_error(e, None, None);
                return;
            }
        };
        if let Err(e) = self.handle(&a) {
            self.outbox.send_error(e, a.conversation_id(), a.client_activity_id());
        }
    }

    fn on_binary(&mut self, data: Bytes) -> Result<(), HubError> {
        self.hub.holder_audio(&self.member, &data)
    }

    fn on_close(&mut self) {
        self.hub.member_disconnected(&self.member, &self.outbox);
    }

    fn rate(&self) -> (f64, u32) {
        (self.hub.server.member_rate, self.hub.server.member_burst)
    }

    fn role(&self) -> &'static str {
        if self.kind == Principal::Bot { "bot" } else { "agent" }
    }

    fn peer(&self) -> &str {
        &self.member
    }

    fn binary_rate(&self) -> (f64, u32) {
        (self.media, (self.media * 2.0) as u32)
    }
}

impl StaffSession {
    fn handle(&mut self, a: &Inbound) -> Result<(), HubError> {
        let hub = &self.hub;
        if self.kind == Principal::Bot {
            return hub.bot_activity(&self.member, &self.outbox, a);
        }
        match (a.kind(), a.event_name()) {
            (Kind::Message | Kind::Typing, _) => hub.member_post(&self.member, &self.outbox, a),
            (Kind::EndOfConversation, _) => hub.member_end(&self.member, &self.outbox, a),
            (Kind::Event, Some("handoff.initiate")) => {
                Err(HubError::invalid("agents hand a conversation on with the transfer event"))
            }
            (Kind::Event, Some("transfer")) => hub.transfer(&self.member, &self.outbox, a),
            (Kind::Event, Some("transcript.request")) => hub.transcript_page(&self.member, &self.outbox, a),
            (Kind::Event, Some("mark")) => hub.holder_mark(&self.member, a),
            (Kind::Event, Some("clear")) => hub.holder_clear(&self.member, a),
            (Kind::Event, Some("presence")) => {
                let p = a
                    .value
                    .as_str()
                    .and_then(Presence::parse)
                    .ok_or_else(|| HubError::invalid("presence value must be available, busy, away or offline"))?;
                hub.presence(&self.member, p)?;
                // Every client activity is acknowledged; presence is state, not transcript.
                self.outbox.send(crate::protocol::ack_state(a.client_activity_id()));
                Ok(())
            }
            (Kind::Event, Some(other)) => Err(HubError::invalid(format!("unknown event {other:?}"))),
            (Kind::Event, None) => Err(HubError::invalid("event activity has no \"name\"")),
        }
    }
}
