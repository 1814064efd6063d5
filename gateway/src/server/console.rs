//! The web console: the start page, the agent workspace, the supervisor page, a customer
//! chat widget and a phone, as static files compiled into the binary (`gateway/console/`): no build
//! step to run it and nothing fetched from elsewhere. The pages speak only the public
//! protocol — `/v1/token`, `/v1/agent`, `/v1/chat` and the admin API — from the browser.
//!
//! Every answer carries a Content-Security-Policy that allows this origin only (scripts
//! from files, no inline code), so text a customer writes can never run as a script.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::hub::Hub;

/// `(path, content type, body)` of every file the console serves.
const FILES: &[(&str, &str, &str)] = &[
    ("/", HTML, include_str!("../../console/index.html")),
    ("/agent", HTML, include_str!("../../console/agent.html")),
    ("/supervisor", HTML, include_str!("../../console/supervisor.html")),
    ("/widget", HTML, include_str!("../../console/widget.html")),
    ("/phone", HTML, include_str!("../../console/phone.html")),
    ("/console/console.css", "text/css; charset=utf-8", include_str!("../../console/console.css")),
    ("/console/common.js", JS, include_str!("../../console/common.js")),
    ("/console/agent.js", JS, include_str!("../../console/agent.js")),
    ("/console/audio.js", JS, include_str!("../../console/audio.js")),
    ("/console/phone.js", JS, include_str!("../../console/phone.js")),
    ("/console/supervisor.js", JS, include_str!("../../console/supervisor.js")),
    ("/console/widget.js", JS, include_str!("../../console/widget.js")),
];

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// Same origin only; the WebSockets of this host; audio from the page itself.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self' ws: wss:; media-src 'self' blob:; frame-ancestors 'self'; base-uri 'none'; \
                   form-action 'self'";

/// The console's routes.
pub fn routes() -> Router<Arc<Hub>> {
    let mut r = Router::new();
    for &(path, kind, body) in FILES {
        r = r.route(path, get(move || async move { file(kind, body) }));
    }
    r
}

fn file(kind: &'static str, body: &'static str) -> Response {
    let mut res = (StatusCode::OK, body).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Small files, served from memory: always the ones of the running binary.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every script and stylesheet a page names is one the console serves, so a page never
    /// asks the network for something that is not compiled in.
    #[test]
    fn pages_name_only_files_the_console_serves() {
        for &(path, kind, body) in FILES {
            if kind != HTML {
                continue;
            }
            for attr in ["src=\"", "href=\""] {
                for part in body.split(attr).skip(1) {
                    let target = &part[..part.find('"').unwrap_or(0)];
                    if target.starts_with('/') && !target.starts_with("/v1/") {
                        assert!(FILES.iter().any(|(p, _, _)| *p == target), "{path} names {target}");
                    }
                    assert!(!target.starts_with("http"), "{path} names an outside address {target}");
                }
            }
        }
    }
}
