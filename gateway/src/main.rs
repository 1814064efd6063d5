//! The `switchboard` binary: a thin `main` over the library.

use std::process::ExitCode;

use clap::Parser;
use switchboard::cli::{self, Cli, Command};
use switchboard::server;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = Cli::parse();
    match args.command {
        Command::CheckConfig { file } => cli::check_config(&file),
        Command::Chat { url, workstream, name, context, json } => {
            let context = match context
                .iter()
                .map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or(kv))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(c) => c,
                Err(kv) => {
                    eprintln!("--context {kv:?}: expected K=V");
                    return ExitCode::from(1);
                }
            };
            let opts = switchboard::client::chat::ChatOptions { url, workstream, name, context, json };
            client_runtime(switchboard::client::chat::run(opts))
        }
        Command::Agent { url, id, secret, json } => {
            let secret = secret.unwrap_or_else(|| {
                eprintln!("(no --secret given: trying the demo secret \"{id}-demo-secret\")");
                format!("{id}-demo-secret")
            });
            client_runtime(switchboard::client::agent::run(switchboard::client::agent::AgentOptions {
                url,
                id,
                secret,
                json,
            }))
        }
        Command::Route { config, workstream, vars, json } => cli::route(config.as_ref(), &workstream, &vars, json),
        Command::Serve { config, listen, data_dir } => {
            tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            let mut checked = match cli::load(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            for w in &checked.warnings {
                tracing::warn!("config: {w}");
            }
            if let Some(d) = data_dir {
                checked.config.server.data_dir = d;
            }
            let listen = match listen {
                Some(l) => l,
                None => match checked.config.server.listen.parse() {
                    Ok(l) => l,
                    Err(_) => {
                        eprintln!("server: listen {:?} is not an address", checked.config.server.listen);
                        return ExitCode::from(1);
                    }
                },
            };
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            rt.block_on(serve(checked.config, listen))
        }
    }
}

fn client_runtime(f: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => {
            let code = rt.block_on(f);
            // The stdin reader sits in a blocking read that cannot be cancelled: do not wait for it.
            rt.shutdown_background();
            code
        }
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            ExitCode::from(1)
        }
    }
}

async fn serve(cfg: switchboard::config::Config, listen: std::net::SocketAddr) -> ExitCode {
    let (store, recovered) = match server::open_store(&cfg) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(1);
        }
    };
    let running = match server::start_with(cfg, listen, store, recovered).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!("listening on http://{}", running.addr);
    wait_for_signal().await;
    tracing::info!("shutting down: no new connections; closing clients and flushing the store");
    running.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
