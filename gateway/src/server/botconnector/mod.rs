//! The Bot Connector: Switchboard as a Bot Framework channel for bots with an `endpoint`
//! (SPEC §6), so a `botbuilder` bot works unchanged.
//!
//! Such a bot is a bot user like any other: its runner (`deliver.rs`) is connected to the
//! hub through an outbox, exactly like the built-in bot's, and POSTs what it is given to
//! the bot's messaging endpoint as Bot Framework Activities (`activity.rs`). The bot
//! answers through the Bot Connector REST API the gateway serves (`inbound.rs`), which
//! makes the same hub calls a `/v1/bot` connection makes. The gateway is its own channel
//! and token issuer (`keys.rs`): it signs its calls to the bot with an RS256 JWT whose keys
//! it publishes through OpenID metadata, and the bot calls back with an access token from
//! `/v1/token`. A bot with `auth = "none"` does neither (local development).
//!
//! It lives under `server` because it speaks HTTP both ways (hyper's client out, axum's
//! routes in); the hub knows it only as a member with an outbox.

mod activity;
mod deliver;
mod inbound;
mod keys;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::config::BotAuth;
use crate::hub::Hub;
use crate::store::Record;
pub use keys::ChannelKey;

/// Where botbuilder's `ToChannelFromBotLoginUrl` points, under the gateway's public URL:
/// its MSAL client reads the OpenID metadata below it and gets tokens from `/v1/token`.
pub const LOGIN_PATH: &str = "/v1/login";

/// The Bot Connector's shared state.
pub struct Connector {
    pub hub: Arc<Hub>,
    /// `None` when no bot needs one (every Bot Framework bot has `auth = "none"`).
    key: Option<ChannelKey>,
    /// The gateway's public URL, without a trailing slash: the tokens' issuer.
    issuer: String,
    /// The same with a trailing slash, as Bot Framework channels write `serviceUrl`.
    service_url: String,
    http: deliver::Http,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").field("issuer", &self.issuer).field("key", &self.key).finish()
    }
}

impl Connector {
    /// The Bot Connector of a gateway reached at `public_url`: it loads the channel key
    /// from `stored` (or makes one and has the store keep it) if any bot needs it.
    pub async fn new(hub: Arc<Hub>, public_url: &str, stored: Option<Vec<u8>>) -> Result<Arc<Connector>, String> {
        let needs_key = hub.cfg().bots.iter().any(|b| b.endpoint.is_some() && b.auth == BotAuth::Jwt);
        let key = match (needs_key, stored) {
            (false, _) => None,
            (true, Some(der)) => Some(ChannelKey::from_pkcs8(&der)?),
            (true, None) => {
                let der = tokio::task::spawn_blocking(keys::generate).await.map_err(|e| e.to_string())??;
                let key = ChannelKey::from_pkcs8(&der)?;
                hub.store().record(Record::ChannelKey(der), None);
                Some(key)
            }
        };
        for b in hub.cfg().bots.iter().filter(|b| b.endpoint.is_some() && b.auth == BotAuth::None) {
            tracing::warn!(bot = %b.name, "auth = \"none\": calls to this bot are not signed and its calls need no token");
        }
        let bots = hub.cfg().bots.iter().any(|b| b.endpoint.is_some());
        if bots && hub.server.public_url.is_none() {
            tracing::warn!(
                "[server] public_url is not set: Bot Framework bots are told to call back at {public_url}, \
                 which only a bot on this machine may reach"
            );
        }
        let issuer = public_url.trim_end_matches('/').to_owned();
        Ok(Arc::new(Connector { service_url: format!("{issuer}/"), issuer, key, hub, http: deliver::http_client() }))
    }

    /// Starts the runner of every bot with an endpoint.
    pub fn spawn_runners(self: &Arc<Self>) {
        deliver::spawn_all(self);
    }

    /// The routes: the Bot Connector REST API, the OpenID metadata and its keys.
    pub fn routes(self: &Arc<Self>) -> Router<Arc<Hub>> {
        let login_metadata = format!("{LOGIN_PATH}/v2.0/.well-known/openid-configuration");
        Router::new()
            .route("/.well-known/openid-configuration", get(inbound::openid_configuration))
            .route(&login_metadata, get(inbound::openid_configuration))
            .route("/.well-known/jwks.json", get(inbound::jwks))
            .route("/v3/conversations/{conversation}/activities", post(inbound::send_to_conversation))
            .route("/v3/conversations/{conversation}/activities/{activity}", post(inbound::reply_to_activity))
            .layer(axum::Extension(self.clone()))
    }
}
