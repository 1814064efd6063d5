//! The error edge: the one place that turns what went wrong into what the client sees —
//! an `error` event (the connection stays), an HTTP status before an upgrade, or a close
//! code (SPEC §4's table). The hub speaks in [`HubError`]s (what went wrong, whose fault,
//! whether a retry helps) and [`Reason`]s; this module alone decides their wire codes.
//! The server's own refusals (a frame it cannot parse, a rate limit) are
//! [`ProtocolError`]s, which carry their code already.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::hub::outbox::{ErrorOut, Reason};
use crate::hub::{HubError, call::CallError};
use crate::protocol::{self, ErrorCode, Fault, Frame, ProtocolError};
use crate::routing::EngineError;

/// The SPEC §4 error code for what the hub refused.
pub fn code(e: &HubError) -> ErrorCode {
    match e {
        HubError::Invalid(_) | HubError::Ended | HubError::Config(_) => ErrorCode::BadRequest,
        HubError::Unknown(..) => ErrorCode::NotFound,
        HubError::NotHolder(_) | HubError::NotAllowed(_) => ErrorCode::Forbidden,
        HubError::Credentials(_) => ErrorCode::Unauthorized,
        HubError::ConversationFull(_) => ErrorCode::TooLarge,
        HubError::TooMany(_) => ErrorCode::RateLimited,
        HubError::Store(_) | HubError::Retry(_) => ErrorCode::Unavailable,
        HubError::Engine(e) => match e {
            EngineError::UnknownWorkstream(_)
            | EngineError::UnknownQueue(_)
            | EngineError::UnknownMember(_)
            | EngineError::UnknownConversation(_) => ErrorCode::NotFound,
            EngineError::Duplicate(_) | EngineError::NotActive(_) | EngineError::NoMemberCanTake(_) => {
                ErrorCode::BadRequest
            }
        },
        HubError::Call(CallError::NotHolder) => ErrorCode::Forbidden,
        HubError::Call(CallError::BadAudio(_) | CallError::PlayoutFull) => ErrorCode::BadRequest,
        HubError::Protocol(p) => p.code,
    }
}

impl From<HubError> for ProtocolError {
    fn from(e: HubError) -> ProtocolError {
        match e {
            HubError::Protocol(p) => p,
            e => ProtocolError { code: code(&e), message: e.to_string(), fault: e.fault() },
        }
    }
}

/// The `error` event for a failure, naming the conversation and the client activity it
/// answers (so the client knows which frame to send again).
pub fn error_frame(err: &ProtocolError, conversation: Option<&str>, client_activity_id: Option<&str>) -> Frame {
    match err.fault {
        Fault::Client | Fault::Member => tracing::debug!(code = ?err.code, "refused: {}", err.message),
        Fault::Store | Fault::Internal => tracing::warn!(code = ?err.code, fault = ?err.fault, "{}", err.message),
    }
    let mut value = json!({"code": err.code, "message": err.message});
    if let Some(cid) = client_activity_id {
        value["clientActivityId"] = json!(cid);
    }
    protocol::event("error", value, conversation)
}

/// The `error` event for an error a connection's queue carried.
pub fn error_out(e: &ErrorOut) -> Frame {
    error_frame(&ProtocolError::from(e.error.clone()), e.conversation.as_deref(), e.client_activity_id.as_deref())
}

/// The HTTP status for a refusal before an upgrade.
pub fn status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::BadRequest | ErrorCode::TooLarge => StatusCode::BAD_REQUEST,
    }
}

/// An HTTP refusal before the upgrade, with a JSON body naming the problem.
pub fn refuse(e: impl Into<ProtocolError>) -> Response {
    let e: ProtocolError = e.into();
    let status = status(e.code);
    let mut res = (status, axum::Json(json!({"error": e.code, "message": e.message}))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    res
}

/// A refusal on the Bot Connector REST API: its status, and the Bot Framework
/// `ErrorResponse` body (`{"error":{"code","message"}}`) botbuilder's client reads.
pub fn connector_error(e: &ProtocolError) -> Response {
    match e.fault {
        Fault::Client | Fault::Member => tracing::debug!(code = ?e.code, "bot connector call refused: {}", e.message),
        Fault::Store | Fault::Internal => tracing::warn!(code = ?e.code, "bot connector call failed: {}", e.message),
    }
    let status = match e.code {
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        code => status(code),
    };
    let mut res = (status, axum::Json(json!({"error": {"code": e.code, "message": e.message}}))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    res
}

/// A Direct Line refusal: Direct Line 3.0's status codes and its error body
/// `{"error":{"code":…,"message":…}}`, the code one of the service's names.
pub fn directline(e: &ProtocolError) -> Response {
    let (status, code) = match e.code {
        ErrorCode::BadRequest => (StatusCode::BAD_REQUEST, "BadArgument"),
        ErrorCode::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "MessageSizeTooBig"),
        ErrorCode::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized"),
        ErrorCode::Forbidden => (StatusCode::FORBIDDEN, "Forbidden"),
        ErrorCode::NotFound => (StatusCode::NOT_FOUND, "NotFound"),
        ErrorCode::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests"),
        ErrorCode::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "ServiceError"),
    };
    match e.fault {
        Fault::Client | Fault::Member => tracing::debug!(code, "direct line refused: {}", e.message),
        Fault::Store | Fault::Internal => tracing::warn!(code, fault = ?e.fault, "direct line: {}", e.message),
    }
    directline_body(status, code, &e.message)
}

/// A Direct Line token that was valid and has expired: 403 `TokenExpired`, which
/// directlinejs reads as "get a new token".
pub fn directline_token_expired() -> Response {
    directline_body(StatusCode::FORBIDDEN, "TokenExpired", "the token has expired; refresh it or get a new one")
}

fn directline_body(status: StatusCode, code: &str, message: &str) -> Response {
    let mut res = (status, axum::Json(json!({"error": {"code": code, "message": message}}))).into_response();
    let h = res.headers_mut();
    if status == StatusCode::UNAUTHORIZED {
        h.insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    }
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        h.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    res
}

/// The close code for why a connection ends (SPEC §4).
pub fn close_code(reason: Reason) -> u16 {
    match reason {
        Reason::Ended => 1000,
        Reason::ShuttingDown | Reason::Idle => 1001,
        Reason::ProtocolViolation => 1002,
        Reason::InvalidText => 1007,
        Reason::Policy => 1008,
        Reason::TooLarge => 1009,
        Reason::Internal => 1011,
        Reason::ResumedElsewhere => 4001,
        Reason::Replaced => 4002,
        Reason::SlowConsumer => 4008,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Thing;

    /// Each thing the hub refuses gets the SPEC code a client would expect, with whose
    /// fault it is and whether sending it again helps.
    #[test]
    fn hub_errors_map_to_codes_faults_and_retries() {
        let cases = [
            (HubError::invalid("no text"), ErrorCode::BadRequest, Fault::Client, false),
            (HubError::Ended, ErrorCode::BadRequest, Fault::Client, false),
            (HubError::Config(vec!["a".into(), "b".into()]), ErrorCode::BadRequest, Fault::Client, false),
            (HubError::Unknown(Thing::Queue, "Q".into()), ErrorCode::NotFound, Fault::Client, false),
            (HubError::NotHolder("conversation \"c_1\"".into()), ErrorCode::Forbidden, Fault::Member, false),
            (HubError::Call(CallError::NotHolder), ErrorCode::Forbidden, Fault::Member, false),
            (HubError::Call(CallError::PlayoutFull), ErrorCode::BadRequest, Fault::Client, false),
            (HubError::credentials("expired"), ErrorCode::Unauthorized, Fault::Client, false),
            (HubError::not_allowed("disconnected"), ErrorCode::Forbidden, Fault::Client, false),
            (HubError::ConversationFull(10), ErrorCode::TooLarge, Fault::Client, false),
            (HubError::TooMany("open chats".into()), ErrorCode::RateLimited, Fault::Client, true),
            (HubError::Store("disk full".into()), ErrorCode::Unavailable, Fault::Store, true),
            (HubError::Retry("collision".into()), ErrorCode::Unavailable, Fault::Internal, true),
            (HubError::Engine(EngineError::UnknownMember("x".into())), ErrorCode::NotFound, Fault::Client, false),
            (HubError::Engine(EngineError::NotActive("c".into())), ErrorCode::BadRequest, Fault::Client, false),
            (
                HubError::Protocol(ProtocolError::new(ErrorCode::RateLimited, "slow down")),
                ErrorCode::RateLimited,
                Fault::Client,
                true,
            ),
        ];
        for (e, want, fault, retry) in cases {
            assert_eq!((code(&e), e.fault(), e.retry_helps()), (want, fault, retry), "{e:?}");
            let message = match &e {
                HubError::Protocol(p) => p.message.clone(),
                e => e.to_string(),
            };
            let p = ProtocolError::from(e);
            assert_eq!((p.code, p.fault, p.message), (want, fault, message));
        }
        assert_eq!(HubError::Unknown(Thing::Conversation, "c_9".into()).to_string(), "unknown conversation \"c_9\"");
    }

    /// Every reason has its own code in the SPEC's table, but shutting down and idling
    /// (both: reconnect and resume).
    #[test]
    fn reasons_map_to_the_spec_table() {
        let all = [
            (Reason::Ended, 1000),
            (Reason::ShuttingDown, 1001),
            (Reason::Idle, 1001),
            (Reason::ProtocolViolation, 1002),
            (Reason::InvalidText, 1007),
            (Reason::Policy, 1008),
            (Reason::TooLarge, 1009),
            (Reason::Internal, 1011),
            (Reason::ResumedElsewhere, 4001),
            (Reason::Replaced, 4002),
            (Reason::SlowConsumer, 4008),
        ];
        for (r, code) in all {
            assert_eq!(close_code(r), code, "{r:?}");
        }
    }
}
