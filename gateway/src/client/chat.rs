//! `switchboard chat`: a customer in the terminal.

use std::collections::BTreeMap;
use std::process::ExitCode;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

use super::{Ws, connect, next_text, retry};

pub struct ChatOptions {
    pub url: String,
    pub workstream: String,
    pub name: String,
    pub context: Vec<(String, String)>,
    pub json: bool,
}

#[derive(Default)]
struct State {
    conversation: Option<String>,
    token: Option<String>,
    watermark: u64,
    /// Messages not yet acknowledged, resent with the same clientActivityId after a drop.
    unacked: BTreeMap<String, Value>,
    next_id: u64,
    survey_pending: bool,
    ended: bool,
}

enum Step {
    Continue,
    Exit(ExitCode),
}

const HELP: &str =
    "Type a message and press Enter. Commands: /end (finish), /rate N [comment] (answer the survey), /quit, /help";

pub async fn run(opts: ChatOptions) -> ExitCode {
    let mut st = State::default();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut failures = 0;
    loop {
        let mut ws = match connect(&opts.url, "/v1/chat", None).await {
            Ok(ws) => ws,
            Err(e) if st.conversation.is_none() => {
                eprintln!("cannot connect to {}: {e:#}", opts.url);
                return ExitCode::from(1);
            }
            Err(e) => {
                if !retry(&mut failures, &e).await {
                    return ExitCode::from(1);
                }
                continue;
            }
        };
        let hello = match (&st.conversation, &st.token) {
            (Some(c), Some(t)) => {
                json!({"type":"event","name":"session.resume","value":{"conversationId":c,"token":t,"watermark":st.watermark}})
            }
            _ => {
                let ctx: serde_json::Map<String, Value> =
                    opts.context.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
                json!({"type":"event","name":"session.start","value":{"workstream":opts.workstream,"user":{"name":opts.name},"context":ctx}})
            }
        };
        if ws.send(Message::text(hello.to_string())).await.is_err() {
            failures += 1;
            continue;
        }
        let why = loop {
            tokio::select! {
                line = stdin.next_line() => {
                    match line {
                        Ok(Some(l)) => match command(&mut ws, &mut st, l.trim()).await {
                            Step::Continue => {}
                            Step::Exit(code) => {
                                let _ = ws.close(None).await;
                                return code;
                            }
                        },
                        _ => {
                            let _ = ws.close(None).await;
                            return ExitCode::SUCCESS;
                        }
                    }
                }
                frame = next_text(&mut ws) => match frame {
                    Ok(t) => {
                        let v: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                        if opts.json {
                            println!("{t}");
                        }
                        let started = v["name"] == "session.started";
                        match render(&mut st, &v, opts.json, &opts.workstream, &opts.name) {
                            Step::Continue => {}
                            Step::Exit(code) => {
                                let _ = ws.close(None).await;
                                return code;
                            }
                        }
                        if started {
                            failures = 0;
                            // Resend what the gateway may not have stored before the drop; the
                            // clientActivityId makes a repeat harmless.
                            for m in st.unacked.values() {
                                let _ = ws.send(Message::text(m.to_string())).await;
                            }
                        }
                        if v["name"] == "error" && st.conversation.is_some() && v["value"]["code"] == "unauthorized" {
                            break "the gateway refused to resume this conversation".to_owned();
                        }
                    }
                    Err(why) => break why,
                }
            }
        };
        if st.conversation.is_none() || st.ended && !st.survey_pending {
            println!("[disconnected: {why}]");
            return ExitCode::from(1);
        }
        println!("[connection lost: {why}; reconnecting…]");
        if !retry(&mut failures, &anyhow::anyhow!("{why}")).await {
            return ExitCode::from(1);
        }
    }
}

async fn send(ws: &mut Ws, st: &mut State, mut v: Value) {
    st.next_id += 1;
    let cid = format!("cli-{}-{}", std::process::id(), st.next_id);
    v["channelData"] = json!({ "clientActivityId": cid });
    st.unacked.insert(cid, v.clone());
    let _ = ws.send(Message::text(v.to_string())).await;
}

async fn command(ws: &mut Ws, st: &mut State, line: &str) -> Step {
    if line.is_empty() {
        return Step::Continue;
    }
    let (cmd, rest) = line.split_once(' ').map_or((line, ""), |(c, r)| (c, r.trim()));
    match cmd {
        "/quit" => return Step::Exit(ExitCode::SUCCESS),
        "/help" => println!("{HELP}"),
        "/end" => send(ws, st, json!({"type":"endOfConversation"})).await,
        "/rate" => {
            let (n, comment) = rest.split_once(' ').map_or((rest, ""), |(n, c)| (n, c.trim()));
            match n.parse::<u8>() {
                Ok(r @ 1..=5) => {
                    let mut value = json!({ "rating": r });
                    if !comment.is_empty() {
                        value["comment"] = json!(comment);
                    }
                    send(ws, st, json!({"type":"event","name":"survey.response","value":value})).await;
                }
                _ => println!("! rate with a number from 1 to 5, e.g. /rate 5 very helpful"),
            }
        }
        _ if cmd.starts_with('/') => println!("! unknown command {cmd} — {HELP}"),
        _ => send(ws, st, json!({"type":"message","text":line})).await,
    }
    Step::Continue
}

fn render(st: &mut State, v: &Value, quiet: bool, workstream: &str, me: &str) -> Step {
    if let Some(seq) = v["seq"].as_u64() {
        st.watermark = st.watermark.max(seq);
    }
    let say = |s: String| {
        if !quiet {
            println!("{s}");
        }
    };
    let from = v["from"]["name"].as_str().unwrap_or("?");
    match (v["type"].as_str().unwrap_or(""), v["name"].as_str()) {
        ("event", Some("session.started")) => {
            let resumed = st.conversation.is_some();
            st.conversation = v["value"]["conversationId"].as_str().map(str::to_owned);
            st.token = v["value"]["token"].as_str().map(str::to_owned);
            if resumed {
                say("[reconnected]".into());
            } else {
                say(format!("Connected to {workstream} as {me}. {HELP}"));
            }
        }
        ("event", Some("ack")) => {
            if let Some(seq) = v["value"]["seq"].as_u64() {
                st.watermark = st.watermark.max(seq);
            }
            let sent = v["value"]["clientActivityId"].as_str().and_then(|cid| st.unacked.remove(cid));
            if sent.as_ref().is_some_and(|s| s["type"] == "endOfConversation") {
                say("[you ended the conversation]".into());
                return Step::Exit(ExitCode::SUCCESS);
            }
            if sent.is_some_and(|s| s["name"] == "survey.response") {
                st.survey_pending = false;
                say("[thank you for your feedback]".into());
                if st.ended {
                    return Step::Exit(ExitCode::SUCCESS);
                }
            }
        }
        ("event", Some("error")) => {
            say(format!(
                "! {} ({})",
                v["value"]["message"].as_str().unwrap_or("error"),
                v["value"]["code"].as_str().unwrap_or("?")
            ));
        }
        ("event", Some("queue.position")) => say(format!(
            "[waiting in {}: you are number {}]",
            v["value"]["queue"].as_str().unwrap_or("the queue"),
            v["value"]["position"]
        )),
        ("event", Some("conversation.assigned")) => match v["value"]["role"].as_str() {
            Some("agent") => {
                say(format!("[{} (agent) joined the conversation]", v["value"]["name"].as_str().unwrap_or("An agent")))
            }
            _ => {
                say(format!("[{} (virtual assistant) is here to help]", v["value"]["name"].as_str().unwrap_or("A bot")))
            }
        },
        ("event", Some("handoff.initiate")) => say("[transferring you to an agent…]".into()),
        ("event", Some("survey.request")) => {
            st.survey_pending = true;
            say("[How did we do? Rate us with /rate 1-5 and an optional comment]".into());
        }
        ("message", _) if v["from"]["role"] == "user" => say(format!("You: {}", v["text"].as_str().unwrap_or(""))),
        ("message", _) => say(format!("{from}: {}", v["text"].as_str().unwrap_or(""))),
        ("endOfConversation", _) => {
            st.ended = true;
            say("[the conversation has ended]".into());
            if !st.survey_pending {
                return Step::Exit(ExitCode::SUCCESS);
            }
        }
        _ => {}
    }
    Step::Continue
}
