//! The `switchboard` binary: a thin `main` over the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use switchboard::cli::{self, Cli, Command};
use switchboard::server;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// jemalloc, not the system's allocator: in a burst of escalations glibc's malloc took 13 %
/// of the gateway's samples (`malloc_consolidate` and `unlink_chunk` merging free chunks
/// around every frame and saved state of a kilobyte or more), and jemalloc cut the CPU per
/// escalation by about a fifth, with less memory per idle conversation (BENCHMARKS.md).
/// Built with `unprefixed_malloc_on_supported_platforms`, jemalloc is also the C library's
/// `malloc`, so SQLite's page cache and B-tree balancing no longer go through glibc, whose
/// per-thread arena grew and trimmed its heap (`grow_heap`'s `mprotect`, page faults) under
/// the store writer: a fifth of that thread's samples in a handoff burst, about a tenth of the
/// gateway's CPU per escalation.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
        Command::Serve { config, listen, data_dir, log_format } => {
            let log = tracing_subscriber::registry().with(log_filter(std::env::var("RUST_LOG").ok().as_deref()));
            let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
            match log_format {
                cli::LogFormat::Json => log.with(fmt.json().with_current_span(true).with_span_list(false)).init(),
                cli::LogFormat::Text => {
                    log.with(fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))).init()
                }
            }
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
            // Freed memory goes back to the system from jemalloc's own threads, not in
            // passing from whichever connection frees or allocates next.
            if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
                tracing::warn!("allocator: background purging not enabled: {e}");
            }
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            rt.block_on(serve(checked.config, listen, config))
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

async fn serve(cfg: switchboard::config::Config, listen: std::net::SocketAddr, file: Option<PathBuf>) -> ExitCode {
    let signals = Signals::install();
    if cfg.cluster.is_some() {
        return serve_cluster(cfg, listen, signals).await;
    }
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
    signals.wait(&running.hub, file.as_deref()).await;
    tracing::info!("shutting down: no new connections; closing clients and flushing the store");
    running.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// `serve` with `[cluster]`: a node of several (see `switchboard::cluster`). SIGHUP does
/// not reload here: the nodes share one configuration, changed by restarting them in turn
/// (`PUT /v1/admin/config` changes the leader's until it hands over).
async fn serve_cluster(cfg: switchboard::config::Config, listen: std::net::SocketAddr, signals: Signals) -> ExitCode {
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        signals.terminated().await;
        tracing::info!("shutting down: handing over and closing clients");
        s.cancel();
    });
    let code =
        switchboard::cluster::serve(cfg, listen, stop, |addr| tracing::info!("listening on http://{addr}")).await;
    tracing::info!("stopped");
    code
}

/// The signals `serve` answers, installed before it says it is listening: a SIGHUP sent
/// as soon as it is up must reload, not end the process (the default action).
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals { term: signal(SignalKind::terminate()).ok(), hup: signal(SignalKind::hangup()).ok() }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Waits for SIGTERM or SIGINT (a SIGHUP is logged and ignored).
    async fn terminated(self) {
        self.until_terminated(|| tracing::warn!("config: SIGHUP ignored in cluster mode: restart the nodes in turn"))
            .await;
    }

    /// Waits for SIGTERM or SIGINT; meanwhile each SIGHUP re-reads the `--config` file and
    /// applies it (see `server::admin::config::reload_file`).
    async fn wait(self, hub: &switchboard::hub::Hub, file: Option<&Path>) {
        self.until_terminated(|| match file {
            Some(path) => server::admin::config::reload_file(hub, path),
            None => tracing::warn!("config: SIGHUP, but serve runs the built-in default (no --config file to re-read)"),
        })
        .await;
    }

    /// Waits for SIGTERM or SIGINT, calling `on_hup` at each SIGHUP.
    async fn until_terminated(mut self, mut on_hup: impl FnMut()) {
        #[cfg(unix)]
        {
            let (Some(term), Some(hup)) = (self.term.as_mut(), self.hup.as_mut()) else {
                let _ = tokio::signal::ctrl_c().await;
                return;
            };
            loop {
                tokio::select! {
                    _ = term.recv() => return,
                    _ = tokio::signal::ctrl_c() => return,
                    _ = hup.recv() => on_hup(),
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = (&mut self, &mut on_hup);
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The log filter `RUST_LOG` asks for (`info` when it is unset, empty or not understood).
/// Directives by target and level are a [`Targets`] filter: a connection's span is entered
/// on every poll of its task (50 times a second for a call leg), and an `EnvFilter` looks
/// each entered and exited span up in a map under a lock that every thread shares (1.4 % of
/// the gateway's samples with 500 Twilio calls). Only directives on spans or their fields
/// (`[conversation{workstream=sales}]=debug`) need the `EnvFilter`, and get it.
fn log_filter(spec: Option<&str>) -> Box<dyn Layer<Registry> + Send + Sync> {
    let spec = spec.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("info");
    match targets(spec) {
        Some(t) => t.boxed(),
        None => EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new("info")).boxed(),
    }
}

/// `spec` as a [`Targets`] filter, if it names targets and levels only.
fn targets(spec: &str) -> Option<Targets> {
    if spec.contains(['[', '{']) { None } else { spec.parse().ok() }
}

#[cfg(test)]
mod tests {
    use super::targets;
    use tracing::Level;

    #[test]
    fn targets_and_levels_need_no_env_filter() {
        let t = targets("info").expect("a level");
        assert!(t.would_enable("switchboard::hub", &Level::INFO));
        assert!(!t.would_enable("switchboard::hub", &Level::DEBUG));
        let t = targets("warn,switchboard::voice=trace").expect("targets");
        assert!(t.would_enable("switchboard::voice::pacer", &Level::TRACE));
        assert!(!t.would_enable("switchboard::hub", &Level::INFO));
        assert!(t.would_enable("hyper", &Level::WARN));
    }

    #[test]
    fn span_directives_and_nonsense_are_not_targets() {
        assert!(targets("[conversation{workstream=sales}]=debug").is_none());
        assert!(targets("a=b=c").is_none());
    }
}
