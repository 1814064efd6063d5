//! The admin API (SPEC §7) and /metrics through the real server on SQLite: every call
//! refused without the admin token, every answer checked against docs/admin-openapi.json,
//! "Disconnect bot", an agent's presence and sign-out, the routing dry run, a configuration
//! refused (nothing changes) and one applied with an open conversation surviving.

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};
use switchboard_tests::*;

const TOKEN: &str = "admin-test-token";

fn admin_toml() -> String {
    EXTERNAL_BOT
        .replace("listen = \"127.0.0.1:8080\"\n", &format!("listen = \"127.0.0.1:8080\"\nadmin_token = \"{TOKEN}\"\n"))
}

/// The OpenAPI file, and a check of one answer against the schema it gives for
/// `path` (the template), `method` and `status`.
struct Contract(Value);

impl Contract {
    fn load() -> Contract {
        let text = include_str!("../../docs/admin-openapi.json");
        Contract(serde_json::from_str(text).expect("the OpenAPI file is JSON"))
    }

    fn check(&self, path: &str, method: &str, status: u16, body: &Value) {
        let esc = path.replace('~', "~0").replace('/', "~1");
        let pointer = format!("/paths/{esc}/{method}/responses/{status}/content/application~1json/schema");
        assert!(self.0.pointer(&pointer).is_some(), "the OpenAPI file has no {method} {path} {status}");
        // The whole document is the root, so its $refs resolve; the answer is checked
        // against the one schema the pointer names.
        let mut root = self.0.clone();
        root["$ref"] = json!(format!("#{}", pointer.replace('{', "%7B").replace('}', "%7D")));
        let v = jsonschema::validator_for(&root).expect("the OpenAPI schemas compile");
        let errors: Vec<String> = v.iter_errors(body).map(|e| format!("{e} at {}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{method} {path} {status}: {errors:?}\nin {body:#}");
    }
}

struct Admin<'a> {
    srv: &'a TestServer,
    contract: Contract,
}

impl<'a> Admin<'a> {
    fn new(srv: &'a TestServer) -> Admin<'a> {
        Admin { srv, contract: Contract::load() }
    }

    /// Calls `method path` with the admin token, checks the answer against the contract
    /// under `template`, and returns status and body.
    async fn call(&self, method: &str, path: &str, template: &str, body: &str) -> Result<(u16, Value)> {
        let auth = format!("Bearer {TOKEN}");
        let ct = if path.ends_with("/config") { "application/toml" } else { "application/json" };
        let (status, text) =
            http_with(self.srv.addr, method, path, &[("authorization", &auth), ("content-type", ct)], body).await?;
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{method} {path}: not JSON: {text}"))?;
        self.contract.check(template, &method.to_lowercase(), status, &v);
        Ok((status, v))
    }

    async fn get(&self, path: &str, template: &str) -> Result<Value> {
        let (status, v) = self.call("GET", path, template, "").await?;
        ensure!(status == 200, "GET {path}: {status} {v}");
        Ok(v)
    }

    async fn post(&self, path: &str, template: &str, body: Value) -> Result<(u16, Value)> {
        self.call("POST", path, template, &body.to_string()).await
    }
}

/// The bot hands the conversation over for a credit card (to CreditCardQueue).
async fn escalate(bot: &mut Client, conv: &str) -> Result<()> {
    bot.send(json!({"type":"event","name":"handoff.initiate","conversation":{"id":conv},"value":{"BotHandoffTopic":"CreditCard"}}))
        .await
}

/// Every call, in its template and a concrete path.
const CALLS: [(&str, &str, &str); 13] = [
    ("GET", "/v1/admin/conversations", "/v1/admin/conversations"),
    ("GET", "/v1/admin/conversations/{id}", "/v1/admin/conversations/c_none"),
    ("GET", "/v1/admin/queues", "/v1/admin/queues"),
    ("GET", "/v1/admin/cluster", "/v1/admin/cluster"),
    ("GET", "/v1/admin/bots", "/v1/admin/bots"),
    ("GET", "/v1/admin/agents", "/v1/admin/agents"),
    ("POST", "/v1/admin/bots/{name}/disconnect", "/v1/admin/bots/contoso-bot/disconnect"),
    ("POST", "/v1/admin/bots/{name}/connect", "/v1/admin/bots/contoso-bot/connect"),
    ("POST", "/v1/admin/agents/{id}/presence", "/v1/admin/agents/alice/presence"),
    ("POST", "/v1/admin/agents/{id}/signout", "/v1/admin/agents/alice/signout"),
    ("POST", "/v1/admin/route", "/v1/admin/route"),
    ("GET", "/v1/admin/config", "/v1/admin/config"),
    ("PUT", "/v1/admin/config", "/v1/admin/config"),
];

#[tokio::test]
async fn every_admin_call_needs_the_admin_token() -> Result<()> {
    let srv = start_server(Some(&admin_toml())).await;
    let contract = Contract::load();
    // The file describes exactly these calls.
    let mut described: Vec<(String, String)> = Vec::new();
    for (path, ops) in contract.0["paths"].as_object().context("paths")? {
        described.extend(ops.as_object().context("operations")?.keys().map(|m| (m.to_uppercase(), path.clone())));
    }
    let mut called: Vec<(String, String)> = CALLS.iter().map(|(m, t, _)| (m.to_string(), t.to_string())).collect();
    described.sort();
    called.sort();
    ensure!(described == called, "the OpenAPI file describes {described:?}, the tests call {called:?}");
    for (method, template, path) in CALLS {
        for auth in
            [None, Some("Bearer wrong-token"), Some("Basic YWRtaW46YWRtaW4="), Some(&*format!("Bearer {TOKEN}x"))]
        {
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", *a)).collect();
            let (status, text) = http_with(srv.addr, method, path, &headers, "").await?;
            ensure!(status == 401, "{method} {path} with {auth:?}: {status} {text}");
            let v: Value = serde_json::from_str(&text)?;
            contract.check(template, &method.to_lowercase(), 401, &v);
        }
    }
    // Nothing was done by the refused calls: the bot is still enabled.
    let admin = Admin { srv: &srv, contract };
    let bots = admin.get("/v1/admin/bots", "/v1/admin/bots").await?;
    ensure!(bots["bots"][0]["disabled"] == false, "{bots}");
    // Without an admin token configured, the admin API is off for everyone.
    let open = start_server(None).await;
    for (method, template, path) in CALLS {
        let (status, text) = http_with(open.addr, method, path, &[("authorization", "Bearer anything")], "").await?;
        ensure!(status == 403, "{method} {path} with no admin token configured: {status} {text}");
        admin.contract.check(template, &method.to_lowercase(), 403, &serde_json::from_str(&text)?);
    }
    Ok(())
}

#[tokio::test]
async fn reads_show_conversations_queues_members_and_routing() -> Result<()> {
    let srv = start_server(Some(&admin_toml())).await;
    let admin = Admin::new(&srv);
    let mut bot = srv.bot().await?;
    let mut cust = srv.start_chat("ChatWorkStream", "Dana", json!({})).await?;
    let conv = cust.conversation.clone();
    bot.event("conversation.assigned").await?;
    bot.say(&conv, "Hello, how can I help?").await?;
    cust.message().await?;
    bot.send(json!({"type":"event","name":"handoff.initiate","conversation":{"id":conv},"text":"wants a card","value":{"BotHandoffTopic":"CreditCard"}})).await?;
    cust.until("queue position", |v| v["name"] == "queue.position").await?;

    // Waiting in CreditCardQueue (no agent is signed in): listed with its position and wait.
    let list =
        admin.get("/v1/admin/conversations?state=waiting&queue=CreditCardQueue", "/v1/admin/conversations").await?;
    let row = &list["conversations"][0];
    ensure!(row["id"] == conv.as_str() && row["position"] == 1 && row["holder"].is_null(), "{list}");
    let none = admin.get("/v1/admin/conversations?state=active", "/v1/admin/conversations").await?;
    ensure!(none["conversations"].as_array().is_some_and(Vec::is_empty), "{none}");
    let queues = admin.get("/v1/admin/queues", "/v1/admin/queues").await?;
    let cc = queues["queues"].as_array().unwrap().iter().find(|q| q["name"] == "CreditCardQueue").context("queue")?;
    ensure!(cc["waiting"][0]["conversation"] == conv.as_str() && cc["waiting"][0]["position"] == 1, "{cc}");
    ensure!(cc["members"][0]["name"] == "alice" && cc["members"][0]["capacity"] == 3, "{cc}");

    let mut alice = srv.agent("alice").await?;
    alice.event("conversation.assigned").await?;
    let one = admin.get(&format!("/v1/admin/conversations/{conv}"), "/v1/admin/conversations/{id}").await?;
    ensure!(one["state"] == "active" && one["holder"] == "alice", "{one}");
    ensure!(one["context"]["BotHandoffTopic"] == "CreditCard" && one["summary"] == "wants a card", "{one}");
    ensure!(
        one["transcript"].as_array().is_some_and(|t| t.iter().any(|a| a["text"] == "Hello, how can I help?")),
        "{one}"
    );
    let routing = one["routing"].as_array().context("routing")?;
    ensure!(routing.len() == 2, "{routing:?}");
    ensure!(
        routing[0]["trigger"] == "start" && routing[0]["rule"] == "BotRule" && routing[0]["member"] == "contoso-bot"
    );
    ensure!(routing[1]["trigger"] == "escalation" && routing[1]["rule"] == "CreditCardRule", "{routing:?}");
    ensure!(routing[1]["member"] == "alice" && routing[1]["reason"].as_str().is_some_and(|r| r.contains("capacity")));
    let by_holder = admin.get("/v1/admin/conversations?holder=alice&channel=chat", "/v1/admin/conversations").await?;
    ensure!(by_holder["conversations"][0]["id"] == conv.as_str(), "{by_holder}");
    let (status, missing) =
        admin.call("GET", "/v1/admin/conversations/c_nope", "/v1/admin/conversations/{id}", "").await?;
    ensure!(status == 404 && missing["error"] == "not_found", "{missing}");

    let agents = admin.get("/v1/admin/agents", "/v1/admin/agents").await?;
    let a = agents["agents"].as_array().unwrap().iter().find(|a| a["name"] == "alice").context("alice")?;
    ensure!(a["state"] == "connected" && a["presence"] == "available" && a["load"] == 1, "{a}");
    let bots = admin.get("/v1/admin/bots", "/v1/admin/bots").await?;
    ensure!(bots["bots"][0]["state"] == "connected" && bots["bots"][0]["load"] == 0, "{bots}");

    // Paging: two more conversations, one per page.
    let _c2 = srv.start_chat("ChatWorkStream", "Eve", json!({})).await?;
    let _c3 = srv.start_chat("ChatWorkStream", "Fay", json!({})).await?;
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = admin.get(&format!("/v1/admin/conversations?limit=1{after}"), "/v1/admin/conversations").await?;
        let rows = page["conversations"].as_array().context("rows")?;
        ensure!(rows.len() <= 1, "{page}");
        seen.extend(rows.iter().map(|r| r["id"].as_str().unwrap_or_default().to_owned()));
        match page["next"].as_str() {
            Some(n) => after = format!("&after={n}"),
            None => break,
        }
    }
    ensure!(seen.len() == 3 && seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    let (status, bad) = admin.call("GET", "/v1/admin/conversations?limit=0", "/v1/admin/conversations", "").await?;
    ensure!(status == 400, "{bad}");
    Ok(())
}

#[tokio::test]
async fn route_dry_run_answers_like_the_cli() -> Result<()> {
    let srv = start_server(Some(&admin_toml())).await;
    let admin = Admin::new(&srv);
    let t = "/v1/admin/route";
    let (s, v) =
        admin.post(t, t, json!({"workstream":"ChatWorkStream","context":{"BotHandoffTopic":"HomeLoan"}})).await?;
    ensure!(s == 200 && v == json!({"rule":"HomeLoanRule","queue":"HomeLoanQueue"}), "{v}");
    let (s, v) = admin.post(t, t, json!({"workstream":"ChatWorkStream","context":{"BotHandoffTopic":"Boats"}})).await?;
    ensure!(s == 200 && v == json!({"rule":null,"queue":"GeneralQueue"}), "{v}");
    let (s, v) = admin.post(t, t, json!({"workstream":"ChatWorkStream"})).await?;
    ensure!(s == 200 && v["rule"] == "BotRule", "{v}");
    let (s, v) = admin.post(t, t, json!({"workstream":"Nope"})).await?;
    ensure!(s == 404, "{v}");
    let (s, v) = admin.post(t, t, json!({"workstream":"ChatWorkStream","context":{"Undeclared":1}})).await?;
    ensure!(s == 400 && v["message"].as_str().is_some_and(|m| m.contains("Undeclared")), "{v}");
    let (s, v) = admin.call("POST", t, t, "{not json").await?;
    ensure!(s == 400, "{v}");
    Ok(())
}

#[tokio::test]
async fn disconnect_bot_reroutes_its_conversations_and_refuses_it_until_connect() -> Result<()> {
    let srv = start_server(Some(&admin_toml())).await;
    let admin = Admin::new(&srv);
    let mut bot = srv.bot().await?;
    let mut alice = srv.agent("alice").await?;
    let mut cust = srv.start_chat("ChatWorkStream", "Dana", json!({})).await?;
    let conv = cust.conversation.clone();
    bot.event("conversation.assigned").await?;

    let t = "/v1/admin/bots/{name}/disconnect";
    let (s, v) = admin.post("/v1/admin/bots/contoso-bot/disconnect", t, json!(null)).await?;
    ensure!(s == 200 && v["state"] == "disconnected", "{v}");
    bot.closed().await?;
    // Its conversation went to people (the rules give BotQueue, which has no agents: the
    // fallback queue, where alice is).
    let work = alice.event("conversation.assigned").await?;
    ensure!(work["conversation"]["id"] == conv.as_str(), "{work}");
    cust.until("the notice", |v| v["text"].as_str().is_some_and(|t| t.contains("was disconnected"))).await?;
    let bots = admin.get("/v1/admin/bots", "/v1/admin/bots").await?;
    ensure!(bots["bots"][0]["state"] == "disconnected" && bots["bots"][0]["load"] == 0, "{bots}");
    // It cannot come back, and new conversations do not go to it.
    ensure!(srv.bot().await.is_err(), "a disconnected bot connected again");
    let _c2 = srv.start_chat("ChatWorkStream", "Eve", json!({})).await?;
    let list = admin.get("/v1/admin/conversations?holder=contoso-bot", "/v1/admin/conversations").await?;
    ensure!(list["conversations"].as_array().is_some_and(Vec::is_empty), "{list}");
    let (s, _) = admin.post("/v1/admin/bots/nobody/disconnect", t, json!(null)).await?;
    ensure!(s == 404);

    let (s, v) = admin.post("/v1/admin/bots/contoso-bot/connect", "/v1/admin/bots/{name}/connect", json!(null)).await?;
    ensure!(s == 200 && v["state"] == "enabled", "{v}");
    let mut bot = srv.bot().await?;
    // The conversation that waited in BotQueue meanwhile is its first work.
    bot.event("conversation.assigned").await?;
    let (s, _) = admin.post("/v1/admin/bots/alice/connect", "/v1/admin/bots/{name}/connect", json!(null)).await?;
    ensure!(s == 404, "an agent is not a bot");
    Ok(())
}

#[tokio::test]
async fn presence_and_signout_change_an_agent() -> Result<()> {
    let srv = start_server(Some(&admin_toml())).await;
    let admin = Admin::new(&srv);
    let mut alice = srv.agent("alice").await?;
    let t = "/v1/admin/agents/{id}/presence";
    let (s, v) = admin.post("/v1/admin/agents/alice/presence", t, json!({"presence":"away"})).await?;
    ensure!(s == 200 && v["presence"] == "away", "{v}");
    let agents = admin.get("/v1/admin/agents", "/v1/admin/agents").await?;
    ensure!(agents["agents"][0]["presence"] == "away", "{agents}");
    let (s, _) = admin.post("/v1/admin/agents/alice/presence", t, json!({"presence":"asleep"})).await?;
    ensure!(s == 400);
    let (s, _) = admin.post("/v1/admin/agents/nobody/presence", t, json!({"presence":"away"})).await?;
    ensure!(s == 404);
    admin.post("/v1/admin/agents/alice/presence", t, json!({"presence":"available"})).await?;

    let mut bot = srv.bot().await?;
    let mut cust = srv.start_chat("ChatWorkStream", "Dana", json!({})).await?;
    let conv = cust.conversation.clone();
    bot.event("conversation.assigned").await?;
    escalate(&mut bot, &conv).await?;
    alice.event("conversation.assigned").await?;
    let (s, v) = admin.post("/v1/admin/agents/alice/signout", "/v1/admin/agents/{id}/signout", json!(null)).await?;
    ensure!(s == 200 && v["presence"] == "offline", "{v}");
    alice.closed().await?;
    cust.until("the notice", |v| v["text"].as_str().is_some_and(|t| t.contains("signed out"))).await?;
    let one = admin.get(&format!("/v1/admin/conversations/{conv}"), "/v1/admin/conversations/{id}").await?;
    ensure!(one["state"] == "waiting" && one["queue"] == "CreditCardQueue" && one["position"] == 1, "{one}");
    let mut bob = srv.agent("bob").await?;
    bob.event("conversation.assigned").await?;
    Ok(())
}

#[tokio::test]
async fn a_bad_config_is_refused_and_a_good_one_applied_keeping_conversations() -> Result<()> {
    let base = admin_toml();
    let srv = start_server(Some(&base)).await;
    let admin = Admin::new(&srv);
    let t = "/v1/admin/config";
    let before = admin.get(t, t).await?;
    ensure!(before["config"]["server"]["admin_token"] == "(redacted)", "{before}");
    ensure!(before["config"]["bots"][0]["secret"] == "(redacted)", "{before}");
    ensure!(!before.to_string().contains("demo-secret") && !before.to_string().contains(TOKEN), "a secret is shown");

    let mut bot = srv.bot().await?;
    let mut cust = srv.start_chat("ChatWorkStream", "Dana", json!({})).await?;
    let conv = cust.conversation.clone();
    bot.event("conversation.assigned").await?;
    escalate(&mut bot, &conv).await?;
    cust.until("queue position", |v| v["name"] == "queue.position").await?;

    // Refused: two problems, one line each (as check-config prints them); nothing changed.
    let bad = base
        .replace("queue = \"HomeLoanQueue\"", "queue = \"NoSuchQueue\"")
        .replace("capacity = 3\n", "capacity = 0\n");
    let want = switchboard::load::config_text(&bad).expect_err("the bad config is bad").0;
    ensure!(want.len() >= 2, "{want:?}");
    let (s, v) = admin.call("PUT", t, t, &bad).await?;
    ensure!(s == 400, "{v}");
    let lines: Vec<&str> = v["message"].as_str().context("message")?.lines().collect();
    ensure!(lines == want, "{lines:?} != {want:?}");
    let (s, v) = admin.call("PUT", t, t, "this is [not toml").await?;
    ensure!(s == 400 && v["message"].as_str().is_some_and(|m| m.starts_with("TOML error")), "{v}");
    let (s, v) = admin.call("PUT", t, t, &base.replace("127.0.0.1:8080", "127.0.0.1:9090")).await?;
    ensure!(s == 400 && v["message"].as_str().is_some_and(|m| m.contains("[server]")), "{v}");
    ensure!(admin.get(t, t).await? == before, "a refused configuration changed something");
    let one = admin.get(&format!("/v1/admin/conversations/{conv}"), "/v1/admin/conversations/{id}").await?;
    ensure!(one["queue"] == "CreditCardQueue" && one["state"] == "waiting", "{one}");

    // Applied: CreditCardQueue goes, its rule now gives GeneralQueue, and a new agent
    // joins it. The waiting conversation is routed again, to dave.
    let good = base
        .replace("[[queues]]\nname = \"CreditCardQueue\"\nmembers = [\"alice\", \"bob\"]\n", "")
        .replace("queue = \"CreditCardQueue\"", "queue = \"GeneralQueue\"")
        .replace("members = [\"alice\", \"bob\", \"carol\"]", "members = [\"alice\", \"bob\", \"carol\", \"dave\"]")
        + "\n[[agents]]\nid = \"dave\"\nname = \"Dave\"\nsecret = \"dave-demo-secret\"\ncapacity = 2\n"
        + "\n[[queues]]\nname = \"SpareQueue\"\nmembers = []\n";
    switchboard::load::config_text(&good).expect("the new config is good");
    let (s, v) = admin.call("PUT", t, t, &good).await?;
    ensure!(s == 200 && v["applied"] == true, "{v}");
    // Its warnings come back, as check-config prints them.
    ensure!(
        v["warnings"] == json!([r#"queue "SpareQueue": has no members; conversations routed here will wait"#]),
        "{v}"
    );
    ensure!(
        v["moved"].as_array().is_some_and(|m| m.iter().any(|l| l.as_str().is_some_and(|l| l.contains(&conv)))),
        "{v}"
    );
    let one = admin.get(&format!("/v1/admin/conversations/{conv}"), "/v1/admin/conversations/{id}").await?;
    ensure!(one["queue"] == "GeneralQueue" && one["state"] == "waiting", "{one}");
    let last = one["routing"].as_array().and_then(|r| r.last()).context("routing")?;
    ensure!(last["trigger"] == "reconfigure" && last["rule"] == "CreditCardRule", "{last}");
    let dave_token = srv.token("dave", "dave-demo-secret").await?;
    let mut dave = Client::connect(&srv.ws_url("/v1/agent"), Some(&dave_token)).await?;
    let work = dave.event("conversation.assigned").await?;
    ensure!(work["conversation"]["id"] == conv.as_str(), "{work}");
    dave.say(&conv, "Dave here").await?;
    let m = cust.message().await?;
    ensure!(m["text"] == "Dave here", "{m}");
    let after = admin.get(t, t).await?;
    ensure!(after["config"]["agents"].as_array().is_some_and(|a| a.len() == 4), "{after}");

    // Removing the holder's agent sends the conversation back to its queue.
    let (s, v) = admin
        .call(
            "PUT",
            t,
            t,
            &base
                .replace("queue = \"CreditCardQueue\"", "queue = \"GeneralQueue\"")
                .replace("[[queues]]\nname = \"CreditCardQueue\"\nmembers = [\"alice\", \"bob\"]\n", ""),
        )
        .await?;
    ensure!(s == 200, "{v}");
    dave.closed().await?;
    ensure!(
        Client::connect(&srv.ws_url("/v1/agent"), Some(&dave_token)).await.is_err(),
        "a removed agent's token still works"
    );
    let one = admin.get(&format!("/v1/admin/conversations/{conv}"), "/v1/admin/conversations/{id}").await?;
    ensure!(one["state"] == "waiting" && one["queue"] == "GeneralQueue", "{one}");
    let mut alice = srv.agent("alice").await?;
    let work = alice.event("conversation.assigned").await?;
    ensure!(work["conversation"]["id"] == conv.as_str(), "{work}");
    Ok(())
}

/// Every sample in a family: (labels, value).
fn samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let (n, labels) = key.split_once('{').map_or((key, ""), |(n, l)| (n, l.trim_end_matches('}')));
            (n == name).then(|| (labels.to_owned(), value.parse().unwrap_or(f64::NAN)))
        })
        .collect()
}

fn value(text: &str, name: &str, labels: &str) -> f64 {
    samples(text, name).iter().filter(|(l, _)| l.contains(labels)).map(|(_, v)| v).sum()
}

#[tokio::test]
async fn metrics_count_connections_conversations_activities_and_routing() -> Result<()> {
    let srv = start_server(Some(&admin_toml())).await;
    let scrape = || async {
        let r = http_response(srv.addr, "GET", "/metrics", &[], "").await?;
        ensure!(r.status == 200 && r.header("content-type").is_some_and(|c| c.contains("openmetrics-text")), "{r:?}");
        ensure!(r.body.trim_end().ends_with("# EOF"), "not OpenMetrics text");
        Ok::<_, anyhow::Error>(r.body)
    };
    let t0 = scrape().await?;
    for family in [
        "switchboard_activities_in_total",
        "switchboard_activities_out_total",
        "switchboard_bot_failures_total",
        "switchboard_bot_timeouts_total",
        "switchboard_voice_calls_total",
        "switchboard_chats_refused_total",
        "switchboard_voice_calls_active",
        "switchboard_cluster_nodes",
        "switchboard_media_frames_in_total",
        "switchboard_media_frames_out_total",
        "switchboard_media_frames_dropped_total",
        "switchboard_assignment_latency_seconds_count",
        "switchboard_store_commit_seconds_count",
        "switchboard_store_batch_records_count",
        "switchboard_store_checkpoint_seconds_count",
        "switchboard_engine_lock_acquisitions_total",
        "switchboard_engine_lock_held_seconds_total",
        "switchboard_engine_lock_wait_seconds_total",
    ] {
        ensure!(!samples(&t0, family).is_empty(), "no {family} in\n{t0}");
    }
    let mut bot = srv.bot().await?;
    let mut alice = srv.agent("alice").await?;
    let mut cust = srv.start_chat("ChatWorkStream", "Dana", json!({})).await?;
    let conv = cust.conversation.clone();
    bot.event("conversation.assigned").await?;
    cust.say(&conv, "hello").await?;
    bot.message().await?;
    escalate(&mut bot, &conv).await?;
    alice.event("conversation.assigned").await?;
    let t1 = scrape().await?;
    ensure!(value(&t1, "switchboard_connections", "role=\"bot\"") >= 1.0, "{t1}");
    ensure!(value(&t1, "switchboard_connections", "role=\"agent\"") >= 1.0, "{t1}");
    ensure!(value(&t1, "switchboard_connections", "role=\"customer\"") >= 1.0, "{t1}");
    ensure!(
        value(
            &t1,
            "switchboard_conversations",
            "state=\"active\",workstream=\"ChatWorkStream\",queue=\"CreditCardQueue\""
        ) == 1.0,
        "{t1}"
    );
    for (family, labels) in [
        ("switchboard_activities_in_total", ""),
        ("switchboard_activities_out_total", ""),
        ("switchboard_escalations_total", "rule=\"CreditCardRule\""),
        ("switchboard_queue_wait_seconds_count", "queue=\"CreditCardQueue\""),
        ("switchboard_queue_wait_seconds_count", "queue=\"BotQueue\""),
        ("switchboard_assignment_latency_seconds_count", ""),
        ("switchboard_store_commit_seconds_count", ""),
        ("switchboard_store_batch_records_sum", ""),
        // A conversation's start and its escalation are routing events: each takes the
        // engine's lock, and holds it for some time.
        ("switchboard_engine_lock_acquisitions_total", ""),
        ("switchboard_engine_lock_held_seconds_total", ""),
    ] {
        ensure!(value(&t1, family, labels) > value(&t0, family, labels), "{family}{{{labels}}} did not move:\n{t1}");
    }
    ensure!(!samples(&t1, "switchboard_queue_wait_seconds_bucket").is_empty(), "no histogram buckets");
    Ok(())
}

/// "Disconnect bot" on the built-in default: the built-in bot stays away (it does not
/// reconnect on its own) until it is connected again, then takes what waited.
#[tokio::test]
async fn the_builtin_bot_stays_disconnected_until_connected() -> Result<()> {
    let mut cfg = switchboard::config::Config::builtin_default();
    cfg.admin_token = Some(switchboard::config::Secret::new(TOKEN));
    let srv = start_on(cfg, StoreChoice::Sqlite).await;
    let admin = Admin::new(&srv);
    let mut alice = srv.agent("alice").await?;
    let mut cust = srv.start_chat("ChatWorkStream", "Dana", json!({})).await?;
    let conv = cust.conversation.clone();
    cust.message().await?; // the built-in bot's greeting
    let (s, _) =
        admin.post("/v1/admin/bots/contoso-bot/disconnect", "/v1/admin/bots/{name}/disconnect", json!(null)).await?;
    ensure!(s == 200);
    let work = alice.event("conversation.assigned").await?;
    ensure!(work["conversation"]["id"] == conv.as_str(), "{work}");
    let bots = admin.get("/v1/admin/bots", "/v1/admin/bots").await?;
    let bot = bots["bots"].as_array().unwrap().iter().find(|b| b["name"] == "contoso-bot").context("bot")?;
    ensure!(bot["state"] == "disconnected" && bot["load"] == 0, "{bot}");
    // A new customer waits: the bot does not come back by itself.
    let mut waiting = srv.start_chat("ChatWorkStream", "Eve", json!({})).await?;
    waiting.until("queue position", |v| v["name"] == "queue.position").await?;
    let one =
        admin.get(&format!("/v1/admin/conversations/{}", waiting.conversation), "/v1/admin/conversations/{id}").await?;
    ensure!(one["state"] == "waiting" && one["queue"] == "BotQueue", "{one}");
    let (s, _) = admin.post("/v1/admin/bots/contoso-bot/connect", "/v1/admin/bots/{name}/connect", json!(null)).await?;
    ensure!(s == 200);
    let greeting = waiting.message().await?;
    ensure!(greeting["from"]["role"] == "bot", "{greeting}");
    Ok(())
}

/// A hostile admin client: a huge body, a body that is not JSON or not UTF-8, unknown
/// paths; each gets a JSON refusal and the gateway carries on.
#[tokio::test]
async fn hostile_admin_bodies_are_refused() -> Result<()> {
    let srv = start_server(Some(&admin_toml())).await;
    let admin = Admin::new(&srv);
    let t = "/v1/admin/config";
    let huge = "#".repeat(2 * 1024 * 1024);
    let (s, v) = admin.call("PUT", t, t, &huge).await?;
    ensure!(s == 400 && v["error"] == "too_large", "{v}");
    let (s, v) = admin.call("POST", "/v1/admin/route", "/v1/admin/route", &huge).await?;
    ensure!(s == 400 && v["error"] == "too_large", "{v}");
    let (s, v) =
        admin.post("/v1/admin/agents/alice/presence", "/v1/admin/agents/{id}/presence", json!(["away"])).await?;
    ensure!(s == 400, "{v}");
    let (s, v) = admin.call("PUT", t, t, "[server]\nlisten = 5\n").await?;
    ensure!(s == 400 && v["message"].as_str().is_some_and(|m| m.contains("line 2")), "{v}");
    let (status, _) = http(srv.addr, "GET", "/healthz", "text/plain", "").await?;
    ensure!(status == 200);
    Ok(())
}

/// A voice call moves the call and media families.
#[tokio::test]
async fn metrics_count_voice_calls_and_media_frames() -> Result<()> {
    let toml = external_bot_with_voice()
        .replace("listen = \"127.0.0.1:8080\"\n", &format!("listen = \"127.0.0.1:8080\"\nadmin_token = \"{TOKEN}\"\n"));
    let srv = start_server(Some(&toml)).await;
    let scrape = || async { Ok::<_, anyhow::Error>(http_response(srv.addr, "GET", "/metrics", &[], "").await?.body) };
    let t0 = scrape().await?;
    let mut bot = srv.bot().await?;
    let mut caller = Client::connect(&srv.ws_url("/v1/voice"), None).await?;
    let media = json!({"encoding": "l16", "sampleRate": 16000});
    caller
        .send(json!({"type":"event","name":"session.start","value":{"workstream":"VoiceWorkStream","media":media,"context":{}}}))
        .await?;
    caller.event("session.started").await?;
    bot.event("conversation.assigned").await?;
    for _ in 0..5 {
        caller.send_raw(tokio_tungstenite::tungstenite::Message::Binary(vec![0u8; 640].into())).await?;
    }
    bot.binary().await?;
    let t1 = scrape().await?;
    ensure!(value(&t1, "switchboard_connections", "role=\"caller\"") >= 1.0, "{t1}");
    ensure!(value(&t1, "switchboard_voice_calls_active", "") >= 1.0, "{t1}");
    for family in
        ["switchboard_voice_calls_total", "switchboard_media_frames_in_total", "switchboard_media_frames_out_total"]
    {
        ensure!(value(&t1, family, "") > value(&t0, family, ""), "{family} did not move:\n{t1}");
    }
    Ok(())
}

/// A bot that goes away and one that stops answering move their counters (short grace and
/// reply timeout: the sweeper acts within a second or two; the test waits for its notice).
#[tokio::test]
async fn metrics_count_bot_failures_and_timeouts() -> Result<()> {
    let toml = admin_toml().replace(
        "listen = \"127.0.0.1:8080\"\n",
        "listen = \"127.0.0.1:8080\"\nbot_grace_secs = 1\nbot_reply_timeout_secs = 1\n",
    );
    let srv = start_server(Some(&toml)).await;
    let scrape = || async { Ok::<_, anyhow::Error>(http_response(srv.addr, "GET", "/metrics", &[], "").await?.body) };
    let t0 = scrape().await?;
    let mut bot = srv.bot().await?;
    let mut ann = srv.start_chat("ChatWorkStream", "Ann", json!({})).await?;
    bot.event("conversation.assigned").await?;
    let conv = ann.conversation.clone();
    ann.say(&conv, "anyone there?").await?;
    ann.until("the timeout notice", |v| v["text"].as_str().is_some_and(|t| t.contains("did not answer"))).await?;
    let t1 = scrape().await?;
    let family = "switchboard_bot_timeouts_total";
    ensure!(value(&t1, family, "") > value(&t0, family, ""), "{family} did not move:\n{t1}");

    let mut eve = srv.start_chat("ChatWorkStream", "Eve", json!({})).await?;
    bot.event("conversation.assigned").await?;
    bot.close().await;
    eve.until("the failure notice", |v| v["text"].as_str().is_some_and(|t| t.contains("disconnected"))).await?;
    let t2 = scrape().await?;
    let family = "switchboard_bot_failures_total";
    ensure!(value(&t2, family, "") > value(&t1, family, ""), "{family} did not move:\n{t2}");
    Ok(())
}
