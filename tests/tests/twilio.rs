//! A Twilio Media Streams call placed by `streamdouble` (a simulator nobody here wrote,
//! installed from PyPI by the test command) through `/v1/voice/twilio/{workstream}` to a
//! test voice bot: the protocol, 1x pacing, marks echoed after playback, and the reply
//! audio the caller heard.

use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::{Value, json};
use switchboard_codecs::{Format, Transcoder};
use switchboard_tests::{Client, EXTERNAL_BOT, Frame, start_server};

fn config() -> String {
    format!(
        r#"{EXTERNAL_BOT}
[[workstreams]]
name = "VoiceWorkStream"
channel = "voice"
fallback_queue = "VoiceBotQueue"
context_variables = [ {{ name = "CustomerPhoneNumber", type = "text" }} ]

[[queues]]
name = "VoiceBotQueue"
members = ["voice-bot"]

[[bots]]
name = "voice-bot"
app_id = "voice-app"
secret = "voice-secret"
voice = true
"#
    )
}

fn wav_8k(samples: &[i16]) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes()); // PCM
    w.extend_from_slice(&1u16.to_le_bytes()); // mono
    w.extend_from_slice(&8000u32.to_le_bytes());
    w.extend_from_slice(&16000u32.to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        w.extend_from_slice(&s.to_le_bytes());
    }
    w
}

fn sine(rate: usize, freq: f64, ms: usize) -> Vec<i16> {
    (0..rate * ms / 1000)
        .map(|i| (6000.0 * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin()) as i16)
        .collect()
}

#[tokio::test]
async fn streamdouble_calls_through_the_twilio_endpoint() -> Result<()> {
    let s = start_server(Some(&config())).await;
    let token = s.token("voice-app", "voice-secret").await?;
    let mut bot = Client::connect(&format!("{}?audio=l16/16000", s.ws_url("/v1/bot")), Some(&token)).await?;

    // The bot: greet with one second of 440 Hz and a mark, and count the caller's audio.
    let bot_task = tokio::spawn(async move {
        let mut context = Value::Null;
        let mut caller_frames = 0;
        let mut mark = None;
        loop {
            match tokio::time::timeout(Duration::from_secs(20), bot.frame()).await {
                Ok(Ok(Frame::Text(v))) if v["name"] == "conversation.assigned" && v["seq"].is_null() => {
                    context = v["value"]["context"].clone();
                    let stream = v["value"]["media"]["stream"].as_u64().unwrap() as u32;
                    let pcm: Vec<u8> = sine(16000, 440.0, 1000).iter().flat_map(|s| s.to_le_bytes()).collect();
                    let mut frame = stream.to_be_bytes().to_vec();
                    frame.extend_from_slice(&pcm);
                    bot.send_raw(tokio_tungstenite::tungstenite::Message::binary(frame)).await.unwrap();
                    let conv = v["conversation"]["id"].clone();
                    bot.send(json!({"type":"event","name":"mark","conversation":{"id":conv},"value":{"name":"greeting-done"}}))
                        .await
                        .unwrap();
                }
                Ok(Ok(Frame::Text(v))) if v["name"] == "mark" => mark = v["value"]["name"].as_str().map(str::to_owned),
                Ok(Ok(Frame::Text(v))) if v["type"] == "endOfConversation" => break,
                Ok(Ok(Frame::Binary(_))) => caller_frames += 1,
                Ok(Ok(_)) => {}
                _ => break,
            }
        }
        (context, caller_frames, mark)
    });

    let files = tempfile::tempdir()?;
    let dir = files.path();
    let caller = dir.join("caller.wav");
    let reply = dir.join("reply.wav");
    std::fs::write(&caller, wav_8k(&sine(8000, 300.0, 2000)))?;
    let url = format!("ws://{}/v1/voice/twilio/VoiceWorkStream", s.addr);
    let out = tokio::process::Command::new("streamdouble")
        .arg("call")
        .arg(&url)
        .arg("--audio")
        .arg(&caller)
        .arg("--out")
        .arg(&reply)
        .args(["--json", "--param", "CustomerPhoneNumber=+15551234567", "--quiet-period", "1.5"])
        .output()
        .await
        .context("streamdouble is not installed: run scripts/test.sh (it installs it from PyPI)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim())
        .with_context(|| format!("streamdouble output: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)))?;
    assert_eq!(report["exit_code"], 0, "{report:#}");
    assert_eq!(report["violations"], json!([]), "{report:#}");
    assert_eq!(report["unknown_events"], json!([]), "{report:#}");
    assert_eq!(report["marks_received"], 1, "{report:#}");
    assert_eq!(report["marks_echoed"], 1, "{report:#}");
    let heard = report["audio_received_ms"].as_f64().unwrap();
    assert!((980.0..=1100.0).contains(&heard), "the caller heard {heard} ms of a 1000 ms prompt");
    // Paced at 1x: the prompt took about as long to arrive as it lasts (980 ms from its
    // first frame to its 50th). Dumped, it would arrive within milliseconds; a pacer that
    // a loaded machine stalls catches up in a burst, which shortens the spread by the
    // length of the stall, so the bound leaves room for a few hundred milliseconds of them.
    let delivery = report["delivery_duration_ms"].as_f64().unwrap_or(0.0);
    assert!(delivery >= 600.0, "delivered in {delivery} ms: dumped, not paced\n{report:#}");

    // What the caller heard is the bot's prompt, transcoded to µ-law.
    let switchboard::voice::Wav { rate, samples: heard_pcm } =
        switchboard::voice::decode_wav(std::fs::File::open(&reply)?).map_err(anyhow::Error::msg)?;
    assert_eq!(rate, 8000);
    let pcm16: Vec<u8> = sine(16000, 440.0, 1000).iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut ulaw = Vec::new();
    Transcoder::new(Format::L16_16K, Format::PCMU).process(&pcm16, &mut ulaw)?;
    let mut expected = Vec::new();
    switchboard_codecs::g711::ulaw::decode_into(&ulaw, &mut expected);
    let start = heard_pcm.iter().position(|s| *s != 0).unwrap_or(0);
    let n = expected.len().min(heard_pcm.len() - start);
    assert!(n >= 7800, "{n} samples of reply");
    assert_eq!(&heard_pcm[start..start + n], &expected[expected.iter().position(|s| *s != 0).unwrap_or(0)..][..n]);

    let (context, caller_frames, mark) = bot_task.await?;
    assert_eq!(context["CustomerPhoneNumber"], "+15551234567", "customParameters become context variables");
    assert!(caller_frames >= 90, "the bot heard the caller: {caller_frames} frames");
    assert_eq!(mark.as_deref(), Some("greeting-done"), "Twilio's mark echo reaches the bot");
    Ok(())
}

#[tokio::test]
async fn a_twilio_caller_reaches_an_agent_through_the_default_voice_menu() -> Result<()> {
    let s = switchboard_tests::start_default().await;
    let mut alice = s.member_with_audio("/v1/agent", "alice", "alice-demo-secret", "pcmu/8000").await?;
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/voice-menu.yaml");
    let url = format!("ws://{}/v1/voice/twilio/VoiceWorkStream", s.addr);
    let call = tokio::process::Command::new("streamdouble")
        .args(["scenario", scenario, &url, "--json"])
        .kill_on_drop(true)
        .output();
    let call = tokio::spawn(call);
    let a = alice.until("the call", |v| v["name"] == "conversation.assigned" && v["seq"].is_null()).await?;
    assert_eq!(a["value"]["channel"], "voice");
    assert_eq!(a["value"]["queue"], "CreditCardQueue");
    let transcript = a["value"]["transcript"].as_array().unwrap();
    assert!(transcript.iter().any(|t| t["name"] == "dtmf" && t["value"] == "1"), "the key press is in the transcript");
    // The caller's audio reaches the agent, and the hang-up ends the conversation.
    let f = alice.binary().await?;
    assert_eq!(f.len(), 4 + 160);
    alice.until("hang-up", |v| v["type"] == "endOfConversation").await?;
    let out = call.await??;
    assert!(out.status.success(), "streamdouble: {}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}

/// Twilio has no error event: a stream whose start is refused (here: over `max_calls`) is
/// closed at once with 1011 (try again later), not left streaming into nothing until the
/// handshake timeout; a stream for an unknown workstream is closed with 1008.
#[tokio::test]
async fn a_refused_twilio_stream_is_closed_at_once() -> Result<()> {
    let toml = config().replacen("[server]\n", "[server]\nmax_calls = 1\n", 1);
    assert_ne!(toml, config(), "the sample has a [server] table");
    let s = start_server(Some(&toml)).await;
    let start = |sid: &str| {
        json!({"event":"start","sequenceNumber":"1","streamSid":sid,"start":{"streamSid":sid,"accountSid":"AC1","callSid":"CA1",
            "tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{}}})
    };
    let url = s.ws_url("/v1/voice/twilio/VoiceWorkStream");
    let mut first = Client::connect(&url, None).await?;
    first.send(json!({"event":"connected","protocol":"Call","version":"1.0.0"})).await?;
    first.send(start("MZ1")).await?;
    // The first call is up: it hears hold audio (nobody holds it yet) as Twilio media.
    let heard = first.until("hold audio as Twilio media", |v| v["event"] == "media").await?;
    assert_eq!(heard["streamSid"], "MZ1");

    let mut second = Client::connect(&url, None).await?;
    second.send(json!({"event":"connected","protocol":"Call","version":"1.0.0"})).await?;
    second.send(start("MZ2")).await?;
    let at = std::time::Instant::now();
    let code = second.closed().await?;
    assert_eq!(code.map(u16::from), Some(1011), "a refused stream closes with try-again-later");
    assert!(at.elapsed() < Duration::from_secs(5), "closed after {:?}", at.elapsed());

    let mut lost = Client::connect(&s.ws_url("/v1/voice/twilio/NoSuchWorkStream"), None).await?;
    lost.send(start("MZ3")).await?;
    assert_eq!(lost.closed().await?.map(u16::from), Some(1008));
    Ok(())
}

/// A `media` message whose payload is not base64 is refused (Twilio's protocol has no
/// error event: it is logged) and the call goes on: the caller's next frame reaches the bot
/// as it was sent, and nothing of the refused ones does.
#[tokio::test]
async fn a_media_payload_that_is_not_base64_is_refused_and_the_call_goes_on() -> Result<()> {
    use base64::Engine as _;
    let s = start_server(Some(&config())).await;
    let token = s.token("voice-app", "voice-secret").await?;
    // µ-law toward the bot as the caller sends it: what the bot hears is the caller's bytes.
    let mut bot = Client::connect(&format!("{}?audio=pcmu/8000", s.ws_url("/v1/bot")), Some(&token)).await?;
    let mut caller = Client::connect(&s.ws_url("/v1/voice/twilio/VoiceWorkStream"), None).await?;
    caller.send(json!({"event":"connected","protocol":"Call","version":"1.0.0"})).await?;
    caller
        .send(json!({"event":"start","sequenceNumber":"1","streamSid":"MZ1","start":{
            "streamSid":"MZ1","accountSid":"AC1","callSid":"CA1","tracks":["inbound"],
            "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},"customParameters":{}}}))
        .await?;
    let item = bot.until("the work item", |v| v["name"] == "conversation.assigned" && v["seq"].is_null()).await?;
    let stream = item["value"]["media"]["stream"].as_u64().context("a media stream")? as u32;
    let media =
        |payload: &str| json!({"event":"media","streamSid":"MZ1","media":{"track":"inbound","payload":payload}});
    for bad in ["@@@@", "AAA", "AAAA=AAA", "AAAA AAAA", "ü"] {
        caller.send(media(bad)).await?;
    }
    let good = [0x55u8; 160];
    caller.send(media(&base64::engine::general_purpose::STANDARD.encode(good))).await?;
    let heard = loop {
        match bot.frame().await? {
            Frame::Binary(b) => break b,
            Frame::Text(_) => continue,
        }
    };
    assert_eq!(heard[..4], stream.to_be_bytes(), "the call's stream");
    assert_eq!(heard[4..], good, "the good frame, and nothing of the refused ones");
    Ok(())
}
