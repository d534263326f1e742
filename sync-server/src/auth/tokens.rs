//! Access tokens: short-lived HS256 JWTs. A full token speaks for a user on
//! every list of their families; a read-only token (a vendor link) may only
//! read one list and stays valid while its issuer is a member.
//!
//! Refresh tokens and invitation codes are random strings of which only a
//! SHA-256 hash is stored. The successor of a refresh token is derived from
//! it with a keyed hash, so a refresh retried within the grace period (a
//! lost response, two tabs) gets the same successor again.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

const ISSUER: &str = "larder";
/// Shortest secret accepted (HS256 wants at least its hash size).
pub const MIN_SECRET_BYTES: usize = 32;
const SECRET_FILE: &str = "jwt-secret";

/// What a token lets its bearer do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Everything the user may do.
    Full,
    /// Read one list (the `list` claim).
    Read,
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user (for a read-only token: the member who issued it).
    pub sub: Uuid,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
    pub scope: Scope,
    /// The one list a read-only token may read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<Uuid>,
    /// A read-only token's link id: its row says whether it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<Uuid>,
}

impl Claims {
    /// When the token stops being valid.
    pub fn expires_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.exp, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token invalid")]
    Invalid,
}

/// Signs and checks access tokens.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Key of the refresh-token successor derivation (derived from the
    /// secret, never the secret itself).
    successor_key: [u8; 32],
    /// Key of share page tokens (derived from the secret).
    page_key: [u8; 32],
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

impl TokenKeys {
    /// Keys from a secret of at least [`MIN_SECRET_BYTES`].
    pub fn from_secret(secret: &[u8]) -> anyhow::Result<TokenKeys> {
        anyhow::ensure!(
            secret.len() >= MIN_SECRET_BYTES,
            "the token secret must be at least {MIN_SECRET_BYTES} bytes"
        );
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        // Expiry is exact: a socket is closed at `exp`, so a request must not
        // be accepted after it either.
        validation.leeway = 0;
        let mut successor = Sha256::new();
        successor.update(b"larder refresh-token successor key\0");
        successor.update(secret);
        let mut page = Sha256::new();
        page.update(b"larder share page key\0");
        page.update(secret);
        Ok(TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            successor_key: successor.finalize().into(),
            page_key: page.finalize().into(),
        })
    }

    /// The configured secret, or the development secret kept in
    /// `data_dir` (generated on first use, with a warning).
    pub fn load(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<TokenKeys> {
        if let Some(secret) = configured {
            return TokenKeys::from_secret(secret.as_bytes()).context("LARDER_JWT_SECRET");
        }
        let path = data_dir.join(SECRET_FILE);
        let secret = match std::fs::read_to_string(&path) {
            Ok(secret) => secret.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir)
                    .with_context(|| format!("cannot create {}", data_dir.display()))?;
                let secret = random_token(48);
                write_private(&path, &secret)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                secret
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        tracing::warn!(
            path = %path.display(),
            "no LARDER_JWT_SECRET configured: using the development secret in the data directory; \
             set LARDER_JWT_SECRET (the same on every replica) in production"
        );
        TokenKeys::from_secret(secret.as_bytes())
    }

    /// A full access token for `user` valid for `ttl`.
    pub fn issue(&self, user: Uuid, ttl: Duration) -> (String, DateTime<Utc>) {
        self.sign(user, Scope::Full, None, expiry(ttl))
    }

    /// A read-only token for one list, issued by the member `user` as the
    /// link `link_id`, valid until `expires_at`.
    pub fn issue_read_only(
        &self,
        user: Uuid,
        list: Uuid,
        link_id: Uuid,
        expires_at: DateTime<Utc>,
    ) -> String {
        let claims = Claims {
            sub: user,
            iss: ISSUER.to_owned(),
            iat: Utc::now().timestamp(),
            exp: expires_at.timestamp(),
            scope: Scope::Read,
            list: Some(list),
            jti: Some(link_id),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing does not fail")
    }

    /// The refresh token that replaces `refresh_token`: the same every time
    /// for the same token, unguessable without the server's secret.
    pub fn successor_refresh_token(&self, refresh_token: &str) -> String {
        use hmac::{Mac, SimpleHmac};
        let mut mac = SimpleHmac::<Sha256>::new_from_slice(&self.successor_key)
            .expect("HMAC takes a key of any length");
        mac.update(refresh_token.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// The token of a share's vendor page (`/s/{token}`): 128 bits derived
    /// from the share id with the server's secret, so it is never stored
    /// (only its hash is, to find the share) yet can be shown again.
    pub fn share_page_token(&self, share_id: Uuid) -> String {
        use hmac::{Mac, SimpleHmac};
        let mut mac = SimpleHmac::<Sha256>::new_from_slice(&self.page_key)
            .expect("HMAC takes a key of any length");
        mac.update(b"share page\0");
        mac.update(share_id.as_bytes());
        URL_SAFE_NO_PAD.encode(&mac.finalize().into_bytes()[..16])
    }

    /// A token with any expiry, in the past too (tests of expiry use it).
    pub fn sign(
        &self,
        user: Uuid,
        scope: Scope,
        list: Option<Uuid>,
        expires_at: DateTime<Utc>,
    ) -> (String, DateTime<Utc>) {
        let claims = Claims {
            sub: user,
            iss: ISSUER.to_owned(),
            iat: Utc::now().timestamp(),
            exp: expires_at.timestamp(),
            scope,
            list,
            jti: None,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing does not fail");
        (token, claims.expires_at())
    }

    /// Checks signature, issuer and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            // Expired from its `exp` second on, the moment a socket bearing
            // it is closed (the library accepts the `exp` second itself).
            Ok(data) if data.claims.exp <= Utc::now().timestamp() => Err(TokenError::Expired),
            Ok(data) => Ok(data.claims),
            Err(e) => match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => Err(TokenError::Expired),
                _ => Err(TokenError::Invalid),
            },
        }
    }
}

fn expiry(ttl: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
}

/// `bytes` random bytes as URL-safe base64.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// The stored form of a refresh token or invitation code.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::from_secret(&[7u8; 32]).expect("keys")
    }

    #[test]
    fn a_token_round_trips_and_a_tampered_one_does_not() {
        let keys = keys();
        let user = Uuid::now_v7();
        let (token, _) = keys.issue(user, Duration::from_secs(60));
        let claims = keys.verify(&token).expect("valid");
        assert_eq!(
            (claims.sub, claims.scope, claims.list),
            (user, Scope::Full, None)
        );
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(keys.verify(&tampered), Err(TokenError::Invalid));
        let other = TokenKeys::from_secret(&[8u8; 32]).expect("keys");
        assert_eq!(other.verify(&token), Err(TokenError::Invalid));
        assert_eq!(keys.verify("not a token"), Err(TokenError::Invalid));
    }

    #[test]
    fn an_expired_token_is_refused_as_expired() {
        let keys = keys();
        let (token, _) = keys.sign(
            Uuid::now_v7(),
            Scope::Full,
            None,
            Utc::now() - chrono::Duration::seconds(1),
        );
        assert_eq!(keys.verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(TokenKeys::from_secret(b"short").is_err());
    }

    #[test]
    fn the_development_secret_is_generated_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("larder-secret-{}", Uuid::new_v4()));
        let first = TokenKeys::load(None, &dir).expect("generated");
        let second = TokenKeys::load(None, &dir).expect("read back");
        let (token, _) = first.issue(Uuid::now_v7(), Duration::from_secs(60));
        assert!(second.verify(&token).is_ok());
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_refresh_token_always_has_the_same_successor_under_one_secret() {
        let keys = keys();
        let first = keys.successor_refresh_token("token-a");
        assert_eq!(first, keys.successor_refresh_token("token-a"));
        assert_ne!(first, keys.successor_refresh_token("token-b"));
        let other = TokenKeys::from_secret(&[9u8; 40]).expect("keys");
        assert_ne!(first, other.successor_refresh_token("token-a"));
        assert!(first.len() >= 43, "256 bits");
    }

    #[test]
    fn a_read_only_token_carries_its_link() {
        let keys = keys();
        let (user, list, link) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let token = keys.issue_read_only(user, list, link, Utc::now() + chrono::Duration::hours(1));
        let claims = keys.verify(&token).expect("valid");
        assert_eq!(claims.scope, Scope::Read);
        assert_eq!((claims.list, claims.jti), (Some(list), Some(link)));
    }

    #[test]
    fn secrets_are_stored_as_hashes() {
        let code = random_token(16);
        assert_eq!(code.len(), 22);
        assert_eq!(hash_secret(&code).len(), 64);
        assert_ne!(hash_secret(&code), hash_secret(&random_token(16)));
    }
}
