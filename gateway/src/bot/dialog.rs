//! One conversation with the built-in bot: which topic it is in, what it is waiting for,
//! what it has learnt. Sans-IO: it takes what the customer said and returns [`Action`]s.

use std::collections::BTreeMap;

use serde_json::Value;

use super::matcher::{same_answer, utterance};
use super::script::{Node, Script, Topic};

/// What the bot does next.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Say(String),
    /// End the conversation → Transfer to agent.
    Handoff {
        vars: BTreeMap<String, Value>,
        summary: String,
    },
    /// End the conversation (with survey or not).
    End {
        survey: bool,
    },
}

/// A question waiting for its answer.
#[derive(Clone, Debug)]
struct Pending {
    topic: String,
    node: usize,
    tries: u32,
}

/// The state of one conversation with the bot.
#[derive(Clone, Debug, Default)]
pub struct Dialog {
    /// Answers to questions, and `UserName`.
    answers: BTreeMap<String, String>,
    /// The conversation's context variables, for `{Variable}` substitution.
    context: BTreeMap<String, String>,
    pending: Option<Pending>,
    misses: u32,
    done: bool,
    current_topic: Option<String>,
    said: Vec<String>,
}

/// Misses in a row before the bot gives up and escalates.
const MAX_MISSES: u32 = 2;
/// Invalid answers to one question before the bot escalates.
const MAX_TRIES: u32 = 3;
/// Guards against topics that go to each other forever.
const MAX_GOTO: usize = 16;

impl Dialog {
    pub fn new(user_name: &str, context: &Value) -> Dialog {
        let mut d = Dialog::default();
        d.answers.insert("UserName".into(), user_name.to_owned());
        if let Some(obj) = context.as_object() {
            for (k, v) in obj {
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => continue,
                    other => other.to_string(),
                };
                d.context.insert(k.clone(), s);
            }
        }
        d
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The transfer the dialog ended with was refused (the customer's address has as many
    /// conversations with people as it may): the bot talks on, its answers kept, and a
    /// later "agent" transfers again.
    pub fn reopen(&mut self) {
        self.done = false;
        self.pending = None;
        self.misses = 0;
    }

    /// The Greeting topic, when the conversation is assigned to the bot.
    pub fn start(&mut self, script: &Script) -> Vec<Action> {
        let mut out = Vec::new();
        self.run(script, &script.greeting, 0, &mut out, 0);
        out
    }

    /// The customer said something.
    pub fn on_message(&mut self, script: &Script, text: &str) -> Vec<Action> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        self.said.push(text.to_owned());
        let u = utterance(text);
        // "Speak to agent" interrupts anything, a pending question included.
        if script.escalate.triggers.iter().any(|p| p.score(&u).is_some()) {
            self.pending = None;
            self.misses = 0;
            self.run(script, &script.escalate, 0, &mut out, 0);
            return out;
        }
        if let Some(p) = self.pending.take() {
            self.answer(script, p, text, &mut out);
            return out;
        }
        if u.is_empty() {
            // Only greetings and filler ("hi there", "hello?"): greet again, not a miss.
            self.run(script, &script.greeting, 0, &mut out, 0);
            return out;
        }
        let best = std::iter::once(&script.escalate)
            .chain(script.topics.iter())
            .filter_map(|t| t.triggers.iter().filter_map(|p| p.score(&u)).max().map(|s| (s, t)))
            .fold(None::<(usize, &Topic)>, |best, (s, t)| match best {
                Some((bs, _)) if bs >= s => best,
                _ => Some((s, t)),
            });
        match best {
            Some((_, topic)) => {
                self.misses = 0;
                self.run(script, topic, 0, &mut out, 0);
            }
            None => self.miss(script, &mut out),
        }
        out
    }

    /// The caller pressed a key (voice menus).
    pub fn on_dtmf(&mut self, script: &Script, digit: &str) -> Vec<Action> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if let Some(p) = self.pending.take() {
            // A digit answers a question with options by position: 1 is the first option.
            let option = self.question(script, &p).and_then(|(_, _, options)| {
                digit.parse::<usize>().ok().and_then(|i| i.checked_sub(1)).and_then(|i| options.get(i).cloned())
            });
            match option {
                Some(o) => self.answer(script, p, &o, &mut out),
                None => {
                    self.pending = Some(p);
                    self.miss(script, &mut out);
                }
            }
            return out;
        }
        let topic =
            std::iter::once(&script.escalate).chain(script.topics.iter()).find(|t| t.dtmf.as_deref() == Some(digit));
        match topic {
            Some(t) => {
                self.misses = 0;
                self.run(script, t, 0, &mut out, 0);
            }
            None => self.miss(script, &mut out),
        }
        out
    }

    fn miss(&mut self, script: &Script, out: &mut Vec<Action>) {
        self.misses += 1;
        if self.misses >= MAX_MISSES {
            self.misses = 0;
            self.pending = None;
            self.run(script, &script.escalate, 0, out, 0);
        } else {
            let pending = self.pending.take();
            self.run(script, &script.fallback, 0, out, 0);
            if self.pending.is_none() {
                self.pending = pending;
            }
        }
    }

    fn question<'s>(&self, script: &'s Script, p: &Pending) -> Option<(&'s str, &'s str, &'s Vec<String>)> {
        match script.topic(&p.topic)?.nodes.get(p.node)? {
            Node::Question { text, variable, options } => Some((text, variable, options)),
            _ => None,
        }
    }

    fn answer(&mut self, script: &Script, mut p: Pending, text: &str, out: &mut Vec<Action>) {
        let Some((_, variable, options)) = self.question(script, &p) else { return };
        let chosen = if options.is_empty() {
            Some(text.trim().to_owned())
        } else {
            options.iter().find(|o| same_answer(text, o)).cloned()
        };
        match chosen {
            Some(answer) => {
                self.answers.insert(variable.to_owned(), answer);
                let topic = script.topic(&p.topic).cloned();
                if let Some(t) = topic {
                    self.run(script, &t, p.node + 1, out, 0);
                }
            }
            None => {
                p.tries += 1;
                if p.tries >= MAX_TRIES {
                    self.run(script, &script.escalate, 0, out, 0);
                } else {
                    out.push(Action::Say(format!("Please choose one of: {}.", options.join(", "))));
                    self.pending = Some(p);
                }
            }
        }
    }

    fn subst(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find('{') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            match after.find('}') {
                Some(j) => {
                    let key = &after[..j];
                    match self.answers.get(key).or_else(|| self.context.get(key)) {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&rest[i..i + j + 2]),
                    }
                    rest = &after[j + 1..];
                }
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }

    fn run(&mut self, script: &Script, topic: &Topic, from: usize, out: &mut Vec<Action>, depth: usize) {
        self.current_topic = Some(topic.name.clone());
        for (i, node) in topic.nodes.iter().enumerate().skip(from) {
            match node {
                Node::Message(m) => out.push(Action::Say(self.subst(m))),
                Node::Question { text, options, .. } => {
                    let mut q = self.subst(text);
                    if !options.is_empty() && !options.iter().all(|o| q.to_lowercase().contains(&o.to_lowercase())) {
                        q.push_str(&format!(" ({})", options.join(" / ")));
                    }
                    out.push(Action::Say(q));
                    self.pending = Some(Pending { topic: topic.name.clone(), node: i, tries: 0 });
                    return;
                }
                Node::Transfer { vars, summary } => {
                    let mut all: BTreeMap<String, Value> = self
                        .answers
                        .iter()
                        .filter(|(k, _)| *k != "UserName")
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect();
                    for (k, v) in vars {
                        let v = match v {
                            Value::String(s) => Value::String(self.subst(s)),
                            other => other.clone(),
                        };
                        all.insert(k.clone(), v);
                    }
                    let summary = match summary {
                        Some(s) => self.subst(s),
                        None => self.default_summary(&topic.name),
                    };
                    out.push(Action::Handoff { vars: all, summary });
                    self.done = true;
                    return;
                }
                Node::End { survey } => {
                    out.push(Action::End { survey: *survey });
                    self.done = true;
                    return;
                }
                Node::Goto(name) => {
                    if depth >= MAX_GOTO {
                        return;
                    }
                    if let Some(t) = script.topic(name).cloned() {
                        self.run(script, &t, 0, out, depth + 1);
                    }
                    return;
                }
            }
        }
    }

    fn default_summary(&self, topic: &str) -> String {
        let mut s = format!("Topic: {topic}.");
        let answers: Vec<String> =
            self.answers.iter().filter(|(k, _)| *k != "UserName").map(|(k, v)| format!("{k}: {v}")).collect();
        if !answers.is_empty() {
            s.push_str(&format!(" {}.", answers.join(", ")));
        }
        if let Some(last) = self.said.last() {
            s.push_str(&format!(" Customer said: \"{last}\""));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bot::script::{RawTopic, build};

    fn script(toml_topics: &str) -> Script {
        #[derive(serde::Deserialize)]
        struct T {
            topics: Vec<RawTopic>,
        }
        let t: T = toml::from_str(toml_topics).unwrap();
        let mut problems = Vec::new();
        let s = build("b", &t.topics, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        s
    }

    const MENU: &str = r#"
[[topics]]
name = "Cards"
triggers = ["card"]
dtmf = "1"
nodes = [ { message = "Cards." }, { goto = "Loans" } ]
[[topics]]
name = "Loans"
triggers = ["loan"]
dtmf = "2"
nodes = [ { question = "Which?", variable = "Kind", options = ["new", "existing"] }, { transfer = { Topic = "Loan" } } ]
"#;

    #[test]
    fn dtmf_starts_topics_and_answers_questions_by_position() {
        let s = script(MENU);
        let mut d = Dialog::new("Ann", &Value::Null);
        assert_eq!(
            d.start(&s),
            vec![Action::Say("Hello Ann, I'm a virtual assistant. How can I help you today?".into())]
        );
        // Goto carries on into the next topic.
        assert_eq!(
            d.on_dtmf(&s, "1"),
            vec![Action::Say("Cards.".into()), Action::Say("Which? (new / existing)".into())]
        );
        let out = d.on_dtmf(&s, "2");
        let Some(Action::Handoff { vars, .. }) = out.last() else { panic!("{out:?}") };
        assert_eq!(vars.get("Kind"), Some(&Value::String("existing".into())));
        assert_eq!(vars.get("Topic"), Some(&Value::String("Loan".into())));
        assert!(d.is_done());
        assert!(d.on_message(&s, "hello?").is_empty());
    }

    #[test]
    fn unknown_digits_are_misses_and_zero_escalates() {
        let s = script(MENU);
        let mut d = Dialog::new("Ann", &Value::Null);
        d.start(&s);
        assert_eq!(d.on_dtmf(&s, "9").len(), 1); // fallback
        let out = d.on_dtmf(&s, "0");
        assert!(matches!(out.last(), Some(Action::Handoff { .. })), "{out:?}");
    }
}
