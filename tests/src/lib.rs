//! Helpers for Switchboard's end-to-end tests: a gateway on 127.0.0.1:0 in this process,
//! real WebSocket clients for customers, bots and agents, and a tiny HTTP client.

pub mod interop;
pub mod stores;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard::config::{Config, StoreKind};
use switchboard::server::{self, Running};
use switchboard::store::{MemoryStore, Recovered, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a frame it expects.
pub const WAIT: Duration = Duration::from_secs(5);

/// The demo secrets of the built-in default configuration.
pub const BOT_APP_ID: &str = "5f1c8d9e-0b7a-4c3e-9d2f-6a8b1c0d2e3f";
pub const BOT_SECRET: &str = "contoso-bot-demo-secret";

pub fn agent_secret(id: &str) -> String {
    format!("{id}-demo-secret")
}

/// A gateway running in this test's runtime, with its data directory (removed on drop).
pub struct TestServer {
    pub addr: SocketAddr,
    pub running: Running,
    pub data_dir: Option<tempfile::TempDir>,
}

/// The seed's sample with an external bot that tests drive over `/v1/bot`.
pub const EXTERNAL_BOT: &str = include_str!("../../examples/external-bot.toml");

/// [`EXTERNAL_BOT`] with a voice workstream whose calls go to the same bot, voice-enabled.
pub fn external_bot_with_voice() -> String {
    let with_voice = EXTERNAL_BOT.replace("capacity = 1000\n", "capacity = 1000\nvoice = true\n");
    assert_ne!(with_voice, EXTERNAL_BOT, "the sample's bot has a capacity line");
    format!(
        r#"{with_voice}
[[workstreams]]
name = "VoiceWorkStream"
channel = "voice"
fallback_queue = "GeneralQueue"
context_variables = [ {{ name = "BotHandoffTopic", type = "text" }} ]
  [[workstreams.rules]]
  name = "VoiceBotRule"
  when = "BotHandoffTopic is empty"
  queue = "BotQueue"
"#
    )
}

/// Which store a test gateway journals to.
pub enum StoreChoice {
    /// What `switchboard serve` runs: SQLite in a fresh data directory, with the
    /// configuration's `sync` (default `full`).
    Sqlite,
    /// The in-memory store (commit, delivery and ack inline): the special case.
    Memory,
    /// A store double ([`stores`]).
    Custom(Arc<dyn Store>),
}

/// Starts a gateway on a free loopback port with `toml`, or the seed sample with an
/// external bot ([`EXTERNAL_BOT`]), on the default durable store.
pub async fn start_server(toml: Option<&str>) -> TestServer {
    start_on(config(toml), StoreChoice::Sqlite).await
}

/// Starts a gateway on the built-in default configuration (the built-in bot), on the
/// default durable store.
pub async fn start_default() -> TestServer {
    start_on(Config::builtin_default(), StoreChoice::Sqlite).await
}

/// A test configuration, parsed and checked like `serve` does.
pub fn config(toml: Option<&str>) -> Config {
    switchboard::load::config_text(toml.unwrap_or(EXTERNAL_BOT)).expect("test configuration is valid").config
}

/// Starts a gateway with `cfg` on the chosen store.
pub async fn start_on(mut cfg: Config, store: StoreChoice) -> TestServer {
    let listen = "127.0.0.1:0".parse().unwrap();
    let (running, data_dir) = match store {
        StoreChoice::Sqlite => {
            let dir = tempfile::tempdir().expect("temporary data directory");
            cfg.server.data_dir = dir.path().to_owned();
            cfg.server.store = StoreKind::Sqlite;
            let (store, recovered) = server::open_store(&cfg).expect("store opens");
            (server::start_with(cfg, listen, store, recovered).await, Some(dir))
        }
        StoreChoice::Memory => {
            (server::start_with(cfg, listen, Arc::new(MemoryStore), Recovered::default()).await, None)
        }
        StoreChoice::Custom(store) => (server::start_with(cfg, listen, store, Recovered::default()).await, None),
    };
    let running = running.expect("server starts");
    TestServer { addr: running.addr, running, data_dir }
}

impl TestServer {
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// A bot or agent access token from `/v1/token`.
    pub async fn token(&self, client_id: &str, secret: &str) -> Result<String> {
        let body = format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}");
        let (status, text) = http(self.addr, "POST", "/v1/token", "application/x-www-form-urlencoded", &body).await?;
        if status != 200 {
            bail!("token: {status} {text}");
        }
        let v: Value = serde_json::from_str(&text)?;
        Ok(v["access_token"].as_str().context("access_token")?.to_owned())
    }

    pub async fn customer(&self) -> Result<Client> {
        Client::connect(&self.ws_url("/v1/chat"), None).await
    }

    /// A customer who has started a conversation in `workstream` with `context`.
    pub async fn start_chat(&self, workstream: &str, name: &str, context: Value) -> Result<Customer> {
        Customer::start(self.customer().await?, workstream, name, context).await
    }

    /// [`TestServer::start_chat`] for a customer at the address `from` (any of 127.0.0.0/8):
    /// customers at one address share its limits (`chat_agent_conversations_per_address`).
    pub async fn start_chat_from(
        &self,
        from: std::net::IpAddr,
        workstream: &str,
        name: &str,
        context: Value,
    ) -> Result<Customer> {
        let c = Client::connect_from(&self.ws_url("/v1/chat"), from).await?;
        Customer::start(c, workstream, name, context).await
    }

    /// A customer in a new `ChatWorkStream` chat that `bot` was given (the bot users' queue
    /// is where the built-in default and the samples send a new chat first).
    pub async fn chat_with_bot(&self, bot: &mut Client, name: &str) -> Result<Customer> {
        let c = self.start_chat("ChatWorkStream", name, json!({})).await?;
        bot.assigned_to(&c.conversation).await?;
        Ok(c)
    }

    pub async fn bot(&self) -> Result<Client> {
        let t = self.token(BOT_APP_ID, BOT_SECRET).await?;
        Client::connect(&self.ws_url("/v1/bot"), Some(&t)).await
    }

    /// A bot or agent connection asking for an audio format (`?audio=`).
    pub async fn member_with_audio(&self, path: &str, client_id: &str, secret: &str, audio: &str) -> Result<Client> {
        let t = self.token(client_id, secret).await?;
        Client::connect(&format!("{}?audio={audio}", self.ws_url(path)), Some(&t)).await
    }

    pub async fn agent(&self, id: &str) -> Result<Client> {
        let t = self.token(id, &agent_secret(id)).await?;
        Client::connect(&self.ws_url("/v1/agent"), Some(&t)).await
    }
}

/// A customer with a started conversation.
pub struct Customer {
    pub client: Client,
    pub conversation: String,
    pub token: String,
}

impl Customer {
    async fn start(mut c: Client, workstream: &str, name: &str, context: Value) -> Result<Customer> {
        c.send(json!({"type":"event","name":"session.start","value":{"workstream":workstream,"user":{"name":name},"context":context}})).await?;
        let started = c.event("session.started").await?;
        Ok(Customer {
            conversation: started["value"]["conversationId"].as_str().context("conversationId")?.to_owned(),
            token: started["value"]["token"].as_str().context("token")?.to_owned(),
            client: c,
        })
    }
}

impl std::ops::Deref for Customer {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Customer {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A frame of either kind.
#[derive(Debug)]
pub enum Frame {
    Text(Value),
    Binary(Vec<u8>),
}

/// A WebSocket client speaking JSON frames.
pub struct Client {
    ws: Ws,
    /// Every frame received so far, in order (for assertions on what was skipped).
    pub seen: Vec<Value>,
}

/// The upgrade request for `url`, with `bearer` as its token.
fn request(url: &str, bearer: Option<&str>) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request> {
    let mut req = url.into_client_request()?;
    if let Some(t) = bearer {
        req.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {t}"))?);
    }
    Ok(req)
}

impl Client {
    pub async fn connect(url: &str, bearer: Option<&str>) -> Result<Client> {
        let (ws, _) = tokio_tungstenite::connect_async(request(url, bearer)?).await?;
        Ok(Client { ws, seen: Vec::new() })
    }

    /// A client whose socket's kernel receive buffer is `bytes` (set before it connects, so
    /// the window it offers stays that small): one that stops reading fills the gateway's
    /// side in kilobytes, not megabytes.
    pub async fn connect_with_receive_buffer(url: &str, bearer: Option<&str>, bytes: u32) -> Result<Client> {
        Client::connect_request(request(url, bearer)?, |socket| socket.set_recv_buffer_size(bytes)).await
    }

    /// A client connecting from the source address `local`: any of 127.0.0.0/8 reaches a
    /// server on 127.0.0.1, so a test can play a customer at another address.
    pub async fn connect_from(url: &str, local: std::net::IpAddr) -> Result<Client> {
        Client::connect_request(request(url, None)?, |socket| socket.bind(SocketAddr::new(local, 0))).await
    }

    /// A customer behind a reverse proxy at `proxy`: the upgrade request comes from that
    /// address and carries `X-Forwarded-For: forwarded_for`, as the proxy writes it.
    pub async fn connect_forwarded(url: &str, proxy: std::net::IpAddr, forwarded_for: &str) -> Result<Client> {
        let mut req = request(url, None)?;
        req.headers_mut().insert("x-forwarded-for", HeaderValue::from_str(forwarded_for)?);
        Client::connect_request(req, |socket| socket.bind(SocketAddr::new(proxy, 0))).await
    }

    /// A client sending `req` over an IPv4 socket `set_up` prepared before it connects.
    async fn connect_request(
        req: tokio_tungstenite::tungstenite::handshake::client::Request,
        set_up: impl FnOnce(&tokio::net::TcpSocket) -> std::io::Result<()>,
    ) -> Result<Client> {
        let host = req.uri().authority().context("a host in the URL")?.as_str().to_owned();
        let socket = tokio::net::TcpSocket::new_v4()?;
        set_up(&socket)?;
        let tcp = socket.connect(tokio::net::lookup_host(&host).await?.next().context("an address")?).await?;
        let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp)).await?;
        Ok(Client { ws, seen: Vec::new() })
    }

    pub async fn send(&mut self, v: Value) -> Result<()> {
        self.ws.send(Message::text(v.to_string())).await?;
        Ok(())
    }

    pub async fn send_raw(&mut self, m: Message) -> Result<()> {
        self.ws.send(m).await?;
        Ok(())
    }

    /// The next text frame as JSON, within [`WAIT`] (binary frames are skipped).
    pub async fn recv(&mut self) -> Result<Value> {
        loop {
            if let Frame::Text(v) = self.frame().await? {
                return Ok(v);
            }
        }
    }

    /// The next frame of either kind, within [`WAIT`].
    pub async fn frame(&mut self) -> Result<Frame> {
        self.frame_within(WAIT).await
    }

    /// The next frame of either kind, within `wait`.
    pub async fn frame_within(&mut self, wait: Duration) -> Result<Frame> {
        loop {
            let m = tokio::time::timeout(wait, self.ws.next())
                .await
                .map_err(|_| anyhow!("no frame within {wait:?}; seen so far: {:?}", self.seen))?;
            match m {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str())?;
                    self.seen.push(v.clone());
                    return Ok(Frame::Text(v));
                }
                Some(Ok(Message::Binary(b))) => return Ok(Frame::Binary(b.to_vec())),
                Some(Ok(Message::Close(f))) => bail!("closed: {f:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("read error: {e}"),
                None => bail!("connection ended"),
            }
        }
    }

    /// The next binary frame (text frames on the way are kept in `seen`).
    pub async fn binary(&mut self) -> Result<Vec<u8>> {
        loop {
            if let Frame::Binary(b) = self.frame().await? {
                return Ok(b);
            }
        }
    }

    /// Reads until a frame satisfies `pred`, returning it.
    pub async fn until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        loop {
            let v = self.recv().await.with_context(|| format!("waiting for {what}"))?;
            if pred(&v) {
                return Ok(v);
            }
        }
    }

    /// [`Client::until`] with a deadline of `wait` for the whole search (a step of an
    /// external client, which may be slow to start).
    pub async fn until_within(&mut self, wait: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
        let end = tokio::time::Instant::now() + wait;
        loop {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            if let Frame::Text(v) = self.frame_within(left).await.with_context(|| format!("waiting for {what}"))?
                && pred(&v)
            {
                return Ok(v);
            }
        }
    }

    /// Reads until an event named `name`.
    pub async fn event(&mut self, name: &str) -> Result<Value> {
        self.until(name, |v| v["type"] == "event" && v["name"] == name).await
    }

    /// Reads until an activity of `type` (skipping acks, positions and other events).
    pub async fn activity(&mut self, kind: &str) -> Result<Value> {
        self.until(kind, |v| v["type"] == kind).await
    }

    /// Reads until a message.
    pub async fn message(&mut self) -> Result<Value> {
        self.activity("message").await
    }

    /// Asserts nothing arrives for `d` (other than frames `ignore` accepts).
    pub async fn quiet_for(&mut self, d: Duration, ignore: impl Fn(&Value) -> bool) -> Result<()> {
        let end = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(end, self.ws.next()).await {
                Err(_) => return Ok(()),
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(t.as_str())?;
                    if !ignore(&v) {
                        bail!("unexpected frame: {v}");
                    }
                }
                Ok(Some(Ok(_))) => {}
                Ok(other) => bail!("connection changed: {other:?}"),
            }
        }
    }

    /// Reads until the server closes, returning the close code.
    /// Waits for the work item of `conv` (its `conversation.assigned`, which has no `seq`).
    pub async fn assigned_to(&mut self, conv: &str) -> Result<Value> {
        self.until("assignment", |v| {
            v["name"] == "conversation.assigned" && v["conversation"]["id"] == conv && v["seq"].is_null()
        })
        .await
    }

    pub async fn closed(&mut self) -> Result<Option<CloseCode>> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await.map_err(|_| anyhow!("not closed in time"))? {
                Some(Ok(Message::Close(f))) => return Ok(f.map(|f| f.code)),
                Some(Ok(_)) => continue,
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) | None => return Ok(None),
                Some(Err(e)) => bail!("read error: {e}"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Sends a message in a conversation (bots and agents name it; customers may too).
    pub async fn say(&mut self, conversation: &str, text: &str) -> Result<()> {
        self.send(json!({"type":"message","conversation":{"id":conversation},"text":text})).await
    }
}

/// A minimal HTTP/1.1 request; returns status and body.
pub async fn http(addr: SocketAddr, method: &str, path: &str, content_type: &str, body: &str) -> Result<(u16, String)> {
    http_with(addr, method, path, &[("content-type", content_type)], body).await
}

pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String)> {
    let r = http_response(addr, method, path, headers, body).await?;
    Ok((r.status, r.body))
}

/// An HTTP response as [`http_response`] reads it.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// [`http_with`], with the response's headers.
pub async fn http_response(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<HttpResponse> {
    let mut s = TcpStream::connect(addr).await?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().and_then(|l| l.split(' ').nth(1)).context("status line")?.parse()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(HttpResponse { status, headers, body: body.to_owned() })
}

/// Writes 16-bit PCM `frames` (one sample per channel each) at `rate` as a WAV file.
pub fn write_wav(
    path: &std::path::Path,
    rate: u32,
    channels: u16,
    frames: impl IntoIterator<Item = i16>,
) -> Result<()> {
    let spec =
        hound::WavSpec { channels, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut w = hound::WavWriter::create(path, spec)?;
    for s in frames {
        for _ in 0..channels {
            w.write_sample(s)?;
        }
    }
    w.finalize()?;
    Ok(())
}
