//! Access tokens: HMAC-SHA256 signed, expiring, checked in constant time.
//!
//! A token is `base64url(claims JSON) "." base64url(HMAC-SHA256(key, claims))`. Bots and
//! agents get one from `POST /v1/token` (OAuth2 client credentials); customers get one in
//! `session.started`, bound to their conversation, to resume it. The key is random per
//! process unless the data directory holds one, so tokens do not outlive the key.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Who a token speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Principal {
    Bot,
    Agent,
    Customer,
    /// A Direct Line client's conversation token (`sub`: the conversation id; generation 0
    /// before the conversation is started, 1 after).
    #[serde(rename = "dl")]
    DirectLine,
    /// The short-lived credential in a Direct Line `streamUrl` (`sub`: the conversation id).
    #[serde(rename = "dls")]
    DirectLineStream,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The bot's name, the agent's id, or the customer's conversation id.
    pub sub: String,
    pub kind: Principal,
    /// Expiry, in milliseconds since the Unix epoch.
    pub exp: u64,
    /// A customer token's generation: each `session.started` issues the next one, and only
    /// the conversation's current generation resumes it (the old token stops working).
    #[serde(default, rename = "gen", skip_serializing_if = "is_zero")]
    pub generation: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("bad token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
}

#[derive(Clone)]
pub struct Signer {
    key: [u8; 32],
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(…)")
    }
}

impl Signer {
    pub fn new(key: [u8; 32]) -> Signer {
        Signer { key }
    }

    pub fn random() -> Signer {
        Signer { key: rand::random() }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail.
        <HmacSha256 as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!())
    }

    pub fn issue(&self, claims: &Claims) -> String {
        let body = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        format!("{body}.{sig}")
    }

    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Claims, TokenError> {
        let (body, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let sig = B64.decode(sig).map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(body.as_bytes());
        // verify_slice compares in constant time.
        mac.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        let json = B64.decode(body).map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if now_ms >= claims.exp {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_tamper_and_expiry() {
        let s = Signer::random();
        let c = Claims { sub: "alice".into(), kind: Principal::Agent, exp: 1_000, generation: 0 };
        let t = s.issue(&c);
        assert_eq!(s.verify(&t, 999), Ok(c.clone()));
        assert_eq!(s.verify(&t, 1_000), Err(TokenError::Expired));
        let forged = Claims { sub: "bob".into(), ..c };
        let body = B64.encode(serde_json::to_vec(&forged).unwrap());
        let sig = t.split_once('.').unwrap().1;
        assert_eq!(s.verify(&format!("{body}.{sig}"), 0), Err(TokenError::BadSignature));
        assert_eq!(Signer::random().verify(&t, 0), Err(TokenError::BadSignature));
        assert_eq!(s.verify("nonsense", 0), Err(TokenError::Malformed));
    }
}
