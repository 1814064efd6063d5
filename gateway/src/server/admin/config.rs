//! The running configuration: shown with its secrets redacted, replaced by a whole new
//! TOML (checked exactly like `check-config`, then applied by [`Hub::reconfigure`]), and
//! re-read from the `--config` file on SIGHUP the same way.

use std::path::Path;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::hub::{Hub, HubError};
use crate::server::respond;

/// Keys whose values are secrets: shown as `"(redacted)"`.
const SECRET_KEYS: [&str; 2] = ["secret", "admin_token"];

fn redact(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, v) in o.iter_mut() {
                if SECRET_KEYS.contains(&k.as_str()) {
                    *v = json!("(redacted)");
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

/// The running configuration as JSON (the TOML's tables), secrets redacted.
pub fn redacted(hub: &Hub) -> Value {
    let cfg = hub.cfg();
    let mut v = cfg.source.parse::<toml::Table>().ok().and_then(|t| serde_json::to_value(t).ok()).unwrap_or(json!({}));
    redact(&mut v);
    v
}

pub async fn get_config(State(hub): State<Arc<Hub>>) -> Response {
    Json(json!({"config": redacted(&hub)})).into_response()
}

/// What applying a configuration did: the conversations it moved, one line each, and
/// its warnings (as `check-config` prints them).
pub struct Applied {
    pub moved: Vec<String>,
    pub warnings: Vec<String>,
}

/// Checks `text` like `check-config` and applies it. Its warnings are logged once it is
/// applied (a refused configuration changes nothing, so they would not apply).
pub fn apply_text(hub: &Hub, text: &str) -> Result<Applied, HubError> {
    let checked = crate::load::config_text(text).map_err(|e| HubError::Config(e.0))?;
    let warnings = checked.warnings.clone();
    let moved = hub.reconfigure(checked)?;
    for w in &warnings {
        tracing::warn!("config: {w}");
    }
    Ok(Applied { moved, warnings })
}

pub async fn put_config(State(hub): State<Arc<Hub>>, body: super::Body) -> Response {
    let body = match super::body_bytes(body) {
        Ok(b) => b,
        Err(e) => return respond::refuse(e),
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return respond::refuse(HubError::Config(vec!["the configuration is not UTF-8 text".to_owned()]));
    };
    match apply_text(&hub, text) {
        Ok(a) => Json(json!({"applied": true, "moved": a.moved, "warnings": a.warnings})).into_response(),
        Err(e) => {
            tracing::warn!("config: refused: {}", e.to_string().replace('\n', "; "));
            respond::refuse(e)
        }
    }
}

/// SIGHUP: re-reads the `--config` file and applies it like `PUT config` (problems are
/// logged, one line each, and nothing changes).
pub fn reload_file(hub: &Hub, path: &Path) {
    tracing::info!("config: SIGHUP: re-reading {}", path.display());
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("config: cannot read {}: {e}; nothing changed", path.display());
            return;
        }
    };
    if let Err(e) = apply_text(hub, &text) {
        for line in e.to_string().lines() {
            tracing::error!("config: {line}");
        }
        tracing::error!("config: {} refused; nothing changed", path.display());
    }
}
