//! `kill -9` of the real binary in the middle of a Direct Line conversation, then a restart
//! on the same data directory and port: the unmodified `botframework-directlinejs` client
//! (`tests/interop/directline/customer.js`, WebSocket mode) reconnects by itself and
//! resumes from its watermark; the agent's terminal client reconnects too; nothing
//! acknowledged before the crash is lost and nothing is seen twice.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::Proc;
use serde_json::Value;

const SECRET: &str = "dl-restart-secret-0123456789";

/// A step of a client that reconnects after a restart (directlinejs waits 3 s, then retries
/// every 3 s; the agent client backs off up to 5 s), on a loaded machine.
const STEP: Duration = Duration::from_secs(60);

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/interop/directline")
}

fn serve(config: &Path, dir: &Path, listen: &str) -> (Proc, String) {
    let (config, dir) = (config.to_string_lossy(), dir.to_string_lossy());
    let mut server = Proc::spawn(&["serve", "--config", &config, "--listen", listen, "--data-dir", &dir], true);
    let addr = server.listening_address();
    (server, addr)
}

/// The JSON of a line of the Node client that has `"event":"<event>"`.
fn node_event(node: &mut Proc, event: &str) -> Value {
    let line = node.expect_within(&format!("\"event\":\"{event}\""), STEP);
    serde_json::from_str(&line).unwrap()
}

#[test]
fn a_direct_line_client_resumes_after_kill_9_without_losing_or_repeating() {
    let modules = interop_dir().join("node_modules/botframework-directlinejs");
    assert!(modules.is_dir(), "{} is missing: run `npm ci` there (scripts/test.sh does)", modules.display());
    let tmp = std::env::temp_dir().join(format!("switchboard-dl-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let config = tmp.join("switchboard.toml");
    let toml = format!(
        "{}\n[directline]\nsecret = \"{SECRET}\"\nworkstream = \"ChatWorkStream\"\n",
        switchboard::config::DEFAULT_TOML
    );
    std::fs::write(&config, toml).unwrap();
    let data = tmp.join("data");

    let (mut server, addr) = serve(&config, &data, "127.0.0.1:0");
    let url = format!("http://{addr}");
    let mut alice = Proc::spawn(&["agent", "--url", &url, "--id", "alice"], false);
    alice.expect("Signed in as alice (available)");

    let mut cmd = Command::new("node");
    cmd.arg("customer.js")
        .current_dir(interop_dir())
        .env("SB_DOMAIN", format!("{url}/v3/directline"))
        .env("SB_SECRET", SECRET)
        .env("SB_MODE", "websocket")
        .env("SB_SCENARIO", "restart");
    let mut node = Proc::spawn_with(cmd, false);

    // The built-in bot hands the customer to alice, who greets them.
    alice.expect_within("(now talking in #1 with", STEP);
    alice.type_line("Hello, this is Alice.");
    let ready = node_event(&mut node, "ready");
    let before: u64 = ready["watermark"].as_str().unwrap().parse().unwrap();
    assert!(before >= 7, "the bot's part, the handoff and the agent's greeting were delivered: {ready}");

    // SIGKILL: no shutdown, no flush. Then the same data directory on the same port.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let (_server, addr2) = serve(&config, &data, &addr);
    assert_eq!(addr2, addr);

    alice.expect_within("[reconnected; signed in as alice", STEP);
    // Alice's conversation comes back to her, and the customer's message acknowledged just
    // before the crash reached her (live before the crash, or in the resumed transcript).
    alice.expect_within("(now talking in #1 with", STEP);
    assert!(alice.seen.iter().any(|l| l.contains("sent just before the crash")), "{:#?}", alice.seen);
    alice.type_line("I'm back after the restart.");
    node.type_line("go");
    alice.expect_within("still there?", STEP);
    alice.type_line("Yes, still here.");
    let done = node_event(&mut node, "done");
    let count = done["count"].as_u64().unwrap();
    let after = done["afterSeq"].as_u64().unwrap();
    assert!(after > before, "the agent's message after the restart continues the transcript: {done}");
    // Every activity once, seq 1..count without a gap (checked by the client), through
    // the customer's last message and the agent's answer.
    assert!(count >= after + 2, "{done}");
    assert_eq!(node.wait_exit(), Some(0));
    let _ = std::fs::remove_dir_all(&tmp);
}
