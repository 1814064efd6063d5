//! `GET /v1/chat`: the customer's side of a conversation (SPEC §4.1).
//!
//! The first frame opens the session (`session.start`) or resumes one (`session.resume`);
//! after that the customer sends messages, typing, `endOfConversation` and
//! `survey.response`. Every problem is answered with an `error` event and the connection
//! stays open.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use serde_json::Value;

use super::throttle::addr_key;
use super::ws::{self, Session, WsStream};
use crate::config::Channel;
use crate::hub::{Conversation, Hub, HubError, Outbox, Sender, Thing};
use crate::protocol::{Inbound, Kind};

pub async fn upgrade(State(hub): State<Arc<Hub>>, req: Request) -> Response {
    let h = hub.clone();
    let origin = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(peer)| addr_key(peer.ip()));
    ws::upgrade(&hub, req, ws::CUSTOMER, move |ws| run(h, ws, origin))
}

/// Not an `async fn`: see [`ws::run`].
fn run(hub: Arc<Hub>, ws: WsStream, origin: Option<IpAddr>) -> impl Future<Output = ()> + Send + 'static {
    let (outbox, rx) = Outbox::new(hub.server.outbound_queue);
    let session = ChatSession { hub: hub.clone(), outbox: outbox.clone(), conv: None, origin };
    let handshake = Duration::from_secs(hub.server.handshake_timeout_secs);
    // One task: the `ack` of a message goes out in the wake-up that read it.
    ws::run_inline(hub, ws, outbox, rx, session, Some(handshake))
}

impl ws::Speaker for ChatSession {}

struct ChatSession {
    hub: Arc<Hub>,
    outbox: Outbox,
    conv: Option<Arc<Conversation>>,
    /// The address the customer connected from, as `chat_conversations_per_address` counts it.
    origin: Option<IpAddr>,
}

impl Session for ChatSession {
    fn on_text(&mut self, text: &str) {
        let a = match Inbound::parse(text) {
            Ok(a) => a,
            Err(e) => {
                self.outbox.send_error(e, self.conv.as_ref().map(|c| &*c.id), None);
                return;
            }
        };
        let result = match self.conv.clone() {
            None => self.open(&a),
            Some(conv) => self.converse(&conv, &a),
        };
        if let Err(e) = result {
            self.outbox.send_error(e, self.conv.as_ref().map(|c| &*c.id), a.client_activity_id());
        }
    }

    fn started(&self) -> bool {
        self.conv.is_some()
    }

    fn role(&self) -> &'static str {
        "customer"
    }

    fn rate(&self) -> (f64, u32) {
        (self.hub.server.customer_rate, self.hub.server.customer_burst)
    }

    fn on_close(&mut self) {
        if let Some(conv) = &self.conv {
            self.hub.customer_left(conv, &self.outbox);
        }
    }
}

/// The longest customer name taken: it is shown to agents and copied into every activity.
pub const MAX_NAME_CHARS: usize = 128;

fn text_field<'a>(v: &'a Value, key: &str) -> Result<Option<&'a str>, HubError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(HubError::invalid(format!("value.{key} must be text"))),
    }
}

impl ChatSession {
    fn open(&mut self, a: &Inbound) -> Result<(), HubError> {
        match a.event_name() {
            Some("session.start") => {
                let ws_name = text_field(&a.value, "workstream")?
                    .ok_or_else(|| HubError::invalid("session.start needs value.workstream"))?;
                let cfg = self.hub.cfg();
                let ws =
                    cfg.workstream(ws_name).ok_or_else(|| HubError::Unknown(Thing::Workstream, ws_name.to_owned()))?;
                if ws.channel != Channel::Chat {
                    return Err(HubError::invalid(format!(
                        "workstream {ws_name:?} is a voice workstream; calls connect through /v1/voice"
                    )));
                }
                let user = match a.value.get("user") {
                    None | Some(Value::Null) => Value::Null,
                    Some(u @ Value::Object(_)) => u.clone(),
                    Some(_) => {
                        return Err(HubError::invalid("value.user must be an object, like {\"name\":\"Ann\"}"));
                    }
                };
                let name = text_field(&user, "name")?.filter(|n| !n.trim().is_empty()).unwrap_or("Customer");
                if name.chars().count() > MAX_NAME_CHARS {
                    return Err(HubError::invalid(format!(
                        "value.user.name is longer than {MAX_NAME_CHARS} characters"
                    )));
                }
                let ctx = self.hub.customer_context(ws_name, a.value.get("context").unwrap_or(&Value::Null))?;
                self.conv = Some(self.hub.start_conversation(None, ws_name, name, ctx, &self.outbox, self.origin)?);
                Ok(())
            }
            Some("session.resume") => {
                let id = text_field(&a.value, "conversationId")?
                    .ok_or_else(|| HubError::invalid("session.resume needs value.conversationId"))?;
                let token = text_field(&a.value, "token")?
                    .ok_or_else(|| HubError::credentials("session.resume needs value.token"))?;
                let watermark = match a.value.get("watermark") {
                    None | Some(Value::Null) => 0,
                    Some(w) => w.as_u64().ok_or_else(|| HubError::invalid("value.watermark must be a whole number"))?,
                };
                self.conv = Some(self.hub.resume_conversation(id, token, watermark, &self.outbox)?);
                Ok(())
            }
            _ => Err(HubError::invalid("start with a session.start or session.resume event")),
        }
    }

    fn converse(&mut self, conv: &Arc<Conversation>, a: &Inbound) -> Result<(), HubError> {
        match a.kind() {
            Kind::Message | Kind::Typing => {
                self.hub.post(conv, &Sender::Customer, &self.outbox, a, |inner| {
                    if inner.closed { Err(HubError::invalid("the conversation has ended")) } else { Ok(()) }
                })?;
                Ok(())
            }
            Kind::EndOfConversation => self.hub.customer_end(conv, &self.outbox, a),
            Kind::Event => match a.event_name() {
                Some("survey.response") => self.hub.survey_response(conv, &self.outbox, a),
                Some("session.start" | "session.resume") => {
                    Err(HubError::invalid("this connection already has a conversation"))
                }
                Some(other) => Err(HubError::invalid(format!("unknown event {other:?}"))),
                None => Err(HubError::invalid("event activity has no \"name\"")),
            },
        }
    }
}
