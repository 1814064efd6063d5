//! The web console in a real browser: Debian's Chromium driven headless by `playwright-core`
//! (`tests/interop/console/console.js`; `scripts/test.sh` installs both), on the built-in
//! default configuration. A chat: a customer on the widget page, the built-in bot's
//! handoff, an agent on the agent page who replies and ends with a survey, the customer's
//! rating, and the supervisor page with the queues, the agents and the conversation's
//! routing history. A phone call: a Twilio Media Streams caller (this test) presses 1 in
//! the voice menu and is answered on the agent page, which plays the caller's tone and
//! sends Chromium's fake microphone back, which the caller hears; and the same call placed
//! from the console's phone page. Screenshots of every page are kept in
//! `target/screenshots/`.

use std::f64::consts::PI;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_codecs::g711::ulaw;
use switchboard_tests::interop::{NODE_WAIT, project_dir};
use switchboard_tests::{TestServer, start_server};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio_tungstenite::tungstenite::Message;

/// The built-in default configuration's demo admin token.
const ADMIN_TOKEN: &str = "admin-demo-token";

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots")
}

/// The browser script, and the JSON lines it prints.
struct Browser {
    child: Child,
    out: Lines<BufReader<ChildStdout>>,
    said: Vec<Value>,
}

impl Browser {
    fn start(server: &TestServer, env: &[(&str, &str)]) -> Result<Browser> {
        let dir = project_dir("console");
        if !dir.join("node_modules/playwright-core").is_dir() {
            bail!("{} has no node_modules: run `npm ci` there (scripts/test.sh does)", dir.display());
        }
        let shots = screenshots();
        std::fs::create_dir_all(&shots)?;
        let mut cmd = Command::new("node");
        cmd.arg("console.js")
            .current_dir(&dir)
            .env("SB_URL", format!("http://{}", server.addr))
            .env("SB_SHOTS", &shots)
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("node runs (scripts/test.sh installs it)")?;
        let out = BufReader::new(child.stdout.take().context("stdout")?).lines();
        Ok(Browser { child, out, said: Vec::new() })
    }

    /// Reads lines until the step `want`; an error in the script or the page fails the test.
    async fn until(&mut self, want: &str) -> Result<Value> {
        loop {
            let line = tokio::time::timeout(NODE_WAIT * 2, self.out.next_line())
                .await
                .with_context(|| format!("the browser said nothing while we waited for {want}: {:?}", self.said))??
                .with_context(|| format!("the browser script ended before {want}: {:?}", self.said))?;
            let v: Value = serde_json::from_str(&line).with_context(|| format!("the script printed {line:?}"))?;
            match v["event"].as_str() {
                Some("error" | "pageerror") => bail!("in the browser: {}", v["message"]),
                Some(e) if e == want => {
                    self.said.push(v.clone());
                    return Ok(v);
                }
                _ => self.said.push(v),
            }
        }
    }

    async fn finish(mut self) -> Result<Vec<Value>> {
        self.until("done").await?;
        let status = tokio::time::timeout(NODE_WAIT, self.child.wait()).await??;
        assert!(status.success(), "the browser script exited with {status}: {:?}", self.said);
        Ok(self.said)
    }
}

fn screenshot_taken(page: &str) -> Result<()> {
    let png = std::fs::read(screenshots().join(format!("{page}.png")))?;
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "a screenshot of the {page} page");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_an_agent_and_a_supervisor_run_the_seed_sample_in_the_browser() -> Result<()> {
    let config = switchboard::config::DEFAULT_TOML;
    assert!(config.contains(ADMIN_TOKEN), "the default configuration has the demo admin token");
    let server = start_server(Some(config)).await;
    let said = Browser::start(&server, &[("SB_ADMIN_TOKEN", ADMIN_TOKEN)])?.finish().await?;
    assert!(said.iter().any(|v| v["handedOver"] == true), "the bot handed the customer over: {said:?}");
    assert!(said.iter().any(|v| v["replied"] == true), "the agent's reply reached the customer: {said:?}");
    assert!(said.iter().any(|v| v["rated"] == 5), "the customer rated after the agent ended: {said:?}");
    let routing = said.iter().find(|v| v["event"] == "supervisor").context("the supervisor step")?;
    let rows: Vec<&str> =
        routing["routing"].as_array().context("routing rows")?.iter().filter_map(Value::as_str).collect();
    assert!(rows.iter().any(|r| r.contains("BotQueue")), "the first decision sent it to the bot: {rows:?}");
    assert!(
        rows.iter().any(|r| r.contains("escalation") && r.contains("alice")),
        "the escalation went to alice: {rows:?}"
    );
    for page in ["start", "agent", "widget", "supervisor"] {
        screenshot_taken(page)?;
    }
    Ok(())
}

/// `ms` of a sine at `freq` and `amplitude` (of full scale), 16-bit samples at `rate`.
fn sine(rate: u32, freq: f64, amplitude: f64, ms: u32) -> Vec<i16> {
    let n = rate * ms / 1000;
    (0..n).map(|i| (amplitude * 32767.0 * (2.0 * PI * freq * f64::from(i) / f64::from(rate)).sin()) as i16).collect()
}

/// How much of a frame's energy is at `freq` (Goertzel), 0 to 1.
fn tone_share(samples: &[i16], rate: f64, freq: f64) -> f64 {
    let w = 2.0 * PI * freq / rate;
    let (mut s1, mut s2) = (0.0, 0.0);
    let mut energy = 0.0;
    for &x in samples {
        let x = f64::from(x);
        energy += x * x;
        let s0 = x + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
    if energy < 1.0 { 0.0 } else { (2.0 * power / (samples.len() as f64 * energy)).min(1.0) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_answers_a_phone_call_in_the_browser() -> Result<()> {
    // Chromium's fake microphone: a steady 1 kHz tone, which the caller must hear.
    let dir = tempfile::tempdir()?;
    let mic = dir.path().join("mic.wav");
    switchboard_tests::write_wav(&mic, 48_000, 1, sine(48_000, 1000.0, 0.5, 20_000))?;

    let server = start_server(Some(switchboard::config::DEFAULT_TOML)).await;
    let mic_path = mic.to_string_lossy().into_owned();
    let mut browser = Browser::start(&server, &[("SB_SCENARIO", "voice"), ("SB_FAKE_AUDIO", &mic_path)])?;
    browser.until("ready").await?;

    // The caller, speaking Twilio's Media Streams: a 400 Hz tone, 20 ms of µ-law at a time.
    let url = format!("ws://{}/v1/voice/twilio/VoiceWorkStream", server.addr);
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
    let (mut tx, mut rx) = ws.split();
    let sid = "MZ0000000000000000000000000000test";
    tx.send(Message::text(json!({"event":"connected","protocol":"Call","version":"1.0.0"}).to_string())).await?;
    tx.send(Message::text(
        json!({"event":"start","sequenceNumber":"1","streamSid":sid,"start":{"streamSid":sid,"accountSid":"AC0","callSid":"CA0",
               "tracks":["inbound"],"customParameters":{},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}})
        .to_string(),
    ))
    .await?;
    let (to_send, mut outbox) = tokio::sync::mpsc::unbounded_channel::<String>();
    let sender = tokio::spawn(async move {
        let tone = sine(8000, 400.0, 0.3, 20);
        let mut frame = Vec::new();
        ulaw::encode_into(&tone, &mut frame);
        let payload = base64::engine::general_purpose::STANDARD.encode(&frame);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for seq in 2u64.. {
            tokio::select! {
                _ = tick.tick() => {
                    let m = json!({"event":"media","sequenceNumber":seq.to_string(),"streamSid":sid,
                                   "media":{"track":"inbound","chunk":seq.to_string(),"timestamp":(seq * 20).to_string(),"payload":payload}});
                    if tx.send(Message::text(m.to_string())).await.is_err() { return; }
                }
                m = outbox.recv() => match m {
                    Some(m) => { if tx.send(Message::text(m)).await.is_err() { return; } }
                    None => return,
                },
            }
        }
    });

    // The menu answers (its chime); the caller presses 1 for credit cards: alice's queue.
    let heard = |m: &Message| -> Option<Vec<i16>> {
        let v: Value = serde_json::from_str(m.to_text().ok()?).ok()?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(v["media"]["payload"].as_str()?).ok()?;
        let mut pcm = Vec::new();
        ulaw::decode_into(&bytes, &mut pcm);
        Some(pcm)
    };
    let next_media = async |rx: &mut futures_util::stream::SplitStream<_>| -> Result<Vec<i16>> {
        loop {
            let m = tokio::time::timeout(NODE_WAIT, rx.next()).await?.context("the call leg closed")??;
            if let Some(pcm) = heard(&m) {
                return Ok(pcm);
            }
        }
    };
    next_media(&mut rx).await?;
    to_send.send(
        json!({"event":"dtmf","streamSid":sid,"sequenceNumber":"9","dtmf":{"track":"inbound_track","digit":"1"}})
            .to_string(),
    )?;

    // The page heard the caller and sends its microphone; the caller hears the 1 kHz tone.
    let call = browser.until("call").await?;
    let stats = &call["stats"];
    assert!(stats["peakIn"].as_f64().unwrap_or(0.0) > 0.05, "the page played the caller's audio: {stats}");
    let mut toned = 0;
    for _ in 0..500 {
        let pcm = next_media(&mut rx).await?;
        if tone_share(&pcm, 8000.0, 1000.0) > 0.5 {
            toned += 1;
            if toned >= 10 {
                break;
            }
        }
    }
    assert!(toned >= 10, "the caller heard the agent's microphone (1 kHz) in {toned} frames");

    to_send.send(
        json!({"event":"stop","sequenceNumber":"999","streamSid":sid,"stop":{"accountSid":"AC0","callSid":"CA0"}})
            .to_string(),
    )?;
    browser.finish().await?;
    sender.abort();
    screenshot_taken("call")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_placed_from_the_phone_page_reaches_the_agent_page() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mic = dir.path().join("mic.wav");
    switchboard_tests::write_wav(&mic, 48_000, 1, sine(48_000, 1000.0, 0.5, 20_000))?;
    let server = start_server(Some(switchboard::config::DEFAULT_TOML)).await;
    let mic_path = mic.to_string_lossy().into_owned();
    let said = Browser::start(&server, &[("SB_SCENARIO", "phone"), ("SB_FAKE_AUDIO", &mic_path)])?.finish().await?;
    let call = said.iter().find(|v| v["event"] == "phone").context("the call step")?;
    assert!(call["agent"]["peakIn"].as_f64().unwrap_or(0.0) > 0.05, "the agent heard the caller's microphone: {call}");
    assert!(call["caller"]["framesOut"].as_u64().unwrap_or(0) > 50, "the phone page sent its microphone: {call}");
    assert!(call["caller"]["framesIn"].as_u64().unwrap_or(0) > 10, "the phone page played the menu: {call}");
    screenshot_taken("phone")
}
