//! `kill -9` of the gateway during a load of many conversations, then a restart on the same
//! data directory: every acknowledged activity is there once, in order, and every
//! conversation resumes.

#[allow(dead_code)]
mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const CUSTOMERS: usize = 24;

fn serve(dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        if let Some(i) = line.find("listening on http://") {
            return (child, line[i + "listening on http://".len()..].trim().to_owned());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("serve did not log its address");
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// What one customer was told was stored: seq → (clientActivityId, text).
#[derive(Default)]
struct Acked {
    conversation: String,
    token: String,
    acks: HashMap<u64, (String, String)>,
}

#[tokio::test]
async fn every_acknowledged_activity_survives_kill_9_and_every_conversation_resumes() {
    let dir = std::env::temp_dir().join(format!("switchboard-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut child, addr) = serve(&dir);

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..CUSTOMERS {
        let (addr, stop) = (addr.clone(), stop.clone());
        let record = Arc::new(Mutex::new(Acked::default()));
        let r = record.clone();
        tasks.push((
            record,
            tokio::spawn(async move {
                let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/chat")).await.unwrap();
                let start = json!({"type":"event","name":"session.start","value":{"workstream":"ChatWorkStream","user":{"name":format!("C{i}")}}});
                ws.send(Message::text(start.to_string())).await.unwrap();
                loop {
                    let v = next(&mut ws).await.expect("session.started");
                    if v["name"] == "session.started" {
                        let mut r = r.lock().await;
                        r.conversation = v["value"]["conversationId"].as_str().unwrap().to_owned();
                        r.token = v["value"]["token"].as_str().unwrap().to_owned();
                        break;
                    }
                }
                // Send until the gateway dies, a few messages in flight at a time.
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..3 {
                        n += 1;
                        let m = json!({"type":"message","text":format!("C{i} message {n} ✓"),"channelData":{"clientActivityId":format!("c{i}-{n}")}});
                        if ws.send(Message::text(m.to_string())).await.is_err() {
                            return;
                        }
                    }
                    let mut acked = 0;
                    while acked < 3 {
                        let Some(v) = next(&mut ws).await else { return };
                        if v["name"] == "ack" {
                            let cid = v["value"]["clientActivityId"].as_str().unwrap().to_owned();
                            let k: u64 = cid.rsplit('-').next().unwrap().parse().unwrap();
                            let text = format!("C{i} message {k} ✓");
                            r.lock().await.acks.insert(v["value"]["seq"].as_u64().unwrap(), (cid, text));
                            acked += 1;
                        }
                    }
                }
            }),
        ));
    }
    // Under load until every customer has had a few messages acknowledged.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut least = usize::MAX;
        for (record, _) in &tasks {
            least = least.min(record.lock().await.acks.len());
        }
        if least >= 6 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the load never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL: no shutdown, no flush
    child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for (_, t) in &mut tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }

    let (mut child, addr) = serve(&dir);
    let mut total = 0;
    for (record, _) in &tasks {
        let r = record.lock().await;
        assert!(!r.acks.is_empty(), "every customer got acknowledgements before the crash");
        total += r.acks.len();
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/chat")).await.unwrap();
        let resume = json!({"type":"event","name":"session.resume","value":{"conversationId":r.conversation,"token":r.token,"watermark":0}});
        ws.send(Message::text(resume.to_string())).await.unwrap();
        let started = next(&mut ws).await.unwrap();
        assert_eq!(started["name"], "session.started", "{started}");
        // Read the replay: seq 1..n without gaps or repeats.
        let mut by_seq: HashMap<u64, Value> = HashMap::new();
        let mut expected = 1;
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if let Some(seq) = v["seq"].as_u64() {
                assert_eq!(seq, expected, "replay in order without gaps");
                expected += 1;
                by_seq.insert(seq, v);
            }
        }
        common::check_acknowledged(&by_seq, &r.acks);
        // The conversation goes on: a new message is acknowledged with the next seq.
        let m = json!({"type":"message","text":"after the crash","channelData":{"clientActivityId":"after"}});
        ws.send(Message::text(m.to_string())).await.unwrap();
        loop {
            let v = next(&mut ws).await.expect("ack after restart");
            if v["name"] == "ack" {
                assert!(v["value"]["seq"].as_u64().unwrap() >= expected);
                break;
            }
        }
    }
    assert!(total >= CUSTOMERS * 3, "a real load ran: {total} acknowledged activities");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The answer to a resume can die with the gateway: its new token is stored, the client
/// never read it. After the restart the token the client still has resumes.
#[tokio::test]
async fn a_resume_answered_just_before_a_crash_does_not_lock_the_customer_out() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = serve(dir.path());
    let url = format!("ws://{addr}/v1/chat");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let start =
        json!({"type":"event","name":"session.start","value":{"workstream":"ChatWorkStream","user":{"name":"Ann"}}});
    ws.send(Message::text(start.to_string())).await.unwrap();
    let (conv, token) = loop {
        let v = next(&mut ws).await.expect("session.started");
        if v["name"] == "session.started" {
            break (
                v["value"]["conversationId"].as_str().unwrap().to_owned(),
                v["value"]["token"].as_str().unwrap().to_owned(),
            );
        }
    };
    drop(ws);
    let resume =
        json!({"type":"event","name":"session.resume","value":{"conversationId":conv,"token":token,"watermark":0}});
    // Resumed: the answer's new token is what the client loses.
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    ws.send(Message::text(resume.to_string())).await.unwrap();
    loop {
        let v = next(&mut ws).await.expect("an answer to the resume");
        assert_ne!(v["name"], "error", "{v}");
        if v["name"] == "session.started" {
            break;
        }
    }
    // An acknowledged message after it: the store has everything before it, the new
    // token's generation included.
    let m = json!({"type":"message","text":"still there?","channelData":{"clientActivityId":"m1"}});
    ws.send(Message::text(m.to_string())).await.unwrap();
    while next(&mut ws).await.expect("the ack")["name"] != "ack" {}
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(ws);

    let (mut child, addr) = serve(dir.path());
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/chat")).await.unwrap();
    ws.send(Message::text(resume.to_string())).await.unwrap();
    let started = next(&mut ws).await.expect("an answer after the restart");
    assert_eq!(started["name"], "session.started", "{started}");
    let mut texts = Vec::new();
    while let Some(v) = next(&mut ws).await {
        if let Some(t) = v["text"].as_str() {
            texts.push(t.to_owned());
            if t == "still there?" {
                break;
            }
        }
    }
    assert!(texts.iter().any(|t| t == "still there?"), "the replay has the acknowledged message: {texts:?}");
    let _ = child.kill();
    let _ = child.wait();
}
