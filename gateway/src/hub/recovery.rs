//! Restart recovery: the conversations a store held when the gateway stopped (or died) are
//! put back as they were — their transcript, their queue position, their holder.
//!
//! Everybody is offline at that moment. Customers resume with their token and watermark
//! (the signing key is kept in the store); bots and agents that reconnect get their
//! conversations back through the ordinary `member_connected` path; holders that do not
//! come back are handled by the sweeper after their grace period, and waiting
//! conversations are assigned as members return.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use super::persist::Saved;
use super::{Author, ConvInner, Conversation, Entry, Holder, Hub};
use crate::protocol::{Party, Role};
use crate::routing::ConvId;
use crate::store::RecoveredConversation;

impl Hub {
    /// Restores what the store held; returns how many conversations came back.
    pub fn recover(&self, recovered: Vec<RecoveredConversation>) -> usize {
        let now = self.clock.now_ms();
        let mut engine = self.engine.lock();
        let (mut restored, mut activities) = (0, 0);
        let mut authors = Authors::default();
        for rc in recovered {
            let saved: Saved = match serde_json::from_str(&rc.state) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(conversation.id = rc.id, "cannot read saved state, skipped: {e}");
                    continue;
                }
            };
            let id: ConvId = Arc::from(rc.id.as_str());
            let holder_name = saved.routing.holder.clone();
            if let Err(e) = engine.restore(id.clone(), &saved.workstream, saved.routing) {
                tracing::warn!(conversation.id = rc.id, "cannot restore (has the configuration changed?): {e}");
                continue;
            }
            let mut transcript = Vec::with_capacity(rc.activities.len());
            let mut seen = HashMap::new();
            let mut bytes = 0;
            for (seq, frame, client_key) in rc.activities {
                if seq != transcript.len() as u64 + 1 {
                    tracing::error!(
                        conversation.id = rc.id,
                        seq,
                        "gap in the stored transcript; later activities dropped"
                    );
                    break;
                }
                let author = authors.of(&frame);
                if let Some(k) = client_key {
                    seen.insert(k, seq);
                }
                bytes += frame.len();
                transcript.push(Entry { frame: frame.into(), author });
            }
            let n = transcript.len() as u64;
            activities += n;
            let active = engine.holder(&id).is_some();
            let holder = holder_name.filter(|_| active).map(|m| Holder {
                party: self.member_party(&m),
                member: Arc::from(m.as_str()),
                outbox: None,
                gone_since_ms: Some(now),
                work: None,
            });
            let span = Conversation::span_for(&id, &saved.workstream);
            let conv = Arc::new(Conversation {
                id: id.clone(),
                workstream: saved.workstream,
                customer: Party { id: saved.customer.id, name: saved.customer.name, role: Role::User },
                inner: super::locks::ConvLock::new(ConvInner {
                    transcript,
                    committed: n,
                    customer: None,
                    customer_sent: n,
                    holder,
                    holder_sent: n,
                    seen,
                    bytes,
                    survey_requested: saved.survey_requested,
                    survey: saved.survey,
                    token_gen: saved.token_gen,
                    // The answer to the last resume may have died with the process (or
                    // the cluster leader): the token before still resumes for a while.
                    prev_token_until_ms: now + super::customer::PREVIOUS_TOKEN_GRACE_MS,
                    summary: saved.summary,
                    last_activity_ms: now,
                    customer_left_ms: Some(now),
                    ..ConvInner::default()
                }),
                // The call's connection died with the process; a recovered voice
                // conversation waits for its customer like a chat until it is closed.
                call: None,
                span,
            });
            self.convs.insert(id, conv);
            restored += 1;
        }
        // The timed rules (a holder's grace period, the customer's resume window, idle
        // close) count from when the gateway can be reached again, not from when recovery
        // began: restoring 100,000 conversations takes seconds, more than a bot's default
        // grace period, which would otherwise have run out before the bot could return.
        // (At startup every conversation in memory is a recovered one.)
        let ready = self.clock.now_ms();
        for c in self.convs.iter() {
            let mut inner = c.inner.lock();
            if let Some(h) = inner.holder.as_mut() {
                h.gone_since_ms = Some(ready);
            }
            inner.customer_left_ms = Some(ready);
            inner.last_activity_ms = ready;
        }
        let fx = engine.restored();
        self.apply(&mut engine, fx);
        if restored > 0 {
            tracing::info!("recovered {restored} open conversation(s), {activities} activities");
        }
        restored
    }
}

/// Who wrote each stored activity, read from its frame's `from`, with one `Arc` per member
/// for the whole recovery (as the live path shares the member's), not one per activity.
#[derive(Default)]
struct Authors {
    members: HashMap<String, Arc<str>>,
}

/// The one field of a stored frame recovery needs. Everything else is skipped unparsed:
/// building a JSON tree of every activity (a map and strings for each of its fields) was
/// most of a restart's CPU time.
#[derive(Deserialize)]
struct Stored<'a> {
    #[serde(default, borrow)]
    from: Option<From<'a>>,
}

#[derive(Deserialize)]
struct From<'a> {
    #[serde(default, borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
}

impl Authors {
    fn of(&mut self, frame: &str) -> Author {
        let from = serde_json::from_str::<Stored<'_>>(frame).ok().and_then(|s| s.from);
        let Some(from) = from else { return Author::System };
        match from.role.as_deref() {
            Some("user") => Author::Customer,
            Some("system") | None => Author::System,
            Some(_) => {
                let id = from.id.as_deref().unwrap_or("");
                let member = match self.members.get(id) {
                    Some(m) => m.clone(),
                    None => self.members.entry(id.to_owned()).or_insert_with(|| Arc::from(id)).clone(),
                };
                Author::Member(member)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authors_are_read_from_the_frame_and_shared() {
        let mut a = Authors::default();
        let bot = r#"{"type":"message","id":"x","seq":2,"from":{"id":"contoso-bot","name":"Bot","role":"bot"},"text":"hi \"there\""}"#;
        let (Author::Member(one), Author::Member(two)) = (a.of(bot), a.of(bot)) else { panic!("a member") };
        assert_eq!(&*one, "contoso-bot");
        assert!(Arc::ptr_eq(&one, &two), "one Arc per member");
        assert_eq!(a.of(r#"{"from":{"id":"u_1","role":"user"},"value":{"from":{"role":"bot"}}}"#), Author::Customer);
        assert_eq!(a.of(r#"{"from":{"id":"switchboard","role":"system"}}"#), Author::System);
        assert_eq!(a.of(r#"{"type":"event"}"#), Author::System);
        assert_eq!(a.of("not json"), Author::System);
    }
}
