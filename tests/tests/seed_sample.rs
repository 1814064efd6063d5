//! The seed's "Sample configuration to integrate an Azure bot", end to end over real
//! sockets: every chat goes to the bot first (BotRule), and the bot's escalation with
//! BotHandoffTopic reaches an agent of the right queue with transcript, context and summary.

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};
use switchboard_tests::{Client, start_server};

fn no_assignment(v: &Value) -> bool {
    v["name"] != "conversation.assigned"
}

async fn escalate(bot: &mut Client, conv: &str, topic: Value, summary: &str) -> Result<()> {
    bot.send(json!({"type":"event","name":"handoff.initiate","conversation":{"id":conv},
        "value":{"BotHandoffTopic":topic},"text":summary}))
        .await
}

#[tokio::test]
async fn credit_card_escalation_reaches_a_credit_card_agent_with_transcript_and_context() -> Result<()> {
    let s = start_server(None).await;
    let mut bot = s.bot().await?;
    let mut alice = s.agent("alice").await?;
    let mut ann = s.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    let conv = ann.conversation.clone();

    // BotRule: the bot user answers first.
    let a = bot.event("conversation.assigned").await?;
    assert_eq!(a["conversation"]["id"], conv.as_str());
    assert_eq!(a["value"]["queue"], "BotQueue");
    assert_eq!(a["value"]["channel"], "chat");
    assert_eq!(a["value"]["customer"]["name"], "Ann");
    let to_ann = ann.event("conversation.assigned").await?;
    assert_eq!(to_ann["value"]["role"], "bot");

    ann.send(json!({"type":"message","text":"I lost my credit card","channelData":{"clientActivityId":"m1"}})).await?;
    let ack = ann.event("ack").await?;
    assert_eq!(ack["value"]["clientActivityId"], "m1");
    let m = bot.message().await?;
    assert_eq!(m["text"], "I lost my credit card");
    assert_eq!(m["from"]["role"], "user");
    assert_eq!(m["from"]["name"], "Ann");
    assert_eq!(m["seq"], ack["value"]["seq"]);
    assert_eq!(m["id"], ack["value"]["id"]);

    bot.say(&conv, "Sorry to hear that. Let me get you to a card specialist.").await?;
    let reply = ann.message().await?;
    assert_eq!(reply["from"]["role"], "bot");

    escalate(&mut bot, &conv, json!("CreditCard"), "Customer lost their credit card").await?;

    // CreditCardRule: alice is the CreditCardQueue member with capacity (bob is offline).
    let a = alice.event("conversation.assigned").await?;
    assert_eq!(a["conversation"]["id"], conv.as_str());
    assert_eq!(a["value"]["queue"], "CreditCardQueue");
    assert_eq!(a["value"]["context"]["BotHandoffTopic"], "CreditCard");
    assert_eq!(a["value"]["summary"], "Customer lost their credit card");
    let transcript = a["value"]["transcript"].as_array().unwrap();
    let texts: Vec<&str> = transcript.iter().filter_map(|t| t["text"].as_str()).collect();
    assert!(texts.contains(&"I lost my credit card"), "{texts:?}");
    assert!(texts.contains(&"Sorry to hear that. Let me get you to a card specialist."), "{texts:?}");
    let seqs: Vec<u64> = transcript.iter().map(|t| t["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "transcript seqs without gaps");

    let to_ann = ann.event("conversation.assigned").await?;
    assert_eq!(to_ann["value"]["role"], "agent");
    assert_eq!(to_ann["value"]["name"], "Alice");

    // The agent and the customer now talk; the bot is out of it.
    alice.say(&conv, "Hi Ann, I have blocked the card.").await?;
    let m = ann.message().await?;
    assert_eq!(
        (m["from"]["role"].as_str(), m["text"].as_str()),
        (Some("agent"), Some("Hi Ann, I have blocked the card."))
    );
    ann.send(json!({"type":"message","text":"Thank you!"})).await?;
    assert_eq!(alice.message().await?["text"], "Thank you!");
    bot.say(&conv, "still here?").await?;
    let err = bot.event("error").await?;
    assert_eq!(err["value"]["code"], "forbidden");

    // What the customer was sent and what it was acknowledged (its own activities) are the
    // transcript: seq 1..n, each once, in order.
    let last_ack = |v: &Value| v["name"] == "ack" && v["value"]["seq"].as_u64().is_some_and(|s| s >= 7);
    if !ann.seen.iter().any(last_ack) {
        ann.until("the last ack", last_ack).await?;
    }
    let delivered: Vec<u64> = ann.seen.iter().filter_map(|v| v["seq"].as_u64()).collect();
    assert!(delivered.windows(2).all(|w| w[1] > w[0]), "delivered once each, in order: {delivered:?}");
    let mut all: Vec<u64> = ann
        .seen
        .iter()
        .filter(|v| v["name"] == "ack")
        .filter_map(|v| v["value"]["seq"].as_u64())
        .chain(delivered.iter().copied())
        .collect();
    all.sort_unstable();
    let n = all.len() as u64;
    assert_eq!(all, (1..=n).collect::<Vec<_>>(), "seq 1..n without gaps or repeats");
    Ok(())
}

#[tokio::test]
async fn home_loan_goes_to_home_loan_queue_and_unknown_topics_to_the_fallback() -> Result<()> {
    let s = start_server(None).await;
    let mut bot = s.bot().await?;
    let mut carol = s.agent("carol").await?;
    let mut bob = s.agent("bob").await?;

    let mut ann = s.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    bot.event("conversation.assigned").await?;
    escalate(&mut bot, &ann.conversation, json!("HomeLoan"), "mortgage question").await?;
    let a = carol.event("conversation.assigned").await?;
    assert_eq!(a["value"]["queue"], "HomeLoanQueue");
    assert_eq!(ann.event("conversation.assigned").await?["value"]["role"], "bot");
    assert_eq!(ann.event("conversation.assigned").await?["value"]["name"], "Carol");

    // No rule for "Pets": the fallback GeneralQueue (round robin over alice, bob, carol;
    // alice is offline, so bob).
    let mut ben = s.start_chat("ChatWorkStream", "Ben", json!({})).await?;
    bot.until("assignment for Ben", |v| {
        v["name"] == "conversation.assigned" && v["conversation"]["id"] == ben.conversation.as_str()
    })
    .await?;
    escalate(&mut bot, &ben.conversation, json!("Pets"), "asks about pets").await?;
    let a = bob.event("conversation.assigned").await?;
    assert_eq!(a["conversation"]["id"], ben.conversation.as_str());
    assert_eq!(a["value"]["queue"], "GeneralQueue");
    ben.until("agent assignment", |v| v["name"] == "conversation.assigned" && v["value"]["role"] == "agent").await?;
    Ok(())
}

#[tokio::test]
async fn customers_beyond_capacity_wait_with_positions_and_are_assigned_when_capacity_frees() -> Result<()> {
    let s = start_server(None).await;
    let mut bot = s.bot().await?;
    let mut carol = s.agent("carol").await?; // HomeLoanQueue's only member, capacity 3
    let mut customers = Vec::new();
    // Five customers at five addresses (one address may have only three conversations
    // handed to people at once).
    for i in 0..5 {
        let from = std::net::IpAddr::from([127, 0, 0, 10 + i]);
        let c = s.start_chat_from(from, "ChatWorkStream", &format!("C{i}"), json!({})).await?;
        bot.until("assignment", |v| {
            v["name"] == "conversation.assigned" && v["conversation"]["id"] == c.conversation.as_str()
        })
        .await?;
        escalate(&mut bot, &c.conversation, json!("HomeLoan"), "loan").await?;
        customers.push(c);
    }
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(carol.event("conversation.assigned").await?["conversation"]["id"].as_str().unwrap().to_owned());
    }
    // The first three in order of escalation.
    let ids: Vec<String> = customers.iter().map(|c| c.conversation.clone()).collect();
    assert_eq!(held, ids[..3]);
    let p4 = customers[3].event("queue.position").await?;
    assert_eq!(p4["value"], json!({"queue":"HomeLoanQueue","position":1}));
    let p5 = customers[4].event("queue.position").await?;
    assert_eq!(p5["value"], json!({"queue":"HomeLoanQueue","position":2}));

    // Carol ends one conversation: the oldest waiting one is assigned at once, and the
    // other moves up to position 1.
    carol.send(json!({"type":"endOfConversation","conversation":{"id":held[0]}})).await?;
    let eoc = customers[0].activity("endOfConversation").await?;
    assert_eq!(eoc["from"]["role"], "agent");
    let a = carol.event("conversation.assigned").await?;
    assert_eq!(a["conversation"]["id"], ids[3].as_str());
    customers[3]
        .until("agent assignment", |v| v["name"] == "conversation.assigned" && v["value"]["name"] == "Carol")
        .await?;
    let p5 = customers[4].event("queue.position").await?;
    assert_eq!(p5["value"]["position"], 1);

    // Presence: away stops new work, available resumes it.
    carol.send(json!({"type":"event","name":"presence","value":"away"})).await?;
    carol.send(json!({"type":"endOfConversation","conversation":{"id":held[1]}})).await?;
    carol.quiet_for(Duration::from_millis(300), no_assignment).await?;
    carol.send(json!({"type":"event","name":"presence","value":"available"})).await?;
    assert_eq!(carol.event("conversation.assigned").await?["conversation"]["id"], ids[4].as_str());
    Ok(())
}

/// A long queue moving fast: each conversation taken from its front moves everyone behind
/// it, and each waiting customer hears its position at most once a second, always the
/// latest in the end, and nothing about the queue once assigned. (Told at every change,
/// the 30 assignments below were 30 frames to each of the 40 customers waiting behind.)
#[tokio::test]
async fn customers_in_a_fast_moving_queue_hear_their_position_at_most_once_a_second() -> Result<()> {
    let s = start_server(Some(include_str!("../../bench/backlog.toml"))).await;
    const WAITING: usize = 40;
    const TAKEN: usize = 30;
    let mut customers = Vec::new();
    for i in 0..WAITING {
        let mut c = s.start_chat("ChatWorkStream", &format!("C{i}"), json!({})).await?;
        let p = c.client.event("queue.position").await?;
        assert_eq!(p["value"]["position"], i + 1);
        customers.push(c);
    }
    let started = std::time::Instant::now();
    // Alice takes and ends the first TAKEN conversations as fast as they come.
    let mut alice = s.agent("alice").await?;
    for c in &customers[..TAKEN] {
        let a = alice.event("conversation.assigned").await?;
        assert_eq!(a["conversation"]["id"], c.conversation.as_str());
        alice.send(json!({"type":"endOfConversation","conversation":{"id":c.conversation}})).await?;
    }
    let assigned = alice.event("conversation.assigned").await?;
    assert_eq!(assigned["conversation"]["id"], customers[TAKEN].conversation.as_str());
    // Everyone still waiting hears where it ends up.
    for (i, c) in customers.iter_mut().enumerate().skip(TAKEN + 1) {
        let last = i - TAKEN;
        c.client
            .until(&format!("C{i} at position {last}"), |v| {
                v["name"] == "queue.position" && v["value"]["position"] == last
            })
            .await?;
    }
    let seconds = started.elapsed().as_secs_f64().ceil() as usize;
    for (i, c) in customers.iter_mut().enumerate().take(TAKEN + 1) {
        c.client
            .until(&format!("C{i}'s agent"), |v| v["name"] == "conversation.assigned" && v["value"]["role"] == "agent")
            .await?;
    }
    // A position deferred to the end of its second would have come by now.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for (i, c) in customers.iter_mut().enumerate() {
        while c.client.frame_within(Duration::from_millis(10)).await.is_ok() {}
        let positions = c.client.seen.iter().filter(|v| v["name"] == "queue.position").count();
        // The one on joining, then at most one a second (and one at the end of a second).
        assert!(positions <= 2 + seconds, "C{i} heard {positions} positions in {seconds} s: {:?}", c.client.seen);
        if let Some(at) = c.client.seen.iter().position(|v| v["name"] == "conversation.assigned") {
            assert!(
                !c.client.seen[at..].iter().any(|v| v["name"] == "queue.position"),
                "C{i} heard a position after its assignment: {:?}",
                c.client.seen
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_bot_never_gets_back_a_conversation_it_escalated() -> Result<()> {
    let s = start_server(None).await;
    let mut bot = s.bot().await?;
    let mut alice = s.agent("alice").await?;

    // Loop guard: escalating without a topic matches BotRule again; the only bot there is
    // the one that escalated, so the conversation waits instead of looping back to it.
    let mut ann = s.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    bot.event("conversation.assigned").await?;
    bot.send(json!({"type":"event","name":"handoff.initiate","conversation":{"id":ann.conversation},"value":{}}))
        .await?;
    let p = ann.event("queue.position").await?;
    assert_eq!(p["value"], json!({"queue":"BotQueue","position":1}));
    bot.quiet_for(Duration::from_millis(300), no_assignment).await?;

    // An agent transferring back to BotQueue, whose only member is the bot that escalated:
    // "the chat cannot be transferred to the same bot", so the transfer is refused (the
    // customer would wait there for ever) and alice keeps the conversation.
    let mut ben = s.start_chat("ChatWorkStream", "Ben", json!({})).await?;
    bot.until("assignment for Ben", |v| {
        v["name"] == "conversation.assigned" && v["conversation"]["id"] == ben.conversation.as_str()
    })
    .await?;
    escalate(&mut bot, &ben.conversation, json!("CreditCard"), "card").await?;
    alice.event("conversation.assigned").await?;
    alice.send(json!({"type":"event","name":"transfer","conversation":{"id":ben.conversation},"value":{"queue":"BotQueue"}})).await?;
    let e = alice.event("error").await?;
    assert_eq!(e["value"]["code"], "bad_request", "{e}");
    assert!(
        e["value"]["message"].as_str().is_some_and(|m| m.contains("queue \"BotQueue\": none of its members")),
        "{e}"
    );
    bot.quiet_for(Duration::from_millis(300), no_assignment).await?;
    alice.say(&ben.conversation, "still here").await?;
    alice.event("ack").await?;
    let m = ben.message().await?;
    assert_eq!(m["text"], "still here");
    let held = s.running.hub.conversation(&ben.conversation).unwrap();
    let stored = held.inner.lock().transcript.iter().any(|e| e.frame.as_str().contains("\"name\":\"transfer\""));
    assert!(!stored, "the refused transfer was stored");

    // Transfer without a queue re-runs the rules: Ann's topic is still empty, so BotQueue.
    Ok(())
}

#[tokio::test]
async fn transfer_by_rules_and_end_with_survey() -> Result<()> {
    let s = start_server(None).await;
    let mut bot = s.bot().await?;
    let mut alice = s.agent("alice").await?;
    let mut ann = s.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    let conv = ann.conversation.clone();
    bot.event("conversation.assigned").await?;
    escalate(&mut bot, &conv, json!("CreditCard"), "card").await?;
    alice.event("conversation.assigned").await?;
    // Transfer without a queue: the rules run again on the same context → CreditCardQueue;
    // alice is its member with the most free capacity again.
    alice.send(json!({"type":"event","name":"transfer","conversation":{"id":conv},"value":{}})).await?;
    let a = alice.event("conversation.assigned").await?;
    assert_eq!(a["value"]["queue"], "CreditCardQueue");
    // Unknown queue: not_found, and nothing changes.
    alice.send(json!({"type":"event","name":"transfer","conversation":{"id":conv},"value":{"queue":"Nope"}})).await?;
    assert_eq!(alice.event("error").await?["value"]["code"], "not_found");

    // End with survey: the customer gets survey.request, then endOfConversation.
    alice.send(json!({"type":"endOfConversation","conversation":{"id":conv},"value":{"survey":true}})).await?;
    let req = ann.event("survey.request").await?;
    let eoc = ann.activity("endOfConversation").await?;
    assert!(eoc["seq"].as_u64() > req["seq"].as_u64());
    ann.send(json!({"type":"event","name":"survey.response","value":{"rating":6}})).await?;
    assert_eq!(ann.event("error").await?["value"]["code"], "bad_request");
    ann.send(json!({"type":"event","name":"survey.response","value":{"rating":5,"comment":"quick ✨"}})).await?;
    ann.event("ack").await?;
    let conv_state = s.running.hub.conversation(&conv).unwrap();
    assert_eq!(conv_state.inner.lock().survey, Some(json!({"rating":5,"comment":"quick ✨"})));
    // A second answer is refused.
    ann.send(json!({"type":"event","name":"survey.response","value":{"rating":1}})).await?;
    assert_eq!(ann.event("error").await?["value"]["code"], "bad_request");
    Ok(())
}

#[tokio::test]
async fn bot_ends_with_survey_and_customer_can_end_too() -> Result<()> {
    let s = start_server(None).await;
    let mut bot = s.bot().await?;
    let mut ann = s.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    bot.event("conversation.assigned").await?;
    bot.send(json!({"type":"endOfConversation","conversation":{"id":ann.conversation},"value":{"survey":true}}))
        .await?;
    ann.event("survey.request").await?;
    ann.activity("endOfConversation").await?;
    ann.send(json!({"type":"message","text":"hello?"})).await?;
    assert_eq!(ann.event("error").await?["value"]["code"], "bad_request");

    // The customer ends: the bot is told, and its capacity is freed.
    let mut ben = s.start_chat("ChatWorkStream", "Ben", json!({})).await?;
    bot.until("assignment for Ben", |v| {
        v["name"] == "conversation.assigned" && v["conversation"]["id"] == ben.conversation.as_str()
    })
    .await?;
    ben.send(json!({"type":"typing"})).await?;
    assert_eq!(bot.activity("typing").await?["from"]["name"], "Ben");
    ben.send(json!({"type":"endOfConversation"})).await?;
    let eoc = bot.activity("endOfConversation").await?;
    assert_eq!(eoc["conversation"]["id"], ben.conversation.as_str());
    let load =
        s.running.hub.with_engine(|e| e.members_view().into_iter().find(|m| m.name == "contoso-bot").unwrap().load);
    assert_eq!(load, 0);
    Ok(())
}
