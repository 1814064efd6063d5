//! Access tokens as the hub issues and checks them: a bot's or agent's from its client
//! credentials (`/v1/token`), and a customer's resume token, one generation per
//! `session.started`.

use std::sync::Arc;

use super::HubError;
use super::*;
use crate::auth::{Claims, Principal};

impl Hub {
    /// Checks a bearer token for a bot or agent connection.
    pub fn authenticate(&self, token: &str, want: Principal) -> Result<Arc<str>, HubError> {
        let claims =
            self.signer.verify(token, self.clock.now_ms()).map_err(|e| HubError::credentials(e.to_string()))?;
        if claims.kind != want {
            return Err(HubError::not_allowed(
                format!("a {:?} token cannot open this endpoint", claims.kind).to_lowercase(),
            ));
        }
        {
            let engine = self.engine.lock();
            // A token outlives a configuration that removed its bot or agent.
            if engine.member_kind(&claims.sub).is_none() {
                return Err(HubError::credentials("no such bot or agent in the running configuration"));
            }
            if want == Principal::Bot && engine.is_disabled(&claims.sub) {
                return Err(HubError::not_allowed("this bot was disconnected by an administrator"));
            }
        }
        Ok(Arc::from(claims.sub))
    }

    /// OAuth2 client credentials: a bot's app_id or an agent's id, and its secret.
    pub fn issue_token(&self, client_id: &str, client_secret: &str) -> Option<(String, u64)> {
        // A built-in bot runs inside the gateway; nobody signs in as it.
        let cfg = self.cfg();
        let bot = cfg.bots.iter().find(|b| b.app_id == client_id && b.builtin.is_none());
        let (sub, kind, secret) = if let Some(b) = bot {
            (b.name.clone(), Principal::Bot, b.secret.as_ref())
        } else if let Some(a) = cfg.agents.iter().find(|a| a.id == client_id) {
            (a.id.clone(), Principal::Agent, a.secret.as_ref())
        } else {
            // Compare against a dummy all the same, so timing does not reveal which ids exist.
            let _ = crate::config::Secret::new("x".repeat(32)).matches(client_secret);
            return None;
        };
        if !secret?.matches(client_secret) {
            return None;
        }
        let ttl = self.server.token_ttl_secs;
        let exp = self.clock.now_ms() + ttl * 1000;
        Some((self.signer.issue(&Claims { sub, kind, exp, generation: 0 }), ttl))
    }

    /// The token a customer resumes conversation `id` with, generation `generation`.
    pub(super) fn customer_token(&self, id: &str, generation: u64) -> String {
        let exp = self.clock.now_ms() + self.server.customer_token_ttl_secs * 1000;
        self.signer.issue(&Claims { sub: id.to_owned(), kind: Principal::Customer, exp, generation })
    }
}
