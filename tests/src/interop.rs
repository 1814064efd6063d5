//! The real Bot Framework libraries, driven from the tests: an unmodified `botbuilder` bot
//! (`tests/interop/botbuilder/bot.js`) and an unmodified `botframework-directlinejs`
//! customer (`tests/interop/directline/customer.js`), each a Node.js child process whose
//! lines the test reads. `scripts/test.sh` installs Node and both projects' packages
//! (`npm ci` from their committed lock files).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::mpsc;

use crate::TestServer;

/// How long a test waits for a Node process to do something (it starts a runtime and
/// loads its libraries, on a busy machine).
pub const NODE_WAIT: Duration = Duration::from_secs(60);

/// The Direct Line secret the tests configure.
pub const DIRECTLINE_SECRET: &str = "dl-test-secret-0123456789";

/// The folder of the Node project `project` under `tests/interop`.
pub fn project_dir(project: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop").join(project)
}

fn interop_dir(project: &str, package: &str) -> Result<PathBuf> {
    let dir = project_dir(project);
    if !dir.join("node_modules").join(package).is_dir() {
        bail!("{} has no node_modules: run `npm ci` there (scripts/test.sh does)", dir.display());
    }
    Ok(dir)
}

/// `config` with Direct Line on, its conversations entering `workstream`.
pub fn with_directline(config: &str, workstream: &str) -> String {
    format!("{config}\n[directline]\nsecret = \"{DIRECTLINE_SECRET}\"\nworkstream = \"{workstream}\"\n")
}

/// The botbuilder bot in a child process, and the lines it prints.
pub struct NodeBot {
    _child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    pub port: u16,
}

impl NodeBot {
    /// Starts it with `env` (its Bot Framework settings, `HANDOFF`, …) and waits until it
    /// listens.
    pub async fn start(env: &[(&str, String)]) -> Result<NodeBot> {
        let dir = interop_dir("botbuilder", "botbuilder")?;
        let mut cmd = Command::new("node");
        cmd.arg("bot.js").current_dir(&dir).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
        for var in [
            "MicrosoftAppId",
            "MicrosoftAppPassword",
            "ToChannelFromBotLoginUrl",
            "ToChannelFromBotOAuthScope",
            "ToBotFromChannelTokenIssuer",
            "ToBotFromChannelOpenIdMetadataUrl",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("cannot run node (scripts/test.sh installs it)")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, mut lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut r = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = r.next_line().await {
                eprintln!("bot: {l}");
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        let first = tokio::time::timeout(NODE_WAIT, lines.recv()).await.context("the bot did not start")?;
        let port = first
            .as_deref()
            .and_then(|l| l.strip_prefix("listening "))
            .and_then(|p| p.trim().parse().ok())
            .with_context(|| format!("unexpected first line {first:?}"))?;
        Ok(NodeBot { _child: child, lines, port })
    }

    /// Its messaging endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/api/messages", self.port)
    }

    /// Waits for a line the bot prints.
    pub async fn expect(&mut self, line: &str) -> Result<()> {
        let wait = async {
            while let Some(l) = self.lines.recv().await {
                if l == line {
                    return Ok(());
                }
            }
            bail!("the bot exited before printing {line:?}")
        };
        tokio::time::timeout(NODE_WAIT, wait).await.with_context(|| format!("waiting for {line:?}"))?
    }
}

/// The Direct Line customer in a child process, with its stdout read line by line.
pub struct DirectLineCustomer {
    pub child: Child,
    out: Lines<BufReader<ChildStdout>>,
}

impl DirectLineCustomer {
    /// Starts it against `server` in `mode` (`websocket` or `polling`) for `scenario`
    /// (`handoff` or `restart`), with `env` for what the bot says (`SB_GREETING`,
    /// `SB_HANDOFF_TEXT`; the built-in bot's words by default).
    pub fn spawn(server: &TestServer, mode: &str, scenario: &str, env: &[(&str, &str)]) -> Result<DirectLineCustomer> {
        let dir = interop_dir("directline", "botframework-directlinejs")?;
        let mut cmd = Command::new("node");
        cmd.arg("customer.js")
            .current_dir(&dir)
            .env("SB_DOMAIN", format!("http://{}/v3/directline", server.addr))
            .env("SB_SECRET", DIRECTLINE_SECRET)
            .env("SB_MODE", mode)
            .env("SB_SCENARIO", scenario);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("node runs (Node.js is installed by scripts/test.sh)")?;
        let out = BufReader::new(child.stdout.take().context("stdout")?).lines();
        Ok(DirectLineCustomer { child, out })
    }

    /// The next event line, skipping progress (`saw`); an `error` line fails the test.
    pub async fn event(&mut self, want: &str) -> Result<Value> {
        loop {
            let line = tokio::time::timeout(NODE_WAIT, self.out.next_line())
                .await
                .with_context(|| format!("node said nothing for {NODE_WAIT:?} while we waited for {want}"))??
                .with_context(|| format!("node exited while we waited for {want}"))?;
            let v: Value = serde_json::from_str(&line).with_context(|| format!("node printed {line:?}"))?;
            match v["event"].as_str() {
                Some("saw") => continue,
                Some(e) if e == want => return Ok(v),
                _ => bail!("node: {v} (waiting for {want})"),
            }
        }
    }

    /// Tells it to go on (after a drop, or after the gateway restarted).
    pub async fn go(&mut self) -> Result<()> {
        let stdin = self.child.stdin.as_mut().context("stdin")?;
        stdin.write_all(b"go\n").await?;
        Ok(stdin.flush().await?)
    }
}
