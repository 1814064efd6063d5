//! The command line (SPEC §1): `serve`, `check-config` and `route`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Checked;
use crate::context::{Context, Value};

#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "An open conversation gateway: chat and voice, bot first, human handoff"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// How `serve` writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the built-in default configuration unless --config is given).
    Serve {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free one).
        #[arg(long)]
        listen: Option<SocketAddr>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Log lines as text (the default) or as JSON objects, one per line.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Chat as a customer in the terminal.
    Chat {
        /// The gateway: http://host[:port][/prefix], or https://… behind TLS (trusting the
        /// system's CAs, or those in SSL_CERT_FILE).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        #[arg(long, default_value = "ChatWorkStream")]
        workstream: String,
        /// Your name, as the bot and agents see it.
        #[arg(long, default_value = "Customer")]
        name: String,
        /// A context variable, K=V (repeatable).
        #[arg(long = "context", value_name = "K=V")]
        context: Vec<String>,
        /// Print the raw JSON frames.
        #[arg(long)]
        json: bool,
    },
    /// Work as an agent in the terminal: take assignments, reply, transfer, end.
    Agent {
        /// The gateway: http://host[:port][/prefix], or https://… behind TLS (trusting the
        /// system's CAs, or those in SSL_CERT_FILE).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Your agent id.
        #[arg(long)]
        id: String,
        /// Your secret (also from SWITCHBOARD_AGENT_SECRET); the default configuration's demo
        /// agents use "<id>-demo-secret", which is tried when neither is given.
        #[arg(long, env = "SWITCHBOARD_AGENT_SECRET", hide_env_values = true)]
        secret: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Check a configuration file: exit 0 with a summary, or 1 with one line per problem.
    CheckConfig { file: PathBuf },
    /// Dry-run routing: which rule matches and which queue a conversation would go to.
    Route {
        /// Configuration file (the built-in default if omitted).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        workstream: String,
        /// A context variable, K=V (repeatable).
        #[arg(long = "var", value_name = "K=V")]
        vars: Vec<String>,
        /// Print {"rule":…|null,"queue":…}.
        #[arg(long)]
        json: bool,
    },
}

/// Loads `--config` or the built-in default, printing problems to stderr.
pub fn load(config: Option<&PathBuf>) -> Result<Checked, ExitCode> {
    let checked = match config {
        Some(p) => crate::load::config_file(p),
        None => crate::load::config_text(crate::config::DEFAULT_TOML),
    };
    checked.map_err(|e| {
        for line in &e.0 {
            eprintln!("{line}");
        }
        ExitCode::from(1)
    })
}

pub fn check_config(file: &PathBuf) -> ExitCode {
    match load(Some(file)) {
        Ok(checked) => {
            for w in &checked.warnings {
                println!("warning: {w}");
            }
            println!("{}", checked.summary());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

pub fn route(config: Option<&PathBuf>, workstream: &str, vars: &[String], json: bool) -> ExitCode {
    let checked = match load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(ws) = checked.config.workstream(workstream) else {
        eprintln!("unknown workstream {workstream:?}");
        return ExitCode::from(1);
    };
    let mut ctx = Context::new();
    for kv in vars {
        let Some((k, v)) = kv.split_once('=') else {
            eprintln!("--var {kv:?}: expected K=V");
            return ExitCode::from(1);
        };
        let Some(ty) = ws.variable(k) else {
            eprintln!("--var {k}: workstream {workstream:?} declares no context variable {k:?}");
            return ExitCode::from(1);
        };
        match Value::parse_str(ty, v) {
            Ok(val) => {
                ctx.insert(k.to_owned(), val);
            }
            Err(e) => {
                eprintln!("--var {k}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let d = ws.route(&ctx);
    if json {
        println!("{}", serde_json::to_string(&d).unwrap_or_default());
    } else {
        match &d.rule {
            Some(rule) => println!("rule {rule:?} matched: queue {:?}", d.queue),
            None => println!("no rule matched: fallback queue {:?}", d.queue),
        }
    }
    ExitCode::SUCCESS
}
