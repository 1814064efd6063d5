//! The server shell: HTTP routes, WebSocket endpoints, the listener and graceful shutdown.
//!
//! A thin layer over the [`Hub`]: it parses what arrives, calls the hub, and turns errors
//! into protocol answers (an `error` event, a close code or an HTTP status) at one edge per
//! transport.

pub mod admin;
pub mod botconnector;
mod chat;
mod console;
mod directline;
pub mod listen;
mod metrics;
pub mod proxy;
pub mod respond;
mod staff;
mod throttle;
mod token;
pub mod voice;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Router};
use tokio::net::TcpListener;

use crate::auth::Signer;
use crate::config::{Config, StoreKind, SyncMode};
use crate::hub::Hub;
use crate::store::{MemoryStore, Recovered, SqliteStore, Store, StoreError};

/// Every HTTP route. `/v1/token` reads the peer's address from the request's
/// `ConnectInfo<SocketAddr>` extension (set by our accept loop) when there is one.
pub fn router(hub: Arc<Hub>, connector: &Arc<botconnector::Connector>) -> Router {
    let throttle = Arc::new(throttle::TokenThrottle::new(&hub.server));
    Router::new()
        .merge(connector.routes())
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::metrics))
        .merge(admin::routes(&hub))
        .route("/v1/token", post(token::token).layer(Extension(throttle)))
        .route("/v1/chat", get(chat::upgrade))
        .route("/v1/bot", get(staff::bot_upgrade))
        .route("/v1/agent", get(staff::agent_upgrade))
        .route("/v1/voice", get(voice::native_upgrade))
        .route("/v1/voice/twilio/{workstream}", get(voice::twilio_upgrade))
        .merge(directline::routes(&hub.server))
        .merge(console::routes())
        .with_state(hub)
}

async fn healthz(State(hub): State<Arc<Hub>>) -> impl IntoResponse {
    if hub.is_shutting_down() { (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n") } else { (StatusCode::OK, "ok\n") }
}

/// A gateway running in this process.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub hub: Arc<Hub>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Binds and starts serving in the background, with the in-memory store.
pub async fn start(cfg: Config, listen: SocketAddr) -> std::io::Result<Running> {
    start_with(cfg, listen, Arc::new(MemoryStore), Recovered::default()).await
}

/// Opens the store the configuration names (`sqlite` under `data_dir`, or `memory`).
pub fn open_store(cfg: &Config) -> Result<(Arc<dyn Store>, Recovered), StoreError> {
    match cfg.server.store {
        StoreKind::Memory => Ok((Arc::new(MemoryStore), Recovered::default())),
        StoreKind::Sqlite => {
            let (store, recovered) = SqliteStore::open(&cfg.server.data_dir, cfg.server.sync == SyncMode::Full)?;
            tracing::info!("store: {}", store.path().display());
            Ok((Arc::new(store), recovered))
        }
    }
}

/// Binds and starts serving in the background: recovers what `recovered` holds, starts the
/// built-in bots and the sweeper, then accepts connections.
pub async fn start_with(
    cfg: Config,
    listen: SocketAddr,
    store: Arc<dyn Store>,
    recovered: Recovered,
) -> std::io::Result<Running> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    start_on(cfg, addr, listen::Source::Tcp(listener), store, recovered).await
}

/// Starts serving the connections `source` yields (`addr` is where clients reach them): a
/// cluster's leader is fed by the cluster layer rather than by a listener of its own.
pub async fn start_on(
    cfg: Config,
    addr: SocketAddr,
    source: listen::Source,
    store: Arc<dyn Store>,
    recovered: Recovered,
) -> std::io::Result<Running> {
    design_filters();
    let signer = recovered.signing_key.map_or_else(Signer::random, Signer::new);
    let public_url = cfg.server.public_url.clone().unwrap_or_else(|| format!("http://{addr}"));
    let hub = Hub::new(cfg, store, signer);
    let connector = botconnector::Connector::new(hub.clone(), &public_url, recovered.channel_key)
        .await
        .map_err(std::io::Error::other)?;
    hub.recover(recovered.conversations);
    crate::hub::builtin_bot::spawn_all(&hub);
    connector.spawn_runners();
    hub.spawn_sweeper();
    hub.spawn_positions();
    hub.spawn_pacer();
    let app = router(hub.clone(), &connector);
    let server = tokio::spawn(listen::serve(source, app, hub.clone()));
    Ok(Running { addr, hub, server })
}

/// Designs the resampler's filters on a thread of their own as the process's first gateway
/// starts ([`switchboard_codecs::resample::design_all`]; about 120 ms of one core), so that
/// the first call of a rate pair does not design its filter on a runtime worker, stalling
/// that worker's other connections (3–33 ms), and any other worker whose call needs the same
/// pair meanwhile.
fn design_filters() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let designs = std::thread::Builder::new().name("codec-designs".into());
        if let Err(e) = designs.spawn(switchboard_codecs::resample::design_all) {
            tracing::warn!("resampler: its filters will be designed by the first calls: {e}");
        }
    });
}

impl Running {
    /// Stops accepting, tells every client goodbye (close 1001), lets HTTP requests in flight
    /// finish (idle HTTP connections close), waits for connections to end and flushes the
    /// store.
    pub async fn shutdown(self) {
        self.hub.shut_down();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.server).await;
        self.hub.tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), self.hub.tasks.wait()).await.is_err() {
            tracing::warn!("some connections did not close within 10 s");
        }
        if let Err(e) = self.hub.store().flush().wait().await {
            tracing::error!("store flush failed at shutdown: {e}");
        }
    }
}

/// At most the first `max` characters of `s`, for a log line that quotes what a client sent
/// (a client id, a refusal naming its input): a client cannot make one line as long as its
/// request.
pub(crate) fn clipped(s: &str, max: usize) -> &str {
    s.char_indices().nth(max).map_or(s, |(at, _)| &s[..at])
}

#[cfg(test)]
mod tests {
    #[test]
    fn clipped_cuts_on_a_character_boundary() {
        assert_eq!(super::clipped("abc", 5), "abc");
        assert_eq!(super::clipped("abc", 3), "abc");
        assert_eq!(super::clipped("héllo👋x", 6), "héllo👋");
        assert_eq!(super::clipped("👋👋", 1), "👋");
    }
}
