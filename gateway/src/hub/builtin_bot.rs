//! The built-in bot's runner: the part of the built-in topic bot that talks to the hub.
//!
//! It is a bot user like any other: it has an app ID, a capacity and queue memberships, and
//! it connects to the hub through an [`Outbox`] exactly as a `/v1/bot` connection does —
//! it receives `conversation.assigned` and the customer's activities as JSON frames and
//! answers through the same hub calls (`member_post`, `handoff`, `member_end`), so routing,
//! transcripts and checks are the same code path. What it says is decided by the sans-IO
//! dialog in `crate::bot`; this file only carries frames both ways.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::outbox::Outgoing;
use super::{Hub, HubError, Outbox};
use crate::bot::{Action, Dialog, Script};
use crate::context::Value as CtxValue;
use crate::protocol::{Inbound, Kind};

/// Starts every built-in bot of the configuration.
pub fn spawn_all(hub: &Arc<Hub>) {
    for b in &hub.cfg().bots {
        if let Some(script) = &b.builtin {
            let name: Arc<str> = Arc::from(b.name.as_str());
            hub.tasks.spawn(run(hub.clone(), name, script.clone()));
        }
    }
}

/// The built-in bot's audio format on voice calls.
const PROMPT_FORMAT: switchboard_codecs::Format = switchboard_codecs::Format::L16_8K;

/// What the built-in bot tells a customer whose transfer to people was refused because
/// the customer's address has `chat_agent_conversations_per_address` conversations with people.
pub const HANDOFF_REFUSED: &str = "Our agents cannot take another conversation from your network right now. \
     Please try again once one of its other conversations has ended; meanwhile I am still here to help.";

/// What the built-in bot "says" on a call: it has no speech synthesis, so each message is
/// a short two-tone chime (a prompt cue), and its text is in the transcript for the agent.
fn prompt_audio() -> Vec<u8> {
    let rate = PROMPT_FORMAT.sample_rate() as usize;
    let mut pcm = Vec::with_capacity(rate);
    for (freq, ms) in [(660.0, 150), (0.0, 50), (880.0, 150), (0.0, 150)] {
        let n = rate * ms / 1000;
        for i in 0..n {
            let t = i as f64 / rate as f64;
            let env = ((i.min(n - i) as f64) / (rate as f64 * 0.005)).min(1.0);
            let s = (env * 6000.0 * (2.0 * std::f64::consts::PI * freq * t).sin()) as i16;
            pcm.extend_from_slice(&s.to_le_bytes());
        }
    }
    pcm
}

async fn run(hub: Arc<Hub>, name: Arc<str>, script: Arc<Script>) {
    let mut dialogs: HashMap<String, Convo> = HashMap::new();
    loop {
        let (outbox, mut rx) = Outbox::new(hub.server.outbound_queue.max(4096));
        hub.member_connected(&name, &outbox, PROMPT_FORMAT);
        loop {
            tokio::select! {
                _ = hub.stopping() => {
                    hub.member_disconnected(&name, &outbox);
                    return;
                }
                _ = outbox.kicked() => break,
                m = rx.recv() => match m {
                    Some(Outgoing::Text(f)) => {
                        if let Ok(v) = serde_json::from_str::<Value>(f.as_str()) {
                            handle(&hub, &name, &script, &outbox, &mut dialogs, &v);
                        }
                    }
                    Some(Outgoing::Batch(fs)) => {
                        for f in fs {
                            if let Ok(v) = serde_json::from_str::<Value>(f.as_str()) {
                                handle(&hub, &name, &script, &outbox, &mut dialogs, &v);
                            }
                        }
                    }
                    Some(Outgoing::Binary(_) | Outgoing::Play) => {} // the caller's audio: the built-in bot listens for DTMF only
                    Some(Outgoing::Error(e)) => {
                        let conv = e.conversation.as_deref().unwrap_or("");
                        tracing::warn!(bot = %name, conversation.id = conv, "refused: {}", e.error);
                    }
                    Some(Outgoing::Close(..)) | None => break,
                },
            }
        }
        // Kicked (it fell behind) or replaced: connect again; held conversations come back
        // with `resumed: true` and their dialogs continue.
        hub.member_disconnected(&name, &outbox);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // "Disconnect bot": it stays away until an administrator connects it again.
        loop {
            let enabled = hub.bot_enabled.notified();
            if !hub.with_engine(|e| e.is_disabled(&name)) {
                break;
            }
            tokio::select! {
                _ = hub.stopping() => return,
                _ = enabled => {}
            }
        }
    }
}

/// One conversation the built-in bot holds: its dialog, and the call's stream on voice.
struct Convo {
    dialog: Dialog,
    stream: Option<u32>,
}

fn handle(
    hub: &Hub,
    name: &Arc<str>,
    script: &Script,
    outbox: &Outbox,
    dialogs: &mut HashMap<String, Convo>,
    v: &Value,
) {
    let Some(conv) = v["conversation"]["id"].as_str() else { return };
    let actions = match (v["type"].as_str(), v["name"].as_str()) {
        (Some("event"), Some("conversation.assigned")) if v["value"]["workstream"].is_string() => {
            if v["value"]["resumed"] == true && dialogs.contains_key(conv) {
                return;
            }
            let user = v["value"]["customer"]["name"].as_str().unwrap_or("there");
            let stream = v["value"]["media"]["stream"].as_u64().and_then(|s| u32::try_from(s).ok());
            let mut dialog = Dialog::new(user, &v["value"]["context"]);
            let actions = if v["value"]["resumed"] == true { Vec::new() } else { dialog.start(script) };
            dialogs.insert(conv.to_owned(), Convo { dialog, stream });
            actions
        }
        (Some("message"), _) if v["from"]["role"] == "user" => {
            let text = v["text"].as_str().unwrap_or("");
            dialogs.get_mut(conv).map(|c| c.dialog.on_message(script, text)).unwrap_or_default()
        }
        (Some("event"), Some("dtmf")) => {
            let digit = v["value"].as_str().unwrap_or("");
            dialogs.get_mut(conv).map(|c| c.dialog.on_dtmf(script, digit)).unwrap_or_default()
        }
        (Some("endOfConversation"), _) => {
            dialogs.remove(conv);
            return;
        }
        (Some("event"), Some("error")) => {
            tracing::warn!(bot = %name, conversation.id = conv, error = %v["value"], "built-in bot got an error");
            return;
        }
        _ => return,
    };
    let stream = dialogs.get(conv).and_then(|c| c.stream);
    for a in actions {
        let result = match a {
            Action::Say(text) => {
                let mut m = Inbound::new(Kind::Message, conv);
                m.text = Some(text);
                let posted = hub.member_post(name, outbox, &m);
                if let Some(stream) = stream {
                    let _ = hub.holder_audio(name, &crate::voice::media_frame(stream, &prompt_audio()));
                }
                posted
            }
            Action::Handoff { vars, summary } => {
                let mut e = Inbound::new(Kind::Event, conv);
                e.name = Some("handoff.initiate".into());
                e.value = Value::Object(routable(hub, conv, vars).into_iter().collect());
                e.text = Some(summary);
                let handed = hub.handoff(name, outbox, &e);
                if let Err(HubError::TooMany(_)) = &handed {
                    // Its address has as many conversations with people as it may: the
                    // customer stays with the bot, is told so, and may ask again.
                    let mut m = Inbound::new(Kind::Message, conv);
                    m.text = Some(HANDOFF_REFUSED.into());
                    let _ = hub.member_post(name, outbox, &m);
                    if let Some(c) = dialogs.get_mut(conv) {
                        c.dialog.reopen();
                    }
                }
                handed
            }
            Action::End { survey } => {
                let mut e = Inbound::new(Kind::EndOfConversation, conv);
                e.value = json!({ "survey": survey });
                hub.member_end(name, outbox, &e)
            }
        };
        match result {
            Ok(()) => {}
            // The conversation moved on while the bot answered (the customer ended it, or it
            // went to people), or its handoff was refused (the customer was told, and the
            // hub logged it): nothing is wrong, and a customer could make a log of warnings.
            Err(e @ (HubError::NotHolder(_) | HubError::Ended | HubError::TooMany(_))) => {
                tracing::debug!(bot = %name, conversation.id = conv, "built-in bot action dropped: {e}");
            }
            Err(e) => tracing::warn!(bot = %name, conversation.id = conv, "built-in bot action failed: {e}"),
        }
    }
    // Once every action is carried out: a refused transfer reopens the dialog.
    if dialogs.get(conv).is_some_and(|c| c.dialog.is_done()) {
        dialogs.remove(conv);
    }
}

/// Drops answers that a workstream declares with another type (a typed "five" for a
/// number), so a customer's odd answer cannot block the handoff; it stays in the transcript.
fn routable(hub: &Hub, conv: &str, vars: BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    let Some(ws) = hub.conversation(conv).and_then(|c| hub.cfg().workstream(&c.workstream).cloned()) else {
        return vars;
    };
    vars.into_iter().filter(|(k, v)| ws.variable(k).is_none_or(|ty| CtxValue::from_json(ty, v).is_ok())).collect()
}
