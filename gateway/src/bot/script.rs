//! The built-in bot's script: topics, their trigger phrases and their nodes, as written in
//! the configuration (`[[bots.topics]]`), checked into a [`Script`].
//!
//! Modelled on Power Virtual Agents: a topic has trigger phrases and a list of nodes —
//! message, question (the answer stored in a variable, optionally one of a set of options),
//! go to another topic, and the two actions of **End the conversation**: transfer to agent
//! (with context variables) and end with survey. Three system topics exist in every script:
//! Greeting (on start), Escalate ("speak to agent" and the like; transfers) and Fallback
//! ("I didn't get that"; after two misses in a row it escalates). A topic with
//! `system = "greeting" | "escalate" | "fallback"` replaces the default one.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use super::matcher::Phrase;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTopic {
    pub name: String,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub triggers: Vec<String>,
    /// A DTMF digit (voice menus) that triggers the topic.
    #[serde(default)]
    pub dtmf: Option<String>,
    #[serde(default)]
    pub nodes: Vec<RawNode>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub message: Option<String>,
    pub question: Option<String>,
    pub variable: Option<String>,
    pub options: Option<Vec<String>>,
    /// End the conversation → Transfer to agent, with these context variables.
    pub transfer: Option<BTreeMap<String, toml::Value>>,
    /// The summary the agent sees (with `{Variable}` substitution).
    pub summary: Option<String>,
    /// End the conversation → `"survey"` (End with survey) or `"conversation"` (no survey).
    pub end: Option<String>,
    /// Go to another topic.
    pub goto: Option<String>,
}

/// A checked node.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Message(String),
    Question { text: String, variable: String, options: Vec<String> },
    Transfer { vars: BTreeMap<String, serde_json::Value>, summary: Option<String> },
    End { survey: bool },
    Goto(String),
}

#[derive(Clone, Debug)]
pub struct Topic {
    pub name: String,
    pub triggers: Vec<Phrase>,
    pub dtmf: Option<String>,
    pub nodes: Vec<Node>,
}

/// A checked script: user topics plus the three system topics.
#[derive(Clone, Debug)]
pub struct Script {
    pub topics: Vec<Topic>,
    pub greeting: Topic,
    pub escalate: Topic,
    pub fallback: Topic,
}

impl Script {
    pub fn topic(&self, name: &str) -> Option<&Topic> {
        [&self.greeting, &self.escalate, &self.fallback]
            .into_iter()
            .chain(self.topics.iter())
            .find(|t| t.name.eq_ignore_ascii_case(name))
    }
}

fn default_greeting() -> Topic {
    Topic {
        name: "Greeting".into(),
        triggers: Vec::new(),
        dtmf: None,
        nodes: vec![Node::Message("Hello {UserName}, I'm a virtual assistant. How can I help you today?".into())],
    }
}

pub const ESCALATE_TRIGGERS: &[&str] = &[
    "speak to agent",
    "talk to agent",
    "agent please",
    "talk to a person",
    "speak to a person",
    "talk to someone",
    "speak to someone",
    "human",
    "real person",
    "representative",
    "operator",
    "live agent",
    "customer service",
];

fn default_escalate() -> Topic {
    Topic {
        name: "Escalate".into(),
        triggers: ESCALATE_TRIGGERS.iter().map(|t| Phrase::new(t)).collect(),
        dtmf: Some("0".into()),
        nodes: vec![
            Node::Message("Let me connect you with an agent.".into()),
            Node::Transfer { vars: BTreeMap::new(), summary: None },
        ],
    }
}

fn default_fallback() -> Topic {
    Topic {
        name: "Fallback".into(),
        triggers: Vec::new(),
        dtmf: None,
        nodes: vec![Node::Message("Sorry, I didn't get that. Could you say it another way?".into())],
    }
}

fn toml_to_json(v: &toml::Value) -> Option<serde_json::Value> {
    Some(match v {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map(serde_json::Value::Number)?,
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        _ => return None,
    })
}

/// Checks a bot's topics, pushing one line per problem.
pub fn build(bot: &str, raw: &[RawTopic], problems: &mut Vec<String>) -> Script {
    let mut script = Script {
        topics: Vec::new(),
        greeting: default_greeting(),
        escalate: default_escalate(),
        fallback: default_fallback(),
    };
    let mut names = HashSet::new();
    let mut gotos = Vec::new();
    let mut digits = HashSet::new();
    for t in raw {
        let item = format!("bot {bot:?} topic {:?}", t.name);
        if t.name.trim().is_empty() {
            problems.push(format!("bot {bot:?}: a topic has an empty name"));
        }
        if !names.insert(t.name.to_lowercase()) {
            problems.push(format!("{item}: duplicate topic name"));
        }
        let triggers: Vec<Phrase> = t.triggers.iter().map(|p| Phrase::new(p)).collect();
        for (p, text) in triggers.iter().zip(&t.triggers) {
            if p.is_empty() {
                problems.push(format!("{item}: trigger {text:?} has no words to match"));
            }
        }
        if let Some(d) = &t.dtmf {
            if d.len() != 1 || !"0123456789*#".contains(d.as_str()) {
                problems.push(format!("{item}: dtmf must be one of 0-9, * or #, not {d:?}"));
            } else if !digits.insert(d.clone()) {
                problems.push(format!("{item}: dtmf {d:?} is used by another topic"));
            }
        }
        if t.nodes.is_empty() {
            problems.push(format!("{item}: has no nodes"));
        }
        let mut nodes = Vec::new();
        for (i, n) in t.nodes.iter().enumerate() {
            let at = format!("{item} node {}", i + 1);
            let kinds =
                [n.message.is_some(), n.question.is_some(), n.transfer.is_some(), n.end.is_some(), n.goto.is_some()];
            if kinds.iter().filter(|k| **k).count() != 1 {
                problems.push(format!("{at}: needs exactly one of message, question, transfer, end, goto"));
                continue;
            }
            if (n.variable.is_some() || n.options.is_some()) && n.question.is_none() {
                problems.push(format!("{at}: variable and options belong to a question"));
            }
            if n.summary.is_some() && n.transfer.is_none() {
                problems.push(format!("{at}: summary belongs to a transfer"));
            }
            let node = if let Some(m) = &n.message {
                Node::Message(m.clone())
            } else if let Some(q) = &n.question {
                let Some(var) = n.variable.clone().filter(|v| !v.is_empty()) else {
                    problems.push(format!("{at}: a question needs a variable to store the answer"));
                    continue;
                };
                let options = n.options.clone().unwrap_or_default();
                if n.options.is_some() && options.is_empty() {
                    problems.push(format!("{at}: options is empty"));
                }
                Node::Question { text: q.clone(), variable: var, options }
            } else if let Some(vars) = &n.transfer {
                let mut out = BTreeMap::new();
                for (k, v) in vars {
                    match toml_to_json(v) {
                        Some(j) => {
                            out.insert(k.clone(), j);
                        }
                        None => {
                            problems.push(format!("{at}: transfer variable {k:?} must be text, a number or a bool"))
                        }
                    }
                }
                Node::Transfer { vars: out, summary: n.summary.clone() }
            } else if let Some(e) = &n.end {
                match e.as_str() {
                    "survey" => Node::End { survey: true },
                    "conversation" => Node::End { survey: false },
                    other => {
                        problems.push(format!("{at}: end must be \"survey\" or \"conversation\", not {other:?}"));
                        continue;
                    }
                }
            } else {
                let target = n.goto.clone().unwrap_or_default();
                gotos.push((at, target.clone()));
                Node::Goto(target)
            };
            nodes.push(node);
        }
        let topic = Topic { name: t.name.clone(), triggers, dtmf: t.dtmf.clone(), nodes };
        match t.system.as_deref() {
            None => {
                if topic.triggers.is_empty() && topic.dtmf.is_none() {
                    problems.push(format!("{item}: needs trigger phrases (or dtmf) to ever start"));
                }
                script.topics.push(topic);
            }
            Some("greeting") => script.greeting = topic,
            Some("fallback") => script.fallback = topic,
            Some("escalate") => {
                let mut topic = topic;
                if topic.triggers.is_empty() {
                    topic.triggers = default_escalate().triggers;
                }
                if topic.dtmf.is_none() && !digits.contains("0") {
                    topic.dtmf = Some("0".into());
                }
                if !topic.nodes.iter().any(|n| matches!(n, Node::Transfer { .. })) {
                    problems.push(format!("{item}: the escalate topic must transfer to an agent"));
                }
                script.escalate = topic;
            }
            Some(other) => {
                problems.push(format!("{item}: system must be greeting, escalate or fallback, not {other:?}"));
            }
        }
    }
    for (at, target) in gotos {
        if script.topic(&target).is_none() {
            problems.push(format!("{at}: goto unknown topic {target:?}"));
        }
    }
    script
}
