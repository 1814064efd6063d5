//! `switchboard agent`: a human agent in the terminal.

use std::collections::BTreeMap;
use std::process::ExitCode;

use futures_util::SinkExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

use super::{Ws, backoff, connect, next_text, retry, token};

pub struct AgentOptions {
    pub url: String,
    pub id: String,
    pub secret: String,
    pub json: bool,
}

struct Conv {
    number: usize,
    customer: String,
    last_seq: u64,
    open: bool,
}

#[derive(Default)]
struct State {
    convs: BTreeMap<String, Conv>,
    current: Option<String>,
    next_number: usize,
}

const HELP: &str = "Commands: /list, /use N, /transfer [queue], /end [survey], /presence available|busy|away|offline, /quit. Anything else is sent to the current conversation.";

pub async fn run(opts: AgentOptions) -> ExitCode {
    let mut st = State::default();
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut failures = 0;
    let mut signed_in = false;
    loop {
        let ws = match token(&opts.url, &opts.id, &opts.secret).await {
            Ok(t) => connect(&opts.url, "/v1/agent", Some(&t)).await,
            Err(e) => Err(e),
        };
        let mut ws = match ws {
            Ok(ws) => ws,
            Err(e) if !signed_in => {
                eprintln!("cannot sign in as {} at {}: {e:#}", opts.id, opts.url);
                return ExitCode::from(1);
            }
            Err(e) => {
                if !retry(&mut failures, &e).await {
                    return ExitCode::from(1);
                }
                continue;
            }
        };
        if signed_in {
            println!("[reconnected; signed in as {} (available)]", opts.id);
        } else {
            println!("Signed in as {} (available). {HELP}", opts.id);
        }
        signed_in = true;
        failures = 0;
        let why = loop {
            tokio::select! {
                line = stdin.next_line() => match line {
                    Ok(Some(l)) => {
                        if !command(&mut ws, &mut st, l.trim()).await {
                            let _ = ws.close(None).await;
                            return ExitCode::SUCCESS;
                        }
                    }
                    _ => {
                        let _ = ws.close(None).await;
                        return ExitCode::SUCCESS;
                    }
                },
                frame = next_text(&mut ws) => match frame {
                    Ok(t) => {
                        if opts.json {
                            println!("{t}");
                        }
                        let v: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                        render(&mut st, &v, opts.json);
                    }
                    Err(why) => break why,
                }
            }
        };
        println!("[connection lost: {why}; reconnecting…]");
        failures += 1;
        backoff(failures).await;
    }
}

async fn send(ws: &mut Ws, v: Value) {
    let _ = ws.send(Message::text(v.to_string())).await;
}

/// Returns false to quit.
async fn command(ws: &mut Ws, st: &mut State, line: &str) -> bool {
    if line.is_empty() {
        return true;
    }
    let (cmd, rest) = line.split_once(' ').map_or((line, ""), |(c, r)| (c, r.trim()));
    let current = st.current.clone();
    match cmd {
        "/quit" => return false,
        "/help" => println!("{HELP}"),
        "/list" => {
            let open: Vec<_> = st.convs.iter().filter(|(_, c)| c.open).collect();
            if open.is_empty() {
                println!("(no conversations)");
            }
            for (id, c) in open {
                let mark = if st.current.as_deref() == Some(id.as_str()) { "*" } else { " " };
                println!("{mark} #{} {} ({id})", c.number, c.customer);
            }
        }
        "/use" => {
            let n: Option<usize> = rest.trim_start_matches('#').parse().ok();
            match st.convs.iter().find(|(_, c)| Some(c.number) == n && c.open) {
                Some((id, c)) => {
                    println!("(now talking in #{} with {})", c.number, c.customer);
                    st.current = Some(id.clone());
                }
                None => println!("! no open conversation #{rest}"),
            }
        }
        "/presence" => send(ws, json!({"type":"event","name":"presence","value":rest})).await,
        "/transfer" | "/end" => {
            let Some(id) = current else {
                println!("! no conversation selected");
                return true;
            };
            let v = if cmd == "/end" {
                json!({"type":"endOfConversation","conversation":{"id":id},"value":{"survey": rest == "survey"}})
            } else if rest.is_empty() {
                json!({"type":"event","name":"transfer","conversation":{"id":id},"value":{}})
            } else {
                json!({"type":"event","name":"transfer","conversation":{"id":id},"value":{"queue":rest}})
            };
            send(ws, v).await;
            if let Some(c) = st.convs.get_mut(&id) {
                c.open = false;
                println!("#{} [{}]", c.number, if cmd == "/end" { "ended" } else { "transferred" });
            }
            st.current = st.convs.iter().filter(|(_, c)| c.open).map(|(id, _)| id.clone()).next_back();
        }
        _ if cmd.starts_with('/') => println!("! unknown command {cmd}. {HELP}"),
        _ => match current {
            Some(id) => send(ws, json!({"type":"message","conversation":{"id":id},"text":line})).await,
            None => println!("! no conversation yet: wait for an assignment"),
        },
    }
    true
}

fn line_of(v: &Value) -> Option<String> {
    let who = v["from"]["name"].as_str().unwrap_or("?");
    match (v["type"].as_str()?, v["name"].as_str()) {
        ("message", _) => Some(format!("{who}: {}", v["text"].as_str().unwrap_or(""))),
        ("event", Some("handoff.initiate")) => {
            Some(format!("[{who} transferred: {}]", v["text"].as_str().unwrap_or("")))
        }
        ("event", Some("conversation.assigned")) => Some(format!(
            "[{} ({}) joined]",
            v["value"]["name"].as_str().unwrap_or("?"),
            v["value"]["role"].as_str().unwrap_or("?")
        )),
        ("event", Some("survey.request")) => Some("[survey requested]".into()),
        ("endOfConversation", _) => Some(format!("[ended by {who}]")),
        _ => None,
    }
}

fn render(st: &mut State, v: &Value, quiet: bool) {
    let say = |s: String| {
        if !quiet {
            println!("{s}");
        }
    };
    let Some(id) = v["conversation"]["id"].as_str().map(str::to_owned) else {
        if v["name"] == "error" {
            say(format!(
                "! {} ({})",
                v["value"]["message"].as_str().unwrap_or("error"),
                v["value"]["code"].as_str().unwrap_or("?")
            ));
        }
        return;
    };
    // The holder's own assignment: not a transcript activity (no seq).
    if v["name"] == "conversation.assigned" && v["seq"].is_null() {
        let val = &v["value"];
        let resumed = val["resumed"] == true && st.convs.contains_key(&id);
        if !resumed {
            st.next_number += 1;
            st.convs.insert(
                id.clone(),
                Conv {
                    number: st.next_number,
                    customer: val["customer"]["name"].as_str().unwrap_or("Customer").to_owned(),
                    last_seq: 0,
                    open: true,
                },
            );
        }
        let Some(c) = st.convs.get_mut(&id) else { return };
        c.open = true;
        if !resumed {
            say(format!(
                "=== #{} {} — {} ({}) ===",
                c.number,
                c.customer,
                val["queue"].as_str().unwrap_or("?"),
                val["channel"].as_str().unwrap_or("chat")
            ));
            let ctx: Vec<String> = val["context"]
                .as_object()
                .map(|o| {
                    o.iter().map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_owned))).collect()
                })
                .unwrap_or_default();
            if !ctx.is_empty() {
                say(format!("context: {}", ctx.join(", ")));
            }
            if let Some(s) = val["summary"].as_str() {
                say(format!("summary: {s}"));
            }
            say("transcript:".into());
            if val["transcriptComplete"] == false {
                say(format!(
                    "  (the first {} activities are not shown)",
                    val["transcriptFrom"].as_u64().unwrap_or(1) - 1
                ));
            }
        }
        for t in val["transcript"].as_array().into_iter().flatten() {
            let seq = t["seq"].as_u64().unwrap_or(0);
            if seq > c.last_seq {
                c.last_seq = seq;
                if let Some(l) = line_of(t) {
                    say(format!("  {l}"));
                }
            }
        }
        say(format!("(now talking in #{} with {})", c.number, c.customer));
        st.current = Some(id);
        return;
    }
    match v["name"].as_str() {
        Some("ack") => return,
        Some("error") => {
            say(format!(
                "! {} ({})",
                v["value"]["message"].as_str().unwrap_or("error"),
                v["value"]["code"].as_str().unwrap_or("?")
            ));
            return;
        }
        _ => {}
    }
    let Some(c) = st.convs.get_mut(&id) else { return };
    if let Some(seq) = v["seq"].as_u64() {
        if seq <= c.last_seq {
            return;
        }
        c.last_seq = seq;
    }
    if let Some(l) = line_of(v) {
        say(format!("#{} {l}", c.number));
    }
    if v["type"] == "endOfConversation" {
        c.open = false;
        say(format!("(#{} with {} has ended: removed from your list)", c.number, c.customer));
        if st.current.as_deref() == Some(id.as_str()) {
            st.current = st.convs.iter().filter(|(_, c)| c.open).map(|(id, _)| id.clone()).next_back();
        }
    }
}
