//! Attachments: `POST conversations/{id}/upload` (multipart: an optional `activity` part,
//! then the files), and the files served back at `…/attachments/{seq}/{n}`.
//!
//! A file is kept with its activity, in the transcript, as a `data:` URL: it is as durable
//! as the activity (the store has it), the bot and agents get it inline, and nothing lives
//! beside the transcript to clean up. The upload is bounded by a quarter of
//! `max_conversation_bytes` (base64 grows it by a third), and counts toward the
//! conversation's size like any activity. The download URL needs no credential (an `<img>`
//! cannot send one): the conversation id, 128 random bits, is what guards it; files are
//! served sandboxed, and only images inline, so an upload cannot script this origin.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::{Answer, Refusal, auth, conversation};
use crate::protocol::{ErrorCode, Inbound, ProtocolError};

/// The upload bound for this gateway.
fn limit(hub: &crate::hub::Hub) -> usize {
    hub.server.max_conversation_bytes / 4
}

fn bad(e: impl std::fmt::Display) -> Refusal {
    ProtocolError::bad_request(format!("bad multipart body: {e}")).into()
}

/// `POST /v3/directline/conversations/{id}/upload?userId=`: an activity with files.
pub(super) async fn upload(
    State(hub): State<Arc<crate::hub::Hub>>,
    Extension(rate): Extension<Arc<super::rate::PostRate>>,
    Path(id): Path<String>,
    req: Request,
) -> Answer {
    auth::for_conversation(&hub, req.headers(), &id)?;
    let conv = conversation(&hub, &id)?;
    rate.take(&conv.id)?;
    // Taken here rather than as an extractor, so a body that is not multipart gets Direct
    // Line's error body too.
    let mut form = Multipart::from_request(req, &()).await.map_err(|e| bad(e.body_text()))?;
    let max = limit(&hub);
    let mut used = 0usize;
    let mut activity: Option<Value> = None;
    let mut files = Vec::new();
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_owned();
        let content_type = field.content_type().unwrap_or("application/octet-stream").to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let mut data = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(bad)? {
            used += chunk.len();
            if used > max {
                return Err(ProtocolError::new(ErrorCode::TooLarge, format!("the upload is over {max} bytes")).into());
            }
            data.extend_from_slice(&chunk);
        }
        if name == "activity" {
            let v: Value = serde_json::from_slice(&data).map_err(|e| bad(format!("the activity part: {e}")))?;
            if !v.is_object() {
                return Err(bad("the activity part must be a JSON object"));
            }
            activity = Some(v);
        } else {
            if !content_type.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                return Err(bad("a file's content type must be printable ASCII"));
            }
            let url = format!("data:{content_type};base64,{}", B64.encode(&data));
            files.push(json!({"contentType": content_type, "name": file_name.unwrap_or_else(|| "file".into()), "contentUrl": url}));
        }
    }
    if files.is_empty() {
        return Err(bad("no file in the upload"));
    }
    let mut a = activity.unwrap_or_else(|| json!({"type": "message"}));
    a["attachments"] = Value::Array(files);
    if a.get("type").is_none() {
        a["type"] = json!("message");
    }
    let parsed = Inbound::parse(&a.to_string())?;
    let id = super::conversations::post_customer(&hub, &conv, &parsed).await?;
    Ok(axum::Json(json!({"id": id})).into_response())
}

/// `GET /v3/directline/conversations/{id}/attachments/{seq}/{n}`: an uploaded file.
pub(super) async fn attachment(
    State(hub): State<Arc<crate::hub::Hub>>,
    Path((id, seq, n)): Path<(String, u64, usize)>,
) -> Answer {
    auth::config(&hub)?;
    let conv = conversation(&hub, &id)?;
    let not_found = || Refusal::from(ProtocolError::not_found("no such attachment"));
    let frame = {
        let inner = conv.inner.lock();
        let i = usize::try_from(seq).ok().and_then(|s| s.checked_sub(1)).ok_or_else(not_found)?;
        inner.committed_frames().get(i).map(|e| e.frame.clone()).ok_or_else(not_found)?
    };
    let v: Value = serde_json::from_str(frame.as_str()).map_err(|_| not_found())?;
    let url = v["attachments"][n]["contentUrl"].as_str().ok_or_else(not_found)?;
    let (meta, data) = url.strip_prefix("data:").and_then(|u| u.split_once(',')).ok_or_else(not_found)?;
    let content_type = meta.strip_suffix(";base64").ok_or_else(not_found)?;
    let bytes = B64.decode(data).map_err(|_| not_found())?;
    let mut res = bytes.into_response();
    let h = res.headers_mut();
    let ct = HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let inline = content_type.starts_with("image/");
    h.insert(header::CONTENT_TYPE, ct);
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static(if inline { "inline" } else { "attachment" }));
    Ok(res)
}
