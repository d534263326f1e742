//! The REST API under `/v1`: accounts, families, lists. Every handler
//! takes its input through the extractors here, so every refusal is a JSON
//! error with the right status: [`Caller`] (a bearer token), [`ApiJson`]
//! (a strictly validated body), [`ApiPath`] and [`ApiQuery`].
//!
//! - [`accounts`]: sign-up, login, refresh, logout, `me`.
//! - [`families`]: families, members, invitations.
//! - [`lists`]: list rows and their documents, read-only tokens.
//! - [`items`]: items and orders, read from the projection, written
//!   through the document.
//! - [`openapi`]: the OpenAPI description at `/v1/openapi.json`.

pub mod accounts;
pub mod families;
pub mod items;
pub mod links;
pub mod list_access;
pub mod lists;
pub mod openapi;

use std::net::{IpAddr, SocketAddr};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::tokens::{Scope, TokenError};
use crate::error::ApiError;
use crate::ratelimit::Limit;

/// Largest JSON body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(accounts::router())
        .merge(families::router())
        .merge(lists::router())
        .merge(links::router())
        .merge(items::router())
        .merge(openapi::router())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// The authenticated user of a request (`Authorization: Bearer`). Only
/// full tokens are accepted here; read-only tokens only sync.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub user_id: Uuid,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "token_required",
                "send an access token as Authorization: Bearer <token>",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "token_invalid",
                    "the Authorization header must be `Bearer <token>`",
                )
            })?;
        let claims = state.tokens.verify(token).map_err(|e| match e {
            TokenError::Expired => {
                ApiError::unauthorized("token_expired", "the access token expired; refresh it")
            }
            TokenError::Invalid => {
                ApiError::unauthorized("token_invalid", "the access token is invalid")
            }
        })?;
        if claims.scope != Scope::Full {
            return Err(ApiError::forbidden(
                "read_only_token",
                "a read-only token may only sync its list",
            ));
        }
        Ok(Caller {
            user_id: claims.sub,
        })
    }
}

/// Checks of a request body beyond its shape.
pub trait Validate {
    /// `Err(message)` naming the offending field.
    fn validate(&self) -> Result<(), String>;
}

/// A JSON body: `application/json`, at most [`MAX_BODY_BYTES`], no unknown
/// fields (each body type denies them), valid per [`Validate`]. Keeps the
/// raw bytes for idempotency hashing.
#[derive(Debug)]
pub struct ApiJson<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ));
        }
        let raw = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the body must be at most {MAX_BODY_BYTES} bytes"),
                )
            } else {
                ApiError::bad_request("invalid_body", "the body could not be read")
            }
        })?;
        let value: T = serde_json::from_slice(&raw).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Syntax | Category::Eof | Category::Io => {
                    ApiError::bad_request("invalid_json", format!("malformed JSON: {e}"))
                }
                Category::Data => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_body",
                    e.to_string(),
                ),
            }
        })?;
        value.validate().map_err(ApiError::invalid)?;
        Ok(ApiJson { value, raw })
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

/// Path parameters; a malformed one (e.g. not a UUID) is a 400.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

/// Query parameters; unknown or malformed ones are a 400.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// The client's address: the peer's, or the last `X-Forwarded-For` entry
/// (the one the trusted proxy appended) when configured to trust it.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.config.rate_limits.trust_forwarded_for
            && let Some(ip) = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                // The proxy appends the address it saw: the last entry is the
                // only one a client cannot forge.
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse().ok())
        {
            return Ok(ClientIp(ip));
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Ok(ClientIp(peer))
    }
}

impl AppState {
    /// Counts a request against `limit` for `key`; 429 when over it.
    pub async fn rate_limit(&self, key: &str, per_minute: u32) -> Result<(), ApiError> {
        self.limiter
            .check(key, Limit { per_minute })
            .await
            .map_err(|retry_after| ApiError::RateLimited { retry_after })
    }

    /// Counts a writing request of `caller`.
    pub async fn limit_writes(&self, caller: &Caller) -> Result<(), ApiError> {
        self.rate_limit(
            &format!("write:{}", caller.user_id),
            self.config.rate_limits.writes_per_minute,
        )
        .await
    }

    /// Counts an account request from `ip`.
    pub async fn limit_auth(&self, ip: ClientIp) -> Result<(), ApiError> {
        self.rate_limit(
            &format!("auth:{}", ip.0),
            self.config.rate_limits.auth_per_minute,
        )
        .await
    }
}

/// Largest page of a paginated listing.
pub const MAX_PAGE: i64 = 200;

/// The page size asked for (default 50), checked.
pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(50);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1 to {MAX_PAGE}"),
        ))
    }
}

/// Cuts `rows` (read with `limit + 1`) to a page; the cursor of the next
/// page, from the page's last row, when there is one.
pub fn next_page<T, C>(rows: &mut Vec<T>, limit: i64, cursor: impl Fn(&T) -> C) -> Option<C> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(cursor)
    } else {
        None
    }
}

/// The `Idempotency-Key` header, if sent: 1 to 255 visible ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
        })?;
    Ok(Some(key.to_owned()))
}

/// Hex SHA-256 of a request body.
pub fn body_hash(raw: &[u8]) -> String {
    Sha256::digest(raw)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Validation helpers shared by the body types.
pub mod check {
    /// A name people type: trimmed non-empty, at most `max` characters,
    /// no control characters.
    pub fn name(field: &str, value: &str, max: usize) -> Result<(), String> {
        let chars = value.chars().count();
        if value.trim().is_empty() || chars > max {
            return Err(format!(
                "{field} must be 1 to {max} characters and not blank"
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(format!("{field} must not contain control characters"));
        }
        Ok(())
    }

    /// A plausible email address (the mailbox is not contacted).
    pub fn email(value: &str) -> Result<(), String> {
        let ok = (3..=254).contains(&value.len())
            && !value.chars().any(|c| c.is_whitespace() || c.is_control())
            && value.split('@').count() == 2
            && value.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && local.len() <= 64
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            });
        if ok {
            Ok(())
        } else {
            Err("email must be an address like name@example.com".to_owned())
        }
    }

    /// A password: 8 to 128 characters.
    pub fn password(value: &str) -> Result<(), String> {
        let chars = value.chars().count();
        if (8..=128).contains(&chars) {
            Ok(())
        } else {
            Err("password must be 8 to 128 characters".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn emails_are_checked_for_shape() {
        for good in ["a@b.co", "ann.smith+list@example.org"] {
            assert!(check::email(good).is_ok(), "{good}");
        }
        for bad in [
            "", "a", "@b.co", "a@b", "a@@b.co", "a b@c.de", "a@.co", "a@b.co.",
        ] {
            assert!(check::email(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_and_passwords_have_bounds() {
        assert!(check::name("name", "Weekly shop", 100).is_ok());
        assert!(check::name("name", "   ", 100).is_err());
        assert!(check::name("name", &"x".repeat(101), 100).is_err());
        assert!(check::name("name", "tab\there", 100).is_err());
        assert!(check::password("short").is_err());
        assert!(check::password("long enough").is_ok());
        assert!(check::password(&"p".repeat(129)).is_err());
    }
}
