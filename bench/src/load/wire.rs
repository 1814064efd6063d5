//! The client's side of the wire: opening connections (from a chosen loopback source
//! address, with the gateway's own buffer settings), getting a token, building the frames
//! the generator sends, and reading the few fields of an activity it looks at.
//!
//! The generator parses only what it needs (`type`, `name`, `conversation.id`, `from`, and
//! `value` as raw text) and borrows from the frame, so the client costs as little CPU as it
//! can: it shares the machine with the server it measures.

use std::borrow::Cow;
use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

pub type Ws = WebSocketStream<TcpStream>;

/// The workstream of the bench configuration whose first rule sends chats to the bot.
pub const WORKSTREAM: &str = "ChatWorkStream";

/// The buffer settings of a connection, on both sides: the gateway's own (`ws_config`),
/// so the client, the gateway and the echo baseline all read and write the same way. The
/// echo's sockets are customers' (`CUSTOMER.read`); a bot's or agent's is larger.
pub fn ws_config(read_buffer: usize) -> WebSocketConfig {
    switchboard::server::ws::ws_config(switchboard::config::ServerConfig::default().max_frame_bytes, read_buffer)
}

/// The read buffer the gateway gives the endpoint at `path`, for the client's own end.
fn read_buffer_for(path: &str) -> usize {
    use switchboard::server::ws::{CUSTOMER, MEMBER};
    if path.starts_with("/v1/bot") || path.starts_with("/v1/agent") { MEMBER.read } else { CUSTOMER.read }
}

/// Where outgoing connections come from. One source address can reach one server port
/// from about 28,000 ephemeral ports, so more connections than that are spread over
/// 127.0.0.2, 127.0.0.3, … (all of 127.0.0.0/8 is loopback on Linux).
#[derive(Clone, Copy, Debug)]
pub struct Sources {
    count: u8,
}

impl Sources {
    /// Connections per source address the generator plans for (below the ephemeral range).
    pub const PER_SOURCE: usize = 25_000;

    /// Enough source addresses for `connections`; none (the kernel picks 127.0.0.1) when
    /// one address suffices.
    pub fn for_connections(connections: usize) -> Sources {
        let needed = connections.div_ceil(Self::PER_SOURCE);
        Sources { count: if needed <= 1 { 0 } else { u8::try_from(needed.min(250)).unwrap_or(250) } }
    }

    /// The source address of the `i`th connection.
    pub fn pick(self, i: usize) -> Option<Ipv4Addr> {
        (self.count > 0).then(|| Ipv4Addr::new(127, 0, 0, 2 + (i % usize::from(self.count)) as u8))
    }

    pub fn count(self) -> usize {
        usize::from(self.count.max(1))
    }
}

async fn tcp(server: SocketAddr, source: Option<Ipv4Addr>) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::from((ip, 0))).with_context(|| format!("binding a client socket to {ip}"))?;
    }
    let stream = socket.connect(server).await.with_context(|| format!("connecting to {server}"))?;
    // The client must not add Nagle delays of its own to what it measures.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens a WebSocket to `path` on the server.
pub async fn connect(server: SocketAddr, path: &str, bearer: Option<&str>, source: Option<Ipv4Addr>) -> Result<Ws> {
    let mut req = format!("ws://{server}{path}").into_client_request()?;
    if let Some(t) = bearer {
        req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {t}"))?);
    }
    let stream = tcp(server, source).await?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(ws_config(read_buffer_for(path))))
        .await
        .with_context(|| format!("WebSocket handshake with {server}{path}"))?;
    Ok(ws)
}

/// `POST /v1/token` with client credentials; the access token.
pub async fn token(server: SocketAddr, client_id: &str, secret: &str) -> Result<String> {
    let body = format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}");
    let req = format!(
        "POST /v1/token HTTP/1.1\r\nHost: {server}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let rest = http(server, &req).await.with_context(|| format!("token for {client_id}"))?;
    let json = rest.get(rest.find('{').unwrap_or(0)..=rest.rfind('}').unwrap_or(0)).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(json).context("token: response is not JSON")?;
    v["access_token"].as_str().map(str::to_owned).context("token: no access_token")
}

/// `GET /healthz`: `Ok` once the server answers 200 (a cluster node, once it reaches the
/// leader).
pub async fn healthz(server: SocketAddr) -> Result<()> {
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n");
    http(server, &req).await.map(drop)
}

/// The gateway's count of voice calls refused at their start (`GET /metrics`).
pub async fn voice_calls_refused(server: SocketAddr) -> Result<usize> {
    let text = metrics(server).await?;
    metric(&text, "switchboard_voice_calls_refused").context("/metrics has no switchboard_voice_calls_refused")
}

/// The gateway's `GET /metrics` text.
async fn metrics(server: SocketAddr) -> Result<String> {
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n");
    http(server, &req).await.context("GET /metrics")
}

/// The routing engine's lock so far (`GET /metrics`): times taken, seconds held, seconds
/// waited for.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct EngineLock {
    pub taken: f64,
    pub held_secs: f64,
    pub wait_secs: f64,
}

impl EngineLock {
    fn parse(text: &str) -> Result<EngineLock> {
        let get = |name: &str| metric_f64(text, name).with_context(|| format!("/metrics has no {name}"));
        Ok(EngineLock {
            taken: get("switchboard_engine_lock_acquisitions")?,
            held_secs: get("switchboard_engine_lock_held_seconds")?,
            wait_secs: get("switchboard_engine_lock_wait_seconds")?,
        })
    }

    /// Two spans' together.
    pub fn plus(self, other: EngineLock) -> EngineLock {
        EngineLock {
            taken: self.taken + other.taken,
            held_secs: self.held_secs + other.held_secs,
            wait_secs: self.wait_secs + other.wait_secs,
        }
    }

    /// What happened between `earlier` and this reading.
    pub fn since(self, earlier: EngineLock) -> EngineLock {
        EngineLock {
            taken: self.taken - earlier.taken,
            held_secs: self.held_secs - earlier.held_secs,
            wait_secs: self.wait_secs - earlier.wait_secs,
        }
    }
}

/// The gateway's routing-engine lock and its store so far, from one `GET /metrics`.
pub async fn engine_and_store(server: SocketAddr) -> Result<(EngineLock, StoreStalls)> {
    let text = metrics(server).await?;
    Ok((EngineLock::parse(&text)?, StoreStalls::parse(&text)?))
}

/// A store's commits and checkpoints so far (`GET /metrics`), and how many of each took
/// longer than [`StoreStalls::SLOW_MS`].
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StoreStalls {
    pub commits: f64,
    pub slow_commits: f64,
    pub checkpoints: f64,
    pub slow_checkpoints: f64,
}

impl StoreStalls {
    /// The slow threshold: the histograms' bucket bound nearest under the steady handoff's
    /// 5 ms target (0.1 ms × 2⁵), so one such wait and a commit after it pass the target.
    pub const SLOW_MS: f64 = 3.2;

    fn parse(text: &str) -> Result<StoreStalls> {
        let (commits, slow_commits) = over(text, "switchboard_store_commit_seconds", Self::SLOW_MS / 1e3)?;
        let (checkpoints, slow_checkpoints) = over(text, "switchboard_store_checkpoint_seconds", Self::SLOW_MS / 1e3)?;
        Ok(StoreStalls { commits, slow_commits, checkpoints, slow_checkpoints })
    }

    /// Each kind's name, its count over [`StoreStalls::SLOW_MS`], and its whole count.
    pub fn by_kind(&self) -> [(&'static str, f64, f64); 2] {
        [("commits", self.slow_commits, self.commits), ("checkpoints", self.slow_checkpoints, self.checkpoints)]
    }

    /// What happened between `earlier` and this reading.
    pub fn since(self, earlier: StoreStalls) -> StoreStalls {
        StoreStalls {
            commits: self.commits - earlier.commits,
            slow_commits: self.slow_commits - earlier.slow_commits,
            checkpoints: self.checkpoints - earlier.checkpoints,
            slow_checkpoints: self.slow_checkpoints - earlier.slow_checkpoints,
        }
    }
}

/// A histogram's count, and how many of its observations were over `bound` (a bucket's
/// `le`, matched within a rounding).
fn over(text: &str, name: &str, bound: f64) -> Result<(f64, f64)> {
    let count = metric_f64(text, &format!("{name}_count")).with_context(|| format!("/metrics has no {name}"))?;
    let prefix = format!("{name}_bucket{{le=\"");
    let within = text
        .lines()
        .find_map(|l| {
            let (le, value) = l.strip_prefix(&prefix)?.split_once("\"}")?;
            let le: f64 = le.parse().ok()?;
            ((le - bound).abs() < bound * 1e-6).then(|| value.trim().parse::<f64>().ok())?
        })
        .with_context(|| format!("/metrics has no {name} bucket at {bound} s"))?;
    Ok((count, count - within))
}

/// A counter's value in Prometheus text (`name` or `name_total`, without labels).
fn metric(text: &str, name: &str) -> Option<usize> {
    metric_f64(text, name).map(|v| v as usize)
}

fn metric_f64(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key == name || key.strip_prefix(name) == Some("_total")).then(|| value.trim().parse::<f64>().ok())?
    })
}

/// One HTTP/1.1 request over its own socket; the body of a 200 response. Plain HTTP: the
/// generator needs nothing more from it (the gateway answers these unchunked).
async fn http(server: SocketAddr, request: &str) -> Result<String> {
    let mut s = TcpStream::connect(server).await?;
    s.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, rest) = text.split_once("\r\n\r\n").context("no HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{}", head.lines().next().unwrap_or_default());
    }
    Ok(rest.to_owned())
}

#[derive(Debug, Deserialize)]
pub struct ConvRef<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
pub struct From<'a> {
    #[serde(borrow)]
    pub role: Cow<'a, str>,
}

/// The fields of an activity the generator reads.
#[derive(Debug, Deserialize)]
pub struct Activity<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow)]
    pub name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub conversation: Option<ConvRef<'a>>,
    #[serde(default, borrow)]
    pub from: Option<From<'a>>,
    #[serde(default, borrow)]
    pub value: Option<&'a RawValue>,
    /// The activity's place in its conversation's transcript (none outside it).
    #[serde(default)]
    pub seq: Option<u64>,
}

impl<'a> Activity<'a> {
    pub fn parse(frame: &'a str) -> Result<Activity<'a>> {
        serde_json::from_str(frame).with_context(|| format!("unreadable frame: {}", clip(frame)))
    }

    pub fn is_event(&self, name: &str) -> bool {
        self.kind == "event" && self.name.as_deref() == Some(name)
    }

    pub fn conversation_id(&self) -> Option<&str> {
        self.conversation.as_ref().map(|c| c.id.as_ref())
    }

    /// A gateway error event, as text for a report.
    pub fn error(&self) -> Option<String> {
        self.is_event("error").then(|| self.value.map_or_else(String::new, |v| v.get().to_owned()))
    }

    /// A field of `value`, for `session.started`'s `conversationId`.
    pub fn value_str(&self, key: &str) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(self.value?.get()).ok()?;
        v.get(key)?.as_str().map(str::to_owned)
    }
}

fn clip(s: &str) -> &str {
    let end = s.char_indices().nth(200).map_or(s.len(), |(i, _)| i);
    &s[..end]
}

fn json_str(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// A customer's first frame.
pub fn session_start() -> Message {
    Message::Text(Utf8Bytes::from(format!(
        r#"{{"type":"event","name":"session.start","value":{{"workstream":{},"user":{{"name":"Load"}}}}}}"#,
        json_str(WORKSTREAM)
    )))
}

/// A customer's message: `payload` bytes of text (ASCII, so bytes are characters).
pub fn customer_message(payload: usize) -> Utf8Bytes {
    Utf8Bytes::from(format!(r#"{{"type":"message","text":{}}}"#, json_str(&filler(payload))))
}

/// `payload` characters of a customer's question.
fn filler(payload: usize) -> String {
    "How do I block my lost card? ".chars().cycle().take(payload).collect()
}

/// A customer's message with a `clientActivityId`, as real clients send it (the gateway
/// keys its dedup map, and the store the activity, by it).
pub fn customer_message_with_id(payload: usize, client_activity_id: &str) -> Utf8Bytes {
    Utf8Bytes::from(format!(
        r#"{{"type":"message","text":{},"clientActivityId":{}}}"#,
        json_str(&filler(payload)),
        json_str(client_activity_id)
    ))
}

/// A customer's first frame after a drop: its conversation, its latest token, and the
/// last `seq` it has (0: replay everything).
pub fn session_resume(conversation: &str, token: &str, watermark: u64) -> Message {
    Message::Text(Utf8Bytes::from(format!(
        r#"{{"type":"event","name":"session.resume","value":{{"conversationId":{},"token":{},"watermark":{watermark}}}}}"#,
        json_str(conversation),
        json_str(token)
    )))
}

/// The echo bot's answer in a conversation.
pub fn bot_reply(conversation: &str, text: &str) -> Utf8Bytes {
    Utf8Bytes::from(format!(
        r#"{{"type":"message","conversation":{{"id":{}}},"text":{}}}"#,
        json_str(conversation),
        json_str(text)
    ))
}

/// The bot's transfer to a credit-card agent.
pub fn handoff(conversation: &str) -> Utf8Bytes {
    Utf8Bytes::from(format!(
        r#"{{"type":"event","name":"handoff.initiate","conversation":{{"id":{}}},"value":{{"BotHandoffTopic":"CreditCard"}},"text":"Customer lost a credit card: block it and send a replacement."}}"#,
        json_str(conversation)
    ))
}

/// A conversation id shaped like the gateway's, for frames sent to the echo baseline.
pub fn synthetic_conversation_id(i: usize) -> String {
    format!("c_{i:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_a_histogram_over_a_bound() {
        let text = "# TYPE switchboard_store_commit_seconds histogram\n\
                    switchboard_store_commit_seconds_sum 0.5\n\
                    switchboard_store_commit_seconds_count 120\n\
                    switchboard_store_commit_seconds_bucket{le=\"0.0016\"} 100\n\
                    switchboard_store_commit_seconds_bucket{le=\"0.0032\"} 114\n\
                    switchboard_store_commit_seconds_bucket{le=\"+Inf\"} 120\n";
        assert_eq!(over(text, "switchboard_store_commit_seconds", 0.0001 * 32.0).unwrap(), (120.0, 6.0));
        assert!(over(text, "switchboard_store_commit_seconds", 0.005).is_err());
        assert!(over(text, "switchboard_store_checkpoint_seconds", 0.0032).is_err());
    }

    #[test]
    fn frames_parse_back() {
        let Message::Text(start) = session_start() else { panic!("not text") };
        let a = Activity::parse(start.as_str()).unwrap();
        assert!(a.is_event("session.start"));
        let m = customer_message(64);
        let a = Activity::parse(m.as_str()).unwrap();
        assert_eq!(a.kind, "message");
        assert_eq!(a.text.as_deref().map(str::len), Some(64));
        let r = bot_reply("c_1", "hé \"quoted\"");
        let a = Activity::parse(r.as_str()).unwrap();
        assert_eq!(a.conversation_id(), Some("c_1"));
        assert_eq!(a.text.as_deref(), Some("hé \"quoted\""));
        let m = customer_message_with_id(10, "k-1");
        let a = Activity::parse(m.as_str()).unwrap();
        assert_eq!(a.text.as_deref().map(str::len), Some(10));
        assert!(m.as_str().contains(r#""clientActivityId":"k-1""#));
        let Message::Text(resume) = session_resume("c_3", "t.k", 7) else { panic!("not text") };
        let a = Activity::parse(resume.as_str()).unwrap();
        assert!(a.is_event("session.resume"));
        assert_eq!(a.value_str("token").as_deref(), Some("t.k"));
        let h = handoff("c_2");
        let a = Activity::parse(h.as_str()).unwrap();
        assert!(a.is_event("handoff.initiate"));
        assert_eq!(a.value.map(RawValue::get), Some(r#"{"BotHandoffTopic":"CreditCard"}"#));
    }

    #[test]
    fn reads_a_counter() {
        let text = "# HELP switchboard_voice_calls_refused Voice calls refused.\n\
                    # TYPE switchboard_voice_calls_refused counter\n\
                    switchboard_voice_calls_refused_total 17\n\
                    switchboard_voice_calls_total 400\n";
        assert_eq!(metric(text, "switchboard_voice_calls_refused"), Some(17));
        assert_eq!(metric(text, "switchboard_voice_calls"), Some(400));
        assert_eq!(metric(text, "switchboard_voice_calls_active"), None);
    }

    #[test]
    fn sources_spread_only_when_needed() {
        assert_eq!(Sources::for_connections(1_000).pick(7), None);
        let s = Sources::for_connections(100_000);
        assert_eq!(s.count(), 4);
        assert_eq!(s.pick(0), Some(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(s.pick(5), Some(Ipv4Addr::new(127, 0, 0, 3)));
    }
}
