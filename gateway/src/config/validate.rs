//! Checking a configuration: every semantic problem of the raw structs, collected as one
//! line each naming the item, so `check-config` shows them all at once. Only a
//! configuration with no problems becomes a [`Config`]. Pure: what it names outside itself
//! (environment variables, hold-audio files) comes through [`Resolve`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;

use super::condition::{self, Op};
use super::*;
use crate::context::VarType;

pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// A checked configuration and its warnings.
#[derive(Debug)]
pub struct Checked {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// Every problem found, one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

fn resolve_secret(
    item: &str,
    secret: Option<String>,
    secret_env: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<Secret> {
    match (secret, secret_env) {
        (Some(_), Some(_)) => {
            problems.push(format!("{item}: set either secret or secret_env, not both"));
            None
        }
        (Some(s), None) if s.is_empty() => {
            problems.push(format!("{item}: secret is empty"));
            None
        }
        (Some(s), None) => Some(Secret(s)),
        (None, Some(var)) => match env(&var).filter(|v| !v.is_empty()) {
            Some(v) => Some(Secret(v)),
            None => {
                warnings.push(format!("{item}: environment variable {var} (secret_env) is not set; it cannot sign in"));
                None
            }
        },
        (None, None) => {
            problems.push(format!("{item}: no secret: set secret_env or secret"));
            None
        }
    }
}

/// The members found so far, for the queues' checks.
struct Members<'a> {
    kind: HashMap<&'a str, &'static str>,
    bots: Vec<Bot>,
    agents: Vec<Agent>,
}

/// A check in progress: what is wrong so far, and what is only worth a warning.
struct Check<'r> {
    problems: Vec<String>,
    warnings: Vec<String>,
    resolve: &'r dyn Resolve,
}

/// Checks raw structs; every problem is reported, not just the first.
pub(super) fn validate(raw: RawConfig, resolve: &dyn Resolve) -> Result<Checked, ConfigError> {
    let mut c = Check { problems: Vec::new(), warnings: Vec::new(), resolve };
    let admin_token = c.server(&raw.server);
    let members = c.members(&raw);
    let queue_names = c.queues(&raw, &members);
    let mut ws_names = HashSet::new();
    let workstreams: Vec<Workstream> =
        raw.workstreams.iter().map(|w| c.workstream(&raw, w, &queue_names, &mut ws_names)).collect();
    if raw.workstreams.is_empty() {
        c.warnings.push(
            "no workstreams: every conversation is refused (a chat's session.start, a call and Direct Line each name one)"
                .to_owned(),
        );
    }
    let directline = raw.directline.as_ref().and_then(|d| c.directline(d, &workstreams));
    if let Some(cl) = &raw.cluster {
        c.cluster(cl);
    }
    if !c.problems.is_empty() {
        return Err(ConfigError(c.problems));
    }
    let Members { bots, agents, .. } = members;
    let queues =
        raw.queues.into_iter().map(|q| Queue { name: q.name, assignment: q.assignment, members: q.members }).collect();
    Ok(Checked {
        config: Config {
            server: raw.server,
            admin_token,
            workstreams,
            queues,
            bots,
            agents,
            directline,
            cluster: raw.cluster,
            source: Default::default(),
        },
        warnings: c.warnings,
    })
}

impl<'a> Check<'_> {
    /// `[server]`'s limits, and the admin token.
    fn server(&mut self, s: &ServerConfig) -> Option<Secret> {
        let resolve = self.resolve;
        let env = |name: &str| resolve.env(name);
        if s.listen.parse::<SocketAddr>().is_err() {
            self.problems.push(format!("server: listen {:?} is not an address like 127.0.0.1:8080", s.listen));
        }
        if let Some(u) = &s.public_url
            && (!(u.starts_with("http://") || u.starts_with("https://"))
                || u.trim_end_matches('/').matches('/').count() > 2)
        {
            self.problems.push(format!("server: public_url {u:?} must be http(s)://host[:port], without a path"));
        }
        for entry in &s.trusted_proxies {
            if super::proxy_range(entry).is_none() {
                let shown: String = entry.chars().take(64).collect();
                self.problems.push(format!(
                    "server: trusted_proxies entry {shown:?} is not an address or a CIDR range (such as 10.0.0.7 or 10.0.0.0/8)"
                ));
            }
        }
        if s.max_frame_bytes < 1024 {
            self.problems.push("server: max_frame_bytes must be at least 1024".into());
        }
        if s.outbound_queue < 16 {
            self.problems.push("server: outbound_queue must be at least 16".into());
        }
        // A page must hold the largest single activity (a full text frame, escaped).
        if s.transcript_page_bytes < 2 * s.max_frame_bytes {
            self.problems.push("server: transcript_page_bytes must be at least twice max_frame_bytes".into());
        }
        if s.max_conversation_bytes < s.transcript_page_bytes {
            self.problems.push("server: max_conversation_bytes must be at least transcript_page_bytes".into());
        }
        if s.max_calls == Some(0) {
            self.problems.push("server: max_calls must be at least 1 (leave it out for no fixed cap)".into());
        }
        if s.max_connections == 0 {
            self.problems.push("server: max_connections must be at least 1".into());
        }
        if s.max_sockets < s.max_connections {
            self.problems.push(format!(
                "server: max_sockets ({}) must be at least max_connections ({}): every WebSocket is a socket",
                s.max_sockets, s.max_connections
            ));
        }
        // A day at most: a deadline this far ahead is added to the clock, and a longer one is no
        // protection anyway.
        for (name, secs) in
            [("request_timeout_secs", s.request_timeout_secs), ("token_lockout_secs", s.token_lockout_secs)]
        {
            if !(1..=86_400).contains(&secs) {
                self.problems.push(format!("server: {name} must be from 1 to 86400"));
            }
        }
        for (name, n) in [("token_failures", s.token_failures), ("token_address_failures", s.token_address_failures)] {
            if n == 0 {
                self.problems.push(format!("server: {name} must be at least 1"));
            }
        }
        match (&s.admin_token, &s.admin_token_env) {
            (Some(t), _) => Some(Secret(t.clone())),
            (None, Some(var)) => env(var).filter(|v| !v.is_empty()).map(Secret),
            (None, None) => None,
        }
    }

    /// `[cluster]`: URLs NATS can dial, and names JetStream and subjects accept.
    fn cluster(&mut self, c: &super::ClusterConfig) {
        let urls = c.nats.list();
        if urls.is_empty() {
            self.problems.push("cluster: nats must name at least one server, e.g. \"nats://127.0.0.1:4222\"".into());
        }
        for u in &urls {
            if !(u.starts_with("nats://") || u.starts_with("tls://")) || u.len() <= "nats://".len() {
                self.problems.push(format!("cluster: nats {u:?} must be nats://host:port (or tls://host:port)"));
            }
        }
        let token = |s: &str| !s.is_empty() && s.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
        if let Some(n) = &c.node
            && !token(n)
        {
            self.problems.push(format!("cluster: node {n:?} must be letters, digits, '-' or '_'"));
        }
        for (name, v) in [("stream", &c.stream), ("bucket", &c.bucket)] {
            if !token(v) {
                self.problems.push(format!("cluster: {name} {v:?} must be letters, digits, '-' or '_'"));
            }
        }
        if !matches!(c.replicas, 1..=5) {
            self.problems.push("cluster: replicas must be from 1 to 5".into());
        }
        if !(2..=300).contains(&c.lease_secs) {
            self.problems.push("cluster: lease_secs must be from 2 to 300".into());
        }
    }

    /// `[directline]`: a secret that is set (without one no client can connect, so an
    /// unset `secret_env` is a problem here, not a warning) and a chat workstream.
    fn directline(&mut self, d: &RawDirectLine, workstreams: &[Workstream]) -> Option<DirectLine> {
        let resolve = self.resolve;
        let env = |name: &str| resolve.env(name);
        let mut unset = Vec::new();
        let secret =
            resolve_secret("directline", d.secret.clone(), d.secret_env.clone(), &env, &mut self.problems, &mut unset);
        if let Some(var) = &d.secret_env
            && !unset.is_empty()
        {
            self.problems.push(format!("directline: environment variable {var} (secret_env) is not set"));
        }
        match workstreams.iter().find(|w| w.name == d.workstream) {
            None => self.problems.push(format!("directline: unknown workstream {:?}", d.workstream)),
            Some(w) if w.channel != Channel::Chat => {
                self.problems.push(format!("directline: workstream {:?} is a voice workstream", d.workstream))
            }
            Some(_) => {}
        }
        Some(DirectLine { secret: secret?, workstream: d.workstream.clone() })
    }

    /// Bots and agents: bot names and agent ids share one namespace, since queues list both.
    fn members(&mut self, raw: &'a RawConfig) -> Members<'a> {
        let resolve = self.resolve;
        let env = |name: &str| resolve.env(name);
        let mut member_kind: HashMap<&str, &'static str> = HashMap::new();
        let mut app_ids: HashMap<&str, &str> = HashMap::new();
        let mut bots = Vec::new();
        for b in &raw.bots {
            let item = format!("bot {:?}", b.name);
            if b.name.is_empty() {
                self.problems.push("bot with an empty name".into());
            }
            if let Some(prev) = member_kind.insert(&b.name, "a bot") {
                self.problems.push(format!("{item}: duplicate name (already used by {prev})"));
            }
            if b.app_id.is_empty() {
                self.problems.push(format!("{item}: app_id is empty"));
            } else if let Some(other) = app_ids.insert(&b.app_id, &b.name) {
                self.problems.push(format!("{item}: app_id {:?} is also used by bot {other:?}", b.app_id));
            }
            if b.capacity == 0 {
                self.problems.push(format!("{item}: capacity must be at least 1"));
            }
            // A built-in bot runs inside the gateway and never signs in, so it needs no secret.
            let secret = if b.builtin && b.secret.is_none() && b.secret_env.is_none() {
                None
            } else {
                resolve_secret(
                    &item,
                    b.secret.clone(),
                    b.secret_env.clone(),
                    &env,
                    &mut self.problems,
                    &mut self.warnings,
                )
            };
            let builtin = if b.builtin {
                if b.endpoint.is_some() {
                    self.problems.push(format!("{item}: a built-in bot has no endpoint"));
                }
                Some(std::sync::Arc::new(crate::bot::script::build(&b.name, &b.topics, &mut self.problems)))
            } else {
                if !b.topics.is_empty() {
                    self.problems.push(format!("{item}: topics belong to a built-in bot (set builtin = true)"));
                }
                None
            };
            let auth = match b.auth.as_deref() {
                None | Some("jwt") => BotAuth::Jwt,
                Some("none") => BotAuth::None,
                Some(other) => {
                    self.problems.push(format!("{item}: auth {other:?} is not \"jwt\" or \"none\""));
                    BotAuth::Jwt
                }
            };
            if let Some(url) = &b.endpoint
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                self.problems.push(format!("{item}: endpoint {url:?} is not an http:// or https:// URL"));
            }
            if b.voice && b.endpoint.is_some() {
                self.problems.push(format!(
                    "{item}: a Bot Framework bot (endpoint) takes no audio, so it cannot be voice-enabled"
                ));
            }
            if b.auth.is_some() && b.endpoint.is_none() {
                self.problems.push(format!("{item}: auth applies to a Bot Framework bot (one with an endpoint)"));
            } else if auth == BotAuth::None {
                self.warnings.push(format!(
                    "{item}: auth = \"none\": its calls are not signed and the bot's calls are accepted without a token (local development only)"
                ));
            }
            bots.push(Bot {
                name: b.name.clone(),
                app_id: b.app_id.clone(),
                secret,
                capacity: b.capacity,
                voice: b.voice,
                endpoint: b.endpoint.clone(),
                auth,
                builtin,
            });
        }
        let mut agents = Vec::new();
        for a in &raw.agents {
            let item = format!("agent {:?}", a.id);
            if a.id.is_empty() {
                self.problems.push("agent with an empty id".into());
            }
            if let Some(prev) = member_kind.insert(&a.id, "an agent") {
                self.problems.push(format!("{item}: duplicate id (already used by {prev})"));
            }
            if app_ids.contains_key(a.id.as_str()) {
                self.problems.push(format!("{item}: id is also a bot's app_id; client ids must be unique"));
            }
            if a.capacity == 0 {
                self.problems.push(format!("{item}: capacity must be at least 1"));
            }
            let secret = resolve_secret(
                &item,
                a.secret.clone(),
                a.secret_env.clone(),
                &env,
                &mut self.problems,
                &mut self.warnings,
            );
            agents.push(Agent {
                id: a.id.clone(),
                name: a.name.clone().unwrap_or_else(|| a.id.clone()),
                secret,
                capacity: a.capacity,
            });
        }

        Members { kind: member_kind, bots, agents }
    }

    /// Queues: known members, each once; the seed's capacity advice for bots. Returns the
    /// queue names.
    fn queues(&mut self, raw: &'a RawConfig, m: &Members<'a>) -> HashSet<&'a str> {
        let (member_kind, bots, agents) = (&m.kind, &m.bots, &m.agents);
        let mut queue_names = HashSet::new();
        for q in &raw.queues {
            let item = format!("queue {:?}", q.name);
            if !queue_names.insert(q.name.as_str()) {
                self.problems.push(format!("{item}: duplicate name"));
            }
            let mut seen = HashSet::new();
            for m in &q.members {
                if !member_kind.contains_key(m.as_str()) {
                    self.problems.push(format!("{item}: unknown member {m:?}"));
                } else if !seen.insert(m.as_str()) {
                    self.problems.push(format!("{item}: member {m:?} is listed twice"));
                }
            }
            if q.members.is_empty() {
                self.warnings.push(format!("{item}: has no members; conversations routed here will wait"));
            }
            // The seed: "you must ensure that the bot user has the highest capacity among all
            // users in the queue" so the bot is the first recipient.
            let capacity = |m: &str| {
                bots.iter()
                    .find(|b| b.name == m)
                    .map(|b| b.capacity)
                    .or_else(|| agents.iter().find(|a| a.id == m).map(|a| a.capacity))
            };
            let best_agent = q
                .members
                .iter()
                .filter(|m| member_kind.get(m.as_str()) == Some(&"an agent"))
                .filter_map(|m| capacity(m).map(|c| (c, m)))
                .max_by_key(|(c, _)| *c);
            for m in q.members.iter().filter(|m| member_kind.get(m.as_str()) == Some(&"a bot")) {
                if let (Some(bc), Some((ac, agent))) = (capacity(m), best_agent)
                    && bc <= ac
                {
                    self.warnings.push(format!(
                    "{item}: bot {m:?} (capacity {bc}) does not have the highest capacity (agent {agent:?} has {ac})"
                ));
                }
            }
        }

        queue_names
    }

    /// One workstream: its variables, its rules (parsed, checked against the variables and
    /// the queues), its hold audio (decoded now, once) and the voice warnings.
    fn workstream(
        &mut self,
        raw: &RawConfig,
        w: &RawWorkstream,
        queue_names: &HashSet<&str>,
        ws_names: &mut HashSet<String>,
    ) -> Workstream {
        let resolve = self.resolve;
        let item = format!("workstream {:?}", w.name);
        if !ws_names.insert(w.name.clone()) {
            self.problems.push(format!("{item}: duplicate name"));
        }
        if !queue_names.contains(w.fallback_queue.as_str()) {
            self.problems.push(format!("{item}: fallback_queue: unknown queue {:?}", w.fallback_queue));
        }
        let mut vars: HashMap<&str, VarType> = HashMap::new();
        for v in &w.context_variables {
            if v.name.is_empty() || !v.name.chars().all(|c| c.is_alphanumeric() || "_.-".contains(c)) {
                self.problems.push(format!(
                    "{item}: context variable {:?}: names use letters, digits, '_', '.' and '-'",
                    v.name
                ));
            }
            if vars.insert(&v.name, v.ty).is_some() {
                self.problems.push(format!("{item}: context variable {:?} is declared twice", v.name));
            }
        }
        let mut rules = Vec::new();
        let mut rule_names = HashSet::new();
        for r in &w.rules {
            let item = format!("workstream {:?} rule {:?}", w.name, r.name);
            if !rule_names.insert(r.name.as_str()) {
                self.problems.push(format!("{item}: duplicate rule name"));
            }
            if !queue_names.contains(r.queue.as_str()) {
                self.problems.push(format!("{item}: unknown queue {:?}", r.queue));
            }
            match condition::parse(&r.when) {
                Err(e) => self.problems.push(format!("{item}: when: {e}")),
                Ok(expr) => {
                    for t in expr.tests() {
                        let Some(ty) = vars.get(t.var.as_str()) else {
                            self.problems.push(format!(
                                "{item}: when: unknown variable {:?} at column {} (declare it in context_variables)",
                                t.var, t.column
                            ));
                            continue;
                        };
                        if let Op::Compare(op, lit) = &t.op {
                            if !op.applies_to(*ty) {
                                self.problems.push(format!(
                                    "{item}: when: \"{op}\" does not apply to {ty} variable {:?} at column {}",
                                    t.var, t.column
                                ));
                            } else if lit.var_type() != *ty {
                                self.problems.push(format!(
                                    "{item}: when: {ty} variable {:?} compared with a {} literal at column {}",
                                    t.var,
                                    lit.var_type(),
                                    t.column
                                ));
                            }
                        }
                    }
                    rules.push(Rule {
                        name: r.name.clone(),
                        when_src: r.when.clone(),
                        when: expr,
                        queue: r.queue.clone(),
                    });
                }
            }
        }
        // Decoded here, once: whatever would make the prompt unplayable is a problem now,
        // not an error on every call.
        let hold_audio = match &w.hold_audio {
            None => None,
            Some(p) => match resolve.hold_prompt(p) {
                Ok(_) if w.channel != Channel::Voice => {
                    self.warnings.push(format!("{item}: hold_audio is only played on voice workstreams"));
                    None
                }
                Ok(prompt) => Some(std::sync::Arc::new(prompt)),
                Err(e) => {
                    self.problems.push(format!("{item}: hold_audio {}: {e}", p.display()));
                    None
                }
            },
        };
        if w.channel == Channel::Voice {
            let mut qs: Vec<&str> = w.rules.iter().map(|r| r.queue.as_str()).collect();
            qs.push(&w.fallback_queue);
            let has_voice_bot = raw
                .queues
                .iter()
                .filter(|q| qs.contains(&q.name.as_str()))
                .flat_map(|q| &q.members)
                .any(|m| raw.bots.iter().any(|b| &b.name == m && b.voice));
            if !has_voice_bot {
                self.warnings.push(format!("{item}: voice workstream whose queues hold no voice-enabled bot"));
            }
            // Only agents and voice-enabled bots get calls: a queue of chat bots never
            // assigns one (a queue with no members at all is warned about above).
            for q in raw.queues.iter().filter(|q| qs.contains(&q.name.as_str()) && !q.members.is_empty()) {
                let takes_calls = q
                    .members
                    .iter()
                    .any(|m| raw.agents.iter().any(|a| &a.id == m) || raw.bots.iter().any(|b| &b.name == m && b.voice));
                if !takes_calls {
                    self.warnings.push(format!(
                        "{item}: queue {:?} has no member that takes calls (an agent or a voice-enabled bot); calls routed there wait",
                        q.name
                    ));
                }
            }
        }
        Workstream {
            name: w.name.clone(),
            channel: w.channel,
            fallback_queue: w.fallback_queue.clone(),
            variables: w.context_variables.clone(),
            rules,
            hold_audio,
        }
    }
}

impl Checked {
    /// The one-line summary `check-config` prints.
    pub fn summary(&self) -> String {
        let c = &self.config;
        let rules: usize = c.workstreams.iter().map(|w| w.rules.len()).sum();
        format!(
            "ok: {} workstream(s), {} rule(s), {} queue(s), {} bot(s), {} agent(s), {} warning(s)",
            c.workstreams.len(),
            rules,
            c.queues.len(),
            c.bots.len(),
            c.agents.len(),
            self.warnings.len()
        )
    }
}
