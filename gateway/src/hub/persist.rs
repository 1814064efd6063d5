//! A conversation's saved state: the engine's snapshot and the hub's part, written to the
//! store after every routing change and read back at recovery.

use serde_json::Value;

use super::*;
use crate::routing::Engine;
use crate::store::Record;

/// A conversation's saved state: the engine's part and the hub's.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct Saved {
    pub(super) workstream: String,
    pub(super) customer: SavedParty,
    pub(super) routing: crate::routing::ConvSnapshot,
    pub(super) summary: Option<String>,
    pub(super) survey_requested: bool,
    pub(super) survey: Option<Value>,
    /// The customer token generation that resumes it (0: written before generations).
    #[serde(default)]
    pub(super) token_gen: u64,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct SavedParty {
    pub(super) id: String,
    pub(super) name: String,
}

/// [`Saved`] as it is written: borrowed from the engine and the conversation, so a save
/// (one per routing change, with the engine locked) serialises without copying first.
#[derive(serde::Serialize)]
struct SavedRef<'a> {
    workstream: &'a str,
    customer: SavedPartyRef<'a>,
    routing: crate::routing::SnapshotRef<'a>,
    summary: &'a Option<String>,
    survey_requested: bool,
    survey: &'a Option<Value>,
    token_gen: u64,
}

#[derive(serde::Serialize)]
struct SavedPartyRef<'a> {
    id: &'a str,
    name: &'a str,
}

impl Hub {
    /// Saves a conversation's current state (called with the engine locked).
    pub(super) fn persist(&self, engine: &Engine, conv: &Conversation) {
        let Some(routing) = engine.snapshot(&conv.id) else { return };
        let open = routing.status != "closed";
        let inner = conv.inner.lock();
        let saved = SavedRef {
            workstream: &conv.workstream,
            customer: SavedPartyRef { id: &conv.customer.id, name: &conv.customer.name },
            routing,
            summary: &inner.summary,
            survey_requested: inner.survey_requested,
            survey: &inner.survey,
            token_gen: inner.token_gen,
        };
        let state = serde_json::to_string(&saved).unwrap_or_default();
        drop(inner);
        self.store.record(Record::Conversation { id: conv.id.clone(), open, state }, None);
    }
}
