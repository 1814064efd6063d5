//! Configuration: the TOML file of SPEC §2, parsed, checked and resolved. This file holds
//! the model (the raw structs serde reads, and the checked [`Config`]); `validate.rs` checks
//! it; `condition.rs` is the `when` grammar.
//!
//! Two steps. serde turns the text into raw structs (a syntax or shape error stops there,
//! with toml's line and column). Then `validate` walks the raw structs and collects *every*
//! semantic problem as one line naming the item, so `check-config` can show them all at
//! once. Only a configuration with no problems becomes a [`Config`], whose rules are parsed
//! and whose references are known to resolve. Nothing here reads a file or the
//! environment: `crate::load` resolves what a configuration names ([`Resolve`]).

pub mod condition;
mod validate;

pub use validate::{Checked, ConfigError};
use validate::{line_col, validate};

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::context::{Context, VarType};
use condition::Expr;

/// The built-in default configuration: the seed's sample (ChatWorkStream with BotQueue,
/// CreditCardQueue and HomeLoanQueue) plus a fallback queue and demo agents.
pub const DEFAULT_TOML: &str = include_str!("../../../examples/switchboard.toml");

/// Default text frame limit: 28 KB, as Omnichannel's chat limit.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 28 * 1024;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    workstreams: Vec<RawWorkstream>,
    #[serde(default)]
    queues: Vec<RawQueue>,
    #[serde(default)]
    bots: Vec<RawBot>,
    #[serde(default)]
    agents: Vec<RawAgent>,
    directline: Option<RawDirectLine>,
    cluster: Option<ClusterConfig>,
}

/// `[cluster]`: several nodes serving one contact centre over NATS JetStream (SPEC §8).
/// Absent: the gateway runs alone on its embedded store.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS server URL(s), `nats://host:port`; JetStream must be enabled there.
    pub nats: NatsUrls,
    /// This node's name, unique in the cluster; unset: the host name.
    pub node: Option<String>,
    /// The JetStream stream that holds the conversation log; its name is also the first
    /// token of every subject the cluster uses.
    #[serde(default = "default_cluster_stream")]
    pub stream: String,
    /// The JetStream key-value bucket that holds the routing leader's lease.
    #[serde(default = "default_cluster_bucket")]
    pub bucket: String,
    /// Copies JetStream keeps of the stream and the bucket (1, or 3/5 on a NATS cluster).
    #[serde(default = "default_cluster_replicas")]
    pub replicas: usize,
    /// How long the leader's lease lasts unrenewed: after a leader dies, the others wait
    /// this long before one of them takes over.
    #[serde(default = "default_cluster_lease_secs")]
    pub lease_secs: u64,
}

/// One URL or a list of them.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum NatsUrls {
    One(String),
    Many(Vec<String>),
}

impl NatsUrls {
    pub fn list(&self) -> Vec<String> {
        match self {
            NatsUrls::One(u) => vec![u.clone()],
            NatsUrls::Many(v) => v.clone(),
        }
    }
}

fn default_cluster_stream() -> String {
    "switchboard".into()
}

fn default_cluster_bucket() -> String {
    "switchboard-lease".into()
}

fn default_cluster_replicas() -> usize {
    1
}

fn default_cluster_lease_secs() -> u64 {
    5
}

/// `[directline]`: Direct Line 3.0 for customers (SPEC §6).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectLine {
    secret_env: Option<String>,
    secret: Option<String>,
    workstream: String,
}

/// `[server]`: where to listen and the limits of the wire protocol.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    pub data_dir: PathBuf,
    pub admin_token_env: Option<String>,
    pub admin_token: Option<String>,
    /// Largest text frame accepted; a larger one closes the connection with 1009.
    pub max_frame_bytes: usize,
    /// Frames queued toward one connection before it counts as a slow consumer and is closed.
    pub outbound_queue: usize,
    /// The most a conversation's transcript may hold (bytes of its activities' JSON); past
    /// it, client activities are refused with `too_large` (the conversation can still end).
    pub max_conversation_bytes: usize,
    /// The most transcript a holder's `conversation.assigned` carries (the newest part);
    /// older pages come with `transcript.request`.
    pub transcript_page_bytes: usize,
    /// Lifetime of bot and agent access tokens.
    pub token_ttl_secs: u64,
    /// Lifetime of a customer's conversation token (used to resume).
    pub customer_token_ttl_secs: u64,
    /// Time a client has to send its first frame after the upgrade.
    pub handshake_timeout_secs: u64,
    /// `sqlite` (durable, under `data_dir`) or `memory` (nothing survives a restart).
    pub store: StoreKind,
    /// `full`: a committed activity survives a machine crash; `normal`: a process crash.
    pub sync: SyncMode,
    /// How long a disconnected agent keeps its conversations before they are re-queued at
    /// the front of their queue.
    pub agent_grace_secs: u64,
    /// How long a disconnected bot keeps its conversations before they go to people.
    pub bot_grace_secs: u64,
    /// A bot that leaves a customer's message unanswered this long loses the conversation
    /// to people.
    pub bot_reply_timeout_secs: u64,
    /// How long a customer who dropped may resume before the conversation is closed.
    pub customer_resume_secs: u64,
    /// Conversations with no activity this long are closed.
    pub idle_close_secs: u64,
    /// How long a closed conversation stays in memory (for its survey answer).
    pub closed_retention_secs: u64,
    /// Frames per second a customer connection may send (sustained), and its burst.
    pub customer_rate: f64,
    pub customer_burst: u32,
    /// Frames per second a bot or agent connection may send, and its burst.
    pub member_rate: f64,
    pub member_burst: u32,
    /// WebSocket connections open at once, at most; more are refused with 503.
    pub max_connections: usize,
    /// Voice calls in progress at once, at most; one more is refused at `session.start`
    /// with `unavailable`. Unset: no fixed cap (the pacer still refuses calls while it
    /// falls behind, see `hub/pacer.rs`).
    pub max_calls: Option<usize>,
    /// A connection that sends nothing (not even a pong to our pings) this long is closed.
    pub idle_timeout_secs: u64,
    /// Time an HTTP connection has to send a complete request head, from when it opens or
    /// from its previous response (keep-alive); then it is closed.
    pub request_timeout_secs: u64,
    /// Sockets open at once, at most (HTTP, WebSocket, idle or half-sent alike); one more
    /// is closed as soon as it is accepted. At least `max_connections`.
    pub max_sockets: usize,
    /// Wrong secrets for one client id within `token_lockout_secs` before `/v1/token`
    /// refuses that client id (429) for `token_lockout_secs`.
    pub token_failures: u32,
    /// The same from one source address (an IPv6 address counts by its /64).
    pub token_address_failures: u32,
    /// Open conversations started over `/v1/chat` from one source address (an IPv6
    /// address counts by its /64) at once; one more `session.start` is refused with
    /// `rate_limited`. 0: no limit.
    pub chat_conversations_per_address: u32,
    /// Conversations started over `/v1/chat` from one address that may have gone to people
    /// (a bot handed them on, or their rules sent them straight to agents) until they
    /// close; one more handoff is refused with `rate_limited` (the bot keeps the
    /// conversation), one more such start likewise. 0: no limit.
    pub chat_agent_conversations_per_address: u32,
    /// The window failures are counted in, and how long a lockout lasts.
    pub token_lockout_secs: u64,
    /// The gateway's address as Bot Framework bots reach it (`http://host:port`, no path):
    /// the `serviceUrl` of the activities it posts to them and the issuer of its tokens.
    /// Unset: `http://` and the address it listens on.
    pub public_url: Option<String>,
    /// Reverse proxies (addresses, or ranges in CIDR notation) whose `X-Forwarded-For`
    /// names the client a request counts under for the per-address limits
    /// (`server::proxy`). Empty: every request is its socket's peer's.
    pub trusted_proxies: Vec<String>,
}

/// Parses one `[server] trusted_proxies` entry: an address (`10.0.0.7`, `::1`) or a range
/// in CIDR notation (`10.0.0.0/8`, `fd00::/8`).
pub fn proxy_range(entry: &str) -> Option<ipnet::IpNet> {
    let entry = entry.trim();
    entry.parse::<ipnet::IpNet>().ok().or_else(|| entry.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    #[default]
    Sqlite,
    Memory,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    #[default]
    Full,
    Normal,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            data_dir: "data".into(),
            admin_token_env: None,
            admin_token: None,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            outbound_queue: 1024,
            public_url: None,
            max_conversation_bytes: 2 << 20,
            transcript_page_bytes: 256 << 10,
            token_ttl_secs: 3600,
            customer_token_ttl_secs: 24 * 3600,
            handshake_timeout_secs: 10,
            store: StoreKind::Sqlite,
            sync: SyncMode::Full,
            agent_grace_secs: 60,
            bot_grace_secs: 5,
            bot_reply_timeout_secs: 60,
            customer_resume_secs: 300,
            idle_close_secs: 3600,
            closed_retention_secs: 600,
            customer_rate: 20.0,
            customer_burst: 40,
            member_rate: 2000.0,
            member_burst: 4000,
            max_connections: 250_000,
            max_calls: None,
            idle_timeout_secs: 300,
            request_timeout_secs: 10,
            // 2^18: room for `max_connections` WebSockets plus some 12,000 HTTP requests and
            // half-open sockets. The process's descriptor limit (`ulimit -n`) must be above
            // it for it to be the limit that applies.
            max_sockets: 262_144,
            token_failures: 5,
            token_address_failures: 20,
            chat_conversations_per_address: 100,
            chat_agent_conversations_per_address: 3,
            token_lockout_secs: 60,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkstream {
    name: String,
    #[serde(default)]
    channel: Channel,
    fallback_queue: String,
    #[serde(default)]
    context_variables: Vec<VarDecl>,
    #[serde(default)]
    rules: Vec<RawRule>,
    /// Voice: a WAV prompt played to callers waiting in a queue (see `voice::HoldPrompt`
    /// for the formats taken); a comfort tone when absent.
    hold_audio: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    when: String,
    queue: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    name: String,
    #[serde(default)]
    assignment: Assignment,
    #[serde(default)]
    members: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBot {
    name: String,
    app_id: String,
    secret_env: Option<String>,
    secret: Option<String>,
    #[serde(default = "default_bot_capacity")]
    capacity: u32,
    #[serde(default)]
    voice: bool,
    endpoint: Option<String>,
    /// `"none"`: no tokens either way with this Bot Framework bot (local development).
    auth: Option<String>,
    /// Runs the built-in topic bot as this bot user.
    #[serde(default)]
    builtin: bool,
    #[serde(default)]
    topics: Vec<crate::bot::script::RawTopic>,
}

fn default_bot_capacity() -> u32 {
    1000
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    id: String,
    name: Option<String>,
    secret_env: Option<String>,
    secret: Option<String>,
    #[serde(default = "default_agent_capacity")]
    capacity: u32,
}

fn default_agent_capacity() -> u32 {
    3
}

/// A workstream's channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    #[default]
    Chat,
    Voice,
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Channel::Chat => "chat",
            Channel::Voice => "voice",
        })
    }
}

/// How a queue picks among its eligible members.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Assignment {
    #[default]
    HighestCapacity,
    RoundRobin,
}

/// A declared context variable.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VarDecl {
    pub name: String,
    #[serde(rename = "type", default = "default_var_type")]
    pub ty: VarType,
}

fn default_var_type() -> VarType {
    VarType::Text
}

/// A shared secret. Compared in constant time; never printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// Constant-time comparison, so response timing says nothing about the secret.
    pub fn matches(&self, candidate: &str) -> bool {
        bool::from(self.0.as_bytes().ct_eq(candidate.as_bytes()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// A checked configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub server: ServerConfig,
    pub admin_token: Option<Secret>,
    pub workstreams: Vec<Workstream>,
    pub queues: Vec<Queue>,
    pub bots: Vec<Bot>,
    pub agents: Vec<Agent>,
    /// `[directline]`, when Direct Line clients are served.
    pub directline: Option<DirectLine>,
    /// `[cluster]`, when this gateway is one node of several.
    pub cluster: Option<ClusterConfig>,
    /// The TOML text it was read from (the admin API shows it with secrets redacted, and a
    /// reload compares the parts that cannot change live).
    pub source: std::sync::Arc<str>,
}

/// Direct Line 3.0 for customers: the secret clients (or the site that hands them tokens)
/// hold, and the workstream their conversations enter.
#[derive(Clone, Debug)]
pub struct DirectLine {
    pub secret: Secret,
    pub workstream: String,
}

#[derive(Clone, Debug)]
pub struct Workstream {
    pub name: String,
    pub channel: Channel,
    pub fallback_queue: String,
    pub variables: Vec<VarDecl>,
    pub rules: Vec<Rule>,
    /// The `hold_audio` WAV, decoded when the configuration was loaded (voice workstreams
    /// only); `None` plays the comfort tone.
    pub hold_audio: Option<std::sync::Arc<crate::voice::HoldPrompt>>,
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub name: String,
    pub when_src: String,
    pub when: Expr,
    pub queue: String,
}

#[derive(Clone, Debug)]
pub struct Queue {
    pub name: String,
    pub assignment: Assignment,
    pub members: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Bot {
    pub name: String,
    pub app_id: String,
    /// `None` when `secret_env` names a variable that is not set: the bot cannot sign in.
    pub secret: Option<Secret>,
    pub capacity: u32,
    pub voice: bool,
    pub endpoint: Option<String>,
    /// How the gateway and a Bot Framework bot (one with `endpoint`) prove who they are.
    pub auth: BotAuth,
    /// The script of a built-in bot (`builtin = true`).
    pub builtin: Option<std::sync::Arc<crate::bot::Script>>,
}

/// `[[bots]] auth`: with `Jwt` (the default) the gateway signs its calls to the bot and
/// accepts the bot's calls only with an access token from `/v1/token`; `None` turns both
/// off, for a bot running with authentication off in local development.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BotAuth {
    #[default]
    Jwt,
    None,
}

#[derive(Clone, Debug)]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub secret: Option<Secret>,
    pub capacity: u32,
}

/// The outcome of running a workstream's rules.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RouteDecision {
    /// The rule that matched, or `None` for the fallback queue.
    pub rule: Option<String>,
    pub queue: String,
}

impl Workstream {
    /// Runs the rules in order on `ctx`: the first that holds gives the queue, none gives
    /// the fallback queue.
    pub fn route(&self, ctx: &Context) -> RouteDecision {
        for rule in &self.rules {
            if rule.when.eval(&|k| ctx.get(k)) {
                return RouteDecision { rule: Some(rule.name.clone()), queue: rule.queue.clone() };
            }
        }
        RouteDecision { rule: None, queue: self.fallback_queue.clone() }
    }

    pub fn variable(&self, name: &str) -> Option<VarType> {
        self.variables.iter().find(|v| v.name == name).map(|v| v.ty)
    }
}

impl Config {
    pub fn workstream(&self, name: &str) -> Option<&Workstream> {
        self.workstreams.iter().find(|w| w.name == name)
    }

    pub fn queue(&self, name: &str) -> Option<&Queue> {
        self.queues.iter().find(|q| q.name == name)
    }

    /// The built-in default configuration (it names no environment variable and no file).
    pub fn builtin_default() -> Config {
        match Config::from_toml_with(DEFAULT_TOML, &Nothing) {
            Ok(checked) => checked.config,
            // The default is checked by a unit test; reaching this is a build defect.
            Err(e) => panic!("built-in default configuration is invalid: {e}"),
        }
    }

    /// Parses and checks configuration text; what it names outside itself (environment
    /// variables, hold-audio files) comes through `resolve` (`crate::load` resolves from
    /// the machine: this module reads nothing).
    pub fn from_toml_with(text: &str, resolve: &dyn Resolve) -> Result<Checked, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            // toml's message spans several lines with a caret; keep it to one line.
            let msg = e.message().to_owned();
            let at = e.span().map(|s| line_col(text, s.start));
            ConfigError(vec![match at {
                Some((l, c)) => format!("TOML error at line {l}, column {c}: {msg}"),
                None => format!("TOML error: {msg}"),
            }])
        })?;
        let mut checked = validate(raw, resolve)?;
        checked.config.source = std::sync::Arc::from(text);
        Ok(checked)
    }
}

/// What a configuration names outside itself, resolved at the loading edge.
pub trait Resolve {
    /// An environment variable (`secret_env`, `admin_token_env`).
    fn env(&self, name: &str) -> Option<String>;
    /// A workstream's `hold_audio` file, decoded.
    fn hold_prompt(&self, path: &Path) -> Result<crate::voice::HoldPrompt, String>;
}

/// A configuration that names nothing outside itself: no variable is set, no file exists.
#[derive(Debug)]
pub struct Nothing;

impl Resolve for Nothing {
    fn env(&self, _name: &str) -> Option<String> {
        None
    }

    fn hold_prompt(&self, path: &Path) -> Result<crate::voice::HoldPrompt, String> {
        Err(format!("no file can be read here ({})", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's files, and one environment variable: `SET`.
    struct TestMachine;

    impl Resolve for TestMachine {
        fn env(&self, name: &str) -> Option<String> {
            (name == "SET").then(|| "s3cret".to_owned())
        }

        fn hold_prompt(&self, path: &Path) -> Result<crate::voice::HoldPrompt, String> {
            crate::load::Machine.hold_prompt(path)
        }
    }

    fn check(text: &str) -> Result<Checked, ConfigError> {
        let raw: RawConfig = toml::from_str(text).unwrap();
        validate(raw, &TestMachine)
    }

    /// [`check`] for text that may not parse (a TOML error is a problem too).
    fn check_text(text: &str) -> Result<Checked, ConfigError> {
        Config::from_toml_with(text, &TestMachine)
    }

    const BASE: &str = r#"
[[workstreams]]
name = "W"
fallback_queue = "Q"
context_variables = [ { name = "T", type = "text" }, { name = "N", type = "number" } ]
  [[workstreams.rules]]
  name = "R"
  when = "T is empty"
  queue = "Q"
[[queues]]
name = "Q"
members = ["b", "a"]
[[bots]]
name = "b"
app_id = "app-1"
secret = "x"
capacity = 10
[[agents]]
id = "a"
secret_env = "SET"
capacity = 3
"#;

    #[test]
    fn builtin_default_is_valid() {
        let checked = Config::from_toml_with(DEFAULT_TOML, &Nothing).unwrap();
        assert!(checked.config.workstream("ChatWorkStream").is_some());
    }

    #[test]
    fn base_is_valid() {
        let c = check(BASE).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(c.config.agents[0].secret.as_ref().unwrap().matches("s3cret"));
    }

    #[test]
    fn cluster_section() {
        let c = check(&format!("{BASE}\n[cluster]\nnats = \"nats://127.0.0.1:4222\"\n")).unwrap().config;
        let cl = c.cluster.unwrap();
        assert_eq!(cl.nats.list(), ["nats://127.0.0.1:4222"]);
        assert_eq!(
            (cl.stream.as_str(), cl.bucket.as_str(), cl.replicas, cl.lease_secs),
            ("switchboard", "switchboard-lease", 1, 5)
        );
        let many = format!("{BASE}\n[cluster]\nnats = [\"nats://a:4222\", \"nats://b:4222\"]\nnode = \"n-1\"\n");
        assert_eq!(check(&many).unwrap().config.cluster.unwrap().nats.list().len(), 2);
        assert!(check(BASE).unwrap().config.cluster.is_none(), "alone by default");
        let bad = format!(
            "{BASE}\n[cluster]\nnats = \"http://x\"\nnode = \"a.b\"\nstream = \"s s\"\nreplicas = 9\nlease_secs = 1\n"
        );
        let e = check(&bad).unwrap_err().0.join("\n");
        for want in
            ["cluster: nats \"http://x\"", "cluster: node \"a.b\"", "cluster: stream \"s s\"", "replicas", "lease_secs"]
        {
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn problems_table() {
        let cases = [
            (r#"members = ["b", "a"]"#, r#"members = ["b", "y"]"#, r#"queue "Q": unknown member "y""#),
            (r#"  queue = "Q""#, r#"  queue = "Nope""#, r#"workstream "W" rule "R": unknown queue "Nope""#),
            (r#"fallback_queue = "Q""#, r#"fallback_queue = "Z""#, r#"fallback_queue: unknown queue "Z""#),
            (r#"when = "T is empty""#, r#"when = "X is empty""#, r#"unknown variable "X" at column 1"#),
            (r#"when = "T is empty""#, r#"when = 'T == "x'"#, "unterminated string at column 6"),
            (
                r#"when = "T is empty""#,
                r#"when = "N == \"x\"""#,
                "number variable \"N\" compared with a text literal at column 1",
            ),
            (r#"when = "T is empty""#, r#"when = "T < 3""#, "\"<\" does not apply to text variable \"T\""),
            (r#"id = "a""#, r#"id = "b""#, r#"agent "b": duplicate id (already used by a bot)"#),
            (r#"secret = "x""#, "", r#"bot "b": no secret: set secret_env or secret"#),
            ("capacity = 3", "capacity = 0", r#"agent "a": capacity must be at least 1"#),
        ];
        for (from, to, want) in cases {
            let text = BASE.replacen(from, to, 1);
            let err = check(&text).unwrap_err();
            assert!(err.0.iter().any(|l| l.contains(want)), "want {want:?} in {:?}", err.0);
        }
    }

    #[test]
    fn directline_is_checked() {
        let dl = |lines: &str| format!("{BASE}\n[directline]\n{lines}\n");
        let ok = check(&dl("secret_env = \"SET\"\nworkstream = \"W\"")).unwrap();
        let d = ok.config.directline.unwrap();
        assert!(d.secret.matches("s3cret"));
        assert_eq!(d.workstream, "W");
        let cases = [
            ("secret = \"x\"\nworkstream = \"Nope\"", r#"directline: unknown workstream "Nope""#),
            ("workstream = \"W\"", "directline: no secret: set secret_env or secret"),
            (
                "secret_env = \"UNSET\"\nworkstream = \"W\"",
                "directline: environment variable UNSET (secret_env) is not set",
            ),
            ("secret = \"\"\nworkstream = \"W\"", "directline: secret is empty"),
            ("secret = \"x\"\nworkstream = \"W\"\nsecrets = 1", "unknown field `secrets`"),
        ];
        for (lines, want) in cases {
            let err = check_text(&dl(lines)).unwrap_err();
            assert!(err.0.iter().any(|l| l.contains(want)), "want {want:?} in {:?}", err.0);
        }
    }

    #[test]
    fn connection_and_token_limits_are_checked() {
        let server = |lines: &str| format!("[server]\n{lines}\n{BASE}");
        assert!(check(&server("max_sockets = 10\nmax_connections = 10\ntoken_failures = 1\nmax_calls = 1")).is_ok());
        let cases = [
            ("max_calls = 0", "server: max_calls must be at least 1"),
            (
                "max_sockets = 10\nmax_connections = 11",
                "server: max_sockets (10) must be at least max_connections (11)",
            ),
            ("max_sockets = 0\nmax_connections = 0", "server: max_connections must be at least 1"),
            ("request_timeout_secs = 0", "server: request_timeout_secs must be from 1 to 86400"),
            ("token_lockout_secs = 86401", "server: token_lockout_secs must be from 1 to 86400"),
            ("token_failures = 0", "server: token_failures must be at least 1"),
            ("token_address_failures = 0", "server: token_address_failures must be at least 1"),
        ];
        for (lines, want) in cases {
            let err = check(&server(lines)).unwrap_err();
            assert!(err.0.iter().any(|l| l.starts_with(want)), "want {want:?} in {:?}", err.0);
        }
    }

    #[test]
    fn a_bot_framework_bots_auth_is_checked_and_none_is_warned_about() {
        let bot = |extra: &str| BASE.replace("app_id = \"app-1\"\n", &format!("app_id = \"app-1\"\n{extra}"));
        let c = check(&bot("endpoint = \"http://127.0.0.1:3978/api/messages\"\n")).unwrap();
        assert_eq!(c.config.bots[0].auth, BotAuth::Jwt);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let c = check(&bot("endpoint = \"http://127.0.0.1:3978/api/messages\"\nauth = \"none\"\n")).unwrap();
        assert_eq!(c.config.bots[0].auth, BotAuth::None);
        assert!(c.warnings.iter().any(|w| w.starts_with("bot \"b\": auth = \"none\"")), "{:?}", c.warnings);
        for (extra, problem) in [
            ("endpoint = \"http://x\"\nauth = \"basic\"\n", "auth \"basic\" is not"),
            ("auth = \"none\"\n", "auth applies to a Bot Framework bot"),
            ("endpoint = \"ftp://x\"\n", "is not an http:// or https:// URL"),
            ("endpoint = \"http://x\"\nvoice = true\n", "cannot be voice-enabled"),
        ] {
            let err = check(&bot(extra)).unwrap_err();
            assert!(err.0.iter().any(|p| p.contains(problem)), "{extra}: {:?}", err.0);
        }
        let err = check(&format!("[server]\npublic_url = \"https://gw.example/path\"\n{BASE}")).unwrap_err();
        assert!(err.0.iter().any(|p| p.contains("public_url")), "{:?}", err.0);
    }

    #[test]
    fn trusted_proxies_are_addresses_or_ranges() {
        let c = check(&format!("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n{BASE}")).unwrap();
        assert_eq!(c.config.server.trusted_proxies, ["10.0.0.0/8", "::1"]);
        let err = check(&format!("[server]\ntrusted_proxies = [\"10.0.0.1\", \"proxy.local\"]\n{BASE}")).unwrap_err();
        assert_eq!(
            err.0,
            [
                "server: trusted_proxies entry \"proxy.local\" is not an address or a CIDR range (such as 10.0.0.7 or 10.0.0.0/8)"
            ]
        );
    }

    #[test]
    fn duplicate_app_id_and_warnings() {
        let text = format!("{BASE}\n[[bots]]\nname = \"c\"\napp_id = \"app-1\"\nsecret = \"y\"\n");
        let err = check(&text).unwrap_err();
        assert_eq!(err.0, vec![r#"bot "c": app_id "app-1" is also used by bot "b""#.to_owned()]);

        let text =
            BASE.replace("capacity = 10", "capacity = 2").replace("secret_env = \"SET\"", "secret_env = \"UNSET\"");
        let c = check(&text).unwrap();
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(
            c.warnings[0].contains("does not have the highest capacity")
                || c.warnings[1].contains("does not have the highest capacity")
        );
        assert!(c.warnings.iter().any(|w| w.contains("UNSET")));

        let text = BASE.replace("name = \"W\"", "name = \"W\"\nchannel = \"voice\"");
        let c = check(&text).unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("voice workstream whose queues hold no voice-enabled bot")));
    }

    #[test]
    fn a_configuration_without_workstreams_is_valid_with_a_warning() {
        for text in ["", "[server]\nlisten = \"127.0.0.1:9\"\n"] {
            let c = check_text(text).unwrap();
            assert_eq!(
                c.warnings,
                vec![
                    "no workstreams: every conversation is refused (a chat's session.start, a call and Direct Line each name one)"
                        .to_owned()
                ]
            );
            assert!(c.summary().starts_with("ok: 0 workstream(s)"), "{}", c.summary());
        }
        assert!(!check(BASE).unwrap().warnings.iter().any(|w| w.starts_with("no workstreams")));
    }

    #[test]
    fn hold_audio_is_decoded_at_load_and_its_problems_named() {
        let dir = tempfile::tempdir().unwrap();
        let wav = dir.path().join("hold.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 44100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&wav, spec).unwrap();
        for i in 0..4410 {
            w.write_sample((i % 100) as i16 * 50).unwrap();
        }
        w.finalize().unwrap();
        let voice = |path: &Path| {
            BASE.replace("name = \"W\"", &format!("name = \"W\"\nchannel = \"voice\"\nhold_audio = {:?}", path))
        };
        let c = check(&voice(&wav)).unwrap();
        let prompt = c.config.workstreams[0].hold_audio.as_ref().expect("decoded at load");
        assert_eq!((prompt.source_rate(), prompt.rate(), prompt.samples().len()), (44100, 48000, 4800));

        let bad = dir.path().join("bad.wav");
        std::fs::write(&bad, "RIFF....WAVE").unwrap();
        let err = check(&voice(&bad)).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert!(err.0[0].starts_with(&format!("workstream \"W\": hold_audio {}: ", bad.display())), "{err}");

        // On a chat workstream the file is still checked, but only warned about.
        let chat = BASE.replace("name = \"W\"", &format!("name = \"W\"\nhold_audio = {:?}", wav));
        let c = check(&chat).unwrap();
        assert!(c.config.workstreams[0].hold_audio.is_none());
        assert_eq!(c.warnings, vec!["workstream \"W\": hold_audio is only played on voice workstreams".to_owned()]);
    }

    #[test]
    fn a_voice_queue_of_chat_bots_is_warned_about() {
        let text = BASE
            .replace("name = \"W\"", "name = \"W\"\nchannel = \"voice\"")
            .replace(r#"members = ["b", "a"]"#, r#"members = ["b"]"#);
        let c = check(&text).unwrap();
        assert!(
            c.warnings.iter().any(|w| w == "workstream \"W\": queue \"Q\" has no member that takes calls (an agent or a voice-enabled bot); calls routed there wait"),
            "{:?}",
            c.warnings
        );
        // With an agent in the queue, calls can be taken.
        let text = BASE.replace("name = \"W\"", "name = \"W\"\nchannel = \"voice\"");
        assert!(!check(&text).unwrap().warnings.iter().any(|w| w.contains("takes calls")));
    }

    #[test]
    fn toml_errors_name_the_line() {
        let err = Config::from_toml_with("[[queues]]\nname = 5\n", &Nothing).unwrap_err();
        assert!(err.0[0].starts_with("TOML error at line 2"), "{err}");
    }
}
