//! The error edge: the one place that turns what went wrong into what the client sees —
//! an `error` event (the connection stays), an HTTP status before an upgrade, or a close
//! code (SPEC §4's table). Everything behind it speaks in [`ProtocolError`]s (with their
//! code, whose fault and whether a retry helps) and [`Reason`]s, never in wire numbers.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::hub::outbox::{ErrorOut, Reason};
use crate::protocol::{self, ErrorCode, Fault, Frame, ProtocolError};

/// The `error` event for a failure, naming the conversation and the client activity it
/// answers (so the client knows which frame to send again).
pub fn error_frame(err: &ProtocolError, conversation: Option<&str>, client_activity_id: Option<&str>) -> Frame {
    match err.fault {
        Fault::Client => tracing::debug!(code = ?err.code, "refused: {}", err.message),
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
    error_frame(&e.error, e.conversation.as_deref(), e.client_activity_id.as_deref())
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
pub fn refuse(e: &ProtocolError) -> Response {
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
        Fault::Client => tracing::debug!(code = ?e.code, "bot connector call refused: {}", e.message),
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
