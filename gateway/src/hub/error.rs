//! What the hub refuses, in its own terms: what went wrong, whose fault it is and whether
//! trying again helps. The hub never names a wire code or an HTTP status; the error edge,
//! `server::respond`, maps each of these to the `error` event's code (SPEC §4) or a status,
//! in one place.

use std::borrow::Cow;
use std::fmt;

use super::call::CallError;
use crate::protocol::{Fault, ProtocolError};
use crate::routing::EngineError;

/// What an unknown name was meant to name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Thing {
    Workstream,
    Conversation,
    Queue,
    /// A call's media stream number.
    Stream,
    Bot,
    Agent,
}

impl fmt::Display for Thing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Thing::Workstream => "workstream",
            Thing::Conversation => "conversation",
            Thing::Queue => "queue",
            Thing::Stream => "call stream",
            Thing::Bot => "bot",
            Thing::Agent => "agent",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// What was sent is malformed or incomplete for what it asks (the sender's fault).
    #[error("{0}")]
    Invalid(Cow<'static, str>),
    /// It names something that does not exist.
    #[error("unknown {0} {1:?}")]
    Unknown(Thing, String),
    /// A bot or agent acted on a conversation or call it does not hold.
    #[error("you do not hold {0}")]
    NotHolder(String),
    /// The conversation has ended: nothing more can happen in it.
    #[error("the conversation has ended")]
    Ended,
    /// The credentials do not prove who the sender says it is (wrong, expired, replaced,
    /// or for something else).
    #[error("{0}")]
    Credentials(Cow<'static, str>),
    /// The sender is known but may not do this (a token of the wrong kind, a bot an
    /// administrator disconnected).
    #[error("{0}")]
    NotAllowed(Cow<'static, str>),
    /// The sender already has as many of something as it may hold at once (open chats from
    /// one address); it may have another once one ends.
    #[error("{0}")]
    TooMany(Cow<'static, str>),
    /// The conversation's transcript reached `max_conversation_bytes`.
    #[error("this conversation has reached its limit of {0} bytes; it can only be ended")]
    ConversationFull(usize),
    /// The store could not keep it; sending it again helps once the store recovers.
    #[error("not stored ({0}); send it again")]
    Store(String),
    /// A clash of ours that a retry resolves (a fresh id collided).
    #[error("{0}")]
    Retry(Cow<'static, str>),
    /// A configuration refused, one line per problem (as `check-config` prints them).
    #[error("{}", .0.join("\n"))]
    Config(Vec<String>),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Call(#[from] CallError),
    /// Refused by the wire format itself (parsing a frame), already classified there.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

impl HubError {
    pub fn invalid(m: impl Into<Cow<'static, str>>) -> HubError {
        HubError::Invalid(m.into())
    }

    pub fn credentials(m: impl Into<Cow<'static, str>>) -> HubError {
        HubError::Credentials(m.into())
    }

    pub fn not_allowed(m: impl Into<Cow<'static, str>>) -> HubError {
        HubError::NotAllowed(m.into())
    }

    /// Whose fault it is: a member's (acting on what it does not hold), the store's, ours
    /// (a retry resolves it) or, for everything else, the sender's.
    pub fn fault(&self) -> Fault {
        match self {
            HubError::NotHolder(_) | HubError::Call(CallError::NotHolder) => Fault::Member,
            HubError::Store(_) => Fault::Store,
            HubError::Retry(_) => Fault::Internal,
            HubError::Protocol(p) => p.fault,
            _ => Fault::Client,
        }
    }

    /// Whether the same request may succeed later without the sender changing it.
    pub fn retry_helps(&self) -> bool {
        match self {
            HubError::Store(_) | HubError::Retry(_) | HubError::TooMany(_) => true,
            HubError::Protocol(p) => p.code.retry_helps(),
            _ => false,
        }
    }
}
