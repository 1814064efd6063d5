//! The web console in a real browser: Debian's Chromium driven headless by `playwright-core`
//! (`tests/interop/console/console.js`; `scripts/test.sh` installs both) through a whole
//! handoff on the built-in default configuration — a customer on the widget page, the
//! built-in bot, an agent on the agent page who replies and ends with a survey, and the
//! customer's rating, and the supervisor page with the queues, the agents and the
//! conversation's routing history. Screenshots of every page are kept in
//! `target/screenshots/`.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use switchboard_tests::interop::{NODE_WAIT, project_dir};
use switchboard_tests::start_server;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots")
}

/// Runs the browser script against a gateway on the default configuration and returns
/// the lines it printed.
async fn browse(config: &str, env: &[(&str, &str)]) -> Result<Vec<Value>> {
    let server = start_server(Some(config)).await;
    let dir = project_dir("console");
    if !dir.join("node_modules/playwright-core").is_dir() {
        bail!("{} has no node_modules: run `npm ci` there (scripts/test.sh does)", dir.display());
    }
    let shots = screenshots();
    std::fs::create_dir_all(&shots)?;
    let mut cmd = Command::new("node");
    cmd.arg("console.js")
        .current_dir(&dir)
        .env("SB_URL", format!("http://{}", server.addr))
        .env("SB_SHOTS", &shots)
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().context("node runs (scripts/test.sh installs it)")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut said = Vec::new();
    loop {
        let line = tokio::time::timeout(NODE_WAIT * 2, lines.next_line())
            .await
            .with_context(|| format!("the browser script said nothing for {:?}; so far {said:?}", NODE_WAIT * 2))??;
        let Some(line) = line else { break };
        let v: Value = serde_json::from_str(&line).with_context(|| format!("the script printed {line:?}"))?;
        match v["event"].as_str() {
            Some("error") | Some("pageerror") => bail!("in the browser: {}", v["message"]),
            Some("done") => {
                said.push(v);
                break;
            }
            _ => said.push(v),
        }
    }
    let status = tokio::time::timeout(NODE_WAIT, child.wait()).await??;
    assert!(status.success(), "the browser script exited with {status}: {said:?}");
    Ok(said)
}

const ADMIN_TOKEN: &str = "console-test-admin-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_an_agent_and_a_supervisor_run_the_seed_sample_in_the_browser() -> Result<()> {
    let config = switchboard::config::DEFAULT_TOML.replacen(
        "[server]\n",
        &format!("[server]\nadmin_token = \"{ADMIN_TOKEN}\"\n"),
        1,
    );
    assert!(config.contains(ADMIN_TOKEN), "the default configuration has a [server] section");
    let said = browse(&config, &[("SB_ADMIN_TOKEN", ADMIN_TOKEN)]).await?;
    let steps: Vec<&str> = said.iter().filter_map(|v| v["event"].as_str()).collect();
    assert!(steps.ends_with(&["done"]), "{steps:?}");
    assert!(said.iter().any(|v| v["handedOver"] == true), "the bot handed the customer over: {said:?}");
    assert!(said.iter().any(|v| v["replied"] == true), "the agent's reply reached the customer: {said:?}");
    assert!(said.iter().any(|v| v["rated"] == 5), "the customer rated after the agent ended: {said:?}");
    let routing = said.iter().find(|v| v["event"] == "supervisor").context("the supervisor step")?;
    let rows: Vec<&str> =
        routing["routing"].as_array().context("routing rows")?.iter().filter_map(Value::as_str).collect();
    assert!(rows.iter().any(|r| r.contains("BotQueue")), "the first decision sent it to the bot: {rows:?}");
    assert!(
        rows.iter().any(|r| r.contains("escalation") && r.contains("alice")),
        "the escalation's went to alice: {rows:?}"
    );
    for page in ["start", "agent", "widget", "supervisor"] {
        let png = std::fs::read(screenshots().join(format!("{page}.png")))?;
        assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "a screenshot of the {page} page");
    }
    Ok(())
}
