//! SIGHUP through the real binary: `serve --config FILE` re-reads the file, applies a good
//! change at once (the admin API shows it) and refuses a bad one with check-config's lines
//! in the log, changing nothing. The log is `--log-format json`: one JSON object a line.

// Shared with the tests that type into the binary; this one only reads its log.
#[allow(dead_code)]
mod common;

use std::io::{Read, Write};
use std::process::Command;

use common::{BIN, Proc};
use serde_json::Value;

const TOKEN: &str = "reload-admin-token";

fn get(addr: &str, path: &str) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {TOKEN}\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("reads the answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn queue_names(addr: &str) -> Vec<String> {
    let (status, v) = get(addr, "/v1/admin/queues");
    assert_eq!(status, 200, "{v}");
    v["queues"].as_array().unwrap().iter().map(|q| q["name"].as_str().unwrap().to_owned()).collect()
}

fn hup(p: &Proc) {
    let ok = Command::new("kill").args(["-HUP", &p.child.id().to_string()]).status().expect("kill runs").success();
    assert!(ok, "kill -HUP failed");
}

#[test]
fn sighup_rereads_the_config_file_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let base = include_str!("../../examples/external-bot.toml")
        .replace("listen = \"127.0.0.1:8080\"\n", &format!("listen = \"127.0.0.1:0\"\nadmin_token = \"{TOKEN}\"\n"));
    let file = dir.path().join("switchboard.toml");
    std::fs::write(&file, &base).unwrap();
    let data = dir.path().join("data");
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--log-format", "json", "--config"])
        .arg(&file)
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "info");
    let mut p = Proc::spawn_with(cmd, true);
    let line = p.expect("listening on http://");
    let log: Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(log["level"], "INFO", "{log}");
    let msg = log["fields"]["message"].as_str().expect("a message field");
    let addr = msg.trim_start_matches("listening on http://").to_owned();
    assert!(!queue_names(&addr).contains(&"VipQueue".to_owned()));

    // A good change: a new queue, applied on SIGHUP.
    let good = format!("{base}\n[[queues]]\nname = \"VipQueue\"\nmembers = [\"alice\"]\n");
    std::fs::write(&file, &good).unwrap();
    hup(&p);
    p.expect("new configuration applied");
    assert!(queue_names(&addr).contains(&"VipQueue".to_owned()));

    // A bad one: each problem logged as check-config words it, and nothing changes.
    let bad = good.replace("members = [\"alice\"]", "members = [\"nobody\"]");
    let want = switchboard::load::config_text(&bad).expect_err("the bad config is bad").0;
    std::fs::write(&file, &bad).unwrap();
    hup(&p);
    for problem in &want {
        // As the JSON log writes it (quotes escaped).
        let json = serde_json::to_string(problem).unwrap();
        let line = p.expect(&json[1..json.len() - 1]);
        assert!(line.contains("ERROR"), "{line}");
    }
    p.expect("refused; nothing changed");
    assert!(queue_names(&addr).contains(&"VipQueue".to_owned()));
    let (status, v) = get(&addr, "/v1/admin/config");
    assert_eq!(status, 200);
    assert!(v["config"]["queues"].as_array().unwrap().iter().any(|q| q["members"][0] == "alice"), "{v}");

    // SIGTERM still stops it cleanly.
    Command::new("kill").args(["-TERM", &p.child.id().to_string()]).status().unwrap();
    assert_eq!(p.wait_exit(), Some(0));
}

/// Each conversation has a span of its own in the log (`conversation.id`, `workstream`):
/// its start and its end are logged inside it, with the JSON format's span fields.
#[test]
fn a_conversation_has_its_own_span_in_the_json_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--log-format", "json", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info");
    let mut p = Proc::spawn_with(cmd, true);
    let line = p.expect("listening on http://");
    let log: Value = serde_json::from_str(&line).expect("a JSON log line");
    let addr = log["fields"]["message"].as_str().unwrap().trim_start_matches("listening on http://").to_owned();

    let mut ann = Proc::spawn(&["chat", "--url", &format!("ws://{addr}"), "--name", "Ann"], false);
    ann.expect("contoso-bot: Hi Ann");
    let started: Value = serde_json::from_str(&p.expect("conversation started")).unwrap();
    assert_eq!(started["span"]["name"], "conversation", "{started}");
    let id = started["span"]["conversation.id"].as_str().expect("the span names the conversation").to_owned();
    assert!(id.starts_with("c_"), "{started}");
    assert_eq!(started["span"]["workstream"], "ChatWorkStream", "{started}");
    assert_eq!(started["fields"]["channel"], "chat", "{started}");

    ann.type_line("/end");
    let closed: Value = serde_json::from_str(&p.expect("conversation closed")).unwrap();
    assert_eq!(closed["span"]["conversation.id"], id.as_str(), "{closed}");

    Command::new("kill").args(["-TERM", &p.child.id().to_string()]).status().unwrap();
    assert_eq!(p.wait_exit(), Some(0));
}
