//! Security from day one: tokens, who may touch which conversation, and what a hostile or
//! broken client gets back (an error frame with the SPEC's code, connection kept).

use std::time::Duration;

use anyhow::Result;
use base64::Engine as _;
use serde_json::{Value, json};
use switchboard_tests::{
    BOT_APP_ID, BOT_SECRET, Client, HttpResponse, TestServer, http, http_response, http_with, start_server,
};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn http_status(e: &anyhow::Error) -> Option<u16> {
    match e.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
        Some(tokio_tungstenite::tungstenite::Error::Http(r)) => Some(r.status().as_u16()),
        _ => None,
    }
}

#[tokio::test]
async fn token_endpoint_follows_client_credentials() -> Result<()> {
    let s = start_server(None).await;
    let form = "application/x-www-form-urlencoded";
    let ok = format!("grant_type=client_credentials&client_id={BOT_APP_ID}&client_secret={BOT_SECRET}");
    let (status, body) = http(s.addr, "POST", "/v1/token", form, &ok).await?;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body)?;
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);

    let json_body = json!({"grant_type":"client_credentials","client_id":"alice","client_secret":"alice-demo-secret"});
    let (status, _) = http(s.addr, "POST", "/v1/token", "application/json", &json_body.to_string()).await?;
    assert_eq!(status, 200);

    let cases = [
        (format!("grant_type=client_credentials&client_id={BOT_APP_ID}&client_secret=wrong"), 401, "invalid_client"),
        ("grant_type=client_credentials&client_id=nobody&client_secret=x".to_owned(), 401, "invalid_client"),
        (
            "grant_type=password&client_id=alice&client_secret=alice-demo-secret".to_owned(),
            400,
            "unsupported_grant_type",
        ),
        ("grant_type=client_credentials&client_id=alice".to_owned(), 400, "invalid_request"),
    ];
    for (body, want_status, want_error) in cases {
        let (status, text) = http(s.addr, "POST", "/v1/token", form, &body).await?;
        assert_eq!(status, want_status, "{body}: {text}");
        let v: Value = serde_json::from_str(&text)?;
        assert_eq!(v["error"], want_error, "{body}");
    }

    // HTTP Basic client authentication (RFC 6749 §2.3.1).
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:alice-demo-secret"));
    let (status, _) = http_with(
        s.addr,
        "POST",
        "/v1/token",
        &[("content-type", form), ("authorization", &basic)],
        "grant_type=client_credentials",
    )
    .await?;
    assert_eq!(status, 200);
    Ok(())
}

async fn token_attempt(s: &switchboard_tests::TestServer, client_id: &str, secret: &str) -> Result<HttpResponse> {
    let body = format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}");
    http_response(s.addr, "POST", "/v1/token", &[("content-type", "application/x-www-form-urlencoded")], &body).await
}

/// A 429 with `Retry-After` within the lockout and OAuth's `slow_down`.
fn assert_throttled(r: &HttpResponse, what: &str) -> Result<()> {
    assert_eq!(r.status, 429, "{what}: {r:?}");
    let retry: u64 = r.header("retry-after").unwrap_or_default().parse()?;
    assert!((1..=60).contains(&retry), "{what}: Retry-After {retry}");
    let v: Value = serde_json::from_str(&r.body)?;
    assert_eq!(v["error"], "slow_down", "{what}");
    assert!(v["error_description"].as_str().unwrap_or("").contains("retry in"), "{what}: {v}");
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn wrong_secrets_are_throttled_per_client_id_and_per_address_until_the_lockout_passes() -> Result<()> {
    // The defaults: 5 failures per client id, 20 per address, within and for 60 s.
    let s = start_server(None).await;
    for i in 0..5 {
        let r = token_attempt(&s, "alice", "guess").await?;
        assert_eq!(r.status, 401, "wrong secret {i}: {r:?}");
    }
    let r = token_attempt(&s, "alice", "alice-demo-secret").await?;
    assert_throttled(&r, "alice after 5 wrong secrets, with the right one")?;
    // Another client id from the same address is not locked out yet (5 of 20 failures)...
    assert_eq!(token_attempt(&s, "bob", "bob-demo-secret").await?.status, 200);
    // ... until the address has failed 20 times, whichever ids it tried.
    for i in 0..15 {
        let r = token_attempt(&s, &format!("nobody-{i}"), "guess").await?;
        assert_eq!(r.status, 401, "unknown id {i}: {r:?}");
    }
    assert_throttled(&token_attempt(&s, "bob", "bob-demo-secret").await?, "bob from a locked-out address")?;
    assert_throttled(&token_attempt(&s, BOT_APP_ID, BOT_SECRET).await?, "the bot from a locked-out address")?;

    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(61)).await;
    tokio::time::resume();
    assert_eq!(token_attempt(&s, "alice", "alice-demo-secret").await?.status, 200);
    assert_eq!(token_attempt(&s, "bob", "bob-demo-secret").await?.status, 200);
    // A success forgets the client id's failures: 4 wrong, right, 4 wrong, right.
    for _ in 0..2 {
        for _ in 0..4 {
            assert_eq!(token_attempt(&s, "alice", "guess").await?.status, 401);
        }
        assert_eq!(token_attempt(&s, "alice", "alice-demo-secret").await?.status, 200);
    }
    Ok(())
}

#[tokio::test]
async fn unauthenticated_upgrades_are_refused_with_401() -> Result<()> {
    let s = start_server(None).await;
    for path in ["/v1/bot", "/v1/agent"] {
        let e = Client::connect(&s.ws_url(path), None).await.err().expect("refused");
        assert_eq!(http_status(&e), Some(401), "{path}: {e}");
        let e = Client::connect(&s.ws_url(path), Some("forged.token")).await.err().expect("refused");
        assert_eq!(http_status(&e), Some(401), "{path}: {e}");
    }
    // A valid token of the wrong kind.
    let agent_token = s.token("alice", "alice-demo-secret").await?;
    let e = Client::connect(&s.ws_url("/v1/bot"), Some(&agent_token)).await.err().expect("refused");
    assert_eq!(http_status(&e), Some(403));
    // Browsers pass the token in the query string.
    let bot_token = s.token(BOT_APP_ID, BOT_SECRET).await?;
    Client::connect(&format!("{}?access_token={bot_token}", s.ws_url("/v1/bot")), None).await?;
    // A plain GET is told to upgrade.
    let (status, _) = http(s.addr, "GET", "/v1/chat", "text/plain", "").await?;
    assert_eq!(status, 426);
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn tokens_expire_after_their_lifetime() -> Result<()> {
    let s = start_server(None).await;
    let token = s.token("alice", "alice-demo-secret").await?;

    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(3599)).await;
    tokio::time::resume();
    Client::connect(&s.ws_url("/v1/agent"), Some(&token)).await?.close().await;

    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(2)).await;
    tokio::time::resume();
    let e = Client::connect(&s.ws_url("/v1/agent"), Some(&token)).await.err().expect("expired");
    assert_eq!(http_status(&e), Some(401));

    // A customer's token lives as long as the conversation can be resumed: up to the
    // resume window (300 s by default) after the customer left.
    let ann = s.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    let conv = ann.conversation.clone();
    let left = |s: &switchboard_tests::TestServer| {
        s.running.hub.conversation(&conv).is_some_and(|c| c.inner.lock().customer.is_none())
    };
    ann.client.close().await;
    while !left(&s) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(299)).await;
    tokio::time::resume();
    let mut again = s.customer().await?;
    again.send(json!({"type":"event","name":"session.resume","value":{"conversationId":conv,"token":ann.token,"watermark":0}})).await?;
    let newest = again.event("session.started").await?["value"]["token"].as_str().unwrap().to_owned();
    again.close().await;
    while !left(&s) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(302)).await;
    tokio::time::resume();
    let mut late = s.customer().await?;
    late.send(json!({"type":"event","name":"session.resume","value":{"conversationId":conv,"token":newest}})).await?;
    let err = late.event("error").await?;
    assert_eq!(err["value"]["code"], "unauthorized");
    assert!(err["value"]["message"].as_str().unwrap().contains("has ended"), "{err}");
    Ok(())
}

#[tokio::test]
async fn members_cannot_touch_conversations_they_do_not_hold() -> Result<()> {
    let s = start_server(None).await;
    let mut bot = s.bot().await?;
    let mut alice = s.agent("alice").await?;
    let ann = s.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    bot.event("conversation.assigned").await?;
    let conv = ann.conversation.clone();
    for frame in [
        json!({"type":"message","conversation":{"id":conv},"text":"hijack"}),
        json!({"type":"endOfConversation","conversation":{"id":conv}}),
        json!({"type":"event","name":"transfer","conversation":{"id":conv},"value":{"queue":"CreditCardQueue"}}),
    ] {
        alice.send(frame.clone()).await?;
        let e = alice.event("error").await?;
        assert_eq!(e["value"]["code"], "forbidden", "{frame}");
    }
    alice.send(json!({"type":"message","conversation":{"id":"c_nope"},"text":"x"})).await?;
    assert_eq!(alice.event("error").await?["value"]["code"], "not_found");
    alice.send(json!({"type":"message","text":"no conversation"})).await?;
    assert_eq!(alice.event("error").await?["value"]["code"], "bad_request");
    // Agents cannot use the bot's handoff event.
    alice.send(json!({"type":"event","name":"handoff.initiate","conversation":{"id":conv},"value":{}})).await?;
    assert_eq!(alice.event("error").await?["value"]["code"], "bad_request");
    // The conversation is untouched: the bot still holds it and can talk.
    bot.say(&conv, "still mine").await?;
    bot.event("ack").await?;
    Ok(())
}

#[tokio::test]
async fn resume_needs_the_conversation_token_and_replays_after_the_watermark() -> Result<()> {
    let s = start_server(None).await;
    let mut bot = s.bot().await?;
    let mut ann = s.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    let other = s.start_chat("ChatWorkStream", "Ben", json!({})).await?;
    let conv = ann.conversation.clone();
    bot.until("Ann's", |v| v["name"] == "conversation.assigned" && v["conversation"]["id"] == conv.as_str()).await?;
    ann.send(json!({"type":"message","text":"one"})).await?;
    let watermark = ann.event("ack").await?["value"]["seq"].as_u64().unwrap();
    ann.client.close().await;
    bot.say(&conv, "two").await?;
    bot.say(&conv, "three").await?;
    bot.event("ack").await?;
    bot.event("ack").await?;

    let mut c = s.customer().await?;
    for (token, code) in [("garbage", "unauthorized"), (other.token.as_str(), "unauthorized")] {
        c.send(json!({"type":"event","name":"session.resume","value":{"conversationId":conv,"token":token,"watermark":watermark}})).await?;
        assert_eq!(c.event("error").await?["value"]["code"], code);
    }
    c.send(json!({"type":"event","name":"session.resume","value":{"conversationId":conv,"token":ann.token,"watermark":watermark}})).await?;
    let started = c.event("session.started").await?;
    assert_eq!(started["value"]["conversationId"], conv.as_str());
    let two = c.message().await?;
    let three = c.message().await?;
    assert_eq!((two["text"].as_str(), three["text"].as_str()), (Some("two"), Some("three")));
    assert_eq!(two["seq"].as_u64(), Some(watermark + 1));
    assert_eq!(three["seq"].as_u64(), Some(watermark + 2));
    // Live traffic continues on the resumed connection.
    bot.say(&conv, "four").await?;
    assert_eq!(c.message().await?["text"], "four");

    // The token resumed once: replaying it now is refused, and the rightful client stays.
    let fresh = started["value"]["token"].as_str().unwrap().to_owned();
    assert_ne!(fresh, ann.token, "each session.started issues a new token");
    let mut thief = s.customer().await?;
    thief
        .send(json!({"type":"event","name":"session.resume","value":{"conversationId":conv,"token":ann.token}}))
        .await?;
    let e = thief.event("error").await?;
    assert_eq!(e["value"]["code"], "unauthorized");
    assert!(e["value"]["message"].as_str().unwrap().contains("replaced by a newer one"), "{e}");
    bot.say(&conv, "five").await?;
    assert_eq!(c.message().await?["text"], "five", "the rightful client was not displaced");
    Ok(())
}

/// Resumes `conv` with `token` on a new connection; the answer's event.
async fn resume_with(s: &TestServer, conv: &str, token: &str) -> Result<(Client, Value)> {
    let mut c = s.customer().await?;
    c.send(json!({"type":"event","name":"session.resume","value":{"conversationId":conv,"token":token}})).await?;
    let v = c.until("an answer", |v| v["name"] == "session.started" || v["name"] == "error").await?;
    Ok((c, v))
}

#[tokio::test]
async fn a_resume_whose_answer_was_lost_does_not_lock_the_customer_out() -> Result<()> {
    let s = start_server(None).await;
    let ann = s.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    let conv = ann.conversation.clone();
    ann.client.close().await;
    // A resume is answered with a new token, and the connection drops before the client
    // keeps it (a lost answer, as far as the client knows).
    let (lost, v) = resume_with(&s, &conv, &ann.token).await?;
    assert_eq!(v["name"], "session.started", "{v}");
    lost.close().await;
    // The client tries again with the token it has: once the gateway has seen the dropped
    // connection go (the seat is free), it resumes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (back, started) = loop {
        let (c, v) = resume_with(&s, &conv, &ann.token).await?;
        if v["name"] == "session.started" {
            break (c, v);
        }
        assert!(v["value"]["message"].as_str().unwrap().contains("replaced by a newer one"), "{v}");
        assert!(tokio::time::Instant::now() < deadline, "the old token never resumed: {v}");
    };
    let fresh = started["value"]["token"].as_str().unwrap().to_owned();
    // While a connection holds the seat, the old token takes nothing over.
    let (_, v) = resume_with(&s, &conv, &ann.token).await?;
    assert_eq!(v["value"]["code"], "unauthorized", "{v}");
    // Once the newer token was used, the old one is refused even with the seat free.
    back.close().await;
    let (again, v) = resume_with(&s, &conv, &fresh).await?;
    assert_eq!(v["name"], "session.started", "{v}");
    again.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // (Retried until the seat is free, so the refusal is for the generation alone.)
        let (_, v) = resume_with(&s, &conv, &fresh).await?;
        if v["name"] == "session.started" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the previous token never resumed: {v}");
    }
    let (_, v) = resume_with(&s, &conv, &ann.token).await?;
    assert_eq!(v["value"]["code"], "unauthorized", "{v}");
    assert!(v["value"]["message"].as_str().unwrap().contains("replaced by a newer one"), "{v}");
    Ok(())
}

#[tokio::test]
async fn an_ended_conversation_cannot_be_resumed_except_to_answer_its_survey() -> Result<()> {
    let s = start_server(None).await;
    let mut bot = s.bot().await?;
    // Ended without a survey: the token is refused.
    let mut ann = s.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    let conv = ann.conversation.clone();
    bot.until("Ann's", |v| v["name"] == "conversation.assigned" && v["conversation"]["id"] == conv.as_str()).await?;
    ann.send(json!({"type":"endOfConversation"})).await?;
    ann.event("ack").await?;
    let mut late = s.customer().await?;
    late.send(json!({"type":"event","name":"session.resume","value":{"conversationId":conv,"token":ann.token}}))
        .await?;
    let e = late.event("error").await?;
    assert_eq!(e["value"]["code"], "unauthorized");
    assert!(e["value"]["message"].as_str().unwrap().contains("has ended"), "{e}");

    // Ended with a survey: the customer may come back to answer it, and to nothing else.
    let mut ben = s.start_chat("ChatWorkStream", "Ben", json!({})).await?;
    let conv = ben.conversation.clone();
    bot.until("Ben's", |v| v["name"] == "conversation.assigned" && v["conversation"]["id"] == conv.as_str()).await?;
    bot.send(json!({"type":"endOfConversation","conversation":{"id":conv},"value":{"survey":true}})).await?;
    ben.activity("endOfConversation").await?;
    ben.client.close().await;
    let mut back = s.customer().await?;
    back.send(
        json!({"type":"event","name":"session.resume","value":{"conversationId":conv,"token":ben.token,"watermark":0}}),
    )
    .await?;
    back.event("session.started").await?;
    back.send(json!({"type":"message","text":"hello again"})).await?;
    assert_eq!(back.event("error").await?["value"]["code"], "bad_request");
    back.send(json!({"type":"event","name":"survey.response","value":{"rating":4}})).await?;
    back.event("ack").await?;
    Ok(())
}

#[tokio::test]
async fn bad_frames_get_error_events_and_the_connection_stays_open() -> Result<()> {
    let s = start_server(None).await;
    let mut c = s.customer().await?;
    let cases = [
        (Message::text("not json"), "bad_request"),
        (Message::text(r#"{"type":"poke"}"#), "bad_request"),
        (Message::text(r#"{"type":"message","text":"before start"}"#), "bad_request"),
        (Message::text(json!({"type":"event","name":"session.start","value":{"workstream":"NoSuch"}}).to_string()), "not_found"),
        (
            Message::text(json!({"type":"event","name":"session.start","value":{"workstream":"ChatWorkStream","context":{"Undeclared":"x"}}}).to_string()),
            "bad_request",
        ),
        (
            Message::text(json!({"type":"event","name":"session.start","value":{"workstream":"ChatWorkStream","context":{"BotHandoffTopic":5}}}).to_string()),
            "bad_request",
        ),
        (Message::binary(vec![1u8, 2, 3]), "bad_request"),
    ];
    for (frame, code) in cases {
        let shown = format!("{frame:?}");
        c.send_raw(frame).await?;
        let e = c.event("error").await?;
        assert_eq!(e["value"]["code"], code, "{shown}");
        assert!(!e["value"]["message"].as_str().unwrap_or("").is_empty());
    }
    // Still open: a valid start works on the same connection.
    c.send(json!({"type":"event","name":"session.start","value":{"workstream":"ChatWorkStream"}})).await?;
    c.event("session.started").await?;
    c.send(json!({"type":"event","name":"nonsense"})).await?;
    assert_eq!(c.event("error").await?["value"]["code"], "bad_request");
    c.send(json!({"type":"message","text":"still here"})).await?;
    c.event("ack").await?;
    Ok(())
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009() -> Result<()> {
    let s = start_server(None).await;
    let mut c = s.customer().await?;
    c.send(json!({"type":"event","name":"session.start","value":{"workstream":"ChatWorkStream"}})).await?;
    c.event("session.started").await?;
    // Exactly at the limit is fine; one byte over closes.
    let limit = 28 * 1024;
    let pad = |n: usize| {
        let base = json!({"type":"message","text":""}).to_string().len();
        json!({"type":"message","text":"x".repeat(n - base)}).to_string()
    };
    c.send_raw(Message::text(pad(limit))).await?;
    c.event("ack").await?;
    c.send_raw(Message::text(pad(limit + 1))).await?;
    assert_eq!(c.closed().await?, Some(CloseCode::Size));
    Ok(())
}

#[tokio::test]
async fn repeated_client_activity_ids_are_acknowledged_again_but_delivered_once() -> Result<()> {
    let s = start_server(None).await;
    let mut bot = s.bot().await?;
    let mut ann = s.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    bot.event("conversation.assigned").await?;
    let m = json!({"type":"message","text":"only once","channelData":{"clientActivityId":"retry-1"}});
    ann.send(m.clone()).await?;
    let first = ann.event("ack").await?;
    ann.send(m).await?;
    let second = ann.event("ack").await?;
    assert_eq!(first["value"], second["value"]);
    assert_eq!(bot.message().await?["text"], "only once");
    bot.quiet_for(Duration::from_millis(300), |v| v["type"] != "message").await?;
    Ok(())
}

#[tokio::test]
async fn unicode_passes_byte_exact_both_ways() -> Result<()> {
    let s = start_server(None).await;
    let mut bot = s.bot().await?;
    let mut ann = s.start_chat("ChatWorkStream", "Zoë 👩‍💻", json!({})).await?;
    let conv = ann.conversation.clone();
    bot.event("conversation.assigned").await?;
    let texts = [
        "Hello 👋",
        "👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👍🏽 skin tone",
        "مرحبا بالعالم — שלום עולם",
        "e\u{301} vs é, a\u{308}\u{332}, Z\u{355}\u{36d}a\u{30a}",
        "中文 日本語 한국어 \u{200f}\u{200e} \u{feff}",
        "tab\there \"quotes\" \\ backslash </script>",
    ];
    for t in texts {
        ann.send(json!({"type":"message","text":t})).await?;
        let got = bot.message().await?;
        assert_eq!(got["text"].as_str().unwrap().as_bytes(), t.as_bytes());
        bot.say(&conv, t).await?;
        let back = ann.message().await?;
        assert_eq!(back["text"].as_str().unwrap().as_bytes(), t.as_bytes());
    }
    Ok(())
}
