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
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Reconnection attempts before a client gives up.
pub const RECONNECT_ATTEMPTS: u32 = 6;

/// `host:port` from `http://host:port`, `ws://host:port/…` or `host:port`.
pub fn authority(url: &str) -> Result<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let auth = rest.split('/').next().unwrap_or("");
    if auth.is_empty() {
        bail!("no host in {url:?}");
    }
    Ok(if auth.contains(':') { auth.to_owned() } else { format!("{auth}:80") })
}

/// Opens a WebSocket to `path` on the gateway at `url`.
pub async fn connect(url: &str, path: &str, bearer: Option<&str>) -> Result<Ws> {
    let mut req = format!("ws://{}{path}", authority(url)?).into_client_request()?;
    if let Some(t) = bearer {
        req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {t}"))?);
    }
    let (ws, _) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(req))
        .await
        .context("timed out connecting")??;
    Ok(ws)
}

/// OAuth2 client credentials against `/v1/token`.
pub async fn token(url: &str, client_id: &str, secret: &str) -> Result<String> {
    let addr = authority(url)?;
    let body = serde_urlencoded::to_string([
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", secret),
    ])?;
    let mut s = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&addr))
        .await
        .context("timed out connecting")??;
    let req = format!(
        "POST /v1/token HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await.context("timed out")??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").context("malformed HTTP response")?;
    let status = head.split(' ').nth(1).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_default();
    if status != "200" {
        bail!(
            "sign-in refused ({status}): {}",
            v["error_description"].as_str().or(v["error"].as_str()).unwrap_or("no reason given")
        );
    }
    Ok(v["access_token"].as_str().context("no access_token in the answer")?.to_owned())
}

/// What ended a connection, for a human.
pub fn describe_end(m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> String {
    match m {
        Some(Ok(Message::Close(Some(f)))) => match u16::from(f.code) {
            1001 => "the gateway is shutting down".to_owned(),
            1008 if f.reason.contains("slow") => "we fell behind (slow consumer)".to_owned(),
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
