//! The whole conversation lifecycle against each store: the default SQLite store, a store
//! that commits slowly (20 ms a batch), one that fails a batch, and the in-memory store.
//! Start, bot, escalation, transfer, customer end, bot end with survey, agent end with
//! survey, a call's hang-up, and resume: every party learns how a conversation ended, the
//! holder gets one `conversation.assigned` per assignment, nothing is lost between an old
//! holder and a new one, and nothing acknowledged is lost or duplicated.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::{Value, json};
use switchboard_tests::stores::ScriptedStore;
use switchboard_tests::{Client, StoreChoice, TestServer, config, external_bot_with_voice, start_on};

/// Text that the failing store refuses the first time it sees it.
const FRAGILE: &str = "my card number ends in 4242";

async fn server(store: StoreChoice) -> TestServer {
    start_on(config(Some(&external_bot_with_voice())), store).await
}

/// The holder's work item for `conv` (the `conversation.assigned` without `seq`).
async fn work_item(c: &mut Client, conv: &str) -> Result<Value> {
    c.until("work item", |v| v["name"] == "conversation.assigned" && v["conversation"]["id"] == conv).await
}

/// Sends `text` with a client activity id until it is acknowledged (a store failure is
/// answered with `unavailable`, and the client sends the same activity again). Returns
/// the ack and how many attempts were refused.
async fn send_acked(c: &mut Client, conv: Option<&str>, text: &str, cid: &str) -> Result<(Value, usize)> {
    let mut refused = 0;
    loop {
        let mut m = json!({"type":"message","text":text,"channelData":{"clientActivityId":cid}});
        if let Some(id) = conv {
            m["conversation"] = json!({"id": id});
        }
        c.send(m).await?;
        let answer = c
            .until("ack or error", |v| {
                (v["name"] == "ack" || v["name"] == "error") && v["value"]["clientActivityId"] == cid
            })
            .await?;
        if answer["name"] == "ack" {
            return Ok((answer, refused));
        }
        if answer["value"]["code"] != "unavailable" || refused > 2 {
            bail!("refused: {answer}");
        }
        refused += 1;
    }
}

/// Frames in `c.seen` that are `conversation.assigned` for `conv`.
fn assignments(c: &Client, conv: &str) -> usize {
    c.seen.iter().filter(|v| v["name"] == "conversation.assigned" && v["conversation"]["id"] == conv).count()
}

/// Activities in `c.seen` with `text`.
fn with_text(c: &Client, text: &str) -> usize {
    c.seen.iter().filter(|v| v["type"] == "message" && v["text"] == text).count()
}

async fn lifecycle(s: TestServer) -> Result<()> {
    let mut bot = s.bot().await?;
    let mut alice = s.agent("alice").await?;
    let mut carol = s.agent("carol").await?;

    // Start: the bot gets one work item.
    let mut ann = s.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    let conv = ann.conversation.clone();
    let item = work_item(&mut bot, &conv).await?;
    assert!(item["seq"].is_null(), "the work item is not a transcript entry: {item}");
    assert_eq!(item["value"]["queue"], "BotQueue");
    ann.until("the bot's arrival", |v| v["name"] == "conversation.assigned" && v["value"]["role"] == "bot").await?;

    // A message that the failing store refuses once: resent, stored once, delivered once.
    let (ack, _) = send_acked(&mut ann, None, FRAGILE, "ann-1").await?;
    let seq = ack["value"]["seq"].as_u64().unwrap();
    let got = bot.until("Ann's message", |v| v["text"] == FRAGILE).await?;
    assert_eq!(got["seq"].as_u64(), Some(seq), "delivered with the seq it was acknowledged with");
    bot.say(&conv, "Let me get someone.").await?;
    assert_eq!(ann.message().await?["text"], "Let me get someone.");

    // Escalation: the last words before it reach whoever holds the conversation next.
    ann.send(json!({"type":"message","text":"thanks, waiting"})).await?;
    ann.event("ack").await?;
    bot.send(json!({"type":"event","name":"handoff.initiate","conversation":{"id":conv},
                    "value":{"BotHandoffTopic":"CreditCard"},"text":"card stolen"}))
        .await?;
    let a = work_item(&mut alice, &conv).await?;
    assert_eq!(a["value"]["queue"], "CreditCardQueue");
    assert_eq!(a["value"]["summary"], "card stolen");
    let texts: Vec<&str> =
        a["value"]["transcript"].as_array().unwrap().iter().filter_map(|t| t["text"].as_str()).collect();
    assert!(texts.contains(&FRAGILE) && texts.contains(&"thanks, waiting"), "{texts:?}");
    alice.say(&conv, "Hello Ann, Alice here.").await?;
    assert_eq!(ann.message().await?["text"], "Hello Ann, Alice here.");

    // Transfer to another queue: Carol gets the whole story, Alice's part included.
    ann.send(json!({"type":"message","text":"it is about my mortgage too"})).await?;
    alice.until("Ann's message", |v| v["text"] == "it is about my mortgage too").await?;
    alice
        .send(json!({"type":"event","name":"transfer","conversation":{"id":conv},"value":{"queue":"HomeLoanQueue"}}))
        .await?;
    let c = work_item(&mut carol, &conv).await?;
    let texts: Vec<&str> =
        c["value"]["transcript"].as_array().unwrap().iter().filter_map(|t| t["text"].as_str()).collect();
    assert!(texts.contains(&"Hello Ann, Alice here.") && texts.contains(&"it is about my mortgage too"), "{texts:?}");

    // The customer ends: the holder learns it, with its seq.
    ann.send(json!({"type":"endOfConversation","channelData":{"clientActivityId":"ann-end"}})).await?;
    let ack =
        ann.until("ack of the end", |v| v["name"] == "ack" && v["value"]["clientActivityId"] == "ann-end").await?;
    let eoc = carol.activity("endOfConversation").await?;
    assert_eq!(eoc["from"]["role"], "user");
    assert_eq!(eoc["seq"], ack["value"]["seq"]);
    assert!(!s.running.hub.is_open(&conv));

    // Bot end with survey.
    let mut ben = s.start_chat("ChatWorkStream", "Ben", json!({})).await?;
    let ben_conv = ben.conversation.clone();
    work_item(&mut bot, &ben_conv).await?;
    bot.send(json!({"type":"endOfConversation","conversation":{"id":ben_conv},"value":{"survey":true}})).await?;
    ben.event("survey.request").await?;
    let eoc = ben.activity("endOfConversation").await?;
    assert_eq!(eoc["from"]["role"], "bot");
    ben.send(json!({"type":"event","name":"survey.response","value":{"rating":5,"comment":"quick"},
                    "channelData":{"clientActivityId":"ben-survey"}}))
        .await?;
    ben.until("survey ack", |v| v["name"] == "ack" && v["value"]["clientActivityId"] == "ben-survey").await?;

    // Agent end with survey.
    let mut cat = s.start_chat("ChatWorkStream", "Cat", json!({})).await?;
    let cat_conv = cat.conversation.clone();
    work_item(&mut bot, &cat_conv).await?;
    bot.send(json!({"type":"event","name":"handoff.initiate","conversation":{"id":cat_conv},"value":{"BotHandoffTopic":"CreditCard"}})).await?;
    work_item(&mut alice, &cat_conv).await?;
    alice.send(json!({"type":"endOfConversation","conversation":{"id":cat_conv},"value":{"survey":true}})).await?;
    cat.event("survey.request").await?;
    assert_eq!(cat.activity("endOfConversation").await?["from"]["role"], "agent");

    // Resume: a message sent while the customer is away arrives after the resume, and a
    // resend of an activity that was in flight when the connection dropped is acknowledged
    // on the new connection, and delivered once.
    let mut dan = s.start_chat("ChatWorkStream", "Dan", json!({})).await?;
    let dan_conv = dan.conversation.clone();
    work_item(&mut bot, &dan_conv).await?;
    let (ack, _) = send_acked(&mut dan, None, "first", "dan-1").await?;
    let watermark = ack["value"]["seq"].as_u64().unwrap();
    dan.send(json!({"type":"message","text":"in flight","channelData":{"clientActivityId":"dan-2"}})).await?;
    dan.client.close().await;
    bot.until("in flight", |v| v["text"] == "in flight").await?;
    bot.say(&dan_conv, "while you were away").await?;
    let mut back = s.customer().await?;
    back.send(json!({"type":"event","name":"session.resume",
                     "value":{"conversationId":dan_conv,"token":dan.token,"watermark":watermark}}))
        .await?;
    back.event("session.started").await?;
    // The replay: everything after the watermark, its own stored message included.
    let replayed = back.message().await?;
    assert_eq!(replayed["text"], "in flight");
    assert_eq!(back.message().await?["text"], "while you were away");
    let (ack2, _) = send_acked(&mut back, None, "in flight", "dan-2").await?;
    assert_eq!(ack2["value"]["seq"], replayed["seq"], "the resend is the stored activity");
    back.send(json!({"type":"endOfConversation"})).await?;
    bot.activity("endOfConversation").await?;
    assert_eq!(with_text(&bot, "in flight"), 1, "a resent activity is delivered once");

    // A call: the caller hangs up and the holder learns it.
    let mut caller = Client::connect(&s.ws_url("/v1/voice"), None).await?;
    caller
        .send(json!({"type":"event","name":"session.start",
                     "value":{"workstream":"VoiceWorkStream","media":{"encoding":"pcmu","sampleRate":8000}}}))
        .await?;
    let call_conv = caller.event("session.started").await?["value"]["conversationId"].as_str().unwrap().to_owned();
    work_item(&mut bot, &call_conv).await?;
    caller.send(json!({"type":"endOfConversation"})).await?;
    let eoc =
        bot.until("the hang-up", |v| v["type"] == "endOfConversation" && v["conversation"]["id"] == call_conv).await?;
    assert!(eoc["seq"].as_u64().is_some());

    // One work item per assignment, and no activity delivered twice.
    for (who, c) in [("bot", &bot), ("alice", &alice), ("carol", &carol)] {
        assert_eq!(assignments(c, &conv), 1, "{who}: one conversation.assigned for Ann");
        let seqs: Vec<u64> = c
            .seen
            .iter()
            .filter(|v| v["conversation"]["id"] == conv.as_str())
            .filter_map(|v| v["seq"].as_u64())
            .collect();
        let mut sorted = seqs.clone();
        sorted.dedup();
        assert_eq!(seqs, sorted, "{who}: every activity once, in order");
    }
    assert_eq!(with_text(&bot, FRAGILE), 1);
    Ok(())
}

#[tokio::test]
async fn the_lifecycle_on_the_default_sqlite_store() -> Result<()> {
    lifecycle(server(StoreChoice::Sqlite).await).await
}

#[tokio::test]
async fn the_lifecycle_on_a_slow_store() -> Result<()> {
    lifecycle(server(StoreChoice::Custom(ScriptedStore::slow(Duration::from_millis(20)))).await).await
}

#[tokio::test]
async fn the_lifecycle_on_a_store_that_fails_a_batch() -> Result<()> {
    let store = ScriptedStore::failing_once(Duration::from_millis(5), FRAGILE);
    let failures = store.failures.clone();
    let s = server(StoreChoice::Custom(store as Arc<_>)).await;
    lifecycle(s).await?;
    assert_eq!(failures.load(Ordering::SeqCst), 1, "the injected failure happened");
    Ok(())
}

#[tokio::test]
async fn the_lifecycle_on_the_in_memory_store() -> Result<()> {
    lifecycle(server(StoreChoice::Memory).await).await
}
