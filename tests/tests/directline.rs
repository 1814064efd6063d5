//! Direct Line 3.0 against the real client: `botframework-directlinejs` 0.15 under Node
//! (`tests/interop/directline/customer.js`, installed by `scripts/test.sh` with `npm ci`)
//! talks to a bot through Switchboard — the built-in bot, or an unmodified `botbuilder`
//! bot on the Bot Connector — is handed off to an agent on `/v1/agent` (this test), drops
//! and resumes from its watermark, in WebSocket and in polling mode.
//! Plus the REST surface's refusals, with Direct Line's status codes and error body.

use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::{Value, json};
use switchboard_tests::interop::{DIRECTLINE_SECRET, DirectLineCustomer, NODE_WAIT, NodeBot, with_directline};
use switchboard_tests::{Client, EXTERNAL_BOT, TestServer, http_with, start_server};

const SECRET: &str = DIRECTLINE_SECRET;

/// How long a step of the Node client may take (a loaded machine, a cold Node start).
const STEP: Duration = NODE_WAIT;

/// The built-in default configuration (built-in bot, demo agents) with Direct Line on.
fn config() -> String {
    with_directline(switchboard::config::DEFAULT_TOML, "ChatWorkStream")
}

/// Reads the agent's frames until one satisfies `pred`, for up to [`STEP`].
async fn agent_until(agent: &mut Client, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
    agent.until_within(STEP, what, pred).await
}

/// Sends as the agent and waits for the gateway's ack (stored, so the customer can get it).
async fn agent_say(agent: &mut Client, conversation: &str, text: &str) -> Result<()> {
    let cid = format!("agent-{}", text.len() * 31 + text.bytes().map(usize::from).sum::<usize>());
    agent
        .send(json!({"type":"message","conversation":{"id":conversation},"text":text,"channelData":{"clientActivityId":cid}}))
        .await?;
    agent_until(agent, "ack", |v| v["name"] == "ack" && v["value"]["clientActivityId"] == cid.as_str()).await?;
    Ok(())
}

fn is_message(text: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == "message" && v["text"] == text
}

/// The whole scenario in one mode: the built-in bot, handoff to alice, drop, resume, end.
async fn handoff_and_resume(mode: &str) -> Result<()> {
    let server = start_server(Some(&config())).await;
    let node = DirectLineCustomer::spawn(&server, mode, "handoff", &[])?;
    handed_to_alice_and_resumed(&server, node).await
}

/// What the agent and the Direct Line customer do once a bot has answered the customer and
/// handed the conversation to alice: she greets; the customer drops, she writes twice, the
/// customer resumes from its watermark, thanks her, she says goodbye and the customer ends
/// it. The customer checks it saw every activity once, with no gap in `seq`.
async fn handed_to_alice_and_resumed(server: &TestServer, mut node: DirectLineCustomer) -> Result<()> {
    let mut alice = server.agent("alice").await?;

    let assigned = agent_until(&mut alice, "conversation.assigned", |v| v["name"] == "conversation.assigned").await?;
    let conv = assigned["conversation"]["id"].as_str().context("conversation id")?.to_owned();
    let transcript = assigned["value"]["transcript"].as_array().context("transcript")?;
    assert!(
        transcript.iter().any(|a| a["text"] == "agent" && a["from"]["role"] == "user"),
        "the agent sees what the customer told the bot: {transcript:?}"
    );
    assert_eq!(
        transcript.iter().filter(|a| a["text"] == "agent").count(),
        1,
        "the repeated clientActivityId is in the transcript once"
    );
    agent_say(&mut alice, &conv, "Hello, this is Alice. How can I help?").await?;

    let dropped = node.event("dropped").await?;
    assert_eq!(dropped["conversationId"], conv.as_str());
    agent_say(&mut alice, &conv, "I looked at your card while you were away 1").await?;
    agent_say(&mut alice, &conv, "and found the issue while you were away 2").await?;
    node.go().await?;

    agent_until(&mut alice, "the customer's thanks", is_message("thanks")).await?;
    agent_say(&mut alice, &conv, "You're welcome, goodbye!").await?;
    agent_until(&mut alice, "endOfConversation", |v| v["type"] == "endOfConversation").await?;
    let done = node.event("done").await?;
    let count = done["count"].as_u64().context("count")?;
    assert!(count >= 9, "the customer saw the whole conversation once, without a gap: {done}");
    let status = tokio::time::timeout(STEP, node.child.wait()).await??;
    assert!(status.success(), "node exited with {status}");
    Ok(())
}

/// The same with an unmodified botbuilder bot (CloudAdapter, auth off; the auth-on path is
/// botconnector.rs's) in the built-in bot's place: it greets on `conversationUpdate` and
/// hands off with `EventFactory.createHandoffInitiation` (`handoff = "event"`) or with
/// Omnichannel's `channelData.tags` (`"tags"`).
async fn botbuilder_handoff_and_resume(mode: &str, handoff: &str) -> Result<()> {
    let bot = NodeBot::start(&[("HANDOFF", handoff.to_owned())]).await?;
    let sample = EXTERNAL_BOT.replace(
        "capacity = 1000\n",
        &format!("capacity = 1000\nendpoint = \"{}\"\nauth = \"none\"\n", bot.endpoint()),
    );
    assert!(sample.contains("endpoint ="), "the sample's bot has its endpoint");
    let server = start_server(Some(&with_directline(&sample, "ChatWorkStream"))).await;
    let said = [("SB_GREETING", "Welcome to Contoso"), ("SB_HANDOFF_TEXT", "Transferring you to an agent")];
    let node = DirectLineCustomer::spawn(&server, mode, "handoff", &said)?;
    handed_to_alice_and_resumed(&server, node).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directlinejs_and_a_botbuilder_bot_hand_off_with_the_handoff_event() -> Result<()> {
    botbuilder_handoff_and_resume("websocket", "event").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directlinejs_polling_and_a_botbuilder_bot_hand_off_with_omnichannel_tags() -> Result<()> {
    botbuilder_handoff_and_resume("polling", "tags").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directlinejs_over_websocket_is_handed_off_and_resumes() -> Result<()> {
    handoff_and_resume("websocket").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directlinejs_polling_is_handed_off_and_resumes() -> Result<()> {
    handoff_and_resume("polling").await
}

/// A Direct Line call with `auth` as the bearer; status and parsed body.
async fn call(server: &TestServer, method: &str, path: &str, auth: Option<&str>, body: &str) -> Result<(u16, Value)> {
    let bearer = auth.map(|a| format!("Bearer {a}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b));
    }
    let (status, text) = http_with(server.addr, method, path, &headers, body).await?;
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, v))
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn rest_refusals_have_direct_line_codes_and_body() -> Result<()> {
    let server = start_server(Some(&config())).await;
    let start = "/v3/directline/conversations";

    let (s, v) = call(&server, "POST", start, None, "").await?;
    assert_eq!((s, error_code(&v)), (401, "Unauthorized"), "{v}");
    assert!(v["error"]["message"].is_string());
    let (s, v) = call(&server, "POST", start, Some("not-the-secret"), "").await?;
    assert_eq!((s, error_code(&v)), (401, "Unauthorized"), "{v}");
    let (s, v) = call(&server, "POST", "/v3/directline/tokens/generate", Some("wrong"), "").await?;
    assert_eq!(s, 401, "{v}");

    // A good start: 201 with the Direct Line conversation body.
    let (s, conv) = call(&server, "POST", start, Some(SECRET), r#"{"user":{"id":"u1","name":"Ann"}}"#).await?;
    assert_eq!(s, 201, "{conv}");
    let id = conv["conversationId"].as_str().context("conversationId")?;
    let token = conv["token"].as_str().context("token")?;
    assert!(conv["expires_in"].as_u64().is_some_and(|e| e > 0));
    let stream = conv["streamUrl"].as_str().context("streamUrl")?;
    assert!(stream.starts_with(&format!("ws://{}/v3/directline/conversations/{id}/stream?", server.addr)), "{stream}");

    // Unknown conversations: 404 with the secret; a token for another conversation: 403.
    let unknown = "/v3/directline/conversations/c_0000/activities";
    let (s, v) = call(&server, "GET", unknown, Some(SECRET), "").await?;
    assert_eq!((s, error_code(&v)), (404, "NotFound"), "{v}");
    let (s, v) = call(&server, "GET", unknown, Some(token), "").await?;
    assert_eq!((s, error_code(&v)), (403, "Forbidden"), "{v}");
    let (s, _) = call(&server, "GET", "/v3/directline/conversations/c_0000", Some(SECRET), "").await?;
    assert_eq!(s, 404);

    // Bad bodies: 400 BadArgument; too large: 413.
    let acts = format!("/v3/directline/conversations/{id}/activities");
    for body in
        ["{", "[]", r#"{"type":"bogus"}"#, r#"{"type":"message"}"#, r#"{"type":"message","text":"x","channelData":7}"#]
    {
        let (s, v) = call(&server, "POST", &acts, Some(token), body).await?;
        assert_eq!((s, error_code(&v)), (400, "BadArgument"), "{body}: {v}");
    }
    let big = json!({"type":"message","text":"x".repeat(40 * 1024)}).to_string();
    let (s, v) = call(&server, "POST", &acts, Some(token), &big).await?;
    assert_eq!((s, error_code(&v)), (413, "MessageSizeTooBig"), "{v}");
    let (s, v) = call(&server, "GET", &format!("{acts}?watermark=abc"), Some(token), "").await?;
    assert_eq!((s, error_code(&v)), (400, "BadArgument"), "{v}");
    let (s, v) = call(&server, "POST", start, Some(SECRET), r#"{"user":"#).await?;
    assert_eq!((s, error_code(&v)), (400, "BadArgument"), "{v}");

    // The stream refuses a missing or foreign credential before the upgrade.
    let (s, _) = call(&server, "GET", &format!("/v3/directline/conversations/{id}/stream"), None, "").await?;
    assert_eq!(s, 401);
    let (s, _) = call(&server, "GET", &format!("/v3/directline/conversations/{id}/stream?t={token}"), None, "").await?;
    assert_eq!(s, 401, "a conversation token is not a stream credential");

    // A message posted answers its id, and polling returns it with the watermark.
    let (s, posted) =
        call(&server, "POST", &acts, Some(token), r#"{"type":"message","text":"hi","from":{"id":"u1"}}"#).await?;
    assert_eq!(s, 200, "{posted}");
    let pid = posted["id"].as_str().context("id")?;
    let (s, set) = call(&server, "GET", &format!("{acts}?watermark=0"), Some(token), "").await?;
    assert_eq!(s, 200);
    let list = set["activities"].as_array().context("activities")?;
    let mine = list.iter().find(|a| a["id"] == pid).context("own activity polled back")?;
    assert_eq!(mine["from"]["role"], "user");
    assert_eq!(mine["channelId"], "directline");
    let wm: u64 = set["watermark"].as_str().context("watermark is a string")?.parse()?;
    // The bot may still be answering: whatever comes later comes after the watermark.
    let (_, later) = call(&server, "GET", &format!("{acts}?watermark={wm}"), Some(token), "").await?;
    let later = later["activities"].as_array().context("activities")?;
    assert!(later.iter().all(|a| a["channelData"]["switchboard"]["seq"].as_u64() > Some(wm)), "{later:?}");

    // Token calls: generate needs the secret; refresh needs a token.
    let (s, v) = call(&server, "POST", "/v3/directline/tokens/generate", Some(token), "").await?;
    assert_eq!(s, 403, "{v}");
    let (s, v) = call(&server, "POST", "/v3/directline/tokens/refresh", Some(token), "").await?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["conversationId"], id);
    let (s, gen_) = call(&server, "POST", "/v3/directline/tokens/generate", Some(SECRET), "").await?;
    assert_eq!(s, 200);
    let gtoken = gen_["token"].as_str().context("token")?;
    assert_eq!(gen_["expires_in"], 1800, "a generated token starts its conversation within Direct Line's 30 minutes");
    let (s, first) = call(&server, "POST", start, Some(gtoken), "").await?;
    assert_eq!(s, 201, "{first}");
    assert_eq!(first["conversationId"], gen_["conversationId"]);
    let (s, again) = call(&server, "POST", start, Some(gtoken), "").await?;
    assert_eq!(s, 200, "the token's conversation is already going: {again}");
    assert_eq!(again["conversationId"], gen_["conversationId"]);
    Ok(())
}

#[tokio::test]
async fn a_browser_page_of_another_origin_may_call() -> Result<()> {
    let server = start_server(Some(&config())).await;
    let path = "/v3/directline/conversations";
    let pre = [("origin", "https://shop.example"), ("access-control-request-method", "POST")];
    let r = switchboard_tests::http_response(server.addr, "OPTIONS", path, &pre, "").await?;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r.header("access-control-allow-headers").is_some_and(|h| h.contains("authorization")));
    let bearer = format!("Bearer {SECRET}");
    let r = switchboard_tests::http_response(server.addr, "POST", path, &[("authorization", &bearer)], "").await?;
    assert_eq!((r.status, r.header("access-control-allow-origin")), (201, Some("*")));
    Ok(())
}

#[tokio::test]
async fn without_directline_config_the_routes_are_not_found() -> Result<()> {
    let server = start_server(Some(switchboard::config::DEFAULT_TOML)).await;
    let (s, v) = call(&server, "POST", "/v3/directline/conversations", Some(SECRET), "").await?;
    assert_eq!((s, error_code(&v)), (404, "NotFound"), "{v}");
    Ok(())
}

/// A multipart body with an `activity` part and one file.
fn multipart(boundary: &str, activity: &str, file: &[u8], content_type: &str) -> String {
    let file = String::from_utf8(file.to_vec()).expect("a text file for the test");
    format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"activity\"\r\nContent-Type: application/vnd.microsoft.activity\r\n\r\n{activity}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"note.txt\"\r\nContent-Type: {content_type}\r\n\r\n{file}\r\n\
         --{boundary}--\r\n"
    )
}

#[tokio::test]
async fn an_upload_is_kept_with_its_activity_and_served_back() -> Result<()> {
    let server = start_server(Some(&config())).await;
    let (_, conv) = call(&server, "POST", "/v3/directline/conversations", Some(SECRET), "").await?;
    let id = conv["conversationId"].as_str().context("id")?;
    let token = conv["token"].as_str().context("token")?;
    let bearer = format!("Bearer {token}");
    let boundary = "sbBoundary42";
    let ct = format!("multipart/form-data; boundary={boundary}");
    let body = multipart(
        boundary,
        r#"{"type":"message","text":"my receipt","from":{"id":"u1"}}"#,
        b"total: 42 EUR",
        "text/plain",
    );
    let path = format!("/v3/directline/conversations/{id}/upload?userId=u1");
    let headers = [("content-type", ct.as_str()), ("authorization", bearer.as_str())];
    let (s, text) = http_with(server.addr, "POST", &path, &headers, &body).await?;
    assert_eq!(s, 200, "{text}");
    let posted: Value = serde_json::from_str(&text)?;
    let pid = posted["id"].as_str().context("id")?;

    let (_, set) =
        call(&server, "GET", &format!("/v3/directline/conversations/{id}/activities"), Some(token), "").await?;
    let mine = set["activities"]
        .as_array()
        .and_then(|l| l.iter().find(|a| a["id"] == pid).cloned())
        .context("upload polled back")?;
    assert_eq!(mine["text"], "my receipt");
    let att = &mine["attachments"][0];
    assert_eq!(att["contentType"], "text/plain");
    assert_eq!(att["name"], "note.txt");
    let url = att["contentUrl"].as_str().context("contentUrl")?;
    let prefix = format!("http://{}", server.addr);
    let served = url.strip_prefix(&prefix).context("served by the gateway")?;
    let r = switchboard_tests::http_response(server.addr, "GET", served, &[], "").await?;
    assert_eq!((r.status, r.body.as_str()), (200, "total: 42 EUR"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("content-disposition"), Some("attachment"), "only images are shown inline");
    let (s, _) = call(&server, "GET", &format!("/v3/directline/conversations/{id}/attachments/99/0"), None, "").await?;
    assert_eq!(s, 404);

    // Over the bound (a quarter of max_conversation_bytes): 413; no file: 400.
    let big = "x".repeat(600 * 1024);
    let body = multipart(boundary, r#"{"type":"message"}"#, big.as_bytes(), "text/plain");
    let (s, text) = http_with(server.addr, "POST", &path, &headers, &body).await?;
    assert_eq!(s, 413, "{text}");
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"activity\"\r\n\r\n{{\"type\":\"message\"}}\r\n--{boundary}--\r\n"
    );
    let (s, text) = http_with(server.addr, "POST", &path, &headers, &body).await?;
    assert_eq!(s, 400, "{text}");
    let (s, v) = call(&server, "POST", &path, Some(token), "{}").await?;
    assert_eq!((s, error_code(&v)), (400, "BadArgument"), "not multipart: {v}");
    Ok(())
}

/// A Direct Line conversation started with the secret: its answer, id and token.
async fn start_conversation(server: &TestServer) -> Result<(Value, String, String)> {
    let (_, conv) = call(server, "POST", "/v3/directline/conversations", Some(SECRET), "").await?;
    let id = conv["conversationId"].as_str().context("id")?.to_owned();
    let token = conv["token"].as_str().context("token")?.to_owned();
    Ok((conv, id, token))
}

#[tokio::test]
async fn the_stream_sends_activity_sets_and_replays_after_the_watermark() -> Result<()> {
    let server = start_server(Some(&config())).await;
    let (conv, id, token) = start_conversation(&server).await?;
    let acts = format!("/v3/directline/conversations/{id}/activities");
    // The built-in bot greets; a message from the customer follows.
    let mut stream = Client::connect(conv["streamUrl"].as_str().context("streamUrl")?, None).await?;
    let first = stream
        .until_within(STEP, "the greeting", |v| {
            v["activities"].as_array().is_some_and(|l| l.iter().any(|a| a["type"] == "message"))
        })
        .await?;
    assert!(first["watermark"].is_string(), "{first}");
    let (_, posted) =
        call(&server, "POST", &acts, Some(&token), r#"{"type":"message","text":"hello","from":{"id":"u1"}}"#).await?;
    let is_own = |a: &Value| a["id"] == posted["id"];
    let own = stream
        .until_within(STEP, "own message", |v| v["activities"].as_array().is_some_and(|l| l.iter().any(is_own)))
        .await?;
    // The set may carry the bot's answer too (a loaded machine batches them): the
    // watermark to resume from is the one just before the customer's own activity.
    let mine = own["activities"].as_array().context("activities")?.iter().find(|a| is_own(a)).context("own")?;
    let wm: u64 = mine["channelData"]["switchboard"]["seq"].as_u64().context("seq")?;

    // A second stream for the same conversation replaces the first (4001) and replays
    // exactly what follows its watermark.
    let (_, again) =
        call(&server, "GET", &format!("/v3/directline/conversations/{id}?watermark={}", wm - 1), Some(&token), "")
            .await?;
    let mut second = Client::connect(again["streamUrl"].as_str().context("streamUrl")?, None).await?;
    let replay = second.until_within(STEP, "replay", |v| v["activities"].is_array()).await?;
    let list = replay["activities"].as_array().context("activities")?;
    assert_eq!(list[0]["id"], posted["id"], "the replay starts right after the watermark: {replay}");
    let seqs: Vec<u64> = list.iter().filter_map(|a| a["channelData"]["switchboard"]["seq"].as_u64()).collect();
    assert_eq!(seqs, (wm..wm + seqs.len() as u64).collect::<Vec<_>>(), "in order, without a gap: {replay}");
    assert_eq!(stream.closed().await?.map(u16::from), Some(4001));
    Ok(())
}

#[tokio::test]
async fn wrong_secrets_lock_the_address_out() -> Result<()> {
    let server = start_server(Some(&config())).await;
    let start = "/v3/directline/conversations";
    // Without a credential: refused, not counted.
    for _ in 0..8 {
        assert_eq!(call(&server, "POST", start, None, "").await?.0, 401);
    }
    for _ in 0..5 {
        assert_eq!(call(&server, "POST", start, Some("guess"), "").await?.0, 401);
    }
    let (s, v) = call(&server, "POST", start, Some(SECRET), "").await?;
    assert_eq!((s, error_code(&v)), (429, "TooManyRequests"), "locked out even with the right secret: {v}");
    Ok(())
}

#[tokio::test]
async fn posts_beyond_the_customer_rate_are_refused() -> Result<()> {
    let slow = config().replacen("[server]\n", "[server]\ncustomer_rate = 0.01\ncustomer_burst = 3\n", 1);
    let server = start_server(Some(&slow)).await;
    let (_, conv) = call(&server, "POST", "/v3/directline/conversations", Some(SECRET), "").await?;
    let acts = format!("/v3/directline/conversations/{}/activities", conv["conversationId"].as_str().context("id")?);
    let token = conv["token"].as_str().context("token")?;
    for i in 0..3 {
        let (s, v) = call(&server, "POST", &acts, Some(token), &json!({"type":"typing","n":i}).to_string()).await?;
        assert_eq!(s, 200, "{v}");
    }
    let (s, v) = call(&server, "POST", &acts, Some(token), r#"{"type":"message","text":"one too many"}"#).await?;
    assert_eq!((s, error_code(&v)), (429, "TooManyRequests"), "{v}");
    Ok(())
}

/// A stream whose client stops reading is closed as a slow consumer (4008) once a write
/// toward it has stalled for 10 s (its socket's kernel buffer is bounded, so that comes
/// after tens of KiB, not megabytes), and a new stream resumes from the watermark with
/// nothing lost.
#[tokio::test]
async fn a_stream_that_stops_reading_is_closed_as_a_slow_consumer_and_resumes_without_loss() -> Result<()> {
    let server = start_server(Some(&config())).await;
    let (conv, id, token) = start_conversation(&server).await?;
    let hub = server.running.hub.clone();
    let attached = |on: bool| {
        let (hub, id) = (hub.clone(), id.clone());
        async move {
            let t0 = std::time::Instant::now();
            while hub.conversation(&id).is_none_or(|c| c.inner.lock().customer.is_some() != on) {
                anyhow::ensure!(
                    t0.elapsed() < Duration::from_secs(30),
                    "the stream is not {}",
                    if on { "attached" } else { "cut off" }
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok(())
        }
    };
    let stream_url = conv["streamUrl"].as_str().context("streamUrl")?;
    let mut stuck = Client::connect_with_receive_buffer(stream_url, None, 4096).await?;
    attached(true).await?;
    // 400 KB of the customer's own messages come back on the stream, which reads nothing.
    let acts = format!("/v3/directline/conversations/{id}/activities");
    let big = "x".repeat(20_000);
    for i in 0..20 {
        let body = json!({"type":"message","text":format!("{i} {big}"),"from":{"id":"u1"}}).to_string();
        let (s, v) = call(&server, "POST", &acts, Some(&token), &body).await?;
        assert_eq!(s, 200, "{v}");
    }
    attached(false).await?;
    assert_eq!(stuck.closed().await?.map(u16::from), Some(4008), "slow consumer");

    // A new stream from the start replays every message, in order.
    let (_, again) =
        call(&server, "GET", &format!("/v3/directline/conversations/{id}?watermark=0"), Some(&token), "").await?;
    let mut fresh = Client::connect(again["streamUrl"].as_str().context("streamUrl")?, None).await?;
    let mut seen = 0;
    while seen < 20 {
        let set = fresh.until_within(STEP, "the replay", |v| v["activities"].is_array()).await?;
        for a in set["activities"].as_array().context("activities")? {
            let text = a["text"].as_str().unwrap_or_default();
            if a["type"] == "message" && text.ends_with(&big) {
                assert!(text.starts_with(&format!("{seen} ")), "message {seen} in order");
                seen += 1;
            }
        }
    }
    Ok(())
}

/// At shutdown the stream sends what is committed and says goodbye with 1001, for its
/// client to resume from the watermark on the next gateway.
#[tokio::test]
async fn the_stream_says_goodbye_with_1001_at_shutdown() -> Result<()> {
    let server = start_server(Some(&config())).await;
    let (conv, _, _) = start_conversation(&server).await?;
    let mut stream = Client::connect(conv["streamUrl"].as_str().context("streamUrl")?, None).await?;
    stream
        .until_within(STEP, "the greeting", |v| {
            v["activities"].as_array().is_some_and(|l| l.iter().any(|a| a["type"] == "message"))
        })
        .await?;
    let stopping = tokio::spawn(server.running.shutdown());
    assert_eq!(stream.closed().await?.map(u16::from), Some(1001));
    stopping.await?;
    Ok(())
}
