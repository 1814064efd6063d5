//! Terminal clients built into the binary, so the README walkthrough needs nothing but
//! Switchboard: `switchboard chat` (a customer) and `switchboard agent` (a human agent).
//!
//! They speak the same public protocol as any other client (a `/v1/token` request and a
//! WebSocket), read commands from stdin line by line and print what happens in readable
//! lines (`--json` prints the raw frames instead). Both survive a dropped connection:
//! the customer resumes from its watermark, the agent signs in again and gets its
//! conversations back.

pub mod agent;
pub mod chat;

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Reconnection attempts before a client gives up.
pub const RECONNECT_ATTEMPTS: u32 = 6;

/// How long connecting, and then reading an answer, may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where a gateway is, from `--url`: `http://host[:port][/prefix]`, `https://…` (`ws://` and
/// `wss://` are taken as their HTTP twins) or a bare `host:port` (plain HTTP). Ports default
/// by scheme (80, 443); a path prefix is kept in front of the `/v1/…` paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    pub tls: bool,
    /// `host` or `host:port`, as given.
    pub authority: String,
    /// Empty, or `/prefix` without a trailing slash.
    pub prefix: String,
}

impl Gateway {
    pub fn parse(url: &str) -> Result<Gateway> {
        let (tls, rest) = match url.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "http" | "ws" => (false, rest),
                "https" | "wss" => (true, rest),
                _ => bail!("unsupported scheme {scheme:?} in {url:?} (use http:// or https://)"),
            },
            None => (false, url),
        };
        let rest = rest.split(['?', '#']).next().unwrap_or("");
        let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        if authority.is_empty() {
            bail!("no host in {url:?}");
        }
        let prefix = path.trim_end_matches('/').to_owned();
        Ok(Gateway { tls, authority: authority.to_owned(), prefix })
    }

    /// The HTTP(S) URL of `path` (which starts with `/`).
    pub fn http(&self, path: &str) -> String {
        format!("{}://{}{}{path}", if self.tls { "https" } else { "http" }, self.authority, self.prefix)
    }

    /// The WebSocket URL of `path` (which starts with `/`).
    pub fn ws(&self, path: &str) -> String {
        format!("{}://{}{}{path}", if self.tls { "wss" } else { "ws" }, self.authority, self.prefix)
    }
}

/// Makes ring the process's rustls crypto provider (the only one built in), once, before any
/// TLS configuration is made.
fn tls_init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // An error only means a provider is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Opens a WebSocket to `path` on the gateway at `url`.
pub async fn connect(url: &str, path: &str, bearer: Option<&str>) -> Result<Ws> {
    let gw = Gateway::parse(url)?;
    tls_init();
    let mut req = gw.ws(path).into_client_request()?;
    if let Some(t) = bearer {
        req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {t}"))?);
    }
    let (ws, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(req))
        .await
        .context("timed out connecting")??;
    Ok(ws)
}

/// OAuth2 client credentials against `/v1/token`.
pub async fn token(url: &str, client_id: &str, secret: &str) -> Result<String> {
    let gw = Gateway::parse(url)?;
    let body = serde_urlencoded::to_string([
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", secret),
    ])?;
    let req = Request::post(gw.http("/v1/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body)))?;
    let (status, body) = if gw.tls {
        tls_init();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .context("cannot load the trusted CA certificates")?
            .https_only()
            .enable_http1()
            .build();
        post(https, req).await?
    } else {
        post(HttpConnector::new(), req).await?
    };
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if status != hyper::StatusCode::OK {
        bail!(
            "sign-in refused ({}): {}",
            status.as_u16(),
            v["error_description"].as_str().or(v["error"].as_str()).unwrap_or("no reason given")
        );
    }
    Ok(v["access_token"].as_str().context("no access_token in the answer")?.to_owned())
}

/// Sends one request on a fresh client and reads the whole answer.
async fn post<C>(connector: C, req: Request<Full<Bytes>>) -> Result<(hyper::StatusCode, Bytes)>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let client: Client<C, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let res = tokio::time::timeout(TIMEOUT, client.request(req)).await.context("timed out connecting")??;
    let status = res.status();
    let body = tokio::time::timeout(TIMEOUT, res.into_body().collect()).await.context("timed out")??;
    Ok((status, body.to_bytes()))
}

/// What ended a connection, for a human.
pub fn describe_end(m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> String {
    match m {
        Some(Ok(Message::Close(Some(f)))) => match u16::from(f.code) {
            1001 => "the gateway is shutting down".to_owned(),
            4008 => "we fell behind (slow consumer)".to_owned(),
            code => format!("closed by the gateway ({code} {})", f.reason),
        },
        Some(Ok(Message::Close(None))) => "closed by the gateway".to_owned(),
        Some(Err(e)) => format!("{e}"),
        _ => "the connection ended".to_owned(),
    }
}

/// The next text frame, or what ended the connection.
pub async fn next_text(ws: &mut Ws) -> Result<Utf8Bytes, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t),
            Some(Ok(Message::Close(f))) => return Err(describe_end(Some(Ok(Message::Close(f))))),
            Some(Ok(_)) => continue,
            other => return Err(describe_end(other)),
        }
    }
}

/// After a failed reconnect attempt: waits before the next one, or returns false once
/// [`RECONNECT_ATTEMPTS`] have failed (the client then gives up).
pub async fn retry(failures: &mut u32, e: &anyhow::Error) -> bool {
    *failures += 1;
    if *failures > RECONNECT_ATTEMPTS {
        println!("[could not reconnect ({e:#}); giving up]");
        return false;
    }
    backoff(*failures).await;
    true
}

/// Waits before reconnect attempt `n` (1-based): 0.5 s, 1 s, 2 s, … up to 5 s.
pub async fn backoff(n: u32) {
    let ms = (500u64 << n.saturating_sub(1).min(4)).min(5000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

#[cfg(test)]
mod tests {
    use super::Gateway;

    #[test]
    fn urls_map_to_http_and_websocket_urls() {
        let g = Gateway::parse("https://example.test/switchboard/").unwrap();
        assert_eq!(g.http("/v1/token"), "https://example.test/switchboard/v1/token");
        assert_eq!(g.ws("/v1/chat"), "wss://example.test/switchboard/v1/chat");
        let g = Gateway::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(g.http("/v1/token"), "http://127.0.0.1:8080/v1/token");
        assert_eq!(g.ws("/v1/agent"), "ws://127.0.0.1:8080/v1/agent");
        let g = Gateway::parse("localhost:9000").unwrap();
        assert_eq!(g.ws("/v1/chat"), "ws://localhost:9000/v1/chat");
        assert_eq!(Gateway::parse("wss://h:8443").unwrap().http("/x"), "https://h:8443/x");
        assert!(Gateway::parse("https://").is_err());
        assert!(Gateway::parse("ftp://h").is_err());
    }
}
