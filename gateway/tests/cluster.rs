//! Cluster mode (SPEC §8) through the real binary: three `switchboard serve` nodes and a
//! JetStream `nats-server` on loopback, all started here (`scripts/test.sh` installs
//! nats-server from Debian's packages).
//!
//! - a customer, the bot and the agent each on a different node share one conversation;
//! - capacity and single assignment hold across nodes under concurrent load, with one
//!   agent connected to two nodes at once;
//! - the leader killed with `kill -9` under load, then a node that does not lead: clients
//!   reconnect to the other nodes and resume, nothing acknowledged is lost or stored twice,
//!   the lease moves and waiting conversations are still assigned;
//! - the leader stopped with SIGTERM under load: it hands over, nothing acknowledged is lost;
//! - nats-server restarted under load: the nodes reconnect and nothing acknowledged is lost;
//! - `serve` refuses to start without NATS or without JetStream;
//! - a flood through a node that does not lead hurts no other customer there;
//! - a phone call through a node that does not lead: audio both ways, a key press;
//! - the log keeps only what is open and a new leader reads it to its last message, also
//!   after whole blocks of the stream were purged (nats-server 2.9 then miscounts pending),
//!   and a conversation purged while it is read does not come back open;
//! - a process that finds another under its node name stops, saying why.

#[allow(dead_code)]
mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard::store::Store;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const ADMIN: &str = "cluster-admin-token";
/// Long enough for an election after a leader dies (lease 5 s) on a loaded machine.
const FAILOVER: Duration = Duration::from_secs(40);

fn nats_server() -> String {
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"] {
        if Path::new(p).exists() {
            return p.to_owned();
        }
    }
    "nats-server".to_owned()
}

/// Reads a child's stderr on a thread; `expect` waits for a line containing a text.
struct Logged {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Logged {
    /// Spawns `cmd`; its log lines are kept (and shown, prefixed with `who`, if the test fails).
    fn spawn(who: &str, mut cmd: Command) -> Logged {
        let mut child = cmd.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().expect("spawn");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let who = who.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{who}] {line}");
                let _ = tx.send(line);
            }
        });
        Logged { child, lines }
    }

    fn expect(&mut self, text: &str) -> String {
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(30)) {
            if let Some(i) = line.find(text) {
                return line[i + text.len()..].trim().to_owned();
            }
        }
        let _ = self.child.kill();
        panic!("no log line with {text:?}");
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Nats {
    proc: Logged,
    port: u16,
    dir: PathBuf,
}

impl Nats {
    /// nats-server with JetStream on `port` (None: a free one) storing under `dir`.
    fn start(dir: &Path, port: Option<u16>) -> Nats {
        let mut cmd = Command::new(nats_server());
        let port = port.map_or("-1".to_owned(), |p| p.to_string());
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"]).arg(dir);
        let mut proc = Logged::spawn("nats", cmd);
        let listening = proc.expect("Listening for client connections on ");
        let port = listening.rsplit(':').next().unwrap().parse().unwrap();
        proc.expect("Server is ready");
        Nats { proc, port, dir: dir.to_owned() }
    }

    fn restart(&mut self) {
        self.proc.kill();
        *self = Nats::start(&self.dir.clone(), Some(self.port));
    }
}

struct Cluster {
    _tmp: tempfile::TempDir,
    nats: Nats,
    config: PathBuf,
    nodes: Vec<(Logged, String)>,
}

impl Cluster {
    /// nats-server and three nodes on the core tests' configuration (a bot over /v1/bot).
    fn start() -> Cluster {
        Cluster::start_on("external-bot.toml")
    }

    /// nats-server and three nodes on `examples/<example>` with a `[cluster]` section.
    fn start_on(example: &str) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let nats = Nats::start(&tmp.path().join("nats"), None);
        let path = format!("{}/../examples/{example}", env!("CARGO_MANIFEST_DIR"));
        let base = std::fs::read_to_string(path).unwrap();
        let base = match base.contains("admin_token = \"admin-demo-token\"") {
            true => base.replace("admin_token = \"admin-demo-token\"", &format!("admin_token = \"{ADMIN}\"")),
            false => base.replacen("[server]\n", &format!("[server]\nadmin_token = \"{ADMIN}\"\n"), 1),
        };
        let text = base + &format!("\n[cluster]\nnats = \"nats://127.0.0.1:{}\"\n", nats.port);
        let config = tmp.path().join("cluster.toml");
        std::fs::write(&config, text).unwrap();
        let mut c = Cluster { _tmp: tmp, nats, config, nodes: Vec::new() };
        for name in ["node-a", "node-b", "node-c"] {
            let mut cmd = Command::new(BIN);
            cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"])
                .arg(&c.config)
                .env("SWITCHBOARD_NODE", name)
                .env("RUST_LOG", "info");
            let mut p = Logged::spawn(name, cmd);
            let addr = p.expect("listening on http://");
            c.nodes.push((p, addr));
        }
        c
    }

    fn addr(&self, i: usize) -> String {
        self.nodes[i % self.nodes.len()].1.clone()
    }

    /// Waits until every node answers through the leader.
    async fn ready(&self) {
        for (_, addr) in &self.nodes {
            let deadline = tokio::time::Instant::now() + FAILOVER;
            while http(addr, "GET", "/healthz", None, "").await.map(|r| r.0) != Some(200) {
                assert!(tokio::time::Instant::now() < deadline, "node {addr} never served");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// The index of the node that leads now, asked through node `via`.
    async fn leader(&self, via: usize) -> usize {
        let (_, body) =
            http(&self.addr(via), "GET", "/v1/admin/cluster", Some(ADMIN), "").await.expect("cluster status");
        let v: Value = serde_json::from_str(&body).unwrap();
        let name = v["leader"].as_str().unwrap().to_owned();
        ["node-a", "node-b", "node-c"].iter().position(|n| *n == name).unwrap()
    }
}

/// One HTTP/1.1 request; (status, body).
async fn http(addr: &str, method: &str, path: &str, bearer: Option<&str>, form: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let go = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text.split(' ').nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(20), go).await.ok().flatten()
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(addr: &str, path: &str, bearer: Option<&str>) -> Option<Ws> {
    let mut req = format!("ws://{addr}{path}").into_client_request().ok()?;
    if let Some(t) = bearer {
        req.headers_mut().insert("Authorization", format!("Bearer {t}").parse().ok()?);
    }
    let c = tokio::time::timeout(Duration::from_secs(20), tokio_tungstenite::connect_async(req)).await;
    c.ok()?.ok().map(|(w, _)| w)
}

async fn token(addr: &str, id: &str, secret: &str) -> String {
    let form = format!("grant_type=client_credentials&client_id={id}&client_secret={secret}");
    let (status, body) = http(addr, "POST", "/v1/token", None, &form).await.expect("token");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["access_token"].as_str().unwrap().to_owned()
}

async fn member(addr: &str, id: &str) -> Ws {
    let (path, id, secret) = match id {
        "bot" => ("/v1/bot", "5f1c8d9e-0b7a-4c3e-9d2f-6a8b1c0d2e3f", "contoso-bot-demo-secret".to_owned()),
        agent => ("/v1/agent", agent, format!("{agent}-demo-secret")),
    };
    let t = token(addr, id, &secret).await;
    ws(addr, path, Some(&t)).await.expect("member connects")
}

async fn send(w: &mut Ws, v: Value) {
    w.send(Message::text(v.to_string())).await.expect("send");
}

/// The next JSON frame within `wait`, or None (closed, or nothing came).
async fn next_within(w: &mut Ws, wait: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(wait, w.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => return None,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

async fn until(w: &mut Ws, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    loop {
        let v = next_within(w, Duration::from_secs(20)).await.unwrap_or_else(|| panic!("waiting for {what}"));
        if pred(&v) {
            return v;
        }
    }
}

/// A customer at an address of its own (127.0.1.1, 127.0.1.2, …: all of 127.0.0.0/8 is
/// loopback): the tests' customers are so many people, not one client at one address
/// (`chat_agent_conversations_per_address` is three).
async fn customer_ws(addr: &str) -> Option<Ws> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let from = std::net::Ipv4Addr::new(127, 0, 1 + (n / 250 % 250) as u8, 1 + (n % 250) as u8);
    let req = format!("ws://{addr}/v1/chat").into_client_request().ok()?;
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind((from, 0).into()).ok()?;
    let connect = async {
        let tcp = socket.connect(addr.parse().ok()?).await.ok()?;
        let stream = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
        tokio_tungstenite::client_async(req, stream).await.ok().map(|(w, _)| w)
    };
    tokio::time::timeout(Duration::from_secs(20), connect).await.ok()?
}

async fn start_chat(addr: &str, name: &str, context: Value) -> (Ws, String, String) {
    let mut c = customer_ws(addr).await.expect("customer connects");
    send(&mut c, json!({"type":"event","name":"session.start","value":{"workstream":"ChatWorkStream","user":{"name":name},"context":context}})).await;
    let v = until(&mut c, "session.started", |v| v["name"] == "session.started").await;
    let conv = v["value"]["conversationId"].as_str().unwrap().to_owned();
    let tok = v["value"]["token"].as_str().unwrap().to_owned();
    (c, conv, tok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_bot_and_agent_on_three_nodes_share_one_conversation() {
    let c = Cluster::start();
    c.ready().await;
    let mut bot = member(&c.addr(1), "bot").await;
    let mut alice = member(&c.addr(2), "alice").await;
    let (mut ann, conv, _) = start_chat(&c.addr(0), "Ann", json!({})).await;

    let item = until(&mut bot, "the work item", |v| v["name"] == "conversation.assigned").await;
    assert_eq!(item["conversation"]["id"], conv.as_str());
    send(&mut ann, json!({"type":"message","text":"hello from node a","channelData":{"clientActivityId":"ann-1"}}))
        .await;
    let ack = until(&mut ann, "ack", |v| v["name"] == "ack").await;
    let got = until(&mut bot, "Ann's message", |v| v["text"] == "hello from node a").await;
    assert_eq!(got["seq"], ack["value"]["seq"], "one seq, whichever node it is read on");
    send(&mut bot, json!({"type":"message","conversation":{"id":conv},"text":"bot on node b"})).await;
    until(&mut ann, "the bot's reply", |v| v["text"] == "bot on node b").await;

    send(&mut bot, json!({"type":"event","name":"handoff.initiate","conversation":{"id":conv},"value":{"BotHandoffTopic":"CreditCard"},"text":"card stolen"})).await;
    let a = until(&mut alice, "the escalation", |v| v["name"] == "conversation.assigned").await;
    assert_eq!(a["value"]["queue"], "CreditCardQueue");
    let texts: Vec<&str> =
        a["value"]["transcript"].as_array().unwrap().iter().filter_map(|t| t["text"].as_str()).collect();
    assert!(texts.contains(&"hello from node a") && texts.contains(&"bot on node b"), "{texts:?}");
    send(&mut alice, json!({"type":"message","conversation":{"id":conv},"text":"alice on node c"})).await;
    let reply = until(&mut ann, "alice's reply", |v| v["text"] == "alice on node c").await;

    // The customer saw one seq order: every activity it got is numbered up from 1.
    assert!(reply["seq"].as_u64().unwrap() > ack["value"]["seq"].as_u64().unwrap());
    // The admin API on any node shows the whole cluster.
    let (status, body) =
        http(&c.addr(0), "GET", &format!("/v1/admin/conversations/{conv}"), Some(ADMIN), "").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["holder"], "alice", "{v}");
    // So do the cluster status and /metrics, once the leader has heard from every node.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, status) = http(&c.addr(2), "GET", "/v1/admin/cluster", Some(ADMIN), "").await.unwrap();
        let s: Value = serde_json::from_str(&status).unwrap();
        if s["nodes"].as_array().map(Vec::len) == Some(3) {
            assert_eq!(s["mode"], "cluster");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the leader never heard from three nodes: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, metrics) = http(&c.addr(1), "GET", "/metrics", None, "").await.unwrap();
    assert!(metrics.contains("switchboard_cluster_nodes 3"), "{metrics}");
    assert!(metrics.contains("switchboard_cluster_tunnelled_connections "), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_and_single_assignment_hold_across_nodes() {
    let c = Cluster::start();
    c.ready().await;
    // Alice on one node, Bob on another, customers on all three: capacity 3 each.
    let mut agents = [("alice", member(&c.addr(0), "alice").await), ("bob", member(&c.addr(2), "bob").await)];
    const N: usize = 12;
    let mut starts = Vec::new();
    for i in 0..N {
        let addr = c.addr(i);
        starts.push(tokio::spawn(async move {
            start_chat(&addr, &format!("C{i}"), json!({"BotHandoffTopic":"CreditCard"})).await
        }));
    }
    let mut customers = Vec::new();
    for s in starts {
        customers.push(s.await.unwrap());
    }
    // Drain the agents' assignments, check, end what each holds, until all N were handled.
    let mut held: HashMap<String, &str> = HashMap::new();
    let mut done: HashSet<String> = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut moved = false;
    while done.len() < N {
        assert!(tokio::time::Instant::now() < deadline, "stalled: {} of {N} handled", done.len());
        for (who, w) in agents.iter_mut() {
            while let Some(v) = next_within(w, Duration::from_millis(200)).await {
                if v["name"] != "conversation.assigned" {
                    continue;
                }
                let conv = v["conversation"]["id"].as_str().unwrap().to_owned();
                assert!(!done.contains(&conv), "{conv} assigned again after it ended");
                if let Some(prev) = held.insert(conv.clone(), *who) {
                    // Told again after a reconnection (`resumed`); never another member.
                    assert_eq!(prev, *who, "{conv} assigned to {prev} and to {who}");
                }
            }
        }
        for who in ["alice", "bob"] {
            let n = held.values().filter(|w| **w == who).count();
            assert!(n <= 3, "{who} holds {n} conversations with capacity 3");
        }
        if !moved && !held.is_empty() {
            // Alice moves to another node mid-way: she keeps what she holds, and still no more.
            moved = true;
            agents[0].1 = member(&c.addr(1), "alice").await;
            continue;
        }
        let mine: Vec<(String, &str)> = held.drain().collect();
        for (conv, who) in mine {
            let w = &mut agents.iter_mut().find(|(n, _)| *n == who).unwrap().1;
            send(w, json!({"type":"endOfConversation","conversation":{"id":conv}})).await;
            done.insert(conv);
        }
    }
    assert_eq!(done.len(), N, "every conversation was assigned, once");
    drop(customers);
}

/// What one customer was told was stored: seq → (clientActivityId, text).
#[derive(Default)]
struct Acked {
    conversation: String,
    token: String,
    acks: HashMap<u64, (String, String)>,
}

/// Resumes `conv` on node `node` (or the next ones) until one takes it; the new
/// connection and the token it was given (each `session.started` issues a new one).
async fn resume(addrs: &[String], node: &mut usize, conv: &str, token: &str, watermark: u64) -> (Ws, String) {
    let deadline = tokio::time::Instant::now() + FAILOVER;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "{conv}: no node would resume it");
        *node += 1;
        if let Some(mut w) = ws(&addrs[*node % addrs.len()], "/v1/chat", None).await {
            let r = json!({"type":"event","name":"session.resume","value":{"conversationId":conv,"token":token,"watermark":watermark}});
            let sent = w.send(Message::text(r.to_string())).await.is_ok();
            let answer = if sent { next_within(&mut w, Duration::from_secs(20)).await } else { None };
            match answer {
                Some(v) if v["name"] == "session.started" => {
                    return (w, v["value"]["token"].as_str().expect("a new token").to_owned());
                }
                other => eprintln!("{conv}: resume on node {}: {other:?}", *node % addrs.len()),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A customer sending message after message, each waited for; on a lost connection it
/// resumes on another node and sends the unacknowledged one again (same client id).
async fn customer(addrs: Vec<String>, i: usize, stop: Arc<AtomicBool>, rec: Arc<Mutex<Acked>>) {
    let mut node = i;
    let (mut w, conv, mut token) = start_chat(&addrs[node % addrs.len()], &format!("C{i}"), json!({})).await;
    {
        let mut r = rec.lock().await;
        r.conversation = conv.clone();
        r.token = token.clone();
    }
    let (mut n, mut watermark) = (0u64, 0u64);
    let mut pending: Option<(String, String)> = None;
    while !stop.load(Ordering::Relaxed) {
        if pending.is_none() {
            n += 1;
            pending = Some((format!("c{i}-{n}"), format!("C{i} message {n}")));
        }
        let (cid, text) = pending.clone().unwrap();
        let m = json!({"type":"message","text":text,"channelData":{"clientActivityId":cid}});
        let _ = w.send(Message::text(m.to_string())).await;
        loop {
            match next_within(&mut w, Duration::from_secs(10)).await {
                Some(v) => {
                    if let Some(s) = v["seq"].as_u64() {
                        watermark = watermark.max(s);
                    }
                    if v["name"] == "ack" && v["value"]["clientActivityId"] == cid.as_str() {
                        rec.lock().await.acks.insert(v["value"]["seq"].as_u64().unwrap(), (cid.clone(), text.clone()));
                        pending = None;
                        break;
                    }
                    if v["name"] == "error" && v["value"]["clientActivityId"] == cid.as_str() {
                        break; // not stored (the log failed under it): send it again
                    }
                }
                None => {
                    (w, token) = resume(&addrs, &mut node, &conv, &token, watermark).await;
                    rec.lock().await.token = token.clone();
                    break;
                }
            }
        }
    }
}

async fn total(recs: &[Arc<Mutex<Acked>>]) -> usize {
    let mut t = 0;
    for r in recs {
        t += r.lock().await.acks.len();
    }
    t
}

/// Waits until the customers together have `n` more acknowledgements than `from`.
async fn progress(recs: &[Arc<Mutex<Acked>>], from: usize, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while total(recs).await < from + n {
        assert!(tokio::time::Instant::now() < deadline, "the load stalled at {} acknowledgements", total(recs).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every customer's transcript, read from the start on some node: each acknowledged
/// activity there once, seq 1..n without gaps.
async fn verify(addrs: &[String], recs: &[Arc<Mutex<Acked>>]) {
    for (i, r) in recs.iter().enumerate() {
        let r = r.lock().await;
        assert!(!r.acks.is_empty(), "customer {i} got acknowledgements");
        let mut node = i;
        let (mut w, _) = resume(addrs, &mut node, &r.conversation, &r.token, 0).await;
        let mut by_seq: HashMap<u64, Value> = HashMap::new();
        let mut expected = 1;
        while let Some(v) = next_within(&mut w, Duration::from_millis(700)).await {
            if let Some(seq) = v["seq"].as_u64()
                && v["type"] != "event"
            {
                assert_eq!(seq, expected, "replay in order without gaps");
                expected += 1;
                by_seq.insert(seq, v);
            }
        }
        common::check_acknowledged(&by_seq, &r.acks);
    }
}

fn load(
    addrs: &[String],
    n: usize,
    stop: &Arc<AtomicBool>,
) -> (Vec<Arc<Mutex<Acked>>>, Vec<tokio::task::JoinHandle<()>>) {
    let mut recs = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..n {
        let rec = Arc::new(Mutex::new(Acked::default()));
        recs.push(rec.clone());
        tasks.push(tokio::spawn(customer(addrs.to_vec(), i, stop.clone(), rec)));
    }
    (recs, tasks)
}

async fn finish(stop: &AtomicBool, tasks: Vec<tokio::task::JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("a customer task panicked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_killed_under_load_lose_nothing_acknowledged() {
    let mut c = Cluster::start();
    c.ready().await;
    let leader = c.leader(0).await;
    // Conversations waiting for an agent when the leader dies (no agent is connected yet).
    let mut waiting = Vec::new();
    for i in 0..4 {
        waiting.push(start_chat(&c.addr(i), &format!("W{i}"), json!({"BotHandoffTopic":"CreditCard"})).await);
    }
    let all: Vec<String> = (0..3).map(|i| c.addr(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (recs, tasks) = load(&all, 9, &stop);
    progress(&recs, 0, 40).await;
    c.nodes[leader].0.kill(); // SIGKILL: no shutdown, no hand-over
    let before = total(&recs).await;
    // Its clients (and everyone's lanes through it) reconnect elsewhere and go on.
    progress(&recs, before, 40).await;
    let after = c.leader(if leader == 0 { 1 } else { 0 }).await;
    assert_ne!(after, leader, "the lease moved to a live node");
    // Then a node that does not lead dies too: its clients move to the last one.
    let follower = (0..3).find(|i| *i != leader && *i != after).unwrap();
    c.nodes[follower].0.kill();
    let before = total(&recs).await;
    progress(&recs, before, 30).await;
    finish(&stop, tasks).await;
    let last = vec![c.addr(after)];
    verify(&last, &recs).await;
    // The waiting conversations are still waiting, and an agent now gets them (up to capacity).
    let mut alice = member(&last[0], "alice").await;
    let mut got = HashSet::new();
    while got.len() < 3 {
        let v = until(&mut alice, "an assignment", |v| v["name"] == "conversation.assigned").await;
        got.insert(v["conversation"]["id"].as_str().unwrap().to_owned());
    }
    let ids: HashSet<String> = waiting.iter().map(|w| w.1.clone()).collect();
    assert!(got.is_subset(&ids), "{got:?} ⊆ {ids:?}");
    assert!(
        next_within(&mut alice, Duration::from_millis(500)).await.is_none_or(|v| v["name"] != "conversation.assigned")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_under_load_loses_nothing_acknowledged() {
    let mut c = Cluster::start();
    c.ready().await;
    let all: Vec<String> = (0..3).map(|i| c.addr(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (recs, tasks) = load(&all, 6, &stop);
    progress(&recs, 0, 30).await;
    c.nats.restart();
    let before = total(&recs).await;
    progress(&recs, before, 30).await;
    finish(&stop, tasks).await;
    verify(&all, &recs).await;
}

/// `serve` with `[cluster]` exits 1 with a line saying what is wrong.
fn refused(nats_url: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/external-bot.toml")).unwrap();
    std::fs::write(&config, base + &format!("\n[cluster]\nnats = \"{nats_url}\"\n")).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("SWITCHBOARD_NODE", "lonely")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "exit code");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn serve_refuses_to_start_without_nats_or_without_jetstream() {
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = refused(&format!("nats://127.0.0.1:{port}"));
    assert!(err.contains("cluster: cannot reach NATS at nats://127.0.0.1:"), "{err}");
    // A nats-server without JetStream.
    let mut cmd = Command::new(nats_server());
    cmd.args(["-a", "127.0.0.1", "-p", "-1"]);
    let mut plain = Logged::spawn("nats", cmd);
    let port = plain.expect("Listening for client connections on ").rsplit(':').next().unwrap().to_owned();
    plain.expect("Server is ready");
    let err = refused(&format!("nats://127.0.0.1:{port}"));
    assert!(err.contains("is nats-server running with JetStream on (-js)?"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_through_a_follower_hurts_no_other_customer() {
    let c = Cluster::start();
    c.ready().await;
    let leader = c.leader(0).await;
    let door = c.addr((leader + 1) % 3);
    // A hostile client on a node that does not lead: frames as fast as it can, never reading.
    let mut flood = ws(&door, "/v1/chat", None).await.unwrap();
    let start =
        json!({"type":"event","name":"session.start","value":{"workstream":"ChatWorkStream","user":{"name":"F"}}});
    send(&mut flood, start).await;
    let junk = Message::text(json!({"type":"message","text":"x".repeat(2000)}).to_string());
    let flooding = tokio::spawn(async move {
        for _ in 0..20_000 {
            if flood.send(junk.clone()).await.is_err() {
                return None; // closed on it
            }
        }
        Some(flood)
    });
    // A customer on the same node goes on chatting, every message acknowledged.
    let (mut ann, _, _) = start_chat(&door, "Ann", json!({})).await;
    for i in 0..20 {
        let cid = format!("ann-{i}");
        send(&mut ann, json!({"type":"message","text":format!("hello {i}"),"channelData":{"clientActivityId":cid}}))
            .await;
        until(&mut ann, "the ack", |v| v["name"] == "ack" && v["value"]["clientActivityId"] == cid.as_str()).await;
    }
    // The flood itself was refused past the customer rate (or closed as a slow consumer).
    if let Some(mut flood) = flooding.await.unwrap() {
        let refused = until(&mut flood, "a refusal", |v| v["name"] == "error").await;
        assert_eq!(refused["value"]["code"], "rate_limited", "{refused}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_a_node_that_does_not_lead_carries_audio_both_ways() {
    // The default configuration: its built-in bot answers calls with a voice menu.
    let c = Cluster::start_on("switchboard.toml");
    c.ready().await;
    let leader = c.leader(0).await;
    let door = c.addr((leader + 2) % 3);
    let mut call = ws(&door, "/v1/voice", None).await.unwrap();
    let start = json!({"type":"event","name":"session.start","value":{"workstream":"VoiceWorkStream",
        "media":{"encoding":"pcmu","sampleRate":8000},"context":{"CustomerPhoneNumber":"+15551234567"}}});
    send(&mut call, start).await;
    until(&mut call, "session.started", |v| v["name"] == "session.started").await;
    // The caller speaks (µ-law silence, 20 ms frames) and hears the menu, paced; pressing 1
    // (the key goes up through the lane) puts it in a queue with no agent, where it hears
    // the hold audio, continuously.
    hear(&mut call, 10).await;
    send(&mut call, json!({"type":"event","name":"dtmf","value":"1"})).await;
    hear(&mut call, 100).await;
    send(&mut call, json!({"type":"endOfConversation"})).await;
}

/// Sends 20 ms of µ-law silence per frame heard until `n` frames of audio came back.
async fn hear(call: &mut Ws, n: usize) {
    let silence = vec![0xffu8; 160];
    let mut heard = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while heard < n {
        assert!(tokio::time::Instant::now() < deadline, "heard only {heard} of {n} frames");
        call.send(Message::binary(silence.clone())).await.expect("the caller's audio goes up");
        if let Ok(Some(Ok(Message::Binary(b)))) = tokio::time::timeout(Duration::from_millis(100), call.next()).await {
            assert_eq!(b.len(), 160, "20 ms of µ-law 8 kHz");
            heard += 1;
        }
    }
}

/// A JetStream stream `t` on a fresh nats-server, and a leader's store writing to it.
struct Log {
    _tmp: tempfile::TempDir,
    _nats: Nats,
    js: async_nats::jetstream::Context,
    store: switchboard::cluster::log::JetStreamStore,
}

impl Log {
    async fn start() -> Log {
        use switchboard::cluster::log::{self, JetStreamStore};
        let tmp = tempfile::tempdir().unwrap();
        let nats = Nats::start(&tmp.path().join("nats"), None);
        let client = async_nats::connect(format!("nats://127.0.0.1:{}", nats.port)).await.unwrap();
        let js = async_nats::jetstream::new(client);
        js.create_or_update_stream(log::stream_config("t", 1)).await.unwrap();
        let fence = log::fence(&js, "t", "n").await.unwrap();
        let (store, _) = JetStreamStore::start(js.clone(), "t", fence, None).await.unwrap();
        Log { _tmp: tmp, _nats: nats, js, store }
    }
}

/// The ids of the conversations a read recovered, in order.
fn ids(r: &switchboard::store::Recovered) -> Vec<&str> {
    r.conversations.iter().map(|c| c.id.as_str()).collect()
}

fn conv_state(id: &str, open: bool) -> switchboard::store::Record {
    switchboard::store::Record::Conversation { id: Arc::from(id), open, state: "{}".into() }
}

fn conv_activity(id: &str, seq: u64, text: String) -> switchboard::store::Record {
    let frame = switchboard::protocol::Frame::from(format!(r#"{{"type":"message","seq":{seq},"text":"{text}"}}"#));
    switchboard::store::Record::Activity { conversation: Arc::from(id), seq, frame, client_key: None }
}

/// Waits until the stream holds `n` messages (closed conversations are purged after their
/// closing is acknowledged, by a task of their own).
async fn purged_to(js: &async_nats::jetstream::Context, n: u64) {
    let mut s = js.get_stream("t").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while s.info().await.unwrap().state.messages != n {
        assert!(tokio::time::Instant::now() < deadline, "closed conversations were never purged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A new leader's fence and read, in time: the conversations it recovers.
async fn read_as_new_leader(js: &async_nats::jetstream::Context) -> switchboard::store::Recovered {
    use switchboard::cluster::log;
    let read = async {
        let fence = log::fence(js, "t", "m").await?;
        log::read(js, "t", fence).await
    };
    tokio::time::timeout(Duration::from_secs(20), read).await.expect("read in time").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_keeps_only_what_is_open_and_is_read_to_its_last_message() {
    let Log { js, store, .. } = &Log::start().await;
    store.record(conv_state("c_1", true), None);
    store.record(conv_activity("c_1", 1, "hi".into()), None);
    // c_2's state twice: the second replaces the first (a rollup), one message stays.
    store.record(conv_state("c_2", true), None);
    store.record(conv_state("c_2", true), None);
    // The last write closes c_1: once stored, its subjects are purged, the last message too.
    store.record(conv_state("c_1", false), None);
    store.flush().wait().await.unwrap();
    purged_to(js, 3).await;
    // A reader does not wait for the purged last sequence: it stops at its own marker.
    let read = read_as_new_leader(js).await;
    assert_eq!(ids(&read), ["c_2"]);
    assert!(read.signing_key.is_some());
}

/// nats-server 2.9 (Debian's) counts a consumer's pending messages too high once whole
/// blocks of the stream (8 MB each) have been purged: a reader that waited for "none
/// pending" never finished, and no node could take over as leader after a busy day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_reads_the_log_to_its_end_after_whole_blocks_were_purged() {
    let Log { js, store, .. } = &Log::start().await;
    store.record(conv_state("c_open", true), None);
    store.record(conv_activity("c_open", 1, "still here".into()), None);
    // 12 MB of conversations, each closed (and so purged) once stored; the last write too.
    let text = "x".repeat(4000);
    for i in 0..300 {
        let id = format!("c_{i}");
        store.record(conv_state(&id, true), None);
        for seq in 1..=10 {
            store.record(conv_activity(&id, seq, text.clone()), None);
        }
        store.record(conv_state(&id, false), None);
    }
    store.flush().wait().await.unwrap();
    // Left: the term marker, the signing key and c_open's state and activity.
    purged_to(js, 4).await;
    let read = read_as_new_leader(js).await;
    assert_eq!(ids(&read), ["c_open"]);
    assert_eq!(read.conversations[0].activities.len(), 1);
}

/// A deposed leader may still be purging a conversation it closed when the new leader
/// reads: read across that purge, the conversation would come back open (its closing gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_purged_while_the_log_is_read_does_not_come_back_open() {
    let Log { js, store, .. } = &Log::start().await;
    store.record(conv_state("c_gone", true), None);
    store.record(conv_activity("c_gone", 1, "bye".into()), None);
    store.record(conv_state("c_open", true), None);
    for seq in 1..=30_000 {
        store.record(conv_activity("c_open", seq, "x".into()), None);
    }
    store.flush().wait().await.unwrap();
    // c_gone's closing, the last message, as the deposed leader wrote it; its purge comes
    // below, while the new leader reads.
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Rollup", "sub");
    js.publish_with_headers("t.log.conv.c_gone.state", h, r#"{"open":false,"state":"{}"}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    // How long a read takes, so the purge can land in the middle of the next one.
    let started = tokio::time::Instant::now();
    let read = read_as_new_leader(js).await;
    assert_eq!(ids(&read), ["c_open"]);
    let took = started.elapsed();
    let purge = {
        let js = js.clone();
        tokio::spawn(async move {
            tokio::time::sleep(took / 2).await;
            let s = js.get_stream_no_info("t").await.unwrap();
            s.purge().filter("t.log.conv.c_gone.>").await.unwrap();
        })
    };
    let read = read_as_new_leader(js).await;
    purge.await.unwrap();
    assert_eq!(ids(&read), ["c_open"], "c_gone came back open");
    assert_eq!(read.conversations[0].activities.len(), 30_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_finds_another_under_its_name_stops_saying_why() {
    let tmp = tempfile::tempdir().unwrap();
    let nats = Nats::start(&tmp.path().join("nats"), None);
    let config = tmp.path().join("c.toml");
    let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/external-bot.toml")).unwrap();
    std::fs::write(&config, base + &format!("\n[cluster]\nnats = \"nats://127.0.0.1:{}\"\n", nats.port)).unwrap();
    let twin = || {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"]).arg(&config).env("SWITCHBOARD_NODE", "same");
        Logged::spawn("same", cmd)
    };
    let mut procs = [twin(), twin()];
    // Whichever hears the other first stops (the other may then run on alone).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (i, status) = loop {
        if let Some((i, s)) =
            procs.iter_mut().enumerate().find_map(|(i, p)| p.child.try_wait().unwrap().map(|s| (i, s)))
        {
            break (i, s);
        }
        assert!(tokio::time::Instant::now() < deadline, "neither stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(1), "exits 1");
    procs[i].expect("another node runs as \"same\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_stopped_with_sigterm_hands_over_and_loses_nothing() {
    let mut c = Cluster::start();
    c.ready().await;
    let leader = c.leader(0).await;
    let all: Vec<String> = (0..3).map(|i| c.addr(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (recs, tasks) = load(&all, 6, &stop);
    progress(&recs, 0, 30).await;
    let pid = c.nodes[leader].0.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs").success());
    let status = c.nodes[leader].0.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "a clean exit");
    let before = total(&recs).await;
    progress(&recs, before, 30).await;
    finish(&stop, tasks).await;
    let survivors: Vec<String> = (0..3).filter(|i| *i != leader).map(|i| c.addr(i)).collect();
    verify(&survivors, &recs).await;
    assert_ne!(c.leader(if leader == 0 { 1 } else { 0 }).await, leader, "another node leads");
}
