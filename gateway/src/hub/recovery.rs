//! Restart recovery: the conversations a store held when the gateway stopped (or died) are
//! put back as they were — their transcript, their queue position, their holder.
//!
//! Everybody is offline at that moment. Customers resume with their token and watermark
//! (the signing key is kept in the store); bots and agents that reconnect get their
//! conversations back through the ordinary `member_connected` path; holders that do not
//! come back are handled by the sweeper after their grace period, and waiting
//! conversations are assigned as members return.

use std::collections::HashMap;
use std::sync::Arc;

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
        let mut restored = 0;
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
            for (seq, frame, client_key) in rc.activities {
                if seq != transcript.len() as u64 + 1 {
                    tracing::error!(
                        conversation.id = rc.id,
                        seq,
                        "gap in the stored transcript; later activities dropped"
                    );
                    break;
                }
                let v: serde_json::Value = serde_json::from_str(&frame).unwrap_or_default();
                let author = match v["from"]["role"].as_str() {
                    Some("user") => Author::Customer,
                    Some("system") | None => Author::System,
                    Some(_) => Author::Member(Arc::from(v["from"]["id"].as_str().unwrap_or(""))),
                };
                if let Some(k) = client_key {
                    seen.insert(k, seq);
                }
                transcript.push(Entry { frame: frame.into(), author });
            }
            let n = transcript.len() as u64;
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
                    survey_requested: saved.survey_requested,
                    survey: saved.survey,
                    token_gen: saved.token_gen,
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
        let fx = engine.restored();
        self.apply(&mut engine, fx);
        if restored > 0 {
            tracing::info!("recovered {restored} open conversation(s)");
        }
        restored
    }
}
