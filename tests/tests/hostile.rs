//! Hostile and careless clients: protocol violations close with the SPEC's codes, and input
//! the contract does not allow is refused with an error that names it (the connection
//! stays). Every client activity is acknowledged, presence and key presses included.

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use switchboard_tests::{
    Client, StoreChoice, TestServer, WAIT, external_bot_with_voice, http_with, start_default, start_on, start_server,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A WebSocket upgrade by hand, so the test can then write frames no library would.
async fn raw_upgrade(s: &TestServer, path: &str) -> Result<TcpStream> {
    let mut tcp = TcpStream::connect(s.addr).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: {}\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        s.addr
    );
    tcp.write_all(req.as_bytes()).await?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(WAIT, tcp.read_exact(&mut b)).await??;
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 101") {
        bail!("not upgraded: {head}");
    }
    Ok(tcp)
}

/// One frame: FIN, `opcode`, masked (as a client must) unless `masked` is false.
fn frame(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![0x80 | opcode, (payload.len() as u8) | if masked { 0x80 } else { 0 }];
    if masked {
        let key = [0x12, 0x34, 0x56, 0x78];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// Reads server frames until a close frame; returns its code.
async fn close_code(tcp: &mut TcpStream) -> Result<u16> {
    loop {
        let mut h = [0u8; 2];
        tokio::time::timeout(WAIT, tcp.read_exact(&mut h)).await?.context("closed without a close frame")?;
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                tcp.read_exact(&mut l).await?;
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                tcp.read_exact(&mut l).await?;
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        tcp.read_exact(&mut payload).await?;
        if h[0] & 0x0f == 0x8 {
            if payload.len() < 2 {
                bail!("close frame without a code");
            }
            return Ok(u16::from_be_bytes([payload[0], payload[1]]));
        }
    }
}

#[tokio::test]
async fn protocol_violations_close_with_the_spec_codes() -> Result<()> {
    let s = start_server(None).await;
    // Invalid UTF-8 in a text frame: 1007.
    let mut a = raw_upgrade(&s, "/v1/chat").await?;
    a.write_all(&frame(0x1, &[b'{', 0xff, 0xfe, b'}'], true)).await?;
    assert_eq!(close_code(&mut a).await?, 1007);
    // An unmasked client frame: 1002.
    let mut b = raw_upgrade(&s, "/v1/chat").await?;
    b.write_all(&frame(0x1, b"{}", false)).await?;
    assert_eq!(close_code(&mut b).await?, 1002);
    // A reserved opcode: 1002.
    let mut c = raw_upgrade(&s, "/v1/chat").await?;
    c.write_all(&frame(0x3, b"??", true)).await?;
    assert_eq!(close_code(&mut c).await?, 1002);
    // The same on a call leg.
    let mut d = raw_upgrade(&s, "/v1/voice").await?;
    d.write_all(&frame(0x1, &[0xc3, 0x28], true)).await?;
    assert_eq!(close_code(&mut d).await?, 1007);
    // Others are not affected.
    s.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    Ok(())
}

async fn refused(c: &mut Client, frame: Value, names: &str) -> Result<()> {
    c.send(frame.clone()).await?;
    let e = c.event("error").await?;
    assert_eq!(e["value"]["code"], "bad_request", "{frame} → {e}");
    let msg = e["value"]["message"].as_str().unwrap_or("");
    assert!(msg.contains(names), "{frame}: the error names {names:?}: {msg}");
    Ok(())
}

#[tokio::test]
async fn input_the_contract_does_not_allow_is_refused_by_name() -> Result<()> {
    let s = start_server(Some(&external_bot_with_voice())).await;
    let mut bot = s.bot().await?;
    let mut alice = s.agent("alice").await?;

    // Customers: the user must be an object with a name of sane length.
    let mut c = s.customer().await?;
    let start = |user: Value| json!({"type":"event","name":"session.start","value":{"workstream":"ChatWorkStream","user":user}});
    refused(&mut c, start(json!("Ann")), "value.user must be an object").await?;
    refused(&mut c, start(json!({"name": "A".repeat(20_000)})), "longer than 128").await?;
    c.send(start(json!({"name":"Ann"}))).await?;
    let conv = c.event("session.started").await?["value"]["conversationId"].as_str().unwrap().to_owned();
    refused(&mut c, json!({"type":"message"}), "text or attachments").await?;
    refused(&mut c, json!({"type":"message","text":""}), "text or attachments").await?;

    // Bots: no agent-only transfer, and survey must be a bool.
    bot.until("work item", |v| v["name"] == "conversation.assigned" && v["conversation"]["id"] == conv.as_str())
        .await?;
    refused(
        &mut bot,
        json!({"type":"event","name":"transfer","conversation":{"id":conv},"value":{"queue":"GeneralQueue"}}),
        "handoff.initiate",
    )
    .await?;
    refused(
        &mut bot,
        json!({"type":"endOfConversation","conversation":{"id":conv},"value":{"survey":"yes"}}),
        "value.survey",
    )
    .await?;
    refused(&mut bot, json!({"type":"message","conversation":{"id":conv}}), "text or attachments").await?;
    // Attachments alone make a message; they and channelData pass through as written.
    let att = json!([{"contentType":"image/png","contentUrl":"https://example.test/a.png","name":"reçu 🧾.png"}]);
    c.send(json!({"type":"message","attachments":att,"channelData":{"clientActivityId":"a1","tag":{"x":[1,2]}}}))
        .await?;
    let got = bot.until("the attachment", |v| v["type"] == "message" && v["attachments"] == att).await?;
    assert_eq!(got["channelData"], json!({"clientActivityId":"a1","tag":{"x":[1,2]}}));
    // Nothing of it reached the customer, and the conversation goes on.
    bot.say(&conv, "still here").await?;
    assert_eq!(c.message().await?["text"], "still here");
    assert!(!c.seen.iter().any(|v| v["type"] == "endOfConversation" || v["name"] == "transfer"));

    // Agents: presence is acknowledged.
    alice
        .send(json!({"type":"event","name":"presence","value":"busy","channelData":{"clientActivityId":"p1"}}))
        .await?;
    let ack = alice.event("ack").await?;
    assert_eq!(ack["value"]["clientActivityId"], "p1");

    // Callers: a sample rate the format does not support, or not a number, is refused.
    let mut call = Client::connect(&s.ws_url("/v1/voice"), None).await?;
    for rate in [json!("8000"), json!(-1), json!(1e20), json!(8000.5)] {
        let v = json!({"type":"event","name":"session.start","value":{"workstream":"VoiceWorkStream","media":{"encoding":"pcmu","sampleRate":rate}}});
        refused(&mut call, v, "sampleRate").await?;
    }
    let v = json!({"type":"event","name":"session.start","value":{"workstream":"VoiceWorkStream","media":{"encoding":"pcmu","sampleRate":16000}}});
    refused(&mut call, v, "pcmu/16000").await?;
    let v = json!({"type":"event","name":"session.start","value":{"workstream":"VoiceWorkStream","media":{"encoding":"pcmu","sampleRate":8000}}});
    call.send(v).await?;
    call.event("session.started").await?;
    // A key press is acknowledged like every client activity.
    call.send(json!({"type":"event","name":"dtmf","value":"7","channelData":{"clientActivityId":"k1"}})).await?;
    let ack = call.event("ack").await?;
    assert_eq!(ack["value"]["clientActivityId"], "k1");
    assert!(ack["value"]["seq"].as_u64().is_some());
    Ok(())
}

/// What one customer can make a conversation hold is bounded, and a long transcript reaches
/// each new holder in pages no larger than `transcript_page_bytes`: a customer cannot make
/// the agents' frames too large to take.
#[tokio::test]
async fn a_long_transcript_is_bounded_and_reaches_agents_in_pages() -> Result<()> {
    const LIMIT: usize = 2 << 20; // the release defaults
    const PAGE: usize = 256 << 10;
    let s = start_server(None).await;
    let mut bot = s.bot().await?;
    let mut alice = s.agent("alice").await?;
    let mut ann = s.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    let conv = ann.conversation.clone();
    bot.until("work item", |v| v["name"] == "conversation.assigned" && v["conversation"]["id"] == conv.as_str())
        .await?;
    // Messages just under the frame limit, at the customer rate, until the conversation is full.
    let big = "x".repeat(27_000);
    let mut stored = 0;
    let refusal = loop {
        let cid = format!("m{stored}");
        ann.send(json!({"type":"message","text":big,"channelData":{"clientActivityId":cid}})).await?;
        let v = ann
            .until("ack or error", |v| {
                (v["name"] == "ack" || v["name"] == "error") && v["value"]["clientActivityId"] == cid
            })
            .await?;
        match v["name"].as_str() {
            Some("ack") => stored += 1,
            _ if v["value"]["code"] == "rate_limited" => tokio::time::sleep(std::time::Duration::from_millis(60)).await,
            _ => break v,
        }
        assert!(stored < 200, "the conversation was never full");
    };
    assert_eq!(refusal["value"]["code"], "too_large", "{refusal}");
    assert!(refusal["value"]["message"].as_str().unwrap().contains("limit"), "{refusal}");
    assert!(stored * 27_000 <= LIMIT && stored * 27_000 > LIMIT - (64 << 10), "{stored} messages stored");

    // The bot escalates: Alice's work item carries the newest page only.
    bot.send(json!({"type":"event","name":"handoff.initiate","conversation":{"id":conv},"value":{"BotHandoffTopic":"CreditCard"}})).await?;
    let item = alice
        .until("work item", |v| v["name"] == "conversation.assigned" && v["conversation"]["id"] == conv.as_str())
        .await?;
    assert!(item.to_string().len() <= PAGE + 4096, "work item of {} bytes", item.to_string().len());
    assert_eq!(item["value"]["transcriptComplete"], false);
    let mut seqs: Vec<u64> =
        item["value"]["transcript"].as_array().unwrap().iter().map(|t| t["seq"].as_u64().unwrap()).collect();
    let mut from = item["value"]["transcriptFrom"].as_u64().unwrap();
    assert_eq!(seqs.first(), Some(&from));
    // Older pages on request, until the beginning.
    while from > 1 {
        alice
            .send(
                json!({"type":"event","name":"transcript.request","conversation":{"id":conv},"value":{"before":from}}),
            )
            .await?;
        let page = alice.event("transcript.page").await?;
        assert!(page.to_string().len() <= PAGE + 4096);
        let older: Vec<u64> =
            page["value"]["transcript"].as_array().unwrap().iter().map(|t| t["seq"].as_u64().unwrap()).collect();
        assert!(!older.is_empty() && *older.last().unwrap() == from - 1, "the page ends just before {from}: {older:?}");
        from = page["value"]["transcriptFrom"].as_u64().unwrap();
        seqs.splice(0..0, older);
    }
    let n = seqs.len() as u64;
    assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "every activity once, in order");
    // Alice stays connected and talks; the customer can still end the conversation.
    alice.say(&conv, "I have the whole story.").await?;
    assert_eq!(ann.message().await?["text"], "I have the whole story.");
    ann.send(json!({"type":"endOfConversation","channelData":{"clientActivityId":"end"}})).await?;
    ann.until("the end's ack", |v| v["name"] == "ack" && v["value"]["clientActivityId"] == "end").await?;
    alice.activity("endOfConversation").await?;
    // Someone else's page requests are refused.
    let mut bob = s.agent("bob").await?;
    bob.send(json!({"type":"event","name":"transcript.request","conversation":{"id":conv},"value":{}})).await?;
    assert_eq!(bob.event("error").await?["value"]["code"], "forbidden");
    Ok(())
}

/// A `/metrics` counter's value. The counters are the process's, and other tests in this
/// file move them too: a test compares a reading before and after.
async fn counter(s: &TestServer, name: &str) -> Result<u64> {
    let (status, metrics) = switchboard_tests::http(s.addr, "GET", "/metrics", "", "").await?;
    anyhow::ensure!(status == 200, "/metrics answered {status}");
    let value = metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' '));
    value.with_context(|| format!("{name} in /metrics"))?.parse().context("a count")
}

/// The customer ends its chat, and the end is acknowledged (once the conversation closed).
async fn end_chat(c: &mut Client) -> Result<()> {
    c.send(json!({"type":"endOfConversation","channelData":{"clientActivityId":"bye"}})).await?;
    c.until("the ack of the end", |v| v["name"] == "ack" && v["value"]["clientActivityId"] == "bye").await?;
    Ok(())
}

/// One address opening chat after chat (and dropping them: a dropped customer's conversation
/// is kept for resuming) would take every seat of the bot and then of the agents, and every
/// other customer would wait. On the built-in default, an address holds at most 100 open
/// chats (`chat_conversations_per_address`); the next `session.start` from it is refused
/// with `rate_limited` and the connection stays, a customer at another address is served at
/// once, and once one of the 100 ends the refused customer may start.
#[tokio::test]
async fn one_address_cannot_take_every_seat_with_open_chats() -> Result<()> {
    const PER_ADDRESS: usize = 100;
    let s = start_default().await;
    let mut flood = Vec::with_capacity(PER_ADDRESS);
    for i in 0..PER_ADDRESS {
        flood.push(s.start_chat("ChatWorkStream", &format!("Flood {i}"), json!({})).await?);
    }
    let start = |name: &str| json!({"type":"event","name":"session.start","value":{"workstream":"ChatWorkStream","user":{"name":name}}});
    let refusals = || counter(&s, "switchboard_chats_refused_total");
    let before = refusals().await?;
    let mut refused = s.customer().await?;
    refused.send(start("One more")).await?;
    let e = refused.event("error").await?;
    assert_eq!(e["value"]["code"], "rate_limited", "{e}");
    let msg = e["value"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("chat_conversations_per_address"), "the error names the setting: {msg}");
    assert!(refusals().await? > before, "the refusal is counted");

    // A customer at another address starts, and the built-in bot greets it.
    let mut other = Client::connect_from(&s.ws_url("/v1/chat"), "127.0.0.2".parse()?).await?;
    other.send(start("Elsewhere")).await?;
    other.event("session.started").await?;
    let greeting = other.until("the bot's greeting", |v| v["type"] == "message").await?;
    assert_eq!(greeting["from"]["role"], "bot", "{greeting}");

    // One of the flood ends its chat (acknowledged once the conversation is closed): the
    // refused customer, on the same connection, now starts.
    end_chat(&mut flood[0]).await?;
    refused.send(start("One more")).await?;
    refused.event("session.started").await?;
    // And that took the freed place: the address is at its limit again.
    let mut again = s.customer().await?;
    again.send(start("Yet another")).await?;
    assert_eq!(again.event("error").await?["value"]["code"], "rate_limited");
    Ok(())
}

/// One address asking for a person in chat after chat would take every agent's seat (the
/// built-in default has nine) and put every other customer behind it. On the built-in
/// default, at most 3 conversations from one address may have gone to people
/// (`chat_agent_conversations_per_address`) until they close: the built-in bot keeps the
/// fourth and tells its customer so, and a start whose context routes it straight to
/// agents is refused; a customer at another address is handed on; once one of the three
/// has ended, the fourth is handed on when it asks again.
#[tokio::test]
async fn one_address_cannot_take_every_agents_seat_by_asking_for_people() -> Result<()> {
    let s = start_default().await;
    // What follows "agent" (after the bot's "Let me connect you with an agent."): the wait
    // for a person, or the bot's word that it keeps the conversation.
    async fn ask_for_a_person(c: &mut Client) -> Result<Value> {
        c.send(json!({"type":"message","text":"agent"})).await?;
        c.until("the bot's answer", |v| v["text"] == "Let me connect you with an agent.").await?;
        c.until("the outcome", |v| {
            v["name"] == "queue.position" || (v["type"] == "message" && v["from"]["role"] == "bot")
        })
        .await
    }
    let waiting = |v: &Value| v["name"] == "queue.position" && v["value"]["queue"] == "GeneralQueue";
    let refused = |v: &Value| v["text"] == switchboard::hub::builtin_bot::HANDOFF_REFUSED;
    let mut three = Vec::new();
    for i in 0..3 {
        let mut c = s.start_chat("ChatWorkStream", &format!("Flood {i}"), json!({})).await?;
        let outcome = ask_for_a_person(&mut c).await?;
        assert!(waiting(&outcome), "handed to people: {outcome}");
        three.push(c);
    }
    let refusals = || counter(&s, "switchboard_agent_chats_refused_total");
    let before = refusals().await?;
    let mut fourth = s.start_chat("ChatWorkStream", "Flood 3", json!({})).await?;
    let outcome = ask_for_a_person(&mut fourth).await?;
    assert!(refused(&outcome), "the bot keeps it: {outcome}");
    let holder = s.running.hub.with_engine(|e| e.holder(&fourth.conversation).map(str::to_owned));
    assert_eq!(holder.as_deref(), Some("contoso-bot"));
    assert!(refusals().await? > before, "the refusal is counted");
    // Nor can it go round the bot: a start whose context routes it straight to agents is
    // refused the same way (the connection stays).
    let mut direct = s.customer().await?;
    let straight = json!({"type":"event","name":"session.start","value":{"workstream":"ChatWorkStream","user":{"name":"Direct"},"context":{"BotHandoffTopic":"CreditCard"}}});
    direct.send(straight.clone()).await?;
    let e = direct.event("error").await?;
    assert_eq!(e["value"]["code"], "rate_limited", "{e}");
    assert!(e["value"]["message"].as_str().unwrap_or("").contains("chat_agent_conversations_per_address"), "{e}");

    // A customer at another address is handed on.
    let mut other = Client::connect_from(&s.ws_url("/v1/chat"), "127.0.0.2".parse()?).await?;
    other.send(json!({"type":"event","name":"session.start","value":{"workstream":"ChatWorkStream","user":{"name":"Elsewhere"}}})).await?;
    other.event("session.started").await?;
    let outcome = ask_for_a_person(&mut other).await?;
    assert!(waiting(&outcome), "handed to people: {outcome}");

    // One of the three ends; the fourth asks again and is handed on.
    end_chat(&mut three[0]).await?;
    let outcome = ask_for_a_person(&mut fourth).await?;
    assert!(waiting(&outcome), "handed to people once one ended: {outcome}");
    // That took the freed place: the direct start is still refused; once another ends,
    // it starts, straight in the credit card queue.
    direct.send(straight.clone()).await?;
    assert_eq!(direct.event("error").await?["value"]["code"], "rate_limited");
    end_chat(&mut three[1]).await?;
    direct.send(straight).await?;
    direct.event("session.started").await?;
    let position = direct.event("queue.position").await?;
    assert_eq!(position["value"]["queue"], "CreditCardQueue", "{position}");
    Ok(())
}

/// An external bot whose handoff is refused for its customer's address learns why
/// (`rate_limited`, and Bot Framework's `handoff.status` `failed`) and keeps the
/// conversation: it can go on talking with its customer.
#[tokio::test]
async fn a_bot_whose_handoff_is_refused_for_the_address_keeps_the_conversation() -> Result<()> {
    let s = start_server(None).await;
    let mut bot = s.bot().await?;
    let mut customers = Vec::new();
    for i in 0..4 {
        let c = s.chat_with_bot(&mut bot, &format!("C{i}")).await?;
        let conv = c.conversation.clone();
        bot.send(json!({"type":"event","name":"handoff.initiate","conversation":{"id":conv},"value":{"BotHandoffTopic":"CreditCard"}})).await?;
        let status = bot
            .until("handoff.status", |v| v["name"] == "handoff.status" && v["conversation"]["id"] == conv.as_str())
            .await?;
        customers.push((c, status));
    }
    for (c, status) in &customers[..3] {
        assert_eq!(status["value"]["state"], "accepted", "{}: {status}", c.conversation);
    }
    let status = &customers[3].1;
    assert_eq!(status["value"]["state"], "failed", "{status}");
    assert!(
        status["value"]["message"].as_str().unwrap_or("").contains("chat_agent_conversations_per_address"),
        "{status}"
    );
    let e = bot.until("the error", |v| v["name"] == "error").await?;
    assert_eq!(e["value"]["code"], "rate_limited", "{e}");
    let mut fourth = customers.swap_remove(3).0;
    assert_eq!(
        s.running.hub.with_engine(|e| e.holder(&fourth.conversation).map(str::to_owned)).as_deref(),
        Some("contoso-bot")
    );
    bot.say(&fourth.conversation, "I am still here").await?;
    assert_eq!(fourth.until("the bot", |v| v["type"] == "message").await?["text"], "I am still here");
    Ok(())
}

/// Behind a reverse proxy every customer's socket comes from the proxy, and one address's
/// limit would be everyone's. With the proxy in `trusted_proxies` each customer counts
/// under the address the proxy forwarded for it (what a client wrote in the header itself,
/// left of that, is not believed); a client that is no trusted proxy cannot choose the
/// address it counts under with the header.
#[tokio::test]
async fn behind_a_trusted_proxy_each_customer_counts_under_its_own_address() -> Result<()> {
    let mut cfg = switchboard::config::Config::builtin_default();
    cfg.server.trusted_proxies = vec!["127.0.0.1".into()];
    cfg.server.chat_conversations_per_address = 2;
    let s = start_on(cfg, StoreChoice::Sqlite).await;
    let url = s.ws_url("/v1/chat");
    let proxy: std::net::IpAddr = "127.0.0.1".parse()?;
    let mut open = Vec::new();
    // What session.start answers a customer connecting from `from` with `forwarded`.
    async fn start(url: &str, from: std::net::IpAddr, forwarded: &str, open: &mut Vec<Client>) -> Result<String> {
        let mut c = Client::connect_forwarded(url, from, forwarded).await?;
        let start = json!({"type":"event","name":"session.start","value":{"workstream":"ChatWorkStream","user":{"name":"Ann"}}});
        c.send(start).await?;
        let v = c.until("the answer", |v| v["name"] == "session.started" || v["name"] == "error").await?;
        open.push(c);
        Ok(if v["name"] == "error" { v["value"]["code"].as_str().unwrap_or("").to_owned() } else { "started".into() })
    }
    assert_eq!(start(&url, proxy, "203.0.113.7", &mut open).await?, "started");
    assert_eq!(start(&url, proxy, "203.0.113.7", &mut open).await?, "started");
    assert_eq!(start(&url, proxy, "203.0.113.7", &mut open).await?, "rate_limited", "its address is at its limit");
    assert_eq!(start(&url, proxy, "198.51.100.9, 203.0.113.7", &mut open).await?, "rate_limited", "not fooled");
    assert_eq!(start(&url, proxy, "203.0.113.8", &mut open).await?, "started", "another customer behind the proxy");
    // 127.0.0.2 is no proxy: whatever it forwards, it counts as itself.
    let direct: std::net::IpAddr = "127.0.0.2".parse()?;
    assert_eq!(start(&url, direct, "192.0.2.1", &mut open).await?, "started");
    assert_eq!(start(&url, direct, "192.0.2.2", &mut open).await?, "started");
    assert_eq!(start(&url, direct, "192.0.2.3", &mut open).await?, "rate_limited", "the header is not believed");
    Ok(())
}

/// A customer cannot send what a bot's or an agent's JSON reader would choke on: what an
/// activity carries through untouched (`value`, `channelData`, `attachments`) may nest 48
/// levels, the activity counted, so that with what the gateway wraps around it .NET's
/// readers (64 levels) and serde_json's (128) still take it. Deeper is refused by name and
/// the conversation goes on; the admin API shows the transcript, the deepest allowed
/// activity in it.
#[tokio::test]
async fn json_nested_deeper_than_bots_and_agents_read_is_refused() -> Result<()> {
    let s = start_default().await;
    let mut c = s.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    let nested = |levels: usize| (0..levels).fold(json!(1), |v, _| json!([v]));
    c.send(json!({"type":"message","text":"too deep","channelData":{"clientActivityId":"d1","x":nested(300)}})).await?;
    let e = c.event("error").await?;
    assert_eq!(e["value"]["code"], "bad_request", "{e}");
    assert!(e["value"]["message"].as_str().unwrap_or("").starts_with("channelData nests deeper"), "{e}");

    // The activity, channelData's object and 46 arrays: 48 levels.
    let deepest =
        json!({"type":"message","text":"deepest allowed","channelData":{"clientActivityId":"d2","x":nested(46)}});
    c.send(deepest).await?;
    assert_eq!(c.event("ack").await?["value"]["clientActivityId"], "d2");

    let path = format!("/v1/admin/conversations/{}", c.conversation);
    let (status, body) = http_with(s.addr, "GET", &path, &[("authorization", "Bearer admin-demo-token")], "").await?;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body)?;
    let transcript = v["transcript"].as_array().context("the transcript, as a list")?;
    assert!(transcript.iter().any(|a| a["text"] == "deepest allowed" && a["channelData"]["x"] == nested(46)));
    assert!(!transcript.iter().any(|a| a["text"] == "too deep"), "the refused one is not stored");
    Ok(())
}
