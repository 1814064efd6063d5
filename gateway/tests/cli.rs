//! The `switchboard` binary itself: check-config, route, and serve with graceful shutdown.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

// The child-process helper shared with the other tests of the binary.
#[allow(dead_code)]
mod common;

const BIN: &str = common::BIN;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A configuration file named after `name`, removed when the returned path is dropped.
fn write_config(name: &str, text: &str) -> tempfile::TempPath {
    let mut f = tempfile::Builder::new().prefix(name).suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.into_temp_path()
}

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/switchboard.toml");

#[test]
fn check_config_accepts_the_example_with_a_summary() {
    let (code, out, _) = run(&["check-config", EXAMPLE]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("ok: 2 workstream(s), 6 rule(s), 5 queue(s), 2 bot(s), 3 agent(s)"), "{out}");
}

#[test]
fn check_config_lists_every_problem_on_its_own_line() {
    let text = std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .replacen(r#"members = ["carol"]"#, r#"members = ["carol", "zed"]"#, 1)
        .replacen(r#"when = 'BotHandoffTopic == "HomeLoan"'"#, r#"when = 'BotHandoffTopic = "HomeLoan"'"#, 1)
        .replacen(r#"queue = "CreditCardQueue""#, r#"queue = "CardQueue""#, 1)
        + "\n[[agents]]\nid = \"alice\"\nsecret = \"x\"\n";
    let p = write_config("bad.toml", &text);
    let (code, out, err) = run(&["check-config", p.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    for want in [
        r#"queue "HomeLoanQueue": unknown member "zed""#,
        r#"workstream "ChatWorkStream" rule "HomeLoanRule": when: unexpected '=' (did you mean "=="?) at column 17"#,
        r#"workstream "ChatWorkStream" rule "CreditCardRule": unknown queue "CardQueue""#,
        r#"agent "alice": duplicate id (already used by an agent)"#,
    ] {
        assert!(lines.contains(&want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn check_config_refuses_a_directline_section_it_cannot_serve() {
    let example = std::fs::read_to_string(EXAMPLE).unwrap();
    let ok = write_config(
        "dl-ok.toml",
        &format!("{example}\n[directline]\nsecret = \"s\"\nworkstream = \"ChatWorkStream\"\n"),
    );
    assert_eq!(run(&["check-config", ok.to_str().unwrap()]).0, 0);
    let bad = format!("{example}\n[directline]\nsecret_env = \"SWITCHBOARD_TEST_UNSET_DL\"\nworkstream = \"Web\"\n");
    let p = write_config("dl-bad.toml", &bad);
    let (code, out, err) = run(&["check-config", p.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [
            "directline: environment variable SWITCHBOARD_TEST_UNSET_DL (secret_env) is not set",
            r#"directline: unknown workstream "Web""#,
        ],
        "{err}"
    );
    let voice = format!("{example}\n[directline]\nsecret = \"s\"\nworkstream = \"VoiceWorkStream\"\n");
    let (code, _, err) = run(&["check-config", write_config("dl-voice.toml", &voice).to_str().unwrap()]);
    assert_eq!((code, err.trim()), (1, r#"directline: workstream "VoiceWorkStream" is a voice workstream"#));
}

#[test]
fn check_config_warns_about_a_bot_without_the_highest_capacity() {
    let text = std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .replace(r#"members = ["contoso-bot"]"#, r#"members = ["contoso-bot", "alice"]"#)
        .replace("capacity = 1000", "capacity = 2");
    let p = write_config("warn.toml", &text);
    let (code, out, _) = run(&["check-config", p.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains(r#"warning: queue "BotQueue": bot "contoso-bot" (capacity 2) does not have the highest capacity (agent "alice" has 3)"#), "{out}");
}

#[test]
fn route_dry_run_prints_the_rule_and_queue() {
    let cases: [(&[&str], &str); 4] = [
        (&[], r#"{"rule":"BotRule","queue":"BotQueue"}"#),
        (&["--var", "BotHandoffTopic=CreditCard"], r#"{"rule":"CreditCardRule","queue":"CreditCardQueue"}"#),
        (&["--var", "BotHandoffTopic=HomeLoan"], r#"{"rule":"HomeLoanRule","queue":"HomeLoanQueue"}"#),
        (&["--var", "BotHandoffTopic=Pets"], r#"{"rule":null,"queue":"GeneralQueue"}"#),
    ];
    for (vars, want) in cases {
        let mut args = vec!["route", "--config", EXAMPLE, "--workstream", "ChatWorkStream", "--json"];
        args.extend_from_slice(vars);
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.trim(), want);
    }
    let (code, out, _) = run(&["route", "--workstream", "ChatWorkStream", "--var", "BotHandoffTopic=CreditCard"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), r#"rule "CreditCardRule" matched: queue "CreditCardQueue""#);
    let (code, _, err) = run(&["route", "--workstream", "Nope"]);
    assert_eq!((code, err.trim()), (1, r#"unknown workstream "Nope""#));
}

#[tokio::test]
async fn serve_logs_its_port_and_shuts_down_gracefully_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
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
    let addr = loop {
        let line = rx.recv_timeout(Duration::from_secs(10)).expect("serve logs its address");
        if let Some(i) = line.find("listening on http://") {
            break line[i + "listening on http://".len()..].trim().to_owned();
        }
    };
    assert!(!addr.ends_with(":0"), "the real port: {addr}");

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/chat")).await.unwrap();
    ws.send(Message::text(r#"{"type":"event","name":"session.start","value":{"workstream":"ChatWorkStream"}}"#))
        .await
        .unwrap();
    let started = ws.next().await.unwrap().unwrap();
    assert!(started.to_text().unwrap().contains("session.started"));

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    // The client is told goodbye with 1001 "going away".
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("closed in time") {
            Some(Ok(Message::Close(f))) => break f.map(|f| f.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, Some(CloseCode::Away));
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn check_config_catches_invalid_topics() {
    let text = std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .replace(r#"    variable = "CardIssue""#, "")
        .replace(r#"    end = "survey""#, r#"    end = "maybe""#)
        .replace(r#"  triggers = ["opening hours", "hours", "branch open", "when close"]"#, "")
        + "\n[[bots.topics]]\nname = \"Loop\"\ntriggers = [\"loop\"]\n  [[bots.topics.nodes]]\n  goto = \"Nowhere\"\n  [[bots.topics.nodes]]\n  message = \"a\"\n  end = \"survey\"\n";
    let p = write_config("topics.toml", &text);
    let (code, out, err) = run(&["check-config", p.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    for want in [
        r#"bot "contoso-bot" topic "Lost or stolen card" node 2: a question needs a variable to store the answer"#,
        r#"bot "contoso-bot" topic "Goodbye" node 2: end must be "survey" or "conversation", not "maybe""#,
        r#"bot "contoso-bot" topic "Opening hours": needs trigger phrases (or dtmf) to ever start"#,
        r#"bot "contoso-ivr" topic "Loop" node 2: needs exactly one of message, question, transfer, end, goto"#,
        r#"bot "contoso-ivr" topic "Loop" node 1: goto unknown topic "Nowhere""#,
    ] {
        assert!(err.lines().any(|l| l == want), "missing {want:?} in:\n{err}");
    }
    assert_eq!(err.lines().count(), 5, "{err}");
}

/// The example configuration with the voice workstream's `hold_audio` set to `path`.
fn with_hold_audio(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let line = format!("hold_audio = {:?}", path.to_str().unwrap());
    let with = text.replacen(r#"# hold_audio = "hold.wav""#, &line, 1);
    assert_ne!(with, text, "the example has a commented hold_audio line");
    with
}

/// One second of a 440 Hz sine, 16-bit stereo at 44.1 kHz: what a music library exports.
fn cd_quality_wav(path: &std::path::Path) {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..44100 {
        let s = (12000.0 * (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 44100.0).sin()) as i16;
        w.write_sample(s).unwrap();
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

#[test]
fn check_config_takes_a_44_1_khz_hold_audio_wav() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("hold music.wav");
    cd_quality_wav(&wav);
    let cfg = dir.path().join("switchboard.toml");
    std::fs::write(&cfg, with_hold_audio(&wav)).unwrap();
    let (code, out, err) = run(&["check-config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("ok: 2 workstream(s)"), "{out}");
}

#[test]
fn check_config_and_serve_refuse_hold_audio_the_gateway_cannot_play() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("hold.wav");
    std::fs::write(&text, "Please hold, your call is important to us.\n").unwrap();
    let empty = dir.path().join("empty.wav");
    let spec =
        hound::WavSpec { channels: 1, sample_rate: 8000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    hound::WavWriter::create(&empty, spec).unwrap().finalize().unwrap();
    let missing = dir.path().join("missing.wav");
    let cases = [
        (&text, "not a WAV file (no RIFF tag found)".to_owned()),
        (&empty, "the file holds no audio (0 samples)".to_owned()),
        (&missing, "cannot read: No such file or directory (os error 2)".to_owned()),
    ];
    for (wav, why) in cases {
        let cfg = dir.path().join("switchboard.toml");
        std::fs::write(&cfg, with_hold_audio(wav)).unwrap();
        let want = format!(r#"workstream "VoiceWorkStream": hold_audio {}: {why}"#, wav.display());
        let (code, out, err) = run(&["check-config", cfg.to_str().unwrap()]);
        assert_eq!(code, 1, "{out}{err}");
        assert_eq!(err.lines().collect::<Vec<_>>(), vec![want.as_str()], "{err}");
        // serve refuses the same configuration with the same line, before it listens.
        let data = dir.path().join("data");
        let (code, _, err) = run(&[
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        assert_eq!(code, 1, "{err}");
        assert!(err.lines().any(|l| l == want), "{err}");
    }
}

/// Two gateways on one data directory would both serve, and each recover, the same
/// conversations: the second is refused, saying why, and the first goes on.
#[tokio::test]
async fn a_second_gateway_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut first = common::Proc::spawn(&["serve", "--listen", "127.0.0.1:0", "--data-dir", data], true);
    let addr = first.listening_address();

    let mut second = common::Proc::spawn(&["serve", "--listen", "127.0.0.1:0", "--data-dir", data], true);
    let code = second.wait_exit();
    assert!(code.is_some_and(|c| c != 0), "the second gateway must not serve: {code:?}");
    second.expect("is in use by another gateway");

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/chat")).await.unwrap();
    ws.send(Message::text(r#"{"type":"event","name":"session.start","value":{"workstream":"ChatWorkStream"}}"#))
        .await
        .unwrap();
    assert!(ws.next().await.unwrap().unwrap().to_text().unwrap().contains("session.started"));
}

/// With `RUST_LOG` unset the gateway logs at `info`, and a connection's log lines carry
/// its span (the log filter is a `Targets` one then, not an `EnvFilter`: both must enter
/// the span on every poll of the connection's task).
#[tokio::test]
async fn serve_logs_at_info_by_default_with_each_connections_span() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir"])
        .arg(dir.path())
        .env_remove("RUST_LOG");
    let mut gw = common::Proc::spawn_with(cmd, true);
    let line = gw.expect("listening on http://");
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(v["level"], "INFO", "{line}");
    let addr = line[line.find("listening on http://").unwrap() + "listening on http://".len()..]
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .to_owned();

    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    let body = "grant_type=client_credentials&client_id=alice&client_secret=alice-demo-secret";
    write!(
        s,
        "POST /v1/token HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut s, &mut text).unwrap();
    let token: serde_json::Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
    let token = token["access_token"].as_str().expect("a token");

    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{addr}/v1/agent").into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    gw.expect("member connected");
    ws.close(None).await.unwrap();
    // Logged by the connection's reader as it ends, inside the connection's span.
    let line = gw.expect("member disconnected");
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(v["span"]["name"], "connection", "{line}");
    assert_eq!(v["span"]["peer.role"], "agent", "{line}");
    assert_eq!(v["span"]["peer.id"], "alice", "{line}");
    assert!(gw.seen.iter().all(|l| !l.contains("\"DEBUG\"")), "nothing below info: {:?}", gw.seen);
}

/// Twilio has no error event, so a Twilio caller's refused messages are logged, not sent.
/// A caller sending nothing but bad ones (up to 60 a second, each up to the frame limit)
/// costs the log one warning for its call, cut short, and one count when the call ends:
/// not a line per message quoting what it sent.
#[tokio::test]
async fn a_twilio_caller_sending_bad_messages_costs_the_log_one_warning_per_call() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut gw = common::Proc::spawn(&["serve", "--listen", "127.0.0.1:0", "--data-dir", data], true);
    let addr = gw.listening_address();

    let url = format!("ws://{addr}/v1/voice/twilio/VoiceWorkStream");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let sid = "MZ00000000000000000000000000000001";
    ws.send(Message::text(r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#)).await.unwrap();
    let start = serde_json::json!({"event": "start", "streamSid": sid,
        "start": {"streamSid": sid, "callSid": "CA1", "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}});
    ws.send(Message::text(start.to_string())).await.unwrap();
    gw.expect("conversation started");

    // 100 refusals, within the leg's burst of messages (so none is refused for its rate):
    // unknown events named by 20,000 characters, malformed JSON, media that is not base64.
    let long = "x".repeat(20_000);
    for i in 0..100 {
        let bad = match i % 3 {
            0 => serde_json::json!({"event": long, "streamSid": sid}).to_string(),
            1 => format!("{{\"event\":\"{long}"),
            _ => serde_json::json!({"event": "media", "streamSid": sid, "media": {"payload": "!!!"}}).to_string(),
        };
        ws.send(Message::text(bad)).await.unwrap();
    }
    ws.send(Message::text(serde_json::json!({"event": "stop", "streamSid": sid}).to_string())).await.unwrap();

    let total = gw.expect("were refused in all");
    assert!(total.contains(" 100 of the caller's messages"), "{total}");
    let refused: Vec<&String> = gw.seen.iter().filter(|l| l.contains("message refused")).collect();
    assert_eq!(refused.len(), 1, "one warning for the call: {refused:?}");
    assert!(refused[0].contains("WARN") && refused[0].contains("unknown event \"xxx"), "{}", refused[0]);
    assert!(gw.seen.iter().all(|l| l.len() < 1_000), "no line quotes a whole message");
}
