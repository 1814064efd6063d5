//! Delivery to a Bot Framework bot: its runner, connected to the hub through an outbox
//! like the built-in bot's, and one lane per conversation that POSTs to its endpoint.
//!
//! The runner is the bot user: it takes `conversation.assigned` and the conversation's
//! activities off its outbox, exactly what a `/v1/bot` connection would be sent, turns them
//! into Bot Framework Activities and queues them on the conversation's lane. A lane posts
//! one activity at a time, in order, each retried with backoff on 5xx, 408, 429, a timeout
//! or a refused connection, and moves on only once the bot has answered; lanes run side by
//! side, so a bot slow in one conversation holds up no other, and no other bot. Each
//! activity is posted under its transcript id and forwarded once (the runner remembers the
//! last seq each lane took), so a reconnect's replay is not posted again. A conversation
//! the runner has no memory of (new, or resumed after a restart) brings the customer's
//! unanswered activities: those after the last bot's or agent's, under their own ids (a
//! bot that did get one before the restart sees its id again). A lane whose
//! activity cannot be delivered after its retries, or whose queue overflows, fails the
//! conversation over to people (`Hub::bot_failed`), as a bot that disconnected or did not
//! answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::Connector;
use super::activity::Envelope;
use crate::clock::Clock;
use crate::config::BotAuth;
use crate::hub::Outbox;
use crate::hub::outbox::Outgoing;
use crate::protocol::Frame;

/// Tries per activity before the conversation goes to people.
const ATTEMPTS: u32 = 4;
/// The first pause between tries; it doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// One POST to a bot, from connecting to the end of its answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// The most of a bot's answer to a POST that is read (its body is not used).
const ANSWER_BYTES: usize = 64 * 1024;
/// Activities queued for one conversation's lane before the bot counts as failing.
const LANE_QUEUE: usize = 256;

pub type Http = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// An HTTP client for bots' endpoints, `http://` or `https://` (trusting the platform's
/// roots).
pub fn http_client() -> Http {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // An error only means a provider is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("no trusted CA certificates ({e}): https:// bot endpoints will fail");
            let tls = rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls)
        }
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CALL_TIMEOUT));
    let connector = builder.https_or_http().enable_http1().wrap_connector(http);
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector)
}

/// A Bot Framework bot as its runner knows it.
#[derive(Debug)]
pub struct BotInfo {
    pub name: Arc<str>,
    pub app_id: String,
    pub endpoint: String,
    pub auth: BotAuth,
}

/// Starts the runner of every bot with an `endpoint`.
pub fn spawn_all(bc: &Arc<Connector>) {
    for b in bc.hub.cfg().bots.iter() {
        let Some(endpoint) = &b.endpoint else { continue };
        let bot = Arc::new(BotInfo {
            name: Arc::from(b.name.as_str()),
            app_id: b.app_id.clone(),
            endpoint: endpoint.clone(),
            auth: b.auth,
        });
        bc.hub.tasks.spawn(run(bc.clone(), bot));
    }
}

/// One conversation's queue toward the bot, and what the runner knows of it.
struct Lane {
    tx: mpsc::Sender<Value>,
    envelope: Envelope,
    /// The last transcript seq taken for the bot (forwarded or skipped).
    taken: u64,
    /// The bot handed off and waits for `handoff.status` `completed` or `failed`.
    handing_off: bool,
}

async fn run(bc: Arc<Connector>, bot: Arc<BotInfo>) {
    let hub = bc.hub.clone();
    let mut lanes: HashMap<String, Lane> = HashMap::new();
    loop {
        let (outbox, mut rx) = Outbox::new(hub.server.outbound_queue.max(4096));
        hub.member_connected(&bot.name, &outbox, switchboard_codecs::Format::default());
        loop {
            tokio::select! {
                _ = hub.stopping() => {
                    hub.member_disconnected(&bot.name, &outbox);
                    return;
                }
                _ = outbox.kicked() => break,
                m = rx.recv() => match m {
                    Some(Outgoing::Text(f)) => take(&bc, &bot, &mut lanes, &f),
                    Some(Outgoing::Batch(fs)) => fs.iter().for_each(|f| take(&bc, &bot, &mut lanes, f)),
                    Some(Outgoing::Binary(_) | Outgoing::Play) => {}
                    Some(Outgoing::Error(e)) => {
                        let conv = e.conversation.as_deref().unwrap_or("");
                        tracing::warn!(bot = %bot.name, conversation.id = conv, "refused: {}", e.error);
                    }
                    Some(Outgoing::Close(..)) | None => break,
                },
            }
        }
        // Kicked or replaced: connect again; held conversations come back resumed, and
        // the lanes (with what they took) carry on.
        hub.member_disconnected(&bot.name, &outbox);
        lanes.retain(|_, l| !l.tx.is_closed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Takes one frame of the bot's outbox onto the lane of its conversation.
fn take(bc: &Arc<Connector>, bot: &Arc<BotInfo>, lanes: &mut HashMap<String, Lane>, f: &Frame) {
    let Ok(v) = serde_json::from_str::<Value>(f.as_str()) else { return };
    let Some(conv) = v["conversation"]["id"].as_str() else { return };
    let now = Clock::timestamp(bc.hub.clock.now_ms());
    match (v["type"].as_str(), v["name"].as_str()) {
        (Some("event"), Some("conversation.assigned")) if v["value"]["workstream"].is_string() => {
            let val = &v["value"];
            let last = val["transcript"].as_array().and_then(|t| t.last()).and_then(|a| a["seq"].as_u64()).unwrap_or(0);
            let envelope = Envelope {
                service_url: bc.service_url.clone(),
                app_id: bot.app_id.clone(),
                bot_name: bot.name.to_string(),
                routing: json!({"workstream": val["workstream"], "queue": val["queue"], "context": val["context"]}),
                customer: json!({"id": val["customer"]["id"], "name": val["customer"]["name"], "role": "user"}),
            };
            let resumed = val["resumed"] == true;
            let transcript = val["transcript"].as_array().map(Vec::as_slice).unwrap_or_default();
            if let Some(lane) = lanes.get_mut(conv).filter(|l| !l.tx.is_closed()) {
                // The runner reconnected: what it had not taken yet (lost with the old
                // outbox's queue) is in the transcript.
                lane.envelope = envelope;
                if !resumed {
                    let update = lane.envelope.conversation_update(conv, last, &now);
                    push(bc, bot, conv, &lane.tx, update);
                }
                for a in transcript.iter().filter(|a| a["seq"].as_u64().is_some_and(|s| s > lane.taken)) {
                    if let Some(a) = lane.envelope.to_bot(a, &bot.name) {
                        push(bc, bot, conv, &lane.tx, a);
                    }
                }
                lane.taken = lane.taken.max(last);
                return;
            }
            let (tx, rx) = mpsc::channel(LANE_QUEUE);
            bc.hub.tasks.spawn(lane(bc.clone(), bot.clone(), conv.to_owned(), rx));
            // A new conversation is greeted; one resumed after a restart was greeted before.
            if !resumed {
                push(bc, bot, conv, &tx, envelope.conversation_update(conv, last, &now));
            }
            // Then what the customer said that nobody has answered yet: what it wrote while
            // it waited for the bot, or, after a restart, what the bot may not have had.
            for a in unanswered(transcript) {
                if let Some(a) = envelope.to_bot(a, &bot.name) {
                    push(bc, bot, conv, &tx, a);
                }
            }
            lanes.insert(conv.to_owned(), Lane { tx, envelope, taken: last, handing_off: false });
        }
        (Some("event"), Some("handoff.status")) => {
            let Some(lane) = lanes.get_mut(conv) else { return };
            let state = v["value"]["state"].as_str().unwrap_or("");
            lane.handing_off = state == "accepted";
            let a = lane.envelope.handoff_status(conv, &format!("{conv}.handoff.{state}"), &v["value"], &now);
            push(bc, bot, conv, &lane.tx, a);
            if state != "accepted" {
                lanes.remove(conv);
            }
        }
        _ => {
            let Some(seq) = v["seq"].as_u64() else { return };
            let Some(lane) = lanes.get_mut(conv) else { return };
            if seq <= lane.taken {
                return;
            }
            lane.taken = seq;
            if let Some(a) = lane.envelope.to_bot(&v, &bot.name) {
                push(bc, bot, conv, &lane.tx, a);
            }
            // The end is the last the bot hears of it (its lane ends after posting it),
            // unless a handoff of it is still waiting for an agent.
            if v["type"] == "endOfConversation" && !lane.handing_off {
                lanes.remove(conv);
            }
        }
    }
}

/// The transcript after the last activity of a bot or an agent.
fn unanswered(transcript: &[Value]) -> &[Value] {
    let answered = transcript.iter().rposition(|a| matches!(a["from"]["role"].as_str(), Some("bot" | "agent")));
    answered.map_or(transcript, |i| &transcript[i + 1..])
}

/// Queues an activity on a lane; a lane that overflows means the bot stopped keeping up.
fn push(bc: &Connector, bot: &BotInfo, conv: &str, tx: &mpsc::Sender<Value>, a: Value) {
    if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(a) {
        bc.hub.bot_failed(&bot.name, conv, "its endpoint fell too far behind");
    }
}

/// One conversation's lane: its activities to the bot, in order, one at a time, until the
/// runner drops its end (the conversation ended, or its handoff is over) and it is drained.
async fn lane(bc: Arc<Connector>, bot: Arc<BotInfo>, conv: String, mut rx: mpsc::Receiver<Value>) {
    loop {
        let a = tokio::select! {
            _ = bc.hub.stopping() => return,
            a = rx.recv() => match a { Some(a) => a, None => return },
        };
        if let Err(why) = deliver(&bc, &bot, &a).await {
            tracing::warn!(bot = %bot.name, conversation.id = %conv, activity = %a["id"], "not delivered: {why}");
            bc.hub.bot_failed(&bot.name, &conv, &why);
        }
    }
}

/// Whether a failed try is worth another.
enum Failure {
    Retry(String),
    Final(String),
}

/// POSTs one activity, with the tries and backoff of the module's doc.
async fn deliver(bc: &Connector, bot: &BotInfo, a: &Value) -> Result<(), String> {
    let body = Bytes::from(a.to_string());
    let mut pause = FIRST_BACKOFF;
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        match post(bc, bot, body.clone()).await {
            Ok(()) => return Ok(()),
            Err(Failure::Final(why)) => return Err(why),
            Err(Failure::Retry(why)) => last = why,
        }
        if attempt < ATTEMPTS {
            tracing::debug!(bot = %bot.name, attempt, "retrying after: {last}");
            tokio::select! {
                _ = bc.hub.stopping() => return Err("shutting down".into()),
                _ = tokio::time::sleep(pause) => {}
            }
            pause *= 2;
        }
    }
    Err(format!("{last} ({ATTEMPTS} tries)"))
}

async fn post(bc: &Connector, bot: &BotInfo, body: Bytes) -> Result<(), Failure> {
    let mut req = Request::post(&bot.endpoint).header("content-type", "application/json");
    if bot.auth == BotAuth::Jwt {
        let key = bc.key.as_ref().ok_or_else(|| Failure::Final("the channel key is missing".into()))?;
        let now = bc.hub.clock.now_ms() / 1000;
        let token = key.bot_token(&bc.issuer, &bot.app_id, &bc.service_url, now).map_err(Failure::Final)?;
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req.body(Full::new(body)).map_err(|e| Failure::Final(format!("bad endpoint: {e}")))?;
    let call = async {
        let res = bc.http.request(req).await.map_err(|e| Failure::Retry(format!("cannot reach the endpoint: {e}")))?;
        let status = res.status();
        // Read (a bounded part of) the answer, so the connection can be reused.
        let _ = Limited::new(res.into_body(), ANSWER_BYTES).collect().await;
        match status.as_u16() {
            200..=299 => Ok(()),
            408 | 429 | 500..=599 => Err(Failure::Retry(format!("the endpoint answered {status}"))),
            _ => Err(Failure::Final(format!("the endpoint answered {status}"))),
        }
    };
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Retry(format!("no answer within {} s", CALL_TIMEOUT.as_secs()))),
    }
}
