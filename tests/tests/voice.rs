//! Voice calls over the native IVR protocol: media transcoded exactly as the codecs say,
//! pacing, marks, barge-in, DTMF, handoff with audio, hang-ups, holder failures, and 100
//! concurrent calls without a frame lost or reordered.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};
use switchboard_codecs::{Format, Framer, Transcoder};
use switchboard_tests::{Client, EXTERNAL_BOT, Frame, TestServer, start_default, start_server};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The external-bot sample plus a voice workstream whose bot connects over /v1/bot.
pub fn voice_config() -> String {
    format!(
        r#"{EXTERNAL_BOT}
[[workstreams]]
name = "VoiceWorkStream"
channel = "voice"
fallback_queue = "GeneralQueue"
context_variables = [ {{ name = "BotHandoffTopic", type = "text" }}, {{ name = "CustomerPhoneNumber", type = "text" }} ]
  [[workstreams.rules]]
  name = "VoiceBotRule"
  when = "BotHandoffTopic is empty"
  queue = "VoiceBotQueue"
  [[workstreams.rules]]
  name = "CreditCardRule"
  when = 'BotHandoffTopic == "CreditCard"'
  queue = "CreditCardQueue"

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

async fn voice_bot(s: &TestServer, audio: &str) -> Result<Client> {
    s.member_with_audio("/v1/bot", "voice-app", "voice-secret", audio).await
}

/// A caller on /v1/voice: returns the client, its conversation and stream.
async fn call(s: &TestServer, format: Format, context: Value) -> Result<(Client, String, u32)> {
    start_call(Client::connect(&s.ws_url("/v1/voice"), None).await?, format, context).await
}

/// A µ-law call that the voice bot (taking `bot_audio`) has been assigned: the bot, the
/// caller, the conversation and the stream.
async fn call_with_bot(s: &TestServer, bot_audio: &str) -> Result<(Client, Client, String, u32)> {
    let mut bot = voice_bot(s, bot_audio).await?;
    let (c, conv, stream) = call(s, Format::PCMU, json!({})).await?;
    assigned(&mut bot).await?;
    Ok((bot, c, conv, stream))
}

/// Starts a call on a connected client.
async fn start_call(mut c: Client, format: Format, context: Value) -> Result<(Client, String, u32)> {
    let media = json!({"encoding": format.encoding().as_str(), "sampleRate": format.sample_rate()});
    c.send(json!({"type":"event","name":"session.start","value":{"workstream":"VoiceWorkStream","media":media,"context":context}})).await?;
    let started = c.event("session.started").await?;
    let conv = started["value"]["conversationId"].as_str().unwrap().to_owned();
    let stream = started["value"]["stream"].as_u64().unwrap() as u32;
    Ok((c, conv, stream))
}

fn tone(format: Format, freq: f64, ms: usize) -> Vec<u8> {
    let rate = format.sample_rate() as usize;
    let pcm: Vec<u8> = (0..rate * ms / 1000)
        .flat_map(|i| {
            ((6000.0 * (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin()) as i16).to_le_bytes()
        })
        .collect();
    let mut t = Transcoder::new(Format::new(switchboard_codecs::Encoding::L16, format.sample_rate()).unwrap(), format);
    let mut out = Vec::new();
    t.process(&pcm, &mut out).unwrap();
    out
}

fn frames(format: Format, audio: &[u8]) -> Vec<Vec<u8>> {
    let mut f = Framer::new(format);
    f.push(audio);
    f.frames().map(|b| b.to_vec()).collect()
}

fn with_stream(stream: u32, audio: &[u8]) -> Vec<u8> {
    let mut v = stream.to_be_bytes().to_vec();
    v.extend_from_slice(audio);
    v
}

/// The holder sends `audio` on `stream` all at once, then the mark `prompt-1`.
async fn prompt_then_mark(bot: &mut Client, conv: &str, stream: u32, audio: &[u8]) -> Result<()> {
    bot.send_raw(tokio_tungstenite::tungstenite::Message::binary(with_stream(stream, audio))).await?;
    bot.send(json!({"type":"event","name":"mark","conversation":{"id":conv},"value":{"name":"prompt-1"}})).await
}

async fn assigned(c: &mut Client) -> Result<Value> {
    c.until("assignment", |v| v["name"] == "conversation.assigned" && v["seq"].is_null()).await
}

#[tokio::test]
async fn caller_audio_reaches_the_bot_transcoded_sample_by_sample() -> Result<()> {
    let s = start_server(Some(&voice_config())).await;
    let mut bot = voice_bot(&s, "l16/16000").await?;
    for caller in [Format::PCMU, Format::PCMA, Format::L16_8K] {
        let (mut c, conv, stream) = call(&s, caller, json!({"CustomerPhoneNumber": "+15551234567"})).await?;
        let a = assigned(&mut bot).await?;
        assert_eq!(a["conversation"]["id"], conv.as_str());
        assert_eq!(a["value"]["channel"], "voice");
        assert_eq!(a["value"]["media"], json!({"stream": stream, "encoding": "l16", "sampleRate": 16000}));
        assert_eq!(a["value"]["context"]["CustomerPhoneNumber"], "+15551234567");

        // Ragged pieces in; the gateway re-frames to 20 ms.
        let audio = tone(caller, 440.0, 200);
        for piece in audio.chunks(37) {
            c.send_raw(tokio_tungstenite::tungstenite::Message::binary(piece.to_vec())).await?;
        }
        let mut expected = Vec::new();
        let mut t = Transcoder::new(caller, Format::L16_16K);
        for f in frames(caller, &audio) {
            let mut out = Vec::new();
            t.process(&f, &mut out)?;
            expected.push(with_stream(stream, &out));
        }
        for (i, want) in expected.iter().enumerate() {
            let got = bot.binary().await?;
            assert_eq!(&got, want, "{caller}: frame {i} differs");
        }
        c.send(json!({"type":"endOfConversation"})).await?;
        bot.until("end", |v| v["type"] == "endOfConversation" && v["conversation"]["id"] == conv.as_str()).await?;
    }
    Ok(())
}

#[tokio::test]
async fn bot_audio_is_played_in_real_time_with_marks_after_it_and_clear_flushes_it() -> Result<()> {
    let s = start_server(Some(&voice_config())).await;
    let (mut bot, mut c, conv, stream) = call_with_bot(&s, "l16/16000").await?;

    // A whole second of prompt at once, then a mark.
    let prompt = tone(Format::L16_16K, 500.0, 1000);
    prompt_then_mark(&mut bot, &conv, stream, &prompt).await?;
    let sent = Instant::now();
    let mut t = Transcoder::new(Format::L16_16K, Format::PCMU);
    let mut expected = Vec::new();
    t.process(&prompt, &mut expected)?;
    let mut got = Vec::new();
    while got.len() < expected.len() {
        got.extend_from_slice(&c.binary().await?);
    }
    // Paced at 1x, not dumped: a second of audio takes 49 ticks of 20 ms after it was sent.
    // Measured from the sending, not from the first frame heard; the bound leaves room for
    // a loaded machine, whose stalled pacer catches up on the ticks it missed in a burst
    // (dumping would deliver all of it within a few milliseconds).
    let played_by = sent.elapsed();
    assert_eq!(got, expected, "the caller hears exactly the prompt");
    assert!(played_by >= Duration::from_millis(500), "paced at 1x, not dumped: all of it within {played_by:?}");
    let mark = bot.event("mark").await?;
    assert_eq!(mark["value"]["name"], "prompt-1");

    // Barge-in: a long prompt, then clear.
    let long = tone(Format::L16_16K, 500.0, 3000);
    bot.send_raw(tokio_tungstenite::tungstenite::Message::binary(with_stream(stream, &long))).await?;
    c.binary().await?;
    bot.send(json!({"type":"event","name":"clear","conversation":{"id":conv}})).await?;
    c.event("clear").await?;
    // At most a frame or two already on the wire follow; then nothing.
    let mut after = 0;
    let end = Instant::now() + Duration::from_millis(600);
    while Instant::now() < end {
        match tokio::time::timeout(Duration::from_millis(100), c.frame()).await {
            Ok(Ok(Frame::Binary(_))) => after += 1,
            Ok(_) => {}
            Err(_) => {}
        }
    }
    assert!(after <= 3, "{after} frames after clear");
    // Someone else's stream: forbidden.
    let mut other = s.agent("alice").await?;
    other.send_raw(tokio_tungstenite::tungstenite::Message::binary(with_stream(stream, &[0, 0]))).await?;
    assert_eq!(other.event("error").await?["value"]["code"], "forbidden");
    Ok(())
}

/// A caller that streams its audio, as connectors do, clocks what it hears: each 20 ms
/// frame it sends is answered at once with the playout's next 20 ms. When it stops
/// sending, the pacer plays the rest at 1×, and the holder's mark comes after the last of
/// it. Nothing is lost, repeated or reordered across the two.
#[tokio::test]
async fn a_streaming_callers_audio_clocks_its_playout_and_the_pacer_takes_over_when_it_stops() -> Result<()> {
    let s = start_server(Some(&voice_config())).await;
    // The caller's own format: the prompt arrives byte for byte.
    let (mut bot, mut c, conv, stream) = call_with_bot(&s, "pcmu/8000").await?;
    let prompt = tone(Format::PCMU, 500.0, 3000);
    prompt_then_mark(&mut bot, &conv, stream, &prompt).await?;

    // 1.8 s of the caller's audio as fast as it can send it (within its burst of media
    // frames): 1.8 s of the prompt comes back long before the pacer alone could play it.
    let frame = Format::PCMU.bytes_per_frame();
    let sent = Instant::now();
    for _ in 0..90 {
        c.send_raw(tokio_tungstenite::tungstenite::Message::binary(vec![0xFFu8; frame])).await?;
    }
    let mut got = Vec::new();
    while got.len() < 90 * frame {
        got.extend_from_slice(&c.binary().await?);
    }
    let clocked = sent.elapsed();
    assert!(clocked < Duration::from_millis(1200), "1.8 s of playout answered 1.8 s of audio in {clocked:?}");

    // The caller falls silent: the pacer plays what is left in real time.
    while got.len() < prompt.len() {
        got.extend_from_slice(&c.binary().await?);
    }
    let paced = sent.elapsed() - clocked;
    assert_eq!(got, prompt, "the caller hears exactly the prompt, in order");
    let left = Duration::from_millis(20 * ((prompt.len() as u64 - 90 * frame as u64) / frame as u64));
    assert!(paced >= left / 2, "the last {left:?} paced at 1x, not dumped: played in {paced:?}");
    assert_eq!(bot.event("mark").await?["value"]["name"], "prompt-1");
    Ok(())
}

#[tokio::test]
async fn dtmf_signalled_or_in_band_reaches_the_holder() -> Result<()> {
    let s = start_server(Some(&voice_config())).await;
    let (mut bot, mut c, conv, _) = call_with_bot(&s, "l16/8000").await?;
    c.send(json!({"type":"event","name":"dtmf","value":"5"})).await?;
    let d = bot.event("dtmf").await?;
    assert_eq!((d["value"].as_str(), d["conversation"]["id"].as_str()), (Some("5"), Some(conv.as_str())));
    // In band: 100 ms of the tone for 7 between silences.
    let mut pcm = vec![0i16; 800];
    switchboard_codecs::dtmf::generate(switchboard_codecs::dtmf::Digit::from_char('7').unwrap(), 8000, 800, &mut pcm);
    pcm.resize(pcm.len() + 800, 0);
    let mut ulaw = Vec::new();
    switchboard_codecs::g711::ulaw::encode_into(&pcm, &mut ulaw);
    c.send_raw(tokio_tungstenite::tungstenite::Message::binary(ulaw)).await?;
    let d = bot.event("dtmf").await?;
    assert_eq!(d["value"], "7");
    c.send(json!({"type":"event","name":"dtmf","value":"x"})).await?;
    assert_eq!(c.event("error").await?["value"]["code"], "bad_request");
    Ok(())
}

#[tokio::test]
async fn handoff_moves_the_call_and_its_audio_to_an_agent_with_hold_audio_between() -> Result<()> {
    let s = start_server(Some(&voice_config())).await;
    let (mut bot, mut c, conv, stream) = call_with_bot(&s, "l16/16000").await?;
    c.send(json!({"type":"event","name":"dtmf","value":"1"})).await?;
    bot.event("dtmf").await?;
    // The bot starts a long prompt, then escalates: its audio must stop at once.
    bot.send_raw(tokio_tungstenite::tungstenite::Message::binary(with_stream(
        stream,
        &tone(Format::L16_16K, 500.0, 3000),
    )))
    .await?;
    c.binary().await?;
    bot.send(json!({"type":"event","name":"handoff.initiate","conversation":{"id":conv},"value":{"BotHandoffTopic":"CreditCard"},"text":"pressed 1"})).await?;
    // Waiting (no agent yet): hold audio, frame after frame, and never stale bot audio.
    let hold = switchboard::voice::HoldAudio::tone(Format::PCMU);
    let hold_frames: Vec<Vec<u8>> = (0..100).map(|i| hold.frame(i).unwrap().to_vec()).collect();
    let mut saw_hold = 0;
    let mut last = Instant::now();
    let mut max_gap = Duration::ZERO;
    while saw_hold < 25 {
        let f = c.binary().await?;
        max_gap = max_gap.max(last.elapsed());
        last = Instant::now();
        if hold_frames.contains(&f) {
            saw_hold += 1;
        } else {
            assert_eq!(saw_hold, 0, "bot audio after hold began");
        }
    }
    assert!(max_gap < Duration::from_millis(200), "the caller was left in silence for {max_gap:?}");
    // An agent arrives: the call is hers, with the transcript and the audio.
    let mut alice = s.member_with_audio("/v1/agent", "alice", "alice-demo-secret", "pcmu/8000").await?;
    let a = assigned(&mut alice).await?;
    assert_eq!(a["value"]["media"], json!({"stream": stream, "encoding": "pcmu", "sampleRate": 8000}));
    assert_eq!(a["value"]["summary"], "pressed 1");
    let transcript = a["value"]["transcript"].as_array().unwrap();
    assert!(transcript.iter().any(|t| t["name"] == "dtmf" && t["value"] == "1"), "DTMF in the transcript");
    let speech = tone(Format::PCMU, 300.0, 100);
    c.send_raw(tokio_tungstenite::tungstenite::Message::binary(speech.clone())).await?;
    let mut got = Vec::new();
    while got.len() < speech.len() {
        let f = alice.binary().await?;
        assert_eq!(&f[..4], &stream.to_be_bytes());
        got.extend_from_slice(&f[4..]);
    }
    assert_eq!(got, speech, "pcmu to pcmu is passed through unchanged");
    // The caller hangs up: the agent is told.
    c.send(json!({"type":"endOfConversation"})).await?;
    alice.until("end", |v| v["type"] == "endOfConversation").await?;
    Ok(())
}

#[tokio::test]
async fn a_bot_that_drops_a_call_hands_it_to_people_at_once() -> Result<()> {
    // GeneralQueue has the voice bot among its members, so only the exclusion of a bot that
    // has handled the call keeps it from getting it back.
    let toml = voice_config()
        .replace(r#"members = ["alice", "bob", "carol"]"#, r#"members = ["voice-bot", "alice", "bob", "carol"]"#);
    assert_ne!(toml, voice_config());
    let s = start_server(Some(&toml)).await;
    let (bot, mut c, conv, _) = call_with_bot(&s, "l16/16000").await?;
    bot.close().await;
    // Nobody is signed in: the call waits (hold audio), and the bot that dropped it, back
    // with room, is not given it again.
    c.binary().await?;
    let mut bot = voice_bot(&s, "l16/16000").await?;
    bot.quiet_for(Duration::from_millis(300), |v| v["name"] != "conversation.assigned").await?;
    let mut bob = s.agent("bob").await?;
    let a = assigned(&mut bob).await?;
    assert_eq!(a["conversation"]["id"], conv.as_str());
    assert_eq!(a["value"]["queue"], "GeneralQueue");
    // The call goes on with the agent's audio.
    let stream = a["value"]["media"]["stream"].as_u64().unwrap() as u32;
    bob.send_raw(tokio_tungstenite::tungstenite::Message::binary(with_stream(
        stream,
        &tone(Format::L16_16K, 300.0, 40),
    )))
    .await?;
    assert_eq!(c.binary().await?.len(), 160, "20 ms of pcmu");
    Ok(())
}

#[tokio::test]
async fn the_default_voice_menu_transfers_on_a_key_press() -> Result<()> {
    let s = start_default().await;
    let mut alice = s.member_with_audio("/v1/agent", "alice", "alice-demo-secret", "l16/16000").await?;
    let (mut c, conv, stream) = call(&s, Format::PCMU, json!({"CustomerPhoneNumber": "+15550001111"})).await?;
    // The menu bot greets with a chime.
    c.binary().await?;
    c.send(json!({"type":"event","name":"dtmf","value":"1"})).await?;
    let a = assigned(&mut alice).await?;
    assert_eq!(a["conversation"]["id"], conv.as_str());
    assert_eq!(a["value"]["queue"], "CreditCardQueue");
    assert_eq!(a["value"]["context"]["CustomerPhoneNumber"], "+15550001111");
    let texts: Vec<&str> =
        a["value"]["transcript"].as_array().unwrap().iter().filter_map(|t| t["text"].as_str()).collect();
    assert!(texts.iter().any(|t| t.starts_with("Welcome to Contoso. Press 1")), "{texts:?}");
    c.send_raw(tokio_tungstenite::tungstenite::Message::binary(tone(Format::PCMU, 300.0, 40))).await?;
    let f = alice.binary().await?;
    assert_eq!(&f[..4], &stream.to_be_bytes());
    assert_eq!(f.len(), 4 + 640, "20 ms of l16/16000");
    Ok(())
}

#[tokio::test]
async fn a_hundred_concurrent_calls_for_ten_seconds_lose_and_reorder_nothing() -> Result<()> {
    const CALLS: usize = 100;
    const FRAMES: u16 = 500; // 10 s of 20 ms frames
    let s = start_server(Some(&voice_config())).await;
    let mut bot = voice_bot(&s, "l16/16000").await?;
    let mut callers = Vec::new();
    for _ in 0..CALLS {
        let (c, _, stream) = call(&s, Format::L16_16K, json!({})).await?;
        callers.push((c, stream));
    }
    let mut tasks = Vec::new();
    for (mut c, _) in callers {
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for n in 0..FRAMES {
                tick.tick().await;
                // Each frame carries its number in every sample.
                let frame: Vec<u8> = (0..320).flat_map(|_| (n as i16).to_le_bytes()).collect();
                c.send_raw(tokio_tungstenite::tungstenite::Message::binary(frame)).await.unwrap();
            }
            c
        }));
    }
    let mut next: HashMap<u32, u16> = HashMap::new();
    let mut received = 0usize;
    while received < CALLS * FRAMES as usize {
        let f = bot.binary().await?;
        let stream = u32::from_be_bytes([f[0], f[1], f[2], f[3]]);
        let n = i16::from_le_bytes([f[4], f[5]]) as u16;
        let want = next.entry(stream).or_insert(0);
        assert_eq!(n, *want, "stream {stream}: frame {n} arrived when {want} was due");
        assert!(f[4..].chunks(2).all(|s| i16::from_le_bytes([s[0], s[1]]) as u16 == n), "frame {n} intact");
        *want += 1;
        received += 1;
    }
    assert_eq!(next.len(), CALLS);
    for t in tasks {
        t.await?;
    }
    Ok(())
}

#[tokio::test]
async fn call_legs_are_under_the_same_guards_as_every_connection() -> Result<()> {
    let s = start_server(Some(&voice_config())).await;
    // A flood of audio beyond 20 ms frames' rate is refused, and the call stays up.
    let (mut bot, mut c, conv, _) = call_with_bot(&s, "l16/16000").await?;
    for _ in 0..300 {
        c.send_raw(tokio_tungstenite::tungstenite::Message::binary(tone(Format::PCMU, 300.0, 20))).await?;
    }
    let e = c.event("error").await?;
    assert_eq!(e["value"]["code"], "rate_limited", "{e}");
    c.send(json!({"type":"event","name":"dtmf","value":"5"})).await?;
    assert_eq!(bot.until("the key", |v| v["name"] == "dtmf").await?["value"], "5");
    // A binary frame over the frame limit closes the leg with 1009: a hang-up for the bot.
    c.send_raw(tokio_tungstenite::tungstenite::Message::binary(vec![0u8; 40_000])).await?;
    assert_eq!(c.closed().await?, Some(tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Size));
    bot.until("the hang-up", |v| v["type"] == "endOfConversation" && v["conversation"]["id"] == conv.as_str()).await?;
    Ok(())
}

#[tokio::test]
async fn a_silent_half_open_caller_is_closed_after_the_idle_timeout_and_frees_the_agent() -> Result<()> {
    let s = start_server(Some(&voice_config())).await;
    let (mut bot, _c, conv, _) = call_with_bot(&s, "l16/16000").await?;
    // The caller's connector goes silent and never answers a ping; the bot stays healthy
    // (it reads, so its client answers the pings sent every third of the idle timeout).
    // The release default idle timeout is 300 s: pass it on paused time, in steps.
    let hang_up = |v: &Value| v["type"] == "endOfConversation" && v["conversation"]["id"] == conv.as_str();
    let mut eoc = None;
    for _ in 0..5 {
        tokio::time::pause();
        tokio::time::advance(Duration::from_secs(80)).await;
        tokio::time::resume();
        if let Ok(v) = tokio::time::timeout(Duration::from_millis(100), bot.until("the hang-up", hang_up)).await {
            eoc = Some(v?);
            break;
        }
    }
    let eoc = eoc.expect("the holder was told of the hang-up");
    assert_eq!(eoc["from"]["role"], "user");
    assert!(!s.running.hub.is_open(&conv));
    let load =
        s.running.hub.with_engine(|e| e.members_view().into_iter().find(|m| m.name == "voice-bot").unwrap().load);
    assert_eq!(load, 0, "the holder's capacity is free again");
    Ok(())
}

#[tokio::test]
async fn a_waiting_caller_hears_a_44_1_khz_stereo_hold_prompt_in_its_own_format() -> Result<()> {
    // One second of 440 Hz at 0.3 of full scale, as a music library exports it.
    let dir = tempfile::tempdir()?;
    let wav = dir.path().join("hold.wav");
    let tone = (0..44100)
        .map(|i| (0.3 * 32768.0 * (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 44100.0).sin()) as i16);
    switchboard_tests::write_wav(&wav, 44100, 2, tone)?;
    let toml = voice_config().replacen(
        "name = \"VoiceWorkStream\"\nchannel = \"voice\"\n",
        &format!("name = \"VoiceWorkStream\"\nchannel = \"voice\"\nhold_audio = {:?}\n", wav.to_str().unwrap()),
        1,
    );
    assert_ne!(toml, voice_config());
    let s = start_server(Some(&toml)).await;
    // No voice bot connects: the call waits in VoiceBotQueue and hears the prompt.
    let (mut c, _conv, _stream) = call(&s, Format::PCMU, json!({})).await?;
    let prompt = switchboard::load::hold_prompt(&wav).map_err(anyhow::Error::msg)?;
    let expected = prompt.audio(Format::PCMU);
    assert_eq!(expected.len(), 50, "one second in 20 ms frames");
    let tone = switchboard::voice::HoldAudio::tone(Format::PCMU);
    let mut heard = Vec::new();
    for i in 0..55 {
        let f = c.binary().await?;
        assert_eq!(f.len(), 160, "frame {i}: 20 ms of µ-law");
        assert_eq!(f, expected.frame(i).unwrap().to_vec(), "frame {i} is the prompt's, in order, looping");
        assert_ne!(Some(&f[..]), tone.frame(i).as_deref(), "frame {i}: the prompt, not the comfort tone");
        heard.extend_from_slice(&f);
    }
    // Independently of the gateway's code: what the caller heard is 440 Hz at the level
    // written (µ-law decoded, away from the loop's edges), and nothing at other pitches.
    let mut pcm = Vec::new();
    switchboard_codecs::g711::ulaw::decode_into(&heard[160 * 2..160 * 48], &mut pcm);
    let level = switchboard_codecs::clip::amplitude_at(&pcm, 8000, 440.0) / (0.3 * 32768.0);
    assert!((0.93..1.07).contains(&level), "440 Hz at {level:.3} of the level written");
    for other in [400.0, 480.0, 880.0, 1000.0, 3000.0] {
        let a = switchboard_codecs::clip::amplitude_at(&pcm, 8000, other) / (0.3 * 32768.0);
        assert!(a < 0.02, "{other} Hz at {a:.4}: the pitch moved or the audio is distorted");
    }
    Ok(())
}

/// `max_calls` caps the calls in progress: one more is refused at `session.start` with
/// `unavailable` and its connection stays open, so the same connector starts the call once
/// another has hung up.
#[tokio::test]
async fn a_call_over_max_calls_is_refused_until_one_hangs_up() -> Result<()> {
    let toml = voice_config().replacen("[server]\n", "[server]\nmax_calls = 1\n", 1);
    assert_ne!(toml, voice_config(), "the sample has a [server] table");
    let s = start_server(Some(&toml)).await;
    let _bot = voice_bot(&s, "l16/16000").await?;
    let (mut first, _, _) = call(&s, Format::PCMU, json!({})).await?;

    let mut second = Client::connect(&s.ws_url("/v1/voice"), None).await?;
    let start = json!({"type":"event","name":"session.start","value":{"workstream":"VoiceWorkStream","media":{"encoding":"pcmu","sampleRate":8000}}});
    second.send(start.clone()).await?;
    let refused = second.event("error").await?;
    assert_eq!(refused["value"]["code"], "unavailable", "{refused}");
    assert!(refused["value"]["message"].as_str().unwrap().contains("max_calls"), "{refused}");

    first.send(json!({"type":"endOfConversation"})).await?;
    // The hang-up is carried out before the gateway closes the first leg: once it is
    // closed, its place is free.
    first.closed().await?;
    second.send(start).await?;
    second.event("session.started").await?;
    Ok(())
}

/// A caller that stops reading (a hung connector, a stalled network) while it still sends
/// is closed as a slow consumer (4008) once its writes have stalled for the idle timeout,
/// and another caller hears its audio throughout. The gateway bounds a caller's kernel
/// send buffer: with the 4 MiB the kernel's autotuning would grow it to, 48 kHz audio
/// would take some 40 s to fill before any write stalled.
#[tokio::test]
async fn a_caller_that_stops_reading_is_closed_as_a_slow_consumer_and_others_hear_on() -> Result<()> {
    // The stall bound is the idle timeout (300 s by default), shortened here to keep the
    // test short; the buffers are the release's.
    let toml = voice_config().replacen("[server]\n", "[server]\nidle_timeout_secs = 3\n", 1);
    assert_ne!(toml, voice_config());
    let s = start_server(Some(&toml)).await;
    let format = Format::new(switchboard_codecs::Encoding::L16, 48000)?;
    // No bot: both calls wait and hear hold audio, 96 KB a second each.
    let (mut other, _, _) = call(&s, format, json!({})).await?;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let listener = tokio::spawn(async move {
        let mut heard = 0usize;
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                f = other.binary() => {
                    assert_eq!(f?.len(), format.bytes_per_frame());
                    heard += 1;
                }
            }
        }
        anyhow::Ok((other, heard))
    });

    let stuck = Client::connect_with_receive_buffer(&s.ws_url("/v1/voice"), None, 4096).await?;
    let (mut stuck, conv, _) = start_call(stuck, format, json!({})).await?;
    let frame = Message::binary(vec![0u8; format.bytes_per_frame()]);
    let mut every = tokio::time::interval(Duration::from_millis(20));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    // It keeps sending its audio and never reads.
    while s.running.hub.is_open(&conv) {
        assert!(started.elapsed() < Duration::from_secs(20), "the stuck caller is still open after 20 s");
        every.tick().await;
        let _ = tokio::time::timeout(Duration::from_millis(20), stuck.send_raw(frame.clone())).await;
    }
    // What was in flight drains, then the close.
    assert_eq!(stuck.closed().await?, Some(CloseCode::from(4008)), "slow consumer");

    // The other caller heard on throughout, and still does.
    stop.send(true)?;
    let (mut other, heard) = listener.await??;
    let seconds = started.elapsed().as_secs_f64();
    // Real time is 50 frames a second; a quarter of that leaves room for a loaded machine.
    assert!(heard as f64 >= seconds * 50.0 / 4.0, "{heard} frames in {seconds:.1} s");
    for _ in 0..10 {
        assert_eq!(other.binary().await?.len(), format.bytes_per_frame());
    }
    Ok(())
}
