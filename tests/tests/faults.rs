//! Failure handling: bots, agents and customers that disappear or misbehave, and clients
//! that flood or stop reading. Timeouts are shortened through `[server]` settings so the
//! rules show within a second or two.

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};
use switchboard_tests::{Client, EXTERNAL_BOT, TestServer, start_server};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The external-bot sample with extra `[server]` settings.
fn config(server: &str) -> String {
    EXTERNAL_BOT.replacen("[server]\n", &format!("[server]\n{server}\n"), 1)
}

/// Lets `d` of the gateway's time pass at once (paused tokio time, as the sweeper and the
/// grace periods see it), then goes on in real time.
async fn pass(d: Duration) {
    tokio::time::pause();
    tokio::time::advance(d).await;
    tokio::time::resume();
}

/// Waits (in real time, briefly) until the gateway has seen what `done` checks, such as a
/// connection's end, so that time passed afterwards counts from it.
async fn until_seen(what: &str, done: impl Fn() -> bool) -> Result<()> {
    let end = tokio::time::Instant::now() + switchboard_tests::WAIT;
    while !done() {
        if tokio::time::Instant::now() > end {
            anyhow::bail!("the gateway did not see {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn online(s: &TestServer, member: &str) -> bool {
    s.running.hub.with_engine(|e| e.members_view().into_iter().any(|m| m.name == member && m.online))
}

/// The release default of `bot_grace_secs`, `agent_grace_secs`, `bot_reply_timeout_secs`,
/// plus the sweeper's second.
const BOT_GRACE: Duration = Duration::from_secs(5 + 1);
const AGENT_GRACE: Duration = Duration::from_secs(60 + 1);
const BOT_REPLY: Duration = Duration::from_secs(60 + 1);

#[tokio::test]
async fn a_crashed_bot_hands_its_conversations_to_people_never_back_to_itself() -> Result<()> {
    // GeneralQueue has the bot among its members, so only the exclusion of a bot that has
    // handled the conversation keeps it from getting it back.
    let toml = EXTERNAL_BOT
        .replace(r#"members = ["alice", "bob", "carol"]"#, r#"members = ["contoso-bot", "alice", "bob", "carol"]"#);
    assert_ne!(toml, EXTERNAL_BOT);
    let s = start_server(Some(&toml)).await;
    let mut bot = s.bot().await?;
    let mut ann = s.chat_with_bot(&mut bot, "Ann").await?;
    ann.send(json!({"type":"message","text":"hello?"})).await?;
    bot.message().await?;
    bot.close().await; // the bot process dies
    until_seen("the bot leave", || !online(&s, "contoso-bot")).await?;
    pass(BOT_GRACE).await;

    // BotRule would send it back to BotQueue; a failed bot's customers go to people (the
    // fallback GeneralQueue), with a system message saying why. Nobody is signed in yet.
    let notice = ann.until("the notice", |v| v["from"]["role"] == "system" && v["type"] == "message").await?;
    assert!(notice["text"].as_str().unwrap().contains("contoso-bot disconnected"), "{notice}");
    let waiting = |v: &Value| v["name"] == "queue.position" && v["value"]["queue"] == "GeneralQueue";
    if !ann.seen.iter().any(waiting) {
        ann.until("waiting in GeneralQueue", waiting).await?;
    }

    // The bot comes back, with room, as a member of that queue: it is not given it.
    let mut bot = s.bot().await?;
    bot.quiet_for(Duration::from_millis(300), |v| v["name"] != "conversation.assigned").await?;
    assert_eq!(s.running.hub.with_engine(|e| e.holder(&ann.conversation).map(str::to_owned)), None);

    // An agent signs in and gets it, the notice in its transcript.
    let mut alice = s.agent("alice").await?;
    let a = alice.assigned_to(&ann.conversation).await?;
    assert_eq!(a["value"]["queue"], "GeneralQueue");
    let transcript = a["value"]["transcript"].as_array().unwrap();
    assert!(transcript.iter().any(|t| t["text"] == notice["text"]));
    Ok(())
}

#[tokio::test]
async fn a_bot_that_stops_answering_loses_the_conversation_to_people() -> Result<()> {
    let s = start_server(None).await;
    let mut bot = s.bot().await?;
    let mut bob = s.agent("bob").await?;
    let mut ann = s.chat_with_bot(&mut bot, "Ann").await?;
    // Answered in time: nothing happens, however long the customer then waits.
    ann.send(json!({"type":"message","text":"one"})).await?;
    ann.event("ack").await?;
    bot.message().await?;
    bot.say(&ann.conversation, "answer").await?;
    bot.event("ack").await?;
    pass(BOT_REPLY).await;
    bob.quiet_for(Duration::from_millis(300), |v| v["name"] != "conversation.assigned").await?;
    // Not answered: handed over.
    ann.send(json!({"type":"message","text":"two"})).await?;
    ann.event("ack").await?;
    pass(BOT_REPLY).await;
    let a = bob.assigned_to(&ann.conversation).await?;
    assert_eq!(a["value"]["queue"], "GeneralQueue");
    let notice = ann.until("the notice", |v| v["from"]["role"] == "system" && v["type"] == "message").await?;
    assert!(notice["text"].as_str().unwrap().contains("did not answer"));
    Ok(())
}

#[tokio::test]
async fn an_agent_who_returns_within_the_grace_period_keeps_the_conversation() -> Result<()> {
    let s = start_server(None).await;
    let mut bot = s.bot().await?;
    let mut alice = s.agent("alice").await?;
    let mut bob = s.agent("bob").await?;
    let mut ann = s.chat_with_bot(&mut bot, "Ann").await?;
    bot.send(json!({"type":"event","name":"handoff.initiate","conversation":{"id":ann.conversation},"value":{"BotHandoffTopic":"CreditCard"}})).await?;
    alice.assigned_to(&ann.conversation).await?;
    alice.close().await;
    until_seen("alice leave", || !online(&s, "alice")).await?;
    ann.send(json!({"type":"message","text":"are you still there?"})).await?;
    ann.event("ack").await?;
    pass(AGENT_GRACE / 2).await;
    let mut alice = s.agent("alice").await?;
    let a = alice.assigned_to(&ann.conversation).await?;
    assert_eq!(a["value"]["resumed"], true);
    let last = a["value"]["transcript"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["text"], "are you still there?");
    // Past the grace period she still holds it: Bob, free in the same queue, gets nothing.
    pass(AGENT_GRACE).await;
    bob.quiet_for(Duration::from_millis(300), |v| v["name"] != "conversation.assigned").await?;
    alice.say(&ann.conversation, "yes!").await?;
    assert_eq!(ann.message().await?["text"], "yes!");
    Ok(())
}

/// A returning member's work items go out a step at a time (more than a step here), while
/// its customers go on writing: every conversation comes back, each with its work item
/// before anything new in it, and each new message reaches the bot exactly once.
#[tokio::test]
async fn a_bot_returning_to_hundreds_of_conversations_gets_each_back_before_anything_new() -> Result<()> {
    const N: usize = 300;
    // Its 300 customers all connect from 127.0.0.1, over the default 100 open chats an
    // address may hold.
    let s = start_server(Some(&config("chat_conversations_per_address = 300"))).await;
    let mut bot = s.bot().await?;
    let mut customers = Vec::with_capacity(N);
    for i in 0..N {
        customers.push(s.chat_with_bot(&mut bot, &format!("Customer {i}")).await?);
    }
    // The new connection replaces the old one and takes its conversations back.
    let mut bot = s.bot().await?;
    for c in &mut customers {
        c.send(json!({"type":"message","text":"still there?"})).await?;
    }
    // Per conversation: its work item seen, and how often the new message reached the bot.
    let mut seen: std::collections::HashMap<String, (bool, usize)> = std::collections::HashMap::new();
    let is_new = |v: &Value| v["type"] == "message" && v["text"] == "still there?";
    while seen.len() < N || seen.values().any(|&(work, n)| !work || n < 1) {
        let v = bot.recv().await?;
        let conv = v["conversation"]["id"].as_str().unwrap_or_default().to_owned();
        if v["name"] == "conversation.assigned" && v["seq"].is_null() {
            assert_eq!(v["value"]["resumed"], true, "{v}");
            let entry = seen.entry(conv).or_default();
            assert!(!entry.0, "one work item per conversation");
            entry.0 = true;
            entry.1 += v["value"]["transcript"].as_array().unwrap().iter().filter(|a| is_new(a)).count();
        } else if is_new(&v) {
            let entry = seen.entry(conv).or_default();
            assert!(entry.0, "a new message before its conversation's work item: {v}");
            entry.1 += 1;
        }
    }
    bot.quiet_for(Duration::from_millis(300), |v| !is_new(v)).await?;
    assert!(seen.values().all(|&(_, n)| n == 1), "each message once");
    Ok(())
}

#[tokio::test]
async fn an_agent_who_does_not_return_has_the_conversation_requeued_at_the_front() -> Result<()> {
    let s = start_server(None).await;
    let mut bot = s.bot().await?;
    let mut alice = s.agent("alice").await?;
    let mut ann = s.chat_with_bot(&mut bot, "Ann").await?;
    bot.send(json!({"type":"event","name":"handoff.initiate","conversation":{"id":ann.conversation},"value":{"BotHandoffTopic":"CreditCard"}})).await?;
    alice.assigned_to(&ann.conversation).await?;
    alice.close().await;
    // Meanwhile another customer waits in the same queue (alice is gone, bob offline).
    let mut ben = s.chat_with_bot(&mut bot, "Ben").await?;
    bot.send(json!({"type":"event","name":"handoff.initiate","conversation":{"id":ben.conversation},"value":{"BotHandoffTopic":"CreditCard"}})).await?;
    ben.event("queue.position").await?;
    until_seen("alice leave", || !online(&s, "alice")).await?;
    pass(AGENT_GRACE).await;
    // After the grace period Ann goes back to the queue, at the front: the first agent to
    // arrive gets Ann before Ben.
    // The notice is in the transcript (sent once stored); the position is state, sent at
    // once: either may come first.
    let notice = ann.until("the notice", |v| v["from"]["role"] == "system" && v["type"] == "message").await?;
    assert!(notice["text"].as_str().unwrap().contains("front of the queue"), "{notice}");
    let position = |v: &Value| v["name"] == "queue.position" && v["value"]["position"] == 1;
    if !ann.seen.iter().any(position) {
        ann.until("position 1", position).await?;
    }
    let mut bob = s.agent("bob").await?;
    let first = bob.event("conversation.assigned").await?;
    assert_eq!(first["conversation"]["id"], ann.conversation.as_str());
    Ok(())
}

#[tokio::test]
async fn a_customer_who_does_not_resume_in_time_has_the_conversation_closed() -> Result<()> {
    // The release default (300 s) equals the connections' idle timeout, which a paused
    // clock would trip for the bot too; 100 s keeps the bot's connection inside it.
    let s = start_server(Some(&config("customer_resume_secs = 100"))).await;
    let mut bot = s.bot().await?;
    let ann = s.chat_with_bot(&mut bot, "Ann").await?;
    let conv = ann.conversation.clone();
    ann.client.close().await;
    let hub = s.running.hub.clone();
    until_seen("Ann leave", || hub.conversation(&conv).is_some_and(|c| c.inner.lock().customer.is_none())).await?;
    pass(Duration::from_secs(50)).await;
    bot.quiet_for(Duration::from_millis(100), |v| v["type"] != "endOfConversation").await?;
    pass(Duration::from_secs(51)).await;
    let eoc = bot.until("the end", |v| v["type"] == "endOfConversation").await?;
    assert_eq!(eoc["from"]["role"], "system");
    assert!(eoc["text"].as_str().unwrap().contains("did not come back"));
    assert!(eoc["seq"].as_u64().is_some());
    assert!(!s.running.hub.is_open(&conv));
    let load =
        s.running.hub.with_engine(|e| e.members_view().into_iter().find(|m| m.name == "contoso-bot").unwrap().load);
    assert_eq!(load, 0);
    Ok(())
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_without_slowing_others_and_loses_nothing() -> Result<()> {
    // 6 MB toward one customer fills the socket buffers; the conversation is allowed to
    // hold that much here (the default bound is 2 MiB).
    let s = start_server(Some(&config("outbound_queue = 16\nmax_conversation_bytes = 8388608"))).await;
    let mut bot = s.bot().await?;
    let slow = s.chat_with_bot(&mut bot, "Slow").await?;
    let mut fast = s.chat_with_bot(&mut bot, "Fast").await?;
    let big = "x".repeat(20_000);
    // The slow customer never reads; the bot keeps writing to it, and keeps serving Fast.
    for i in 0..300 {
        bot.send(json!({"type":"message","conversation":{"id":slow.conversation},"text":format!("{i} {big}")})).await?;
        bot.event("ack").await?;
        if i % 50 == 0 {
            fast.send(json!({"type":"message","text":format!("ping {i}")})).await?;
            bot.until("fast's message", |v| {
                v["type"] == "message" && v["conversation"]["id"] == fast.conversation.as_str()
            })
            .await?;
            bot.say(&fast.conversation, &format!("pong {i}")).await?;
            bot.event("ack").await?;
            let m = fast.message().await?;
            assert_eq!(m["text"], format!("pong {i}"));
        }
    }
    // The slow one was disconnected as a slow consumer…
    let hub = s.running.hub.clone();
    let cut_off = || hub.conversation(&slow.conversation).is_some_and(|c| c.inner.lock().customer.is_none());
    until_seen("Slow cut off", cut_off).await?;
    // …and its client comes back to read only a while later (on a loaded machine the loop
    // above took longer than the 4 s the closing frame used to be given, and the client
    // found its connection gone without it)…
    pass(Duration::from_secs(30)).await;
    let mut slow_client = slow.client;
    let code = slow_client.closed().await?;
    assert_eq!(code, Some(CloseCode::from(4008)), "slow consumer");
    // …and resumes from its watermark with nothing lost.
    let mut again = s.customer().await?;
    again.send(json!({"type":"event","name":"session.resume","value":{"conversationId":slow.conversation,"token":slow.token,"watermark":0}})).await?;
    again.event("session.started").await?;
    for i in 0..300 {
        let m = again.until("bot message", |v| v["type"] == "message").await?;
        assert!(m["text"].as_str().unwrap().starts_with(&format!("{i} ")), "message {i} in order");
    }
    Ok(())
}

/// An agent whose client hangs (or will not read) while little is queued toward it: its
/// queue never overflows, so before a stalled write had a bound it kept the conversation,
/// and its customer, forever. Now a write that makes no progress for the idle timeout
/// closes it as a slow consumer; it comes back to the whole conversation.
#[tokio::test]
async fn an_agent_that_stops_reading_is_closed_as_a_slow_consumer_and_gets_everything_back() -> Result<()> {
    const N: usize = 300;
    // The stall bound is the idle timeout (300 s by default), shortened to keep the test
    // short; Ann may write faster and more than by default. The queue's bound and the
    // buffers are the release's.
    let s = start_server(Some(&config(
        "idle_timeout_secs = 3\ncustomer_rate = 1000.0\ncustomer_burst = 1000\nmax_conversation_bytes = 16777216",
    )))
    .await;
    let mut bot = s.bot().await?;
    let token = s.token("alice", &switchboard_tests::agent_secret("alice")).await?;
    let mut alice = Client::connect_with_receive_buffer(&s.ws_url("/v1/agent"), Some(&token), 4096).await?;
    let mut ann = s.chat_with_bot(&mut bot, "Ann").await?;
    bot.send(json!({"type":"event","name":"handoff.initiate","conversation":{"id":ann.conversation},"value":{"BotHandoffTopic":"CreditCard"}})).await?;
    alice.assigned_to(&ann.conversation).await?;

    // From here Alice reads nothing, but her client stays alive: it pings, so the idle
    // timeout is not what ends her. Ann writes 300 long messages, 7.2 MB: far below the
    // queue's 1,024 frames, above the 4 MiB an agent's socket may hold in the kernel.
    let big = "x".repeat(24_000);
    for i in 0..N {
        ann.send(json!({"type":"message","text":format!("{i} {big}")})).await?;
        ann.event("ack").await?;
    }
    let started = std::time::Instant::now();
    while online(&s, "alice") {
        assert!(started.elapsed() < Duration::from_secs(20), "the stuck agent is still online after 20 s");
        alice.send_raw(tokio_tungstenite::tungstenite::Message::Ping(Default::default())).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // What was in flight drains, then the close.
    assert_eq!(alice.closed().await?, Some(CloseCode::from(4008)), "slow consumer");

    // She keeps the conversation for the grace period, and gets it back whole.
    let mut alice = s.agent("alice").await?;
    let a = alice.assigned_to(&ann.conversation).await?;
    assert_eq!(a["value"]["resumed"], true);
    // The work item carries the newest page of the transcript; the older ones on request.
    let mut transcript = a["value"]["transcript"].as_array().unwrap().clone();
    let mut from = a["value"]["transcriptFrom"].as_u64().unwrap();
    while from > 1 {
        let ask = json!({"type":"event","name":"transcript.request","conversation":{"id":ann.conversation},"value":{"before":from}});
        alice.send(ask).await?;
        let page = alice.event("transcript.page").await?;
        transcript.splice(0..0, page["value"]["transcript"].as_array().unwrap().iter().cloned());
        from = page["value"]["transcriptFrom"].as_u64().unwrap();
    }
    let long: Vec<&str> =
        transcript.iter().filter_map(|m| m["text"].as_str()).filter(|t| t.ends_with(big.as_str())).collect();
    assert_eq!(long.len(), N, "every message in the transcript");
    for (i, t) in long.iter().enumerate() {
        assert!(t.starts_with(&format!("{i} ")), "message {i} in order");
    }
    alice.say(&ann.conversation, "sorry, I am back").await?;
    assert_eq!(ann.message().await?["text"], "sorry, I am back");
    Ok(())
}

#[tokio::test]
async fn floods_are_rate_limited_not_disconnected() -> Result<()> {
    let s = start_server(Some(&config("customer_rate = 5.0\ncustomer_burst = 10"))).await;
    let mut bot = s.bot().await?;
    let mut ann = s.chat_with_bot(&mut bot, "Ann").await?;
    for i in 0..40 {
        ann.send(json!({"type":"message","text":format!("m{i}"),"channelData":{"clientActivityId":format!("c{i}")}}))
            .await?;
    }
    let (mut acks, mut limited) = (0, 0);
    while acks + limited < 40 {
        let v = ann.until("ack or error", |v| v["name"] == "ack" || v["name"] == "error").await?;
        if v["name"] == "ack" {
            acks += 1;
        } else {
            assert_eq!(v["value"]["code"], "rate_limited");
            assert!(v["value"]["clientActivityId"].as_str().unwrap().starts_with('c'));
            limited += 1;
        }
    }
    // The burst (10, one of it spent on session.start) passes; the rest of the flood does not.
    assert!(acks >= 9 && limited >= 20, "acks {acks}, limited {limited}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    ann.send(json!({"type":"message","text":"after a pause"})).await?;
    ann.event("ack").await?;
    Ok(())
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_with_503() -> Result<()> {
    let s = start_server(Some(&config("max_connections = 2"))).await;
    let _a = s.customer().await?;
    let _b = s.customer().await?;
    let e = s.customer().await.err().expect("refused");
    match e.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
        Some(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
    drop(_a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.customer().await?;
    Ok(())
}

#[tokio::test]
async fn malformed_and_oversized_frames_under_load_hurt_only_their_sender() -> Result<()> {
    let s = start_server(None).await;
    let mut bot = s.bot().await?;
    let mut good = Vec::new();
    for i in 0..10 {
        good.push(s.chat_with_bot(&mut bot, &format!("G{i}")).await?);
    }
    let mut bad = s.customer().await?;
    bad.send(json!({"type":"event","name":"session.start","value":{"workstream":"ChatWorkStream"}})).await?;
    bad.event("session.started").await?;
    for round in 0..5 {
        for g in good.iter_mut() {
            g.send(json!({"type":"message","text":format!("r{round}")})).await?;
        }
        for junk in ["{", "[1,2]", r#"{"type":"message","text":7}"#, r#"{"type":"event"}"#] {
            bad.send_raw(tokio_tungstenite::tungstenite::Message::text(junk)).await?;
            assert_eq!(bad.event("error").await?["value"]["code"], "bad_request");
        }
        for g in good.iter_mut() {
            g.event("ack").await?;
        }
    }
    let mut got = 0;
    while got < 50 {
        bot.message().await?;
        got += 1;
    }
    bad.send_raw(tokio_tungstenite::tungstenite::Message::text("x".repeat(40_000))).await?;
    assert_eq!(bad.closed().await?, Some(CloseCode::Size));
    for g in good.iter_mut() {
        g.send(json!({"type":"message","text":"still fine"})).await?;
        g.event("ack").await?;
    }
    Ok(())
}

#[tokio::test]
async fn an_idle_conversation_is_closed_and_both_parties_are_told() -> Result<()> {
    let s = start_server(None).await;
    let mut bot = s.bot().await?;
    let mut ann = s.chat_with_bot(&mut bot, "Ann").await?;
    let conv = ann.conversation.clone();
    // Nobody writes for the release default idle_close_secs (3600). Both stay connected:
    // time passes in steps shorter than the connections' idle timeout, and each client
    // reads in between, which answers the gateway's pings.
    let end = |v: &Value| v["type"] == "endOfConversation";
    let mut told = (None, None);
    for _ in 0..50 {
        pass(Duration::from_secs(80)).await;
        if told.0.is_none()
            && let Ok(v) = tokio::time::timeout(Duration::from_millis(20), ann.until("the end", end)).await
        {
            told.0 = Some(v?);
        }
        if told.1.is_none()
            && let Ok(v) = tokio::time::timeout(Duration::from_millis(20), bot.until("the end", end)).await
        {
            told.1 = Some(v?);
        }
        if told.0.is_some() && told.1.is_some() {
            break;
        }
    }
    let (Some(to_ann), Some(to_bot)) = told else { panic!("not both told: {told:?}") };
    assert!(to_ann["text"].as_str().unwrap().contains("without activity"), "{to_ann}");
    assert_eq!(to_ann["seq"], to_bot["seq"]);
    assert!(to_bot["seq"].as_u64().is_some());
    assert!(!s.running.hub.is_open(&conv));
    Ok(())
}
