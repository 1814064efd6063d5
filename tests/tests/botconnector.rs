//! The Bot Connector end to end: Switchboard as the Bot Framework channel of a bot with an
//! `endpoint`.
//!
//! The first tests run an unmodified `botbuilder` 4.23 bot (CloudAdapter, in
//! `tests/interop/botbuilder`, installed by `scripts/test.sh` with `npm ci`) against the
//! gateway, with a native `/v1/chat` customer and a `/v1/agent` agent: the bot greets on
//! `conversationUpdate`, answers, and hands off (with `EventFactory.createHandoffInitiation`
//! or Omnichannel's `channelData.tags`), with authentication off (`auth = "none"`) and on
//! (the gateway as token issuer, behind a TLS terminator as botbuilder's MSAL client needs
//! an https login URL). The others use a stub endpoint in this process: the Activity the
//! gateway posts and its token, the refusals of the REST API, and failover from an endpoint
//! that keeps failing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use base64::Engine as _;
use serde_json::{Value, json};
use switchboard_tests::interop::{NODE_WAIT, NodeBot, project_dir};
use switchboard_tests::{BOT_APP_ID, BOT_SECRET, EXTERNAL_BOT, TestServer, agent_secret, http_with, start_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// The sample with its bot at `endpoint`, and extra `[server]` and `[[bots]]` lines.
pub fn with_endpoint(endpoint: &str, server: &str, bot: &str) -> String {
    let cfg = EXTERNAL_BOT
        .replace("capacity = 1000\n", &format!("capacity = 1000\nendpoint = \"{endpoint}\"\n{bot}"))
        .replace("listen = \"127.0.0.1:8080\"\n", &format!("listen = \"127.0.0.1:8080\"\n{server}"));
    assert!(cfg.contains("endpoint"), "the sample has the lines replaced");
    cfg
}

/// A frame from the bot (a `message` whose author is a bot).
fn from_bot(v: &Value) -> bool {
    v["type"] == "message" && v["from"]["role"] == "bot"
}

/// Reads frames until one satisfies `pred`, with the Node bot's patience.
async fn next(c: &mut switchboard_tests::Client, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
    tokio::time::timeout(NODE_WAIT, async {
        loop {
            match c.recv().await {
                Ok(v) if pred(&v) => return Ok(v),
                Ok(_) => {}
                Err(e) if e.to_string().contains("no frame within") => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .with_context(|| format!("waiting for {what}"))?
}

/// The whole conversation: welcome, an answer, the handoff to Alice with the context and
/// (with `createHandoffInitiation`) the Transcript attachment, `handoff.status` back to the
/// bot, and Alice talking to the customer.
async fn greet_answer_hand_off(gw: &TestServer, bot: &mut NodeBot, tags: bool) -> Result<()> {
    let mut alice = gw.agent("alice").await?;
    let mut ann = gw.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    let conv = ann.conversation.clone();
    let welcome = next(&mut ann, "the welcome", from_bot).await?;
    assert_eq!(welcome["text"], "Welcome to Contoso, Ann! How can I help?");
    ann.say(&conv, "what are your opening hours? 🕘").await?;
    let answer = next(&mut ann, "the answer", from_bot).await?;
    assert_eq!(answer["text"], "You said: what are your opening hours? 🕘");
    ann.say(&conv, "I want an agent").await?;
    let transferring = next(&mut ann, "the transfer message", from_bot).await?;
    assert_eq!(transferring["text"], "Transferring you to an agent.");
    let work = next(&mut alice, "Alice's work item", |v| {
        v["name"] == "conversation.assigned" && v["value"]["workstream"].is_string()
    })
    .await?;
    assert_eq!(work["conversation"]["id"], conv.as_str());
    assert_eq!(work["value"]["queue"], "CreditCardQueue", "the handoff's context routed it: {work}");
    assert_eq!(work["value"]["context"]["BotHandoffTopic"], "CreditCard");
    assert_eq!(work["value"]["context"]["va_LastPhrase"], "I want an agent", "a va_ variable is kept");
    let transcript = work["value"]["transcript"].as_array().context("transcript")?;
    let texts: Vec<&str> = transcript.iter().filter(|a| from_bot(a)).filter_map(|a| a["text"].as_str()).collect();
    assert!(texts.contains(&"You said: what are your opening hours? 🕘"), "{texts:?}");
    if !tags {
        assert_eq!(work["value"]["summary"], "Customer asked: I want an agent");
        let handoff = transcript
            .iter()
            .find(|a| a["name"] == "handoff.initiate")
            .with_context(|| format!("no handoff.initiate in {transcript:?}"))?;
        let attachment = &handoff["attachments"][0];
        assert_eq!(attachment["name"], "Transcript", "{handoff}");
        let kept = attachment["content"]["activities"].as_array().context("the bot's transcript")?;
        assert!(kept.iter().any(|a| a["text"] == "I want an agent"), "{attachment}");
    }
    bot.expect("handoff.status accepted").await?;
    bot.expect("handoff.status completed").await?;
    alice.say(&conv, "Hi Ann, Alice here.").await?;
    let from_alice =
        next(&mut ann, "Alice's message", |v| v["type"] == "message" && v["from"]["id"] == "alice").await?;
    assert_eq!(from_alice["text"], "Hi Ann, Alice here.");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_botbuilder_bot_without_auth_greets_answers_and_hands_off() -> Result<()> {
    let mut bot = NodeBot::start(&[("HANDOFF", "event".into())]).await?;
    let endpoint = bot.endpoint();
    let gw = start_server(Some(&with_endpoint(&endpoint, "", "auth = \"none\"\n"))).await;
    greet_answer_hand_off(&gw, &mut bot, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_botbuilder_bot_hands_off_and_ends_with_omnichannel_tags() -> Result<()> {
    let mut bot = NodeBot::start(&[("HANDOFF", "tags".into())]).await?;
    let endpoint = bot.endpoint();
    let gw = start_server(Some(&with_endpoint(&endpoint, "", "auth = \"none\"\n"))).await;
    greet_answer_hand_off(&gw, &mut bot, true).await?;
    // EndConversation: the bot's goodbye, then the end.
    let mut bea = gw.start_chat("ChatWorkStream", "Bea", json!({})).await?;
    let conv = bea.conversation.clone();
    next(&mut bea, "the welcome", from_bot).await?;
    bea.say(&conv, "bye").await?;
    let goodbye = next(&mut bea, "the goodbye", from_bot).await?;
    assert_eq!(goodbye["text"], "Goodbye!");
    next(&mut bea, "the end", |v| v["type"] == "endOfConversation").await?;
    Ok(())
}

mod tls {
    //! A TLS terminator for the test with authentication on: botbuilder's MSAL client
    //! refuses a login URL that is not https.

    use std::sync::Arc;

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::TlsAcceptor;

    /// A CA's certificate (PEM) and a `localhost` certificate it signed, with its key.
    pub fn certificates() -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "Switchboard bot connector test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
        (ca.pem(), leaf.der().clone(), PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
    }

    /// Serves TLS on `listener`, forwarding each connection to the address `upstream`
    /// will hold (known only once the gateway is up).
    pub fn terminate(
        listener: TcpListener,
        cert: CertificateDer<'static>,
        key: PrivateKeyDer<'static>,
        upstream: tokio::sync::watch::Receiver<Option<std::net::SocketAddr>>,
    ) {
        // An error only means a provider is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(vec![cert], key).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, mut upstream) = (acceptor.clone(), upstream.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let Ok(addr) =
                        upstream.wait_for(Option::is_some).await.map(|a| a.unwrap_or_else(|| unreachable!()))
                    else {
                        return;
                    };
                    let Ok(mut plain) = TcpStream::connect(addr).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_botbuilder_bot_with_auth_on_trusts_switchboard_as_its_channel() -> Result<()> {
    let (ca, cert, key) = tls::certificates();
    let dir = tempfile::tempdir()?;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let public = format!("https://localhost:{}", listener.local_addr()?.port());
    let (upstream_tx, upstream) = tokio::sync::watch::channel(None);
    tls::terminate(listener, cert, key, upstream);
    let mut bot = NodeBot::start(&[
        ("HANDOFF", "event".into()),
        ("MicrosoftAppId", BOT_APP_ID.into()),
        ("MicrosoftAppPassword", BOT_SECRET.into()),
        ("MicrosoftAppType", "MultiTenant".into()),
        ("ToChannelFromBotLoginUrl", format!("{public}/v1/login")),
        ("ToChannelFromBotOAuthScope", public.clone()),
        ("ToBotFromChannelTokenIssuer", public.clone()),
        ("ToBotFromChannelOpenIdMetadataUrl", format!("{public}/.well-known/openid-configuration")),
        ("NODE_EXTRA_CA_CERTS", ca_file.to_string_lossy().into_owned()),
        // MSAL asks login.microsoftonline.com about any authority it does not know; this
        // machine has no internet access, so that one question is answered locally.
        ("NODE_OPTIONS", format!("--require \"{}\"", project_dir("botbuilder").join("offline-aad.js").display())),
    ])
    .await?;
    let endpoint = bot.endpoint();
    let gw = start_server(Some(&with_endpoint(&endpoint, &format!("public_url = \"{public}\"\n"), ""))).await;
    upstream_tx.send(Some(gw.addr))?;
    greet_answer_hand_off(&gw, &mut bot, false).await
}

/// A stub messaging endpoint: records every request (headers and JSON body) and answers
/// each with the next status of `statuses` (the last one repeats).
async fn stub_endpoint(statuses: Vec<u16>) -> Result<(SocketAddr, mpsc::UnboundedReceiver<(String, Value)>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::unbounded_channel();
    let statuses = Arc::new(parking_lot_free::Counter::new(statuses));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let (tx, statuses) = (tx.clone(), statuses.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let Ok(n) = s.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    let body: Value = serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap_or_default();
                    buf.drain(..end + 4 + len);
                    let _ = tx.send((head, body));
                    let status = statuses.next();
                    let reply = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                    if s.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((addr, rx))
}

mod parking_lot_free {
    //! The stub's statuses, one per request.
    use std::sync::Mutex;

    pub struct Counter(Mutex<Vec<u16>>);

    impl Counter {
        pub fn new(mut statuses: Vec<u16>) -> Counter {
            statuses.reverse();
            Counter(Mutex::new(statuses))
        }
        pub fn next(&self) -> u16 {
            let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if s.len() > 1 { s.pop().unwrap_or(200) } else { s.last().copied().unwrap_or(200) }
        }
    }
}

async fn next_post(rx: &mut mpsc::UnboundedReceiver<(String, Value)>) -> Result<(String, Value)> {
    tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.context("no POST to the bot")?.context("stub gone")
}

fn b64json(part: &str) -> Value {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_posts_channel_activities_with_its_signed_token() -> Result<()> {
    let (stub, mut posts) = stub_endpoint(vec![503, 200]).await?;
    let gw = start_server(Some(&with_endpoint(&format!("http://{stub}/api/messages"), "", ""))).await;
    let public = format!("http://{}", gw.addr);
    let mut ann = gw.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    let conv = ann.conversation.clone();
    // The first try of the greeting gets 503 and is retried under the same id.
    let (_, first) = next_post(&mut posts).await?;
    let (head, update) = next_post(&mut posts).await?;
    assert_eq!(first["id"], update["id"], "a retry is the same activity");
    assert_eq!(update["type"], "conversationUpdate");
    assert_eq!(update["serviceUrl"], format!("{public}/"));
    assert_eq!(update["channelId"], "switchboard");
    assert_eq!(update["conversation"]["id"], conv.as_str());
    assert_eq!(update["recipient"]["id"], BOT_APP_ID);
    assert_eq!(update["channelData"]["workstream"], "ChatWorkStream");
    assert!(update["membersAdded"].as_array().is_some_and(|m| m.iter().any(|m| m["name"] == "Ann")), "{update}");
    // The token: RS256, from the gateway's issuer, for this bot and this serviceUrl, with a
    // key the JWKS publishes.
    let auth = head.lines().find_map(|l| l.strip_prefix("authorization: Bearer ")).context("no token")?.to_owned();
    let parts: Vec<&str> = auth.trim().split('.').collect();
    assert_eq!(parts.len(), 3);
    let (header, claims) = (b64json(parts[0]), b64json(parts[1]));
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["iss"], public.as_str());
    assert_eq!(claims["aud"], BOT_APP_ID);
    assert_eq!(claims["serviceurl"], format!("{public}/"));
    let (_, meta) = http_with(gw.addr, "GET", "/.well-known/openid-configuration", &[], "").await?;
    let meta: Value = serde_json::from_str(&meta)?;
    assert_eq!(meta["issuer"], public.as_str());
    let jwks_path = meta["jwks_uri"].as_str().context("jwks_uri")?.trim_start_matches(&public).to_owned();
    let (_, jwks) = http_with(gw.addr, "GET", &jwks_path, &[], "").await?;
    let jwks: Value = serde_json::from_str(&jwks)?;
    assert_eq!(jwks["keys"][0]["kid"], header["kid"]);
    // A customer message: posted once, with the transcript id, in order.
    ann.say(&conv, "hello").await?;
    let (_, hello) = next_post(&mut posts).await?;
    assert_eq!(hello["type"], "message");
    assert_eq!(hello["text"], "hello");
    assert_eq!(hello["from"]["role"], "user");
    let id = hello["id"].as_str().context("id")?.to_owned();
    // The bot answers with the token it got from /v1/token, to the activity's id
    // (URL-encoded path parameters are decoded).
    let token = gw.token(BOT_APP_ID, BOT_SECRET).await?;
    let bearer = format!("Bearer {token}");
    let path = format!("/v3/conversations/{}/activities/{}", conv.replace('_', "%5F"), id);
    let reply = json!({"type": "message", "text": "Hi Ann", "replyToId": id, "id": "bot-1"}).to_string();
    let h = [("authorization", bearer.as_str()), ("content-type", "application/json")];
    let (status, body) = http_with(gw.addr, "POST", &path, &h, &reply).await?;
    assert_eq!(status, 200, "{body}");
    let answered: Value = serde_json::from_str(&body)?;
    let got = next(&mut ann, "the bot's answer", from_bot).await?;
    assert_eq!(got["text"], "Hi Ann");
    assert_eq!(answered["id"], got["id"]);
    // The same activity id again is not delivered twice.
    let (status, again) = http_with(gw.addr, "POST", &path, &h, &reply).await?;
    assert_eq!((status, serde_json::from_str::<Value>(&again)?["id"].clone()), (200, answered["id"].clone()));
    ann.quiet_for(Duration::from_millis(300), |v| v["type"] != "message").await?;
    Ok(())
}

/// What a refused call was, its headers, path and body, and the status it gets.
type Refusal<'a> = (&'a str, Vec<(&'a str, &'a str)>, String, String, u16);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connector_api_refuses_calls_without_the_right_token() -> Result<()> {
    let (stub, mut posts) = stub_endpoint(vec![200]).await?;
    let toml = with_endpoint(&format!("http://{stub}/api/messages"), "", "")
        + "\n[[bots]]\nname = \"other-bot\"\napp_id = \"other-app\"\nsecret = \"other-secret\"\nendpoint = \"http://127.0.0.1:9/api/messages\"\n";
    let gw = start_server(Some(&toml)).await;
    let ann = gw.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    next_post(&mut posts).await?; // the bot holds the conversation
    let path = format!("/v3/conversations/{}/activities", ann.conversation);
    let body = json!({"type": "message", "text": "hi"}).to_string();
    let ours = format!("Bearer {}", gw.token(BOT_APP_ID, BOT_SECRET).await?);
    let other = format!("Bearer {}", gw.token("other-app", "other-secret").await?);
    let agent = format!("Bearer {}", gw.token("alice", &agent_secret("alice")).await?);
    let cases: Vec<Refusal> = vec![
        ("no token", vec![], path.clone(), body.clone(), 401),
        ("a forged token", vec![("authorization", "Bearer eyJ.forged")], path.clone(), body.clone(), 401),
        ("an agent's token", vec![("authorization", &agent)], path.clone(), body.clone(), 403),
        ("another bot's token", vec![("authorization", &other)], path.clone(), body.clone(), 403),
        (
            "an unknown conversation",
            vec![("authorization", &ours)],
            "/v3/conversations/c_nope/activities".into(),
            body.clone(),
            404,
        ),
        ("a body that is not an activity", vec![("authorization", &ours)], path.clone(), "[1,2]".into(), 400),
        (
            "an unsupported type",
            vec![("authorization", &ours)],
            path.clone(),
            json!({"type": "invoke"}).to_string(),
            400,
        ),
        (
            "too large",
            vec![("authorization", &ours)],
            path.clone(),
            json!({"type": "message", "text": "x".repeat(40_000)}).to_string(),
            413,
        ),
    ];
    for (what, headers, path, body, want) in cases {
        let (status, text) = http_with(gw.addr, "POST", &path, &headers, &body).await?;
        assert_eq!(status, want, "{what}: {text}");
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{what}: {text}"))?;
        assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string(), "{what}: {v}");
    }
    // And with the right token it works.
    let (status, _) = http_with(gw.addr, "POST", &path, &[("authorization", &ours)], &body).await?;
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_keeps_failing_hands_its_conversations_to_people() -> Result<()> {
    let (stub, mut posts) = stub_endpoint(vec![500]).await?;
    let gw = start_server(Some(&with_endpoint(&format!("http://{stub}/api/messages"), "", "auth = \"none\"\n"))).await;
    let mut alice = gw.agent("alice").await?;
    let mut ann = gw.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    for _ in 0..4 {
        next_post(&mut posts).await?;
    }
    let notice =
        next(&mut ann, "the failover notice", |v| v["type"] == "message" && v["from"]["role"] == "system").await?;
    assert!(notice["text"].as_str().is_some_and(|t| t.contains("not answering")), "{notice}");
    let work = next(&mut alice, "the work item", |v| {
        v["name"] == "conversation.assigned" && v["value"]["workstream"].is_string()
    })
    .await?;
    assert_eq!(work["conversation"]["id"], ann.conversation.as_str());
    Ok(())
}

/// The key id the gateway at `addr` publishes.
async fn published_kid(addr: SocketAddr) -> Result<Value> {
    let (status, jwks) = http_with(addr, "GET", "/.well-known/jwks.json", &[], "").await?;
    assert_eq!(status, 200);
    Ok(serde_json::from_str::<Value>(&jwks)?["keys"][0]["kid"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_key_survives_a_restart() -> Result<()> {
    let toml = with_endpoint("http://127.0.0.1:9/api/messages", "", "");
    let dir = tempfile::tempdir()?;
    let mut cfg = switchboard_tests::config(Some(&toml));
    cfg.server.data_dir = dir.path().to_owned();
    let listen = "127.0.0.1:0".parse()?;
    let (store, recovered) = switchboard::server::open_store(&cfg)?;
    let first = switchboard::server::start_with(cfg.clone(), listen, store, recovered).await?;
    let kid = published_kid(first.addr).await?;
    assert!(kid.is_string(), "a key is published: {kid}");
    first.shutdown().await;
    let (store, recovered) = switchboard::server::open_store(&cfg)?;
    let second = switchboard::server::start_with(cfg, listen, store, recovered).await?;
    assert_eq!(published_kid(second.addr).await?, kid, "the same key after the restart");
    second.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_bot_hands_off_with_omnichannel_tags_and_hears_the_handoff_status() -> Result<()> {
    let gw = start_server(None).await;
    let mut bot = gw.bot().await?;
    let mut alice = gw.agent("alice").await?;
    let mut ann = gw.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    let conv = ann.conversation.clone();
    bot.event("conversation.assigned").await?;
    let tags = json!({"type": "Escalate", "context": {"BotHandoffTopic": "CreditCard", "va_Reason": "lost card"}});
    bot.send(json!({"type": "message", "conversation": {"id": conv}, "text": "Let me find you an agent.",
        "channelData": {"tags": tags.to_string(), "clientActivityId": "m1"}}))
        .await?;
    // The acknowledgement waits for the commit; the statuses are state, sent at once.
    let (mut acked, mut states) = (false, Vec::new());
    while !acked || states.len() < 2 {
        let v = bot.until("the ack and the statuses", |v| v["name"] == "ack" || v["name"] == "handoff.status").await?;
        if v["name"] == "ack" {
            assert_eq!(v["value"]["clientActivityId"], "m1");
            acked = true;
        } else {
            assert_eq!(v["conversation"]["id"], conv.as_str());
            states.push(v["value"]["state"].clone());
        }
    }
    assert_eq!(states, [json!("accepted"), json!("completed")]);
    let said = next(&mut ann, "the bot's message", from_bot).await?;
    assert_eq!(said["text"], "Let me find you an agent.");
    let work = alice.event("conversation.assigned").await?;
    assert_eq!(work["value"]["queue"], "CreditCardQueue");
    assert_eq!(work["value"]["context"]["va_Reason"], "lost card");

    // A handoff that cannot be carried out is refused, and the bot is told it failed.
    let mut bea = gw.start_chat("ChatWorkStream", "Bea", json!({})).await?;
    let conv = bea.conversation.clone();
    bot.event("conversation.assigned").await?;
    bot.send(json!({"type": "event", "name": "handoff.initiate", "conversation": {"id": conv}, "value": ["not", "an", "object"]}))
        .await?;
    let failed = bot.event("handoff.status").await?;
    assert_eq!(failed["value"]["state"], "failed");
    bot.event("error").await?;
    // Omnichannel's EndConversation ends it after the goodbye.
    let end = json!({"type": "EndConversation"}).to_string();
    bot.send(
        json!({"type": "message", "conversation": {"id": conv}, "text": "Goodbye!", "channelData": {"tags": end}}),
    )
    .await?;
    assert_eq!(next(&mut bea, "the goodbye", from_bot).await?["text"], "Goodbye!");
    next(&mut bea, "the end", |v| v["type"] == "endOfConversation").await?;
    Ok(())
}
