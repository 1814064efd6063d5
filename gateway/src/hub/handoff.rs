//! A bot's handoff signals, in every dialect a bot may speak, and `handoff.status` back.
//!
//! Native bots and Bot Framework bots alike end up here, so a signal means the same
//! whatever its dialect: the `handoff.initiate` event (SPEC §4.3; also what botbuilder's
//! `EventFactory.createHandoffInitiation` sends, with its Transcript attachment, which is
//! kept with the activity for the agent), Omnichannel's `channelData.tags` on a message
//! (`{"type":"Escalate","context":{…}}` and `{"type":"EndConversation"}`), and
//! `endOfConversation`. The Bot Framework handoff protocol's `handoff.status` events
//! (`accepted`, `failed`, `completed`) go back to the bot on its connection; they are state,
//! not transcript.

use std::sync::Arc;

use super::*;
use crate::protocol::{Inbound, Kind, OmnichannelTag};

impl Hub {
    /// Carries out what a bot sends about a conversation it holds: a message or typing
    /// (with Omnichannel's tags, a handoff or the end), a handoff, or the end.
    pub fn bot_activity(&self, bot: &Arc<str>, reply: &Outbox, a: &Inbound) -> Result<(), HubError> {
        match (a.kind(), a.event_name()) {
            (Kind::Message, _) => match crate::protocol::omnichannel_tag(a.channel_data.as_deref())? {
                None => self.member_post(bot, reply, a),
                Some(tag) => self.tagged(bot, reply, a, tag),
            },
            (Kind::Typing, _) => self.member_post(bot, reply, a),
            (Kind::EndOfConversation, _) => self.member_end(bot, reply, a),
            (Kind::Event, Some("handoff.initiate")) => self.handoff(bot, reply, a).inspect_err(|e| {
                if let Some(conv) = a.conversation_id() {
                    self.handoff_status(bot, conv, "failed", &e.to_string());
                }
            }),
            (Kind::Event, Some("transfer")) => {
                Err(HubError::invalid("bots hand a conversation on with the handoff.initiate event"))
            }
            (Kind::Event, Some("transcript.request")) => self.transcript_page(bot, reply, a),
            (Kind::Event, Some("mark")) => self.holder_mark(bot, a),
            (Kind::Event, Some("clear")) => self.holder_clear(bot, a),
            (Kind::Event, Some(other)) => Err(HubError::invalid(format!("unknown event {other:?}"))),
            (Kind::Event, None) => Err(HubError::invalid("event activity has no \"name\"")),
        }
    }

    /// A message tagged the Omnichannel way: its text goes to the customer as a message
    /// (acknowledged as the client's activity), then the handoff (the tag's `context` as
    /// context variables) or the end follows as the gateway's own step.
    fn tagged(&self, bot: &Arc<str>, reply: &Outbox, a: &Inbound, tag: OmnichannelTag) -> Result<(), HubError> {
        let conv = a.conversation_id().unwrap_or_default().to_owned();
        let has_text = a.text.as_deref().is_some_and(|t| !t.is_empty()) || a.has_attachments();
        // Without text the signal itself is the client's activity (and its acknowledgement).
        let (first, signal_cid) = if has_text {
            self.member_post(bot, reply, a)?;
            (true, a.client_activity_id().map(|c| format!("{c}#signal")))
        } else {
            (false, a.client_activity_id().map(str::to_owned))
        };
        let silent = Outbox::new(4).0;
        let to = if first { &silent } else { reply };
        match tag {
            OmnichannelTag::Escalate(context) => {
                let mut e = Inbound::new(Kind::Event, &conv);
                e.name = Some("handoff.initiate".into());
                e.value = context;
                if let Some(c) = &signal_cid {
                    e.set_client_activity_id(c);
                }
                self.handoff(bot, to, &e).inspect_err(|err| self.handoff_status(bot, &conv, "failed", &err.to_string()))
            }
            OmnichannelTag::End => {
                let mut e = Inbound::new(Kind::EndOfConversation, &conv);
                if let Some(c) = &signal_cid {
                    e.set_client_activity_id(c);
                }
                self.member_end(bot, to, &e)
            }
        }
    }

    /// Sends `handoff.status` to `bot` on its connection, if it is connected.
    pub(super) fn handoff_status(&self, bot: &str, conv: &str, state: &str, message: &str) {
        let Some(conn) = self.members.get(bot).map(|m| m.outbox.clone()) else { return };
        #[derive(serde::Serialize)]
        struct Status<'a> {
            state: &'a str,
            message: &'a str,
        }
        conn.send(crate::protocol::event("handoff.status", Status { state, message }, Some(conv)));
    }

    /// A bot that keeps failing to take a conversation's activities (a Bot Framework bot
    /// whose endpoint errs or does not answer): the conversation goes to people, by the
    /// same rule as a bot that disconnected or did not answer.
    pub fn bot_failed(&self, bot: &str, conv_id: &str, why: &str) {
        let Some(conv) = self.conversation(conv_id) else { return };
        let mut engine = self.engine.lock();
        if engine.holder(conv_id) != Some(bot) {
            return;
        }
        let text = format!("The virtual assistant {bot} is not answering; handing you over to an agent.");
        tracing::warn!(conversation.id = conv_id, bot, "{why}: failing over");
        self.notice(&conv, &text);
        match engine.failover(&conv.id, self.clock.now_ms()) {
            Ok(fx) => self.apply(&mut engine, fx),
            Err(e) => tracing::error!(conversation.id = conv_id, "failover: {e}"),
        }
    }
}
