//! The gateway as a Bot Framework channel's token issuer: its RSA key, the RS256 JWTs it
//! signs for its calls to a bot, and the OpenID metadata and JWKS a bot verifies them with.
//!
//! The key pair is generated once (with the `rsa` crate: ring cannot generate RSA keys) and
//! kept in the store beside the HMAC signing key, so a restart keeps the same key and the
//! bots' cached JWKS stay valid; with the in-memory store it lives as long as the process.
//! Signing is ring's (constant time). The key id is derived from the public key, so a new
//! key is a new `kid` that botbuilder refetches the JWKS for.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// RSA modulus size, in bits.
const BITS: usize = 2048;

/// How long a token on a call to a bot is valid.
pub const TOKEN_SECS: u64 = 3600;

/// The channel's signing key.
pub struct ChannelKey {
    pair: RsaKeyPair,
    kid: String,
    n: String,
    e: String,
}

impl std::fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChannelKey({})", self.kid)
    }
}

/// Generates a new key pair as PKCS#8 DER (a few hundred milliseconds: run it off the
/// runtime's worker threads).
pub fn generate() -> Result<Vec<u8>, String> {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, BITS).map_err(|e| e.to_string())?;
    Ok(key.to_pkcs8_der().map_err(|e| e.to_string())?.as_bytes().to_vec())
}

impl ChannelKey {
    /// The key from its PKCS#8 DER form.
    pub fn from_pkcs8(der: &[u8]) -> Result<ChannelKey, String> {
        let pair = RsaKeyPair::from_pkcs8(der).map_err(|e| format!("the channel key is unusable: {e}"))?;
        let public: ring::rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
        let kid = B64.encode(&Sha256::digest(&public.n)[..16]);
        Ok(ChannelKey { kid, n: B64.encode(&public.n), e: B64.encode(&public.e), pair })
    }

    /// A compact JWS (RS256) of `claims`.
    pub fn sign(&self, claims: &Value) -> Result<String, String> {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
        let mut input = B64.encode(header.to_string());
        input.push('.');
        input.push_str(&B64.encode(claims.to_string()));
        let mut sig = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), input.as_bytes(), &mut sig)
            .map_err(|_| "RSA signing failed".to_owned())?;
        input.push('.');
        input.push_str(&B64.encode(sig));
        Ok(input)
    }

    /// The token on a call to the bot `app_id`: what botbuilder's channel validation checks
    /// (`iss`, `aud`, the expiry, and `serviceurl` equal to the activity's `serviceUrl`). No
    /// `ver` claim: with one, botbuilder would take it for a skill's token.
    pub fn bot_token(&self, issuer: &str, app_id: &str, service_url: &str, now_secs: u64) -> Result<String, String> {
        self.sign(&json!({
            "iss": issuer,
            "aud": app_id,
            "serviceurl": service_url,
            "iat": now_secs,
            "nbf": now_secs.saturating_sub(300),
            "exp": now_secs + TOKEN_SECS,
        }))
    }

    /// The JWKS document.
    pub fn jwks(&self) -> Value {
        json!({"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": self.n, "e": self.e}]})
    }
}

/// The OpenID metadata: the issuer and where its keys are, for a bot's channel validation
/// (`ToBotFromChannelOpenIdMetadataUrl`), and the token endpoint, for botbuilder's MSAL
/// client (which discovers it under `ToChannelFromBotLoginUrl`).
pub fn openid_configuration(public_url: &str) -> Value {
    json!({
        "issuer": public_url,
        "jwks_uri": format!("{public_url}/.well-known/jwks.json"),
        "token_endpoint": format!("{public_url}/v1/token"),
        "authorization_endpoint": format!("{public_url}{}/oauth2/v2.0/authorize", super::LOGIN_PATH),
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
        "scopes_supported": [format!("{public_url}/.default")],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_with_the_published_key() {
        let key = ChannelKey::from_pkcs8(&generate().unwrap()).unwrap();
        let t = key.bot_token("http://gw", "app-1", "http://gw/", 1_000).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
        let claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(claims["aud"], "app-1");
        assert_eq!(claims["serviceurl"], "http://gw/");
        assert!(claims.get("ver").is_none());
        let jwk = &key.jwks()["keys"][0];
        assert_eq!(header["kid"], jwk["kid"]);
        let n = B64.decode(jwk["n"].as_str().unwrap()).unwrap();
        let e = B64.decode(jwk["e"].as_str().unwrap()).unwrap();
        let public = ring::signature::RsaPublicKeyComponents { n: &n, e: &e };
        let sig = B64.decode(parts[2]).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        public.verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, signed.as_bytes(), &sig).unwrap();
        assert!(public.verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, b"other", &sig).is_err());
    }
}
