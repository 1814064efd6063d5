//! The hub's voice calls: starting a call, caller media and DTMF in, holder media, marks
//! and barge-in out, hang-ups, and re-routing a call whose holder vanished.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use switchboard_codecs::Format;

use super::call::{Call, LegKind};
use super::error::{HubError, Thing};
use super::{Conversation, Hub, Sender};
use crate::context::Context;
use crate::protocol::{self, Inbound, Kind};
use crate::routing::Engine;
use crate::voice::{HoldAudio, parse_media_frame};

impl Hub {
    /// An IVR connector starts a call: a voice conversation with its media state.
    pub fn start_call(
        &self,
        workstream: &str,
        caller: Format,
        context: Context,
        outbox: &super::Outbox,
        leg: LegKind,
    ) -> Result<Arc<Conversation>, HubError> {
        let cfg = self.cfg();
        let ws =
            cfg.workstream(workstream).ok_or_else(|| HubError::Unknown(Thing::Workstream, workstream.to_owned()))?;
        if ws.channel != crate::config::Channel::Voice {
            return Err(HubError::invalid(format!(
                "workstream {workstream:?} is a chat workstream; chats connect through /v1/chat"
            )));
        }
        // `[server] max_calls` is checked where the call is added, under the engine lock.
        if self.pacer.overloaded() {
            crate::metrics::VOICE_REFUSED.inc();
            return Err(HubError::Retry(
                "the gateway is carrying all the calls it can without gaps in their audio; try again shortly".into(),
            ));
        }
        // Decoded when the configuration was loaded; converted once per caller format.
        let hold = match &ws.hold_audio {
            Some(prompt) => prompt.audio(caller),
            None => HoldAudio::tone(caller),
        };
        let id = super::new_conversation_id();
        let stream = self.next_stream.fetch_add(1, Ordering::Relaxed);
        crate::metrics::VOICE_CALLS.inc();
        let call = Arc::new(Call::new(stream, id.clone(), caller, leg.inband_dtmf(), hold));
        let conv =
            self.open_conversation(id, workstream, "Caller", context, outbox, super::customer::Opening::Call(call))?;
        self.pacer.add(conv.clone(), outbox.clone(), leg.marks());
        Ok(conv)
    }

    /// Caller audio: to the holder, and any in-band DTMF to the transcript.
    pub fn caller_audio(&self, conv: &Arc<Conversation>, reply: &super::Outbox, data: &[u8]) {
        let Some(call) = &conv.call else { return };
        for d in call.caller_audio(data) {
            let _ = self.caller_dtmf(conv, reply, &d.to_string(), None);
        }
    }

    /// A key the caller pressed: a `dtmf` event in the transcript, delivered to the holder.
    pub fn caller_dtmf(
        &self,
        conv: &Arc<Conversation>,
        reply: &super::Outbox,
        digit: &str,
        client_activity_id: Option<&str>,
    ) -> Result<(), HubError> {
        if digit.len() != 1 || !"0123456789*#ABCDabcd".contains(digit) {
            return Err(HubError::invalid(format!("{digit:?} is not a DTMF digit")));
        }
        let mut a = Inbound::new(Kind::Event, &conv.id);
        a.name = Some("dtmf".into());
        a.value = Value::String(digit.to_ascii_uppercase());
        if let Some(cid) = client_activity_id {
            a.set_client_activity_id(cid);
        }
        self.post(
            conv,
            &Sender::Customer,
            reply,
            &a,
            |inner| if inner.closed { Err(super::closed_error()) } else { Ok(()) },
        )?;
        Ok(())
    }

    /// The caller hung up.
    pub fn hang_up(&self, conv: &Arc<Conversation>, reply: &super::Outbox) {
        let a = Inbound::new(Kind::EndOfConversation, &conv.id);
        let _ = self.customer_end(conv, reply, &a);
    }

    fn held_call(&self, member: &str, conv_id: &str) -> Result<Arc<Conversation>, HubError> {
        let conv =
            self.conversation(conv_id).ok_or_else(|| HubError::Unknown(Thing::Conversation, conv_id.to_owned()))?;
        if conv.call.as_ref().and_then(|c| c.holder()).as_deref() != Some(member) {
            return Err(HubError::NotHolder(format!("the call in conversation {conv_id:?}")));
        }
        Ok(conv)
    }

    /// A binary frame from a holder: `[stream u32 BE][audio in its format]`.
    pub fn holder_audio(&self, member: &str, frame: &[u8]) -> Result<(), HubError> {
        let (stream, audio) = parse_media_frame(frame)
            .ok_or_else(|| HubError::invalid("a media frame starts with a 4-byte stream number"))?;
        let call = self
            .calls
            .get(&stream)
            .map(|c| c.value().clone())
            .ok_or_else(|| HubError::Unknown(Thing::Stream, stream.to_string()))?;
        Ok(call.holder_audio(member, audio)?)
    }

    /// `mark` from a holder: reported back once the audio before it has been played.
    pub fn holder_mark(&self, member: &str, a: &Inbound) -> Result<(), HubError> {
        let conv = self.held_call(member, a.conversation_id().unwrap_or(""))?;
        let name = a
            .value
            .get("name")
            .and_then(Value::as_str)
            .or(a.value.as_str())
            .ok_or_else(|| HubError::invalid("mark needs value.name"))?;
        if let Some(call) = &conv.call {
            call.mark(member, name.to_owned())?;
        }
        Ok(())
    }

    /// `clear` from a holder (barge-in): drop queued audio, and tell the connector.
    pub fn holder_clear(&self, member: &str, a: &Inbound) -> Result<(), HubError> {
        let conv = self.held_call(member, a.conversation_id().unwrap_or(""))?;
        if let Some(call) = &conv.call {
            call.clear();
        }
        if let Some(o) = &conv.inner.lock().customer {
            o.send(protocol::event("clear", Value::Null, Some(&conv.id)));
        }
        Ok(())
    }

    /// A mark has been played to the caller: tell the holder.
    pub fn mark_played(&self, conv: &Conversation, name: &str) {
        let Some(member) = conv.call.as_ref().and_then(|c| c.holder()) else { return };
        if let Some(m) = self.members.get(&member) {
            m.outbox.send(protocol::event("mark", json!({"name": name}), Some(&conv.id)));
        }
    }

    /// A call's holder vanished: re-route at once (called with the engine locked).
    pub(super) fn holder_lost(&self, engine: &mut Engine, conv: &Arc<Conversation>, member: &str, now: u64) {
        if engine.holder(&conv.id) != Some(member) {
            return;
        }
        let (why, fx) = if self.is_bot(member) {
            (
                format!("The virtual assistant {member} disconnected; handing the call to an agent."),
                engine.failover(&conv.id, now),
            )
        } else {
            (
                format!("{member} disconnected; the call is back at the front of the queue."),
                engine.requeue_front(&conv.id, now),
            )
        };
        tracing::warn!(conversation.id = %conv.id, "{why}");
        self.notice(conv, &why);
        match fx {
            Ok(fx) => self.apply(engine, fx),
            Err(e) => tracing::error!(conversation.id = %conv.id, "re-routing the call: {e}"),
        }
    }
}
